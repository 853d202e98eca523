"""Transcription window by window (bounded memory on long recordings): the windows, the stitch,
and the real transcriber windowed against the whole file."""

from __future__ import annotations

import pytest

from tasks.labels.transcribe import Note, stitch, window_starts


def test_windows_cover_the_recording_and_overlap():
    assert window_starts(100, 40, 10) == [0, 30, 60]  # the last one, 60-100, reaches the end
    assert window_starts(40, 40, 10) == [0]
    assert window_starts(41, 40, 10) == [0, 30]
    assert window_starts(5, 40, 10) == [0]
    with pytest.raises(ValueError, match="longer than its overlap"):
        window_starts(100, 10, 10)


def test_stitch_takes_each_onset_from_one_window():
    # Two windows: 0-20 s and 12-32 s; the cut is the middle of the overlap, 16 s.
    first = [Note(1.0, 2.0, 60, 80), Note(13.0, 14.0, 62, 80), Note(15.95, 16.5, 64, 80), Note(17.0, 18.0, 65, 80)]
    second = [Note(12.0, 12.5, 61, 80),  # the window's own start: heard without what came before
              Note(13.05, 14.0, 62, 80),  # before the cut: the first window's note
              Note(16.02, 16.5, 64, 80),  # the same note as the first window's 15.95, heard across the cut
              Note(17.01, 18.0, 65, 80),  # after the cut: this window's
              Note(30.0, 31.0, 67, 80)]
    got = stitch([(0.0, 20.0, first), (12.0, 32.0, second)])
    assert [(n.onset, n.pitch) for n in got] == [(1.0, 60), (13.0, 62), (15.95, 64), (17.01, 65), (30.0, 67)]


def test_stitch_gives_a_note_cut_by_its_window_the_offset_the_next_window_heard():
    first = [Note(15.0, 20.0, 60, 80)]  # still sounding when the window ends at 20 s
    second = [Note(15.02, 23.5, 60, 80)]
    assert stitch([(0.0, 20.0, first), (12.0, 32.0, second)]) == [Note(15.0, 23.5, 60, 80)]
    # A note that ended inside its window keeps its own offset.
    assert stitch([(0.0, 20.0, [Note(15.0, 18.0, 60, 80)]), (12.0, 32.0, [Note(15.02, 18.2, 60, 80)])]) == [
        Note(15.0, 18.0, 60, 80)]


def test_one_window_is_the_identity():
    notes = [Note(0.5, 1.0, 60, 80), Note(0.5, 2.0, 64, 70)]
    assert stitch([(0.0, 3.0, notes)]) == notes


@pytest.mark.slow
def test_transkun_on_windows_finds_the_notes_of_the_whole_file(tmp_path):
    """A 50 s recording the model never saw, in 20 s windows (4 of them) and whole: the same notes."""
    from tasks.evaluation.scores import note_onset_prf
    from tasks.samples.piano import make_piano_recordings
    from tasks.labels.transcribe import get_transcriber, read_midi, transcribe_wav

    (wav, mid), = make_piano_recordings(tmp_path, n=1, seconds=50.0, seed=104)
    model = get_transcriber("transkun", device="cpu")
    whole = transcribe_wav(model, wav, window_s=0)
    windowed = transcribe_wav(model, wav, window_s=20.0, overlap_s=8.0)
    truth = read_midi(mid)
    agreement = note_onset_prf(whole, windowed)["f1"]
    whole_f1, windowed_f1 = note_onset_prf(truth, whole)["f1"], note_onset_prf(truth, windowed)["f1"]
    print(f"windowed vs whole F1 {agreement:.4f}; against the truth: whole {whole_f1:.4f}, windowed {windowed_f1:.4f}")
    assert agreement >= 0.97
    assert windowed_f1 >= whole_f1 - 0.02
    assert windowed_f1 >= 0.9


def test_lean_interval_scorer_gives_transkuns_numbers():
    """The memory-lean scorer (tasks.labels.transcribe.lean_interval_scorer) against transkun's own forward."""
    import torch

    from tasks.labels.transcribe import get_transcriber

    model = get_transcriber("transkun", device="cpu").model
    scorer = model.scorer
    assert "forward" in vars(scorer)  # replaced on this instance when the transcriber was built
    torch.manual_seed(0)
    ctx = torch.randn(1, 88, 150, scorer.size)
    with torch.inference_mode():
        ours, ours_skip = scorer(ctx)
        theirs, theirs_skip = type(scorer).forward(scorer, ctx)
    assert ours.shape == theirs.shape == (150, 150, 1, 88)
    assert torch.equal(ours, theirs) and torch.equal(ours_skip, theirs_skip)
