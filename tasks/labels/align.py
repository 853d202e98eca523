"""Align note labels to video frame times.

Frame ``i`` of a video at ``fps`` is at ``t_i = i / fps`` (docs/design.md, Conventions).  For key
``k`` (MIDI ``21 + k``):

* ``onset[i, k] = 1`` when a note of that key starts in ``[t_i, t_i + 1/fps)``;
* ``active[i, k] = 1`` when a note of that key sounds at ``t_i``
  (``onset <= t_i < offset``).
"""

from __future__ import annotations

import numpy as np

from tasks.labels.transcribe import Note

N_KEYS = 88
LOWEST_KEY = 21


def frame_labels(notes: list[Note], n_frames: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """``(onset, active)``, each ``uint8[n_frames, 88]``."""
    onset = np.zeros((n_frames, N_KEYS), dtype=np.uint8)
    active = np.zeros((n_frames, N_KEYS), dtype=np.uint8)
    for n in notes:
        k = n.pitch - LOWEST_KEY
        if not 0 <= k < N_KEYS:
            continue
        i = int(np.floor(n.onset * fps + 1e-9))
        if 0 <= i < n_frames:
            onset[i, k] = 1
        first = max(0, int(np.ceil(n.onset * fps - 1e-9)))
        last = min(n_frames, int(np.ceil(n.offset * fps - 1e-9)))  # frames with t < offset
        if last > first:
            active[first:last, k] = 1
    return onset, active


def onsets_from_frames(onset: np.ndarray, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Turn a frame-level onset matrix back into ``(times, midi pitches)`` of note onsets."""
    idx, keys = np.nonzero(onset)
    return idx / fps, keys + LOWEST_KEY
