"""Two builds into one data root, two writers of one video, and publish's failures (issue 11, case 6).

Two builds of one manifest into one data root at the same time used to break
each other (one removed the other's ``.staging/<id>``), and ``publish`` took
any OSError for a move across file systems, leaving a 0-byte ``.part`` file
beside the destination.  Now a local data root is locked for a build (a second
one is refused at once, exit 2, one line), each shard writer stages in a
folder of its own, and publish copies only on EXDEV and leaves nothing behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pytest

from tasks.store import storage
from tasks.store.shards import STAGING, VideoShardWriter, read_dataset

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = pa.schema([("video_id", pa.string()), ("frame_index", pa.int32()), ("time", pa.float64())])


def _batch(vid: str, start: int, n: int) -> pa.RecordBatch:
    return pa.record_batch([pa.array([vid] * n), pa.array(range(start, start + n), pa.int32()),
                            pa.array([i / 25 for i in range(start, start + n)])], schema=SCHEMA)


def _stray(folder: Path) -> list[str]:
    """Temporary files and staging folders left under ``folder`` (the staging lock file aside)."""
    out = [str(p) for p in folder.rglob("*.part")]
    for staging in folder.rglob(STAGING):
        out += [str(p) for p in staging.iterdir() if p.name != ".lock"]
    return sorted(out)


def test_publish_of_a_missing_source_raises_and_leaves_no_temporary(tmp_path):
    out = tmp_path / "shards" / "split=train"
    out.mkdir(parents=True)
    with pytest.raises(FileNotFoundError):
        storage.publish(tmp_path / "gone.parquet", out / "part-a-0000.parquet")
    assert list(out.iterdir()) == []  # no 0-byte .part-*.part


def test_publish_onto_a_folder_raises_and_keeps_the_source(tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(b"data")
    (tmp_path / "dest").mkdir()
    with pytest.raises(OSError) as err:
        storage.publish(src, tmp_path / "dest")
    assert err.value.errno != 18  # not taken for a move across file systems (EXDEV)
    assert src.read_bytes() == b"data" and list((tmp_path / "dest").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "dest"]


def test_publish_across_file_systems_copies_then_renames(tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system to move across")
    fd, name = tempfile.mkstemp(prefix=".sightsound-test.", dir=shm)
    os.write(fd, b"across")
    os.close(fd)
    src = Path(name)
    dest = tmp_path / "out" / "x.bin"
    assert storage.publish(src, dest) == str(dest)
    assert dest.read_bytes() == b"across" and not src.exists()
    assert [p.name for p in dest.parent.iterdir()] == ["x.bin"]


def test_two_writers_of_one_video_keep_their_own_staging(tmp_path):
    shards = tmp_path / "shards"
    a = VideoShardWriter(shards, "v", "train", SCHEMA)
    a.write(_batch("v", 0, 5))
    b = VideoShardWriter(shards, "v", "train", SCHEMA)  # the old code removed a's staged part here
    b.write(_batch("v", 0, 3))
    a.write(_batch("v", 5, 5))
    a.commit()
    assert sorted(read_dataset(shards).column("frame_index").to_pylist()) == list(range(10))
    b.commit()
    assert sorted(read_dataset(shards).column("frame_index").to_pylist()) == list(range(3))
    assert _stray(tmp_path) == []


def test_a_dead_writers_staging_is_removed_by_the_next_writer(tmp_path):
    staging = tmp_path / "shards" / STAGING
    for name in ("v", "v.deadbeef", "w.cafe"):  # v: a killed writer of an older version; w: another video
        (staging / name / "split=train").mkdir(parents=True)
        (staging / name / "split=train" / "part-v-0000.parquet").write_bytes(b"half")
    with VideoShardWriter(tmp_path / "shards", "v", "train", SCHEMA) as w:
        assert sorted(p.name for p in staging.iterdir() if p.name != ".lock") == sorted(["w.cafe", w.staging.name])
        w.write(_batch("v", 0, 2))
        w.commit()
    assert sorted(p.name for p in staging.iterdir()) == [".lock", "w.cafe"]


def test_lock_root_refuses_a_second_holder(tmp_path):
    root = tmp_path / "data"
    with storage.lock_root(root) as lock:
        assert Path(lock).read_text().strip() == str(os.getpid())
        with pytest.raises(storage.DataRootBusy, match=rf"^data root {root} is in use by another build "
                                                       rf"\(pid {os.getpid()}\); wait"):
            with storage.lock_root(root):
                pass
    with storage.lock_root(root):  # released
        pass
    with storage.lock_root("memory://sightsound-lock-test/data") as lock:
        assert lock is None  # remote roots are not locked (documented in lock_root)


def _cli(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows.cli", *map(str, args)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def test_a_second_build_into_a_busy_data_root_is_refused_at_once(tiny_violin, tmp_path):
    data = tmp_path / "data"
    first = _cli("build-violinyt", "--manifest", tiny_violin, "--data-root", data)
    lock = data / ".sightsound.lock"
    try:
        deadline = time.monotonic() + 300
        while not (lock.is_file() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None, "the first build ended without taking the data root's lock"
            assert time.monotonic() < deadline, "the first build took no lock in 300 s"
            time.sleep(0.2)
        start = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "flows.cli", "build-violinyt", "--manifest", tiny_violin,
                                 "--data-root", data], cwd=ROOT, capture_output=True, text=True, timeout=120)
        took = time.monotonic() - start
        out, _ = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
    assert second.stderr.splitlines() == [
        f"error: data root {data} is in use by another build (pid {first.pid}); "
        "wait for it to finish or use another --data-root"], second.stderr
    assert "Traceback" not in second.stdout + second.stderr
    assert took < 60, took  # refused before Prefect starts anything, not after waiting
    assert first.returncode == 0, out[-3000:]
    assert _stray(data) == []
    assert lock.read_text() == ""  # released: the next build may run
    rows = read_dataset(data / "violinyt" / "shards")
    assert rows.num_rows > 0
