"""Flow ``train-x2face``: X2Face (thesis ch. 3; ECCV 2018) on VoxCeleb face shards, stage I or II.

One task run of :func:`tasks.training.x2face.train` on the shared trainer,
holding one slot of the ``gpu`` concurrency limit on a GPU; see
:mod:`flows.training`.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from flows.training import run_trainings

from tasks.training.x2face import X2FaceSettings, paper_batch, run_name, train


@task(name="train-x2face-run", task_run_name="train-{name}")
def run_task(settings: X2FaceSettings, name: str) -> dict:
    return train(settings, log=get_run_logger().info)


@flow(name="train-x2face")
def train_x2face(settings: X2FaceSettings, gpu_limit: str = "gpu", strict_gpu_limit: bool = True) -> dict:
    """Train (or resume) the X2Face run ``settings`` names; return ``{name: summary or error}``."""
    runs = [(run_name(settings), paper_batch(settings))]
    return run_trainings("train-x2face", runs, run_task, "val_l1", gpu_limit, strict_gpu_limit)
