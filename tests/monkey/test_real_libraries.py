"""Real client libraries under ``greenline.monkey.patch_all()``, against real
servers started on loopback: ``urllib.request`` and ``requests`` against an
``http.server.ThreadingHTTPServer`` (itself patched, in its own process), and
``redis`` (redis-py) against a real ``redis-server``.

Each client runs in a fresh patched process, 1,000 threads at once.  Every
reply is checked, and the tests check that the threads really were green and
really ran together: the server holds each HTTP request for a while and
counts how many it holds at once; redis counts the clients blocked in BLPOP
at once; and the client process never has more than a handful of OS threads.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

N = 1000
# How long the HTTP server holds each request: 1,000 one after another would
# take N * DELAY = 500 s.
DELAY = 0.5

HTTP_SERVER = textwrap.dedent(r"""
    from greenline import monkey
    monkey.patch_all()

    import http.server, json, sys, threading, time

    DELAY = float(sys.argv[1])
    lock = threading.Lock()
    state = {"inflight": 0, "max_inflight": 0, "served": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/stats":
                body = json.dumps(state).encode()
            else:
                with lock:
                    state["inflight"] += 1
                    state["max_inflight"] = max(state["max_inflight"], state["inflight"])
                try:
                    time.sleep(DELAY)
                finally:
                    with lock:
                        state["inflight"] -= 1
                        state["served"] += 1
                n = int(self.path.rsplit("/", 1)[1])
                # Big enough to take several reads on the client side.
                body = (f"item {n};" * 2000).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        # socketserver's default of 5 would drop most of a crowd's SYNs.
        request_queue_size = 2048
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()
""")

HTTP_CLIENT = textwrap.dedent(r"""
    from greenline import monkey
    monkey.patch_all()

    import json, os, sys, threading, time

    LIB, PORT, N = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if LIB == "requests":
        import requests

        def get(url):
            r = requests.get(url, timeout=60)
            return r.status_code, r.text
    else:
        import urllib.request

        def get(url):
            with urllib.request.urlopen(url, timeout=60) as r:
                return r.status, r.read().decode()

    results = [None] * N
    errors = []
    max_os_threads = 0

    def fetch(i):
        global max_os_threads
        try:
            results[i] = get(f"http://127.0.0.1:{PORT}/item/{i}")
        except Exception as e:
            errors.append(f"{i}: {e!r}")
        max_os_threads = max(max_os_threads, len(os.listdir("/proc/self/task")))

    t0 = time.monotonic()
    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    bad = [i for i, r in enumerate(results) if r != (200, f"item {i};" * 2000)]
    print(json.dumps({"wall": wall, "errors": errors[:10], "n_errors": len(errors), "bad": bad[:10],
                      "n_bad": len(bad), "max_os_threads": max_os_threads,
                      "peers": [m for m in ("gevent", "eventlet") if m in sys.modules]}))
""")

REDIS_CLIENT = textwrap.dedent(r"""
    from greenline import monkey
    monkey.patch_all()

    import json, os, sys, threading, time
    import redis

    PORT, N = int(sys.argv[1]), int(sys.argv[2])
    r = redis.Redis(host="127.0.0.1", port=PORT, max_connections=N + 10, socket_timeout=60)
    r.flushall()
    errors = []
    popped = [None] * N
    max_os_threads = 0

    def worker(i):
        global max_os_threads
        try:
            r.set(f"key:{i}", f"value {i}")
            assert r.get(f"key:{i}") == f"value {i}".encode(), i
            r.incr("counter")
            with r.pipeline() as p:
                p.rpush(f"list:{i}", *range(i % 7 + 1))
                p.lrange(f"list:{i}", 0, -1)
                _, got = p.execute()
            assert got == [str(k).encode() for k in range(i % 7 + 1)], (i, got)
            # Parks until the main thread has seen all N blocked in redis.
            popped[i] = r.blpop([f"wake:{i}"], timeout=60)
        except Exception as e:
            errors.append(f"{i}: {e!r}")
        max_os_threads = max(max_os_threads, len(os.listdir("/proc/self/task")))

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    control = redis.Redis(host="127.0.0.1", port=PORT)
    max_blocked = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        max_blocked = max(max_blocked, control.info("clients")["blocked_clients"])
        if max_blocked >= N or errors:
            break
        time.sleep(0.05)
    blocked_at = time.monotonic() - t0
    for i in range(N):
        control.rpush(f"wake:{i}", f"wake {i}")
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    bad = [i for i in range(N) if popped[i] != (f"wake:{i}".encode(), f"wake {i}".encode())]
    values = control.mget([f"key:{i}" for i in range(N)])
    print(json.dumps({
        "wall": wall, "blocked_at": blocked_at, "max_blocked": max_blocked,
        "counter": int(control.get("counter")), "errors": errors[:10], "n_errors": len(errors),
        "bad": bad[:10], "n_bad": len(bad), "values_ok": values == [f"value {i}".encode() for i in range(N)],
        "max_os_threads": max_os_threads, "connections": len(r.connection_pool._available_connections),
        "peers": [m for m in ("gevent", "eventlet") if m in sys.modules],
    }))
""")


def _dump(pid: int) -> str:
    """Where a stuck process is (py-spy sees the running greenlet of each
    thread): the test's failure message then shows what hung."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    try:
        return subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True,
                              timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"(no py-spy dump: {e})"


def _run_json(script: Path, *args: object, timeout: float, also: int | None = None) -> dict:
    """Run a client script; its last stdout line is JSON.  On a hang, the
    failure shows py-spy dumps of it and of process ``also`` (the server)."""
    proc = subprocess.Popen([sys.executable, str(script), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        dumps = _dump(proc.pid) + ("" if also is None else "\nserver:\n" + _dump(also))
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"client hung for {timeout} s\n{dumps}\nstderr:\n{err[-3000:]}") from None
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{err[-5000:]}"
    result = json.loads(out.strip().splitlines()[-1])
    # The peers must not be what made it work.
    assert result.pop("peers") == [], result
    return result


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    d = tmp_path_factory.mktemp("http")
    script = d / "server.py"
    script.write_text(HTTP_SERVER)
    proc = subprocess.Popen([sys.executable, str(script), str(DELAY)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on "), line
        yield int(line.split()[-1]), proc.pid
    finally:
        proc.kill()
        proc.wait()


def _stats(port: int) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as r:
        return json.loads(r.read())


@pytest.mark.timeout(240)
@pytest.mark.parametrize("lib", ["urllib", "requests"])
def test_http_clients_1000_at_once(lib: str, http_server: tuple[int, int], tmp_path: Path) -> None:
    port, server_pid = http_server
    script = tmp_path / "client.py"
    script.write_text(HTTP_CLIENT)
    before = _stats(port)
    out = _run_json(script, lib, port, N, timeout=220, also=server_pid)
    after = _stats(port)
    print(lib, out, after)
    assert out["n_errors"] == 0, (out["errors"], out["n_errors"], after)
    assert out["n_bad"] == 0, out["bad"]
    assert after["served"] - before["served"] == N
    # One after another this would be N * DELAY = 500 s; the server held a
    # crowd of these requests at the same moment, and the client did it on
    # green threads (a few OS threads at most: main plus a resolver pool).
    assert out["wall"] < N * DELAY / 10, out
    assert after["max_inflight"] >= 200, after
    assert out["max_os_threads"] <= 12, out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    for _ in range(5):
        port = _free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmp_path), "--maxclients", "4000"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        up = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    up = s.recv(64).startswith(b"+PONG")
                    break
            except OSError:
                time.sleep(0.05)
        if up:
            break
        proc.kill()
        proc.wait()  # lost the port to someone else: try another
    else:
        pytest.fail("redis-server did not start")
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(180)
def test_redis_1000_green_threads(redis_port: int, tmp_path: Path) -> None:
    script = tmp_path / "redis_client.py"
    script.write_text(REDIS_CLIENT)
    out = _run_json(script, redis_port, N, timeout=170)
    print(out)
    assert out["n_errors"] == 0, out["errors"]
    assert out["n_bad"] == 0, out["bad"]
    assert out["values_ok"]
    assert out["counter"] == N
    # All N were parked inside BLPOP at the same moment: each green thread
    # held its own connection and none blocked the others.
    assert out["max_blocked"] == N, out
    assert out["max_os_threads"] <= 12, out
    # Each thread's connection went back to the pool.
    assert out["connections"] == N, out

