"""Flow ``build-pianoyt``: a PianoYT manifest to labelled Parquet shards (thesis ch. 6).

Reads like the paper's data section: for every video of the manifest,
acquire it, probe it, take its audio, transcribe the audio into pseudo-label
MIDI, then decode the frames at the native rate, crop the keyboard to
145 x 800 grayscale and write one row per frame with the onsets and sounding
notes at that frame's time.  A video that fails at any stage is recorded with
the stage and the error; the others go on.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.task_runners import ThreadPoolTaskRunner

from tasks import media
from tasks.acquire import AcquireError, acquire
from tasks.cache import prefect_cache_key
from tasks.manifest import CROP_REFERENCE, read_pianoyt
from tasks.pianoyt import Layout, build_frames, format_table, write_status_and_card
from tasks.shards import remove_video, videos_in_shards
from tasks.transcribe import get_transcriber, labeler_sample_rate, write_midi

STAGES = ("acquire", "probe", "extract-audio", "label", "frames")  # task names, in order


def _cache_root(data_root: str) -> str:
    return os.environ.get("SIGHTSOUND_CACHE_DIR") or str(Path(data_root) / ".prefect" / "cache-keys")


def _policy(data_root: str, *input_files: str):
    # Cache keys live in a folder of their own; the results they point to are
    # small dicts and paths stored in Prefect's local result storage
    # (PREFECT_LOCAL_STORAGE_PATH, which the CLI puts under the data root).
    return CacheKeyFnPolicy(cache_key_fn=prefect_cache_key(*input_files)).configure(key_storage=_cache_root(data_root))


# Which parameters of each task are input files (fingerprinted into its cache key).
INPUT_FILES = {
    "acquire": ("source",),
    "probe": ("path",),
    "extract-audio": ("path",),
    "label": ("wav",),
    "frames": ("video", "labels"),
}


def _transient(task, task_run, state) -> bool:
    """Retry only what may go away: I/O trouble, not bad media or bad labels."""
    try:
        state.result()
    except (media.MediaError, ValueError, AcquireError):
        return False
    except (OSError, MemoryError, TimeoutError):
        return True
    except BaseException:
        return False
    return False


_TRANSCRIBERS: dict = {}
_TRANSCRIBE_LOCK = threading.Lock()


def _transcriber(name: str, options: dict):
    key = (name, tuple(sorted(options.items())))
    if key not in _TRANSCRIBERS:
        _TRANSCRIBERS[key] = get_transcriber(name, **options)
    return _TRANSCRIBERS[key]


@task(name="acquire", persist_result=True, tags=["network"])
def acquire_task(source: str, video_id: str, media_dir: str, attempts: int, backoff_s: float) -> str:
    return acquire(source, video_id, media_dir, attempts=attempts, backoff_s=backoff_s)


@task(name="probe", persist_result=True, retries=1, retry_condition_fn=_transient)
def probe_task(path: str) -> dict:
    info = media.probe(path)
    if not info.has_audio:
        raise media.MediaError(f"{Path(path).name} has no audio track to label")
    return info.as_dict()


@task(name="extract-audio", persist_result=True, retries=1, retry_condition_fn=_transient)
def extract_audio_task(path: str, out_wav: str, sample_rate: int) -> str:
    return media.extract_audio(path, out_wav, sample_rate)


@task(name="label", persist_result=True, retries=1, retry_condition_fn=_transient)
def label_task(wav: str, out_mid: str, labeler: str, labeler_options: dict) -> str:
    audio, _ = media.read_wav(wav)
    # One model and one transcription at a time per process: the model
    # already uses every core (or the GPU).
    with _TRANSCRIBE_LOCK:
        notes = _transcriber(labeler, labeler_options).transcribe(audio)
    return write_midi(notes, out_mid)


@task(name="frames", persist_result=True, retries=1, retry_condition_fn=_transient)
def frames_task(
    video: str,
    labels: str,
    video_id: str,
    split: str,
    crop: list,
    shards_dir: str,
    crop_reference: list,
    image_format: str,
) -> dict:
    return build_frames(
        video, labels, video_id, split, tuple(crop), shards_dir,
        crop_reference=tuple(crop_reference), image_format=image_format,
    )


def _outputs_exist(value) -> bool:
    """A cached result is trusted only while the files it names still exist."""
    if isinstance(value, str):
        return os.path.exists(value)
    if isinstance(value, dict):
        return all(os.path.exists(p) for p in value.get("parts", []))
    return True


class _Stages:
    """Runs one stage at a time over the videos still alive, recording each failure with its stage."""

    def __init__(self, rows, data_root: str, refresh: bool, logger):
        self.records = {
            r.video_id: {"video_id": r.video_id, "split": r.split, "state": "done", "stage": "", "error": ""}
            for r in rows
        }
        self.data_root, self.refresh, self.logger = data_root, refresh, logger
        self.units, self.finished = len(rows) * len(STAGES), 0
        self.progress = create_progress_artifact(
            0.0, key="build-pianoyt-progress", description="video x stage steps finished"
        )

    def live(self) -> list[str]:
        return [vid for vid, r in self.records.items() if r["state"] == "done"]

    def run(self, task_fn, kwargs_for) -> dict:
        """Submit ``task_fn(**kwargs_for(video_id))`` for every live video; return the values by video id."""
        stage = task_fn.name
        policy = _policy(self.data_root, *INPUT_FILES[stage])
        jobs = {vid: kwargs_for(vid) for vid in self.live()}
        futures = {
            vid: task_fn.with_options(cache_policy=policy, refresh_cache=self.refresh).submit(**kw)
            for vid, kw in jobs.items()
        }
        values = {}
        for vid, fut in futures.items():
            fut.wait()
            value = fut.result(raise_on_failure=False)
            if fut.state.is_completed() and not _outputs_exist(value):
                self.logger.info("%s %s: cached result names missing files; running it again", stage, vid)
                fut = task_fn.with_options(cache_policy=policy, refresh_cache=True).submit(**jobs[vid])
                fut.wait()
                value = fut.result(raise_on_failure=False)
            if fut.state.is_completed():
                values[vid] = value
            else:
                message = str(value) if isinstance(value, BaseException) else str(fut.state.message)
                first = message.strip().splitlines()[0][:500] if message.strip() else stage
                self.records[vid].update(state="failed", stage=stage, error=first)
                self.logger.warning("%s failed at %s: %s", vid, stage, first)
        # A failed video counts as finished for every stage it will now skip.
        self.finished = sum(
            len(STAGES) if r["state"] != "done" else STAGES.index(stage) + 1 for r in self.records.values()
        )
        update_progress_artifact(self.progress, progress=100.0 * self.finished / max(1, self.units))
        return values


@flow(name="build-pianoyt", task_runner=ThreadPoolTaskRunner(max_workers=max(2, os.cpu_count() or 2)))
def build_pianoyt(
    manifest: str,
    data_root: str,
    labeler: str = "transkun",
    labeler_options: dict | None = None,
    crop_reference: tuple[int, int] = CROP_REFERENCE,
    image_format: str = "png",
    acquire_attempts: int = 4,
    acquire_backoff_s: float = 2.0,
    refresh: bool = False,
) -> dict:
    """Build PianoYT shards under ``<data_root>/pianoyt``; return the per-video records and summary."""
    logger = get_run_logger()
    rows = read_pianoyt(manifest)  # refuses a bad manifest before any work starts
    layout = Layout.under(data_root)
    for d in (layout.media, layout.audio, layout.labels, layout.shards):
        d.mkdir(parents=True, exist_ok=True)
    labeler_options = dict(labeler_options or {})
    row = {r.video_id: r for r in rows}
    stages = _Stages(rows, data_root, refresh, logger)
    sample_rate = labeler_sample_rate(labeler)

    videos = stages.run(acquire_task, lambda v: dict(
        source=row[v].source, video_id=v, media_dir=str(layout.media),
        attempts=acquire_attempts, backoff_s=acquire_backoff_s))
    stages.run(probe_task, lambda v: dict(path=videos[v]))
    wavs = stages.run(extract_audio_task, lambda v: dict(
        path=videos[v], out_wav=str(layout.audio / f"{v}.wav"), sample_rate=sample_rate))
    mids = stages.run(label_task, lambda v: dict(
        wav=wavs[v], out_mid=str(layout.labels / f"{v}.mid"), labeler=labeler, labeler_options=labeler_options))
    built = stages.run(frames_task, lambda v: dict(
        video=videos[v], labels=mids[v], video_id=v, split=row[v].split, crop=list(row[v].crop),
        shards_dir=str(layout.shards), crop_reference=list(crop_reference), image_format=image_format))

    records = stages.records
    for vid, info in built.items():
        records[vid].update(frames=info["frames"], seconds=info["seconds"], notes=info["notes"])

    for vid in videos_in_shards(layout.shards) - set(built):
        # Shards hold exactly the videos this build finished.
        remove_video(layout.shards, vid)
    ordered = [records[r.video_id] for r in rows]
    report = write_status_and_card(layout, ordered, manifest, labeler)
    create_table_artifact(
        key="build-pianoyt-summary",
        table=report["summary"],
        description=f"build-pianoyt of {manifest} into {layout.root}",
    )
    logger.info("build-pianoyt summary\n%s", format_table(report["summary"]))
    return {"records": ordered, "summary": report["summary"], "root": str(layout.root)}

