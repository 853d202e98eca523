"""Class embeddings from video (Wiles, Koepke, Zisserman, BMVC workshops 2019; Koepke's thesis appendix A).

A frame goes through an encoder to one 256-d *embedding*.  The embeddings
of a source and a target frame of the same face track, concatenated, go
through a *match decoder* that says, for every target pixel, where in the
source it comes from, as a probability over source pixels: a hierarchical
probabilistic warp.  The generated frame is the source's pixels averaged
under those probabilities, and a *confidence decoder* of the same structure
predicts how far off each generated pixel may be (a Laplace scale), which
weights the photometric loss.  The probes of the landmark table read the
embedding (paper §5).

The network (paper §3-4; FAb-Net's layers where it says "similar to [FAb-Net]")
    * **Encoder**: FAb-Net's (:class:`models.fabnet.Encoder`): "8
      convolutional layers (interleaved with leaky ReLUs and
      batch-normalization) to give a 256D embedding" from 256 x 256, 4x4
      convs of stride 2.
    * **Match decoder**: the 512-d concatenation ``[e_S, e_T]`` through
      upsampling blocks (FAb-Net's: ReLU, bilinear x2, 3x3 conv, BN) to the
      finest level ("7 upsampling layers ... to give a 128 x 128 resolution
      result"), widths the encoder's reversed.  At each level's resolution
      ``R_r`` a 5x5 conv reads the feature map ("performing a 5 x 5
      convolution to compress the number of channels"): at level 1 into
      ``W_1^2`` channels, the logits ``M^1`` of every source pixel for each
      target pixel; at levels 2 and 3 into ``4K`` channels.
    * **Confidence decoder**: the same structure, its own weights, a 5x5
      conv to one channel per level, made positive by softplus (+ 1e-3):
      the Laplace scale ``sigma^r`` of each pixel.

The hierarchical warp (:meth:`ClassEmbeddingNet.warp`, paper §3.1)
    * **Level 1** (``R_1 = 32 x 32`` at paper size): ``A^1 = softmax`` of
      ``M^1`` over all source pixels, for each target pixel (eq. (3)), and
      the generated image ``I_G = sum_kl A_ij,kl I_S,kl`` (eq. (1)), with
      source and target area-downsampled to the level's size.
    * **Levels 2 and 3** (64, 128): each target pixel keeps the ``K = 9``
      most probable source pixels of its parent (the target pixel of the
      level below that contains it); each has 4 children at the new level,
      so ``4K = 36`` candidates, for which the head predicts ``M^r``.  The
      paper writes the new probability as the parent's "re-weighted" by
      ``M^r`` (eq. (4)-(5)); here ``A^r = softmax(log A^{r-1}_parent + M^r)``
      over the 36 candidates: the parent's probability times ``exp(M^r)``,
      normalised.  (Read literally, eq. (4) multiplies the logits by the
      parent's probability; we take the re-weighting reading and say so.)
      Level 3 keeps the top ``K`` of level 2's 36 candidates the same way.

Losses (:func:`laplace_loss`, :func:`cyclic_loss`; paper §3.2-3.3)
    * Per level, the Laplace negative log-likelihood of the generated image
      under the predicted scale (eq. (6)):
      ``sqrt(2) |I_G - I_T|_1 / sigma + log sigma`` (the constant dropped;
      ``|.|_1`` over a pixel's colours), summed over the level's pixels as
      the paper writes it and averaged over the batch; the levels' terms are
      summed.  The cyclic loss is a mean over pixels (eq. (7) divides by
      ``W_1^2``), so at weight 1 it is a small term beside the others.
    * The cyclic loss at level 1 (eq. (7)-(8), weight 1): the matches are
      normalised as eq. (8) (the smaller of the column- and row-normalised
      probability), and ``-log`` of the probability of coming back to a
      source pixel after going to the target and back, averaged over the
      source pixels.  The way back is the warp of the same network with the
      embeddings swapped (the target explained from the source); the paper
      does not say where ``A_kl,ij`` comes from.

``small`` (for this repository's 2-core CPU): 64 x 64 frames, FAb-Net's
small encoder, levels at 16, 32 and 64 (the full input).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.fabnet import _INPUT as FAB_INPUT
from models.fabnet import _WIDTHS as FAB_WIDTHS
from models.fabnet import EMBEDDING_DIM, Encoder, Up, levels_for

TOP_K = 9  # paper §4
LEVELS = {"paper": (32, 64, 128), "small": (16, 32, 64)}
SIGMA_FLOOR = 1e-3  # the smallest Laplace scale (a scale of 0 would make the loss unbounded)
SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class ClassEmbeddingConfig:
    """Input size, encoder widths, embedding size, the warp's level sizes and ``K``."""

    image_size: int = FAB_INPUT["paper"]
    widths: tuple[int, ...] = FAB_WIDTHS["paper"]
    embedding_dim: int = EMBEDDING_DIM
    level_sizes: tuple[int, ...] = LEVELS["paper"]
    top_k: int = TOP_K

    def __post_init__(self):
        levels_for(self.image_size)
        if len(self.widths) != levels_for(self.image_size) - 1:
            raise ValueError(f"widths must have {levels_for(self.image_size) - 1} entries for {self.image_size} px")
        sizes = self.level_sizes
        if not sizes or any(b != 2 * a for a, b in zip(sizes, sizes[1:])) or sizes[-1] > self.image_size:
            raise ValueError(f"level_sizes must double at each level and not pass the input: {sizes}")
        levels_for(sizes[0])
        if not 1 <= self.top_k <= sizes[0] ** 2:
            raise ValueError(f"top_k must be in 1..{sizes[0] ** 2}, not {self.top_k}")

    @property
    def levels(self) -> int:
        return len(self.level_sizes)

    @property
    def decoder_widths(self) -> tuple[int, ...]:
        """Output channels of each upsampling block (1 x 1 up to the finest level): the encoder's widths reversed,
        then its first width repeated where the decoder has more blocks than the encoder has widths."""
        ups = levels_for(self.level_sizes[-1])
        rev = tuple(reversed(self.widths))
        return (rev + (self.widths[0],) * ups)[:ups]

    @classmethod
    def named(cls, name: str) -> ClassEmbeddingConfig:
        """``"paper"`` (256 x 256, levels 32/64/128) or ``"small"`` (64 x 64, levels 16/32/64)."""
        if name not in LEVELS:
            raise ValueError(f"unknown config {name!r}: use 'paper' or 'small'")
        return cls(image_size=FAB_INPUT[name], widths=FAB_WIDTHS[name], level_sizes=LEVELS[name])


class LevelDecoder(nn.Module):
    """``[B, in_dim]`` -> a 5x5 conv head's output at each level's size (see the module docstring)."""

    def __init__(self, config: ClassEmbeddingConfig, head_channels: tuple[int, ...]):
        super().__init__()
        chans = (2 * config.embedding_dim, *config.decoder_widths)
        self.ups = nn.ModuleList(Up(a, b) for a, b in zip(chans[:-1], chans[1:]))
        sizes = [2 ** (i + 1) for i in range(len(self.ups))]
        self._taps = {sizes.index(s): r for r, s in enumerate(config.level_sizes)}
        self.heads = nn.ModuleList(nn.Conv2d(chans[1 + sizes.index(s)], c, 5, padding=2)
                                   for s, c in zip(config.level_sizes, head_channels))

    def forward(self, v: torch.Tensor, levels: int) -> list[torch.Tensor]:
        x, out = v.reshape(v.shape[0], -1, 1, 1), []
        for i, up in enumerate(self.ups):
            x = up(x)
            r = self._taps.get(i)
            if r is not None:
                out.append(self.heads[r](x))
                if len(out) == levels:
                    break
        return out


class Level(NamedTuple):
    """One level of the warp: ``generated [B, 3, n, n]``, ``target [B, 3, n, n]`` (downsampled),
    ``sigma [B, 1, n, n]``, the match probabilities ``probs [B, n*n, C]`` over ``C`` candidates whose flat
    source indices are ``index [B, n*n, C]`` (level 1: all ``n*n`` source pixels, ``index`` None)."""

    generated: torch.Tensor
    target: torch.Tensor
    sigma: torch.Tensor
    probs: torch.Tensor
    index: torch.Tensor | None


class ClassEmbeddingOutput(NamedTuple):
    generated: torch.Tensor  # [B, 3, S, S] the finest level's warp, bilinearly upsampled to the input's size
    levels: list  # [Level] coarse to fine
    embeddings: tuple  # (e_S, e_T), [B, D] each


def _down(image: torch.Tensor, size: int) -> torch.Tensor:
    return image if image.shape[-1] == size else F.interpolate(image, size=(size, size), mode="area")


def _children(parent_index: torch.Tensor, n_parent: int) -> torch.Tensor:
    """Flat source indices at ``2 n`` of the 4 children of each flat source index at ``n``: ``[..., K] -> [..., 4K]``."""
    k, l = parent_index // n_parent, parent_index % n_parent
    n = 2 * n_parent
    kids = [(2 * k + a) * n + (2 * l + b) for a in (0, 1) for b in (0, 1)]
    return torch.stack(kids, dim=-1).flatten(-2)  # [..., K, 4] -> [..., 4K]


def _up_targets(values: torch.Tensor, n_parent: int) -> torch.Tensor:
    """``[B, n*n, C]`` per parent target pixel -> ``[B, (2n)^2, C]`` per child target pixel (each child its parent's)."""
    b, _, c = values.shape
    grid = values.reshape(b, n_parent, 1, n_parent, 1, c).expand(b, n_parent, 2, n_parent, 2, c)
    return grid.reshape(b, 4 * n_parent * n_parent, c)


class ClassEmbeddingNet(nn.Module):
    """Encoder, match decoder, confidence decoder (see the module docstring)."""

    def __init__(self, config: ClassEmbeddingConfig | None = None):
        super().__init__()
        config = ClassEmbeddingConfig.named("paper") if config is None else config
        self.config = config
        self.encoder = Encoder(config.widths, config.embedding_dim)
        four_k = 4 * config.top_k
        self.matches = LevelDecoder(config, (config.level_sizes[0] ** 2,) + (four_k,) * (config.levels - 1))
        self.confidence = LevelDecoder(config, (1,) * config.levels)

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """The class embedding: ``[B, 3, S, S]`` -> ``[B, 256]``."""
        s = self.config.image_size
        if frames.dim() != 4 or tuple(frames.shape[1:]) != (3, s, s):
            raise ValueError(f"frames: expected [B, 3, {s}, {s}], got {list(frames.shape)}")
        return self.encoder(frames)

    def warp(self, source: torch.Tensor, target: torch.Tensor, e_s: torch.Tensor, e_t: torch.Tensor,
             levels: int) -> list[Level]:
        """The hierarchical warp of ``source`` onto ``target``'s layout from the two embeddings, ``levels`` deep."""
        v = torch.cat((e_s, e_t), dim=1)
        sigmas = [F.softplus(s) + SIGMA_FLOOR for s in self.confidence(v, levels)]
        return hierarchical_warp(source, target, self.matches(v, levels), sigmas, self.config.level_sizes,
                                 self.config.top_k)

    def forward(self, source: torch.Tensor, target: torch.Tensor, levels: int | None = None) -> ClassEmbeddingOutput:
        levels = self.config.levels if levels is None else int(levels)
        if not 1 <= levels <= self.config.levels:
            raise ValueError(f"levels must be 1..{self.config.levels}, not {levels}")
        e = self.embed(torch.cat((source, target), dim=0))  # one batch: BN statistics over both
        e_s, e_t = e[:len(source)], e[len(source):]
        out = self.warp(source, target, e_s, e_t, levels)
        finest = out[-1].generated
        s = self.config.image_size
        generated = finest if finest.shape[-1] == s else F.interpolate(finest, size=(s, s), mode="bilinear",
                                                                       align_corners=False)
        return ClassEmbeddingOutput(generated, out, (e_s, e_t))


def hierarchical_warp(source: torch.Tensor, target: torch.Tensor, logits: list[torch.Tensor],
                      sigmas: list[torch.Tensor], level_sizes, top_k: int) -> list[Level]:
    """The warp of the module docstring from the heads' outputs: ``logits[0]`` ``[B, n1*n1, n1, n1]`` (a channel
    per source pixel), ``logits[r]`` ``[B, 4K, n_r, n_r]`` (a channel per candidate: parent match ``k`` of the
    top ``K``, child ``2a + b`` at row offset ``a``, column offset ``b``), ``sigmas[r]`` ``[B, 1, n_r, n_r]``."""
    out: list[Level] = []
    b = source.shape[0]
    probs = index = None
    for r, (m, sigma) in enumerate(zip(logits, sigmas)):
        n = level_sizes[r]
        src = _down(source, n).flatten(2)  # [B, 3, n*n]
        m = m.flatten(2).transpose(1, 2)  # [B, n*n targets, channels]
        if r == 0:
            probs, index = torch.softmax(m, dim=-1), None  # channels = source pixels
            generated = torch.einsum("bts,bcs->bct", probs, src)
        else:
            keep_p, keep_i = probs.topk(top_k, dim=-1)  # [B, N_parent, K]
            if index is not None:
                keep_i = index.gather(-1, keep_i)
            parent_p = _up_targets(keep_p.repeat_interleave(4, dim=-1), level_sizes[r - 1])  # [B, N, 4K]
            index = _up_targets(_children(keep_i, level_sizes[r - 1]), level_sizes[r - 1])  # [B, N, 4K]
            probs = torch.softmax(torch.log(parent_p.clamp_min(1e-12)) + m, dim=-1)
            picked = src.gather(2, index.reshape(b, 1, -1).expand(b, 3, -1)).reshape(b, 3, *index.shape[1:])
            generated = (picked * probs.unsqueeze(1)).sum(-1)
        out.append(Level(generated.reshape(b, 3, n, n), _down(target, n), sigma, probs, index))
    return out


def laplace_loss(level: Level) -> torch.Tensor:
    """Eq. (6) without its constant: ``sum_ij sqrt(2) |I_G,ij - I_T,ij|_1 / sigma_ij + log sigma_ij``.

    As the paper writes it: a sum over the level's pixels (``|.|_1`` over the
    colours of a pixel), averaged over the batch, so each level weighs by its
    pixel count and the cyclic loss (a mean over pixels) is small beside it.
    """
    err = (level.generated - level.target).abs().sum(1, keepdim=True)  # [B, 1, n, n]
    return (SQRT2 * err / level.sigma + torch.log(level.sigma)).flatten(1).sum(1).mean()


def photometric_loss(level: Level) -> torch.Tensor:
    """Eq. (2): ``|I_G - I_T|_1`` summed over the level's pixels and colours, averaged over the batch."""
    return (level.generated - level.target).abs().flatten(1).sum(1).mean()


def doubly_normalised(probs: torch.Tensor) -> torch.Tensor:
    """Eq. (8): ``min(A / column sum, A / row sum)`` of ``[B, N, N]`` matches (rows: target pixels)."""
    return torch.minimum(probs / probs.sum(dim=1, keepdim=True).clamp_min(1e-12),
                         probs / probs.sum(dim=2, keepdim=True).clamp_min(1e-12))


def cyclic_loss(forward_probs: torch.Tensor, backward_probs: torch.Tensor) -> torch.Tensor:
    """Eq. (7): ``mean_kl -log sum_ij B_kl,ij A_ij,kl`` of the level-1 matches, each doubly normalised (eq. (8)).

    ``forward_probs`` ``A`` [B, N, N]: target pixel ij -> source pixel kl;
    ``backward_probs`` ``B`` [B, N, N]: source pixel kl -> target pixel ij
    (the warp with the embeddings swapped).
    """
    a, b = doubly_normalised(forward_probs), doubly_normalised(backward_probs)
    back = (b * a.transpose(1, 2)).sum(-1)  # [B, N]: sum_ij B[kl, ij] A[ij, kl]
    return -torch.log(back.clamp_min(1e-12)).mean()


def describe(config: ClassEmbeddingConfig) -> str:
    """Each top-level submodule with its parameters, the total, and every stage's shape (batch 1, on ``meta``)."""
    s = config.image_size
    with torch.device("meta"):
        model = ClassEmbeddingNet(config).eval()
        frame = torch.zeros(1, 3, s, s)
        out = model(frame, frame)
        stages = {"embedding": out.embeddings[0], "generated": out.generated}
        for r, level in enumerate(out.levels):
            stages[f"level {r + 1} matches"] = level.probs
            stages[f"level {r + 1} sigma"] = level.sigma
    from models.summary import summary

    return summary(f"ClassEmbeddingNet widths={config.widths} embedding={config.embedding_dim} input 3x{s}x{s} "
                   f"levels={config.level_sizes} K={config.top_k}", model, stages, kinds=True)
