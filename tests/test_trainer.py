"""The shared trainer's own rules, on a toy module: the training set is told its epoch, also after a resume."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from tasks.training.trainer import TrainerSettings, fit


class EpochRecorder(IterableDataset):
    """Four examples an epoch; records the epoch it was told each time a pass starts (in this process)."""

    def __init__(self):
        self.epoch, self.passes = 0, []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.passes.append(self.epoch)
        for i in range(4):
            yield torch.full((2,), float(i + self.epoch))


class Toy(L.LightningModule):
    monitor = ("val_loss", "min")
    plateau = None
    clip_norm = None

    def __init__(self, width: int = 2):
        super().__init__()
        self.save_hyperparameters()  # (a checkpoint without hyperparameters is refused on resume)
        self.lin = torch.nn.Linear(width, 1)

    def training_step(self, batch, batch_idx):
        return self.lin(batch).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.lin(batch).pow(2).mean(), batch_size=len(batch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _run(tmp_path, steps: int) -> EpochRecorder:
    data = EpochRecorder()
    settings = TrainerSettings(run_dir=str(tmp_path / "run"), max_steps=steps, val_every=2, log_every=1,
                               batch_size=2, num_workers=0, progress_bar=False, accelerator="cpu")
    fit(Toy(), DataLoader(data, batch_size=2), DataLoader(EpochRecorder(), batch_size=2), settings)
    return data


def test_each_epoch_and_a_resumed_epoch_get_their_own_shuffle(tmp_path):
    assert _run(tmp_path, 6).passes == [0, 1, 2]  # two steps an epoch
    # Resumed from last.ckpt (step 6, saved at the start of epoch 3): the first pass is epoch 3's, not epoch 0's.
    assert _run(tmp_path, 8).passes[0] == 3


def test_the_summary_gives_both_checkpoints_as_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = TrainerSettings(run_dir="run", max_steps=2, val_every=2, log_every=1, batch_size=2, num_workers=0,
                               progress_bar=False, accelerator="cpu")
    summary = fit(Toy(), DataLoader(EpochRecorder(), batch_size=2), DataLoader(EpochRecorder(), batch_size=2),
                  settings)
    for key in ("best_checkpoint", "last_checkpoint"):
        path = Path(summary[key])
        assert path.is_absolute() and path.is_file(), (key, path)
    assert Path(summary["last_checkpoint"]) == tmp_path / "run" / "checkpoints" / "last.ckpt"


def test_a_time_budget_alone_sets_no_step_limit(tmp_path):
    assert TrainerSettings(run_dir="r").max_steps == 2000  # neither given: a run still ends
    assert TrainerSettings(run_dir="r", max_minutes=30).max_steps is None  # the budget decides
    assert TrainerSettings(run_dir="r", max_minutes=30, max_steps=7).max_steps == 7
    settings = TrainerSettings(run_dir=str(tmp_path / "run"), max_minutes=0.02, val_every=1000, log_every=50,
                               batch_size=2, num_workers=0, progress_bar=False, accelerator="cpu")
    summary = fit(Toy(), DataLoader(EpochRecorder(), batch_size=2), DataLoader(EpochRecorder(), batch_size=2),
                  settings)
    assert summary["stopped_by"] == "time budget" and summary["steps"] > 0
