"""Real gevent programs, unmodified, run as their users run them but with
``greenline run --as-gevent``: gunicorn's gevent worker serving a Flask app,
and gevent's own examples (taken at test time from gevent's source
distribution, which scripts/gevent_tests.py downloads into a cache; never
kept in this repository).  Each is skipped, saying why, when the program is
not installed."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"

pytestmark = pytest.mark.slow

#: Seconds a test may spend downloading gevent's sdist (for its examples)
#: when ~/.cache/greenline does not have it yet.
FETCH_TIMEOUT = 120.0


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(SRC), PYTHONUNBUFFERED="1")


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            pytest.fail(f"exited with {proc.returncode} before listening:\n{out[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)  # polling a port another process opens: no event to wait on
    pytest.fail(f"nothing listened on {port} within {deadline} s")


def _stop(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.stdout.read().decode() if proc.stdout else ""


def _examples() -> Path:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gevent_tests
    finally:
        sys.path.pop(0)
    cached = gevent_tests.cache_dir(gevent_tests.VERSION) / f"gevent-{gevent_tests.VERSION}" / "examples"
    if cached.is_dir():
        return cached
    try:
        # Bounded: a test run must not wait minutes on a registry.
        return gevent_tests.fetch(gevent_tests.VERSION, timeout=FETCH_TIMEOUT).parents[1] / "examples"
    except Exception as e:  # no pip, no registry, too slow
        pytest.skip(f"gevent's examples are not in {cached.parent} and could not be downloaded "
                    f"within {FETCH_TIMEOUT:.0f} s ({type(e).__name__}: {e}); "
                    "python scripts/gevent_tests.py --help fetches them")


def _example(tmp_path: Path, name: str, **replace: str) -> Path:
    """A copy of one example; ``replace`` swaps its fixed ports for free ones."""
    text = (_examples() / name).read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


def _run_example(path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "greenline", "run", "--as-gevent", str(path), *args],
                          capture_output=True, text=True, env=_env(), timeout=timeout, cwd=path.parent)


@pytest.mark.skipif(importlib.util.find_spec("gunicorn") is None or importlib.util.find_spec("flask") is None,
                    reason="gunicorn and flask are not installed (pip install gunicorn flask)")
def test_gunicorn_gevent_worker_serves_a_flask_app(tmp_path):
    (tmp_path / "app.py").write_text(
        "import flask, gevent\n"
        "app = flask.Flask(__name__)\n"
        "@app.route('/sleep/<float:s>')\n"
        "def nap(s):\n"
        "    gevent.sleep(s)\n"
        "    return f'slept {s} on {gevent.__name__}'\n")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "greenline", "run", "--as-gevent", "-m", "gunicorn", "-k", "gevent",
         "-w", "1", "--worker-connections", "200", "-b", f"127.0.0.1:{port}", "app:app"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, proc)
        # 50 requests that each sleep 0.5 s, at once: one worker process
        # answers them all in about 0.5 s only if they run concurrently.
        from concurrent.futures import ThreadPoolExecutor
        from urllib.request import urlopen

        def get(_: int) -> str:
            with urlopen(f"http://127.0.0.1:{port}/sleep/0.5", timeout=20) as r:
                return r.read().decode()

        started = time.monotonic()
        with ThreadPoolExecutor(50) as ex:
            bodies = list(ex.map(get, range(50)))
        elapsed = time.monotonic() - started
        assert bodies == ["slept 0.5 on greenline.gevent"] * 50
        assert elapsed < 5, elapsed
    finally:
        out = _stop(proc)
    assert "Booting worker" in out and "Traceback" not in out, out[-3000:]


def test_example_echoserver(tmp_path):
    port = _free_port()
    path = _example(tmp_path, "echoserver.py", **{"16000": str(port)})
    proc = subprocess.Popen([sys.executable, "-m", "greenline", "run", "--as-gevent", str(path)],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, proc)
        clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
        for i, c in enumerate(clients):
            c.recv(1024)  # the greeting
            c.sendall(f"line {i}\r\n".encode())
        for i, c in enumerate(clients):
            assert c.recv(1024) == f"line {i}\r\n".encode()
            c.sendall(b"quit\r\n")
            c.close()
    finally:
        out = _stop(proc)
    assert "echoed" in out


def test_example_udp_server_and_client(tmp_path):
    port = _free_port(socket.SOCK_DGRAM)
    server = _example(tmp_path, "udp_server.py", **{"9000": str(port)})
    # (The client in gevent's examples sends to 9001, the server listens on
    # 9000: both get the one free port.)
    client = _example(tmp_path, "udp_client.py", **{"9001": str(port)})
    proc = subprocess.Popen([sys.executable, "-m", "greenline", "run", "--as-gevent", str(server)],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:  # the server prints before binding: retry the client
            done = _run_example(client, "hello", timeout=30)
            if "got" in done.stdout or time.monotonic() > deadline:
                break
        assert "got b'Received 5 bytes'" in done.stdout, done.stdout + done.stderr
    finally:
        _stop(proc)


def test_example_threadpool_runs_four_sleeps_on_three_threads_in_two_seconds(tmp_path):
    done = _run_example(_example(tmp_path, "threadpool.py"))
    assert done.returncode == 0, done.stderr
    seconds = float(re.search(r"([\d.]+)s$", done.stdout.strip()).group(1))
    assert 1.9 < seconds < 3.5, done.stdout


def test_example_processes(tmp_path):
    done = _run_example(_example(tmp_path, "processes.py"))
    assert done.returncode == 0, done.stderr
    assert "uname: b'Linux" in done.stdout and "ls: b'" in done.stdout, done.stdout


def test_example_portforwarder_between_two_local_ports(tmp_path):
    # The destination: a plain echo server in a thread of this process.
    import threading

    dest = socket.create_server(("127.0.0.1", 0))
    dest_port = dest.getsockname()[1]

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(1024):
                conn.sendall(data)

    threads: list[threading.Thread] = []

    def serve() -> None:
        # Every connection, the port probe's included.
        while True:
            try:
                conn, _ = dest.accept()
            except OSError:
                return
            t = threading.Thread(target=echo, args=(conn,), daemon=True)
            threads.append(t)
            t.start()

    acceptor = threading.Thread(target=serve, daemon=True)
    acceptor.start()
    port = _free_port()
    path = _example(tmp_path, "portforwarder.py")
    proc = subprocess.Popen([sys.executable, "-m", "greenline", "run", "--as-gevent", str(path),
                             f"127.0.0.1:{port}", f"127.0.0.1:{dest_port}"],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, proc)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b"through the forwarder")
            assert c.recv(1024) == b"through the forwarder"
    finally:
        out = _stop(proc)
        # close() alone does not wake a thread blocked in accept(); a thread
        # left behind would make every later deadlock test in this process
        # hang (the hub cannot tell that no other thread will wake it).
        dest.shutdown(socket.SHUT_RDWR)
        dest.close()
        for t in [acceptor, *threads]:
            t.join(10)
    assert not any(t.is_alive() for t in [acceptor, *threads])
    assert "accepted" in out, out


def _requires(*modules: str) -> pytest.MarkDecorator:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"{', '.join(missing)} not installed "
                              "(pip install -e '.[gevent-programs]')")


def _serve_hello(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A greenline WSGIServer in a process of its own: ``/`` answers hi."""
    (tmp_path / "hello_server.py").write_text(
        "import sys\n"
        "from greenline.wsgi import WSGIServer\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'hi ' + environ['PATH_INFO'].encode()]\n"
        "WSGIServer(('127.0.0.1', int(sys.argv[1])), app).serve_forever()\n")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(tmp_path / "hello_server.py"), str(port)], cwd=tmp_path,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _wait_for_port(port, proc)
    return proc, port


@_requires("locust")
def test_locust_headless_drives_a_greenline_wsgi_server(tmp_path):
    # Both of locust's clients: HttpUser (requests) and FastHttpUser
    # (geventhttpclient), every request answered.
    (tmp_path / "locustfile.py").write_text(
        "from locust import HttpUser, FastHttpUser, task, constant\n"
        "class Slow(HttpUser):\n"
        "    wait_time = constant(0.01)\n"
        "    @task\n"
        "    def hello(self):\n"
        "        self.client.get('/slow')\n"
        "class Fast(FastHttpUser):\n"
        "    wait_time = constant(0.01)\n"
        "    @task\n"
        "    def hello(self):\n"
        "        self.client.get('/fast')\n")
    server, port = _serve_hello(tmp_path)
    try:
        run = subprocess.run(
            [sys.executable, "-m", "greenline", "run", "--as-gevent", "-m", "locust", "-f", "locustfile.py",
             "--headless", "-u", "10", "-r", "10", "-t", "2s", "-H", f"http://127.0.0.1:{port}",
             "--only-summary", "--csv", "out"],
            cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60)
    finally:
        _stop(server)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    rows = {r.split(",")[1]: r.split(",") for r in (tmp_path / "out_stats.csv").read_text().splitlines()[1:]}
    for path in ("/slow", "/fast"):
        requests, failures = int(rows[path][2]), int(rows[path][3])
        assert requests > 20 and failures == 0, rows[path]


@_requires("geventhttpclient")
def test_geventhttpclient_against_a_local_pywsgi_server(tmp_path):
    script = tmp_path / "ghc.py"
    script.write_text(
        "import gevent\n"
        "from gevent import pywsgi\n"
        "from geventhttpclient import HTTPClient\n"
        "def app(environ, start_response):\n"
        "    gevent.sleep(0.2)\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'hello ' + environ['PATH_INFO'].encode()]\n"
        "server = pywsgi.WSGIServer(('127.0.0.1', 0), app, log=None)\n"
        "server.start()\n"
        "client = HTTPClient('127.0.0.1', server.server_port, concurrency=20)\n"
        "def get(i):\n"
        "    r = client.get(f'/{i}')\n"
        "    return r.status_code, r.read()\n"
        "start = gevent.get_hub().loop.now()\n"
        "jobs = [gevent.spawn(get, i) for i in range(20)]\n"
        "gevent.joinall(jobs, raise_error=True)\n"
        "took = gevent.get_hub().loop.now() - start\n"
        "assert [j.value for j in jobs] == [(200, b'hello /%d' % i) for i in range(20)]\n"
        "assert took < 2, took  # 20 requests of 0.2 s each, concurrently\n"
        "client.close()\n"
        "server.stop()\n"
        "print('ok')\n")
    run = _run_example(script)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr[-3000:]


@_requires("zmq")
def test_zmq_green_on_the_hubs_loop_watchers(tmp_path):
    # The receiver waits on zmq's descriptor through loop.io before anything
    # is sent; another green thread keeps running meanwhile.
    script = tmp_path / "zmq_green.py"
    script.write_text(
        "import gevent\n"
        "import zmq.green as zmq\n"
        "ctx = zmq.Context()\n"
        "pull = ctx.socket(zmq.PULL)\n"
        "port = pull.bind_to_random_port('tcp://127.0.0.1')\n"
        "push = ctx.socket(zmq.PUSH)\n"
        "push.connect(f'tcp://127.0.0.1:{port}')\n"
        "got, ticks = [], []\n"
        "def receiver():\n"
        "    for _ in range(100):\n"
        "        got.append(pull.recv())\n"
        "def sender():\n"
        "    for i in range(100):\n"
        "        push.send(b'%d' % i)\n"
        "def ticker():\n"
        "    while len(got) < 100:\n"
        "        ticks.append(1)\n"
        "        gevent.sleep(0.005)\n"
        "gs = [gevent.spawn(receiver), gevent.spawn(ticker), gevent.spawn_later(0.1, sender)]\n"
        "with gevent.Timeout(20):\n"
        "    gevent.joinall(gs, raise_error=True)\n"
        "assert got == [b'%d' % i for i in range(100)], got[:5]\n"
        "assert len(ticks) >= 5, ticks  # the hub ran others while recv waited\n"
        "push.close(); pull.close(); ctx.term()\n"
        "print('ok')\n")
    run = _run_example(script)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr[-3000:]


@_requires("requests")
def test_example_concurrent_download_from_a_local_server(tmp_path):
    server, port = _serve_hello(tmp_path)
    try:
        urls = [f"http://127.0.0.1:{port}/{name}" for name in ("a", "b", "c")]
        path = _example(tmp_path, "concurrent_download.py",
                        **{"'https://www.google.com/'": repr(urls[0]),
                           "'https://www.apple.com/'": repr(urls[1]),
                           "'https://www.python.org/'": repr(urls[2])})
        assert "127.0.0.1" in path.read_text()
        run = _run_example(path)
    finally:
        _stop(server)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    for url, name in zip(urls, "abc", strict=True):
        assert f"{url}: 5 bytes: 'hi /{name}'" in run.stdout, run.stdout
