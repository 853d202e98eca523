"""Flow ``train-class-embedding``: the class-embedding network (Wiles, Koepke, Zisserman 2019) on VoxCeleb face shards.

One task run of :func:`tasks.training.class_embedding.train` on the shared
trainer, holding one slot of the ``gpu`` concurrency limit on a GPU; see
:mod:`flows.training`.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from flows.training import run_trainings

from tasks.training.class_embedding import ClassEmbeddingSettings, run_name, train


@task(name="train-class-embedding-run", task_run_name="train-{name}")
def run_task(settings: ClassEmbeddingSettings, name: str) -> dict:
    return train(settings, log=get_run_logger().info)


@flow(name="train-class-embedding")
def train_class_embedding(settings: ClassEmbeddingSettings, gpu_limit: str = "gpu",
                          strict_gpu_limit: bool = True) -> dict:
    """Train (or resume) the class-embedding run ``settings`` names; return ``{name: summary or error}``."""
    return run_trainings("train-class-embedding", [(run_name(settings), settings)], run_task, "val_l1", gpu_limit,
                         strict_gpu_limit)
