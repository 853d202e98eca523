"""Flow ``evaluate-av-sync``: the sync network's offset curve (thesis fig. 7.3) and each test video's offset."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows.settings import AvSyncEvaluation
from tasks.evaluation.av_sync import curve_figure, evaluate_checkpoint
from tasks.evaluation.results import provenance, write_results

NOTES = """Each row is one test video: the shift (audio against picture) at which the mean L2 distance between
its windows' visual features and the audio features is smallest, within +-{max_shift:g} s, in seconds and
frames, and its confidence (the median of the video's curve minus its minimum). A positive offset means the sound
comes after the picture. The last row pools every window of every test video: the curve of the thesis's fig. 7.3,
whose minimum should be at 0 on aligned videos (the thesis reports the figure only, no numbers). The full pooled
curve is in av-sync-curve.parquet; the figure in av-sync-curve.png."""


@task(name="evaluate-av-sync-checkpoint")
def evaluate_task(checkpoint: str, data_root: str, max_shift: float) -> dict:
    return evaluate_checkpoint(checkpoint, data_root, max_shift=max_shift, log=get_run_logger().info)


@flow(name="evaluate-av-sync")
def evaluate_av_sync(settings: AvSyncEvaluation) -> dict:
    """Score the checkpoint on the test split; write ``<results>/av-sync.md|.parquet`` and the curve."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.datasets.pianoyt import layout
    from tasks.training.windows import split_parts

    start = time.monotonic()
    result = evaluate_task(settings.checkpoint[0], settings.data_root, settings.max_shift)
    curves = result["curves"]
    pooled = {"video_id": "all test videos", "windows": sum(len(c.distances) for c in curves), **result["pooled"]}
    rows = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
            for r in [*result["videos"], pooled]]
    files = split_parts(layout(settings.data_root).shards, "test")
    prov = provenance(settings.data_root, files, checkpoints=settings.checkpoint, config=result["config"],
                      max_shift_s=settings.max_shift, wall_s=round(time.monotonic() - start, 1), device="cpu")
    md, parquet = write_results(settings.results, "av-sync",
                                "Audio-visual synchronisation of piano videos (thesis ch. 7, fig. 7.3)", rows, prov,
                                NOTES.format(max_shift=settings.max_shift))
    out_dir = Path(settings.results)
    shifts = curves[0].shifts
    pq.write_table(pa.table({"shift_frames": shifts, "shift_s": shifts / curves[0].fps,
                             "mean_distance": result["pooled_curve"]}), out_dir / "av-sync-curve.parquet")
    figure = curve_figure(curves, out_dir / "av-sync-curve.png", "sync network: mean distance over the test set")
    create_table_artifact(key="av-sync", table=rows, description=f"offsets and fig. 7.3's minimum: {md}")
    get_run_logger().info("evaluate-av-sync: %s", md)
    return {"rows": rows, "markdown": md, "parquet": parquet, "figure": figure}
