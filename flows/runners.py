"""Which Prefect task runner a build flow runs its tasks on, chosen at run time.

A runner is named by a short spec, from ``sightsound build ... --runner SPEC``
or, for a deployment, from the environment variable ``SIGHTSOUND_RUNNER``
(set it in the work pool's or the deployment's job variables, ``env``):

==========================  ==============================================================
``threads`` / ``threads:N`` Prefect's ThreadPoolTaskRunner (the default), N threads
                            (default ``max(2, cores)``).  One process: the per-process
                            model cache and lock of the labeller are shared.
``processes`` / ``:N``      Prefect's ProcessPoolTaskRunner, N spawned processes (default:
                            cores).
``dask`` / ``dask:N``       prefect-dask's DaskTaskRunner on a local Dask cluster made when
                            the flow runs: N worker processes (default: cores), one thread
                            each.
``dask://HOST:PORT``        prefect-dask on a running Dask scheduler (``tcp://HOST:PORT``
``tcp://HOST:PORT``         and ``tls://HOST:PORT`` too); its workers must be able to import
                            this repository and reach the data root at the same path.
``ray`` / ``ray:N``         prefect-ray on a local Ray instance (N CPUs; default: all).
``ray://HOST:PORT``         prefect-ray on a running Ray cluster (Ray Client address).
==========================  ==============================================================

Building a runner starts nothing: the process pool, Dask cluster or Ray
instance starts when the flow run enters the runner and stops when it ends,
so ``@flow(task_runner=make_runner())`` is safe at import time.

Threads per worker.  With ``processes``, ``dask`` and ``ray`` every worker is a
process of its own, and torch, OpenMP and BLAS would each start one thread per
core in every worker.  Each worker is limited to ``SIGHTSOUND_WORKER_THREADS``
threads (default 1; raise it when workers are fewer than cores): the variables
OMP_NUM_THREADS, MKL_NUM_THREADS and OPENBLAS_NUM_THREADS are set for the
worker processes of a local pool or cluster (a value already in the
environment is kept), and in each worker :func:`limit_threads` (the process
pool's initializer) or :func:`dask_setup` (Dask's preload hook) also calls
``torch.set_num_threads`` where torch is already imported.  Start workers of
your own Dask scheduler with ``dask worker SCHEDULER --preload flows.runners``
for the same.  The ``threads`` runner changes nothing: its tasks share one
process and torch's threads.

Where things happen.  Every worker runs the tasks of ``flows/stages.py`` and
the flows by importing them (the package must be installed there, as it is
here by ``pip install -e .``), reads and writes the data root at the same
path, and persists results and cache keys there like the ``threads`` runner
(PREFECT_LOCAL_STORAGE_PATH and SIGHTSOUND_CACHE_DIR or the data root: Prefect
sends its settings with every task, and local workers inherit the environment
the CLI sets).  A failed task's exception comes back pickled: an exception
class must unpickle (``__init__`` arguments beyond the message need defaults).
Each worker process keeps its own model cache (one labeller model per worker).
Without a Prefect server (PREFECT_API_URL unset), each worker process would
start a temporary server of its own; :func:`run_flow` starts the one temporary
server first and points the workers at it (:func:`shared_api`).  A script
that runs a flow on ``processes`` or local ``dask`` must guard its top level
with ``if __name__ == "__main__":`` (workers are spawned and import the main
module).

This module imports Prefect and the optional packages only inside
:func:`make_runner`, so the CLI can check a spec (:func:`parse_spec`) before it
sets Prefect's environment.
"""

from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

from tasks import environment

ENV_VAR = environment.RUNNER
WORKER_THREADS_VAR = environment.WORKER_THREADS
DEFAULT_SPEC = "threads"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

# kind -> (module to import, pip requirement to name when it is missing)
OPTIONAL = {
    "dask": ("prefect_dask", "prefect-dask (pip install 'sightsound[dask]')"),
    "ray": ("prefect_ray", "prefect-ray (pip install 'sightsound[ray]')"),
}

HELP = ("threads[:N] (default), processes[:N], dask[:N] (a local Dask cluster of N workers), "
        "dask://HOST:PORT or tcp://HOST:PORT (a running Dask scheduler), ray[:N] or ray://HOST:PORT")


@dataclass(frozen=True)
class RunnerSpec:
    """A parsed runner spec: ``kind``, and ``workers`` (local) or ``address`` (remote), or neither."""

    kind: str
    workers: int | None = None
    address: str | None = None

    def __str__(self) -> str:
        if self.address:
            return f"{self.kind} at {self.address}"
        return f"{self.kind}:{self.workers}" if self.workers else self.kind


def cores() -> int:
    """CPU cores this process may use (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_LOCAL = re.compile(r"^(threads|processes|dask|ray)(?::(\d+))?$")
_ADDRESS = re.compile(r"^(dask|tcp|tls|ray)://([^\s/:]+|\[[0-9a-fA-F:.]+\]):(\d{1,5})/?$")


def parse_spec(spec: str | None = None) -> RunnerSpec:
    """Parse ``spec`` (default: ``$SIGHTSOUND_RUNNER``, else ``threads``); ValueError if it is none of :data:`HELP`."""
    if spec is None:
        spec = environment.get(ENV_VAR) or DEFAULT_SPEC
    text = spec.strip()
    m = _LOCAL.match(text.lower())
    if m:
        kind, n = m.group(1), m.group(2)
        if n is not None and int(n) < 1:
            raise ValueError(f"runner {spec!r}: the number of workers must be at least 1")
        return RunnerSpec(kind, workers=int(n) if n else None)
    m = _ADDRESS.match(text)
    if m:
        scheme, host, port = m.group(1).lower(), m.group(2), m.group(3)
        if not 0 < int(port) < 65536:
            raise ValueError(f"runner {spec!r}: port {port} is out of range")
        if scheme == "ray":
            return RunnerSpec("ray", address=f"ray://{host}:{port}")
        # dask:// is our name for a Dask scheduler over TCP; distributed wants tcp:// or tls://.
        return RunnerSpec("dask", address=f"{'tcp' if scheme == 'dask' else scheme}://{host}:{port}")
    raise ValueError(f"unknown task runner {spec!r}; expected one of: {HELP}")


def _require(kind: str):
    module, requirement = OPTIONAL[kind]
    try:
        return __import__(module, fromlist=["*"])
    except ImportError as exc:
        raise RuntimeError(f"task runner {kind!r} needs {requirement}; it is not installed here ({exc})") from exc


def worker_threads() -> int:
    """Threads each worker process gives torch/OpenMP/BLAS: ``$SIGHTSOUND_WORKER_THREADS``, default 1."""
    value = environment.get(WORKER_THREADS_VAR)
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{WORKER_THREADS_VAR}={value!r} is not a whole number") from None
    if n < 1:
        raise ValueError(f"{WORKER_THREADS_VAR} must be at least 1, not {n}")
    return n


def worker_env() -> dict[str, str]:
    """The thread-count variables for worker processes; values already in the environment win."""
    n = str(worker_threads())
    return {var: os.environ.get(var, n) for var in THREAD_VARS}


def limit_threads() -> None:
    """In a worker process: set the thread variables of :func:`worker_env` and torch's thread count.

    The variables are read by torch and numpy's BLAS when first imported; if
    torch is already imported, ``torch.set_num_threads`` is called too.  The
    process pool runs this in each worker before any task (its initializer).
    """
    env = worker_env()  # variables the worker was started with win
    os.environ.update(env)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))


def dask_setup(worker=None) -> None:
    """Dask's preload hook, run in each worker process as it starts: thread limits, quiet logs.

    Local clusters of :func:`make_runner` preload this module; for workers of
    your own, start them with ``dask worker SCHEDULER --preload flows.runners``.
    """
    limit_threads()
    _quiet_dask()


def _quiet_dask() -> None:
    """Dask's scheduler and nannies (in this process) log every start and stop at INFO; keep WARNING and above.

    Left alone when dask's ``logging.distributed`` setting was changed (e.g. DASK_LOGGING__DISTRIBUTED=debug).
    """
    import logging

    import dask

    if str(dask.config.get("logging.distributed", "info")).lower() == "info":
        logging.getLogger("distributed").setLevel(logging.WARNING)


def make_runner(spec: str | None = None):
    """A Prefect task runner for ``spec`` (see :func:`parse_spec`); nothing starts until a flow run uses it."""
    s = parse_spec(spec)
    if s.kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=s.workers or max(2, cores()))
    if s.kind == "processes":
        from prefect.task_runners import ProcessPoolTaskRunner

        worker_threads()  # a bad SIGHTSOUND_WORKER_THREADS is refused here, not in every worker
        return ProcessPoolTaskRunner(max_workers=s.workers or cores(), initializer=limit_threads)
    if s.kind == "dask":
        prefect_dask = _require("dask")
        _quiet_dask()
        if s.address:
            return prefect_dask.DaskTaskRunner(address=s.address)
        return prefect_dask.DaskTaskRunner(cluster_kwargs=dict(
            n_workers=s.workers or cores(), threads_per_worker=1, processes=True,
            # No dashboard: it needs bokeh, and builds running side by side would fight over :8787.
            dashboard_address=None,
            # Set in each worker process as it starts, before any task module is imported...
            env=worker_env(),
            # ...and then this module's dask_setup(worker) runs there.
            preload=[__name__],
        ))
    prefect_ray = _require("ray")
    if s.address:
        return prefect_ray.RayTaskRunner(address=s.address)
    init_kwargs = {"num_cpus": s.workers} if s.workers else {}
    # No dashboard (a port and processes of its own); the thread variables go to every worker.
    init_kwargs.update(include_dashboard=False, runtime_env={"env_vars": worker_env()})
    return prefect_ray.RayTaskRunner(init_kwargs=init_kwargs)


@contextmanager
def shared_api(spec: str | None = None):
    """Give the workers of ``spec`` the API server of this process when no PREFECT_API_URL is set.

    Without a Prefect server, Prefect starts a temporary one on first use
    (``prefect.server.api.server.SubprocessASGIServer``).  Worker processes do
    the same, each its own (seconds of start-up and a few hundred MB each, all
    on the one SQLite database of PREFECT_HOME).  Here the temporary server is
    started first and its URL is put in the settings (sent with every task) and
    in the environment (inherited by workers started later), so every worker
    reports to it.  Nothing changes for ``threads`` or when PREFECT_API_URL is
    set (a deployment's worker always sets it).  A remote cluster's workers
    cannot reach 127.0.0.1 here: give them a real server through
    PREFECT_API_URL.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if parse_spec(spec).kind == "threads" or PREFECT_API_URL.value():
        yield None
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the same instance Prefect's own client would start
    server.start()
    before = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before


@contextmanager
def _restored_environ(names):
    before = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _spawn_vars() -> tuple[str, ...]:
    """The variables a Dask nanny writes into this process's environment before it spawns a worker."""
    names = set(THREAD_VARS) | {"PYTHONHASHSEED", "MALLOC_TRIM_THRESHOLD_"}
    try:
        import dask

        names |= set(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    except ImportError:
        pass
    return tuple(sorted(names))


def run_flow(flow, spec: str | None = None, **parameters):
    """Run ``flow(**parameters)`` with its tasks on the runner ``spec`` (default: ``$SIGHTSOUND_RUNNER``).

    The CLI's way to run a build: ``run_flow(build_pianoyt, runner, settings=PianoBuild(...))``.
    A local Dask cluster's nannies set OMP_NUM_THREADS=1 and a few more variables in
    this process's environment (distributed's ``nanny.pre-spawn-environ``); they are
    put back as they were when the flow run ends.  A local ``data_root`` is
    locked for the run (:func:`tasks.store.storage.lock_root`): a second build into it
    raises ``DataRootBusy`` before any work.
    """
    from flows.tempserver import guard
    from tasks.store import storage

    runner = make_runner(spec)
    touched = _spawn_vars() if parse_spec(spec).kind == "dask" else ()
    settings = parameters.get("settings")  # a build's settings (flows/settings.py) name its data root
    root = parameters.get("data_root") or getattr(settings, "data_root", None)
    with storage.lock_root(root) if root else nullcontext():
        guard()  # a temporary server started for this run ends with this process, however it ends
        with shared_api(spec), _restored_environ(touched):
            return flow.with_options(task_runner=runner)(**parameters)
