"""Progress events of a build, for whoever shows them (the CLI's live display, :mod:`flows.cli.display`).

:class:`flows.stages.Stages` calls :func:`emit` when a stage starts, when each
of its videos finishes (done or failed) and when the stage ends.  Listeners
run in the flow's process, so a deployment run on a worker (no listener)
reports through its Prefect progress artifact only.  A listener that raises
is dropped, never the build.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Event:
    flow: str  # "build-pianoyt"
    stage: str  # a task name: "acquire", "label", ...
    kind: str  # "start" | "unit" | "end"
    total: int = 0  # start: units this stage runs (videos, or downloads for VoxCeleb)
    unit: str = ""  # unit: which video
    ok: bool = True  # unit: finished without failing
    error: str = ""  # unit: the first line of the failure


_listeners: list[Callable[[Event], None]] = []
_lock = threading.Lock()


@contextmanager
def listening(listener: Callable[[Event], None]):
    """Call ``listener(event)`` for every event emitted inside the block."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)


def emit(event: Event) -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(event)
        except Exception:  # a broken display must not break a 20-hour build
            with _lock:
                if listener in _listeners:
                    _listeners.remove(listener)
