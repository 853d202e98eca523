"""How Prefect task runners scale CPU-bound tasks on this machine (flows/runners.py).

Prints, for each runner spec given:
  * start-up: seconds from the flow run's start to its first task result
    (pool or cluster start, worker imports, one tiny task);
  * work: wall seconds for ``--tasks`` CPU-bound tasks of about ``--task-s``
    seconds each (pure Python, or numpy with one BLAS thread per worker),
    measured from first submit to last result, and the speed-up over the first
    spec given;
  * cores got: the CPU seconds the tasks' threads got divided by that wall
    time (2.0 on an idle 2-core machine with 2 workers; less when other work
    shares the cores);
and, once, the start of a bare 2-worker ``distributed.LocalCluster`` (no Prefect).

    python bench/runner_scaling.py [--specs dask:1,dask:2] [--tasks 8] [--task-s 1.0] [--kind python|numpy]

The work is calibrated in this process first (single core), so a busy machine
shows up as lower speed-ups, not as a different amount of work.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def burn_python(n: int) -> int:
    total = 0
    for i in range(n):
        total = (total + i * i) % 1000003
    return total


def burn_numpy(n: int) -> float:
    import numpy as np

    rng = np.random.default_rng(n)
    x = rng.standard_normal((256, 256))
    acc = 0.0
    for _ in range(n):
        x = np.tanh(x @ x.T / 256.0)  # BLAS on OMP_NUM_THREADS threads
        acc += float(np.sort(x, axis=None)[128])
    return acc


def burn(kind: str, n: int) -> float:
    """Run the work; return the CPU seconds this thread got for it."""
    t = time.thread_time()
    (burn_numpy if kind == "numpy" else burn_python)(n)
    return time.thread_time() - t


def pid() -> int:
    return os.getpid()


def calibrate(fn, target_s: float) -> int:
    n = 1000 if fn is burn_numpy else 100_000
    while True:
        t = time.perf_counter()
        fn(n)
        dt = time.perf_counter() - t
        if dt > 0.2:
            return max(1, int(n * target_s / dt))
        n *= 4


def bare_cluster_start(workers: int = 2) -> float:
    import distributed

    t = time.perf_counter()
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        client.wait_for_workers(workers)
        client.submit(sum, [1, 2]).result()
        return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--specs", default="dask:1,dask:2")
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--task-s", type=float, default=1.0)
    ap.add_argument("--kind", default="python", choices=["python", "numpy"])
    ap.add_argument("--repeat", type=int, default=1, help="run the list of specs this many times")
    args = ap.parse_args()

    home = tempfile.mkdtemp(prefix="runner-bench-")
    os.environ.setdefault("PREFECT_HOME", str(Path(home) / "prefect"))
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(Path(home) / "results"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # this process calibrates on one core, like one worker

    from prefect import flow, task

    from flows.runners import run_flow

    fn = burn_numpy if args.kind == "numpy" else burn_python
    n = calibrate(fn, args.task_s)
    burn_task = task(burn, name=f"burn-{args.kind}", persist_result=False, cache_policy=None)
    ping = task(pid, name="ping", persist_result=False, cache_policy=None)

    @flow(name="runner-scaling", persist_result=False)
    def scaling(kind: str, n: int, tasks: int) -> dict:
        t0 = time.perf_counter()
        ping.submit().result()  # the pool or cluster starts on the first submit
        t1 = time.perf_counter()
        futures = [burn_task.submit(kind, n + i) for i in range(tasks)]
        cpu = sum(f.result() for f in futures)
        return {"startup": t1 - t0, "work": time.perf_counter() - t1, "cpu": cpu}

    print(f"load average before: {os.getloadavg()}; cores: {os.cpu_count()}")
    print(f"bare LocalCluster(2 workers) start + first result: {bare_cluster_start():.2f} s")
    print(f"{args.tasks} {args.kind} tasks of ~{args.task_s:.1f} s (n={n})")
    base = None
    for r in range(args.repeat):
        for spec in args.specs.split(","):
            t = time.perf_counter()
            out = run_flow(scaling, spec, kind=args.kind, n=n, tasks=args.tasks)
            total = time.perf_counter() - t
            base = base or out["work"]
            print(f"[{r}] {spec:>12}: start-up {out['startup']:5.2f} s  work {out['work']:6.2f} s  "
                  f"speed-up {base / out['work']:4.2f}x  cores got {out['cpu'] / out['work']:4.2f}  "
                  f"whole flow run {total:6.2f} s  "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
