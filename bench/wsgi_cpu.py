"""Server CPU time per request of WSGI servers, hello world, under wrk.

Each server runs in its own process (the same hello-world app: a 13-byte body
with Content-Length) and is driven by ``wrk -t1 -c100`` keep-alive GETs.
For each run the CPU time (user + system, from /proc/PID/stat) of the
server's process and its children over the run is divided by the requests
wrk counted.  Runs are interleaved (greenline, peer, greenline, peer, ...)
so drift in the machine's load hits every server alike.  Peers are run when
installed (``pip install gevent gunicorn``): gevent.pywsgi, and gunicorn
``-w 1 -k gevent``.  greenline itself never imports them.

This is a benchmark, not a test: run it on a quiet machine.

    python bench/wsgi_cpu.py
    python bench/wsgi_cpu.py --rounds 5 --seconds 4 --servers greenline pywsgi
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_CLK_TCK = os.sysconf("SC_CLK_TCK")
BODY = b"Hello, world\n"


def app(environ, start_response):  # type: ignore[no-untyped-def]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]


def serve(name: str, port: int) -> None:
    """Run server ``name`` on ``port`` in this process (the child side)."""
    if name == "greenline":
        from greenline.wsgi import WSGIServer

        WSGIServer(("127.0.0.1", port), app, backlog=2048).serve_forever()
    elif name == "pywsgi":
        from gevent.pywsgi import WSGIServer as GeventWSGIServer

        GeventWSGIServer(("127.0.0.1", port), app, log=None).serve_forever()
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its live children so far."""
    total = 0.0
    for p in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        total += (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return total


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                for c in f.read().split():
                    out.append(int(c))
                    out.extend(_children(int(c)))
    except OSError:
        pass
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listening on {port} after {timeout} s")


def start(name: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT / "bench"),
                                                       os.environ.get("PYTHONPATH", "")]))
    if name == "gunicorn":
        cmd = [sys.executable, "-m", "gunicorn", "-w", "1", "-k", "gevent", "-b", f"127.0.0.1:{port}",
               "--log-level", "warning", "wsgi_cpu:app"]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", name, str(port)]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT / "bench")
    wait_listening(port, proc)
    return proc, port


_REQUESTS = re.compile(r"(\d+) requests in")
_LAT = re.compile(r"^\s*(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_ERRORS = re.compile(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)")


def wrk(port: int, seconds: float, connections: int) -> tuple[int, dict[str, float], str]:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency",
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True).stdout
    m = _REQUESTS.search(out)
    n = int(m.group(1)) if m else 0
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    lat = {f"p{p}": float(v) * scale[u] for p, v, u in _LAT.findall(out)}
    errors = " ".join(e.group(0) for e in _ERRORS.finditer(out))
    return n, lat, errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--connections", type=int, default=100)
    ap.add_argument("--servers", nargs="+", default=["greenline", "pywsgi", "gunicorn"],
                    help="among greenline, pywsgi, gunicorn, and floor (greenline's stream server "
                         "and httptools answering a fixed response: no HTTP server, the floor under one)")
    ap.add_argument("--serve", nargs=2, metavar=("NAME", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found (apt-get install wrk)")
    needs = {"pywsgi": "gevent", "gunicorn": "gunicorn"}
    servers = [s for s in args.servers if s not in needs or importlib.util.find_spec(needs[s])]
    skipped = set(args.servers) - set(servers)
    if skipped:
        print(f"not installed, skipped: {', '.join(sorted(skipped))}")
    procs = {name: start(name) for name in servers}
    results: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for _, port in procs.values():
            wrk(port, 1, args.connections)  # warm-up
        for r in range(args.rounds):
            for name, (proc, port) in procs.items():
                before = cpu_seconds(proc.pid)
                n, lat, errors = wrk(port, args.seconds, args.connections)
                used = cpu_seconds(proc.pid) - before
                per = used / n * 1e6 if n else float("nan")
                results[name].append(per)
                print(f"round {r + 1} {name:10} {per:7.1f} us/req  {n / args.seconds:9.0f} req/s  "
                      f"p50 {lat.get('p50', float('nan')):.2f} ms  p99 {lat.get('p99', float('nan')):.2f} ms"
                      f"  {errors}", flush=True)
    finally:
        for proc, _ in procs.values():
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(f"\nmedian CPU per request, wrk -t1 -c{args.connections}, {args.rounds} x {args.seconds:g} s:")
    base = statistics.median(results[servers[0]]) if servers else 0
    for name in servers:
        med = statistics.median(results[name])
        print(f"  {name:10} {med:7.1f} us   ({med / base:.2f}x {servers[0]})")


if __name__ == "__main__":
    main()
