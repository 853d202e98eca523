"""Onsets from noisy audio (thesis ch. 6, table 2): mixtures, feature alignment, the MLP's training and its table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import onsets_frames as of
from models.av_mlp import FusionMLP
from tasks.evaluation import piano_noisy as E
from tasks.training import av_mlp as T
from tasks.training.piano_onsets import PianoOnsetsSettings, train as train_visual
from tasks.training.trainer import CheckpointError, TrainerSettings
from tests.test_av_sync import make_sync_build

KEY = 39  # middle C, the key every event of the fixture presses


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here on one torch thread (tests/conftest.py)."""


def test_mixture_has_the_asked_power_ratio_and_partners_form_one_cycle():
    rng = np.random.default_rng(0)
    clean, noise = rng.standard_normal(16000).astype(np.float32), 3 * rng.standard_normal(7000).astype(np.float32)
    for snr in (1.0, 4.0):
        mixed = T.mix_at_snr(clean, noise, snr)
        added = mixed - clean
        assert len(mixed) == len(clean)
        assert np.mean(clean ** 2) / np.mean(added ** 2) == pytest.approx(snr, rel=1e-3)
        np.testing.assert_allclose(added[7000:14000], added[:7000], atol=1e-5)  # the noise looped
    np.testing.assert_array_equal(T.mix_at_snr(clean, np.zeros(10, np.float32), 1.0), clean)
    videos = [f"v{i}" for i in range(7)]
    partners = T.noise_partners(videos, 3)
    assert sorted(partners) == sorted(partners.values()) == videos and all(partners[v] != v for v in videos)
    seen, v = set(), videos[0]
    while v not in seen:  # one cycle through every video
        seen.add(v)
        v = partners[v]
    assert seen == set(videos) and partners != T.noise_partners(videos, 4)
    assert T.noise_partners(["only"], 0) == {"only": "only"}


def test_audio_rows_are_pooled_over_the_frames_a_target_covers():
    rate, fps = 31.25, 25.0
    values = np.zeros((100, 2), np.float32)
    values[40, 0] = 1.0  # 1.28 s: video frame 32
    values[10, 1] = 2.0  # 0.32 s: video frame 8
    out = T.on_frames(values, rate, np.arange(60), fps)
    assert np.flatnonzero(out[:, 0]).tolist() == [31, 32, 33]  # within +-1.5 frames of the row's time
    assert np.flatnonzero(out[:, 1]).tolist() == [7, 8, 9] and out[8, 1] == 2.0


def test_mlp_refuses_features_of_other_sizes():
    mlp = FusionMLP(6, 10).eval()
    assert mlp(torch.randn(4, 6), torch.randn(4, 10)).shape == (4, 88)
    with pytest.raises(ValueError, match=r"expected audio \[B, 6\]"):
        mlp(torch.randn(4, 10), torch.randn(4, 6))


def test_onset_features_are_the_layer_under_the_onset_head():
    net = of.OnsetsAndFrames(of.OnsetsFramesConfig.small()).eval()
    mel = torch.randn(1, 50, of.N_MELS)
    feats, logits = net.onset_features(mel)
    assert feats.shape == (1, 50, 2 * net.config.onset_lstm_units)
    torch.testing.assert_close(logits, net(mel)["onset"])


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    """A build whose events are labelled onsets of one key, an Onsets and Frames checkpoint (untrained: its
    features still follow the sound) and a visual checkpoint trained a few steps on the build."""
    root = tmp_path_factory.mktemp("noisy")
    make_sync_build(root / "data", {"v1": ("train", 150), "v2": ("train", 150), "v3": ("train", 150),
                                    "v4": ("train", 150), "v5": ("train", 150), "t1": ("test", 150),
                                    "t2": ("test", 150)}, onset_key=KEY)
    torch.manual_seed(0)
    of_ckpt = of.save_checkpoint(root / "of.pt", of.OnsetsAndFrames(of.OnsetsFramesConfig.small()))
    visual_run = root / "visual"
    train_visual(PianoOnsetsSettings(data_root=str(root / "data"), trainer=TrainerSettings(
        run_dir=str(visual_run), max_steps=3, val_every=3, batch_size=8, num_workers=0, progress_bar=False,
        accelerator="cpu"), buffer_size=32), log=lambda *a: None)
    return root, Path(of_ckpt), visual_run / "checkpoints" / "last.ckpt"


def _settings(root, of_ckpt, visual, run, **trainer) -> T.AvMlpSettings:
    t = dict(run_dir=str(run), max_steps=150, val_every=50, batch_size=64, num_workers=0, progress_bar=False,
             accelerator="cpu")
    t.update(trainer)
    return T.AvMlpSettings(data_root=str(root / "data"), onsets_frames=str(of_ckpt), visual=str(visual),
                           trainer=TrainerSettings(**t))


@pytest.fixture(scope="module")
def trained(networks, tmp_path_factory):
    root, of_ckpt, visual = networks
    run = tmp_path_factory.mktemp("mlp") / "run"
    summary = T.train(_settings(root, of_ckpt, visual, run), log=lambda *a: None)
    return run, summary


def test_training_uses_the_visual_runs_validation_videos_and_caches_features(networks, trained):
    root, of_ckpt, visual = networks
    run, summary = trained
    held = json.loads((visual.parent.parent / "run_settings.json").read_text())["validation_videos"]
    assert summary["validation_videos"] == held and summary["steps"] == 150
    cached = sorted(p.name for p in (run / "features").glob("*.npz"))
    assert cached == [f"train-v{i}.npz" for i in range(1, 6)]
    f = T.VideoFeatures.load(run / "features" / "train-v1.npz",
                             str(np.load(run / "features" / "train-v1.npz")["key"]))
    assert f.audio.shape == (146, 2 * of.OnsetsFramesConfig.small().onset_lstm_units) and f.target.shape == (146, 88)
    assert f.frame_index.tolist() == list(range(2, 148)) and f.target[:, KEY].sum() > 0
    assert not np.allclose(f.audio_probs, f.clean_probs)  # the noise reached the audio network


def test_table_scores_every_row_and_the_mlp_learns_the_events(networks, trained, tmp_path):
    root, _, _ = networks
    run, _ = trained
    ckpt = run / "checkpoints" / "best.ckpt"
    result = E.evaluate_checkpoint(ckpt, root / "data", log=lambda *a: None)
    assert result["test_videos"] == ["t1", "t2"] and set(result["rows"]) == set(E.ROWS)
    f1 = {k: r["PianoYT test"]["f1"] for k, r in result["rows"].items()}
    # An untrained Onsets and Frames marks nothing reliably; the MLP, trained on its features and the
    # picture's, finds most labelled onsets.
    assert f1["mlp"] > 0.6 and f1["mlp"] > f1["noisy"] + 0.2, f1
    rows = E.table_rows(result)
    assert [r["model"] for r in rows][-1] == "audio-visual MLP" and rows[-1]["thesis P/R/Acc/F1"].endswith("81.82")
    out = subprocess.run([sys.executable, "-m", "flows.cli", "evaluate", "av-mlp", "--data-root", str(root / "data"),
                          "--checkpoint", str(ckpt), "--results", str(tmp_path / "R")],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    md = (tmp_path / "R" / "piano-noisy.md").read_text()
    assert "audio-visual MLP" in md and "SNR = 1" in md and (tmp_path / "R" / "piano-noisy.parquet").is_file()


def test_other_checkpoints_are_refused_in_one_line(networks, tmp_path):
    root, of_ckpt, visual = networks
    with pytest.raises(CheckpointError, match="not a checkpoint of train av-mlp"):
        T.load_task(visual)
    bad = T.AvMlpSettings(data_root=str(root / "data"), onsets_frames=str(visual), visual=str(visual),
                          trainer=TrainerSettings(run_dir=str(tmp_path / "r")))
    with pytest.raises(ValueError):
        T.check_settings(bad)
    out = subprocess.run([sys.executable, "-m", "flows.cli", "train", "av-mlp", "--data-root", str(root / "data"),
                          "--onsets-frames", str(of_ckpt), "--visual", str(of_ckpt), "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
