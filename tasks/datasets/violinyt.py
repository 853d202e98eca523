"""VnYT: violin frames with per-frame pitch labels (thesis ch. 5).

Choices (the thesis gives the sizes, not their order or the split rule):

* Frames: the violinist's box, resized to 400 x 200 as **height 400, width
  200** (the thesis writes sizes as h x w for the piano crop, and a standing
  violinist is taller than wide), RGB, JPEG quality 95 by default.
* Pitch: one label per video frame, measured on the audio window centred on
  the frame's time (:mod:`tasks.labels.pitch`); MIDI class (0 where unvoiced), raw
  frequency, confidence, voiced flag.
* Audio for the teacher: a reference, not a copy.  Every row names the
  video's audio file (``audio_path``, relative to the dataset folder: mono
  WAV at ``AUDIO_RATE``) and ``audio_sample``, the sample index of the
  frame's time in it; the teacher cuts the STFT window it wants around that
  sample.  This keeps shards small and leaves the window length to training.
* Splits as in the paper: left-out videos (manifest split 3) are ``test``;
  each train video (split 1) gives its first 90% of frames to ``train`` and
  its last 10% to ``val``, with the 4 frames between them dropped so that no
  5-frame window of one split overlaps a frame of the other.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.media import decode as media
from tasks.store.atomic import write_text_atomic
from tasks.store.layout import Layout
from tasks.datasets.records import (MAX_LOST_FRACTION, audio_seconds, failures_section, format_table, labelled_frames,
                                    losses_section, loss_fields, status_table, summary_rows)
from tasks.datasets.manifest import CROP_REFERENCE
from tasks.labels.pitch import YinSettings, hz_to_midi, midi_to_hz, yin_stream
from tasks.store.shards import VideoShardWriter, write_table_atomic

CROP_SIZE = (400, 200)  # (h, w)
AUDIO_RATE = 44100
VAL_FRACTION = 0.1
GAP_FRAMES = 4

PITCH_SCHEMA = pa.schema(
    [
        ("time", pa.float64()),
        ("midi", pa.int16()),
        ("hz", pa.float32()),
        ("confidence", pa.float32()),
        ("voiced", pa.bool_()),
    ]
)

# A shard row: the frame, then its pitch label (PITCH_SCHEMA's columns but time), then where its audio is.
SCHEMA = pa.schema(
    [("video_id", pa.string()), ("frame_index", pa.int32()), ("time", pa.float64()), ("image", pa.binary())]
    + [f for f in PITCH_SCHEMA if f.name != "time"]
    + [("audio_path", pa.string()), ("audio_sample", pa.int64())]
)

STATUS_EXTRA = [("voiced_frames", pa.int64())]


def layout(data_root) -> Layout:
    return Layout.under(data_root, "violinyt")


def frame_splits(n_frames: int, split: str) -> list[str | None]:
    """The split of every frame of a video (``None``: dropped gap frame)."""
    if split != "train":
        return [split] * n_frames
    first_val = n_frames - int(round(n_frames * VAL_FRACTION))
    out: list[str | None] = []
    for i in range(n_frames):
        if i >= first_val:
            out.append("val")
        elif i >= first_val - GAP_FRAMES:
            out.append(None)
        else:
            out.append("train")
    return out


def write_pitch(track: dict, path: str | Path) -> str:
    return write_table_atomic(pa.table({k: track[k] for k in PITCH_SCHEMA.names}, schema=PITCH_SCHEMA), path)


def read_pitch(path: str | Path) -> dict[str, np.ndarray]:
    t = pq.read_table(str(path))
    return {name: t.column(name).to_numpy() for name in PITCH_SCHEMA.names}


def label_yin(wav: str, out: str, fps: float, n_frames: int, settings: dict | None = None) -> str:
    """aubio yinfft labels for ``n_frames`` frames at ``fps`` from a WAV file, read a block at a time."""
    import soundfile

    with soundfile.SoundFile(str(wav)) as f:
        blocks = (b.mean(axis=1) for b in f.blocks(blocksize=1 << 20, dtype="float32", always_2d=True))
        track = yin_stream(blocks, f.samplerate, fps, n_frames, YinSettings(**(settings or {})))
    return write_pitch(track, out)


def label_from_f0(f0_file: str, out: str, fps: float, n_frames: int, min_midi: int = 55, max_midi: int = 88) -> str:
    """Ground-truth labels from an annotation of ``time frequency`` lines (URMP's ``F0s_*.txt``).

    Each frame takes the annotation nearest to its time; 0 Hz is unvoiced,
    and so is anything outside the pitch range.
    """
    try:
        ann = np.loadtxt(f0_file, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise ValueError(f"cannot read pitch annotation {f0_file}: {exc}") from None
    if ann.shape[1] < 2 or len(ann) == 0:
        raise ValueError(f"pitch annotation {f0_file} needs 'time frequency' rows")
    times = np.arange(n_frames, dtype=np.float64) / fps
    idx = np.clip(np.searchsorted(ann[:, 0], times), 1, len(ann) - 1)
    nearer_left = np.abs(times - ann[idx - 1, 0]) <= np.abs(ann[idx, 0] - times)
    hz = np.where(nearer_left, ann[idx - 1, 1], ann[idx, 1])
    hz = np.where(times > ann[-1, 0] + 1.0 / fps, 0.0, hz)  # past the annotation: unvoiced
    lo, hi = midi_to_hz(min_midi - 0.5), midi_to_hz(max_midi + 0.5)
    voiced = (hz >= lo) & (hz < hi)
    track = {
        "time": times,
        "midi": np.where(voiced, np.round(hz_to_midi(hz)), 0).astype(np.int16),
        "hz": hz.astype(np.float32),
        "confidence": voiced.astype(np.float32),
        "voiced": voiced,
    }
    return write_pitch(track, out)


def build_frames(
    video_path: str,
    pitch_path: str,
    video_id: str,
    split: str,
    crop: tuple[int, int, int, int],
    shards_dir: str,
    audio_path: str,
    *,
    wav: str | None = None,
    crop_reference: tuple[int, int] = CROP_REFERENCE,
    image_format: str = "jpeg",
    chunk: int = 32,
    max_lost: float = MAX_LOST_FRACTION,
    encode_threads: int = media.ENCODE_THREADS,
) -> dict:
    """Decode, crop (RGB, 400 x 200 h x w), label and shard one video; stream ``chunk`` frames at a time.

    Frames are resized and encoded on ``encode_threads`` threads while the
    decoder's pipe is read (:func:`tasks.media.decode.map_frames`), the few
    gap frames between train and val included.

    Pictures are placed by their own timestamps; frames that did not decode,
    or lie after the end of the audio ``wav``, are left out and recorded
    (as :func:`tasks.datasets.pianoyt.build_frames`).
    """
    import cv2

    info = media.probe(video_path)
    pitch = read_pitch(pitch_path)
    if len(pitch["time"]) < info.frames:
        raise ValueError(f"{pitch_path} has {len(pitch['time'])} frames of labels for {info.frames} video frames")
    box = media.scale_crop(tuple(crop), tuple(crop_reference), info.width, info.height)
    splits = frame_splits(info.frames, split)
    labelled = labelled_frames(info.frames, info.fps, audio_seconds(wav) if wav else None)
    loss = media.FrameLoss(expected=labelled, unlabelled=info.frames - labelled)
    h, w = CROP_SIZE
    y0, y1, x0, x1 = box
    interp = cv2.INTER_AREA if (y1 - y0) >= h and (x1 - x0) >= w else cv2.INTER_LINEAR  # frames come cropped
    counts: dict[str, int] = {}
    stored: list[np.ndarray] = []
    with VideoShardWriter(shards_dir, video_id, split, SCHEMA) as writer:
        def encode(frame: np.ndarray) -> bytes:  # cv2 encodes BGR: swap so the stored image has the right colours
            return media.encode_image(cv2.cvtColor(cv2.resize(frame, (w, h), interpolation=interp),
                                                   cv2.COLOR_RGB2BGR), image_format)

        chunks = media.iter_frames(video_path, info, box, chunk=chunk, loss=loss, stop=labelled)
        for indices, _, encoded in media.map_frames(chunks, encode, threads=encode_threads):
            for s in sorted({splits[i] for i in indices} - {None}):
                keep = np.array([splits[i] == s for i in indices])
                idx = indices[keep]
                images = [image for image, kept in zip(encoded, keep) if kept]
                batch = pa.record_batch(
                    [
                        pa.array([video_id] * len(idx), pa.string()),
                        pa.array(idx, pa.int32()),
                        pa.array(idx / info.fps, pa.float64()),
                        pa.array(images, pa.binary()),
                        pa.array(pitch["midi"][idx], pa.int16()),
                        pa.array(pitch["hz"][idx], pa.float32()),
                        pa.array(pitch["confidence"][idx], pa.float32()),
                        pa.array(pitch["voiced"][idx], pa.bool_()),
                        pa.array([audio_path] * len(idx), pa.string()),
                        pa.array(np.round(idx / info.fps * AUDIO_RATE).astype(np.int64), pa.int64()),
                    ],
                    schema=SCHEMA,
                )
                writer.write(batch, split=s)
                counts[s] = counts.get(s, 0) + len(idx)
            stored.append(indices)
        lost = loss_fields(loss, info.fps, video_id, max_lost)
        parts = writer.commit()
    kept = np.concatenate(stored) if stored else np.zeros(0, np.int64)
    voiced = int(np.sum(pitch["voiced"][kept]))
    return {
        "video_id": video_id,
        "split": split,
        "frames": len(kept),
        "seconds": len(kept) / info.fps,
        "fps": info.fps,
        "frames_per_split": counts,
        "voiced_frames": voiced,
        "crop_box": list(box),
        "parts": parts,
        **lost,
    }


def write_status_and_card(layout: Layout, records: list[dict], source: str, labels: str) -> dict:
    """Write ``status.parquet`` and ``CARD.md``; return the summary rows."""
    write_table_atomic(status_table(records, STATUS_EXTRA), layout.status)
    summary = summary_rows(records, extra=("voiced_frames",))
    per_split: dict[str, int] = {}
    for r in records:
        for s, n in (r.get("frames_per_split") or {}).items():
            per_split[s] = per_split.get(s, 0) + n
    lines = [
        "# VnYT (rebuilt by sightsound)",
        "",
        f"- source: `{source}`",
        f"- pitch labels: {labels}; one label per video frame, for the frame's time",
        f"- frames: native frame rate, violinist box resized to {CROP_SIZE[0]} x {CROP_SIZE[1]} (h x w), RGB",
        f"- audio for the teacher: `audio_path` (mono WAV, {AUDIO_RATE} Hz) and `audio_sample` per row",
        f"- splits: test = left-out videos; train videos give their last {int(VAL_FRACTION * 100)}% of frames to "
        f"val, {GAP_FRAMES} frames between train and val dropped",
        f"- built: {_dt.date.today().isoformat()}",
        "",
        "## Counts per video split",
        "",
        format_table(summary),
        "",
        "## Frames per shard split",
        "",
        format_table([{"split": s, "frames": n} for s, n in sorted(per_split.items())]) or "none",
        "",
    ] + losses_section(records) + failures_section(records)
    write_text_atomic(layout.card, "\n".join(lines) + "\n")
    return {"summary": summary, "frames_per_split": per_split}
