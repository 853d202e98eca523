"""The audio-visual sync network (thesis ch. 7): streams, loss, audio windows, training, the offset curve."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile
import torch
from PIL import Image

from models.av_sync import SyncConfig, SyncNet, contrastive_loss, describe, pair_distance
from tasks.datasets.pianoyt import SCHEMA
from tasks.evaluation import av_sync as E
from tasks.store.shards import VideoShardWriter
from tasks.training import av_sync as T
from tasks.training.trainer import CheckpointError, TrainerSettings
from tasks.training.windows import SyncLabels, video_windows

H, W, FPS, SR = 48, 264, 25.0, 16000


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here on one torch thread (tests/conftest.py)."""


def _picture(bright: bool, i: int) -> np.ndarray:
    img = np.full((H, W), 40, np.uint8)
    if bright:  # a key goes down: a bright bar, the picture of the event
        img[H // 2:, 100:140] = 230
    img[0, 0] = i % 256
    return img


def _png(bright: bool, i: int) -> bytes:
    img = _picture(bright, i)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def event_media(n: int, rng, delay_s: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` frames' worth of events at random frames (about 2 a second): which frames show the bar (bool
    [n]), the event frames, and the sound (a decaying 660 Hz burst at each event, ``delay_s`` late; 16 kHz)."""
    ev = np.flatnonzero(rng.random(n) < 0.08)
    bright = np.zeros(n, bool)
    for e in ev:
        bright[e:e + 2] = True
    t = np.arange(int((n / FPS + 0.5) * SR)) / SR
    y = 0.001 * rng.standard_normal(len(t))
    for e in ev:
        start = e / FPS + delay_s
        y += (t >= start) * np.sin(2 * np.pi * 660 * (t - start)) * np.exp(-np.clip(t - start, 0, None) * 25) * 0.5
    return bright, ev, y.astype(np.float32)


def make_sync_build(root: Path, videos: dict[str, tuple[str, int]], seed: int = 0, delay_s: float = 0.0,
                    onset_key: int | None = None) -> dict:
    """A pianoyt build's shards and audio (:func:`event_media`: a bar in the picture and a tone burst in the
    sound at each event); returns each video's event frames.  With ``onset_key`` (0-87) each event is also a
    labelled onset of that key: in the shards' ``onset`` column and in ``labels/<video>.mid``."""
    from tasks.labels.transcribe import Note, write_midi

    rng = np.random.default_rng(seed)
    shards, audio_dir = root / "pianoyt" / "shards", root / "pianoyt" / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    events = {}
    for vid, (split, n) in videos.items():
        bright, events[vid], y = event_media(n, rng, delay_s)
        onset = np.zeros((n, 88), np.uint8)
        if onset_key is not None:
            onset[events[vid], onset_key] = 1
            write_midi([Note(e / FPS, (e + 3) / FPS, 21 + onset_key, 90) for e in events[vid]],
                       root / "pianoyt" / "labels" / f"{vid}.mid")
        with VideoShardWriter(shards, vid, split, SCHEMA) as writer:
            for a in range(0, n, 32):
                idx = list(range(a, min(n, a + 32)))
                zeros = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(len(idx) * 88, np.uint8)), 88)
                onsets = pa.FixedSizeListArray.from_arrays(pa.array(onset[idx].reshape(-1)), 88)
                writer.write(pa.record_batch([
                    pa.array([vid] * len(idx), pa.string()), pa.array(idx, pa.int32()),
                    pa.array(np.asarray(idx) / FPS, pa.float64()),
                    pa.array([_png(bright[i], i) for i in idx], pa.binary()), onsets, zeros], schema=SCHEMA))
            writer.commit()
        soundfile.write(str(audio_dir / f"{vid}.wav"), y, SR)
    return events


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    root = tmp_path_factory.mktemp("sync-build")
    make_sync_build(root, {"v1": ("train", 150), "v2": ("train", 150), "v3": ("train", 150),
                           "v4": ("train", 150), "v5": ("test", 120)})
    return root


def _settings(root, run, learning_rate: float = 1e-4, **trainer) -> T.SyncSettings:
    t = dict(run_dir=str(run), max_steps=4, val_every=2, log_every=1, batch_size=6, num_workers=0,
             progress_bar=False, accelerator="cpu")
    t.update(trainer)
    return T.SyncSettings(data_root=str(root), trainer=TrainerSettings(**t), config="small", max_shift=1.0,
                          buffer_size=32, learning_rate=learning_rate)


@pytest.fixture(scope="module")
def trained(build, tmp_path_factory) -> Path:
    """The small network after 120 steps (batch 8, Adam 1e-3; about a minute on one core): its best checkpoint."""
    run = tmp_path_factory.mktemp("sync-run") / "run"
    T.train(_settings(build, run, learning_rate=1e-3, max_steps=120, val_every=40, batch_size=8), log=lambda *a: None)
    return run / "checkpoints" / "best.ckpt"


# ---------------------------------------------------------------- network and loss


def test_streams_give_features_of_one_space_at_both_sizes():
    small = SyncConfig.named("small")
    net = SyncNet(small).eval()
    frames, audio = torch.rand(2, 5, small.height, small.crop_width), torch.randn(2, small.audio_samples)
    assert net.visual(frames).shape == net.audio(audio).shape == (2, small.embedding)
    assert net(frames, audio).shape == (2,)
    paper = SyncConfig.named("paper")
    assert paper.visual_features == 2048 and paper.audio_samples == 3200  # the thesis's 2048-d, 0.2 s at 16 kHz
    assert "visual trunk" in describe(small) and "[1, 64]" in describe(small)
    with pytest.raises(ValueError, match=r"expected audio \[B, 3200\]"):
        net.audio(torch.zeros(2, 3000))


def test_contrastive_loss_pulls_matching_pairs_and_pushes_others_to_the_margin():
    d = torch.tensor([0.0, 0.5, 0.2, 1.5])
    matching = torch.tensor([True, True, False, False])
    # positives: (0 + 0.25) / 2 / 2 = 0.0625; negatives: (0.8^2 / 2 + 0) / 2 = 0.16; halves averaged
    assert contrastive_loss(d, matching).item() == pytest.approx((0.0625 + 0.16) / 2)
    assert contrastive_loss(torch.tensor([2.0]), torch.tensor([False])).item() == 0.0  # beyond the margin
    v, a = torch.zeros(1, 3, requires_grad=True), torch.zeros(1, 3)
    pair_distance(v, a).sum().backward()  # finite at distance 0
    assert torch.isfinite(v.grad).all()


# ---------------------------------------------------------------- windows with their audio


def test_sync_windows_carry_the_audio_centred_on_the_frame_time(tmp_path):
    make_sync_build(tmp_path, {"a": ("train", 40)})
    track, sr = soundfile.read(str(tmp_path / "pianoyt" / "audio" / "a.wav"), dtype="float32")
    labels = SyncLabels(str(tmp_path / "pianoyt"), sample_rate=8000, context_samples=800, offset=0.04)
    ws = list(video_windows(str(tmp_path / "pianoyt" / "shards"), "train", "a", size=(H, W), labels=labels))
    assert [w["frame_index"] for w in ws] == list(range(2, 38))
    w = ws[10]  # frame 12, t = 0.48 s; audio at 0.52 s, resampled to 8 kHz
    assert w["time"] == pytest.approx(12 / FPS) and w["audio"].shape == (800,)
    import soxr

    expect = soxr.resample(track, sr, 8000, quality="HQ")[int(round(0.52 * 8000)) - 400:][:800]
    np.testing.assert_allclose(w["audio"].numpy(), expect, atol=1e-6)


def test_pairs_are_cut_from_the_context_without_overlap_and_other_videos_only_when_apart():
    torch.manual_seed(0)
    task = T.SyncTask("small", max_shift=0.5)
    seg, shift = task.segment, task.shift
    context = torch.arange(task.context_samples, dtype=torch.float32).repeat(3, 1)
    centred = task._cut(context, torch.zeros(3, dtype=torch.long))
    assert centred[0, 0].item() == shift and centred.shape == (3, seg)
    shifts = task._random_shifts(2000, torch.Generator().manual_seed(1))
    assert shifts.abs().min() >= seg and shifts.abs().max() <= shift and (shifts > 0).any() and (shifts < 0).any()
    batch = {"frames": torch.rand(3, 5, H, W), "audio": torch.randn(3, task.context_samples),
             "video_id": ["x", "x", "y"], "time": [1.0, 1.1, 1.0]}
    d = task.pair_distances(batch, torch.Generator().manual_seed(0))
    # window 0's other-video partner is window 1: the same video, 0.1 s apart (overlapping): left out
    assert d["positive"].shape == (3,) and d["same_video"].shape == (3,) and d["other_video"].shape == (2,)


# ---------------------------------------------------------------- training


def test_training_writes_checkpoints_and_curves_resumes_and_loads(build, tmp_path):
    run = tmp_path / "run"
    summary = T.train(_settings(build, run), log=lambda *a: None)
    assert summary["steps"] == 4 and (run / "checkpoints" / "best.ckpt").is_file()
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "val_pair_accuracy" in header and "val_loss" in header and "train_loss" in header
    net, hp = T.load_net(run / "checkpoints" / "last.ckpt")
    assert isinstance(net, SyncNet) and hp["config"] == "small" and not net.training
    again = T.train(_settings(build, run, max_steps=6), log=lambda *a: None)
    assert again["steps"] == 6  # went on from step 4
    assert json.loads((run / "run_settings.json").read_text())["validation_videos"]


def test_refusals_in_one_line(build, tmp_path):
    with pytest.raises(ValueError, match="no shards for split 'train'"):
        T.check_data(str(tmp_path))
    gone = tmp_path / "no-audio"
    make_sync_build(gone, {"a": ("train", 20)})
    (gone / "pianoyt" / "audio" / "a.wav").unlink()
    with pytest.raises(ValueError, match=r"a\.wav: the build's audio of 1 train video"):
        T.check_data(str(gone))
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.ckpt: not a checkpoint"):
        T.load_net(junk)


# ---------------------------------------------------------------- the offset curve


class _Exact(torch.nn.Module):
    """A stand-in 'network' whose features are exact: the visual feature of a window is the audio feature of
    the same instant, so a delayed track must show its delay as the minimum."""

    def __init__(self):
        super().__init__()
        self.config = SyncConfig.named("small")
        self.visual = lambda frames: frames[:, 2, 0, :4].double()
        self.audio = lambda audio: audio[:, :4].double()


def test_the_curve_minimum_is_the_audio_delay_in_frames():
    rng = np.random.default_rng(0)
    n = 60
    codes = rng.standard_normal((n + 200, 4))  # a feature per frame instant
    delay = 3  # frames: the sound of frame i is at i + 3 in the track
    sr, seg = SR, SyncConfig.named("small").audio_samples
    track = np.zeros(int((n + 10) / FPS * sr) + seg, np.float32)
    for i in range(-20, n + 20):  # the track: at each frame instant's sample, that instant's code (delayed)
        s = int(round((i + delay) / FPS * sr)) - seg // 2
        if 0 <= s and s + 4 <= len(track):
            track[s:s + 4] = codes[i + 100]
    windows = []
    for i in range(2, n - 2):
        frames = torch.zeros(5, 1, 4)
        frames[2, 0] = torch.from_numpy(codes[i + 100]).float()
        windows.append({"frames": frames, "frame_index": i, "time": i / FPS})
    curve = E.video_curve(_Exact(), windows, track, sr, "x", max_shift=0.4)
    assert len(curve.shifts) == 21 and curve.fps == pytest.approx(FPS)
    est = curve.estimate()
    assert est["offset_frames"] == delay and est["offset_s"] == pytest.approx(0.12) and est["confidence"] > 0


def test_a_trained_network_finds_known_audio_delays_of_a_held_out_video(build, trained):
    net, _ = T.load_net(trained)
    for delay_s in (0.0, 0.12, -0.2):
        curve = E.build_curve(net, str(build), "test", "v5", max_shift=1.0, audio_offset=delay_s)
        est = curve.estimate()
        assert est["offset_frames"] == round(delay_s * FPS), (delay_s, est)
        assert est["confidence"] > 0.05


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])


def test_cli_evaluates_writes_table_curve_and_figure_and_refuses_other_checkpoints(build, trained, tmp_path):
    import pyarrow.parquet as pq

    results = tmp_path / "R"
    proc = _cli("evaluate", "av-sync", "--data-root", build, "--checkpoint", trained, "--max-shift", 1.0,
                "--results", results)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (results / "av-sync.md").read_text()
    assert "| v5 |" in md and "all test videos" in md and '"git_commit"' in md
    rows = pq.read_table(results / "av-sync.parquet").to_pylist()
    assert [r["offset_frames"] for r in rows] == [0, 0]  # v5, and the pooled curve of fig. 7.3: minimum at 0
    curve = pq.read_table(results / "av-sync-curve.parquet").to_pydict()
    assert len(curve["shift_s"]) == 51 and (results / "av-sync-curve.png").stat().st_size > 10_000
    proc = _cli("evaluate", "av-sync", "--data-root", build, "--checkpoint", tmp_path / "none.ckpt")
    assert proc.returncode == 2 and "none.ckpt" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    from tests.test_piano_training import _settings as piano_settings
    from tasks.training.piano_onsets import train as train_piano

    train_piano(piano_settings(build, tmp_path / "piano", max_steps=1, val_every=1), log=lambda *a: None)
    proc = _cli("evaluate", "av-sync", "--data-root", build, "--checkpoint",
                tmp_path / "piano" / "checkpoints" / "last.ckpt")
    assert proc.returncode == 2 and "not an av-sync checkpoint" in proc.stderr, proc.stderr


def test_av_offset_of_a_video_file_with_delayed_sound(trained, tmp_path):
    from tasks.samples.encode import encode_video

    n, delay_s = 125, 0.12
    bright, _, sound = event_media(n, np.random.default_rng(5), delay_s)
    frames = (np.repeat(_picture(bright[i], i)[..., None], 3, axis=2) for i in range(n))
    video = encode_video(frames, sound[: int(n / FPS * SR)], SR, FPS, tmp_path / "delayed.mp4", W, H)
    proc = _cli("av-offset", video, "--crop", f"0,{H},0,{W}", "--crop-reference", f"{W}x{H}", "--checkpoint",
                trained, "--max-shift", 1.0, "--figure", tmp_path / "curve.png")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("offset +0.120 s (+3 frames at 25 fps)"), proc.stdout
    assert (tmp_path / "curve.png").is_file()
    silent = encode_video((np.zeros((H, W, 3), np.uint8) for _ in range(10)), None, SR, FPS, tmp_path / "mute.mp4", W, H)
    proc = _cli("av-offset", silent, "--crop", f"0,{H},0,{W}", "--crop-reference", f"{W}x{H}", "--checkpoint", trained)
    assert proc.returncode == 2 and "mute.mp4: its audio could not be decoded" in proc.stderr, proc.stderr


def test_train_cli_runs_the_flow_and_refuses_a_build_without_audio(build, tmp_path):
    import shutil

    out = tmp_path / "run"
    proc = _cli("train", "av-sync", "--data-root", build, "--out", out, "--max-steps", 2, "--val-every", 2,
                "--batch-size", 4, "--num-workers", 0, "--max-shift", 1.0, "--no-progress-bar", "--accelerator", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout[proc.stdout.index("{"):])["av-sync"]["steps"] == 2
    bare = tmp_path / "bare"
    shutil.copytree(build / "pianoyt" / "shards", bare / "pianoyt" / "shards")
    proc = _cli("train", "av-sync", "--data-root", bare, "--out", tmp_path / "r2")
    assert proc.returncode == 2 and "the build's audio of 4 train video(s) is missing" in proc.stderr, proc.stderr


def test_sample_videos_with_a_known_audio_delay(tmp_path):
    from tasks.media.decode import extract_audio, read_wav
    from tasks.samples.piano import make_piano_samples, read_av_offsets

    kw = dict(videos=1, seconds=3.0, seed=4, width=320, height=180)
    make_piano_samples(tmp_path / "a", **kw)
    make_piano_samples(tmp_path / "b", av_offset_ms=(150, 250), **kw)
    delay = read_av_offsets(tmp_path / "b")["sample_000"]
    assert 0.15 <= delay <= 0.25 and read_av_offsets(tmp_path / "a") == {}
    assert (tmp_path / "a" / "midi" / "sample_000.mid").read_bytes() == (tmp_path / "b" / "midi" / "sample_000.mid").read_bytes()
    tracks = [read_wav(extract_audio(tmp_path / k / "videos" / "sample_000.mp4", tmp_path / f"{k}.wav", 16000))[0]
              for k in "ab"]
    lag = np.argmax(np.correlate(tracks[1][:32000], tracks[0][:24000], mode="valid"))  # b is a, later by the lag
    assert abs(lag / 16000 - delay) <= 0.002


def test_a_build_with_av_offset_records_the_delay_and_moves_the_labels_by_it(trained, tmp_path):
    import pyarrow.parquet as pq

    from tasks.datasets.manifest import write_pianoyt
    from tasks.datasets.pianoyt import shift_notes
    from tasks.labels.align import frame_labels
    from tasks.labels.transcribe import read_midi
    from tasks.samples.encode import encode_video
    from tasks.store.shards import read_dataset

    n, delay_s = 150, 0.12
    bright, _, sound = event_media(n, np.random.default_rng(9), delay_s)
    frames = (np.repeat(_picture(bright[i], i)[..., None], 3, axis=2) for i in range(n))
    encode_video(frames, sound[: int(n / FPS * SR)], SR, FPS, tmp_path / "late.mp4", W, H)
    manifest = write_pianoyt(tmp_path / "manifest.csv", [("late", "late.mp4", 1, 0, H, 0, W)])
    data = tmp_path / "D"
    proc = _cli("build", "pianoyt", "--manifest", manifest, "--data-root", data, "--crop-reference", f"{W}x{H}",
                "--device", "cpu", "--av-offset", trained)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    status = pq.read_table(data / "pianoyt" / "status.parquet").to_pylist()[0]
    assert status["av_offset_frames"] == 3 and status["av_offset_s"] == pytest.approx(0.12), status
    assert "## Audio-visual offsets" in (data / "pianoyt" / "CARD.md").read_text()
    # The onset column is the transcribed labels moved 0.12 s earlier, frame by frame (transkun hears no piano
    # note in these tone bursts, so the labels may be empty here: the shift's effect is tested just below).
    table = read_dataset(data / "pianoyt" / "shards")
    index = np.asarray(table.column("frame_index").to_pylist())
    onset = np.asarray(table.column("onset").to_pylist(), np.uint8)
    notes = read_midi(str(data / "pianoyt" / "labels" / "late.mid"))
    np.testing.assert_array_equal(onset, frame_labels(shift_notes(notes, -delay_s), n, FPS)[0][index])

    proc = _cli("build", "pianoyt", "--manifest", manifest, "--data-root", tmp_path / "D2", "--crop-reference",
                f"{W}x{H}", "--av-offset", tmp_path / "none.ckpt")
    assert proc.returncode == 2 and "none.ckpt" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_moved_labels_land_on_the_frames_that_show_the_key_going_down(tmp_path):
    from tasks.datasets.pianoyt import build_frames
    from tasks.labels.transcribe import Note, write_midi
    from tasks.samples.encode import encode_video
    from tasks.store.shards import read_dataset

    n, delay_s = 100, 0.12
    bright, events, sound = event_media(n, np.random.default_rng(3), delay_s)
    frames = (np.repeat(_picture(bright[i], i)[..., None], 3, axis=2) for i in range(n))
    video = encode_video(frames, sound[: int(n / FPS * SR)], SR, FPS, tmp_path / "late.mp4", W, H)
    # each note as heard: 0.4 frame into its event frame (off the frame boundary), then the delay
    heard = write_midi([Note((e + 0.4) / FPS + delay_s, (e + 5) / FPS + delay_s, 60, 90) for e in events],
                       tmp_path / "h.mid")
    for shift, folder in ((0.0, "as-heard"), (delay_s, "moved")):
        build_frames(str(video), str(heard), "late", "train", (0, H, 0, W), str(tmp_path / folder),
                     crop_reference=(W, H), label_shift=shift)
    onset_frames = {}
    for folder in ("as-heard", "moved"):
        t = read_dataset(tmp_path / folder)
        onset = np.asarray(t.column("onset").to_pylist(), np.uint8)
        onset_frames[folder] = np.asarray(t.column("frame_index").to_pylist())[onset.any(axis=1)]
    np.testing.assert_array_equal(onset_frames["moved"], events)  # on the pictures of the events
    np.testing.assert_array_equal(onset_frames["as-heard"], events[events + 3 < n] + 3)  # 3 frames late
