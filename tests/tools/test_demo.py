"""greenline demo: a real `greenline serve upper` and the load tester against
it, end to end, from the command line."""

from __future__ import annotations

import re
import subprocess
import sys
from time import monotonic

import psutil
import pytest

from greenline.tools.demo import DemoError, start_server, stop_server


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
    # Then the WSGI application over HTTP, five seconds of it.
    assert "greenline serve --wsgi greenline.tools.demo:app" in out
    assert re.search(r"greenline load http://127\.0\.0\.1:\d+/hello/demo: 100 connections, closed loop, GET", out)
    m = re.search(r"status       2xx ([\d,]+), 3xx 0, 4xx 0, 5xx 0  \(200 ([\d,]+)\)", out)
    assert m and m.group(1) == m.group(2) and int(m.group(1).replace(",", "")) > 100
    assert out.count("result       OK") == 2 and out.count("server stopped cleanly.  All well.") == 2
    assert len([ln for ln in p.stderr.splitlines() if re.match(r"^\[\s*\d+\.\d/5 s\].*responses", ln)]) >= 4
    pids = [int(x) for x in re.findall(r"\(pid (\d+),", out)]
    assert len(pids) == 2 and not any(psutil.pid_exists(pid) for pid in pids)


def test_short_demo_without_progress() -> None:
    p, _ = run_demo("-c", "50", "-d", "1.5", "--http-connections", "10", "--http-duration", "1s",
                    "--no-progress", "--server-procs", "1")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "50 connections" in p.stdout and "10 connections, closed loop, GET" in p.stdout
    assert p.stdout.count("result       OK") == 2
    assert not [ln for ln in (p.stdout + p.stderr).splitlines() if ln.startswith("[")]


def test_demo_without_http() -> None:
    p, _ = run_demo("-c", "5", "-d", "1", "--no-http", "--no-progress", "--server-procs", "1")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("result       OK") == 1 and "--wsgi" not in p.stdout


def test_demo_app_and_the_check_of_one_response() -> None:
    from greenline.tools.demo import WSGI_APP, app, check_one_response

    statuses = []
    body = app({"REQUEST_METHOD": "GET", "PATH_INFO": "/hello/x"}, lambda s, h: statuses.append(s))
    assert body == [b'{"hello": "x"}'] and statuses == ["200 OK"]
    app({"REQUEST_METHOD": "GET", "PATH_INFO": "/other"}, lambda s, h: statuses.append(s))
    assert statuses[-1] == "404 Not Found"
    proc, host, port = start_server("1", WSGI_APP, ("--wsgi",))
    try:
        assert check_one_response(host, port) == ""
    finally:
        assert stop_server(proc) == 0
    # Against a server that answers something else, it says what came.
    proc, host, port = start_server("1")  # the line protocol: not HTTP at all
    try:
        # (it never closes the connection: the check says so at its timeout)
        assert check_one_response(host, port, timeout=0.5) == "GET /hello/demo failed: timed out"
    finally:
        stop_server(proc)


def test_bad_arguments_exit_2() -> None:
    p, _ = run_demo("-d", "nan")
    assert p.returncode == 2 and "Traceback" not in p.stderr


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
