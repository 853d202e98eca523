"""Visual pitch estimation networks of Koepke's thesis ch. 5 ("Visual Pitch Estimation", Fig. 2), in PyTorch.

A *teacher* (:class:`PitchTeacher`) classifies the pitch of a violin from an
STFT spectrogram of the audio; a *student* (:class:`PitchStudent`) classifies
the same pitch from 1 or 5 video frames (RGB, resized to 400 x 200 = height x
width in the thesis).  Classes are MIDI numbers 55..88 (``n_classes = 34``;
class ``k`` is MIDI ``55 + k``).  Both are trained with cross-entropy; the
student also with :func:`distillation_loss`, an L1 loss between its and the
(frozen) teacher's activations of the "three fully-connected layers".

Trunk (:class:`VggM`, "loosely based on VGG-M", shared by teacher and student)
    ====== ======================================= =========================
    conv1  7x7, stride 1, pad 3, BN, ReLU           max-pool 2 (``pool1``)
    conv2  7x7, stride 2, pad 3, BN, ReLU           max-pool 2 (``pool2``)
    conv3  3x3, pad 1, BN, ReLU
    conv4  3x3, pad 1, BN, ReLU
    conv5  3x3, pad 1, BN, ReLU                     max-pool 2 (``pool5``)
    fc6    1x1 conv, ReLU                           dropout (``drop6``)
    fc7    1x1 conv, ReLU                           dropout (``drop7``)
    fc8    1x1 conv to ``n_classes``, no ReLU       logits = spatial mean
    ====== ======================================= =========================

    The thesis gives the kernel sizes (7, 7, 3, 3, 3, then three 1x1) and the
    strides (all 1 but conv2's 2); the rest is chosen here:

    * Widths: VGG-M's 96, 256, 512, 512, 512 and fc 4096, 4096 (``paper``);
      16, 32, 64, 64, 64 and fc 256, 256 (``small``, to train on a CPU).
    * BatchNorm after conv1..conv5 in place of VGG-M's LRN (the thesis uses BN
      in its fusion module); those convs have no bias.  fc6/fc7 have a bias and
      no BN, as VGG-M's fully-connected layers.
    * Max-pooling (kernel 2, stride 2, ``ceil_mode=True``) after conv1, conv2
      and conv5, where VGG-M pools (VGG-M's 3x3/2 pools become 2x2/2).  Every
      conv is "same"-padded and ``ceil_mode`` keeps a size-1 side at 1, so any
      input size (down to 1 x 1) gives a non-empty map.
    * The "fully-connected" layers are 1x1 convolutions over conv5's pooled
      map (so the input size is free) and the logits are the spatial mean of
      fc8's map.  As fc8 is linear this equals fc8 applied to fc7's mean.
    * Dropout ``p = config.dropout`` (0.5, as VGG-M) after fc6's and fc7's ReLU,
      element-wise on the maps.
    * Initialisation: conv1..conv5 Kaiming normal (fan-out, as torchvision's
      VGG), fc6/fc7 Kaiming normal (fan-in, keeping the activations' scale),
      fc8 normal with std 0.01 and zero bias (near-uniform softmax at step 0),
      BN weight 1 and bias 0.

Distillation features (:meth:`VggM.forward_features`)
    ``(logits, [fc6, fc7, fc8])``: fc6 and fc7 after their ReLU (before
    dropout) and fc8 (the logits, before softmax), each the *spatial mean* of
    the layer's map, ``[B, C]``.  The teacher's maps are over a spectrogram's
    frequency x time grid, the student's over the image, and their spatial
    sizes differ (paper: 32 x 2 vs 25 x 13), so what is compared is each
    channel's spatial average.

Student (:class:`PitchStudent`)
    Input ``[B, T, 3, H, W]``, float RGB in [0, 1], ``T = config.frames``.
    It is normalised inside the model with the ImageNet mean and std
    (:class:`ImageNorm`, the usual statistics for a VGG-style network).
    conv1 (with its BN and ReLU) runs on each frame with shared weights (the
    frames are folded into the batch), giving ``[B, T, C, h, w]``.  For
    ``T > 1`` the :class:`FusionModule` turns them into ``[B, C, h, w]``; for
    ``T = 1`` the frame's conv1 output goes straight on.  Then ``pool1`` and the
    rest of the trunk.  The thesis's input is 400 x 200 (``paper``); ``small``
    uses 200 x 100.  The data loader resizes; the model accepts any size.

Fusion module (:class:`FusionModule`)
    The per-frame conv1 outputs are stacked over time to ``[B, C, T, h, w]``;
    a full (not depthwise) ``Conv3d(C, C, kernel=(T, 3, 3), padding=(0, 1, 1),
    bias=False)`` gives ``[B, C, 1, h, w]``, squeezed to ``[B, C, h, w]``, then
    BatchNorm2d and ReLU.  It is initialised as the temporal mean of an
    identity 3x3 kernel: ``weight[c, c, t, 1, 1] = 1 / T``, zero elsewhere
    (dirac-like).  So at step 0 the 5-frame student computes the 1-frame
    student on the mean of the frames' conv1 features, and for 5 identical
    frames (in eval mode, with fresh BN statistics, which are the identity up
    to BN's eps) exactly what the 1-frame student computes; a trained 1-frame
    student can warm-start a 5-frame one.  A Kaiming-random fusion conv would
    instead be an extra random layer right after conv1, scrambling its
    features (the piano model's random fusion conv lagged its identity-started
    one clearly; see ``models/piano_onsets.py``).

Teacher (:class:`PitchTeacher`)
    Input raw mono audio ``[B, N]`` at 44100 Hz (the violin shards' audio
    rate): a segment of ``segment_samples`` samples centred on the video
    frame's time (cutting it out is the data loader's job).
    :class:`Spectrogram` (torchaudio's ``Spectrogram``): Hann window of
    ``n_fft = 4096`` samples (93 ms; bins of 10.77 Hz: MIDI 55 = 196 Hz and a
    semitone there is 11.6 Hz), hop 441 (10 ms), ``center=False`` (no padding:
    every frame holds only real samples), magnitude (``power=1``), bins 0 ..
    ``floor(max_freq_hz * n_fft / sample_rate)`` kept (``max_freq_hz`` 5500:
    511 bins, up to 5.50 kHz, the violin's range up to MIDI 88 = 1319 Hz and its
    first harmonics), then ``log1p`` and a per-example standardisation (zero
    mean, unit standard deviation over the whole spectrogram, std clamped at
    1e-5 so a silent segment gives zeros), which makes the teacher
    loudness-invariant.  ``segment_samples = n_fft + 16 * hop = 11152``
    (0.253 s) gives 17 frames whose middle one (index 8) is centred exactly on
    the segment's centre.  The trunk's input is ``[B, 1, 511, 17]``; any
    ``N >= n_fft`` works.  ``small`` keeps this front end and only narrows
    the trunk.

Distillation (:func:`distillation_loss`)
    ``sum_k w_k * L1(student_k, teacher_k.detach())`` over the three layers,
    ``L1`` the mean absolute difference (``F.l1_loss``).  Default weights (the
    thesis's "weighed so that the contribution for each of the three
    fully-connected layers is as big as the pitch classification loss"):
    ``w_k = ce.detach() / max(L1_k.detach(), 1e-8)``, recomputed at every step
    from the current batch, so each weighted term equals the cross-entropy in
    value (the distillation total is ``3 * ce``) while its gradient is
    ``ce / L1_k`` times the gradient of ``L1_k``.  The weights are constants to
    autograd, and no gradient reaches the teacher's features.  The student's
    total loss is ``ce + distillation`` (the caller adds ``ce``).  Since the
    weights rescale each term, ``L1``'s reduction (mean vs. sum) does not
    matter with the default rule.

Config (:class:`ViolinPitchConfig`)
    ``named("paper", kind, frames)``: the widths above, student input 400 x 200.
    ``named("small", kind, frames)``: the small widths, student input 200 x 100.
    Both: 34 classes, dropout 0.5, the audio front end above.  ``frames``
    defaults to 1 for the teacher (which requires 1) and 5 for the student.

:func:`describe` lists the submodules, parameter counts and stage output shapes.

This module imports only torch and torchaudio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

MIN_MIDI, MAX_MIDI = 55, 88
N_CLASSES = MAX_MIDI - MIN_MIDI + 1  # 34
KINDS = ("teacher", "student")
SAMPLE_RATE = 44100
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DISTILL_LAYERS = ("fc6", "fc7", "fc8")

_WIDTHS = {"paper": ((96, 256, 512, 512, 512), 4096), "small": ((16, 32, 64, 64, 64), 256)}
_INPUT = {"paper": (400, 200), "small": (200, 100)}


# ---------------------------------------------------------------- config


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True)
class ViolinPitchConfig:
    """Network kind and sizes: trunk widths, student input ``frames x 3 x height x width``, teacher audio front end."""

    kind: str = "student"
    frames: int = 5
    n_classes: int = N_CLASSES
    widths: tuple[int, ...] = _WIDTHS["paper"][0]
    fc_width: int = _WIDTHS["paper"][1]
    dropout: float = 0.5
    height: int = 400
    width: int = 200
    sample_rate: int = SAMPLE_RATE
    segment_samples: int = 4096 + 16 * 441
    n_fft: int = 4096
    hop: int = 441
    max_freq_hz: float = 5500.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        for name in ("frames", "n_classes", "fc_width", "height", "width", "sample_rate",
                     "segment_samples", "n_fft", "hop"):
            value = getattr(self, name)
            if not _positive_int(value):
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        if self.kind == "teacher" and self.frames != 1:
            raise ValueError(f"the teacher takes one spectrogram: frames must be 1, not {self.frames}")
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, not {self.n_classes}")
        if not isinstance(self.widths, tuple) or len(self.widths) != 5 or not all(map(_positive_int, self.widths)):
            raise ValueError(f"widths must be a tuple of 5 positive ints (conv1..conv5), not {self.widths!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), not {self.dropout!r}")
        if self.n_fft < 2:
            raise ValueError(f"n_fft must be at least 2, not {self.n_fft}")
        if self.segment_samples < self.n_fft:
            raise ValueError(f"segment_samples ({self.segment_samples}) must be at least n_fft ({self.n_fft})")
        if (isinstance(self.max_freq_hz, bool) or not isinstance(self.max_freq_hz, (int, float))
                or not 0 < self.max_freq_hz <= self.sample_rate / 2):
            raise ValueError(f"max_freq_hz must be in (0, sample_rate / 2 = {self.sample_rate / 2}], "
                             f"not {self.max_freq_hz!r}")

    @property
    def n_bins(self) -> int:
        """Frequency bins kept: 0 .. ``floor(max_freq_hz * n_fft / sample_rate)``."""
        return int(self.max_freq_hz * self.n_fft // self.sample_rate) + 1

    @property
    def spec_frames(self) -> int:
        """STFT frames of a ``segment_samples`` segment (``center=False``)."""
        return 1 + (self.segment_samples - self.n_fft) // self.hop

    @classmethod
    def named(cls, name: str, kind: str = "student", frames: int | None = None) -> ViolinPitchConfig:
        """``"paper"`` (VGG-M widths, input 400 x 200) or ``"small"`` (narrow, 200 x 100); ``frames`` None: 1 teacher, 5 student."""
        if name not in _WIDTHS:
            raise ValueError(f"unknown config {name!r}: use 'paper' or 'small'")
        if frames is None:
            frames = 1 if kind == "teacher" else 5
        widths, fc_width = _WIDTHS[name]
        height, width = _INPUT[name]
        return cls(kind=kind, frames=frames, widths=widths, fc_width=fc_width, height=height, width=width)


# ---------------------------------------------------------------- modules


class ConvBNReLU(nn.Sequential):
    """``conv`` (no bias) -> ``bn`` -> ``relu``, "same" padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)


class FullyConnected(nn.Sequential):
    """A "fully-connected" layer as a 1x1 convolution (with bias) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.relu = nn.ReLU(inplace=True)


class FusionModule(nn.Module):
    """The fusion module: ``[B, C, T, h, w]`` -> Conv3d ``(T, 3, 3)`` -> ``[B, C, h, w]`` -> BN -> ReLU."""

    def __init__(self, channels: int, frames: int = 5):
        super().__init__()
        self.frames = frames
        self.conv = nn.Conv3d(channels, channels, kernel_size=(frames, 3, 3), padding=(0, 1, 1), bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.reset_fusion()

    def reset_fusion(self) -> None:
        """Temporal mean of an identity 3x3 kernel: ``weight[c, c, t, 1, 1] = 1 / T`` (see the module notes)."""
        with torch.no_grad():
            self.conv.weight.zero_()
            for t in range(self.frames):
                nn.init.dirac_(self.conv.weight[:, :, t])  # [C, C, 3, 3]: 1 at the centre where out == in
            self.conv.weight.div_(self.frames)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[2] != self.frames:
            raise ValueError(f"expected [B, C, {self.frames}, h, w], got {list(x.shape)}")
        return self.relu(self.bn(self.conv(x).squeeze(2)))


class ImageNorm(nn.Module):
    """``(x - mean) / std`` per RGB channel with the ImageNet statistics (non-persistent buffers)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).reshape(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).reshape(1, 1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Spectrogram(nn.Module):
    """Mono audio ``[B, N]`` -> standardised log-magnitude STFT ``[B, 1, n_bins, frames]`` (see the module notes)."""

    def __init__(self, n_fft: int = 4096, hop: int = 441, n_bins: int = 511, eps: float = 1e-5):
        super().__init__()
        if not 1 <= n_bins <= n_fft // 2 + 1:
            raise ValueError(f"n_bins must be in [1, {n_fft // 2 + 1}], not {n_bins}")
        self.n_fft, self.n_bins, self.eps = n_fft, n_bins, eps
        self.stft = torchaudio.transforms.Spectrogram(n_fft=n_fft, win_length=n_fft, hop_length=hop,
                                                      power=1.0, center=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.dim() != 2 or audio.shape[1] < self.n_fft:
            raise ValueError(f"expected mono audio [B, N] with N >= {self.n_fft}, got {list(audio.shape)}")
        spec = torch.log1p(self.stft(audio)[:, : self.n_bins])  # [B, n_bins, frames]
        mean = spec.mean(dim=(1, 2), keepdim=True)
        std = spec.std(dim=(1, 2), keepdim=True, unbiased=False).clamp_min(self.eps)
        return ((spec - mean) / std).unsqueeze(1)


class VggM(nn.Module):
    """The VGG-M-like trunk: ``frontend`` -> conv1 (per frame) -> [fusion] -> ... -> fc8; logits = fc8's spatial mean."""

    def __init__(self, frontend: nn.Module, in_channels: int, frames: int, n_classes: int,
                 widths: Sequence[int], fc_width: int, dropout: float):
        super().__init__()
        w1, w2, w3, w4, w5 = widths
        self.frames = frames
        self.frontend = frontend
        self.conv1 = ConvBNReLU(in_channels, w1, 7)
        self.fusion = FusionModule(w1, frames) if frames > 1 else None
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = ConvBNReLU(w1, w2, 7, stride=2)
        self.pool2 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv3 = ConvBNReLU(w2, w3, 3)
        self.conv4 = ConvBNReLU(w3, w4, 3)
        self.conv5 = ConvBNReLU(w4, w5, 3)
        self.pool5 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.fc6 = FullyConnected(w5, fc_width)
        self.drop6 = nn.Dropout(dropout)
        self.fc7 = FullyConnected(fc_width, fc_width)
        self.drop7 = nn.Dropout(dropout)
        self.fc8 = nn.Conv2d(fc_width, n_classes, kernel_size=1)
        self._init_weights()

    def _init_weights(self) -> None:
        """conv1..5 Kaiming fan-out, fc6/fc7 Kaiming fan-in, fc8 N(0, 0.01), biases 0, BN 1/0; fusion dirac-mean."""
        for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
            nn.init.kaiming_normal_(getattr(self, name).conv.weight, mode="fan_out", nonlinearity="relu")
        for name in ("fc6", "fc7"):
            nn.init.kaiming_normal_(getattr(self, name).conv.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(getattr(self, name).conv.bias)
        nn.init.normal_(self.fc8.weight, std=0.01)
        nn.init.zeros_(self.fc8.bias)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.fusion is not None:
            self.fusion.reset_fusion()

    def _frames_input(self, x: torch.Tensor) -> torch.Tensor:
        """The front end's output as ``[B, T, C, H, W]``."""
        raise NotImplementedError

    def forward_stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every stage's output in order: ``frontend``, ``conv1`` (``[B, T, C, h, w]``), [``fusion``], ..., ``fc8`` (maps), ``logits``.

        Also ``fc6_mean`` and ``fc7_mean``: the spatial means used for distillation (after ReLU, before dropout).
        """
        out: dict[str, torch.Tensor] = {}
        x = self._frames_input(x)
        out["frontend"] = x
        b, t = x.shape[:2]
        x = self.conv1(x.reshape(b * t, *x.shape[2:]))
        x = x.reshape(b, t, *x.shape[1:])
        out["conv1"] = x
        if self.fusion is not None:
            x = self.fusion(x.transpose(1, 2))
            out["fusion"] = x
        else:
            x = x[:, 0]
        for name in ("pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"):
            x = getattr(self, name)(x)
            out[name] = x
        x = self.fc6(x)
        out["fc6"] = x
        out["fc6_mean"] = x.mean(dim=(2, 3))
        x = self.fc7(self.drop6(x))
        out["fc7"] = x
        out["fc7_mean"] = x.mean(dim=(2, 3))
        x = self.fc8(self.drop7(x))
        out["fc8"] = x
        out["logits"] = x.mean(dim=(2, 3))
        return out

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(logits [B, n_classes], [fc6 [B, fc], fc7 [B, fc], fc8 = logits])``: spatial means, for distillation."""
        out = self.forward_stages(x)
        return out["logits"], [out["fc6_mean"], out["fc7_mean"], out["logits"]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)["logits"]


class PitchStudent(VggM):
    """Frames to pitch: ``[B, frames, 3, H, W]`` RGB in [0, 1] -> ``[B, n_classes]`` logits."""

    def __init__(self, config: ViolinPitchConfig | None = None):
        config = ViolinPitchConfig.named("paper", "student") if config is None else config
        if config.kind != "student":
            raise ValueError(f"PitchStudent needs a student config, not kind={config.kind!r}")
        super().__init__(ImageNorm(), 3, config.frames, config.n_classes, config.widths, config.fc_width,
                         config.dropout)
        self.config = config

    def _frames_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.frames or x.shape[2] != 3:
            raise ValueError(f"expected frames [B, {self.frames}, 3, H, W], got {list(x.shape)}")
        return self.frontend(x)


class PitchTeacher(VggM):
    """Audio to pitch: mono 44.1 kHz audio ``[B, N]`` -> spectrogram ``[B, 1, n_bins, frames]`` -> ``[B, n_classes]``."""

    def __init__(self, config: ViolinPitchConfig | None = None):
        config = ViolinPitchConfig.named("paper", "teacher") if config is None else config
        if config.kind != "teacher":
            raise ValueError(f"PitchTeacher needs a teacher config, not kind={config.kind!r}")
        super().__init__(Spectrogram(config.n_fft, config.hop, config.n_bins), 1, 1, config.n_classes,
                         config.widths, config.fc_width, config.dropout)
        self.config = config

    def _frames_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.frontend(x).unsqueeze(1)  # [B, 1 frame, 1 channel, n_bins, frames]


def build(config: ViolinPitchConfig) -> VggM:
    """:class:`PitchTeacher` or :class:`PitchStudent` as ``config.kind`` says."""
    return PitchTeacher(config) if config.kind == "teacher" else PitchStudent(config)


# ---------------------------------------------------------------- loss


def distillation_loss(student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor],
                      ce: torch.Tensor, weights: Sequence[float] | torch.Tensor | None = None,
                      eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum_k w_k * L1(student_k, teacher_k.detach()), weights [K])``.

    ``L1`` is ``F.l1_loss`` (mean).  With ``weights=None`` each
    ``w_k = ce.detach() / max(L1_k.detach(), eps)``, recomputed per call, so
    each weighted term equals ``ce`` in value (less if ``L1_k < eps``).  The
    returned weights are detached (for logging).
    """
    if len(student_feats) != len(teacher_feats) or not student_feats:
        raise ValueError(f"need as many student as teacher features (>0), got {len(student_feats)} "
                         f"and {len(teacher_feats)}")
    if not isinstance(ce, torch.Tensor) or ce.dim() != 0:
        raise ValueError("ce must be a scalar tensor")
    l1 = []
    for k, (s, t) in enumerate(zip(student_feats, teacher_feats)):
        if s.shape != t.shape:
            raise ValueError(f"feature {k}: student {list(s.shape)} and teacher {list(t.shape)} differ in shape")
        l1.append(F.l1_loss(s, t.detach()))
    l1 = torch.stack(l1)
    if weights is None:
        w = ce.detach() / l1.detach().clamp_min(eps)
    else:
        w = torch.as_tensor(weights, dtype=l1.dtype, device=l1.device).detach()
        if w.shape != l1.shape:
            raise ValueError(f"need {len(l1)} weights, got shape {list(w.shape)}")
    return (w * l1).sum(), w


# ---------------------------------------------------------------- description


def describe(config: ViolinPitchConfig) -> str:
    """Each top-level submodule with its parameters, the total, and every stage's output shape (batch 1).

    The model and the dummy forward live on the ``meta`` device: nothing is
    allocated or computed, whatever the sizes.
    """
    with torch.device("meta"):
        model = build(config).eval()
        if config.kind == "teacher":
            x = torch.zeros(1, config.segment_samples)
            what = (f"audio {config.segment_samples} samples at {config.sample_rate} Hz, "
                    f"n_fft {config.n_fft}, hop {config.hop}, {config.n_bins} bins")
        else:
            x = torch.zeros(1, config.frames, 3, config.height, config.width)
            what = f"input {config.frames}x3x{config.height}x{config.width}"
        stages = model.forward_stages(x)
    from models.summary import summary

    return summary(f"{type(model).__name__} widths={config.widths} fc={config.fc_width} classes={config.n_classes} "
                   f"{what}", model, stages, kinds=True)
