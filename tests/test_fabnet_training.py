"""tasks.training.fabnet: FAb-Net on the shared trainer (curriculum on the plateau hook, checkpoints, refusals)."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import torch

from models.fabnet import CURRICULUM_WINDOWS
from tasks.datasets.voxceleb import SCHEMA
from tasks.media import decode as media
from tasks.store.shards import VideoShardWriter
from tasks.training import fabnet as T
from tasks.training.trainer import CheckpointError, PlateauSchedule, TrainerSettings

SIDE = 64  # stored crops (the real shards: 256); the small model's input


def face(dx: float, dy: float, tint: int) -> np.ndarray:
    """A face-like RGB picture (two eyes and a mouth on a shaded oval), moved by (dx, dy) pixels."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    img = np.empty((SIDE, SIDE, 3), np.float32)
    img[...] = 0.25 + 0.3 * xx[..., None] / SIDE  # a background ramp
    cx, cy = 32 + dx, 32 + dy

    def blob(x, y, rx, ry):
        return np.exp(-(((xx - x) / rx) ** 2 + ((yy - y) / ry) ** 2))

    skin = blob(cx, cy, 17, 21)[..., None] * np.array([0.9, 0.7, 0.55 + tint / 500], np.float32)
    img = img * (1 - blob(cx, cy, 17, 21)[..., None]) + skin
    for ex in (-7, 7):
        img -= 0.6 * blob(cx + ex, cy - 5, 2.5, 2.0)[..., None]
    img -= 0.5 * blob(cx, cy + 9, 6, 2.0)[..., None]
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _track_batch(identity: str, video: str, utt: str, n: int, rng) -> pa.RecordBatch:
    offsets = rng.uniform(-6, 6, size=(n, 2))
    tint = int(rng.integers(0, 100))
    jpegs = [media.encode_image(face(dx, dy, tint)[..., ::-1].copy(), "jpeg") for dx, dy in offsets]
    return pa.record_batch([
        pa.array([identity] * n, pa.string()), pa.array([video] * n, pa.string()), pa.array([utt] * n, pa.string()),
        pa.array(range(n), pa.int32()), pa.array(range(n), pa.int32()), pa.array([j / 25 for j in range(n)]),
        pa.array(jpegs, pa.binary()),
        pa.array([[0.0, 0.0, 100.0, 100.0]] * n, pa.list_(pa.float32(), 4)),
        pa.array([[0.0, 0.0, 100.0, 100.0]] * n, pa.list_(pa.float32(), 4)),
        pa.array([[0.0] * 136] * n, pa.list_(pa.float32(), 136)),
        pa.array(["dlib-hog"] * n, pa.string()), pa.array([0.9] * n, pa.float32()),
    ], schema=SCHEMA)


@pytest.fixture(scope="module")
def face_root(tmp_path_factory):
    """A data root with face shards: 4 train tracks, 2 val tracks, 12 frames each, faces moving about."""
    root = tmp_path_factory.mktemp("fabnet")
    shards = root / "voxceleb" / "shards"
    rng = np.random.default_rng(0)
    for split, identity, tracks in (("train", "id01", 2), ("train", "id02", 2), ("val", "id03", 2)):
        for t in range(tracks):
            utt = f"{t + 1:05d}"
            with VideoShardWriter(shards, f"{identity}-vid{identity}xxxxx-{utt}", split, SCHEMA) as writer:
                writer.write(_track_batch(identity, f"vid{identity}xxxxx", utt, 12, rng))
                writer.commit()
    return root


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here on one torch thread (tests/conftest.py)."""


def settings(root, run, **kw) -> T.FabNetSettings:
    trainer = {"run_dir": str(run), "max_steps": 4, "val_every": 2, "log_every": 1, "batch_size": 4,
               "num_workers": 0, "progress_bar": False, **kw.pop("trainer", {})}
    return T.FabNetSettings(data_root=str(root), trainer=TrainerSettings(**trainer), paper_batches=False, **kw)


class _Trainer(SimpleNamespace):
    sanity_checking = False


def _plateaus(module, values, early_stop):
    """Feed validation values to the shared trainer's PlateauSchedule (patience 1); LR after each."""
    opt = torch.optim.SGD(module.parameters(), lr=1.0)
    rule = PlateauSchedule("val_l1", "min", patience=1, factor=0.1, early_stop=early_stop)
    lrs, stages = [], []
    for v in values:
        early_stop.wait_count += 1  # what EarlyStopping (run before the rule) counts on a validation that did not improve
        rule.on_validation_end(_Trainer(callback_metrics={"val_l1": torch.tensor(v)}, optimizers=[opt]), module)
        lrs.append(opt.param_groups[0]["lr"])
        stages.append(module.curriculum_stage)
    return lrs, stages


def test_the_curriculum_takes_four_plateaus_before_the_learning_rate_is_divided():
    module = T.FabNetTask("small", 1, curriculum=True)
    stop = SimpleNamespace(wait_count=0)
    lrs, stages = _plateaus(module, [1.0] * 7, stop)  # the first sets the best; every later one is a plateau
    assert stages == [0, 1, 2, 3, 4, 4, 4]
    assert lrs[:5] == [1.0] * 5 and lrs[5] == pytest.approx(0.1) and lrs[6] == pytest.approx(0.01)
    assert module.window == CURRICULUM_WINDOWS[-1] == (40, 90)
    # the shifts reset the early stop's count; the LR divisions after the last shift do not
    assert stop.wait_count == 2

    plain = T.FabNetTask("small", 1, curriculum=False)
    lrs, stages = _plateaus(plain, [1.0, 1.0], SimpleNamespace(wait_count=0))
    assert stages == [0, 0] and lrs == [1.0, pytest.approx(0.1)]


def test_curriculum_back_propagates_the_window_only():
    module = T.FabNetTask("small", 1, curriculum=True)
    module.log = lambda *a, **k: None
    torch.manual_seed(0)
    batch = {"sources": torch.rand(8, 1, 3, SIDE, SIDE), "target": torch.rand(8, 3, SIDE, SIDE)}
    loss = module.training_step(batch, 0)
    from models.fabnet import l1_loss

    per = l1_loss(module(batch["sources"], batch["target"]).generated, batch["target"])
    assert float(loss) == pytest.approx(float(per.sort().values[:4].mean()), rel=1e-5)  # the easier half of 8
    module.curriculum_stage = 4
    per_sorted = per.sort().values
    assert float(module.training_step(batch, 0)) == pytest.approx(float(per_sorted[3:7].mean()), rel=1e-5)


def test_training_writes_curves_checkpoints_and_resumes_with_its_window(face_root, tmp_path):
    run = tmp_path / "run"
    summary = T.train(settings(face_root, run, sources=3), log=lambda *a: None)
    assert summary["steps"] == 4 and summary["variant"] == "fabnet-curriculum-3src"
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    vals = [r for r in rows if r.get("val_l1")]
    assert [int(r["step"]) for r in vals] == [1, 3]  # Lightning logs validation at the step before the next
    assert all(float(r["val_identity_l1"]) > 0 for r in vals) and all(r.get("wall_s") for r in vals)
    ck = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ck["curriculum_stage"] == 0 and ck["hyper_parameters"]["sources"] == 3
    ck["curriculum_stage"] = 2  # as if two plateaus had shifted the window
    torch.save(ck, run / "checkpoints" / "last.ckpt")
    again = T.train(settings(face_root, run, sources=3, trainer={"max_steps": 6}), log=lambda *a: None)
    assert again["resumed_from"] and again["steps"] == 6 and again["curriculum_stage"] == 2
    net = T.load_net(run / "checkpoints" / "last.ckpt")
    assert net.confidence is not None and not net.training
    with pytest.raises(CheckpointError, match="sources"):  # another variant in the same folder is refused
        T.train(settings(face_root, run, sources=1, trainer={"max_steps": 8}), log=lambda *a: None)


def test_it_learns_to_move_the_face_better_than_not_moving_it(face_root, tmp_path):
    s = settings(face_root, tmp_path / "learn", curriculum=False, learning_rate=0.05,
                 trainer={"max_steps": 60, "val_every": 60, "batch_size": 8})
    summary = T.train(s, log=lambda *a: None)
    row = [r for r in csv.DictReader(open(tmp_path / "learn" / "metrics.csv")) if r.get("val_l1")][-1]
    assert summary["steps"] == 60
    assert float(row["val_l1"]) < 0.85 * float(row["val_identity_l1"]), row  # beats the identity warp on val


def test_refusals(face_root, tmp_path):
    with pytest.raises(ValueError, match="no shards for split 'train'"):
        T.train(settings(tmp_path, tmp_path / "empty"), log=lambda *a: None)
    with pytest.raises(ValueError, match="sources must be 1 or 3"):
        settings(face_root, tmp_path / "x", sources=2)
    bogus = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"stage": "teacher", "config": "small"}}, bogus)
    with pytest.raises(CheckpointError, match="other.ckpt: not a FAb-Net checkpoint"):
        T.load_net(bogus)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.ckpt"):
        T.load_net(tmp_path / "junk.ckpt")


def _cli(*args):
    import subprocess
    import sys
    from pathlib import Path

    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])


def test_cli_trains_the_three_table_rows_and_refuses_bad_input(face_root, tmp_path):
    import json

    out = tmp_path / "runs"
    proc = _cli("train", "fabnet", "--data-root", face_root, "--out", out, "--every-variant", "--max-steps", 1,
                "--val-every", 1, "--no-paper-batches", "--batch-size", 4, "--num-workers", 0, "--no-progress-bar",
                "--accelerator", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert set(summary) == {"fabnet", "fabnet-curriculum", "fabnet-curriculum-3src"}
    assert all((out / name / "checkpoints" / "best.ckpt").is_file() for name in summary)
    proc = _cli("train", "fabnet", "--data-root", tmp_path / "nothing", "--out", out)
    assert proc.returncode == 2 and "no shards for split 'train'" in proc.stderr and proc.stderr.count("\n") == 1
    proc = _cli("train", "fabnet", "--data-root", face_root, "--out", out / "fabnet", "--sources", 3)
    assert proc.returncode == 2 and "last.ckpt" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
