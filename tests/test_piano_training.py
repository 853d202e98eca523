"""The shared trainer on the visual onset model: a few steps on synthetic shards, resume, refusals, DDP."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from tasks.datasets.pianoyt import SCHEMA
from tasks.labels.transcribe import Note, write_midi
from tasks.store.shards import VideoShardWriter
from tasks.training.piano_onsets import PianoOnsetsSettings, PianoOnsetsTask, train, validation_videos
from tasks.training.trainer import CheckpointError, TrainerSettings, read_checkpoint

H, W = 48, 264  # the small config's input: no resize needed


def _frame(i: int, onset_keys) -> bytes:
    img = np.full((H, W), 40, np.uint8)
    for k in onset_keys:  # a bright bar over the key that starts: something to learn from
        x = int(k / 88 * W)
        img[H // 2:, x:x + 3] = 230
    img[0, 0] = i % 256
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def make_piano_shards(data_root: Path, videos: dict[str, tuple[str, int]], seed: int = 0) -> Path:
    """Shards in build-pianoyt's layout: ``videos`` maps id -> (split, frames); 32-frame row groups."""
    rng = np.random.default_rng(seed)
    shards = data_root / "pianoyt" / "shards"
    for vid, (split, n) in videos.items():
        onset = np.zeros((n, 88), np.uint8)
        for i in range(0, n, 6):
            onset[i, rng.integers(20, 70, size=2)] = 1
        with VideoShardWriter(shards, vid, split, SCHEMA) as writer:
            for a in range(0, n, 32):
                idx = list(range(a, min(n, a + 32)))
                fixed = lambda m: pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1), pa.uint8()), 88)  # noqa
                writer.write(pa.record_batch([
                    pa.array([vid] * len(idx), pa.string()), pa.array(idx, pa.int32()),
                    pa.array(np.asarray(idx) / 25.0, pa.float64()),
                    pa.array([_frame(i, np.flatnonzero(onset[i])) for i in idx], pa.binary()),
                    fixed(onset[idx]), fixed(onset[idx])], schema=SCHEMA))
            writer.commit()
        labels = data_root / "pianoyt" / "labels"
        labels.mkdir(parents=True, exist_ok=True)
        write_midi([Note(i / 25.0, i / 25.0 + 0.2, 21 + int(k), 80) for i, k in zip(*np.nonzero(onset))],
                   labels / f"{vid}.mid")  # the pseudo-labels a build writes beside its shards
    return shards


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("piano-shards")
    make_piano_shards(root, {"v1": ("train", 40), "v2": ("train", 40), "v3": ("train", 40), "v4": ("test", 30)})
    return root


def _settings(root, run, **trainer) -> PianoOnsetsSettings:
    t = dict(run_dir=str(run), max_steps=4, val_every=2, log_every=1, batch_size=4, num_workers=0,
             progress_bar=False, accelerator="cpu")
    t.update(trainer)
    return PianoOnsetsSettings(data_root=str(root), trainer=TrainerSettings(**t), variant="slope", config="small",
                               buffer_size=16)


def test_validation_videos_are_a_fixed_share_of_the_train_videos():
    ids = [f"v{i}" for i in range(16)]
    held = validation_videos(ids, 0.125)
    assert len(held) == 2 and held == validation_videos(list(reversed(ids)), 0.125)
    with pytest.raises(ValueError, match="needs at least 2"):
        validation_videos(["only"], 0.125)


def test_train_writes_checkpoints_curves_and_resumes(data_root, tmp_path):
    torch.set_num_threads(1)
    run = tmp_path / "run"
    first = train(_settings(data_root, run))
    assert first["steps"] == 4 and first["resumed_from"] is None and first["stopped_by"] == "max steps"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "checkpoints" / "best.ckpt").is_file()
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    val = [r for r in rows if r.get("val_f1")]
    assert [int(r["step"]) for r in val] == [1, 3], "a validation every 2 steps (logged at steps 2 and 4)"
    assert 0 < float(val[0]["wall_s"]) < float(val[1]["wall_s"])  # the curve by wall time too
    assert any(r.get("train_loss") for r in rows) and list(run.glob("events.out.tfevents.*"))
    assert json.loads((run / "summary.json").read_text())["steps"] == 4
    ckpt = read_checkpoint(run / "checkpoints" / "last.ckpt", {"variant": "slope"})
    assert ckpt["global_step"] == 4
    # Resumed with a larger budget: the step count goes on from 4.
    again = train(_settings(data_root, run, max_steps=6))
    assert again["resumed_from"].endswith("last.ckpt") and again["steps"] == 6
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 6


class LastStepAtBatch(__import__("lightning.pytorch", fromlist=["Callback"]).Callback):
    """Records the global step stored in last.ckpt when each training batch starts (what a kill would leave)."""

    def __init__(self, path: Path):
        self.path, self.seen = path, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.path.is_file():
            self.seen[trainer.global_step] = torch.load(self.path, weights_only=True)["global_step"]


def test_last_checkpoint_is_written_at_every_validation_not_only_at_a_new_best(data_root, tmp_path, monkeypatch):
    # Validation F1 that never improves after the first validation: Lightning's save_last=True would leave
    # last.ckpt at step 2 and a run killed at step 5 would resume from step 2.
    monkeypatch.setattr(PianoOnsetsTask, "on_validation_epoch_end",
                        lambda self: (self.log("val_f1", 0.5), self.val_curve.reset()))
    run = tmp_path / "run"
    seen = LastStepAtBatch(run / "checkpoints" / "last.ckpt")
    train(_settings(data_root, run, max_steps=6), callbacks=[seen])
    assert seen.seen[3] == 2 and seen.seen[5] == 4, seen.seen  # after the validations at steps 2 and 4
    assert read_checkpoint(run / "checkpoints" / "best.ckpt")["global_step"] == 2  # the best stays the first


def test_a_foreign_or_broken_last_checkpoint_is_refused_in_one_line(data_root, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"last\.ckpt: not a checkpoint this trainer wrote"):
        train(_settings(data_root, run))
    module = PianoOnsetsTask(variant="resnet", config="small")
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, last)
    with pytest.raises(CheckpointError, match="a checkpoint of variant 'resnet', not 'slope'") as info:
        train(_settings(data_root, run))
    assert "\n" not in str(info.value)


def test_a_data_root_without_shards_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no shards for split 'train'"):
        train(_settings(tmp_path / "empty", tmp_path / "run"))


def test_notes_come_from_the_peaks_of_the_smoothed_outputs():
    from tasks.evaluation.piano_onsets import VideoOutput, counts, notes_from_probabilities, prf

    probs = np.zeros((100, 88), np.float32)
    probs[38:43, 40] = 1.0  # onset targets are +-1 frame wide; the model's output a little wider
    probs[70, 10] = 0.3  # a lone weak blip: under the threshold once smoothed
    out = VideoOutput("v", 25.0, np.arange(100), probs)
    intervals, pitches = notes_from_probabilities(out, threshold=0.2)
    assert pitches.tolist() == [61.0] and intervals[0, 0] == pytest.approx(40 / 25.0)
    ref = (np.array([[40 / 25.0 + 0.03, 2.0]]), np.array([61.0]))
    assert counts(ref, (intervals, pitches)) == (1, 0, 0)  # within 50 ms
    late = (np.array([[40 / 25.0 + 0.06, 2.0]]), np.array([61.0]))
    assert counts(late, (intervals, pitches)) == (0, 1, 1)  # 60 ms off: a miss and a false alarm
    assert prf(3, 1, 2) == pytest.approx({"precision": 0.75, "recall": 0.6, "accuracy": 0.5, "f1": 2 / 3})


def test_evaluate_a_checkpoint_chooses_the_threshold_on_validation(data_root, tmp_path):
    from tasks.evaluation.piano_onsets import evaluate_checkpoint, table_rows
    from tasks.evaluation.results import write_results

    run = tmp_path / "run"
    train(_settings(data_root, run, max_steps=2))
    result = evaluate_checkpoint(run / "checkpoints" / "last.ckpt", data_root,
                                 reference_midi=data_root / "pianoyt" / "labels")
    assert result["test_videos"] == ["v4"] and result["threshold"] in [r["threshold"] for r in
                                                                      result["validation_curve"]]
    pseudo = result["PianoYT test"]
    assert pseudo["videos"] == 1 and 0 <= pseudo["f1_low"] <= pseudo["f1"] <= pseudo["f1_high"] <= 1
    assert result["MIDI test set"]["f1"] == pseudo["f1"]  # the same MIDI given as the reference
    rows = table_rows([result])
    assert [r["test set"] for r in rows] == ["PianoYT test", "MIDI test set"]
    assert rows[0]["thesis P/R/Acc/F1"] == "62.23/73.00/53.33/66.63"
    md, parquet = write_results(tmp_path / "RESULTS", "piano-onsets", "t", rows, {"git_commit": "x"})
    assert "62.23/73.00/53.33/66.63" in Path(md).read_text() and "## Provenance" in Path(md).read_text()
    import pyarrow.parquet as pq

    assert b"provenance" in pq.read_schema(parquet).metadata


def test_evaluate_refuses_a_foreign_checkpoint_in_one_line(data_root, tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "x.ckpt"
    bad.write_bytes(b"\x00" * 100)
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "evaluate", "piano-onsets", "--data-root",
                           str(data_root), "--checkpoint", str(bad)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not a checkpoint" in proc.stderr, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "train", "piano-onsets", "--data-root",
                           str(tmp_path / "nothing"), "--out", str(tmp_path / "r")], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2 and "no shards for split 'train'" in proc.stderr and "Traceback" not in proc.stderr


def test_transcribe_video_writes_midi_audio_and_figure(data_root, tmp_path):
    from tasks.datasets.manifest import read_pianoyt
    from tasks.evaluation.piano_onsets import transcribe_video
    from tasks.samples.piano import make_piano_samples

    run = tmp_path / "run"
    train(_settings(data_root, run, max_steps=1, val_every=1))
    row = read_pianoyt(make_piano_samples(tmp_path / "s", videos=1, seconds=4.0, seed=3))[0]
    truth = tmp_path / "s" / "midi" / f"{row.video_id}.mid"
    out = transcribe_video(row.source, row.crop, run / "checkpoints" / "last.ckpt", tmp_path / "o.mid",
                           audio=tmp_path / "o.wav", figure=tmp_path / "o.png", reference=truth)
    assert out["frames"] == 100 and out["threshold"] == 0.4  # 4 s at 25 fps; no evaluation chose one yet
    assert set(out["note_onset"]) == {"precision", "recall", "accuracy", "f1"}
    for name in ("o.mid", "o.wav", "o.png"):
        assert (tmp_path / name).stat().st_size > 0


class SeenWindows(__import__("lightning.pytorch", fromlist=["Callback"]).Callback):
    """Records, per rank, the (video, frame) windows each training batch held (for the DDP test)."""

    def __init__(self, folder: str):
        self.folder = folder

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        with open(Path(self.folder) / f"rank{trainer.global_rank}.txt", "a") as fh:
            for v, f in zip(batch["video_id"], batch["frame_index"].tolist()):
                fh.write(f"{v} {f}\n")


def test_two_process_ddp_on_cpu_reads_different_row_groups(data_root, tmp_path):
    run, seen = tmp_path / "run", tmp_path / "seen"
    seen.mkdir()
    out = train(_settings(data_root, run, devices=2, max_steps=3, val_every=3, batch_size=2),
                callbacks=[SeenWindows(str(seen))])
    assert out["devices"] == 2 and (run / "checkpoints" / "last.ckpt").is_file()
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 3
    by_rank = [set(open(seen / f"rank{r}.txt").read().split("\n")) - {""} for r in (0, 1)]
    assert by_rank[0] and by_rank[1] and not by_rank[0] & by_rank[1], "each rank its own row groups"
    rows_per_group = 32
    groups = [{(line.split()[0], int(line.split()[1]) // rows_per_group) for line in s} for s in by_rank]
    assert not groups[0] & groups[1]


def test_a_gpu_run_refuses_to_start_without_the_gpu_concurrency_limit(data_root, tmp_path, monkeypatch):
    import flows.train_piano_onsets as flow_module

    calls = []
    monkeypatch.setattr(flow_module, "_uses_gpu", lambda settings: True)
    monkeypatch.setattr(flow_module, "train", lambda settings, log: calls.append(1) or {"metrics_csv": "none"})
    settings = _settings(data_root, tmp_path / "run")
    with pytest.raises(Exception, match="gpu-test-limit"):
        flow_module.train_piano_onsets(settings, gpu_limit="gpu-test-limit")  # strict by default
    assert calls == []
    flow_module.train_piano_onsets(settings, gpu_limit="gpu-test-limit", strict_gpu_limit=False)
    assert calls == [1]


def test_a_video_shorter_than_five_frames_is_recorded_not_scored_and_refused_by_transcribe(data_root, tmp_path):
    import shutil
    import subprocess
    import sys

    from tasks.evaluation.piano_onsets import evaluate_checkpoint
    from tasks.samples.encode import encode_video

    root = tmp_path / "root"
    shutil.copytree(data_root, root)
    make_piano_shards(root, {"short": ("test", 3)})  # 3 frames: not one 5-frame window
    run = tmp_path / "run"
    train(_settings(root, run, max_steps=1, val_every=1))
    lines = []
    result = evaluate_checkpoint(run / "checkpoints" / "last.ckpt", root, log=lines.append)
    assert result["test_videos"] == ["v4"] and result["PianoYT test"]["videos"] == 1
    assert result["skipped"] == {"short": "fewer than 5 consecutive frames"}
    assert any(line.startswith("skipped short:") for line in lines)

    frames = [np.full((720, 1280, 3), 90, np.uint8) for _ in range(3)]
    video = tmp_path / "short.mp4"
    encode_video(iter(frames), None, 44100, 25.0, video, 1280, 720)
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "transcribe", "video", str(video), "--crop",
                           "400,560,51,1229", "--checkpoint", str(run / "checkpoints" / "last.ckpt"),
                           "--out", str(tmp_path / "o.mid")], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "3 frame(s) decoded; the model needs 5 consecutive frames" in proc.stderr


def test_references_are_read_with_the_sustain_pedal_applied(tmp_path):
    import pretty_midi

    from tasks.evaluation.piano_onsets import _reference

    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    piano.notes += [pretty_midi.Note(80, 60, 0.5, 0.7), pretty_midi.Note(80, 64, 1.0, 1.2)]
    piano.control_changes += [pretty_midi.ControlChange(64, 100, 0.6), pretty_midi.ControlChange(64, 0, 1.5)]
    pm.instruments.append(piano)
    pm.write(str(tmp_path / "pedal.mid"))
    intervals, pitches = _reference(tmp_path / "pedal.mid")
    assert pitches.tolist() == [60, 64]
    assert intervals[:, 0] == pytest.approx([0.5, 1.0], abs=1e-3)
    assert intervals[:, 1] == pytest.approx([1.5, 1.5], abs=1e-3)  # both held by the pedal until it lifts
