"""Speed of the violin pitch labelers on one core: yinfft-raw (the thesis's) and yinfft (post-processed).

Makes violin recordings (the sample set's unseen recordings and, where
FluidSynth is installed, the harder set), then labels each at 100 frames per
second with both labelers, on one thread, best of ``--repeats``, and prints
seconds of audio per second of wall time and the post-processing's cost as a
ratio of the raw labeler's time, all measured in this one run; beside them
aubio's yinfft alone over the same hops, the floor of any labeler built on it.

    .venv/bin/python bench/label_violin.py [--recordings 4] [--seconds 20] [--repeats 3] [--rate 100] [--work DIR]
"""

from __future__ import annotations

import argparse
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, before numpy loads

import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recordings", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rate", type=float, default=100.0,
                    help="labels per second (100: the default labeler's analysis rate; a build labels "
                         "yinfft-raw at the video's frame rate, 25-30)")
    ap.add_argument("--work", default=None, help="folder for the recordings (default: a temporary one)")
    args = ap.parse_args()
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # and one CPU
    except (AttributeError, OSError):
        pass

    from tasks.labels.pitch import YinSettings, yin_track, yinfft_alone
    from tasks.samples.violin import make_violin_recordings
    from tasks.samples.violin_hard import fluidsynth_available, make_violin_hard_set

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-violin-"))
    sets = {"sample recordings": make_violin_recordings(work / "samples", n=args.recordings,
                                                         seconds=args.seconds, seed=100)}
    missing = fluidsynth_available()
    if missing:
        print(f"(harder set skipped: {missing})")
    else:
        sets["harder set"] = make_violin_hard_set(work / "hard", n=args.recordings, seconds=args.seconds, seed=300)
    clips = {name: [sf.read(str(w), dtype="float32") for w, _ in pairs] for name, pairs in sets.items()}
    yin_track(clips[next(iter(clips))][0][0][:44100], 44100, 100)  # load aubio, compile librosa's Viterbi

    print(f"CPU affinity: {sorted(os.sched_getaffinity(0))}; {args.recordings} recordings of {args.seconds:g} s per set; "
          f"{args.rate:g} labels per second")
    print("| set | labeler | x real time | time / yinfft-raw's |")
    print("| --- | --- | --- | --- |")
    for name, audio in clips.items():
        seconds = sum(len(y) / sr for y, sr in audio)
        walls = {}
        for labels in ("yinfft-raw", "yinfft"):
            settings = YinSettings(labels=labels)
            best = np.inf
            for _ in range(args.repeats):
                start = time.perf_counter()
                for y, sr in audio:
                    yin_track(y, sr, args.rate, settings=settings)
                best = min(best, time.perf_counter() - start)
            walls[labels] = best
        walls["aubio's yinfft alone (the floor)"] = min(sum(yinfft_alone(y, sr, args.rate) for y, sr in audio)
                                                        for _ in range(args.repeats))
        for labels, wall in walls.items():
            print(f"| {name} | {labels} | {seconds / wall:.0f} | {wall / walls['yinfft-raw']:.2f} |")


if __name__ == "__main__":
    main()
