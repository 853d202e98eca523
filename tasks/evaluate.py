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
    import mir_eval

    ref = [Note(float(t), float(t) + 0.1, int(p), 64) for t, p in zip(ref_times, ref_pitches)]
    est = [Note(float(t), float(t) + 0.1, int(p), 64) for t, p in zip(est_times, est_pitches)]
    return note_onset_prf(ref, est, onset_tolerance=tolerance)
