"""URMP ingestion on a small fixture written in URMP's published layout, and a violin build from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile

from tasks.datasets.manifest import ManifestError
from tasks.media.decode import decode_image
from tasks.labels.pitch import midi_to_hz
from tasks.store.shards import read_dataset
from tasks.datasets.urmp import read_urmp
from tests.conftest import make_test_video

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 3.0


def write_piece(root: Path, number: str, title: str, instruments: list[str], pitches: list[int]) -> Path:
    folder = root / f"{number}_{title}_{'_'.join(instruments)}"
    folder.mkdir(parents=True)
    make_test_video(folder / f"Vid_{number}_{title}_{'_'.join(instruments)}.mp4", seconds=SECONDS, size=(640, 360))
    sr = 48000
    t = np.arange(int(SECONDS * sr)) / sr
    for k, (inst, midi) in enumerate(zip(instruments, pitches), start=1):
        f = midi_to_hz(midi)
        voiced = (t >= 0.5) & (t < 2.5)
        y = 0.3 * voiced * sum(np.sin(2 * np.pi * f * h * t) / h for h in range(1, 4))
        soundfile.write(folder / f"AuSep_{k}_{inst}_{number}_{title}.wav", y.astype(np.float32), sr)
        times = np.arange(0, SECONDS, 0.0058)
        f0 = np.where((times >= 0.5) & (times < 2.5), f, 0.0)
        np.savetxt(folder / f"F0s_{k}_{inst}_{number}_{title}.txt", np.c_[times, f0], fmt="%.4f")
        (folder / f"Notes_{k}_{inst}_{number}_{title}.txt").write_text(f"0.5\t{f:.2f}\t2.0\n")
    return folder


@pytest.fixture
def urmp(tmp_path):
    root = tmp_path / "URMP"
    write_piece(root, "01", "Jupiter", ["vn", "vc"], [67, 48])
    write_piece(root, "02", "Duo", ["vn", "vn"], [72, 76])
    (root / "readme.txt").write_text("not a piece")
    return root


def test_reads_violin_tracks_only(urmp):
    rows = read_urmp(urmp)
    assert [r.video_id for r in rows] == ["urmp_01_Jupiter_1", "urmp_02_Duo_1", "urmp_02_Duo_2"]
    jupiter, duo1, duo2 = rows
    assert jupiter.crop == (0, 720, 0, 640)  # first of two players
    assert duo2.crop == (0, 720, 640, 1280)
    assert jupiter.audio_source.endswith("AuSep_1_vn_01_Jupiter.wav")
    assert duo2.pitch_source.endswith("F0s_2_vn_02_Duo.txt")
    assert sorted(r.split for r in rows) == ["test", "train", "train"]
    assert read_urmp(urmp) == rows, "the split must not depend on anything but the ids"


def test_missing_files_are_named(urmp):
    (urmp / "02_Duo_vn_vn" / "F0s_2_vn_02_Duo.txt").unlink()
    with pytest.raises(ManifestError, match="02_Duo_vn_vn track 2: missing F0s_2_vn_02_Duo.txt"):
        read_urmp(urmp)
    with pytest.raises(ManifestError, match="not a folder"):
        read_urmp(urmp / "nothing")


def test_build_violinyt_uses_the_ground_truth_pitch(urmp, tmp_path):
    data = tmp_path / "data"
    cmd = [sys.executable, "-m", "flows.cli", "build-violinyt", "--urmp", str(urmp), "--data-root", str(data)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    root = data / "violinyt"
    status = pq.read_table(root / "status.parquet").to_pylist()
    assert [r["state"] for r in status] == ["done"] * 3
    t = read_dataset(root / "shards")
    assert set(t.column("split").to_pylist()) == {"train", "val", "test"}
    rows = t.to_pylist()
    expected = {"urmp_01_Jupiter_1": 67, "urmp_02_Duo_1": 72, "urmp_02_Duo_2": 76}
    for r in rows:
        inside = 0.55 <= r["time"] < 2.45
        if inside:
            assert r["voiced"] and r["midi"] == expected[r["video_id"]], r["time"]
        elif r["time"] < 0.45 or r["time"] >= 2.55:
            assert not r["voiced"] and r["midi"] == 0
        assert (root / r["audio_path"]).is_file()
        assert r["audio_sample"] == round(r["time"] * 44100)
    img = decode_image(rows[0]["image"])
    assert img.shape == (400, 200, 3)
    # The teacher's audio is the track's own stem: the frame's sample sits in a sounding stretch.
    audio, sr = soundfile.read(root / "audio" / "urmp_02_Duo_2.wav")
    mid = next(r for r in rows if r["video_id"] == "urmp_02_Duo_2" and r["time"] >= 1.5)
    window = audio[mid["audio_sample"] - 1024 : mid["audio_sample"] + 1024]
    spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
    assert np.argmax(spectrum) * sr / len(window) == pytest.approx(midi_to_hz(76), rel=0.03)


def test_build_violinyt_refuses_bad_input_before_any_work(tmp_path, urmp):
    bad = tmp_path / "violin.csv"
    bad.write_text("a,videos/a.mp4,1,0,10,0,10\na,videos/b.mp4,1,0,10,0,10\n")
    data = tmp_path / "data"
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "build-violinyt", "--manifest", str(bad),
                           "--data-root", str(data)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "duplicate video id 'a'" in proc.stderr
    both = subprocess.run([sys.executable, "-m", "flows.cli", "build-violinyt", "--manifest", str(bad),
                           "--urmp", str(urmp), "--data-root", str(data)], capture_output=True, text=True, cwd=ROOT)
    assert both.returncode == 2 and "exactly one of" in both.stderr
    assert not data.exists()


# ---------------------------------------------------------------- issue 11: folder names, crop reference


def _stub_piece(root: Path, name: str, number: str, title: str, instruments: list[str]) -> Path:
    """A piece folder with empty files of the right names (read_urmp only checks that they exist)."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / f"Vid_{number}_{title}_{'_'.join(instruments)}.mp4").write_bytes(b"")
    for k, inst in enumerate(instruments, start=1):
        (folder / f"AuSep_{k}_{inst}_{number}_{title}.wav").write_bytes(b"")
        (folder / f"F0s_{k}_{inst}_{number}_{title}.txt").write_bytes(b"")
    return folder


def test_piece_names_must_fullmatch_in_ascii(tmp_path):
    root = tmp_path / "URMP"
    _stub_piece(root, "01_Duo_vn_vn", "01", "Duo", ["vn", "vn"])
    _stub_piece(root, "02_Trio_vn\n", "02", "Trio", ["vn"])  # '$' matched before the newline
    _stub_piece(root, "\u0660\u0663_Arabic_vn", "\u0660\u0663", "Arabic", ["vn"])  # '\d' took Arabic-Indic digits
    _stub_piece(root, "04_" + "T" * 130 + "_vn", "04", "T" * 130, ["vn"])  # an id over 128 characters
    with pytest.raises(ManifestError) as err:
        read_urmp(root)
    [problem] = err.value.problems  # the other two are no pieces: skipped
    assert problem.startswith(f"04_{'T' * 130}_vn track 1: video id 'urmp_04_TTT") and len(problem) <= 300
    assert "(140 characters) is not a plain token" in problem
    (root / ("04_" + "T" * 130 + "_vn")).rename(root / "skipped")
    assert [r.video_id for r in read_urmp(root)] == ["urmp_01_Duo_1", "urmp_01_Duo_2"]


def test_a_long_folder_name_does_not_backtrack_for_ever(tmp_path):
    import time

    root = tmp_path / "URMP"
    _stub_piece(root, "01_Duo_vn", "01", "Duo", ["vn"])
    (root / ("01_T_" + "a" * 25 + "!")).mkdir()  # the old pattern took ~7 s for this, doubling per letter
    t0 = time.perf_counter()
    assert len(read_urmp(root)) == 1
    assert time.perf_counter() - t0 < 1.0


def test_crops_are_columns_of_the_builds_crop_reference(urmp):
    rows = read_urmp(urmp, crop_reference=(1920, 1080))
    assert [r.crop for r in rows] == [(0, 1080, 0, 960), (0, 1080, 0, 960), (0, 1080, 960, 1920)]
    with pytest.raises(ValueError, match="crop reference"):
        read_urmp(urmp, crop_reference=(1920, -1))


def test_a_urmp_build_trains_and_evaluates_against_its_ground_truth(urmp, tmp_path):
    """End to end on the URMP fixture: build, a teacher and a student for a step each, table 2 with the truth."""
    import pyarrow.parquet as pq

    from tasks.training.trainer import TrainerSettings
    from tasks.training.violin_pitch import ViolinPitchSettings, train

    data = tmp_path / "data"
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "build", "violinyt", "--urmp", str(urmp),
                           "--data-root", str(data)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]

    def trainer(name):
        return TrainerSettings(run_dir=str(tmp_path / name), max_steps=1, val_every=1, batch_size=4, num_workers=0,
                               progress_bar=False, accelerator="cpu")

    teacher = train(ViolinPitchSettings(data_root=str(data), stage="teacher", trainer=trainer("t"),
                                        thesis_batches=False))
    student = train(ViolinPitchSettings(data_root=str(data), stage="student", frames=1,
                                        teacher=teacher["last_checkpoint"], trainer=trainer("s"),
                                        thesis_batches=False))
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "evaluate", "violin-pitch", "--data-root", str(data),
                           "--checkpoint", teacher["last_checkpoint"], "--checkpoint", student["last_checkpoint"],
                           "--results", str(tmp_path / "RESULTS")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = pq.read_table(tmp_path / "RESULTS" / "violin-pitch.parquet").to_pylist()
    by = {(r["scored against"], r["network"]): r for r in rows}
    assert set(by) == {(a, n) for a in ("pseudo-labels", "truth") for n in ("audio (teacher)", "1 frame")}
    for n in ("audio (teacher)", "1 frame"):  # a URMP build's labels are its ground truth: the same scores
        truth, pseudo = by[("truth", n)], by[("pseudo-labels", n)]
        assert truth["frames"] == pseudo["frames"] > 0 and truth["RPA"] == pseudo["RPA"]
    assert by[("truth", "1 frame")]["thesis URMP RPA/RPA tol/PA/ACA/ACE"] == "53.11/58.3/42.71/39.86/2.73"
