"""Task runners chosen at run time (flows/runners.py): specs, and one small real build on each local runner."""

from __future__ import annotations

import os
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from flows import runners
from flows.runners import RunnerSpec, make_runner, parse_spec

from tests.conftest import make_test_video

# ---- specs


@pytest.mark.parametrize("text, expected", [
    ("threads", RunnerSpec("threads")),
    ("threads:3", RunnerSpec("threads", workers=3)),
    (" Processes ", RunnerSpec("processes")),
    ("processes:2", RunnerSpec("processes", workers=2)),
    ("dask", RunnerSpec("dask")),
    ("dask:4", RunnerSpec("dask", workers=4)),
    ("dask://10.1.2.3:8786", RunnerSpec("dask", address="tcp://10.1.2.3:8786")),
    ("tcp://scheduler.local:8786", RunnerSpec("dask", address="tcp://scheduler.local:8786")),
    ("tls://scheduler:8786/", RunnerSpec("dask", address="tls://scheduler:8786")),
    ("tcp://[::1]:8786", RunnerSpec("dask", address="tcp://[::1]:8786")),
    ("ray", RunnerSpec("ray")),
    ("ray:2", RunnerSpec("ray", workers=2)),
    ("ray://head:10001", RunnerSpec("ray", address="ray://head:10001")),
])
def test_parse_spec(text, expected):
    assert parse_spec(text) == expected


@pytest.mark.parametrize("text", [
    "", "thread", "threads:", "threads:0", "threads:-1", "threads:two", "dask:2:3", "mpi",
    "dask://", "tcp://host", "tcp://host:", "tcp://host:99999", "http://host:8786", "dask:host:8786",
    "processes://host:1", "tcp://host:8786/path",
])
def test_bad_spec_is_refused_with_the_choices(text):
    with pytest.raises(ValueError, match="runner") as err:
        parse_spec(text)
    if "0" not in text and "99999" not in text:
        assert "threads[:N]" in str(err.value)


def test_spec_defaults_to_the_environment_then_threads(monkeypatch):
    monkeypatch.delenv(runners.ENV_VAR, raising=False)
    assert parse_spec() == RunnerSpec("threads")
    monkeypatch.setenv(runners.ENV_VAR, "dask:2")
    assert parse_spec() == RunnerSpec("dask", workers=2)
    assert parse_spec("processes") == RunnerSpec("processes")  # an explicit spec wins
    monkeypatch.setenv(runners.ENV_VAR, "  ")
    assert parse_spec() == RunnerSpec("threads")
    monkeypatch.setenv(runners.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match="bogus"):
        make_runner()


# ---- runner objects: built without starting anything


def test_threads_and_processes_runners(monkeypatch):
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    monkeypatch.delenv(runners.ENV_VAR, raising=False)
    r = make_runner()
    assert type(r) is ThreadPoolTaskRunner and r._max_workers == max(2, runners.cores())
    assert make_runner("threads:5")._max_workers == 5
    p = make_runner("processes:3")
    assert type(p) is ProcessPoolTaskRunner and p._max_workers == 3
    assert p._initializer is runners.limit_threads and p._initargs == ()
    assert p._executor is None  # no process yet
    assert make_runner("processes")._max_workers == runners.cores()
    # Prefect duplicates the runner for each flow run; the initializer must survive that.
    assert p.duplicate()._initializer is runners.limit_threads


def test_dask_runner_starts_no_cluster_until_a_flow_runs(monkeypatch):
    prefect_dask = pytest.importorskip("prefect_dask")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv(runners.WORKER_THREADS_VAR, "2")
    r = make_runner("dask:3")
    assert isinstance(r, prefect_dask.DaskTaskRunner)
    assert r._cluster is None and r._client is None and r.address is None
    assert r.cluster_kwargs["n_workers"] == 3 and r.cluster_kwargs["threads_per_worker"] == 1
    assert r.cluster_kwargs["processes"] is True
    assert r.cluster_kwargs["env"]["OMP_NUM_THREADS"] == "2"
    assert r.cluster_kwargs["preload"] == ["flows.runners"]  # dask_setup runs in each worker
    assert r.duplicate().cluster_kwargs == r.cluster_kwargs  # Prefect duplicates it per flow run
    assert make_runner("dask").cluster_kwargs["n_workers"] == runners.cores()
    remote = make_runner("dask://127.0.0.1:8786")
    assert remote.address == "tcp://127.0.0.1:8786" and remote.cluster_kwargs == {} and remote._client is None


def test_worker_env_keeps_what_the_user_set(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.delenv(runners.WORKER_THREADS_VAR, raising=False)
    env = runners.worker_env()
    assert env["OMP_NUM_THREADS"] == "4" and env["MKL_NUM_THREADS"] == "1"
    monkeypatch.setenv(runners.WORKER_THREADS_VAR, "0")
    with pytest.raises(ValueError, match=runners.WORKER_THREADS_VAR):
        runners.worker_env()


def test_ray_runner_or_the_package_to_install(monkeypatch):
    try:
        import prefect_ray
    except ImportError:
        with pytest.raises(RuntimeError, match="pip install 'sightsound\\[ray\\]'"):
            make_runner("ray")
        return
    r = make_runner("ray:2")
    assert isinstance(r, prefect_ray.RayTaskRunner) and r.init_kwargs["num_cpus"] == 2
    assert make_runner("ray://head:10001").address == "ray://head:10001"


def test_a_missing_optional_package_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "prefect_dask", None)  # import prefect_dask now raises ImportError
    monkeypatch.setitem(sys.modules, "prefect_ray", None)
    with pytest.raises(RuntimeError, match=r"prefect-dask \(pip install 'sightsound\[dask\]'\)"):
        make_runner("dask")
    with pytest.raises(RuntimeError, match="prefect-ray"):
        make_runner("ray://head:10001")
    assert parse_spec("dask:2").workers == 2  # parsing needs neither


def test_shared_api_only_when_workers_would_start_servers(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with runners.shared_api("threads") as url:
        assert url is None  # one process: nothing to share
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        with runners.shared_api("dask:2") as url:
            assert url is None  # a server is configured: workers use it
    assert "PREFECT_API_URL" not in os.environ


def test_limit_threads_sets_torch_threads(monkeypatch):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    for var in runners.THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(runners.WORKER_THREADS_VAR, "1")
    try:
        runners.limit_threads()
        assert torch.get_num_threads() == 1
        assert all(os.environ[v] == "1" for v in runners.THREAD_VARS)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # what the worker was started with wins
        runners.dask_setup(worker=None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ---- one small build on each local runner


from prefect import flow, get_run_logger, task  # noqa: E402

from flows.stages import Stages, acquire_task, extract_audio_task, probe_task  # noqa: E402

Row = namedtuple("Row", "video_id split source")


@task(name="where", persist_result=True)
def where_task(wav: str) -> dict:
    """What a worker sees: its process, the settings and variables the CLI sets, and the audio it got."""
    import soundfile
    from prefect.settings import get_current_settings

    return {
        "pid": os.getpid(),
        "frames": soundfile.info(wav).frames,
        "storage": str(get_current_settings().results.local_storage_path),
        "storage_env": os.environ.get("PREFECT_LOCAL_STORAGE_PATH"),
        "omp": os.environ.get("OMP_NUM_THREADS"),
    }


@flow(name="runner-check")
def runner_check(rows: list, data_root: str) -> dict:
    stages = Stages("runner-check", rows, ("acquire", "probe", "extract-audio", "where"), data_root, False,
                    get_run_logger())
    row = {r.video_id: r for r in rows}
    media, audio = Path(data_root) / "media", Path(data_root) / "audio"
    videos = stages.run(acquire_task, lambda v: dict(source=row[v].source, video_id=v, media_dir=str(media)))
    info = stages.run(probe_task, lambda v: dict(path=videos[v]))
    wavs = stages.run(extract_audio_task, lambda v: dict(path=videos[v], out_wav=str(audio / f"{v}.wav"),
                                                         sample_rate=16000))
    where = stages.run(where_task, lambda v: dict(wav=wavs[v]))
    stages.go()  # each video through the four stages as one chain (a build's finish() does this)
    return {"records": stages.records, "info": info, "wavs": wavs, "where": where}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("runner-videos")
    (d / "bad.mp4").write_text("not a video\n")
    return [make_test_video(d / "a.mp4", seconds=1.0), make_test_video(d / "b.mp4", seconds=1.5), d / "bad.mp4"]


def _build(spec: str, videos, root: Path, monkeypatch):
    """Run the small build on ``spec`` as the CLI would: storage under the data root, in the environment."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    storage = root / ".prefect" / "results"
    monkeypatch.setenv("PREFECT_LOCAL_STORAGE_PATH", str(storage))  # what flows.cli.common.prefect_env sets
    # "bad" is no video: it fails at probe with a MediaError, which must come back from the worker.
    rows = [Row("a", "train", str(videos[0])), Row("b", "test", str(videos[1])), Row("bad", "train", str(videos[2]))]
    # The CLI sets the variable before Prefect is imported; here Prefect is already imported.
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: str(storage)}):
        return runners.run_flow(runner_check, spec, rows=rows, data_root=str(root)), storage


def _check(result, storage: Path, root: Path, in_driver: bool, workers_started_before: bool = False):
    rec = result["records"]
    assert rec["a"]["state"] == rec["b"]["state"] == "done"
    assert rec["bad"]["state"] == "failed" and rec["bad"]["stage"] == "probe"
    assert "ffmpeg cannot read bad.mp4" in rec["bad"]["error"]
    assert result["info"]["a"]["has_audio"] and result["info"]["b"]["duration"] > result["info"]["a"]["duration"]
    for v in ("a", "b"):
        w = result["where"][v]
        assert (w["pid"] == os.getpid()) == in_driver
        # Prefect sends its settings with each task; the environment reaches only workers started after it was set.
        assert Path(w["storage"]) == storage
        assert w["storage_env"] == (None if workers_started_before else str(storage))
        if not in_driver:
            assert w["omp"] == "1"
    assert any(storage.iterdir())  # persisted results
    keys = root / ".prefect" / "cache-keys"
    names = [p.name for p in keys.iterdir()]
    for stage, n in (("acquire", 3), ("probe", 2), ("extract-audio", 2), ("where", 2)):  # a key per success
        assert len([name for name in names if name.startswith(f"{stage}-")]) == n, names
    return {v: (result["info"][v], result["where"][v]["frames"]) for v in ("a", "b")}


def test_threads_processes_and_dask_build_the_same(videos, tmp_path, monkeypatch):
    monkeypatch.delenv(runners.ENV_VAR, raising=False)
    outputs = {}
    specs = ["threads", "processes:2"]
    try:
        import prefect_dask  # noqa: F401

        specs.append("dask:2")
    except ImportError:
        pass
    for name in ("OMP_NUM_THREADS", "PYTHONHASHSEED", runners.WORKER_THREADS_VAR):
        monkeypatch.delenv(name, raising=False)
    for spec in specs:
        root = tmp_path / spec.replace(":", "-")
        result, storage = _build(spec, videos, root, monkeypatch)
        outputs[spec] = _check(result, storage, root, in_driver=spec == "threads")
    assert all(out == outputs["threads"] for out in outputs.values()), outputs
    # run_flow leaves no trace in this process's environment: not its temporary server's URL,
    # not the variables Dask's nannies set before they spawn workers.
    assert "PREFECT_API_URL" not in os.environ
    assert "OMP_NUM_THREADS" not in os.environ and "PYTHONHASHSEED" not in os.environ


def test_a_running_dask_scheduler_is_used_by_address(videos, tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    for name in runners._spawn_vars():  # the nannies of this cluster write these into os.environ: put them back
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        worker_pids = set(client.run(os.getpid).values())
        root = tmp_path / "remote"
        result, storage = _build(address, videos, root, monkeypatch)
        _check(result, storage, root, in_driver=False, workers_started_before=True)
        assert {result["where"][v]["pid"] for v in ("a", "b")} <= worker_pids
        # A rerun on the same scheduler finds every finished task in the cache: the wav is not rewritten.
        wav = Path(result["wavs"]["a"])
        stamp = wav.stat().st_mtime_ns
        again, _ = _build(address.replace("tcp://", "dask://"), videos, root, monkeypatch)
        assert wav.stat().st_mtime_ns == stamp
        assert again["where"] == result["where"]  # the cached value, pid and all


def test_the_errors_tasks_raise_survive_pickling():
    """Workers send a failed task's exception back pickled; an exception that cannot be unpickled ends the run."""
    import subprocess

    # In a fresh interpreter: importing distributed (as the Dask tests here do) patches the exception classes
    # defined before it with tblib's reducers and hides the problem; a Dask worker imports the tasks after it.
    code = (
        "import pickle\n"
        "from tasks.media.acquire import AcquireError\n"
        "from tasks.media.decode import MediaError\n"
        "for exc in (MediaError('m'), AcquireError('m', permanent=True)):\n"
        "    back = pickle.loads(pickle.dumps(exc))\n"
        "    assert type(back) is type(exc) and str(back) == 'm' and vars(back) == vars(exc), exc\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


BUILD_FLOWS = {"flows.build_pianoyt": "build_pianoyt", "flows.build_violinyt": "build_violinyt",
               "flows.build_voxceleb": "build_voxceleb"}


def test_a_deployment_takes_the_runner_from_the_environment():
    """A deployment sets SIGHTSOUND_RUNNER in its job variables; the flow module reads it when imported."""
    import subprocess

    pytest.importorskip("prefect_dask")
    root = Path(__file__).parents[1]
    waiting = [m for m in BUILD_FLOWS if "task_runner=make_runner()" not in (root / f"{m.replace('.', '/')}.py").read_text()]
    if waiting:
        pytest.skip(f"@flow of {', '.join(waiting)} does not take task_runner=make_runner() yet")
    code = "\n".join(f"import {m}; r = {m}.{f}.task_runner; print(type(r).__name__, r.cluster_kwargs['n_workers'])"
                     for m, f in BUILD_FLOWS.items())
    env = {**os.environ, runners.ENV_VAR: "dask:2", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["DaskTaskRunner", "2"] * 3
    env[runners.ENV_VAR] = "nonsense"
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "unknown task runner 'nonsense'" in done.stderr


@pytest.mark.parametrize("module", [
    "flows.build_pianoyt",
    "flows.build_violinyt",
    "flows.build_voxceleb",
])
def test_a_build_flow_pickles_for_workers(module):
    """Every task submitted to a process, Dask or Ray worker carries the flow pickled (cloudpickle): a @task
    function goes by value, with the module globals its body names, so those must pickle."""
    import importlib

    import cloudpickle

    flow_obj = getattr(importlib.import_module(module), BUILD_FLOWS[module])
    back = cloudpickle.loads(cloudpickle.dumps(flow_obj))
    assert back.name == flow_obj.name
