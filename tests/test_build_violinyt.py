"""End to end on the violin sample set: build-violinyt, label violin on unseen recordings, the audit.

Runs the real aubio yinfft; the audit runs pYIN and torchcrepe (tiny) too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tasks.evaluation.scores import score_violinyt_build
from tasks.datasets.manifest import read_violin, write_pianoyt
from tasks.media.decode import decode_image
from tasks.store.shards import read_dataset

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    out = tmp_path_factory.mktemp("violin-samples")
    proc = cli("samples", "violin", "--out", out, "--videos", 2, "--seconds", 10, "--seed", 7)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def digests(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.parquet"))}


def test_build_labels_reruns_and_failures(samples, tmp_path):
    rows = read_violin(samples / "manifest.csv")
    shutil.copy(rows[0].source, tmp_path / "copy.mp4")
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 5000)
    table = [(r.video_id, r.source, 1 if r.split == "train" else 3, *r.crop) for r in rows]
    table.append(("broken", str(tmp_path / "broken.mp4"), 1, *rows[0].crop))
    manifest = write_pianoyt(tmp_path / "manifest.csv", table)
    data = tmp_path / "data"

    first = cli("build-violinyt", "--manifest", manifest, "--data-root", data)
    assert first.returncode == 3, first.stdout[-3000:] + first.stderr[-3000:]
    status = {r["video_id"]: r for r in pq.read_table(data / "violinyt" / "status.parquet").to_pylist()}
    assert status["broken"]["state"] == "failed" and status["broken"]["stage"] == "probe"
    assert all(status[r.video_id]["state"] == "done" for r in rows)

    t = read_dataset(data / "violinyt" / "shards")
    assert {"train", "val", "test"} == set(t.column("split").to_pylist())
    img = decode_image(t.column("image")[0].as_py())
    assert img.shape == (400, 200, 3)
    scores = score_violinyt_build(samples, data)
    assert len(scores) == len(rows)
    for s in scores:
        assert s["raw pitch accuracy"] >= 0.90, s
    card = (data / "violinyt" / "CARD.md").read_text()
    assert "post-processed (`--labels yinfft`)" in card and "60 ms lookahead" in card

    before = digests(data / "violinyt" / "shards")
    second = cli("build-violinyt", "--manifest", manifest, "--data-root", data)
    assert second.returncode == 3
    assert digests(data / "violinyt" / "shards") == before
    log = second.stdout + second.stderr
    for stage in ("pitch", "violin-frames"):
        finished = [ln for ln in log.splitlines() if f"Task run '{stage}-" in ln and "Finished in state" in ln]
        assert len(finished) == len(rows) and all("Cached" in ln for ln in finished), finished


def test_label_violin_on_unseen_recordings(tmp_path):
    from tasks.samples.violin import make_violin_recordings

    accuracies = []
    for wav, mid in make_violin_recordings(tmp_path / "unseen", n=3, seconds=10.0, seed=100):
        out = tmp_path / (Path(wav).stem + ".csv")
        proc = cli("label", "violin", wav, "--out", out, "--reference", mid)
        assert proc.returncode == 0, proc.stderr[-2000:]
        header, *lines = out.read_text().splitlines()
        assert header == "time,midi,hz,confidence"
        times = np.array([float(ln.split(",")[0]) for ln in lines])
        assert np.allclose(np.diff(times), 0.01, atol=1e-4)
        accuracies.append(json.loads(proc.stdout.strip().splitlines()[-1])["melody"]["raw pitch accuracy"])
    assert np.mean(accuracies) >= 0.85, accuracies
    raw = cli("label", "violin", wav, "--out", tmp_path / "raw.csv", "--reference", mid, "--labels", "yinfft-raw")
    assert raw.returncode == 0, raw.stderr[-2000:]
    raw_rpa = json.loads(raw.stdout.strip().splitlines()[-1])["melody"]["raw pitch accuracy"]
    assert accuracies[-1] > raw_rpa, (accuracies[-1], raw_rpa)  # the default labeler beats the thesis's here


def test_audit_table(samples, tmp_path):
    """Both sets, every labeler row, the new columns and the figure; the default labeler is the best yinfft."""
    from tasks.samples.violin_hard import fluidsynth_available

    missing = fluidsynth_available()
    if missing:  # .ci/run installs Debian's fluidsynth and SoundFonts, so CI runs this
        pytest.skip(missing)
    hard = tmp_path / "hard"
    made = cli("samples", "violin-hard", "--out", hard, "--recordings", 2, "--seconds", 6, "--seed", 3)
    assert made.returncode == 0, made.stderr[-2000:]
    out, figure = tmp_path / "audit.md", tmp_path / "audit.png"
    proc = cli("audit", "violin", "--samples", samples, "--recordings", hard, "--out", out, "--figure", figure,
               "--crepe-model", "tiny")
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "## sample set (2 files)" in text and "## hard (2 files)" in text
    assert "octave errors" in text and "RPA near changes" in text
    assert figure.stat().st_size > 10_000
    tables = text.split("## hard (")
    for part in tables:
        rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.strip("|").split("|")[1:]]
                for ln in part.splitlines() if ln.startswith("| ") and "---" not in ln and "method" not in ln}
        assert {"yinfft-raw (thesis)", "yinfft (default: + lookahead)", "librosa pYIN", "torchcrepe (tiny)"} <= set(rows)
        default, raw = float(rows["yinfft (default: + lookahead)"][0]), float(rows["yinfft-raw (thesis)"][0])
        assert default >= raw, (default, raw)
    sample_rows = tables[0]
    default_row = next(ln for ln in sample_rows.splitlines() if ln.startswith("| yinfft (default"))
    assert float(default_row.strip("|").split("|")[1]) >= 0.90  # raw pitch accuracy on the sample set


def test_violin_hard_without_fluidsynth_is_one_clear_line(tmp_path):
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # no fluidsynth on this PATH
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "samples", "violin-hard", "--out", tmp_path / "h"],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 2 and "apt-get install fluidsynth" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
