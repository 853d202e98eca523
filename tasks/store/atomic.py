"""Write-then-rename: a file appears under its final name only when complete (docs/design.md: Storage).

``path`` may be a local path or an fsspec URL (see :mod:`tasks.store.storage`).
"""

from __future__ import annotations

from pathlib import Path

from tasks.store import storage


def write_bytes_atomic(path: str | Path, data: bytes) -> Path | str:
    """Write ``data`` as the complete file ``path``; return it (a ``Path`` when local, else the URL)."""
    location = storage.write_bytes(path, data)
    return Path(location) if storage.is_local(location) else location


def write_text_atomic(path: str | Path, text: str) -> Path | str:
    return write_bytes_atomic(path, text.encode("utf-8"))
