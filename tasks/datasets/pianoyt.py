"""PianoYT: the frame path of one video, the status table and the dataset card.

Thesis ch. 6: frames at the native frame rate, the keyboard cropped and
resized to 145 x 800 (h x w), grayscale; labels are the onsets and sounding
notes of the pseudo-label MIDI at each frame's time.
"""

from __future__ import annotations

import datetime as _dt

import numpy as np
import pyarrow as pa

from tasks.media import decode as media
from tasks.labels.align import N_KEYS, frame_labels
from tasks.datasets.manifest import CROP_REFERENCE
from tasks.store import storage
from tasks.store.atomic import write_text_atomic
from tasks.store.layout import Layout
from tasks.datasets.records import (MAX_LOST_FRACTION, audio_seconds, failures_section, format_table, labelled_frames,
                                    losses_section, loss_fields, status_table, summary_rows)
from tasks.store.shards import VideoShardWriter, write_table_atomic
from tasks.labels.transcribe import read_midi

CROP_SIZE = (145, 800)  # (h, w), thesis ch. 6

SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("frame_index", pa.int32()),
        ("time", pa.float64()),
        ("image", pa.binary()),
        ("onset", pa.list_(pa.uint8(), N_KEYS)),
        ("active", pa.list_(pa.uint8(), N_KEYS)),
    ]
)

STATUS_EXTRA = [("notes", pa.int64())]
# With --av-offset: each video's audio-visual offset as the sync network estimated it (the labels moved by it).
AV_OFFSET_EXTRA = [("av_offset_s", pa.float64()), ("av_offset_frames", pa.int64()),
                   ("av_offset_confidence", pa.float64())]


def layout(data_root) -> Layout:
    return Layout.under(data_root, "pianoyt")


def _fixed_list(values: np.ndarray) -> pa.FixedSizeListArray:
    flat = pa.array(values.reshape(-1), type=pa.uint8())
    return pa.FixedSizeListArray.from_arrays(flat, N_KEYS)


def build_frames(
    video_path: str,
    labels_midi: str,
    video_id: str,
    split: str,
    crop: tuple[int, int, int, int],
    shards_dir: str,
    *,
    wav: str | None = None,
    crop_reference: tuple[int, int] = CROP_REFERENCE,
    image_format: str = "png",
    chunk: int = 32,
    max_part_bytes: int | None = None,
    max_lost: float = MAX_LOST_FRACTION,
    label_shift: float = 0.0,
    encode_threads: int = media.ENCODE_THREADS,
) -> dict:
    """Decode, crop, label and shard one video; return its counts and part files.

    Each picture is stored at the frame index its own timestamp gives, with
    the labels of that time (:func:`tasks.media.decode.iter_frames`); frames that
    did not decode, and frames after the end of the audio ``wav`` (the
    labels' source), are left out and recorded (:func:`tasks.datasets.records.loss_fields`).
    Streams ``chunk`` frames at a time, so memory does not depend on the
    video's length.  ``label_shift`` (s) is the sound's delay against the
    picture (the sync network's estimate, :mod:`tasks.evaluation.av_sync`):
    every note of ``labels_midi`` moves that much earlier before the frames
    are labelled (notes that then start before 0 are dropped).  The crops are
    resized and encoded on ``encode_threads`` threads while the decoder's pipe
    is read (:func:`tasks.media.decode.map_frames`; the bytes do not depend on
    it).
    """
    info = media.probe(video_path)
    notes = shift_notes(read_midi(labels_midi), -label_shift)
    onset, active = frame_labels(notes, info.frames, info.fps)
    box = media.scale_crop(tuple(crop), tuple(crop_reference), info.width, info.height)
    labelled = labelled_frames(info.frames, info.fps, audio_seconds(wav) if wav else None)
    loss = media.FrameLoss(expected=labelled, unlabelled=info.frames - labelled)
    kwargs = {"max_part_bytes": max_part_bytes} if max_part_bytes else {}
    stored = 0
    with VideoShardWriter(shards_dir, video_id, split, SCHEMA, **kwargs) as writer:
        chunks = media.iter_frames(video_path, info, box, chunk=chunk, loss=loss, stop=labelled)
        for idx, _, images in media.map_frames(
                chunks, lambda frame: media.encode_image(media.gray_resize_one(frame, CROP_SIZE), image_format),
                threads=encode_threads):
            batch = pa.record_batch(
                [
                    pa.array([video_id] * len(idx), pa.string()),
                    pa.array(idx, pa.int32()),
                    pa.array(idx / info.fps, pa.float64()),
                    pa.array(images, pa.binary()),
                    _fixed_list(onset[idx]),
                    _fixed_list(active[idx]),
                ],
                schema=SCHEMA,
            )
            writer.write(batch)
            stored += len(idx)
        lost = loss_fields(loss, info.fps, video_id, max_lost)
        parts = writer.commit()
    return {
        "video_id": video_id,
        "split": split,
        "frames": stored,
        "seconds": stored / info.fps,
        "fps": info.fps,
        "notes": len(notes),
        "onsets": int(onset.sum()),
        "crop_box": list(box),
        "parts": parts,
        **lost,
    }


def shift_notes(notes: list, seconds: float) -> list:
    """``notes`` moved by ``seconds`` (negative: earlier); notes that would start before 0 are dropped."""
    if not seconds:
        return notes
    return [type(n)(n.onset + seconds, n.offset + seconds, n.pitch, n.velocity) for n in notes
            if n.onset + seconds >= 0]


def note_statistics(labels_dir: str, video_ids: list[str]) -> dict:
    pitches, durations, per_sec = [], [], []
    for vid in video_ids:
        p = storage.join(labels_dir, f"{vid}.mid")
        if not storage.exists(p):
            continue
        notes = read_midi(storage.local_path(p))
        pitches += [n.pitch for n in notes]
        durations += [n.offset - n.onset for n in notes]
        if notes:
            span = max(n.offset for n in notes)
            per_sec.append(len(notes) / max(span, 1e-6))
    if not pitches:
        return {}
    return {
        "notes": len(pitches),
        "lowest": int(min(pitches)),
        "highest": int(max(pitches)),
        "median pitch": float(np.median(pitches)),
        "median duration s": round(float(np.median(durations)), 3),
        "notes per second (mean over videos)": round(float(np.mean(per_sec)), 2),
    }


def write_status_and_card(layout: Layout, records: list[dict], manifest: str, labeler: str,
                          label_window_s: float, av_offset: str | None = None) -> dict:
    """Write ``status.parquet`` and ``CARD.md``; return the summary rows.

    ``av_offset`` (the sync checkpoint of a build that estimated each video's
    offset) adds the :data:`AV_OFFSET_EXTRA` columns and a card section.
    """
    from tasks.labels.transcribe import OVERLAP_S

    how = (f"the audio transcribed {label_window_s:g} s at a time, windows overlapping by {OVERLAP_S:g} s"
           if label_window_s else "the audio transcribed whole")
    extra = STATUS_EXTRA + (AV_OFFSET_EXTRA if av_offset else [])
    write_table_atomic(status_table(records, extra), layout.status)
    summary = summary_rows(records, extra=("notes",))
    done_ids = [r["video_id"] for r in records if r["state"] == "done"]
    stats = note_statistics(layout.labels, done_ids)
    lines = [
        "# PianoYT (rebuilt by sightsound)",
        "",
        f"- manifest: `{manifest}`",
        f"- pseudo-labels: `{labeler}` (one MIDI per video in `labels/`; {how})",
        f"- frames: native frame rate, keyboard crop resized to {CROP_SIZE[0]} x {CROP_SIZE[1]} (h x w), grayscale",
        "- shards: `shards/split=<split>/part-<video id>-<n>.parquet`, columns "
        "`video_id, frame_index, time, image, onset[88], active[88]` (+ `split` from the folder)",
        f"- built: {_dt.date.today().isoformat()}",
        "",
        "## Counts",
        "",
        format_table(summary),
        "",
        "## Note statistics (pseudo-labels of the built videos)",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in stats.items()] or ["- no notes"]
    if av_offset:
        built = [r for r in records if r["state"] == "done"]
        lines += ["", "## Audio-visual offsets", "",
                  f"Estimated per video by the sync network `{av_offset}` (thesis ch. 7); each video's labels were "
                  "moved earlier by its offset before the frames were labelled (positive: the sound came after "
                  "the picture).", ""]
        lines += [format_table([{"video": r["video_id"], "offset s": r.get("av_offset_s"),
                                 "frames": r.get("av_offset_frames"), "confidence": r.get("av_offset_confidence")}
                                for r in built])] if built else ["- no video built"]
    lines += [""] + losses_section(records) + failures_section(records)
    write_text_atomic(layout.card, "\n".join(lines) + "\n")
    return {"summary": summary, "notes": stats}
