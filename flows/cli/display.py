"""The live progress display of a build: per stage, videos done / failed / total, elapsed and ETA.

In a terminal it is a Rich progress table redrawn in place, with Prefect's
warnings (a failed video, say) printed above it; piped to a file it is plain
lines, one when a stage starts, at most one every :data:`PLAIN_EVERY_S`
seconds while it runs and one when it ends, with no control codes.  Fed by
:mod:`flows.progress` events from :class:`flows.stages.Stages`.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager

from flows import progress

PLAIN_EVERY_S = 10.0


def wants_live() -> bool:
    """Whether stdout is a terminal that can redraw (not piped, not TERM=dumb)."""
    from rich.console import Console

    console = Console(file=sys.stdout)
    return console.is_terminal and not console.is_dumb_terminal


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class PlainLines:
    """Progress as plain lines (``build-pianoyt label: 2/3 done, 0 failed, 0:00:41, eta 0:00:20``)."""

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self.stages: dict[str, dict] = {}

    def _line(self, flow: str, stage: str, s: dict, final: bool = False) -> None:
        elapsed = time.monotonic() - s["start"]
        finished = s["done"] + s["failed"]
        if final:
            tail = f"finished in {_clock(elapsed)}"
        elif finished:
            tail = f"{_clock(elapsed)}, eta {_clock(elapsed / finished * (s['total'] - finished))}"
        else:
            tail = "started"
        print(f"{flow} {stage}: {s['done']}/{s['total']} done, {s['failed']} failed, {tail}", file=self.out,
              flush=True)
        s["printed"] = time.monotonic()

    def __call__(self, e: progress.Event) -> None:
        if e.kind == "start":
            s = self.stages[e.stage] = {"total": e.total, "done": 0, "failed": 0, "start": time.monotonic()}
            self._line(e.flow, e.stage, s)
            return
        s = self.stages[e.stage]
        if e.kind == "end":
            self._line(e.flow, e.stage, s, final=True)
            return
        s["done" if e.ok else "failed"] += 1
        if time.monotonic() - s["printed"] >= PLAIN_EVERY_S:
            self._line(e.flow, e.stage, s)


class LiveTable:
    """A Rich progress table, one row per stage, redrawn in place."""

    def __init__(self, flow: str, console=None):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.flow = flow
        self.progress = Progress(
            TextColumn("{task.description:<28}"), BarColumn(bar_width=30),
            TextColumn("[green]{task.fields[done]:>5} done[/] [red]{task.fields[failed]:>4} failed[/] "
                       "of {task.total:.0f}"),
            TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            refresh_per_second=4, console=console,
        )
        self.tasks: dict[str, int] = {}
        self.counts: dict[str, list[int]] = {}

    def __call__(self, e: progress.Event) -> None:
        p = self.progress
        if e.kind == "start":
            self.counts[e.stage] = [0, 0]
            self.tasks[e.stage] = p.add_task(f"{self.flow} {e.stage}", total=max(e.total, 0), done=0, failed=0)
            return
        task = self.tasks[e.stage]
        if e.kind == "end":
            p.update(task, completed=sum(self.counts[e.stage]))
            p.stop_task(task)
            return
        self.counts[e.stage][0 if e.ok else 1] += 1
        done, failed = self.counts[e.stage]
        p.update(task, completed=done + failed, done=done, failed=failed)

    @contextmanager
    def running(self):
        """Show the table; Prefect's console log lines go above it meanwhile."""
        handlers = _prefect_console_handlers()
        consoles = [h.console for h in handlers]
        with self.progress:
            for h in handlers:
                h.console = self.progress.console
            try:
                yield
            finally:
                for h, c in zip(handlers, consoles):
                    h.console = c


def _prefect_console_handlers() -> list:
    try:
        from prefect.logging.handlers import PrefectConsoleHandler
    except ImportError:
        return []
    loggers = [logging.getLogger()] + [logging.getLogger(n) for n in list(logging.Logger.manager.loggerDict)]
    return list({id(h): h for lg in loggers for h in getattr(lg, "handlers", [])
                 if isinstance(h, PrefectConsoleHandler)}.values())


@contextmanager
def showing(flow: str, live: bool | None = None):
    """Show the progress of ``flow``'s stages while the block runs."""
    if live if live is not None else wants_live():
        table = LiveTable(flow)
        with table.running(), progress.listening(table):
            yield
    else:
        with progress.listening(PlainLines()):
            yield
