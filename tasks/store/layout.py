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

    @property
    def media(self) -> str:
        return storage.join(self.root, "media")

    @property
    def audio(self) -> str:
        return storage.join(self.root, "audio")

    @property
    def labels(self) -> str:
        return storage.join(self.root, "labels")

    @property
    def shards(self) -> str:
        return storage.join(self.root, "shards")

    @property
    def status(self) -> str:
        return storage.join(self.root, "status.parquet")

    @property
    def card(self) -> str:
        return storage.join(self.root, "CARD.md")

    def make_dirs(self) -> None:
        for d in (self.media, self.audio, self.labels, self.shards):
            storage.makedirs(d)
