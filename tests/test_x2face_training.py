"""tasks.training.x2face: X2Face stages I and II on the shared trainer, the identity weights, pose and audio driving."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from models.face_identity import CAFFE_NAMES, FaceIdentityConfig, FaceIdentityNet, content_l1
from models.fabnet import l1_loss
from models.x2face import X2Face
from tasks.training import x2face as T
from tasks.training.trainer import CheckpointError, TrainerSettings
from tasks.training.windows import FacePairs
from tests.conftest import FACE_SIDE, write_face_root

SIDE = FACE_SIDE  # the stored crops (the real shards: 256) and the small model's input


@pytest.fixture(scope="module")
def face_root(tmp_path_factory):
    """A build-voxceleb data root: 2 train identities x 2 utterances, 1 val identity x 2, 8 frames a track."""
    root = tmp_path_factory.mktemp("x2face")
    write_face_root(root, [("train", 0, "id10001", 2), ("train", 1, "id10002", 2), ("val", 2, "id10003", 2)], 8)
    return root


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here on one torch thread (tests/conftest.py)."""


def settings(root, run, **kw) -> T.X2FaceSettings:
    trainer = {"run_dir": str(run), "max_steps": 3, "val_every": 3, "log_every": 1, "batch_size": 4,
               "num_workers": 0, "progress_bar": False, "accelerator": "cpu", **kw.pop("trainer", {})}
    return T.X2FaceSettings(data_root=str(root), trainer=TrainerSettings(**trainer), paper_batches=False, **kw)


def quiet(*args):
    pass


@pytest.fixture(scope="module")
def identity_file(tmp_path_factory) -> Path:
    """A small face-identity VGG-11 the test makes, saved as a plain state dict (with a classifier)."""
    torch.manual_seed(3)
    net = FaceIdentityNet(FaceIdentityConfig.named("small", classes=5))
    path = tmp_path_factory.mktemp("vgg") / "vgg11_face_small.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def stage_one(face_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("stage1") / "run"
    summary = T.train(settings(face_root, run), log=quiet)
    return run, summary


# ---------------------------------------------------------------- settings and helpers


def test_settings_stages_learning_rates_and_batches(tmp_path):
    s = settings("D", tmp_path)
    assert (s.stage, s.lr, s.sources) == ("I", 1e-3, 1)
    s2 = settings("D", tmp_path, stage="II", identity_weights="w.pth")
    assert s2.lr == 1e-4 and settings("D", tmp_path, learning_rate=0.05).lr == 0.05
    thesis = T.paper_batch(T.X2FaceSettings(data_root="D", trainer=TrainerSettings(run_dir=str(tmp_path))))
    assert thesis.trainer.batch_size == 16
    with pytest.raises(ValueError, match="sources must be 1 or 3"):
        settings("D", tmp_path, sources=2)
    with pytest.raises(ValueError, match="stage II needs the face-identity network's weights"):
        settings("D", tmp_path, stage="II")
    assert T.run_name(settings("D", tmp_path, stage="II", sources=3, identity_weights="w")) == "x2face-stage2-3src"


def test_other_identity_pairs_each_example_with_another_identity():
    partner, alone = T.other_identity(["a", "a", "b", "c", "b"])
    assert partner == [2, 2, 3, 4, 0] and alone == 0
    assert T.other_identity(["a", "a", "a"]) == ([1, 2, 0], 3)  # one identity: the next example
    assert T.other_identity(["a"]) == ([0], 1)


def test_identity_terms_are_weighted_to_the_photometric_loss():
    photometric = torch.tensor(0.2, requires_grad=True)
    same = {k: torch.tensor(v, requires_grad=True) for k, v in zip(T.SAME_LAYERS, (1.0, 2.0, 3.0, 4.0, 5.0))}
    other = {k: torch.tensor(v, requires_grad=True) for k, v in zip(T.OTHER_LAYERS, (7.0, 9.0))}
    loss, weights = T.weighted_identity_loss(photometric, same, other)
    assert float(loss.detach()) == pytest.approx(0.2 * (1 + 5 + 2 * 0.1))
    assert float(weights["same_conv3"]) == pytest.approx(0.1)
    assert float(weights["other_conv6"]) == pytest.approx(0.02 / 7)
    loss.backward()
    assert float(same["conv2"].grad) == pytest.approx(0.2) and float(other["conv7"].grad) == pytest.approx(0.02 / 9)


# ---------------------------------------------------------------- stage I


def test_it_overfits_a_batch_below_the_identity_warp(face_root):
    """A few SGD steps on one batch: the generated frame beats the unmoved source frame (the identity warp)."""
    data = FacePairs.from_root(str(face_root), "train", sources=1, size=SIDE, shuffle=False)
    examples = [ex for _, ex in zip(range(4), data)]
    batch = {"sources": torch.stack([e["sources"] for e in examples]),
             "target": torch.stack([e["target"] for e in examples])}
    baseline = float(l1_loss(batch["sources"][:, 0], batch["target"]).mean())
    torch.manual_seed(0)
    module = T.X2FaceTask("small", 1, "I", learning_rate=0.05)
    module.log = lambda *a, **k: None
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    first = None
    for _ in range(40):
        opt.zero_grad()
        loss = module.training_step(batch, 0)
        first = float(loss.detach()) if first is None else first
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = float(l1_loss(module(batch["sources"], batch["target"]).generated, batch["target"]).mean())
    assert first == pytest.approx(baseline, rel=1e-4)  # zero-initialised flows: step 0 is the identity warp
    assert final < 0.7 * baseline, (final, baseline)


def test_stage_one_trains_logs_checkpoints_reloads_and_resumes(face_root, stage_one, tmp_path):
    run, summary = stage_one
    assert summary["steps"] == 3 and summary["run"] == "x2face-stage1" and summary["monitor"] == "val_l1"
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    vals = [r for r in rows if r.get("val_l1")]
    assert vals and all(float(r["val_identity_l1"]) > 0 for r in vals) and any(r.get("train_l1") for r in rows)
    saved = json.loads((run / "run_settings.json").read_text())
    assert saved["x2face"]["stage"] == "I" and saved["x2face"]["lr"] == 1e-3
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["model"] == "x2face" and ckpt["hyper_parameters"]["stage"] == "I"
    net = T.load_net(run / "checkpoints" / "best.ckpt", config="small")
    assert isinstance(net, X2Face) and not net.training
    with pytest.raises(CheckpointError, match="stage 'I' checkpoint, not 'II'"):
        T.load_net(run / "checkpoints" / "last.ckpt", stage="II")
    rows = T.evaluate_l1(net, str(face_root), "val", sources=1, seed=0)
    assert len(rows) == 16 and {r["identity"] for r in rows} == {"id10003"}
    assert {r["utterance"] for r in rows} == {"00001", "00002"} and all(r["l1"] > 0 and r["identity_l1"] > 0
                                                                         for r in rows)
    assert T.evaluate_l1(net, str(face_root), "val", sources=1, seed=0) == rows  # fixed pairs
    assert len(T.evaluate_l1(net, str(face_root), "val", sources=3, limit=5)) == 5
    # resume goes on; another stage or source count in the same folder is refused
    again = T.train(settings(face_root, run, trainer={"max_steps": 4}), log=quiet)
    assert again["resumed_from"] and again["steps"] == 4
    with pytest.raises(CheckpointError, match="sources"):
        T.train(settings(face_root, run, sources=3, trainer={"max_steps": 5}), log=quiet)


def test_load_net_refuses_violin_piano_fabnet_and_junk(tmp_path):
    from tasks.training.piano_onsets import PianoOnsetsTask
    from tasks.training.violin_pitch import PitchTeacherTask

    for name, module, what in (("piano.ckpt", PianoOnsetsTask(variant="resnet", config="small"), "piano onset"),
                               ("violin.ckpt", PitchTeacherTask("small"), "violin pitch")):
        torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, tmp_path / name)
        with pytest.raises(CheckpointError, match=f"{name}: not an X2Face checkpoint .*{what}") as info:
            T.load_net(tmp_path / name)
        assert "\n" not in str(info.value)
    torch.save({"state_dict": {}, "hyper_parameters": {"model": "fabnet", "config": "small"}}, tmp_path / "fab.ckpt")
    with pytest.raises(CheckpointError, match="FAb-Net"):
        T.load_net(tmp_path / "fab.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"\x00not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.ckpt"):
        T.load_net(tmp_path / "junk.ckpt")


# ---------------------------------------------------------------- stage II and the identity weights


def test_identity_weights_load_and_bad_files_are_refused_in_one_line(identity_file, tmp_path):
    net = T.load_identity_weights(identity_file)
    assert net.config.widths == FaceIdentityConfig.named("small").widths and net.config.classes == 5
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    frames = torch.rand(2, 3, SIDE, SIDE)
    feats = net.activations(frames, ("conv2", "conv7"))
    assert [tuple(f.shape) for f in feats.values()] == [(2, 32, 32, 32), (2, 128, 4, 4)]
    assert float(content_l1(net, frames, frames, ("conv6",))["conv6"]) == 0.0
    # Caffe / VGG-Face names, a "module." prefix and a trunk without classifier load too
    trunk = {k: v for k, v in torch.load(identity_file, weights_only=True).items() if k.startswith("features.")}
    names = {prefix: caffe for caffe, prefix in CAFFE_NAMES.items()}
    caffe = {f"module.{names[k.rsplit('.', 1)[0]]}.{k.rsplit('.', 1)[1]}": v for k, v in trunk.items()}
    torch.save({"state_dict": caffe}, tmp_path / "caffe.pth")
    renamed = T.load_identity_weights(tmp_path / "caffe.pth")
    assert renamed.classifier is None
    assert torch.equal(renamed.activations(frames, ("conv5",))["conv5"], net.activations(frames, ("conv5",))["conv5"])

    bad = {"missing.pth": None, "bytes.pth": b"PK\x03\x04 not a zip", "list.pth": [torch.zeros(3)],
           "vgg16.pth": {"features.0.weight": torch.zeros(16, 3, 3, 3), "features.0.bias": torch.zeros(16),
                         "features.2.weight": torch.zeros(16, 16, 3, 3), "features.2.bias": torch.zeros(16)},
           "shapes.pth": {**trunk, "features.6.weight": torch.zeros(64, 32, 5, 5)},
           "extra.pth": {**trunk, "features.9.weight": torch.zeros(3)},
           "lightning.pth": {"state_dict": {}, "hyper_parameters": {"model": "x2face"}}}
    for name, content in bad.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            torch.save(content, path)
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")) as info:
            T.load_identity_weights(path)
        assert "\n" not in str(info.value), name


def test_stage_two_refuses_bad_weights_before_training(face_root, tmp_path):
    with pytest.raises(CheckpointError, match="no such face-identity weights file"):
        T.train(settings(face_root, tmp_path / "a", stage="II", identity_weights=str(tmp_path / "none.pth")),
                log=quiet)
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="bad.pth"):
        T.train(settings(face_root, tmp_path / "b", stage="II", identity_weights=str(tmp_path / "bad.pth")),
                log=quiet)
    assert not (tmp_path / "b" / "checkpoints").exists()


def test_stage_two_fine_tunes_stage_one_with_the_identity_losses(face_root, stage_one, identity_file, tmp_path):
    run1, _ = stage_one
    run = tmp_path / "stage2"
    init = run1 / "checkpoints" / "best.ckpt"
    s = settings(face_root, run, stage="II", identity_weights=str(identity_file), init=str(init),
                 trainer={"max_steps": 2, "val_every": 2})
    module = T.make_module(s, log=quiet)  # starts from the stage-I weights
    first = T.load_net(init).state_dict()
    assert all(torch.equal(v, first[k]) for k, v in module.net.state_dict().items())
    summary = T.train(s, log=quiet)
    assert summary["steps"] == 2 and summary["stage"] == "II"
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    logged = [r for r in rows if r.get("train_same_conv2")]
    assert logged and all(r.get("train_other_conv6") and r.get("train_other_conv7") for r in logged)
    for r in logged:  # five terms as strong as the L1 and two at a tenth of it
        assert float(r["train_loss"]) == pytest.approx(6.2 * float(r["train_l1"]), rel=1e-4)
        assert 0.0 <= float(r["train_same_identity_share"]) <= 1.0
    assert any(r.get("val_l1") for r in rows)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert all(k.startswith(("net.", "val_")) for k in ckpt["state_dict"]), "no identity network inside"
    assert ckpt["hyper_parameters"]["stage"] == "II" and ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == 1e-4
    assert not T.load_net(run / "checkpoints" / "last.ckpt", stage="II").training
    with pytest.raises(CheckpointError, match="stage"):  # a stage-I run in the stage-II folder
        T.train(settings(face_root, run, trainer={"max_steps": 3}), log=quiet)


# ---------------------------------------------------------------- pose and audio driving


def _pose_data(n: int, offset: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    poses = rng.uniform(-45, 45, size=(n, 3)).astype(np.float32)
    basis = rng.normal(0, 0.05, size=(3, 128)).astype(np.float32)
    shift = offset * rng.normal(size=128).astype(np.float32)
    vectors = poses @ basis + shift + rng.normal(0, 0.005, size=(n, 128)).astype(np.float32)
    return vectors, poses, basis, shift


def test_fit_pose_maps_recovers_a_known_linear_map():
    vectors, poses, basis, shift = _pose_data(700, offset=1.0)
    maps = T.fit_pose_maps(vectors[:500], poses[:500], steps=200)
    with torch.no_grad():
        read = maps.f_vp(torch.from_numpy(vectors[500:])).numpy()
        back = maps.f_pv(torch.from_numpy(poses[500:])).numpy()
    assert np.abs(read - poses[500:]).mean() < 0.1  # degrees, on held-out vectors
    assert np.abs(back - (poses[500:] @ basis + shift)).mean() < 0.01 * np.abs(vectors).mean()
    targets = np.random.default_rng(1).uniform(-45, 45, size=(200, 3)).astype(np.float32)
    exact = T.pose_driving_mae(vectors[500:], targets, maps.f_vp, maps.f_pv, form="difference")
    assert set(exact) == {"roll", "pitch", "yaw", "mae"} and exact["mae"] < 0.05
    # eq. (1) as written adds f_pv(0): with vectors off the origin the asked pose is missed by that much
    literal = T.pose_driving_mae(vectors[500:], targets, maps.f_vp, maps.f_pv)
    with torch.no_grad():
        drift = maps.f_vp(maps.f_pv(torch.zeros(1, 3))) - maps.f_vp(torch.zeros(1, 128))
    assert literal["mae"] == pytest.approx(float(drift.abs().mean()), rel=0.05) and literal["mae"] > 0.5
    centred = _pose_data(700, offset=0.0)
    maps0 = T.fit_pose_maps(centred[0][:500], centred[1][:500], steps=200)
    assert T.pose_driving_mae(centred[0][500:], targets, maps0.f_vp, maps0.f_pv)["mae"] < 0.5
    with pytest.raises(ValueError, match="poses"):
        T.fit_pose_maps(vectors[:10], poses[:9])


def test_fit_audio_map_recovers_a_known_map_with_a_ridge_chosen_on_validation():
    rng = np.random.default_rng(0)
    features = rng.normal(3.0, 2.0, size=(600, 40))
    weight = rng.normal(size=(40, 128))
    vectors = features @ weight + 5.0 + rng.normal(0, 0.01, size=(600, 128))
    fitted = T.fit_audio_map(features, vectors)
    assert fitted.ridge in fitted.val_mse and fitted.ridge <= 1.0
    assert fitted.val_mse[fitted.ridge] == min(fitted.val_mse.values())
    held = rng.normal(3.0, 2.0, size=(50, 40))
    assert np.abs(fitted(held) - (held @ weight + 5.0)).max() < 0.05
    assert np.allclose(fitted.weight / fitted.std[:, None], weight, atol=1e-2)  # the map on raw features
    # noise only: the largest ridge wins on explicit validation rows
    noise = T.fit_audio_map(rng.normal(size=(60, 40)), rng.normal(size=(60, 128)),
                            rng.normal(size=(40, 40)), rng.normal(size=(40, 128)))
    assert noise.ridge == 1000.0
    with pytest.raises(ValueError, match="must match"):
        T.fit_audio_map(features[:10], vectors[:9])


def test_audio_features_are_log_mels_per_frame_centred_on_the_frame(tmp_path):
    sr = 16000
    t = np.arange(2 * sr) / sr
    samples = (0.001 * np.random.default_rng(0).normal(size=t.shape)).astype(np.float32)
    samples[int(0.98 * sr):int(1.02 * sr)] += np.sin(2 * np.pi * 1000 * t[:int(0.04 * sr)]).astype(np.float32)
    times = np.arange(50) / 25  # 25 fps: frame 25 is at 1.0 s, the tone's centre
    feats = T.audio_features(samples, sr, times)
    assert feats.shape == (50, 40) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert int(feats.sum(axis=1).argmax()) == 25
    wide = T.audio_features(samples, sr, times, windows=5, n_mels=32)
    assert wide.shape == (50, 160)
    assert np.allclose(wide[:, 2 * 32:3 * 32], T.audio_features(samples, sr, times, n_mels=32), atol=1e-4)
    stereo = np.stack([samples, samples], axis=1)
    soundfile.write(tmp_path / "a.wav", stereo, sr, subtype="FLOAT")
    assert np.allclose(T.audio_features(tmp_path / "a.wav", None, times), feats, atol=1e-4)
    assert T.audio_features(samples, sr, [0.0, 1.99]).shape == (2, 40)  # edges: zeros outside the signal
    with pytest.raises(ValueError, match="not the 8000 Hz"):
        T.audio_features(tmp_path / "a.wav", 8000, times)
