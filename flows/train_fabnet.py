"""Flow ``train-fabnet``: FAb-Net (thesis ch. 4; BMVC 2018) on VoxCeleb face shards, one run or the table's three.

Each run is a task run of :func:`tasks.training.fabnet.train` on the shared
trainer (``every_variant``: 1 source; + curriculum; + curriculum + 3 sources,
each in its folder of the run directory), holding one slot of the ``gpu``
concurrency limit on a GPU; see :mod:`flows.training`.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from flows.training import run_trainings

from tasks.training.fabnet import FabNetSettings, train, variant_settings


@task(name="train-fabnet-run", task_run_name="train-{name}")
def run_task(settings: FabNetSettings, name: str) -> dict:
    return train(settings, log=get_run_logger().info)


@flow(name="train-fabnet")
def train_fabnet(settings: FabNetSettings, gpu_limit: str = "gpu", strict_gpu_limit: bool = True) -> dict:
    """Train (or resume) the FAb-Net run(s) ``settings`` names; return ``{name: summary or error}``."""
    return run_trainings("train-fabnet", variant_settings(settings), run_task, "val_l1", gpu_limit, strict_gpu_limit)
