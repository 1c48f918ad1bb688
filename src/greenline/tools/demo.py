"""``greenline demo``: the whole system in one command.

Starts ``greenline serve upper`` (one worker process per core) on a free
loopback port, points the seed's 500 clients at it for 10 seconds (500 green
threads in this one process, each sending ``conn-<i> say hello <n>`` and
checking every reply), shows the progress live, prints the report and stops
the server.  Exits 0 only if every reply was right and the server shut down
cleanly.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from time import monotonic
from typing import Any

from greenline import socket as gsocket
from greenline.tools.load import LoadConfig, LoadError, Progress, progress_mode, run_load

__all__ = ["add_parser", "main", "start_server", "stop_server"]

# How long the server may take to print its `listening on` line, and to exit
# after SIGTERM (its connections are already closed by then).
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0

_LISTENING = re.compile(r"^listening on (\[?[^\]\s]+\]?):(\d+)$")


class DemoError(Exception):
    pass


def start_server(procs: str = "auto", app: str = "upper") -> tuple[subprocess.Popen[bytes], str, int]:
    """Start ``greenline serve APP`` on a free loopback port; return the
    process and the address it printed once it accepts."""
    cmd = [sys.executable, "-m", "greenline", "serve", app, "--host", "127.0.0.1", "--port", "0",
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


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="the one-command tour: a greenline server and 500 green-thread clients, checked",
        description="Start `greenline serve upper` (one process per core) on a free loopback port, "
                    "run `greenline load` against it with the seed's 500 clients for 10 s, print "
                    "the report and stop the server.  Exit 0 if every reply was right.",
    )
    p.add_argument("-c", "--connections", type=int, default=500, help="clients (default: %(default)s)")
    p.add_argument("-d", "--duration", type=float, default=10.0, help="seconds (default: %(default)s)")
    p.add_argument("--server-procs", default="auto", metavar="N|auto",
                   help="server worker processes (default: one per core)")
    p.add_argument("--no-progress", action="store_true", help="no live progress")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    if args.connections < 1 or args.duration <= 0:
        print("greenline demo: -c and -d must be positive", file=sys.stderr)
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
    result = None
    failure = ""
    try:
        progress = Progress(cfg, progress_mode(args.no_progress))
        try:
            result = run_load(cfg, progress)
        finally:
            progress.close()
    except LoadError as e:
        failure = str(e)
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
    if result.interrupted:
        return 130
    return 0 if result.ok else 1
