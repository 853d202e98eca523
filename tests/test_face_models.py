"""FAb-Net and X2Face (thesis ch. 3-4): shapes, the warp's grid convention, confidences, curriculum, training, pose."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models import fabnet as fb
from models import x2face as xf

torch.set_num_threads(1)

SMALL_FAB = fb.FabNetConfig.named("small")
SMALL_X2F = xf.X2FaceConfig.named("small")
S = SMALL_FAB.image_size


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _smooth_frames(b: int, size: int = S, seed: int = 0) -> torch.Tensor:
    """``[b, 3, size, size]`` smooth random RGB in [0, 1] (bicubic upsampling of 8 x 8 noise)."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(b, 3, 8, 8, generator=g), size=(size, size), mode="bicubic",
                         align_corners=False).clamp(0, 1)


def _randomise_last(up: fb.Up, seed: int, std: float = 0.5) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        up.conv.weight.copy_(torch.randn(up.conv.weight.shape, generator=g) * std)
        up.conv.bias.copy_(torch.randn(up.conv.bias.shape, generator=g) * std)


# ---------------------------------------------------------------- configs


def test_named_configs():
    paper = fb.FabNetConfig.named("paper")
    assert paper.image_size == 256 and paper.levels == 8 and paper.embedding_dim == 256
    assert paper.widths == (32, 64, 128, 256, 256, 256, 256)
    assert SMALL_FAB.image_size == 64 and SMALL_FAB.levels == 6 and SMALL_FAB.embedding_dim == 256
    assert fb.FabNetConfig.named("small", confidence=False).confidence is False
    xpaper = xf.X2FaceConfig.named("paper")
    assert xpaper.embedding_widths == (64, 128, 256, 512, 512, 512, 512, 512) and xpaper.driving_dim == 128
    assert SMALL_X2F.image_size == 64 and SMALL_X2F.levels == 6 and SMALL_X2F.driving_dim == 128
    with pytest.raises(ValueError):
        fb.FabNetConfig.named("huge")
    with pytest.raises(ValueError):
        xf.X2FaceConfig.named("huge")
    with pytest.raises(Exception):
        paper.image_size = 128  # frozen


@pytest.mark.parametrize("kwargs", [
    {"image_size": 100}, {"image_size": 128}, {"widths": (32, 64)}, {"widths": [32, 64, 128, 256, 256, 256, 256]},
    {"embedding_dim": 0}, {"confidence": 1},
])
def test_bad_fabnet_config_is_refused(kwargs):
    with pytest.raises(ValueError):
        fb.FabNetConfig(**kwargs)


@pytest.mark.parametrize("kwargs", [
    {"image_size": 64}, {"driving_widths": (64, 128)}, {"driving_dim": 0}, {"pose_dim": True},
])
def test_bad_x2face_config_is_refused(kwargs):
    with pytest.raises(ValueError):
        xf.X2FaceConfig(**kwargs)


# ---------------------------------------------------------------- the warp's grid convention


def test_zero_flow_reproduces_the_source_and_the_other_convention_does_not():
    image = torch.rand(2, 3, S, S, generator=torch.Generator().manual_seed(1))
    same = fb.warp(image, torch.zeros(2, 2, S, S))
    assert (same - image).abs().max() < 1e-4
    # The same identity grid under align_corners=False (today's default) zooms the image and
    # samples half a pixel off at the corners: a port with that convention fails the check above.
    grid = fb.identity_grid(S, S).expand(2, -1, -1, -1)
    other = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert (other - image).abs().max() > 0.1


def test_identity_at_paper_size():
    image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    assert (fb.warp(image, torch.zeros(1, 2, 256, 256)) - image).abs().max() < 1e-4


def test_flow_units_and_channel_order():
    """dx of 2 / (W - 1) units is one pixel to the right; dy of 2 / (H - 1) one pixel down."""
    h, w = 16, 24
    image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(3))
    flow = torch.zeros(1, 2, h, w)
    flow[:, 0] = 2 / (w - 1)
    shifted = fb.warp(image, flow)
    assert torch.allclose(shifted[..., :-1], image[..., 1:], atol=1e-4)
    assert torch.allclose(shifted[..., -1], image[..., -1], atol=1e-4)  # border padding
    flow = torch.zeros(1, 2, h, w)
    flow[:, 1] = -2 / (h - 1)
    shifted = fb.warp(image, flow)
    assert torch.allclose(shifted[..., 1:, :], image[..., :-1, :], atol=1e-4)
    px = fb.flow_to_pixels(torch.ones(1, 2, h, w))
    assert torch.allclose(px[:, 0], torch.full((1, h, w), (w - 1) / 2))
    assert torch.allclose(px[:, 1], torch.full((1, h, w), (h - 1) / 2))


def test_warp_refuses_bad_shapes():
    with pytest.raises(ValueError):
        fb.warp(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError):
        fb.warp(torch.zeros(2, 3, 8, 8), torch.zeros(1, 2, 8, 8))


# ---------------------------------------------------------------- FAb-Net


@pytest.mark.parametrize("k", [1, 3])
def test_fabnet_shapes(k):
    model = fb.FabNet(SMALL_FAB)
    b = 2
    sources = torch.rand(b, k, 3, S, S) if k > 1 else torch.rand(b, 3, S, S)
    out = model(sources, torch.rand(b, 3, S, S))
    assert out.generated.shape == (b, 3, S, S)
    assert out.warped.shape == (b, k, 3, S, S)
    assert out.flows.shape == (b, k, 2, S, S)
    assert out.weights.shape == (b, k, 1, S, S)
    assert (out.confidences is None) == (k == 1)
    assert model.embed(torch.rand(b, 3, S, S)).shape == (b, 256)
    assert out.flows.abs().max() <= 1  # tanh


def test_fabnet_starts_as_the_identity_warp():
    model = fb.FabNet(SMALL_FAB)
    sources = torch.rand(2, 3, 3, S, S)
    out = model(sources[:, 0], torch.rand(2, 3, S, S))
    assert (out.generated - sources[:, 0]).abs().max() < 1e-4
    out = model(sources, torch.rand(2, 3, S, S))
    assert torch.allclose(out.weights, torch.full_like(out.weights, 1 / 3))
    assert (out.generated - sources.mean(dim=1)).abs().max() < 1e-4


def test_fabnet_confidences_are_a_softmax_over_sources():
    torch.manual_seed(0)
    model = fb.FabNet(SMALL_FAB).train()  # batch statistics: the sources' embeddings differ clearly
    _randomise_last(model.confidence.last, seed=4, std=0.1)
    _randomise_last(model.sampler.last, seed=5, std=0.05)
    sources = torch.stack((torch.zeros(2, 3, S, S), torch.ones(2, 3, S, S), _smooth_frames(2)), dim=1)
    out = model(sources, _smooth_frames(2, seed=1))
    assert torch.allclose(out.weights.sum(dim=1), torch.ones(2, 1, S, S), atol=1e-6)
    assert (out.weights > 0).all()
    assert out.weights.std(dim=1).max() > 1e-3  # the confidences do differ between sources
    assert torch.allclose(out.weights, torch.softmax(out.confidences, dim=1))
    assert torch.allclose(out.generated, (out.weights * out.warped).sum(dim=1), atol=1e-6)
    assert out.confidences.abs().max() <= 1  # tanh


def test_fabnet_single_source_variant():
    model = fb.FabNet(fb.FabNetConfig.named("small", confidence=False))
    assert model.confidence is None
    assert model(torch.rand(1, 3, S, S), torch.rand(1, 3, S, S)).generated.shape == (1, 3, S, S)
    with pytest.raises(ValueError, match="confidence"):
        model(torch.rand(1, 3, 3, S, S), torch.rand(1, 3, S, S))


def test_fabnet_refuses_wrong_sizes():
    model = fb.FabNet(SMALL_FAB)
    with pytest.raises(ValueError):
        model(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError):
        model(torch.rand(2, 3, S, S), torch.rand(1, 3, S, S))


def test_parameter_counts_at_paper_size():
    with torch.device("meta"):
        assert _params(fb.FabNet(fb.FabNetConfig.named("paper"))) == 11_564_931
        assert _params(fb.FabNet(fb.FabNetConfig.named("paper", confidence=False))) == 8_225_954
        assert _params(xf.X2Face(xf.X2FaceConfig.named("paper"))) == 64_771_460
    assert _params(fb.FabNet(SMALL_FAB)) == 2_630_211
    assert _params(xf.X2Face(SMALL_X2F)) == 2_425_796


def test_describe():
    text = fb.describe(fb.FabNetConfig.named("paper"))
    assert "11,564,931" in text and "[1, 3, 1, 256, 256]" in text and "[1, 256]" in text
    text = xf.describe(xf.X2FaceConfig.named("paper"), sources=3)
    assert "64,771,460" in text and "[1, 128]" in text and "[1, 3, 256, 256]" in text


# ---------------------------------------------------------------- loss and curriculum


def test_l1_loss_is_per_sample():
    a = torch.zeros(3, 3, 4, 4)
    b = torch.zeros(3, 3, 4, 4)
    b[1] = 0.5
    b[2, 0] = 3.0
    assert torch.allclose(fb.l1_loss(a, b), torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError):
        fb.l1_loss(a, b[:2])


def test_curriculum_mask_picks_the_ranks():
    losses = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0])  # rank = 10 * value
    ranks = (losses * 10).round().long()
    for low, high in fb.CURRICULUM_WINDOWS:
        mask = fb.curriculum_mask(losses, low, high)
        assert mask.dtype == torch.bool and mask.shape == (10,)
        assert set(ranks[mask].tolist()) == set(range(low // 10, high // 10))
    assert fb.curriculum_mask(losses, 0, 100).all()
    assert torch.equal(fb.curriculum_mask(losses, 90, 100), losses == 0.9)
    assert torch.isclose(fb.curriculum_loss(losses, 0, 50), torch.tensor(0.2))


def test_curriculum_mask_on_a_batch_of_32():
    losses = torch.randperm(32).float()
    for low, high in fb.CURRICULUM_WINDOWS:
        mask = fb.curriculum_mask(losses, low, high)
        assert mask.sum() == 16
        assert losses[mask].min() == low * 32 // 100 and losses[mask].max() == high * 32 // 100 - 1


def test_curriculum_mask_ties_and_tiny_batches():
    assert fb.curriculum_mask(torch.zeros(4), 0, 50).tolist() == [True, True, False, False]
    assert fb.curriculum_mask(torch.tensor([3.0]), 0, 50).tolist() == [True]
    assert fb.curriculum_mask(torch.tensor([3.0, 1.0]), 40, 90).tolist() == [False, True]
    for low, high in [(50, 50), (60, 10), (-1, 50), (0, 101), (True, 50)]:
        with pytest.raises(ValueError):
            fb.curriculum_mask(torch.rand(8), low, high)
    with pytest.raises(ValueError):
        fb.curriculum_mask(torch.rand(2, 4), 0, 50)


# ---------------------------------------------------------------- training


def _sgd_losses(model, step, steps: int = 15) -> list[float]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    losses = []
    for _ in range(steps):
        loss = step(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_fabnet_sgd_reduces_the_l1_loss():
    torch.manual_seed(0)
    model = fb.FabNet(SMALL_FAB).train()
    source = _smooth_frames(4)
    target = torch.roll(source, shifts=3, dims=3)  # the same faces, moved 3 pixels
    losses = _sgd_losses(model, lambda m: fb.l1_loss(m(source, target).generated, target).mean())
    assert sum(losses[-5:]) / 5 < 0.8 * losses[0], losses


def test_fabnet_curriculum_step_back_propagates_the_window_only():
    torch.manual_seed(0)
    model = fb.FabNet(SMALL_FAB).train()
    sources = _smooth_frames(12, seed=1).reshape(4, 3, 3, S, S)
    target = torch.roll(sources[:, 0], shifts=2, dims=2)
    per_sample = fb.l1_loss(model(sources, target).generated, target)
    assert per_sample.shape == (4,)
    mask = fb.curriculum_mask(per_sample, 0, 50)
    assert mask.sum() == 2 and per_sample[mask].max() <= per_sample[~mask].min()
    fb.curriculum_loss(per_sample, 0, 50).backward()
    assert model.sampler.last.conv.weight.grad.abs().sum() > 0


def test_x2face_sgd_reduces_the_l1_loss():
    torch.manual_seed(0)
    model = xf.X2Face(SMALL_X2F).train()
    source = _smooth_frames(4)
    driving = torch.roll(source, shifts=3, dims=3)
    losses = _sgd_losses(model, lambda m: fb.l1_loss(m(source, driving).generated, driving).mean())
    assert sum(losses[-5:]) / 5 < 0.8 * losses[0], losses


# ---------------------------------------------------------------- X2Face


@pytest.mark.parametrize("k", [1, 3])
def test_x2face_shapes(k):
    model = xf.X2Face(SMALL_X2F)
    b = 2
    sources = torch.rand(b, k, 3, S, S) if k > 1 else torch.rand(b, 3, S, S)
    out = model(sources, torch.rand(b, 3, S, S))
    assert out.generated.shape == (b, 3, S, S)
    assert out.embedded.shape == (b, 3, S, S)
    assert out.driving_vector.shape == (b, 128)
    embedded, flow = model.embed(torch.rand(b, 3, S, S))
    assert embedded.shape == (b, 3, S, S) and flow.shape == (b, 2, S, S)
    v = model.driving_vector(torch.rand(b, 3, S, S))
    assert v.shape == (b, 128)
    assert model.generate(embedded, v).shape == (b, 3, S, S)
    assert model.driving_flow(v).shape == (b, 2, S, S)


def test_x2face_starts_as_the_identity_and_averages_embedded_faces():
    model = xf.X2Face(SMALL_X2F)
    sources = torch.rand(2, 3, 3, S, S)
    out = model(sources[:, 0], torch.rand(2, 3, S, S))
    assert (out.generated - sources[:, 0]).abs().max() < 1e-4
    # Multi-source: the embedded faces are averaged (thesis ch. 3 §5 "Testing"), then sampled.
    model.eval()
    _randomise_last(model.embedding_network.last, seed=6, std=0.05)
    _randomise_last(model.driving_network.decoder.last, seed=7, std=0.05)
    driving = torch.rand(2, 3, S, S)
    out = model(sources, driving)
    each = torch.stack([model.embed(sources[:, i])[0] for i in range(3)], dim=1)
    assert torch.allclose(out.embedded, each.mean(dim=1), atol=1e-5)
    assert torch.allclose(out.generated, model.generate(each.mean(dim=1), model.driving_vector(driving)), atol=1e-5)
    assert (out.embedded - sources.mean(dim=1)).abs().max() > 1e-3  # the flows are no longer zero


def test_x2face_networks_have_and_lack_skips():
    """The U-Net's decoder convs read [upsampled, skip]; the driving decoder reads only what the layer before gave."""
    model = xf.X2Face(SMALL_X2F)
    w = SMALL_X2F.embedding_widths
    unet_in = [model.embedding_network.up[i].conv.in_channels for i in range(len(w))]
    assert unet_in == [w[-1], *(2 * c for c in reversed(w[:-1]))]  # [128, 256, 256, 128, 64, 32]
    d = SMALL_X2F.driving_widths
    driving_in = [model.driving_network.decoder[i].conv.in_channels for i in range(len(d) + 1)]
    assert driving_in == [128, *reversed(d)]  # [128, 128, 128, 64, 32, 16]


def test_x2face_refuses_wrong_sizes():
    model = xf.X2Face(SMALL_X2F)
    with pytest.raises(ValueError):
        model.embed(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError):
        model.driving_flow(torch.rand(1, 64))
    with pytest.raises(ValueError):
        model(torch.rand(2, 3, S, S), torch.rand(1, 3, S, S))


def test_pose_modules():
    f_vp = xf.PoseFromVector()
    f_pv = xf.VectorFromPose()
    assert f_vp.fc.bias is not None and (f_vp.fc.in_features, f_vp.fc.out_features) == (128, 3)
    assert f_pv.fc.bias is not None and isinstance(f_pv.bn, torch.nn.BatchNorm1d)
    v = torch.randn(5, 128)
    p = f_vp(v)
    assert p.shape == (5, 3)
    assert f_pv(p).shape == (5, 128)
    f_pv.eval()
    v_new = xf.drive_with_pose(v, torch.randn(5, 3), f_vp, f_pv)
    assert v_new.shape == (5, 128)
    # With p_driving = p_source, eq. (1) adds f_{p->v}(0), a constant offset.
    same = xf.drive_with_pose(v, f_vp(v), f_vp, f_pv)
    assert torch.allclose(same - v, f_pv(torch.zeros(1, 3)).expand(5, -1), atol=1e-5)
    assert _params(f_vp) == 128 * 3 + 3 and _params(f_pv) == 3 * 128 + 128 + 2 * 128
