"""``sightsound drive x2face``: one source face driven by a driving image or a head pose."""

from __future__ import annotations

import json

import click

from flows.cli.common import EXIT_OK
from flows.cli.options import Refused

EXAMPLES = """Examples:

\b
  sightsound drive x2face --source face.png --driving other.png --checkpoint runs/x2face/x2face-stage1/checkpoints/best.ckpt --out driven.png
  sightsound drive x2face --source face.png --pose 10,0,-5 --pose-maps RESULTS/x2face-pose-maps-0.pt --checkpoint C --out posed.png
"""


def _pose(ctx, param, value):
    if value is None:
        return None
    try:
        angles = [float(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: three numbers R,P,Y in degrees") from None
    if len(angles) != 3:
        raise click.BadParameter(f"{value!r}: three numbers R,P,Y in degrees (roll, pitch, yaw)")
    return angles


@click.group(epilog=EXAMPLES)
def drive():
    """Drive a face with a trained model."""


@drive.command("x2face", epilog=EXAMPLES)
@click.option("--source", required=True, type=click.Path(dir_okay=False), help="the source face crop (an image)")
@click.option("--driving", type=click.Path(dir_okay=False), help="a driving face crop (same or another identity)")
@click.option("--pose", callback=_pose, help="drive to this head pose instead: roll,pitch,yaw in degrees")
@click.option("--pose-maps", type=click.Path(dir_okay=False),
              help="f(v->p) and f(p->v) for --pose (x2face-pose-maps-N.pt, written by evaluate faces)")
@click.option("--form", default="eq1", type=click.Choice(["eq1", "difference"]), show_default=True,
              help="--pose: the thesis's eq. (1), or the form that cancels f(p->v)'s constant")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="an X2Face checkpoint")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG: source, embedded face, driving, generated")
def drive_x2face(source, driving, pose, pose_maps, form, checkpoint, out) -> int:
    """X2Face: the source's embedded face sampled by a driving frame's (or a pose's) driving vector."""
    from tasks.training.trainer import CheckpointError
    from tasks.training.x2face import drive_image

    if (driving is None) == (pose is None):
        raise Refused(ValueError("give exactly one of --driving IMG or --pose R,P,Y"))
    if pose is not None and not pose_maps:
        raise Refused(ValueError("--pose needs --pose-maps (x2face-pose-maps-N.pt, written by evaluate faces)"))
    try:
        result = drive_image(checkpoint, source, out, driving=driving, pose=pose, pose_maps=pose_maps, form=form)
    except (ValueError, CheckpointError) as exc:
        raise Refused(exc) from None
    click.echo(json.dumps(result, indent=1))
    return EXIT_OK
