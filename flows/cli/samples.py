"""``sightsound samples piano|violin|violin-recordings|violin-hard|faces|piano-audio``: generated sample sets in the published formats."""

from __future__ import annotations

from pathlib import Path

import click

from flows.cli.common import EXIT_OK
from flows.cli.options import Refused

EXAMPLES = """Examples:

\b
  sightsound samples piano --out demo/samples --seed 7
  sightsound samples violin --out violin-samples --videos 3 --seconds 20 --seed 5
  sightsound samples violin-recordings --out violin-recordings --recordings 6 --seed 100
  sightsound samples violin-hard --out violin-hard --recordings 8 --seconds 20 --seed 300
  sightsound samples faces --out face-samples --identities 3 --utterances 2
  sightsound samples piano-audio --out rendered --pieces 48
"""

out_option = click.option("--out", required=True, type=click.Path(file_okay=False), help="folder to write")
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="random seed")


def _videos(command):
    command = click.option("--videos", type=click.IntRange(1), default=3, show_default=True,
                           help="videos to make")(command)
    return click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
                        help="length of each video")(command)


@click.group(epilog=EXAMPLES)
def samples():
    """Generate a sample set: rendered music or faces, as videos with a manifest."""


def _offsets(ctx, param, value):
    if value is None:
        return None
    try:
        parts = [float(v) for v in str(value).split(",")]
        if len(parts) not in (1, 2) or (len(parts) == 2 and parts[0] > parts[1]):
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"{value!r} is not MS or LOW,HIGH (milliseconds, low <= high)") from None
    return parts[0] if len(parts) == 1 else tuple(parts)


@samples.command("piano", epilog=EXAMPLES)
@out_option
@_videos
@seed_option
@click.option("--av-offset-ms", callback=_offsets, metavar="MS|LOW,HIGH",
              help="delay each video's audio by MS, or by its own whole ms drawn from LOW..HIGH "
                   "(positive: the sound after the picture); recorded in OUT/av_offsets.csv")
def piano(out, videos, seconds, seed, av_offset_ms) -> int:
    """Piano videos (a drawn keyboard playing rendered MIDI) and their PianoYT manifest."""
    from tasks.samples.piano import make_piano_samples

    try:
        manifest = make_piano_samples(Path(out), videos=videos, seconds=seconds, seed=seed,
                                      av_offset_ms=av_offset_ms)
    except ValueError as exc:  # too short for the silent pads, say
        raise Refused(exc) from None
    click.echo(f"wrote {videos} piano videos; manifest: {manifest}")
    return EXIT_OK


@samples.command("violin", epilog=EXAMPLES)
@out_option
@_videos
@seed_option
def violin(out, videos, seconds, seed) -> int:
    """Violin videos (a drawn violinist playing rendered MIDI) and their manifest."""
    from tasks.samples.violin import make_violin_samples

    try:
        manifest = make_violin_samples(Path(out), videos=videos, seconds=seconds, seed=seed)
    except ValueError as exc:
        raise Refused(exc) from None
    click.echo(f"wrote {videos} violin videos; manifest: {manifest}")
    return EXIT_OK


def _recordings(count: int, seconds: click.FloatRange, seed: int, seed_help: str = "random seed"):
    """``--recordings``, ``--seconds`` and ``--seed`` of the audio-only violin sets."""
    def decorate(command):
        for option in reversed((
            click.option("--recordings", type=click.IntRange(1), default=count, show_default=True,
                         help="recordings to make"),
            click.option("--seconds", type=seconds, default=20.0, show_default=True, help="length of each recording"),
            click.option("--seed", type=int, default=seed, show_default=True, help=seed_help),
        )):
            command = option(command)
        return command
    return decorate


@samples.command("violin-recordings", epilog=EXAMPLES)
@out_option
@_recordings(6, click.FloatRange(min=2.0, min_open=True), 100)
def violin_recordings(out, recordings, seconds, seed) -> int:
    """Audio-only violin recordings of melodies the sample videos do not play (Merlin SoundFont, room, noise)."""
    from tasks.samples.violin import make_violin_recordings

    try:
        pairs = make_violin_recordings(Path(out), n=recordings, seconds=seconds, seed=seed)
    except (ValueError, FileNotFoundError) as exc:
        raise Refused(exc) from None
    click.echo(f"wrote {len(pairs)} violin recordings with their true MIDI in {out}")
    return EXIT_OK


@samples.command("violin-hard", epilog=EXAMPLES)
@out_option
@_recordings(8, click.FloatRange(min=4.0), 300, "random seed (the audit's test set is 300)")
def violin_hard(out, recordings, seconds, seed) -> int:
    """Violin recordings unlike the sample set's (FluidSynth, Debian's SoundFonts, rooms, noise) and their truth."""
    from tasks.samples.violin_hard import fluidsynth_available, make_violin_hard_set

    missing = fluidsynth_available()
    if missing:
        raise Refused(missing)
    pairs = make_violin_hard_set(Path(out), n=recordings, seconds=seconds, seed=seed)
    click.echo(f"wrote {len(pairs)} violin recordings with their true MIDI and pitch per frame in {out}")
    return EXIT_OK


@samples.command("faces", epilog=EXAMPLES)
@out_option
@click.option("--identities", type=click.IntRange(1), default=3, show_default=True, help="people")
@click.option("--utterances", type=click.IntRange(1), default=2, show_default=True, help="utterances per identity")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True,
              help="length of each utterance")
@click.option("--pitch", type=click.FloatRange(0, 15), default=0.0, show_default=True,
              help="nod the heads by up to this many degrees (0: yaw and roll only, the sets measured so far)")
@click.option("--motion", type=click.FloatRange(0, 2), default=1.0, show_default=True,
              help="scale how far the heads roll and turn (1: the sets measured so far)")
@seed_option
def faces(out, identities, utterances, seconds, pitch, motion, seed) -> int:
    """Talking-face videos and VoxCeleb metadata (txt zip and CSV) for them."""
    from tasks.samples.faces import make_face_samples

    manifest = make_face_samples(Path(out), identities=identities, utterances=utterances, seconds=seconds, seed=seed,
                                 pitch_degrees=pitch, motion=motion)
    click.echo(f"wrote {identities} identities x {utterances} utterances; manifest: {manifest}")
    click.echo(f"build it: sightsound build voxceleb --metadata {manifest} --data-root DATA")
    click.echo(f"      or: sightsound build voxceleb --metadata {Path(out) / 'vox1.zip'} "
               f"--sources '{Path(out).resolve() / 'videos'}/{{id}}.mp4' --data-root DATA")
    return EXIT_OK


@samples.command("piano-audio", epilog=EXAMPLES)
@out_option
@click.option("--pieces", type=click.IntRange(1), default=48, show_default=True, help="pieces to render")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="length of each piece")
@seed_option
@click.option("--soundfont", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="a SoundFont to render with (repeat for several; default TimGM6mb)")
@click.option("--no-augment", is_flag=True, help="no gain/EQ/room/noise augmentation")
def piano_audio(out, pieces, seconds, seed, soundfont, no_augment) -> int:
    """Rendered piano pieces with their MIDI, in MAESTRO's layout (training data for onsets-frames)."""
    from tasks.samples.piano_audio import make_piano_audio

    try:
        csv_path = make_piano_audio(Path(out), pieces=pieces, seconds=seconds, seed=seed,
                                    soundfonts=list(soundfont) or None, augmentation=not no_augment,
                                    log=lambda m: click.echo(m))
    except (ValueError, FileNotFoundError) as exc:
        raise Refused(exc) from None
    click.echo(f"wrote {pieces} rendered pieces in MAESTRO's layout: {csv_path}")
    return EXIT_OK
