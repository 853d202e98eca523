"""Onsets and Frames: front end, model, decoding, checkpoints, MAESTRO loader, rendered set, training."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import pytest
import torch

from models import onsets_frames as of
from tasks.training.onsets_frames import TrainSettings

ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(1)


class Evil:  # an arbitrary pickled object: refused by weights_only=True
    pass


# ---------------------------------------------------------------- front end


def test_front_end_matches_librosa():
    """Mel front end vs librosa.feature.melspectrogram(htk=True, fmin=30, n_mels=229, hop 512, n_fft 2048)
    followed by librosa.power_to_db: within 1e-3 dB everywhere (measured: ~6e-4 dB with torchaudio's transforms)."""
    import librosa

    rng = np.random.default_rng(0)
    sr = of.SAMPLE_RATE
    t = np.arange(int(2.5 * sr)) / sr
    y = np.zeros_like(t)
    for f0, start in ((110.0, 0.1), (440.0, 0.7), (1760.0, 1.3)):  # decaying piano-like partials
        env = np.where(t >= start, np.exp(-3.0 * (t - start)), 0.0)
        y += sum(env * np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
    y = (0.2 * y + 0.003 * rng.standard_normal(t.size)).astype(np.float32)

    ref = librosa.power_to_db(librosa.feature.melspectrogram(
        y=y, sr=sr, n_fft=2048, hop_length=512, fmin=30.0, n_mels=229, htk=True)).T
    ours = of.MelFrontEnd()(torch.from_numpy(y)).numpy()
    assert ours.shape == ref.shape == (1 + y.size // 512, 229)
    assert np.max(np.abs(ours - ref)) < 1e-3
    # The filterbank itself is librosa's HTK/Slaney one (float32).
    fb = librosa.filters.mel(sr=sr, n_fft=2048, n_mels=229, fmin=30.0, htk=True)
    np.testing.assert_allclose(of.MelFrontEnd().mel.mel_scale.fb.T.numpy(), fb, atol=1e-6)
    # Batched input gives the same rows.
    both = of.MelFrontEnd()(torch.from_numpy(np.stack([y, y])))
    assert torch.allclose(both[1], torch.from_numpy(ours), atol=1e-4)


# ---------------------------------------------------------------- model


def test_default_config_is_the_papers():
    c = of.OnsetsFramesConfig.default()
    assert c.conv_filters == (48, 48, 96) and c.fc_size == 768
    assert (c.onset_lstm_units, c.offset_lstm_units, c.combined_lstm_units) == (256, 256, 256)
    model = of.OnsetsAndFrames(c)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["onset_stack.conv.0.weight"] == (48, 1, 3, 3)
    assert shapes["onset_stack.conv.3.weight"] == (48, 48, 3, 3)
    assert shapes["onset_stack.conv.8.weight"] == (96, 48, 3, 3)
    assert shapes["onset_stack.fc.0.weight"] == (768, 96 * 57)  # 229 bins pooled twice by 2 -> 57
    assert shapes["onset_lstm.lstm.weight_ih_l0"] == (4 * 256, 768)
    assert shapes["combined_lstm.lstm.weight_ih_l0"] == (4 * 256, 3 * 88)
    assert shapes["velocity_fc.weight"] == (88, 768)
    assert of.parameter_count(model) == 22_607_480
    text = subprocess.run([sys.executable, "-m", "flows.cli", "describe", "onsets-frames"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    assert "22,607,480" in text and "combined_lstm" in text


def test_frame_loss_does_not_reach_onset_or_offset_heads():
    torch.manual_seed(0)
    model = of.OnsetsAndFrames(of.OnsetsFramesConfig.small()).train()
    mel = torch.randn(2, 20, of.N_MELS)
    out = model(mel)
    target = (torch.rand(2, 20, of.N_KEYS) > 0.9).float()
    torch.nn.functional.binary_cross_entropy_with_logits(out["frame"], target).backward()
    for name, p in model.named_parameters():
        if name.startswith(("onset_", "offset_", "velocity_")):
            assert p.grad is None or torch.count_nonzero(p.grad) == 0, name
        elif name.startswith(("frame_", "combined_")) and p.requires_grad:
            assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name


def test_losses_and_velocity_only_on_onsets():
    out = {k: torch.zeros(1, 4, 88) for k in ("onset", "offset", "frame", "velocity")}
    labels = {k: torch.zeros(1, 4, 88) for k in ("onset", "offset", "frame", "velocity")}
    labels["velocity"][0, 1, 3] = 0.5  # not an onset frame: ignored
    assert float(of.onsets_frames_loss(out, labels)["velocity"]) == 0.0
    labels["onset"][0, 2, 5] = 1.0
    labels["velocity"][0, 2, 5] = 0.8
    assert abs(float(of.onsets_frames_loss(out, labels)["velocity"]) - 0.64) < 1e-6
    # Magenta's optional activation loss (on in the small config) trains the frame stack's own output.
    out["activation"] = torch.zeros(1, 4, 88)
    with_act = of.onsets_frames_loss(out, labels, activation_loss=True)
    assert abs(float(with_act["activation"]) - np.log(2)) < 1e-6
    assert abs(float(with_act["total"]) - float(of.onsets_frames_loss(out, labels)["total"]) - np.log(2)) < 1e-5
    assert of.OnsetsFramesConfig.small().activation_loss and not of.OnsetsFramesConfig.default().activation_loss


# ---------------------------------------------------------------- decoding


def test_decoding_rules():
    fps = of.FRAMES_PER_SECOND
    onset = np.zeros((12, 88), np.float32)
    frame = np.zeros((12, 88), np.float32)
    vel = np.zeros((12, 88), np.float32)
    # key 39 (MIDI 60): onset at 2 (two onset frames = one onset), frames on through 5.
    onset[2:4, 39] = 0.9
    frame[2:6, 39] = 0.8
    vel[2, 39] = 0.5
    # key 43: frames but no onset -> no note.
    frame[0:10, 43] = 0.9
    # key 50: onset at 1, frames on 1..9 but a second onset at 6 -> two notes (re-strike).
    onset[1, 50] = onset[6, 50] = 0.7
    frame[1:10, 50] = 0.9
    vel[1, 50], vel[6, 50] = 1.2, 0.0  # clipped to 127 and 1
    # key 60: onset with no frame -> a one-frame note.
    onset[8, 60] = 0.6
    vel[8, 60] = 0.5
    notes = of.decode_notes(onset, frame, vel)
    assert notes == [
        (1 / fps, 6 / fps, 71, 127),
        (2 / fps, 6 / fps, 60, 64),
        (6 / fps, 10 / fps, 71, 1),
        (8 / fps, 9 / fps, 81, 64),
    ]
    assert of.decode_notes(onset * 0.5, frame, vel) == []  # below the 0.5 threshold


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_and_refusals(tmp_path):
    model = of.OnsetsAndFrames(of.OnsetsFramesConfig.small())
    path = of.save_checkpoint(tmp_path / "m.pt", model, step=7, extra={"note": "x"})
    loaded, blob = of.load_checkpoint(path)
    assert blob["step"] == 7 and blob["format"] == of.CHECKPOINT_FORMAT
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])

    def doctored(change) -> Path:
        b = torch.load(path, weights_only=True)
        change(b)
        p = tmp_path / "bad.pt"
        torch.save(b, p)
        return p

    p = doctored(lambda b: b["state_dict"].pop("frame_fc.weight"))
    with pytest.raises(of.CheckpointError, match=r"missing tensors \(1\): frame_fc.weight"):
        of.load_checkpoint(p)
    p = doctored(lambda b: b["state_dict"].__setitem__("onset_fc.bias", torch.zeros(87)))
    with pytest.raises(of.CheckpointError, match=r"mismatched shapes \(1\): onset_fc.bias: \(87,\) in .* \(88,\) in the model"):
        of.load_checkpoint(p)
    p = doctored(lambda b: b.__setitem__("config", of.OnsetsFramesConfig.default().to_dict()))
    with pytest.raises(of.CheckpointError, match="mismatched shapes"):
        of.load_checkpoint(p)
    p = doctored(lambda b: b.__setitem__("format", "something-else"))
    with pytest.raises(of.CheckpointError, match="not an Onsets and Frames checkpoint"):
        of.load_checkpoint(p)

    torch.save({"format": of.CHECKPOINT_FORMAT, "obj": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(of.CheckpointError, match="weights-only"):
        of.load_checkpoint(tmp_path / "evil.pt")


# ---------------------------------------------------------------- MAESTRO layout


def _tiny_maestro(root: Path) -> Path:
    import pretty_midi
    import soundfile as sf

    (root / "2018").mkdir(parents=True)
    rows = []
    for i, split in enumerate(["train", "validation", "test"]):
        pm = pretty_midi.PrettyMIDI()
        inst = pretty_midi.Instrument(program=0)
        inst.notes.append(pretty_midi.Note(velocity=100, pitch=60 + i, start=0.5, end=0.8))
        inst.control_changes += [pretty_midi.ControlChange(64, 127, 0.6), pretty_midi.ControlChange(64, 0, 1.5)]
        pm.instruments.append(inst)
        pm.write(str(root / "2018" / f"p{i}.midi"))
        sf.write(root / "2018" / f"p{i}.wav", np.zeros((44100 * 2, 2), np.float32), 44100)
        rows.append({"canonical_composer": "X", "canonical_title": f"T{i}", "split": split, "year": 2018,
                     "midi_filename": f"2018/p{i}.midi", "audio_filename": f"2018/p{i}.wav", "duration": 2.0})
    with open(root / "maestro-v3.0.0.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def test_maestro_loader_and_labels(tmp_path):
    from tasks.datasets import maestro

    root = _tiny_maestro(tmp_path / "maestro")
    recs = maestro.read_maestro(root)
    assert [r.split for r in recs] == ["train", "validation", "test"]
    assert recs[0].audio == (root / "2018" / "p0.wav").resolve() and recs[0].title == "T0"
    assert [r.name for r in maestro.read_maestro(root / "maestro-v3.0.0.csv", ("test",))] == ["p2"]
    # The sustain pedal holds the note until it lifts at 1.5 s.
    notes = maestro.read_performance(recs[0].midi)
    assert len(notes) == 1 and notes[0].offset == pytest.approx(1.5, abs=1e-3)
    feats = maestro.prepare(recs[:1], tmp_path / "cache")
    f = feats[0]
    assert f.mel.shape == (1 + 32000 // 512, 229) and f.mel.dtype == np.float16
    k = 60 - 21  # onset and offset on the frames whose centres are nearest (15.6, 46.9)
    assert np.flatnonzero(f.onset[:, k]).tolist() == [16]
    assert np.flatnonzero(f.offset[:, k]).tolist() == [47]
    assert np.flatnonzero(f.frame[:, k]).tolist() == list(range(16, 48))
    assert f.velocity[16, k] == 100
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    batch = maestro.WindowSampler(feats, 80).batch(np.random.default_rng(0), 3)
    assert batch["mel"].shape == (3, 80, 229) and batch["onset"].shape == (3, 80, 88)

    # Refusals: a missing column, a bad split, a missing file, a path outside the folder.
    bad = tmp_path / "bad"
    bad.mkdir()
    for csv, message in [
        ("split,audio_filename\ntrain,a.wav\n", "midi_filename"),
        ("split,midi_filename,audio_filename\ndev,a.midi,a.wav\n", "split 'dev'"),
        ("split,midi_filename,audio_filename\ntrain,a.midi,a.wav\n", "does not exist"),
        ("split,midi_filename,audio_filename\ntrain,a.midi,../x.wav\n", "not a file name inside"),
    ]:
        (bad / "maestro-v3.0.0.csv").write_text(csv)
        with pytest.raises(maestro.MaestroError, match=message):
            maestro.read_maestro(bad)


# ---------------------------------------------------------------- rendered set, training, labeler


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """``sightsound samples piano-audio`` with 4 short pieces (3 train, 1 validation)."""
    out = tmp_path_factory.mktemp("piano-audio")
    from flows.cli import main

    assert main(["samples", "piano-audio", "--out", str(out), "--pieces", "4", "--seconds", "4"]) == 0
    return out


def test_samples_piano_audio_layout(rendered, tmp_path):
    from tasks.datasets.maestro import read_maestro
    from tasks.samples.piano_audio import make_piano_audio
    from tasks.labels.transcribe import read_midi

    recs = read_maestro(rendered)
    assert [r.split for r in recs] == ["train", "train", "train", "validation"]
    import soundfile as sf

    for r in recs:
        info = sf.info(str(r.audio))
        assert info.samplerate == 44100 and info.channels == 1 and abs(info.duration - 4.0) < 1e-3
        notes = read_midi(r.midi)
        assert notes and all(0.0 <= n.onset < n.offset <= 4.0 for n in notes)
    # Two pieces, rendered again: the same bytes (deterministic), nothing re-rendered in place.
    make_piano_audio(tmp_path / "two", pieces=2, seconds=4)
    for name in ("train/piece_000.wav", "train/piece_001.midi"):
        assert (tmp_path / "two" / name).read_bytes() == (rendered / name).read_bytes()


def _small(data, out, **changes) -> TrainSettings:
    """A run of a few steps on 1 s windows, one thread, no progress bar."""
    base = dict(data=str(data), out_dir=str(out), config="small", max_steps=2, validate_every=2, log_every=1,
                batch_size=2, window_seconds=1.0, threads=1, progress_bar=False)
    return TrainSettings(**{**base, **changes})


class _Batches(L.Callback):
    """Keeps the first mel window of every training batch, and what the trainer was set to."""

    def __init__(self):
        self.first, self.clip, self.callbacks = [], None, []

    def on_train_start(self, trainer, pl_module):
        self.clip = trainer.gradient_clip_val
        self.callbacks = [type(c).__name__ for c in trainer.callbacks]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.first.append(batch["mel"][0].clone())


def test_train_resume_and_label(rendered, tmp_path):
    """Two steps, then one more resumed from checkpoints/last.ckpt: the step count, the optimiser, the LR
    schedule and the random windows go on where they stopped; best.ckpt labels audio."""
    from tasks.datasets.maestro import WindowSampler, prepare, read_maestro
    from tasks.labels.transcribe import get_transcriber, labeler_sample_rate
    from tasks.training.onsets_frames import train
    from tasks.training.trainer import read_checkpoint

    out = tmp_path / "run"
    # Halved every step, so the per-step schedule shows within 3 steps (Magenta's: x0.98 every 10k steps).
    s = _small(rendered, out, lr_decay_steps=1, lr_decay_rate=0.5)
    seen = _Batches()
    first = train(s, log=lambda m: None, callbacks=[seen])
    last, best = out / "checkpoints" / "last.ckpt", out / "checkpoints" / "best.ckpt"
    assert first["steps"] == 2 and first["stopped_by"] == "max steps" and last.is_file() and best.is_file()
    assert first["validation"]["pieces"] == 1 and first["monitor"] == "val_onset_f1"
    assert first["best_score"] == pytest.approx(first["validation"]["onset_f1"], abs=1e-4)
    # Magenta's clip norm; no plateau rule (no early stop, no LR division), the decay is the only schedule.
    assert seen.clip == 3.0
    assert "EarlyStopping" not in seen.callbacks and "PlateauSchedule" not in seen.callbacks
    before = read_checkpoint(last, {"config": "small"})
    assert before["global_step"] == 2 and before["lr_schedulers"][0]["_last_lr"] == [pytest.approx(1.5e-4)]
    # The windows of step k are the old loop's: WindowSampler.batch(default_rng([seed, k])).
    feats = prepare([r for r in read_maestro(rendered) if r.split == "train"], out / "features")
    sampler = WindowSampler(feats, of.frames_for_seconds(1.0))
    expected = [sampler.batch(np.random.default_rng([0, k]), 2)["mel"][0] for k in range(3)]
    assert len(seen.first) == 2 and all(torch.equal(a, b) for a, b in zip(seen.first, expected))

    s.max_steps = 3
    again = _Batches()
    second = train(s, log=lambda m: None, callbacks=[again])
    assert second["steps"] == 3 and second["resumed_from"] == str(last)
    assert len(again.first) == 1 and torch.equal(again.first[0], expected[2])  # step 2's windows, not step 0's
    after = read_checkpoint(last)
    assert after["global_step"] == 3 and after["optimizer_states"][0]["state"]
    assert after["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(7.5e-5)  # 6e-4 x 0.5^3
    assert not torch.equal(before["state_dict"]["net.onset_fc.weight"], after["state_dict"]["net.onset_fc.weight"])
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sum(1 for r in rows if r.get("train_loss")) == 3 and sum(1 for r in rows if r.get("val_onset_f1")) == 1
    assert {"train_onset", "train_frame", "train_velocity", "lr", "val_onset_precision", "val_frame_f1",
            "wall_s"} <= set(rows[0])
    assert json.loads((out / "summary.json").read_text())["steps"] == 3

    # The labeler backend reads the trainer's checkpoint (weights-only, the network's tensors and config).
    model, blob = of.load_checkpoint(best)
    assert blob["step"] == 2 and model.config == of.OnsetsFramesConfig.small()
    assert labeler_sample_rate("onsets-frames") == 16000
    t = get_transcriber("onsets-frames", checkpoint=str(best), device="cpu")
    notes = t.transcribe(np.zeros(16000, np.float32))
    assert isinstance(notes, list) and t.version == "onsets-frames:best.ckpt:step2"
    with pytest.raises(ValueError, match="needs checkpoint"):
        get_transcriber("onsets-frames")


def test_train_flow_and_cli_refusals(rendered, tmp_path, capsys):
    import shutil

    from flows.cli import main
    from flows.train_onsets_frames import train_onsets_frames

    out = tmp_path / "flow"
    summary = train_onsets_frames(_small(rendered, out, max_steps=1, batch_size=1, validate_every=1))
    assert summary["steps"] == 1 and summary["validation"]["pieces"] == 1
    assert (out / "checkpoints" / "best.ckpt").is_file() and (out / "run_settings.json").is_file()
    assert main(["train", "onsets-frames", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert main(["label", "piano", str(rendered / "train" / "piece_000.wav"), "--out", str(tmp_path / "o.mid"),
                 "--labeler", "transkun", "--checkpoint", str(out / "checkpoints" / "best.ckpt")]) == 2
    assert "--checkpoint is for --labeler onsets-frames" in capsys.readouterr().err
    # float16 without CUDA, and a set without a validation split: one line each, before any work.
    assert main(["train", "onsets-frames", "--data", str(rendered), "--out", str(tmp_path / "y"), "--device", "cpu",
                 "--amp", "on"]) == 2
    assert "amp=on (float16) needs a CUDA device" in capsys.readouterr().err
    no_val = tmp_path / "no-val"
    no_val.mkdir()
    (no_val / "piano-audio.csv").write_text("\n".join(
        line for line in (rendered / "piano-audio.csv").read_text().splitlines() if ",validation," not in line))
    shutil.copytree(rendered / "train", no_val / "train")
    assert main(["train", "onsets-frames", "--data", str(no_val), "--out", str(tmp_path / "z")]) == 2
    assert "no recordings in the validation split" in capsys.readouterr().err
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_loader_workers_draw_the_steps_in_order(tmp_path):
    """Two spawned loader workers take every other step; the loader hands the batches out in step order, each
    the batch of its step (what one process draws), starting at the resumed step."""
    from torch.utils.data import DataLoader

    from tasks.datasets.maestro import Features
    from tasks.training.onsets_frames import TrainingWindows

    rng = np.random.default_rng(1)
    feats = [Features(f"p{i}", rng.normal(size=(n, 229)).astype(np.float16), *(np.zeros((n, 88), np.uint8),) * 4)
             for i, n in enumerate((40, 70))]
    windows = TrainingWindows(feats, 16, 2, seed=5, start=7)
    loader = DataLoader(windows, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    got = []
    for batch in loader:
        got.append(batch["mel"])
        if len(got) == 5:
            break
    assert all(torch.equal(g, windows.batch(7 + k)["mel"]) for k, g in enumerate(got))
    assert not torch.equal(got[0], got[1])


def test_an_old_trainers_run_folder_is_refused_and_its_checkpoints_still_label(rendered, tmp_path, capsys):
    """A RUN of the hand-written loop (last.pt, best.pt, losses.csv): the Lightning trainer refuses to resume it
    or write over it, in one line, before any work; its .pt checkpoints load for labelling."""
    from flows.cli import main
    from tasks.labels.transcribe import get_transcriber

    out = tmp_path / "old"
    model = of.OnsetsAndFrames(of.OnsetsFramesConfig.small())
    of.save_checkpoint(out / "last.pt", model, step=2483, optimizer=torch.optim.Adam(model.parameters()))
    of.save_checkpoint(out / "best.pt", model, step=2483)
    before = sorted(p.name for p in out.iterdir())
    for extra in ([], ["--no-resume"]):
        assert main(["train", "onsets-frames", "--data", str(rendered), "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(out / "last.pt") in err, err
        assert "a run of the old Onsets and Frames trainer" in err and "another --out" in err
    assert sorted(p.name for p in out.iterdir()) == before  # nothing written: no features, no checkpoints/
    t = get_transcriber("onsets-frames", checkpoint=str(out / "best.pt"), device="cpu")
    assert t.version == "onsets-frames:best.pt:step2483"


def test_evaluate_transcription_table(rendered, tmp_path, capsys):
    import shutil

    from flows.cli import main

    est = tmp_path / "est"
    est.mkdir()
    for p in (rendered / "train").glob("*.midi"):
        shutil.copy(p, est / f"{p.stem}.mid")
    code = main(["evaluate", "transcription", "--ref", str(rendered / "train"), "--est", f"copy={est}",
                 "--out", str(tmp_path / "t.md")])
    assert code == 0
    table = capsys.readouterr().out
    assert "| system | pieces | note P | note R | note F1 |" in table
    assert "| copy | 3 | 1.0 | 1.0 | 1.0 |" in table
    assert (tmp_path / "t.md").read_text().startswith("| system")
    (est / "piece_000.mid").unlink()
    assert main(["evaluate", "transcription", "--ref", str(rendered / "train"), "--est", str(est)]) == 2


def test_build_pianoyt_passes_the_checkpoint_through(tmp_path, monkeypatch):
    """``build-pianoyt --labeler onsets-frames --checkpoint P`` hands the flow settings whose labeler options
    build the onsets-frames transcriber (with the checkpoint's fingerprint in the label cache key)."""
    import flows.build_pianoyt as build
    from flows.cli import main
    from tasks.store.cache import file_fingerprint
    from tasks.labels.transcribe import OnsetsFramesTranscriber, get_transcriber, labeler_options

    ckpt = of.save_checkpoint(tmp_path / "m.pt", of.OnsetsAndFrames(of.OnsetsFramesConfig.small()))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("vid_a,videos/vid_a.mp4,1,400,545,0,1280\n")
    seen = {}

    def fake_build(**kwargs):
        seen.update(kwargs)
        return {"root": str(tmp_path), "summary": [{"videos": 0}], "records": []}

    fake_build.with_options = lambda **_: fake_build  # the CLI runs flows through flows.runners.run_flow
    # The CLI sets Prefect's result folder in os.environ; keep that from leaking into later tests.
    monkeypatch.setenv("PREFECT_LOCAL_STORAGE_PATH", str(tmp_path / "results"))
    monkeypatch.setattr(build, "build_pianoyt", fake_build)
    args = ["build-pianoyt", "--manifest", str(manifest), "--data-root", str(tmp_path / "data"),
            "--labeler", "onsets-frames", "--device", "cpu"]
    assert main(args + ["--checkpoint", str(ckpt)]) == 0
    settings = seen["settings"]  # the flow makes the labeler options from its settings, as a deployment's
    assert settings.labeler == "onsets-frames" and settings.checkpoint == str(ckpt.resolve())
    options = labeler_options(settings.labeler, settings.device, settings.checkpoint)
    assert options == {"device": "cpu", "checkpoint": str(ckpt.resolve()), "fingerprint": file_fingerprint(ckpt)}
    assert isinstance(get_transcriber("onsets-frames", **options), OnsetsFramesTranscriber)
    assert main(args) == 2  # no checkpoint: refused before the flow starts
    of.save_checkpoint(ckpt, of.OnsetsAndFrames(of.OnsetsFramesConfig.small()), step=5)
    with pytest.raises(ValueError, match="changed since its fingerprint"):
        get_transcriber("onsets-frames", **options)


def test_gpu_runs_hold_a_slot_of_the_gpu_concurrency_limit(rendered, tmp_path, monkeypatch):
    """On CUDA the training task runs inside ``concurrency(gpu_limit, occupy=1)``; on the CPU it takes no slot."""
    import contextlib

    import prefect.concurrency.sync as sync

    import flows.train_onsets_frames as flow_module
    import tasks.labels.transcribe as transcribe_module

    entered = []

    @contextlib.contextmanager
    def fake_concurrency(names, occupy=1, **kwargs):
        entered.append((names, occupy))
        yield

    monkeypatch.setattr(sync, "concurrency", fake_concurrency)
    monkeypatch.setattr(flow_module, "train", lambda settings, log: {"device": settings.device, "inside": list(entered)})
    monkeypatch.setattr(transcribe_module, "pick_device", lambda name: "cuda" if name == "cuda" else "cpu")
    out = flow_module.train_onsets_frames(TrainSettings(data=str(rendered), out_dir=str(tmp_path / "g"), device="cuda"),
                                          gpu_limit="gpu-test")
    assert out["inside"] == [("gpu-test", 1)]
    entered.clear()
    cpu = TrainSettings(data=str(rendered), out_dir=str(tmp_path / "c"), device="cpu")
    assert flow_module.train_onsets_frames(cpu)["inside"] == []
