"""Scoring the visual onset model note by note, as the thesis's table 1, and MIDI from its outputs.

For one video: the model's 88 onset probabilities for every 5-frame window
(:func:`video_probabilities`), smoothed over time by a Gaussian filter,
thresholded; each run
of frames above the threshold of one key is one note, whose onset is the
run's peak frame (the targets mark an onset +-1 frame around the true one,
and smoothing spreads them further, so the first frame over the threshold
would fall before the onset: the peak is the thesis leaving this open and
us choosing the centre) and whose end is the run's last frame.  The
threshold and the filter's sigma are chosen together on the validation videos
by note F1 against their pseudo-labels, never on test: the thesis set its
threshold (0.4) on validation, and its sigma = 5 frames is from its "Producing
MIDI" section (a binary signal per note to render audio), while its table-1
scoring names no smoothing.  Measured on the sample set (slope, small, 30
min), sigma 5 merged neighbouring onsets and gave a validation note F1 of
0.08 where sigma 1 gave 0.43, so sigma is one of :data:`SIGMAS` (5 among
them) and chosen, not fixed.  ``transcribe video`` uses the run's chosen pair
(``RUN/evaluation.json``), else the thesis's 0.4 and 5.

Scores (:func:`score`): ``mir_eval.transcription`` onsets only, 50 ms
tolerance, summed over videos: precision, recall, accuracy (Bay et al.:
TP / (TP + FP + FN)) and F1, with a 95% bootstrap interval of F1 over
videos (resampled with replacement, 1000 draws, fixed seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIGMA_FRAMES = 5.0  # the thesis's "Producing MIDI" filter: the default when no evaluation chose one
SIGMAS = (0.0, 1.0, 2.0, 3.0, SIGMA_FRAMES)  # the filter widths (frames) validation chooses from
# 0.05 to 0.95 in steps of 0.05, then finer towards 1: the class-balanced loss trains the outputs to the odds
# of an onset times about negatives / positives (~100 here), so a key with an even chance of an onset already
# reads ~0.99, and the best threshold often lies above 0.95 (the thesis's 0.4 is for its own balancing).
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 0.96, 0.05)) + (0.97, 0.98, 0.99, 0.995, 0.998, 0.999)


@dataclass
class VideoOutput:
    video_id: str
    fps: float
    frame_index: np.ndarray  # int, the windows' middle frames
    probs: np.ndarray  # float32 [n, 88]


def video_probabilities(module, shards_dir: str, split: str, video_id: str, batch_size: int = 32) -> VideoOutput:
    """The onset probabilities of every window of one video (``module``: a PianoOnsetsTask, in eval mode)."""
    import pyarrow.dataset as ds
    import torch

    from tasks.training.windows import video_windows

    frames, index, probs = [], [], []

    def flush():
        if frames:
            with torch.no_grad():
                probs.append(torch.sigmoid(module(torch.stack(frames))).float().cpu().numpy())
            frames.clear()

    for w in video_windows(shards_dir, split, video_id, size=module.input_size):
        frames.append(w["frames"])
        index.append(w["frame_index"])
        if len(frames) == batch_size:
            flush()
    flush()
    table = ds.dataset(f"{shards_dir}/split={split}", format="parquet").to_table(
        columns=["frame_index", "time"], filter=ds.field("video_id") == video_id)
    fi, t = table.column("frame_index").to_numpy(), table.column("time").to_numpy()
    fps = float(np.median(fi[fi > 0] / t[fi > 0])) if np.any(fi > 0) else 25.0
    return VideoOutput(video_id, fps, np.asarray(index, np.int64),
                       np.concatenate(probs) if probs else np.zeros((0, 88), np.float32))


def notes_from_probabilities(out: VideoOutput, threshold: float, sigma: float = SIGMA_FRAMES):
    """``(intervals [n, 2] s, pitches [n] MIDI)`` of the notes the smoothed, thresholded outputs give."""
    return _notes(out, smoothed(out, sigma), threshold)


def smoothed(out: VideoOutput, sigma: float) -> np.ndarray:
    """The outputs on a grid of consecutive frames from the first window's (0 where a frame has no window),
    filtered over time by a Gaussian of ``sigma`` frames (none for 0): float32 [frames, 88]."""
    from scipy.ndimage import gaussian_filter1d

    if not len(out.frame_index):
        return np.zeros((0, 88), np.float32)
    first = int(out.frame_index.min())
    grid = np.zeros((int(out.frame_index.max()) - first + 1, 88), np.float32)
    grid[out.frame_index - first] = out.probs
    return gaussian_filter1d(grid, sigma, axis=0, mode="constant") if sigma > 0 else grid


def _notes(out: VideoOutput, smooth: np.ndarray, threshold: float):
    """The notes of :func:`notes_from_probabilities` from an already smoothed grid (:func:`smoothed`)."""
    if not len(smooth):
        return np.zeros((0, 2)), np.zeros(0)
    first = int(out.frame_index.min())
    intervals, pitches = [], []
    for key in range(88):
        on = smooth[:, key] >= threshold
        edges = np.flatnonzero(np.diff(np.concatenate([[0], on.astype(np.int8), [0]])))
        for start, stop in zip(edges[::2], edges[1::2]):
            peak = start + int(np.argmax(smooth[start:stop, key]))
            intervals.append(((first + peak) / out.fps, (first + stop) / out.fps))
            pitches.append(21 + key)
    order = np.argsort([i[0] for i in intervals], kind="stable")
    return np.asarray(intervals, np.float64).reshape(-1, 2)[order], np.asarray(pitches, np.float64)[order]


def _reference(midi_path) -> tuple[np.ndarray, np.ndarray]:
    """``(intervals, pitches)`` of a reference MIDI file, read as the Onsets and Frames targets are
    (:func:`tasks.datasets.maestro.read_performance`: a note_seq NoteSequence with the sustain pedal applied)."""
    from tasks.datasets.maestro import read_performance

    notes = read_performance(midi_path)
    intervals = np.array([[n.onset, max(n.offset, n.onset + 1e-3)] for n in notes], np.float64).reshape(-1, 2)
    return intervals, np.array([n.pitch for n in notes], np.float64)


def counts(ref, est, tolerance: float = 0.05) -> tuple[int, int, int]:
    """(TP, FP, FN) of note onsets (mir_eval's matching: 50 ms, pitch within 50 cents)."""
    import mir_eval

    (ri, rp), (ei, ep) = ref, est
    if len(ri) == 0 or len(ei) == 0:
        return 0, len(ei), len(ri)
    matched = mir_eval.transcription.match_notes(ri, mir_eval.util.midi_to_hz(rp), ei, mir_eval.util.midi_to_hz(ep),
                                                 onset_tolerance=tolerance, offset_ratio=None)
    tp = len(matched)
    return tp, len(ei) - tp, len(ri) - tp


def prf(tp: int, fp: int, fn: int) -> dict:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "accuracy": tp / (tp + fp + fn) if tp + fp + fn else 0.0,
            "f1": 2 * p * r / (p + r) if p + r else 0.0}


def choose_decoding(outputs: list[VideoOutput], references: dict, thresholds=THRESHOLDS, sigmas=SIGMAS
                    ) -> tuple[float, float, list]:
    """``(threshold, sigma, curve)``: the pair with the best summed note F1 on ``outputs`` (validation videos).

    Ties go to the threshold nearest the thesis's 0.4, then to the wider filter.
    """
    curve = []
    for sigma in sigmas:
        grids = [(o, smoothed(o, sigma)) for o in outputs]  # filtered once per sigma, not once per threshold
        for t in thresholds:
            total = np.sum([counts(references[o.video_id], _notes(o, g, t)) for o, g in grids], axis=0)
            curve.append({"sigma": sigma, "threshold": t, **prf(*map(int, total))})
    best = max(curve, key=lambda row: (row["f1"], -abs(row["threshold"] - 0.4), row["sigma"]))
    return float(best["threshold"]), float(best["sigma"]), curve


def score(outputs: list[VideoOutput], references: dict, threshold: float, sigma: float = SIGMA_FRAMES,
          draws: int = 1000, seed: int = 0) -> dict:
    """Summed P/R/Acc/F1 over the videos that have a reference, and the 95% bootstrap interval of F1."""
    per = {o.video_id: counts(references[o.video_id], notes_from_probabilities(o, threshold, sigma))
           for o in outputs if o.video_id in references}
    if not per:
        raise ValueError("no evaluated video has a reference MIDI")
    rows = np.array(list(per.values()), np.int64)
    result = {**prf(*map(int, rows.sum(axis=0))), "videos": len(per)}
    rng = np.random.default_rng(seed)
    f1s = [prf(*map(int, rows[rng.integers(0, len(rows), len(rows))].sum(axis=0)))["f1"] for _ in range(draws)]
    result["f1_low"], result["f1_high"] = (float(v) for v in np.percentile(f1s, [2.5, 97.5]))
    result["per_video"] = {v: prf(*map(int, c))["f1"] for v, c in per.items()}
    return result


def write_midi(notes, path) -> str:
    """Notes ``(intervals, pitches)`` (of :func:`notes_from_probabilities`) as a MIDI file (velocity 80)."""
    from tasks.labels.transcribe import Note, write_midi as write

    intervals, pitches = notes
    return write([Note(float(a), float(b), int(p), 80) for (a, b), p in zip(intervals, pitches)], path)


# ---------------------------------------------------------------- a whole evaluation of one checkpoint

THESIS_TABLE1 = {  # thesis ch. 6, table 1 (P / R / Acc / F1, %)
    ("resnet", "PianoYT test"): (61.40, 67.59, 50.29, 63.72),
    ("aggregation", "PianoYT test"): (63.86, 67.87, 52.20, 65.26),
    ("slope", "PianoYT test"): (62.23, 73.00, 53.33, 66.63),
    ("resnet", "MIDI test set"): (65.26, 42.82, 36.86, 49.94),
    ("aggregation", "MIDI test set"): (72.83, 52.44, 44.97, 59.57),
    ("slope", "MIDI test set"): (74.76, 73.08, 59.59, 72.91),
}
VARIANT_NAMES = {"resnet": "ResNet", "aggregation": "ResNet + aggregation", "slope": "ResNet + aggregation + slope"}


def load_module(checkpoint):
    """A PianoOnsetsTask from a checkpoint of the trainer (read with weights_only=True), in eval mode."""
    from tasks.training.piano_onsets import PianoOnsetsTask
    from tasks.training.trainer import CheckpointError, read_checkpoint

    ckpt = read_checkpoint(checkpoint)
    hp = {k: ckpt["hyper_parameters"][k] for k in ("variant", "config") if k in ckpt["hyper_parameters"]}
    try:
        module = PianoOnsetsTask(**hp)
        module.load_state_dict(ckpt["state_dict"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{checkpoint}: not a piano-onsets checkpoint ({str(exc).splitlines()[0][:160]})") \
            from None
    return module.eval()


def evaluate_checkpoint(checkpoint, data_root, reference_midi=None, validation=None, log=print) -> dict:
    """Threshold on the validation videos, then scores of the test split vs pseudo-labels and true MIDI.

    ``validation``: the held-out train videos (default: those the run recorded
    in ``run_settings.json`` beside its ``checkpoints/`` folder).
    """
    import json
    from pathlib import Path

    import torch

    from tasks.store import storage
    from tasks.training.piano_onsets import shard_videos

    torch.set_num_threads(max(1, torch.get_num_threads()))
    module = load_module(checkpoint)
    from tasks.datasets.pianoyt import layout

    shards, labels = layout(data_root).shards, layout(data_root).labels
    if validation is None:
        settings_file = Path(checkpoint).resolve().parent.parent / "run_settings.json"
        if not settings_file.is_file():
            raise ValueError(f"{settings_file}: not found; say which videos were validation")
        validation = json.loads(settings_file.read_text())["validation_videos"]
    pseudo = lambda v: _reference(storage.local_path(storage.join(labels, f"{v}.mid")))  # noqa: E731
    skipped = {}

    def scorable(outs):  # a video without one 5-frame window has no outputs to score: recorded, not scored
        for o in outs:
            if not len(o.frame_index):
                skipped[o.video_id] = "fewer than 5 consecutive frames"
                log(f"skipped {o.video_id}: fewer than 5 consecutive frames, no window to score")
        return [o for o in outs if len(o.frame_index)]

    val_out = scorable([video_probabilities(module, shards, "train", v) for v in validation])
    if not val_out:
        raise ValueError(f"{data_root}: no validation video has 5 consecutive frames; no threshold can be chosen")
    threshold, sigma, curve = choose_decoding(val_out, {o.video_id: pseudo(o.video_id) for o in val_out})
    log(f"threshold {threshold}, sigma {sigma:g} frames (validation note F1 {max(r['f1'] for r in curve):.3f})")
    test = shard_videos(data_root, "test")
    outs = scorable([video_probabilities(module, shards, "test", v) for v in test])
    if not outs:
        raise ValueError(f"{data_root}: no test video has 5 consecutive frames to score")
    test = [o.video_id for o in outs]
    result = {"variant": module.hparams.variant, "config": module.hparams.config, "threshold": threshold,
              "sigma": sigma, "validation_curve": curve, "test_videos": test, "skipped": skipped,
              "PianoYT test": score(outs, {v: pseudo(v) for v in test}, threshold, sigma)}
    if reference_midi:
        refs = {v: _reference(Path(reference_midi) / f"{v}.mid") for v in test
                if (Path(reference_midi) / f"{v}.mid").is_file()}
        if refs:
            result["MIDI test set"] = score(outs, refs, threshold, sigma)
    run = Path(checkpoint).resolve().parent.parent
    if (run / "checkpoints").is_dir():  # the threshold transcribe video uses for this run
        (run / "evaluation.json").write_text(json.dumps(
            {"checkpoint": str(checkpoint), "threshold": threshold, "sigma": sigma, "validation_curve": curve},
            indent=1) + "\n")
    return result


def table_rows(results: list[dict]) -> list[dict]:
    """One row per (test set, variant): ours beside the thesis's, in %."""
    rows = []
    for test_set in ("PianoYT test", "MIDI test set"):
        for r in results:
            if test_set not in r:
                continue
            s = r[test_set]
            thesis = THESIS_TABLE1.get((r["variant"], test_set))
            rows.append({
                "test set": test_set, "model": VARIANT_NAMES[r["variant"]], "config": r["config"],
                "videos": s["videos"], "threshold": r["threshold"], "sigma": r["sigma"],
                "P": round(100 * s["precision"], 2), "R": round(100 * s["recall"], 2),
                "Acc": round(100 * s["accuracy"], 2), "F1": round(100 * s["f1"], 2),
                "F1 95% CI": f"{100 * s['f1_low']:.1f}-{100 * s['f1_high']:.1f}",
                "thesis P/R/Acc/F1": "/".join(f"{v:.2f}" for v in thesis) if thesis else "",
            })
    return rows


# ---------------------------------------------------------------- MIDI (audio, figure) from any video

DEFAULT_THRESHOLD = 0.4  # the thesis's, used when the run has no evaluation that chose one


def run_decoding(checkpoint) -> tuple[float, float] | None:
    """``(threshold, sigma)`` that ``evaluate piano-onsets`` chose for this run (``<run>/evaluation.json``), if any."""
    import json
    from pathlib import Path

    path = Path(checkpoint).resolve().parent.parent / "evaluation.json"
    if not path.is_file():
        return None
    chosen = json.loads(path.read_text())
    return float(chosen["threshold"]), float(chosen.get("sigma", SIGMA_FRAMES))


def transcribe_video(video, crop, checkpoint, out_mid, *, threshold: float | None = None, sigma: float | None = None,
                     crop_reference=(1280, 720), audio=None, figure=None, reference=None, soundfont=None) -> dict:
    """MIDI of the piano notes a trained model sees in ``video`` (the keyboard inside ``crop``).

    The frames go through the build's own path (decode by timestamp, crop,
    grayscale, 145 x 800: :func:`tasks.datasets.pianoyt.build_frames` into a
    temporary shard), so the model sees what it was trained on.  With
    ``reference`` (true MIDI), returns the note-onset scores against it.
    """
    import tempfile
    from pathlib import Path

    from tasks.datasets.pianoyt import build_frames
    from tasks.labels.transcribe import write_midi as write

    module = load_module(checkpoint)
    chosen = run_decoding(checkpoint) or (DEFAULT_THRESHOLD, SIGMA_FRAMES)
    threshold = threshold if threshold is not None else chosen[0]
    sigma = sigma if sigma is not None else chosen[1]
    with tempfile.TemporaryDirectory() as tmp:
        empty = write([], Path(tmp) / "none.mid")
        shards = Path(tmp) / "shards"
        built = build_frames(str(video), empty, "video", "test", tuple(crop), str(shards),
                             crop_reference=tuple(crop_reference))
        if built["frames"] < 5:
            raise ValueError(f"{video}: {built['frames']} frame(s) decoded; the model needs 5 consecutive frames")
        out = video_probabilities(module, str(shards), "test", "video")
    est = notes_from_probabilities(out, threshold, sigma)
    write_midi(est, out_mid)
    result = {"video": str(video), "frames": int(built["frames"]), "notes": int(len(est[1])), "threshold": threshold,
              "sigma": sigma, "midi": str(out_mid)}
    if reference:
        result["note_onset"] = prf(*counts(_reference(reference), est))
    if audio:
        result["audio"] = _render(out_mid, audio, soundfont)
    if figure:
        result["figure"] = _figure(est, _reference(reference) if reference else None, out_mid, reference, figure,
                                   soundfont)
    return result


def piano_roll_figures(samples_dir, checkpoints: dict, out_dir, log=print) -> list[str]:
    """Per checkpoint, its piano roll over the truth on the sample set's first test video, with the audio.

    ``checkpoints`` maps a name to a checkpoint.  For each, the first test
    video of ``samples_dir/manifest.csv`` is transcribed as a user would
    (:func:`transcribe_video`, the threshold its evaluation chose on
    validation) and ``out_dir`` gets ``piano-roll-<name>.png`` (the
    predicted notes over the true ones, both rendered and shown as
    spectrograms) and ``piano-roll-<name>.wav`` (the prediction rendered with
    pretty_midi's SoundFont).  Returns the paths, figures and audio.
    """
    from pathlib import Path

    from tasks.datasets.manifest import read_pianoyt

    rows = [r for r in read_pianoyt(Path(samples_dir) / "manifest.csv") if r.split == "test"]
    if not rows:
        return []
    row, out = rows[0], Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for name, ckpt in checkpoints.items():
        result = transcribe_video(row.source, row.crop, ckpt, out / f"piano-roll-{name}.mid",
                                  reference=Path(samples_dir) / "midi" / f"{row.video_id}.mid",
                                  figure=out / f"piano-roll-{name}.png", audio=out / f"piano-roll-{name}.wav")
        made += [result["figure"], result["audio"]]
        log(f"piano roll: {name} on {row.video_id}, note-onset F1 {result['note_onset']['f1']:.3f}")
    return made


def _render(midi_path, wav_path, soundfont=None, sr: int = 22050) -> str:
    import pretty_midi

    from tasks.samples.render import default_soundfont, render_midi, write_wav

    y = render_midi(pretty_midi.PrettyMIDI(str(midi_path)), soundfont or default_soundfont(), sr)
    return str(write_wav(wav_path, y, sr))


def _figure(est, ref, est_mid, ref_mid, path, soundfont=None) -> str:
    """The piano roll of the prediction over the reference, and both spectrograms (the thesis's figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pretty_midi
    from scipy.signal import spectrogram

    from tasks.samples.render import default_soundfont, render_midi

    rows = 3 if ref_mid else 2
    fig, axes = plt.subplots(rows, 1, figsize=(12, 3 * rows), sharex=True)
    ax = axes[0]
    if ref is not None:
        for (a, b), p in zip(*ref):
            ax.plot([a, b], [p, p], color="0.7", lw=5, solid_capstyle="butt")
    for (a, b), p in zip(*est):
        ax.plot([a, b], [p, p], color="tab:red", lw=2, solid_capstyle="butt")
    ax.set_ylabel("MIDI pitch")
    ax.set_title("predicted notes (red) over the reference (grey)" if ref is not None else "predicted notes")
    for ax, (name, midi) in zip(axes[1:], [("predicted", est_mid), ("reference", ref_mid)][: rows - 1]):
        sr = 16000
        y = render_midi(pretty_midi.PrettyMIDI(str(midi)), soundfont or default_soundfont(), sr)
        f, t, s = spectrogram(y, fs=sr, nperseg=1024, noverlap=768)
        ax.pcolormesh(t, f, 10 * np.log10(s + 1e-10), shading="auto", cmap="magma")
        ax.set_ylim(0, 4000)
        ax.set_ylabel(f"{name} Hz")
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)
