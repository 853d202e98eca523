"""Training FAb-Net (Wiles, Koepke, Zisserman, BMVC 2018; thesis ch. 4) on VoxCeleb face tracks, on the shared trainer.

:class:`FabNetTask` trains :class:`models.fabnet.FabNet` to generate a
target frame by sampling a source frame of the same face track with a flow
decoded from their two embeddings (one source), or by combining ``k = 3``
warped sources with per-pixel confidences (the multi-source variant).  The
loss is the per-sample L1 between the generated and the target frame
(:func:`models.fabnet.l1_loss`), averaged over the batch, or, with the
*curriculum* (paper §4), over the samples whose loss rank lies in the
current percentile window only (:func:`models.fabnet.curriculum_loss`).

The paper's schedule (§4, "Curriculum strategy"), and how it sits on the shared trainer
    Training starts back-propagating the easiest 50% of each batch (window
    0-50).  Each time the validation loss plateaus the window moves by 10
    percentiles (10-60, 20-70, 30-80, 40-90: four shifts, :data:`CURRICULUM_WINDOWS`);
    only a plateau after the last shift divides the learning rate by 10.
    The shared trainer's :class:`tasks.training.trainer.PlateauSchedule`
    asks the module first (:meth:`FabNetTask.on_plateau`): while a shift is
    left, the plateau is taken by the curriculum, the LR stays, and the early
    stop's count starts again, so early stopping never counts a validation
    spent before a shift.  The window is part of the checkpoint
    (``curriculum_stage``), so a resumed run goes on with its window.

Chosen here (the paper is silent or loose)
    * The plateau metric is the validation L1 over *all* validation samples
      (the curriculum selects what is back-propagated, not what is
      measured); the best checkpoint is kept by the same metric.
    * Validation pairs are fixed (:class:`tasks.training.windows.FacePairs`
      with ``shuffle=False``), so a plateau is the model's, not the draw's.
      ``val_identity_l1`` (first source against the target: the L1 of not
      moving a pixel) is logged beside ``val_l1`` as the floor to beat.
    * SGD, lr 1e-3, momentum 0.9 (the paper); batch 32 with the curriculum
      and 8 without (the paper's), unless ``paper_batches`` is off.
    * With 3 sources the network is built with the confidence decoder; with
      1 it is not (the softmax over one source is 1).
    * No augmentation (the paper names none).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator
from pydantic.dataclasses import dataclass

from models.fabnet import CURRICULUM_WINDOWS, FabNet, FabNetConfig, curriculum_loss, l1_loss
from tasks.training.faces import FaceReconstructionTask, fit_face_model, load_net_state
from tasks.training.trainer import CheckpointError, TrainerSettings, read_checkpoint


@dataclass
class FabNetSettings:
    """One FAb-Net training run: the data, the variant, and how the shared trainer runs."""

    data_root: str = Field(description="the data root of a build-voxceleb build (D, holding D/voxceleb/shards)")
    trainer: TrainerSettings = Field(description="the shared trainer's settings")
    config: Literal["paper", "small"] = Field(
        "small", description="paper: 256x256 frames, the supplementary's widths; small: 64x64, CPU widths")
    sources: int = Field(1, description="source frames per target: 1, or 3 (confidence decoder)")
    curriculum: bool = Field(True, description="the curriculum (back-propagate a window of the batch's losses)")
    learning_rate: float = Field(1e-3, gt=0, description="SGD's learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD's momentum")
    buffer_size: int = Field(256, ge=1, description="shuffle buffer, examples per loader worker")
    paper_batches: bool = Field(
        True, description="batch 32 with the curriculum, 8 without (the paper); off: --batch-size")
    every_variant: bool = Field(
        False, description="train the table's three rows in folders of --out: fabnet (1 source, no curriculum), "
                           "fabnet-curriculum, fabnet-curriculum-3src (--sources and --curriculum are then unused)")

    @field_validator("sources")
    @classmethod
    def _sources(cls, value: int) -> int:
        if value not in (1, 3):
            raise ValueError(f"sources must be 1 or 3, not {value}")
        return value


def variant_name(sources: int, curriculum: bool) -> str:
    """``fabnet``, ``fabnet-curriculum``, ``fabnet-curriculum-3src`` ...: a run's folder and its table row."""
    return "fabnet" + ("-curriculum" if curriculum else "") + (f"-{sources}src" if sources > 1 else "")


VARIANTS = ((1, False), (1, True), (3, True))  # (sources, curriculum): the results table's trained rows


class FabNetTask(FaceReconstructionTask):
    """FAb-Net on the shared trainer: L1 of the generated target, optionally through the curriculum."""

    resume_keys = ("model", "config", "sources", "curriculum")

    def __init__(self, config: str = "small", sources: int = 1, curriculum: bool = True,
                 learning_rate: float = 1e-3, momentum: float = 0.9, model: str = "fabnet"):
        super().__init__()
        self.save_hyperparameters()  # plain values only: checkpoints load with weights_only=True
        self.net = FabNet(FabNetConfig.named(config, confidence=sources > 1))
        self.curriculum_stage = 0  # index into CURRICULUM_WINDOWS
        self._validation_metrics()

    @property
    def window(self) -> tuple[int, int]:
        """The curriculum's percentile window now, ``(low, high)``."""
        return CURRICULUM_WINDOWS[self.curriculum_stage]

    def forward(self, sources: torch.Tensor, target: torch.Tensor):
        return self.net(sources, target)

    def training_step(self, batch, batch_idx):
        target = batch["target"]
        per_sample = l1_loss(self(batch["sources"], target).generated, target)
        loss = curriculum_loss(per_sample, *self.window) if self.hparams.curriculum else per_sample.mean()
        n = len(target)
        self.log("train_l1", per_sample.mean(), batch_size=n)
        self.log("train_loss", loss, prog_bar=True, batch_size=n)
        if self.hparams.curriculum:
            self.log("curriculum_low", float(self.window[0]), batch_size=n)
        return loss

    def on_plateau(self) -> bool:
        """The shared trainer's plateau hook: shift the curriculum's window while a shift is left (then True)."""
        if not self.hparams.curriculum or self.curriculum_stage >= len(CURRICULUM_WINDOWS) - 1:
            return False
        self.curriculum_stage += 1
        return True

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["curriculum_stage"] = int(self.curriculum_stage)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.curriculum_stage = int(checkpoint.get("curriculum_stage", 0))


def load_net(checkpoint: str | Path, config: str | None = None) -> FabNet:
    """The FabNet of a :class:`FabNetTask` checkpoint, in eval mode; CheckpointError (one line) otherwise."""
    ckpt = read_checkpoint(checkpoint)
    hp = ckpt["hyper_parameters"]
    if hp.get("model") != "fabnet":
        raise CheckpointError(f"{checkpoint}: not a FAb-Net checkpoint (hyperparameters "
                              f"{sorted(hp)[:6]})")
    if config is not None and hp.get("config") != config:
        raise CheckpointError(f"{checkpoint}: a FAb-Net {hp.get('config')!r} checkpoint, not {config!r}")
    return load_net_state(FabNet(FabNetConfig.named(hp["config"], confidence=int(hp["sources"]) > 1)), ckpt, checkpoint)


def variant_settings(settings: FabNetSettings) -> list[tuple[str, FabNetSettings]]:
    """``(name, settings)`` of the runs ``settings`` stands for: itself, or with ``every_variant`` the
    :data:`VARIANTS` each in ``--out/<name>``; the paper's batch applied (:func:`paper_batch`)."""
    import dataclasses

    if not settings.every_variant:
        return [(variant_name(settings.sources, settings.curriculum), paper_batch(settings))]
    root = Path(settings.trainer.run_dir)
    out = []
    for sources, curriculum in VARIANTS:
        name = variant_name(sources, curriculum)
        one = dataclasses.replace(settings, sources=sources, curriculum=curriculum, every_variant=False,
                                  trainer=dataclasses.replace(settings.trainer, run_dir=str(root / name)))
        out.append((name, paper_batch(one)))
    return out


def paper_batch(settings: FabNetSettings) -> FabNetSettings:
    """``settings`` with the paper's batch (32 with the curriculum, 8 without) unless ``paper_batches`` is off."""
    import dataclasses

    if not settings.paper_batches:
        return settings
    size = 32 if settings.curriculum else 8
    return dataclasses.replace(settings, trainer=dataclasses.replace(settings.trainer, batch_size=size))


def train(settings: FabNetSettings, log=print, callbacks=()) -> dict:
    """Train one FAb-Net variant under ``settings.trainer.run_dir``; return the trainer's summary."""
    if settings.every_variant:
        raise ValueError("every_variant is several runs: train each of variant_settings(settings)")
    settings = paper_batch(settings)
    name = variant_name(settings.sources, settings.curriculum)
    summary = fit_face_model(settings, lambda: FabNetTask(settings.config, settings.sources, settings.curriculum,
                                                          settings.learning_rate, settings.momentum),
                             f"fabnet {name}", log, callbacks, "fabnet")
    module = summary.pop("module")
    return {**summary, "variant": name, "config": settings.config, "curriculum_stage": int(module.curriculum_stage)}
