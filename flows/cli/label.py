"""``sightsound label piano|violin INPUT``: pseudo-label one audio or video file, as a build would."""

from __future__ import annotations

import json

import click

from flows.cli.common import EXIT_OK
from flows.cli.options import InputPath, Refused, make, settings_options
from flows.settings import PianoLabeling
from tasks.labels.pitch import YinSettings

EXAMPLES = """Examples:

\b
  sightsound label piano demo/samples/videos/piano_000.mp4 --out piano_000.mid
  sightsound label piano take.wav --out take.mid --labeler onsets-frames --checkpoint runs/of/checkpoints/best.ckpt
  sightsound label violin violin_000.mp4 --out violin_000.csv --reference violin_000.mid
"""

input_argument = click.argument("input", type=InputPath())
reference_option = click.option("--reference", type=click.Path(exists=True, dir_okay=False),
                                help="the true MIDI: also print the scores against it")


@click.group(epilog=EXAMPLES)
def label():
    """Pseudo-label one audio or video file: piano notes (MIDI) or violin pitch (CSV)."""


@label.command("piano", epilog=EXAMPLES)
@input_argument
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="the MIDI file to write")
@settings_options(PianoLabeling)
@reference_option
def piano(input, out, reference, **params) -> int:
    """Transcribe the piano notes of INPUT into a MIDI file."""
    from tasks.labels.transcribe import get_transcriber, labeler_options, read_midi, transcribe_file, write_midi

    s = make(PianoLabeling, params)
    try:
        options = labeler_options(s.labeler, s.device, s.checkpoint)
    except ValueError as exc:
        raise Refused(exc) from None
    notes = transcribe_file(input, get_transcriber(s.labeler, **options), s.label_window_s)
    write_midi(notes, out)
    click.echo(f"{len(notes)} notes -> {out}")
    if reference:
        from tasks.evaluation.scores import note_onset_prf

        click.echo(json.dumps({"note_onset": note_onset_prf(read_midi(reference), notes)}))
    return EXIT_OK


@label.command("violin", epilog=EXAMPLES)
@input_argument
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="the CSV to write (time,midi,hz,confidence)")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=100.0, show_default=True,
              help="analysis frames per second")
@settings_options(YinSettings)
@reference_option
def violin(input, out, rate, reference, **params) -> int:
    """Track the violin pitch of INPUT with aubio yinfft, one row per analysis frame."""
    from tasks.labels.pitch import label_file

    if reference and rate != 100:
        raise Refused("--reference scores at the default --rate 100")
    track = label_file(input, out, rate, make(YinSettings, params))
    click.echo(f"{len(track['time'])} frames ({int(track['voiced'].sum())} voiced) -> {out}")
    if reference:
        from tasks.evaluation.audit import melody_scores, true_pitch_hz

        scores = melody_scores(true_pitch_hz(reference, track["time"]), track["hz"] * track["voiced"])
        click.echo(json.dumps({"melody": {k: float(v) for k, v in scores.items()}}))
    return EXIT_OK
