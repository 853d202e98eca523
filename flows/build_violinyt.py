"""Flow ``build-violinyt``: violin videos to pitch-labelled Parquet shards (thesis ch. 5).

For every video: acquire it, probe it, take its audio (URMP: the track's own
stem), label the pitch of every frame (aubio yinfft; URMP: its ground-truth
F0 annotation), then decode the frames at the native rate, crop the
violinist to 400 x 200 (h x w) RGB and write one row per frame with the
pitch and a reference into the audio for the teacher network.
"""

from __future__ import annotations


from prefect import flow, get_run_logger, task
from flows.runners import make_runner

from flows.stages import LOSS_FIELDS, Stages, acquire_stage, extract_audio_task, input_files, probe_task, transient_error
from tasks.store import storage
from flows.settings import ViolinBuild
from tasks.datasets.manifest import read_violin
from tasks.datasets.violinyt import AUDIO_RATE, build_frames, label_from_f0, label_yin, layout as violin_layout
from tasks.datasets.violinyt import write_status_and_card
from tasks.labels.pitch import labeler_name

STAGES = ("acquire", "probe", "extract-audio", "pitch", "violin-frames")


@task(name="pitch", persist_result=True, retries=1, retry_condition_fn=transient_error)
def pitch_task(wav: str, f0: str, out: str, fps: float, n_frames: int, yin: dict) -> str:
    if f0:
        return label_from_f0(f0, out, fps, n_frames, yin.get("min_midi", 55), yin.get("max_midi", 88))
    return label_yin(storage.local_path(wav), out, fps, n_frames, yin)


@task(name="violin-frames", persist_result=True, retries=1, retry_condition_fn=transient_error)
def frames_task(video: str, pitch: str, wav: str, video_id: str, split: str, crop: list, shards_dir: str,
                audio_path: str, crop_reference: list, image_format: str) -> dict:
    return build_frames(storage.local_path(video), storage.local_path(pitch), video_id, split, tuple(crop), shards_dir,
                        audio_path, wav=storage.local_path(wav), crop_reference=tuple(crop_reference),
                        image_format=image_format)


input_files("pitch", "wav", "f0")
input_files("violin-frames", "video", "pitch", "wav")


@flow(name="build-violinyt", task_runner=make_runner())
def build_violinyt(settings: ViolinBuild) -> dict:
    """Build violin shards under ``<data_root>/violinyt`` from a violin manifest or a URMP folder."""
    logger = get_run_logger()
    s = settings
    if s.urmp:
        from tasks.datasets.urmp import read_urmp

        rows, source = read_urmp(s.urmp, crop_reference=s.crop_reference), s.urmp
    else:
        rows, source = read_violin(s.manifest, s.crop_reference), s.manifest
    layout = violin_layout(s.data_root)
    layout.make_dirs()
    yin = s.yin.as_dict()
    row = {r.video_id: r for r in rows}
    stages = Stages("build-violinyt", rows, STAGES, s.data_root, s.refresh, logger)

    videos = stages.run(acquire_stage(s.acquire_attempts, s.acquire_backoff_s), lambda v: dict(
        source=row[v].source, video_id=v, media_dir=layout.media))
    probes = stages.run(probe_task, lambda v: dict(path=videos[v], need_audio=not row[v].audio_source))
    wavs = stages.run(extract_audio_task, lambda v: dict(
        path=row[v].audio_source or videos[v], out_wav=layout.at("audio", f"{v}.wav"), sample_rate=AUDIO_RATE))
    pitches = stages.run(pitch_task, lambda v: dict(
        wav=wavs[v], f0=row[v].pitch_source, out=layout.at("labels", f"{v}.parquet"),
        fps=probes[v]["fps"], n_frames=probes[v]["frames"], yin=yin))
    built = stages.run(frames_task, lambda v: dict(
        video=videos[v], pitch=pitches[v], wav=wavs[v], video_id=v, split=row[v].split, crop=list(row[v].crop),
        shards_dir=layout.shards, audio_path=f"audio/{v}.wav", crop_reference=list(s.crop_reference),
        image_format=s.image_format))

    labels = "URMP ground-truth F0" if s.urmp else labeler_name(s.yin)
    return stages.finish(layout, built, ("frames", "seconds", "voiced_frames", "frames_per_split", *LOSS_FIELDS),
                         lambda records: write_status_and_card(layout, records, source, labels))
