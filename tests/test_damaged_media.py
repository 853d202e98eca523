"""Damaged media: every stored frame sits at its own time, and what a file lost is recorded.

The tests make their own damaged set from one clean clip whose every frame
shows its own number (ten black/white bands, readable after resizing and
JPEG): cut short, overwritten with random bytes in the middle, frames
dropped, audio shorter than the picture, variable frame rate.  Each file is
decoded alone (:func:`tasks.media.decode.iter_frames`) and built with the violin,
piano and VoxCeleb builds; every picture kept must be the one shown at its
row's time, pixel for pixel the clean decode's where the file is intact.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tasks.media import decode as media
from tasks.samples.encode import encode_video

ROOT = Path(__file__).resolve().parents[1]
FPS, SECONDS, W, H, BITS = 25, 5.0, 320, 180, 10
N = int(FPS * SECONDS)


def numbered_frame(n: int) -> np.ndarray:
    """A frame whose ten horizontal bands spell ``n`` in binary (top band: the highest bit)."""
    img = np.zeros((H, W, 3), np.uint8)
    band = H // BITS
    for b in range(BITS):
        if n >> (BITS - 1 - b) & 1:
            img[b * band:(b + 1) * band] = 255
    return img


def read_number(img: np.ndarray) -> int:
    """The number ``numbered_frame`` drew, read from a (resized, JPEG) copy of it."""
    gray = img.mean(axis=2) if img.ndim == 3 else img.astype(float)
    h = gray.shape[0]
    bits = [gray[int((b + 0.3) * h / BITS):int((b + 0.7) * h / BITS)].mean() > 127 for b in range(BITS)]
    return int("".join("1" if x else "0" for x in bits), 2)


def _ffmpeg(*args):
    subprocess.run([media.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *map(str, args)], check=True)


def _sine(seconds: float, sr: int = 44100) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> dict[str, Path]:
    """``{case: file}``: the clean clip and its damaged versions."""
    d = tmp_path_factory.mktemp("damaged")
    clean = encode_video((numbered_frame(i) for i in range(N)), _sine(SECONDS), 44100, FPS, d / "clean.mp4", W, H,
                         gop_seconds=1.0)
    data = clean.read_bytes()
    out = {"clean": clean}
    # Cut short: the first 60% of the bytes (the index, at the front, still promises 5 s).
    out["truncated"] = d / "truncated.mp4"
    out["truncated"].write_bytes(data[: int(len(data) * 0.6)])
    # Random bytes over 4% of the file, in its middle.
    rng = random.Random(3)
    buf = bytearray(data)
    for i in range(int(len(buf) * 0.48), int(len(buf) * 0.52)):
        buf[i] = rng.randrange(256)
    out["corrupt"] = d / "corrupt.mp4"
    out["corrupt"].write_bytes(bytes(buf))
    # Frames 40-49 dropped, the others keeping their times.
    out["dropped"] = d / "dropped.mp4"
    _ffmpeg("-i", clean, "-vf", "select='not(between(n,40,49))'", "-fps_mode", "passthrough",
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "copy", out["dropped"])
    # Audio 4.5 s long under 5 s of picture.
    out["short-audio"] = encode_video((numbered_frame(i) for i in range(N)), _sine(4.5), 44100, FPS,
                                      d / "short-audio.mp4", W, H, gop_seconds=1.0)
    # Variable frame rate: 25 fps for 2 s, then every other frame (12.5 fps).
    out["vfr"] = d / "vfr.mp4"
    _ffmpeg("-i", clean, "-vf", "select='lt(n,50)+not(mod(n,2))'", "-fps_mode", "vfr",
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "copy", out["vfr"])
    return out


def clean_frames(path: Path) -> np.ndarray:
    info = media.probe(path)
    return np.concatenate([f for _, f in media.iter_frames(path, info)])


def test_each_decoded_picture_is_the_one_shown_at_its_index(damaged):
    reference = clean_frames(damaged["clean"])
    assert [read_number(f) for f in reference] == list(range(N))
    seen = {}
    for case, path in damaged.items():
        try:
            info = media.probe(path)
        except media.MediaError as exc:
            seen[case] = f"probe refused: {exc}"
            continue
        loss = media.FrameLoss(expected=0)
        kept = 0
        for idx, frames in media.iter_frames(path, info, loss=loss):
            for i, frame in zip(idx.tolist(), frames):
                t = i / info.fps
                n = read_number(frame)
                # The picture shown at t: its own time lies within one grid step before t.
                assert t - 1 / info.fps - 1e-6 < n / FPS <= t + 1e-6, (case, i, n)
                if case in ("clean", "truncated", "corrupt", "short-audio"):
                    assert i == n and np.array_equal(frame, reference[n]), (case, i)  # intact: pixel for pixel
                kept += 1
        missing = {j for a, b in loss.missing for j in range(a, b + 1)}
        assert kept + len(missing) == info.frames, case
        seen[case] = (kept, loss.describe(info.fps))
    assert seen["clean"] == (N, "")
    assert seen["short-audio"] == (N, "")  # the picture is whole; the builds drop what the audio does not cover
    kept, text = seen["corrupt"]
    assert 0 < kept < N and "frames not decoded" in text and "damaged data" in text
    if not isinstance(seen["truncated"], str):
        kept, text = seen["truncated"]
        assert kept < 0.7 * N and "frames not decoded" in text
    assert seen["dropped"][0] < N and seen["vfr"][0] < N


def _manifest(tmp_path: Path, files: dict[str, Path]) -> Path:
    from tasks.datasets.manifest import write_pianoyt

    rows = [(case.replace("-", "_"), str(p), 1, 0, 720, 0, 1280) for case, p in files.items()]
    return write_pianoyt(tmp_path / "manifest.csv", rows)


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT)


def _check_build(root: Path, status: dict, rows_by_video: dict, number_of, same_as_clean: tuple[str, ...]):
    """Every video done or failed with a reason; every kept row shows its own time; losses add up."""
    for vid, st in status.items():
        assert st["state"] in ("done", "failed"), vid
        if st["state"] == "failed":
            assert st["stage"] and st["error"], vid
            continue
        rows = rows_by_video[vid]
        assert 0 <= st["frames"] - len(rows) <= 4, vid  # (the violin build drops 4 frames between train and val)
        assert st["frames"] == st["expected_frames"] - st["lost_frames"], vid
        assert bool(st["lost_frames"]) == bool(st["lost"]), vid
        clean = rows_by_video["clean"]
        for i, (t, image) in rows.items():
            n = number_of(image)
            assert t - 1 / FPS - 1e-6 < n / FPS <= t + 1e-6 or vid in ("vfr", "dropped"), (vid, i, n)
            if vid in same_as_clean:
                assert i == n and image == clean[i][1], (vid, i)


def _status(root: Path, dataset: str) -> dict:
    t = pq.read_table(root / dataset / "status.parquet").to_pylist()
    return {r["video_id"]: r for r in t}


def _rows(root: Path, dataset: str) -> dict:
    from tasks.store.shards import read_dataset

    out: dict = {}
    for r in read_dataset(str(root / dataset / "shards")).to_pylist():
        out.setdefault(r["video_id"], {})[r["frame_index"]] = (r["time"], r["image"])
    return out


@pytest.mark.slow
def test_a_build_never_pairs_a_picture_with_another_frames_labels(damaged, tmp_path):
    """The issue's case: a clip corrupted in the middle built with no picture moved onto an earlier frame's row."""
    pytest.importorskip("aubio")
    root = tmp_path / "data"
    proc = _cli("build-violinyt", "--manifest", _manifest(tmp_path, {"corrupt": damaged["corrupt"]}),
                "--data-root", root)
    assert proc.returncode in (0, 3), proc.stderr[-3000:]
    rows = _rows(root, "violinyt").get("corrupt", {})
    assert rows, "the intact part of the clip is kept"
    shown = {i: read_number(media.decode_image(image)) for i, (_, image) in rows.items()}
    assert {i: n for i, n in shown.items() if i != n} == {}  # each row shows its own frame
    assert len(rows) < N - 4  # and the damaged frames are not there


@pytest.mark.slow
def test_violin_build_keeps_only_frames_at_their_own_time(damaged, tmp_path):
    pytest.importorskip("aubio")
    root = tmp_path / "data"
    proc = _cli("build-violinyt", "--manifest", _manifest(tmp_path, damaged), "--data-root", root)
    assert proc.returncode in (0, 3), proc.stderr[-3000:]
    status, rows = _status(root, "violinyt"), _rows(root, "violinyt")
    assert status["clean"]["state"] == "done" and status["clean"]["lost_frames"] == 0
    short = status["short_audio"]
    assert short["state"] == "done" and short["lost_frames"] == int(0.5 * FPS) and "after the audio's end" in short["lost"]
    assert max(rows["short_audio"]) < 4.5 * FPS
    assert status["corrupt"]["state"] == "done" and status["corrupt"]["lost_frames"] > 0
    assert status["truncated"]["state"] == "failed" and status["truncated"]["stage"] in ("probe", "violin-frames")
    _check_build(root, status, rows, lambda b: read_number(media.decode_image(b)),
                 same_as_clean=("corrupt", "short_audio"))
    card = (root / "violinyt" / "CARD.md").read_text()
    assert "Videos built with frames lost" in card and "corrupt" in card


@pytest.mark.slow
def test_piano_build_keeps_only_frames_at_their_own_time(damaged, tmp_path):
    # The labels' values do not matter here, only which picture they are paired with: an untrained
    # Onsets and Frames (small config) labels in a fraction of transkun's time.
    from models import onsets_frames as of

    ckpt = of.save_checkpoint(tmp_path / "untrained.pt", of.OnsetsAndFrames(of.OnsetsFramesConfig.small()), step=0)
    files = {k: damaged[k] for k in ("clean", "corrupt", "short-audio", "truncated")}
    root = tmp_path / "data"
    proc = _cli("build-pianoyt", "--manifest", _manifest(tmp_path, files), "--data-root", root,
                "--labeler", "onsets-frames", "--checkpoint", ckpt)
    assert proc.returncode in (0, 3), proc.stderr[-3000:]
    status, rows = _status(root, "pianoyt"), _rows(root, "pianoyt")
    assert status["clean"]["state"] == "done" and len(rows["clean"]) == N
    assert status["short_audio"]["lost_frames"] == int(0.5 * FPS)
    assert status["truncated"]["state"] == "failed"
    _check_build(root, status, rows, lambda b: read_number(media.decode_image(b)),
                 same_as_clean=("corrupt", "short_audio"))


@pytest.mark.slow
def test_voxceleb_build_keeps_only_sound_frames(tmp_path):
    import csv

    samples = tmp_path / "faces"
    proc = _cli("samples", "faces", "--out", samples, "--identities", 3, "--utterances", 1, "--seconds", 3,
                "--seed", 3)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader((samples / "manifest.csv").open()))
    victim = rows[0]["video_id"]
    data = bytearray(Path(rows[0]["url"]).read_bytes())
    rng = random.Random(5)
    for i in range(int(len(data) * 0.4), int(len(data) * 0.75)):
        data[i] = rng.randrange(256)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(data))
    with (tmp_path / "damaged.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows([{**r, "url": str(broken)} if r["video_id"] == victim else r for r in rows])
    builds = {}
    for name, manifest in (("clean", samples / "manifest.csv"), ("damaged", tmp_path / "damaged.csv")):
        root = tmp_path / name
        proc = _cli("build-voxceleb", "--metadata", manifest, "--data-root", root)
        assert proc.returncode in (0, 3), proc.stderr[-3000:]
        from tasks.store.shards import read_dataset

        shard_rows = {(r["video_id"], r["frame_index"]): r["image"]
                      for r in read_dataset(str(root / "voxceleb" / "shards")).to_pylist()}
        builds[name] = (shard_rows, pq.read_table(root / "voxceleb" / "status.parquet").to_pylist())
    clean_rows, _ = builds["clean"]
    damaged_rows, status = builds["damaged"]
    for key, image in damaged_rows.items():
        assert image == clean_rows[key], key  # every kept crop is the clean video's, frame for frame
    hit = next(r for r in status if r["video_id"] == victim)
    kept = sum(1 for v, _ in damaged_rows if v == victim)
    if hit["state"] == "done":
        assert hit["undecoded"] > 0 and hit["lost_frames"] == hit["undecoded"] and "not decodable" in hit["lost"]
        assert kept == hit["sampled"] - hit["undecoded"] - hit["outside"] - hit["past_end"]
    else:
        assert hit["stage"] == "faces" and "not decodable" in hit["error"] and kept == 0
    others = {k: v for k, v in clean_rows.items() if k[0] != victim}
    assert others == {k: v for k, v in damaged_rows.items() if k[0] != victim}
