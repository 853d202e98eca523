"""Scores with mir_eval: note-level transcription metrics (Bay et al. 2009)."""

from __future__ import annotations

import numpy as np

from tasks.labels.transcribe import Note


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

    from tasks.labels.align import onsets_from_frames
    from tasks.store.shards import read_dataset
    from tasks.labels.transcribe import read_midi

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

    from tasks.evaluation.audit import true_pitch_hz
    from tasks.store.shards import read_dataset

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


# ---------------------------------------------------------------- transcription (Onsets and Frames, issue 5)


def frame_prf(ref: list[Note], est: list[Note], hop: float = 0.01) -> dict:
    """Frame-level precision, recall and F1 (mir_eval.multipitch) of the notes sounding on a ``hop`` grid."""
    import mir_eval
    import pretty_midi

    end = max([n.offset for n in ref] + [n.offset for n in est] + [hop])
    times = np.arange(int(np.ceil(end / hop)) + 1) * hop

    def freqs(notes):
        rows = [[] for _ in times]
        for n in notes:
            hz = pretty_midi.note_number_to_hz(n.pitch)
            for i in range(int(np.ceil(n.onset / hop - 1e-9)), min(len(times), int(np.ceil(n.offset / hop - 1e-9)))):
                rows[i].append(hz)
        return [np.array(r, dtype=float) for r in rows]

    scores = mir_eval.multipitch.evaluate(times, freqs(ref), times, freqs(est))
    p, r = float(scores["Precision"]), float(scores["Recall"])
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r > 0 else 0.0}


def transcription_scores(ref: list[Note], est: list[Note]) -> dict:
    """Note-level P/R/F1 (onsets, 50 ms), F1 with offsets (ratio 0.2, at least 50 ms) and frame-level P/R/F1."""
    import mir_eval

    onset = note_onset_prf(ref, est)
    ri, rp = _arrays(ref)
    ei, ep = _arrays(est)
    if len(ri) == 0 or len(ei) == 0:
        v = 1.0 if len(ri) == len(ei) else 0.0
        with_offsets = (v, v, v)
    else:
        with_offsets = tuple(float(x) for x in mir_eval.transcription.precision_recall_f1_overlap(
            ri, rp, ei, ep, onset_tolerance=0.05, offset_ratio=0.2, offset_min_tolerance=0.05)[:3])
    frame = frame_prf(ref, est)
    return {
        "onset_precision": onset["precision"], "onset_recall": onset["recall"], "onset_f1": onset["f1"],
        "onset_offset_precision": with_offsets[0], "onset_offset_recall": with_offsets[1],
        "onset_offset_f1": with_offsets[2],
        "frame_precision": frame["precision"], "frame_recall": frame["recall"], "frame_f1": frame["f1"],
        "ref_notes": len(ref), "est_notes": len(est),
    }


def _midi_files(folder) -> dict:
    from pathlib import Path

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"no such folder: {folder}")
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() in (".mid", ".midi") and p.is_file():
            if p.stem in files:
                raise ValueError(f"two MIDI files named {p.stem} under {folder}: {files[p.stem]} and {p}")
            files[p.stem] = p
    return files


def score_transcriptions(ref_dir, est_dirs: dict) -> tuple[list[dict], list[dict]]:
    """Score folders of transcriptions against a folder of true MIDI, matched by file stem.

    ``est_dirs`` maps a system's name to its folder.  Every reference piece
    must have an estimate in every folder (a missing one is refused).
    Returns ``(summary, per_piece)``: one summary row per system with the
    mean over pieces of each score, and one row per (system, piece).
    """
    from tasks.labels.transcribe import read_midi

    refs = _midi_files(ref_dir)
    if not refs:
        raise ValueError(f"no MIDI files (.mid, .midi) under {ref_dir}")
    summary, per_piece = [], []
    ref_notes = {k: read_midi(p) for k, p in refs.items()}
    for name, folder in est_dirs.items():
        ests = _midi_files(folder)
        missing = sorted(set(refs) - set(ests))
        if missing:
            raise ValueError(f"{name} ({folder}) has no transcription of {len(missing)} reference piece(s): "
                             f"{', '.join(missing[:5])}")
        rows = []
        for piece in refs:
            s = transcription_scores(ref_notes[piece], read_midi(ests[piece]))
            rows.append(s)
            per_piece.append({"system": name, "piece": piece, **{k: round(v, 4) if isinstance(v, float) else v
                                                                   for k, v in s.items()}})

        def mean(k):
            return round(float(np.mean([r[k] for r in rows])), 4)

        summary.append({
            "system": name, "pieces": len(rows),
            "note P": mean("onset_precision"), "note R": mean("onset_recall"), "note F1": mean("onset_f1"),
            "note+offset P": mean("onset_offset_precision"), "note+offset R": mean("onset_offset_recall"),
            "note+offset F1": mean("onset_offset_f1"),
            "frame P": mean("frame_precision"), "frame R": mean("frame_recall"), "frame F1": mean("frame_f1"),
        })
    return summary, per_piece
