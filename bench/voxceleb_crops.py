"""Speed of the VoxCeleb crop path on the face sample set, measured in one run.

For every utterance of a face sample set, runs the path that ``build-voxceleb``
runs per utterance (decode the sampled frames with decord, find the face with
dlib near the metadata box, crop, resize to 256 x 256, 68 landmarks, JPEG,
Parquet), without Prefect, and prints:

  * frames per second of the whole path (one thread), and the share of its
    time spent in each step;
  * the detection statistics (found by dlib / metadata box / skipped).

    python bench/voxceleb_crops.py [--identities 6] [--utterances 2] [--seconds 8] [--detector hog]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--identities", type=int, default=6)
    ap.add_argument("--utterances", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--detector", default="hog", choices=["hog", "cnn"])
    ap.add_argument("--work", default=None, help="folder to work in (default: a temporary one)")
    args = ap.parse_args()

    import tasks  # noqa: F401  (OpenCV before decord)
    import tasks.labels.faces as faces
    import tasks.datasets.voxceleb as voxceleb
    from tasks.samples.faces import make_face_samples
    from tasks.datasets.voxceleb import read_voxceleb_txt

    work = Path(args.work or tempfile.mkdtemp(prefix="sightsound-bench-faces-"))
    samples = work / "samples"
    if not (samples / "manifest.csv").exists():
        make_face_samples(samples, identities=args.identities, utterances=args.utterances,
                          seconds=args.seconds, seed=args.seed)
    utts = read_voxceleb_txt(samples / "vox1.zip", source_template=str(samples / "videos") + "/{id}.mp4")

    # Time each step by wrapping the functions build_utterance calls.
    spent = {"detect": 0.0, "landmarks": 0.0, "crop": 0.0}

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - t
        return wrapper

    faces.FaceFinder.for_thread(args.detector)  # load the models outside the timing
    voxceleb.find_face = timed("detect", faces.find_face)  # the names build_utterance calls
    voxceleb.crop_square = timed("crop", faces.crop_square)
    faces.FaceFinder.landmarks = timed("landmarks", faces.FaceFinder.landmarks)

    from tasks.media.decode import probe

    totals: dict[str, int] = {}
    t0 = time.perf_counter()
    probes = {}  # one probe per video, as the flow does
    for u in utts:
        if u.video_id not in probes:
            probes[u.video_id] = probe(u.source).as_dict()
        info = voxceleb.build_utterance(
            u.source, {"identity": u.identity, "video_id": u.video_id, "utterance": u.utterance,
                       "boxes": [list(b) for b in u.boxes], "units": u.units, "key": u.key},
            str(work / "shards"), u.split, detector=args.detector, probe=probes[u.video_id])
        for k in ("frames", "detected", "fallback", "outside", "past_end"):
            totals[k] = totals.get(k, 0) + info[k]
    wall = time.perf_counter() - t0
    frames = totals["frames"]
    print(f"face sample set: {len(utts)} utterances of {args.seconds:g} s, {frames} frames at 1 per second")
    print(f"crop path ({args.detector}, one thread): {wall:.2f} s wall -> {frames / wall:.1f} frames per second")
    rest = wall - sum(spent.values())
    for name, s in list(spent.items()) + [("decode, JPEG, Parquet, probe", rest)]:
        print(f"  {name:<30} {s:6.2f} s  {100 * s / wall:5.1f}%")
    kept = totals["detected"] + totals["fallback"]
    print(f"detection: {totals['detected']} of {kept} kept frames found by dlib "
          f"({100 * totals['detected'] / max(1, kept):.1f}%), {totals['fallback']} metadata box, "
          f"{totals['outside']} outside, {totals['past_end']} past the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
