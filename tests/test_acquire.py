import pytest

from tasks.media.acquire import AcquireError, acquire
from tests.conftest import free_port_url, make_test_video


def test_downloads_over_loopback_with_ytdlp(tmp_path, http_root):
    www, base = http_root
    make_test_video(www / "clip.mp4", seconds=1.0)
    out = acquire(f"{base}/clip.mp4", "clip", tmp_path / "media")
    assert out.endswith("clip.mp4")
    assert open(out, "rb").read() == (www / "clip.mp4").read_bytes()
    assert not list((tmp_path / "media").glob(".part-*")), "no partial download left behind"
    # A second call finds the finished file and does not download again.
    (www / "clip.mp4").unlink()
    assert acquire(f"{base}/clip.mp4", "clip", tmp_path / "media") == out


def _acquire_in_a_flow(source: str, media_dir, attempts: int, backoff_s: float):
    """Run the flows' acquire stage (Prefect's retries) on one source; return (exception, task runs)."""
    from prefect import flow

    from flows.stages import acquire_stage

    @flow(name="acquire-check")
    def one():
        future = acquire_stage(attempts, backoff_s).submit(source=source, video_id="v", media_dir=str(media_dir))
        future.wait()
        return future.result(raise_on_failure=False), future.task_run_id

    error, run_id = one()
    import asyncio

    from prefect.client.orchestration import get_client

    async def runs():
        async with get_client() as client:
            return (await client.read_task_run(run_id)).run_count

    return error, asyncio.run(runs())


def test_missing_video_is_permanent_and_not_retried(tmp_path, http_root):
    _, base = http_root
    with pytest.raises(AcquireError) as err:
        acquire(f"{base}/nothing.mp4", "nothing", tmp_path / "media")
    assert err.value.permanent and "404" in str(err.value)
    error, runs = _acquire_in_a_flow(f"{base}/nothing.mp4", tmp_path / "media", attempts=3, backoff_s=5.0)
    assert isinstance(error, AcquireError) and error.permanent and runs == 1  # not retried


def test_unreachable_host_is_retried_by_prefect_then_reported(tmp_path):
    with pytest.raises(AcquireError) as err:
        acquire(free_port_url(), "gone", tmp_path / "media")
    assert not err.value.permanent and "download failed" in str(err.value)
    error, runs = _acquire_in_a_flow(free_port_url(), tmp_path / "media", attempts=2, backoff_s=0.01)
    assert isinstance(error, AcquireError) and not error.permanent
    assert runs == 2 and "after 2 attempts" in str(error)


def test_local_paths(tmp_path):
    clip = make_test_video(tmp_path / "local.mp4", seconds=0.5)
    assert acquire(str(clip), "local", tmp_path / "media") == str(clip.resolve())
    with pytest.raises(AcquireError, match="local file not found"):
        acquire(str(tmp_path / "missing.mp4"), "missing", tmp_path / "media")
