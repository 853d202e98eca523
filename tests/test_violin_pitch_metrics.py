"""Hand-checked numbers for the violin pitch metrics (thesis ch. 5, table 2)."""

import math

import numpy as np
import pytest

from tasks.evaluation.violin_pitch import (
    MAX_MIDI, MIN_MIDI, bootstrap_intervals, class_of, midi_of, pitch_scores, pooled_scores,
)


def test_tiny_example_by_hand():
    # voiced frames 0,1,2,4,5 (5); |est - ref| = 0, 1, 2, 3 for frame 5: 0,1,2,0,3
    #   RPA  = frames with |d| <= 1: 0,1,4 -> 3/5 = 0.6
    #   PA   = exact: 0,4 -> 2/5 = 0.4
    #   ACE  = (0+1+2+0+3)/5 = 1.2
    #   ACA  = class 60: 1/2, 61: 0/1, 62: 1/2 -> (0.5+0+0.5)/3 = 1/3
    #   RPA tol: t=2 (ref 61) sees est[1]=61; t=5 (ref 62) sees est[4]=62; the rest as RPA -> 5/5
    s = pitch_scores([60, 60, 61, 0, 62, 62], [60, 61, 63, 70, 62, 59])
    assert s["frames"] == 5
    assert s["rpa"] == pytest.approx(0.6)
    assert s["pa"] == pytest.approx(0.4)
    assert s["ace"] == pytest.approx(1.2)
    assert s["aca"] == pytest.approx(1 / 3)
    assert s["rpa_tol"] == pytest.approx(1.0)


@pytest.mark.parametrize("offset, rpa, pa, ace", [(0, 1, 1, 0), (1, 1, 0, 1), (-1, 1, 0, 1), (2, 0, 0, 2), (-2, 0, 0, 2)])
def test_semitone_tolerance(offset, rpa, pa, ace):
    ref = np.array([60, 67, 72, 81])
    s = pitch_scores(ref, ref + offset)
    assert (s["rpa"], s["pa"], s["ace"]) == (pytest.approx(rpa), pytest.approx(pa), pytest.approx(ace))


def test_rpa_tol_frame_shift():
    ref = np.array([60, 60, 62, 64, 66, 68, 68])  # steps of 2 semitones: a shift is not rescued by RPA
    one = np.r_[ref[:1], ref[:-1]]                # est[t] = ref[t-1]
    s = pitch_scores(ref, one)
    assert s["rpa_tol"] == pytest.approx(1.0)
    assert s["rpa"] == pytest.approx(3 / 7)      # frames 0, 1, 6 only
    two = np.r_[ref[:2], ref[:-2]]                # est[t] = ref[t-2]
    assert pitch_scores(ref, two)["rpa_tol"] < 1.0


def test_unvoiced_reference_frames_ignored():
    ref = [60, 0, 62, 0]
    a, b = pitch_scores(ref, [60, 50, 61, 90]), pitch_scores(ref, [60, 88, 61, 55])
    assert a == b
    assert a["frames"] == 2 and a["rpa"] == pytest.approx(1.0) and a["pa"] == pytest.approx(0.5)


def test_no_voiced_frames_gives_nan():
    s = pitch_scores([0, 0, 0], [60, 61, 62])
    assert s["frames"] == 0
    assert all(math.isnan(s[k]) for k in ("rpa", "rpa_tol", "pa", "aca", "ace"))


def test_aca_differs_from_pa_when_unbalanced():
    ref = [60] * 9 + [62]
    est = [60] * 9 + [70]
    s = pitch_scores(ref, est)
    assert s["pa"] == pytest.approx(0.9)   # 9 of 10 frames
    assert s["aca"] == pytest.approx(0.5)  # class 60: 9/9, class 62: 0/1


def test_pooled_is_frame_weighted():
    videos = {"a": ([60, 60], [60, 62]),            # RPA 1/2, PA 1/2
              "b": ([64, 64, 65, 65], [64, 64, 65, 65])}  # RPA 1, PA 1
    p = pooled_scores(videos)
    assert p["videos"] == 2 and p["frames"] == 6
    assert p["rpa"] == pytest.approx(5 / 6) and p["pa"] == pytest.approx(5 / 6)  # not (1/2 + 1)/2
    assert p["ace"] == pytest.approx(2 / 6)
    assert p["aca"] == pytest.approx((1 / 2 + 1 + 1) / 3)  # classes 60, 64, 65 pooled


def test_rpa_tol_does_not_cross_video_boundary():
    videos = {"a": ([60, 64], [60, 70]), "b": ([64, 60], [64, 60])}
    # concatenated, frame 1 (ref 64) would see est 64 of video b's first frame
    assert pitch_scores([60, 64, 64, 60], [60, 70, 64, 60])["rpa_tol"] == pytest.approx(1.0)
    assert pooled_scores(videos)["rpa_tol"] == pytest.approx(3 / 4)


def _videos():
    rng = np.random.default_rng(1)
    out = {}
    for k in range(6):
        ref = rng.integers(MIN_MIDI, MAX_MIDI + 1, 40)
        est = ref + rng.choice([0, 0, 0, 1, -1, 3], 40)
        out[f"v{k}"] = (ref, est)
    return out


def test_bootstrap_contains_pooled_and_is_deterministic():
    videos = _videos()
    p = pooled_scores(videos)
    a, b = bootstrap_intervals(videos, n=200, seed=3), bootstrap_intervals(videos, n=200, seed=3)
    assert a == b
    assert set(a) == {"rpa", "rpa_tol", "pa", "aca", "ace"}
    for m, (lo, hi) in a.items():
        assert lo <= p[m] <= hi and lo < hi


def test_bootstrap_single_video_zero_width():
    ref, est = _videos()["v0"]
    p = pooled_scores({"only": (ref, est)})
    for m, (lo, hi) in bootstrap_intervals({"only": (ref, est)}, n=50).items():
        assert lo == pytest.approx(p[m]) and hi == pytest.approx(p[m])


def test_class_of_midi_of():
    assert (MIN_MIDI, MAX_MIDI) == (55, 88)
    assert class_of(55) == 0 and class_of(88) == 33
    assert class_of(0) == -1 and class_of(54) == -1 and class_of(89) == -1
    midis = np.arange(MIN_MIDI, MAX_MIDI + 1)
    assert np.array_equal(class_of(midis), np.arange(34))
    assert np.array_equal(midi_of(class_of(midis)), midis)
    assert midi_of(-1) == 0 and midi_of(0) == 55
