import time

import pytest

from tasks.acquire import AcquireError, acquire
from tests.conftest import free_port_url, make_test_video


def test_downloads_over_loopback_with_ytdlp(tmp_path, http_root):
    www, base = http_root
    make_test_video(www / "clip.mp4", seconds=1.0)
    out = acquire(f"{base}/clip.mp4", "clip", tmp_path / "media", attempts=1)
    assert out.endswith("clip.mp4")
    assert open(out, "rb").read() == (www / "clip.mp4").read_bytes()
    assert not list((tmp_path / "media").glob(".part-*")), "no partial download left behind"
    # A second call finds the finished file and does not download again.
    (www / "clip.mp4").unlink()
    assert acquire(f"{base}/clip.mp4", "clip", tmp_path / "media", attempts=1) == out


def test_missing_video_is_permanent_and_not_retried(tmp_path, http_root):
    _, base = http_root
    start = time.monotonic()
    with pytest.raises(AcquireError) as err:
        acquire(f"{base}/nothing.mp4", "nothing", tmp_path / "media", attempts=3, backoff_s=5.0)
    assert err.value.permanent
    assert "404" in str(err.value)
    assert time.monotonic() - start < 5.0, "a 404 must not wait for a retry"


def test_unreachable_host_is_retried_then_reported(tmp_path, caplog):
    caplog.set_level("INFO", logger="tasks.acquire")
    with pytest.raises(AcquireError) as err:
        acquire(free_port_url(), "gone", tmp_path / "media", attempts=2, backoff_s=0.01)
    assert not err.value.permanent
    assert "after 2 attempts" in str(err.value)
    assert any("retrying" in r.message for r in caplog.records)


def test_local_paths(tmp_path):
    clip = make_test_video(tmp_path / "local.mp4", seconds=0.5)
    assert acquire(str(clip), "local", tmp_path / "media") == str(clip.resolve())
    with pytest.raises(AcquireError, match="local file not found"):
        acquire(str(tmp_path / "missing.mp4"), "missing", tmp_path / "media")
