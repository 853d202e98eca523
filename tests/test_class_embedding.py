"""models.class_embedding and tasks.training.class_embedding: the hierarchical probabilistic warp and its training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.class_embedding import (ClassEmbeddingConfig, ClassEmbeddingNet, Level, cyclic_loss, hierarchical_warp,
                                    laplace_loss)
from tasks.training import class_embedding as T
from tasks.training.trainer import CheckpointError, TrainerSettings
from tests.conftest import write_face_root


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here on one torch thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def face_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("class-embedding")
    write_face_root(root, [("train", 0, "id10001", 2), ("train", 1, "id10002", 2), ("val", 2, "id10003", 2)], 8)
    return root


def settings(root, run, **kw) -> T.ClassEmbeddingSettings:
    trainer = {"run_dir": str(run), "max_steps": 3, "val_every": 3, "log_every": 1, "batch_size": 4,
               "num_workers": 0, "progress_bar": False, "accelerator": "cpu", **kw.pop("trainer", {})}
    return T.ClassEmbeddingSettings(data_root=str(root), trainer=TrainerSettings(**trainer), **kw)


def quiet(*args):
    pass


def test_the_paper_sizes():
    c = ClassEmbeddingConfig.named("paper")
    assert (c.image_size, c.level_sizes, c.top_k, c.embedding_dim) == (256, (32, 64, 128), 9, 256)
    net = ClassEmbeddingNet(c)
    assert len(net.matches.ups) == 7  # "7 upsampling layers ... to give a 128 x 128 resolution result"
    assert [h.out_channels for h in net.matches.heads] == [32 * 32, 36, 36]  # W_1^2, then 4K
    assert [h.kernel_size for h in net.matches.heads] == [(5, 5)] * 3
    assert [h.out_channels for h in net.confidence.heads] == [1, 1, 1]
    convs = [m for m in net.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8 and all(m.kernel_size == (4, 4) and m.stride == (2, 2) for m in convs)


def _identity_logits(sizes, k: int, batch: int = 1) -> list[torch.Tensor]:
    """Head outputs that match every target pixel to the same source pixel, at every level."""
    n1 = sizes[0]
    first = torch.full((batch, n1 * n1, n1, n1), -20.0)
    idx = torch.arange(n1 * n1)
    first.view(batch, n1 * n1, n1 * n1)[:, idx, idx] = 20.0  # channel (source) = target pixel
    out = [first]
    for n in sizes[1:]:
        m = torch.full((batch, 4 * k, n, n), -20.0)
        rows, cols = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        child = 2 * (rows % 2) + (cols % 2)  # parent match 0 (the most probable), child (a, b)
        m[:, child, rows, cols] = 20.0
        out.append(m)
    return out


def test_the_warp_follows_its_matches_down_the_hierarchy():
    sizes, k = (4, 8, 16), 3
    source, target = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    sigmas = [torch.ones(2, 1, n, n) for n in sizes]
    levels = hierarchical_warp(source, target, _identity_logits(sizes, k, 2), sigmas, sizes, k)
    for level, n in zip(levels, sizes):
        assert torch.allclose(level.generated, F.interpolate(source, size=(n, n), mode="area"), atol=1e-5)
        assert torch.allclose(level.probs.sum(-1), torch.ones(2, n * n), atol=1e-5)
    assert levels[1].probs.shape == (2, 64, 4 * k) and levels[2].index.shape == (2, 256, 4 * k)
    # a shift by one pixel at level 1 moves the image by one coarse pixel
    n1 = sizes[0]
    shifted = torch.full((1, n1 * n1, n1, n1), -20.0)
    for r in range(n1):
        for c in range(n1):
            shifted[0, r * n1 + min(c + 1, n1 - 1), r, c] = 20.0
    level = hierarchical_warp(source[:1], target[:1], [shifted], sigmas[:1], sizes[:1], k)[0]
    coarse = F.interpolate(source[:1], size=(n1, n1), mode="area")
    assert torch.allclose(level.generated[..., :-1], coarse[..., 1:], atol=1e-5)


def test_the_losses():
    g, t = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    sigma = torch.full((1, 1, 2, 2), 2.0)
    # summed over the 4 pixels, |.|_1 over the 3 colours: 4 * (sqrt(2) * 3 / 2 + log 2)
    assert laplace_loss(Level(g, t, sigma, None, None)).item() == pytest.approx(4 * (3 * math.sqrt(2) / 2 + math.log(2)))
    n = 16
    eye = torch.eye(n).unsqueeze(0)
    assert cyclic_loss(eye, eye).item() == pytest.approx(0.0, abs=1e-6)  # every pixel comes back to itself
    uniform = torch.full((1, n, n), 1.0 / n)
    assert cyclic_loss(uniform, uniform).item() == pytest.approx(math.log(n), rel=1e-5)  # 1/N comes back
    many_to_one = torch.zeros(1, n, n)
    many_to_one[..., 0] = 1.0  # every target pixel from source pixel 0: eq. (8) down-weights it
    assert cyclic_loss(many_to_one, many_to_one.transpose(1, 2)).item() > 2.0


def test_training_adds_levels_on_plateaus_and_resumes_with_them(face_root, tmp_path):
    task = T.ClassEmbeddingTask("small")
    assert task.active_levels == 1
    assert task.on_plateau() and task.on_plateau() and task.active_levels == 3
    assert not task.on_plateau()  # then the learning rate is divided
    summary = T.train(settings(face_root, tmp_path / "run"), log=quiet)
    assert summary["steps"] == 3 and summary["levels"] == 1 and summary["run"] == "class-embedding"
    ckpt = torch.load(summary["last_checkpoint"], weights_only=True)
    assert ckpt["active_levels"] == 1
    ckpt["active_levels"] = 2
    torch.save(ckpt, summary["last_checkpoint"])
    again = T.train(settings(face_root, tmp_path / "run", trainer={"max_steps": 5}), log=quiet)
    assert again["resumed_from"] and again["levels"] == 2 and again["steps"] == 5
    metrics = (tmp_path / "run" / "metrics.csv").read_text()
    assert "train_cyclic" in metrics and "train_level2" in metrics and "val_l1" in metrics
    net = T.load_net(again["last_checkpoint"])
    assert isinstance(net, ClassEmbeddingNet) and net.embed(torch.rand(2, 3, 64, 64)).shape == (2, 256)


def test_it_learns_to_explain_the_target_at_level_one(face_root, tmp_path):
    """After 80 steps the level-1 warp explains held-out targets better than their source frames do."""
    T.train(settings(face_root, tmp_path / "run", trainer={"max_steps": 80, "val_every": 80, "batch_size": 8}),
            log=quiet)
    net = T.load_net(tmp_path / "run" / "checkpoints" / "last.ckpt")
    from tasks.training.faces import pairs

    val = list(pairs(str(face_root), "val", T.ClassEmbeddingTask("small"), train=False, seed=0))
    source = torch.stack([v["sources"][0] for v in val])
    target = torch.stack([v["target"] for v in val])
    with torch.no_grad():
        level = net(source, target, levels=1).levels[0]
    warped = (level.generated - level.target).abs().mean().item()
    unmoved = (F.interpolate(source, size=(16, 16), mode="area") - level.target).abs().mean().item()
    assert warped < 0.9 * unmoved, (warped, unmoved)


def test_refusals(face_root, tmp_path):
    with pytest.raises(ValueError, match="loss must be"):
        T.ClassEmbeddingTask("small", loss="l2")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"nope")
    with pytest.raises(CheckpointError):
        T.load_net(junk)
    from tasks.training.keypoints import KeypointSettings, train as train_keypoints

    kp = train_keypoints(KeypointSettings(data_root=str(face_root), paper_batches=False, trainer=TrainerSettings(
        run_dir=str(tmp_path / "kp"), max_steps=1, val_every=1, batch_size=2, num_workers=0, progress_bar=False,
        accelerator="cpu")), log=quiet)
    with pytest.raises(CheckpointError, match="not a class-embedding checkpoint") as info:
        T.load_net(kp["last_checkpoint"])
    assert "\n" not in str(info.value)
