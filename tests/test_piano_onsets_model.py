"""Visual piano onset model (thesis ch. 6): shapes, modules, torchvision init, state-dict reading, loss, learning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from models import piano_onsets as po

torch.set_num_threads(2)

SMALL = {v: po.PianoOnsetsConfig.named("small", v) for v in po.VARIANTS}
PAPER = {v: po.PianoOnsetsConfig.named("paper", v) for v in po.VARIANTS}


@pytest.fixture(scope="module")
def tv_state():
    torch.manual_seed(1)
    return torchvision.models.resnet18(weights=None).state_dict()


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("variant", po.VARIANTS)
def test_small_output_shape(variant):
    c = SMALL[variant]
    model = po.PianoOnsets(c).eval()
    with torch.no_grad():
        out = model(torch.randn(2, c.frames, c.height, c.crop_width))
    assert out.shape == (2, po.N_KEYS)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("variant", po.VARIANTS)
def test_paper_stage_shapes(variant):
    """A real batch-1 forward at 145 x 800: first block 64x73x400 per frame, layer3 256x10x50, 88 logits."""
    model = po.PianoOnsets(PAPER[variant]).eval()
    with torch.no_grad():
        stages = model.forward_stages(torch.zeros(1, 5, 145, 800))
    per_frame = stages["stem"].shape[-3:]
    assert list(per_frame) == [64, 73, 400]
    if variant == "resnet":
        assert "aggregation" not in stages and stages["stem"].shape == (1, 64, 73, 400)
    else:
        assert stages["stem"].shape == (1, 5, 64, 73, 400)
        assert stages["aggregation"].shape == (1, 64, 73, 400)
    assert list(stages["layer3"].shape[1:]) == [256, 10, 50]
    assert ("slope" in stages) == (variant == "slope")
    assert stages["fc"].shape == (1, 88)


def test_wrong_number_of_frames_is_refused():
    model = po.PianoOnsets(SMALL["slope"])
    with pytest.raises(ValueError, match="expected input"):
        model(torch.zeros(1, 3, 48, 264))


# ---------------------------------------------------------------- modules


def test_baseline_has_five_channel_conv1_and_no_extras():
    model = po.PianoOnsets(PAPER["resnet"])
    assert model.conv1.in_channels == 5
    assert model.aggregation is None and model.slope is None


def test_aggregation_is_depthwise_5x1x1_weighted_average():
    model = po.PianoOnsets(SMALL["aggregation"]).eval()
    agg = model.aggregation
    assert isinstance(agg, po.AggregationModule) and isinstance(agg, torch.nn.Conv3d)
    assert agg.kernel_size == (5, 1, 1)
    assert agg.groups == 16 and agg.weight.shape == (16, 1, 5, 1, 1) and agg.bias is None
    assert model.conv1.in_channels == 1 and model.slope is None
    with torch.no_grad():
        agg.weight.copy_(torch.randn_like(agg.weight))
        stages = model.forward_stages(torch.randn(2, 5, 48, 264))
    stem = stages["stem"]  # [B, T, C, h, w]
    expected = torch.einsum("btchw,ct->bchw", stem, agg.weight[:, 0, :, 0, 0])
    torch.testing.assert_close(stages["aggregation"], expected, rtol=1e-4, atol=1e-5)


def test_frames_share_first_block_weights():
    """Frame i's first-block output depends on frame i alone (shared conv1 applied per frame)."""
    model = po.PianoOnsets(SMALL["aggregation"]).eval()
    x = torch.randn(1, 5, 48, 264)
    y = x.clone()
    y[:, 3] = torch.randn(48, 264)
    with torch.no_grad():
        a, b = model.forward_stages(x)["stem"], model.forward_stages(y)["stem"]
        alone = model.relu(model.bn1(model.conv1(x[:, 1:2])))
    torch.testing.assert_close(a[:, [0, 1, 2, 4]], b[:, [0, 1, 2, 4]])
    assert not torch.allclose(a[:, 3], b[:, 3])
    torch.testing.assert_close(a[:, 1], alone)


def test_slope_vector_and_features():
    model = po.PianoOnsets(PAPER["slope"])
    slope = model.slope
    assert isinstance(slope, po.SlopeModule)
    assert slope.x_key.numel() == 88
    torch.testing.assert_close(slope.x_key.flatten(), torch.tensor([i / 87 for i in range(88)]))
    assert (slope.conv1.kernel_size, slope.conv1.padding) == ((3,), (1,))
    assert (slope.conv2.kernel_size, slope.conv2.padding) == ((3,), (1,))
    assert slope.fuse.in_channels == 320 and slope.fuse.out_channels == 256 and slope.fuse.kernel_size == (3, 3)
    with torch.no_grad():
        feats = slope.slope_features(10, 50, batch=2)
    assert feats.shape == (2, 64, 10, 50)
    torch.testing.assert_close(feats, feats[:, :, :1].expand_as(feats))  # cloned over height
    # linear interpolation keeps the ends: column 0 lies between keys 0 and 1, the last between keys 86 and 87
    with torch.no_grad():
        keys = slope.conv2(slope.relu1(slope.conv1(slope.x_key)))[0]
    assert torch.all(torch.minimum(keys[:, 0], keys[:, 1]) - 1e-6 <= feats[0, :, 0, 0])
    assert torch.all(feats[0, :, 0, 0] <= torch.maximum(keys[:, 0], keys[:, 1]) + 1e-6)


def test_slope_fusion_starts_as_identity_on_the_block_features():
    """At init the fusion conv passes layer3's channels through and ignores the slope channels; training moves it."""
    torch.manual_seed(0)
    model = po.PianoOnsets(SMALL["slope"])
    fuse = model.slope.fuse
    features = torch.rand(2, fuse.out_channels, 3, 17)
    slope = torch.randn(2, fuse.in_channels - fuse.out_channels, 3, 17)
    with torch.no_grad():
        torch.testing.assert_close(fuse(torch.cat([features, slope], dim=1)), features)
    x = torch.rand(4, 5, SMALL["slope"].height, SMALL["slope"].crop_width)
    po.balanced_bce(model(x), (torch.rand(4, 88) < 0.2).float()).backward()
    assert fuse.weight.grad[:, fuse.out_channels:].abs().sum() > 0  # the slope channels get a gradient at step 0


# ---------------------------------------------------------------- torchvision initialisation


def test_paper_names_and_shapes_match_torchvision(tv_state):
    own = po.PianoOnsets(PAPER["slope"]).state_dict()
    for key, value in tv_state.items():
        if key.startswith(("conv1.", "fc.")):
            continue
        assert key in own, key
        assert own[key].shape == value.shape, key


@pytest.mark.parametrize("variant", ["resnet", "slope"])
def test_load_torchvision_init(variant, tv_state):
    model = po.PianoOnsets(PAPER[variant])
    loaded, skipped = po.load_torchvision_init(model, tv_state)
    layer_keys = {k for k in tv_state if k.startswith(("layer1.", "layer2.", "layer3.", "layer4."))}
    assert layer_keys <= set(loaded)
    assert "conv1.weight" in loaded and set(skipped) == {"fc.weight", "fc.bias"}
    torch.testing.assert_close(model.layer3[0].downsample[0].weight, tv_state["layer3.0.downsample.0.weight"])
    rgb = tv_state["conv1.weight"]
    by_hand = (rgb[7, 0] + rgb[7, 1] + rgb[7, 2]) / 3
    n_in = 5 if variant == "resnet" else 1
    assert model.conv1.weight.shape == (64, n_in, 7, 7)
    for channel in range(n_in):
        torch.testing.assert_close(model.conv1.weight[7, channel], by_hand)


def test_load_torchvision_init_from_path_and_refusal(tmp_path, tv_state):
    path = tmp_path / "resnet18.pth"
    torch.save(tv_state, path)
    model = po.PianoOnsets(PAPER["aggregation"])
    loaded, _ = po.load_torchvision_init(model, path)
    assert len(loaded) == len(tv_state) - 2
    small = po.PianoOnsets(SMALL["slope"])
    before = {k: v.clone() for k, v in small.state_dict().items()}
    with pytest.raises(ValueError, match="no tensor"):
        po.load_torchvision_init(small, tv_state)  # width 16: nothing fits
    for key, value in small.state_dict().items():  # and nothing was changed
        assert torch.equal(value, before[key]), key


# ---------------------------------------------------------------- read_state_dict


class Evil:  # an arbitrary pickled object: refused by weights_only=True
    pass


def _one_line_error(path):
    with pytest.raises(ValueError) as err:
        po.read_state_dict(path)
    message = str(err.value)
    assert "\n" not in message and path.name in message
    return message


def test_read_state_dict_refuses_bad_files(tmp_path):
    missing = tmp_path / "missing.pth"
    assert "no such file" in _one_line_error(missing)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                   dtype=torch.uint8).numpy().tobytes())
    _one_line_error(junk)
    evil = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, evil)
    _one_line_error(evil)
    not_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], not_dict)
    _one_line_error(not_dict)
    mixed = tmp_path / "mixed.pth"
    torch.save({"a": torch.zeros(2), "b": 3}, mixed)
    _one_line_error(mixed)


def test_read_state_dict_round_trip(tmp_path):
    path = tmp_path / "ok.pth"
    torch.save({"a": torch.arange(3.0)}, path)
    got = po.read_state_dict(path)
    assert list(got) == ["a"] and torch.equal(got["a"], torch.arange(3.0))


# ---------------------------------------------------------------- loss


def test_balanced_bce_gives_equal_total_weight():
    """At logits 0 the gradient is weight * (0.5 - y): positives' and negatives' sums cancel iff weights are equal."""
    g = torch.Generator().manual_seed(0)
    targets = (torch.rand(6, 88, generator=g) < 0.05).float()
    n_pos = int(targets.sum())
    assert 0 < n_pos < targets.numel()
    logits = torch.zeros(6, 88, requires_grad=True)
    loss = po.balanced_bce(logits, targets)
    loss.backward()
    pos = targets.bool()
    assert math.isclose(logits.grad[pos].sum().item(), -0.25, rel_tol=1e-5)
    assert math.isclose(logits.grad[~pos].sum().item(), 0.25, rel_tol=1e-5)
    assert math.isclose(loss.item(), math.log(2), rel_tol=1e-6)  # total weight 1


def test_balanced_bce_by_hand():
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0, 0.0]])

    def softplus(z):
        return math.log1p(math.exp(z))

    by_hand = 0.5 * softplus(-2.0) + (softplus(-1.0) + softplus(0.5) + softplus(0.0)) / 6
    assert math.isclose(po.balanced_bce(logits, targets).item(), by_hand, rel_tol=1e-6)
    # no positives: only negatives, each 1/num_neg, i.e. the plain mean
    zeros = torch.zeros_like(targets)
    torch.testing.assert_close(po.balanced_bce(logits, zeros), F.binary_cross_entropy_with_logits(logits, zeros))
    with pytest.raises(ValueError):
        po.balanced_bce(logits, targets[:, :3])


# ---------------------------------------------------------------- learning


def test_small_model_learns():
    torch.manual_seed(0)
    c = SMALL["slope"]
    model = po.PianoOnsets(c)
    x = torch.randn(8, c.frames, c.height, c.crop_width)
    y = (torch.rand(8, po.N_KEYS) < 0.2).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(2):
        opt.zero_grad()
        loss = po.balanced_bce(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():  # the loss after two Adam updates (train mode, as during training)
        losses.append(po.balanced_bce(model(x), y).item())
    assert losses[-1] < 0.85 * losses[0], losses  # about 0.78 for seeds 0-3


# ---------------------------------------------------------------- config and describe


def test_config():
    assert po.PianoOnsetsConfig.named("paper") == po.PianoOnsetsConfig()
    small = po.PianoOnsetsConfig.named("small", "resnet")
    assert (small.variant, small.width, small.height, small.crop_width) == ("resnet", 16, 48, 264)
    with pytest.raises(ValueError):
        po.PianoOnsetsConfig.named("huge")
    with pytest.raises(ValueError):
        po.PianoOnsetsConfig(variant="lstm")
    with pytest.raises(ValueError):
        po.PianoOnsetsConfig(width=0)


@pytest.mark.parametrize("variant", po.VARIANTS)
def test_describe(variant):
    config = PAPER[variant]
    text = po.describe(config)
    total = sum(p.numel() for p in po.PianoOnsets(config).parameters())
    assert f"total{total:>12,}".replace(" ", "") in text.replace(" ", "")
    assert ("aggregation" in text) == (variant != "resnet")
    assert ("slope" in text) == (variant == "slope")
    assert "[1, 256, 10, 50]" in text and "[1, 88]" in text
