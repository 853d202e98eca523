"""Flow ``train-violin-pitch``: the violin pitch networks of thesis ch. 5 on VnYT shards (table 2).

Stages, each a task run of :func:`tasks.training.violin_pitch.train` on the
shared trainer: the audio teacher, then the students that distil from it
(5 frames, 1 frame) and the 5-frame student without distillation
(``stage="all"``, each in its own folder of the run directory; one stage:
``stage="teacher"`` or ``"student"``).  A stage that fails is reported and
the others go on (a distilled student is skipped when its teacher failed);
the flow fails at the end if any stage did.  GPU runs hold one slot of the
global concurrency limit ``gpu_limit`` (default ``gpu``) per stage, as the
other training flows; each stage's validation curve is a table artifact.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from tasks.training.violin_pitch import ViolinPitchSettings, run_name, stage_settings, train


@task(name="train-violin-pitch-stage", task_run_name="train-{name}")
def stage_task(settings: ViolinPitchSettings, name: str) -> dict:
    return train(settings, log=get_run_logger().info)


def _uses_gpu(settings: ViolinPitchSettings) -> bool:
    from tasks.training.trainer import uses_cuda

    return uses_cuda(settings.trainer)


def _curve(summary: dict) -> list[dict]:
    import csv
    from pathlib import Path

    metrics = Path(summary["metrics_csv"])
    rows = list(csv.DictReader(open(metrics))) if metrics.is_file() else []
    return [{k: v for k, v in r.items() if v != ""} for r in rows if r.get("val_rpa")]


@flow(name="train-violin-pitch")
def train_violin_pitch(settings: ViolinPitchSettings, gpu_limit: str = "gpu", strict_gpu_limit: bool = True) -> dict:
    """Train (or resume) the stages ``settings`` names; return ``{stage name: summary or error}``."""
    from contextlib import nullcontext
    from pathlib import Path

    log = get_run_logger()
    results: dict[str, dict] = {}
    for stage in stage_settings(settings):
        name = run_name(stage)
        if stage.stage == "student" and stage.distill and not Path(stage.teacher).is_file():
            results[name] = {"error": f"no teacher checkpoint {stage.teacher} (its stage failed or has not run)"}
            log.error("train-violin-pitch %s skipped: %s", name, results[name]["error"])
            continue
        if _uses_gpu(stage):
            from prefect.concurrency.sync import concurrency

            slot = concurrency(gpu_limit, occupy=1, strict=strict_gpu_limit)
        else:
            slot = nullcontext()
        with slot:
            state = stage_task(stage, name, return_state=True)
        if state.is_completed():
            results[name] = summary = state.result()
            curve = _curve(summary)
            if curve:
                create_table_artifact(key=f"train-violin-pitch-{name}".replace("_", "-"), table=curve,
                                      description=f"validation scores of {stage.trainer.run_dir} by step")
            log.info("train-violin-pitch %s: %s", name, summary)
        else:
            message = str(state.message or state.type)
            results[name] = {"error": message}
            log.error("train-violin-pitch %s failed: %s", name, message)
    failed = [name for name, r in results.items() if "error" in r]
    if failed:
        raise RuntimeError(f"train-violin-pitch: stage(s) {', '.join(failed)} failed: "
                           + "; ".join(f"{n}: {results[n]['error']}" for n in failed))
    return results
