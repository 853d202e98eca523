"""Flow ``evaluate-violin-pitch``: score the trained violin pitch networks on the test split, write table 2."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows.settings import ViolinPitchEvaluation
from tasks.evaluation.results import provenance, write_results
from tasks.evaluation.violin_pitch import evaluate_checkpoint, figures, has_ground_truth_labels, table_rows

NOTES = """Frame-wise pitch scores over the voiced frames of the test videos (the build's left-out videos), all
frames of all videos pooled; RPA: within one semitone, RPA tol: also one frame of offset, PA: the exact class,
ACA: the mean per-class accuracy (%), ACE: the mean absolute class error (semitones). Every network is scored on
the same frames: the middle frames of the videos' 5-frame windows. "pseudo-labels" scores against the labels
the build made from the audio (aubio yinfft, as the thesis); "truth" against the true pitch where it exists
(a sample set's own MIDI; a URMP build's ground-truth F0). The interval is a 95% bootstrap over test videos.
The thesis's numbers are for its real videos at the paper sizes; a `small` run on generated videos is a check
that the pipeline learns, not a reproduction of them."""


@task(name="evaluate-violin-checkpoint")
def evaluate_task(checkpoint: str, data_root: str, truth_midi: str | None) -> dict:
    return evaluate_checkpoint(checkpoint, data_root, truth_midi, log=get_run_logger().info)


@flow(name="evaluate-violin-pitch")
def evaluate_violin_pitch(settings: ViolinPitchEvaluation) -> dict:
    """Evaluate every checkpoint, write ``<results>/violin-pitch.md|.parquet``; return rows and paths."""
    from tasks.datasets.violinyt import layout
    from tasks.training.windows import split_parts

    start = time.monotonic()
    results = [evaluate_task(c, settings.data_root, settings.truth_midi) for c in settings.checkpoint]
    subset = settings.subset if settings.subset != "auto" else (
        "URMP" if has_ground_truth_labels(settings.data_root) else "VnYT")
    rows = table_rows(results, subset)
    shards = layout(settings.data_root).shards
    files = split_parts(shards, "test") + split_parts(shards, "val")
    prov = provenance(settings.data_root, files, checkpoints=settings.checkpoint, subset=subset,
                      configs=sorted({r["config"] for r in results}), wall_s=round(time.monotonic() - start, 1),
                      device="cpu")
    md, parquet = write_results(settings.results, "violin-pitch",
                                "Visual pitch estimation for violin (thesis ch. 5, table 2)", rows, prov, NOTES)
    out = {"rows": rows, "markdown": md, "parquet": parquet,
           "results": [{k: v for k, v in r.items() if k != "tracks"} for r in results]}
    if settings.figure:
        out["figures"] = figures(results, settings.figure)
    create_table_artifact(key="violin-pitch", table=rows, description=f"table 2 rebuilt: {md}")
    get_run_logger().info("evaluate-violin-pitch: %s", md)
    return out
