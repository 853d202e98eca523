"""Flow ``train-av-mlp``: the audio-visual MLP of thesis ch. 6, table 2, on noisy mixtures of a PianoYT build's audio.

One task run of :func:`tasks.training.av_mlp.train` (features of the two
frozen networks, then the MLP on the shared trainer), holding one slot of
the ``gpu`` concurrency limit on a GPU; see :mod:`flows.training`.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from flows.training import run_trainings
from tasks.training.av_mlp import AvMlpSettings, train


@task(name="train-av-mlp-run", task_run_name="train-{name}")
def run_task(settings: AvMlpSettings, name: str) -> dict:
    return train(settings, log=get_run_logger().info)


@flow(name="train-av-mlp")
def train_av_mlp(settings: AvMlpSettings, gpu_limit: str = "gpu", strict_gpu_limit: bool = True) -> dict:
    """Train (or resume) the MLP under ``settings.trainer.run_dir``; return ``{"av-mlp": summary}``."""
    return run_trainings("train-av-mlp", [("av-mlp", settings)], run_task, "val_f1", gpu_limit, strict_gpu_limit)
