"""Outputs get the modes the umask gives, like any other file a user makes (issue 11, case 9).

Files written under a temporary name and renamed (status.parquet, CARD.md,
labels, the samples' manifest, videos and MIDI) came from ``mkstemp`` and were
0600 whatever the umask, while the other outputs were 0644.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

from tasks.store import storage
from tasks.store.atomic import write_text_atomic
from tasks.samples.encode import encode_video
from tasks.store.shards import write_table_atomic

ROOT = Path(__file__).resolve().parents[1]


def _modes(folder: Path) -> dict[str, str]:
    """Mode of every file under ``folder`` (Prefect's own results and the lock files aside)."""
    return {str(p.relative_to(folder)): oct(stat.S_IMODE(p.stat().st_mode)) for p in sorted(folder.rglob("*"))
            if p.is_file() and ".prefect" not in p.parts and not p.name.endswith(".lock")}


def test_samples_and_a_build_follow_umask_022(tmp_path):
    samples, data = tmp_path / "samples", tmp_path / "data"
    for args in (["samples", "violin", "--out", samples, "--videos", 1, "--seconds", 3],
                 ["build-violinyt", "--manifest", samples / "manifest.csv", "--data-root", data]):
        proc = subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], cwd=ROOT, umask=0o022,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    modes = {**{f"samples/{k}": v for k, v in _modes(samples).items()},
             **{f"data/{k}": v for k, v in _modes(data).items()}}
    for name in ("samples/manifest.csv", "samples/videos/violin_000.mp4", "samples/midi/violin_000.mid",
                 "data/violinyt/status.parquet", "data/violinyt/CARD.md", "data/violinyt/labels/violin_000.parquet"):
        assert name in modes, sorted(modes)
    assert {k: v for k, v in modes.items() if v != "0o644"} == {}


def test_writes_follow_umask_077(tmp_path):
    old = os.umask(0o077)
    try:
        write_text_atomic(tmp_path / "CARD.md", "# card\n")
        write_table_atomic(pa.table({"a": [1, 2]}), tmp_path / "status.parquet")
        storage.write_bytes(tmp_path / "labels" / "a.mid", b"MThd")
        encode_video(iter([np.zeros((32, 32, 3), np.uint8)] * 5), np.zeros(8820, np.float32), 44100, 25,
                     tmp_path / "videos" / "v.mp4", 32, 32)
    finally:
        os.umask(old)
    modes = _modes(tmp_path)
    assert set(modes) == {"CARD.md", "status.parquet", "labels/a.mid", "videos/v.mp4"}
    assert set(modes.values()) == {"0o600"}, modes
