"""Frame-wise pitch metrics of visual pitch estimation for violin (thesis ch. 5, table 2).

The thesis reports, per frame of a video, Raw Pitch Accuracy (RPA: the predicted pitch lies
within one semitone of the reference), RPA tol (the same, the prediction may also be off by
one frame), Pitch Accuracy (PA: the exact pitch class), Average Class Accuracy (ACA: the mean
of the per-pitch-class accuracies) and Average Class Error (ACE: the mean absolute error in
semitones). This module computes them from per-frame MIDI numbers: RPA and PA with
``mir_eval.melody.raw_pitch_accuracy`` on the cents of the class-centre frequencies, RPA tol,
ACA and ACE with numpy.

Choices:

* Inputs are integer MIDI numbers per frame of one video, in frame order; a reference of 0 is
  an unvoiced frame. Every metric is over the reference-voiced frames only (as mir_eval's raw
  pitch accuracy); the estimate always names a pitch (the networks always predict one), so its
  value on unvoiced reference frames is ignored.
* RPA tol: reference frame t is correct if any of the estimates at t-1, t, t+1 that exist in
  the same video is within one semitone of the reference at t.
* ACA: the mean over the pitch classes present in the voiced reference frames of the fraction
  of that class's frames estimated exactly.
* Over several videos the frames of all videos are pooled (RPA tol still per video, so the
  +-1 frame never crosses a video boundary); :func:`bootstrap_intervals` resamples videos.
"""

from __future__ import annotations

import mir_eval
import numpy as np
import pretty_midi

MIN_MIDI, MAX_MIDI = 55, 88  # G3 .. E6: the 34 pitch classes of the violin network
METRICS = ("rpa", "rpa_tol", "pa", "aca", "ace")


def class_of(midi, min_midi: int = MIN_MIDI, max_midi: int = MAX_MIDI):
    """Class index ``midi - min_midi`` (0..33 by default) of a MIDI number or array; -1 for an
    unvoiced (0) or out-of-range MIDI number. An int for a scalar, else an int array."""
    m = np.asarray(midi)
    out = np.where((m > 0) & (m >= min_midi) & (m <= max_midi), m - min_midi, -1).astype(int)
    return int(out) if out.ndim == 0 else out


def midi_of(class_index, min_midi: int = MIN_MIDI):
    """MIDI number ``min_midi + class_index`` of a class index or array; 0 (unvoiced) for a
    negative index. An int for a scalar, else an int array."""
    c = np.asarray(class_index)
    out = np.where(c >= 0, c + min_midi, 0).astype(int)
    return int(out) if out.ndim == 0 else out


def _arrays(ref_midi, est_midi) -> tuple[np.ndarray, np.ndarray]:
    ref, est = np.asarray(ref_midi, dtype=int), np.asarray(est_midi, dtype=int)
    if ref.ndim != 1 or ref.shape != est.shape:
        raise ValueError(f"ref and est must be 1-D of the same length, got {ref.shape} and {est.shape}")
    return ref, est


def _cents(midi: np.ndarray, voiced: np.ndarray) -> np.ndarray:
    hz = np.where(voiced, pretty_midi.note_number_to_hz(midi.astype(float)), 0.0)
    return mir_eval.melody.hz2cents(hz)


def _mir_eval_rpa(ref: np.ndarray, est: np.ndarray, cent_tolerance: float) -> float:
    voiced = ref > 0
    if not voiced.any():
        return float("nan")
    ref_cent, est_cent = _cents(ref, voiced), _cents(est, np.ones_like(voiced))
    return float(mir_eval.melody.raw_pitch_accuracy(voiced.astype(float), ref_cent,
                                                    np.ones(len(est)), est_cent, cent_tolerance))


def raw_pitch_accuracy(ref_midi, est_midi) -> float:
    """RPA: fraction of voiced reference frames (ref > 0) with |est - ref| <= 1 semitone; NaN if none.

    mir_eval counts ``|diff_cents| < cent_tolerance`` strictly, and class centres differ by
    multiples of 100 cents (up to float error), so a tolerance of 150 accepts 0 and 100 cents
    and rejects 200, whatever the rounding of the cents."""
    ref, est = _arrays(ref_midi, est_midi)
    return _mir_eval_rpa(ref, est, cent_tolerance=150)


def pitch_accuracy(ref_midi, est_midi) -> float:
    """PA: fraction of voiced reference frames with est == ref (mir_eval, tolerance 50 cents:
    the exact class); NaN if none."""
    ref, est = _arrays(ref_midi, est_midi)
    return _mir_eval_rpa(ref, est, cent_tolerance=50)


def _tol_hits(ref: np.ndarray, est: np.ndarray) -> int:
    """Voiced reference frames t with min over est[t-1..t+1] (within the video) of |est - ref[t]| <= 1."""
    if len(ref) == 0:
        return 0
    pad = np.r_[est[:1], est, est[-1:]]  # the edge estimate repeated: a neighbour that adds nothing
    near = np.min([np.abs(pad[k:k + len(ref)] - ref) for k in range(3)], axis=0) <= 1
    return int(np.sum(near & (ref > 0)))


def raw_pitch_accuracy_tol(ref_midi, est_midi) -> float:
    """RPA tol: fraction of voiced reference frames t for which any of est[t-1], est[t], est[t+1]
    (those that exist) is within one semitone of ref[t]; NaN if none. (mir_eval has no such measure.)"""
    ref, est = _arrays(ref_midi, est_midi)
    frames = int(np.sum(ref > 0))
    return _tol_hits(ref, est) / frames if frames else float("nan")


def average_class_accuracy(ref_midi, est_midi) -> float:
    """ACA: mean over the pitch classes present in the voiced reference frames of the fraction of
    that class's frames with est == ref; NaN if no voiced frame."""
    ref, est = _arrays(ref_midi, est_midi)
    voiced = ref > 0
    classes = np.unique(ref[voiced])
    if len(classes) == 0:
        return float("nan")
    return float(np.mean([np.mean(est[ref == c] == c) for c in classes]))


def average_class_error(ref_midi, est_midi) -> float:
    """ACE: mean over voiced reference frames of |est - ref| in semitones; NaN if none."""
    ref, est = _arrays(ref_midi, est_midi)
    voiced = ref > 0
    return float(np.mean(np.abs(est[voiced] - ref[voiced]))) if voiced.any() else float("nan")


def _pooled(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    pairs = [_arrays(r, e) for r, e in pairs]
    ref = np.concatenate([r for r, _ in pairs]) if pairs else np.zeros(0, int)
    est = np.concatenate([e for _, e in pairs]) if pairs else np.zeros(0, int)
    frames = int(np.sum(ref > 0))
    return {
        "rpa": raw_pitch_accuracy(ref, est),
        "rpa_tol": sum(_tol_hits(r, e) for r, e in pairs) / frames if frames else float("nan"),
        "pa": pitch_accuracy(ref, est),
        "aca": average_class_accuracy(ref, est),
        "ace": average_class_error(ref, est),
        "frames": frames,
    }


def pitch_scores(ref_midi, est_midi) -> dict:
    """RPA, RPA tol, PA, ACA (fractions in [0, 1]), ACE (semitones) and ``frames`` (the number of
    voiced reference frames) of one video. With no voiced reference frame: frames 0, the rest NaN."""
    return _pooled([(ref_midi, est_midi)])


def pooled_scores(videos: dict) -> dict:
    """The metrics of :func:`pitch_scores` over all voiced frames of all videos ``{id: (ref, est)}``
    together (RPA tol per video, so the +-1 frame never crosses videos, then pooled by counts;
    ACA over the classes of all videos), plus ``videos`` (their count)."""
    return {**_pooled(list(videos.values())), "videos": len(videos)}


def bootstrap_intervals(videos: dict, n: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile intervals ``{metric: (low, high)}`` of the metrics of :func:`pooled_scores` over
    ``n`` resamples of the videos with replacement (``numpy.random.default_rng(seed)``); resamples
    without voiced frames (NaN) are left out."""
    pairs = list(videos.values())
    if not pairs:
        raise ValueError("no videos to resample")
    rng = np.random.default_rng(seed)
    draws = [_pooled([pairs[i] for i in rng.integers(0, len(pairs), len(pairs))]) for _ in range(n)]
    q = [50 * (1 - level), 50 * (1 + level)]
    return {m: tuple(float(v) for v in np.nanpercentile([d[m] for d in draws], q)) for m in METRICS}


# ---------------------------------------------------------------- table 2: trained networks on a build's test videos
#
# (These functions import torch and the training code lazily: the metrics above stay numpy-only.)

THESIS_TABLE2 = {  # RPA / RPA tol / PA / ACA (%) / ACE (semitones), thesis ch. 5 table 2
    "Vn1": {"teacher": (98.30, 99.14, 96.74, 86.03, 0.06), "student-1": (89.98, 91.57, 62.41, 51.64, 0.45),
            "student-5": (93.8, 94.91, 66.7, 58.75, 0.43)},
    "VnAll": {"teacher": (94.26, 94.40, 90.87, 94.33, 0.06), "student-1": (74.17, 75.55, 47.48, 33.3, 2.50),
              "student-5": (77.24, 78.98, 50.33, 41.66, 1.65)},
    # VnYT's audio row in the thesis repeats Vn1's digit for digit (a copy slip, it seems): left out.
    "VnYT": {"student-1": (44.3, 51.37, 33.18, 45.2, 2.50), "student-5": (62.5, 67.89, 48.44, 51.77, 2.34)},
    "URMP": {"teacher": (98.28, 98.5, 96.73, 98.88, 0.07), "student-1": (53.11, 58.3, 42.71, 39.86, 2.73),
             "student-5": (57.3, 62.04, 45.26, 41.79, 2.43)},
}
NETWORK_NAMES = {"teacher": "audio (teacher)", "student-1": "1 frame", "student-5": "5 frames",
                 "student-1-nodistill": "1 frame, no distillation",
                 "student-5-nodistill": "5 frames, no distillation"}
GROUND_TRUTH_LABELS = "URMP ground-truth F0"  # what a URMP build's card names as its labels


def true_midi(midi_path, times: np.ndarray) -> np.ndarray:
    """The MIDI number of the note sounding at each time in a (monophonic) MIDI file, 0 where none."""
    from tasks.evaluation.audit import true_pitch_hz

    hz = true_pitch_hz(midi_path, np.asarray(times, np.float64))
    out = np.zeros(len(hz), np.int64)
    on = hz > 0
    out[on] = np.round(pretty_midi.hz_to_note_number(hz[on])).astype(np.int64)
    return out


def has_ground_truth_labels(data_root: str) -> bool:
    """Whether the build's labels are ground truth (a URMP build), read from its dataset card."""
    from tasks.datasets.violinyt import layout
    from tasks.store import storage

    card = layout(data_root).card
    return storage.exists(card) and GROUND_TRUTH_LABELS in storage.read_bytes(card).decode("utf-8", "replace")


def split_videos(data_root: str, split: str) -> list[str]:
    from tasks.datasets.violinyt import layout
    from tasks.training.windows import chain_of, split_parts

    return sorted({chain_of(p) for p in split_parts(layout(data_root).shards, split)})


def predict_video(net, data_root: str, split: str, video_id: str, batch_size: int = 32) -> dict:
    """Per frame of one video (the middle frames of its 5-frame windows): time, pseudo-label and the net's MIDI.

    ``net`` is a :class:`models.violin_pitch.PitchTeacher` (fed the audio
    around each frame) or :class:`~models.violin_pitch.PitchStudent` (fed
    1 or 5 frames); classes are MIDI ``MIN_MIDI + k``.
    """
    import torch
    from torch.utils.data import default_collate

    from models.violin_pitch import PitchTeacher
    from tasks.datasets.violinyt import layout
    from tasks.training.windows import PitchLabels, video_windows

    lay = layout(data_root)
    teacher = isinstance(net, PitchTeacher)
    c = net.config
    labels = PitchLabels(lay.root, audio_samples=c.segment_samples if teacher else None)
    kw = dict(images=False) if teacher else dict(color="rgb", frames=c.frames, size=(c.height, c.width))
    out = {"frame_index": [], "time": [], "label": [], "est": []}

    def flush(batch):
        b = default_collate(batch)
        with torch.no_grad():
            logits = net(b["audio"] if teacher else b["frames"])
        out["est"] += (logits.argmax(dim=1) + MIN_MIDI).tolist()
        out["frame_index"] += b["frame_index"].tolist()
        out["time"] += b["time"].tolist()
        out["label"] += b["midi"].tolist()

    batch = []
    for ex in video_windows(lay.shards, split, video_id, labels=labels, **kw):
        batch.append(ex)
        if len(batch) == batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    return {"video_id": video_id, **{k: np.asarray(v) for k, v in out.items()}}


def evaluate_checkpoint(checkpoint, data_root: str, truth_midi: str | None = None, split: str = "test",
                        log=print) -> dict:
    """One network's predictions on every ``split`` video, scored against the pseudo-labels and the truth.

    The truth: the labels themselves for a URMP build (ground-truth F0);
    else, with ``truth_midi``, ``<truth_midi>/<video>.mid`` where it exists
    (the sample sets' true MIDI).
    """
    from pathlib import Path

    import torch

    from tasks.training.trainer import read_checkpoint
    from tasks.training.violin_pitch import net_of, network_name

    torch.set_num_threads(max(1, torch.get_num_threads()))
    ckpt = read_checkpoint(checkpoint)
    net = net_of(ckpt, checkpoint)  # refuses a checkpoint of another model in one line
    hparams = ckpt["hyper_parameters"]
    name = network_name(hparams["stage"], hparams.get("frames", 5), hparams.get("distill", True))
    tracks = []
    for v in split_videos(data_root, split):
        track = predict_video(net, data_root, split, v)
        if not len(track["frame_index"]):
            log(f"skipped {v}: fewer than 5 consecutive frames, nothing to score")
            continue
        tracks.append(track)
    if not tracks:
        raise ValueError(f"{data_root}: no {split} video has 5 consecutive frames to score")
    against = {"pseudo-labels": {t["video_id"]: (t["label"], t["est"]) for t in tracks}}
    if has_ground_truth_labels(data_root):
        against["truth"] = against["pseudo-labels"]
        for t in tracks:
            t["truth"] = t["label"]
    elif truth_midi:
        for t in tracks:
            mid = Path(truth_midi) / f"{t['video_id']}.mid"
            if mid.is_file():
                t["truth"] = true_midi(mid, t["time"])
        truth = {t["video_id"]: (t["truth"], t["est"]) for t in tracks if "truth" in t}
        if truth:
            against["truth"] = truth
    scores = {k: {**pooled_scores(d), "ci": bootstrap_intervals(d)} for k, d in against.items()}
    log(f"{name}: " + ", ".join(f"{k} RPA {s['rpa']:.3f}" for k, s in scores.items()))
    return {"network": name, "config": hparams["config"], "checkpoint": str(checkpoint),
            "test_videos": [t["video_id"] for t in tracks], "tracks": tracks, "scores": scores}


def table_rows(results: list[dict], subset: str) -> list[dict]:
    """One row per (scored against, network): ours in % (ACE in semitones), the RPA interval, the thesis's row."""
    rows = []
    order = list(NETWORK_NAMES)
    for against in ("pseudo-labels", "truth"):
        for r in sorted(results, key=lambda r: order.index(r["network"]) if r["network"] in order else 99):
            if against not in r["scores"]:
                continue
            s = r["scores"][against]
            lo, hi = s["ci"]["rpa"]
            thesis = THESIS_TABLE2.get(subset, {}).get(r["network"])
            rows.append({
                "scored against": against, "network": NETWORK_NAMES.get(r["network"], r["network"]),
                "config": r["config"], "videos": s["videos"], "frames": s["frames"],
                "RPA": round(100 * s["rpa"], 2), "RPA tol": round(100 * s["rpa_tol"], 2),
                "PA": round(100 * s["pa"], 2), "ACA": round(100 * s["aca"], 2), "ACE": round(s["ace"], 2),
                "RPA 95% CI": f"{100 * lo:.1f}-{100 * hi:.1f}",
                f"thesis {subset} RPA/RPA tol/PA/ACA/ACE": "/".join(f"{v:g}" for v in thesis) if thesis else "",
            })
    return rows


def figures(results: list[dict], out_dir) -> list[str]:
    """Per test video, a PNG of the true pitch, the pseudo-label and every network's track over time."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    videos = sorted({t["video_id"] for r in results for t in r["tracks"]})
    for v in videos:
        fig, ax = plt.subplots(figsize=(12, 4))
        first = next(t for r in results for t in r["tracks"] if t["video_id"] == v)

        def voiced(y):
            return np.where(np.asarray(y) > 0, y, np.nan)

        if "truth" in first:
            ax.plot(first["time"], voiced(first["truth"]), color="k", lw=3, alpha=0.35, label="true pitch")
        ax.plot(first["time"], voiced(first["label"]), color="tab:orange", lw=1.5, label="pseudo-label")
        colours = ["tab:blue", "tab:green", "tab:red", "tab:purple", "tab:brown"]  # none orange: the pseudo-label's
        for k, r in enumerate(results):
            t = next((t for t in r["tracks"] if t["video_id"] == v), None)
            if t is not None:
                ax.plot(t["time"], t["est"], ".", ms=2.5, color=colours[k % len(colours)],
                        label=NETWORK_NAMES.get(r["network"], r["network"]))
        ax.set_xlabel("time (s)")
        ax.set_ylabel("MIDI")
        ax.set_title(f"{v}: pitch over time")
        ax.legend(loc="upper right", fontsize=8, markerscale=4)
        fig.tight_layout()
        path = out / f"{v}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))
    return paths


def transcribe_violin(video, crop, checkpoint, out_csv, *, crop_reference=(1280, 720), reference=None) -> dict:
    """The pitch a trained visual student sees in ``video`` (the violinist inside ``crop``), per frame, as CSV.

    The frames go through the build's own path (decode by timestamp, crop,
    RGB, 400 x 200: :func:`tasks.datasets.violinyt.build_frames` into a
    temporary shard), so the network sees what it was trained on.  The CSV
    has ``time,midi,hz`` for every frame with a 5-frame window (all but the
    first and last two; the hz is the class's centre frequency).  With
    ``reference`` (the true MIDI), returns the scores against it.
    """
    import csv
    import tempfile
    from pathlib import Path

    from models.violin_pitch import PitchTeacher
    from tasks.datasets.violinyt import build_frames, write_pitch
    from tasks.media import decode as media
    from tasks.training.trainer import CheckpointError
    from tasks.training.violin_pitch import load_net

    net = load_net(checkpoint)
    if isinstance(net, PitchTeacher):
        raise CheckpointError(f"{checkpoint}: the audio teacher; transcribe violin takes a student (frames) checkpoint")
    info = media.probe(str(video))
    with tempfile.TemporaryDirectory() as tmp:
        n = info.frames
        silent = write_pitch({"time": np.arange(n) / info.fps, "midi": np.zeros(n, np.int16),
                              "hz": np.zeros(n, np.float32), "confidence": np.zeros(n, np.float32),
                              "voiced": np.zeros(n, bool)}, Path(tmp) / "none.parquet")
        root = Path(tmp) / "data"
        built = build_frames(str(video), silent, "video", "test", tuple(crop), str(root / "violinyt" / "shards"),
                             "audio/none.wav", crop_reference=tuple(crop_reference))
        if built["frames"] < 5:
            raise ValueError(f"{video}: {built['frames']} frame(s) decoded; the network needs 5 consecutive frames")
        track = predict_video(net, str(root), "test", "video")
    out = Path(out_csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time", "midi", "hz"])
        for t, m in zip(track["time"], track["est"]):
            w.writerow([f"{t:.4f}", int(m), f"{pretty_midi.note_number_to_hz(int(m)):.2f}"])
    result = {"video": str(video), "frames": int(built["frames"]), "predicted_frames": int(len(track["est"])),
              "csv": str(out)}
    if reference:
        truth = true_midi(reference, track["time"])
        result["scores"] = {k: (round(v, 4) if isinstance(v, float) else v)
                            for k, v in pitch_scores(truth, track["est"]).items()}
    return result
