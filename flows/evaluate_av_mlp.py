"""Flow ``evaluate-av-mlp``: thesis ch. 6, table 2 (note onsets from noisy audio), written as ``piano-noisy``."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows.settings import AvMlpEvaluation
from tasks.evaluation.piano_noisy import evaluate_checkpoint, table_rows
from tasks.evaluation.results import provenance, write_results

NOTES = """Note-level onset scores (mir_eval, 50 ms) summed over the test videos, whose audio is mixed with another
test video's audio at SNR = {snr:g} (power ratio). "PianoYT test" scores against the build's pseudo-labels from the
clean audio (as the thesis); "MIDI test set" against the true MIDI where it exists (the generated sample set's own).
Every row's threshold and time filter are chosen on the validation videos' noisy mixtures by note F1, never on
test. The first row is Onsets and Frames on the clean audio: its distance from the build's labeler (transkun on
the sample builds). The audio features are Onsets and Frames' onset BiLSTM output ({audio_dim}-d here, 512-d in
the thesis), the visual ones the onset model's pooled layer4 ({visual_dim}-d). The thesis's numbers are for the
real PianoYT at paper sizes; a `small` run on generated videos checks that the pipeline learns, no more."""


@task(name="evaluate-av-mlp-checkpoint")
def evaluate_task(checkpoint: str, data_root: str, reference_midi: str | None) -> dict:
    return evaluate_checkpoint(checkpoint, data_root, reference_midi, log=get_run_logger().info)


@flow(name="evaluate-av-mlp")
def evaluate_av_mlp(settings: AvMlpEvaluation) -> dict:
    """Score the MLP and the rows beside it; write ``<results>/piano-noisy.md|.parquet``."""
    from tasks.datasets.pianoyt import layout
    from tasks.training.windows import split_parts

    start = time.monotonic()
    result = evaluate_task(settings.checkpoint[0], settings.data_root, settings.reference_midi)
    rows = table_rows(result)
    shards = layout(settings.data_root).shards
    prov = provenance(settings.data_root, split_parts(shards, "test") + split_parts(shards, "train"),
                      checkpoints=settings.checkpoint, onsets_frames=result["onsets_frames"], visual=result["visual"],
                      snr=result["snr"], validation_videos=result["validation_videos"],
                      wall_s=round(time.monotonic() - start, 1), device="cpu")
    md, parquet = write_results(settings.results, "piano-noisy",
                                "Note onsets from noisy audio (thesis ch. 6, table 2)", rows, prov,
                                NOTES.format(snr=result["snr"], audio_dim=result["audio_dim"],
                                             visual_dim=result["visual_dim"]))
    create_table_artifact(key="piano-noisy", table=rows, description=f"table 2 rebuilt: {md}")
    get_run_logger().info("evaluate-av-mlp: %s", md)
    return {"rows": rows, "markdown": md, "parquet": parquet, "result": result}
