"""What the face models' training shares (FAb-Net, X2Face): the face shards, pairs, validation and optimiser.

Both generate a target (driving) frame from source frames of the same face
track and are scored by the L1 between the generated and the target frame;
:class:`FaceReconstructionTask` holds that validation (``val_l1``, and
``val_identity_l1``: the L1 of the first source frame itself, what not moving
a pixel gives), the epoch hand-off to :class:`tasks.training.windows.FacePairs`
and the papers' optimiser (SGD with momentum).  A subclass builds ``self.net``
(whose ``forward(sources, target)`` returns an output with ``generated``) and
its ``training_step``.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L
import torch

from models.fabnet import l1_loss
from tasks.training.trainer import CheckpointError


class FaceReconstructionTask(L.LightningModule):
    """The shared part of FAb-Net's and X2Face's LightningModules (see the module docstring)."""

    monitor = ("val_l1", "min")  # the best checkpoint
    plateau = ("val_l1", "min")  # the papers' plateau rule on the validation L1
    clip_norm = None  # neither paper clips gradients

    def _validation_metrics(self) -> None:
        from torchmetrics import MeanMetric

        self.val_l1_metric, self.val_identity_metric = MeanMetric(), MeanMetric()

    @property
    def image_size(self) -> int:
        return self.net.config.image_size

    def validation_step(self, batch, batch_idx):
        sources, target = batch["sources"], batch["target"]
        self.val_l1_metric.update(l1_loss(self(sources, target).generated, target))
        self.val_identity_metric.update(l1_loss(sources[:, 0], target))

    def on_validation_epoch_end(self) -> None:
        self.log_dict({"val_l1": self.val_l1_metric.compute(), "val_identity_l1": self.val_identity_metric.compute()},
                      prog_bar=True)
        self.val_l1_metric.reset()
        self.val_identity_metric.reset()


    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.learning_rate, momentum=self.hparams.momentum)


def load_net_state(net: torch.nn.Module, ckpt: dict, checkpoint: str | Path) -> torch.nn.Module:
    """``net`` with the ``net.*`` weights of a module checkpoint, in eval mode; CheckpointError if they do not fit."""
    state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{checkpoint}: its weights do not fit the network it names "
                              f"({str(exc).splitlines()[0][:160]})") from None
    return net.eval()


def check_shards(data_root: str, splits=("train", "val")) -> None:
    """ValueError (one line, the folder or file named) unless ``data_root`` holds face shards for ``splits``."""
    import pyarrow.parquet as pq

    from tasks.datasets.voxceleb import layout
    from tasks.store import storage
    from tasks.training.windows import split_parts

    shards = layout(data_root).shards
    for split in splits:
        part = split_parts(shards, split)[0]
        fs, path = storage.fs_of(part)
        with fs.open(path, "rb") as fh:
            names = set(pq.ParquetFile(fh).schema_arrow.names)
        missing = {"identity", "video_id", "utterance", "frame_index", "image"} - names
        if missing:
            raise ValueError(f"{part}: not a face shard of build-voxceleb (no {', '.join(sorted(missing))} column)")


def fit_face_model(settings, make_module, name: str, log=print, callbacks=(), settings_key: str | None = None,
                   extra: dict | None = None, note: str = "") -> dict:
    """Train a face model of ``settings`` (data_root, trainer, config, buffer_size) on the shared trainer.

    What the face models' ``train()`` share: refuse a root without face
    shards, make the run folder, seed (so the initial weights follow
    ``--seed``), build the module (``make_module()``, after the seed), the
    shuffled train pairs and the fixed validation pairs, one log line,
    ``run_settings.json`` (the settings under ``settings_key``, ``extra``
    added) and the fit.  Returns the trainer's summary.
    """
    import json

    from tasks.training.trainer import fit, make_loader, seed

    check_shards(settings.data_root)
    run = Path(settings.trainer.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    seed(settings.trainer)  # the initial weights follow --seed
    module = make_module()
    data_seed = settings.trainer.seed
    train_set = pairs(settings.data_root, "train", module, train=True, seed=data_seed, buffer_size=settings.buffer_size)
    val_set = pairs(settings.data_root, "val", module, train=False, seed=data_seed)
    log(f"{name}/{settings.config}: {train_set.units} train and {val_set.units} validation face tracks, "
        f"batch {settings.trainer.batch_size}{note}")
    mine = {k: v for k, v in vars(settings).items() if k != "trainer"}
    (run / "run_settings.json").write_text(json.dumps(
        {settings_key or name: {**mine, **(extra or {})}, "trainer": vars(settings.trainer)}, indent=1,
        default=str) + "\n")
    summary = fit(module, make_loader(train_set, settings.trainer, True), make_loader(val_set, settings.trainer, False),
                  settings.trainer, callbacks)
    return {**summary, "module": module}


def pairs(data_root: str, split: str, module: FaceReconstructionTask, *, train: bool, seed: int,
          buffer_size: int = 256):
    """The :class:`FacePairs` of ``split`` that ``module`` trains (shuffled) or validates (fixed pairs) on."""
    from tasks.training.windows import FacePairs

    return FacePairs.from_root(data_root, split, sources=module.hparams.sources, size=module.image_size,
                               shuffle=train, buffer_size=buffer_size, seed=seed)
