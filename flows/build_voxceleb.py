"""Flow ``build-voxceleb``: VoxCeleb face tracks to 256 x 256 face crops in Parquet shards (thesis ch. 3-4).

For every video named by the metadata: acquire it once and probe it; then for
every utterance (face track) take one frame per second, find the face with
dlib near the metadata's box, crop a square around it, resize to 256 x 256
and store it with dlib's 68 landmarks (:mod:`tasks.labels.faces`).  Splits are by
identity, 75/15/10 (:func:`tasks.datasets.voxceleb.identity_splits`); the status table
has one row per utterance.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from flows.runners import make_runner

from flows.stages import LOSS_FIELDS, Stages, acquire_stage, input_files, probe_task, transient_error
from tasks.store import storage
from flows.settings import VoxCelebBuild
from tasks.datasets.voxceleb import build_utterance, layout as voxceleb_layout, read_metadata, write_status_and_card

STAGES = ("acquire", "probe", "faces")


@task(name="faces", persist_result=True, retries=1, retry_condition_fn=transient_error)
def faces_task(video: str, probe: dict, utt: dict, shards_dir: str, split: str, detector: str, min_iou: float,
               margin: float, per_second: float) -> dict:
    return build_utterance(storage.local_path(video), utt, shards_dir, split, detector=detector, min_iou=min_iou, margin=margin,
                           per_second=per_second, probe=probe)


input_files("faces", "video")


@flow(name="build-voxceleb", task_runner=make_runner())
def build_voxceleb(settings: VoxCelebBuild) -> dict:
    """Build face shards under ``<data_root>/voxceleb`` from VoxCeleb txt metadata (folder or zip) or a CSV."""
    logger = get_run_logger()
    s = settings
    utts = read_metadata(s.metadata, s.convention, s.sources)
    units = utts[0].units
    logger.info("%d utterances of %d identities; boxes read as %s", len(utts), len({u.identity for u in utts}), units)
    layout = voxceleb_layout(s.data_root)
    layout.make_dirs()
    by_key = {u.key: u for u in utts}
    stages = Stages("build-voxceleb", utts, STAGES, s.data_root, s.refresh, logger, key=lambda u: u.key,
                    fields=lambda u: {"identity": u.identity, "utterance": u.utterance, "key": u.key})
    video_of = lambda k: by_key[k].video_id  # noqa: E731  one download and probe per video

    videos = stages.run(acquire_stage(s.acquire_attempts, s.acquire_backoff_s), lambda k: dict(
        source=by_key[k].source, video_id=by_key[k].video_id, media_dir=layout.media), group=video_of)
    probes = stages.run(probe_task, lambda k: dict(path=videos[k], need_audio=False), group=video_of)
    built = stages.run(faces_task, lambda k: dict(
        video=videos[k], probe=probes[k], utt={"identity": by_key[k].identity, "video_id": by_key[k].video_id,
                              "utterance": by_key[k].utterance, "boxes": [list(b) for b in by_key[k].boxes],
                              "units": by_key[k].units, "key": k, "region": by_key[k].region},
        shards_dir=layout.shards, split=by_key[k].split, detector=s.detector, min_iou=s.min_iou,
        margin=s.margin, per_second=s.per_second))

    fields = ("frames", "seconds", "sampled", "detected", "fallback", "outside", "past_end", "undecoded", *LOSS_FIELDS)
    return stages.finish(layout, built, fields,
                         lambda records: write_status_and_card(layout, records, s.metadata, units, s.detector))
