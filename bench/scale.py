"""One sample manifest built with 1 and with 2 Dask workers, and the memory of a long video, in one run.

Prints, for ``--runner-a`` and ``--runner-b`` (default ``dask:1`` and
``dask:2``): the wall time of a fresh build of the same piano sample
manifest (each into its own data root, nothing cached), their ratio, and
the peak resident memory of every process of the build (the CLI, each Dask
worker, Prefect's temporary server: the kernel's high-water mark VmHWM, read
every 0.1 s with the RSS psutil samples); and
checks that both builds wrote the same shards.  With ``--long-seconds S``
it also builds one S-second 1280 x 720 piano video (600 for the issue's
10-minute check) on the default thread runner and prints the peak memory of
the build process.

    python bench/scale.py [--videos 4] [--seconds 15] [--long-seconds 0]

The ratio is only meaningful on an otherwise idle machine: the script prints
the CPU seconds the build's processes got per wall second next to it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def _role(cmdline: list[str]) -> str:
    text = " ".join(cmdline)
    if "uvicorn" in text:
        return "prefect server"
    if cmdline and "ffmpeg" in Path(cmdline[0]).name:
        return "ffmpeg"
    if "multiprocessing" in text or "spawn" in text or "forkserver" in text:
        return "worker"
    if "flows.cli" in text:
        return "cli"
    return "other"


def _high_water(pid: int) -> int:
    """The kernel's record of a process's peak RSS (VmHWM, Linux), in bytes; 0 where unknown.

    Sampling RSS every 0.1 s can miss a short peak; VmHWM cannot (read while
    the process lives, it misses at most its last 0.1 s).
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_build(args: list[str], env: dict) -> dict:
    """Run the CLI; sample every process of its tree; return wall time, peak RSS per process, CPU seconds."""
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    peaks: dict[int, tuple[str, int]] = {}
    cpu: dict[int, float] = {}
    together = [0]  # the peak of the build's processes' RSS summed at one instant (Prefect's server left out)
    done = threading.Event()

    def sample():
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            now = 0
            for p in procs:
                try:
                    with p.oneshot():
                        rss = p.memory_info().rss
                        t = p.cpu_times()
                        role = _role(p.cmdline())
                except psutil.Error:
                    continue
                if role != "prefect server":
                    now += rss
                rss = max(rss, _high_water(p.pid))
                if rss > peaks.get(p.pid, ("", 0))[1]:
                    peaks[p.pid] = (role, rss)
                cpu[p.pid] = t.user + t.system  # its own threads only (children are sampled themselves)
            together[0] = max(together[0], now)
            time.sleep(0.1)

    t0 = time.perf_counter()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rc = proc.wait()
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    try:
        os.killpg(proc.pid, 9)  # anything the build left behind
    except ProcessLookupError:
        pass
    return {"rc": rc, "wall": wall, "peaks": peaks, "cpu": sum(cpu.values()), "together": together[0]}


def shard_digests(data: Path) -> dict:
    return {str(p.relative_to(data)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((data / "pianoyt" / "shards").rglob("*.parquet"))}


def describe(name: str, r: dict) -> None:
    print(f"{name}: exit {r['rc']}, {r['wall']:.1f} s wall, {r['cpu'] / r['wall']:.2f} CPU-s per wall-s")
    for pid, (role, rss) in sorted(r["peaks"].items(), key=lambda kv: (kv[1][0], kv[0])):
        if role not in ("other", "ffmpeg"):
            print(f"  peak RSS {rss / 2**20:7.0f} MiB  {role} (pid {pid})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--runner-a", default="dask:1")
    ap.add_argument("--runner-b", default="dask:2")
    ap.add_argument("--long-seconds", type=float, default=0.0, help="also build one video this long (600: 10 min)")
    ap.add_argument("--only-long", action="store_true", help="skip the 1-vs-2-worker builds")
    ap.add_argument("--work", default=None)
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="sightsound-scale-"))
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    samples = work / "samples"
    if not args.only_long and not (samples / "manifest.csv").exists():
        subprocess.run([sys.executable, "-m", "flows.cli", "samples", "piano", "--out", str(samples), "--videos",
                        str(args.videos), "--seconds", str(args.seconds), "--seed", str(args.seed)],
                       cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    results = {}
    for spec in () if args.only_long else (args.runner_a, args.runner_b):
        data = work / f"data-{spec.replace(':', '-').replace('/', '_')}"
        results[spec] = run_build(["build-pianoyt", "--manifest", str(samples / "manifest.csv"),
                                   "--data-root", str(data), "--runner", spec], env)
        results[spec]["digests"] = shard_digests(data) if results[spec]["rc"] == 0 else {}
    if results:
        print(f"sample manifest: {args.videos} piano videos of {args.seconds:g} s (seed {args.seed}), "
              f"{os.cpu_count()} cores")
        for spec, r in results.items():
            describe(spec, r)
        a, b = results[args.runner_a], results[args.runner_b]
        print(f"speed-up {args.runner_b} over {args.runner_a}: {a['wall'] / b['wall']:.2f}x")
        print(f"same shards: {a['digests'] == b['digests'] and bool(a['digests'])}")

    if args.long_seconds:
        long_dir = work / "long"
        if not (long_dir / "manifest.csv").exists():
            subprocess.run([sys.executable, "-m", "flows.cli", "samples", "piano", "--out", str(long_dir), "--videos",
                            "1", "--seconds", str(args.long_seconds), "--seed", str(args.seed)],
                           cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        r = run_build(["build-pianoyt", "--manifest", str(long_dir / "manifest.csv"),
                       "--data-root", str(work / "data-long")], env)
        print(f"one {args.long_seconds:g} s 1280 x 720 video, threads runner:")
        describe("long build", r)
        cli_peak = max((rss for role, rss in r["peaks"].values() if role == "cli"), default=0)
        ffmpeg_peak = max((rss for role, rss in r["peaks"].values() if role == "ffmpeg"), default=0)
        print(f"peak RSS of the build process: {cli_peak / 2**20:.0f} MiB (limit 2048 MiB); "
              f"of any one ffmpeg it ran: {ffmpeg_peak / 2**20:.0f} MiB; "
              f"of the build and its ffmpeg processes together: {r['together'] / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
