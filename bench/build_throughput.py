"""Build throughput of build-pianoyt on the piano sample set, measured in one run.

Prints:
  * seconds of video built per second of wall time, for a first build and a
    cached rerun (and their ratio);
  * the frame path (decode, crop, PNG encode, Parquet write; labels given) as
    a ratio of plain ``ffmpeg -f null`` decoding of the same files, with
    ffmpeg on one thread and on its default threads; the frame path with its
    encoding on threads against inline (and that their shards are identical);
  * where the frame path's time goes: each stage timed alone;
  * the transcriber's CPU seconds per minute of audio.

    python bench/build_throughput.py [--videos 3] [--seconds 20] [--seed 7] [--work DIR]
"""

from __future__ import annotations

import argparse
import hashlib
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


def stage_profile(rows, videos) -> dict[str, float]:
    """Seconds of each stage of the inline frame path over every frame of ``videos``, each stage timed alone."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.datasets.pianoyt import CROP_SIZE
    from tasks.media.decode import encode_image, gray_resize_one, iter_frames, probe, scale_crop
    from tasks.datasets.manifest import CROP_REFERENCE

    out = {"decode + crop (ffmpeg to the pipe)": 0.0, "grey + resize (cv2)": 0.0, "PNG encode (cv2, level 1)": 0.0,
           "Parquet write (pyarrow, zstd)": 0.0}
    for r, v in zip(rows, videos):
        info = probe(v)
        box = scale_crop(tuple(r.crop), tuple(CROP_REFERENCE), info.width, info.height)
        t = time.perf_counter()
        frames = [f for _, chunk in iter_frames(str(v), info, box) for f in chunk]
        out["decode + crop (ffmpeg to the pipe)"] += time.perf_counter() - t
        t = time.perf_counter()
        crops = [gray_resize_one(f, CROP_SIZE) for f in frames]
        out["grey + resize (cv2)"] += time.perf_counter() - t
        t = time.perf_counter()
        images = [encode_image(c) for c in crops]
        out["PNG encode (cv2, level 1)"] += time.perf_counter() - t
        t = time.perf_counter()
        table = pa.table({"image": pa.array(images, pa.binary()), "i": np.arange(len(images))})
        pq.write_table(table, os.devnull, compression="zstd", compression_level=3)  # as the shards
        out["Parquet write (pyarrow, zstd)"] += time.perf_counter() - t
    return out


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
    from tasks.media.decode import ENCODE_THREADS
    from tasks.samples.piano import make_piano_samples
    from tasks.labels.transcribe import get_transcriber

    work = Path(args.work or tempfile.mkdtemp(prefix="sightsound-bench-"))
    samples = work / "samples"
    if not (samples / "manifest.csv").exists():
        make_piano_samples(samples, videos=args.videos, seconds=args.seconds, seed=args.seed)
    rows = read_pianoyt(samples / "manifest.csv")
    videos = [Path(r.source) for r in rows]
    video_seconds = sum(probe(v).duration for v in videos)

    # Frame path alone, with the true MIDI as labels: encoding on the default threads, then inline.
    def frame_path(threads: int) -> tuple[float, int, str]:
        frames_dir = work / f"frames-only-{threads}"
        shutil.rmtree(frames_dir, ignore_errors=True)
        t = time.perf_counter()
        n = 0
        for r, v in zip(rows, videos):
            n += build_frames(str(v), str(samples / "midi" / f"{r.video_id}.mid"), r.video_id, r.split, r.crop,
                              str(frames_dir / "shards"), encode_threads=threads)["frames"]
        wall = time.perf_counter() - t
        digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted((frames_dir / "shards").rglob("*.parquet"))))
        return wall, n, digest.hexdigest()

    t_frames, n_frames, digest = frame_path(ENCODE_THREADS)
    t_inline, _, digest_inline = frame_path(0)
    t_null1 = ffmpeg_null(videos, threads=1)
    t_null = ffmpeg_null(videos, threads=None)
    shares = stage_profile(rows, videos)

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
    print(f"frame path:    {t_frames:7.2f} s ({n_frames / t_frames:.0f} frames/s), encoding on {ENCODE_THREADS} "
          f"threads; inline {t_inline:.2f} s ({n_frames / t_inline:.0f} frames/s): threads {t_inline / t_frames:.2f}x "
          f"faster, shards {'identical' if digest == digest_inline else 'DIFFERENT'}")
    print(f"ffmpeg -f null: {t_null1:6.2f} s on 1 thread, {t_null:.2f} s on default threads")
    print(f"frame path / ffmpeg decode: {t_frames / t_null1:.2f}x (1 thread), {t_frames / t_null:.2f}x (default threads)"
          f"; rate ratio (frame path's frames/s over ffmpeg's, 1 thread): {t_null1 / t_frames:.2f}")
    print("where an inline frame path's time goes, each stage timed alone over the same frames (one thread):")
    total = sum(shares.values())
    for name, sec in shares.items():
        print(f"  {name:<34} {sec:6.2f} s  {100 * sec / total:5.1f} %")
    print(f"transkun on CPU: {cpu_per_min:.1f} CPU-s and {wall_per_min:.1f} wall-s per minute of audio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
