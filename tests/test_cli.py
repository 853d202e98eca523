"""The command line: help everywhere, one-line refusals, flags made from the settings, the progress display."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from flows.cli import cli, main
from flows.cli.options import _leaves, flag
from flows.settings import PianoBuild, ViolinBuild, VoxCelebBuild
from tasks.training.onsets_frames import TrainSettings
from tasks.training.piano_onsets import PianoOnsetsSettings

ROOT = Path(__file__).resolve().parents[1]


def _leaf_commands(group=cli, path=()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _leaf_commands(command, path + (name,))
        else:
            yield path + (name,), command


LEAVES = sorted(p for p, _ in _leaf_commands())


def test_the_command_tree_is_nested_with_the_old_spellings_hidden():
    assert {"build pianoyt", "build violinyt", "build voxceleb", "label piano", "label violin",
            "samples piano", "train onsets-frames", "evaluate transcription", "audit violin", "demo"} <= {
        " ".join(p) for p in LEAVES}
    for old in ("build-pianoyt", "build-violinyt", "build-voxceleb"):
        assert cli.commands[old].hidden
    assert "build-pianoyt" not in cli.get_help(click.Context(cli))


@pytest.mark.parametrize("path", [()] + sorted({p[:1] for p in LEAVES}) + LEAVES + [("build-pianoyt",)],
                         ids=lambda p: " ".join(p) or "sightsound")
def test_help_works_at_every_level(path, capsys):
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Usage: sightsound {' '.join(path)}".rstrip())
    if path and path[0] not in ("env",):
        assert "Example" in out, "every command group shows examples"


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_a_bad_flag_is_one_line_and_exit_2(path, capsys):
    assert main([*path, "--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No such option" in err and err.startswith("error: sightsound"), err


def test_missing_files_and_bad_values_are_one_line_without_a_traceback(tmp_path):
    cases = [
        (["build", "pianoyt", "--manifest", str(tmp_path / "nope.csv"), "--data-root", str(tmp_path)],
         "no such file or folder"),
        (["label", "piano", str(tmp_path / "nope.wav"), "--out", str(tmp_path / "o.mid")], "no such file"),
        (["build-violinyt", "--data-root", str(tmp_path)], "give exactly one of --manifest"),
        (["build", "violinyt", "--manifest", __file__, "--data-root", str(tmp_path), "--min-midi", "300"],
         "--min-midi: Input should be less than or equal to 127"),
        (["build", "pianoyt", "--manifest", __file__, "--data-root", str(tmp_path), "--crop-reference", "12x"],
         "is not WIDTHxHEIGHT"),
        (["build", "pianoyt", "--manifest", __file__, "--data-root", str(tmp_path), "--label-window", "3"],
         "--label-window: a label window must be 0"),
        (["build", "pianoyt", "--manifest", __file__, "--data-root", str(tmp_path), "--runner", "bogus"],
         "unknown task runner"),
        (["train", "onsets-frames", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--batch-size", "0"],
         "--batch-size: Input should be greater than or equal to 1"),
        (["samples", "piano", "--out", str(tmp_path / "s"), "--seconds", "2"], "seconds must exceed 2.0"),
        (["demo", "--out", str(tmp_path / "d"), "--seconds", "1.5"], "seconds must exceed 2.0"),
    ]
    for argv, expected in cases:
        proc = subprocess.run([sys.executable, "-m", "flows.cli", *argv], capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert proc.stderr.count("\n") == 1 and expected in proc.stderr, (argv, proc.stderr)
        assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("settings, path", [(PianoBuild, ("build", "pianoyt")), (ViolinBuild, ("build", "violinyt")),
                                            (VoxCelebBuild, ("build", "voxceleb")),
                                            (TrainSettings, ("train", "onsets-frames")),
                                            (PianoOnsetsSettings, ("train", "piano-onsets"))], ids=lambda x: str(x))
def test_every_setting_is_a_flag_with_the_settings_default(settings, path):
    command = cli
    for name in path:
        command = command.commands[name]
    options = {o.opts[0]: o for o in command.params if isinstance(o, click.Option)}
    for (*_, name), field in _leaves(settings):
        option = options.get(flag(name, field)) or options.get(f"{flag(name, field)}")
        assert option is not None, f"{settings.__name__}.{name} has no flag"
        assert option.help == field.description
        if not field.is_required():
            assert option.default == field.get_default(call_default_factory=True), name


def test_every_sightsound_variable_is_declared_in_one_module():
    from tasks.environment import VARIABLES

    named, reads = set(), []
    for path in [*ROOT.glob("flows/**/*.py"), *ROOT.glob("tasks/**/*.py"), *ROOT.glob("models/**/*.py")]:
        text = path.read_text()
        named |= set(re.findall(r"(?<![A-Z_])SIGHTSOUND_[A-Z_]+[A-Z]", text))  # not _SIGHTSOUND_COMPLETE (Click)
        if path.name != "environment.py" and re.search(r"environ[^\n]{0,12}[\"']SIGHTSOUND_", text):
            reads.append(str(path.relative_to(ROOT)))
    assert named <= set(VARIABLES), named - set(VARIABLES)
    assert not reads, f"read through tasks.environment.get instead: {reads}"
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "env"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and all(name in proc.stdout for name in VARIABLES)


def _events():
    from flows.progress import Event

    yield Event("build-x", "acquire", "start", total=3)
    yield Event("build-x", "acquire", "unit", unit="a")
    yield Event("build-x", "acquire", "unit", unit="b", ok=False, error="404")
    yield Event("build-x", "acquire", "unit", unit="c")
    yield Event("build-x", "acquire", "end")


def test_plain_progress_lines_have_no_control_codes():
    from flows.cli.display import PlainLines

    out = io.StringIO()
    show = PlainLines(out)
    for e in _events():
        show(e)
    lines = out.getvalue().splitlines()
    assert lines[0] == "build-x acquire: 0/3 done, 0 failed, started"
    assert re.fullmatch(r"build-x acquire: 2/3 done, 1 failed, finished in 0:00:0\d", lines[-1]), lines
    assert "\x1b" not in out.getvalue()


def test_the_live_table_counts_done_and_failed_per_stage():
    from rich.console import Console

    from flows.cli.display import LiveTable

    table = LiveTable("build-x", console=Console(file=io.StringIO(), force_terminal=True, width=120))
    with table.running():
        for e in _events():
            table(e)
    task = table.progress.tasks[0]
    assert (task.completed, task.total, task.fields["done"], task.fields["failed"]) == (3, 3, 2, 1)
    assert "\x1b[" in table.progress.console.file.getvalue()  # drawn for a terminal
