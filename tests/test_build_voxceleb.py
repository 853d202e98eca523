"""End to end on the face sample set: build-voxceleb through the CLI, served over loopback.

Runs the real dlib detector and landmark model on generated talking-head clips.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tasks.media.decode import decode_image
from tasks.samples.encode import encode_video
from tasks.samples.faces import PHOTO_NAMES, render_face_clip, write_voxceleb_txt
from tasks.store.shards import read_dataset
from tasks.datasets.voxceleb import redetect_build

ROOT = Path(__file__).resolve().parents[1]


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def digests(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.parquet"))}


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    out = tmp_path_factory.mktemp("face-samples")
    proc = cli("samples", "faces", "--out", out, "--identities", 4, "--utterances", 1, "--seconds", 3, "--seed", 3)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_sample_manifest_builds_crops_dlib_finds_again(samples, tmp_path):
    data = tmp_path / "data"
    proc = cli("build-voxceleb", "--metadata", samples / "manifest.csv", "--data-root", data)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    t = read_dataset(data / "voxceleb" / "shards")
    assert t.num_rows == 4 * 3  # 4 utterances of 3 s, one frame per second
    for row in t.slice(0, 4).to_pylist():
        assert decode_image(row["image"]).shape == (256, 256, 3)
        lm = np.array(row["landmarks"]).reshape(68, 2)
        assert lm.min() >= -20 and lm.max() <= 276  # the 68 points lie on the crop
    splits: dict[str, set] = {}
    for identity, split in zip(t.column("identity").to_pylist(), t.column("split").to_pylist()):
        splits.setdefault(identity, set()).add(split)
    assert all(len(s) == 1 for s in splits.values()), splits  # no identity in two splits
    assert {next(iter(s)) for s in splits.values()} == {"train", "val", "test"}
    overall = redetect_build(data)[-1]
    assert overall["split"] == "all" and overall["crops"] == 12
    assert overall["rate"] >= 0.95, overall
    card = (data / "voxceleb" / "CARD.md").read_text()
    assert "found by dlib" in card and "| all | 4 | 4 | 4 | 0 | 12 |" in card


def test_txt_metadata_with_a_face_that_leaves_no_face_and_a_gone_video(samples, tmp_path, http_root):
    www, base = http_root
    shutil.copytree(samples / "txt", tmp_path / "txt")
    for video in (samples / "videos").glob("*.mp4"):
        shutil.copy(video, www / video.name)
    # Two more identities in VoxCeleb1's layout: a face that slides out of the
    # frame half way, a clip with no face at all; a third whose video is gone.
    for identity, ref, mode in (("id20001", "leavesClip1", "leaves"), ("id20002", "noFaceClip1", "none")):
        frames, boxes = render_face_clip(PHOTO_NAMES[0], 6.0, seed=5, mode=mode)
        encode_video(frames, None, 44100, 25, www / f"{ref}.mp4", 640, 360)
        write_voxceleb_txt(tmp_path / "txt" / identity / ref / "00001.txt", identity, ref,
                           [(j, *b) for j, b in enumerate(boxes)])
    write_voxceleb_txt(tmp_path / "txt" / "id20003" / "goneVideo01" / "00001.txt", "id20003", "goneVideo01",
                       [(j, 250, 100, 120, 120) for j in range(50)])
    data = tmp_path / "data"
    args = ("build-voxceleb", "--metadata", tmp_path / "txt", "--sources", f"{base}/{{id}}.mp4",
            "--data-root", data, "--acquire-attempts", 1)
    first = cli(*args)
    assert first.returncode == 3, first.stdout[-3000:] + first.stderr[-3000:]
    status = {r["identity"]: r for r in pq.read_table(data / "voxceleb" / "status.parquet").to_pylist()}
    assert len(status) == 7
    leaves = status["id20001"]
    assert leaves["state"] == "done" and leaves["outside"] >= 1 and leaves["frames"] + leaves["outside"] == 6
    assert status["id20002"]["state"] == "failed" and status["id20002"]["stage"] == "faces"
    assert "found no face" in status["id20002"]["error"]
    assert status["id20003"]["state"] == "failed" and status["id20003"]["stage"] == "acquire"
    assert all(status[f"id{10001 + i}"]["state"] == "done" for i in range(4))
    t = read_dataset(data / "voxceleb" / "shards")
    assert set(t.column("identity").to_pylist()) == {"id10001", "id10002", "id10003", "id10004", "id20001"}
    card = (data / "voxceleb" / "CARD.md").read_text()
    assert "## Failures (2)" in card and "id20003-goneVideo01-00001" in card

    # A rerun does no finished work again and leaves the shards byte-identical.
    before = digests(data / "voxceleb" / "shards")
    second = cli(*args)
    assert second.returncode == 3
    assert digests(data / "voxceleb" / "shards") == before
    assert "Cached" in second.stdout + second.stderr


def test_bad_metadata_is_refused_before_any_work(tmp_path):
    (tmp_path / "txt" / "id1" / "abcdefghijk").mkdir(parents=True)
    (tmp_path / "txt" / "id1" / "abcdefghijk" / "00001.txt").write_text("Identity : id1\n")
    proc = cli("build-voxceleb", "--metadata", tmp_path / "txt", "--data-root", tmp_path / "data")
    assert proc.returncode == 2
    assert "no 'FRAME X Y W H' header" in proc.stderr
    assert not (tmp_path / "data").exists()
