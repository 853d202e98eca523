"""Training the visual piano onset model (thesis ch. 6) on PianoYT shards, on the shared trainer.

:class:`PianoOnsetsTask` is the LightningModule: the network of
:mod:`models.piano_onsets` (variant ``resnet``, ``aggregation`` or
``slope``), the class-balanced BCE, Adam (1e-3, betas 0.9 / 0.999) and the
validation scores: loss (the plateau metric: the thesis stops "when the
validation loss plateaued") and window-level onset F1 at the best of 19
thresholds (the metric the best checkpoint is kept by).  The note-level scores with the threshold
chosen on validation are the evaluation's.

:func:`train` is the whole run: windows of the ``train`` split (augmented,
shuffled) minus the validation videos, windows of the validation videos, and
:func:`tasks.training.trainer.fit`.  PianoYT has train and test splits only
(the thesis's 209 "training/validation" videos), so validation is a fixed
share of the train videos: :func:`validation_videos` picks them by a hash
of their ids, the same on every machine and for every variant.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import lightning.pytorch as L
import torch
from pydantic import Field
from pydantic.dataclasses import dataclass

from models.piano_onsets import PianoOnsets, PianoOnsetsConfig, balanced_bce, load_torchvision_init
from tasks.training.trainer import TrainerSettings, fit, make_loader as _loader, seed
from tasks.training.windows import FrameWindows, split_parts


@dataclass
class PianoOnsetsSettings:
    """One training run of the visual onset model: the data, the model, and how the trainer runs."""

    data_root: str = Field(description="the data root of a build-pianoyt build (D, holding D/pianoyt/shards)")
    trainer: TrainerSettings = Field(description="the shared trainer's settings")
    variant: Literal["resnet", "aggregation", "slope"] = Field(
        "slope", description="resnet (5 frames as channels), + aggregation module, + slope module")
    config: Literal["paper", "small"] = Field(
        "small", description="paper: the thesis sizes (145x800, ResNet18 widths 64-512); small: CPU sizes")
    learning_rate: float = Field(1e-3, gt=0, description="Adam's learning rate")
    init_from: str | None = Field(
        None, description="a torchvision resnet18 state dict to start from (e.g. ImageNet weights you have)")
    val_fraction: float = Field(0.125, gt=0, lt=1, description="share of the train videos held out for validation")
    buffer_size: int = Field(256, ge=1, description="shuffle buffer, windows per loader worker")


def validation_videos(video_ids, fraction: float) -> set[str]:
    """At least one, about ``fraction`` of ``video_ids``: those with the smallest SHA-256 of their id."""
    ids = sorted(set(video_ids), key=lambda v: hashlib.sha256(v.encode("utf-8")).hexdigest())
    if len(ids) < 2:
        raise ValueError(f"the train split has {len(ids)} video(s); validation needs at least 2 to hold one out")
    return set(ids[: max(1, round(fraction * len(ids)))])


class OnsetValidation:
    """The onset models' validation (a LightningModule mixin: the visual model's and the audio-visual MLP's):
    ``val_loss`` (class-balanced BCE) and window-level onset P/R at the evaluation's fixed thresholds (synced
    over DDP ranks), ``val_f1`` the best of them.  With the class-balanced loss the outputs sit high (see
    :data:`tasks.evaluation.piano_onsets.THRESHOLDS`), so F1 at 0.5 says little."""

    def init_validation(self) -> None:
        from torchmetrics.classification import BinaryPrecisionRecallCurve

        from tasks.evaluation.piano_onsets import THRESHOLDS

        self.val_curve = BinaryPrecisionRecallCurve(thresholds=torch.tensor(THRESHOLDS))

    def validate_logits(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        self.log("val_loss", balanced_bce(logits, target), prog_bar=True, sync_dist=True, batch_size=len(target))
        self.val_curve.update(torch.sigmoid(logits).flatten().float(), target.flatten().int())

    def on_validation_epoch_end(self) -> None:
        precision, recall, thresholds = self.val_curve.compute()
        # The last point is torchmetrics' (1, 0) end; a threshold nothing passes has precision NaN.
        precision, recall = torch.nan_to_num(precision[:-1], nan=0.0), recall[:-1]
        f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
        best = int(torch.argmax(f1))
        self.log_dict({"val_f1": f1[best], "val_precision": precision[best], "val_recall": recall[best],
                       "val_threshold": thresholds[best]}, prog_bar=True)
        self.val_curve.reset()


class PianoOnsetsTask(OnsetValidation, L.LightningModule):
    """Losses, optimiser and validation metrics of the visual onset model; its network in ``self.net``."""

    monitor = ("val_f1", "max")  # the best checkpoint
    plateau = ("val_loss", "min")  # LR division and early stop
    clip_norm = None  # the thesis clips nothing
    resume_keys = ("variant", "config")  # a last.ckpt of another network is refused, not half-loaded

    def __init__(self, variant: str = "slope", config: str = "small", learning_rate: float = 1e-3,
                 init_from: str | None = None):
        super().__init__()
        self.save_hyperparameters()  # plain values only, so checkpoints load with weights_only=True
        self.net = PianoOnsets(PianoOnsetsConfig.named(config, variant))
        if init_from:
            load_torchvision_init(self.net, init_from)
        self.init_validation()

    @property
    def input_size(self) -> tuple[int, int]:
        c = self.net.config
        return c.height, c.crop_width

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames)

    def training_step(self, batch, batch_idx):
        loss = balanced_bce(self(batch["frames"]), batch["target"])
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["target"]))
        return loss

    def validation_step(self, batch, batch_idx):
        self.validate_logits(self(batch["frames"]), batch["target"])


    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate, betas=(0.9, 0.999))


def shard_videos(data_root: str, split: str) -> list[str]:
    from tasks.datasets.pianoyt import layout
    from tasks.training.windows import chain_of

    shards = layout(data_root).shards
    return sorted({chain_of(p) for p in split_parts(shards, split)})


def train(settings: PianoOnsetsSettings, log=print, callbacks=()) -> dict:
    """Train under ``settings.trainer.run_dir``; return the trainer's summary with the validation videos."""
    run = Path(settings.trainer.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    videos = shard_videos(settings.data_root, "train")
    held_out = validation_videos(videos, settings.val_fraction)
    seed(settings.trainer)  # the initial weights follow --seed
    module = PianoOnsetsTask(settings.variant, settings.config, settings.learning_rate, settings.init_from)
    size = module.input_size
    common = dict(size=size, seed=settings.trainer.seed)
    train_set = FrameWindows.from_root(settings.data_root, "train", shuffle=True, augment=True,
                                       buffer_size=settings.buffer_size, videos=set(videos) - held_out, **common)
    val_set = FrameWindows.from_root(settings.data_root, "train", videos=held_out, **common)
    log(f"piano-onsets {settings.variant}/{settings.config}: {len(videos) - len(held_out)} train videos, "
        f"validation on {sorted(held_out)}")
    (run / "run_settings.json").write_text(json.dumps(
        {"piano_onsets": {k: v for k, v in vars(settings).items() if k != "trainer"},
         "trainer": vars(settings.trainer), "validation_videos": sorted(held_out)}, indent=1, default=str) + "\n")
    summary = fit(module, _loader(train_set, settings.trainer, True), _loader(val_set, settings.trainer, False),
                  settings.trainer, callbacks)
    return {**summary, "validation_videos": sorted(held_out), "variant": settings.variant, "config": settings.config}
