"""greenline load checks every reply in every mode: the open loop (``--rate``)
against servers that answer wrongly now and then, over the line protocol
and over HTTP, in one process and in two (issue 18: reply checking switched
off in ``--rate`` mode passed every test).

The servers here are the standard library's, in threads of this process:
nothing of greenline is on the serving side, so a bug in greenline cannot
hide one in the client's checks.
"""

from __future__ import annotations

import json
import socketserver
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest


class _Counts:
    def __init__(self, wrong_every: int) -> None:
        self.wrong_every = wrong_every
        self.lock = threading.Lock()
        self.replies = 0
        self.wrong = 0

    def next_is_wrong(self) -> bool:
        with self.lock:
            self.replies += 1
            if self.replies % self.wrong_every == 0:
                self.wrong += 1
                return True
            return False


class _UpperHandler(socketserver.BaseRequestHandler):
    """The seed's protocol: each message comes back upper-cased, except
    every Nth reply (counted over the whole server), sent back as it came."""

    def handle(self) -> None:
        counts: _Counts = self.server.counts  # type: ignore[attr-defined]
        while data := self.request.recv(65536):
            # One request in flight per connection and small messages: one
            # read is one message.
            self.request.sendall(data if counts.next_is_wrong() else data.upper())


class LineServer:
    def __init__(self, wrong_every: int) -> None:
        self.counts = _Counts(wrong_every)
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _UpperHandler)
        self.server.daemon_threads = True
        self.server.counts = self.counts  # type: ignore[attr-defined]
        self.target = f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> LineServer:
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class _StatusHandler(BaseHTTPRequestHandler):
    """200 "ok", except every Nth response: 500."""

    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self) -> None:
        counts: _Counts = self.server.counts  # type: ignore[attr-defined]
        status = b"500 Internal Server Error" if counts.next_is_wrong() else b"200 OK"
        # One write: a head and a body sent apart meet Nagle and delayed ACKs
        # (40 ms a response).
        self.wfile.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok")

    def log_message(self, *args: Any) -> None:
        pass


class HTTPStatusServer:
    def __init__(self, wrong_every: int) -> None:
        self.counts = _Counts(wrong_every)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _StatusHandler)
        self.server.daemon_threads = True
        self.server.counts = self.counts  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def __enter__(self) -> HTTPStatusServer:
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_load(*args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``greenline load ARGS --json FILE --no-progress`` in a child process."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r.json"
        p = subprocess.run([sys.executable, "-m", "greenline", "load", *args, "--no-progress",
                            "--json", str(out)], capture_output=True, text=True, timeout=60)
        result = json.loads(out.read_text()) if out.exists() else {}
    return p, result


@pytest.mark.parametrize("procs", ["1", "2"])
def test_the_open_loop_checks_every_line_protocol_reply(procs: str) -> None:
    with LineServer(wrong_every=10) as srv:
        p, r = run_load(srv.target, "-c", "10", "--rate", "400", "-d", "1", "--procs", procs)
        replies, wrong = srv.counts.replies, srv.counts.wrong
    assert p.returncode == 1, p.stdout + p.stderr
    assert r["mode"] == "open loop at 400 req/s"
    assert wrong > 0 and replies >= 100  # the rate itself is test_load.py's
    # Every reply was checked: the wrong ones, and only they, counted as such.
    assert r["requests"] == replies
    assert r["mismatches"] == wrong
    assert r["verified"] == replies - wrong
    assert f"FAILED: {wrong} mismatched replies" in p.stdout


def test_the_open_loop_over_a_correct_server_passes() -> None:
    # The other side of the check: with nothing wrong, nothing is counted wrong.
    with LineServer(wrong_every=10**9) as srv:
        p, r = run_load(srv.target, "-c", "5", "--rate", "200", "-d", "1")
    assert p.returncode == 0, p.stdout + p.stderr
    assert r["mismatches"] == 0 and r["verified"] == r["requests"] > 150


@pytest.mark.parametrize("procs", ["1", "2"])
def test_the_open_loop_checks_every_http_status(procs: str) -> None:
    with HTTPStatusServer(wrong_every=10) as srv:
        p, r = run_load(srv.url, "-c", "10", "--rate", "400", "-d", "1", "--procs", procs)
        replies, wrong = srv.counts.replies, srv.counts.wrong
    assert p.returncode == 1, p.stdout + p.stderr
    assert wrong > 0 and replies >= 100  # the rate itself is test_load.py's
    assert r["requests"] == replies
    assert r["mismatches"] == wrong
    assert r["status_counts"] == {"200": replies - wrong, "500": wrong}
