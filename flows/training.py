"""What the training flows share: run several trainings of one flow, each a task run, one slot of the GPU limit each.

A training that fails is reported and the others go on; the flow fails at
the end if any did.  GPU runs hold one slot of the global concurrency limit
``gpu_limit`` (default ``gpu``) while they train; each run's validation curve
becomes a table artifact.
"""

from __future__ import annotations

import csv
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact

from tasks.training.trainer import uses_cuda


def validation_curve(summary: dict, metric: str) -> list[dict]:
    """The rows of a run's metrics.csv that carry ``metric`` (its validations), empty fields dropped."""
    metrics = Path(summary["metrics_csv"])
    rows = list(csv.DictReader(open(metrics))) if metrics.is_file() else []
    return [{k: v for k, v in r.items() if v != ""} for r in rows if r.get(metric)]


def run_trainings(flow_name: str, runs: list[tuple[str, object]], train_task, metric: str, gpu_limit: str,
                  strict_gpu_limit: bool, skip: Callable[[object], str | None] = lambda settings: None) -> dict:
    """Run ``train_task(settings, name)`` for each ``(name, settings)``; ``{name: summary or {"error": ...}}``.

    ``settings.trainer`` is the run's :class:`TrainerSettings`; ``skip``
    returns why a run cannot start (then it is recorded as failed, unrun).
    """
    log = get_run_logger()
    results: dict[str, dict] = {}
    for name, settings in runs:
        why = skip(settings)
        if why:
            results[name] = {"error": why}
            log.error("%s %s skipped: %s", flow_name, name, why)
            continue
        if uses_cuda(settings.trainer):
            from prefect.concurrency.sync import concurrency

            slot = concurrency(gpu_limit, occupy=1, strict=strict_gpu_limit)
        else:
            slot = nullcontext()
        with slot:
            state = train_task(settings, name, return_state=True)
        if state.is_completed():
            results[name] = summary = state.result()
            curve = validation_curve(summary, metric)
            if curve:
                create_table_artifact(key=f"{flow_name}-{name}".replace("_", "-").lower(), table=curve,
                                      description=f"validation scores of {settings.trainer.run_dir} by step")
            log.info("%s %s: %s", flow_name, name, summary)
        else:
            message = str(state.message or state.type)
            results[name] = {"error": message}
            log.error("%s %s failed: %s", flow_name, name, message)
    failed = [name for name, r in results.items() if "error" in r]
    if failed:
        raise RuntimeError(f"{flow_name}: run(s) {', '.join(failed)} failed: "
                           + "; ".join(f"{n}: {results[n]['error']}" for n in failed))
    return results
