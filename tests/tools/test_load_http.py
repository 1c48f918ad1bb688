"""greenline load over HTTP: against an HTTP server written here, which
answers by a schedule over its count of requests (a share of 500s, of bodies
cut short, of resets, of malformed heads, of connections closed before the
response), the load tester must count each kind exactly and exit 1; against a
correct server (keep-alive, chunked, HEAD, bodies, pipelining, bodies read to
EOF, Connection: close) every response is right and it exits 0; bad
arguments exit 2 with one line."""

from __future__ import annotations

import json
import socket as std_socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from time import monotonic
from typing import Any

import httptools
import pytest
from greenlet import GreenletExit

from greenline import socket as gsocket
from greenline._core.hub import get_hub
from greenline._core.hub import sleep as gsleep
from greenline._core.task import Task, killall, spawn
from greenline.tools.load import MAX_PIPELINE, LoadError, http_request, parse_duration
from greenline.tools.load_http import (
    MAX_HEAD,
    HeadResponses,
    HTTPArgumentError,
    MalformedResponse,
    Response,
    TrackedResponse,
    build_request,
    ended_by_eof,
    host_header,
    parse_expect_status,
    parse_header,
    parse_url,
)
from greenline.tools.report import LoadResult

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"
RESPONSES = {
    "ok": OK,
    "chunked": CHUNKED,
    "500": b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\noops!",
    "404": b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    "301": b"HTTP/1.1 301 Moved Permanently\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
    "close": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
    "eof": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello, until the end",
    "continue": b"HTTP/1.1 100 Continue\r\n\r\n" + OK,
    "truncated": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a part",
    "truncated chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    "truncated head": b"HTTP/1.1 200 OK\r\nContent-Le",
    "malformed": b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
    "garbage": b"SSH-2.0-OpenSSH_9.6\r\n",
    # Bodies over many reads (and over what the client keeps of a response).
    "big": b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n" + b"x" * 300_000,
    "big eof": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"y" * 300_000,
    "big truncated": b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n" + b"z" * 150_000,
}
# After these the server closes its side of the connection.
CLOSES = {"close", "eof", "truncated", "truncated chunked", "truncated head", "malformed", "garbage",
          "closed", "reset", "big eof", "big truncated"}


class HTTPFixture:
    """An HTTP/1.1 server in an OS thread of its own (greenline, with its own
    hub).  ``schedule(i)`` names the answer to the server's i-th request
    (1-based, over all connections): a key of RESPONSES, or ``closed`` (close
    without a word), ``reset`` (an abortive close) or ``stall`` (never
    answer).  ``given`` counts the answers given, by name.  Requests are
    checked: a wrong body or a missing header gets a 400."""

    def __init__(self, schedule: Callable[[int], str] = lambda i: "ok", *, expect_body: bytes = b"",
                 expect_header: bytes | None = None, tls: Any = None,
                 keepalive: float | None = None) -> None:
        self.schedule = schedule
        self.keepalive = keepalive  # close a connection idle this long
        self.expect_body = expect_body
        self.expect_header = expect_header
        self.tls = tls
        self.count = 0
        self.given: dict[str, int] = {}
        self.accepted = 0
        self.batches = 0  # reads that held more than one request
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._handlers: set[Task] = set()

    def __enter__(self) -> HTTPFixture:
        self._thread.start()
        assert self._ready.wait(10), "fixture server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._hub.call_threadsafe(lambda _: self._accept_task.kill(block=False))
        self._thread.join(15)
        assert not self._thread.is_alive(), "fixture server did not stop"

    def url(self, path: str = "/") -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{path}"

    def _run(self) -> None:
        self._hub = get_hub()
        listener = gsocket.create_server(("127.0.0.1", 0), backlog=4096)
        self.port = listener.getsockname()[1]
        self._accept_task = spawn(self._accept, listener)
        self._ready.set()
        try:
            self._accept_task.join()
            killall(list(self._handlers), block=True, timeout=10)
        finally:
            listener.close()
            self._hub.close()

    def _accept(self, listener: gsocket.socket) -> None:
        while True:
            conn, _ = listener.accept()
            self.accepted += 1
            t = spawn(self._handle, conn)
            self._handlers.add(t)
            t.rawlink(self._handlers.discard)

    def _handle(self, conn: Any) -> None:
        requests: list[tuple[bytes, bytes, bool]] = []  # (method, body, header ok)

        class Proto:
            body = b""
            header_ok = self.expect_header is None

            def on_header(p, name: bytes, value: bytes) -> None:  # noqa: N805
                if self.expect_header is not None and name + b": " + value == self.expect_header:
                    p.header_ok = True

            def on_body(p, data: bytes) -> None:  # noqa: N805
                p.body += data

            def on_message_complete(p) -> None:  # noqa: N805
                requests.append((parser.get_method(), p.body, p.header_ok))
                p.body = b""
                p.header_ok = self.expect_header is None

        parser = httptools.HttpRequestParser(Proto())
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            conn.settimeout(self.keepalive)
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                parser.feed_data(data)
                if len(requests) > 1:
                    self.batches += 1
                out = []
                for method, body, header_ok in requests:
                    self.count += 1
                    name = self.schedule(self.count)
                    if name in ("ok", "chunked") and (body != self.expect_body or not header_ok):
                        name = "400"
                    self.given[name] = self.given.get(name, 0) + 1
                    if name == "stall":
                        gsleep(60)
                    if name == "reset":
                        conn.sendall(b"".join(out))
                        conn.setsockopt(std_socket.SOL_SOCKET, std_socket.SO_LINGER,
                                        b"\x01\x00\x00\x00\x00\x00\x00\x00")
                        return
                    if name == "400":
                        out.append(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    elif name != "closed":
                        response = RESPONSES[name]
                        if method == b"HEAD":
                            response = response.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
                        out.append(response)
                    if name in CLOSES:
                        conn.sendall(b"".join(out))
                        return
                requests.clear()
                conn.sendall(b"".join(out))
        except (OSError, GreenletExit):
            pass
        finally:
            conn.close()


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "greenline", "load", *args], capture_output=True,
                          text=True, timeout=timeout)


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def no_traceback(p: subprocess.CompletedProcess[str]) -> bool:
    return "Traceback" not in p.stdout + p.stderr


# -- a faulty server: each kind counted exactly ------------------------------------

FAULTS = {3: "500", 6: "truncated", 9: "reset", 12: "malformed", 15: "closed", 18: "404",
          21: "truncated chunked", 24: "truncated head"}


def faulty(i: int) -> str:
    """Every 25 requests: a 500, a 404, three responses cut short (in the
    body, in a chunked body, in the head), a reset, a malformed head and a
    connection closed before the response; the rest alternate plain and
    chunked 200s."""
    return FAULTS.get(i % 25, "ok" if i % 2 else "chunked")


def test_faulty_server_every_kind_counted_exactly(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with HTTPFixture(faulty) as srv:
        p = run_cli(srv.url("/hello?x=1"), "-c", "10", "-n", "2000", "--json", str(out), "--no-progress")
    assert p.returncode == 1, p.stdout + p.stderr
    assert no_traceback(p)
    r = load_json(out)
    g = srv.given
    assert srv.count == 2000 and r["requests"] == 2000
    assert r["status_counts"] == {"200": g["ok"] + g["chunked"], "404": g["404"], "500": g["500"]}
    assert r["status_classes"] == {"2xx": g["ok"] + g["chunked"], "3xx": 0, "4xx": g["404"], "5xx": g["500"]}
    assert r["verified"] == g["ok"] + g["chunked"] and r["mismatches"] == g["404"] + g["500"]
    assert r["errors"] == {
        "refused": 0, "reset": g["reset"], "timeout": 0, "closed early": g["closed"],
        "truncated": g["truncated"] + g["truncated chunked"] + g["truncated head"],
        "malformed": g["malformed"],
    }
    assert g["reset"] == g["closed"] == g["malformed"] == 80
    # Every break cost one connection: the client connected again after each.
    breaks = sum(g[k] for k in ("reset", "closed", "malformed", "truncated", "truncated chunked",
                                "truncated head"))
    assert r["opened"] == srv.accepted <= 10 + breaks
    samples = r["error_samples"]
    assert "closed the connection in the middle of a response" in samples["truncated"]
    assert samples["malformed"].startswith("not a valid HTTP/1.x response")
    assert "before the response began" in samples["closed early"]
    text = p.stdout
    assert "status       2xx 1,360, 3xx 0, 4xx 80, 5xx 80  (200 1,360, 404 80, 500 80)" in text
    assert "errors       refused 0, reset 80, timeout 0, closed early 80, truncated 240, malformed 80" in text
    assert "FAILED: 160 responses with an unexpected status (404 80, 500 80; expected 2xx,3xx)" in text
    assert "client CPU" in text and r["client_cpu_us_per_response"] > 0


def test_expect_status_decides_what_is_right(tmp_path: Path) -> None:
    def schedule(i: int) -> str:
        return "404" if i % 4 == 0 else "301" if i % 4 == 1 else "ok"

    out = tmp_path / "r.json"
    with HTTPFixture(schedule) as srv:
        default = run_cli(srv.url(), "-c", "4", "-n", "400", "--no-progress")
        p = run_cli(srv.url(), "-c", "4", "-n", "400", "--expect-status", "2xx,404", "--json", str(out),
                    "--no-progress")
        only = run_cli(srv.url(), "-c", "4", "-n", "400", "--expect-status", "200,301,404", "--no-progress")
    assert default.returncode == 1 and "100 responses with an unexpected status (404 100" in default.stdout
    assert p.returncode == 1  # the 301s are not in 2xx,404
    r = load_json(out)
    assert r["status_counts"] == {"200": 200, "301": 100, "404": 100}
    assert (r["verified"], r["mismatches"]) == (300, 100) and r["expect_status"] == "2xx,404"
    assert "(301 100; expected 2xx,404)" in p.stdout
    assert only.returncode == 0, only.stdout


def test_a_server_that_does_not_answer_times_out(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with HTTPFixture(lambda i: "stall" if i % 10 == 5 else "ok") as srv:
        p = run_cli(srv.url(), "-c", "4", "-n", "40", "--timeout", "300ms", "--json", str(out),
                    "--no-progress")
    assert p.returncode == 1
    r = load_json(out)
    assert r["errors"]["timeout"] == srv.given["stall"] == 4
    assert r["verified"] == 36 and r["requests"] == 40
    assert r["error_samples"]["timeout"] == "no response within 0.3 s"


def test_nothing_listening_is_refused_and_gives_up() -> None:
    s = std_socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    p = run_cli(f"http://127.0.0.1:{port}/", "-c", "3", "-d", "30", "--no-progress", timeout=20)
    assert p.returncode == 1 and no_traceback(p)
    assert "refused 9" in p.stdout and "gave up 3" in p.stdout


def test_not_http_at_all_is_malformed() -> None:
    with HTTPFixture(lambda i: "garbage") as srv:
        p = run_cli(srv.url(), "-c", "2", "-n", "10", "--no-progress")
    assert p.returncode == 1 and no_traceback(p)
    assert "malformed 10" in p.stdout


# -- a correct server: every response right, exit 0 ----------------------------------

def test_correct_server_keep_alive_every_response_right(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with HTTPFixture(lambda i: "ok" if i % 3 else "chunked") as srv:
        p = run_cli(srv.url(), "-c", "20", "-n", "3000", "--json", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    r = load_json(out)
    assert (r["requests"], r["verified"], r["mismatches"]) == (3000, 3000, 0)
    assert r["status_counts"] == {"200": 3000} and not any(r["errors"].values())
    assert r["opened"] == srv.accepted == 20  # keep-alive: one connection each
    assert r["latency_count"] == 3000 - 20 and r["first_replied"] == 20
    lat = r["latency_us"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert r["protocol"] == "http" and r["request"] == "GET" and r["target"] == srv.url()
    assert p.stdout.startswith(f"greenline load {srv.url()}: 20 connections, closed loop, GET\n")
    assert "result       OK" in p.stdout
    assert r["client_cpu_s"] > 0 and r["client_cpu_us_per_response"] > 0


def test_progress_in_http_words() -> None:
    with HTTPFixture() as srv:
        p = run_cli(srv.url(), "-c", "2", "-d", "1.5s")
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("[")]
    assert lines and all("responses" in ln and "bad status 0" in ln for ln in lines), p.stderr


def test_server_closing_connections_is_no_error(tmp_path: Path) -> None:
    # Connection: close, and bodies without a length read to EOF: complete
    # responses each, after which the client connects again.
    def schedule(i: int) -> str:
        return "close" if i % 5 == 0 else "eof" if i % 5 == 1 else "continue" if i % 5 == 2 else "ok"

    out = tmp_path / "r.json"
    with HTTPFixture(schedule) as srv:
        p = run_cli(srv.url(), "-c", "5", "-n", "500", "--json", str(out), "--no-progress")
    assert p.returncode == 0, p.stdout + p.stderr
    r = load_json(out)
    assert r["verified"] == r["requests"] == 500 and r["status_counts"] == {"200": 500}
    # Each of the 200 closing responses ended its connection; the client
    # connected again unless its work was done.
    assert r["opened"] == srv.accepted and 200 <= r["opened"] <= 205


def test_bodies_over_many_reads(tmp_path: Path) -> None:
    # 300 kB bodies: with a length, read to the end of the connection, and
    # cut short half-way (each over more reads than the client keeps).
    names = {0: "big", 1: "big eof", 2: "big truncated", 3: "ok"}
    out = tmp_path / "r.json"
    with HTTPFixture(lambda i: names[i % 4]) as srv:
        p = run_cli(srv.url(), "-c", "4", "-n", "200", "--json", str(out), "--no-progress")
    assert p.returncode == 1, p.stdout + p.stderr
    r = load_json(out)
    assert r["status_counts"] == {"200": 150} and r["errors"]["truncated"] == 50
    assert r["error_samples"]["truncated"].endswith("(in its body)")
    assert sum(v for k, v in r["errors"].items() if k != "truncated") == 0


def test_headers_and_bodies_are_sent(tmp_path: Path) -> None:
    body_file = tmp_path / "body.bin"
    body_file.write_bytes(b"\x00\x01binary\xff" * 1000)
    with HTTPFixture(expect_body=b"name=value", expect_header=b"X-Test: yes") as srv:
        p = run_cli(srv.url("/submit"), "-m", "post", "-H", "X-Test: yes", "-H", "Content-Type: text/plain",
                    "--body", "name=value", "-c", "4", "-n", "200", "--no-progress")
        missing = run_cli(srv.url(), "-c", "2", "-n", "10", "--no-progress")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "POST with a 10-byte body" in p.stdout and "200 200" in p.stdout
    assert missing.returncode == 1 and "400 10" in missing.stdout
    with HTTPFixture(expect_body=body_file.read_bytes()) as srv:
        p = run_cli(srv.url(), "-m", "PUT", "--body-file", str(body_file), "-c", "4", "-n", "100",
                    "--no-progress")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "PUT with a 9,000-byte body" in p.stdout


@pytest.mark.parametrize("depth", ["1", "4"])
def test_head_responses_have_no_body(tmp_path: Path, depth: str) -> None:
    out = tmp_path / "r.json"
    with HTTPFixture(lambda i: "ok" if i % 2 else "500") as srv:
        p = run_cli(srv.url(), "-m", "HEAD", "-c", "3", "-n", "300", "--pipeline", depth, "--expect-status",
                    "200,500", "--json", str(out), "--no-progress")
    assert p.returncode == 0, p.stdout + p.stderr
    r = load_json(out)
    assert r["status_counts"] == {"200": 150, "500": 150} and not any(r["errors"].values())
    assert r["opened"] == 3


@pytest.mark.parametrize("depth", [2, 16])
def test_pipelining_keeps_that_many_in_flight(tmp_path: Path, depth: int) -> None:
    out = tmp_path / "r.json"
    with HTTPFixture(lambda i: "ok" if i % 2 else "chunked") as srv:
        p = run_cli(srv.url(), "-c", "4", "-n", "4000", "--pipeline", str(depth), "--json", str(out),
                    "--no-progress")
    assert p.returncode == 0, p.stdout + p.stderr
    r = load_json(out)
    assert r["verified"] == r["requests"] == srv.count == 4000
    assert r["pipeline"] == depth and f"pipeline {depth}" in p.stdout
    assert srv.batches > 0  # requests did arrive several at once
    assert r["opened"] == 4


def test_pipelined_requests_after_a_closing_response_go_on_a_new_connection(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with HTTPFixture(lambda i: "close" if i % 7 == 0 else "ok") as srv:
        p = run_cli(srv.url(), "-c", "2", "-n", "700", "--pipeline", "4", "--json", str(out), "--no-progress")
    assert p.returncode == 0, p.stdout + p.stderr
    r = load_json(out)
    assert r["verified"] == r["requests"] == 700 and not any(r["errors"].values())
    assert srv.given.get("close", 0) >= 1 and r["opened"] == srv.accepted


def test_pipelined_break_counts_every_request_in_flight(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with HTTPFixture(lambda i: "reset" if i == 50 else "ok") as srv:
        p = run_cli(srv.url(), "-c", "1", "-n", "200", "--pipeline", "8", "--json", str(out), "--no-progress")
    assert p.returncode == 1
    r = load_json(out)
    # The reset came with responses 41..49 sent and 50..56 still due: those
    # answered count, the rest of that connection's requests in flight fail.
    assert r["requests"] == 200 and r["errors"]["reset"] == 200 - r["verified"]
    assert 1 <= r["errors"]["reset"] <= 8


def test_open_loop_over_http_keeps_the_rate(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with HTTPFixture() as srv:
        p = run_cli(srv.url(), "-c", "10", "--rate", "500", "-d", "1500ms", "--procs", "2", "--json", str(out),
                    "--no-progress")
    assert p.returncode == 0, p.stdout + p.stderr
    r = load_json(out)
    assert r["parts"] == 2 and r["mode"] == "open loop at 500 req/s"
    assert 700 <= r["requests"] == r["verified"] <= 760  # 750 due; a loaded machine may end a few short
    assert r["status_counts"] == {"200": r["requests"]}


@pytest.mark.parametrize("tls", [False, True])
def test_an_idle_connection_the_server_closed_is_no_error(tmp_path: Path, tls: bool) -> None:
    # Open loop at 4 requests/s over 2 connections: each is idle 0.5 s
    # between requests, and the server closes connections idle 0.3 s (its
    # keep-alive timeout).  The client notices before it sends, and
    # connects again: no request is lost, no error counted.
    ctx = None
    args: list[str] = []
    if tls:
        trustme = pytest.importorskip("trustme")
        from greenline import ssl as gssl

        ca = trustme.CA()
        ctx = gssl.create_default_context(gssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(ctx)
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        args = ["--cafile", str(tmp_path / "ca.pem")]
    out = tmp_path / "r.json"
    with HTTPFixture(keepalive=0.3, tls=ctx) as srv:
        p = run_cli(srv.url(), "-c", "2", "--rate", "4", "-d", "2s", "--json", str(out), "--no-progress", *args)
    assert p.returncode == 0, p.stdout + p.stderr
    r = load_json(out)
    assert r["verified"] == r["requests"] == 8 and not any(r["errors"].values())
    assert r["opened"] == srv.accepted >= 6  # a new connection for almost every request


def test_https_open_loop_keeps_its_connections(tmp_path: Path) -> None:
    # The server's TLS 1.3 session tickets arrive after the handshake, unread:
    # bytes waiting on an idle connection that is not closing.  Each
    # connection must keep going on its one connection.
    trustme = pytest.importorskip("trustme")
    from greenline import ssl as gssl

    ca = trustme.CA()
    ctx = gssl.create_default_context(gssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    out = tmp_path / "r.json"
    with HTTPFixture(tls=ctx) as srv:
        p = run_cli(srv.url(), "--cafile", str(tmp_path / "ca.pem"), "-c", "4", "--rate", "40", "-d", "1s",
                    "--json", str(out), "--no-progress")
    assert p.returncode == 0, p.stdout + p.stderr
    r = load_json(out)
    assert r["opened"] == srv.accepted == 4 and r["verified"] == r["requests"] >= 38


def test_two_processes_and_merge_add_status_counts_exactly(tmp_path: Path) -> None:
    a, b, merged, both = (tmp_path / n for n in ("a.json", "b.json", "m.json", "p.json"))
    with HTTPFixture(lambda i: "500" if i % 10 == 0 else "ok") as srv:
        run_cli(srv.url(), "-c", "4", "-n", "300", "--json", str(a), "--no-progress")
        run_cli(srv.url(), "-c", "6", "-n", "500", "--json", str(b), "--no-progress")
        p = run_cli(srv.url(), "-c", "10", "-n", "1000", "--procs", "2", "--json", str(both), "--no-progress")
        served = srv.given
    assert p.returncode == 1
    r = load_json(both)
    assert r["parts"] == 2 and r["requests"] == 1000
    assert sum(r["status_counts"].values()) == 1000 and r["status_counts"]["500"] == 100
    assert served["500"] == 180
    m = subprocess.run([sys.executable, "-m", "greenline", "load", "merge", str(a), str(b), "--json", str(merged)],
                       capture_output=True, text=True, timeout=30)
    assert m.returncode == 1 and no_traceback(m)
    ra, rb, rm = load_json(a), load_json(b), load_json(merged)
    for code in ("200", "500"):
        assert rm["status_counts"][code] == ra["status_counts"][code] + rb["status_counts"][code]
    assert rm["status_counts"] == {"200": 720, "500": 80}
    assert rm["client_cpu_s"] == pytest.approx(ra["client_cpu_s"] + rb["client_cpu_s"])
    assert "2 parts merged" in m.stdout and "500 80" in m.stdout


def test_json_dash_for_http(tmp_path: Path) -> None:
    with HTTPFixture() as srv:
        p = subprocess.run([sys.executable, "-m", "greenline", "load", srv.url(), "-c", "2", "-d", "1s",
                            "--json", "-"], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["status_counts"] == {"200": r["requests"]} and r["requests"] > 0
    assert set(r["errors"]) == {"refused", "reset", "timeout", "closed early", "truncated", "malformed"}
    assert "result       OK" in p.stderr


def test_https_with_the_options_of_today(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    from greenline import ssl as gssl

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    ctx = gssl.create_default_context(gssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    out = tmp_path / "r.json"
    with HTTPFixture(tls=ctx) as srv:
        p = run_cli(srv.url(), "--cafile", str(cafile), "-c", "4", "-n", "200", "--json", str(out),
                    "--no-progress")
        unverified = run_cli(srv.url(), "-c", "2", "-n", "10", "--no-progress")
        named = run_cli(srv.url(), "--insecure", "-c", "2", "-n", "10", "--no-progress")
    assert p.returncode == 0, p.stdout + p.stderr
    r = load_json(out)
    assert r["verified"] == 200 and r["security"] == "TLS, certificate verified for 127.0.0.1"
    assert r["protocol"] == "https"
    assert unverified.returncode == 1 and "tls 6" in unverified.stdout and no_traceback(unverified)
    assert named.returncode == 0 and "NOT verified" in named.stdout


# -- bad arguments: exit 2, one line ----------------------------------------------------

@pytest.mark.parametrize("args, says", [
    (["ftp://127.0.0.1:1/"], "http:// or https://"),
    (["http://"], "no host"),
    (["http://127.0.0.1:99999/"], "Port out of range"),
    (["http://127.0.0.1:1/", "-H", "no colon here"], "Name: value"),
    (["http://127.0.0.1:1/", "-H", "Bad Name: x"], "Name: value"),
    (["http://127.0.0.1:1/", "--expect-status", "abc"], "neither a status code"),
    (["http://127.0.0.1:1/", "--expect-status", ""], "--expect-status"),
    (["http://127.0.0.1:1/", "--pipeline", "0"], "at least 1"),
    (["http://127.0.0.1:1/", "--pipeline", "2", "--rate", "100"], "closed loop"),
    (["http://127.0.0.1:1/", "-m", "GE T"], "bad method"),
    (["http://127.0.0.1:1/", "-m", "HEAD", "--body", "x"], "HEAD"),
    (["http://127.0.0.1:1/", "--body", "x", "--body-file", "y"], "not allowed with"),
    (["http://127.0.0.1:1/", "--body-file", "/nonexistent/file"], "cannot read --body-file"),
    (["http://127.0.0.1:1/", "--size", "10"], "line-protocol options"),
    (["127.0.0.1:1", "-m", "POST"], "HTTP options"),
    (["http://127.0.0.1:1/", "--tls"], "https://"),
    (["http://127.0.0.1:1/", "-H", "Transfer-Encoding: chunked"], "Transfer-Encoding"),
    (["http://127.0.0.1:1/", "-d", "2 minutes"], "not a duration"),
    (["http://127.0.0.1:1/", "-d", "nan"], "not a duration"),
])
def test_bad_http_arguments_exit_2_with_one_line(args: list[str], says: str) -> None:
    p = run_cli(*args, "--no-progress", timeout=20)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("greenline load: ") and says in lines[0], lines
    assert p.stdout == ""


# -- small pieces ---------------------------------------------------------------------

def test_request_bytes_are_built_once() -> None:
    req = http_request("http://example.test:8080/a/b?c=d", "post", ["X-A: 1"], b"xyz")
    assert req.wire == (b"POST /a/b?c=d HTTP/1.1\r\nHost: example.test:8080\r\nUser-Agent: greenline-load\r\n"
                        b"X-A: 1\r\nContent-Length: 3\r\n\r\nxyz")
    assert req.url == "http://example.test:8080/a/b?c=d"
    req = http_request("https://[::1]/", headers=["Host: other"])
    assert req.wire == b"GET / HTTP/1.1\r\nUser-Agent: greenline-load\r\nHost: other\r\n\r\n"
    assert (req.host, req.port, req.scheme) == ("::1", 443, "https")
    with pytest.raises(LoadError):
        http_request("http://h/", pipeline=0)


def test_the_request_carries_the_command_lines_options() -> None:
    req = http_request("https://example.test/x", "head", pipeline=MAX_PIPELINE, expect="2xx, 404")
    assert (req.method, req.pipeline, req.expect_text, req.body_size) == ("HEAD", MAX_PIPELINE, "2xx,404", 0)
    assert req.expect == parse_expect_status("2xx,404") and req.head
    assert req.wire.startswith(b"HEAD /x HTTP/1.1\r\nHost: example.test\r\n")  # 443 is https's own port
    plain = http_request("http://h/", "POST", body=b"12345")
    assert (plain.pipeline, plain.expect_text, plain.body_size) == (1, "2xx,3xx", 5)
    assert plain.expect == parse_expect_status("2xx,3xx") and not plain.head
    # The command line prints these words after "greenline load: ".
    for kwargs, says in [
        ({"method": "head", "body": b"x"}, "a HEAD request has no body"),
        ({"pipeline": 0}, f"--pipeline must be from 1 to {MAX_PIPELINE}"),
        ({"pipeline": MAX_PIPELINE + 1}, f"--pipeline must be from 1 to {MAX_PIPELINE}"),
    ]:
        with pytest.raises(LoadError) as err:
            http_request("http://h/", **kwargs)
        assert str(err.value) == says


def test_a_url_gives_scheme_host_port_and_target() -> None:
    assert parse_url("http://h") == ("http", "h", 80, "/")
    assert parse_url("https://h") == ("https", "h", 443, "/")
    assert parse_url("HTTP://H:1/Xy?q=1") == ("http", "h", 1, "/Xy?q=1")
    assert parse_url("http://h:65535/") == ("http", "h", 65535, "/")


@pytest.mark.parametrize(("url", "says"), [
    ("http://[::1/", "bad URL 'http://[::1/': "),
    ("ftp://h/", "the URL must start with http:// or https://, not 'ftp://h/'"),
    ("http:///x", "no host in the URL 'http:///x'"),
    ("http://user@h/", "user names and passwords in the URL are not supported; send an Authorization "
                       "header with -H"),
    ("http://h:0/", "bad port in the URL 'http://h:0/'"),
    ("http://h/a b", "the path must be ASCII without spaces (percent-encode it): '/a b'"),
    ("http://h/\u00e9", "the path must be ASCII without spaces (percent-encode it): '/\u00e9'"),
])
def test_a_bad_url_is_refused_saying_why(url: str, says: str) -> None:
    # The words `greenline load` prints after its name (exit 2).
    with pytest.raises(HTTPArgumentError) as err:
        parse_url(url)
    assert str(err.value).startswith(says) and (says.endswith(": ") or str(err.value) == says)


def test_headers_from_the_command_line() -> None:
    assert parse_header("X-Time:  12:30 ") == ("X-Time", "12:30")
    for text, says in [
        ("nocolon", "a header is 'Name: value', not 'nocolon'"),
        ("Bad Name: v", "a header is 'Name: value', not 'Bad Name: v'"),
        ("X: a\nb", "a header value cannot span lines: 'X: a\\nb'"),
        ("X: a\rb", "a header value cannot span lines: 'X: a\\rb'"),
        ("X: \u20ac", "a header value must be Latin-1: 'X: \u20ac'"),
    ]:
        with pytest.raises(HTTPArgumentError) as err:
            parse_header(text)
        assert str(err.value) == says


def test_the_users_headers_replace_ours_and_a_body_method_gets_a_length() -> None:
    assert build_request("GET", "h", "/", [("user-agent", "mine"), ("HOST", "other")], None) == \
        b"GET / HTTP/1.1\r\nuser-agent: mine\r\nHOST: other\r\n\r\n"
    assert build_request("POST", "h", "/", [("content-length", "0")], None) == \
        b"POST / HTTP/1.1\r\nHost: h\r\nUser-Agent: greenline-load\r\ncontent-length: 0\r\n\r\n"
    for method in ("POST", "PUT", "PATCH"):
        assert build_request(method, "h", "/", [], None).endswith(b"\r\nContent-Length: 0\r\n\r\n")
    assert b"Content-Length" not in build_request("DELETE", "h", "/", [], None)
    for method, headers, says in [
        ("G ET", [], "bad method 'G ET'"),
        ("POST", [("Transfer-Encoding", "chunked")],
         "Transfer-Encoding cannot be set: the body is sent with a Content-Length"),
    ]:
        with pytest.raises(HTTPArgumentError) as err:
            build_request(method, "h", "/", headers, b"x")
        assert str(err.value) == says


def test_the_host_header_names_the_port_unless_it_is_the_schemes_own() -> None:
    assert [host_header("h", 80, "http"), host_header("h", 443, "https"), host_header("h", 443, "http"),
            host_header("h", 80, "https"), host_header("h", 81, "http")] == ["h", "h", "h:443", "h:80", "h:81"]
    assert [host_header("::1", 80, "http"), host_header("::1", 8080, "http")] == ["[::1]", "[::1]:8080"]


def test_expect_status_flags_and_errors() -> None:
    flags = parse_expect_status("4xx,2xx")
    assert flags == parse_expect_status("2xx, 4xx") and len(flags) == 1000 and set(flags) == {0, 1}
    assert [c for c in range(1000) if flags[c]] == [*range(200, 300), *range(400, 500)]
    assert set(parse_expect_status("200")) == {0, 1}
    for text, says in [
        ("", "--expect-status takes codes and classes like 200,404 or 2xx,404, not ''"),
        ("2xx,,404", "--expect-status takes codes and classes like 200,404 or 2xx,404, not '2xx,,404'"),
        ("2xx,abc", "--expect-status: 'abc' is neither a status code (200) nor a class (2xx)"),
    ]:
        with pytest.raises(HTTPArgumentError) as err:
            parse_expect_status(text)
        assert str(err.value) == says


def test_durations() -> None:
    assert parse_duration("30s") == 30 and parse_duration("2m") == 120 and parse_duration("1h") == 3600
    assert parse_duration("500ms") == 0.5 and parse_duration("1.5") == 1.5 and parse_duration("2M") == 120
    for bad in ("nan", "inf", "-1", "0", "0s", "1e999", "5 parsecs", "", "s"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    with pytest.raises(ValueError) as err:
        parse_duration("5 parsecs")
    assert str(err.value) == "not a duration: '5 parsecs' (give seconds, or a number with ms, s, m or h)"
    with pytest.raises(ValueError) as err:
        parse_duration("0s")
    assert str(err.value) == "a duration must be positive: '0s'"


def test_expect_status_table() -> None:
    flags = parse_expect_status("2xx,404")
    assert [c for c in range(1000) if flags[c]] == [*range(200, 300), 404]


def test_response_parser_counts_and_frames() -> None:
    statuses: dict[int, int] = {}
    lean = Response(statuses, parse_expect_status("2xx"))
    lean.parser().feed_data(OK + CHUNKED + RESPONSES["500"] + RESPONSES["continue"])
    assert (lean.done, lean.good, statuses) == (4, 3, {200: 3, 500: 1}) and not lean.closing
    statuses = {}
    proto = TrackedResponse(statuses, parse_expect_status("2xx"))
    parser = proto.parser()
    parser.feed_data(OK + CHUNKED + RESPONSES["500"] + RESPONSES["continue"])
    assert (proto.done, proto.good, statuses) == (4, 3, {200: 3, 500: 1})
    assert not proto.closing and not proto.in_message
    parser.feed_data(RESPONSES["eof"])  # no length: complete only at EOF
    assert proto.done == 4 and proto.in_message and proto.ends_at_eof() and proto.done == 5
    assert proto.closing  # a body read to EOF: that connection is over
    proto = TrackedResponse({}, parse_expect_status("2xx"))
    proto.parser().feed_data(RESPONSES["truncated"])
    assert proto.in_message and not proto.ends_at_eof()  # it had a length: truncated
    # "Connection: close": counted, and the connection is not used again.
    for closing in (Response({}, parse_expect_status("2xx")), TrackedResponse({}, parse_expect_status("2xx"))):
        closing.parser().feed_data(RESPONSES["close"])
        assert closing.done == 1 and closing.closing


def test_a_response_ended_by_eof_is_judged_from_its_start() -> None:
    assert ended_by_eof(RESPONSES["eof"]) == (True, True)
    assert ended_by_eof(RESPONSES["big eof"][:1000]) == (True, True)
    assert ended_by_eof(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nabc") == (True, True)
    assert ended_by_eof(RESPONSES["truncated"]) == (False, True)
    assert ended_by_eof(RESPONSES["truncated chunked"]) == (False, True)
    assert ended_by_eof(RESPONSES["truncated head"]) == (False, False)
    assert ended_by_eof(b"HTTP/1.1 200 OK\r\ncontent-LENGTH: 5\r\n\r\nab") == (False, True)
    # A header as long as Content-Length (14) or Transfer-Encoding (17) is no framing.
    assert ended_by_eof(b"HTTP/1.1 200 OK\r\nX-Abcdefghijkl: 1\r\nX-Abcdefghijklmno: 2\r\n\r\nab") == \
        (True, True)
    assert ended_by_eof(RESPONSES["malformed"]) == (False, False)  # not HTTP: never complete


def test_head_responses_split_at_the_blank_line() -> None:
    statuses: dict[int, int] = {}
    proto = TrackedResponse(statuses, parse_expect_status("2xx"))
    feed = HeadResponses(proto)
    heads = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" * 3 + b"HTTP/1.1 204 No Content\r\n\r\n"
    feed(heads[:20])
    assert proto.done == 0 and proto.in_message
    feed(heads[20:])
    assert proto.done == 4 and statuses == {200: 3, 204: 1} and not proto.in_message
    # Heads whose message ends with them, several in one read: each cut exactly.
    feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" * 2)
    assert proto.done == 6 and not proto.in_message
    # No blank line in MAX_HEAD bytes: not an HTTP server.
    feed(b"x" * MAX_HEAD)
    assert proto.in_message  # still waiting, at the limit
    with pytest.raises(MalformedResponse) as err:
        feed(b"x")
    assert str(err.value) == f"no end of the response head in {MAX_HEAD + 1:,} bytes"


def test_report_merges_status_counts() -> None:
    a = LoadResult(protocol="http", connections=1, elapsed=1.0, requests=3, verified=2, mismatches=1,
                   statuses={"200": 2, "503": 1}, expect_status="2xx,3xx", request="GET", cpu_seconds=0.5)
    b = LoadResult(protocol="http", connections=1, elapsed=2.0, requests=2, verified=2,
                   statuses={"200": 2}, expect_status="2xx,3xx", request="GET", cpu_seconds=0.25)
    m = LoadResult.merge([a, b])
    assert m.statuses == {"200": 4, "503": 1} and m.expect_status == "2xx,3xx" and m.request == "GET"
    assert m.cpu_seconds == 0.75
    again = LoadResult.from_part(json.loads(json.dumps(m.to_dict())))
    assert again.statuses == m.statuses and again.render() == m.render()
    assert "1 response with an unexpected status (503 1; expected 2xx,3xx)" in m.render()
    assert "client CPU   150,000.0 µs per response" in m.render()


def test_fixture_has_no_leftover_threads() -> None:
    before = threading.active_count()
    t = monotonic()
    with HTTPFixture():
        pass
    assert threading.active_count() == before and monotonic() - t < 5
