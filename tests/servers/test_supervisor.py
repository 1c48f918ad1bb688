"""``greenline serve``, driven as a user would: a subprocess on port 0, the
port read from its ``listening on`` line, clients as green threads here."""

from __future__ import annotations

import os
import resource
import select as stdselect
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from serve_helpers import SRC, Serve, ask, owners, recv_all, recv_exactly, serving

import greenline
from greenline import socket


@pytest.fixture
def serve(tmp_path):
    yield from serving(tmp_path)


class PingPong:
    """A client that keeps sending numbered messages and checks each reply."""

    def __init__(self, address, name: str, pause: float = 0.0) -> None:
        self.pause = pause  # between requests: keeps many clients' load modest
        self.sock = socket.create_connection(address, timeout=10)
        self.port = self.sock.getsockname()[1]
        self.name = name
        self.replies = 0
        self.error: BaseException | None = None
        self.partial: bytes | None = None  # part of a reply, then the end: a loss
        self.closed = False
        self.running = True

    def run(self) -> None:
        i = 0
        try:
            while self.running:
                msg = f"{self.name} say hello {i};".encode()
                self.sock.sendall(msg)
                got = recv_exactly(self.sock, len(msg))
                if len(got) < len(msg):
                    if got:
                        self.partial = got
                    self.closed = True
                    return
                assert got == msg.upper(), (got, msg)
                self.replies += 1
                i += 1
                if self.pause:
                    greenline.sleep(self.pause)
        except (ConnectionResetError, BrokenPipeError) as e:
            self.error = e
            self.closed = True
        except BaseException as e:
            self.error = e
        finally:
            self.sock.close()


def test_thousand_concurrent_connections_on_two_procs_of_two_threads(serve):
    srv = serve("upper", "--procs", "2", "--threads", "2")
    assert len(srv.workers()) == 2
    n = 1000
    ok = []

    def client(i: int) -> None:
        c = socket.create_connection(srv.address, timeout=20)
        try:
            for r in range(3):
                msg = f"client {i} round {r} \xe9".encode("latin-1")
                c.sendall(msg)
                assert recv_exactly(c, len(msg)) == msg.upper()
            ok.append(i)
        finally:
            c.close()

    tasks = [greenline.spawn(client, i) for i in range(n)]
    greenline.joinall(tasks, raise_error=True, timeout=60)
    assert sorted(ok) == list(range(n))
    assert srv.terminate() == 0
    assert "Traceback" not in srv.logs()


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sigkill_of_a_worker_under_load(serve):
    srv = serve("upper", "--procs", "2")
    pids = srv.wait_workers(2)
    # Which worker holds which connection: the server side's remote port.
    # Both must hold some; which one accepts a connection is up to whichever
    # is first to wake, so keep connecting until each has a share.
    clients: list[PingPong] = []
    tasks = []
    owner: dict[int, int] = {}
    for batch in range(20):
        new = [PingPong(srv.address, f"c{batch}-{i}") for i in range(20)]
        clients += new
        tasks += [greenline.spawn(c.run) for c in new]
        greenline.sleep(0.2)
        owner.update(owners(pids, srv.port))
        held = [sum(1 for c in clients if owner.get(c.port) == pid) for pid in pids]
        if min(held) >= 10:
            break
    assert min(held) >= 10, f"connections per worker: {held}"
    assert all(c.port in owner for c in clients)
    victim, survivor = pids
    before = {c.name: c.replies for c in clients}
    os.kill(victim, signal.SIGKILL)
    t0 = time.monotonic()
    # New connections keep working while the victim is replaced.
    assert ask(srv.address, b"new one") == b"NEW ONE"
    assert time.monotonic() - t0 < 1.0
    replacement = srv.wait_workers(2, exclude={victim})
    assert survivor in replacement
    greenline.sleep(0.5)
    for c in clients:
        c.running = False
    greenline.joinall(tasks, timeout=10)
    for c in clients:
        if owner[c.port] == survivor:
            assert c.error is None and not c.closed and c.partial is None, c.name
            assert c.replies > before[c.name]  # kept being served throughout
        else:
            assert c.closed  # its worker is gone
    assert f"worker {victim} killed by SIGKILL" in srv.logs()
    for _ in range(20):
        assert ask(srv.address, b"after") == b"AFTER"
    assert srv.terminate() == 0


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sigterm_under_load_answers_what_was_read_and_exits_zero(serve, until):
    srv = serve("upper", "--procs", "2", "--threads", "2", "--graceful-timeout", "2")
    srv.wait_workers(2)
    clients = [PingPong(srv.address, f"c{i}") for i in range(100)]
    tasks = [greenline.spawn(c.run) for c in clients]
    until(lambda: all(c.replies for c in clients), timeout=10, what="every client answered")
    before = sum(c.replies for c in clients)
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    code = srv.wait(2 + 2.0)
    elapsed = time.monotonic() - t0
    assert code == 0, srv.logs()
    assert elapsed < 2 + 1.5
    greenline.joinall(tasks, timeout=10)
    for c in clients:
        # The server went on answering, then closed between two requests:
        # never a partial reply, never an unexpected error.
        assert c.partial is None, c.name
        assert c.error is None or isinstance(c.error, (ConnectionResetError, BrokenPipeError)), c.error
        assert c.closed
    assert sum(c.replies for c in clients) > before
    with pytest.raises(OSError):
        ask(srv.address, b"x", timeout=1)


def test_sigterm_lets_a_request_in_flight_finish(serve, tmp_path, until):
    (tmp_path / "slowapp.py").write_text(textwrap.dedent("""
        import greenline

        def handle(sock, address):
            data = sock.recv(100)
            open("request-read", "w").close()  # in the server's directory: the test's tmp_path
            greenline.sleep(1.0)
            sock.sendall(data.upper())
    """))
    srv = serve("slowapp:handle", "--graceful-timeout", "5")
    srv.wait_workers(1)
    c = socket.create_connection(srv.address, timeout=10)
    c.sendall(b"in flight")
    until((tmp_path / "request-read").exists, what="the handler reading the request")
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    assert recv_exactly(c, 9) == b"IN FLIGHT"
    assert c.recv(10) == b""  # then the handler returned and the server closed it
    c.close()
    assert srv.wait(5) == 0
    assert time.monotonic() - t0 < 3  # done when the work was, not at the 5 s limit


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_descriptor_exhaustion_neither_crashes_nor_spins_and_recovers(serve, until):
    srv = serve("upper", "--log-level", "debug", nofile=64)
    (pid,) = srv.wait_workers(1)
    worker = psutil.Process(pid)
    flood: list[socket.socket] = []
    # Far more connections than the worker may have descriptors; each one
    # sends a request so the ones accepted are busy too.
    for i in range(200):
        s = socket.create_connection(srv.address, timeout=5)
        s.sendall(b"flood %d;" % i)
        flood.append(s)
    until(lambda: "pausing accept" in srv.logs(), what="the worker out of descriptors")
    cpu0 = sum(worker.cpu_times()[:2])
    greenline.sleep(2.0)
    cpu = sum(worker.cpu_times()[:2]) - cpu0
    assert cpu < 0.3, f"worker used {cpu:.2f} s of CPU in 2 s while out of descriptors"
    assert worker.is_running() and srv.proc.poll() is None
    assert srv.logs().count("pausing accept") == 1  # once per episode, not per attempt
    # The connections accepted before the limit were served.
    answered = 0
    for s in flood:
        s.settimeout(0.01)
        try:
            if s.recv(100).startswith(b"FLOOD"):
                answered += 1
        except (TimeoutError, BlockingIOError):
            pass
    assert answered > 20
    for s in flood:
        s.close()
    # Descriptors free again: the backlog drains and new clients are served.
    t0 = time.monotonic()
    assert ask(srv.address, b"normal again", timeout=10) == b"NORMAL AGAIN"
    assert time.monotonic() - t0 < 5
    for i in range(30):
        msg = b"after %d" % i
        assert ask(srv.address, msg) == msg.upper()
    assert "accepting again" in srv.logs()
    assert [p.pid for p in srv.workers()] == [pid]  # never crashed or restarted
    assert srv.terminate() == 0


def test_a_user_app_that_raises_for_one_client_disturbs_none_of_100_others(serve, tmp_path, until):
    (tmp_path / "fragile.py").write_text(textwrap.dedent("""
        from greenline.servers.apps import upper

        def handle(sock, address):
            first = sock.recv(100)
            if first.startswith(b"boom"):
                raise RuntimeError("bad request")
            sock.sendall(first.upper())
            upper(sock, address)
    """))
    srv = serve("fragile:handle")
    (pid,) = srv.wait_workers(1)
    good = [PingPong(srv.address, f"g{i}") for i in range(100)]
    tasks = [greenline.spawn(c.run) for c in good]
    until(lambda: all(c.replies for c in good), timeout=10, what="every good client answered")
    bad = socket.create_connection(srv.address, timeout=5)
    bad.sendall(b"boom")
    assert bad.recv(10) == b""
    bad_port = bad.getsockname()[1]
    bad.close()
    greenline.sleep(0.3)
    for c in good:
        c.running = False
    greenline.joinall(tasks, timeout=10)
    for c in good:
        assert c.error is None and not c.closed and c.replies > 0, c.name
    logs = srv.logs()
    line = next(ln for ln in logs.splitlines() if "handler failed" in ln)
    assert f"[{pid}]" in line and f"127.0.0.1:{bad_port}" in line
    assert "RuntimeError: bad request" in logs
    assert srv.terminate() == 0


def test_idle_timeout_closes_silent_connections(serve):
    srv = serve("upper", "--idle-timeout", "0.5")
    srv.wait_workers(1)
    silent = socket.create_connection(srv.address, timeout=5)
    busy = socket.create_connection(srv.address, timeout=5)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.2:
        busy.sendall(b"beat")
        assert recv_exactly(busy, 4) == b"BEAT"
        greenline.sleep(0.1)
    assert silent.recv(10) == b""
    busy.sendall(b"alive")
    assert recv_exactly(busy, 5) == b"ALIVE"
    silent.close()
    busy.close()
    assert srv.terminate() == 0


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sighup_replaces_workers_one_at_a_time_refusing_nobody(serve):
    # One worker: nobody else could cover for a gap in the hand-over.
    srv = serve("upper", "--graceful-timeout", "1")
    old = set(srv.wait_workers(1))
    failures: list[BaseException] = []
    done = []
    slowest = [0.0]
    running = [True]

    def newcomer(i: int) -> None:
        # Fresh connections, one after another, all through the reload.
        while running:
            try:
                msg = b"new %d" % i
                t0 = time.monotonic()
                assert ask(srv.address, msg) == msg.upper()
                slowest[0] = max(slowest[0], time.monotonic() - t0)
                done.append(i)
            except BaseException as e:
                failures.append(e)
                return
            greenline.sleep(0.005)

    tasks = [greenline.spawn(newcomer, i) for i in range(10)]
    greenline.sleep(0.3)
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "reload complete" not in srv.logs() and time.monotonic() < deadline:
        greenline.sleep(0.05)
    new = set(srv.wait_workers(1, exclude=old))
    greenline.sleep(0.5)
    running.clear()
    greenline.joinall(tasks, timeout=10)
    assert not failures, failures[:3]
    assert len(done) > 50
    assert slowest[0] < 1.0
    assert not (new & old)
    logs = srv.logs()
    assert logs.count(", replacing ") == 1  # one "started worker ..., replacing OLD" each
    assert srv.proc.poll() is None
    assert srv.terminate() == 0


def test_workers_stop_when_the_supervisor_is_killed(serve):
    srv = serve("echo", "--procs", "2")
    pids = srv.wait_workers(2)
    srv.proc.kill()
    srv.proc.wait(5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(psutil.pid_exists(p) and
                                              psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                                              for p in pids):
        greenline.sleep(0.05)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in pids)


def _pythonpath() -> str:
    # SRC first; what was there before is kept after it (scripts/mutation.py
    # puts a sitecustomize there that children need).
    return os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)


def _run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=_pythonpath())
    return subprocess.run([sys.executable, "-m", "greenline", "serve", *args], capture_output=True,
                          text=True, timeout=30, env=env, cwd=tmp_path)


def test_bad_app_spec_and_busy_port_fail_cleanly(tmp_path):
    r = _run_cli(tmp_path, "no_such_module:handle", "--port", "0")
    assert r.returncode == 2 and "cannot import" in r.stderr and r.stdout == ""
    r = _run_cli(tmp_path, "nonsense", "--port", "0")
    assert r.returncode == 2 and "upper" in r.stderr
    busy = socket.create_server(("127.0.0.1", 0))
    try:
        r = _run_cli(tmp_path, "upper", "--port", str(busy.getsockname()[1]))
        assert r.returncode == 1 and "cannot listen" in r.stderr and r.stdout == ""
    finally:
        busy.close()


def test_a_worker_that_cannot_start_stops_the_supervisor(tmp_path):
    # An app whose import works in the supervisor but whose workers die at
    # start: the supervisor must not restart them forever.
    (tmp_path / "dies.py").write_text(textwrap.dedent("""
        import os
        SUPERVISOR = os.getpid()

        def handle(sock, address):
            pass

        # Runs in each worker's first thread before it accepts.
        import greenline.servers.stream as _s
        _orig = _s.StreamServer.start
        def start(self):
            if os.getpid() != SUPERVISOR:
                raise RuntimeError("cannot start here")
            _orig(self)
        _s.StreamServer.start = start
    """))
    r = _run_cli(tmp_path, "dies:handle", "--port", "0")
    assert r.returncode == 1, r.stderr
    assert "failed to start" in r.stderr and "listening on" not in r.stdout


def test_the_seeds_server_as_a_module_function_app(serve):
    # examples/apps/seed_app.py: the seed's communication() under serve, its
    # blocking time.sleep made cooperative by --monkey-patch.
    apps = str(Path(__file__).resolve().parents[2] / "examples" / "apps")
    os.environ["SEED_THINK_SECONDS"] = "0.3"
    try:
        srv = serve("seed_app:communication", "--monkey-patch", "--threads", "2", pythonpath=apps)
    finally:
        del os.environ["SEED_THINK_SECONDS"]
    srv.wait_workers(1)
    replies = []

    def client(i: int) -> None:
        msg = f"client {i} say hello".encode()
        replies.append(ask(srv.address, msg) == msg.upper())

    t0 = time.monotonic()
    greenline.joinall([greenline.spawn(client, i) for i in range(50)], raise_error=True, timeout=20)
    elapsed = time.monotonic() - t0
    assert replies == [True] * 50
    # 50 clients x 0.3 s of sleeping, at once: the sleeps overlapped.
    assert elapsed < 3.0
    assert srv.terminate() == 0


def test_resets_half_closes_and_odd_bytes_leave_no_descriptor_behind(serve):
    srv = serve("upper")
    (pid,) = srv.wait_workers(1)
    worker = psutil.Process(pid)
    baseline = worker.num_fds()
    # Clients that reset in the middle of a request (linger 0, then close).
    for _ in range(50):
        c = socket.create_connection(srv.address, timeout=5)
        c.sendall(b"r" * 100_000)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    # A half-close still gets the reply for what was sent.
    c = socket.create_connection(srv.address, timeout=5)
    c.sendall(b"half closed")
    c.shutdown(socket.SHUT_WR)
    assert recv_exactly(c, 100) == b"HALF CLOSED"
    c.close()
    # Every byte value, including what is not UTF-8, comes back upper-cased.
    payload = os.urandom(200_000) + bytes(range(256))
    c = socket.create_connection(srv.address, timeout=5)
    reader = greenline.spawn(recv_exactly, c, len(payload))
    c.sendall(payload)
    assert reader.get(timeout=10) == payload.upper()
    c.close()
    deadline = time.monotonic() + 5
    while worker.num_fds() != baseline and time.monotonic() < deadline:
        greenline.sleep(0.05)
    assert worker.num_fds() == baseline
    logs = srv.logs()
    assert "ERROR" not in logs and "Traceback" not in logs
    assert srv.terminate() == 0


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_five_thousand_idle_connections_close_on_time_while_busy_ones_work(serve):
    srv = serve("upper", "--idle-timeout", "2")
    (pid,) = srv.wait_workers(1)
    worker = psutil.Process(pid)
    baseline = worker.num_fds()
    t0 = time.monotonic()
    idle = [socket.create_connection(srv.address, timeout=10) for _ in range(5000)]
    opened = time.monotonic() - t0
    closed_after: list[float] = []

    def watch(s: socket.socket) -> None:
        assert s.recv(1) == b""  # the server's end of file, not a reset
        closed_after.append(time.monotonic() - t0)

    watchers = [greenline.spawn(watch, s) for s in idle]
    busy = [PingPong(srv.address, f"b{i}") for i in range(100)]
    tasks = [greenline.spawn(c.run) for c in busy]
    greenline.joinall(watchers, raise_error=True, timeout=20)
    for c in busy:
        c.running = False
    greenline.joinall(tasks, timeout=10)
    assert len(closed_after) == 5000
    assert min(closed_after) >= 2.0
    assert max(closed_after) < opened + 2.0 + 1.0
    for c in busy:
        assert c.error is None and not c.closed and c.replies > 10, c.name
    for s in idle:
        s.close()
    deadline = time.monotonic() + 5
    while worker.num_fds() != baseline and time.monotonic() < deadline:
        greenline.sleep(0.05)
    assert worker.num_fds() == baseline
    assert srv.terminate() == 0


def test_tls_on_the_command_line(serve, tmp_path):
    trustme = pytest.importorskip("trustme")
    from greenline import ssl

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "both.pem"))
    srv = serve("upper", "--certfile", str(tmp_path / "both.pem"), "--threads", "2")
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    for i in range(10):
        c = ctx.wrap_socket(socket.create_connection(srv.address, timeout=5), server_hostname="127.0.0.1")
        msg = b"over tls %d" % i
        c.sendall(msg)
        assert recv_exactly(c, len(msg)) == msg.upper()
        c.close()
    assert srv.terminate() == 0
    r = _run_cli(tmp_path, "upper", "--port", "0", "--certfile", str(tmp_path / "missing.pem"))
    assert r.returncode == 2 and "certificate" in r.stderr


def test_restart_back_off_grows_for_workers_dying_young_only(serve, tmp_path, until):
    from greenline.servers.supervisor import HEALTHY_SECONDS, RESTART_MIN_DELAY

    (tmp_path / "crashy.py").write_text(textwrap.dedent("""
        import os

        def handle(sock, address):
            if sock.recv(100) == b"die":
                os._exit(7)
            sock.sendall(b"ok")
    """))
    srv = serve("crashy:handle")
    first = srv.wait_workers(1)[0]
    # It was alive by now, so past this much it has lived longer than
    # HEALTHY_SECONDS: a healthy life.  (Not psutil's create_time: it is
    # counted from the boot time in whole seconds, up to a second off.)
    alive_by = time.monotonic()
    until(lambda: time.monotonic() - alive_by > HEALTHY_SECONDS + 0.1, what="a healthy life")
    seen = {first}
    delays = []   # from the worker's death to its replacement's fork, as measured here
    logged = []   # what the supervisor said it would wait
    for _ in range(4):
        c = socket.create_connection(srv.address, timeout=5)
        c.sendall(b"die")
        assert c.recv(10) == b""  # the worker is gone (os._exit closed it)
        died = time.monotonic()
        c.close()
        while True:  # the replacement's fork, watched closely
            new = [p.pid for p in srv.workers() if p.pid not in seen]
            if new:
                delays.append(time.monotonic() - died)
                break
            assert time.monotonic() - died < 10, "no replacement worker"
            greenline.sleep(0.002)
        (pid,) = srv.wait_workers(1, exclude=seen)
        seen.add(pid)
        line = [ln for ln in srv.logs().splitlines() if "exited with code 7" in ln][-1]
        logged.append(float(line.rsplit("restarting in ", 1)[1].split()[0]))
    # At once after a healthy life, then RESTART_MIN_DELAY doubling while it
    # dies young: each replacement forked no sooner than designed (less the
    # few ms between the death and this client seeing it) and not much later.
    designed = [0.0, RESTART_MIN_DELAY, 2 * RESTART_MIN_DELAY, 4 * RESTART_MIN_DELAY]
    for took, want in zip(delays, designed, strict=True):
        assert want - 0.02 <= took <= want + max(want / 2, 0.15), (delays, designed)
    assert logged == designed
    c = socket.create_connection(srv.address, timeout=5)
    c.sendall(b"hello")
    assert recv_exactly(c, 2) == b"ok"
    c.close()
    assert srv.terminate() == 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_twenty_sigkill_rounds_lose_nothing_on_surviving_connections(serve):
    srv = serve("upper", "--procs", "2")
    pids = srv.wait_workers(2)
    clients: list[PingPong] = []
    tasks = []
    killed: set[int] = set()

    for rnd in range(20):
        # Both workers hold live connections before each kill.
        for batch in range(20):
            owner = owners(pids, srv.port)
            live = [c for c in clients if not c.closed and c.error is None]
            held = {pid: [c for c in live if owner.get(c.port) == pid] for pid in pids}
            if min(len(v) for v in held.values()) >= 3:
                break
            new = [PingPong(srv.address, f"r{rnd}b{batch}c{i}", pause=0.02) for i in range(10)]
            clients += new
            tasks += [greenline.spawn(c.run) for c in new]
            greenline.sleep(0.1)
        else:
            raise AssertionError(f"round {rnd}: could not get connections on both workers")
        victim = pids[rnd % 2]
        survivor = pids[1 - rnd % 2]
        before = {c.name: c.replies for c in held[survivor]}
        os.kill(victim, signal.SIGKILL)
        killed.add(victim)
        t0 = time.monotonic()
        assert ask(srv.address, b"round %d" % rnd) == b"ROUND %d" % rnd
        assert time.monotonic() - t0 < 1.0
        pids = srv.wait_workers(2, exclude=killed)
        greenline.sleep(0.2)
        for c in held[survivor]:
            assert c.error is None and not c.closed and c.partial is None, (rnd, c.name, c.error)
            assert c.replies > before[c.name], (rnd, c.name)
        for c in held[victim]:
            assert c.closed and c.partial is None, (rnd, c.name)
    for c in clients:
        c.running = False
    greenline.joinall(tasks, timeout=10)
    assert srv.logs().count("killed by SIGKILL") == 20
    assert srv.terminate() == 0


def test_stats_interval_logs_counts_per_worker(serve):
    srv = serve("upper", "--threads", "2", "--stats-interval", "0.2")
    (pid,) = srv.wait_workers(1)
    held = [socket.create_connection(srv.address, timeout=5) for _ in range(3)]
    for _ in range(4):
        assert ask(srv.address, b"x") == b"X"
    for c in held:
        c.sendall(b"y")
        assert recv_exactly(c, 1) == b"Y"
    deadline = time.monotonic() + 5
    want = f"[{pid}] INFO greenline.serve: stats: 3 connection(s) open, 7 accepted"
    while want not in srv.logs() and time.monotonic() < deadline:
        greenline.sleep(0.05)
    assert want in srv.logs()
    # And each thread's hub figures: the 3 held connections are live green
    # threads parked in recv, in one thread's hub or the other's.
    hub_lines = [line for line in srv.logs().splitlines() if "hub:" in line and f"[{pid}]" in line]
    assert any("thread 0 hub:" in line for line in hub_lines)
    assert any("thread 1 hub:" in line for line in hub_lines)
    assert "largest loop lag" in hub_lines[-1]
    for c in held:
        c.close()
    assert srv.terminate() == 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_twenty_sigterm_rounds_under_load_lose_no_reply(tmp_path):
    for rnd in range(20):
        srv = Serve(tmp_path, "upper", "--procs", "2", "--graceful-timeout", "0.3")
        try:
            srv.wait_workers(2)
            clients = [PingPong(srv.address, f"r{rnd}c{i}", pause=0.002) for i in range(20)]
            tasks = [greenline.spawn(c.run) for c in clients]
            greenline.sleep(0.15)
            t0 = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            assert srv.wait(5) == 0, (rnd, srv.logs())
            assert time.monotonic() - t0 < 0.3 + 1.5, rnd
            greenline.joinall(tasks, timeout=10)
            for c in clients:
                assert c.partial is None, (rnd, c.name)
                assert c.error is None or isinstance(c.error, (ConnectionResetError, BrokenPipeError)), (
                    rnd, c.name, c.error)
                assert c.closed and c.replies > 0, (rnd, c.name)
        finally:
            srv.close()


def test_after_sigterm_new_clients_are_refused_at_once_not_queued(serve):
    # A connection still open keeps the workers in their graceful period;
    # meanwhile the listening socket is closed everywhere, so a newcomer is
    # refused at once instead of waiting in a queue nobody accepts from (and
    # being reset when the last worker exits).
    srv = serve("upper", "--procs", "2", "--graceful-timeout", "5")
    srv.wait_workers(2)
    held = socket.create_connection(srv.address, timeout=10)
    held.sendall(b"x")
    assert recv_exactly(held, 1) == b"X"
    srv.proc.send_signal(signal.SIGTERM)
    # Refused within moments (a worker still accepting may take a newcomer
    # first, and answers it); never queued for the whole graceful period.
    deadline = time.monotonic() + 3
    refused = False
    while not refused and time.monotonic() < deadline:
        try:
            socket.create_connection(srv.address, timeout=2).close()
        except ConnectionRefusedError:
            refused = True
        else:
            greenline.sleep(0.02)
    assert refused, srv.logs()
    assert srv.proc.poll() is None  # still finishing the held connection
    held.close()
    assert srv.wait(10) == 0


def test_serve_builds_its_servers_through_the_factory_it_is_given(tmp_path):
    # The supervisor knows nothing of protocols: a factory makes each
    # thread's server (here, one that says which thread made it).
    from greenline.servers.supervisor import ServeConfig, stream_server_factory

    cfg = ServeConfig(app="upper", max_conns=7, idle_timeout=3.0)
    make = stream_server_factory(lambda sock, addr: None, cfg)
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        server = make(listener)
        assert server.max_connections == 7 and server.idle_timeout == 3.0
    finally:
        listener.close()


def test_the_factorys_server_runs_the_app_over_tls_with_the_handshake_timeout(tmp_path):
    # What the factory hands each worker thread: the app's handler, TLS
    # from --certfile/--keyfile and --handshake-timeout all reach the server
    # (checked in this process: the workers' own copies run where mutation
    # testing sees nothing).
    trustme = pytest.importorskip("trustme")
    from greenline import ssl
    from greenline.servers.supervisor import ServeConfig, stream_server_factory

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cfg = ServeConfig(app="mine", certfile=str(tmp_path / "cert.pem"), keyfile=str(tmp_path / "key.pem"),
                      handshake_timeout=2.5)

    def handle(sock, address):
        sock.sendall(b"from the app")

    listener = socket.create_server(("127.0.0.1", 0))
    server = stream_server_factory(handle, cfg)(listener)
    assert server.handshake_timeout == 2.5
    server.start()
    try:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        raw = socket.create_connection(listener.getsockname(), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as c:
            assert recv_exactly(c, 12) == b"from the app"
    finally:
        server.stop()
        listener.close()


# -- issue 15, item 8: every bad argument or app is one line and exit 2 ------

def _one_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stdout == ""
    return lines[0]


@pytest.mark.parametrize(("source", "says"), [
    ("def handle(sock, address)\n    pass\n", ["broken.py, line 1", "SyntaxError"]),
    ("import os\nimport gl_dependency_nobody_has\n",
     ["broken.py, line 2", "No module named 'gl_dependency_nobody_has'"]),
    ("X = 1\n\nraise RuntimeError('no config file')\n", ["broken.py, line 3", "RuntimeError: no config file"]),
])
def test_a_broken_app_is_one_line_naming_file_and_line_and_exit_2(tmp_path, source, says):
    (tmp_path / "broken.py").write_text(source)
    r = _run_cli(tmp_path, "broken:handle", "--port", "0")
    assert r.returncode == 2, r.stderr
    line = _one_line(r)
    assert line.startswith("greenline serve: "), line
    for s in says:
        assert s in line, line


@pytest.mark.parametrize(("args", "says"), [
    (["--port", "70000"], "--port"),
    (["--port", "-1"], "--port"),
    (["--graceful-timeout", "inf"], "--graceful-timeout"),
    (["--idle-timeout", "nan"], "--idle-timeout"),
    (["--stats-interval", "inf"], "--stats-interval"),
    (["--handshake-timeout", "0"], "--handshake-timeout"),
    (["--keyfile", "k.pem"], "--keyfile needs --certfile"),
    (["--procs", "many"], "--procs"),
    (["--log-file", "/no/such/dir/serve.log"], "cannot open the log file"),
    (["--pid", "/no/such/dir/serve.pid", "--port", "0"], "cannot write the pid file"),
])
def test_bad_values_are_one_line_and_exit_2(tmp_path, args, says):
    r = _run_cli(tmp_path, "upper", *args)
    assert r.returncode == 2, r.stderr
    line = _one_line(r)
    assert line.startswith("greenline serve: ") and says in line, line


def _spawn_cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
               stdin: Any = None, **kw: Any) -> tuple[subprocess.Popen[bytes], str]:
    """``greenline serve ARGS`` exactly as given (no --port added), and its
    ``listening on`` line."""
    full_env = dict(os.environ, PYTHONPATH=_pythonpath(), **(env or {}))
    log = open(tmp_path / f"cli-{time.monotonic_ns()}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "greenline", "serve", *args], stdout=subprocess.PIPE,
                            stderr=log, env=full_env, cwd=tmp_path, **kw)
    log.close()
    assert proc.stdout is not None
    ready, _, _ = stdselect.select([proc.stdout], [], [], 20)
    line = proc.stdout.readline().decode().strip() if ready else ""
    if not line.startswith("listening on "):
        proc.kill()
        proc.wait(5)
        raise AssertionError(f"no listening line: {line!r}: {Path(log.name).read_text()}")
    proc.log_path = Path(log.name)  # type: ignore[attr-defined]
    return proc, line


def _stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        greenline.sleep(0.02)
    if proc.poll() is None:
        for k in psutil.Process(proc.pid).children():
            k.kill()
        proc.kill()
    code = proc.wait(5)
    if proc.stdout is not None:
        proc.stdout.close()
    return code


@pytest.mark.timeout(60)
def test_inherited_descriptors_past_1024_do_not_break_the_supervisor(tmp_path):
    # Run with 1100 descriptors inherited: the supervisor's own (its pipes,
    # its workers' control sockets) are numbered past FD_SETSIZE, which
    # select() refuses with ValueError.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip("needs a descriptor limit of 2048")
    launcher = textwrap.dedent("""
        import os, resource, sys
        resource.setrlimit(resource.RLIMIT_NOFILE, (2048, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        for _ in range(1100):
            os.set_inheritable(os.open(os.devnull, os.O_RDONLY), True)
        os.execv(sys.executable, [sys.executable, "-m", "greenline", *sys.argv[1:]])
    """)
    (tmp_path / "launch.py").write_text(launcher)
    env = dict(os.environ, PYTHONPATH=_pythonpath())
    proc = subprocess.Popen([sys.executable, "launch.py", "serve", "upper", "--port", "0", "--procs", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        ready, _, _ = stdselect.select([proc.stdout], [], [], 20)
        line = proc.stdout.readline().decode() if ready else ""
        assert line.startswith("listening on 127.0.0.1:"), (line, proc.poll())
        port = int(line.rsplit(":", 1)[1])
        assert ask(("127.0.0.1", port), b"far fds") == b"FAR FDS"
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err.decode()[-3000:]
        assert b"Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


SPINNER = """
import os

def handle(sock, address):
    data = sock.recv(100)
    if data == b"spin":
        open("spinning-%d" % os.getpid(), "w").close()
        while True:  # no IO, ever: the worker's hub never runs again
            pass
    sock.sendall(data.upper())
"""


@pytest.mark.timeout(60)
def test_a_worker_replaced_on_sighup_that_does_not_stop_is_killed_after_its_graceful_timeout(
        serve, tmp_path, until):
    # Issue 15, item 2: before, it spun at 100% CPU until the final SIGTERM.
    from greenline.servers.supervisor import KILL_MARGIN

    (tmp_path / "spinner.py").write_text(SPINNER)
    srv = serve("spinner:handle", "--graceful-timeout", "1")
    (old,) = srv.wait_workers(1)
    stuck = socket.create_connection(srv.address, timeout=5)
    stuck.sendall(b"spin")
    until((tmp_path / f"spinning-{old}").exists, what="the handler spinning")
    srv.proc.send_signal(signal.SIGHUP)
    until(lambda: "replaced by" in srv.logs(), timeout=15, what="the new worker accepting")
    told = time.monotonic()
    # The new worker serves meanwhile.
    assert ask(srv.address, b"served") == b"SERVED"
    def gone() -> bool:
        # It may be reaped between any two looks: gone is gone.
        try:
            return psutil.Process(old).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    until(gone, timeout=1 + KILL_MARGIN + 5, what="the stuck worker gone")
    took = time.monotonic() - told
    assert 1 + KILL_MARGIN - 0.5 < took < 1 + KILL_MARGIN + 2, took
    until(lambda: f"worker {old} killed by SIGKILL" in srv.logs(), what="its end logged")
    logs = srv.logs()
    assert f"worker {old} still running" in logs and "killing it (SIGKILL)" in logs
    assert stuck.recv(10) == b""
    stuck.close()
    assert ask(srv.address, b"after") == b"AFTER"
    assert srv.proc.poll() is None
    assert srv.terminate() == 0


@pytest.mark.timeout(60)
def test_during_a_sighup_drain_new_clients_are_served_at_once_while_old_connections_finish(serve, until):
    # Issue 15, item 5, for SIGHUP: the old worker finishes its connection
    # for up to the graceful timeout; newcomers never wait for that.
    srv = serve("upper", "--graceful-timeout", "10")
    (old,) = srv.wait_workers(1)
    held = socket.create_connection(srv.address, timeout=10)
    held.sendall(b"before")
    assert recv_exactly(held, 6) == b"BEFORE"
    srv.proc.send_signal(signal.SIGHUP)
    until(lambda: "replaced by" in srv.logs(), timeout=15, what="the new worker accepting")
    srv.wait_workers(1, exclude={old})
    for i in range(20):
        t0 = time.monotonic()
        msg = b"newcomer %d" % i
        assert ask(srv.address, msg, timeout=5) == msg.upper()
        assert time.monotonic() - t0 < 1.0
    # The old worker is still draining: its connection is served.
    assert psutil.Process(old).status() != psutil.STATUS_ZOMBIE
    held.sendall(b"during")
    assert recv_exactly(held, 6) == b"DURING"
    held.close()
    until(lambda: f"worker {old} exited with code 0" in srv.logs(), timeout=10,
          what="the old worker done once its connection closed")
    assert srv.terminate() == 0


VERSIONED = """
from helper import PREFIX

def handle(sock, address):
    sock.sendall(PREFIX + sock.recv(100))
"""


def _ask_until_closed(address: Any, msg: bytes) -> bytes:
    c = socket.create_connection(address, timeout=5)
    try:
        c.sendall(msg)
        return recv_all(c)
    finally:
        c.close()


def _reload_and_wait(srv: Serve, until, old: set[int]) -> list[int]:
    before = srv.logs().count("reload complete")
    srv.proc.send_signal(signal.SIGHUP)
    until(lambda: srv.logs().count("reload complete") > before, timeout=20, what="the reload done")
    return srv.wait_workers(len(old), exclude=old)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("preload", [False, True])
def test_sighup_loads_the_apps_new_code_unless_preload(serve, tmp_path, until, preload):
    (tmp_path / "versioned.py").write_text(VERSIONED)
    (tmp_path / "helper.py").write_text("PREFIX = b'v1:'\n")
    srv = serve("versioned:handle", "--procs", "2", "--graceful-timeout", "1",
                *(["--preload"] if preload else []))
    first = set(srv.wait_workers(2))
    assert _ask_until_closed(srv.address, b"x")[:3] == b"v1:"
    # New code on disk (the module the app imports, too); a size that
    # differs, so that no cached bytecode can pass for it.
    (tmp_path / "helper.py").write_text("PREFIX = b'version 2:'\n")
    second = set(_reload_and_wait(srv, until, first))
    want = b"v1:" if preload else b"version 2:"
    for _ in range(10):
        got = _ask_until_closed(srv.address, b"x")
        assert got.startswith(want), got
    if preload:
        assert srv.terminate() == 0
        return
    # New code that does not import: the reload is abandoned and the
    # workers running go on; the reason is one line in the log.
    (tmp_path / "helper.py").write_text("PREFIX = b'v3:' +\n")
    before = srv.logs().count("reload abandoned")
    srv.proc.send_signal(signal.SIGHUP)
    until(lambda: srv.logs().count("reload abandoned") > before, timeout=20, what="the reload abandoned")
    assert "worker cannot load the app: cannot import 'versioned': SyntaxError" in srv.logs()
    assert "helper.py, line 1)" in srv.logs()
    assert set(srv.wait_workers(2)) == second
    assert _ask_until_closed(srv.address, b"x").startswith(b"version 2:")
    # Fixed: the next SIGHUP takes it.
    (tmp_path / "helper.py").write_text("PREFIX = b'version 4, fixed:'\n")
    _reload_and_wait(srv, until, second)
    assert _ask_until_closed(srv.address, b"x").startswith(b"version 4, fixed:")
    assert srv.terminate() == 0


@pytest.mark.timeout(60)
def test_sigttin_adds_a_worker_and_sigttou_removes_one(serve, until):
    srv = serve("upper", "-w", "1", "--graceful-timeout", "1")
    (first,) = srv.wait_workers(1)
    srv.proc.send_signal(signal.SIGTTIN)
    two = srv.wait_workers(2)
    assert first in two
    srv.proc.send_signal(signal.SIGTTIN)
    three = srv.wait_workers(3)
    assert psutil.Process(srv.proc.pid).status() != psutil.STATUS_STOPPED
    srv.proc.send_signal(signal.SIGTTOU)
    until(lambda: len(srv.workers()) == 2, timeout=10, what="down to two workers")
    srv.proc.send_signal(signal.SIGTTOU)
    until(lambda: len(srv.workers()) == 1, timeout=10, what="down to one worker")
    # Never below one.
    srv.proc.send_signal(signal.SIGTTOU)
    until(lambda: "already down to one worker" in srv.logs(), what="the last one kept")
    (last,) = [p.pid for p in srv.workers()]
    assert last in three
    for i in range(5):
        assert ask(srv.address, b"still %d" % i) == b"STILL %d" % i
    # A removed worker is not restarted.
    greenline.sleep(0.3)
    assert [p.pid for p in srv.workers()] == [last]
    assert srv.terminate() == 0


WSGI_APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["PATH_INFO"].encode()]
"""


def _get(address: Any, path: str, family: int = socket.AF_INET) -> bytes:
    c = socket.socket(family, socket.SOCK_STREAM)
    c.settimeout(5)
    try:
        c.connect(address)
        c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return recv_all(c)
    finally:
        c.close()


@pytest.mark.timeout(60)
def test_sigusr1_reopens_the_log_and_the_access_log(tmp_path, until):
    (tmp_path / "web.py").write_text(WSGI_APP)
    access, logfile = tmp_path / "access.log", tmp_path / "serve.log"
    proc, line = _spawn_cli(tmp_path, "--wsgi", "web:app", "--port", "0", "--procs", "2",
                            "--access-log", str(access), "--log-file", str(logfile))
    try:
        address = ("127.0.0.1", int(line.rsplit(":", 1)[1]))
        assert _get(address, "/one").endswith(b"/one")
        until(lambda: access.exists() and "/one" in access.read_text(), what="the first access line")
        assert "worker" in logfile.read_text()  # the log went to the file
        access.rename(tmp_path / "access.log.1")
        logfile.rename(tmp_path / "serve.log.1")
        proc.send_signal(signal.SIGUSR1)
        # The supervisor and both workers reopen theirs, each into the new file.
        until(lambda: logfile.exists() and logfile.read_text().count("logs reopened") == 3,
              timeout=10, what="every process reopening its logs")
        for i in range(10):
            assert _get(address, f"/two/{i}").endswith(f"/two/{i}".encode())
        until(lambda: access.exists() and access.read_text().count("/two/") == 10,
              what="the new access lines in the new file")
        assert "/two/" not in (tmp_path / "access.log.1").read_text()
        assert proc.poll() is None
    finally:
        assert _stop(proc) == 0


@pytest.mark.timeout(60)
def test_sigquit_stops_at_once_closing_open_connections(serve, tmp_path, until):
    (tmp_path / "slow.py").write_text(textwrap.dedent("""
        import greenline

        def handle(sock, address):
            data = sock.recv(100)
            open("reading", "w").close()
            greenline.sleep(30)
            sock.sendall(data)
    """))
    srv = serve("slow:handle", "--procs", "2", "--graceful-timeout", "30")
    srv.wait_workers(2)
    c = socket.create_connection(srv.address, timeout=10)
    c.sendall(b"slow")
    until((tmp_path / "reading").exists, what="the handler reading")
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGQUIT)
    assert srv.wait(5) == 0, srv.logs()
    assert time.monotonic() - t0 < 3
    assert c.recv(10) == b""
    c.close()
    assert "SIGQUIT" in srv.logs()


@pytest.mark.timeout(60)
def test_bind_workers_and_pid_file(tmp_path):
    pidfile = tmp_path / "serve.pid"
    proc, line = _spawn_cli(tmp_path, "upper", "-b", "127.0.0.1:0", "-w", "2", "--pid", str(pidfile))
    try:
        assert line.startswith("listening on 127.0.0.1:")
        assert pidfile.read_text() == f"{proc.pid}\n"
        assert len(psutil.Process(proc.pid).children()) == 2
        port = int(line.rsplit(":", 1)[1])
        assert ask(("127.0.0.1", port), b"bound") == b"BOUND"
    finally:
        assert _stop(proc) == 0
    assert not pidfile.exists()


@pytest.mark.timeout(60)
def test_bind_a_unix_socket(tmp_path):
    path = tmp_path / "serve.sock"
    path.write_bytes(b"")  # not a socket: refused, not replaced
    r = _run_cli(tmp_path, "upper", "-b", f"unix:{path}")
    assert r.returncode == 1 and _one_line(r).startswith(f"greenline serve: cannot listen on unix:{path}")
    path.unlink()
    proc, line = _spawn_cli(tmp_path, "upper", "--bind", f"unix:{path}", "--threads", "2")
    try:
        assert line == f"listening on unix:{path}"
        for i in range(5):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.settimeout(5)
            c.connect(str(path))
            c.sendall(b"over unix %d" % i)
            assert recv_exactly(c, 11) == b"OVER UNIX %d" % i
            c.close()
        # A second server on the same path is refused: one is alive there.
        r = _run_cli(tmp_path, "upper", "-b", f"unix:{path}")
        assert r.returncode == 1 and "another server" in _one_line(r)
    finally:
        assert _stop(proc) == 0
    assert not path.exists()
    # A stale socket file (its server killed) is replaced.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    proc, line = _spawn_cli(tmp_path, "echo", "-b", f"unix:{path}")
    try:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(5)
        c.connect(str(path))
        c.sendall(b"echo")
        assert recv_exactly(c, 4) == b"echo"
        c.close()
    finally:
        assert _stop(proc) == 0


def test_bind_conflicts_and_bad_addresses_are_one_line(tmp_path):
    for args, says in [(["-b", "127.0.0.1:0", "--port", "0"], "--bind replaces"),
                       (["-b", "127.0.0.1:99999"], "a port is 0 to 65535"),
                       (["-b", "unix:"], "needs a path")]:
        r = _run_cli(tmp_path, "upper", *args)
        assert r.returncode == 2 and says in _one_line(r), r.stderr


@pytest.mark.timeout(60)
def test_handshake_timeout_on_the_command_line(serve, tmp_path):
    trustme = pytest.importorskip("trustme")
    cert = trustme.CA().issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "both.pem"))
    srv = serve("upper", "--certfile", str(tmp_path / "both.pem"), "--handshake-timeout", "0.5")
    srv.wait_workers(1)
    silent = socket.create_connection(srv.address, timeout=10)
    t0 = time.monotonic()
    assert silent.recv(10) == b""
    assert 0.4 < time.monotonic() - t0 < 3
    silent.close()
    assert srv.terminate() == 0


def test_a_certificate_without_its_key_says_so(tmp_path):
    trustme = pytest.importorskip("trustme")
    cert = trustme.CA().issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    r = _run_cli(tmp_path, "upper", "--port", "0", "--certfile", str(tmp_path / "cert.pem"))
    assert r.returncode == 2
    line = _one_line(r)
    assert "holds a certificate but no private key" in line and "--keyfile" in line, line
    assert "PEM lib" not in line


def _burst(srv: Serve, pids: list[int], n: int) -> list[int]:
    """Connections per worker after n clients connect at once (each asks
    once, so that every one is accepted before counting)."""
    socks: list[socket.socket] = []

    def connect() -> None:
        s = socket.create_connection(srv.address, timeout=10)
        s.sendall(b"x")
        assert recv_exactly(s, 1) == b"X"
        socks.append(s)

    greenline.joinall([greenline.spawn(connect) for _ in range(n)], raise_error=True, timeout=30)
    owner = owners(pids, srv.port)
    counts = [sum(1 for s in socks if owner.get(s.getsockname()[1]) == pid) for pid in pids]
    for s in socks:
        s.close()
    return counts


@pytest.mark.timeout(90)
def test_a_burst_of_connections_is_shared_out_between_the_workers(serve, until):
    # Issue 15, item 7: before, the worker that woke first took nearly all
    # of a burst ([0, 50], [49, 1], [8, 42] in three trials of 50).
    srv = serve("upper", "--procs", "2")
    pids = srv.wait_workers(2)
    for trial in range(3):
        counts = _burst(srv, pids, 50)
        assert sum(counts) == 50 and min(counts) >= 13, (trial, counts)
        until(lambda: not owners(pids, srv.port), what="the burst's connections closed")
    counts = _burst(srv, pids, 500)
    assert sum(counts) == 500 and min(counts) >= 125, counts
    assert srv.terminate() == 0


@pytest.mark.timeout(60)
def test_a_worker_that_takes_no_connections_delays_nobody_for_long(serve, tmp_path, until):
    # The balance gives way: with one worker stuck in a handler, the other
    # takes every new client, at most BALANCE_MAX_DEFER late once per
    # BALANCE_BACKOFF.
    (tmp_path / "spinner.py").write_text(SPINNER)
    srv = serve("spinner:handle", "--procs", "2")
    pids = srv.wait_workers(2)
    stuck = socket.create_connection(srv.address, timeout=5)
    stuck.sendall(b"spin")
    until(lambda: any((tmp_path / f"spinning-{pid}").exists() for pid in pids), what="a handler spinning")
    t0 = time.monotonic()
    slowest = 0.0
    for i in range(40):
        t1 = time.monotonic()
        msg = b"served %d" % i
        assert ask(srv.address, msg, timeout=5) == msg.upper()
        slowest = max(slowest, time.monotonic() - t1)
    assert slowest < 0.5, slowest
    assert time.monotonic() - t0 < 5
    stuck.close()
    srv.kill()
