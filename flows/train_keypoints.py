"""Flow ``train-keypoints``: Jakab et al.'s keypoint bottleneck (NeurIPS 2018) on VoxCeleb face shards.

One task run of :func:`tasks.training.keypoints.train` on the shared
trainer, holding one slot of the ``gpu`` concurrency limit on a GPU; see
:mod:`flows.training`.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from flows.training import run_trainings

from tasks.training.keypoints import KeypointSettings, paper_batch, run_name, train


@task(name="train-keypoints-run", task_run_name="train-{name}")
def run_task(settings: KeypointSettings, name: str) -> dict:
    return train(settings, log=get_run_logger().info)


@flow(name="train-keypoints")
def train_keypoints(settings: KeypointSettings, gpu_limit: str = "gpu", strict_gpu_limit: bool = True) -> dict:
    """Train (or resume) the keypoint run ``settings`` names; return ``{name: summary or error}``."""
    runs = [(run_name(settings), paper_batch(settings))]
    return run_trainings("train-keypoints", runs, run_task, "val_loss", gpu_limit, strict_gpu_limit)
