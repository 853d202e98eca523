"""Visual piano onset model of Koepke's thesis ch. 6 ("Sight to Sound", Fig. 1), in PyTorch.

Input: ``k = 5`` consecutive grayscale frames of the registered keyboard crop,
``[B, 5, 145, 800]`` float.  Output: 88 logits, one per piano key (MIDI 21-108),
for "an onset within +-1 frame of the middle frame".  The network is a
ResNet18 (torchvision's ``BasicBlock`` stages, torchvision's layer names).

Variants (:class:`PianoOnsets`, ``variant=``)
    ``"resnet"``       the baseline: ResNet18 whose ``conv1`` takes the 5 frames
                       as 5 input channels.  No aggregation, no slope.
    ``"aggregation"``  *aggregation module*: every frame goes on its own
                       (shared weights) through the first ResNet18 block
                       (``conv1`` 7x7/2 on 1 channel, ``bn1``, ``relu``; before
                       the max-pool), giving ``64 x 73 x 400`` per frame; the 5
                       outputs are stacked to ``[B, 64, 5, 73, 400]`` and a
                       ``5x1x1`` 3D convolution (:class:`AggregationModule`)
                       gives ``[B, 64, 73, 400]``; then the rest of ResNet18
                       (maxpool, layer1..layer4, avgpool, fc -> 88).
    ``"slope"``        aggregation plus the *slope module* (:class:`SlopeModule`):
                       a constant vector ``x_key`` of 88 values linearly spaced
                       in [0, 1] goes through two 1D convolutions (size 3,
                       padding 1), is cloned over space to ``64 x 10 x 50``,
                       concatenated to layer3's ``256 x 10 x 50`` output and
                       brought back to 256 channels by a 3x3 convolution
                       (padding 1) before layer4.

Choices the thesis leaves open
    * Aggregation is *depthwise* (``groups=channels``): each channel gets its own
      5 temporal weights, no bias, initialised to 1/5 (a plain average), which is
      what "a channel-wise temporal weighted average" says.
    * Slope 1D convolutions: 1 -> ``width // 2`` -> ``width`` channels (1 -> 32 -> 64
      at paper size), ReLU between them, no activation after the second.
    * Length 88 -> layer3's width (50 for a 145x800 input): ``F.interpolate``
      linear with ``align_corners=False`` (key cells mapped onto feature
      columns), then repeated over layer3's height.  Any input size works: the
      slope features are interpolated to whatever width layer3 has.
    * The 3x3 fusion convolution (``4*width + width -> 4*width``, no bias) is
      followed by BatchNorm and ReLU, as every ResNet convolution that feeds a
      block is; it is part of :class:`SlopeModule`.  It starts as the identity
      on layer3's channels (``nn.init.dirac_``) with zero weights on the slope
      channels, so at step 0 the slope variant computes what the aggregation
      variant does and the slope features are mixed in as they are learnt.  A
      Kaiming-random fusion conv is an extra plain (non-residual) layer in the
      middle of the network; with it the slope variant lagged the aggregation
      variant by 0.15 validation F1 at 2400 steps (``small``, 36-video sample).
    * Balanced loss (:func:`balanced_bce`): positives and negatives each carry
      half of the batch's weight; a batch with one class only gives that class
      all the weight.
    * ``x_key`` is a non-persistent buffer (rebuilt by the constructor, not in
      state dicts).  Initialising from RGB weights, ``conv1``'s kernel is the
      RGB mean repeated per input channel, not rescaled (``bn1`` follows).

Config (:class:`PianoOnsetsConfig`)
    ``named("paper")``: ResNet18 widths 64-128-256-512, input 145 x 800.
    ``named("small")``: base width 16 (stages 16-32-64-128, slope 1 -> 8 -> 16,
    fusion 80 -> 64, fc 128 -> 88) and the input downscaled to 48 x 264 (the
    crop's aspect ratio), so layer3 is 3 x 17 and a model trains on a CPU.

:func:`load_torchvision_init` copies a torchvision-format resnet18 state dict
(:func:`read_state_dict`, ``weights_only=True``) into a paper-size model.
:func:`describe` lists the submodules, parameter counts and stage shapes.

This module imports only torch and torchvision.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock

MIN_MIDI, MAX_MIDI = 21, 108
N_KEYS = MAX_MIDI - MIN_MIDI + 1  # 88
VARIANTS = ("resnet", "aggregation", "slope")


# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class PianoOnsetsConfig:
    """Variant and sizes: ``width`` is ResNet18's base width (64 in the thesis); input ``frames x height x crop_width``."""

    variant: str = "slope"
    width: int = 64
    frames: int = 5
    height: int = 145
    crop_width: int = 800

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {self.variant!r}")
        for name in ("width", "frames", "height", "crop_width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        if self.width < 2:
            raise ValueError(f"width must be at least 2, not {self.width}")

    @classmethod
    def named(cls, name: str, variant: str = "slope") -> PianoOnsetsConfig:
        """``"paper"``: the thesis sizes; ``"small"``: base width 16 and input 48 x 264 (see the module docstring)."""
        if name == "paper":
            return cls(variant=variant, width=64, frames=5, height=145, crop_width=800)
        if name == "small":
            return cls(variant=variant, width=16, frames=5, height=48, crop_width=264)
        raise ValueError(f"unknown config {name!r}: use 'paper' or 'small'")


# ---------------------------------------------------------------- modules


class AggregationModule(nn.Conv3d):
    """The ``frames x 1 x 1`` 3D convolution: ``[B, C, T, h, w] -> [B, C, h, w]``."""

    def __init__(self, channels: int, frames: int = 5):
        # Depthwise (groups=channels): "a channel-wise temporal weighted average" = per-channel weights over time.
        super().__init__(channels, channels, kernel_size=(frames, 1, 1), groups=channels, bias=False)
        with torch.no_grad():
            self.weight.fill_(1.0 / frames)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).squeeze(2)


class SlopeModule(nn.Module):
    """``x_key`` -> two 1D convs -> cloned over layer3's grid, concatenated to it, 3x3 conv back to ``channels``."""

    def __init__(self, channels: int = 256, slope_channels: int = 64, hidden: int = 32, keys: int = N_KEYS):
        super().__init__()
        self.register_buffer("x_key", torch.linspace(0.0, 1.0, keys).reshape(1, 1, keys), persistent=False)
        self.conv1 = nn.Conv1d(1, hidden, kernel_size=3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv1d(hidden, slope_channels, kernel_size=3, padding=1)
        self.fuse = nn.Conv2d(channels + slope_channels, channels, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.reset_fusion()

    def reset_fusion(self) -> None:
        """Fusion conv = identity on the features' channels, zero on the slope channels (see the module notes)."""
        channels = self.fuse.out_channels
        with torch.no_grad():
            self.fuse.weight.zero_()
            nn.init.dirac_(self.fuse.weight[:, :channels])

    def slope_features(self, height: int, width: int, batch: int) -> torch.Tensor:
        """``[batch, slope_channels, height, width]``: the convolved slope, resized to ``width``, same on every row."""
        s = self.conv2(self.relu1(self.conv1(self.x_key)))  # [1, S, 88]
        s = F.interpolate(s, size=width, mode="linear", align_corners=False)  # [1, S, width]
        return s.unsqueeze(2).expand(batch, -1, height, -1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b, _, h, w = features.shape
        x = torch.cat([features, self.slope_features(h, w, b)], dim=1)
        return self.relu(self.bn(self.fuse(x)))


def resnet_stage(inplanes: int, planes: int, stride: int) -> nn.Sequential:
    """Two ``BasicBlock``s as torchvision's ``ResNet._make_layer`` builds them (names ``0``, ``1``, ``downsample.0/1``)."""
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False),
                                   nn.BatchNorm2d(planes))
    return nn.Sequential(BasicBlock(inplanes, planes, stride, downsample), BasicBlock(planes, planes))


class PianoOnsets(nn.Module):
    """ResNet18 onset model: ``[B, frames, H, W]`` grayscale frames -> ``[B, 88]`` onset logits."""

    def __init__(self, config: PianoOnsetsConfig | None = None, variant: str | None = None):
        super().__init__()
        if config is None:
            config = PianoOnsetsConfig() if variant is None else PianoOnsetsConfig(variant=variant)
        elif variant is not None and variant != config.variant:
            raise ValueError(f"variant {variant!r} differs from the config's {config.variant!r}")
        self.config = config
        self.variant = config.variant
        w, t = config.width, config.frames
        in_channels = t if self.variant == "resnet" else 1
        self.conv1 = nn.Conv2d(in_channels, w, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.aggregation = AggregationModule(w, t) if self.variant != "resnet" else None
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = resnet_stage(w, w, 1)
        self.layer2 = resnet_stage(w, 2 * w, 2)
        self.layer3 = resnet_stage(2 * w, 4 * w, 2)
        self.slope = SlopeModule(4 * w, w, max(1, w // 2)) if self.variant == "slope" else None
        self.layer4 = resnet_stage(4 * w, 8 * w, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * w, N_KEYS)
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's ResNet initialisation (Kaiming normal, fan-out, for 2D convs; BN weight 1, bias 0); slope fusion as identity."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.slope is not None:
            self.slope.reset_fusion()

    def forward_stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every stage's output, in order: ``stem`` (per frame ``[B, T, C, h, w]`` when aggregating), ..., ``fc``."""
        c = self.config
        if x.dim() != 4 or x.shape[1] != c.frames:
            raise ValueError(f"expected input [B, {c.frames}, H, W], got {list(x.shape)}")
        out: dict[str, torch.Tensor] = {}
        b, t, h, w = x.shape
        if self.aggregation is None:
            x = self.relu(self.bn1(self.conv1(x)))
            out["stem"] = x
        else:
            x = self.relu(self.bn1(self.conv1(x.reshape(b * t, 1, h, w))))
            x = x.reshape(b, t, *x.shape[1:])
            out["stem"] = x
            x = self.aggregation(x.transpose(1, 2))
            out["aggregation"] = x
        x = self.maxpool(x)
        out["maxpool"] = x
        for name in ("layer1", "layer2", "layer3"):
            x = getattr(self, name)(x)
            out[name] = x
        if self.slope is not None:
            x = self.slope(x)
            out["slope"] = x
        x = self.layer4(x)
        out["layer4"] = x
        x = torch.flatten(self.avgpool(x), 1)
        out["avgpool"] = x
        out["fc"] = self.fc(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)["fc"]


# ---------------------------------------------------------------- loss


def balanced_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Class-balanced BCE over the batch: onsets and non-onsets each carry half the weight (all of it if alone)."""
    if logits.shape != targets.shape:
        raise ValueError(f"logits {list(logits.shape)} and targets {list(targets.shape)} differ in shape")
    targets = targets.to(logits.dtype)
    positive = targets > 0.5
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        weight = torch.full_like(logits, 1.0 / positive.numel())
    else:
        weight = torch.where(positive, 0.5 / n_pos, 0.5 / n_neg).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, targets, weight=weight, reduction="sum")


# ---------------------------------------------------------------- torchvision initialisation


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A ``{name: tensor}`` dict from ``torch.load(path, weights_only=True)``; ValueError (one line) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights_only errors all mean "not a state dict we read"
        raise ValueError(f"{path}: not a torch weights file ({type(exc).__name__})") from None
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a non-empty dict of tensors")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: not a dict of tensors ({len(bad)} entries are not name -> tensor)")
    return dict(obj)


def _is_rgb_kernel_for(value: torch.Tensor, target: torch.Tensor) -> bool:
    """``value`` is ``[C, 3, k, k]`` and ``target`` is ``[C, n, k, k]`` with ``n != 3``."""
    return (value.dim() == 4 and target.dim() == 4 and value.shape[1] == 3 and target.shape[1] != 3
            and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:])


def load_torchvision_init(model: PianoOnsets, state_dict: Mapping[str, torch.Tensor] | str | os.PathLike
                          ) -> tuple[list[str], list[str]]:
    """Copy every tensor of a torchvision resnet18 state dict whose name and shape fit; return ``(loaded, skipped)``.

    ``conv1.weight`` (``[64, 3, 7, 7]``) fits a 1- or 5-channel ``conv1``: its
    kernel is averaged over the 3 RGB channels and repeated for each input
    channel.  ``fc`` (1000 classes) never fits.  ValueError if nothing fits.
    """
    if not isinstance(state_dict, Mapping):
        state_dict = read_state_dict(state_dict)
    own = model.state_dict()
    plan: dict[str, torch.Tensor] = {}
    skipped = []
    for key, value in state_dict.items():
        target = own.get(key)
        if not isinstance(value, torch.Tensor) or target is None:
            skipped.append(key)
            continue
        if key == "conv1.weight" and _is_rgb_kernel_for(value, target):
            value = value.mean(dim=1, keepdim=True).expand(-1, target.shape[1], -1, -1)
        if value.shape == target.shape:
            plan[key] = value
        else:
            skipped.append(key)
    # BatchNorm's scalar counters fit any width; a state dict that fits only those fits nothing.
    if not any(not key.endswith("num_batches_tracked") for key in plan):
        raise ValueError(f"no tensor of the state dict fits a PianoOnsets model of width {model.config.width}")
    with torch.no_grad():
        for key, value in plan.items():
            own[key].copy_(value.to(own[key].dtype))
    loaded = list(plan)
    return loaded, skipped


# ---------------------------------------------------------------- description


def describe(config: PianoOnsetsConfig) -> str:
    """Each top-level submodule with its parameters, the total, and every stage's output shape (batch 1).

    The model and the dummy forward live on the ``meta`` device: nothing is
    allocated or computed, whatever the sizes.
    """
    with torch.device("meta"):
        model = PianoOnsets(config).eval()
        stages = model.forward_stages(torch.zeros(1, config.frames, config.height, config.crop_width))
    from models.summary import summary

    return summary(f"PianoOnsets variant={config.variant} width={config.width} "
                   f"input {config.frames}x{config.height}x{config.crop_width}", model, stages)
