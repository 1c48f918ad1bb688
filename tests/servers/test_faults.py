"""Faults thrown at ``greenline serve upper``, run as a user runs it (a
subprocess on port 0, its port read from the ``listening on`` line), with the
clients as green threads here.  Each test asserts that nothing was lost and
that nothing leaked: the server's descriptor count (``/proc/PID/fd``) is back
to where it was.

Complements tests/servers/test_supervisor.py (the serve helper's tests: one SIGKILL,
one SIGTERM, 5,000 idle connections, one-thread descriptor exhaustion, 50
resets) with the edges those leave out: resets while the server is writing,
half-closes of large requests, 1 MiB in one write, arbitrary bytes as a
property, clients that stall writing, exhaustion with several threads, and
worker SIGKILL plus supervisor SIGTERM under load, round after round.
"""

from __future__ import annotations

import os
import signal
import struct
import time
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_helpers import MiB, Serve, ask, fds, owners, recv_all, serving

import greenline
from greenline import socket


@pytest.fixture
def serve(tmp_path):
    yield from serving(tmp_path)


def settle(pid: int, baseline: int, timeout: float = 5) -> int:
    """The process's descriptor count once it is back to baseline (or the
    timeout passed): closing takes a pass or two of its hub."""
    deadline = time.monotonic() + timeout
    while fds(pid) != baseline and time.monotonic() < deadline:
        greenline.sleep(0.02)
    return fds(pid)


def assert_clean(srv: Serve) -> None:
    logs = srv.logs()
    assert "Traceback" not in logs and " ERROR " not in logs, logs[-3000:]


# -- single connections ---------------------------------------------------------------------


def test_resets_while_the_server_reads_and_while_it_writes(serve):
    srv = serve("upper")
    (pid,) = srv.wait_workers(1)
    baseline = fds(pid)
    linger0 = struct.pack("ii", 1, 0)
    # Reset with a request half read.
    for _ in range(20):
        c = socket.create_connection(srv.address, timeout=5)
        c.sendall(b"r" * 300_000)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
        c.close()
    # Reset while the server is stuck writing a reply nobody reads: it holds
    # 4 MiB of replies against a full socket buffer when the reset comes.
    stuck = []
    for _ in range(10):
        c = socket.create_connection(srv.address, timeout=5)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.setblocking(False)
        sent = 0
        while sent < 4 * MiB:
            try:
                sent += c.send(b"w" * 65536)
            except BlockingIOError:
                break  # both directions are full: the server is blocked in sendall
        stuck.append(c)
    greenline.sleep(0.2)
    for c in stuck:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
        c.close()
    assert settle(pid, baseline) == baseline
    assert ask(srv.address, b"still here") == b"STILL HERE"
    assert settle(pid, baseline) == baseline
    assert psutil.Process(srv.proc.pid).children()[0].pid == pid  # no crash, no restart
    assert_clean(srv)
    assert srv.terminate() == 0


@pytest.mark.parametrize("size", [0, 1, 65_535, MiB + 7])
def test_half_close_still_gets_the_whole_reply(serve, size):
    srv = serve("upper")
    (pid,) = srv.wait_workers(1)
    baseline = fds(pid)
    payload = bytes(i * 7 % 256 for i in range(size))
    c = socket.create_connection(srv.address, timeout=10)
    reader = greenline.spawn(recv_all, c)  # until the server's end of file
    c.sendall(payload)
    c.shutdown(socket.SHUT_WR)
    assert reader.get(timeout=20) == payload.upper()
    c.close()
    assert settle(pid, baseline) == baseline
    assert srv.terminate() == 0


def test_one_mebibyte_in_one_write_comes_back_whole_and_in_order(serve):
    srv = serve("upper")
    (pid,) = srv.wait_workers(1)
    baseline = fds(pid)
    c = socket.create_connection(srv.address, timeout=10)
    for round_ in range(3):
        pattern = b"abc\xe9\xff%d-" % round_
        payload = (pattern * (MiB // len(pattern) + 1))[:MiB]
        reader = greenline.spawn(recv_all, c, len(payload))
        c.sendall(payload)
        got = reader.get(timeout=20)
        assert len(got) == MiB
        assert got == payload.upper()
    c.close()
    assert settle(pid, baseline) == baseline
    assert srv.terminate() == 0


@pytest.fixture(scope="module")
def shared_upper(tmp_path_factory):
    srv = Serve(tmp_path_factory.mktemp("faults"), "upper")
    yield srv
    srv.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.binary(min_size=1, max_size=70_000), min_size=1, max_size=6))
def test_any_bytes_come_back_upper_cased_byte_for_byte(shared_upper, chunks):
    # bytes.upper(): a-z become A-Z, every other byte value (non-ASCII,
    # invalid UTF-8, NUL) comes back exactly as sent, and nothing is framed.
    c = socket.create_connection(shared_upper.address, timeout=10)
    try:
        for chunk in chunks:
            reader = greenline.spawn(recv_all, c, len(chunk))
            c.sendall(chunk)
            assert reader.get(timeout=10) == chunk.upper()
        c.shutdown(socket.SHUT_WR)
        assert c.recv(1) == b""
    finally:
        c.close()


def test_every_byte_value_and_invalid_utf8(serve):
    srv = serve("upper")
    srv.wait_workers(1)
    payload = bytes(range(256)) * 64 + b"\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc\xed\xa0\x80" + b"z\x00Z"
    expected = bytes(b - 32 if 97 <= b <= 122 else b for b in payload)
    assert ask(srv.address, payload) == expected
    assert srv.terminate() == 0


# -- idle timeout -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_idle_timeout_spares_slow_progress_and_closes_a_stalled_writer(serve):
    srv = serve("upper", "--idle-timeout", "1")
    (pid,) = srv.wait_workers(1)
    baseline = fds(pid)

    def trickle() -> int:
        # A byte every 0.4 s for 3 s: slow, but never 1 s without progress.
        c = socket.create_connection(srv.address, timeout=5)
        try:
            answered = 0
            for _ in range(8):
                c.sendall(b"t")
                assert c.recv(1) == b"T"
                answered += 1
                greenline.sleep(0.4)
            return answered
        finally:
            c.close()

    def stalled_writer() -> tuple[float, str]:
        # Sends and never reads: the server's sendall makes no progress once
        # our receive buffer is full, and the server must give up on it.
        # The small receive buffer is set before connect(), as tcp(7) says
        # it must be to take effect: set after, the window the handshake
        # announced may still grow now and then, and every bit of it is
        # progress that spares the server's send (CI once saw the server
        # never give up, on a loaded machine).
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.settimeout(15)
        c.connect(srv.address)
        t0 = time.monotonic()
        try:
            while True:
                c.sendall(b"s" * 65536)
        except OSError as e:
            return time.monotonic() - t0, type(e).__name__
        finally:
            c.close()

    tricklers = [greenline.spawn(trickle) for _ in range(20)]
    writers = [greenline.spawn(stalled_writer) for _ in range(5)]
    assert [t.get(timeout=20) for t in tricklers] == [8] * 20
    for w in writers:
        elapsed, error = w.get(timeout=20)
        # Closed about a second after it stalled, not when our socket timed out.
        assert elapsed < 5, (elapsed, error)
        assert error in ("ConnectionResetError", "BrokenPipeError"), error
    assert settle(pid, baseline) == baseline
    assert_clean(srv)
    assert srv.terminate() == 0


# -- out of descriptors -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_descriptor_exhaustion_with_two_threads_recovers_to_baseline(serve):
    srv = serve("upper", "--threads", "2", nofile=80)
    (pid,) = srv.wait_workers(1)
    baseline = fds(pid)
    flood = []
    for i in range(300):
        s = socket.create_connection(srv.address, timeout=5)
        s.sendall(b"flood %d;" % i)
        flood.append(s)
    deadline = time.monotonic() + 10
    while "pausing accept" not in srv.logs() and time.monotonic() < deadline:
        greenline.sleep(0.05)
    assert "pausing accept" in srv.logs()
    assert srv.proc.poll() is None and psutil.pid_exists(pid)
    # Those it did accept were answered, whole.
    answered = 0
    for i, s in enumerate(flood):
        s.settimeout(0.01)
        try:
            want = b"FLOOD %d;" % i
            if recv_all(s, len(want)) == want:
                answered += 1
        except (TimeoutError, BlockingIOError):
            pass
    assert answered > 20
    for s in flood:
        s.close()
    # Descriptors back: everything that waited in the backlog was closed by
    # its client; new clients are served on both threads.
    askers = [greenline.spawn(ask, srv.address, b"after %d" % i) for i in range(200)]
    greenline.joinall(askers, raise_error=True, timeout=30)
    assert [t.value for t in askers] == [b"AFTER %d" % i for i in range(200)]
    assert settle(pid, baseline) == baseline
    assert "accepting again" in srv.logs()
    assert psutil.Process(srv.proc.pid).children()[0].pid == pid
    assert srv.terminate() == 0


# -- SIGKILL of a worker, SIGTERM of the supervisor, under load --------------------------------


class Client:
    """Keeps sending numbered requests on one connection, checking each
    reply, until told to stop; then finishes the request in flight and
    closes.  ``unanswered`` counts requests sent whose full reply never came;
    ``wrong`` keeps a reply that was not (a prefix of) the right one, which
    no fault may ever cause, so it is kept apart from connection errors."""

    def __init__(self, address, name: str) -> None:
        self.sock = socket.create_connection(address, timeout=10)
        self.port = self.sock.getsockname()[1]
        self.name = name
        self.replies = 0
        self.unanswered = 0
        self.error: BaseException | None = None
        self.wrong: tuple[bytes, bytes] | None = None
        self.running = True

    def run(self) -> None:
        i = 0
        try:
            while self.running:
                msg = f"{self.name} request {i};".encode()
                self.sock.sendall(msg)
                self.unanswered += 1
                got = recv_all(self.sock, len(msg))
                if got != msg.upper():
                    # Cut short by a killed worker is fine; anything else is not.
                    if not msg.upper().startswith(got):
                        self.wrong = (msg, got)
                    return
                self.unanswered -= 1
                self.replies += 1
                i += 1
        except OSError as e:
            self.error = e  # reset, broken pipe, timeout: the connection's fate
        except BaseException as e:
            self.error = e  # a bug in the test client: never acceptable, see below
        finally:
            self.sock.close()


def kill_and_terminate_round(tmp_path: Path, round_: int) -> dict[str, int]:
    srv = Serve(tmp_path, "upper", "--procs", "2", "--graceful-timeout", "5")
    try:
        pids = srv.wait_workers(2)
        sup_baseline = fds(srv.proc.pid)
        clients: list[Client] = []
        tasks = []
        owner: dict[int, int] = {}
        # Which worker accepts is up to whichever wakes first: connect until
        # both hold some.
        for batch in range(30):
            new = [Client(srv.address, f"r{round_}b{batch}c{i}") for i in range(10)]
            clients += new
            tasks += [greenline.spawn(c.run) for c in new]
            greenline.sleep(0.05)
            owner = owners(pids, srv.port)
            held = [sum(1 for c in clients if owner.get(c.port) == pid) for pid in pids]
            if min(held) >= 5 and all(c.port in owner for c in clients):
                break
        assert min(held) >= 5, held
        victim, survivor = pids[round_ % 2], pids[1 - round_ % 2]
        mine = [c for c in clients if owner[c.port] == survivor]
        theirs = [c for c in clients if owner[c.port] == victim]
        before = {c.name: c.replies for c in mine}
        os.kill(victim, signal.SIGKILL)
        # New connections are served meanwhile, by the survivor or the
        # replacement, and the supervisor closes what it held for the victim.
        assert ask(srv.address, b"during %d" % round_) == b"DURING %d" % round_
        srv.wait_workers(2, exclude=frozenset({victim}))
        assert settle(srv.proc.pid, sup_baseline) == sup_baseline
        greenline.sleep(0.2)
        for c in theirs:
            assert c.error is not None or c.sock.fileno() == -1, c.name  # its worker is gone
            assert c.wrong is None, (c.name, c.wrong)  # ... but it never sent a wrong reply
            assert c.error is None or isinstance(c.error, OSError), (c.name, c.error)
        for c in mine:
            assert c.error is None, (c.name, c.error)
            assert c.replies > before[c.name], c.name  # served all along
        # Now SIGTERM the supervisor with the survivors' requests in flight:
        # each finishes what it has in flight and closes; nothing unanswered.
        more = [Client(srv.address, f"r{round_}late{i}") for i in range(10)]
        mine += more
        tasks += [greenline.spawn(c.run) for c in more]
        greenline.sleep(0.1)
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        for c in clients + more:
            c.running = False
        greenline.joinall(tasks, timeout=15)
        code = srv.wait(10)
        elapsed = time.monotonic() - t0
        assert code == 0, srv.logs()[-3000:]
        # Done when the connections were, well before --graceful-timeout 5.
        assert elapsed < 4, elapsed
        lost = [(c.name, c.unanswered, c.error) for c in mine if c.unanswered or c.error]
        assert not lost, lost
        wrong = [(c.name, c.wrong) for c in clients + more if c.wrong]
        assert not wrong, wrong
        assert f"worker {victim} killed by SIGKILL" in srv.logs()
        assert "Traceback" not in srv.logs()
        return {"survivors": len(mine), "killed": len(theirs), "replies": sum(c.replies for c in clients + more)}
    finally:
        srv.close()


def test_sigkill_and_sigterm_under_load_quick(tmp_path):
    for r in range(2):
        kill_and_terminate_round(tmp_path, r)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_and_sigterm_under_load_twenty_rounds(tmp_path):
    totals = [kill_and_terminate_round(tmp_path, r) for r in range(20)]
    assert sum(t["survivors"] for t in totals) >= 20 * 15


# -- TLS: what a hostile or broken client does to the handshake -----------------------------


@pytest.mark.timeout(60)
def test_tls_garbage_resets_plaintext_and_stalled_handshakes_cost_nothing(serve, tmp_path):
    trustme = pytest.importorskip("trustme")
    from greenline import ssl

    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "both.pem"))
    srv = serve("upper", "--certfile", str(tmp_path / "both.pem"), "--idle-timeout", "1")
    (pid,) = srv.wait_workers(1)
    baseline = fds(pid)
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)

    def tls_ask(msg: bytes) -> bytes:
        c = ctx.wrap_socket(socket.create_connection(srv.address, timeout=10), server_hostname="127.0.0.1")
        try:
            reader = greenline.spawn(recv_all, c, len(msg))
            c.sendall(msg)
            return reader.get(timeout=10)
        finally:
            c.close()

    # Silent clients that never start the handshake: closed by --idle-timeout,
    # and meanwhile nobody else waits for them.
    stalled = [socket.create_connection(srv.address, timeout=10) for _ in range(50)]
    stalled_at = time.monotonic()
    # Garbage where the ClientHello should be, including a plain HTTP request.
    for junk in (b"GET / HTTP/1.0\r\n\r\n", os.urandom(3000), b"\x16\x03\x01\xff\xff" + b"\x00" * 100):
        c = socket.create_connection(srv.address, timeout=10)
        c.sendall(junk)
        try:
            reply = recv_all(c)  # until the server closes it
        except ConnectionResetError:
            reply = b""
        assert junk.upper() not in reply  # never taken for data and echoed
        c.close()
    # A client that resets half way through its handshake.
    for _ in range(10):
        raw = socket.create_connection(srv.address, timeout=10)
        hello = ssl.MemoryBIO()
        out = ssl.MemoryBIO()
        obj = ctx.wrap_bio(hello, out, server_hostname="127.0.0.1")
        with pytest.raises(ssl.SSLWantReadError):
            obj.do_handshake()
        raw.sendall(out.read())  # the ClientHello, then vanish
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()
    t0 = time.monotonic()
    answers = [greenline.spawn(tls_ask, b"tls %d \xe9" % i) for i in range(20)]
    greenline.joinall(answers, raise_error=True, timeout=20)
    assert [a.value for a in answers] == [(b"tls %d \xe9" % i).upper() for i in range(20)]
    assert time.monotonic() - t0 < 1.0  # the 50 stalled handshakes held up nobody
    for s in stalled:
        assert s.recv(1) == b""  # closed by the idle timeout
        s.close()
    assert time.monotonic() - stalled_at < 1 + 2
    assert settle(pid, baseline) == baseline
    assert psutil.Process(srv.proc.pid).children()[0].pid == pid
    assert "Traceback" not in srv.logs()
    assert srv.terminate() == 0
