"""URMP (Li et al. 2018) in its published layout, violin tracks only.

One folder per piece, named ``<NN>_<Title>_<inst>_<inst>...`` (e.g.
``01_Jupiter_vn_vc``), holding per track ``k`` (1-based, score order):
``AuSep_<k>_<inst>_<NN>_<Title>.wav`` (the separated audio stem),
``F0s_<k>_<inst>_<NN>_<Title>.txt`` (ground-truth pitch: ``time Hz`` rows),
``Notes_<k>_<inst>_<NN>_<Title>.txt``, and the ensemble video
``Vid_<NN>_<Title>_<insts>.mp4``.

Each violin track (``vn``) becomes one :class:`tasks.datasets.manifest.VideoRow`:
the piece's video, the track's stem as its audio and its ``F0s`` file as its
pitch (used instead of YIN).  The players sit side by side in score order,
so track ``k`` of ``n`` is cropped to the ``k``-th of ``n`` equal-width
columns of the frame (in pixels of the build's crop reference, by default
1280 x 720, rescaled to the video).  Folders whose names do not fullmatch
``NN_Title_inst_inst...`` (ASCII digits and letters) are not pieces and are
skipped; a piece whose track id would not be a plain token is refused.
As in the thesis, 4 violin tracks are left out for testing (fewer in a
folder with fewer than 8 tracks: half of them, rounded down): those whose ids
have the smallest SHA-1, so the split never depends on listing order.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from tasks.datasets.manifest import CROP_REFERENCE, ManifestError, VideoRow, check_crop_reference, check_video_id

# fullmatch ('$' matches before a trailing newline), ASCII digits only ('\d'
# takes any script's digits), and no nested quantifier (whose backtracking on
# a long non-matching name is exponential).
_PIECE = re.compile(r"([0-9]+)_([A-Za-z0-9]+)_([a-z]+(?:_[a-z]+)*)_?")
TEST_TRACKS = 4


def read_urmp(root: str | Path, instrument: str = "vn",
              crop_reference: tuple[int, int] = CROP_REFERENCE) -> list[VideoRow]:
    """Violin tracks of a URMP folder; raise :class:`ManifestError` listing every problem.

    The crops are columns of a ``crop_reference`` (width, height) frame, the
    reference the build rescales them from.
    """
    root = Path(root)
    width, height = check_crop_reference(crop_reference)
    if not root.is_dir():
        raise ManifestError(root, [f"not a folder: {root}"])
    problems, rows = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        m = _PIECE.fullmatch(folder.name)
        if not m:
            continue
        number, title = m[1], m[2]
        instruments = m[3].split("_")
        videos = sorted(folder.glob(f"Vid_{number}_{title}_*.mp4"))
        for k, inst in enumerate(instruments, start=1):
            if inst != instrument:
                continue
            vid = f"urmp_{number}_{title}_{k}"
            try:
                check_video_id(vid)
            except ValueError as exc:
                problems.append(f"{folder.name} track {k}: {exc}")
                continue
            stem = folder / f"AuSep_{k}_{inst}_{number}_{title}.wav"
            f0 = folder / f"F0s_{k}_{inst}_{number}_{title}.txt"
            missing = [p.name for p in (stem, f0) if not p.is_file()] + ([] if videos else [f"Vid_{number}_{title}_*.mp4"])
            if missing:
                problems.append(f"{folder.name} track {k}: missing {', '.join(missing)}")
                continue
            n = len(instruments)
            crop = (0, height, round(width * (k - 1) / n), round(width * k / n))
            rows.append(
                VideoRow(video_id=vid, source=str(videos[0].resolve()), split="train", crop=crop, row=0,
                         audio_source=str(stem.resolve()), pitch_source=str(f0.resolve()))
            )
    if not problems and not rows:
        problems.append(f"no {instrument} tracks in URMP layout under {root}")
    if problems:
        raise ManifestError(root, problems)
    ranked = sorted(rows, key=lambda r: hashlib.sha1(r.video_id.encode()).hexdigest())
    test = {r.video_id for r in ranked[: min(TEST_TRACKS, len(rows) // 2)]}
    return [
        VideoRow(r.video_id, r.source, "test" if r.video_id in test else "train", r.crop, i + 1,
                 r.audio_source, r.pitch_source)
        for i, r in enumerate(rows)
    ]
