"""Where a build's files live: a local folder or any fsspec URL (docs/design.md: Storage).

Every file a build keeps (media, audio, labels, shards, status, card) is
named by a *location*: a local path, or a URL such as ``s3://bucket/data/...``
or ``memory://data/...``.  This module is the only place that reads or writes
them, through fsspec:

* :func:`publish` / :func:`write_bytes` make a finished file visible under its
  final name in one step.  On a local file system the file is written under
  a temporary name beside it and renamed; object stores have no rename, but
  they show an object only once its upload is complete, so the file is
  uploaded straight to its name (a reader never sees half of it).  What must
  appear *together* (all the shard parts of one video) gets an explicit
  completion marker on such stores (:mod:`tasks.store.shards`).
* :func:`local_path` gives the tools that need a real file (ffmpeg, decord,
  the transcribers) one: the path itself when the location is local, else a
  copy in the scratch folder (``SIGHTSOUND_SCRATCH``, default a folder under
  the system's temporary directory), fetched once and reused while its size
  matches.

Crash points (for the crash-safety tests): with ``SIGHTSOUND_CRASH_AFTER=N``
in the environment the process kills itself with SIGKILL right after its N-th
durable write; with ``SIGHTSOUND_CRASH_BEFORE=N``, just before the N-th (its
data written under the temporary name, not yet renamed).  With
``SIGHTSOUND_CRASH_IN=worker`` as well, only worker processes (started by
multiprocessing, as Dask's and the process pool's are) count writes and die,
each at its own N-th, so a build loses workers but not its own process; with
``SIGHTSOUND_CRASH_LOG=FILE`` a dying process first appends its pid there.
Nothing happens when neither N is set.

Temporary files are made with the process's umask (:func:`new_file`), not
``mkstemp``'s 0600, because they become the outputs under their final names.
:func:`lock_root` keeps two builds out of one local data root.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from tasks import environment

_writes = 0
_writes_lock = threading.Lock()


def crash_point(when: str) -> None:
    """Count durable writes and SIGKILL this process at the one the environment names (see module doc)."""
    global _writes
    before, after = environment.get(environment.CRASH_BEFORE), environment.get(environment.CRASH_AFTER)
    if not before and not after:
        return
    if environment.get(environment.CRASH_IN) == "worker":
        import multiprocessing

        if multiprocessing.parent_process() is None:
            return
    with _writes_lock:
        if when == "before":
            _writes += 1
            n = _writes
        else:
            n = _writes
    if (when == "before" and before and n == int(before)) or (when == "after" and after and n == int(after)):
        if environment.get(environment.CRASH_LOG):
            with open(environment.get(environment.CRASH_LOG), "a") as log:
                log.write(f"{os.getpid()}\n")
        os.kill(os.getpid(), signal.SIGKILL)


def fs_of(location: str | os.PathLike):
    """``(filesystem, path)`` of a location."""
    fs, path = fsspec.core.url_to_fs(str(location))
    return fs, path


def is_local(location: str | os.PathLike) -> bool:
    return isinstance(fs_of(location)[0], LocalFileSystem)


def join(location: str | os.PathLike, *parts: str) -> str:
    """``location/part/...`` for paths and URLs alike."""
    out = str(location).rstrip("/")
    for p in parts:
        out = f"{out}/{str(p).strip('/')}"
    return out


def root_location(root: str | os.PathLike) -> str:
    """A data root as given on the command line: local paths made absolute, URLs kept."""
    text = str(root)
    if "://" in text and not text.startswith("file://"):
        return text.rstrip("/")
    if text.startswith("file://"):
        text = text[len("file://"):]
    return str(Path(text).resolve())


def exists(location: str | os.PathLike) -> bool:
    fs, path = fs_of(location)
    return fs.exists(path)


def makedirs(location: str | os.PathLike) -> None:
    fs, path = fs_of(location)
    fs.makedirs(path, exist_ok=True)


def remove(location: str | os.PathLike) -> None:
    fs, path = fs_of(location)
    if fs.exists(path):
        fs.rm(path, recursive=fs.isdir(path))


def glob(location_pattern: str) -> list[str]:
    """Locations matching a glob pattern, sorted, in the pattern's own form (path or URL)."""
    fs, path = fs_of(location_pattern)
    found = sorted(fs.glob(path))
    if isinstance(fs, LocalFileSystem):
        return found
    protocol = location_pattern.split("://", 1)[0]
    return [f"{protocol}://{p.lstrip('/')}" if protocol == "memory" else fs.unstrip_protocol(p) for p in found]


def read_bytes(location: str | os.PathLike) -> bytes:
    fs, path = fs_of(location)
    return fs.cat_file(path)


def _scratch_root() -> Path:
    return Path(environment.get(environment.SCRATCH) or Path(tempfile.gettempdir()) / "sightsound-scratch")


def scratch_dir(name: str = "work") -> Path:
    """A local folder for temporary work (created)."""
    d = _scratch_root() / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def _cache_path(location: str) -> Path:
    digest = hashlib.sha256(location.encode("utf-8")).hexdigest()[:16]
    return _scratch_root() / "fetched" / digest / Path(fs_of(location)[1]).name


def local_path(location: str | os.PathLike) -> str:
    """A local file with the content of ``location`` (itself when local; else a cached copy)."""
    location = str(location)
    fs, path = fs_of(location)
    if isinstance(fs, LocalFileSystem):
        return path
    target = _cache_path(location)
    size = fs.size(path)
    if target.is_file() and target.stat().st_size == size:
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _fill_then_rename(target, lambda tmp: fs.get_file(path, tmp))
    return str(target)


def new_file(folder: str | os.PathLike, prefix: str = "", suffix: str = "") -> str:
    """Create a new empty file with a random name in ``folder``; return its path.

    Like ``tempfile.mkstemp`` but created with mode 0666 less the umask: the
    file is renamed into place as an output, and outputs must get the modes
    the user's umask gives (mkstemp's 0600 would make some outputs private).
    """
    for _ in range(100):
        path = os.path.join(os.fspath(folder), f"{prefix}{secrets.token_hex(6)}{suffix}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return path
    raise FileExistsError(errno.EEXIST, "no free temporary name", os.fspath(folder))


def local_output(location: str | os.PathLike) -> str:
    """A local file name to write ``location``'s content to before :func:`publish`.

    Beside the destination when it is local (so the rename stays on one file
    system), else in the scratch folder.
    """
    location = str(location)
    fs, path = fs_of(location)
    if isinstance(fs, LocalFileSystem):
        folder = Path(path).parent
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = scratch_dir("outgoing")
    return new_file(folder, f".{Path(path).name}.", ".part")


def publish(local_file: str | os.PathLike, location: str | os.PathLike, keep_local: bool = False) -> str:
    """Make ``local_file`` the complete content of ``location`` in one visible step; return ``location``.

    The local file is moved (local destination) or uploaded and removed
    (remote destination; kept as the cached copy with ``keep_local``).  A
    move across file systems (EXDEV) is a copy to a temporary name beside the
    destination, then a rename; any other error (a missing source, say) is
    raised as it is, and no temporary file is left behind either way.
    """
    location = str(location)
    fs, path = fs_of(location)
    crash_point("before")
    if isinstance(fs, LocalFileSystem):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(local_file, path)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            _copy_into_place(local_file, path)
            Path(local_file).unlink(missing_ok=True)
    else:
        fs.makedirs(fs._parent(path), exist_ok=True)
        fs.put_file(str(local_file), path)
        if keep_local:
            target = _cache_path(location)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(local_file, target)
        else:
            Path(local_file).unlink(missing_ok=True)
    crash_point("after")
    return location


def _fill_then_rename(final: str | os.PathLike, fill) -> None:
    """``fill(tmp)`` a new temporary beside local file ``final``, then rename it to ``final``; no temporary is left."""
    final = Path(final)
    tmp = new_file(final.parent, f".{final.name}.", ".part")
    try:
        fill(tmp)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _copy_into_place(local_file: str | os.PathLike, path: str) -> None:
    """Copy ``local_file`` (on another file system) beside ``path``, then rename it there."""
    _fill_then_rename(path, lambda tmp: shutil.copyfile(local_file, tmp))


def write_bytes(location: str | os.PathLike, data: bytes) -> str:
    """Write ``data`` as the complete content of ``location`` (see :func:`publish`)."""
    tmp = local_output(location)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        return publish(tmp, location)
    finally:
        Path(tmp).unlink(missing_ok=True)  # gone already once published


# ---- locks: one build per local data root; staging folders owned by live writers

LOCK_NAME = ".sightsound.lock"


class DataRootBusy(RuntimeError):
    """Another build holds the lock of the data root (its message is one line for the user)."""


def try_lock(path: str | os.PathLike) -> int | None:
    """An exclusive ``flock`` on ``path`` (a file, created if missing, or a folder): its fd, or None if held.

    The kernel drops the lock when the fd is closed or its process ends in any
    way (SIGKILL included), so a dead holder never leaves it held.  The fd is
    not inherited by child processes.
    """
    import fcntl

    path = os.fspath(path)
    if os.path.isdir(path):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    else:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def held_lock(path: str | os.PathLike):
    """Wait for and hold an exclusive ``flock`` on the file ``path`` (for short critical sections)."""
    import fcntl

    fd = os.open(os.fspath(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextmanager
def lock_root(root: str | os.PathLike):
    """Hold ``<root>/.sightsound.lock`` while a build writes into the local data root ``root``.

    A second build into the same root is refused at once with
    :class:`DataRootBusy` (the CLI prints it and exits 2) instead of waiting:
    two builds of one root would do the same work twice and then fight over
    the status table, so a second one is almost always a mistake, and a
    command that silently hangs is worse than one that says why it stopped.
    The lock file holds the holder's pid while it is held.

    fsspec URLs (s3://, memory://, ...) are not locked: no lock works on every
    fsspec file system.  Two builds into one remote root at once do not break
    each other's shard parts (staging is per writer) but race on
    ``status.parquet`` and the card (the last to finish wins): don't.
    """
    if not is_local(root):
        yield None
        return
    folder = Path(root_location(root))
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    fd = try_lock(lock)
    if fd is None:
        try:
            holder = lock.read_text().strip()
        except OSError:
            holder = ""
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise DataRootBusy(f"data root {folder} is in use by another build{who}; "
                           f"wait for it to finish or use another --data-root")
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield str(lock)
    finally:
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)
