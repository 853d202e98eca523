"""``sightsound transcribe video|violin``: MIDI from a piano video, or pitch per frame from a violin video."""

from __future__ import annotations

import json

import click

from flows.cli.common import EXIT_OK
from flows.cli.options import InputPath, Refused, Size

EXAMPLES = """Example:

\b
  sightsound transcribe video piano.mp4 --crop 520,660,0,1280 --checkpoint runs/slope/checkpoints/best.ckpt \\\\
      --out piano.mid --audio piano.wav --figure piano.png --reference piano_true.mid
  sightsound transcribe violin violin.mp4 --crop 21,699,454,979 --checkpoint runs/violin/student-5/checkpoints/best.ckpt \\
      --out violin.csv --reference violin_true.mid
"""


class Crop(click.ParamType):
    """``MINY,MAXY,MINX,MAXX`` in the manifest's convention (pixels of the crop reference frame)."""

    name = "MINY,MAXY,MINX,MAXX"

    def convert(self, value, param, ctx):
        try:
            box = tuple(int(v) for v in str(value).split(","))
            if len(box) != 4 or not (0 <= box[0] < box[1] and 0 <= box[2] < box[3]):
                raise ValueError
            return box
        except ValueError:
            self.fail(f"{value!r} is not MINY,MAXY,MINX,MAXX with min < max, e.g. 520,660,0,1280", param, ctx)


@click.group(epilog=EXAMPLES)
def transcribe():
    """Transcribe a video with a trained visual model."""


@transcribe.command("video", epilog=EXAMPLES)
@click.argument("video", type=InputPath())
@click.option("--crop", required=True, type=Crop(), help="the keyboard box, MINY,MAXY,MINX,MAXX")
@click.option("--checkpoint", required=True, type=InputPath(), help="a checkpoint of train piano-onsets")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="the MIDI file to write")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="onset threshold (default: the one evaluate piano-onsets chose for the run, else 0.4)")
@click.option("--sigma", type=click.FloatRange(0, 50),
              help="Gaussian filter over time, frames (default: the run's chosen one, else the thesis's 5)")
@click.option("--crop-reference", type=Size(), default="1280x720", show_default=True,
              help="WIDTHxHEIGHT of the frame the crop refers to")
@click.option("--audio", type=click.Path(dir_okay=False), help="also render the MIDI to this WAV (SoundFont)")
@click.option("--figure", type=click.Path(dir_okay=False), help="also draw the piano roll and spectrograms (PNG)")
@click.option("--reference", type=InputPath(), help="the true MIDI: score against it, and draw it")
@click.option("--soundfont", type=InputPath(), help="SoundFont for --audio and --figure (default TimGM6mb)")
def video(video, crop, checkpoint, out, threshold, sigma, crop_reference, audio, figure, reference, soundfont) -> int:
    """The notes a trained visual onset model sees in VIDEO, as MIDI (thesis ch. 6, "MIDI from video")."""
    from tasks.evaluation.piano_onsets import transcribe_video
    from tasks.media.decode import MediaError
    from tasks.training.trainer import CheckpointError

    try:
        result = transcribe_video(video, crop, checkpoint, out, threshold=threshold, sigma=sigma,
                                  crop_reference=crop_reference,
                                  audio=audio, figure=figure, reference=reference, soundfont=soundfont)
    except (CheckpointError, MediaError, ValueError) as exc:
        raise Refused(exc) from None
    click.echo(json.dumps(result, indent=1))
    return EXIT_OK


@transcribe.command("violin", epilog=EXAMPLES)
@click.argument("video", type=InputPath())
@click.option("--crop", required=True, type=Crop(), help="the violinist's box, MINY,MAXY,MINX,MAXX")
@click.option("--checkpoint", required=True, type=InputPath(), help="a student checkpoint of train violin-pitch")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="the CSV to write (time, midi, hz)")
@click.option("--crop-reference", type=Size(), default="1280x720", show_default=True,
              help="WIDTHxHEIGHT of the frame the crop refers to")
@click.option("--reference", type=InputPath(), help="the true MIDI: score against it (RPA, RPA tol, PA, ACA, ACE)")
def violin(video, crop, checkpoint, out, crop_reference, reference) -> int:
    """The pitch a trained visual student sees in VIDEO, per frame (thesis ch. 5), as CSV."""
    from tasks.evaluation.violin_pitch import transcribe_violin
    from tasks.media.decode import MediaError
    from tasks.training.trainer import CheckpointError

    try:
        result = transcribe_violin(video, crop, checkpoint, out, crop_reference=crop_reference, reference=reference)
    except (CheckpointError, MediaError, ValueError) as exc:
        raise Refused(exc) from None
    click.echo(json.dumps(result, indent=1))
    return EXIT_OK


AV_OFFSET_EXAMPLE = """Example:

\b
  sightsound av-offset piano.mp4 --crop 520,660,0,1280 --checkpoint runs/av-sync/checkpoints/best.ckpt --figure curve.png
"""


@click.command("av-offset", epilog=AV_OFFSET_EXAMPLE)
@click.argument("video", type=InputPath())
@click.option("--crop", required=True, type=Crop(), help="the keyboard box, MINY,MAXY,MINX,MAXX")
@click.option("--checkpoint", required=True, type=InputPath(), help="a checkpoint of train av-sync")
@click.option("--crop-reference", type=Size(), default="1280x720", show_default=True,
              help="WIDTHxHEIGHT of the frame the crop refers to")
@click.option("--max-shift", type=click.FloatRange(0, 10, min_open=True), default=2.0, show_default=True,
              help="search audio shifts of +- this many seconds")
@click.option("--figure", type=click.Path(dir_okay=False), help="also draw the video's distance curve (PNG)")
def av_offset(video, crop, checkpoint, crop_reference, max_shift, figure) -> int:
    """The audio-visual offset of a piano VIDEO by the sync network (thesis ch. 7): seconds, frames, confidence.

    A positive offset means the sound comes after the picture.
    """
    from tasks.evaluation.av_sync import video_offset
    from tasks.media.decode import MediaError
    from tasks.training.trainer import CheckpointError

    try:
        result = video_offset(video, crop, checkpoint, crop_reference=crop_reference, max_shift=max_shift,
                              figure=figure)
    except (CheckpointError, MediaError, ValueError) as exc:
        raise Refused(exc) from None
    click.echo(f"offset {result['offset_s']:+.3f} s ({result['offset_frames']:+d} frames at {result['fps']:g} fps), "
               f"confidence {result['confidence']:.3f}")
    click.echo(json.dumps(result, indent=1))
    return EXIT_OK
