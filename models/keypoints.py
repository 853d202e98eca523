"""Jakab et al.'s keypoint bottleneck (NeurIPS 2018, "Unsupervised learning of object landmarks through
conditional image generation"), in PyTorch.

A *keypoint network* ``Phi`` maps the target frame ``x'`` to ``K`` heatmaps;
a spatial softmax turns each into one point ``u_k`` (its expected position),
and each point is drawn again as a Gaussian of fixed width on the heatmap
grid.  Those ``K`` maps are all the decoder learns about ``x'``: a bottleneck
that only the positions of things pass.  An *appearance encoder* maps the
source frame ``x`` (same face, another frame) to a feature map; the
*decoder* ``Psi`` renders the target from both, stacked along the channels.
Trained to reconstruct ``x'``, the points have to follow what moves between
frames: the face's parts (paper §3).

The layers (paper §4.1; the CVPR 2020 supplementary's Fig. 8 and 9 for what §4.1 leaves out)
    * **Keypoint network** (:class:`Encoder` then a 1x1 conv to ``K``
      channels): blocks of two 3x3 convs (the first conv of all 7x7), each
      conv followed by BatchNorm and ReLU (the 2020 supplementary's; the 2018
      text names no normalisation).  The first block keeps the input's size
      and has 32 channels; every later block halves the size with its first
      conv (stride 2) and doubles the channels, down to 16 x 16: at the
      paper's 128 x 128 input, blocks of 32, 64, 128 and 256 channels at
      128, 64, 32 and 16 pixels.  The final 1x1 conv (no BN, no ReLU) gives
      the ``K`` heatmaps' logits at 16 x 16.
    * **Points** (:func:`heatmap_points`, paper eq. (1) in its separable
      form): the logits summed over the rows give a 1-D softmax over the
      columns, and the expected column is ``x``; the same over the columns
      gives ``y``.  Coordinates run over ``[-1, 1]``: -1 and +1 are the
      centres of the first and last cell (the 2020 supplementary: "spatial
      coordinates are normalised to the [-1, 1] range").
    * **Redrawn maps** (:func:`gaussian_maps`, paper eq. (2)):
      ``exp(-|u - u_k|^2 / (2 sigma^2))`` on the same 16 x 16 grid,
      ``sigma = 0.1`` in those units (paper §4.1; a cell is ``2 / 15``, so
      the Gaussian's standard deviation is about 0.75 of a cell).
    * **Appearance encoder**: the keypoint network without its final 1x1
      conv ("exactly the same architecture ... except for the final 1x1
      convolutional layer"), so 256 channels at 16 x 16.
    * **Decoder** (:class:`Decoder`): the appearance map and the ``K``
      Gaussian maps stacked (256 + K channels at 16 x 16), then blocks of two
      3x3 convs with BN and ReLU: the first block at 16 x 16 with 256
      channels, each later one bilinearly upsampled x2 first with half the
      channels (at least 32), until the input's size: 256, 128, 64, 32
      channels at 16, 32, 64, 128 pixels.  A final 3x3 conv gives RGB "with
      no non-linearity".
    * **Initialisation**: conv weights from N(0, 0.01^2), biases zero
      ("random Gaussian noise (sigma = 0.01)"); BatchNorm as PyTorch's.

``small`` (for this repository's 2-core CPU): 64 x 64 frames and 16 channels
in the first block, so three encoder blocks (16, 32, 64 channels at 64, 32,
16 pixels) and three decoder blocks (64, 32, 16); the heatmap grid stays
16 x 16 and ``sigma`` stays 0.1.

The loss is the training module's (:mod:`tasks.training.keypoints`): the
paper's perceptual loss on a VGG-19 (:class:`PerceptualLoss`, whose weights
must come from the user) or a pixel loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

HEATMAP_SIZE = 16  # the heatmap grid (paper §4.1: "The spatial size of the final output ... is set to 16x16")
SIGMA = 0.1  # the redrawn Gaussians' width, in [-1, 1] units (paper §4.1)
INIT_STD = 0.01  # conv weights' initial standard deviation (paper §4.1)
_INPUT = {"paper": 128, "small": 64}
_BASE = {"paper": 32, "small": 16}


@dataclass(frozen=True)
class KeypointConfig:
    """Sizes of one keypoint-bottleneck network; ``named("paper" | "small", keypoints)`` gives the two configs."""

    image_size: int = 128
    keypoints: int = 10
    base: int = 32  # channels of the first block (doubled per block)
    heatmap_size: int = HEATMAP_SIZE
    sigma: float = SIGMA

    def __post_init__(self):
        blocks = math.log2(self.image_size / self.heatmap_size)
        if self.image_size < self.heatmap_size or blocks != int(blocks):
            raise ValueError(f"image_size {self.image_size} must be heatmap_size {self.heatmap_size} times a power "
                             "of two")
        if self.keypoints < 1:
            raise ValueError(f"keypoints must be at least 1, not {self.keypoints}")

    @property
    def blocks(self) -> int:
        """Encoder (and decoder) blocks: one at the input's size, one more per halving down to the heatmap grid."""
        return int(math.log2(self.image_size // self.heatmap_size)) + 1

    @property
    def widths(self) -> tuple[int, ...]:
        """The encoder blocks' channels (the decoder's, reversed)."""
        return tuple(self.base * 2 ** i for i in range(self.blocks))

    @classmethod
    def named(cls, name: str, keypoints: int = 10) -> KeypointConfig:
        """``"paper"`` (128 x 128, first block 32 channels) or ``"small"`` (64 x 64, 16 channels), ``K`` keypoints."""
        if name not in _INPUT:
            raise ValueError(f"unknown config {name!r}: use 'paper' or 'small'")
        return cls(image_size=_INPUT[name], keypoints=keypoints, base=_BASE[name])


def _conv(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Encoder(nn.Sequential):
    """Blocks of two convs (7x7 first, then 3x3), each with BN and ReLU; every block but the first halves the size."""

    def __init__(self, config: KeypointConfig):
        layers, cin = [], 3
        for i, width in enumerate(config.widths):
            layers += [_conv(cin, width, 7 if i == 0 else 3, 1 if i == 0 else 2), _conv(width, width)]
            cin = width
        super().__init__(*layers)


class Decoder(nn.Module):
    """Blocks of two 3x3 convs with BN and ReLU, each after the first upsampled x2 first; a final 3x3 conv to RGB."""

    def __init__(self, config: KeypointConfig):
        super().__init__()
        widths = config.widths[::-1]
        blocks, cin = [], widths[0] + config.keypoints
        for width in widths:
            blocks.append(nn.Sequential(_conv(cin, width), _conv(width, width)))
            cin = width
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.Conv2d(cin, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            if i:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = block(x)
        return self.to_rgb(x)


def heatmap_points(logits: torch.Tensor) -> torch.Tensor:
    """``[B, K, H, W]`` heatmap logits -> ``[B, K, 2]`` points ``(x, y)`` in ``[-1, 1]`` (paper eq. (1), separable).

    ``x`` is the expectation of ``linspace(-1, 1, W)`` under the softmax of
    the logits summed over the rows; ``y`` likewise over the columns.
    """
    h, w = logits.shape[-2:]
    xs = torch.linspace(-1.0, 1.0, w, device=logits.device, dtype=logits.dtype)
    ys = torch.linspace(-1.0, 1.0, h, device=logits.device, dtype=logits.dtype)
    px = torch.softmax(logits.sum(dim=-2), dim=-1)  # [B, K, W]
    py = torch.softmax(logits.sum(dim=-1), dim=-1)  # [B, K, H]
    return torch.stack(((px * xs).sum(-1), (py * ys).sum(-1)), dim=-1)


def gaussian_maps(points: torch.Tensor, size: int, sigma: float = SIGMA) -> torch.Tensor:
    """``[B, K, 2]`` points in ``[-1, 1]`` -> ``[B, K, size, size]`` maps ``exp(-|u - u_k|^2 / (2 sigma^2))`` (eq. (2))."""
    grid = torch.linspace(-1.0, 1.0, size, device=points.device, dtype=points.dtype)
    dx = (grid.view(1, 1, 1, size) - points[..., 0, None, None]) ** 2  # [B, K, 1, W]
    dy = (grid.view(1, 1, size, 1) - points[..., 1, None, None]) ** 2  # [B, K, H, 1]
    return torch.exp(-(dx + dy) / (2 * sigma ** 2))


class KeypointOutput(NamedTuple):
    generated: torch.Tensor  # [B, 3, S, S] the rendered target
    points: torch.Tensor  # [B, K, 2] the target's keypoints (x, y) in [-1, 1]
    maps: torch.Tensor  # [B, K, 16, 16] their Gaussian maps (the bottleneck)


class KeypointBottleneck(nn.Module):
    """Keypoint network, appearance encoder and decoder (see the module docstring)."""

    def __init__(self, config: KeypointConfig):
        super().__init__()
        self.config = config
        self.keypoint_encoder = Encoder(config)
        self.to_heatmaps = nn.Conv2d(config.widths[-1], config.keypoints, 1)
        self.appearance = Encoder(config)
        self.decoder = Decoder(config)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, INIT_STD)
                nn.init.zeros_(m.bias)

    def heatmaps(self, target: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` -> ``[B, K, 16, 16]`` heatmap logits."""
        return self.to_heatmaps(self.keypoint_encoder(target))

    def keypoints(self, target: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` frames -> ``[B, K, 2]`` keypoints ``(x, y)`` in ``[-1, 1]`` (of the whole frame)."""
        return heatmap_points(self.heatmaps(target))

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> KeypointOutput:
        points = self.keypoints(target)
        maps = gaussian_maps(points, self.config.heatmap_size, self.config.sigma)
        generated = self.decoder(torch.cat((self.appearance(source), maps), dim=1))
        return KeypointOutput(generated, points, maps)


# ---------------------------------------------------------------- the perceptual loss (paper §3.2)

# VGG-19's conv layers whose (ReLU'd) outputs the loss compares, with "input": paper §3.2.
PERCEPTUAL_LAYERS = ("input", "conv1_2", "conv2_2", "conv3_2", "conv4_2", "conv5_2")
# Their indices in torchvision's vgg19().features (conv_i_j is a Conv2d; the ReLU after it is index + 1).
VGG19_CONV = {"conv1_2": 2, "conv2_2": 7, "conv3_2": 12, "conv4_2": 21, "conv5_2": 30}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PerceptualLoss(nn.Module):
    """``sum_l alpha_l |Gamma_l(x) - Gamma_l(x_hat)|_2^2`` on a frozen VGG-19 (paper §3.2).

    ``Gamma_l`` is the input itself or the ReLU output of VGG-19's
    ``conv1_2`` .. ``conv5_2`` (:data:`PERCEPTUAL_LAYERS`); images in
    ``[0, 1]`` are normalised with ImageNet's mean and std first (the
    normalisation torchvision's VGG weights expect).  Each layer's term is
    the mean squared difference over its elements.  The ``alpha_l`` are
    "updated online during training to normalise the expected contribution
    from each layer" (after Chen and Koltun): here ``alpha_l = 1 / m_l``,
    ``m_l`` an exponential moving average (``momentum``) of layer ``l``'s
    term in training batches, so every layer contributes about 1.  The
    averages are a buffer: they travel with a checkpoint.

    ``features``: torchvision's ``vgg19().features`` with the user's weights
    (:func:`vgg19_features`); nothing is downloaded.
    """

    def __init__(self, features: nn.Sequential, momentum: float = 0.01):
        super().__init__()
        last = max(VGG19_CONV.values()) + 2  # through conv5_2's ReLU
        self.features = features[:last].eval().requires_grad_(False)
        self.momentum = momentum
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.zeros(len(PERCEPTUAL_LAYERS)))  # m_l; 0: not seen yet
        self._taps = {VGG19_CONV[name] + 1: i for i, name in enumerate(PERCEPTUAL_LAYERS) if name != "input"}

    def train(self, mode: bool = True):
        super().train(mode)
        self.features.eval()  # the VGG stays in eval mode
        return self

    def layer_terms(self, generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``[L]``: the mean squared difference at each of :data:`PERCEPTUAL_LAYERS`."""
        a = (generated - self.mean) / self.std
        b = (target - self.mean) / self.std
        terms = [F.mse_loss(a, b)]
        for i, layer in enumerate(self.features):
            a, b = layer(a), layer(b)
            if i in self._taps:
                terms.append(F.mse_loss(a, b))
        return torch.stack(terms)

    def forward(self, generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        terms = self.layer_terms(generated, target)
        if self.training:
            with torch.no_grad():
                seen = self.scale > 0
                self.scale.copy_(torch.where(seen, (1 - self.momentum) * self.scale + self.momentum * terms.detach(),
                                             terms.detach()))
        return (terms / self.scale.clamp_min(1e-8)).sum()


def vgg19_features(state: dict) -> nn.Sequential:
    """torchvision's ``vgg19().features`` with the ``features.*`` tensors of ``state`` (a torchvision VGG-19
    state dict, or its ``features`` part); RuntimeError / KeyError if they do not fit."""
    from torchvision.models import vgg19

    features = vgg19(weights=None).features
    sub = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    features.load_state_dict(sub or state, strict=True)
    return features


def describe(config: KeypointConfig) -> str:
    """Each top-level submodule with its parameters, the total, and every stage's shape (batch 1, on ``meta``)."""
    s = config.image_size
    with torch.device("meta"):
        model = KeypointBottleneck(config).eval()
        frame = torch.zeros(1, 3, s, s)
        out = model(frame, frame)
        stages = {"heatmaps": model.heatmaps(frame), "points": out.points, "maps": out.maps,
                  "appearance": model.appearance(frame), "generated": out.generated}
    from models.summary import summary

    return summary(f"KeypointBottleneck K={config.keypoints} widths={config.widths} input 3x{s}x{s} "
                   f"heatmaps {config.heatmap_size}x{config.heatmap_size} sigma={config.sigma}", model, stages,
                   kinds=True)
