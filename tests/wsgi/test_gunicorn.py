"""``gunicorn -k greenline.wsgi.gunicorn.Worker``: gunicorn as the arbiter,
greenline's WSGIServer in each worker.  gunicorn runs as a user runs it, in
a subprocess on port 0 (the port read from its "Listening at" line); the
clients are green threads here.  Skipped when gunicorn is not installed
(``pip install gunicorn``, or the ``gunicorn`` extra)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from http_helpers import WEBAPP, LoopClient, fetch, get, read_responses
from serve_helpers import SRC

import greenline
from greenline import socket

gunicorn = pytest.importorskip("gunicorn", reason="gunicorn is not installed (pip install gunicorn)")
from gunicorn.config import Config  # noqa: E402

from greenline.wsgi.gunicorn import limits_from  # noqa: E402

WORKER = "greenline.wsgi.gunicorn.Worker"
_LISTENING = re.compile(r"Listening at: https?://127\.0\.0\.1:(\d+)")


class Gunicorn:
    """``gunicorn -k greenline.wsgi.gunicorn.Worker ARGS webapp:app`` on
    port 0, its log (debug level) in a file."""

    def __init__(self, tmp_path: Path, *args: str, workers: int = 1) -> None:
        (tmp_path / "webapp.py").write_text(WEBAPP)
        self.log_path = tmp_path / f"gunicorn-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, str(tmp_path)]))
        extra = ["--no-control-socket"] if "control_socket_disable" in Config().settings else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-k", WORKER, "-w", str(workers), "-b", "127.0.0.1:0",
             "--log-level", "debug", *extra, *args, "webapp:app"],
            stdout=self.log, stderr=self.log, env=env, cwd=tmp_path)
        self.workers_count = workers
        self.port = self._wait_port()

    def _wait_port(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = _LISTENING.search(self.logs())
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                break
            greenline.sleep(0.05)
        logs = self.logs()
        self.close()
        raise AssertionError(f"gunicorn did not start:\n{logs}")

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def logs(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def workers(self) -> list[int]:
        try:
            return [p.pid for p in psutil.Process(self.proc.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                return code
            greenline.sleep(0.02)
        return None

    def close(self) -> None:
        kids = self.workers()
        if self.proc.poll() is None:
            self.proc.terminate()
            if self.wait(10) is None:
                self.proc.kill()
                self.proc.wait(5)
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()


@pytest.fixture
def gunicorn_server(tmp_path):
    started: list[Gunicorn] = []

    def start(*args: str, **kw) -> Gunicorn:
        g = Gunicorn(tmp_path, *args, **kw)
        started.append(g)
        return g

    yield start
    for g in started:
        g.close()


def test_gunicorn_runs_greenline_workers(gunicorn_server):
    g = gunicorn_server(workers=2)
    results = []

    def client(i: int) -> None:
        c = socket.create_connection(g.address, timeout=10)
        try:
            for j in range(5):
                c.sendall(get(f"/c{i}/{j}"))
                (r,), _ = read_responses(c, 1)
                results.append(r)
        finally:
            c.close()

    greenline.joinall([greenline.spawn(client, i) for i in range(40)], raise_error=True, timeout=30)
    assert len(results) == 200 and all(r.status == 200 for r in results)
    assert all(r.header("Server") == "greenline" for r in results)
    pids = set(g.workers())
    for r in results:
        _path, pid, multiprocess, _multithread, scheme = r.body.decode().split()
        assert int(pid) in pids and multiprocess == "True" and scheme == "http"
    g.proc.send_signal(signal.SIGTERM)
    assert g.wait(10) == 0
    assert "Traceback" not in g.logs()


def test_gunicorns_settings_reach_the_server(gunicorn_server, tmp_path):
    log = tmp_path / "access.log"
    g = gunicorn_server("--limit-request-line", "100", "--limit-request-fields", "5",
                        "--limit-request-field_size", "60", "--keep-alive", "0",
                        "--access-logfile", str(log),
                        "--access-logformat", '%(h)s "%(r)s" %(s)s %(b)s <%({x-test}i)s> %(M)sms')
    assert fetch(g.address, "/" + "x" * 120).status == 414
    assert fetch(g.address, "/", "".join(f"X-{i}: y\r\n" for i in range(6))).status == 431
    assert fetch(g.address, "/", "X-Long: " + "y" * 70 + "\r\n").status == 431
    r = fetch(g.address, "/logged?a=b", "X-Test: hello\r\n")
    assert r.status == 200 and r.header("Connection") == "close"  # keep-alive 0
    g.proc.send_signal(signal.SIGTERM)
    assert g.wait(10) == 0
    line = [ln for ln in log.read_text().splitlines() if "/logged" in ln]
    assert len(line) == 1, log.read_text()
    assert re.fullmatch(r'127\.0\.0\.1 "GET /logged\?a=b HTTP/1\.1" 200 \d+ <hello> \d+ms', line[0]), line


def test_limits_from_gunicorns_config():
    cfg = Config()
    limits = limits_from(cfg)
    assert (limits.max_request_line, limits.max_fields, limits.max_field_size) == (4094, 100, 8190)
    assert limits.keepalive_timeout == 2
    for name, value in [("limit_request_line", 0), ("limit_request_fields", 0),
                        ("limit_request_field_size", 0), ("keepalive", 0)]:
        cfg.set(name, value)
    limits = limits_from(cfg)
    # 0 is "no limit of its own" in gunicorn: the head size still bounds them.
    assert limits.max_request_line == limits.max_field_size == limits.max_head_size
    assert limits.max_fields == 32768 and limits.keepalive_timeout == 0


def test_sigterm_lets_the_request_in_flight_finish(gunicorn_server):
    g = gunicorn_server("--graceful-timeout", "10")
    c = socket.create_connection(g.address, timeout=10)
    c.sendall(get("/sleep?1.0"))  # time.sleep, made cooperative by the worker's patch_all
    greenline.sleep(0.3)
    t0 = time.monotonic()
    g.proc.send_signal(signal.SIGTERM)
    (r,), closed = read_responses(c, 1)
    assert r.status == 200 and r.header("Connection") == "close"
    c.close()
    assert g.wait(10) == 0
    assert time.monotonic() - t0 < 4  # when the work was done, not at the graceful timeout


def test_sigquit_stops_at_once(gunicorn_server):
    g = gunicorn_server("--graceful-timeout", "10")
    c = socket.create_connection(g.address, timeout=10)
    c.sendall(get("/slow?5"))
    greenline.sleep(0.3)
    t0 = time.monotonic()
    g.proc.send_signal(signal.SIGQUIT)
    responses, _ = read_responses(c, 1)
    c.close()
    assert responses == []  # not waited for
    assert g.wait(10) == 0
    assert time.monotonic() - t0 < 3


def test_max_requests_replaces_the_worker(gunicorn_server):
    g = gunicorn_server("--max-requests", "10")
    pids = set()
    for i in range(25):
        r = fetch(g.address, f"/n{i}")
        assert r.status == 200
        pids.add(int(r.body.split()[1]))
    assert len(pids) >= 2
    assert "Autorestarting worker after current request" in g.logs()


def test_the_app_is_cooperative_under_the_worker(gunicorn_server):
    g = gunicorn_server()
    t0 = time.monotonic()
    tasks = [greenline.spawn(fetch, g.address, "/sleep?0.3") for _ in range(10)]
    greenline.joinall(tasks, raise_error=True, timeout=20)
    assert all(t.value.status == 200 for t in tasks)
    assert time.monotonic() - t0 < 1.5  # one worker: they overlapped


def test_tls_through_gunicorns_settings(gunicorn_server, tmp_path):
    trustme = pytest.importorskip("trustme", reason="TLS test certificates come from trustme (the test extra)")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    g = gunicorn_server("--certfile", str(tmp_path / "cert.pem"), "--keyfile", str(tmp_path / "key.pem"))
    from greenline import ssl as gssl

    ctx = gssl.SSLContext(gssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(ctx)
    c = ctx.wrap_socket(socket.create_connection(g.address, timeout=10), server_hostname="127.0.0.1")
    try:
        for i in range(3):
            c.sendall(get(f"/tls/{i}"))
            (r,), _ = read_responses(c, 1)
            assert r.status == 200 and r.body.decode().split()[-1] == "https"
    finally:
        c.close()


@pytest.mark.timeout(90)
def test_gunicorn_reload_and_stop_lose_no_request(gunicorn_server):
    g = gunicorn_server("--graceful-timeout", "8", workers=2)
    clients = [LoopClient(g.address, f"c{i}") for i in range(6)]
    clients += [LoopClient(g.address, f"s{i}", path=f"/slow{i}") for i in range(2)]
    tasks = [greenline.spawn(c.run) for c in clients]
    greenline.sleep(0.5)
    old = set(g.workers())
    g.proc.send_signal(signal.SIGHUP)  # gunicorn: new workers, the old ones stopped gracefully
    deadline = time.monotonic() + 20
    while (old & set(g.workers()) or len(g.workers()) < 2) and time.monotonic() < deadline:
        greenline.sleep(0.05)
    assert not (old & set(g.workers())), g.logs()[-2000:]
    before = sum(c.answered for c in clients)
    greenline.sleep(0.5)
    assert sum(c.answered for c in clients) > before
    for c in clients:
        assert not c.lost, (c.name, c.lost)
        c.reconnect = False
    g.proc.send_signal(signal.SIGTERM)
    assert g.wait(15) == 0
    greenline.joinall(tasks, timeout=15)
    for c in clients:
        assert not c.lost, (c.name, c.lost)
    assert "Traceback" not in g.logs()


def test_the_library_does_not_import_gunicorn():
    code = ("import sys, greenline, greenline.wsgi, greenline.servers.supervisor;"
            "print('gunicorn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, PYTHONPATH=SRC))
    assert out.stdout.strip() == "False", out.stderr
