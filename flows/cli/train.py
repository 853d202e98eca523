"""``sightsound train onsets-frames`` and ``sightsound describe onsets-frames``."""

from __future__ import annotations

import json

import click

from flows.cli.common import EXIT_OK, prefect_env
from flows.cli.options import Refused, make, settings_options
from tasks.training.onsets_frames import TrainSettings

EXAMPLES = """Examples:

\b
  sightsound samples piano-audio --out rendered --pieces 48
  sightsound train onsets-frames --data rendered --out runs/of --max-minutes 60
  sightsound train onsets-frames --data maestro-v3.0.0 --out runs/of-paper --config default --device cuda
  sightsound describe onsets-frames --config default
"""


@click.group(epilog=EXAMPLES)
def train():
    """Train a model (a Prefect flow run; resumes from OUT/last.pt)."""


@train.command("onsets-frames", epilog=EXAMPLES)
@settings_options(TrainSettings)
def onsets_frames(**params) -> int:
    """Onsets and Frames on a MAESTRO-layout folder (flow train-onsets-frames)."""
    from models.onsets_frames import CheckpointError
    from tasks.datasets.maestro import MaestroError, read_maestro
    from tasks.training.onsets_frames import check_resume

    settings = make(TrainSettings, params)
    try:
        read_maestro(settings.data)  # refuse a bad folder before Prefect starts
        check_resume(settings.out_dir, settings.config, settings.resume)  # and a last.pt it could not resume
    except (MaestroError, CheckpointError) as exc:
        raise Refused(exc) from None
    prefect_env(settings.out_dir)
    from flows.tempserver import guard
    from flows.train_onsets_frames import train_onsets_frames

    guard()  # Prefect's temporary server ends with this process
    click.echo(json.dumps(train_onsets_frames(settings=settings), indent=1))
    return EXIT_OK


@click.group(epilog=EXAMPLES)
def describe():
    """Print a model's layers and parameter count."""


@describe.command("onsets-frames", epilog=EXAMPLES)
@click.option("--config", default="default", type=click.Choice(["default", "small"]), show_default=True,
              help="model sizes: the paper's, or the small CPU one")
def describe_onsets_frames(config) -> int:
    """Onsets and Frames' layers and parameter count."""
    from models.onsets_frames import OnsetsFramesConfig, describe as text

    click.echo(text(OnsetsFramesConfig.named(config)))
    return EXIT_OK
