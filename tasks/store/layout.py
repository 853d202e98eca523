"""Where a build of one dataset keeps its files under the data root.

Each dataset lives in ``<data root>/<name>/``: ``media/`` downloads, ``audio/``
extracted audio, ``labels/`` pseudo-labels, ``shards/split=<split>/`` Parquet
parts, ``status.parquet`` (one row per manifest row) and ``CARD.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.store import storage


@dataclass(frozen=True)
class Layout:
    """Where a build of one dataset keeps its files under the data root (a path or an fsspec URL)."""

    root: str

    @classmethod
    def under(cls, data_root: str | Path, name: str) -> "Layout":
        return cls(storage.join(storage.root_location(data_root), name))

    def at(self, folder: str, name: str) -> str:
        """The location of file ``name`` in ``folder`` (media, audio, labels, shards)."""
        return storage.join(self.root, folder, name)

    media = property(lambda self: storage.join(self.root, "media"), doc="downloaded videos")
    audio = property(lambda self: storage.join(self.root, "audio"), doc="extracted audio tracks")
    labels = property(lambda self: storage.join(self.root, "labels"), doc="pseudo-labels, one file per video")
    shards = property(lambda self: storage.join(self.root, "shards"), doc="Parquet parts, split=<split>/")
    status = property(lambda self: storage.join(self.root, "status.parquet"), doc="one row per manifest row")
    card = property(lambda self: storage.join(self.root, "CARD.md"), doc="the dataset card")

    def make_dirs(self) -> None:
        for d in (self.media, self.audio, self.labels, self.shards):
            storage.makedirs(d)
