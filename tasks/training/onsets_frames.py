"""Training Onsets and Frames on a MAESTRO-layout folder, on the shared trainer (:mod:`tasks.training.trainer`).

:class:`OnsetsFramesTask` is the LightningModule: the network of
:mod:`models.onsets_frames`, its losses (:func:`models.onsets_frames.onsets_frames_loss`),
Magenta's optimiser (Adam at 6e-4, multiplied by 0.98 every 10k steps: a
``StepLR`` stepped after every optimiser step, so no plateau rule:
``plateau = None``), the gradient-norm clip of 3, and the validation scores:
note-level precision, recall and F1 on onsets, F1 with offsets and frame
P/R/F1 (:func:`tasks.evaluation.scores.transcription_scores`, the mean over
the validation pieces of the whole-piece transcriptions); ``val_onset_f1``
is the metric the best checkpoint is kept by.

:class:`TrainingWindows` is the training data: an endless
``IterableDataset`` of whole batches, the batch of optimiser step ``s``
drawn from ``numpy.random.default_rng([seed, s])`` by
:class:`tasks.datasets.maestro.WindowSampler`, so a resumed run (and a run
with several loader workers, which take every n-th step) sees the same
windows as an uninterrupted one.  :class:`ValidationPieces` gives one whole
validation recording (log-mel and reference notes) per item.

:func:`train` is the whole run: the features of the ``train`` and
``validation`` splits (computed once, cached), then
:func:`tasks.training.trainer.fit`, which writes under ``out_dir``::

    checkpoints/last.ckpt   the latest state (model, optimiser, LR schedule, loops), resumed automatically
    checkpoints/best.ckpt   the state with the best validation onset F1 so far (what the labeler reads)
    metrics.csv             by step: train losses and lr, validation scores, wall_s
    logs/, events.out.*     Lightning's CSV logs and TensorBoard events
    summary.json            steps, wall time, best score, why it stopped
    run_settings.json       the settings of the latest run
    features/               cached log-mel and label rolls per recording (tasks.datasets.maestro)

Checkpoints of the hand-written loop this replaced (``last.pt``/``best.pt``,
format ``sightsound/onsets-frames``) still label (``--checkpoint``), but a
run folder holding one is refused by :func:`check_resume` (one line): the
new trainer cannot go on from its state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import lightning.pytorch as L
import numpy as np
import torch
from pydantic import Field, field_validator
from pydantic.dataclasses import dataclass
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from models import onsets_frames as of
from tasks.training.trainer import CheckpointError, TrainerSettings, fit, read_checkpoint, seed

VALIDATION_KEYS = ("onset_precision", "onset_recall", "onset_f1", "onset_offset_f1", "frame_precision",
                   "frame_recall", "frame_f1")


@dataclass
class TrainSettings:
    """One training run; the flow's parameter and the source of ``sightsound train onsets-frames``'s flags."""

    data: str = Field(description="a MAESTRO-layout folder (or its CSV)", json_schema_extra={"input": True})
    out_dir: str = Field(description="folder for checkpoints, logs and cached features",
                         json_schema_extra={"flag": "out"})
    config: Literal["small", "default"] = Field(
        "small", description="model sizes: small (CPU) or default (the paper's)")
    batch_size: int = Field(8, ge=1, description="windows per step")
    window_seconds: float = Field(5.12, gt=0, description="training window length, s (5.12: 160 frames)")
    learning_rate: float = Field(6e-4, gt=0, description="Adam's learning rate")
    lr_decay_steps: int = Field(10000, ge=1, description="steps between learning-rate decays")
    lr_decay_rate: float = Field(0.98, gt=0, le=1, description="learning-rate factor at each decay")
    clip_norm: float = Field(3.0, gt=0, description="gradient-norm clip")
    max_steps: int = Field(50000, ge=1, description="total training steps (a resumed run goes on to this)")
    max_minutes: float | None = Field(None, gt=0,
                                      description="wall-time budget of the training, minutes (across resumes)")
    validate_every: int = Field(250, ge=1, description="steps between validations")
    log_every: int = Field(25, ge=1, description="steps between logged training losses")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="cpu, cuda or auto")
    amp: Literal["auto", "on", "off"] = Field(
        "auto", description="mixed precision: auto (bf16 on CUDA where supported, else fp16; none on the CPU), "
                            "on (fp16 with a gradient scaler, CUDA only), off")
    seed: int = Field(0, description="random seed (model, windows)")
    resume: bool = Field(True, description="resume from OUT/checkpoints/last.ckpt when it exists")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's)")
    cache_dir: str | None = Field(None, description="cached features (default: OUT/features)")
    num_workers: int = Field(0, ge=0, description="loader worker processes drawing the training windows")
    progress_bar: bool = Field(True, description="Lightning's progress bar in the terminal")

    @field_validator("data", "out_dir", "cache_dir")
    @classmethod
    def _absolute(cls, value):
        return None if value is None else str(Path(value).resolve())

    def trainer_settings(self) -> TrainerSettings:
        """The shared trainer's settings of this run (the plateau fields are unused: ``plateau = None``)."""
        precision = {"auto": "auto", "on": "16-mixed", "off": "32"}[self.amp]
        if self.amp == "on" and _accelerator(self.device) != "cuda":
            raise ValueError("amp=on (float16) needs a CUDA device; use amp off or auto on the CPU")
        return TrainerSettings(
            run_dir=self.out_dir, max_steps=self.max_steps, max_minutes=self.max_minutes,
            val_every=self.validate_every, log_every=self.log_every, batch_size=self.batch_size,
            num_workers=self.num_workers, precision=precision, clip_norm=self.clip_norm, seed=self.seed,
            accelerator=self.device, devices=1, resume=self.resume, progress_bar=self.progress_bar)


def _accelerator(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


class OnsetsFramesTask(L.LightningModule):
    """Losses, optimiser, LR schedule and validation scores of Onsets and Frames; its network in ``self.net``."""

    monitor = ("val_onset_f1", "max")  # the best checkpoint
    plateau = None  # Magenta's schedule: x lr_decay_rate every lr_decay_steps steps, no plateau rule, no early stop
    clip_norm = 3.0  # Magenta's gradient-norm clip (TrainSettings.clip_norm overrides it)
    resume_keys = ("config",)  # a last.ckpt of the other size is refused, not half-loaded

    def __init__(self, config: str = "small", learning_rate: float = 6e-4, lr_decay_steps: int = 10000,
                 lr_decay_rate: float = 0.98):
        super().__init__()
        self.save_hyperparameters()  # plain values only, so checkpoints load with weights_only=True
        self.net = of.OnsetsAndFrames(of.OnsetsFramesConfig.named(config))
        self._scores: list[dict] = []
        self.last_validation: dict | None = None

    def forward(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(mel)

    def training_step(self, batch, batch_idx):
        losses = of.onsets_frames_loss(self(batch["mel"]), batch, activation_loss=self.net.config.activation_loss)
        size = len(batch["mel"])
        self.log("train_loss", losses["total"], prog_bar=True, batch_size=size)
        self.log_dict({f"train_{k}": v for k, v in losses.items() if k != "total"}, batch_size=size)
        self.log("lr", self.lr_schedulers().get_last_lr()[0], batch_size=size)
        return losses["total"]

    def validation_step(self, batch, batch_idx):
        from tasks.evaluation.scores import transcription_scores
        from tasks.labels.transcribe import Note

        probs = of.predict(self.net, batch["mel"])
        est = [Note(*n) for n in of.decode_notes(probs["onset"], probs["frame"], probs["velocity"])]
        ref = [Note(float(a), float(b), int(p), int(v)) for a, b, p, v in batch["notes"].cpu().tolist()]
        self._scores.append(transcription_scores(ref, est))

    def on_validation_epoch_end(self) -> None:
        rows, self._scores = self._scores, []
        scores = {k: float(np.mean([r[k] for r in rows])) if rows else 0.0 for k in VALIDATION_KEYS}
        for k, v in scores.items():
            self.log(f"val_{k}", v, prog_bar=k == "onset_f1")
        self.last_validation = {**{k: round(v, 4) for k, v in scores.items()}, "pieces": len(rows),
                                "step": int(self.global_step)}

    def configure_optimizers(self):
        h = self.hparams
        optimizer = torch.optim.Adam(self.parameters(), lr=h.learning_rate)
        # Magenta's exponential decay, as a schedule of optimiser steps (not epochs: the data set is endless).
        decay = torch.optim.lr_scheduler.StepLR(optimizer, step_size=h.lr_decay_steps, gamma=h.lr_decay_rate)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": decay, "interval": "step", "frequency": 1}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # What models.onsets_frames.read_checkpoint needs to label with this file without this class:
        # the format, the model's sizes (plain values) and the front end it was trained on.
        checkpoint["format"] = of.LIGHTNING_FORMAT
        checkpoint["config"] = self.net.config.to_dict()
        checkpoint["frontend"] = dict(of.FRONTEND)


class TrainingWindows(IterableDataset):
    """Endless whole batches of random windows; the batch of step ``s`` from ``default_rng([seed, s])``.

    ``start`` is the first step drawn: :class:`WindowsFromCheckpoint` sets it
    to the resumed checkpoint's step before the loader starts.  With ``n``
    loader workers, worker ``w`` draws steps ``start + w, start + w + n, ...``,
    which the loader hands out in step order.
    """

    def __init__(self, features: list, window: int, batch_size: int, seed: int, start: int = 0):
        from tasks.datasets.maestro import WindowSampler

        self.sampler = WindowSampler(features, window)
        self.batch_size, self.seed, self.start = int(batch_size), int(seed), int(start)

    def batch(self, step: int) -> dict:
        return self.sampler.batch(np.random.default_rng([self.seed, int(step)]), self.batch_size)

    def __iter__(self):
        info = get_worker_info()
        step, stride = (self.start, 1) if info is None else (self.start + info.id, info.num_workers)
        while True:
            yield self.batch(step)
            step += stride


class WindowsFromCheckpoint(L.Callback):
    """On resume, start the training windows at the checkpoint's step (the windows continue where they stopped).

    Lightning restores callbacks, then the loops, then creates the training
    loader's iterator; a callback's ``on_load_checkpoint`` is the hook that
    sees the checkpoint before the iterator exists (``on_train_start`` and
    ``on_train_epoch_start`` come after the first batch is fetched, and the
    latter not at all when a run resumes within its one endless epoch).
    """

    def __init__(self, windows: TrainingWindows):
        self.windows = windows

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.windows.start = int(checkpoint.get("global_step", 0))


class ValidationPieces(Dataset):
    """Whole validation recordings: ``mel`` ``(frames, 229)`` float32 and ``notes`` ``(n, 4)`` (onset, offset,
    pitch, velocity) of the reference, one recording per item (a loader with ``batch_size=None``)."""

    def __init__(self, features: list, references: list):
        self.features, self.references = features, references

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict:
        notes = [(n.onset, n.offset, n.pitch, n.velocity) for n in self.references[i]]
        return {"mel": torch.from_numpy(self.features[i].mel.astype(np.float32)),
                "notes": torch.tensor(notes, dtype=torch.float64).reshape(-1, 4)}


def recordings(data: str) -> tuple[list, list]:
    """The train and validation recordings of ``data``; MaestroError (one line) when either split is empty."""
    from tasks.datasets.maestro import MaestroError, read_maestro

    recs = read_maestro(data)
    train_recs = [r for r in recs if r.split == "train"]
    val_recs = [r for r in recs if r.split == "validation"]
    for split, found in (("train", train_recs), ("validation", val_recs)):
        if not found:
            raise MaestroError(f"{data} has no recordings in the {split} split (training needs both train "
                               "and validation)")
    return train_recs, val_recs


def check_resume(out_dir: str, config: str, resume: bool = True) -> Path | None:
    """The ``checkpoints/last.ckpt`` a run under ``out_dir`` would resume from, checked before any work.

    None when the run starts afresh.  Raises
    :class:`tasks.training.trainer.CheckpointError` (one line) for a file the
    resume would fail on (not a checkpoint of this trainer, or of the other
    ``config``), and for a folder of the hand-written trainer this one
    replaced (``last.pt``): its state cannot be resumed here, and starting
    afresh there would write over its ``metrics.csv``.
    """
    out = Path(out_dir)
    old = [name for name in ("last.pt", "best.pt", "losses.csv") if (out / name).exists()]
    if old:
        raise CheckpointError(
            f"{out / old[0]}: a run of the old Onsets and Frames trainer, which the Lightning trainer cannot "
            f"resume or write over; train into another --out (its .pt checkpoints still label with --checkpoint)")
    last = TrainerSettings(run_dir=str(out)).last_checkpoint
    if not resume or not last.exists():
        return None
    read_checkpoint(last, {"config": config})
    return last


def _prepare(settings: TrainSettings, log) -> tuple[list, list, list]:
    import time

    from tasks.datasets.maestro import prepare, read_performance

    train_recs, val_recs = recordings(settings.data)
    cache = Path(settings.cache_dir) if settings.cache_dir else Path(settings.out_dir) / "features"
    t0 = time.monotonic()
    train_feats, val_feats = prepare(train_recs, cache), prepare(val_recs, cache)
    val_refs = [read_performance(r.midi) for r in val_recs]
    log(f"features: {len(train_feats)} train ({sum(f.frames for f in train_feats)} frames), "
        f"{len(val_feats)} validation, in {time.monotonic() - t0:.1f} s")
    return train_feats, val_feats, val_refs


def train(settings: TrainSettings, log=print, callbacks=()) -> dict:
    """Train (or resume) until ``max_steps`` or ``max_minutes``; return the trainer's summary and the last scores."""
    from torch.utils.data import DataLoader

    s = settings
    check_resume(s.out_dir, s.config, s.resume)  # before any work
    trainer_settings = s.trainer_settings()
    if s.threads:
        torch.set_num_threads(int(s.threads))
    out = Path(s.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "run_settings.json").write_text(json.dumps(vars(s), indent=1, default=str) + "\n")
    train_feats, val_feats, val_refs = _prepare(s, log)
    window = of.frames_for_seconds(s.window_seconds)
    windows = TrainingWindows(train_feats, window, s.batch_size, s.seed)
    # Whole batches from the dataset (batch_size=None); spawned workers, as the piano loaders (see there).
    train_loader = DataLoader(windows, batch_size=None, num_workers=s.num_workers,
                              multiprocessing_context="spawn" if s.num_workers else None)
    val_loader = DataLoader(ValidationPieces(val_feats, val_refs), batch_size=None)
    # The initial weights follow --seed.  Unseeded, they came from whatever state torch's generator was left in
    # by the code that ran before, which differed between the old and the new trainer (docs/training.md).
    seed(trainer_settings)
    module = OnsetsFramesTask(s.config, s.learning_rate, s.lr_decay_steps, s.lr_decay_rate)
    log(f"onsets-frames: config {s.config}, {of.parameter_count(module.net):,} parameters, "
        f"window {window} frames, batch {s.batch_size}, under {out}")
    summary = fit(module, train_loader, val_loader, trainer_settings, [WindowsFromCheckpoint(windows), *callbacks])
    summary = {**summary, "config": s.config, "parameters": of.parameter_count(module.net),
               "validation": module.last_validation}
    log(f"stopped ({summary['stopped_by']}) at step {summary['steps']} after {summary['wall_s']:.0f} s; "
        f"best validation onset F1 {summary['best_score']}")
    return summary
