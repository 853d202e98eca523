"""Flow ``train-av-sync``: the audio-visual sync network of thesis ch. 7 on PianoYT shards and their audio.

One task run of :func:`tasks.training.av_sync.train` on the shared trainer,
holding one slot of the ``gpu`` concurrency limit on a GPU; see
:mod:`flows.training`.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from flows.training import run_trainings
from tasks.training.av_sync import SyncSettings, train


@task(name="train-av-sync-run", task_run_name="train-{name}")
def run_task(settings: SyncSettings, name: str) -> dict:
    return train(settings, log=get_run_logger().info)


@flow(name="train-av-sync")
def train_av_sync(settings: SyncSettings, gpu_limit: str = "gpu", strict_gpu_limit: bool = True) -> dict:
    """Train (or resume) the sync network under ``settings.trainer.run_dir``; return ``{"av-sync": summary}``."""
    return run_trainings("train-av-sync", [("av-sync", settings)], run_task, "val_loss", gpu_limit, strict_gpu_limit)
