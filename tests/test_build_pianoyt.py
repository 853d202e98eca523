"""End to end: sample videos served over loopback, downloaded by yt-dlp, built by the Prefect flow.

Runs the real transcriber (transkun) on the CPU: about two minutes.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tasks.evaluation.scores import score_pianoyt_build
from tasks.datasets.manifest import read_pianoyt, write_pianoyt
from tasks.media.decode import decode_image
from tasks.store.shards import read_dataset
from tests.conftest import free_port_url

pytestmark = pytest.mark.slow


def shard_digests(shards: Path) -> dict:
    return {str(p.relative_to(shards)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(shards.rglob("*.parquet"))}


def build(manifest: Path, data_root: Path, log: Path) -> int:
    cmd = [sys.executable, "-m", "flows.cli", "build-pianoyt", "--manifest", str(manifest), "--data-root", str(data_root),
           "--acquire-attempts", "2", "--acquire-backoff", "0.1", "--device", "cpu"]
    with open(log, "w") as out:
        return subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1]).returncode


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    from tasks.samples.piano import make_piano_samples

    out = tmp_path_factory.mktemp("piano-samples")
    make_piano_samples(out, videos=2, seconds=10.0, seed=7)
    return out


def test_build_from_loopback_with_failures_recorded(samples, http_root, tmp_path):
    www, base = http_root
    rows = read_pianoyt(samples / "manifest.csv")
    for r in rows:
        shutil.copy(r.source, www / Path(r.source).name)
    (www / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"not really a video" * 500)
    table = [(r.video_id, f"{base}/{Path(r.source).name}", 1 if r.split == "train" else 3, *r.crop) for r in rows]
    table += [("unreachable", free_port_url("gone.mp4"), 1, *rows[0].crop),
              ("corrupt", f"{base}/corrupt.mp4", 1, *rows[0].crop)]
    manifest = write_pianoyt(tmp_path / "manifest.csv", table)
    data = tmp_path / "data"

    rc = build(manifest, data, tmp_path / "first.log")
    log = (tmp_path / "first.log").read_text()
    # Piped to a file, the progress display is plain lines, with no control codes.
    assert "build-pianoyt acquire: 3/4 done, 1 failed, finished in" in log, log[-3000:]
    assert re.search(r"build-pianoyt frames: \d/\d done, 0 failed, finished in \d:\d\d:\d\d", log), log[-3000:]
    assert "\x1b" not in log and "\r" not in log
    assert rc == 3, log[-3000:]

    status = {r["video_id"]: r for r in pq.read_table(data / "pianoyt" / "status.parquet").to_pylist()}
    assert set(status) == {r.video_id for r in rows} | {"unreachable", "corrupt"}
    assert status["unreachable"]["state"] == "failed" and status["unreachable"]["stage"] == "acquire"
    assert "Connection refused" in status["unreachable"]["error"]
    assert status["corrupt"]["state"] == "failed" and status["corrupt"]["stage"] == "probe"
    assert status["corrupt"]["error"]
    for r in rows:
        assert status[r.video_id]["state"] == "done", status[r.video_id]

    t = read_dataset(data / "pianoyt" / "shards")
    assert set(t.column("video_id").to_pylist()) == {r.video_id for r in rows}
    assert set(t.column("split").to_pylist()) == {r.split for r in rows}
    img = decode_image(t.column("image")[0].as_py())
    assert img.shape == (145, 800) and img.dtype == np.uint8
    card = (data / "pianoyt" / "CARD.md").read_text()
    assert "unreachable" in card and "corrupt" in card

    scores = {s["video_id"]: s for s in score_pianoyt_build(samples, data)}
    assert set(scores) == {r.video_id for r in rows}
    for vid, score in scores.items():
        assert score["label F1"] >= 0.90, score
        assert score["onset column F1 (1 frame)"] >= 0.80, score

    # A rerun does no finished work again and leaves the shards byte-identical.
    before = shard_digests(data / "pianoyt" / "shards")
    label_mtimes = {p.name: p.stat().st_mtime_ns for p in (data / "pianoyt" / "labels").glob("*.mid")}
    rc = build(manifest, data, tmp_path / "second.log")
    second = (tmp_path / "second.log").read_text()
    assert rc == 3, second[-3000:]
    assert shard_digests(data / "pianoyt" / "shards") == before
    assert {p.name: p.stat().st_mtime_ns for p in (data / "pianoyt" / "labels").glob("*.mid")} == label_mtimes
    for stage in ("label", "frames"):
        finished = [ln for ln in second.splitlines() if f"Task run '{stage}-" in ln and "Finished in state" in ln]
        assert len(finished) == len(rows) and all("Cached" in ln for ln in finished), finished


def test_bad_manifest_is_refused_before_any_work(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("a,http://127.0.0.1:1/a.mp4,1,0,10,0,10\nb,http://127.0.0.1:1/b.mp4,7,0,10,0,10\n")
    rc = build(manifest, tmp_path / "data", tmp_path / "log")
    log = (tmp_path / "log").read_text()
    assert rc == 2
    assert "row 2: unknown split code 7" in log
    assert not (tmp_path / "data").exists()
