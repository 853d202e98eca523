"""What the build flows share: the per-video Prefect tasks before labelling, caching, the stage runner.

Every build runs its videos through named stages (Prefect tasks), each
video's stages as one chain: its next stage starts the moment its previous
one ends, whatever the other videos are doing; a video that fails is
recorded with the stage and the first line of the error and skips the rest,
and the other videos go on (:class:`Stages`).  Each task's cache key is its parameters plus
the fingerprints of its input files (:mod:`tasks.store.cache`), stored under the
data root, so a rerun does no finished work again.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from prefect import task
from prefect.context import TaskRunContext
from prefect.tasks import exponential_backoff
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import CacheKeyFnPolicy

from flows import progress

from tasks.media import decode as media
from tasks import environment
from tasks.store import storage
from tasks.media.acquire import AcquireError, acquire
from tasks.store.cache import prefect_cache_key
from tasks.datasets.records import format_table
from tasks.store.shards import remove_video, videos_in_shards


def _cache_root(data_root: str) -> str:
    """Prefect's cache keys: beside the data when the data root is local, else beside Prefect's result storage.

    Builds sharing a remote data root from several machines should share this
    folder too (``SIGHTSOUND_CACHE_DIR``), or each machine redoes the work it
    has no key for (the results are identical; see docs/scale.md).
    """
    if environment.get(environment.CACHE_DIR):
        return environment.get(environment.CACHE_DIR)
    if storage.is_local(data_root):
        return str(Path(storage.root_location(data_root)) / ".prefect" / "cache-keys")
    # Beside Prefect's result storage: a key whose result cannot be read makes
    # Prefect fail the task instead of running it again.
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    tag = hashlib.sha256(storage.root_location(data_root).encode("utf-8")).hexdigest()[:16]
    return str(Path(PREFECT_LOCAL_STORAGE_PATH.value()).parent / "sightsound-cache-keys" / tag)


def _policy(data_root: str, *input_files: str):
    # Cache keys live in a folder of their own; the results they point to are
    # small dicts and paths stored in Prefect's local result storage
    # (PREFECT_LOCAL_STORAGE_PATH, which the CLI puts under the data root).
    return CacheKeyFnPolicy(cache_key_fn=prefect_cache_key(*input_files)).configure(key_storage=_cache_root(data_root))


# Which parameters of each task are input files (fingerprinted into its cache key).
# Tasks of the individual flows add theirs with ``input_files(...)``.
INPUT_FILES = {
    "acquire": ("source",),
    "probe": ("path",),
    "extract-audio": ("path",),
}


# What a built video's record says about frames it lost (tasks.datasets.records.loss_fields), copied to its status row.
LOSS_FIELDS = ("expected_frames", "lost_frames", "lost")


def input_files(task_name: str, *params: str) -> None:
    INPUT_FILES[task_name] = params


def transient_error(task, task_run, state) -> bool:
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


def retry_download(task, task_run, state) -> bool:
    """Retry a download only when asking again may help (not a 404, a private or removed video)."""
    try:
        state.result()
    except AcquireError as exc:
        return not exc.permanent
    except (OSError, TimeoutError):
        return True
    except BaseException:
        return False
    return False


@task(name="acquire", persist_result=True, tags=["network"], retry_condition_fn=retry_download)
def acquire_task(source: str, video_id: str, media_dir: str) -> str:
    """A local path or the location under ``media_dir`` of the video (downloaded once)."""
    try:
        if storage.is_local(media_dir) or "://" not in source:  # (a local file named by the manifest is used in place)
            return acquire(source, video_id, media_dir)
        done = storage.glob(storage.join(media_dir, f"{video_id}.*"))
        if done:
            return done[0]
        local = acquire(source, video_id, storage.scratch_dir("media"))
        return storage.publish(local, storage.join(media_dir, Path(local).name), keep_local=True)
    except AcquireError as exc:
        run = TaskRunContext.get()
        if not exc.permanent and run is not None and run.task.retries and run.task_run.run_count > run.task.retries:
            raise AcquireError(f"{exc} (after {run.task_run.run_count} attempts)") from None
        raise


def acquire_stage(attempts: int, backoff_s: float):
    """``acquire_task`` with Prefect's retries: ``attempts`` in all, waiting ``backoff_s`` x 1, 2, 4, ... between."""
    retries = max(0, int(attempts) - 1)
    return acquire_task.with_options(
        retries=retries, retry_delay_seconds=exponential_backoff(backoff_factor=backoff_s) if retries else 0)


@task(name="probe", persist_result=True, retries=1, retry_condition_fn=transient_error)
def probe_task(path: str, need_audio: bool = True) -> dict:
    info = media.probe(storage.local_path(path))
    if need_audio and not info.has_audio:
        raise media.MediaError(f"{Path(path).name} has no audio track to label")
    return info.as_dict()


@task(name="extract-audio", persist_result=True, retries=1, retry_condition_fn=transient_error)
def extract_audio_task(path: str, out_wav: str, sample_rate: int) -> str:
    src = storage.local_path(path)
    if storage.is_local(out_wav):
        return media.extract_audio(src, out_wav, sample_rate)
    with tempfile.TemporaryDirectory(dir=storage.scratch_dir("audio")) as folder:
        local = media.extract_audio(src, Path(folder) / Path(storage.fs_of(out_wav)[1]).name, sample_rate)
        return storage.publish(local, out_wav, keep_local=True)


def _outputs_exist(value) -> bool:
    """A cached result is trusted only while the files it names still exist."""
    if isinstance(value, str):
        return storage.exists(value)
    if isinstance(value, dict):
        return all(storage.exists(p) for p in value.get("parts", []))
    return True


class Stages:
    """Runs each video through the stages, recording each failure with its stage.

    :meth:`run` only declares a stage and returns its
    values' dict, empty; :meth:`finish` (or :meth:`go`) then runs every
    video through all declared stages as one chain, each video's next stage
    submitted the moment its previous one finishes, so videos flow through
    independently (the label step of one overlaps the frame step of another)
    on whatever task runner the flow has.  The dicts fill in place, which is
    why a stage's ``kwargs_for`` may read an earlier stage's dict: it is
    called when the video reaches that stage.
    """

    def __init__(self, name: str, rows, stages: tuple[str, ...], data_root: str, refresh: bool, logger,
                 key=lambda r: r.video_id, fields=lambda r: {}):
        """``key(row)`` names a unit of work (a video; an utterance for VoxCeleb); ``fields(row)``
        adds columns to its status record."""
        self.records = {
            key(r): {"video_id": r.video_id, "split": r.split, "state": "done", "stage": "", "error": "", **fields(r)}
            for r in rows
        }
        self.name, self.data_root, self.refresh, self.logger = name, data_root, refresh, logger
        self.stages = stages
        self.units, self.finished = len(rows) * len(stages), 0
        self.progress = create_progress_artifact(
            0.0, key=f"{name}-progress", description="video x stage steps finished"
        )
        self._steps: list[tuple] = []  # declared, not yet run: (task_fn, kwargs_for, group, values)

    def live(self) -> list[str]:
        return [vid for vid, r in self.records.items() if r["state"] == "done"]

    def run(self, task_fn, kwargs_for, group=None) -> dict:
        """``task_fn(**kwargs_for(key))`` for every live unit; the values by key.

        With ``group(key)``, the task runs once per group (one download of a
        video for all its utterances) and its value or failure goes to every
        key of the group; ``kwargs_for`` gets the group's first key.  Grouped
        stages come first (the chain fans a group out into its keys after
        them).  This declares the stage and returns its dict, filled by
        :meth:`go`.
        """
        if group is not None and any(g is None for _, _, g, _ in self._steps):
            raise ValueError(f"{task_fn.name}: grouped stages must come before the others")
        values: dict = {}
        self._steps.append((task_fn, kwargs_for, group, values))
        return values

    def go(self) -> None:
        """Run every declared stage as one chain per video (see the class); failures are recorded, never raised."""
        steps, self._steps = self._steps, []
        if not steps:
            return
        import queue

        names = [fn.name for fn, _, _, _ in steps]
        live = self.live()

        def units(i: int, keys: list[str]) -> list[list[str]]:  # the units of stage i over these keys
            group = steps[i][2]
            if group is None:
                return [[k] for k in keys]
            members: dict[str, list[str]] = {}
            for k in keys:
                members.setdefault(group(k), []).append(k)
            return list(members.values())

        expected = [len(units(i, live)) for i in range(len(steps))]  # at most: failures upstream lower it
        started = [False] * len(steps)

        def start(i: int) -> None:  # a stage starts (for the display's clock) when its first unit is submitted
            if not started[i]:
                started[i] = True
                progress.emit(progress.Event(self.name, names[i], "start", total=expected[i]))
        policies = [_policy(self.data_root, *INPUT_FILES.get(name, ())) for name in names]
        finished: "queue.Queue" = queue.Queue()
        inflight: dict = {}  # task run id -> (stage index, member keys, refreshed)
        arrived = [0] * len(steps)  # keys done with each stage (finished it, failed in it or before it)

        def submit(i: int, members: list[str], refresh: bool = False) -> None:
            fn, kwargs_for, _, _ = steps[i]
            start(i)
            fut = fn.with_options(cache_policy=policies[i], refresh_cache=self.refresh or refresh).submit(
                **kwargs_for(members[0]))
            inflight[fut.task_run_id] = (i, members, refresh)
            # as prefect.futures.as_completed does: wrapped futures (Dask, Ray) take the callback this way
            add = getattr(fut, "_add_prefect_done_callback", None) or fut.add_done_callback
            add(finished.put)

        def unit_name(i: int, members: list[str]) -> str:  # a video, or a grouped stage's group
            return members[0] if steps[i][2] is None else steps[i][2](members[0])

        def ended(i: int) -> None:  # a stage no unit can reach any more has ended
            start(i)  # (one every unit failed before still shows, as 0 done)
            progress.emit(progress.Event(self.name, names[i], "end"))

        for members in units(0, live):
            submit(0, members)
        ended_upto = -1
        while inflight:
            fut = finished.get()
            i, members, refreshed = inflight.pop(fut.task_run_id)
            name = names[i]
            value = fut.result(raise_on_failure=False)
            if fut.state.is_completed() and not _outputs_exist(value) and not refreshed:
                self.logger.info("%s %s: cached result names missing files; running it again", name, members[0])
                submit(i, members, refresh=True)
                continue
            arrived[i] += len(members)
            if fut.state.is_completed():
                steps[i][3].update({key: value for key in members})
                progress.emit(progress.Event(self.name, name, "unit", unit=unit_name(i, members)))
                if i + 1 < len(steps):
                    for nxt in (units(i + 1, members) if steps[i + 1][2] is None else [members]):
                        submit(i + 1, nxt)
            else:
                message = str(value) if isinstance(value, BaseException) else str(fut.state.message)
                first = message.strip().splitlines()[0][:500] if message.strip() else name
                for key in members:
                    self.records[key].update(state="failed", stage=name, error=first)
                for j in range(i + 1, len(steps)):  # the stages it skips count as finished
                    arrived[j] += len(members)
                unit = unit_name(i, members)
                self.logger.warning("%s failed at %s: %s", unit, name, first)
                progress.emit(progress.Event(self.name, name, "unit", unit=unit, ok=False, error=first))
            # stages that nothing in flight can still reach have ended, in order
            busy = min((j for j, _, _ in inflight.values()), default=len(steps))
            while ended_upto + 1 < busy:
                ended_upto += 1
                ended(ended_upto)
            self.finished = sum(arrived)
            update_progress_artifact(self.progress, progress=100.0 * min(self.finished, self.units) / max(1, self.units))
        while ended_upto + 1 < len(steps):
            ended_upto += 1
            ended(ended_upto)

    def finish(self, layout, built: dict, fields: tuple[str, ...], write_report) -> dict:
        """Record the built videos' counts, keep only their shards, write status and card, publish the summary.

        ``write_report(records)`` writes the dataset's status table and card
        and returns ``{"summary": rows, ...}``.  Runs the declared stages first (:meth:`go`).
        """
        self.go()
        for vid, info in built.items():
            self.records[vid].update({k: info[k] for k in fields})
        for vid in videos_in_shards(layout.shards) - set(built):
            remove_video(layout.shards, vid)  # shards hold exactly the videos this build finished
        records = list(self.records.values())  # manifest order
        report = write_report(records)
        create_table_artifact(key=f"{self.name}-summary", table=report["summary"],
                              description=f"{self.name} into {layout.root}")
        self.logger.info("%s summary\n%s", self.name, format_table(report["summary"]))
        return {"records": records, "summary": report["summary"], "root": str(layout.root)}
