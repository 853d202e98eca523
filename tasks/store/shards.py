"""Parquet shards: hive-partitioned by split, zstd, bounded size, committed atomically per video.

Layout under a dataset's ``shards/`` folder::

    split=train/part-<video id>-0000.parquet
    split=train/part-<video id>-0001.parquet   (a new part every ``max_part_bytes``)
    split=test/...

A part file is named after its video, so each video's rows are written,
replaced or removed without touching any other video, and a rerun that
rebuilds one video rewrites exactly its parts.  The ``split`` column comes from
the folder names (read with ``pyarrow.dataset.dataset(path, partitioning="hive")``).

A video's parts are first written under ``shards/.staging/<video id>.<random>/``
and moved into place only when all of them are complete; pyarrow.dataset
skips names starting with ``.``, so a reader never sees a half-written video.
Each writer has a staging folder of its own, locked (``flock``) while it
lives, so two writers of one video never remove each other's parts; a new
writer removes the staging folders of that video whose writer has died.

On a data root that is not a local folder (an fsspec URL, :mod:`tasks.store.storage`)
the parts are staged in the local scratch folder and uploaded one by one to
their final names (an object appears only once complete), and then a
completion marker ``shards/_committed/<video id>.json`` lists them;
:func:`read_dataset` reads only parts that a marker lists, so a video whose
upload was cut short is never read as complete.  pyarrow skips names starting
with ``_`` too.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.store import storage

DEFAULT_MAX_PART_BYTES = 256 * 1024 * 1024
STAGING = ".staging"
MARKERS = "_committed"


def part_name(video_id: str, index: int) -> str:
    return f"part-{video_id}-{index:04d}.parquet"


class VideoShardWriter:
    """Write one video's rows into size-bounded parquet parts in a staging folder.

    Use as a context manager; :meth:`write` takes a ``pyarrow.RecordBatch``
    (one row group each) and, optionally, the split it belongs to (a video
    whose frames go to more than one split, like the violin set's train/val
    parts of one video); :meth:`commit` moves the parts into
    ``shards/split=<split>/``.
    """

    def __init__(
        self,
        shards_dir: str | Path,
        video_id: str,
        split: str,
        schema: pa.Schema,
        max_part_bytes: int = DEFAULT_MAX_PART_BYTES,
    ):
        self.shards_dir = str(shards_dir)
        self.video_id = video_id
        self.split = split
        self.schema = schema
        self.max_part_bytes = max_part_bytes
        if storage.is_local(self.shards_dir):
            parent = Path(storage.fs_of(self.shards_dir)[1]) / STAGING
        else:
            key = hashlib.sha256(self.shards_dir.encode("utf-8")).hexdigest()[:16]
            parent = storage.scratch_dir(f"staging-{key}")
        self.staging, self._staging_fd = _new_staging(parent, video_id)
        self.parts: list[tuple[str, Path]] = []  # (split, staged path)
        self.rows = 0
        self._open_parts: dict[str, tuple[pq.ParquetWriter, list[int]]] = {}
        self._counts: dict[str, int] = {}

    def _open(self, split: str) -> pq.ParquetWriter:
        index = self._counts.get(split, 0)
        self._counts[split] = index + 1
        folder = self.staging / f"split={split}"
        folder.mkdir(exist_ok=True)
        path = folder / part_name(self.video_id, index)
        self.parts.append((split, path))
        # Fixed writer settings: the same rows give the same bytes on every run.
        writer = pq.ParquetWriter(
            str(path),
            self.schema,
            compression="zstd",
            compression_level=3,
            use_dictionary=["video_id"],
            write_statistics=["video_id", "frame_index", "time"],
        )
        self._open_parts[split] = (writer, [0])  # [bytes written so far]
        return writer

    def write(self, batch: pa.RecordBatch, split: str | None = None) -> None:
        split = split or self.split
        current = self._open_parts.get(split)
        if current is None or current[1][0] >= self.max_part_bytes:
            self._close(split)
            self._open(split)
            current = self._open_parts[split]
        writer, size = current
        writer.write_batch(batch)
        size[0] += batch.nbytes
        self.rows += batch.num_rows

    def _close(self, split: str) -> None:
        current = self._open_parts.pop(split, None)
        if current is not None:
            current[0].close()

    def commit(self) -> list[str]:
        """Replace this video's parts in ``split=<split>/`` with the staged ones; return their paths."""
        for split in list(self._open_parts):
            self._close(split)
        if not self.parts:  # a video with no rows still gets an (empty) part, so it is visible
            self._open(self.split)
            self._close(self.split)
        remove_video(self.shards_dir, self.video_id)
        out = [storage.publish(p, storage.join(self.shards_dir, f"split={split}", p.name)) for split, p in self.parts]
        if not storage.is_local(self.shards_dir):
            storage.write_bytes(_marker(self.shards_dir, self.video_id),
                                json.dumps({"video_id": self.video_id, "parts": out}, indent=1).encode("utf-8"))
        self._drop_staging()
        return out

    def abort(self) -> None:
        for split in list(self._open_parts):
            self._close(split)
        self._drop_staging()

    def _drop_staging(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        if self._staging_fd is not None:
            os.close(self._staging_fd)  # (after the removal: a live writer's folder is never swept)
            self._staging_fd = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False


def _new_staging(parent: Path, video_id: str) -> tuple[Path, int]:
    """A new staging folder for ``video_id`` under ``parent``, and the fd of its lock (held until dropped).

    Under ``parent/.lock`` (a short critical section), the staging folders of
    this video whose writer is gone (their lock is free) are removed first:
    what a killed build left behind.
    """
    parent.mkdir(parents=True, exist_ok=True)
    with storage.held_lock(parent / ".lock"):
        old = [Path(p) for p in glob.glob(os.path.join(glob.escape(str(parent)), glob.escape(video_id) + ".*"))]
        for folder in old + [parent / video_id]:  # (the bare name: staging of earlier versions)
            if not folder.is_dir():
                continue
            fd = storage.try_lock(folder)
            if fd is not None:
                try:
                    shutil.rmtree(folder, ignore_errors=True)
                finally:
                    os.close(fd)
        folder = Path(tempfile.mkdtemp(prefix=f"{video_id}.", dir=parent))
        fd = storage.try_lock(folder)
    assert fd is not None, folder  # new, and only its creator knows its name
    return folder, fd


def _marker(shards_dir: str, video_id: str) -> str:
    return storage.join(shards_dir, MARKERS, f"{video_id}.json")


def remove_video(shards_dir: str | Path, video_id: str) -> int:
    """Delete every part of ``video_id`` (and its completion marker); return how many parts were removed."""
    shards_dir = str(shards_dir)
    storage.remove(_marker(shards_dir, video_id))  # first: the video stops counting as complete
    parts = storage.glob(storage.join(shards_dir, "split=*", f"part-{video_id}-[0-9][0-9][0-9][0-9].parquet"))
    for p in parts:
        storage.remove(p)
    return len(parts)


def videos_in_shards(shards_dir: str | Path) -> set[str]:
    """Ids of the videos that have parts (complete or not)."""
    return {Path(p).name[len("part-"): -len("-0000.parquet")]
            for p in storage.glob(storage.join(str(shards_dir), "split=*", "part-*.parquet"))}


def complete_parts(shards_dir: str | Path) -> list[str]:
    """The part files of complete videos: all of them locally; those a marker lists elsewhere."""
    shards_dir = str(shards_dir)
    if storage.is_local(shards_dir):
        return storage.glob(storage.join(shards_dir, "split=*", "part-*.parquet"))
    parts = []
    for marker in storage.glob(storage.join(shards_dir, MARKERS, "*.json")):
        parts += json.loads(storage.read_bytes(marker))["parts"]
    return sorted(parts)


def read_dataset(shards_dir: str | Path, columns: list[str] | None = None) -> pa.Table:
    """All rows of complete videos, with ``split`` from the hive folders."""
    import pyarrow.dataset as ds

    shards_dir = str(shards_dir)
    if storage.is_local(shards_dir):
        return ds.dataset(shards_dir, format="parquet", partitioning="hive").to_table(columns=columns)
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, root = storage.fs_of(shards_dir)
    files = [storage.fs_of(p)[1] for p in complete_parts(shards_dir)]
    if not files:
        raise FileNotFoundError(f"no complete shard parts under {shards_dir}")
    dataset = ds.dataset(files, format="parquet", filesystem=PyFileSystem(FSSpecHandler(fs)),
                         partitioning=ds.partitioning(flavor="hive"), partition_base_dir=root)
    return dataset.to_table(columns=columns)


def write_table_atomic(table: pa.Table, path: str | Path) -> str:
    """Write ``table`` as the complete Parquet file at ``path`` (a path or URL; :func:`storage.publish`)."""
    tmp = storage.local_output(path)
    try:
        pq.write_table(table, tmp, compression="zstd")
        return storage.publish(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)  # gone already once published
