"""Onsets and Frames (Hawthorne et al. 2018), in PyTorch: front end, model, losses, decoding, checkpoints.

Settings follow Magenta's public configuration (docs/training.md, the paper and Magenta's
hparams); the names follow the papers.

Front end (:class:`MelFrontEnd`, runs on any device)
    16 kHz mono audio -> (torchaudio) power STFT (n_fft 2048, hop 512, periodic Hann,
    centred frames with zero padding, as ``librosa.stft`` 0.11 does) -> 229
    HTK mel bins from 30 Hz to 8 kHz with Slaney area normalisation (what
    ``librosa.filters.mel(htk=True)`` builds) -> ``power_to_db`` (10 log10 of
    the power with a floor of 1e-10, then at most 80 dB below the example's
    maximum), which is what Magenta's ``spec_log_amplitude`` does with
    ``librosa.power_to_db``.  Output ``(batch, frames, 229)``, 31.25 frames
    per second; frame ``i`` is centred on ``i * 512 / 16000`` seconds.

Model (:class:`OnsetsAndFrames`)
    Every head has its own *acoustic stack* (:class:`AcousticStack`: conv 3x3
    -> BN -> ReLU, three times, max-pool over frequency after the second and
    third, dropout, then a fully connected layer).  Onset and offset heads:
    stack -> BiLSTM -> linear (sigmoid).  Velocity head: stack -> linear.
    Frame head: its own stack -> linear (sigmoid), concatenated with the onset
    and offset probabilities *with gradients stopped* -> BiLSTM -> linear
    (sigmoid).  The heads return logits; probabilities are their sigmoids.

Config (:class:`OnsetsFramesConfig`)
    ``default()`` is the paper's (Magenta's) sizes: filters 48/48/96, FC 768,
    BiLSTMs of 256 units per direction; ``small()`` is a configuration that
    trains on a laptop CPU: filters 16/16/32, FC 256, BiLSTMs of 64/32/64
    units, lighter dropout, Magenta's optional ``activation_loss`` on, and a
    LayerNorm on each acoustic stack's output (not in the paper; without it
    the BiLSTM gates saturated and the onset head stopped learning within the
    first few hundred CPU steps, see the field's comment).

Decoding (:func:`decode_notes`) follows Magenta: a note starts only on a
predicted onset, lasts while the frame prediction stays on, and its velocity
is the velocity head's value at the onset frame.

Checkpoints (:func:`save_checkpoint`, :func:`load_checkpoint`) are a plain
dict written by ``torch.save`` and read with ``weights_only=True``; see
:func:`save_checkpoint` for the format.  :func:`read_checkpoint` also reads
the trainer's Lightning checkpoints (``RUN/checkpoints/*.ckpt``, format
:data:`LIGHTNING_FORMAT`) as that format: the network's tensors, its config
and front end, the step.  :func:`verify_checkpoint` refuses
(:class:`CheckpointError`, one line) a file that is not such a checkpoint, a
config outside :data:`SIZE_LIMIT` times the paper's sizes, and tensors that do
not match the config, all before a model is built: the expected shapes come
from a model on the ``meta`` device, which allocates nothing.

This module imports only torch and numpy.
"""

from __future__ import annotations

import functools
import math
import os
import re
import zipfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16000
N_FFT = 2048
HOP_LENGTH = 512
N_MELS = 229
F_MIN = 30.0
TOP_DB = 80.0
AMIN = 1e-10
FRAMES_PER_SECOND = SAMPLE_RATE / HOP_LENGTH  # 31.25
MIN_MIDI, MAX_MIDI = 21, 108
N_KEYS = MAX_MIDI - MIN_MIDI + 1  # 88

CHECKPOINT_FORMAT = "sightsound/onsets-frames"
CHECKPOINT_VERSION = 1
# A checkpoint of the shared Lightning trainer (tasks.training.onsets_frames.OnsetsFramesTask): Lightning's
# dict (state_dict with the network's tensors under "net.", global_step, optimiser and loop states) plus
# this format, the model's config and the front end; read_checkpoint reads it as the format above.
LIGHTNING_FORMAT = "sightsound/onsets-frames+lightning"
# The front end a checkpoint must have been trained on (MelFrontEnd's settings).
FRONTEND = {"sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop_length": HOP_LENGTH, "n_mels": N_MELS, "fmin": F_MIN,
            "top_db": TOP_DB, "htk": True}

# A checkpoint's config may ask for at most SIZE_LIMIT times each of the paper's sizes (filters 48/48/96,
# FC 768, BiLSTMs of 256), and for a model of at most SIZE_LIMIT times the paper's parameters (22.6 M, so
# 90 M, 360 MB of float32).  The paper's model is the largest this project trains; four times it leaves
# room for wider experiments, while a config that would take gigabytes (an FC of 40000: 1.05 G
# parameters) is refused before anything is allocated.
SIZE_LIMIT = 4
PAPER_SIZES = {"conv_filters": (48, 48, 96), "fc_size": 768, "onset_lstm_units": 256, "offset_lstm_units": 256,
               "combined_lstm_units": 256}


# ---------------------------------------------------------------- front end


class MelFrontEnd(nn.Module):
    """Audio ``(batch, samples)`` or ``(samples,)`` at 16 kHz -> log-mel ``(batch, frames, 229)`` in dB.

    torchaudio's ``MelSpectrogram`` (HTK mel scale, Slaney norm, periodic
    Hann, centred zero-padded frames) and ``AmplitudeToDB`` give librosa's
    numbers to within 1e-3 dB (the test checks it); the 80 dB floor is taken
    per example, as ``librosa.power_to_db`` does on each clip.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH,
                 n_mels: int = N_MELS, fmin: float = F_MIN, top_db: float | None = TOP_DB):
        super().__init__()
        import torchaudio

        self.sample_rate, self.n_fft, self.hop_length = sample_rate, n_fft, hop_length
        self.n_mels, self.fmin, self.top_db = n_mels, fmin, top_db
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, f_min=fmin, f_max=sample_rate / 2.0,
            n_mels=n_mels, power=2.0, center=True, pad_mode="constant", norm="slaney", mel_scale="htk")
        self.to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=top_db)
        self.to_db.amin = AMIN

    def n_frames(self, n_samples: int) -> int:
        return 1 + n_samples // self.hop_length

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        squeeze = audio.dim() == 1
        x = audio.reshape(1, -1) if squeeze else audio
        x = x.to(torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            # (batch, 1, mels, frames): AmplitudeToDB takes its top_db floor over each (channel, mels, frames).
            db = self.to_db(self.mel(x).unsqueeze(1)).squeeze(1)
        out = db.transpose(1, 2).contiguous()
        return out[0] if squeeze else out


# ---------------------------------------------------------------- config


@dataclass(frozen=True)
class OnsetsFramesConfig:
    """Sizes of the model.  Every field is a plain int or float (it is stored in checkpoints)."""

    n_mels: int = N_MELS
    n_keys: int = N_KEYS
    conv_filters: tuple[int, int, int] = (48, 48, 96)
    fc_size: int = 768
    onset_lstm_units: int = 256  # per direction
    offset_lstm_units: int = 256
    combined_lstm_units: int = 256  # the frame head's BiLSTM over [frame, onset, offset]
    conv_dropout: float = 0.25  # after each pooling (Magenta: keep 0.75)
    fc_dropout: float = 0.5  # after the fully connected layer (Magenta: keep 0.5)
    # Magenta's ``activation_loss`` hparam (off in its public configuration): also train the frame
    # stack's own sigmoid output (the "activation") against the frame labels.
    activation_loss: bool = False
    # Not in the paper: LayerNorm on each acoustic stack's output.  Without it the stack's ReLU outputs
    # grow during training until the BiLSTM gates saturate (measured: gate pre-activation std ~8 after
    # 500 CPU steps) and the onset head stops learning; the CPU configuration turns it on.
    stack_layer_norm: bool = False

    def __post_init__(self):
        problem = self.problem()
        if problem:
            raise ValueError(f"config {problem}")

    def problem(self) -> str | None:
        """What is wrong with these fields (types, ranges, :data:`SIZE_LIMIT`), or None."""
        if not (type(self.n_mels) is int and self.n_mels == N_MELS):
            return f"n_mels is {_short(self.n_mels)}; the front end computes {N_MELS} mel bins"
        if not (type(self.n_keys) is int and self.n_keys == N_KEYS):
            return f"n_keys is {_short(self.n_keys)}; decoding reads {N_KEYS} keys (MIDI {MIN_MIDI}-{MAX_MIDI})"
        filters = self.conv_filters
        if not (isinstance(filters, tuple) and len(filters) == 3):
            return f"conv_filters is {_short(filters)}, not three ints"
        sizes = [(f"conv_filters[{i}]", v, PAPER_SIZES["conv_filters"][i]) for i, v in enumerate(filters)]
        sizes += [(k, getattr(self, k), PAPER_SIZES[k]) for k in PAPER_SIZES if k != "conv_filters"]
        for name, v, paper in sizes:
            if type(v) is not int:
                return f"{name} is {_short(v)}, not an int"
            if not 1 <= v <= SIZE_LIMIT * paper:
                return f"{name} is {v}; it must be 1-{SIZE_LIMIT * paper} ({SIZE_LIMIT} x the paper's {paper})"
        for name in ("conv_dropout", "fc_dropout"):
            v = getattr(self, name)
            if type(v) not in (int, float) or not 0.0 <= v < 1.0:
                return f"{name} is {_short(v)}, not a probability in [0, 1)"
        for name in ("activation_loss", "stack_layer_norm"):
            if type(getattr(self, name)) is not bool:
                return f"{name} is {_short(getattr(self, name))}, not true or false"
        return None

    @classmethod
    def default(cls) -> "OnsetsFramesConfig":
        """The paper's sizes (Magenta's public configuration)."""
        return cls()

    @classmethod
    def small(cls) -> "OnsetsFramesConfig":
        """A configuration that trains on two CPU cores in an hour (about 1/20 of the compute)."""
        return cls(conv_filters=(16, 16, 32), fc_size=256, onset_lstm_units=64, offset_lstm_units=32,
                   combined_lstm_units=64, conv_dropout=0.1, fc_dropout=0.25, activation_loss=True,
                   stack_layer_norm=True)

    @classmethod
    def named(cls, name: str) -> "OnsetsFramesConfig":
        if name not in ("default", "small"):
            raise ValueError(f"unknown Onsets and Frames configuration {name!r}; known: default, small")
        return getattr(cls, name)()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["conv_filters"] = list(self.conv_filters)
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "checkpoint") -> "OnsetsFramesConfig":
        """The config a checkpoint stores; :class:`CheckpointError` (naming ``source``) for a bad one."""
        if not isinstance(d, dict):
            raise CheckpointError(f"{source}: config is a {type(d).__name__}, not a dict")
        known = {f.name for f in fields(cls)}
        unknown = [k for k in d if k not in known]
        if unknown:
            names = ", ".join(_short(k, 40) for k in unknown[:5])
            raise CheckpointError(f"{source}: config has unknown fields ({len(unknown)}): {names}")
        d = dict(d)
        d.setdefault("activation_loss", False)
        d.setdefault("stack_layer_norm", False)
        if isinstance(d.get("conv_filters"), list):
            d["conv_filters"] = tuple(d["conv_filters"])
        try:
            return cls(**d)
        except ValueError as exc:
            raise CheckpointError(f"{source}: {exc}") from None


# ---------------------------------------------------------------- model


class AcousticStack(nn.Module):
    """Conv 3x3 (f1) -> BN -> ReLU -> conv 3x3 (f2) -> BN -> ReLU -> max-pool freq 2 -> dropout
    -> conv 3x3 (f3) -> BN -> ReLU -> max-pool freq 2 -> dropout -> FC -> ReLU -> dropout.

    Input ``(batch, frames, n_mels)``; output ``(batch, frames, fc_size)``.
    """

    def __init__(self, n_mels: int, filters: tuple[int, int, int], fc_size: int, conv_dropout: float,
                 fc_dropout: float, layer_norm: bool = False):
        super().__init__()
        f1, f2, f3 = filters
        self.conv = nn.Sequential(
            nn.Conv2d(1, f1, 3, padding=1, bias=False), nn.BatchNorm2d(f1), nn.ReLU(),
            nn.Conv2d(f1, f2, 3, padding=1, bias=False), nn.BatchNorm2d(f2), nn.ReLU(),
            nn.MaxPool2d((1, 2)), nn.Dropout(conv_dropout),
            nn.Conv2d(f2, f3, 3, padding=1, bias=False), nn.BatchNorm2d(f3), nn.ReLU(),
            nn.MaxPool2d((1, 2)), nn.Dropout(conv_dropout),
        )
        self.fc = nn.Sequential(nn.Linear(f3 * (n_mels // 4), fc_size), nn.ReLU(), nn.Dropout(fc_dropout))
        self.norm = nn.LayerNorm(fc_size) if layer_norm else nn.Identity()

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv(mel.unsqueeze(1))  # (batch, f3, frames, n_mels // 4)
        x = x.permute(0, 2, 1, 3).flatten(2)  # (batch, frames, f3 * n_mels // 4)
        return self.norm(self.fc(x))


class BiLSTM(nn.Module):
    def __init__(self, inputs: int, units: int):
        super().__init__()
        self.lstm = nn.LSTM(inputs, units, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]


class OnsetsAndFrames(nn.Module):
    """The four heads.  ``forward(mel)`` returns a dict of ``(batch, frames, 88)`` tensors:
    ``onset``, ``offset``, ``frame`` (logits), ``velocity`` (raw values, ~velocity / 127) and
    ``activation`` (logits of the frame stack's own output, before the combined BiLSTM)."""

    def __init__(self, config: OnsetsFramesConfig | None = None):
        super().__init__()
        c = self.config = config or OnsetsFramesConfig.default()

        def stack():
            return AcousticStack(c.n_mels, c.conv_filters, c.fc_size, c.conv_dropout, c.fc_dropout,
                                 layer_norm=c.stack_layer_norm)

        self.onset_stack = stack()
        self.onset_lstm = BiLSTM(c.fc_size, c.onset_lstm_units)
        self.onset_fc = nn.Linear(2 * c.onset_lstm_units, c.n_keys)
        self.offset_stack = stack()
        self.offset_lstm = BiLSTM(c.fc_size, c.offset_lstm_units)
        self.offset_fc = nn.Linear(2 * c.offset_lstm_units, c.n_keys)
        self.velocity_stack = stack()
        self.velocity_fc = nn.Linear(c.fc_size, c.n_keys)
        self.frame_stack = stack()
        self.frame_fc = nn.Linear(c.fc_size, c.n_keys)
        self.combined_lstm = BiLSTM(3 * c.n_keys, c.combined_lstm_units)
        self.combined_fc = nn.Linear(2 * c.combined_lstm_units, c.n_keys)

    def forward(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        onset = self.onset_fc(self.onset_lstm(self.onset_stack(mel)))
        offset = self.offset_fc(self.offset_lstm(self.offset_stack(mel)))
        velocity = self.velocity_fc(self.velocity_stack(mel))
        activation = self.frame_fc(self.frame_stack(mel))
        # The frame head sees the onset and offset probabilities, but its loss
        # must not train the onset and offset heads: stop their gradients.
        combined = torch.cat([torch.sigmoid(activation), torch.sigmoid(onset).detach(),
                              torch.sigmoid(offset).detach()], dim=-1)
        frame = self.combined_fc(self.combined_lstm(combined))
        return {"onset": onset, "offset": offset, "frame": frame, "velocity": velocity, "activation": activation}

    def onset_features(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, onset logits)``: the onset stack's BiLSTM output, ``(batch, frames, 2 * onset_lstm_units)``,
        the model's last layer before the onset head (512-d at paper size: the "final feature vector" the thesis's
        audio-visual MLP of ch. 6 table 2 takes), and the onset head's logits on it."""
        features = self.onset_lstm(self.onset_stack(mel))
        return features, self.onset_fc(features)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def describe(config: OnsetsFramesConfig | None = None) -> str:
    """A text summary: every parameter tensor's shape, per-module counts and the total."""
    model = OnsetsAndFrames(config)
    lines = [f"Onsets and Frames, config: {model.config.to_dict()}", ""]
    lines.append(f"{'tensor':48s} {'shape':>22s} {'params':>12s}")
    for name, p in model.named_parameters():
        lines.append(f"{name:48s} {str(tuple(p.shape)):>22s} {p.numel():>12,d}")
    lines.append("")
    for name, child in model.named_children():
        lines.append(f"{name:20s} {parameter_count(child):>12,d}")
    lines.append(f"{'total':20s} {parameter_count(model):>12,d}")
    return "\n".join(lines)


# ---------------------------------------------------------------- losses


def onsets_frames_loss(outputs: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
                       activation_loss: bool = False) -> dict[str, torch.Tensor]:
    """Per-head losses and their sum ``total``.

    With ``activation_loss`` (Magenta's hparam of that name; the config's
    field) the frame stack's own output is also trained on the frame labels
    (binary cross-entropy, added to the total as ``activation``).

    Onset, offset and frame: binary cross-entropy (mean over frames and keys).
    Velocity (Magenta's): squared error on onset frames only,
    ``sum(onset * (velocity - predicted)^2) / sum(onset)``, where the label
    velocity is MIDI velocity / 127.
    """
    losses = {
        k: F.binary_cross_entropy_with_logits(outputs[k].float(), labels[k].float())
        for k in ("onset", "offset", "frame")
    }
    on = labels["onset"].float()
    sq = (labels["velocity"].float() - outputs["velocity"].float()).square()
    losses["velocity"] = (on * sq).sum() / on.sum().clamp(min=1.0)
    losses["total"] = losses["onset"] + losses["offset"] + losses["frame"] + losses["velocity"]
    if activation_loss:
        losses["activation"] = F.binary_cross_entropy_with_logits(outputs["activation"].float(), labels["frame"].float())
        losses["total"] = losses["total"] + losses["activation"]
    return losses


# ---------------------------------------------------------------- decoding


def decode_notes(onset: np.ndarray, frame: np.ndarray, velocity: np.ndarray | None = None, *,
                 onset_threshold: float = 0.5, frame_threshold: float = 0.5,
                 frames_per_second: float = FRAMES_PER_SECOND, min_midi: int = MIN_MIDI
                 ) -> list[tuple[float, float, int, int]]:
    """Notes ``(onset s, offset s, MIDI pitch, velocity)`` from ``(frames, 88)`` probabilities.

    Rules (Magenta's): a note starts only where the onset probability crosses
    ``onset_threshold`` (a run of consecutive onset frames is one onset); it
    lasts while the frame probability stays above ``frame_threshold`` (the
    onset frames themselves count as active); a new onset on a sounding pitch
    ends the sounding note and starts a new one.  The note ends at the start
    of its first inactive frame, so every note lasts at least one frame.
    Velocity is ``velocity`` (~MIDI velocity / 127) at the onset frame, times
    127, clipped to 1-127 (64 without a velocity head).
    """
    onset = np.asarray(onset) >= onset_threshold
    active = (np.asarray(frame) >= frame_threshold) | onset
    n_frames, n_keys = onset.shape
    starts = onset.copy()
    starts[1:] &= ~onset[:-1]
    notes = []
    for k in range(n_keys):
        on_frames = np.flatnonzero(starts[:, k])
        for i, t0 in enumerate(on_frames):
            limit = on_frames[i + 1] if i + 1 < len(on_frames) else n_frames
            t1 = t0 + 1
            while t1 < limit and active[t1, k]:
                t1 += 1
            if velocity is None:
                vel = 64
            else:
                vel = int(np.clip(round(float(velocity[t0, k]) * 127.0), 1, 127))
            notes.append((int(t0) / frames_per_second, int(t1) / frames_per_second, min_midi + k, vel))
    notes.sort(key=lambda n: (n[0], n[2]))
    return notes


@torch.inference_mode()
def predict(model: OnsetsAndFrames, mel: torch.Tensor, chunk_frames: int = 4096) -> dict[str, np.ndarray]:
    """Probabilities ``(frames, 88)`` for one log-mel ``(frames, n_mels)``, in chunks of ``chunk_frames``."""
    model.eval()
    device = next(model.parameters()).device
    parts: dict[str, list] = {"onset": [], "offset": [], "frame": [], "velocity": []}
    for s in range(0, mel.shape[0], chunk_frames):
        out = model(mel[s:s + chunk_frames].unsqueeze(0).to(device))
        for k in parts:
            v = out[k][0].float()
            parts[k].append((v if k == "velocity" else torch.sigmoid(v)).cpu().numpy())
    return {k: np.concatenate(v) if v else np.zeros((0, model.config.n_keys), np.float32) for k, v in parts.items()}


# ---------------------------------------------------------------- checkpoints


class CheckpointError(ValueError):
    """A checkpoint that is not an Onsets and Frames checkpoint of this format, or does not match its config."""


def save_checkpoint(path: str | os.PathLike, model: OnsetsAndFrames, *, step: int = 0,
                    optimizer: torch.optim.Optimizer | None = None, scheduler=None, scaler=None,
                    extra: dict | None = None) -> Path:
    """Write a checkpoint atomically (temporary name, then rename).

    Format (a dict; every value loads under ``torch.load(weights_only=True)``):

    ``format``       ``"sightsound/onsets-frames"``
    ``version``      1
    ``config``       :meth:`OnsetsFramesConfig.to_dict` (ints, floats, a list)
    ``frontend``     sample_rate, n_fft, hop_length, n_mels, fmin, top_db, htk
    ``state_dict``   the model's tensors (``OnsetsAndFrames.state_dict()``), on the CPU
    ``step``         optimiser steps taken
    ``optimizer``    ``Optimizer.state_dict()`` or None (for resuming)
    ``scheduler``    LR scheduler ``state_dict()`` or None
    ``scaler``       AMP ``GradScaler.state_dict()`` or None
    ``extra``        plain values (e.g. the last validation metrics)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": model.config.to_dict(),
        "frontend": dict(FRONTEND),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "step": int(step),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "extra": dict(extra or {}),
    }
    tmp = path.with_name(f".{path.name}.part")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def _short(value, limit: int = 60) -> str:
    """``repr`` of a value read from a file, cut to ``limit`` characters (it goes into one-line messages)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _name(key: str, limit: int = 60) -> str:
    """A tensor name read from a file, escaped and cut for a one-line message."""
    text = repr(key)[1:-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load_error(exc: Exception) -> str:
    """The informative sentence of a ``torch.load`` error, on one line (torch's messages run to paragraphs)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    if "WeightsUnpickler error:" in text:  # the cause comes after torch's advice about weights_only
        text = text.split("WeightsUnpickler error:", 1)[1]
    text = " ".join(text.split())
    text = re.split(r"(?<=[a-z0-9)])\. ", text, maxsplit=1)[0].rstrip(".")
    text = text or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _from_lightning(ckpt: dict) -> dict:
    """A Lightning checkpoint of the trainer as this module's format (the optimiser and loop states left out).

    The network's tensors are the ``state_dict`` entries under ``net.``, the
    prefix dropped; any other entry is kept as it is, so that the tensor check
    names it as unexpected.  Nothing here is trusted: the usual checks follow.
    """
    state = ckpt.get("state_dict")
    if isinstance(state, dict):
        state = {k[4:] if isinstance(k, str) and k.startswith("net.") else k: v for k, v in state.items()}
    step = ckpt.get("global_step", 0)
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": ckpt.get("config"),
            "frontend": ckpt.get("frontend"), "state_dict": state, "step": step, "optimizer": None,
            "scheduler": None, "scaler": None,
            "extra": {"trainer": "lightning", "hyper_parameters": ckpt.get("hyper_parameters")}}


def read_checkpoint(path: str | os.PathLike, *, mmap: bool = False) -> dict:
    """Load a checkpoint's dict (``weights_only=True``, on the CPU) and check its header.

    Before ``torch.load`` the file must be a non-empty regular file and a zip
    archive of uncompressed records (what ``torch.save`` writes): a truncated
    file has no zip directory, and a compressed record could inflate to far
    more than the file holds.  ``mmap=True`` maps the tensors from the file
    instead of reading them (nothing is read until a tensor is used).  A
    Lightning checkpoint of the trainer (:data:`LIGHTNING_FORMAT`) comes back
    in this module's format (:func:`_from_lightning`).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no such checkpoint: {path}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path}: a directory, not a file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: not a regular file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path}: empty (0 bytes)")
    try:
        with zipfile.ZipFile(path) as zf:
            compressed = [i.filename for i in zf.infolist() if i.compress_type != zipfile.ZIP_STORED]
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: not a torch.save zip archive (truncated, or another kind of "
                              f"file: {_load_error(exc)})") from None
    if compressed:
        raise CheckpointError(f"checkpoint {path}: compressed records ({len(compressed)}, e.g. "
                              f"{_short(compressed[0], 40)}); torch.save writes them uncompressed")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # pickle errors, unsafe globals, damaged records
        raise CheckpointError(f"checkpoint {path}: cannot load it as a weights-only checkpoint: {_load_error(exc)}") from None
    if isinstance(blob, dict) and blob.get("format") == LIGHTNING_FORMAT:
        blob = _from_lightning(blob)
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        found = _short(blob.get("format")) if isinstance(blob, dict) else f"a {type(blob).__name__}"
        raise CheckpointError(f"checkpoint {path}: not an Onsets and Frames checkpoint of sightsound (format {found}, "
                              f"expected {CHECKPOINT_FORMAT!r})")
    version = blob.get("version")
    if not (type(version) is int and version == CHECKPOINT_VERSION):
        raise CheckpointError(f"checkpoint {path}: version {_short(version)}, this code reads {CHECKPOINT_VERSION}")
    for key in ("config", "state_dict"):
        if not isinstance(blob.get(key), dict):
            raise CheckpointError(f"checkpoint {path}: no {key} (a dict)")
    step = blob.get("step", 0)
    if type(step) is not int or step < 0:
        raise CheckpointError(f"checkpoint {path}: step {_short(step)}, not a count of steps")
    frontend = blob.get("frontend")
    if frontend is not None:
        if not isinstance(frontend, dict):
            raise CheckpointError(f"checkpoint {path}: a frontend of type {type(frontend).__name__}, not a dict")
        for k, v in FRONTEND.items():
            if frontend.get(k) != v:
                raise CheckpointError(f"checkpoint {path}: trained on another front end: {k} {_short(frontend.get(k))}, "
                                      f"this code computes {v!r}")
    return blob


def expected_state(config: OnsetsFramesConfig) -> tuple[dict[str, tuple[tuple[int, ...], torch.dtype]], int]:
    """The model's ``state_dict`` shapes and dtypes for ``config``, and its parameter count.

    Built on the ``meta`` device: no memory is allocated, whatever the sizes.
    """
    with torch.device("meta"):
        model = OnsetsAndFrames(config)
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    return shapes, parameter_count(model)


@functools.cache
def _paper_parameters() -> int:
    return expected_state(OnsetsFramesConfig.default())[1]


def check_state_dict(model: nn.Module | dict, state: dict, source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` naming every missing, unexpected or mis-shaped tensor.

    ``model`` is a model or :func:`expected_state`'s shapes (so no model needs building).
    """
    if isinstance(model, nn.Module):
        expected = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    else:
        expected = model
    odd = [k for k in state if not isinstance(k, str)]
    if odd:
        raise CheckpointError(f"{source} has state_dict keys that are not names, e.g. {_short(odd[0], 40)}")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = []
    for k in sorted(set(expected) & set(state)):
        v, (shape, dtype) = state[k], expected[k]
        if not isinstance(v, torch.Tensor):
            wrong.append(f"{_name(k)}: a {type(v).__name__} in {source}, a tensor in the model")
        elif tuple(v.shape) != shape:
            wrong.append(f"{_name(k)}: {tuple(v.shape)} in {source}, {shape} in the model")
        elif v.is_floating_point() != dtype.is_floating_point or v.is_complex():
            wrong.append(f"{_name(k)}: {v.dtype} in {source}, {dtype} in the model")

    def names(items):
        return ", ".join(_name(k) for k in items[:8]) + (" ..." if len(items) > 8 else "")

    problems = []
    if missing:
        problems.append(f"missing tensors ({len(missing)}): {names(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors ({len(unexpected)}): {names(unexpected)}")
    if wrong:
        problems.append(f"mismatched shapes ({len(wrong)}): {'; '.join(wrong[:8])}{' ...' if len(wrong) > 8 else ''}")
    if problems:
        raise CheckpointError(f"{source} does not match the Onsets and Frames model of its config: "
                              + " | ".join(problems))


def verify_checkpoint(path: str | os.PathLike) -> tuple[OnsetsFramesConfig, dict]:
    """Check everything about a checkpoint that loading it needs, without building a model.

    Header (:func:`read_checkpoint`, tensors memory-mapped), config fields
    (:meth:`OnsetsFramesConfig.problem`), the model's size (at most
    :data:`SIZE_LIMIT` times the paper's parameters), the tensors' names,
    shapes and kinds against a ``meta``-device model of that config, and
    finite values.  Returns ``(config, blob)``; raises :class:`CheckpointError`
    with a one-line message that names the file.
    """
    blob = read_checkpoint(path, mmap=True)
    config = OnsetsFramesConfig.from_dict(blob["config"], source=f"checkpoint {path}")
    shapes, n_params = expected_state(config)
    limit = SIZE_LIMIT * _paper_parameters()
    if n_params > limit:
        raise CheckpointError(f"checkpoint {path}: its config makes a model of {n_params:,} parameters; at most "
                              f"{limit:,} ({SIZE_LIMIT} x the paper's)")
    check_state_dict(shapes, blob["state_dict"], source=f"checkpoint {path}")
    for k, v in blob["state_dict"].items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"checkpoint {path}: tensor {_name(k)} holds NaN or infinite values")
    return config, blob


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[OnsetsAndFrames, dict]:
    """Build the model a checkpoint describes and load its tensors (strictly); return ``(model, blob)``.

    The model is in eval mode on ``device``.  Everything is checked first
    (:func:`verify_checkpoint`), so a refused file never allocates a model.
    """
    config, blob = verify_checkpoint(path)
    model = OnsetsAndFrames(config)
    model.load_state_dict(blob["state_dict"], strict=True)
    return model.to(device).eval(), blob


def frames_for_seconds(seconds: float) -> int:
    return int(math.ceil(seconds * FRAMES_PER_SECOND))
