"""Fingerprints of task inputs, used as Prefect cache keys.

A task's key hashes its name, the cache version and its parameters; the
parameters that name input files are replaced by the files' fingerprints
(size plus a SHA-256 of the content, or of the first and last 4 MiB for big
files), so a changed input file means a new key and the work is redone.
Output paths stay plain strings: the key must be the same before and after
the task has written them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

CACHE_VERSION = "1"  # bump when a task's output format changes
_BIG = 64 * 1024 * 1024
_EDGE = 4 * 1024 * 1024


def file_fingerprint(path: str | Path) -> str:
    """Size plus SHA-256 of a file's content (its edges for big files); ``path`` may be an fsspec URL."""
    from tasks import storage

    fs, p = storage.fs_of(path)
    size = fs.size(p)
    h = hashlib.sha256(str(size).encode())
    with fs.open(p, "rb") as f:
        if size <= _BIG:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(f.read(_EDGE))
            f.seek(size - _EDGE)
            h.update(f.read(_EDGE))
    return f"{size}:{h.hexdigest()[:32]}"


def _is_file(location: str) -> bool:
    if "://" not in location:
        return os.path.isfile(location)
    from tasks import storage

    fs, p = storage.fs_of(location)
    return fs.isfile(p)


def key_for(name: str, params: dict, input_files: tuple[str, ...] = ()) -> str:
    """Cache key of task ``name`` called with ``params``; ``input_files`` are fingerprinted."""
    norm = {}
    for k, v in sorted(params.items()):
        if k in input_files and isinstance(v, str) and _is_file(v):
            v = {"file": file_fingerprint(v)}
        norm[k] = v
    blob = json.dumps({"task": name, "v": CACHE_VERSION, "params": norm}, sort_keys=True, default=str)
    return f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:40]}"


def prefect_cache_key(*input_files: str):
    """A Prefect ``cache_key_fn`` that fingerprints the named input-file parameters."""

    def fn(context, parameters: dict) -> str:
        return key_for(context.task.name, parameters, input_files)

    return fn
