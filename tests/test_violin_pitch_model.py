"""Visual pitch estimation networks (thesis ch. 5): shapes, fusion, shared conv1, spectrogram, distillation, describe."""

from __future__ import annotations

import re
import math

import pytest
import torch
import torch.nn.functional as F

from models import violin_pitch as vp

torch.set_num_threads(1)

SMALL_TEACHER = vp.ViolinPitchConfig.named("small", "teacher")
SMALL_S1 = vp.ViolinPitchConfig.named("small", "student", 1)
SMALL_S5 = vp.ViolinPitchConfig.named("small", "student", 5)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- config


def test_named_configs():
    assert SMALL_TEACHER.frames == 1 and SMALL_S5.frames == 5 and SMALL_S1.frames == 1
    paper = vp.ViolinPitchConfig.named("paper", "student")
    assert (paper.height, paper.width, paper.frames) == (400, 200, 5)
    assert paper.widths == (96, 256, 512, 512, 512) and paper.fc_width == 4096
    assert (SMALL_S1.height, SMALL_S1.width) == (200, 100)
    assert paper.n_classes == 34 == vp.MAX_MIDI - vp.MIN_MIDI + 1
    assert paper.n_bins == 511 and paper.spec_frames == 17
    with pytest.raises(ValueError):
        vp.ViolinPitchConfig.named("huge")


@pytest.mark.parametrize("kwargs", [
    {"kind": "critic"}, {"kind": "teacher", "frames": 5}, {"frames": 0}, {"n_classes": 1},
    {"widths": (16, 32, 64)}, {"widths": [16, 32, 64, 64, 64]}, {"dropout": 1.0}, {"dropout": True},
    {"segment_samples": 1000}, {"max_freq_hz": 30000.0}, {"hop": 0},
])
def test_bad_config_is_refused(kwargs):
    with pytest.raises(ValueError):
        vp.ViolinPitchConfig(**kwargs)


def test_kind_mismatch_is_refused():
    with pytest.raises(ValueError, match="teacher config"):
        vp.PitchTeacher(SMALL_S1)
    with pytest.raises(ValueError, match="student config"):
        vp.PitchStudent(SMALL_TEACHER)


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("config", [SMALL_S1, SMALL_S5], ids=["1frame", "5frames"])
@pytest.mark.parametrize("size", [(64, 32), (37, 19), (3, 1), (1, 1)])
def test_student_shapes(config, size):
    model = vp.PitchStudent(config).eval()
    x = torch.rand(2, config.frames, 3, *size)
    with torch.no_grad():
        logits, feats = model.forward_features(x)
        assert torch.equal(model(x), logits)
    assert logits.shape == (2, config.n_classes)
    assert [f.shape for f in feats] == [(2, config.fc_width), (2, config.fc_width), (2, config.n_classes)]
    assert feats[2] is logits
    assert torch.isfinite(logits).all()


def test_student_stage_shapes_at_small_size():
    """200 x 100: conv1 full size, pool1 100x50, conv2 (stride 2) 50x25, pool2 25x13, pool5 13x7."""
    with torch.no_grad():
        stages = vp.PitchStudent(SMALL_S5).eval().forward_stages(torch.rand(1, 5, 3, 200, 100))
    assert stages["conv1"].shape == (1, 5, 16, 200, 100)
    assert stages["fusion"].shape == (1, 16, 200, 100)
    assert stages["pool1"].shape == (1, 16, 100, 50)
    assert stages["conv2"].shape == (1, 32, 50, 25)
    assert stages["pool2"].shape == (1, 32, 25, 13)
    assert stages["pool5"].shape == (1, 64, 13, 7)
    assert stages["fc8"].shape == (1, 34, 13, 7)
    assert torch.allclose(stages["logits"], stages["fc8"].mean(dim=(2, 3)))
    assert torch.allclose(stages["fc6_mean"], stages["fc6"].mean(dim=(2, 3)))


def test_wrong_student_input_is_refused():
    model = vp.PitchStudent(SMALL_S5)
    with pytest.raises(ValueError, match="expected frames"):
        model(torch.rand(1, 1, 3, 20, 10))
    with pytest.raises(ValueError, match="expected frames"):
        model(torch.rand(1, 5, 20, 10))


@pytest.mark.parametrize("samples", [SMALL_TEACHER.segment_samples, 4096, 5001])
def test_teacher_shapes(samples):
    model = vp.PitchTeacher(SMALL_TEACHER).eval()
    with torch.no_grad():
        stages = model.forward_stages(0.1 * torch.randn(2, samples))
    frames = 1 + (samples - 4096) // 441
    assert stages["frontend"].shape == (2, 1, 1, 511, frames)
    assert stages["logits"].shape == (2, 34)
    assert stages["fc6_mean"].shape == stages["fc7_mean"].shape == (2, 256)
    assert "fusion" not in stages
    assert torch.isfinite(stages["logits"]).all()


def test_teacher_refuses_short_audio():
    with pytest.raises(ValueError, match="N >= 4096"):
        vp.PitchTeacher(SMALL_TEACHER)(torch.zeros(1, 4095))


# ---------------------------------------------------------------- spectrogram


def test_spectrogram_puts_a_440hz_sine_in_the_nearest_bin():
    c = SMALL_TEACHER
    t = torch.arange(c.segment_samples) / c.sample_rate
    audio = (0.3 * torch.sin(2 * math.pi * 440.0 * t)).unsqueeze(0)
    spec = vp.Spectrogram(c.n_fft, c.hop, c.n_bins)(audio)  # [1, 1, F, T]
    assert spec.shape == (1, 1, c.n_bins, c.spec_frames)
    nearest = round(440.0 * c.n_fft / c.sample_rate)  # 41 (10.77 Hz bins)
    assert nearest == 41
    assert (spec[0, 0].argmax(dim=0) == nearest).all()  # in every frame
    assert abs(spec.mean().item()) < 1e-4 and abs(spec.std(unbiased=False).item() - 1) < 1e-4
    assert spec[0, 0, nearest].mean() > 5


def test_spectrogram_of_silence_is_zero():
    spec = vp.Spectrogram()(torch.zeros(2, 11152))
    assert torch.equal(spec, torch.zeros_like(spec))


# ---------------------------------------------------------------- shared conv1 and fusion


def test_five_frame_student_adds_exactly_the_fusion_module():
    one, five = vp.PitchStudent(SMALL_S1), vp.PitchStudent(SMALL_S5)
    fusion = _params(five.fusion)
    c = SMALL_S5.widths[0]
    assert fusion == c * c * 5 * 3 * 3 + 2 * c  # Conv3d without bias + BN weight and bias
    assert _params(five) - _params(one) == fusion
    assert _params(five.conv1) == _params(one.conv1)  # one conv1 for all frames
    assert one.fusion is None


def test_conv1_is_shared_across_frames():
    """Each frame's conv1 output equals conv1 of that frame alone, and permuting frames permutes them."""
    torch.manual_seed(0)
    model = vp.PitchStudent(SMALL_S5).eval()
    x = torch.rand(2, 5, 3, 24, 12)
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        per_frame = model.forward_stages(x)["conv1"]
        permuted = model.forward_stages(x[:, perm])["conv1"]
        alone = model.conv1(model.frontend(x)[:, 2])
    assert torch.allclose(permuted, per_frame[:, perm], atol=1e-6)
    assert torch.allclose(per_frame[:, 2], alone, atol=1e-6)


def test_fusion_init_is_the_temporal_mean_of_identity():
    fusion = vp.FusionModule(4, 5)
    w = fusion.conv.weight
    assert w.shape == (4, 4, 5, 3, 3)
    expected = torch.zeros_like(w)
    for ch in range(4):
        expected[ch, ch, :, 1, 1] = 0.2
    assert torch.equal(w, expected)
    fusion.eval()  # fresh BN statistics: identity up to eps
    x = torch.rand(2, 4, 5, 6, 7)
    with torch.no_grad():
        assert torch.allclose(fusion(x), x.mean(dim=2), atol=1e-4)
    with pytest.raises(ValueError):
        fusion(torch.rand(2, 4, 3, 6, 7))


def test_identical_frames_give_the_one_frame_output_at_init():
    """5 copies of a frame through a fresh 5-frame student = that frame through the 1-frame student (same weights)."""
    torch.manual_seed(0)
    one = vp.PitchStudent(SMALL_S1).eval()
    five = vp.PitchStudent(SMALL_S5).eval()
    missing, unexpected = five.load_state_dict(one.state_dict(), strict=False)
    assert unexpected == [] and missing and all(k.startswith("fusion.") for k in missing)
    frame = torch.rand(2, 1, 3, 40, 20)
    with torch.no_grad():
        a = one(frame)
        b = five(frame.expand(-1, 5, -1, -1, -1))
        c = five(torch.rand(2, 5, 3, 40, 20))
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)
    assert not torch.allclose(a, c, rtol=1e-3, atol=1e-5)


def test_gradients_reach_conv1_through_the_fusion_module():
    torch.manual_seed(0)
    model = vp.PitchStudent(SMALL_S5).train()
    x = torch.rand(2, 5, 3, 32, 16)
    loss = F.cross_entropy(model(x), torch.tensor([0, 7]))
    loss.backward()
    for p in (model.conv1.conv.weight, model.fusion.conv.weight, model.fc8.weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    # the fusion conv's off-identity weights (other channels, other taps) get gradients too
    mask = model.fusion.conv.weight.detach() == 0
    assert model.fusion.conv.weight.grad[mask].abs().sum() > 0


# ---------------------------------------------------------------- distillation


def test_distillation_default_weights_match_the_cross_entropy():
    torch.manual_seed(0)
    student = [torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True),
               torch.randn(4, 34, requires_grad=True)]
    teacher = [torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True),
               torch.randn(4, 34, requires_grad=True)]
    ce = F.cross_entropy(student[2], torch.tensor([1, 2, 3, 4]))
    loss, weights = vp.distillation_loss(student, teacher, ce)
    assert weights.shape == (3,) and not weights.requires_grad
    for k in range(3):
        term = weights[k] * F.l1_loss(student[k], teacher[k])
        assert abs(term.item() - ce.item()) < 1e-6
    assert abs(loss.item() - 3 * ce.item()) < 1e-5
    loss.backward()
    assert all(t.grad is None for t in teacher)
    # the weights are constants and the CE is detached inside: each student grad is w_k * sign(s - t) / numel
    for k in range(3):
        expected = weights[k] * torch.sign(student[k] - teacher[k]).detach() / student[k].numel()
        assert torch.allclose(student[k].grad, expected, atol=1e-7)


def test_distillation_explicit_weights_and_errors():
    s = [torch.ones(2, 3), torch.zeros(2, 3)]
    t = [torch.zeros(2, 3), torch.zeros(2, 3)]
    loss, w = vp.distillation_loss(s, t, torch.tensor(2.0), weights=[0.5, 10.0])
    assert loss.item() == pytest.approx(0.5) and w.tolist() == [0.5, 10.0]
    loss, w = vp.distillation_loss(s, t, torch.tensor(2.0))  # identical pair: L1 0, clamped, term 0
    assert loss.item() == pytest.approx(2.0) and torch.isfinite(w).all()
    with pytest.raises(ValueError):
        vp.distillation_loss(s, t[:1], torch.tensor(1.0))
    with pytest.raises(ValueError):
        vp.distillation_loss(s, [torch.zeros(2, 4), t[1]], torch.tensor(1.0))
    with pytest.raises(ValueError):
        vp.distillation_loss(s, t, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError):
        vp.distillation_loss(s, t, torch.tensor(1.0), weights=[1.0])


def test_student_and_teacher_features_distil_end_to_end():
    """Features of a small teacher (eval, no grad) and student pair up; the loss trains the student only."""
    torch.manual_seed(0)
    teacher = vp.PitchTeacher(SMALL_TEACHER).eval()
    student = vp.PitchStudent(SMALL_S1).train()
    with torch.no_grad():
        _, t_feats = teacher.forward_features(0.1 * torch.randn(2, SMALL_TEACHER.segment_samples))
    logits, s_feats = student.forward_features(torch.rand(2, 1, 3, 32, 16))
    ce = F.cross_entropy(logits, torch.tensor([3, 30]))
    distil, w = vp.distillation_loss(s_feats, t_feats, ce)
    (ce + distil).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.conv1.conv.weight.grad.abs().sum() > 0
    assert abs(distil.item() - 3 * ce.item()) < 1e-5


# ---------------------------------------------------------------- describe


@pytest.mark.parametrize("kind,frames", [("teacher", 1), ("student", 1), ("student", 5)])
def test_describe_paper_on_meta(kind, frames):
    text = vp.describe(vp.ViolinPitchConfig.named("paper", kind, frames))
    assert ("fusion" in text) == (frames == 5)
    assert "fc6" in text and re.search(r"logits\s+\[1, 34\]", text)
    shapes = {line.split()[0]: " ".join(line.split()[1:]) for line in text.split("stage outputs")[1].splitlines()[1:]}
    if kind == "student":
        assert shapes["pool5"] == "[1, 512, 25, 13]" and shapes["conv1"] == "[1, %d, 96, 400, 200]" % frames
    else:
        assert shapes["frontend"] == "[1, 1, 1, 511, 17]" and shapes["pool5"] == "[1, 512, 32, 2]"
    total = int(next(line for line in text.splitlines() if line.strip().startswith("total")).split()[-1]
                .replace(",", ""))
    assert total > 20_000_000
