"""FAb-Net (Wiles, Koepke, Zisserman, BMVC 2018; Koepke's thesis ch. 4), in PyTorch.

A shared *encoder* ``f`` maps a face frame to a 256-d *attribute embedding*.
For a source frame ``s`` and a target frame ``t`` of the same face track, the
*sampler decoder* ``g`` maps the concatenated ``[v_s, v_t]`` (512-d) to a
2-channel flow field (an offset ``(dx, dy)`` per target pixel), and the
generated frame is the source bilinearly sampled there:
``s'(x, y) = s(x + dx, y + dy)`` (paper §3.1), trained with an L1 loss to ``t``.
With ``k`` source frames (paper §3.2) a *confidence decoder* (the sampler
decoder's architecture with a 1-channel output; shared over the sources, as
the sampler decoder is) predicts a map ``C_i`` per source, and the generated
frame is ``sum_i softmax_i(C)_i * g(v_si, v_t)(s_i)`` (softmax over the
sources, per pixel).  The embedding is what the linear probes read (paper §5.1).

Encoder (:class:`Encoder`; supplementary Fig. 1: pix2pix's encoder, no skips), ``paper``
    ======= ============ ============ =========================
    layer   channels     size         after the conv
    ======= ============ ============ =========================
    conv1   3 -> 32      256 -> 128   LeakyReLU 0.2
    conv2   32 -> 64     128 -> 64    BN, LeakyReLU 0.2
    conv3   64 -> 128    64 -> 32     BN, LeakyReLU 0.2
    conv4   128 -> 256   32 -> 16     BN, LeakyReLU 0.2
    conv5   256 -> 256   16 -> 8      BN, LeakyReLU 0.2
    conv6   256 -> 256   8 -> 4       BN, LeakyReLU 0.2
    conv7   256 -> 256   4 -> 2       BN, LeakyReLU 0.2
    conv8   256 -> 256   2 -> 1       nothing: the embedding
    ======= ============ ============ =========================

    Every conv is 4x4, stride 2, padding 1 (supplementary Fig. 1).  The last
    conv's ``256 x 1 x 1`` output, flattened, is the embedding ``[B, 256]``.
    ``small``: conv1..conv5 3 -> 16 -> 32 -> 64 -> 128 -> 128 (64 -> 2 pixels),
    conv6 128 -> 256 (2 -> 1, the embedding).

Sampler / confidence decoder (:class:`Decoder`; symmetric to the encoder), ``paper``
    ======= ============ ============ ==================================
    layer   channels     size         block
    ======= ============ ============ ==================================
    up1     512 -> 256   1 -> 2       ReLU, bilinear x2, conv, BN
    up2     256 -> 256   2 -> 4       ReLU, bilinear x2, conv, BN
    up3     256 -> 256   4 -> 8       ReLU, bilinear x2, conv, BN
    up4     256 -> 256   8 -> 16      ReLU, bilinear x2, conv, BN
    up5     256 -> 128   16 -> 32     ReLU, bilinear x2, conv, BN
    up6     128 -> 64    32 -> 64     ReLU, bilinear x2, conv, BN
    up7     64 -> 32     64 -> 128    ReLU, bilinear x2, conv, BN
    up8     32 -> 2 | 1  128 -> 256   ReLU, bilinear x2, conv, tanh
    ======= ============ ============ ==================================

    Every conv is 3x3, stride 1, padding 1.  The decoder's widths are the
    encoder's in reverse; the last conv gives 2 channels (flow: sampler
    decoder) or 1 (confidence decoder), then tanh (supplementary Fig. 1:
    "the final result ... is passed through a tanh layer").  ``small``:
    up1..up5 512 -> 128 -> 128 -> 64 -> 32 -> 16 (1 -> 32 pixels), up6
    16 -> 2 | 1 (32 -> 64) and tanh.

Flow units and the sampling-grid convention (:func:`warp`)
    A flow is ``[B, 2, H, W]``: channel 0 is ``dx`` (along the width, positive
    samples further right), channel 1 is ``dy`` (along the height, positive
    samples further down), in ``grid_sample``'s normalised coordinates under
    ``align_corners=True``: -1 and +1 are the *centres* of the first and last
    pixel, so one unit of ``dx`` is ``(W - 1) / 2`` pixels and one unit of
    ``dy`` is ``(H - 1) / 2`` pixels (:func:`flow_to_pixels`).  The sampling
    grid is :func:`identity_grid` (``linspace(-1, 1, W)`` x ``linspace(-1, 1, H)``,
    the pixel centres) plus the flow, so a zero flow reproduces the source
    pixel for pixel (up to float32 rounding of the grid: below 1e-5 at
    64 x 64 and 3e-5 at 256 x 256 for values in [0, 1]; the other convention
    is off by tenths).  tanh bounds each offset to (-1, 1) units, i.e. less
    than half the image.  This is the convention
    of the authors' code (a ``linspace(-1, 1)`` base grid, written for a
    PyTorch whose ``grid_sample`` behaved as ``align_corners=True``).  With
    today's default ``align_corners=False`` the same grid zooms the image out
    by ``W / (W - 1)`` about its centre and puts the corner samples half a
    pixel outside the image: a zero flow no longer gives the source back,
    which is how ports of these models broke.  ``align_corners=True`` is
    passed explicitly on every call here.

Chosen here (the papers are silent or loose)
    * Widths.  The supplementary gives 256 for the embedding and, through its
      half-capacity colourisation baseline ("16 channels in the first layer and
      128 channels in the embedding for each sub-network"), 32 for the first
      layer; the rest follow pix2pix's rule (double per layer, capped at 8x the
      first): 32, 64, 128, 256, 256, 256, 256, then the 256-d embedding.
    * Order inside an encoder layer: conv -> BN -> LeakyReLU (pix2pix's order;
      the supplementary's "each convolution is followed by a leaky ReLU and a
      batch-norm layer" names the same layers).  The first conv has no BN; the
      embedding conv has neither BN nor an activation (the probes of §5.1 add
      their own BN), and the decoder starts with ReLU on it (Fig. 1: "ReLU,
      bilinear upsampling, batch-norm").
    * Convs followed by BN have no bias; the others (conv1, the embedding
      conv, the decoders' last conv) have one.
    * Bilinear upsampling uses ``align_corners=False`` (it resamples features;
      it has no geometric meaning, unlike the warp).
    * Samples outside the source take the nearest edge pixel
      (``padding_mode="border"``), which is what the authors' clamp of the
      grid to [-1, 1] does.
    * The confidence decoder ends in tanh as the supplementary says, so
      ``C_i`` lies in (-1, 1) and one source can outweigh another by at most
      ``e^2 ~ 7.4`` at a pixel.
    * Initialisation: PyTorch's defaults, except the last conv of both
      decoders, which starts at zero (weights and bias).  At step 0 every flow
      is zero (the generated frame is the source) and the confidences are
      uniform (the mean of the sources); random final convs would start from
      a random warp of up to half the image.
    * Encoding: the target and all sources go through the encoder as one
      batch (in training mode BN's statistics are over all of them), and the
      ``k`` (source, target) pairs through each decoder as one batch.
    * Inputs are RGB in [0, 1], not normalised (the warp samples those values;
      the L1 losses of the papers are in these units).
    * With one source the confidence decoder is not run (the softmax over one
      source is 1), so a ``confidence=True`` model also trains single-source.

Curriculum (paper §4; :func:`curriculum_mask`, :data:`CURRICULUM_WINDOWS`)
    Rank the batch by per-sample loss (:func:`l1_loss`), back-propagate only
    the samples whose rank lies in a percentile window: 0-50 first, shifted by
    10 on each validation plateau, 4 times, ending at 40-90.  Rank ``r``
    (0 = lowest loss; ties by batch index) of ``N`` is selected when
    ``floor(low * N / 100) <= r < floor(high * N / 100)`` (16 of a batch of
    32 in each window); a window that would select nobody (a tiny batch)
    selects its first rank.

Config (:class:`FabNetConfig`)
    ``named("paper")``: input 256 x 256 (the VoxCeleb shards' crops), encoder
    widths 32, 64, 128, 256, 256, 256, 256, embedding 256, 8 levels.
    ``named("small")``: input 64 x 64, encoder widths 16, 32, 64, 128, 128
    (half the paper's per-layer widths, capped at 128 instead of 256), 6
    levels instead of 8 (two fewer 256-wide layers in the encoder and in each
    decoder), embedding still 256 (so the decoders still read 512).  Both:
    ``confidence=True`` builds the confidence decoder (the multi-source
    variant); ``named(name, confidence=False)`` is the single-source network.

:func:`describe` lists the submodules, parameter counts and stage output shapes.

This module imports only torch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.2
EMBEDDING_DIM = 256
CURRICULUM_WINDOWS = ((0, 50), (10, 60), (20, 70), (30, 80), (40, 90))

_WIDTHS = {"paper": (32, 64, 128, 256, 256, 256, 256), "small": (16, 32, 64, 128, 128)}
_INPUT = {"paper": 256, "small": 64}


# ---------------------------------------------------------------- config


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_widths(name: str, widths, length: int | None = None) -> None:
    if not isinstance(widths, tuple) or not widths or not all(map(_positive_int, widths)):
        raise ValueError(f"{name} must be a non-empty tuple of positive ints, not {widths!r}")
    if length is not None and len(widths) != length:
        raise ValueError(f"{name} must have {length} entries, not {len(widths)}")


def levels_for(image_size: int) -> int:
    """How many stride-2 convs take a square ``image_size`` input to 1 x 1 (``log2(image_size)``)."""
    if not _positive_int(image_size) or image_size < 4 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 4, not {image_size!r}")
    return image_size.bit_length() - 1


@dataclass(frozen=True)
class FabNetConfig:
    """Input size, encoder widths (all convs but the embedding conv), embedding size, multi-source or not."""

    image_size: int = _INPUT["paper"]
    widths: tuple[int, ...] = _WIDTHS["paper"]
    embedding_dim: int = EMBEDDING_DIM
    confidence: bool = True

    def __post_init__(self):
        levels = levels_for(self.image_size)
        _check_widths("widths", self.widths, levels - 1)
        if not _positive_int(self.embedding_dim):
            raise ValueError(f"embedding_dim must be a positive int, not {self.embedding_dim!r}")
        if not isinstance(self.confidence, bool):
            raise ValueError(f"confidence must be a bool, not {self.confidence!r}")

    @property
    def levels(self) -> int:
        """Encoder convs (= decoder blocks): 8 at 256 x 256, 6 at 64 x 64."""
        return levels_for(self.image_size)

    @classmethod
    def named(cls, name: str, confidence: bool = True) -> FabNetConfig:
        """``"paper"`` (256 x 256, widths 32..256) or ``"small"`` (64 x 64, widths 16..128); embedding 256."""
        if name not in _WIDTHS:
            raise ValueError(f"unknown config {name!r}: use 'paper' or 'small'")
        return cls(image_size=_INPUT[name], widths=_WIDTHS[name], confidence=confidence)


# ---------------------------------------------------------------- sampling


def identity_grid(height: int, width: int, *, device=None, dtype=None) -> torch.Tensor:
    """``[1, H, W, 2]`` grid of the pixel centres in ``align_corners=True`` units: ``[..., 0]`` x, ``[..., 1]`` y."""
    ys = torch.linspace(-1.0, 1.0, height, device=device, dtype=dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy), dim=-1).unsqueeze(0)


def flow_to_pixels(flow: torch.Tensor) -> torch.Tensor:
    """A ``[B, 2, H, W]`` flow in grid units -> pixels: ``dx * (W - 1) / 2``, ``dy * (H - 1) / 2``."""
    h, w = flow.shape[-2:]
    scale = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=flow.dtype, device=flow.device)
    return flow * scale.reshape(1, 2, 1, 1)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample ``image [B, C, H, W]`` at identity + ``flow [B, 2, H', W']`` -> ``[B, C, H', W']``.

    ``align_corners=True`` (see the module notes: a zero flow returns the
    image; one unit is ``(W - 1) / 2`` pixels); outside the image the nearest
    edge pixel (``padding_mode="border"``).
    """
    if image.dim() != 4 or flow.dim() != 4 or flow.shape[1] != 2 or flow.shape[0] != image.shape[0]:
        raise ValueError(f"expected image [B, C, H, W] and flow [B, 2, h, w], got {list(image.shape)} "
                         f"and {list(flow.shape)}")
    grid = identity_grid(flow.shape[2], flow.shape[3], device=flow.device, dtype=flow.dtype)
    grid = grid + flow.permute(0, 2, 3, 1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


# ---------------------------------------------------------------- blocks


class Down(nn.Sequential):
    """``conv`` 4x4 stride 2 pad 1 -> [``bn``] -> [``act`` LeakyReLU 0.2]; bias only without BN."""

    def __init__(self, in_channels: int, out_channels: int, norm: bool = True, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1, bias=not norm)
        if norm:
            self.bn = nn.BatchNorm2d(out_channels)
        if act:
            self.act = nn.LeakyReLU(LEAKY_SLOPE)


class Up(nn.Sequential):
    """``relu`` -> ``up`` (bilinear x2) -> ``conv`` 3x3 pad 1 -> ``bn``; the last block: -> ``tanh``, conv with bias."""

    def __init__(self, in_channels: int, out_channels: int, last: bool = False):
        super().__init__()
        self.relu = nn.ReLU()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=last)
        if last:
            self.tanh = nn.Tanh()
        else:
            self.bn = nn.BatchNorm2d(out_channels)

    def zero_(self) -> None:
        """Zero the conv (weights and bias): the block then outputs tanh(0) = 0 (last block) everywhere."""
        with torch.no_grad():
            self.conv.weight.zero_()
            if self.conv.bias is not None:
                self.conv.bias.zero_()


class Encoder(nn.Sequential):
    """Image ``[B, 3, S, S]`` -> ``[B, out_dim]``: ``conv1`` .. ``conv{len(widths)+1}`` (see the module table)."""

    def __init__(self, widths: Sequence[int], out_dim: int, in_channels: int = 3):
        layers = OrderedDict()
        chans = (in_channels, *widths)
        for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
            layers[f"conv{i + 1}"] = Down(cin, cout, norm=i > 0)
        layers[f"conv{len(widths) + 1}"] = Down(chans[-1], out_dim, norm=False, act=False)
        super().__init__(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if x.shape[-2:] != (1, 1):
            raise ValueError(f"the encoder reached {list(x.shape[-2:])}, not 1 x 1: wrong input size")
        return x.flatten(1)


class Decoder(nn.Sequential):
    """``[B, in_dim]`` -> ``[B, out_channels, S, S]`` in (-1, 1): ``up1`` .. ``up{len(widths)+1}``, widths reversed."""

    def __init__(self, in_dim: int, widths: Sequence[int], out_channels: int):
        layers = OrderedDict()
        chans = (in_dim, *reversed(tuple(widths)))
        for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
            layers[f"up{i + 1}"] = Up(cin, cout)
        layers[f"up{len(widths) + 1}"] = Up(chans[-1], out_channels, last=True)
        super().__init__(layers)

    @property
    def last(self) -> Up:
        return self[-1]

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return super().forward(v.reshape(v.shape[0], -1, 1, 1))


# ---------------------------------------------------------------- network


class FabNetOutput(NamedTuple):
    """``generated [B, 3, S, S]``; per source ``warped [B, k, 3, S, S]``, ``flows [B, k, 2, S, S]``,
    ``weights [B, k, 1, S, S]`` (softmax over the ``k`` sources, summing to 1) and ``confidences``
    (the maps ``C_i`` before the softmax, ``[B, k, 1, S, S]``; None when the confidence decoder did not run)."""

    generated: torch.Tensor
    warped: torch.Tensor
    flows: torch.Tensor
    weights: torch.Tensor
    confidences: torch.Tensor | None


def _as_sources(sources: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` (one source) or ``[B, k, 3, H, W]`` -> ``[B, k, 3, H, W]``."""
    if sources.dim() == 4:
        return sources.unsqueeze(1)
    if sources.dim() != 5:
        raise ValueError(f"expected sources [B, 3, H, W] or [B, k, 3, H, W], got {list(sources.shape)}")
    return sources


class FabNet(nn.Module):
    """FAb-Net: ``encoder`` (shared), ``sampler`` decoder, [``confidence`` decoder]; see the module notes."""

    def __init__(self, config: FabNetConfig | None = None):
        super().__init__()
        config = FabNetConfig.named("paper") if config is None else config
        self.config = config
        self.encoder = Encoder(config.widths, config.embedding_dim)
        self.sampler = Decoder(2 * config.embedding_dim, config.widths, 2)
        self.confidence = Decoder(2 * config.embedding_dim, config.widths, 1) if config.confidence else None
        self.reset_last_layers()

    def reset_last_layers(self) -> None:
        """Zero the decoders' last convs: zero flows (identity warps) and uniform confidences."""
        self.sampler.last.zero_()
        if self.confidence is not None:
            self.confidence.last.zero_()

    def _check_frames(self, x: torch.Tensor, what: str) -> None:
        s = self.config.image_size
        if x.dim() < 4 or tuple(x.shape[-3:]) != (3, s, s):
            raise ValueError(f"{what}: expected [..., 3, {s}, {s}], got {list(x.shape)}")

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """The attribute embedding ``f``: ``[B, 3, S, S]`` -> ``[B, embedding_dim]``."""
        self._check_frames(frames, "frames")
        return self.encoder(frames)

    def decode(self, v_source: torch.Tensor, v_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``g([v_s, v_t])``: ``(flow [B, 2, S, S], confidence [B, 1, S, S] or None without the decoder)``."""
        v = torch.cat((v_source, v_target), dim=1)
        return self.sampler(v), (self.confidence(v) if self.confidence is not None else None)

    def forward(self, sources: torch.Tensor, target: torch.Tensor) -> FabNetOutput:
        """``sources [B, 3, S, S]`` or ``[B, k, 3, S, S]``, ``target [B, 3, S, S]`` -> :class:`FabNetOutput`."""
        sources = _as_sources(sources)
        self._check_frames(sources, "sources")
        self._check_frames(target, "target")
        b, k = sources.shape[:2]
        if target.dim() != 4 or target.shape[0] != b:
            raise ValueError(f"expected target [{b}, 3, S, S], got {list(target.shape)}")
        if k > 1 and self.confidence is None:
            raise ValueError(f"{k} sources need the confidence decoder: build with confidence=True")
        flat_sources = sources.reshape(b * k, *sources.shape[2:])
        v = self.encoder(torch.cat((flat_sources, target), dim=0))
        v_sources, v_target = v[: b * k], v[b * k:]
        pairs = torch.cat((v_sources, v_target.repeat_interleave(k, dim=0)), dim=1)  # [B*k, 2*emb], source first
        flows = self.sampler(pairs)
        warped = warp(flat_sources, flows).reshape(b, k, *sources.shape[2:])
        flows = flows.reshape(b, k, *flows.shape[1:])
        if k == 1:
            weights = warped.new_ones(b, 1, 1, *warped.shape[-2:])
            confidences = None
        else:
            confidences = self.confidence(pairs).reshape(b, k, 1, *warped.shape[-2:])
            weights = torch.softmax(confidences, dim=1)
        generated = (weights * warped).sum(dim=1)
        return FabNetOutput(generated, warped, flows, weights, confidences)


# ---------------------------------------------------------------- loss and curriculum


def l1_loss(generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample L1: mean absolute difference over all but the batch dimension, ``[B]``."""
    if generated.shape != target.shape or generated.dim() < 2:
        raise ValueError(f"generated {list(generated.shape)} and target {list(target.shape)} must match "
                         f"and have a batch dimension")
    return (generated - target).abs().flatten(1).mean(dim=1)


def _percentile(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise ValueError(f"{name} must be a percentile in [0, 100], not {value!r}")
    return float(value)


def curriculum_mask(per_sample_losses: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Bool ``[N]``: the samples whose loss rank lies in the ``[low, high)`` percentile window.

    Rank 0 is the lowest loss (ties by batch index); rank ``r`` is selected
    when ``floor(low * N / 100) <= r < floor(high * N / 100)``.  ``low``/``high``
    are percentiles (0-100), e.g. ``(0, 50)``: the easier half.  A window that
    would select nobody selects its first rank (``min(floor(low * N / 100), N - 1)``).
    """
    low, high = _percentile(low, "low"), _percentile(high, "high")
    if low >= high:
        raise ValueError(f"need low < high, got [{low}, {high})")
    if per_sample_losses.dim() != 1 or per_sample_losses.numel() == 0:
        raise ValueError(f"expected per-sample losses [N], N >= 1, got {list(per_sample_losses.shape)}")
    n = per_sample_losses.numel()
    start = min(int(low * n // 100), n - 1)
    stop = max(int(high * n // 100), start + 1)
    order = torch.sort(per_sample_losses.detach(), stable=True).indices
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(n, device=order.device)
    return (ranks >= start) & (ranks < stop)


def curriculum_loss(per_sample_losses: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """The mean loss over :func:`curriculum_mask`'s samples (what is back-propagated)."""
    return per_sample_losses[curriculum_mask(per_sample_losses, low, high)].mean()


# ---------------------------------------------------------------- description


def describe(config: FabNetConfig, sources: int | None = None) -> str:
    """Each top-level submodule with its parameters, the total, and every stage's shape (batch 1).

    ``sources`` defaults to 3 with the confidence decoder, 1 without.  The
    model and the dummy forward live on the ``meta`` device: nothing is
    allocated or computed.
    """
    k = (3 if config.confidence else 1) if sources is None else sources
    s = config.image_size
    with torch.device("meta"):
        model = FabNet(config).eval()
        out = model(torch.zeros(1, k, 3, s, s), torch.zeros(1, 3, s, s))
        stages = {"embedding": model.embed(torch.zeros(1, 3, s, s)), "flows": out.flows, "weights": out.weights,
                  "warped": out.warped, "generated": out.generated}
        if out.confidences is not None:
            stages["confidences"] = out.confidences
    from models.summary import summary

    return summary(f"FabNet widths={config.widths} embedding={config.embedding_dim} input 3x{s}x{s} "
                   f"sources={k}", model, stages, kinds=True)
