"""Build throughput of build-pianoyt on the piano sample set, measured in one run.

Prints:
  * seconds of video built per second of wall time, for a first build and a
    cached rerun (and their ratio);
  * the frame path (decode, crop, PNG encode, Parquet write; labels given) as
    a ratio of plain ``ffmpeg -f null`` decoding of the same files, with
    ffmpeg on one thread and on its default threads;
  * the transcriber's CPU seconds per minute of audio.

    python bench/build_throughput.py [--videos 3] [--seconds 20] [--seed 7] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def ffmpeg_null(paths, threads: int | None) -> float:
    from tasks.media.decode import ffmpeg_exe

    t = time.perf_counter()
    for p in paths:
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin"]
        if threads:
            cmd += ["-threads", str(threads)]
        cmd += ["-i", str(p), "-an", "-f", "null", "-"]
        subprocess.run(cmd, check=True)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--work", default=None, help="folder to work in (default: a temporary one)")
    args = ap.parse_args()

    from tasks.datasets.manifest import read_pianoyt
    from tasks.media.decode import extract_audio, probe, read_wav
    from tasks.datasets.pianoyt import build_frames
    from tasks.samples.piano import make_piano_samples
    from tasks.labels.transcribe import get_transcriber

    work = Path(args.work or tempfile.mkdtemp(prefix="sightsound-bench-"))
    samples = work / "samples"
    if not (samples / "manifest.csv").exists():
        make_piano_samples(samples, videos=args.videos, seconds=args.seconds, seed=args.seed)
    rows = read_pianoyt(samples / "manifest.csv")
    videos = [Path(r.source) for r in rows]
    video_seconds = sum(probe(v).duration for v in videos)

    # Frame path alone, with the true MIDI as labels.
    frames_dir = work / "frames-only"
    shutil.rmtree(frames_dir, ignore_errors=True)
    t = time.perf_counter()
    n_frames = 0
    for r, v in zip(rows, videos):
        info = build_frames(str(v), str(samples / "midi" / f"{r.video_id}.mid"), r.video_id, r.split, r.crop,
                            str(frames_dir / "shards"))
        n_frames += info["frames"]
    t_frames = time.perf_counter() - t
    t_null1 = ffmpeg_null(videos, threads=1)
    t_null = ffmpeg_null(videos, threads=None)

    # Transcriber CPU time per minute of audio.
    tr = get_transcriber("transkun", device="cpu")
    wav = extract_audio(videos[0], work / "bench.wav", tr.sample_rate)
    audio, sr = read_wav(wav)
    c = time.process_time()
    w = time.perf_counter()
    tr.transcribe(audio)
    cpu_per_min = (time.process_time() - c) / (len(audio) / sr / 60)
    wall_per_min = (time.perf_counter() - w) / (len(audio) / sr / 60)

    # Whole build through the CLI (Prefect), then a cached rerun.
    data = work / "data"
    shutil.rmtree(data, ignore_errors=True)
    env = dict(os.environ, PREFECT_HOME=str(work / "prefect-home"))
    cmd = [sys.executable, "-m", "flows.cli", "build-pianoyt", "--manifest", str(samples / "manifest.csv"),
           "--data-root", str(data), "--device", "cpu"]
    times = []
    for _ in range(2):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)

    print(f"machine: {os.cpu_count()} cores; sample set: {len(videos)} videos, {video_seconds:.1f} s of video, "
          f"{n_frames} frames")
    print(f"first build:   {times[0]:7.1f} s wall  -> {video_seconds / times[0]:6.3f} s of video per s")
    print(f"cached rerun:  {times[1]:7.1f} s wall  -> {video_seconds / times[1]:6.3f} s of video per s "
          f"(first / rerun = {times[0] / times[1]:.1f}x)")
    print(f"frame path:    {t_frames:7.2f} s ({n_frames / t_frames:.0f} frames/s)")
    print(f"ffmpeg -f null: {t_null1:6.2f} s on 1 thread, {t_null:.2f} s on default threads")
    print(f"frame path / ffmpeg decode: {t_frames / t_null1:.2f}x (1 thread), {t_frames / t_null:.2f}x (default threads)")
    print(f"transkun on CPU: {cpu_per_min:.1f} CPU-s and {wall_per_min:.1f} wall-s per minute of audio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
