"""X2Face (Wiles, Koepke, Zisserman, ECCV 2018; Koepke's thesis ch. 3), in PyTorch.

Two subnetworks (thesis ch. 3 §3.1, Fig. 2):

* The *embedding network* (:class:`EmbeddingNetwork`, a U-Net in the pix2pix
  style) maps a *source* frame to a 2-channel flow; bilinearly sampling the
  source frame there gives the *embedded face* (a frontalised face-like
  image, not enforced to be one).
* The *driving network* (:class:`DrivingNetwork`, an encoder-decoder WITHOUT
  skips) maps a *driving* frame through its encoder to the 128-d *driving
  vector* and through its decoder to a 2-channel flow that samples the
  embedded face into the *generated* frame.

Training stage I (what this module serves): the source and driving frames come
from one video and the generated frame is compared with the driving frame by
an L1 loss (:func:`models.fabnet.l1_loss`, per sample).  Stage II's identity
losses need a face-identity VGG-11 network; they are not here.

Embedding network (U-Net), ``paper`` (256 x 256 input)
    ======= ============= ============ ========================================
    layer   channels      size         block
    ======= ============= ============ ========================================
    conv1   3 -> 64       256 -> 128   conv, LeakyReLU 0.2
    conv2   64 -> 128     128 -> 64    conv, BN, LeakyReLU 0.2
    conv3   128 -> 256    64 -> 32     conv, BN, LeakyReLU 0.2
    conv4   256 -> 512    32 -> 16     conv, BN, LeakyReLU 0.2
    conv5   512 -> 512    16 -> 8      conv, BN, LeakyReLU 0.2
    conv6   512 -> 512    8 -> 4       conv, BN, LeakyReLU 0.2
    conv7   512 -> 512    4 -> 2       conv, BN, LeakyReLU 0.2
    conv8   512 -> 512    2 -> 1       conv (the bottleneck)
    up8     512 -> 512    1 -> 2       ReLU, bilinear x2, conv, BN; cat conv7
    up7     1024 -> 512   2 -> 4       ReLU, bilinear x2, conv, BN; cat conv6
    up6     1024 -> 512   4 -> 8       ReLU, bilinear x2, conv, BN; cat conv5
    up5     1024 -> 512   8 -> 16      ReLU, bilinear x2, conv, BN; cat conv4
    up4     1024 -> 256   16 -> 32     ReLU, bilinear x2, conv, BN; cat conv3
    up3     512 -> 128    32 -> 64     ReLU, bilinear x2, conv, BN; cat conv2
    up2     256 -> 64     64 -> 128    ReLU, bilinear x2, conv, BN; cat conv1
    up1     128 -> 2      128 -> 256   ReLU, bilinear x2, conv, tanh: the flow
    ======= ============= ============ ========================================

    ``small`` (64 x 64): conv1..conv6 3 -> 16 -> 32 -> 64 -> 128 -> 128 -> 128
    (64 -> 1 pixels); up6..up1 128 -> 128, 256 -> 128, 256 -> 64, 128 -> 32,
    64 -> 16, 32 -> 2.

Driving network (encoder-decoder, no skips; thesis ch. 3 supplementary Fig. 10), ``paper``
    ======= ============= ============ ========================================
    layer   channels      size         block
    ======= ============= ============ ========================================
    conv1   3 -> 64       256 -> 128   conv, LeakyReLU 0.2
    conv2   64 -> 128     128 -> 64    conv, BN, LeakyReLU 0.2
    conv3   128 -> 256    64 -> 32     conv, BN, LeakyReLU 0.2
    conv4   256 -> 512    32 -> 16     conv, BN, LeakyReLU 0.2
    conv5   512 -> 512    16 -> 8      conv, BN, LeakyReLU 0.2
    conv6   512 -> 512    8 -> 4       conv, BN, LeakyReLU 0.2
    conv7   512 -> 512    4 -> 2       conv, BN, LeakyReLU 0.2
    conv8   512 -> 128    2 -> 1       conv: the driving vector ``[B, 128]``
    up1     128 -> 512    1 -> 2       ReLU, bilinear x2, conv, BN
    up2     512 -> 512    2 -> 4       ReLU, bilinear x2, conv, BN
    up3     512 -> 512    4 -> 8       ReLU, bilinear x2, conv, BN
    up4     512 -> 512    8 -> 16      ReLU, bilinear x2, conv, BN
    up5     512 -> 256    16 -> 32     ReLU, bilinear x2, conv, BN
    up6     256 -> 128    32 -> 64     ReLU, bilinear x2, conv, BN
    up7     128 -> 64     64 -> 128    ReLU, bilinear x2, conv, BN
    up8     64 -> 2       128 -> 256   ReLU, bilinear x2, conv, tanh: the flow
    ======= ============= ============ ========================================

    ``small``: conv1..conv5 3 -> 16 -> 32 -> 64 -> 128 -> 128, conv6 128 -> 128
    (the driving vector); up1..up6 128 -> 128 -> 128 -> 64 -> 32 -> 16 -> 2.

    Encoder convs are 4x4, stride 2, padding 1, each followed by LeakyReLU 0.2
    and BN (no BN after the first); decoder blocks are ReLU, bilinear
    upsampling, 3x3 conv (stride 1, padding 1), BN; the final flow goes
    through tanh (supplementary Fig. 10).  The blocks are
    :class:`models.fabnet.Down` and :class:`models.fabnet.Up`.

Flows and sampling
    :func:`models.fabnet.warp`, the same convention as FAb-Net's: ``grid_sample``
    with ``align_corners=True``, identity grid ``linspace(-1, 1)`` (pixel
    centres) plus the flow; channel 0 is ``dx`` (width), channel 1 ``dy``
    (height); one unit is ``(W - 1) / 2`` (``(H - 1) / 2``) pixels; a zero flow
    reproduces the image; outside it the edge pixel (``padding_mode="border"``).
    The authors' code adds tanh offsets to a ``linspace(-1, 1)`` grid written
    for a ``grid_sample`` that behaved as ``align_corners=True``; today's
    default ``align_corners=False`` breaks the identity (see ``models/fabnet.py``).

Multiple source frames
    The embedded faces of the ``k`` source frames are *averaged* (pixel-wise
    mean) and the driving network samples the average: thesis ch. 3 §5,
    "Testing": "we expect to be able to combine multiple *source* frames by
    averaging over the *embedded* faces", and supplementary §A.3 / Fig. 11
    ("averaging over the resulting *embedded* face"); Table 1's 3-source rows
    (L1 0.0524 / 0.0521) use it.  The thesis averages at test time only and
    trains with one source frame; :meth:`X2Face.forward` takes any ``k`` in
    either mode, and which ``k`` to train with is the caller's choice.  The
    authors' released code instead
    weights the average by a third, confidence, channel of the embedding
    network; the text describes a plain average, which is what is built here.

Pose (thesis ch. 3 §4.1; :class:`PoseFromVector`, :class:`VectorFromPose`)
    ``f_{v->p}``: a fully connected layer with bias from the driving vector to
    the head pose (3 angles), trained with an L1 loss on AFLW.  ``f_{p->v}``:
    a fully connected layer with bias followed by batch-norm, from the pose to
    the driving vector.  :func:`drive_with_pose` is eq. (1):
    ``v_driving = v_source + f_{p->v}(p_driving - f_{v->p}(v_source))``.

Chosen here (the thesis is silent or loose)
    * Widths: pix2pix's 256 x 256 U-Net (``ngf = 64``: 64, 128, 256, then
      512s; 8 levels), the network the thesis names, for the embedding network
      and for the driving network's encoder, whose last conv gives the 128-d
      driving vector; the driving decoder mirrors its encoder.  ``small``
      quarters every width (16, 32, 64, then 128s), takes 64 x 64 inputs with
      6 levels, and keeps the 128-d driving vector.
    * Order inside an encoder layer: conv -> BN -> LeakyReLU (pix2pix's; the
      thesis's "followed by a leaky ReLU and then a batch-norm layer" names the
      same layers).  The bottleneck / driving-vector conv has neither BN nor an
      activation (a BN over a 1 x 1 map); each decoder starts with ReLU on it.
    * U-Net skips: each decoder block's output is concatenated with the
      matching encoder layer's output (after its LeakyReLU), ``[decoder,
      encoder]``, as pix2pix's U-Net effectively does.
    * Convs followed by BN have no bias; conv1, the bottleneck convs and the
      final flow convs have one.  Bilinear upsampling with
      ``align_corners=False`` (features, not geometry).
    * Initialisation: PyTorch's defaults, except both final flow convs, which
      start at zero, so at step 0 the embedded face is the source frame and
      the generated frame the embedded face (two identity warps); two random
      warps of up to half the image composed would start training from noise.
    * Inputs are RGB in [0, 1], not normalised.
    * With ``k`` sources, the ``k`` frames go through the embedding network
      as one batch (in training mode BN's statistics are over all of them).
    * Pose: 3 angles in the caller's order and units (AFLW gives yaw, pitch,
      roll); ``f_{v->p}`` and ``f_{p->v}`` keep PyTorch's default init.

Config (:class:`X2FaceConfig`)
    ``named("paper")``: input 256 x 256, the widths above, driving vector 128.
    ``named("small")``: input 64 x 64, embedding network 16, 32, 64, 128, 128,
    128; driving encoder 16, 32, 64, 128, 128 then the 128-d vector.

:func:`describe` lists the submodules, parameter counts and stage output shapes.

This module imports only torch (and :mod:`models.fabnet`'s blocks and warp).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from models.fabnet import Decoder, Down, Encoder, Up, _check_widths, _positive_int, levels_for, warp

DRIVING_DIM = 128
POSE_DIM = 3

_EMBEDDING_WIDTHS = {"paper": (64, 128, 256, 512, 512, 512, 512, 512), "small": (16, 32, 64, 128, 128, 128)}
_DRIVING_WIDTHS = {"paper": (64, 128, 256, 512, 512, 512, 512), "small": (16, 32, 64, 128, 128)}
_INPUT = {"paper": 256, "small": 64}


# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class X2FaceConfig:
    """Input size, embedding-network widths (with the bottleneck), driving-encoder widths, driving vector size."""

    image_size: int = _INPUT["paper"]
    embedding_widths: tuple[int, ...] = _EMBEDDING_WIDTHS["paper"]
    driving_widths: tuple[int, ...] = _DRIVING_WIDTHS["paper"]
    driving_dim: int = DRIVING_DIM
    pose_dim: int = POSE_DIM

    def __post_init__(self):
        levels = levels_for(self.image_size)
        _check_widths("embedding_widths", self.embedding_widths, levels)
        _check_widths("driving_widths", self.driving_widths, levels - 1)
        for name in ("driving_dim", "pose_dim"):
            if not _positive_int(getattr(self, name)):
                raise ValueError(f"{name} must be a positive int, not {getattr(self, name)!r}")

    @property
    def levels(self) -> int:
        """Stride-2 convs per encoder (= upsampling blocks per decoder): 8 at 256 x 256, 6 at 64 x 64."""
        return levels_for(self.image_size)

    @classmethod
    def named(cls, name: str) -> X2FaceConfig:
        """``"paper"`` (256 x 256, pix2pix widths) or ``"small"`` (64 x 64, a quarter of the widths)."""
        if name not in _INPUT:
            raise ValueError(f"unknown config {name!r}: use 'paper' or 'small'")
        return cls(image_size=_INPUT[name], embedding_widths=_EMBEDDING_WIDTHS[name],
                   driving_widths=_DRIVING_WIDTHS[name])


# ---------------------------------------------------------------- subnetworks


class EmbeddingNetwork(nn.Module):
    """U-Net: source frame ``[B, 3, S, S]`` -> flow ``[B, 2, S, S]`` in (-1, 1) (see the module table)."""

    def __init__(self, widths: Sequence[int], in_channels: int = 3, out_channels: int = 2):
        super().__init__()
        widths = tuple(widths)
        n = len(widths)
        chans = (in_channels, *widths)
        self.down = nn.Sequential(OrderedDict(
            (f"conv{i + 1}", Down(chans[i], chans[i + 1], norm=0 < i < n - 1, act=i < n - 1)) for i in range(n)))
        ups = OrderedDict()
        # up{n}: the bottleneck alone; up{i} (n > i > 1): [previous up, conv{i}] concatenated.
        ups[f"up{n}"] = Up(widths[n - 1], widths[n - 2])
        for i in range(n - 1, 1, -1):
            ups[f"up{i}"] = Up(2 * widths[i - 1], widths[i - 2])
        ups["up1"] = Up(2 * widths[0], out_channels, last=True)
        self.up = nn.Sequential(ups)

    @property
    def last(self) -> Up:
        return self.up[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        if x.shape[-2:] != (1, 1):
            raise ValueError(f"the U-Net reached {list(x.shape[-2:])}, not 1 x 1: wrong input size")
        skips.pop()  # the bottleneck itself is not a skip
        for layer in self.up:
            x = layer(x)
            if skips:
                x = torch.cat((x, skips.pop()), dim=1)
        return x


class DrivingNetwork(nn.Module):
    """``encoder``: driving frame -> driving vector ``[B, driving_dim]``; ``decoder``: driving vector -> flow."""

    def __init__(self, widths: Sequence[int], driving_dim: int = DRIVING_DIM):
        super().__init__()
        self.encoder = Encoder(widths, driving_dim)
        self.decoder = Decoder(driving_dim, widths, 2)

    def forward(self, driving: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(driving vector [B, driving_dim], flow [B, 2, S, S])``."""
        v = self.encoder(driving)
        return v, self.decoder(v)


class PoseFromVector(nn.Module):
    """``f_{v->p}``: driving vector ``[B, 128]`` -> head pose ``[B, 3]``, one fully connected layer with bias."""

    def __init__(self, driving_dim: int = DRIVING_DIM, pose_dim: int = POSE_DIM):
        super().__init__()
        self.fc = nn.Linear(driving_dim, pose_dim, bias=True)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.fc(v)


class VectorFromPose(nn.Module):
    """``f_{p->v}``: head pose ``[B, 3]`` -> driving vector ``[B, 128]``, fully connected (with bias) -> batch-norm."""

    def __init__(self, pose_dim: int = POSE_DIM, driving_dim: int = DRIVING_DIM):
        super().__init__()
        self.fc = nn.Linear(pose_dim, driving_dim, bias=True)
        self.bn = nn.BatchNorm1d(driving_dim)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return self.bn(self.fc(p))


def drive_with_pose(v_source: torch.Tensor, p_driving: torch.Tensor, f_vp: PoseFromVector,
                    f_pv: VectorFromPose) -> torch.Tensor:
    """Thesis ch. 3 eq. (1): ``v_source + f_{p->v}(p_driving - f_{v->p}(v_source))``, ``[B, 128]``."""
    return v_source + f_pv(p_driving - f_vp(v_source))


# ---------------------------------------------------------------- network


class X2FaceOutput(NamedTuple):
    """``generated [B, 3, S, S]``, the (averaged) ``embedded`` face ``[B, 3, S, S]``, ``driving_vector [B, 128]``."""

    generated: torch.Tensor
    embedded: torch.Tensor
    driving_vector: torch.Tensor


class X2Face(nn.Module):
    """X2Face: ``embedding_network`` (U-Net) and ``driving_network`` (encoder-decoder); see the module notes."""

    def __init__(self, config: X2FaceConfig | None = None):
        super().__init__()
        config = X2FaceConfig.named("paper") if config is None else config
        self.config = config
        self.embedding_network = EmbeddingNetwork(config.embedding_widths)
        self.driving_network = DrivingNetwork(config.driving_widths, config.driving_dim)
        self.reset_last_layers()

    def reset_last_layers(self) -> None:
        """Zero both final flow convs: identity warps (embedded face = source, generated = embedded face)."""
        self.embedding_network.last.zero_()
        self.driving_network.decoder.last.zero_()

    def _check_frames(self, x: torch.Tensor, what: str) -> None:
        s = self.config.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, s, s):
            raise ValueError(f"{what}: expected [B, 3, {s}, {s}], got {list(x.shape)}")

    def embed(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Source frame ``[B, 3, S, S]`` -> ``(embedded face [B, 3, S, S], flow [B, 2, S, S])``."""
        self._check_frames(source, "source")
        flow = self.embedding_network(source)
        return warp(source, flow), flow

    def driving_vector(self, driving: torch.Tensor) -> torch.Tensor:
        """Driving frame ``[B, 3, S, S]`` -> driving vector ``[B, driving_dim]`` (the driving network's encoder)."""
        self._check_frames(driving, "driving")
        return self.driving_network.encoder(driving)

    def driving_flow(self, driving_vector: torch.Tensor) -> torch.Tensor:
        """Driving vector ``[B, driving_dim]`` -> flow ``[B, 2, S, S]`` into the embedded face (the decoder)."""
        if driving_vector.dim() != 2 or driving_vector.shape[1] != self.config.driving_dim:
            raise ValueError(f"expected a driving vector [B, {self.config.driving_dim}], "
                             f"got {list(driving_vector.shape)}")
        return self.driving_network.decoder(driving_vector)

    def generate(self, embedded: torch.Tensor, driving_vector: torch.Tensor) -> torch.Tensor:
        """Sample the embedded face ``[B, 3, S, S]`` with the driving vector's flow: the generated frame."""
        self._check_frames(embedded, "embedded")
        return warp(embedded, self.driving_flow(driving_vector))

    def forward(self, sources: torch.Tensor, driving: torch.Tensor) -> X2FaceOutput:
        """``sources [B, 3, S, S]`` or ``[B, k, 3, S, S]`` (embedded faces averaged), ``driving [B, 3, S, S]``."""
        if sources.dim() == 4:
            sources = sources.unsqueeze(1)
        if sources.dim() != 5:
            raise ValueError(f"expected sources [B, 3, S, S] or [B, k, 3, S, S], got {list(sources.shape)}")
        b, k = sources.shape[:2]
        embedded, _ = self.embed(sources.reshape(b * k, *sources.shape[2:]))
        embedded = embedded.reshape(b, k, *embedded.shape[1:]).mean(dim=1)
        v = self.driving_vector(driving)
        if v.shape[0] != b:
            raise ValueError(f"{b} source batches but {v.shape[0]} driving frames")
        return X2FaceOutput(self.generate(embedded, v), embedded, v)


# ---------------------------------------------------------------- description


def describe(config: X2FaceConfig, sources: int = 1) -> str:
    """Each top-level submodule with its parameters, the total, and every stage's shape (batch 1, on ``meta``)."""
    s = config.image_size
    with torch.device("meta"):
        model = X2Face(config).eval()
        frames = torch.zeros(1, sources, 3, s, s)
        embedded, flow = model.embed(frames[:, 0])
        out = model(frames, torch.zeros(1, 3, s, s))
        stages = {"source_flow": flow, "embedded": out.embedded, "driving_vec": out.driving_vector,
                  "drive_flow": model.driving_flow(out.driving_vector), "generated": out.generated}
    from models.summary import summary

    # summary() prints 12-character names: list the two networks as "embedding" and "driving".
    view = nn.Module()
    view.embedding = model.embedding_network
    view.driving = model.driving_network
    return summary(f"X2Face embedding network {config.embedding_widths}, driving network {config.driving_widths} "
                   f"-> vector {config.driving_dim}, input 3x{s}x{s}, sources={sources}", view, stages, kinds=True)
