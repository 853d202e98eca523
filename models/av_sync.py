"""Audio-visual synchronisation network for piano videos (Koepke's thesis ch. 7, Fig. 7.2), in PyTorch.

Two streams map a 0.2 s piece of a video into one space, where matching
picture and sound lie close together and non-matching ones at least a
margin apart (:func:`contrastive_loss`):

* **visual stream** (:class:`VisualStream`): 5 consecutive grayscale frames
  of the keyboard crop as 5 input channels (``[B, 5, 145, 800]`` at paper
  size) through ResNet18 (torchvision's ``BasicBlock`` stages, as the
  ``resnet`` variant of :mod:`models.piano_onsets`) to a 2048-d feature
  (layer4's ``512 x 5 x 25`` map average-pooled to ``512 x 1 x 4``: the
  thesis gives 2048 and not how; pooling the width to 4 keeps where on the
  keyboard the hands are), then two fully-connected layers to the visual
  feature ``v``;
* **audio stream** (:class:`AudioStream`): 0.2 s of raw mono audio at 16 kHz
  (3200 samples) through six 1D convolutions laid out as CREPE's (Kim et
  al. 2018: 512-sample kernel with stride 4, then five 64-sample kernels;
  each convolution followed by ReLU, BatchNorm, max-pool 2 and dropout 0.25;
  filters ``capacity x (32, 4, 4, 4, 8, 16)``, CREPE's "full" is capacity
  32), flattened, then two fully-connected layers to the audio feature ``a``.

Choices the thesis leaves open (written down here and in docs/av_sync.md):

* The two fully-connected layers of each stream: ``hidden`` units with ReLU,
  then ``embedding`` units without an activation (paper: 512 and 128).
  Features are not normalised: the margin (1) acts on plain L2 distances,
  as in SyncNet (Chung and Zisserman 2016), which the chapter follows.
* Eq. (7.1) as printed gives matching pairs (``y = 1``) the hinge term and
  non-matching pairs the squared distance, which would pull non-matching
  pairs together; the text ("align features of matching audio and visual
  inputs and separate non-matching ones") and SyncNet's loss say the
  opposite, so :func:`contrastive_loss` squares the distance of matching
  pairs and hinges the others.  Positives and negatives each carry half of
  a batch's loss, whatever their counts.

Configs (:class:`SyncConfig`): ``named("paper")`` (ResNet18 base width 64,
145 x 800 frames, CREPE capacity 32, FC 512 -> 128) and ``named("small")``
(base width 16, 48 x 264 frames as the piano model's ``small``, capacity 4,
CREPE's "tiny", FC 128 -> 64) for a 2-core CPU.

This module imports only torch and torchvision (via :mod:`models.piano_onsets`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.piano_onsets import resnet_stage

CREPE_FILTERS = (32, 4, 4, 4, 8, 16)  # per unit of capacity (CREPE's "full" model: capacity 32)
CREPE_KERNELS = (512, 64, 64, 64, 64, 64)
CREPE_STRIDES = (4, 1, 1, 1, 1, 1)


@dataclass(frozen=True)
class SyncConfig:
    """Sizes of both streams; ``height x width`` is the visual input, ``seconds`` the audio segment."""

    width: int = 64
    frames: int = 5
    height: int = 145
    crop_width: int = 800
    pooled_columns: int = 4
    capacity: int = 32
    sample_rate: int = 16000
    seconds: float = 0.2
    hidden: int = 512
    embedding: int = 128
    dropout: float = 0.25

    def __post_init__(self):
        for name in ("width", "frames", "height", "crop_width", "pooled_columns", "capacity", "sample_rate",
                     "hidden", "embedding"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        if not 0 < self.seconds <= 2:
            raise ValueError(f"seconds must be in (0, 2], not {self.seconds!r}")
        if self.audio_samples < 256:
            raise ValueError(f"the audio segment is {self.audio_samples} samples; it needs at least 256")

    @property
    def audio_samples(self) -> int:
        return int(round(self.seconds * self.sample_rate))

    @property
    def visual_features(self) -> int:
        """The visual trunk's output: layer4's channels x ``pooled_columns`` (2048 at paper size)."""
        return 8 * self.width * self.pooled_columns

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def named(cls, name: str) -> SyncConfig:
        """``"paper"``: the thesis's streams; ``"small"``: a CPU size (see the module docstring)."""
        if name == "paper":
            return cls()
        if name == "small":
            return cls(width=16, height=48, crop_width=264, capacity=4, hidden=128, embedding=64)
        raise ValueError(f"unknown config {name!r}: use 'paper' or 'small'")


def _head(features: int, hidden: int, embedding: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, embedding))


class VisualStream(nn.Module):
    """``[B, 5, H, W]`` grayscale frames in [0, 1] -> ``[B, embedding]`` (ResNet18 on 5 channels, pooled, 2 FC)."""

    def __init__(self, config: SyncConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.conv1 = nn.Conv2d(config.frames, w, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = resnet_stage(w, w, 1)
        self.layer2 = resnet_stage(w, 2 * w, 2)
        self.layer3 = resnet_stage(2 * w, 4 * w, 2)
        self.layer4 = resnet_stage(4 * w, 8 * w, 2)
        self.pool = nn.AdaptiveAvgPool2d((1, config.pooled_columns))
        self.fc = _head(config.visual_features, config.hidden, config.embedding)
        for m in self.modules():  # torchvision's ResNet initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The 2048-d (paper size) feature before the fully-connected layers."""
        c = self.config
        if x.dim() != 4 or x.shape[1] != c.frames:
            raise ValueError(f"expected frames [B, {c.frames}, H, W], got {list(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(x))


class AudioStream(nn.Module):
    """``[B, samples]`` raw audio -> ``[B, embedding]`` (six CREPE-like 1D convolutions, 2 FC)."""

    def __init__(self, config: SyncConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        channels, length = 1, config.audio_samples
        for filters, kernel, stride in zip(CREPE_FILTERS, CREPE_KERNELS, CREPE_STRIDES):
            out = filters * config.capacity
            # "same" padding as CREPE's Keras layers: output length ceil(length / stride)
            pad = kernel - 1
            layers += [nn.ConstantPad1d((pad // 2, pad - pad // 2), 0.0),
                       nn.Conv1d(channels, out, kernel_size=kernel, stride=stride),
                       nn.ReLU(inplace=True), nn.BatchNorm1d(out), nn.MaxPool1d(2), nn.Dropout(config.dropout)]
            channels, length = out, (-(-length // stride)) // 2
        if length < 1:
            raise ValueError(f"{config.audio_samples} audio samples are too few for six pooled convolutions")
        self.convs = nn.Sequential(*layers)
        self.flat_features = channels * length
        self.fc = _head(self.flat_features, config.hidden, config.embedding)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        n = self.config.audio_samples
        if audio.dim() != 2 or audio.shape[1] != n:
            raise ValueError(f"expected audio [B, {n}], got {list(audio.shape)}")
        return self.fc(torch.flatten(self.convs(audio.unsqueeze(1)), 1))


class SyncNet(nn.Module):
    """Both streams: ``visual(frames)`` and ``audio(samples)`` give features of one space (L2 distances)."""

    def __init__(self, config: SyncConfig | None = None):
        super().__init__()
        self.config = config or SyncConfig()
        self.visual = VisualStream(self.config)
        self.audio = AudioStream(self.config)

    def forward(self, frames: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """The L2 distance of each (frames, audio) pair: ``[B]``."""
        return pair_distance(self.visual(frames), self.audio(audio))


def pair_distance(v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``||v - a||_2`` per row (a small epsilon under the root keeps its gradient finite at 0)."""
    return torch.sqrt(((v - a) ** 2).sum(dim=-1) + 1e-12)


def contrastive_loss(distance: torch.Tensor, matching: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Eq. (7.1) with matching pairs pulled together: ``d^2 / 2`` for matching, ``max(0, m - d)^2 / 2`` otherwise.

    Positives and negatives each carry half the loss (their means), so the
    mix of a batch does not tilt it; a batch of one kind gives that kind's mean.
    """
    matching = matching.to(torch.bool)
    pos = 0.5 * distance[matching] ** 2
    neg = 0.5 * F.relu(margin - distance[~matching]) ** 2
    parts = [p.mean() for p in (pos, neg) if p.numel()]
    if not parts:
        raise ValueError("contrastive_loss of an empty batch")
    return sum(parts) / len(parts)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(config: SyncConfig) -> str:
    """Submodules, parameter counts and stage shapes of both streams (a batch-1 forward on zeros, eval mode)."""
    from models.summary import summary

    net = SyncNet(config).eval()
    c = config
    with torch.no_grad():
        frames = torch.zeros(1, c.frames, c.height, c.crop_width)
        audio = torch.zeros(1, c.audio_samples)
        stages = {"frames": frames, "visual trunk": net.visual.trunk(frames), "v": net.visual(frames),
                  "audio": audio, "audio convs": net.audio.convs(audio.unsqueeze(1)), "a": net.audio(audio)}
    return "\n\n".join([
        summary(f"visual stream ({c.frames} x {c.height} x {c.crop_width} grayscale frames)", net.visual,
                {k: stages[k] for k in ("frames", "visual trunk", "v")}),
        summary(f"audio stream ({c.seconds:g} s at {c.sample_rate} Hz)", net.audio,
                {k: stages[k] for k in ("audio", "audio convs", "a")}),
    ])
