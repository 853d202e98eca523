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

from flows.training import run_trainings

from tasks.training.violin_pitch import ViolinPitchSettings, run_name, stage_settings, train


@task(name="train-violin-pitch-stage", task_run_name="train-{name}")
def stage_task(settings: ViolinPitchSettings, name: str) -> dict:
    return train(settings, log=get_run_logger().info)


@flow(name="train-violin-pitch")
def train_violin_pitch(settings: ViolinPitchSettings, gpu_limit: str = "gpu", strict_gpu_limit: bool = True) -> dict:
    """Train (or resume) the stages ``settings`` names; return ``{stage name: summary or error}``."""
    from pathlib import Path

    def no_teacher(stage: ViolinPitchSettings) -> str | None:
        if stage.stage == "student" and stage.distill and not Path(stage.teacher).is_file():
            return f"no teacher checkpoint {stage.teacher} (its stage failed or has not run)"
        return None

    runs = [(run_name(stage), stage) for stage in stage_settings(settings)]
    return run_trainings("train-violin-pitch", runs, stage_task, "val_rpa", gpu_limit, strict_gpu_limit, skip=no_teacher)
