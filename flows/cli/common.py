"""What the command modules share: exit codes, Prefect's environment, the runner option, the build report."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from flows.cli.options import Refused

EXIT_OK, EXIT_ERROR, EXIT_REFUSED, EXIT_SOME_FAILED = 0, 1, 2, 3


def prefect_env(data_root: str | Path, live: bool = False) -> None:
    """Keep Prefect's cached task results beside the data they describe.

    Must run before prefect is imported: Prefect reads its settings then.
    Users who set these variables themselves keep their values.  With the
    live display on (``live``), Prefect's console shows warnings and errors
    only (its API still gets every log line), worker processes included.
    """
    from tasks.store import storage

    local = Path(data_root) if storage.is_local(data_root) else storage.scratch_dir("prefect")
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(local / ".prefect" / "results"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    if live:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    quiet_server()


def quiet_server() -> None:
    """The temporary local server otherwise tries to send telemetry at start; and give it time to start.

    Prefect waits 20 s for its temporary server by default; on a busy 2-core
    machine (a build beside two trainings) it took longer, and the command
    died with "Timed out while attempting to connect to ephemeral Prefect API
    server" before any work.  120 s; a user's own value is kept.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def runner_option(command):
    from flows.runners import ENV_VAR, HELP

    return click.option("--runner", default=None, metavar="SPEC",
                        help=f"where the tasks run: {HELP} (default: ${ENV_VAR}, else threads)")(command)


def use_runner(spec: str | None) -> str | None:
    """Check ``--runner`` before Prefect starts; the flow modules read $SIGHTSOUND_RUNNER at import."""
    from flows.runners import ENV_VAR, parse_spec

    try:
        parse_spec(spec)
    except ValueError as exc:
        raise Refused(exc) from None
    if spec:
        os.environ[ENV_VAR] = spec
    return spec


def print_table(rows: list[dict]) -> None:
    from tasks.datasets.records import format_table

    click.echo(format_table(rows))


def run_build(name: str, flow_name: str, settings, runner: str | None) -> int:
    """Run build flow ``flow_name`` of module ``flows.<name>`` with the live display; print its summary."""
    import importlib

    from flows.cli.display import showing, wants_live

    prefect_env(settings.data_root, live=wants_live())  # (the caller checked the runner: use_runner)
    flow = getattr(importlib.import_module(f"flows.{name}"), name)
    from flows.runners import run_flow

    with showing(flow_name):
        result = run_flow(flow, runner, settings=settings)
    click.echo()
    click.echo(f"{flow_name}: {result['root']}")
    print_table(result["summary"])
    failed = [r for r in result["records"] if r["state"] != "done"]
    for r in failed:
        click.echo(f"  failed {r['video_id']} at {r['stage']}: {r['error']}")
    return EXIT_SOME_FAILED if failed else EXIT_OK


def echo_err(message: str) -> None:
    print(message, file=sys.stderr)
