"""Table 2 of thesis ch. 6: note onsets from noisy audio, audio alone against audio and picture together.

Every row is scored the same way as table 1 (:mod:`tasks.evaluation.piano_onsets`):
per-frame onset probabilities of the test videos, smoothed and thresholded
into notes with the pair (threshold, sigma) chosen on the validation videos'
noisy mixtures by note F1, then ``mir_eval`` onsets (50 ms) against the
build's pseudo-labels, which come from the *clean* audio, with a bootstrap
interval of F1 over videos.  The rows:

* Onsets and Frames on the clean audio: how far the audio network is from the
  build's labeler to begin with (0 when the build was labelled by this very
  checkpoint; our sample builds are labelled by transkun);
* Onsets and Frames on the noisy audio (the thesis's "Audio to note onsets");
* the visual model alone (the thesis quotes 66.73 F1 on this data);
* the audio-visual MLP on the noisy audio.

The audio network's probabilities are decoded like the others (threshold and
smoothing chosen on validation), not by its own 0.5 threshold, so every row
gets the same chance.  Mixtures, partners and features: :mod:`tasks.training.av_mlp`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tasks.evaluation.piano_onsets import VideoOutput, _reference, choose_decoding, score

THESIS_TABLE2 = {  # thesis ch. 6, table 2 (P / R / Acc / F1, %), noisy PianoYT test set, SNR = 1
    "noisy": (63.10, 80.12, 58.93, 67.52),
    "mlp": (87.32, 78.20, 71.97, 81.82),
}
ROWS = {  # key: (model, audio the row hears)
    "clean": ("Onsets and Frames (audio alone)", "clean"),
    "noisy": ("Onsets and Frames (audio alone)", "noisy"),
    "visual": ("visual model (picture alone)", "none"),
    "mlp": ("audio-visual MLP", "noisy"),
}


def outputs(features, key: str, task=None) -> list[VideoOutput]:
    """One row's :class:`VideoOutput` per video (``features``: :class:`tasks.training.av_mlp.VideoFeatures`)."""
    import torch

    outs = []
    for f in features:
        if key == "mlp":
            with torch.no_grad():
                probs = torch.sigmoid(task(torch.from_numpy(f.audio), torch.from_numpy(f.visual))).numpy()
        else:
            probs = {"clean": f.clean_probs, "noisy": f.audio_probs, "visual": f.visual_probs}[key]
        outs.append(VideoOutput(f.video_id, f.fps, f.frame_index, np.asarray(probs, np.float32)))
    return [o for o in outs if len(o.frame_index)]


def evaluate_checkpoint(checkpoint, data_root, reference_midi=None, log=print) -> dict:
    """Every row of the table for one ``train av-mlp`` checkpoint: decoding chosen on validation, scored on test."""
    from tasks.datasets.pianoyt import layout
    from tasks.store import storage
    from tasks.training.av_mlp import FeatureExtractor, group_features, load_task

    task = load_task(checkpoint)
    h = task.hparams
    run = Path(checkpoint).resolve().parent.parent
    settings_file = run / "run_settings.json"
    if not settings_file.is_file():
        raise ValueError(f"{settings_file}: not found; the MLP's run names its validation videos there")
    validation = json.loads(settings_file.read_text())["validation_videos"]
    from tasks.training.piano_onsets import shard_videos

    test = shard_videos(data_root, "test")
    if not test:
        raise ValueError(f"{data_root}: no pianoyt shards of the test split")
    extractor = FeatureExtractor(data_root, h.onsets_frames, h.visual, h.snr, run / "features")
    val_f = group_features(extractor, "train", validation, h.mix_seed, log)
    test_f = group_features(extractor, "test", test, h.mix_seed, log)
    labels = layout(data_root).labels
    pseudo = {f.video_id: _reference(storage.local_path(storage.join(labels, f"{f.video_id}.mid")))
              for f in [*val_f, *test_f]}
    truth = {}
    if reference_midi:
        truth = {v: _reference(Path(reference_midi) / f"{v}.mid") for v in test
                 if (Path(reference_midi) / f"{v}.mid").is_file()}
    rows = {}
    for key in ROWS:
        val_out = outputs(val_f, key, task)
        threshold, sigma, curve = choose_decoding(val_out, pseudo)
        test_out = outputs(test_f, key, task)
        rows[key] = {"threshold": threshold, "sigma": sigma,
                     "validation_f1": max(r["f1"] for r in curve),
                     "PianoYT test": score(test_out, pseudo, threshold, sigma)}
        if truth:
            rows[key]["MIDI test set"] = score(test_out, truth, threshold, sigma)
        log(f"{key}: threshold {threshold}, sigma {sigma:g}; test note F1 {rows[key]['PianoYT test']['f1']:.3f}")
    return {"rows": rows, "validation_videos": validation, "test_videos": test, "snr": h.snr,
            "onsets_frames": h.onsets_frames, "visual": h.visual,
            "audio_dim": h.audio_dim, "visual_dim": h.visual_dim}


def table_rows(result: dict) -> list[dict]:
    """The table: one row per (test set, model), ours beside the thesis's, in %."""
    out = []
    for test_set in ("PianoYT test", "MIDI test set"):
        for key, (model, audio) in ROWS.items():
            r = result["rows"][key]
            if test_set not in r:
                continue
            s = r[test_set]
            thesis = THESIS_TABLE2.get(key) if test_set == "PianoYT test" else None
            out.append({"test set": test_set, "model": model, "audio": audio, "videos": s["videos"],
                        "threshold": r["threshold"], "sigma": r["sigma"],
                        "P": round(100 * s["precision"], 2), "R": round(100 * s["recall"], 2),
                        "Acc": round(100 * s["accuracy"], 2), "F1": round(100 * s["f1"], 2),
                        "F1 95% CI": f"{100 * s['f1_low']:.1f}-{100 * s['f1_high']:.1f}",
                        "thesis P/R/Acc/F1": "/".join(f"{v:.2f}" for v in thesis) if thesis else ""})
    return out
