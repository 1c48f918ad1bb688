"""Server CPU time per request of WSGI servers under wrk, and memory per idle
keep-alive connection.

CPU (the default mode).  Each server runs in its own process (tree), one
worker, serving the same application, and is driven by ``wrk -t1 -cC
--latency`` keep-alive GETs.  For each run the CPU time (user + system,
from /proc/PID/stat) of the server's process and its children over the run
is divided by the requests wrk counted; wrk's p50 and p99 latency are kept.
Runs are interleaved (greenline, peer, peer, greenline, peer, peer, ...) so
drift in the machine's load hits every server alike.

Applications (``--apps``): ``hello``, a 13-byte body with Content-Length;
``flask``, a Flask route returning ``jsonify(name=..., greeting=...)``.

Servers (``--servers``), each run when installed (greenline never imports
them: ``pip install -e '.[bench]'``):

* ``greenline``: greenline.wsgi.WSGIServer in one process;
* ``gl-gunicorn``: gunicorn ``-w 1 -k greenline.wsgi.gunicorn.Worker``;
* ``gunicorn``: gunicorn ``-w 1 -k gevent``;
* ``pywsgi``: gevent.pywsgi.WSGIServer;
* ``granian``: granian ``--interface wsgi --workers 1``;
* ``waitress``: waitress.serve with its defaults (4 threads);
* ``floor`` (hello only): greenline's stream server and httptools answering
  one fixed response, no HTTP rules kept: the floor under any HTTP server on
  greenline, not a server.

Memory (``--memory N``): each server (greenline, pywsgi, gunicorn, granian by
default) is started alone; N keep-alive connections each make one request
and then stay open and idle; the growth of the server's resident memory (its
whole process tree), divided by N, is the cost of an idle connection.

This is a benchmark, not a test: run it on a machine as quiet as you can.
``greenline bench --http`` (src/greenline/tools/bench.py) imports this file
and uses ``start``, ``stop``, ``wrk``, ``cpu_seconds``, ``REQUIRES`` and
``PATHS``: keep their signatures.

    python bench/wsgi_cpu.py                                   # hello world, all servers
    python bench/wsgi_cpu.py --apps hello flask --rounds 3 --seconds 4
    python bench/wsgi_cpu.py --servers greenline pywsgi --rounds 5
    python bench/wsgi_cpu.py --memory 10000
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
BODY = b"Hello, world\n"
PATHS = {"hello": "/", "flask": "/hello/world"}
# Long enough to hold idle connections through a memory measurement.
MEMORY_KEEPALIVE = 300


def app(environ, start_response):  # type: ignore[no-untyped-def]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]


def _make_flask_app() -> Any:
    from flask import Flask, jsonify

    flask = Flask("wsgi_cpu")

    @flask.get("/hello/<name>")
    def hello(name: str) -> Any:
        return jsonify(name=name, greeting=f"Hello, {name}!")

    return flask


_flask_app = None


def __getattr__(name: str) -> Any:
    # ``wsgi_cpu:flask_app`` for gunicorn and granian, made on first use so
    # that the hello-world servers never import Flask.
    global _flask_app
    if name == "flask_app":
        if _flask_app is None:
            _flask_app = _make_flask_app()
        return _flask_app
    raise AttributeError(name)


def serve(name: str, port: int, app_name: str, keepalive: float | None) -> None:
    """Run server ``name`` on ``port`` in this process (the child side)."""
    application = app if app_name == "hello" else _make_flask_app()
    if name == "greenline":
        from greenline.wsgi import Limits, WSGIServer

        limits = Limits(keepalive_timeout=keepalive) if keepalive else None
        WSGIServer(("127.0.0.1", port), application, backlog=2048, limits=limits).serve_forever()
    elif name == "pywsgi":
        from gevent.pywsgi import WSGIServer as GeventWSGIServer

        GeventWSGIServer(("127.0.0.1", port), application, log=None).serve_forever()
    elif name == "waitress":
        import logging

        import waitress

        # It warns of its task queue's depth under any load: not our subject.
        logging.getLogger("waitress").setLevel(logging.ERROR)
        waitress.serve(application, host="127.0.0.1", port=port, _quiet=True)
    elif name == "floor":
        _floor(port)
    else:
        raise SystemExit(f"unknown server {name}")


def _floor(port: int) -> None:
    """Not a server: the floor under any HTTP server on greenline.  The
    stream server and the httptools parser, one fixed response per request,
    no HTTP rules kept (no limits, no framing, no environ, no app)."""
    import httptools

    from greenline.servers.stream import StreamServer

    response = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                % (len(BODY), BODY))

    class Proto:
        done = 0

        def on_message_complete(self) -> None:
            self.done += 1

    def handle(sock, address):  # type: ignore[no-untyped-def]
        proto = Proto()
        parser = httptools.HttpRequestParser(proto)
        while data := sock.recv(65536):
            parser.feed_data(data)
            if proto.done:
                sock.sendall(response * proto.done)
                proto.done = 0

    StreamServer(("127.0.0.1", port), handle, backlog=2048).serve_forever()


# -- measuring a process tree ----------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    out = [pid]
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                for c in f.read().split():
                    out.extend(_tree(int(c)))
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its live children so far."""
    total = 0.0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        total += (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return total


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its children."""
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * _PAGE
        except OSError:
            continue
    return total


# -- starting servers ------------------------------------------------------------------------


REQUIRES = {"pywsgi": "gevent", "gunicorn": "gunicorn", "gl-gunicorn": "gunicorn", "granian": "granian",
            "waitress": "waitress"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                if s.recv(100):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"nothing answering on {port} after {timeout} s")


def start(name: str, app_name: str, keepalive: float | None = None) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT / "bench"),
                                                       os.environ.get("PYTHONPATH", "")]))
    target = "wsgi_cpu:app" if app_name == "hello" else "wsgi_cpu:flask_app"
    gunicorn = [sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}",
                "--log-level", "warning", "--backlog", "2048"]
    if keepalive:
        gunicorn += ["--keep-alive", str(keepalive), "--worker-connections", "100000"]
    if name == "gunicorn":
        cmd = [*gunicorn, "-k", "gevent", target]
    elif name == "gl-gunicorn":
        cmd = [*gunicorn, "-k", "greenline.wsgi.gunicorn.Worker", target]
    elif name == "granian":
        cmd = [sys.executable, "-m", "granian", "--interface", "wsgi", "--workers", "1", "--host",
               "127.0.0.1", "--port", str(port), "--log-level", "warning", "--backlog", "2048", target]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", name, str(port), app_name,
               str(keepalive or 0)]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT / "bench", stdout=subprocess.DEVNULL)
    wait_listening(port, proc)
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# -- wrk -------------------------------------------------------------------------------------


_REQUESTS = re.compile(r"(\d+) requests in")
_LAT = re.compile(r"^\s*(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_ERRORS = re.compile(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)")


def wrk(port: int, path: str, seconds: float, connections: int) -> tuple[int, dict[str, float], str]:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency",
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True,
                         check=True).stdout
    m = _REQUESTS.search(out)
    n = int(m.group(1)) if m else 0
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    lat = {f"p{p}": float(v) * scale[u] for p, v, u in _LAT.findall(out)}
    errors = " ".join(e.group(0) for e in _ERRORS.finditer(out))
    return n, lat, errors


def _versions() -> str:
    out = []
    for mod in ("greenlet", "httptools", "gevent", "gunicorn", "granian", "waitress", "flask"):
        try:
            from importlib.metadata import version

            out.append(f"{mod} {version(mod)}")
        except Exception:
            continue
    return ", ".join(out)


def run_cpu(args: argparse.Namespace, servers: list[str]) -> None:
    for app_name in args.apps:
        names = [s for s in servers if not (s == "floor" and app_name != "hello")]
        path = PATHS[app_name]
        procs = {name: start(name, app_name) for name in names}
        results: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in names}
        try:
            for _, port in procs.values():
                wrk(port, path, 1, args.connections)  # warm-up
            for r in range(args.rounds):
                # Each round in another order, so no server always follows the same one.
                order = names[r % len(names):] + names[:r % len(names)]
                for name in order:
                    proc, port = procs[name]
                    before = cpu_seconds(proc.pid)
                    n, lat, errors = wrk(port, path, args.seconds, args.connections)
                    used = cpu_seconds(proc.pid) - before
                    per = used / n * 1e6 if n else float("nan")
                    p50, p99 = lat.get("p50", float("nan")), lat.get("p99", float("nan"))
                    results[name].append((per, n / args.seconds, p50, p99))
                    print(f"{app_name:5} round {r + 1} {name:11} {per:7.1f} us/req  {n / args.seconds:9.0f} "
                          f"req/s  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  {errors}", flush=True)
        finally:
            for proc, _ in procs.values():
                stop(proc)
        print(f"\n{app_name}: medians, wrk -t1 -c{args.connections}, {args.rounds} x {args.seconds:g} s:")
        base = statistics.median(x[0] for x in results[names[0]])
        for name in names:
            per, rate, p50, p99 = (statistics.median(x[i] for x in results[name]) for i in range(4))
            # The tail ratio per run (a run's p99 over its own p50), median and range.
            ratios = sorted(x[3] / x[2] for x in results[name])
            print(f"  {name:11} {per:7.1f} us/req ({per / base:5.2f}x {names[0]})  {rate:8.0f} req/s  "
                  f"p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  p99/p50 {statistics.median(ratios):5.1f} "
                  f"({ratios[0]:.1f}-{ratios[-1]:.1f})", flush=True)
        print(flush=True)


# -- memory per idle keep-alive connection ---------------------------------------------------


def _hold_connections(port: int, n: int, report: Any) -> None:
    """In a child process: open n keep-alive connections, one request each,
    report, then keep them until stdin closes."""
    import greenline
    from greenline import socket as gsocket

    conns = []
    failures = []

    def one() -> None:
        try:
            c = gsocket.create_connection(("127.0.0.1", port), timeout=60)
            c.sendall(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")
            got = b""
            while b"\r\n\r\n" not in got or not got.endswith(BODY):
                data = c.recv(4096)
                if not data:
                    raise ConnectionError("closed")
                got += data
            conns.append(c)
        except OSError as e:
            failures.append(e)

    # A few hundred connecting at a time: a burst of 10,000 overflows the
    # listen queues of servers that accept slowly, and measures that instead.
    pool = greenline.Pool(256)
    for _ in range(n):
        pool.spawn(one)
    pool.join()
    report(json.dumps({"open": len(conns), "failed": len(failures)}))
    greenline.socket.wait_read(sys.stdin.fileno())
    for c in conns:
        c.close()


def run_memory(args: argparse.Namespace, servers: list[str]) -> None:
    n = args.memory
    print(f"memory per idle keep-alive connection, {n} connections (one request each, then idle):")
    for name in servers:
        if name in ("floor", "waitress", "gl-gunicorn"):
            continue  # waitress caps connections at 100 by default; the floor is no server
        proc, port = start(name, "hello", keepalive=MEMORY_KEEPALIVE)
        try:
            time.sleep(1.0)
            before = rss_bytes(proc.pid)
            holder = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--hold", str(port),
                                       str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
            assert holder.stdout is not None and holder.stdin is not None
            line = holder.stdout.readline()
            status = json.loads(line) if line else {"open": 0, "failed": n}
            time.sleep(1.0)  # let the server settle (lazy frees, the last writes)
            after = rss_bytes(proc.pid)
            holder.stdin.close()
            holder.wait(60)
            per = (after - before) / max(status["open"], 1)
            print(f"  {name:11} {per / 1024:6.2f} KiB/connection   (RSS {before / 2**20:6.1f} -> "
                  f"{after / 2**20:6.1f} MiB, {status['open']} open, {status['failed']} failed)", flush=True)
        finally:
            stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--connections", type=int, default=100)
    ap.add_argument("--apps", nargs="+", default=["hello"], choices=sorted(PATHS))
    ap.add_argument("--servers", nargs="+",
                    default=["greenline", "gunicorn", "pywsgi", "granian", "waitress"],
                    help="among greenline, gl-gunicorn, gunicorn, pywsgi, granian, waitress, floor")
    ap.add_argument("--memory", type=int, metavar="N", default=None,
                    help="measure memory per idle keep-alive connection with N connections instead")
    ap.add_argument("--serve", nargs=4, metavar=("NAME", "PORT", "APP", "KEEPALIVE"), help=argparse.SUPPRESS)
    ap.add_argument("--hold", nargs=2, metavar=("PORT", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        name, port, app_name, keepalive = args.serve
        serve(name, int(port), app_name, float(keepalive) or None)
        return
    if args.hold:
        _hold_connections(int(args.hold[0]), int(args.hold[1]), lambda s: print(s, flush=True))
        return
    if shutil.which("wrk") is None and args.memory is None:
        raise SystemExit("wrk not found (apt-get install wrk)")
    servers = [s for s in args.servers if s not in REQUIRES or importlib.util.find_spec(REQUIRES[s])]
    if "flask" in args.apps and not importlib.util.find_spec("flask"):
        raise SystemExit("flask not installed (pip install flask)")
    skipped = set(args.servers) - set(servers)
    if skipped:
        print(f"not installed, skipped: {', '.join(sorted(skipped))}")
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}; {_versions()}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    if args.memory:
        run_memory(args, servers)
    else:
        run_cpu(args, servers)


if __name__ == "__main__":
    main()
