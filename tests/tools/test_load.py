"""greenline load: against small greenline servers on loopback that behave
well, get replies wrong, drop connections or stall, the load tester must say
exactly what happened and exit accordingly."""

from __future__ import annotations

import json
import random
import re
import resource
import signal
import socket as std_socket
import subprocess
import sys
import threading
from pathlib import Path
from time import monotonic
from typing import Any

import pytest
from greenlet import GreenletExit

from greenline import socket as gsocket
from greenline._core.hub import get_hub
from greenline._core.hub import sleep as gsleep
from greenline._core.task import Task, killall, spawn
from greenline.tools.load import LoadError, message_format, parse_target, raise_fd_limit
from greenline.tools.report import LoadResult, decode_histogram, new_histogram


class FixtureServer:
    """A greenline server in a thread of its own (with its own hub), the
    seed's protocol (upper-case what you get) with a configurable fault."""

    def __init__(self, mode: str = "upper", close_prob: float = 0.0, stall_at: float = 0.5,
                 stall_for: float = 0.5, idle_timeout: float | None = None) -> None:
        self.mode = mode
        self.idle_timeout = idle_timeout  # close a connection idle this long
        self.close_prob = close_prob
        self.stall_at = stall_at
        self.stall_for = stall_for
        self.replies = 0
        self.wrong = 0
        self.closes = 0
        self.accepted = 0
        self.port = 0
        self._first: float | None = None
        self._ready = threading.Event()
        self._rng = random.Random(4)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._handlers: set[Task] = set()

    def __enter__(self) -> FixtureServer:
        self._thread.start()
        assert self._ready.wait(10), "fixture server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._hub.call_threadsafe(lambda _: self._accept_task.kill(block=False))
        self._thread.join(15)
        assert not self._thread.is_alive(), "fixture server did not stop"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

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

    def _handle(self, conn: gsocket.socket) -> None:
        conn.settimeout(self.idle_timeout)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                now = monotonic()
                if self._first is None:
                    self._first = now
                if self.close_prob and self._rng.random() < self.close_prob:
                    self.closes += 1
                    if self.closes % 2:
                        # An abortive close: the client sees a reset.
                        conn.setsockopt(std_socket.SOL_SOCKET, std_socket.SO_LINGER,
                                        b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    return
                if self.mode == "silent":
                    continue
                if self.mode == "stall":
                    begin = self._first + self.stall_at
                    end = begin + self.stall_for
                    if begin <= now < end:
                        gsleep(end - now)
                reply = data if self.mode == "echo" else data.upper()
                self.replies += 1
                if self.mode == "wrong50" and self.replies % 50 == 0:
                    reply = data  # left as it came: not upper-cased
                    self.wrong += 1
                conn.sendall(reply)
        except (OSError, GreenletExit):
            pass
        finally:
            conn.close()


def run_cli(*args: str, timeout: float = 60, preexec: Any = None) -> subprocess.CompletedProcess[str]:
    """``greenline load ...`` in a child process, its output captured (so not
    a terminal: plain progress lines)."""
    return subprocess.run([sys.executable, "-m", "greenline", "load", *args], capture_output=True,
                          text=True, timeout=timeout, preexec_fn=preexec)


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def no_errors(result: dict[str, Any]) -> bool:
    return not any(result["errors"].values())


# -- against a correct server ---------------------------------------------------

def test_correct_server_every_reply_verified(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with FixtureServer() as srv:
        p = run_cli(srv.target, "-c", "50", "-n", "2000", "--json", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2,000 verified, 0 mismatched" in p.stdout
    assert "result       OK" in p.stdout
    r = load_json(out)
    assert (r["requests"], r["verified"], r["mismatches"]) == (2000, 2000, 0)
    assert no_errors(r)
    assert r["opened"] == 50 and r["failed"] == 0
    # Each connection's first exchange is reported apart from the percentiles.
    assert r["latency_count"] == 2000 - 50
    assert r["first_replied"] == 50 and r["first_reply"] is not None
    assert decode_histogram(r["first_histogram"]).get_total_count() == 50
    assert srv.replies == 2000
    lat = r["latency_us"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]


def test_echo_protocol_against_upper_server_is_all_mismatches(tmp_path: Path) -> None:
    # The server upper-cases, so the echo check must reject every reply.
    out = tmp_path / "r.json"
    with FixtureServer() as srv:
        p = run_cli(srv.target, "-c", "5", "-n", "100", "--protocol", "echo", "--json", str(out),
                    "--no-progress")
    assert p.returncode == 1
    assert load_json(out)["mismatches"] == 100
    assert "FAILED: 100 mismatched replies" in p.stdout


@pytest.mark.parametrize("size", [1000, 300_000])
def test_echo_large_messages_arrive_in_pieces(tmp_path: Path, size: int) -> None:
    # 300 kB do not fit in one socket buffer: the reply comes back in many
    # reads, and each piece the server echoes is a separate write.
    out = tmp_path / "r.json"
    with FixtureServer("echo") as srv:
        p = run_cli(srv.target, "-c", "4", "-n", "40", "--size", str(size), "--protocol", "echo",
                    "--json", str(out), "--no-progress")
    assert p.returncode == 0, p.stdout + p.stderr
    r = load_json(out)
    assert r["verified"] == r["requests"] == 40
    assert f"{size}-byte messages, echo" in p.stdout
    if size > 100_000:
        assert srv.replies > 40  # it did come in pieces


def test_open_loop_over_two_processes_keeps_the_rate(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with FixtureServer() as srv:
        p = run_cli(srv.target, "-c", "20", "--rate", "1000", "-d", "1.5", "--procs", "2",
                    "--json", str(out), "--no-progress")
    assert p.returncode == 0, p.stdout + p.stderr
    r = load_json(out)
    assert r["parts"] == 2 and r["mode"] == "open loop at 1000 req/s"
    assert 1400 <= r["requests"] <= 1510
    assert r["verified"] == r["requests"] == srv.replies


# -- against faulty servers -------------------------------------------------------

def test_wrong_replies_are_reported_and_fail_the_run(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with FixtureServer("wrong50") as srv:
        p = run_cli(srv.target, "-c", "50", "-n", "2000", "--json", str(out))
    assert p.returncode == 1, p.stdout + p.stderr
    r = load_json(out)
    assert srv.wrong > 0
    assert r["mismatches"] == srv.wrong
    assert r["verified"] == 2000 - srv.wrong
    assert f"FAILED: {srv.wrong} mismatched replies" in p.stdout


def test_dropped_connections_are_counted_and_reconnected(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with FixtureServer(close_prob=0.02) as srv:
        p = run_cli(srv.target, "-c", "20", "-n", "3000", "--json", str(out), "--no-progress")
    assert p.returncode == 1, p.stdout + p.stderr
    r = load_json(out)
    assert srv.closes > 0
    # Every close broke exactly the one request in flight on it; half of them
    # were abortive (a reset), half orderly (closed before the reply came).
    assert r["errors"]["reset"] + r["errors"]["closed early"] == srv.closes
    assert r["errors"]["reset"] > 0 and r["errors"]["closed early"] > 0
    assert r["requests"] == 3000
    assert r["verified"] == 3000 - srv.closes
    # A connection reconnects after each break, unless the budget was spent
    # by then (a break among the last requests in flight).
    assert 20 < r["opened"] <= 20 + srv.closes
    assert srv.accepted <= r["opened"]
    assert "FAILED" in p.stdout and "errors" in p.stdout


def test_silent_server_times_out(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with FixtureServer("silent") as srv:
        t = monotonic()
        p = run_cli(srv.target, "-c", "5", "-n", "5", "--timeout", "0.3", "--json", str(out),
                    "--no-progress")
        took = monotonic() - t
    assert p.returncode == 1
    r = load_json(out)
    assert r["errors"]["timeout"] == 5 and r["verified"] == 0
    # Timed out after 0.3 s (give or take a watchdog period), not at some
    # coarse tick.
    assert r["elapsed"] < 0.9
    assert took < 20


def test_refused_connections_give_up_and_fail_fast(tmp_path: Path) -> None:
    # A port nobody listens on: bind one, close it.
    s = std_socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    out = tmp_path / "r.json"
    p = run_cli(f"127.0.0.1:{port}", "-c", "10", "-d", "30", "--json", str(out), "--no-progress",
                timeout=20)
    assert p.returncode == 1
    r = load_json(out)
    assert r["errors"]["refused"] == r["failed"] == 10 * 3
    assert r["gave_up"] == 10 and r["opened"] == 0
    assert r["elapsed"] < 5  # every connection gave up: the run ended early
    assert "no reply was verified" in p.stdout


# -- open loop vs closed loop -------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(90)
def test_rate_mode_shows_a_stall_that_closed_loop_hides(tmp_path: Path) -> None:
    open_json, closed_json = tmp_path / "open.json", tmp_path / "closed.json"
    with FixtureServer("stall", stall_at=0.5, stall_for=0.5) as srv:
        p = run_cli(srv.target, "-c", "10", "--rate", "400", "-d", "2.5", "--json", str(open_json))
    assert p.returncode == 0, p.stdout + p.stderr
    with FixtureServer("stall", stall_at=0.5, stall_for=0.5) as srv:
        p = run_cli(srv.target, "-c", "10", "-d", "2.5", "--json", str(closed_json))
    assert p.returncode == 0, p.stdout + p.stderr
    op, cl = load_json(open_json), load_json(closed_json)
    # Open loop: every request due during the stall waited for its end,
    # counted from when it should have gone out.
    assert op["latency_us"]["p99"] >= 400_000
    # About 400 req/s for 2.5 s.
    assert 700 <= op["requests"] <= 1100
    # Closed loop: the ten stalled requests are a drop in the sea; only the
    # maximum betrays the stall.
    assert cl["latency_us"]["max"] >= 400_000
    assert cl["latency_us"]["p99"] < 100_000
    assert cl["requests"] > 10 * op["requests"]


# -- results: JSON, merging, several processes --------------------------------------

def test_json_and_merge_round_trip(tmp_path: Path) -> None:
    a, b, merged = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "m.json"
    with FixtureServer() as srv:
        assert run_cli(srv.target, "-c", "10", "-n", "500", "--json", str(a)).returncode == 0
        assert run_cli(srv.target, "-c", "20", "-n", "700", "--json", str(b)).returncode == 0
    p = subprocess.run([sys.executable, "-m", "greenline", "load", "merge", str(a), str(b),
                        "--json", str(merged)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2 parts merged" in p.stdout and "1,200 verified" in p.stdout
    ra, rb, rm = load_json(a), load_json(b), load_json(merged)
    assert rm["verified"] == rm["requests"] == 1200
    assert rm["connections"] == 30 and rm["opened"] == 30
    ha, hb, hm = (decode_histogram(r["histogram"]) for r in (ra, rb, rm))
    assert hm.get_total_count() == ha.get_total_count() + hb.get_total_count() == 1200 - 30
    assert hm.get_max_value() == max(ha.get_max_value(), hb.get_max_value())
    for value in (100, 1000, 10_000):
        assert hm.get_count_at_value(value) == ha.get_count_at_value(value) + hb.get_count_at_value(value)
    assert rm["elapsed"] == max(ra["elapsed"], rb["elapsed"])
    assert rm["replies_per_s"] == pytest.approx(1200 / rm["elapsed"])


def test_merge_of_a_failed_run_fails(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    with FixtureServer() as srv:
        run_cli(srv.target, "-c", "5", "-n", "50", "--json", str(good))
    with FixtureServer("wrong50") as srv:
        run_cli(srv.target, "-c", "5", "-n", "100", "--json", str(bad))
    p = subprocess.run([sys.executable, "-m", "greenline", "load", "merge", str(good), str(bad)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert "FAILED: 2 mismatched replies" in p.stdout


def test_merge_without_files_or_with_a_bad_file(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "greenline", "load", "merge"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "give the JSON files" in p.stderr
    junk = tmp_path / "junk.json"
    junk.write_text("{}")
    p = subprocess.run([sys.executable, "-m", "greenline", "load", "merge", str(junk)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2


def test_two_processes_merge_counts_exactly(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with FixtureServer() as srv:
        p = run_cli(srv.target, "-c", "20", "-n", "2001", "--procs", "2", "--json", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    r = load_json(out)
    assert r["parts"] == 2
    assert (r["requests"], r["verified"], r["connections"], r["opened"]) == (2001, 2001, 20, 20)
    assert r["latency_count"] == 2001 - 20
    assert decode_histogram(r["histogram"]).get_total_count() == 2001 - 20
    assert srv.replies == 2001 and srv.accepted == 20


def test_merge_adds_parts() -> None:
    parts = []
    for verified, lat in ((100, 1000), (50, 5000)):
        h = new_histogram()
        h.record_value(lat, verified)
        part = LoadResult(target="t", connections=2, elapsed=1.0, replies_per_s=float(verified),
                          opened=2, requests=verified + 1, verified=verified, errors={"reset": 1},
                          first_reply=verified / 1000, first_replied=2, latency=h)
        parts.append(part)
    m = LoadResult.merge(parts)
    assert (m.connections, m.requests, m.verified, m.errors["reset"]) == (4, 152, 150, 2)
    assert m.first_reply == 0.1
    assert m.latency.get_total_count() == 150
    assert m.percentiles()["max"] == pytest.approx(5000, rel=1e-3)
    assert not m.ok and "2 errors (reset 2)" in m.render()


# -- progress -----------------------------------------------------------------------

def test_plain_progress_lines_when_not_a_terminal() -> None:
    with FixtureServer() as srv:
        p = run_cli(srv.target, "-c", "10", "-d", "2.5")
        quiet = run_cli(srv.target, "-c", "10", "-d", "1.2", "--no-progress")
    assert p.returncode == 0, p.stdout + p.stderr
    # Progress goes to standard error, leaving standard output to the report.
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("[")]
    assert len(lines) >= 2
    pattern = re.compile(r"^\[\s*\d+\.\d/2\.5 s\]\s+[\d,]+ req/s\s+p99\s+[\d.]+ (µs|ms)\s+replies [\d,]+"
                         r"\s+errors 0\s+mismatches 0$")
    assert all(pattern.match(ln) for ln in lines), lines
    # No terminal control sequences in plain mode.
    assert "\x1b" not in p.stderr + p.stdout
    assert quiet.returncode == 0
    assert not [ln for ln in quiet.stderr.splitlines() if ln.startswith("[")]


# -- descriptor limits ------------------------------------------------------------------

def test_too_low_hard_limit_fails_at_once_saying_what_to_do() -> None:
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))

    with FixtureServer() as srv:
        p = run_cli(srv.target, "-c", "500", "-n", "1000", preexec=low_limit)
    assert p.returncode == 2
    assert "ulimit -n 564" in p.stderr and "hard limit" in p.stderr
    assert srv.accepted == 0  # it failed before connecting anywhere


def test_raise_fd_limit_in_process() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if hard != resource.RLIM_INFINITY:
            with pytest.raises(LoadError, match="ulimit -n"):
                raise_fd_limit(hard + 1)
        want = min(soft + 10, hard) if hard != resource.RLIM_INFINITY else soft + 10
        raise_fd_limit(want)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= want
        # From a lower soft limit (the soft limit often is the hard one
        # already, and then there is nothing to raise): raised to what is
        # needed, up to the hard limit itself, and never lowered.
        top = hard if hard != resource.RLIM_INFINITY else 4096
        resource.setrlimit(resource.RLIMIT_NOFILE, (1000, hard))
        raise_fd_limit(1100)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (1100, hard)
        raise_fd_limit(1050)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (1100, hard)
        raise_fd_limit(top)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (top, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_five_thousand_connections_from_one_process(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 5100:
        pytest.skip(f"the hard descriptor limit is {hard}: 5000 connections need about 5100 "
                    f"(raise it with `ulimit -n 5100` as root)")
    # This process serves them: it needs the descriptors as well.
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))

    def default_soft_limit() -> None:
        # Start the client with the usual soft limit: it must raise it itself.
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))

    out = tmp_path / "r.json"
    try:
        with FixtureServer() as srv:
            p = run_cli(srv.target, "-c", "5000", "-n", "15000", "--timeout", "30", "--json", str(out),
                        "--no-progress", preexec=default_soft_limit, timeout=150)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert p.returncode == 0, p.stdout + p.stderr
    r = load_json(out)
    assert r["opened"] == 5000 and r["first_replied"] == 5000
    assert r["verified"] == r["requests"] == 15000
    assert srv.accepted == 5000


# -- small pieces ----------------------------------------------------------------------

def test_message_format_pads_to_size() -> None:
    for size in (32, 64, 1000):
        for n in (1, 9, 10, 12345):
            msg = message_format(7, len(str(n)), size) % n
            assert len(msg) == size
            assert msg.startswith(b"conn-7 say hello %d " % n) and msg.endswith(b"\n")
    # Too small for the text: the message is the text, never cut.
    assert message_format(7, 5, 8) % 12345 == b"conn-7 say hello 12345 \n"


def test_parse_target() -> None:
    assert parse_target("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_target("[::1]:8080") == ("::1", 8080)
    assert parse_target("localhost:1") == ("localhost", 1)
    assert parse_target("h:65535") == ("h", 65535)
    for bad in ("127.0.0.1", ":80", "host:0", "host:x", "host:70000", "host:65536"):
        with pytest.raises(LoadError) as err:
            parse_target(bad)
        assert str(err.value) == f"target must be HOST:PORT or an http:// or https:// URL, not {bad!r}"


def test_usage_errors_exit_2() -> None:
    p = run_cli("nohost")
    assert p.returncode == 2 and "HOST:PORT" in p.stderr
    p = run_cli("127.0.0.1:1", "-d", "1", "-n", "5")
    assert p.returncode == 2  # argparse: -d and -n exclude each other


def test_fixture_sanity_no_leftover_threads() -> None:
    # The fixture server's thread and hub go away on exit.
    before = threading.active_count()
    with FixtureServer():
        pass
    assert threading.active_count() == before


@pytest.mark.parametrize("procs", ["1", "2"])
def test_interrupt_stops_early_with_a_report(tmp_path: Path, procs: str) -> None:
    out = tmp_path / "r.json"
    with FixtureServer() as srv:
        p = subprocess.Popen([sys.executable, "-m", "greenline", "load", srv.target, "-c", "10", "-d", "60",
                              "--procs", procs, "--json", str(out)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        assert p.stdout is not None and p.stderr is not None
        first = p.stderr.readline()  # a progress line: it is running
        assert first.startswith("["), first
        t = monotonic()
        p.send_signal(signal.SIGINT)  # to the parent only, as `kill -INT` does
        rest = p.stdout.read()
        p.stderr.read()
        assert p.wait(30) == 130
        took = monotonic() - t
    assert took < 10
    assert "(interrupted)" in rest and "result       OK" in rest
    r = load_json(out)
    assert r["interrupted"] and r["verified"] == r["requests"] > 0
    assert r["elapsed"] < 30


# -- TLS ----------------------------------------------------------------------

class TLSServe:
    """``greenline serve upper`` with a certificate from a throwaway CA
    (trustme), in a subprocess, for the length of the module."""

    def __init__(self, directory: Path) -> None:
        trustme = pytest.importorskip("trustme", reason="trustme (cryptography) is not installed on this interpreter")
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.cafile = directory / "ca.pem"
        self.certfile = directory / "server.pem"
        self.ca.cert_pem.write_to_path(str(self.cafile))
        cert.private_key_and_cert_chain_pem.write_to_path(str(self.certfile))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "greenline", "serve", "upper", "--port", "0",
             "--certfile", str(self.certfile)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.target = self._listening()

    def _listening(self) -> str:
        # readline in a thread: a server that never prints must fail the
        # test, not hang it.
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()  # type: ignore[union-attr]
                                                            ), daemon=True)
        reader.start()
        reader.join(20)
        m = re.match(r"^listening on (\S+:\d+)$", box[0].strip()) if box else None
        if m is None:
            self.stop()
            raise AssertionError(f"serve printed no `listening on` line: {box!r}")
        return m.group(1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(scope="module")
def tls_serve(tmp_path_factory: pytest.TempPathFactory) -> Any:
    srv = TLSServe(tmp_path_factory.mktemp("tls"))
    try:
        yield srv
    finally:
        srv.stop()


def no_traceback(p: subprocess.CompletedProcess[str]) -> bool:
    return "Traceback" not in p.stdout + p.stderr


def test_tls_with_the_ca_every_reply_verified(tls_serve: TLSServe, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    p = run_cli(tls_serve.target, "--tls", "--cafile", str(tls_serve.cafile), "-c", "20", "-n", "1000",
                "--json", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "1,000 verified, 0 mismatched" in p.stdout
    assert "TLS, certificate verified for 127.0.0.1" in p.stdout
    r = load_json(out)
    assert (r["requests"], r["verified"], r["opened"], r["failed"]) == (1000, 1000, 20, 0)
    assert no_errors(r)
    assert r["security"] == "TLS, certificate verified for 127.0.0.1"


def test_tls_without_the_ca_fails_with_tls_errors(tls_serve: TLSServe, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    p = run_cli(tls_serve.target, "--tls", "-c", "20", "-n", "1000", "--json", str(out))
    assert p.returncode == 1, p.stdout + p.stderr
    assert no_traceback(p)
    r = load_json(out)
    # Every connection tries MAX_CONNECT_FAILURES times, then gives up.
    assert r["errors"]["tls"] == 60 and r["gave_up"] == 20
    assert r["opened"] == 0 and r["verified"] == 0
    assert "certificate verify failed" in r["error_samples"]["tls"]
    assert "tls: certificate verify failed" in p.stdout
    assert "FAILED: 60 errors (tls 60)" in p.stdout


def test_tls_against_a_plain_server_is_counted_not_a_crash(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with FixtureServer() as srv:
        p = run_cli(srv.target, "--tls", "--insecure", "-c", "5", "-n", "100", "--json", str(out))
    assert p.returncode == 1, p.stdout + p.stderr
    assert no_traceback(p)
    r = load_json(out)
    assert r["errors"]["tls"] == 15 and r["gave_up"] == 5 and r["requests"] == 0
    assert "tls: " in p.stdout and "result       FAILED" in p.stdout


def test_tls_insecure_accepts_an_unknown_certificate(tls_serve: TLSServe, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    p = run_cli(tls_serve.target, "--tls", "--insecure", "-c", "20", "-n", "1000", "--json", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "certificate NOT verified (--insecure)" in p.stdout
    r = load_json(out)
    assert r["verified"] == 1000 and no_errors(r)


def test_tls_server_name_is_what_the_certificate_is_checked_against(tls_serve: TLSServe) -> None:
    ca = str(tls_serve.cafile)
    # The certificate names localhost too: verified, although the target is an address.
    p = run_cli(tls_serve.target, "--tls", "--cafile", ca, "--server-name", "localhost", "-c", "4", "-n", "100")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "certificate verified for localhost" in p.stdout
    p = run_cli(tls_serve.target, "--tls", "--cafile", ca, "--server-name", "example.com", "-c", "4", "-n", "100")
    assert p.returncode == 1 and no_traceback(p)
    assert "tls 12" in p.stdout and "example.com" in p.stdout


def test_tls_open_loop_over_two_processes(tls_serve: TLSServe, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    p = run_cli(tls_serve.target, "--tls", "--cafile", str(tls_serve.cafile), "-c", "10", "--procs", "2",
                "--rate", "400", "-d", "1.5", "--no-progress", "--json", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    r = load_json(out)
    assert r["parts"] == 2 and r["opened"] == 10 and no_errors(r)
    assert r["security"] == "TLS, certificate verified for 127.0.0.1"
    # 400/s for 1.5 s: 600 due, give or take one per connection at the edge
    # (rounding of the sum of periods against the deadline).
    assert 590 <= r["verified"] == r["requests"] <= 610
    assert r["mode"] == "open loop at 400 req/s"


class SlowHandshakeServer:
    """Upper-cases over TLS, but waits ``delay`` seconds after accepting
    before its side of the handshake (stdlib threads and ssl: the server
    is not what is under test)."""

    def __init__(self, certfile: Path, delay: float) -> None:
        import ssl as std_ssl

        self.delay = delay
        self.ctx = std_ssl.create_default_context(std_ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(str(certfile))
        self.listener = std_socket.create_server(("127.0.0.1", 0))
        self.target = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> SlowHandshakeServer:
        self._acceptor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.listener.close()
        for t in [self._acceptor, *self._threads]:
            t.join(10)

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: std_socket.socket) -> None:
        with conn:
            if self._stop.wait(self.delay):
                return
            conn.settimeout(10)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    while data := tls.recv(65536):
                        tls.sendall(data.upper())
            except OSError:
                pass


def test_tls_handshake_is_not_part_of_the_first_request(tls_serve: TLSServe, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    delay = 1.0
    with SlowHandshakeServer(tls_serve.certfile, delay) as srv:
        p = run_cli(srv.target, "--tls", "--cafile", str(tls_serve.cafile), "-c", "4", "-n", "40",
                    "--json", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    r = load_json(out)
    assert r["verified"] == 40
    # The first replies came after the slow handshake...
    assert r["first_reply"] >= delay
    # ...but the handshake is not in any request's latency, the first included.
    assert r["first_exchange_us"]["max"] < delay * 1e6
    assert r["latency_us"]["max"] < delay * 1e6


def test_tls_option_errors_exit_2(tmp_path: Path) -> None:
    p = run_cli("127.0.0.1:1", "--cafile", "ca.pem", "-n", "1")
    assert p.returncode == 2 and "need --tls" in p.stderr
    p = run_cli("127.0.0.1:1", "--tls", "--cafile", str(tmp_path / "missing.pem"), "-n", "1")
    assert p.returncode == 2 and "cannot load the CA file" in p.stderr
    p = run_cli("127.0.0.1:1", "--tls", "--insecure", "--cafile", "ca.pem", "-n", "1")
    assert p.returncode == 2 and "--insecure" in p.stderr and "Traceback" not in p.stderr


def test_merge_keeps_security_and_error_reasons() -> None:
    a = LoadResult(connections=1, elapsed=1.0, verified=5, requests=5, security="TLS, certificate verified for x")
    b = LoadResult(connections=1, elapsed=1.0, requests=3, errors={"tls": 3},
                   error_samples={"tls": "certificate verify failed: self-signed certificate"},
                   security="TLS, certificate verified for x")
    m = LoadResult.merge([a, b])
    assert m.security == "TLS, certificate verified for x"
    assert m.errors == {"tls": 3} and m.error_samples["tls"].startswith("certificate verify failed")
    again = LoadResult.from_part(m.to_dict())
    assert again.security == m.security and again.error_samples == m.error_samples
    assert "tls: certificate verify failed: self-signed certificate" in again.render()


# -- arguments and output (issue 15, item 9) -----------------------------------------

def one_line_error(p: subprocess.CompletedProcess[str]) -> bool:
    """Exit 2 with one line on standard error, no traceback, nothing on standard output."""
    return p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


@pytest.mark.parametrize("args", [
    ["-d", "nan"], ["-d", "inf"], ["-d", "-1"], ["-d", "0"], ["-d", "10 parsecs"],
    ["--rate", "nan"], ["--rate", "inf"], ["--rate", "0"], ["--rate", "1e-9"],
    ["--connect-timeout", "nan"], ["--timeout", "nan"], ["--timeout", "0"],
    ["-c", "0"], ["--procs", "0"], ["--bogus"],
])
def test_bad_numbers_exit_2_with_one_line(args: list[str]) -> None:
    with FixtureServer() as srv:
        p = run_cli(srv.target, "-c", "2", *args, timeout=20) if args[0] != "-c" else \
            run_cli(srv.target, *args, timeout=20)
        assert srv.accepted == 0
    assert one_line_error(p), (p.returncode, p.stdout, p.stderr)


def test_a_low_rate_still_runs_for_the_whole_duration(tmp_path: Path) -> None:
    # 1 request/s over 5 connections for 2 s: connection 0 sends at 0 s,
    # connection 1 at 1 s, and the run still lasts its 2 s.
    out = tmp_path / "r.json"
    with FixtureServer() as srv:
        t = monotonic()
        p = run_cli(srv.target, "-c", "5", "--rate", "1", "-d", "2", "--json", str(out), "--no-progress")
        took = monotonic() - t
    assert p.returncode == 0, p.stdout + p.stderr
    r = load_json(out)
    assert r["requests"] == r["verified"] == 2
    assert r["elapsed"] >= 1.95 and took >= 1.95


def test_an_idle_connection_the_server_closed_is_no_error(tmp_path: Path) -> None:
    # Open loop, each connection idle 0.5 s between requests, the server
    # closing connections idle 0.3 s (as `serve --idle-timeout` does): the
    # client notices before it sends and connects again, nothing lost.
    out = tmp_path / "r.json"
    with FixtureServer(idle_timeout=0.3) as srv:
        p = run_cli(srv.target, "-c", "2", "--rate", "4", "-d", "2s", "--json", str(out), "--no-progress")
    assert p.returncode == 0, p.stdout + p.stderr
    r = load_json(out)
    assert r["verified"] == r["requests"] == 8 and not any(r["errors"].values())
    assert r["opened"] == srv.accepted >= 6


def test_durations_take_units(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with FixtureServer() as srv:
        p = run_cli(srv.target, "-c", "2", "-d", "700ms", "--timeout", "2s", "--connect-timeout", "0.05m",
                    "--json", str(out), "--no-progress")
    assert p.returncode == 0, p.stdout + p.stderr
    assert 0.65 <= load_json(out)["elapsed"] <= 0.9


@pytest.mark.parametrize("content", ["[]", "{\"connections\": \"x\"}", "not json", "{\"connections\": 1, "
                                     "\"elapsed\": 1, \"opened\": 1, \"failed\": 0, \"requests\": 1, "
                                     "\"verified\": 1, \"mismatches\": 0, \"histogram\": \"garbage\"}"])
def test_merge_of_a_bad_file_is_one_line_not_a_traceback(tmp_path: Path, content: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    p = subprocess.run([sys.executable, "-m", "greenline", "load", "merge", str(bad)],
                       capture_output=True, text=True, timeout=30)
    assert one_line_error(p), (p.returncode, p.stdout, p.stderr)
    assert "bad.json" in p.stderr


def test_error_samples_are_words_not_class_names(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with FixtureServer(close_prob=0.05) as srv:
        run_cli(srv.target, "-c", "5", "-n", "400", "--json", str(out), "--no-progress")
    with FixtureServer("silent") as srv:
        p = run_cli(srv.target, "-c", "2", "-n", "2", "--timeout", "0.3", "--no-progress")
    samples = load_json(out)["error_samples"]
    assert "closed early" in samples
    for text in [*samples.values(), p.stdout]:
        assert "_ClosedEarly" not in text and "_ReplyTimeout" not in text, text
    assert "closed the connection" in samples["closed early"]
    assert "timeout: no reply within 0.3 s" in p.stdout


def test_json_dash_writes_to_standard_output(tmp_path: Path) -> None:
    with FixtureServer() as srv:
        p = subprocess.run([sys.executable, "-m", "greenline", "load", srv.target, "-c", "3", "-d", "1.2",
                            "--json", "-"], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert not (tmp_path / "-").exists()
    r = json.loads(p.stdout)  # nothing else on standard output
    assert r["verified"] == r["requests"] > 0
    # The report and the progress went to standard error.
    assert "result       OK" in p.stderr
    assert [ln for ln in p.stderr.splitlines() if ln.startswith("[")]


def test_progress_goes_to_standard_error_when_piped() -> None:
    with FixtureServer() as srv:
        p = run_cli(srv.target, "-c", "3", "-d", "1.5")
    assert p.returncode == 0, p.stdout + p.stderr
    assert not [ln for ln in p.stdout.splitlines() if ln.startswith("[")]
    assert [ln for ln in p.stderr.splitlines() if ln.startswith("[")]
    assert "result       OK" in p.stdout
