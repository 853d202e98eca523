"""Scores with mir_eval: note-level transcription metrics (Bay et al. 2009)."""

from __future__ import annotations

import numpy as np

from tasks.transcribe import Note


def _arrays(notes: list[Note]) -> tuple[np.ndarray, np.ndarray]:
    import pretty_midi

    if not notes:
        return np.zeros((0, 2)), np.zeros(0)
    intervals = np.array([[n.onset, max(n.offset, n.onset + 1e-3)] for n in notes], dtype=float)
    pitches = np.array([pretty_midi.note_number_to_hz(n.pitch) for n in notes], dtype=float)
    return intervals, pitches


def note_onset_prf(ref: list[Note], est: list[Note], onset_tolerance: float = 0.05) -> dict:
    """Precision, recall and F1 of note onsets (50 ms, 50 cents; offsets ignored)."""
    import mir_eval

    ri, rp = _arrays(ref)
    ei, ep = _arrays(est)
    if len(ri) == 0 or len(ei) == 0:
        f = 1.0 if len(ri) == len(ei) else 0.0
        return {"precision": f, "recall": f, "f1": f, "ref": len(ri), "est": len(ei)}
    p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ri, rp, ei, ep, onset_tolerance=onset_tolerance, offset_ratio=None
    )
    return {"precision": float(p), "recall": float(r), "f1": float(f), "ref": len(ri), "est": len(ei)}


def frame_onset_prf(ref_times, ref_pitches, est_times, est_pitches, tolerance: float) -> dict:
    """Onset P/R/F1 between two lists of (time, pitch) onsets, matched within ``tolerance`` seconds."""
    ref = [Note(float(t), float(t) + 0.1, int(p), 64) for t, p in zip(ref_times, ref_pitches)]
    est = [Note(float(t), float(t) + 0.1, int(p), 64) for t, p in zip(est_times, est_pitches)]
    return note_onset_prf(ref, est, onset_tolerance=tolerance)


def score_pianoyt_build(samples_dir, data_root) -> list[dict]:
    """Score a build of a generated sample set against the samples' true MIDI.

    For every built video: the note-onset P/R/F1 of the pseudo-label MIDI
    (mir_eval, 50 ms), and the F1 of the shards' ``onset`` column against the
    true onsets on the frame grid (true onset frame vs shard onset frame,
    matched within one frame).
    """
    from pathlib import Path

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tasks.align import onsets_from_frames
    from tasks.shards import read_dataset
    from tasks.transcribe import read_midi

    samples_dir, root = Path(samples_dir), Path(data_root) / "pianoyt"
    status = [r for r in pq.read_table(root / "status.parquet").to_pylist() if r["state"] == "done"]
    table = read_dataset(root / "shards", columns=["video_id", "frame_index", "onset"])
    rows = []
    for r in status:
        vid = r["video_id"]
        truth_path = samples_dir / "midi" / f"{vid}.mid"
        if not truth_path.is_file():
            continue
        truth = read_midi(truth_path)
        labels = note_onset_prf(truth, read_midi(root / "labels" / f"{vid}.mid"))
        sel = table.filter(pc.equal(table["video_id"], vid)).sort_by("frame_index")
        fps = sel.num_rows / r["seconds"]
        onset = np.array(sel.column("onset").to_pylist(), dtype=np.uint8).reshape(-1, 88)
        times, pitches = onsets_from_frames(onset, fps)
        true_frames = [np.floor(n.onset * fps + 1e-9) / fps for n in truth]
        frames = frame_onset_prf(true_frames, [n.pitch for n in truth], times, pitches, tolerance=1.0 / fps + 1e-6)
        rows.append(
            {
                "video_id": vid,
                "true notes": len(truth),
                "label P": round(labels["precision"], 4),
                "label R": round(labels["recall"], 4),
                "label F1": round(labels["f1"], 4),
                "onset column F1 (1 frame)": round(frames["f1"], 4),
            }
        )
    return rows


def score_violinyt_build(samples_dir, data_root) -> list[dict]:
    """Raw pitch accuracy of a violin build's shard labels against the samples' true MIDI.

    Per built video, over the frames of every split: the true pitch at each
    frame's time against the shard's ``hz`` (0 where not ``voiced``), with
    mir_eval's melody metrics.
    """
    from pathlib import Path

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tasks.audit import true_pitch_hz
    from tasks.shards import read_dataset

    samples_dir, root = Path(samples_dir), Path(data_root) / "violinyt"
    import mir_eval

    status = [r for r in pq.read_table(root / "status.parquet").to_pylist() if r["state"] == "done"]
    table = read_dataset(root / "shards", columns=["video_id", "time", "hz", "voiced"])
    rows = []
    for r in status:
        truth = samples_dir / "midi" / f"{r['video_id']}.mid"
        if not truth.is_file():
            continue
        sel = table.filter(pc.equal(table["video_id"], r["video_id"])).sort_by("time")
        times = sel.column("time").to_numpy()
        est = np.where(sel.column("voiced").to_numpy(), sel.column("hz").to_numpy(), 0.0)
        ref = true_pitch_hz(truth, times)
        rv, rc, ev, ec = mir_eval.melody.to_cent_voicing(times, ref, times, est)
        rows.append(
            {
                "video_id": r["video_id"],
                "frames": len(times),
                "raw pitch accuracy": round(float(mir_eval.melody.raw_pitch_accuracy(rv, rc, ev, ec)), 4),
                "voicing recall": round(float(mir_eval.melody.voicing_recall(rv, ev)), 4),
                "voicing false alarm": round(float(mir_eval.melody.voicing_false_alarm(rv, ev)), 4),
            }
        )
    return rows
