"""``sightsound build pianoyt|violinyt|voxceleb``: a manifest to shards, through the build flows.

Each command's options are the fields of its flow's settings (:mod:`flows.settings`);
the input is read once here, so a bad manifest is refused (exit 2) before
Prefect starts.  The flow then reads it again, as a deployment run would.
"""

from __future__ import annotations

import click

from flows.cli.common import run_build, runner_option, use_runner
from flows.cli.options import Refused, make, settings_options
from flows.settings import PianoBuild, ViolinBuild, VoxCelebBuild

EXAMPLES = """Examples:

\b
  sightsound build pianoyt --manifest demo/samples/manifest.csv --data-root demo/data
  sightsound build violinyt --urmp URMP/ --data-root data --runner processes:4
  sightsound build voxceleb --metadata vox1_test_txt.zip --data-root data --detector cnn

Exit codes: 0 every video built; 3 some failed (see the status table); 2 refused before any work.
"""


@click.group(epilog=EXAMPLES)
def build():
    """Build a dataset's Parquet shards from its manifest (a Prefect flow run)."""


def _refuse_bad_input(read, *args):
    """``read(*args)``; a ManifestError or ValueError becomes a refusal (one line, exit 2)."""
    from tasks.datasets.manifest import ManifestError

    try:
        return read(*args)
    except (ManifestError, ValueError) as exc:
        raise Refused(exc) from None


def _check_pianoyt(s: PianoBuild) -> None:
    from tasks.datasets.manifest import read_pianoyt
    from tasks.labels.transcribe import labeler_options

    _refuse_bad_input(read_pianoyt, s.manifest, s.crop_reference)
    _refuse_bad_input(labeler_options, s.labeler, s.device, s.checkpoint)
    if s.av_offset:
        from tasks.training.av_sync import load_net

        _refuse_bad_input(load_net, s.av_offset)  # a checkpoint of another model


def _check_violinyt(s: ViolinBuild) -> None:
    from tasks.datasets.manifest import read_violin
    from tasks.datasets.urmp import read_urmp

    if s.urmp:
        _refuse_bad_input(lambda: read_urmp(s.urmp, crop_reference=s.crop_reference))
    else:
        _refuse_bad_input(read_violin, s.manifest, s.crop_reference)


def _check_voxceleb(s: VoxCelebBuild) -> None:
    from tasks.datasets.voxceleb import read_metadata

    utts = _refuse_bad_input(read_metadata, s.metadata, s.convention, s.sources)
    click.echo(f"{len(utts)} utterances, boxes read as {utts[0].units}")


def _command(dataset: str, settings_class, check) -> None:
    """``build <dataset>``: flags from ``settings_class``, ``check(settings)`` before flow ``build-<dataset>``."""

    @build.command(dataset, epilog=EXAMPLES, help=settings_class.__doc__.replace("``", ""))
    @settings_options(settings_class)
    @runner_option
    def command(runner, **params) -> int:
        settings = make(settings_class, params)
        use_runner(runner)
        check(settings)
        return run_build(f"build_{dataset}", f"build-{dataset}", settings, runner)


_command("pianoyt", PianoBuild, _check_pianoyt)
_command("violinyt", ViolinBuild, _check_violinyt)
_command("voxceleb", VoxCelebBuild, _check_voxceleb)
