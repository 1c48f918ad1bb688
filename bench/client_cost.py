"""Is ``greenline load`` cheap enough to measure a greenline server?

Runs ``greenline serve upper`` (one worker process) and ``greenline load``
against it, side by side, and compares the CPU time (user + system, from
/proc/PID/stat through psutil) each spends per request over the same window:
from the client's first progress line (imports and connecting are over) to
its last.  Both handle exactly the same requests in that window, counted
from the client's progress lines.  The target: client / server <= 1.3, so
the client is never what limits a measurement of the server.

The server's CPU is its supervisor's plus its worker's (the supervisor is
idle while serving).  Several rounds, median reported.  A benchmark, not a
test: run it on a quiet machine.

    python bench/client_cost.py
    python bench/client_cost.py -c 500 -d 10 --rounds 3
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from time import monotonic

import psutil

from greenline.tools.bench import cpu_seconds
from greenline.tools.demo import start_server, stop_server

TARGET_RATIO = 1.3

_LINE = re.compile(r"^\[\s*[\d.]+/[\d.]+ s\].*?replies ([\d,]+)")


def one_round(connections: int, seconds: float, size: int) -> tuple[float, float, int, float]:
    """(client CPU s, server CPU s, requests, wall s) over the measured window."""
    server, host, port = start_server("1")
    try:
        sp = psutil.Process(server.pid)
        server_procs = [sp, *sp.children(recursive=True)]
        client = subprocess.Popen(
            [sys.executable, "-m", "greenline", "load", f"{host}:{port}", "-c", str(connections),
             "-d", str(seconds), "--size", str(size)],
            stdout=subprocess.PIPE, text=True)
        cp = psutil.Process(client.pid)
        samples = []
        assert client.stdout is not None
        report = []
        for line in client.stdout:
            m = _LINE.match(line)
            if m:
                samples.append((monotonic(), cpu_seconds([cp]), cpu_seconds(server_procs),
                                int(m.group(1).replace(",", ""))))
            else:
                report.append(line)
        if client.wait() != 0:
            sys.stdout.write("".join(report))
            raise SystemExit("the load run failed: its numbers would mean nothing")
    finally:
        stop_server(server)
    if len(samples) < 3:
        raise SystemExit("too few progress lines: run longer (-d)")
    # Leave out the last line: the client is winding down around it.
    (t0, c0, s0, r0), (t1, c1, s1, r1) = samples[0], samples[-2]
    return c1 - c0, s1 - s0, r1 - r0, t1 - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-c", "--connections", type=int, default=100)
    ap.add_argument("-d", "--duration", type=float, default=8.0)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"greenline load vs greenline serve upper (1 worker): {args.connections} connections, "
          f"{args.size}-byte messages, {args.duration:g} s x {args.rounds} rounds")
    print(f"{'round':>5} {'requests':>10} {'req/s':>9} {'client µs/req':>14} {'server µs/req':>14} {'ratio':>6}")
    ratios, clients, servers = [], [], []
    for k in range(args.rounds):
        c, s, n, wall = one_round(args.connections, args.duration, args.size)
        client_us, server_us = c / n * 1e6, s / n * 1e6
        ratios.append(client_us / server_us)
        clients.append(client_us)
        servers.append(server_us)
        print(f"{k + 1:>5} {n:>10,} {n / wall:>9,.0f} {client_us:>14.2f} {server_us:>14.2f} {ratios[-1]:>6.2f}")
    ratio = statistics.median(ratios)
    print(f"median: client {statistics.median(clients):.2f} µs/req, server {statistics.median(servers):.2f} "
          f"µs/req, ratio {ratio:.2f} (target <= {TARGET_RATIO})")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
