"""Prefect's temporary server ends with its process, and a run ends with its own last line (issue 11, 7 and 12).

7: SIGKILL of the CLI alone (not its process group) left the temporary Prefect
server running and listening for good (flows.tempserver now watches its parent).
12: a pytest run that used Prefect ended in a ``--- Logging error ---``
traceback after pytest's summary (Prefect logged "Stopping temporary server"
at exit to the stream pytest had closed; tests/conftest.py now stops it first).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"^=*\s*\d+ (passed|failed|errors?)\b.* in [0-9.]+s( \([0-9:]+\))?\s*=*$")


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_temporary_server_ends_when_the_cli_is_killed(tiny_violin, tmp_path):
    log = tmp_path / "cli.log"
    with open(log, "w") as out:
        cli = subprocess.Popen([sys.executable, "-m", "flows.cli", "build-violinyt", "--manifest", str(tiny_violin),
                                "--data-root", str(tmp_path / "data")], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    server, port = None, None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and cli.poll() is None:
            m = re.search(r"Starting temporary server on http://127\.0\.0\.1:(\d+)", log.read_text())
            if m and _listening(int(m.group(1))):
                port = int(m.group(1))
                server = next(c for c in _children(cli.pid) if b"prefect.server.api.server:create_app"
                              in Path(f"/proc/{c}/cmdline").read_bytes())
                break
            time.sleep(0.2)
        assert port is not None and cli.poll() is None, log.read_text()[-3000:]
        os.kill(cli.pid, signal.SIGKILL)  # the CLI alone, not its process group
        cli.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (_alive(server) or _listening(port)):
            time.sleep(0.2)
        assert not _alive(server), f"the temporary server (pid {server}) outlived its CLI"
        assert not _listening(port), f"port {port} still listening"
    finally:
        if cli.poll() is None:
            cli.kill()
        if server is not None and _alive(server):
            os.kill(server, signal.SIGKILL)


def test_a_pytest_run_that_used_prefect_ends_with_the_summary(tmp_path):
    inner = tmp_path / "test_inner.py"
    inner.write_text("from prefect import flow, task\n\n\n@task\ndef one():\n    return 1\n\n\n"
                     "@flow\ndef tiny():\n    return one()\n\n\ndef test_tiny():\n    assert tiny() == 1\n")
    # The suite's own conftest (its isolated Prefect home and the fix), as a plugin of a run of that file.
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
                           str(inner)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert SUMMARY.match(lines[-1]), out[-3000:]
    assert "Logging error" not in out and "Traceback" not in out, out[-3000:]


def test_a_cli_build_ends_with_its_own_output(tiny_violin, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "build-violinyt", "--manifest", str(tiny_violin),
                           "--data-root", str(tmp_path / "data")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Logging error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stdout.rstrip().splitlines()[-1].startswith("| all |")  # the summary table is the last thing
