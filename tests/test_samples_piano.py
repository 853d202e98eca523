"""Generated piano sample media: files, formats, reproducibility, and a
picture that really follows the true MIDI."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from tests.conftest import assert_sample_video
from tasks.samples import music
from tasks.samples.keyboard import is_black, key_probe_boxes, keyboard_box
from tasks.samples.piano import make_piano_recordings, make_piano_samples

VIDEOS, SECONDS, FPS, W, H = 2, 4.0, 25, 1280, 720


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("piano_samples")
    manifest = make_piano_samples(out, videos=VIDEOS, seconds=SECONDS, seed=0, width=W, height=H, fps=FPS)
    assert manifest == out / "manifest.csv"
    return out


def _rows(root: Path) -> list[list[str]]:
    with open(root / "manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def _notes(path: Path) -> list[pretty_midi.Note]:
    pm = pretty_midi.PrettyMIDI(str(path))
    return [n for inst in pm.instruments if not inst.is_drum for n in inst.notes]


def _check_notes(notes: list[pretty_midi.Note], seconds: float) -> None:
    assert len(notes) >= 4
    for n in notes:
        assert 0.0 <= n.start < n.end <= seconds
        assert 21 <= n.pitch <= 108
        assert 40 <= n.velocity <= 110
        assert n.end - n.start >= music.MIN_NOTE_SECONDS - 0.002
    by_pitch: dict[int, list] = {}
    for n in notes:
        by_pitch.setdefault(n.pitch, []).append(n)
    for same in by_pitch.values():
        same.sort(key=lambda n: n.start)
        for a, b in zip(same, same[1:]):
            assert a.end <= b.start, f"overlapping notes of pitch {a.pitch} at {a.start:.3f} and {b.start:.3f}"


def test_files_exist(samples):
    assert (samples / "manifest.csv").is_file()
    for i in range(VIDEOS):
        assert (samples / "videos" / f"sample_{i:03d}.mp4").stat().st_size > 10_000
        assert (samples / "midi" / f"sample_{i:03d}.mid").stat().st_size > 0
    assert not list(samples.rglob("*.part")), "temporary files were left behind"


def test_manifest_format(samples):
    rows = _rows(samples)
    assert len(rows) == VIDEOS
    box = keyboard_box(W, H)
    splits = []
    for vid, url, split, *crop in rows:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", vid)
        assert (samples / url).is_file() and url == f"videos/{vid}.mp4"
        splits.append(int(split))
        min_y, max_y, min_x, max_x = map(int, crop)
        assert 0 <= min_y < max_y <= H and 0 <= min_x < max_x <= W
        assert (min_y, max_y, min_x, max_x) == box
        assert (max_x - min_x) / (max_y - min_y) > 5  # a keyboard is long and thin
    assert set(splits) <= {1, 3} and 3 in splits and 1 in splits
    assert all(len(r) == 7 for r in rows)


def test_video_decodes(samples):
    for i in range(VIDEOS):
        assert_sample_video(samples / "videos" / f"sample_{i:03d}.mp4", int(SECONDS * FPS), (H, W), FPS)


def test_midi_notes(samples):
    for i in range(VIDEOS):
        notes = _notes(samples / "midi" / f"sample_{i:03d}.mid")
        _check_notes(notes, SECONDS)
        assert min(n.start for n in notes) >= 0.45  # ~0.5 s of silence at the start ...
        assert max(n.end for n in notes) <= SECONDS - 0.5 + 1e-6  # ... and at the end
    # every video plays a different piece
    names = {pretty_midi.PrettyMIDI(str(samples / "midi" / f"sample_{i:03d}.mid")).instruments[0].name
             for i in range(VIDEOS)}
    assert len(names) == VIDEOS


def test_same_seed_same_bytes(samples, tmp_path):
    again = make_piano_samples(tmp_path, videos=VIDEOS, seconds=SECONDS, seed=0, width=W, height=H, fps=FPS)
    files = sorted(p.relative_to(samples) for p in samples.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for rel in files:
        assert (samples / rel).read_bytes() == (tmp_path / rel).read_bytes(), f"{rel} differs"
    assert again.read_bytes() == (samples / "manifest.csv").read_bytes()


def test_keys_follow_midi(samples):
    """Keys sounding in the true MIDI at a frame's time are darker, in the
    decoded video, than the same key in every frame where it does not sound."""
    decord = pytest.importorskip("decord")
    boxes = key_probe_boxes(W, H)
    min_y, max_y, min_x, max_x = keyboard_box(W, H)
    assert np.all((boxes[:, 0] >= min_y) & (boxes[:, 1] <= max_y) & (boxes[:, 2] >= min_x) & (boxes[:, 3] <= max_x))
    checked = 0
    for i in range(VIDEOS):
        vr = decord.VideoReader(str(samples / "videos" / f"sample_{i:03d}.mp4"))
        gray = vr.get_batch(list(range(len(vr)))).asnumpy().astype(np.float32).mean(axis=-1)
        bright = np.stack([gray[:, y0:y1, x0:x1].mean(axis=(1, 2)) for y0, y1, x0, x1 in boxes], axis=1)
        times = np.arange(len(vr)) / FPS
        sounding = np.zeros_like(bright, dtype=bool)
        for n in _notes(samples / "midi" / f"sample_{i:03d}.mid"):
            sounding[(times >= n.start) & (times < n.end), n.pitch - 21] = True
        assert sounding.any()
        for k in range(88):
            on, off = bright[sounding[:, k], k], bright[~sounding[:, k], k]
            if on.size and off.size:
                margin = 5.0 if is_black(21 + k) else 15.0
                assert on.max() + margin < off.min(), f"video {i} key {21 + k}: pressed {on.max():.1f} vs up {off.min():.1f}"
                checked += 1
    assert checked >= 10


def test_recordings(tmp_path):
    out = make_piano_recordings(tmp_path, n=1, seconds=SECONDS, seed=100)
    assert len(out) == 1
    wav, mid = out[0]
    y, sr = sf.read(wav)
    assert sr == 44100 and y.ndim == 1 and y.size == int(SECONDS * sr)
    assert 0.1 < np.max(np.abs(y)) <= 1.0
    loud = np.sqrt(np.mean(y[int(0.6 * sr): int(3.4 * sr)] ** 2))
    assert loud > 0.01
    notes = _notes(mid)
    _check_notes(notes, SECONDS)
    piece = pretty_midi.PrettyMIDI(str(mid)).instruments[0].name
    assert not any(p in piece for p in music.PIANO_PIECES)


def test_excerpts_are_deterministic_and_clean():
    a, pa = music.piano_excerpt(np.random.default_rng(7), 6.0, pad=0.5)
    b, pb = music.piano_excerpt(np.random.default_rng(7), 6.0, pad=0.5)
    assert pa == pb and music.midi_bytes(a) == music.midi_bytes(b)
    _check_notes(a.instruments[0].notes, 6.0)
    line = music.top_line(a).instruments[0].notes
    assert line and all(x.end <= y.start for x, y in zip(line, line[1:]))
    assert not set(music.PIANO_PIECES) & set(music.UNSEEN_PIANO_PIECES)
