"""``greenline demo``: the whole system in one command.

1. Starts ``greenline serve upper`` (one worker process per core) on a free
   loopback port, points the seed's 500 clients at it for 10 seconds (500
   green threads in this one process, each sending ``conn-<i> say hello <n>``
   and checking every reply), shows the progress live, prints the report and
   stops the server.
2. Starts ``greenline serve --wsgi greenline.tools.demo:app --procs auto``
   (the small WSGI application below), checks one response by hand, then
   drives it over HTTP with ``greenline load`` for 5 seconds, every
   response parsed and its status checked, and stops it.

Exits 0 only if every reply and every response was right and both servers
shut down cleanly; about 20 s in all.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
from time import monotonic
from typing import Any

from greenline import socket as gsocket
from greenline.tools.load import (
    LoadConfig,
    LoadError,
    Progress,
    http_request,
    parse_duration,
    progress_mode,
    run_load,
)
from greenline.tools.report import LoadResult

__all__ = ["add_parser", "main", "start_server", "stop_server", "app"]

# How long the server may take to print its `listening on` line, and to exit
# after SIGTERM (its connections are already closed by then).
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0

_LISTENING = re.compile(r"^listening on (\[?[^\]\s]+\]?):(\d+)$")


class DemoError(Exception):
    pass


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The demo's WSGI application: ``GET /hello/NAME`` answers
    ``{"hello": "NAME"}``; anything else is a 404."""
    path = environ.get("PATH_INFO", "")
    if environ["REQUEST_METHOD"] in ("GET", "HEAD") and path.startswith("/hello/") and len(path) > 7:
        body = json.dumps({"hello": path[7:]}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return [b"not found\n"]


WSGI_APP = "greenline.tools.demo:app"
HTTP_PATH = "/hello/demo"


def start_server(procs: str = "auto", app: str = "upper",
                 extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], str, int]:
    """Start ``greenline serve APP`` on a free loopback port; return the
    process and the address it printed once it accepts."""
    cmd = [sys.executable, "-m", "greenline", "serve", app, *extra, "--host", "127.0.0.1", "--port", "0",
           "--procs", procs, "--graceful-timeout", "2", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    deadline = monotonic() + START_TIMEOUT
    buf = b""
    try:
        while b"\n" not in buf:
            remaining = deadline - monotonic()
            if remaining <= 0:
                raise DemoError(f"the server printed no `listening on` line within {START_TIMEOUT:g} s")
            try:
                gsocket.wait_read(fd, remaining)
            except TimeoutError:
                continue
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                continue
            if not chunk:
                code = proc.wait(STOP_TIMEOUT)
                raise DemoError(f"the server exited with status {code} before it was listening")
            buf += chunk
        line = buf.split(b"\n", 1)[0].decode(errors="replace").strip()
        m = _LISTENING.match(line)
        if m is None:
            raise DemoError(f"unexpected first line from the server: {line!r}")
        return proc, m.group(1).strip("[]"), int(m.group(2))
    except BaseException:
        stop_server(proc)
        raise


def stop_server(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, wait; SIGKILL if it does not go.  Returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


def check_one_response(host: str, port: int, timeout: float = 5.0) -> str:
    """One ``GET /hello/demo`` by hand: "" if the body is the application's,
    else what is wrong."""
    try:
        with gsocket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(f"GET {HTTP_PATH} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError as e:
        return f"GET {HTTP_PATH} failed: {e}"
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200 ") or body != b'{"hello": "demo"}':
        return f"GET {HTTP_PATH} answered {data[:200]!r}"
    return ""


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="the one-command tour: greenline servers and green-thread clients, every reply checked",
        description="Start `greenline serve upper` (one process per core) on a free loopback port, run "
                    "`greenline load` against it with the seed's 500 clients for 10 s, print the report "
                    "and stop the server; then serve a small WSGI application with `greenline serve "
                    "--wsgi --procs auto` and drive it over HTTP for 5 s with `greenline load`.  Exit 0 "
                    "if every reply and every response was right.",
    )
    p.add_argument("-c", "--connections", type=int, default=500, help="clients (default: %(default)s)")
    p.add_argument("-d", "--duration", type=_duration, default=10.0, metavar="TIME",
                   help="how long the line-protocol part runs (default: 10s)")
    p.add_argument("--http-connections", type=int, default=100, metavar="N",
                   help="HTTP clients (default: %(default)s)")
    p.add_argument("--http-duration", type=_duration, default=5.0, metavar="TIME",
                   help="how long the HTTP part runs (default: 5s)")
    p.add_argument("--no-http", action="store_true", help="leave out the HTTP part")
    p.add_argument("--server-procs", default="auto", metavar="N|auto",
                   help="server worker processes (default: one per core)")
    p.add_argument("--no-progress", action="store_true", help="no live progress")
    p.set_defaults(func=main)
    return p


def _run(cfg: LoadConfig, no_progress: bool) -> tuple[LoadResult | None, str]:
    try:
        progress = Progress(cfg, progress_mode(no_progress))
        try:
            return run_load(cfg, progress), ""
        finally:
            progress.close()
    except LoadError as e:
        return None, str(e)


def main(args: argparse.Namespace) -> int:
    if args.connections < 1 or args.http_connections < 1:
        print("greenline demo: -c and --http-connections must be positive", file=sys.stderr)
        return 2
    try:
        proc, host, port = start_server(args.server_procs)
    except (DemoError, OSError) as e:
        print(f"greenline demo: could not start the server: {e}", file=sys.stderr)
        return 2
    print(f"greenline demo: `greenline serve upper` (pid {proc.pid}, workers: {args.server_procs}) "
          f"is listening on {host}:{port}.", flush=True)
    print(f"Now {args.connections} clients, green threads of this one process, each send "
          f"'conn-<i> say hello <n>' and check that the reply comes back upper-cased, "
          f"for {args.duration:g} s.", flush=True)
    cfg = LoadConfig(host=host, port=port, connections=args.connections, duration=args.duration)
    try:
        result, failure = _run(cfg, args.no_progress)
    finally:
        status = stop_server(proc)
    if result is not None:
        print(result.render())
    if failure:
        print(f"greenline demo: the load test could not run: {failure}", file=sys.stderr)
        return 2
    if status != 0:
        print(f"greenline demo: the server exited with status {status} when asked to stop", file=sys.stderr)
        return 1
    assert result is not None
    print(f"server stopped cleanly.  {'All well.' if result.ok else 'NOT all well.'}", flush=True)
    results = [result]
    if not args.no_http and not result.interrupted:
        code = _http_part(args, results)
        if code is not None:
            return code
    if any(r.interrupted for r in results):
        return 130
    return 0 if all(r.ok for r in results) else 1


def _http_part(args: argparse.Namespace, results: list[LoadResult]) -> int | None:
    """Part two: the WSGI application over HTTP.  Appends its result, or
    returns an exit code when it could not run."""
    try:
        proc, host, port = start_server(args.server_procs, WSGI_APP, ("--wsgi",))
    except (DemoError, OSError) as e:
        print(f"greenline demo: could not start the WSGI server: {e}", file=sys.stderr)
        return 2
    url = f"http://{host}:{port}{HTTP_PATH}"
    print(f"\ngreenline demo: `greenline serve --wsgi {WSGI_APP}` (pid {proc.pid}, workers: "
          f"{args.server_procs}) is listening on {host}:{port}.", flush=True)
    wrong = check_one_response(host, port)
    result = None
    failure = ""
    try:
        if not wrong:
            print(f"GET {HTTP_PATH} answers {{\"hello\": \"demo\"}}.  Now {args.http_connections} "
                  f"keep-alive HTTP clients send it again and again for {args.http_duration:g} s, every "
                  f"response parsed and its status checked.", flush=True)
            cfg = LoadConfig(host=host, port=port, connections=args.http_connections,
                             duration=args.http_duration, http=http_request(url, expect="200"))
            result, failure = _run(cfg, args.no_progress)
    finally:
        status = stop_server(proc)
    if wrong:
        print(f"greenline demo: {wrong}", file=sys.stderr)
        return 1
    if result is not None:
        print(result.render())
    if failure:
        print(f"greenline demo: the HTTP load test could not run: {failure}", file=sys.stderr)
        return 2
    if status != 0:
        print(f"greenline demo: the WSGI server exited with status {status} when asked to stop",
              file=sys.stderr)
        return 1
    assert result is not None
    results.append(result)
    print(f"server stopped cleanly.  {'All well.' if result.ok else 'NOT all well.'}", flush=True)
    return None
