"""``greenline serve --wsgi``, driven as a user would: a subprocess on port 0
(tests/servers/serve_helpers.py), HTTP clients as green threads here, their
responses parsed by httptools' response parser (http_helpers.py).

The life-cycle test is the point of the file: clients sending requests in a
loop over keep-alive connections through a SIGHUP and a SIGTERM see every
request answered, or their connection closed cleanly before they sent one;
never a reset, never a request sent and left without its response.
"""

from __future__ import annotations

import os
import select as stdselect
import signal
import ssl as stdssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from http_helpers import WEBAPP, LoopClient, fetch, get, read_responses
from serve_helpers import SRC, serving

import greenline
from greenline import socket


@pytest.fixture
def serve(tmp_path):
    (tmp_path / "webapp.py").write_text(WEBAPP)
    yield from serving(tmp_path)


def test_wsgi_app_on_two_procs_of_two_threads_sets_the_environ_flags(serve):
    srv = serve("--wsgi", "webapp:app", "--procs", "2", "--threads", "2")
    pids = set(srv.wait_workers(2))
    results = []

    def client(i: int) -> None:
        c = socket.create_connection(srv.address, timeout=10)
        try:
            for j in range(5):
                c.sendall(get(f"/c{i}/{j}"))
                (r,), _ = read_responses(c, 1)
                results.append(r)
        finally:
            c.close()

    greenline.joinall([greenline.spawn(client, i) for i in range(50)], raise_error=True, timeout=30)
    assert len(results) == 250 and all(r.status == 200 for r in results)
    for r in results:
        path, pid, multiprocess, multithread, scheme = r.body.decode().split()
        assert int(pid) in pids
        assert (multiprocess, multithread, scheme) == ("True", "True", "http")
    assert srv.terminate() == 0
    assert "Traceback" not in srv.logs()
    assert "serving webapp:app (WSGI)" in srv.logs()


def test_one_process_one_thread_says_so_in_the_environ(serve):
    srv = serve("--wsgi", "webapp:app")
    r = fetch(srv.address, "/")
    assert r.status == 200 and r.body.decode().split()[2:] == ["False", "False", "http"]
    assert srv.terminate() == 0


def test_http_limits_and_timeouts_from_the_command_line(serve):
    srv = serve("--wsgi", "webapp:app", "--limit-request-line", "100", "--limit-request-fields", "5",
                "--limit-request-field_size", "60", "--limit-request-body", "10", "--keep-alive", "0",
                "--header-timeout", "0.5")
    assert fetch(srv.address, "/" + "x" * 120).status == 414
    assert fetch(srv.address, "/", "".join(f"X-{i}: y\r\n" for i in range(6))).status == 431
    assert fetch(srv.address, "/", "X-Long: " + "y" * 70 + "\r\n").status == 431
    c = socket.create_connection(srv.address, timeout=10)
    c.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world")
    (r,), _ = read_responses(c, 1)
    c.close()
    assert r.status == 413
    # --keep-alive 0: every response closes its connection.
    r = fetch(srv.address, "/")
    assert r.status == 200 and r.header("Connection") == "close"
    # --header-timeout: half a head, then silence.
    c = socket.create_connection(srv.address, timeout=10)
    c.sendall(b"GET / HTTP/1.1\r\n")
    t0 = time.monotonic()
    data = c.recv(1000)
    c.close()
    assert data.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 3
    assert srv.terminate() == 0


def test_access_log_is_off_by_default_and_in_common_log_format_when_asked(serve, tmp_path):
    quiet = serve("--wsgi", "webapp:app")
    assert fetch(quiet.address, "/quiet").status == 200
    assert quiet.terminate() == 0
    assert "/quiet" not in quiet.logs()
    log = tmp_path / "access.log"
    srv = serve("--wsgi", "webapp:app", "--procs", "2", "--access-log", str(log))
    for i in range(20):
        assert fetch(srv.address, f"/logged/{i}?q=1").status == 200
    assert srv.terminate() == 0
    lines = log.read_text().splitlines()
    requests = []
    for line in lines:  # two processes append whole lines, in the order they finish
        # host ident authuser [date] "request line" status bytes
        head, request, tail = line.split('"')
        assert head.startswith("127.0.0.1 - - [") and head.endswith("] ")
        requests.append(request)
        status, size = tail.split()
        assert status == "200" and int(size) > 0
    assert sorted(requests) == sorted(f"GET /logged/{i}?q=1 HTTP/1.1" for i in range(20))


def test_access_log_to_stdout(tmp_path):
    (tmp_path / "webapp.py").write_text(WEBAPP)
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.Popen([sys.executable, "-m", "greenline", "serve", "--wsgi", "webapp:app",
                             "--port", "0", "--access-log", "-"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        ready, _, _ = stdselect.select([proc.stdout], [], [], 20)
        line = proc.stdout.readline().decode() if ready else ""
        assert line.startswith("listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        assert fetch(("127.0.0.1", port), "/to-stdout").status == 200
        ready, _, _ = stdselect.select([proc.stdout], [], [], 10)
        assert ready
        assert '"GET /to-stdout HTTP/1.1" 200' in proc.stdout.readline().decode()
    finally:
        proc.terminate()
        proc.wait(15)
        proc.stdout.close()  # type: ignore[union-attr]


def _run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "webapp.py").write_text(WEBAPP)
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.run([sys.executable, "-m", "greenline", "serve", *args, "--port", "0"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(("args", "says"), [
    (["webapp:app", "--access-log", "-"], "--access-log needs --wsgi"),
    (["webapp:app", "--keep-alive", "3"], "--keep-alive needs --wsgi"),
    (["--wsgi", "upper"], "module:application"),
    (["--wsgi", "webapp:nothing"], "no attribute"),
    (["--wsgi", "no_such_module:app"], "cannot import"),
    (["--wsgi", "webapp:app", "--access-log", "/no/such/dir/access.log"], "cannot open the access log"),
    (["--wsgi", "webapp:app", "--limit-request-fields", "-1"], "must not be negative"),
    (["--wsgi", "webapp:app", "--keep-alive", "soon"], "invalid _non_negative_float value"),
])
def test_bad_command_lines_get_one_line_and_exit_2(tmp_path, args, says):
    r = _run_cli(tmp_path, *args)
    assert r.returncode == 2, r.stderr
    assert says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stdout == ""


def test_tls_on_the_command_line(serve, tmp_path):
    trustme = pytest.importorskip("trustme", reason="TLS test certificates come from trustme (the test extra)")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    srv = serve("--wsgi", "webapp:app", "--certfile", str(tmp_path / "server.pem"))
    ctx = stdssl.create_default_context()
    ca.configure_trust(ctx)
    from greenline import ssl as gssl

    gctx = gssl.SSLContext(gssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(gctx)
    raw = socket.create_connection(srv.address, timeout=10)
    c = gctx.wrap_socket(raw, server_hostname="127.0.0.1")
    try:
        for i in range(3):  # keep-alive under TLS
            c.sendall(get(f"/tls/{i}"))
            (r,), _ = read_responses(c, 1)
            assert r.status == 200 and r.body.decode().split()[-1] == "https"
    finally:
        c.close()
    assert srv.terminate() == 0


def test_monkey_patch_makes_the_apps_blocking_calls_cooperative(serve):
    # Ten requests whose app calls time.sleep(0.3), on one thread of one
    # process: patched, they overlap (about 0.3 s); unpatched, one at a time.
    srv = serve("--wsgi", "webapp:app", "--monkey-patch")
    t0 = time.monotonic()
    tasks = [greenline.spawn(fetch, srv.address, "/sleep", "", 10) for _ in range(10)]
    greenline.joinall(tasks, raise_error=True, timeout=20)
    assert all(t.value.status == 200 for t in tasks)
    assert time.monotonic() - t0 < 1.5
    assert srv.terminate() == 0


# -- the life cycle: SIGHUP and SIGTERM lose no request ----------------------------------------


@pytest.mark.timeout(90)
def test_sighup_and_sigterm_lose_no_request_on_keep_alive_connections(serve):
    srv = serve("--wsgi", "webapp:app", "--procs", "2", "--graceful-timeout", "8")
    old = set(srv.wait_workers(2))
    clients = [LoopClient(srv.address, f"c{i}") for i in range(6)]
    # Requests in flight when the signals land: the app takes 50 ms for these.
    clients += [LoopClient(srv.address, f"s{i}", path=f"/slow{i}") for i in range(2)]
    tasks = [greenline.spawn(c.run) for c in clients]
    greenline.sleep(0.5)

    # SIGHUP: both workers replaced, one at a time; the clients move over.
    before_hup = sum(c.answered for c in clients)
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while "reload complete" not in srv.logs() and time.monotonic() < deadline:
        greenline.sleep(0.05)
    new = set(srv.wait_workers(2, exclude=old))
    assert not (new & old)
    deadline = time.monotonic() + 10
    while any(p.pid in old for p in srv.workers()) and time.monotonic() < deadline:
        greenline.sleep(0.05)  # the old ones finish and exit
    greenline.sleep(0.5)
    assert sum(c.answered for c in clients) > before_hup
    for c in clients:
        assert not c.lost, (c.name, c.lost)
        assert c.pids & new, c.name  # served by a new worker since
    # An idle keep-alive connection: closed at SIGTERM (after the last call),
    # it must not keep the server up to the graceful timeout.
    idle = socket.create_connection(srv.address, timeout=10)
    idle.sendall(get("/idle"))
    (r,), _ = read_responses(idle, 1)
    assert r.status == 200

    # SIGTERM: requests in flight finish, connections close, no one reconnects.
    for c in clients:
        c.reconnect = False
    before_term = sum(c.answered for c in clients)
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    assert idle.recv(100) == b""  # a clean end of file
    idle.close()
    code = srv.wait(15)
    elapsed = time.monotonic() - t0
    assert code == 0, srv.logs()[-3000:]
    assert elapsed < 5, elapsed  # done when the connections were, not at the graceful timeout
    greenline.joinall(tasks, timeout=15)
    for c in clients:
        assert not c.lost, (c.name, c.lost)
    assert sum(c.answered for c in clients) >= before_term
    assert sum(c.server_closes for c in clients) >= len(clients)  # each told to go, by HUP and TERM
    logs = srv.logs()
    assert "Traceback" not in logs and "reset" not in logs.lower()


def test_sigterm_lets_a_slow_request_finish_and_answers_it_with_connection_close(serve):
    srv = serve("--wsgi", "webapp:app", "--graceful-timeout", "5")
    c = socket.create_connection(srv.address, timeout=10)
    c.sendall(get("/slow?1.0"))
    greenline.sleep(0.3)
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    (r,), closed = read_responses(c, 1)
    assert r.status == 200 and r.header("Connection") == "close"
    assert closed or c.recv(10) == b""
    c.close()
    assert srv.wait(5) == 0
    assert time.monotonic() - t0 < 3
