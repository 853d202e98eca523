"""MAESTRO training targets: note_seq's sustain handling and piano rolls (tasks/datasets/maestro.py)."""

from __future__ import annotations

import numpy as np
import pytest


def _pedalled_midi(path):
    """Notes around a sustain pedal held from 0.6 s to 1.5 s (times are whole MIDI ticks, off frame boundaries)."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    for pitch, start, end, velocity in [
        (60, 0.50, 0.85, 90),   # released under the pedal: sounds until it lifts at 1.5 s
        (62, 0.70, 1.70, 80),   # still held when the pedal lifts: unchanged
        (64, 1.65, 1.80, 60),   # after the pedal: unchanged
        (67, 0.65, 0.75, 50),   # released under the pedal, then struck again at 1.0 s: ends there
        (67, 1.00, 1.10, 70),   # ... and this one is held by the pedal until 1.5 s
        (110, 0.30, 0.40, 99),  # above the piano's 88 keys: in the notes, not in the rolls
    ]:
        inst.notes.append(pretty_midi.Note(velocity=velocity, pitch=pitch, start=start, end=end))
    inst.control_changes += [pretty_midi.ControlChange(64, 100, 0.6), pretty_midi.ControlChange(64, 0, 1.5)]
    pm.instruments.append(inst)
    drums = pretty_midi.Instrument(program=0, is_drum=True)
    drums.notes.append(pretty_midi.Note(velocity=100, pitch=38, start=0.5, end=0.6))
    pm.instruments.append(drums)
    pm.write(str(path))
    return path


def test_sustained_labels_from_note_seq(tmp_path):
    from tasks.datasets import maestro

    midi = _pedalled_midi(tmp_path / "pedal.midi")
    notes = maestro.read_performance(midi)
    got = [(round(n.onset, 3), round(n.offset, 3), n.pitch, n.velocity) for n in notes]
    assert got == [(0.3, 0.4, 110, 99), (0.5, 1.5, 60, 90), (0.65, 1.0, 67, 50), (0.7, 1.7, 62, 80),
                   (1.0, 1.5, 67, 70), (1.65, 1.8, 64, 60)]  # the drum note is dropped

    rolls = maestro.note_labels(notes, 70)
    assert set(rolls) == {"onset", "offset", "frame", "velocity"}
    assert all(r.shape == (70, 88) and r.dtype == np.uint8 for r in rolls.values())

    def frames(name, pitch):
        return np.flatnonzero(rolls[name][:, pitch - 21]).tolist()

    # 31.25 frames per second; frame k is centred on k / fps, so an event at t seconds is on frame round(t * fps):
    # with x = t * fps + 0.5, onset floor(x_start), frames up to ceil(x_end), offset floor(x_end).
    # Key 60: struck at 0.5 s (frame 15.6), released at 0.85 s (26.6) under the pedal, which lifts at 1.5 s (46.9).
    assert frames("onset", 60) == [16]
    assert frames("frame", 60) == list(range(16, 48))
    assert frames("offset", 60) == [47]
    assert frames("velocity", 60) == [16] and rolls["velocity"][16, 60 - 21] == 90
    # Key 62 is still down when the pedal lifts: it ends at 1.7 s (53.1).
    assert frames("onset", 62) == [22] and frames("frame", 62) == list(range(22, 54)) and frames("offset", 62) == [53]
    # Key 64 after the pedal: 1.65 s (51.6) to 1.8 s (56.25).
    assert frames("onset", 64) == [52] and frames("frame", 64) == list(range(52, 57)) and frames("offset", 64) == [56]
    assert rolls["velocity"][52, 64 - 21] == 60
    # Key 67 at 0.65 s (20.3): the sustained note ends when the key is struck again at 1.0 s (31.25); the second
    # note lasts to 1.5 s.
    assert frames("onset", 67) == [20, 31]
    assert frames("frame", 67) == list(range(20, 48))
    assert frames("offset", 67) == [31, 47]
    assert [rolls["velocity"][t, 67 - 21] for t in (20, 31)] == [50, 70] and frames("velocity", 67) == [20, 31]
    # Nothing on other keys; the rolls are cut to n_frames.
    assert rolls["frame"].sum() == 32 + 32 + 5 + 28
    assert maestro.note_labels(notes, 40)["frame"][:, 60 - 21].tolist() == [0] * 16 + [1] * 24
    assert maestro.note_labels([], 5)["onset"].shape == (5, 88)

    # Without the pedal key 60 ends at its release, 0.85 s (26.6).
    dry = maestro.note_labels(maestro.read_performance(midi, sustain=False), 70)
    assert np.flatnonzero(dry["frame"][:, 60 - 21]).tolist() == list(range(16, 28))
    assert np.flatnonzero(dry["offset"][:, 60 - 21]).tolist() == [27]


def test_unreadable_midi_is_one_line_error(tmp_path):
    from tasks.datasets import maestro

    bad = tmp_path / "bad.midi"
    bad.write_bytes(b"not a MIDI file")
    with pytest.raises(maestro.MaestroError, match="cannot read MIDI"):
        maestro.read_performance(bad)
