"""The harder violin set: FluidSynth renderings of unseen violin lines in rooms with noise, and their truth."""

from __future__ import annotations

import json

import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from tasks.samples import violin_hard as vh
from tasks.samples.violin import UNSEEN_VIOLIN_PIECES, VIOLIN_PIECES, sounding_pitch

missing = vh.fluidsynth_available()
pytestmark = pytest.mark.skipif(bool(missing), reason=missing or "")  # .ci/run installs them


@pytest.fixture(scope="module")
def hard(tmp_path_factory):
    out = tmp_path_factory.mktemp("hard")
    return out, vh.make_violin_hard_set(out, n=2, seconds=8.0, seed=5)


def test_files_truth_and_listing(hard):
    out, pairs = hard
    listing = json.loads((out / "hard_set.json").read_text())
    assert [r["id"] for r in listing["recordings"]] == ["violin_hard_000", "violin_hard_001"]
    fonts = {r["soundfont"] for r in listing["recordings"]}
    assert fonts <= {"FluidR3_GM.sf2", "MuseScore_General_Lite.sf3", "MuseScore_General.sf3"}
    for (wav, mid), rec in zip(pairs, listing["recordings"]):
        y, sr = sf.read(wav)
        assert sr == 44100 and y.ndim == 1 and y.size == 8 * 44100 and 0.1 < np.abs(y).max() <= 1.0
        assert 15.0 <= rec["snr_db"] <= 30.0 and 0.5 <= rec["rt60_s"] <= 1.2
        assert rec["piece"] not in VIOLIN_PIECES + UNSEEN_VIOLIN_PIECES
        pm = pretty_midi.PrettyMIDI(str(mid))
        notes = sorted(pm.instruments[0].notes, key=lambda n: n.start)
        assert all(55 <= n.pitch <= 88 for n in notes) and pm.instruments[0].program == 40
        assert all(a.end <= b.start + 1e-6 for a, b in zip(notes, notes[1:])), "monophonic"
        touching = sum(abs(a.end - b.start) < 1e-3 for a, b in zip(notes, notes[1:]))
        assert 0 < touching < len(notes) - 1, "legato (touching) and détaché (gap) passages"
        assert rec["legato_notes"] > 0
        truth = np.loadtxt(str(wav)[:-4] + ".csv", delimiter=",", skiprows=1)
        assert truth.shape == (800, 3)
        assert np.array_equal(truth[:, 1].astype(int), sounding_pitch(notes, np.arange(800) / 100))
        voiced = truth[:, 1] > 0
        cents = 1200 * np.log2(truth[voiced, 2] / (440 * 2 ** ((truth[voiced, 1] - 69) / 12)))
        assert np.abs(cents).max() <= 36 and np.abs(cents).max() > 10, "vibrato, inside the semitone"


def test_deterministic(hard, tmp_path):
    out, pairs = hard
    again = vh.make_violin_hard_set(tmp_path, n=1, seconds=8.0, seed=5)
    assert again[0][0].read_bytes() == pairs[0][0].read_bytes()
    assert again[0][1].read_bytes() == pairs[0][1].read_bytes()


def test_refusals(tmp_path):
    with pytest.raises(ValueError, match="at least 1"):
        vh.make_violin_hard_set(tmp_path, n=0)
    with pytest.raises(ValueError, match="at least 4"):
        vh.make_violin_hard_set(tmp_path, n=1, seconds=2.0)
