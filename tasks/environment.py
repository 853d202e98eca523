"""Every ``SIGHTSOUND_*`` environment variable, with its meaning and default.

The one place they are named: code reads them through :func:`get`, which
refuses a name not listed here, and ``tests/test_settings.py`` checks that
no other module spells one out.  ``sightsound env`` prints this table.
Everything else a run takes is a typed setting of its flow
(:mod:`flows.settings`), not an environment variable.
"""

from __future__ import annotations

import os
from typing import NamedTuple


class Variable(NamedTuple):
    name: str
    default: str  # "" means unset
    meaning: str


VARIABLES = {v.name: v for v in (
    Variable("SIGHTSOUND_RUNNER", "threads",
             "task runner of a build run by a deployment or when --runner is not given "
             "(flows/runners.py: threads[:N], processes[:N], dask[:N], tcp://HOST:PORT, ray[:N], ray://HOST:PORT)"),
    Variable("SIGHTSOUND_WORKER_THREADS", "1",
             "torch/OpenMP/BLAS threads in each worker process of the processes, dask and ray runners"),
    Variable("SIGHTSOUND_CACHE_DIR", "",
             "folder of Prefect's cache keys; default <data root>/.prefect/cache-keys for a local root, "
             "else beside Prefect's result storage (share it between machines that share a remote root)"),
    Variable("SIGHTSOUND_SCRATCH", "",
             "local scratch folder for copies of remote files; default <tmp>/sightsound-scratch"),
    Variable("SIGHTSOUND_CRASH_BEFORE", "",
             "tests only: SIGKILL the process just before its N-th durable write"),
    Variable("SIGHTSOUND_CRASH_AFTER", "",
             "tests only: SIGKILL the process just after its N-th durable write"),
    Variable("SIGHTSOUND_CRASH_IN", "",
             "tests only: 'worker' limits the crash points to worker processes"),
    Variable("SIGHTSOUND_CRASH_LOG", "",
             "tests only: a file where a process killed at a crash point first appends its pid"),
)}


RUNNER, WORKER_THREADS, CACHE_DIR, SCRATCH = (
    "SIGHTSOUND_RUNNER", "SIGHTSOUND_WORKER_THREADS", "SIGHTSOUND_CACHE_DIR", "SIGHTSOUND_SCRATCH")
CRASH_BEFORE, CRASH_AFTER, CRASH_IN, CRASH_LOG = (
    "SIGHTSOUND_CRASH_BEFORE", "SIGHTSOUND_CRASH_AFTER", "SIGHTSOUND_CRASH_IN", "SIGHTSOUND_CRASH_LOG")


def get(name: str) -> str:
    """The variable's value, stripped, or its default when unset or blank."""
    if name not in VARIABLES:
        raise KeyError(f"{name} is not a sightsound variable (tasks/environment.py lists them)")
    return os.environ.get(name, "").strip() or VARIABLES[name].default
