"""Flow ``evaluate-piano-onsets``: score trained visual onset models on the test split, write table 1."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows.settings import PianoOnsetsEvaluation
from tasks.evaluation.piano_onsets import evaluate_checkpoint, table_rows
from tasks.evaluation.results import provenance, write_results

NOTES = """Note-level onset scores (mir_eval, 50 ms), summed over the test videos; the threshold and the time
filter's sigma (frames) of each model are chosen together on its validation videos (held-out train videos)
by note F1 against their pseudo-labels. "PianoYT
test" scores against the pseudo-labels the build made from the audio (as the thesis); "MIDI test set"
against the true MIDI of the videos where it exists (here: the generated sample set's own MIDI, not the
thesis's phone recordings). The thesis's numbers are for the real PianoYT at the paper sizes; a `small`
run on generated videos is a check that the pipeline learns, not a reproduction of them."""


@task(name="evaluate-checkpoint")
def evaluate_task(checkpoint: str, data_root: str, reference_midi: str | None) -> dict:
    return evaluate_checkpoint(checkpoint, data_root, reference_midi, log=get_run_logger().info)


@flow(name="evaluate-piano-onsets")
def evaluate_piano_onsets(settings: PianoOnsetsEvaluation) -> dict:
    """Evaluate every checkpoint, write ``<results>/piano-onsets.md|.parquet``; return rows and paths."""
    from tasks.datasets.pianoyt import layout as pianoyt_layout
    from tasks.training.windows import split_parts

    start = time.monotonic()
    results = [evaluate_task(c, settings.data_root, settings.reference_midi) for c in settings.checkpoint]
    rows = table_rows(results)
    shards = pianoyt_layout(settings.data_root).shards
    files = split_parts(shards, "test") + split_parts(shards, "train")
    prov = provenance(settings.data_root, files, checkpoints=settings.checkpoint,
                      thresholds={r["variant"]: r["threshold"] for r in results},
                      sigmas={r["variant"]: r["sigma"] for r in results},
                      configs=sorted({r["config"] for r in results}), wall_s=round(time.monotonic() - start, 1),
                      device="cpu")
    md, parquet = write_results(settings.results, "piano-onsets",
                                "Visual piano onsets (thesis ch. 6, table 1)", rows, prov, NOTES)
    create_table_artifact(key="piano-onsets", table=rows, description=f"table 1 rebuilt: {md}")
    get_run_logger().info("evaluate-piano-onsets: %s", md)
    return {"rows": rows, "markdown": md, "parquet": parquet, "results": results}
