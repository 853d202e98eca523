"""Flow ``train-onsets-frames``: train Onsets and Frames on a MAESTRO-layout folder (Hawthorne et al. 2018).

Reads like the paper's training section: compute the log-mel features of
every recording once, train the four heads on random windows with Adam,
validate note-level F1 on the validation split, keep the latest and the best
checkpoints.  The logic is in :mod:`tasks.training.onsets_frames` (a
LightningModule on the shared trainer, :mod:`tasks.training.trainer`); this
flow adds the orchestration:

* **One GPU job at a time per GPU.**  A run on CUDA holds one slot of the
  Prefect *global concurrency limit* named ``gpu_limit`` (default ``gpu``)
  for the whole of its training, through
  ``prefect.concurrency.sync.concurrency(gpu_limit, occupy=1)``.  Create the
  limit once per server with as many slots as there are GPU workers
  (``prefect gcl create gpu --limit 1``); workers of the ``sightsound-gpu``
  pool are started with ``prefect worker start --pool sightsound-gpu --limit 1``
  so that each takes one flow run at a time.  When the limit does not exist
  (a local run without a server, say) the run goes on and Prefect logs a
  warning.  CPU runs take no slot.
* **Artifacts**: the validation curve (the rows of ``RUN/metrics.csv`` with
  a validation onset F1) as a table artifact
  (``train-onsets-frames-validation``) and the summary in the flow's log.
"""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from tasks.training.onsets_frames import TrainSettings, check_resume, recordings, train


@task(name="prepare-features")
def prepare_features_task(data: str, cache_dir: str) -> int:
    from tasks.datasets.maestro import prepare

    train_recs, val_recs = recordings(data)
    prepare(train_recs + val_recs, cache_dir)
    return len(train_recs) + len(val_recs)


@task(name="train")
def train_task(settings: dict) -> dict:
    logger = get_run_logger()
    return train(TrainSettings(**settings), log=logger.info)


def validation_curve(metrics_csv) -> list[dict]:
    """The validation rows of a run's ``metrics.csv`` (those with ``val_onset_f1``), empty columns dropped."""
    import csv
    from pathlib import Path

    if not Path(metrics_csv).is_file():
        return []
    with open(metrics_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [{k: v for k, v in r.items() if v != ""} for r in rows if r.get("val_onset_f1")]


@flow(name="train-onsets-frames")
def train_onsets_frames(settings: TrainSettings, gpu_limit: str = "gpu") -> dict:
    """Train (or resume) under ``settings.out_dir``; return the summary (steps, time, scores, checkpoints)."""
    from pathlib import Path

    from tasks.labels.transcribe import pick_device

    logger = get_run_logger()
    data, out_dir, device = settings.data, settings.out_dir, settings.device
    check_resume(out_dir, settings.config, settings.resume)  # a bad last.ckpt fails before the features are made
    settings.trainer_settings()  # and settings the trainer would refuse (amp on without CUDA)
    prepare_features_task(data, settings.cache_dir or str(Path(out_dir) / "features"))
    if pick_device(device).startswith("cuda"):
        from prefect.concurrency.sync import concurrency

        with concurrency(gpu_limit, occupy=1):
            summary = train_task(asdict(settings))
    else:
        summary = train_task(asdict(settings))
    curve = validation_curve(Path(out_dir) / "metrics.csv")
    if curve:
        create_table_artifact(key="train-onsets-frames-validation", table=curve,
                              description=f"validation scores of {out_dir} by step")
    logger.info("train-onsets-frames: %s", summary)
    return summary
