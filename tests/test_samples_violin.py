"""Generated violin sample media: files, formats, reproducibility, monophonic
true MIDI, and a picture whose stopping finger really follows the notes."""

from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from tasks.datasets.manifest import read_pianoyt, read_violin
from tests.conftest import assert_sample_video
from tasks.samples import fingerboard as fb
from tasks.samples.encode import ffmpeg_exe
from tasks.samples.violin import (UNSEEN_VIOLIN_PIECES, VIBRATO_MAX_CENTS, VIOLIN_PIECES, make_monophonic,
                                  make_violin_recordings, make_violin_samples, true_pitch, violin_excerpt)

VIDEOS, SECONDS, FPS, W, H = 2, 4.0, 25, 1280, 720


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("violin_samples")
    manifest = make_violin_samples(out, videos=VIDEOS, seconds=SECONDS, seed=0, width=W, height=H, fps=FPS)
    assert manifest == out / "manifest.csv"
    return out


def _vid(i: int) -> str:
    return f"violin_{i:03d}"


def _notes(path: Path) -> list[pretty_midi.Note]:
    pm = pretty_midi.PrettyMIDI(str(path))
    return sorted((n for inst in pm.instruments if not inst.is_drum for n in inst.notes), key=lambda n: n.start)


def _check_notes(notes: list[pretty_midi.Note], seconds: float) -> None:
    assert len(notes) >= 3
    for n in notes:
        assert 0.0 <= n.start < n.end <= seconds
        assert 55 <= n.pitch <= 88
        assert 60 <= n.velocity <= 110
        assert n.end - n.start >= 0.12 - 0.002
    for a, b in zip(notes, notes[1:]):
        assert a.end <= b.start, f"notes overlap at {a.start:.3f} and {b.start:.3f}"


def _tiplike(frames: np.ndarray) -> np.ndarray:
    """Pixels with the colour of a fingertip pad: light, warm and pink (not the darker
    skin of the hand, not the grey or steel strings, not the bow hair or the wall)."""
    f = frames.astype(np.int32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return (y > 165) & (r - b > 40) & (r >= g)


def test_files_exist(samples):
    assert (samples / "manifest.csv").is_file()
    for i in range(VIDEOS):
        assert (samples / "videos" / f"{_vid(i)}.mp4").stat().st_size > 10_000
        assert (samples / "midi" / f"{_vid(i)}.mid").stat().st_size > 0
    assert not list(samples.rglob("*.part")), "temporary files were left behind"


def test_manifest_rows(samples):
    rows = read_pianoyt(samples / "manifest.csv")
    assert [r.video_id for r in rows] == [_vid(i) for i in range(VIDEOS)]
    assert read_violin(samples / "manifest.csv") == rows
    box = fb.violinist_box(W, H)
    for r in rows:
        assert Path(r.source) == (samples / "videos" / f"{r.video_id}.mp4").resolve()
        assert r.crop == box
        min_y, max_y, min_x, max_x = r.crop
        assert 0 <= min_y < max_y <= H and 0 <= min_x < max_x <= W
        assert (max_y - min_y) * (max_x - min_x) < 0.6 * W * H  # a sub-box of the frame
    assert {r.split for r in rows} == {"train", "test"}
    text = (samples / "manifest.csv").read_text()
    assert all(len(line.split(",")) == 7 for line in text.splitlines())
    assert "videos/violin_000.mp4" in text


def test_video_decodes(samples):
    for i in range(VIDEOS):
        assert_sample_video(samples / "videos" / f"{_vid(i)}.mp4", int(SECONDS * FPS), (H, W), FPS)


def test_midi_monophonic_violin(samples):
    names = set()
    for i in range(VIDEOS):
        path = samples / "midi" / f"{_vid(i)}.mid"
        pm = pretty_midi.PrettyMIDI(str(path))
        assert len(pm.instruments) == 1 and pm.instruments[0].program == 40
        names.add(pm.instruments[0].name)
        notes = _notes(path)
        _check_notes(notes, SECONDS)
        assert min(n.start for n in notes) >= 0.45  # ~0.5 s of silence at the start ...
        assert max(n.end for n in notes) <= SECONDS - 0.5 + 1e-6  # ... and at the end
        bends = np.array([b.pitch for b in pm.instruments[0].pitch_bends])
        assert bends.size > 0, "no vibrato"
        cents = np.abs(bends) / 8192 * 200
        assert cents.max() <= VIBRATO_MAX_CENTS + 0.1
    assert len(names) == VIDEOS  # every video plays another work


def test_same_seed_same_bytes(samples, tmp_path):
    again = make_violin_samples(tmp_path, videos=VIDEOS, seconds=SECONDS, seed=0, width=W, height=H, fps=FPS)
    files = sorted(p.relative_to(samples) for p in samples.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for rel in files:
        assert (samples / rel).read_bytes() == (tmp_path / rel).read_bytes(), f"{rel} differs"
    assert again.read_bytes() == (samples / "manifest.csv").read_bytes()


def test_picture_follows_midi(samples):
    """Where a stopped note sounds, a fingertip pad is at that note's place on its
    string; where nothing sounds, no fingertip touches the strings."""
    decord = pytest.importorskip("decord")
    r = fb.fingertip_radius(W, H) + fb.MAX_SHAKE + 1
    area = np.zeros((H, W), np.uint8)
    cv2.fillPoly(area, [np.round(fb.strings_polygon(W, H)).astype(np.int32)], 1)
    area = cv2.erode(area, np.ones((2 * fb.MAX_SHAKE + 3,) * 2, np.uint8)).astype(bool)  # allow for the shake
    yy, xx = np.mgrid[0:H, 0:W]
    stopped = silent = 0
    for i in range(VIDEOS):
        vr = decord.VideoReader(str(samples / "videos" / f"{_vid(i)}.mp4"))
        frames = vr.get_batch(list(range(len(vr)))).asnumpy()
        tips = _tiplike(frames)
        pitch = true_pitch(samples / "midi" / f"{_vid(i)}.mid", np.arange(len(vr)) / FPS)
        for j in range(len(vr)):
            if pitch[j] == 0:
                count = int(tips[j][area].sum())
                assert count <= 5, f"video {i} frame {j}: fingertip on the strings while silent ({count} px)"
                silent += 1
                continue
            pos = fb.finger_position(int(pitch[j]), W, H)
            if pos is None:  # open string
                continue
            near = (xx - pos[0]) ** 2 + (yy - pos[1]) ** 2 <= r * r
            count = int(tips[j][near].sum())
            assert count >= 20, f"video {i} frame {j}: no fingertip at MIDI {pitch[j]} ({count} px)"
            stopped += 1
    assert stopped >= 20 and silent >= 20


def test_fingerboard_geometry():
    assert fb.string_for_note(55) == (0, 0) and fb.string_for_note(61) == (0, 6)
    assert fb.string_for_note(62) == (1, 0) and fb.string_for_note(75) == (2, 6)
    assert fb.string_for_note(88) == (3, 12)
    for bad in (54, 89):
        with pytest.raises(ValueError):
            fb.string_for_note(bad)
    # Semitone steps along a string shrink towards the bridge.
    pts = np.array([fb.finger_position(m, W, H) for m in range(77, 89)])
    steps = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    assert np.all(np.diff(steps) < 0)
    assert abs(fb.stop_distance_mm(12) - fb.STRING_LENGTH_MM / 2) < 1e-9  # the octave is half the string
    assert fb.finger_position(69, W, H) is None  # open A
    # Every stopping place is on the fingerboard, inside the violinist's box.
    poly = fb.strings_polygon(W, H).astype(np.float32)
    min_y, max_y, min_x, max_x = fb.violinist_box(W, H)
    for m in range(55, 89):
        pos = fb.finger_position(m, W, H)
        if pos is not None:
            assert cv2.pointPolygonTest(poly, pos, True) >= -1.0
            assert min_x <= pos[0] < max_x and min_y <= pos[1] < max_y


def test_box_holds_violin_and_bow():
    """Every part of the bow, in every position and on every string, and the
    violin's outline stay inside the violinist's box, whatever the shake."""
    min_y, max_y, min_x, max_x = fb.violinist_box(W, H)
    s = fb.MAX_SHAKE
    pts = [fb.local_to_frame(fb._body_outline(), W, H)]
    for k in range(4):
        for c in np.linspace(*fb.BOW_STROKE_MM, 5):
            for lifted in (False, True):
                b = fb._bow_points(k, c, lifted, 1.5)
                pts.append(fb.local_to_frame([b["frog"], b["tip"], b["stick_frog"], b["stick_tip"]], W, H))
    pts = np.concatenate(pts)
    assert pts[:, 0].min() - s >= min_x and pts[:, 0].max() + s < max_x
    assert pts[:, 1].min() - s >= min_y and pts[:, 1].max() + s < max_y


def test_renderer_deterministic_and_fast():
    a = fb.ViolinRenderer(W, H, np.random.default_rng(3))
    b = fb.ViolinRenderer(W, H, np.random.default_rng(3))
    for m, t in ((None, 0.0), (57, 0.4), (69, 1.3), (88, 2.2)):
        fa, fb_ = a.render(m, t), b.render(m, t)
        assert fa.shape == (H, W, 3) and fa.dtype == np.uint8 and fa.flags["C_CONTIGUOUS"]
        assert np.array_equal(fa, fb_)
    assert not np.array_equal(a.render(76, 1.0), a.render(None, 1.0))
    assert a.render(64, 0.0).std() > 20  # a picture, not a flat colour
    start = time.perf_counter()
    for j in range(50):
        a.render([None, 57, 64, 71, 81][j % 5], j / FPS)
    assert (time.perf_counter() - start) / 50 < 0.04  # ~3 ms here; generous for slow machines
    with pytest.raises(ValueError):
        a.render(40, 0.0)


def test_true_pitch(tmp_path):
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=40)
    inst.notes += [pretty_midi.Note(80, 60, 0.5, 1.0), pretty_midi.Note(80, 72, 1.0, 1.5)]
    pm.instruments.append(inst)
    path = tmp_path / "t.mid"
    pm.write(str(path))
    got = true_pitch(path, np.array([0.0, 0.5, 0.99, 1.0, 1.49, 1.5, 3.0]))
    assert got.tolist() == [0, 60, 60, 72, 72, 0, 0]


def test_make_monophonic():
    s = np.array([0.0, 0.0, 0.30, 0.35, 1.0])
    e = np.array([0.5, 0.6, 0.9, 0.9, 1.05])
    p = np.array([60, 67, 64, 65, 70])
    v = np.array([70, 80, 90, 100, 70])
    s2, e2, p2, v2 = make_monophonic(s, e, p, v, window_end=2.0)
    # the double stop keeps its top note; the 30 ms note (64) is merged into the one before it
    assert p2.tolist() == [67, 65, 70] and np.all(e2 - s2 >= 0.12 - 1e-9)
    assert abs(e2[0] - 0.33) < 1e-9  # held on until the end of the merged note
    assert np.all(e2[:-1] + 0.02 <= s2[1:] + 1e-9)


def test_excerpts_deterministic_in_range():
    assert not set(VIOLIN_PIECES) & set(UNSEEN_VIOLIN_PIECES)
    for piece in (VIOLIN_PIECES[0], UNSEEN_VIOLIN_PIECES[-1]):
        a = violin_excerpt(piece, np.random.default_rng(5), 8.0, pad=0.5)
        b = violin_excerpt(piece, np.random.default_rng(5), 8.0, pad=0.5)
        buf_a, buf_b = io.BytesIO(), io.BytesIO()
        a.write(buf_a)
        b.write(buf_b)
        assert buf_a.getvalue() == buf_b.getvalue()
        _check_notes(sorted(a.instruments[0].notes, key=lambda n: n.start), 8.0)


def test_audio_is_the_melody(samples):
    """aubio's yinfft (the project's violin labeler) finds the true note on most voiced frames."""
    pytest.importorskip("aubio")
    from tasks.labels.pitch import hz_to_midi, yin_track

    for i in range(VIDEOS):
        cmd = [ffmpeg_exe(), "-v", "error", "-i", str(samples / "videos" / f"{_vid(i)}.mp4"),
               "-f", "wav", "-ac", "1", "-ar", "44100", "pipe:1"]
        wav = subprocess.run(cmd, capture_output=True, check=True).stdout
        y, sr = sf.read(io.BytesIO(wav), dtype="float32")
        n = int(SECONDS * 100)
        track = yin_track(y, sr, 100, n)
        est = np.where(track["voiced"], hz_to_midi(track["hz"]), 0.0)
        ref = true_pitch(samples / "midi" / f"{_vid(i)}.mid", np.arange(n) / 100)
        voiced = ref > 0
        assert np.mean(np.abs(est[voiced] - ref[voiced]) < 0.5) >= 0.85


def test_recordings(tmp_path):
    out = make_violin_recordings(tmp_path, n=1, seconds=SECONDS, seed=100)
    assert len(out) == 1
    wav, mid = out[0]
    assert wav.name == "violin_recording_000.wav" and mid.name == "violin_recording_000.mid"
    y, sr = sf.read(wav)
    assert sr == 44100 and y.ndim == 1 and y.size == int(SECONDS * sr)
    assert 0.1 < np.max(np.abs(y)) <= 1.0
    assert np.sqrt(np.mean(y[int(0.6 * sr): int(3.4 * sr)] ** 2)) > 0.01
    notes = _notes(mid)
    _check_notes(notes, SECONDS)
    piece = pretty_midi.PrettyMIDI(str(mid)).instruments[0].name
    assert any(p in piece for p in UNSEEN_VIOLIN_PIECES)
    assert not any(f"({p})" in piece for p in VIOLIN_PIECES)
