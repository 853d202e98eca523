"""Data roots on fsspec file systems, and builds killed with SIGKILL then rerun.

The violin build is used: it has every kind of output (downloaded media,
extracted audio, per-video labels, multi-split shard parts, status, card) and
runs in seconds on a small sample set.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

from tasks.store import storage
from tasks.store.atomic import write_text_atomic
from tasks.samples.violin import make_violin_samples
from tasks.store.shards import read_dataset

ROOT = Path(__file__).resolve().parents[1]


def test_publish_and_read_on_local_and_memory(tmp_path):
    for root in (str(tmp_path / "d"), "memory://sightsound-test-a"):
        loc = storage.join(root, "x", "note.txt")
        write_text_atomic(loc, "hello")
        assert storage.exists(loc) and storage.read_bytes(loc) == b"hello"
        assert open(storage.local_path(loc), "rb").read() == b"hello"
        assert storage.glob(storage.join(root, "x", "*.txt")) == [loc]
        storage.remove(loc)
        assert not storage.exists(loc)
    # no temporary files are left beside a local file
    assert sorted(p.name for p in (tmp_path / "d" / "x").iterdir()) == []
    assert storage.root_location("file:///tmp/a/") == "/tmp/a"
    assert storage.root_location("s3://bucket/data/") == "s3://bucket/data"


def _sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("violin-small")
    return make_violin_samples(out, videos=2, seconds=6, seed=2, width=640, height=360)


@pytest.fixture(scope="module")
def small_violin(tmp_path_factory):
    return _sample(tmp_path_factory)


def _local_files(folder: Path, suffixes=(".parquet",)) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in suffixes
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)}


OUTPUTS = (".parquet", ".md", ".wav")  # labels, shards, status, card, extracted audio


def test_the_same_build_on_an_in_memory_file_system(small_violin, tmp_path):
    from flows.build_violinyt import build_violinyt
    from flows.settings import ViolinBuild

    local = tmp_path / "data"
    a = build_violinyt(ViolinBuild(manifest=str(small_violin), data_root=str(local)))
    b = build_violinyt(ViolinBuild(manifest=str(small_violin), data_root="memory://sightsound-test-b/data"))
    assert [r["state"] for r in a["records"]] == [r["state"] for r in b["records"]] == ["done", "done"]
    want = _local_files(local / "violinyt")
    assert any(k.startswith("shards/") for k in want) and "status.parquet" in want
    fs = fsspec.filesystem("memory")
    got = {}
    for path in fs.find("/sightsound-test-b/data/violinyt"):
        rel = path[len("/sightsound-test-b/data/violinyt/"):]
        if rel.endswith(".parquet"):
            got[rel] = hashlib.sha256(fs.cat_file(path)).hexdigest()
    assert got == want  # labels, shards and status byte for byte
    assert sorted(fs.ls("/sightsound-test-b/data/violinyt/shards/_committed", detail=False)) == [
        f"/sightsound-test-b/data/violinyt/shards/_committed/{r['video_id']}.json" for r in b["records"]]
    t_mem = read_dataset("memory://sightsound-test-b/data/violinyt/shards")
    t_loc = read_dataset(local / "violinyt" / "shards")
    assert t_mem.sort_by([("video_id", "ascending"), ("frame_index", "ascending")]).equals(
        t_loc.sort_by([("video_id", "ascending"), ("frame_index", "ascending")]))


def _build(manifest: Path, data: Path, env_extra: dict, runner: str = "threads") -> int:
    env = {**os.environ, **env_extra}
    log = data.with_name(data.name + f"-{len(list(data.parent.glob(data.name + '-*.log')))}.log")
    with open(log, "w") as out:
        # Output to a file, not a pipe: a SIGKILLed CLI leaves its temporary
        # Prefect server running, which would hold a pipe open.
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "build-violinyt", "--manifest", str(manifest),
                                 "--data-root", str(data), "--runner", runner], cwd=ROOT, env=env,
                                start_new_session=True,
                                stdout=out, stderr=subprocess.STDOUT)
        rc = proc.wait(timeout=600)
    try:  # stop that orphaned server: the CLI ran in a session of its own
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if rc not in (0, 3, -signal.SIGKILL):  # 3: some videos failed
        raise AssertionError(log.read_text()[-3000:])
    return rc


@pytest.fixture(scope="module")
def reference_build(small_violin, tmp_path_factory):
    reference = tmp_path_factory.mktemp("reference")
    assert _build(small_violin, reference, {}) == 0
    return reference


@pytest.mark.slow
@pytest.mark.parametrize("crash", [{"SIGHTSOUND_CRASH_AFTER": "2"}, {"SIGHTSOUND_CRASH_BEFORE": "5"},
                                   {"SIGHTSOUND_CRASH_AFTER": "8"}])
def test_killed_build_reruns_to_the_same_bytes(small_violin, reference_build, tmp_path, crash):
    reference = reference_build
    data = tmp_path / "data"
    assert _build(small_violin, data, crash) == -signal.SIGKILL  # killed at the chosen write
    partial = _local_files(data / "violinyt", OUTPUTS) if (data / "violinyt").exists() else {}
    assert partial != _local_files(reference / "violinyt", OUTPUTS)
    assert _build(small_violin, data, {}) == 0
    assert _local_files(data / "violinyt", OUTPUTS) == _local_files(reference / "violinyt", OUTPUTS)
    rows = read_dataset(data / "violinyt" / "shards")
    keys = list(zip(rows.column("video_id").to_pylist(), rows.column("frame_index").to_pylist()))
    assert len(keys) == len(set(keys))  # no duplicate rows
    status = pq.read_table(data / "violinyt" / "status.parquet").to_pylist()
    assert [r["state"] for r in status] == ["done", "done"]


@pytest.mark.slow
def test_killed_dask_workers_then_a_rerun_give_the_same_bytes(small_violin, reference_build, tmp_path):
    """Two Dask workers, each SIGKILLed at its 3rd durable write (and again after every restart)."""
    data, deaths = tmp_path / "data", tmp_path / "deaths.txt"
    crash = {"SIGHTSOUND_CRASH_IN": "worker", "SIGHTSOUND_CRASH_AFTER": "3", "SIGHTSOUND_CRASH_LOG": str(deaths)}
    rc = _build(small_violin, data, crash, runner="dask:2")
    assert deaths.exists() and len(deaths.read_text().split()) >= 1  # workers died ...
    assert rc in (0, 3)  # ... and the build's own process lived: Dask restarted them and ran their tasks again
    if rc == 0:  # every video done despite the deaths: already the uninterrupted build's bytes
        assert _local_files(data / "violinyt", OUTPUTS) == _local_files(reference_build / "violinyt", OUTPUTS)
    assert _build(small_violin, data, {}, runner="dask:2") == 0
    assert _local_files(data / "violinyt", OUTPUTS) == _local_files(reference_build / "violinyt", OUTPUTS)
    rows = read_dataset(data / "violinyt" / "shards")
    keys = list(zip(rows.column("video_id").to_pylist(), rows.column("frame_index").to_pylist()))
    assert len(keys) == len(set(keys))
