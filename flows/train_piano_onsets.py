"""Flow ``train-piano-onsets``: the visual onset model of thesis ch. 6 on PianoYT shards (table 1).

The work is :func:`tasks.training.piano_onsets.train` on the shared trainer
(:mod:`tasks.training.trainer`); this flow adds the orchestration: a GPU run
holds one slot of the global concurrency limit ``gpu_limit`` (default
``gpu``) for its training and, with ``strict_gpu_limit`` (the default),
refuses to start when that limit does not exist on the server, so that two
runs never share a GPU by accident; the validation curve is published as a
table artifact.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from tasks.training.piano_onsets import PianoOnsetsSettings, train


@task(name="train-piano-onsets")
def train_task(settings: PianoOnsetsSettings) -> dict:
    return train(settings, log=get_run_logger().info)


def _uses_gpu(settings: PianoOnsetsSettings) -> bool:
    from tasks.training.trainer import uses_cuda

    return uses_cuda(settings.trainer)


@flow(name="train-piano-onsets")
def train_piano_onsets(settings: PianoOnsetsSettings, gpu_limit: str = "gpu", strict_gpu_limit: bool = True) -> dict:
    """Train (or resume) one variant under ``settings.trainer.run_dir``; return the trainer's summary."""
    import csv
    from pathlib import Path

    if _uses_gpu(settings):
        from prefect.concurrency.sync import concurrency

        with concurrency(gpu_limit, occupy=1, strict=strict_gpu_limit):
            summary = train_task(settings)
    else:
        summary = train_task(settings)
    metrics = Path(summary["metrics_csv"])
    curve = [r for r in csv.DictReader(open(metrics))] if metrics.is_file() else []
    curve = [{k: v for k, v in r.items() if v != ""} for r in curve if r.get("val_f1")]
    if curve:
        create_table_artifact(key="train-piano-onsets-validation", table=curve,
                              description=f"validation scores of {settings.trainer.run_dir} by step")
    get_run_logger().info("train-piano-onsets: %s", summary)
    return summary
