"""regenerate-benchmarks as a user operates it: a Prefect server on loopback, a process worker on the CPU pool,
the deployments of deploy/prefect.yaml, and `prefect deployment run regenerate-benchmarks/sample` (issue 19).

The run is the deployment with the ``tiny`` profile and one table (``transcription``: a rendered piano-audio set,
two steps of Onsets and Frames, one test piece transcribed), twice: the second run reuses the checkpoint.  A third,
on a fresh work folder with ``dispatch=deployments``, starts the training as a run of the
``train-onsets-frames`` deployment, which a second worker (a CPU stand-in for the GPU pool) picks up.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, seconds: float = 180) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if server.poll() is not None:
            raise AssertionError(f"the Prefect server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"no Prefect server at {url} after {seconds} s")


def _prefect(env, *args, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run([PREFECT, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"prefect {' '.join(args)}: {proc.stdout[-2000:]}{proc.stderr[-3000:]}"
    return proc


@pytest.fixture
def server_env(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    # PWD: the deployment's pull step sets the working directory to {{ $PWD }} at deploy time
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_WORKER_QUERY_SECONDS="2",
               PREFECT_WORKER_PREFETCH_SECONDS="2", OMP_NUM_THREADS="1", PWD=str(REPO))
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    workers: list[subprocess.Popen] = []
    try:
        _wait_healthy(env["PREFECT_API_URL"], server)
        yield env, workers
    finally:
        for p in (*workers, server):
            p.terminate()
        for p in (*workers, server):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()


def test_prefect_deployment_run_regenerate_benchmarks_through_a_server_and_a_worker(server_env, tmp_path):
    env, workers = server_env
    _prefect(env, "work-pool", "create", "sightsound-cpu", "--type", "process")
    _prefect(env, "work-pool", "create", "sightsound-gpu", "--type", "process")  # a CPU stand-in for the GPU pool
    _prefect(env, "--no-prompt", "deploy", "--prefect-file", "deploy/prefect.yaml",
             "--name", "regenerate-benchmarks/sample", "--name", "train-onsets-frames/train-onsets-frames")
    for pool in ("sightsound-cpu", "sightsound-gpu"):
        log = open(tmp_path / f"worker-{pool}.log", "w")
        workers.append(subprocess.Popen([PREFECT, "worker", "start", "--pool", pool, "--limit", "1"],
                                        env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
    out, work = tmp_path / "R", tmp_path / "work"

    def run(*params: str) -> dict:
        _prefect(env, "deployment", "run", "regenerate-benchmarks/sample", "--param", "profile=tiny",
                 "--param", f"out={out}", "--param", f"work={work}", "--param", 'only=["transcription"]',
                 *params, "--watch", "--watch-timeout", "900", timeout=960)
        return json.loads((out / "regenerate.json").read_text())

    first = run()
    (training,) = first["tables"]["transcription"]["trainings"].values()
    assert training["reused"] is False and training["steps"] == 2
    md = (out / "transcription.md").read_text()
    assert "git_commit" in md and "shards_digest" in md and "82.29" in md  # provenance; the paper beside ours
    assert (out / "README.md").is_file() and "Ours against the paper" in (out / "README.md").read_text()
    second = run()
    (again,) = second["tables"]["transcription"]["trainings"].values()
    assert again["reused"] is True and again["key"] == training["key"]
    # dispatch=deployments: the training runs as a run of its own deployment, on the (stand-in) GPU pool's worker
    work = tmp_path / "work-2"
    third = run("--param", "dispatch=deployments")
    (remote,) = third["tables"]["transcription"]["trainings"].values()
    assert remote["reused"] is False and remote["steps"] == 2 and remote["flow_run"]
    flow_run = _prefect(env, "flow-run", "inspect", remote["flow_run"]).stdout
    assert "regenerate-benchmarks" in flow_run and "COMPLETED" in flow_run.upper()  # its tag; its state
    runs = _prefect(env, "flow-run", "ls", "--flow-name", "train-onsets-frames").stdout
    assert remote["flow_run"][:8] in runs or "train-onsets-frames" in runs
