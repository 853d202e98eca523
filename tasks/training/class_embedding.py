"""Training the class-embedding network (Wiles, Koepke, Zisserman 2019) on VoxCeleb face tracks, on the shared trainer.

:class:`ClassEmbeddingTask` trains :class:`models.class_embedding.ClassEmbeddingNet`
on a source and a target frame of one face track (FacePairs with one
source): the hierarchical warp explains the target by the source's pixels,
the Laplace loss of each level weights the photometric error by the
predicted confidence, and the cyclic loss at level 1 (weight ``cyclic_weight``,
1 in the paper) keeps the matches from piling onto a few source pixels.

Levels added on plateaus (paper §4: "We start at the lowest resolution R_1 and
incorporate new layers when the loss plateaus")
    Training starts with level 1 only.  The shared trainer's plateau rule
    asks the module first (:meth:`ClassEmbeddingTask.on_plateau`), as
    FAb-Net's curriculum does: while a level is left, a plateau adds it (the
    learning rate stays, the early stop's count starts again); a plateau
    with every level in divides the learning rate, and then the early stop
    may end the run.  The number of levels in use is saved with each
    checkpoint, so a resumed run goes on with them.

Chosen here (the paper is silent)
    * The plateau and best-checkpoint metric is ``val_l1``: the L1 of the
      finest level in use, upsampled to the input's size, against the
      target, on fixed validation pairs.  It compares across levels, which
      the summed level losses do not.  ``val_identity_l1`` (the source frame
      itself) is logged beside it as for FAb-Net.
    * Adam at 1e-3 (the paper), no weight decay, no clipping, no
      augmentation; the trainer's batch size (the paper gives none).
    * The lower levels keep training after a level is added.
    * ``loss="photometric"`` trains on the plain L1 of every level (the
      paper's "ph" ablation) instead of the Laplace loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from pydantic.dataclasses import dataclass

from models.class_embedding import (ClassEmbeddingConfig, ClassEmbeddingNet, cyclic_loss, laplace_loss,
                                    photometric_loss)
from tasks.training.faces import FaceReconstructionTask, fit_face_model, load_net_state
from tasks.training.trainer import CheckpointError, TrainerSettings, read_checkpoint


@dataclass
class ClassEmbeddingSettings:
    """One class-embedding training run: the data, the loss, and how the shared trainer runs."""

    data_root: str = Field(description="the data root of a build-voxceleb build (D, holding D/voxceleb/shards)")
    trainer: TrainerSettings = Field(description="the shared trainer's settings")
    config: Literal["paper", "small"] = Field(
        "small", description="paper: 256x256 frames, levels 32/64/128; small: 64x64, levels 16/32/64")
    loss: Literal["laplace", "photometric"] = Field(
        "laplace", description="laplace: the confidence-weighted loss of the paper; photometric: plain L1 ('ph')")
    cyclic_weight: float = Field(1.0, ge=0, description="weight of the cyclic loss (the paper's lambda = 1)")
    learning_rate: float = Field(1e-3, gt=0, description="Adam's learning rate")
    buffer_size: int = Field(256, ge=1, description="shuffle buffer, examples per loader worker")


def run_name(settings: ClassEmbeddingSettings) -> str:
    """``class-embedding``, ``class-embedding-ph`` ...: a run's folder and its table row."""
    return "class-embedding" + ("-ph" if settings.loss == "photometric" else "") + \
        ("-nocyc" if settings.cyclic_weight == 0 else "")


class ClassEmbeddingTask(FaceReconstructionTask):
    """The class-embedding network on the shared trainer (see the module docstring)."""

    resume_keys = ("model", "config", "loss")

    def __init__(self, config: str = "small", loss: str = "laplace", cyclic_weight: float = 1.0,
                 learning_rate: float = 1e-3, sources: int = 1, model: str = "class-embedding"):
        super().__init__()
        if loss not in ("laplace", "photometric"):
            raise ValueError(f"loss must be 'laplace' or 'photometric', not {loss!r}")
        self.save_hyperparameters()  # plain values only: checkpoints load with weights_only=True
        self.net = ClassEmbeddingNet(ClassEmbeddingConfig.named(config))
        self.active_levels = 1
        self._validation_metrics()

    def forward(self, sources: torch.Tensor, target: torch.Tensor):
        return self.net(sources[:, 0], target, levels=self.active_levels)

    def training_step(self, batch, batch_idx):
        source, target = batch["sources"][:, 0], batch["target"]
        out = self.net(source, target, levels=self.active_levels)
        per_level = [laplace_loss(lv) if self.hparams.loss == "laplace" else photometric_loss(lv)
                     for lv in out.levels]
        loss = torch.stack(per_level).sum()
        n = len(target)
        if self.hparams.cyclic_weight > 0:
            e_s, e_t = out.embeddings
            back = self.net.warp(target, source, e_t, e_s, 1)[0].probs  # each source pixel explained by the target
            cyc = cyclic_loss(out.levels[0].probs, back)
            loss = loss + self.hparams.cyclic_weight * cyc
            self.log("train_cyclic", cyc, batch_size=n)
        for r, value in enumerate(per_level):
            self.log(f"train_level{r + 1}", value, batch_size=n)
        self.log("train_l1", photometric_loss(out.levels[-1]), batch_size=n)
        self.log("train_loss", loss, prog_bar=True, batch_size=n)
        self.log("levels", float(self.active_levels), batch_size=n)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate)

    def on_plateau(self) -> bool:
        """The shared trainer's plateau hook: add the next level while one is left (then True)."""
        if self.active_levels >= self.net.config.levels:
            return False
        self.active_levels += 1
        return True

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["active_levels"] = int(self.active_levels)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.active_levels = int(checkpoint.get("active_levels", 1))


def load_net(checkpoint: str | Path) -> ClassEmbeddingNet:
    """The network of a :class:`ClassEmbeddingTask` checkpoint, in eval mode; CheckpointError (one line) otherwise."""
    ckpt = read_checkpoint(checkpoint)
    hp = ckpt["hyper_parameters"]
    if hp.get("model") != "class-embedding" or hp.get("config") not in ("paper", "small"):
        raise CheckpointError(f"{checkpoint}: not a class-embedding checkpoint of train class-embedding "
                              f"(hyperparameters {sorted(hp)[:6]})")
    return load_net_state(ClassEmbeddingNet(ClassEmbeddingConfig.named(hp["config"])), ckpt, checkpoint)


def train(settings: ClassEmbeddingSettings, log=print, callbacks=()) -> dict:
    """Train one class-embedding network under ``settings.trainer.run_dir``; return the trainer's summary."""
    summary = fit_face_model(settings, lambda: ClassEmbeddingTask(settings.config, settings.loss,
                                                                  settings.cyclic_weight, settings.learning_rate),
                             run_name(settings), log, callbacks, "class_embedding")
    module = summary.pop("module")
    return {**summary, "run": run_name(settings), "config": settings.config, "levels": int(module.active_levels)}
