"""Fingerprints of task inputs, used as Prefect cache keys.

A task's key hashes its name, the cache version and its parameters; the
parameters that name input files are replaced by the files' fingerprints
(size plus a SHA-256 of the content, or of the first and last 4 MiB for big
files), so a changed input file means a new key and the work is redone.
Output paths stay plain strings: the key must be the same before and after
the task has written them.  A download URL (http, https, ftp, a YouTube id's
page) is not a file to fingerprint either: the URL itself is the key, as it
names what the task fetches.
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
    from tasks.store import storage

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


# URLs that name a download, not a file: fingerprinting one would mean fetching
# it (and needs aiohttp, which a fresh install lacks).
DOWNLOAD_SCHEMES = ("http", "https", "ftp", "ftps")


def _is_file(location: str) -> bool:
    """Whether ``location`` is a file to fingerprint: a local file, or a file on an fsspec file system."""
    if "://" not in location:
        return os.path.isfile(location)
    scheme = location.split("://", 1)[0].lower()
    if scheme in DOWNLOAD_SCHEMES:
        return False
    from fsspec.registry import known_implementations, registry

    if scheme not in registry and scheme not in known_implementations:
        return False  # not a file system fsspec knows: a name for yt-dlp, kept as it is
    from tasks.store import storage

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
