"""Violin pitch (thesis ch. 5) on the shared trainer: teacher then students, distillation, table 2, refusals."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile
import torch
from PIL import Image

from tasks.datasets.violinyt import AUDIO_RATE, SCHEMA
from tasks.store.shards import VideoShardWriter
from tasks.training.trainer import CheckpointError, TrainerSettings, read_checkpoint
from tasks.training.violin_pitch import ViolinPitchSettings, check_shards, load_net, stage_settings, train

REPO = Path(__file__).resolve().parents[1]
FPS = 25
H, W = 400, 200  # what build-violinyt stores


def _frame(midi: int) -> bytes:
    img = np.full((H, W, 3), 60, np.uint8)
    if midi:  # a bright bar whose height codes the pitch: something to learn from
        y = int((midi - 55) / 34 * (H - 12))
        img[y:y + 12, 40:160] = (230, 200, 90)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_violin_shards(data_root: Path, videos: dict[str, tuple[str, int]], seed: int = 0) -> dict:
    """Shards in build-violinyt's layout; ``videos``: id -> (manifest split 'train' or 'test', frames).

    A train video's first 80% of frames go to ``train``, the rest to ``val``.
    The audio is a sine at each frame's pitch; every 7th frame is unvoiced.
    Returns {video: midi per frame} (the truth the labels equal here).
    """
    rng = np.random.default_rng(seed)
    root = data_root / "violinyt"
    (root / "audio").mkdir(parents=True, exist_ok=True)
    truth = {}
    for vid, (split, n) in videos.items():
        midi = np.repeat(rng.integers(55, 89, size=n // 5 + 1), 5)[:n]
        midi[::7] = 0
        truth[vid] = midi
        hz = np.where(midi > 0, 440.0 * 2 ** ((midi - 69) / 12), 0.0)
        per = AUDIO_RATE // FPS
        t = np.arange(n * per) / AUDIO_RATE
        audio = (0.3 * np.sin(2 * np.pi * np.repeat(hz, per) * t)).astype(np.float32)
        soundfile.write(root / "audio" / f"{vid}.wav", audio, AUDIO_RATE)
        idx = np.arange(n)
        splits = np.where(idx < int(0.8 * n), "train", "val") if split == "train" else np.full(n, "test")
        with VideoShardWriter(root / "shards", vid, split, SCHEMA) as writer:
            for s in ("train", "val", "test"):
                rows = idx[splits == s]
                for a in range(0, len(rows), 16):
                    r = rows[a:a + 16]
                    writer.write(pa.record_batch([
                        pa.array([vid] * len(r), pa.string()), pa.array(r, pa.int32()),
                        pa.array(r / FPS, pa.float64()), pa.array([_frame(int(midi[i])) for i in r], pa.binary()),
                        pa.array(midi[r], pa.int16()), pa.array(hz[r], pa.float32()),
                        pa.array(np.ones(len(r)), pa.float32()), pa.array(midi[r] > 0, pa.bool_()),
                        pa.array([f"audio/{vid}.wav"] * len(r), pa.string()),
                        pa.array(r * per, pa.int64())], schema=SCHEMA), split=s)
            writer.commit()
    return truth


@pytest.fixture(scope="module")
def violin_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("violin-shards")
    truth = make_violin_shards(root, {"v1": ("train", 40), "v2": ("train", 40), "v3": ("test", 30)})
    return root, truth


def _trainer(run, **kw) -> TrainerSettings:
    t = dict(run_dir=str(run), max_steps=2, val_every=2, log_every=1, batch_size=4, num_workers=0,
             progress_bar=False, accelerator="cpu")
    t.update(kw)
    return TrainerSettings(**t)


def test_stage_all_is_the_teacher_then_three_students_with_the_thesis_batches(tmp_path):
    runs = stage_settings(ViolinPitchSettings(data_root="D", trainer=_trainer(tmp_path)))
    assert [(r.stage, r.frames, r.distill, r.trainer.batch_size, Path(r.trainer.run_dir).name) for r in runs] == [
        ("teacher", 5, True, 64, "teacher"), ("student", 5, True, 24, "student-5"),
        ("student", 1, True, 64, "student-1"), ("student", 5, False, 24, "student-5-nodistill")]
    assert {r.teacher for r in runs[1:]} == {str(tmp_path / "teacher" / "checkpoints" / "best.ckpt")}
    own = stage_settings(ViolinPitchSettings(data_root="D", trainer=_trainer(tmp_path, batch_size=3),
                                             thesis_batches=False, stage="student", frames=1, teacher="t.ckpt"))
    assert [(r.trainer.batch_size, r.trainer.run_dir) for r in own] == [(3, str(tmp_path))]
    with pytest.raises(ValueError, match="frames must be 1 or 5"):
        ViolinPitchSettings(data_root="D", trainer=_trainer(tmp_path), frames=3)


def test_teacher_then_distilled_student_train_log_weights_and_resume(violin_root, tmp_path):
    torch.set_num_threads(1)
    root, _ = violin_root
    teacher = train(ViolinPitchSettings(data_root=str(root), stage="teacher", trainer=_trainer(tmp_path / "t"),
                                        thesis_batches=False))
    assert teacher["steps"] == 2 and Path(teacher["best_checkpoint"]).is_file()
    student_run = tmp_path / "s"
    settings = ViolinPitchSettings(data_root=str(root), stage="student", frames=5, teacher=teacher["best_checkpoint"],
                                   trainer=_trainer(student_run), thesis_batches=False)
    first = train(settings)
    rows = list(csv.DictReader(open(student_run / "metrics.csv")))
    logged = [r for r in rows if r.get("train_w_fc6")]
    assert logged, "the distillation weights are logged"
    for r in logged:  # each weighted L1 term equals the CE: the three together are 3 x CE
        assert float(r["train_distill"]) == pytest.approx(3 * float(r["train_ce"]), rel=1e-4)
        assert float(r["train_loss"]) == pytest.approx(4 * float(r["train_ce"]), rel=1e-4)
    assert any(r.get("val_rpa") for r in rows) and any(r.get("val_pa") for r in rows)
    ckpt = read_checkpoint(student_run / "checkpoints" / "last.ckpt")
    assert not any(k.startswith("_teacher") or "teacher" in k for k in ckpt["state_dict"]), "no teacher inside"
    assert ckpt["hyper_parameters"]["teacher"] == str(Path(teacher["best_checkpoint"]).resolve())
    assert first["steps"] == 2
    again = train(ViolinPitchSettings(**{**vars(settings), "trainer": _trainer(student_run, max_steps=3)}))
    assert again["resumed_from"].endswith("last.ckpt") and again["steps"] == 3
    # the undistilled student logs no distillation terms
    plain = train(ViolinPitchSettings(data_root=str(root), stage="student", frames=1, distill=False,
                                      trainer=_trainer(tmp_path / "p"), thesis_batches=False))
    rows = list(csv.DictReader(open(tmp_path / "p" / "metrics.csv")))
    assert plain["steps"] == 2 and not any(r.get("train_w_fc6") for r in rows)
    assert load_net(tmp_path / "p" / "checkpoints" / "last.ckpt", stage="student", frames=1).config.frames == 1


def test_a_student_without_or_with_a_wrong_teacher_is_refused(violin_root, tmp_path):
    from tasks.training.piano_onsets import PianoOnsetsTask

    root, _ = violin_root
    base = dict(data_root=str(root), stage="student", trainer=_trainer(tmp_path / "s"))
    with pytest.raises(CheckpointError, match="needs the teacher's checkpoint"):
        train(ViolinPitchSettings(**base))
    piano = tmp_path / "piano.ckpt"
    module = PianoOnsetsTask(variant="resnet", config="small")
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, piano)
    with pytest.raises(CheckpointError, match="not a violin pitch checkpoint") as info:
        train(ViolinPitchSettings(**base, teacher=str(piano)))
    assert "\n" not in str(info.value)


def test_shards_of_the_wrong_kind_or_size_are_refused(violin_root, tmp_path):
    from tests.test_piano_training import make_piano_shards

    root, _ = violin_root
    check_shards(str(root))  # the violin fixture passes
    with pytest.raises(ValueError, match="no shards for split 'train'"):
        check_shards(str(tmp_path / "empty"))
    small = tmp_path / "small"
    make_violin_shards(small, {"v1": ("train", 20)})
    part = next((small / "violinyt" / "shards" / "split=train").glob("*.parquet"))
    import pyarrow.parquet as pq

    table = pq.read_table(part)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((145, 800, 3), np.uint8)).save(buf, format="JPEG")
    images = pa.array([buf.getvalue()] * table.num_rows, pa.binary())
    pq.write_table(table.set_column(table.schema.get_field_index("image"), "image", images), part)
    with pytest.raises(ValueError, match=r"frames are 145x800, not the 400x200 \(h x w\) RGB"):
        check_shards(str(small))
    piano = tmp_path / "piano"
    make_piano_shards(piano, {"p1": ("train", 10)})
    (piano / "violinyt").symlink_to(piano / "pianoyt")  # piano shards where violin shards should be
    with pytest.raises(ValueError, match="not a violin shard"):
        check_shards(str(piano), ("train",))


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def test_cli_trains_all_stages_and_writes_table_2_with_figures(violin_root, tmp_path):
    root, truth = violin_root
    out = tmp_path / "runs"
    proc = _cli("train", "violin-pitch", "--data-root", root, "--out", out, "--max-steps", 1, "--val-every", 1,
                "--batch-size", 4, "--no-thesis-batches", "--num-workers", 0, "--no-progress-bar",
                "--accelerator", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert set(summary) == {"teacher", "student-5", "student-1", "student-5-nodistill"}
    midi_dir = tmp_path / "midi"
    midi_dir.mkdir()
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(40)
    for i, m in enumerate(truth["v3"]):  # the truth of the test video, a note per frame
        if m:
            inst.notes.append(pretty_midi.Note(80, int(m), i / FPS, (i + 1) / FPS))
    pm.instruments.append(inst)
    pm.write(str(midi_dir / "v3.mid"))
    ckpts = [out / name / "checkpoints" / "last.ckpt" for name in summary]
    args = ["evaluate", "violin-pitch", "--data-root", root, "--truth-midi", midi_dir,
            "--results", tmp_path / "RESULTS", "--figure", tmp_path / "figs"]
    for c in ckpts:
        args += ["--checkpoint", c]
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (tmp_path / "RESULTS" / "violin-pitch.md").read_text()
    for name in ("audio (teacher)", "1 frame", "5 frames", "5 frames, no distillation", "pseudo-labels", "truth",
                 "thesis VnYT", "62.5/67.89/48.44/51.77/2.34", "git_commit"):
        assert name in md, name
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "RESULTS" / "violin-pitch.parquet").to_pylist()
    assert len(table) == 8
    # 30 frames less 2 at each end, less the unvoiced frames 7, 14 and 21: 23 scored per network
    assert {r["frames"] for r in table if r["scored against"] == "pseudo-labels"} == {23}
    assert {r["frames"] for r in table if r["scored against"] == "truth"} == {23}
    assert (tmp_path / "figs" / "v3.png").stat().st_size > 0
    # a violin video no run has seen, through transcribe violin (the build's frame path, a student checkpoint)
    from tasks.datasets.manifest import read_pianoyt
    from tasks.samples.violin import make_violin_samples

    row = read_pianoyt(make_violin_samples(tmp_path / "s", videos=1, seconds=3, seed=9, width=640, height=360))[0]
    truth_mid = tmp_path / "s" / "midi" / f"{row.video_id}.mid"
    proc = _cli("transcribe", "violin", row.source, "--crop", ",".join(map(str, row.crop)), "--checkpoint", ckpts[1], "--out", tmp_path / "v.csv", "--reference", truth_mid)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    lines = (tmp_path / "v.csv").read_text().splitlines()
    assert lines[0] == "time,midi,hz" and len(lines) == 1 + 75 - 4 == 1 + result["predicted_frames"]
    assert set(result["scores"]) == {"rpa", "rpa_tol", "pa", "aca", "ace", "frames"}
    proc = _cli("transcribe", "violin", row.source, "--crop", ",".join(map(str, row.crop)), "--checkpoint", ckpts[0],
                "--out", tmp_path / "t.csv")
    assert proc.returncode == 2 and "the audio teacher" in proc.stderr and proc.stderr.count("\n") == 1
    # a piano checkpoint given to the violin evaluator: one line, exit 2
    from tasks.training.piano_onsets import PianoOnsetsTask

    piano = tmp_path / "piano.ckpt"
    module = PianoOnsetsTask(variant="resnet", config="small")
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, piano)
    proc = _cli("evaluate", "violin-pitch", "--data-root", root, "--checkpoint", piano)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not a violin pitch checkpoint" in proc.stderr
    proc = _cli("train", "violin-pitch", "--data-root", tmp_path / "nothing", "--out", tmp_path / "r")
    assert proc.returncode == 2 and "no shards for split 'train'" in proc.stderr and "Traceback" not in proc.stderr


def test_the_initial_weights_follow_the_seed(violin_root, tmp_path):
    from tasks.training.violin_pitch import make_module
    from tasks.training.trainer import seed

    def weights(s):
        settings = ViolinPitchSettings(data_root="D", stage="teacher", trainer=_trainer(tmp_path, seed=s))
        seed(settings.trainer)
        return make_module(settings).net.conv1[0].weight.detach().clone()

    assert torch.equal(weights(3), weights(3)) and not torch.equal(weights(3), weights(4))
