"""Training the audio-visual synchronisation network (thesis ch. 7) on PianoYT shards and their audio.

:class:`SyncTask` is the LightningModule: the two streams of
:mod:`models.av_sync`, the contrastive loss (margin 1), Adam (1e-4, betas
0.9 / 0.999; "training was stopped when the validation loss plateaued": the
shared trainer's plateau rule on ``val_loss``) and the batch's pairs:

* **positives**: the 5 frames centred on frame t and the 0.2 s of audio
  centred on t (the window's audio context, :class:`tasks.training.windows.SyncLabels`,
  holds ``max_shift`` seconds on either side of that segment);
* **negatives from the same video**: the same frames with a 0.2 s segment
  of the context shifted by at least its own length (the windows of
  picture and sound do not overlap) and at most ``max_shift``, sign and
  size uniform;
* **negatives from other videos**: the frames of window i with the matching
  audio of window i + 1 of the shuffled batch, left out where the two
  windows are of the same video and less than a segment apart.

Every window gives one pair of each kind; positives and negatives each carry
half the loss (:func:`models.av_sync.contrastive_loss`).  Validation draws
its shifts from a generator seeded by the batch's index, so the validation
loss is the same set of pairs at every validation.  Besides the loss it logs
``val_pair_accuracy``: the share of windows whose matching audio is nearer
than the shifted audio of the same video (0.5 by chance).

No augmentation: the chapter uses none (its discussion names augmentation
as a next step).  PianoYT has train and test splits; validation is the
share of the train videos :func:`tasks.training.piano_onsets.validation_videos`
holds out, the same videos the onset model validates on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import lightning.pytorch as L
import torch
from pydantic import Field
from pydantic.dataclasses import dataclass

from models.av_sync import SyncConfig, SyncNet, contrastive_loss, pair_distance
from tasks.training.trainer import CheckpointError, TrainerSettings, fit, make_loader, read_checkpoint, seed

FORMAT = "sightsound/av-sync"


@dataclass
class SyncSettings:
    """One training run of the sync network: the data, the model, and how the trainer runs."""

    data_root: str = Field(description="the data root of a build-pianoyt build (D, holding D/pianoyt/shards "
                                       "and D/pianoyt/audio)")
    trainer: TrainerSettings = Field(description="the shared trainer's settings")
    config: Literal["paper", "small"] = Field(
        "small", description="paper: the thesis's streams (145x800 frames, CREPE-size audio net); small: CPU sizes")
    learning_rate: float = Field(1e-4, gt=0, description="Adam's learning rate")
    max_shift: float = Field(2.0, gt=0, le=10, description="same-video negatives are shifted by at most this, s")
    val_fraction: float = Field(0.125, gt=0, lt=1, description="share of the train videos held out for validation")
    buffer_size: int = Field(256, ge=1, description="shuffle buffer, windows per loader worker")


def context_samples(config: SyncConfig, max_shift: float) -> int:
    """The audio context a window carries: the segment plus ``max_shift`` seconds on either side."""
    return config.audio_samples + 2 * int(round(max_shift * config.sample_rate))


class SyncTask(L.LightningModule):
    """Contrastive training of :class:`models.av_sync.SyncNet`; the network in ``self.net``."""

    monitor = ("val_loss", "min")  # the best checkpoint
    plateau = ("val_loss", "min")  # LR division and early stop: "stopped when the validation loss plateaued"
    clip_norm = None  # the thesis clips nothing
    resume_keys = ("config",)  # a last.ckpt of the other size is refused, not half-loaded

    def __init__(self, config: str = "small", learning_rate: float = 1e-4, max_shift: float = 2.0):
        super().__init__()
        self.save_hyperparameters()  # plain values only, so checkpoints load with weights_only=True
        self.net = SyncNet(SyncConfig.named(config))
        c = self.net.config
        self.segment = c.audio_samples
        self.shift = int(round(max_shift * c.sample_rate))
        if self.shift < self.segment:
            raise ValueError(f"max_shift {max_shift} s leaves no room for a non-overlapping segment of "
                             f"{c.seconds} s; use at least {c.seconds} s")

    @property
    def input_size(self) -> tuple[int, int]:
        return self.net.config.height, self.net.config.crop_width

    @property
    def context_samples(self) -> int:
        return self.segment + 2 * self.shift

    def _cut(self, context: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        """The segment of each context row shifted by ``shifts`` samples from its centre: ``[B, segment]``."""
        starts = self.shift + shifts  # the centred segment starts at self.shift
        index = starts[:, None] + torch.arange(self.segment, device=context.device)[None, :]
        return torch.gather(context, 1, index)

    def _random_shifts(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        size = torch.randint(self.segment, self.shift + 1, (n,), generator=generator)
        sign = torch.randint(0, 2, (n,), generator=generator) * 2 - 1
        return size * sign

    def pair_distances(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Distances of the positives, the same-video negatives and the other-video negatives of ``batch``."""
        context = batch["audio"]
        n = len(context)
        if context.shape[1] != self.context_samples:
            raise ValueError(f"audio context of {context.shape[1]} samples, expected {self.context_samples}")
        v = self.net.visual(batch["frames"])
        shifts = self._random_shifts(n, generator).to(context.device)
        matching = self._cut(context, torch.zeros_like(shifts))
        a = self.net.audio(torch.cat([matching, self._cut(context, shifts)]))
        a_pos, a_same = a[:n], a[n:]
        out = {"positive": pair_distance(v, a_pos), "same_video": pair_distance(v, a_same)}
        if n > 1:
            other = torch.roll(torch.arange(n), -1)
            video = list(batch["video_id"])
            time = torch.as_tensor(batch["time"], dtype=torch.float64)
            apart = (time - time[other]).abs() >= self.net.config.seconds
            keep = torch.tensor([video[i] != video[int(j)] for i, j in enumerate(other)]) | apart
            out["other_video"] = pair_distance(v[keep.to(v.device)], a_pos[other][keep].to(v.device))
        return out

    def _loss(self, d: dict[str, torch.Tensor]) -> torch.Tensor:
        negatives = torch.cat([d["same_video"], *([d["other_video"]] if "other_video" in d else [])])
        distance = torch.cat([d["positive"], negatives])
        matching = torch.cat([torch.ones_like(d["positive"], dtype=torch.bool),
                              torch.zeros_like(negatives, dtype=torch.bool)])
        return contrastive_loss(distance, matching, margin=1.0)

    def training_step(self, batch, batch_idx):
        d = self.pair_distances(batch)
        loss = self._loss(d)
        size = len(batch["audio"])
        self.log("train_loss", loss, prog_bar=True, batch_size=size)
        self.log_dict({"train_d_positive": d["positive"].mean(), "train_d_same_video": d["same_video"].mean()},
                      batch_size=size)
        return loss

    def validation_step(self, batch, batch_idx):
        generator = torch.Generator().manual_seed(10_007 * int(batch_idx) + 1)
        d = self.pair_distances(batch, generator)
        size = len(batch["audio"])
        self.log("val_loss", self._loss(d), prog_bar=True, sync_dist=True, batch_size=size)
        self.log("val_pair_accuracy", (d["positive"] < d["same_video"]).float().mean(), prog_bar=True,
                 sync_dist=True, batch_size=size)
        self.log_dict({"val_d_positive": d["positive"].mean(), "val_d_same_video": d["same_video"].mean()},
                      sync_dist=True, batch_size=size)


    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate, betas=(0.9, 0.999))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["format"] = FORMAT  # what load_net checks (a piano or violin checkpoint is refused by it)


def sync_windows(data_root: str, module: SyncTask, videos, *, train: bool, seed_value: int, buffer_size: int = 256):
    """The windows (frames and audio context) of ``videos`` of the train split."""
    from tasks.datasets.pianoyt import layout
    from tasks.training.windows import FrameWindows, SyncLabels

    lay = layout(data_root)
    labels = SyncLabels(lay.root, module.net.config.sample_rate, module.context_samples)
    return FrameWindows(lay.shards, "train", labels=labels, shuffle=train, buffer_size=buffer_size,
                        seed=seed_value, size=module.input_size, videos=set(videos))


def check_data(data_root: str) -> list[str]:
    """The train videos of a pianoyt build whose audio is there; ValueError (one line) otherwise."""
    from tasks.datasets.pianoyt import layout
    from tasks.training.piano_onsets import shard_videos
    from tasks.store import storage

    lay = layout(data_root)
    videos = shard_videos(data_root, "train")
    if not videos:
        raise ValueError(f"{lay.shards}: no pianoyt shards of the train split (build pianoyt first)")
    missing = [v for v in videos if not storage.exists(storage.join(lay.root, "audio", f"{v}.wav"))]
    if missing:
        raise ValueError(f"{storage.join(lay.root, 'audio', missing[0] + '.wav')}: the build's audio of "
                         f"{len(missing)} train video(s) is missing; the sync network needs it (rebuild)")
    return videos


def load_net(path: str | Path) -> tuple[SyncNet, dict]:
    """The network of a sync checkpoint and its hyperparameters; CheckpointError (one line) for anything else."""
    ckpt = read_checkpoint(path)
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an av-sync checkpoint of train av-sync")
    h = dict(ckpt.get("hyper_parameters") or {})
    net = SyncNet(SyncConfig.named(h.get("config", "small")))
    state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: its weights do not fit the {h.get('config')} sync network "
                              f"({str(exc).splitlines()[0]})") from None
    return net.eval(), h


def train(settings: SyncSettings, log=print, callbacks=()) -> dict:
    """Train under ``settings.trainer.run_dir``; return the trainer's summary with the validation videos."""
    from tasks.training.piano_onsets import validation_videos

    run = Path(settings.trainer.run_dir)
    videos = check_data(settings.data_root)
    held_out = validation_videos(videos, settings.val_fraction)
    run.mkdir(parents=True, exist_ok=True)
    seed(settings.trainer)  # the initial weights follow --seed
    module = SyncTask(settings.config, settings.learning_rate, settings.max_shift)
    s = settings.trainer.seed
    train_set = sync_windows(settings.data_root, module, set(videos) - held_out, train=True, seed_value=s,
                             buffer_size=settings.buffer_size)
    val_set = sync_windows(settings.data_root, module, held_out, train=False, seed_value=s)
    log(f"av-sync/{settings.config}: {len(videos) - len(held_out)} train videos, validation on {sorted(held_out)}")
    (run / "run_settings.json").write_text(json.dumps(
        {"av_sync": {k: v for k, v in vars(settings).items() if k != "trainer"},
         "trainer": vars(settings.trainer), "validation_videos": sorted(held_out)}, indent=1, default=str) + "\n")
    summary = fit(module, make_loader(train_set, settings.trainer, True), make_loader(val_set, settings.trainer, False),
                  settings.trainer, callbacks)
    return {**summary, "validation_videos": sorted(held_out), "config": settings.config}
