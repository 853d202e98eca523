"""Frame-wise pitch metrics of visual pitch estimation for violin (thesis ch. 5, table 2).

The thesis reports, per frame of a video, Raw Pitch Accuracy (RPA: the predicted pitch lies
within one semitone of the reference), RPA tol (the same, the prediction may also be off by
one frame), Pitch Accuracy (PA: the exact pitch class), Average Class Accuracy (ACA: the mean
of the per-pitch-class accuracies) and Average Class Error (ACE: the mean absolute error in
semitones). This module computes them from per-frame MIDI numbers: RPA and PA with
``mir_eval.melody.raw_pitch_accuracy`` on the cents of the class-centre frequencies, RPA tol,
ACA and ACE with numpy.

Choices:

* Inputs are integer MIDI numbers per frame of one video, in frame order; a reference of 0 is
  an unvoiced frame. Every metric is over the reference-voiced frames only (as mir_eval's raw
  pitch accuracy); the estimate always names a pitch (the networks always predict one), so its
  value on unvoiced reference frames is ignored.
* RPA tol: reference frame t is correct if any of the estimates at t-1, t, t+1 that exist in
  the same video is within one semitone of the reference at t.
* ACA: the mean over the pitch classes present in the voiced reference frames of the fraction
  of that class's frames estimated exactly.
* Over several videos the frames of all videos are pooled (RPA tol still per video, so the
  +-1 frame never crosses a video boundary); :func:`bootstrap_intervals` resamples videos.
"""

from __future__ import annotations

import mir_eval
import numpy as np
import pretty_midi

MIN_MIDI, MAX_MIDI = 55, 88  # G3 .. E6: the 34 pitch classes of the violin network
METRICS = ("rpa", "rpa_tol", "pa", "aca", "ace")


def class_of(midi, min_midi: int = MIN_MIDI, max_midi: int = MAX_MIDI):
    """Class index ``midi - min_midi`` (0..33 by default) of a MIDI number or array; -1 for an
    unvoiced (0) or out-of-range MIDI number. An int for a scalar, else an int array."""
    m = np.asarray(midi)
    out = np.where((m > 0) & (m >= min_midi) & (m <= max_midi), m - min_midi, -1).astype(int)
    return int(out) if out.ndim == 0 else out


def midi_of(class_index, min_midi: int = MIN_MIDI):
    """MIDI number ``min_midi + class_index`` of a class index or array; 0 (unvoiced) for a
    negative index. An int for a scalar, else an int array."""
    c = np.asarray(class_index)
    out = np.where(c >= 0, c + min_midi, 0).astype(int)
    return int(out) if out.ndim == 0 else out


def _arrays(ref_midi, est_midi) -> tuple[np.ndarray, np.ndarray]:
    ref, est = np.asarray(ref_midi, dtype=int), np.asarray(est_midi, dtype=int)
    if ref.ndim != 1 or ref.shape != est.shape:
        raise ValueError(f"ref and est must be 1-D of the same length, got {ref.shape} and {est.shape}")
    return ref, est


def _cents(midi: np.ndarray, voiced: np.ndarray) -> np.ndarray:
    hz = np.where(voiced, pretty_midi.note_number_to_hz(midi.astype(float)), 0.0)
    return mir_eval.melody.hz2cents(hz)


def _mir_eval_rpa(ref: np.ndarray, est: np.ndarray, cent_tolerance: float) -> float:
    voiced = ref > 0
    if not voiced.any():
        return float("nan")
    ref_cent, est_cent = _cents(ref, voiced), _cents(est, np.ones_like(voiced))
    return float(mir_eval.melody.raw_pitch_accuracy(voiced.astype(float), ref_cent,
                                                    np.ones(len(est)), est_cent, cent_tolerance))


def raw_pitch_accuracy(ref_midi, est_midi) -> float:
    """RPA: fraction of voiced reference frames (ref > 0) with |est - ref| <= 1 semitone; NaN if none.

    mir_eval counts ``|diff_cents| < cent_tolerance`` strictly, and class centres differ by
    multiples of 100 cents (up to float error), so a tolerance of 150 accepts 0 and 100 cents
    and rejects 200, whatever the rounding of the cents."""
    ref, est = _arrays(ref_midi, est_midi)
    return _mir_eval_rpa(ref, est, cent_tolerance=150)


def pitch_accuracy(ref_midi, est_midi) -> float:
    """PA: fraction of voiced reference frames with est == ref (mir_eval, tolerance 50 cents:
    the exact class); NaN if none."""
    ref, est = _arrays(ref_midi, est_midi)
    return _mir_eval_rpa(ref, est, cent_tolerance=50)


def _tol_hits(ref: np.ndarray, est: np.ndarray) -> int:
    """Voiced reference frames t with min over est[t-1..t+1] (within the video) of |est - ref[t]| <= 1."""
    if len(ref) == 0:
        return 0
    pad = np.r_[est[:1], est, est[-1:]]  # the edge estimate repeated: a neighbour that adds nothing
    near = np.min([np.abs(pad[k:k + len(ref)] - ref) for k in range(3)], axis=0) <= 1
    return int(np.sum(near & (ref > 0)))


def raw_pitch_accuracy_tol(ref_midi, est_midi) -> float:
    """RPA tol: fraction of voiced reference frames t for which any of est[t-1], est[t], est[t+1]
    (those that exist) is within one semitone of ref[t]; NaN if none. (mir_eval has no such measure.)"""
    ref, est = _arrays(ref_midi, est_midi)
    frames = int(np.sum(ref > 0))
    return _tol_hits(ref, est) / frames if frames else float("nan")


def average_class_accuracy(ref_midi, est_midi) -> float:
    """ACA: mean over the pitch classes present in the voiced reference frames of the fraction of
    that class's frames with est == ref; NaN if no voiced frame."""
    ref, est = _arrays(ref_midi, est_midi)
    voiced = ref > 0
    classes = np.unique(ref[voiced])
    if len(classes) == 0:
        return float("nan")
    return float(np.mean([np.mean(est[ref == c] == c) for c in classes]))


def average_class_error(ref_midi, est_midi) -> float:
    """ACE: mean over voiced reference frames of |est - ref| in semitones; NaN if none."""
    ref, est = _arrays(ref_midi, est_midi)
    voiced = ref > 0
    return float(np.mean(np.abs(est[voiced] - ref[voiced]))) if voiced.any() else float("nan")


def _pooled(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    pairs = [_arrays(r, e) for r, e in pairs]
    ref = np.concatenate([r for r, _ in pairs]) if pairs else np.zeros(0, int)
    est = np.concatenate([e for _, e in pairs]) if pairs else np.zeros(0, int)
    frames = int(np.sum(ref > 0))
    return {
        "rpa": raw_pitch_accuracy(ref, est),
        "rpa_tol": sum(_tol_hits(r, e) for r, e in pairs) / frames if frames else float("nan"),
        "pa": pitch_accuracy(ref, est),
        "aca": average_class_accuracy(ref, est),
        "ace": average_class_error(ref, est),
        "frames": frames,
    }


def pitch_scores(ref_midi, est_midi) -> dict:
    """RPA, RPA tol, PA, ACA (fractions in [0, 1]), ACE (semitones) and ``frames`` (the number of
    voiced reference frames) of one video. With no voiced reference frame: frames 0, the rest NaN."""
    return _pooled([(ref_midi, est_midi)])


def pooled_scores(videos: dict) -> dict:
    """The metrics of :func:`pitch_scores` over all voiced frames of all videos ``{id: (ref, est)}``
    together (RPA tol per video, so the +-1 frame never crosses videos, then pooled by counts;
    ACA over the classes of all videos), plus ``videos`` (their count)."""
    return {**_pooled(list(videos.values())), "videos": len(videos)}


def bootstrap_intervals(videos: dict, n: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile intervals ``{metric: (low, high)}`` of the metrics of :func:`pooled_scores` over
    ``n`` resamples of the videos with replacement (``numpy.random.default_rng(seed)``); resamples
    without voiced frames (NaN) are left out."""
    pairs = list(videos.values())
    if not pairs:
        raise ValueError("no videos to resample")
    rng = np.random.default_rng(seed)
    draws = [_pooled([pairs[i] for i in rng.integers(0, len(pairs), len(pairs))]) for _ in range(n)]
    q = [50 * (1 - level), 50 * (1 + level)]
    return {m: tuple(float(v) for v in np.nanpercentile([d[m] for d in draws], q)) for m in METRICS}
