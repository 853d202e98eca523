"""Flow ``build-pianoyt``: a PianoYT manifest to labelled Parquet shards (thesis ch. 6).

Reads like the paper's data section: for every video of the manifest,
acquire it, probe it, take its audio, transcribe the audio into pseudo-label
MIDI, then decode the frames at the native rate, crop the keyboard to
145 x 800 grayscale and write one row per frame with the onsets and sounding
notes at that frame's time.  A video that fails at any stage is recorded with
the stage and the error; the others go on.
"""

from __future__ import annotations

import threading

from prefect import flow, get_run_logger, task
from flows.runners import make_runner

from flows.stages import LOSS_FIELDS, Stages, acquire_stage, extract_audio_task, input_files, probe_task, transient_error
from tasks.store import storage
from flows.settings import PianoBuild
from tasks.datasets.manifest import read_pianoyt
from tasks.datasets.pianoyt import build_frames, layout as pianoyt_layout, write_status_and_card
from tasks.labels.transcribe import WINDOW_S, get_transcriber, labeler_sample_rate, transcribe_wav, write_midi
from tasks.labels.transcribe import labeler_options as make_labeler_options

STAGES = ("acquire", "probe", "extract-audio", "label", "frames")  # task names, in order
AV_STAGES = ("acquire", "probe", "extract-audio", "av-offset", "label", "frames")  # with --av-offset

_TRANSCRIBERS: dict = {}
_TRANSCRIBE_LOCK = threading.Lock()


def _transcriber(name: str, options: dict):
    key = (name, tuple(sorted(options.items())))
    if key not in _TRANSCRIBERS:
        _TRANSCRIBERS[key] = get_transcriber(name, **options)
    return _TRANSCRIBERS[key]


def _transcribe(name: str, options: dict, wav: str, window_s: float):
    # One model and one transcription at a time per process: the model
    # already uses every core (or the GPU).  Kept out of the task's body: a
    # task function goes to process and Dask workers pickled by value, with
    # the globals it names (a lock does not pickle, and a copied cache would
    # load the model again for every video); a plain module function goes by
    # reference, so each worker keeps one model.
    with _TRANSCRIBE_LOCK:
        return transcribe_wav(_transcriber(name, options), wav, window_s)


@task(name="label", persist_result=True, retries=1, retry_condition_fn=transient_error)
def label_task(wav: str, out_mid: str, labeler: str, labeler_options: dict, window_s: float = WINDOW_S) -> str:
    # Reads and transcribes the audio window by window (tasks.labels.transcribe.transcribe_wav): memory does
    # not grow with the video's length.
    return write_midi(_transcribe(labeler, labeler_options, storage.local_path(wav), window_s), out_mid)


@task(name="av-offset", persist_result=True, retries=1, retry_condition_fn=transient_error)
def av_offset_task(video: str, wav: str, crop: list, crop_reference: list, checkpoint: str) -> dict:
    # The sync network's estimate (thesis ch. 7) from the video's frames and the build's audio track.
    from tasks.evaluation.av_sync import video_offset

    est = video_offset(storage.local_path(video), tuple(crop), checkpoint, crop_reference=tuple(crop_reference),
                       wav=storage.local_path(wav))
    return {"av_offset_s": est["offset_s"], "av_offset_frames": est["offset_frames"],
            "av_offset_confidence": round(est["confidence"], 4)}


@task(name="frames", persist_result=True, retries=1, retry_condition_fn=transient_error)
def frames_task(
    video: str,
    labels: str,
    wav: str,
    video_id: str,
    split: str,
    crop: list,
    shards_dir: str,
    crop_reference: list,
    image_format: str,
    av_offset: dict | None = None,
) -> dict:
    shift = av_offset["av_offset_s"] if av_offset else 0.0
    built = build_frames(
        storage.local_path(video), storage.local_path(labels), video_id, split, tuple(crop), shards_dir,
        wav=storage.local_path(wav), crop_reference=tuple(crop_reference), image_format=image_format,
        label_shift=shift,
    )
    return {**built, **(av_offset or {})}


input_files("label", "wav")
input_files("av-offset", "video", "wav", "checkpoint")
input_files("frames", "video", "labels", "wav")


@flow(name="build-pianoyt", task_runner=make_runner())
def build_pianoyt(settings: PianoBuild) -> dict:
    """Build PianoYT shards under ``<data_root>/pianoyt``; return the per-video records and summary."""
    logger = get_run_logger()
    s = settings
    rows = read_pianoyt(s.manifest, s.crop_reference)  # refuses a bad manifest before any work starts
    labeler_options = make_labeler_options(s.labeler, s.device, s.checkpoint)  # and a bad checkpoint
    layout = pianoyt_layout(s.data_root)
    layout.make_dirs()
    row = {r.video_id: r for r in rows}
    if s.av_offset:
        from tasks.training.av_sync import load_net

        load_net(s.av_offset)  # a checkpoint of another model is refused before any work
    stages = Stages("build-pianoyt", rows, AV_STAGES if s.av_offset else STAGES, s.data_root, s.refresh, logger)
    sample_rate = labeler_sample_rate(s.labeler)

    videos = stages.run(acquire_stage(s.acquire_attempts, s.acquire_backoff_s), lambda v: dict(
        source=row[v].source, video_id=v, media_dir=layout.media))
    stages.run(probe_task, lambda v: dict(path=videos[v]))
    wavs = stages.run(extract_audio_task, lambda v: dict(
        path=videos[v], out_wav=layout.at("audio", f"{v}.wav"), sample_rate=sample_rate))
    offsets = stages.run(av_offset_task, lambda v: dict(
        video=videos[v], wav=wavs[v], crop=list(row[v].crop), crop_reference=list(s.crop_reference),
        checkpoint=s.av_offset)) if s.av_offset else {}
    mids = stages.run(label_task, lambda v: dict(
        wav=wavs[v], out_mid=layout.at("labels", f"{v}.mid"), labeler=s.labeler, labeler_options=labeler_options,
        window_s=s.label_window_s))
    built = stages.run(frames_task, lambda v: dict(
        video=videos[v], labels=mids[v], wav=wavs[v], video_id=v, split=row[v].split, crop=list(row[v].crop),
        shards_dir=layout.shards, crop_reference=list(s.crop_reference), image_format=s.image_format,
        **({"av_offset": offsets[v]} if s.av_offset else {})))

    av_fields = ("av_offset_s", "av_offset_frames", "av_offset_confidence") if s.av_offset else ()
    return stages.finish(layout, built, ("frames", "seconds", "notes", *LOSS_FIELDS, *av_fields),
                         lambda records: write_status_and_card(layout, records, s.manifest, s.labeler,
                                                              s.label_window_s, s.av_offset))
