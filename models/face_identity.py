"""The face-identity network of X2Face's training stage II (thesis ch. 3 §3.2): VGG-11, configuration A.

The thesis: "The pre-trained network used for these losses is the 11-layer
VGG network (configuration A) [Simonyan and Zisserman] trained on the
VGG-Face Dataset"; its activations give the *identity* (content) losses, L1
distances between the activations of two images at chosen conv layers
(:func:`content_l1`).  The weights are not public; a user brings their own
state dict (read and checked by :func:`tasks.training.x2face.load_identity_weights`).

Layers (:class:`FaceIdentityNet`, ``paper`` widths; every conv 3x3, stride 1, padding 1, then ReLU)
    ======= ===================== ==================== =================================
    name    state-dict keys       weight shape         then
    ======= ===================== ==================== =================================
    conv1   ``features.0.*``      [64, 3, 3, 3]        ReLU, max-pool 2x2
    conv2   ``features.3.*``      [128, 64, 3, 3]      ReLU, max-pool 2x2
    conv3   ``features.6.*``      [256, 128, 3, 3]     ReLU
    conv4   ``features.8.*``      [256, 256, 3, 3]     ReLU, max-pool 2x2
    conv5   ``features.11.*``     [512, 256, 3, 3]     ReLU
    conv6   ``features.13.*``     [512, 512, 3, 3]     ReLU, max-pool 2x2
    conv7   ``features.16.*``     [512, 512, 3, 3]     ReLU
    conv8   ``features.18.*``     [512, 512, 3, 3]     ReLU, max-pool 2x2
    fc6     ``classifier.0.*``    [4096, 512 * 7 * 7]  (after a 7x7 adaptive average pool) ReLU, dropout
    fc7     ``classifier.3.*``    [4096, 4096]         ReLU, dropout
    fc8     ``classifier.6.*``    [classes, 4096]      the identity logits (VGG-Face: 2622)
    ======= ===================== ==================== =================================

    Each ``*`` is ``weight`` and ``bias`` (biases ``[out]``).  This is
    torchvision's ``vgg11`` layout exactly (``features`` and ``classifier``
    Sequentials, the same indices), so a torchvision-format VGG-11 state dict
    loads as it is; :data:`CAFFE_NAMES` maps the Caffe / MatConvNet names
    VGG-Face conversions use (``conv1_1`` .. ``conv5_2``, ``fc6`` .. ``fc8``)
    onto these keys.  The classifier is optional (``classes=None``: no
    ``classifier.*`` keys): the identity losses read conv layers only.

    The thesis numbers the convs 1..8 in order ("Conv2-5 and Conv7",
    "Conv6-7"); :data:`CONV_LAYERS` are those names.  ``small`` quarters the
    widths (16, 32, 64, 64, 128, 128, 128, 128) for CPU tests.

Chosen here (the thesis is silent)
    * An activation is a conv layer's output after its ReLU (as content
      losses in the style of Gatys et al. read VGG's), before any pool.
    * Input: RGB in [0, 1], multiplied by 255 and less VGG-Face's mean image
      (RGB 129.186, 104.762, 93.594), the convention of the released VGG-Face
      models; :class:`FaceIdentityConfig` takes another ``mean``/``std``/``scale``
      (ImageNet's for a torchvision-trained network).  The normalisation
      constants are non-persistent buffers: not in the state dict.
    * Frames go in at their own size (256 x 256, or 64 x 64 for ``small``), not
      resized to VGG's 224: conv activations exist at any size, and the
      classifier's adaptive pool takes any map of at least 1 x 1.
    * ReLUs are not in-place, so the collected activations stay intact.

This module imports only torch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "conv7", "conv8")
# Index of each conv in ``features`` (torchvision's vgg11); its ReLU is the next index.
CONV_INDEX = {"conv1": 0, "conv2": 3, "conv3": 6, "conv4": 8, "conv5": 11, "conv6": 13, "conv7": 16, "conv8": 18}
POOL_AFTER = frozenset({"conv1", "conv2", "conv4", "conv6", "conv8"})  # a 2x2 max-pool follows these
FC_INDEX = {"fc6": 0, "fc7": 3, "fc8": 6}  # index of each Linear in ``classifier``
# VGG-Face conversions' names (Caffe / MatConvNet) -> this network's state-dict prefixes.
CAFFE_NAMES = {"conv1_1": "features.0", "conv2_1": "features.3", "conv3_1": "features.6", "conv3_2": "features.8",
               "conv4_1": "features.11", "conv4_2": "features.13", "conv5_1": "features.16",
               "conv5_2": "features.18", "fc6": "classifier.0", "fc7": "classifier.3", "fc8": "classifier.6"}
VGG_FACE_MEAN = (129.186279296875, 104.76238250427246, 93.59396362304688)  # RGB, 0..255
VGG_FACE_CLASSES = 2622

_WIDTHS = {"paper": (64, 128, 256, 256, 512, 512, 512, 512), "small": (16, 32, 64, 64, 128, 128, 128, 128)}
_FC = {"paper": 4096, "small": 256}


@dataclass(frozen=True)
class FaceIdentityConfig:
    """Conv widths (8), the classifier (``classes`` None: none), its width and pool, the input normalisation."""

    widths: tuple[int, ...] = _WIDTHS["paper"]
    classes: int | None = VGG_FACE_CLASSES
    fc_dim: int = 4096
    pool_size: int = 7
    scale: float = 255.0
    mean: tuple[float, float, float] = VGG_FACE_MEAN
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self):
        if len(self.widths) != len(CONV_LAYERS) or not all(isinstance(w, int) and w > 0 for w in self.widths):
            raise ValueError(f"widths must be {len(CONV_LAYERS)} positive ints, not {self.widths!r}")
        for name in ("fc_dim", "pool_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        if self.classes is not None and (not isinstance(self.classes, int) or self.classes < 1):
            raise ValueError(f"classes must be a positive int or None, not {self.classes!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values (std > 0), not {self.mean!r} and {self.std!r}")

    @classmethod
    def named(cls, name: str, classes: int | None = VGG_FACE_CLASSES) -> FaceIdentityConfig:
        """``"paper"``: VGG-11's widths and 4096-d fc layers; ``"small"``: a quarter of the widths, 256-d fc."""
        if name not in _WIDTHS:
            raise ValueError(f"unknown config {name!r}: use 'paper' or 'small'")
        return cls(widths=_WIDTHS[name], classes=classes, fc_dim=_FC[name])


class FaceIdentityNet(nn.Module):
    """VGG-11 (configuration A) in torchvision's layout; see the module table for its state-dict keys."""

    def __init__(self, config: FaceIdentityConfig | None = None):
        super().__init__()
        config = FaceIdentityConfig() if config is None else config
        self.config = config
        layers: list[nn.Module] = []
        channels = 3
        for name, width in zip(CONV_LAYERS, config.widths):
            layers += [nn.Conv2d(channels, width, 3, stride=1, padding=1), nn.ReLU(inplace=False)]
            if name in POOL_AFTER:
                layers.append(nn.MaxPool2d(2, 2))
            channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = None
        if config.classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d(config.pool_size)
            self.classifier = nn.Sequential(
                nn.Linear(channels * config.pool_size ** 2, config.fc_dim), nn.ReLU(inplace=False), nn.Dropout(),
                nn.Linear(config.fc_dim, config.fc_dim), nn.ReLU(inplace=False), nn.Dropout(),
                nn.Linear(config.fc_dim, config.classes))
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    def normalise(self, frames: torch.Tensor) -> torch.Tensor:
        """RGB ``[B, 3, H, W]`` in [0, 1] -> the network's input (``frames * scale - mean) / std``)."""
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"expected RGB frames [B, 3, H, W], got {list(frames.shape)}")
        return (frames * self.config.scale - self.mean.to(frames.dtype)) / self.std.to(frames.dtype)

    def activations(self, frames: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """The post-ReLU activations of ``layers`` (names of :data:`CONV_LAYERS`) for RGB frames in [0, 1]."""
        unknown = [name for name in layers if name not in CONV_INDEX]
        if unknown or not layers:
            raise ValueError(f"layers must be some of {CONV_LAYERS}, not {list(layers)!r}")
        wanted = {CONV_INDEX[name] + 1: name for name in layers}  # the ReLU after each conv
        last = max(wanted)
        x = self.normalise(frames)
        out: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                out[wanted[i]] = x
            if i == last:
                break
        return OrderedDict((name, out[name]) for name in layers)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Identity logits ``[B, classes]`` (a network built with a classifier)."""
        if self.classifier is None:
            raise ValueError("this FaceIdentityNet has no classifier (classes=None): use activations()")
        x = self.features(self.normalise(frames))
        return self.classifier(torch.flatten(self.avgpool(x), 1))


def identity_activations(net: FaceIdentityNet, frames: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """``net``'s post-ReLU activations of ``layers`` for RGB frames ``[B, 3, H, W]`` in [0, 1]."""
    return net.activations(frames, layers)


def content_l1(net: FaceIdentityNet, generated: torch.Tensor, target: torch.Tensor,
               layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Per layer, the mean absolute difference of the activations of ``generated`` and ``target`` (a scalar each).

    The target's activations are computed without a graph (it is the
    reference); gradients flow into ``generated`` through ``net`` (keep ``net``
    frozen: ``requires_grad_(False)``).
    """
    if generated.shape != target.shape:
        raise ValueError(f"generated {list(generated.shape)} and target {list(target.shape)} must match")
    with torch.no_grad():
        reference = net.activations(target, layers)
    mine = net.activations(generated, layers)
    return OrderedDict((name, (mine[name] - reference[name]).abs().mean()) for name in layers)
