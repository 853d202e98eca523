"""Videos downloaded over http(s): no error on the normal path, and the download is cached (issue 11, case 5).

The cache key of ``acquire`` fingerprinted its ``source`` parameter as a file
through fsspec, which for an http URL needs aiohttp (not installed): every
run logged an ERROR with a long traceback and the result was never cached.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

from tasks.store.cache import key_for

ROOT = Path(__file__).resolve().parents[1]


def test_a_url_is_part_of_the_key_not_a_file_to_fingerprint():
    a = key_for("acquire", {"source": "http://127.0.0.1:9/a.mp4", "video_id": "a"}, ("source",))
    b = key_for("acquire", {"source": "https://127.0.0.1:9/b.mp4", "video_id": "a"}, ("source",))
    assert a != b and a == key_for("acquire", {"source": "http://127.0.0.1:9/a.mp4", "video_id": "a"}, ("source",))
    assert key_for("acquire", {"source": "ftp://127.0.0.1/a.mp4"}, ("source",))
    assert key_for("acquire", {"source": "ytsearch1://a violin"}, ("source",))  # not an fsspec protocol


def test_a_build_from_http_prints_no_error_and_reruns_from_the_cache(tiny_violin, http_root, tmp_path):
    www, base = http_root
    shutil.copytree(tiny_violin.parent / "videos", www / "videos")
    rows = list(csv.reader(tiny_violin.read_text().splitlines()))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("".join(",".join([r[0], f"{base}/{r[1]}", *r[2:]]) + "\n" for r in rows))
    data = tmp_path / "data"
    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-m", "flows.cli", "build-violinyt", "--manifest", str(manifest),
                               "--data-root", str(data)], cwd=ROOT, capture_output=True, text=True)
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, log[-3000:]
        for bad in ("ERROR", "Traceback", "Logging error"):
            assert bad not in log, log[-5000:]
        runs.append([ln for ln in log.splitlines() if "Task run 'acquire-" in ln and "Finished in state" in ln])
    assert len(runs[0]) == len(runs[1]) == len(rows)
    assert not any("Cached" in ln for ln in runs[0]), runs[0]
    assert all("Cached" in ln for ln in runs[1]), runs[1]  # the second run downloads nothing
