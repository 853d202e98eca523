import numpy as np

from tasks.labels.align import frame_labels, onsets_from_frames
from tasks.labels.transcribe import Note


def test_onset_and_active_follow_the_frame_times():
    fps = 25.0
    notes = [
        Note(0.00, 0.10, 21, 80),   # frames 0..2 active (t = 0, .04, .08), onset in frame 0
        Note(0.05, 0.12, 60, 80),   # onset in [0.04, 0.08) -> frame 1; active at .08 only
        Note(0.99, 2.00, 108, 80),  # onset frame 24, active from frame 25 (t = 1.0)
        Note(0.5, 0.6, 10, 80),     # outside the piano: ignored
    ]
    onset, active = frame_labels(notes, n_frames=30, fps=fps)
    assert onset.shape == active.shape == (30, 88)
    assert onset[0, 0] == 1 and onset.sum() == 3
    assert onset[1, 60 - 21] == 1
    assert onset[24, 87] == 1
    assert list(np.nonzero(active[:, 0])[0]) == [0, 1, 2]
    assert list(np.nonzero(active[:, 60 - 21])[0]) == [2]
    assert active[24, 87] == 0 and active[25:, 87].all()
    times, pitches = onsets_from_frames(onset, fps)
    assert sorted(zip(times.round(2), pitches)) == [(0.0, 21), (0.04, 60), (0.96, 108)]


def test_labels_beyond_the_video_are_dropped():
    onset, active = frame_labels([Note(5.0, 6.0, 60, 80)], n_frames=10, fps=25.0)
    assert onset.sum() == 0 and active.sum() == 0
