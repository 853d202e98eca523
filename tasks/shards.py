"""Parquet shards: hive-partitioned by split, zstd, bounded size, committed atomically per video.

Layout under a dataset's ``shards/`` folder::

    split=train/part-<video id>-0000.parquet
    split=train/part-<video id>-0001.parquet   (a new part every ``max_part_bytes``)
    split=test/...

A part file is named after its video, so each video's rows are written,
replaced or removed without touching any other video, and a rerun that
rebuilds one video rewrites exactly its parts.  The ``split`` column comes from
the folder names (read with ``pyarrow.dataset.dataset(path, partitioning="hive")``).

A video's parts are first written under ``shards/.staging/<video id>/`` and
moved into place only when all of them are complete; pyarrow.dataset skips
names starting with ``.``, so a reader never sees a half-written video.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DEFAULT_MAX_PART_BYTES = 256 * 1024 * 1024
STAGING = ".staging"


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
        self.shards_dir = Path(shards_dir)
        self.video_id = video_id
        self.split = split
        self.schema = schema
        self.max_part_bytes = max_part_bytes
        self.staging = self.shards_dir / STAGING / video_id
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
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
        out = []
        for split, p in self.parts:
            dest = self.shards_dir / f"split={split}"
            dest.mkdir(parents=True, exist_ok=True)
            final = dest / p.name
            os.replace(p, final)
            out.append(str(final))
        shutil.rmtree(self.staging, ignore_errors=True)
        return out

    def abort(self) -> None:
        for split in list(self._open_parts):
            self._close(split)
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False


def remove_video(shards_dir: str | Path, video_id: str) -> int:
    """Delete every committed part of ``video_id``; return how many were removed."""
    shards_dir = Path(shards_dir)
    n = 0
    for split_dir in shards_dir.glob("split=*"):
        for p in split_dir.glob(f"part-{video_id}-[0-9][0-9][0-9][0-9].parquet"):
            p.unlink()
            n += 1
    return n


def videos_in_shards(shards_dir: str | Path) -> set[str]:
    """Ids of the videos that have committed parts."""
    ids = set()
    for p in Path(shards_dir).glob("split=*/part-*.parquet"):
        ids.add(p.name[len("part-") : -len("-0000.parquet")])
    return ids


def read_dataset(shards_dir: str | Path, columns: list[str] | None = None) -> pa.Table:
    """All committed rows, with ``split`` from the hive folders."""
    import pyarrow.dataset as ds

    return ds.dataset(str(shards_dir), format="parquet", partitioning="hive").to_table(columns=columns)


def write_table_atomic(table: pa.Table, path: str | Path) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, str(tmp), compression="zstd")
    os.replace(tmp, path)
    return str(path)
