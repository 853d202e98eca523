"""The one trainer every model of the papers trains on: PyTorch Lightning with the papers' rules.

:func:`fit` trains a LightningModule (one per paper model, its network in
``models/``) on two data loaders and writes, under ``run_dir``::

    checkpoints/last.ckpt   the latest state (model, optimiser, schedulers, loops, callbacks)
    checkpoints/best.ckpt   the state with the best validation metric so far
    metrics.csv             every logged metric of every invocation, by step: train loss, val scores,
                            wall_s (the run's wall time at each validation, across resumes)
    logs/version_N/         Lightning's CSV log of invocation N (merged into metrics.csv)
    events.out.tfevents.*   the same for TensorBoard (``tensorboard --logdir RUN``)
    summary.json            steps, wall time, best score, why it stopped

What Lightning does here: the loops, checkpoints (last and best by the
module's ``monitor``), resuming from ``last.ckpt`` after a kill (read with
``torch.load(weights_only=True)``: modules keep their hyperparameters plain
values), bf16 or fp16 mixed precision on CUDA, gradient clipping, early stop
when the plateau metric has not improved for ``early_stop_patience``
validations, deterministic seeding, a wall-time budget (``max_minutes``:
Lightning's Timer, which counts the run's training time across resumes),
the logs and its progress bar.  The learning rate is divided by
``1 / lr_factor`` when the plateau metric stalls for ``plateau_patience``
validations (the papers' "learning rate divided on plateau"): see
:class:`PlateauSchedule` for why it is a callback rather than a Lightning
scheduler.  A module whose paper has another rule sets ``plateau = None``:
then neither the LR division nor the early stop runs (``plateau_patience``,
``lr_factor`` and ``early_stop_patience`` are unused), and the module's own
schedulers (``configure_optimizers``, e.g. Onsets and Frames' exponential
decay, stepped per optimiser step) are the only LR rule.

Several GPUs: ``devices > 1`` uses Lightning's ``ddp_spawn`` strategy, not
its default ``ddp``.  ``ddp`` starts the other ranks by running the
process's command line again; in a Prefect flow run on a worker that
command line is the flow-run engine (``python -m prefect.engine`` with the
run's id), so every extra rank would execute the whole flow run again (a
second download of the data, a second set of task runs, races on the run's
state).  ``ddp_spawn`` starts ranks as multiprocessing children of the
calling process, which works from any process, a Prefect flow run or a
notebook included; its cost is that the module and loaders must pickle and
that workers start by re-importing this package, which a worker has
installed.  On CPU the ranks talk over gloo (the test runs two).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

import lightning.pytorch as L
from pydantic import Field
from pydantic.dataclasses import dataclass

DEFAULT_MAX_STEPS = 2000  # the step limit of a run given neither --max-steps nor --max-minutes


@dataclass
class TrainerSettings:
    """How a model is trained, whatever the model; the source of the train commands' shared flags."""

    run_dir: str = Field(description="folder for checkpoints, logs and the summary",
                         json_schema_extra={"flag": "out"})
    max_steps: int | None = Field(None, ge=1, description="optimiser steps in all (a resumed run goes on to this); "
                                  f"unset: {DEFAULT_MAX_STEPS}, or no step limit when --max-minutes is given")
    max_minutes: float | None = Field(None, gt=0, description="wall-time budget of the training, minutes")
    val_every: int = Field(100, ge=1, description="steps between validations")
    log_every: int = Field(10, ge=1, description="steps between logged training losses")
    batch_size: int = Field(24, ge=1, description="examples per step (per device)")
    num_workers: int = Field(1, ge=0, description="data-loader worker processes per device")
    precision: Literal["auto", "32", "bf16-mixed", "16-mixed"] = Field(
        "auto", description="auto: bf16 mixed precision on CUDA where supported, else fp16; float32 on CPU")
    clip_norm: float | None = Field(None, gt=0, description="gradient-norm clip (default: the model's)")
    plateau_patience: int = Field(3, ge=1, description="validations without improvement before the LR is divided")
    lr_factor: float = Field(0.1, gt=0, lt=1, description="factor the LR is multiplied by on a plateau")
    early_stop_patience: int = Field(6, ge=1, description="validations without improvement before stopping")
    seed: int = Field(0, description="random seed (model, data order, augmentation)")
    accelerator: Literal["auto", "cpu", "cuda"] = Field("auto", description="where to train")
    devices: int = Field(1, ge=1, description="devices (processes) to train on; over 1: DDP (ddp_spawn)")
    resume: bool = Field(True, description="resume from RUN/checkpoints/last.ckpt when it exists")
    progress_bar: bool = Field(True, description="Lightning's progress bar in the terminal")

    def __post_init__(self):
        if self.max_steps is None and self.max_minutes is None:  # a run must end somewhere
            self.max_steps = DEFAULT_MAX_STEPS

    @property
    def last_checkpoint(self) -> Path:
        return Path(self.run_dir) / "checkpoints" / "last.ckpt"


def _precision(settings: TrainerSettings, accelerator: str) -> str:
    if settings.precision != "auto":
        return settings.precision
    if accelerator == "cuda":
        import torch

        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32"


def _accelerator(settings: TrainerSettings) -> str:
    if settings.accelerator != "auto":
        return settings.accelerator
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def uses_cuda(settings: TrainerSettings) -> bool:
    """Whether a run of ``settings`` trains on CUDA (``auto`` where a GPU is there): a GPU slot's rule."""
    return _accelerator(settings) == "cuda"


class PlateauSchedule(L.Callback):
    """Multiply every optimiser's LR by ``factor`` when ``metric`` has not improved for ``patience`` validations.

    Lightning steps a ``ReduceLROnPlateau`` it is given at epoch or step
    boundaries of the training loop, before the validation that produces the
    metric has run for that step, and refuses to start when the metric does
    not exist yet; validation here runs every ``val_every`` steps of an
    iterable data set, so the scheduler is driven from the end of each
    validation instead.  Its state (best value, bad validations) is saved in
    the checkpoint like any callback's.

    A module may take a plateau first: if it defines ``on_plateau()`` and
    that returns True (FAb-Net's curriculum shifting its window), the LR is
    left alone, and the early stop's count of validations without
    improvement starts again (``early_stop``: the run's EarlyStopping, which
    runs before this callback; so with ``early_stop_patience`` above
    ``plateau_patience`` a plateau the module takes never stops the run).
    """

    def __init__(self, metric: str, mode: str, patience: int, factor: float, early_stop=None):
        self.metric, self.mode, self.patience, self.factor = metric, mode, patience, factor
        self.early_stop = early_stop
        self.best: float | None = None
        self.bad = 0

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.metric not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.metric])
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if better:
            self.best, self.bad = value, 0
            return
        self.bad += 1
        if self.bad >= self.patience:
            self.bad = 0
            taken = getattr(pl_module, "on_plateau", None)
            if taken is not None and taken():
                if self.early_stop is not None:
                    self.early_stop.wait_count = 0
                return
            for optimizer in trainer.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] *= self.factor

    def state_dict(self) -> dict:
        return {"best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad = state.get("best"), int(state.get("bad", 0))


class DatasetEpoch(L.Callback):
    """Give the training set its epoch (``set_epoch``) so that it reshuffles: at each epoch's start, and on resume.

    Lightning calls ``set_epoch`` on samplers only; the shard loaders
    (:mod:`tasks.training.windows`) are IterableDatasets that permute their
    units by ``(seed, epoch)`` themselves.  From the second epoch on, the
    epoch-start hook runs before the epoch's loader iterator is made, so
    spawned workers (not persistent) get the new epoch with the pickled
    dataset.  The first iterator of a run is made before any epoch-start
    hook (``FitLoop.setup_data``), which is why a resumed run sets the
    checkpoint's epoch in ``on_load_checkpoint``, the hook that sees the
    checkpoint before that iterator exists: otherwise a run resumed in epoch
    k would replay epoch 0's order.
    """

    def __init__(self, dataset=None):
        self.dataset = dataset

    def _set(self, dataset, epoch: int) -> None:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(int(epoch))

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._set(self.dataset, checkpoint.get("epoch", 0))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._set(getattr(trainer.train_dataloader, "dataset", self.dataset), trainer.current_epoch)


class WallClock(L.Callback):
    """Log ``wall_s``, the run's wall time so far (across resumes), with every validation: curves by time."""

    def __init__(self):
        self.before, self.start = 0.0, None

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return self.before + (time.monotonic() - self.start if self.start is not None else 0.0)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            pl_module.log("wall_s", round(self.elapsed(), 1), sync_dist=False, rank_zero_only=True)

    def state_dict(self) -> dict:
        return {"before": self.elapsed()}

    def load_state_dict(self, state: dict) -> None:
        self.before = float(state.get("before", 0.0))


class LastAtEnd(L.Callback):
    """Save ``last.ckpt`` when training ends (max steps, time budget, early stop), not only at validations."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_end(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(str(self.path), weights_only=False)  # the full state, to resume from (said, not defaulted)


def _merged_csv(run: Path) -> Path:
    """One ``metrics.csv`` of every invocation's CSV log (``logs/version_*/metrics.csv``), by step."""
    import csv

    rows, fields = [], []
    for part in sorted((run / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:])):
        with open(part, newline="") as fh:
            reader = csv.DictReader(fh)
            fields += [f for f in reader.fieldnames or [] if f not in fields]
            rows += list(reader)
    rows.sort(key=lambda r: int(r.get("step") or 0))
    out = run / "metrics.csv"
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return out


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from or loaded: one line naming the file."""


def read_checkpoint(path: str | Path, hparams: dict | None = None, defaults: dict | None = None) -> dict:
    """A Lightning checkpoint read with ``torch.load(weights_only=True)``; CheckpointError if it is not one.

    With ``hparams``, also refuse a checkpoint of another model or size (its
    saved hyperparameters differ in any key ``hparams`` names).  ``defaults``
    gives the value of a key that checkpoints written before it existed lack.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated zip, a foreign pickle, random bytes ...
        raise CheckpointError(f"{path}: not a checkpoint this trainer wrote "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(f"{path}: not a Lightning checkpoint of sightsound (no state_dict/hyper_parameters)")
    saved = ckpt["hyper_parameters"]
    for key, want in (hparams or {}).items():
        if saved.get(key, (defaults or {}).get(key)) != want:
            raise CheckpointError(f"{path}: a checkpoint of {key} {saved.get(key)!r}, not {want!r}; "
                                  "use another run folder, or --no-resume to start afresh")
    return ckpt


def seed(settings: TrainerSettings) -> None:
    """Seed Python, numpy and torch from ``settings.seed``: call it before building the module.

    :func:`fit` seeds again before training (data order, dropout); seeding
    here as well makes the network's initial weights depend on ``--seed``
    rather than on whatever the process drew before.
    """
    L.seed_everything(settings.seed, workers=True, verbose=False)


def make_loader(dataset, settings: TrainerSettings, shuffle: bool):
    """The DataLoader of a training (``shuffle``: drop the last partial batch) or validation pass."""
    from torch.utils.data import DataLoader, IterableDataset

    # Spawned, not forked, workers: a fork of a Prefect flow run inherits its threads and its exit handlers
    # (the temporary server's guard among them), and such a worker exited with code 1 when a loader was
    # shut down at the end of a pass.  Not persistent, so each pass's workers get the dataset's new epoch.
    # An IterableDataset (the shard windows) shuffles itself by seed and epoch; a map-style one (the AV MLP's
    # features) is shuffled by the loader, from the generator the trainer's seed sets.
    return DataLoader(dataset, batch_size=settings.batch_size, num_workers=settings.num_workers,
                      shuffle=shuffle and not isinstance(dataset, IterableDataset),
                      persistent_workers=False, drop_last=shuffle,
                      multiprocessing_context="spawn" if settings.num_workers else None)


def fit(module, train_loader, val_loader, settings: TrainerSettings, callbacks=()) -> dict:
    """Train ``module`` (a LightningModule with ``monitor`` and ``plateau`` = ``(metric, "min"|"max")``,
    or ``plateau = None`` for no plateau rule).

    Returns the summary also written to ``run_dir/summary.json``.
    """
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, Timer
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    run = Path(settings.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    L.seed_everything(settings.seed, workers=True, verbose=False)
    monitor, monitor_mode = module.monitor
    best = ModelCheckpoint(dirpath=run / "checkpoints", filename="best", monitor=monitor, mode=monitor_mode,
                           save_top_k=1, save_last=False, enable_version_counter=False)
    # last.ckpt at every validation.  Lightning 2.6's ``save_last=True`` writes last.ckpt only when a best
    # checkpoint is saved in the same step, so a run killed after validations that did not improve would
    # resume from its last improvement, not from its last validation.  A second ModelCheckpoint without a
    # monitor saves at every validation end; Lightning runs checkpoint callbacks after the others, in list
    # order, so it saves after ``best`` has updated its score (which goes into last.ckpt's state).
    last = ModelCheckpoint(dirpath=run / "checkpoints", filename="last", monitor=None, save_top_k=1,
                           enable_version_counter=False, save_on_train_epoch_end=False)
    stop, plateau_rule = None, []
    if module.plateau is not None:  # None: the module's own LR schedule only, no early stop
        plateau, plateau_mode = module.plateau
        stop = EarlyStopping(monitor=plateau, mode=plateau_mode, patience=settings.early_stop_patience)
        plateau_rule = [stop, PlateauSchedule(plateau, plateau_mode, settings.plateau_patience,
                                             settings.lr_factor, early_stop=stop)]
    callbacks = [best, last, *plateau_rule, DatasetEpoch(getattr(train_loader, "dataset", None)), WallClock(),
                 LastAtEnd(settings.last_checkpoint), *callbacks]
    timer = None
    if settings.max_minutes:
        timer = Timer(duration={"minutes": settings.max_minutes}, interval="step")
        callbacks.append(timer)
    accelerator = _accelerator(settings)
    trainer = L.Trainer(
        default_root_dir=str(run), max_steps=settings.max_steps or -1, max_epochs=-1,
        val_check_interval=settings.val_every, check_val_every_n_epoch=None,
        log_every_n_steps=settings.log_every, accelerator=accelerator, devices=settings.devices,
        strategy="ddp_spawn" if settings.devices > 1 else "auto", precision=_precision(settings, accelerator),
        gradient_clip_val=settings.clip_norm if settings.clip_norm is not None else module.clip_norm,
        deterministic=True, callbacks=callbacks, enable_progress_bar=settings.progress_bar,
        enable_model_summary=False, num_sanity_val_steps=0,
        # One CSV log per invocation (Lightning's CSVLogger empties a folder it reuses), merged below.
        logger=[CSVLogger(str(run), name="logs"), TensorBoardLogger(str(run), name="", version="")],
    )
    resume = settings.last_checkpoint if settings.resume and settings.last_checkpoint.is_file() else None
    if resume is not None:  # refuse a foreign or broken last.ckpt in one line, before Lightning starts
        keys = getattr(module, "resume_keys", tuple(module.hparams))  # what must match to go on from it
        read_checkpoint(resume, {k: module.hparams[k] for k in keys}, getattr(module, "resume_defaults", None))
    start = time.monotonic()
    trainer.fit(module, train_loader, val_loader, ckpt_path=str(resume) if resume else None, weights_only=True)
    stopped_by = ("early stop" if stop is not None and stop.stopped_epoch else
                  "time budget" if timer is not None and timer.time_remaining() is not None
                  and timer.time_remaining() <= 0 else "max steps")
    summary = {
        "steps": int(trainer.global_step), "wall_s": round(time.monotonic() - start, 1),
        "resumed_from": str(resume) if resume else None, "stopped_by": stopped_by,
        "monitor": monitor, "best_score": float(best.best_model_score) if best.best_model_score is not None else None,
        # both paths absolute, whatever run_dir was given as
        "best_checkpoint": str(Path(best.best_model_path).resolve()) if best.best_model_path else None,
        "last_checkpoint": str(settings.last_checkpoint.resolve()),
        "metrics_csv": str(run / "metrics.csv"), "devices": settings.devices, "accelerator": accelerator,
    }
    if trainer.is_global_zero:
        _merged_csv(run)
        (run / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
