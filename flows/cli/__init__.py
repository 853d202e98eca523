"""The ``sightsound`` command line: one module per command group, each parsing and calling one flow or task.

\b
  samples  piano | violin | faces | piano-audio     flows/cli/samples.py
  build    pianoyt | violinyt | voxceleb            flows/cli/build.py
  label    piano | violin                           flows/cli/label.py
  evaluate pianoyt-labels | voxceleb-crops | transcription | piano-onsets | violin-pitch | faces | av-sync |
           av-mlp,
           and audit
                                                    flows/cli/evaluate.py
  train    onsets-frames | piano-onsets | violin-pitch | fabnet | x2face | keypoints | class-embedding |
           av-sync | av-mlp, and describe
                                                    flows/cli/train.py
  transcribe video | violin, and av-offset          flows/cli/transcribe.py
  drive    x2face                                   flows/cli/drive.py
  demo, env, regenerate                             here

``build-pianoyt``, ``build-violinyt`` and ``build-voxceleb`` (the spellings
of the previous release) still work, hidden from ``--help``; they go in the
next one.  Errors of input (a bad flag, a missing file, a refused manifest)
are one line on stderr and exit code 2; see :data:`EXIT_CODES`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import click

from flows.cli.build import build
from flows.cli.drive import drive
from flows.cli.common import EXIT_ERROR, EXIT_OK, EXIT_REFUSED, EXIT_SOME_FAILED, echo_err, prefect_env, run_build
from flows.cli.evaluate import audit, evaluate
from flows.cli.label import label
from flows.cli.options import Refused
from flows.cli.samples import samples
from flows.cli.train import describe, train
from flows.cli.transcribe import av_offset, transcribe

EXIT_CODES = {EXIT_OK: "every video built", EXIT_SOME_FAILED: "the build finished but some videos failed",
              EXIT_REFUSED: "input refused before any work started", EXIT_ERROR: "an unexpected error"}

HELP = """Rebuild the sight-to-sound datasets and models of the VGG papers (PianoYT, VnYT, VoxCeleb).

\b
Quick start:
  sightsound demo                      make the piano sample set and build it
  sightsound build pianoyt --help      the options of a build

Shell completion (bash; zsh and fish alike): eval "$(_SIGHTSOUND_COMPLETE=bash_source sightsound)"
"""

EPILOG = "Exit codes: " + "; ".join(f"{k} {v}" for k, v in sorted(EXIT_CODES.items()))


@click.group(help=HELP, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"],
                                                         "max_content_width": 110})
def cli():
    pass


@cli.command(epilog="Example:\n\n\b\n  sightsound demo --out demo\n")
@click.option("--out", default="demo", show_default=True, type=click.Path(file_okay=False),
              help="folder for the sample set (OUT/samples) and the build (OUT/data)")
@click.option("--videos", type=click.IntRange(1), default=3, show_default=True, help="sample videos")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
              help="length of each video")
@click.option("--seed", type=int, default=7, show_default=True, help="random seed of the sample set")
@click.option("--device", default="auto", show_default=True, help="where the labeler runs: cpu, cuda or auto")
def demo(out, videos, seconds, seed, device) -> int:
    """Generate the piano sample set and build it (the README's quick start)."""
    from flows.cli.common import use_runner
    from flows.settings import PianoBuild
    from tasks.samples.piano import make_piano_samples

    use_runner(None)  # a bad $SIGHTSOUND_RUNNER is refused before any work
    out = Path(out).resolve()
    try:
        manifest = make_piano_samples(out / "samples", videos=videos, seconds=seconds, seed=seed)
    except ValueError as exc:
        raise Refused(exc) from None
    click.echo(f"sample set: {manifest}")
    settings = PianoBuild(manifest=str(manifest), data_root=str(out / "data"), device=device)
    return run_build("build_pianoyt", "build-pianoyt", settings, None)


@cli.command(epilog="Examples:\n\n\b\n  sightsound regenerate --profile sample --out R\n"
                    "  sightsound regenerate --profile sample --only piano-onsets --out R\n"
                    "  sightsound regenerate --profile sample --out R2 --check R\n"
                    "  sightsound regenerate --profile paper --published DOWNLOADS --dispatch deployments --out R\n\n"
                    "Exit status: 0 done; 2 refused before any work; 3 (with --check) a number moved beyond its "
                    "interval.")
@click.option("--profile", type=click.Choice(["sample", "tiny", "paper"]), default="sample", show_default=True,
              help="sample: the sample sets and small configs (this CPU); tiny: seconds, for tests; paper: the "
                   "published sets under --published, the papers' configs (GPUs; docs/regenerate.md)")
@click.option("--published", type=click.Path(file_okay=False), metavar="DIR",
              help="with --profile paper: the folder holding the downloaded sets (pianoyt/pianoyt.csv, maestro/, "
                   "violin/violin.csv, voxceleb/vox1_dev_txt.zip, mafl/, 300w/, vgg19/vgg19.pth; default "
                   "data_manifests/; docs/regenerate.md)")
@click.option("--only", "only", multiple=True, metavar="TABLE", help="regenerate this table only (repeat)")
@click.option("--out", default="RESULTS", show_default=True, type=click.Path(file_okay=False),
              help="folder the tables go to")
@click.option("--work", type=click.Path(file_okay=False), help="folder for data and runs (default OUT/work)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of every training")
@click.option("--check", "check", type=click.Path(file_okay=False), metavar="OLD_RESULTS",
              help="then compare every table with those in OLD_RESULTS: each number that moved beyond its interval "
                   "goes to OUT/check.md")
@click.option("--dispatch", type=click.Choice(["local", "deployments"]), default="local", show_default=True,
              help="local: train in this process; deployments: each wave of trainings at once as runs of their "
                   "training deployments (a Prefect server, GPU workers, a shared filesystem)")
@click.option("--parallel", type=click.IntRange(1), default=1, show_default=True,
              help="with --dispatch local: run up to N trainings of a wave at once, in child processes sharing the "
                   "cores (a time budget then buys fewer steps per run)")
def regenerate(profile, only, out, work, seed, check, dispatch, parallel, published) -> int:
    """Every results table: build the data, train (reusing unchanged runs), evaluate (flow regenerate-benchmarks)."""
    from tasks.benchmarks import plan

    try:
        plan(list(only), profile, published)
    except ValueError as exc:
        raise Refused(exc) from None
    out = Path(out).resolve()
    if check:
        old = Path(check).resolve()
        if old == out:
            raise Refused(f"--check {check}: the old results must be another folder than --out")
        if not old.is_dir() or not any(old.glob("*.parquet")):
            raise Refused(f"--check {check}: no results tables (*.parquet) there")
    prefect_env(Path(work).resolve() if work else out / "work")
    from flows.regenerate import regenerate_benchmarks
    from flows.tempserver import guard

    guard()  # Prefect's temporary server ends with this process
    report = regenerate_benchmarks(profile=profile, out=str(out), only=list(only), seed=seed,
                                   work=str(Path(work).resolve()) if work else None,
                                   check=str(Path(check).resolve()) if check else None, dispatch=dispatch,
                                   parallel=parallel, published=str(Path(published).resolve()) if published else None)
    for table, info in report["tables"].items():
        reused = sum(t["reused"] for t in info["trainings"].values())
        click.echo(f"{table}: {info['markdown']} ({reused} of {len(info['trainings'])} trainings reused, "
                   f"{info['wall_s']} s)")
    click.echo(f"regenerated in {report['wall_s']} s; report {report['report']}; {out / 'regenerate.json'}")
    if check:
        click.echo(f"check against {check}: {report['check']['moved']} numbers moved "
                   f"({report['check']['markdown']})")
        return EXIT_SOME_FAILED if report["check"]["moved"] else EXIT_OK
    return EXIT_OK


@cli.command()
def env() -> int:
    """List the SIGHTSOUND_* environment variables, their defaults and meanings."""
    from tasks.environment import VARIABLES

    for v in VARIABLES.values():
        click.echo(f"{v.name}={v.default}\n    {v.meaning}")
    return EXIT_OK


for group in (samples, build, label, evaluate, audit, train, describe, transcribe, drive, av_offset):
    cli.add_command(group)
for name, command in build.commands.items():  # the previous release's spellings
    alias = copy.copy(command)
    alias.hidden = True
    cli.add_command(alias, f"build-{name}")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code (errors of input: one line on stderr, 2)."""
    from models.onsets_frames import CheckpointError
    from tasks.datasets.manifest import ManifestError
    from tasks.store.storage import DataRootBusy

    try:
        code = cli.main(args=argv, prog_name="sightsound", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        where = f"{exc.ctx.command_path}: " if exc.ctx is not None else ""
        echo_err(f"error: {where}{_one_line(exc.format_message())}")
        return EXIT_REFUSED
    except click.ClickException as exc:
        echo_err(f"error: {_one_line(exc.format_message())}")
        return EXIT_REFUSED
    except click.Abort:
        echo_err("aborted")
        return 130
    except (Refused, DataRootBusy, ManifestError, CheckpointError) as exc:
        echo_err(f"error: {exc}")
        return EXIT_REFUSED
    return int(code or 0)
