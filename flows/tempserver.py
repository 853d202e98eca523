"""Prefect's temporary API server, made to end with the process that started it.

Without PREFECT_API_URL, Prefect starts a temporary server on first use
(``prefect.server.api.server.SubprocessASGIServer``: uvicorn in a child
process) and stops it from an ``atexit`` hook.  A process killed with SIGKILL
runs no hook, and the server went on listening for good.  :func:`guard`
registers, before Prefect starts one, a server of the same class (Prefect's
client takes the registered instance) whose child runs uvicorn under a
watchdog: a thread that sees its parent process end (its parent pid changes)
and stops the server, with SIGTERM for uvicorn's orderly shutdown and a hard
exit if that takes more than a few seconds.  A watchdog rather than
``PR_SET_PDEATHSIG``: that signal fires when the *thread* that started the
child ends, and Prefect may start the server from a short-lived worker thread.

Run as ``python -m flows.tempserver PARENT_PID UVICORN_ARGS...`` (the child).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

POLL_S = 0.2
GRACE_S = 5.0
_guarded = None


def guard():
    """Make the temporary server of this process (if Prefect starts one) end with it; return the instance.

    Call after Prefect's environment is set (it imports Prefect).  Nothing
    happens when PREFECT_API_URL is set (a real server) or when a temporary
    server is already registered.
    """
    global _guarded
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None
    from prefect.server.api.server import SubprocessASGIServer

    current = SubprocessASGIServer._instances.get(None)
    if current is not None:
        return current
    if _guarded is None:
        _guarded = _guarded_class(SubprocessASGIServer)
    return _guarded()  # registered as the instance for "any port", the one Prefect's client asks for


def _guarded_class(base):
    class GuardedASGIServer(base):
        """Prefect's temporary server, its uvicorn run under :func:`watch_parent`."""

        def _run_uvicorn_command(self):
            import subprocess

            from prefect.settings import get_current_settings

            # Prefect's own command (prefect 3.8.8, SubprocessASGIServer), behind our watchdog.
            import prefect

            args = [sys.executable, "-m", __name__, str(os.getpid()),
                    "--app-dir", str(prefect.__module_path__.parent),
                    "--factory", "prefect.server.api.server:create_app",
                    "--host", "127.0.0.1", "--port", str(self.port),
                    "--log-level", "error", "--lifespan", "on"]
            env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                   "PREFECT__SERVER_FINAL": "1",
                   **get_current_settings().to_environment_variables(exclude_unset=True)}
            return subprocess.Popen(args=args, env=env)

    return GuardedASGIServer


def watch_parent(parent: int, poll_s: float = POLL_S, grace_s: float = GRACE_S) -> threading.Thread:
    """In the server process: when ``parent`` is no longer its parent, SIGTERM itself, then exit hard."""

    def run():
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(1)

    thread = threading.Thread(target=run, name="parent-watchdog", daemon=True)
    thread.start()
    return thread


def main(argv: list[str]) -> None:
    """``PARENT_PID UVICORN_ARGS...``: run uvicorn in this process while ``PARENT_PID`` lives."""
    import runpy

    parent = int(argv[0])
    if os.getppid() != parent:  # the parent died before we got here
        sys.exit(1)
    watch_parent(parent)
    sys.argv = ["uvicorn", *argv[1:]]
    runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
