"""The seed's programs in examples/seed/, run as a user runs them: as scripts."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SEED = Path(__file__).resolve().parent.parent / "examples" / "seed"
SCRIPTS = ["switch_cost.py", "sleep_demo.py", "server.py", "client.py"]
# Unbuffered: a server is stopped with SIGTERM, which would lose whatever it
# printed into a pipe's buffer; the tests must see all of it.
ENV = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONUNBUFFERED": "1"}


def run(script: str, *args: str, timeout: float = 50) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(SEED / script), *args]
    # With the fault handler on, SIGABRT makes a hung script print where
    # each of its OS threads is stuck: the failure then says where it hung.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            encoding="utf-8", env={**ENV, "PYTHONFAULTHANDLER": "1"})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"{' '.join(argv[1:])} still running after {timeout} s:\n{out}\n{err}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"server exited early: {proc.communicate()[1]}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert time.monotonic() < deadline, f"server not listening on {port}"
            time.sleep(0.05)


def client_summary(stdout: str) -> dict[str, int]:
    m = re.search(r"clients: (\d+) \(connected: (\d+), with a verified reply: (\d+)\)", stdout)
    assert m, stdout
    out = {"clients": int(m[1]), "connected": int(m[2]), "answered": int(m[3])}
    for key, label in (("requests", "requests done"), ("verified", "replies verified"), ("errors", "errors")):
        m = re.search(rf"^{label}: (\d+)$", stdout, re.M)
        assert m, stdout
        out[key] = int(m[1])
    return out


def start_server(*args: str) -> tuple[subprocess.Popen[str], int]:
    """The seed's server on a free port, and that port, read from the line
    it prints first."""
    proc = subprocess.Popen([sys.executable, str(SEED / "server.py"), "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            encoding="utf-8", env=ENV)
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], 20)
    line = proc.stdout.readline() if readable else ""
    m = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)\n", line)
    if not m:
        proc.kill()
        pytest.fail(f"no 'listening on' line: {line!r} {proc.communicate()[1]}")
    return proc, int(m[1])


def test_server_says_where_it_listens() -> None:
    proc, port = start_server()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b"where")
            assert c.recv(100) == b"WHERE"
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


@pytest.fixture
def server() -> Iterator[int]:
    proc, port = start_server()
    try:
        wait_listening(port, proc)
        yield port
        assert proc.poll() is None, "the server died while serving"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    # The server prints only when a connection is reset; these clients close
    # politely, so any output at all means something went wrong.
    assert out == "", out
    assert "Traceback" not in err, err


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script: str) -> None:
    proc = run(script, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:"), proc.stdout
    assert proc.stderr == ""


def check_sleepers(stdout: str) -> float:
    lines = stdout.splitlines()
    # All three start before any wakes; they wake in order of their sleeps.
    assert lines[:6] == ["哼", "哈", "heiheihei", "哼", "哈", "heiheihei"], stdout
    m = re.fullmatch(r"total: ([\d.]+) s .*", lines[6])
    assert m, stdout
    return float(m[1])


def test_sleep_demo_scaled() -> None:
    proc = run("sleep_demo.py", "--scale", "0.1")
    assert proc.returncode == 0, proc.stderr
    total = check_sleepers(proc.stdout)
    # The longest sleep (0.5 s), not the sum of them (1.0 s).
    assert 0.5 <= total < 0.8


@pytest.mark.slow
def test_sleep_demo_takes_the_longest_sleep_not_the_sum() -> None:
    proc = run("sleep_demo.py")
    assert proc.returncode == 0, proc.stderr
    total = check_sleepers(proc.stdout)
    assert 4.7 <= total <= 5.3, total


def test_switch_cost_concludes_that_switching_without_io_costs() -> None:
    proc = run("switch_cost.py", "--n", "20000", "--repeat", "1")
    assert proc.returncode == 0, proc.stderr
    times = dict(re.findall(r"^(\S.*?)\s{2,}([\d.]+) s\b", proc.stdout, re.M))
    assert set(times) == {"serial (func1 then func2)", "interleaved by generator yield",
                          "interleaved by greenlet switch", "interleaved by greenline sleep(0)"}, proc.stdout
    assert re.search(r"greenline sleep\(0\)\s+-?\d+ ns", proc.stdout), proc.stdout
    assert "Conclusion:" in proc.stdout
    # Going through the hub twice per step costs tens of times the step
    # itself: no machine noise turns that around.
    assert float(times["interleaved by greenline sleep(0)"]) > float(times["serial (func1 then func2)"])


def test_switch_cost_rejects_bad_n() -> None:
    proc = run("switch_cost.py", "--n", "0")
    assert proc.returncode == 2
    assert "--n" in proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_server_serves_500_clients_every_reply_verified(server: int) -> None:
    proc = run("client.py", "--clients", "500", "--seconds", "3", "--port", str(server), timeout=80)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = client_summary(proc.stdout)
    assert s["errors"] == 0, proc.stderr
    assert s["clients"] == s["connected"] == s["answered"] == 500, proc.stdout
    assert s["verified"] == s["requests"] >= 500


def test_client_few_clients_verbose(server: int) -> None:
    proc = run("client.py", "--clients", "3", "--seconds", "0.2", "--port", str(server), "--verbose")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = client_summary(proc.stdout)
    assert s["connected"] == s["answered"] == 3 and s["errors"] == 0
    replies = re.findall(r"^(.*) SAY HELLO (\d+)$", proc.stdout, re.M)
    assert len(replies) == s["verified"]
    # Each client's replies come back in order 0, 1, 2, ... on its own connection.
    by_client: dict[str, list[int]] = {}
    for name, n in replies:
        by_client.setdefault(name, []).append(int(n))
    assert len(by_client) == 3
    for ns in by_client.values():
        assert ns == list(range(len(ns)))


def serve_in_thread(handler) -> tuple[int, threading.Event]:  # type: ignore[no-untyped-def]
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def accept_loop() -> None:
        listener.settimeout(0.1)
        with listener:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                threading.Thread(target=handler, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    return port, stop


def test_client_fails_on_a_wrong_reply() -> None:
    def echo_without_upper(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(1024):
                conn.sendall(data)

    port, stop = serve_in_thread(echo_without_upper)
    try:
        proc = run("client.py", "--clients", "2", "--seconds", "0.5", "--port", str(port))
    finally:
        stop.set()
    assert proc.returncode == 1
    s = client_summary(proc.stdout)
    assert s["errors"] == 2 and s["verified"] == 0
    assert "say hello 0" in proc.stderr


def test_client_reassembles_a_reply_split_in_pieces() -> None:
    def upper_byte_by_byte(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            while data := conn.recv(1024):
                for b in data.upper():
                    conn.sendall(bytes([b]))
                    time.sleep(0.001)

    port, stop = serve_in_thread(upper_byte_by_byte)
    try:
        proc = run("client.py", "--clients", "2", "--seconds", "0.3", "--port", str(port))
    finally:
        stop.set()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = client_summary(proc.stdout)
    assert s["errors"] == 0 and s["answered"] == 2


def test_client_reports_a_server_that_is_not_there() -> None:
    proc = run("client.py", "--clients", "5", "--seconds", "1", "--port", str(free_port()))
    assert proc.returncode == 1
    s = client_summary(proc.stdout)
    assert s["connected"] == 0 and s["errors"] == 5
    assert "ConnectionRefusedError" in proc.stderr


def test_server_survives_a_client_that_resets_the_connection() -> None:
    proc, port = start_server()
    assert proc.stdout is not None
    try:
        wait_listening(port, proc)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as rude:
            rude.sendall(b"bye")
            assert rude.recv(1024) == b"BYE"
            # Linger 0: close() sends RST instead of FIN, so the server's
            # recv() raises ConnectionResetError.
            rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # As in the seed, the server prints the error and ends that connection...
        readable, _, _ = select.select([proc.stdout], [], [], 20)
        assert readable, "the server printed nothing after the reset"
        assert "Connection reset by peer" in proc.stdout.readline()
        # ... and goes on serving.
        proc_client = run("client.py", "--clients", "2", "--seconds", "0.2", "--port", str(port))
        assert proc_client.returncode == 0, proc_client.stdout + proc_client.stderr
        assert proc.poll() is None
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert out == ""
    assert "Traceback" not in err, err


def test_server_reports_a_port_in_use() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        proc = run("server.py", "--port", str(taken.getsockname()[1]))
    assert proc.returncode == 1
    assert "Address already in use" in proc.stderr
