"""models.keypoints and tasks.training.keypoints: Jakab et al.'s keypoint bottleneck on the shared trainer."""

from __future__ import annotations

import math

import pytest
import torch

from models.keypoints import (
    PERCEPTUAL_LAYERS,
    KeypointBottleneck,
    KeypointConfig,
    PerceptualLoss,
    gaussian_maps,
    heatmap_points,
    vgg19_features,
)
from tasks.training import keypoints as T
from tasks.training.trainer import CheckpointError, TrainerSettings
from tests.conftest import write_face_root


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here on one torch thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def face_root(tmp_path_factory):
    """2 train identities x 2 utterances and 1 val identity x 2, 8 frames a track of moving synthetic faces."""
    root = tmp_path_factory.mktemp("keypoints")
    write_face_root(root, [("train", 0, "id10001", 2), ("train", 1, "id10002", 2), ("val", 2, "id10003", 2)], 8)
    return root


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A VGG-19 features state dict the test makes (torchvision's layout, random weights)."""
    torch.manual_seed(5)
    from torchvision.models import vgg19

    features = vgg19(weights=None).features
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path


def settings(root, run, **kw) -> T.KeypointSettings:
    trainer = {"run_dir": str(run), "max_steps": 3, "val_every": 3, "log_every": 1, "batch_size": 4,
               "num_workers": 0, "progress_bar": False, "accelerator": "cpu", **kw.pop("trainer", {})}
    return T.KeypointSettings(data_root=str(root), trainer=TrainerSettings(**trainer), paper_batches=False, **kw)


def quiet(*args):
    pass


def test_the_paper_sizes():
    c = KeypointConfig.named("paper", 30)
    assert (c.image_size, c.widths, c.heatmap_size, c.sigma) == (128, (32, 64, 128, 256), 16, 0.1)
    net = KeypointBottleneck(c)
    out = net(torch.rand(2, 3, 128, 128), torch.rand(2, 3, 128, 128))
    assert out.generated.shape == (2, 3, 128, 128) and out.points.shape == (2, 30, 2)
    assert out.maps.shape == (2, 30, 16, 16)
    assert net.decoder.blocks[0][0][0].in_channels == 256 + 30  # appearance and keypoint maps stacked at 16 x 16
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    for encoder in (net.keypoint_encoder, net.appearance):  # 7x7 first, then 3x3
        kernels = [m.kernel_size for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]
        assert kernels == [(7, 7)] + [(3, 3)] * 7
    assert net.to_heatmaps.kernel_size == (1, 1) and net.decoder.to_rgb.kernel_size == (3, 3)
    std = torch.cat([c.weight.flatten() for c in convs]).std().item()
    assert abs(std - 0.01) < 0.001  # "random Gaussian noise (sigma = 0.01)"
    with pytest.raises(ValueError, match="power"):
        KeypointConfig(image_size=100)


def test_spatial_softmax_finds_the_peak_and_the_gaussian_is_redrawn_there():
    logits = torch.full((1, 2, 16, 16), -30.0)
    logits[0, 0, 4, 11] = 30.0  # row 4, column 11
    logits[0, 1, 15, 0] = 30.0
    points = heatmap_points(logits)
    grid = torch.linspace(-1, 1, 16)
    assert torch.allclose(points[0, 0], torch.stack((grid[11], grid[4])), atol=1e-4)
    assert torch.allclose(points[0, 1], torch.tensor([-1.0, 1.0]), atol=1e-4)
    maps = gaussian_maps(points, 16, 0.1)
    assert maps[0, 0].argmax().item() == 4 * 16 + 11 and maps[0, 0].max().item() == pytest.approx(1.0, abs=1e-3)
    # one cell (2/15) away the value is exp(-(2/15)^2 / (2 * 0.1^2))
    assert maps[0, 0, 4, 12].item() == pytest.approx(math.exp(-(2 / 15) ** 2 / 0.02), rel=1e-2)
    # uniform logits: the centre
    assert torch.allclose(heatmap_points(torch.zeros(1, 1, 16, 16)), torch.zeros(1, 1, 2), atol=1e-6)


def test_perceptual_loss_weights_each_layer_to_about_one(vgg_file):
    loss = T.load_perceptual(vgg_file)
    a, b = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    terms = loss.layer_terms(a, b)
    assert terms.shape == (len(PERCEPTUAL_LAYERS),) and (terms > 0).all()
    loss.train()
    value = loss(a, b)  # the first batch sets the running averages to its own terms
    assert value.item() == pytest.approx(len(PERCEPTUAL_LAYERS), rel=1e-4)
    assert loss(a, a).item() == 0.0
    assert not any(p.requires_grad for p in loss.features.parameters())
    # gradients reach the generated image, not the VGG
    x = a.clone().requires_grad_(True)
    loss(x, b).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert isinstance(vgg19_features(torch.load(vgg_file, weights_only=True)), torch.nn.Sequential)
    PerceptualLoss(vgg19_features(torch.load(vgg_file, weights_only=True))).eval()(a, b)  # eval: no update


def test_training_writes_curves_checkpoints_reloads_and_resumes(face_root, tmp_path):
    summary = T.train(settings(face_root, tmp_path / "run"), log=quiet)
    assert summary["steps"] == 3 and summary["run"] == "keypoints-10" and summary["loss"] == "l2"
    net = T.load_net(summary["best_checkpoint"])
    assert isinstance(net, KeypointBottleneck) and net.config.keypoints == 10 and not net.training
    metrics = (tmp_path / "run" / "metrics.csv").read_text()
    assert "val_loss" in metrics and "val_l1" in metrics and "val_identity_l1" in metrics
    again = T.train(settings(face_root, tmp_path / "run", trainer={"max_steps": 5}), log=quiet)
    assert again["resumed_from"] and again["steps"] == 5
    ckpt = torch.load(summary["last_checkpoint"], weights_only=True)
    opt = ckpt["optimizer_states"][0]["param_groups"][0]
    assert opt["lr"] == 1e-2 and opt["weight_decay"] == 5e-4  # paper §4.1


def test_the_perceptual_loss_trains_and_stays_out_of_the_checkpoint(face_root, vgg_file, tmp_path):
    s = settings(face_root, tmp_path / "run", keypoints=30, loss="perceptual", perceptual_weights=str(vgg_file),
                 trainer={"max_steps": 2, "val_every": 2})
    summary = T.train(s, log=quiet)
    assert summary["run"] == "keypoints-30-perceptual"
    ckpt = torch.load(summary["last_checkpoint"], weights_only=True)
    assert not any("features" in k for k in ckpt["state_dict"])  # the user's VGG is not copied into it
    assert len(ckpt["perceptual_scale"]) == len(PERCEPTUAL_LAYERS) and min(ckpt["perceptual_scale"]) > 0
    assert T.load_net(summary["last_checkpoint"]).config.keypoints == 30


def test_it_learns_to_render_the_target(face_root, tmp_path):
    """Trained 60 steps at the paper's settings, the validation l2 falls well below its value at step 0."""
    s = settings(face_root, tmp_path / "run", trainer={"max_steps": 60, "val_every": 60, "batch_size": 8})
    module = T.make_module(s)
    from tasks.training.faces import pairs

    val = list(pairs(str(face_root), "val", module, train=False, seed=0))
    sources = torch.stack([v["sources"] for v in val])
    target = torch.stack([v["target"] for v in val])
    torch.manual_seed(0)
    before = torch.nn.functional.mse_loss(T.make_module(s).eval()(sources, target).generated, target).item()
    T.train(s, log=quiet)
    net = T.load_net(tmp_path / "run" / "checkpoints" / "last.ckpt")
    with torch.no_grad():
        after = torch.nn.functional.mse_loss(net(sources[:, 0], target).generated, target).item()
    assert after < 0.25 * before, (before, after)


def test_refusals(face_root, tmp_path):
    with pytest.raises(ValueError, match="perceptual loss needs VGG-19 weights"):
        settings(face_root, tmp_path / "r", loss="perceptual")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    for path, match in ((tmp_path / "missing.pth", "no such VGG-19 weights file"),
                        (junk, "not a state dict torch.load"),):
        with pytest.raises(CheckpointError, match=match) as info:
            T.load_perceptual(path)
        assert "\n" not in str(info.value)
    other = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(3, 3, 3, 3)}, other)
    with pytest.raises(CheckpointError, match="do not fit torchvision's VGG-19"):
        T.load_perceptual(other)
    with pytest.raises(CheckpointError, match="not a keypoint-bottleneck checkpoint"):
        from tasks.training.fabnet import FabNetSettings, train as train_fabnet

        fab = train_fabnet(FabNetSettings(data_root=str(face_root), paper_batches=False, trainer=TrainerSettings(
            run_dir=str(tmp_path / "fab"), max_steps=1, val_every=1, batch_size=2, num_workers=0,
            progress_bar=False, accelerator="cpu")), log=quiet)
        T.load_net(fab["last_checkpoint"])


def test_describe_prints_the_layers_and_parameter_counts():
    from models.keypoints import describe

    config = KeypointConfig.named("paper", 10)
    text = describe(config)
    total = sum(p.numel() for p in KeypointBottleneck(config).parameters())
    assert f"{total:,}" in text and "[1, 10, 16, 16]" in text and "[1, 256, 16, 16]" in text
    assert "keypoint_encoder Encoder" in text  # the name fits its column


def test_point_correlations_find_the_landmark_a_point_follows():
    import numpy as np

    from tasks.evaluation.landmarks import correlation_rows, point_correlations

    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 256, size=(200, 68, 2))
    points = np.stack([0.01 * truth[:, 30] - 1 + rng.normal(0, 0.01, (200, 2)),  # follows landmark 30 (scaled)
                       rng.uniform(-1, 1, (200, 2))], axis=1)  # follows nothing
    points[:, 1, 0] = 0.25  # and does not move in x
    found = point_correlations(points, truth)
    assert found[0]["landmark"] == 30 and found[0]["r_x"] > 0.99 and found[0]["r_y"] > 0.99
    assert found[1]["r_x"] == 0.0
    row = correlation_rows({"net": found})[0]
    assert row["points"] == 2 and row["following (r >= 0.8)"] == 1 and row["share"] == 0.5


def test_the_thin_plate_spline_through_unmoved_or_affinely_moved_points_is_that_map():
    import torch.nn.functional as F

    from tasks.training.tps import lattice, tps_sampling_grid

    control = lattice(5)
    identity = F.affine_grid(torch.eye(2, 3)[None], (1, 3, 32, 32), align_corners=True)
    assert torch.allclose(tps_sampling_grid(control, control[None], 32), identity, atol=1e-5)
    a, b = torch.tensor([[0.9, -0.2], [0.1, 1.1]]), torch.tensor([0.05, -0.03])
    assert torch.allclose(tps_sampling_grid(control, (control @ a.T + b)[None], 32), identity @ a.T + b, atol=1e-5)
    bent = control[None].clone()
    bent[0, 12] += torch.tensor([0.2, 0.0])  # the centre point moved right: the spline passes through it
    grid = tps_sampling_grid(control, bent, 33)  # pixel 16 of 33 is the frame's centre
    assert torch.allclose(grid[0, 16, 16], torch.tensor([0.2, 0.0]), atol=1e-5)
    assert torch.allclose(grid[0, 0, 0], torch.tensor([-1.0, -1.0]), atol=1e-5)  # a fixed corner stays


def test_random_warps_move_the_frame_and_mark_what_came_from_outside():
    from tasks.training.tps import WarpStrength, random_warp

    frames = torch.rand(3, 3, 16, 16)
    still, inside = random_warp(frames, WarpStrength(rotation=0, scale=0, shift=0, tps=0))
    assert torch.allclose(still, frames, atol=1e-5) and inside.all()
    g = torch.Generator().manual_seed(1)
    warped, inside = random_warp(frames, generator=g)
    assert warped.shape == frames.shape and inside.shape == (3, 1, 16, 16)
    assert (warped - frames).abs().mean() > 0.05  # it moved
    assert 0.5 < inside.float().mean() < 1.0  # some corners come from outside, most of the frame does not
    again, _ = random_warp(frames, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, warped)  # the generator decides the warp


def test_training_on_warped_pairs(face_root, tmp_path):
    """--warps: both frames warped, the run named for it, and a last.ckpt of unwarped pairs not resumed."""
    plain = T.train(settings(face_root, tmp_path / "run", trainer={"max_steps": 2, "val_every": 2}), log=quiet)
    s = settings(face_root, tmp_path / "warped", warps=True, trainer={"max_steps": 2, "val_every": 2})
    summary = T.train(s, log=quiet)
    assert summary["run"] == "keypoints-10-warps" and summary["warps"] and summary["steps"] == 2
    assert torch.load(summary["last_checkpoint"], weights_only=True)["hyper_parameters"]["warps"] is True
    import shutil

    shutil.copy(plain["last_checkpoint"], tmp_path / "warped" / "checkpoints" / "last.ckpt")
    with pytest.raises(CheckpointError, match="warps False, not True"):
        T.train(settings(face_root, tmp_path / "warped", warps=True, trainer={"max_steps": 4}), log=quiet)
    # a last.ckpt from before --warps existed (no such hyperparameter) goes on as the unwarped run it was
    ckpt = torch.load(plain["last_checkpoint"], weights_only=True)
    del ckpt["hyper_parameters"]["warps"]
    torch.save(ckpt, plain["last_checkpoint"])
    again = T.train(settings(face_root, tmp_path / "run", trainer={"max_steps": 3, "val_every": 3}), log=quiet)
    assert again["resumed_from"] and again["steps"] == 3
