"""Onsets from noisy audio (thesis ch. 6, table 2): features of both networks on noisy mixtures, and the MLP's training.

The experiment
--------------
Each video's audio (the build's ``audio/<video_id>.wav``) is mixed with
*other piano audio* at a signal-to-noise ratio ``snr`` (1: the noise has the
power of the music): the track of another video of the same group,
looped or cut to length (:func:`noise_partners`, :func:`mix_at_snr`).  The
groups are kept apart, so no music is shared between training, validation and
test: the train videos the MLP learns on, the validation videos (those the
visual model's run held out, else ``val_fraction`` of the train split) and the
test split.  A group of one video is mixed with itself shifted by half its length.

Features, one row per 5-frame window of a video (:class:`FeatureExtractor`):

* **audio**: Onsets and Frames (a checkpoint of ``train onsets-frames``) on the
  noisy mixture, its onset BiLSTM output (the "final feature vector",
  :meth:`models.onsets_frames.OnsetsAndFrames.onset_features`) and onset
  probabilities, at 31.25 frames per second, put on the video's frames by
  taking the maximum over the audio frames within +-1.5 video frames of the
  window's middle frame (the targets mark an onset within +-1 frame: the span
  they cover; the thesis does not say how it aligned the two rates);
* **visual**: the visual onset model (a checkpoint of ``train piano-onsets``)
  on the window, its pooled layer4 features and its onset probabilities;
* the window's target (the build's pseudo-labels, clean audio) and, for the
  table's reference row, Onsets and Frames' probabilities on the clean audio.

Both networks are frozen; only :class:`models.av_mlp.FusionMLP` trains, on
the train videos' noisy windows, with the visual model's loss (class-balanced
BCE, :func:`models.piano_onsets.balanced_bce`) and validation metrics
(:class:`tasks.training.piano_onsets.OnsetValidation`).  The thesis gives no
optimiser for it: Adam 1e-3 and the shared trainer's plateau rule on the
validation loss.  Features are computed once per video and cached under the
run's ``features/`` folder (an ``.npz`` per video, keyed by the checkpoints, the
SNR and the noise partner), so a resumed run and the evaluation do not
recompute them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass as plain_dataclass
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import torch
from pydantic import Field
from pydantic.dataclasses import dataclass

from models.av_mlp import FusionMLP
from models.piano_onsets import balanced_bce
from tasks.training.piano_onsets import OnsetValidation
from tasks.training.trainer import CheckpointError, TrainerSettings, fit, make_loader, read_checkpoint, seed

FORMAT = "sightsound/av-mlp"
SPAN_FRAMES = 1.5  # audio frames within +- this many video frames of a window's middle frame are pooled


@dataclass
class AvMlpSettings:
    """One training run of the audio-visual MLP: the data, the two frozen networks, the mixture, the trainer."""

    data_root: str = Field(description="the data root of a build-pianoyt build (D, holding D/pianoyt/shards "
                                       "and D/pianoyt/audio)")
    onsets_frames: str = Field(description="a checkpoint of train onsets-frames (the audio network)",
                               json_schema_extra={"input": True})
    visual: str = Field(description="a checkpoint of train piano-onsets (the visual network; ResNet + aggregation "
                                    "+ slope in the thesis)", json_schema_extra={"input": True})
    trainer: TrainerSettings = Field(description="the shared trainer's settings")
    snr: float = Field(1.0, gt=0, description="signal-to-noise power ratio of the mixtures (the thesis: 1)")
    mix_seed: int = Field(0, description="which video's audio is mixed into which")
    learning_rate: float = Field(1e-3, gt=0, description="Adam's learning rate")
    val_fraction: float = Field(0.125, gt=0, lt=1, description="share of the train videos held out for validation "
                                                               "when the visual run names none")


# ----------------------------------------------------------------------------- the noisy mixtures


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr: float, roll: int = 0) -> np.ndarray:
    """``clean + g * noise`` with ``g`` such that power(clean) / power(g * noise) = ``snr``.

    ``noise`` is rolled by ``roll`` samples, then looped or cut to the length of
    ``clean``; silent noise (or silent music) leaves ``clean`` as it is.
    """
    clean = np.asarray(clean, np.float32)
    if not len(clean) or not len(noise):
        return clean.copy()
    noise = np.resize(np.roll(np.asarray(noise, np.float32), roll), len(clean))
    p_clean, p_noise = float(np.mean(clean.astype(np.float64) ** 2)), float(np.mean(noise.astype(np.float64) ** 2))
    if p_noise == 0 or p_clean == 0:
        return clean.copy()
    return (clean + np.sqrt(p_clean / (snr * p_noise)) * noise).astype(np.float32)


def noise_partners(videos, seed_value: int) -> dict[str, str]:
    """Which video's audio is mixed into each of ``videos``: a cycle through them in an order drawn from
    ``seed_value`` (each video is some other's noise exactly once); a lone video is its own partner."""
    order = sorted(videos)
    order = [order[i] for i in np.random.default_rng(seed_value).permutation(len(order))]
    return {v: order[(i + 1) % len(order)] for i, v in enumerate(order)}


# ----------------------------------------------------------------------------- features


def audio_outputs(net, audio: np.ndarray, chunk_frames: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Onsets and Frames on 16 kHz ``audio``: ``(features [T, 2 * onset_lstm_units], onset probabilities [T, 88])``,
    float32, in chunks of ``chunk_frames`` mel frames (the BiLSTM sees one chunk at a time)."""
    from models.onsets_frames import MelFrontEnd

    net.eval()
    with torch.inference_mode():
        mel = MelFrontEnd()(torch.from_numpy(np.ascontiguousarray(audio, np.float32)))
        feats, probs = [], []
        for start in range(0, mel.shape[0], chunk_frames):  # mel: (frames, n_mels)
            f, logits = net.onset_features(mel[None, start:start + chunk_frames])
            feats.append(f[0].float().numpy())
            probs.append(torch.sigmoid(logits[0]).float().numpy())
    return np.concatenate(feats), np.concatenate(probs)


def on_frames(values: np.ndarray, rate: float, frame_index: np.ndarray, fps: float,
              span: float = SPAN_FRAMES) -> np.ndarray:
    """``values`` ([T, D] at ``rate`` per second) on video frames ``frame_index`` (at ``fps``): for each frame t the
    maximum over the rows whose times lie within ``span`` frames of t/fps (the nearest row where none does)."""
    out = np.zeros((len(frame_index), values.shape[1]), np.float32)
    if not len(values):
        return out
    for i, t in enumerate(np.asarray(frame_index, np.float64)):
        lo = max(0, int(np.ceil((t - span) / fps * rate)))
        hi = min(len(values) - 1, int(np.floor((t + span) / fps * rate)))
        if hi < lo:
            lo = hi = min(len(values) - 1, max(0, int(round(t / fps * rate))))
        out[i] = values[lo:hi + 1].max(axis=0)
    return out


@plain_dataclass
class VideoFeatures:
    """One video's windows: what the MLP learns from and what the table scores."""

    video_id: str
    fps: float
    frame_index: np.ndarray  # int64 [n], the windows' middle frames
    target: np.ndarray  # uint8 [n, 88], the build's pseudo-labels (an onset within +-1 frame)
    visual: np.ndarray  # float32 [n, V], the visual model's pooled features
    visual_probs: np.ndarray  # float32 [n, 88]
    audio: np.ndarray  # float32 [n, A], Onsets and Frames' features on the noisy mixture
    audio_probs: np.ndarray  # float32 [n, 88], its onset probabilities on the noisy mixture
    clean_probs: np.ndarray  # float32 [n, 88], its onset probabilities on the clean audio

    def save(self, path: Path, key: str) -> None:
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, key=key, **{k: v for k, v in vars(self).items()})
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, key: str) -> "VideoFeatures | None":
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            return cls(**{k: (z[k].item() if z[k].ndim == 0 else z[k]) for k in cls.__dataclass_fields__})


class FeatureExtractor:
    """Both frozen networks over one pianoyt build; :meth:`features` gives a video's :class:`VideoFeatures`."""

    def __init__(self, data_root: str, onsets_frames: str, visual: str, snr: float, cache_dir: str | Path | None):
        from models import onsets_frames as of
        from tasks.datasets.pianoyt import layout
        from tasks.evaluation.piano_onsets import load_module
        from tasks.store.cache import file_fingerprint
        from tasks.training.windows import AudioTracks

        self.layout, self.snr = layout(data_root), float(snr)
        self.audio_net, _ = of.load_checkpoint(onsets_frames)
        self.visual = load_module(visual)
        self.rate = of.FRAMES_PER_SECOND
        self.tracks = AudioTracks(self.layout.root, cache=8, sample_rate=of.SAMPLE_RATE)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._stamp = f"{file_fingerprint(onsets_frames)}|{file_fingerprint(visual)}|snr={self.snr:g}"

    def track(self, video_id: str) -> np.ndarray:
        from tasks.store import storage

        if not storage.exists(storage.join(self.layout.root, "audio", f"{video_id}.wav")):
            raise ValueError(f"{storage.join(self.layout.root, 'audio', video_id + '.wav')}: the build's audio "
                             "is missing; the noisy mixtures need it (rebuild)")
        return self.tracks.track(f"audio/{video_id}.wav")

    def features(self, split: str, video_id: str, partner: str) -> VideoFeatures:
        key = hashlib.sha1(f"{self._stamp}|{split}|{video_id}|{partner}".encode()).hexdigest()
        path = self.cache_dir / f"{split}-{video_id}.npz" if self.cache_dir else None
        cached = VideoFeatures.load(path, key) if path else None
        if cached is not None:
            return cached
        out = self._compute(split, video_id, partner)
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            out.save(path, key)
        return out

    def _compute(self, split: str, video_id: str, partner: str) -> VideoFeatures:
        from tasks.training.windows import video_windows

        index, target, feats, probs, batch = [], [], [], [], []

        def flush():
            if batch:
                with torch.no_grad():
                    stages = self.visual.net.forward_stages(torch.stack(batch))
                feats.append(stages["avgpool"].float().numpy())
                probs.append(torch.sigmoid(stages["fc"]).float().numpy())
                batch.clear()

        for w in video_windows(self.layout.shards, split, video_id, size=self.visual.input_size):
            batch.append(w["frames"])
            index.append(w["frame_index"])
            target.append(w["target"].numpy().astype(np.uint8))
            if len(batch) == 32:
                flush()
        flush()
        fps = _fps(self.layout.shards, split, video_id)
        index = np.asarray(index, np.int64)
        clean = self.track(video_id)
        noise = self.track(partner)
        noisy = mix_at_snr(clean, noise, self.snr, roll=len(noise) // 2 if partner == video_id else 0)
        a_feats, a_probs = audio_outputs(self.audio_net, noisy)
        _, c_probs = audio_outputs(self.audio_net, clean)
        n_vis = feats[0].shape[1] if feats else self.visual.net.fc.in_features
        return VideoFeatures(
            video_id, fps, index, np.asarray(target, np.uint8).reshape(-1, 88),
            np.concatenate(feats) if feats else np.zeros((0, n_vis), np.float32),
            np.concatenate(probs) if probs else np.zeros((0, 88), np.float32),
            on_frames(a_feats, self.rate, index, fps), on_frames(a_probs, self.rate, index, fps),
            on_frames(c_probs, self.rate, index, fps))


def _fps(shards_dir: str, split: str, video_id: str) -> float:
    import pyarrow.dataset as ds

    table = ds.dataset(f"{shards_dir}/split={split}", format="parquet").to_table(
        columns=["frame_index", "time"], filter=ds.field("video_id") == video_id)
    fi, t = table.column("frame_index").to_numpy(), table.column("time").to_numpy()
    return float(np.median(fi[fi > 0] / t[fi > 0])) if np.any(fi > 0) else 25.0


def groups(data_root: str, visual: str, val_fraction: float) -> dict[str, list[str]]:
    """The three groups of videos (``train``, ``validation``: both of the train split; ``test``).  Validation is
    the visual model's run's (``run_settings.json`` beside its ``checkpoints/``), so neither network trained on it."""
    from tasks.training.piano_onsets import shard_videos, validation_videos

    videos = shard_videos(data_root, "train")
    if not videos:
        raise ValueError(f"{data_root}: no pianoyt shards of the train split (build pianoyt first)")
    settings_file = Path(visual).resolve().parent.parent / "run_settings.json"
    held = set(json.loads(settings_file.read_text()).get("validation_videos", [])) if settings_file.is_file() else None
    held = (held & set(videos)) if held else validation_videos(videos, val_fraction)
    return {"train": sorted(set(videos) - held), "validation": sorted(held),
            "test": shard_videos(data_root, "test")}


def group_features(extractor: FeatureExtractor, split: str, videos: list[str], mix_seed: int,
                   log=print) -> list[VideoFeatures]:
    partners = noise_partners(videos, mix_seed)
    out = []
    for v in videos:
        out.append(extractor.features(split, v, partners[v]))
        log(f"features: {split} {v} (noise from {partners[v]}): {len(out[-1].frame_index)} windows")
    return out


# ----------------------------------------------------------------------------- the MLP's training


class AvMlpTask(OnsetValidation, L.LightningModule):
    """Training of :class:`models.av_mlp.FusionMLP` on precomputed features; the network in ``self.net``."""

    monitor = ("val_f1", "max")
    plateau = ("val_loss", "min")
    clip_norm = None
    resume_keys = ("audio_dim", "visual_dim", "onsets_frames", "visual", "snr", "mix_seed")

    def __init__(self, audio_dim: int, visual_dim: int, learning_rate: float = 1e-3, onsets_frames: str = "",
                 visual: str = "", snr: float = 1.0, mix_seed: int = 0):
        super().__init__()
        self.save_hyperparameters()  # plain values only, so checkpoints load with weights_only=True
        self.net = FusionMLP(audio_dim, visual_dim)
        self.init_validation()

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return self.net(audio, visual)

    def training_step(self, batch, batch_idx):
        audio, visual, target = batch
        loss = balanced_bce(self(audio, visual), target)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(target))
        return loss

    def validation_step(self, batch, batch_idx):
        audio, visual, target = batch
        self.validate_logits(self(audio, visual), target)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["format"] = FORMAT


def feature_dataset(videos: list[VideoFeatures]):
    from torch.utils.data import TensorDataset

    def cat(name):
        return torch.from_numpy(np.concatenate([getattr(v, name) for v in videos]).astype(np.float32))

    return TensorDataset(cat("audio"), cat("visual"), cat("target"))


def load_task(path: str | Path) -> AvMlpTask:
    """The MLP of a train av-mlp checkpoint, in eval mode; CheckpointError (one line) for anything else."""
    ckpt = read_checkpoint(path)
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a checkpoint of train av-mlp")
    task = AvMlpTask(**ckpt["hyper_parameters"])
    task.load_state_dict(ckpt["state_dict"])
    return task.eval()


def check_settings(settings: AvMlpSettings) -> None:
    """Refuse, in one line, checkpoints of the wrong kind and a build without shards or audio."""
    from models import onsets_frames as of
    from tasks.evaluation.piano_onsets import load_module

    of.verify_checkpoint(settings.onsets_frames)
    load_module(settings.visual)
    groups(settings.data_root, settings.visual, settings.val_fraction)


def train(settings: AvMlpSettings, log=print, callbacks=()) -> dict:
    """Features of the train and validation videos (cached), then the MLP under ``settings.trainer.run_dir``."""
    run = Path(settings.trainer.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    split = groups(settings.data_root, settings.visual, settings.val_fraction)
    if not split["train"] or not split["validation"]:
        raise ValueError(f"{settings.data_root}: the MLP needs train and validation videos, has {split}")
    extractor = FeatureExtractor(settings.data_root, settings.onsets_frames, settings.visual, settings.snr,
                                 run / "features")
    train_f = group_features(extractor, "train", split["train"], settings.mix_seed, log)
    val_f = group_features(extractor, "train", split["validation"], settings.mix_seed, log)
    seed(settings.trainer)
    module = AvMlpTask(train_f[0].audio.shape[1], train_f[0].visual.shape[1], settings.learning_rate,
                       str(Path(settings.onsets_frames).resolve()), str(Path(settings.visual).resolve()),
                       settings.snr, settings.mix_seed)
    log(f"av-mlp: {sum(len(v.frame_index) for v in train_f)} train windows of {len(train_f)} videos, validation on "
        f"{split['validation']}; SNR {settings.snr:g}")
    (run / "run_settings.json").write_text(json.dumps(
        {"av_mlp": {k: v for k, v in vars(settings).items() if k != "trainer"},
         "trainer": vars(settings.trainer), "validation_videos": split["validation"]}, indent=1, default=str) + "\n")
    summary = fit(module, make_loader(feature_dataset(train_f), settings.trainer, True),
                  make_loader(feature_dataset(val_f), settings.trainer, False), settings.trainer, callbacks)
    return {**summary, "validation_videos": split["validation"]}
