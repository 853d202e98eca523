"""Training and validation of Onsets and Frames: plain functions the flow ``train-onsets-frames`` calls.

:func:`train` trains on the ``train`` split of a MAESTRO-layout folder and
validates on its ``validation`` split.  Under ``out_dir`` it writes::

    train_settings.json   the settings of the latest run
    features/             cached log-mel and label rolls per recording (tasks.datasets.maestro)
    losses.csv            step, elapsed_s, lr, total, onset, offset, frame, velocity (means over log_every steps)
    metrics.csv           step, elapsed_s, validation note P/R/F1 (onsets), F1 with offsets, frame P/R/F1
    last.pt               the latest checkpoint (models.onsets_frames.save_checkpoint), with optimiser state
    best.pt               the checkpoint with the best validation note-onset F1 so far

A run resumes from ``last.pt`` when it exists (unless ``resume=False``):
model, optimiser, LR schedule, AMP scaler, step count, elapsed time and best
F1 come back, and the random training windows continue where they stopped
(the windows of step ``s`` are drawn from ``default_rng([seed, s])``).
``max_minutes`` bounds the wall time of *this* invocation, ``max_steps`` the
total step count.  Training follows Magenta's: Adam at 6e-4, decayed x0.98
every 10k steps, gradient norm clipped at 3, batch 8; AMP (float16 with a
gradient scaler) on CUDA.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator
from pydantic.dataclasses import dataclass

from models import onsets_frames as of
from tasks.labels.transcribe import pick_device


@dataclass
class TrainSettings:
    """One training run; the flow's parameter and the source of ``sightsound train onsets-frames``'s flags."""

    data: str = Field(description="a MAESTRO-layout folder (or its CSV)", json_schema_extra={"input": True})
    out_dir: str = Field(description="folder for checkpoints, logs and cached features",
                         json_schema_extra={"flag": "out"})
    config: Literal["small", "default"] = Field(
        "small", description="model sizes: small (CPU) or default (the paper's)")
    batch_size: int = Field(8, ge=1, description="windows per step")
    window_seconds: float = Field(5.12, gt=0, description="training window length, s (5.12: 160 frames)")
    learning_rate: float = Field(6e-4, gt=0, description="Adam's learning rate")
    lr_decay_steps: int = Field(10000, ge=1, description="steps between learning-rate decays")
    lr_decay_rate: float = Field(0.98, gt=0, le=1, description="learning-rate factor at each decay")
    clip_norm: float = Field(3.0, gt=0, description="gradient-norm clip")
    max_steps: int = Field(50000, ge=0, description="total training steps")
    max_minutes: float | None = Field(None, gt=0, description="wall-time limit of this run, minutes")
    validate_every: int = Field(250, ge=1, description="steps between validations")
    log_every: int = Field(25, ge=1, description="steps between loss log lines")
    device: str = Field("auto", description="cpu, cuda or auto")
    amp: Literal["auto", "on", "off"] = Field("auto", description="float16 mixed precision (auto: on CUDA)")
    seed: int = Field(0, description="random seed")
    resume: bool = Field(True, description="resume from OUT/last.pt when it exists")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's)")
    cache_dir: str | None = Field(None, description="cached features (default: OUT/features)")

    @field_validator("data", "out_dir", "cache_dir")
    @classmethod
    def _absolute(cls, value):
        return None if value is None else str(Path(value).resolve())


LOSS_FIELDS = ["step", "elapsed_s", "lr", "total", "onset", "offset", "frame", "velocity", "activation"]
METRIC_FIELDS = ["step", "elapsed_s", "pieces", "onset_precision", "onset_recall", "onset_f1",
                 "onset_offset_f1", "frame_precision", "frame_recall", "frame_f1"]


def _append_csv(path: Path, fields: list[str], row: dict) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in fields})


def read_csv_rows(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def validate(model, features, references, device: str | None = None) -> dict:
    """Mean per-piece scores of the model's notes against the reference notes (tasks.evaluation.scores)."""
    import torch

    from tasks.evaluation.scores import transcription_scores
    from tasks.labels.transcribe import Note

    was_training = model.training
    rows = []
    for f, ref in zip(features, references):
        probs = of.predict(model, torch.from_numpy(f.mel.astype(np.float32)))
        est = [Note(*n) for n in of.decode_notes(probs["onset"], probs["frame"], probs["velocity"])]
        rows.append(transcription_scores(ref, est))
    model.train(was_training)
    keys = ["onset_precision", "onset_recall", "onset_f1", "onset_offset_f1", "frame_precision", "frame_recall",
            "frame_f1"]
    out = {k: round(float(np.mean([r[k] for r in rows])), 4) if rows else 0.0 for k in keys}
    out["pieces"] = len(rows)
    return out


def check_resume(out_dir: str | os.PathLike, config: str, resume: bool = True) -> Path | None:
    """The ``last.pt`` a run under ``out_dir`` would resume from, checked before any work; None if it starts afresh.

    Raises :class:`models.onsets_frames.CheckpointError` (one line) for a file
    that would fail the resume after the features are computed: not a
    checkpoint, damaged, or trained with another configuration.
    """
    last = Path(out_dir) / "last.pt"
    if not resume or not (last.exists() or last.is_symlink()):
        return None
    found, _ = of.verify_checkpoint(last)
    if found != of.OnsetsFramesConfig.named(config):
        raise of.CheckpointError(f"checkpoint {last}: trained with another configuration than {config!r}; "
                                 f"use another out_dir or do not resume")
    return last


def train(settings: TrainSettings, log=print) -> dict:
    """Train (or resume) until ``max_steps`` or ``max_minutes``; return a summary dict."""
    import torch

    from tasks.datasets.maestro import WindowSampler, prepare, read_maestro, read_performance

    start_wall = time.monotonic()
    s = settings
    resume_from = check_resume(s.out_dir, s.config, s.resume)  # before any work
    if s.threads:
        torch.set_num_threads(int(s.threads))
    out = Path(s.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_settings.json").write_text(json.dumps(asdict(s), indent=1) + "\n")
    device = pick_device(s.device)
    use_amp = device.startswith("cuda") if s.amp == "auto" else s.amp == "on"
    if use_amp and not device.startswith("cuda"):
        raise ValueError("AMP (float16) needs a CUDA device; use amp='off' on the CPU")

    recs = read_maestro(s.data)
    train_recs = [r for r in recs if r.split == "train"]
    val_recs = [r for r in recs if r.split == "validation"]
    if not train_recs:
        raise ValueError(f"{s.data} has no recordings in the train split")
    cache = Path(s.cache_dir) if s.cache_dir else out / "features"
    t0 = time.monotonic()
    train_feats = prepare(train_recs, cache)
    val_feats = prepare(val_recs, cache)
    val_refs = [read_performance(r.midi) for r in val_recs]
    log(f"features: {len(train_feats)} train ({sum(f.frames for f in train_feats)} frames), "
        f"{len(val_feats)} validation, in {time.monotonic() - t0:.1f} s")
    window = of.frames_for_seconds(s.window_seconds)
    sampler = WindowSampler(train_feats, window)

    config = of.OnsetsFramesConfig.named(s.config)
    model = of.OnsetsAndFrames(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=s.learning_rate)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=s.lr_decay_steps, gamma=s.lr_decay_rate)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    step, elapsed_before, best_f1 = 0, 0.0, -1.0
    last = out / "last.pt"
    if resume_from is not None:
        blob = of.read_checkpoint(last)  # checked by check_resume; read whole for the optimiser's state
        model.load_state_dict(blob["state_dict"])
        if blob.get("optimizer"):
            optimizer.load_state_dict(blob["optimizer"])
        if blob.get("scheduler"):
            scheduler.load_state_dict(blob["scheduler"])
        if blob.get("scaler") and use_amp:
            scaler.load_state_dict(blob["scaler"])
        step = int(blob["step"])
        extra = blob.get("extra") or {}
        elapsed_before = float(extra.get("elapsed_s", 0.0))
        best_f1 = float(extra.get("best_onset_f1", -1.0))
        log(f"resumed from {last} at step {step}")
    n_params = of.parameter_count(model)
    log(f"model: config {s.config}, {n_params:,} parameters, device {device}, AMP {use_amp}, window {window} frames")

    def elapsed() -> float:
        return elapsed_before + time.monotonic() - start_wall

    def checkpoint(metrics: dict | None) -> None:
        nonlocal best_f1
        extra = {"elapsed_s": round(elapsed(), 1), "best_onset_f1": best_f1, "settings_config": s.config}
        if metrics is not None:
            extra["validation"] = metrics
            if metrics["onset_f1"] > best_f1:
                best_f1 = metrics["onset_f1"]
                extra["best_onset_f1"] = best_f1
                of.save_checkpoint(out / "best.pt", model, step=step, extra=extra)
        of.save_checkpoint(last, model, step=step, optimizer=optimizer, scheduler=scheduler,
                           scaler=scaler if use_amp else None, extra=extra)

    def run_validation() -> dict | None:
        if not val_feats:
            return None
        m = validate(model, val_feats, val_refs)
        row = {"step": step, "elapsed_s": round(elapsed(), 1), **m}
        _append_csv(out / "metrics.csv", METRIC_FIELDS, row)
        log(f"validation step {step}: onset P {m['onset_precision']:.3f} R {m['onset_recall']:.3f} "
            f"F1 {m['onset_f1']:.3f}; with offsets F1 {m['onset_offset_f1']:.3f}; frame F1 {m['frame_f1']:.3f}")
        return m

    deadline = start_wall + 60.0 * s.max_minutes if s.max_minutes else math.inf
    model.train()
    sums: dict[str, float] = {}
    n_sum, steps_this_run, metrics, last_validated = 0, 0, None, -1
    stop_reason = "max_steps"
    while step < s.max_steps:
        if time.monotonic() >= deadline:
            stop_reason = "max_minutes"
            break
        rng = np.random.default_rng([s.seed, step])
        batch = {k: v.to(device, non_blocking=True) for k, v in sampler.batch(rng, s.batch_size).items()}
        with torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.float16,
                            enabled=use_amp):
            outputs = model(batch["mel"])
        losses = of.onsets_frames_loss(outputs, batch, activation_loss=config.activation_loss)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["total"]).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.clip_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step += 1
        steps_this_run += 1
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        n_sum += 1
        if step % s.log_every == 0:
            row = {"step": step, "elapsed_s": round(elapsed(), 1), "lr": f"{scheduler.get_last_lr()[0]:.3g}",
                   **{k: round(v / n_sum, 5) for k, v in sums.items()}}
            _append_csv(out / "losses.csv", LOSS_FIELDS, row)
            log(f"step {step}: loss {row['total']:.4f} (onset {row['onset']:.4f} offset {row['offset']:.4f} "
                f"frame {row['frame']:.4f} velocity {row['velocity']:.4f}), {row['elapsed_s']:.0f} s")
            sums, n_sum = {}, 0
        if step % s.validate_every == 0:
            metrics = run_validation()
            checkpoint(metrics)
            last_validated = step
    if last_validated != step:
        metrics = run_validation()
        checkpoint(metrics)
    summary = {
        "out_dir": str(out), "steps": step, "steps_this_run": steps_this_run, "stop": stop_reason,
        "elapsed_s": round(elapsed(), 1), "parameters": n_params, "device": device, "amp": use_amp,
        "validation": metrics, "best_onset_f1": best_f1,
        "checkpoint": str(last), "best_checkpoint": str(out / "best.pt") if (out / "best.pt").is_file() else None,
    }
    log(f"stopped ({stop_reason}) at step {step} after {summary['elapsed_s']:.0f} s; best validation onset F1 {best_f1:.3f}")
    return summary
