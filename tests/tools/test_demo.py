"""greenline demo: a real `greenline serve upper` and the load tester against
it, end to end, from the command line."""

from __future__ import annotations

import re
import subprocess
import sys
from time import monotonic

import psutil
import pytest

pytest.importorskip("greenline.servers.stream", reason="`greenline serve` is not built yet")

from greenline.tools.demo import DemoError, start_server, stop_server  # noqa: E402


def run_demo(*args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    t = monotonic()
    p = subprocess.run([sys.executable, "-m", "greenline", "demo", *args], capture_output=True,
                       text=True, timeout=timeout)
    return p, monotonic() - t


def server_pid(stdout: str) -> int:
    m = re.search(r"\(pid (\d+),", stdout)
    assert m, stdout
    return int(m.group(1))


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_demo_as_in_the_readme() -> None:
    p, took = run_demo()
    assert p.returncode == 0, p.stdout + p.stderr
    assert took < 30
    out = p.stdout
    assert "500 connections, closed loop" in out
    assert "opened 500, failed 0" in out
    assert "result       OK" in out and "server stopped cleanly" in out
    # Progress lines, one a second, ten seconds' worth, on standard error.
    assert len([ln for ln in p.stderr.splitlines() if re.match(r"^\[\s*\d+\.\d/10 s\]", ln)]) >= 9
    m = re.search(r"replies\s+([\d,]+) verified, 0 mismatched", out)
    assert m and int(m.group(1).replace(",", "")) > 500
    assert not psutil.pid_exists(server_pid(out))


def test_short_demo_without_progress() -> None:
    p, _ = run_demo("-c", "50", "-d", "1.5", "--no-progress", "--server-procs", "1")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "50 connections" in p.stdout and "result       OK" in p.stdout
    assert not [ln for ln in p.stdout.splitlines() if ln.startswith("[")]


def test_start_and_stop_server() -> None:
    proc, host, port = start_server("1")
    try:
        assert host == "127.0.0.1" and 0 < port < 65536
        assert proc.poll() is None
    finally:
        assert stop_server(proc) == 0
    assert proc.poll() == 0


def test_server_that_cannot_start_is_reported() -> None:
    with pytest.raises(DemoError, match="exited with status"):
        start_server("1", app="no_such_module_here:handle")
