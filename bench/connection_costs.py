"""What one connection costs ``greenline serve upper``: memory, and the CPU
to accept it.  The figures behind docs/benchmarks.md's "measured reasons"
for issue 16's memory and first-reply targets.

    python bench/connection_costs.py memory                  # 10,000 connections
    python bench/connection_costs.py memory --connections 2000 --breakdown
    python bench/connection_costs.py accept --servers greenline,uvloop-protocol

``memory``: RSS of the server (its whole process tree) with N connections
open, less its RSS before the first, per connection, for the two ways the
C client (src/greenline/tools/upper_client.c) opens them: one at a time
with a round trip on each ("one at a time"), and all at once with the first
line sent on all of them together ("burst", as bench/c_client_peers.py
does).  Then, in a greenline server run in-process by this script:
``--breakdown`` lists what Python allocated per connection (tracemalloc,
grouped by the line of greenline that allocated it; the green thread's
4 KiB page of interpreter frames is not traced, nor is greenlet's own C++
object), and the number of pymalloc pools left empty, but not given back,
after each way of connecting (``sys._debugmallocstats``).

``accept``: the server's CPU time (user + system) per connection while N
clients connect at once and send nothing (non-blocking connects from one
Python process; its own CPU is not counted), for greenline and the peers.

Only the standard library (and this checkout's cclient.py, loaded by path);
the servers need greenline, uvloop and gevent installed where it runs.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from c_client_peers import SERVERS, check_kernel, tree_rss, tree_times  # bench/ is on sys.path
from threads_scaling import free_port, load_cclient, tree_pids

ROOT = Path(__file__).resolve().parent.parent
cclient = load_cclient()

# The in-process server of --breakdown: a greenline StreamServer running the
# upper app, reporting to the file named by its first argument, on SIGUSR1
# what tracemalloc traced per connection (third argument "trace"), or on
# SIGUSR2 pymalloc's unused pools (third argument "pools").
BREAKDOWN_SERVER = r'''
import os, re, signal, sys, tracemalloc
from greenline.servers.stream import StreamServer
from greenline.servers.apps import upper
out, n, trace = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "trace"
server = StreamServer(("127.0.0.1", 0), upper)
server.start()
if trace:  # (pymalloc keeps no statistics while tracemalloc wraps it)
    tracemalloc.start(1)
    base = tracemalloc.take_snapshot()
def report(*_):
    snap = tracemalloc.take_snapshot()
    mine = [tracemalloc.Filter(True, "*/greenline/*")]
    stats = snap.filter_traces(mine).compare_to(base.filter_traces(mine), "lineno")
    with open(out, "a") as f:
        total = sum(s.size_diff for s in stats) / n
        f.write(f"traced {total:.0f}\n")
        for s in stats[:8]:
            fr = s.traceback[0]
            f.write(f"site {s.size_diff / n:.0f} {s.count_diff / n:.2f} {os.path.relpath(fr.filename)}:{fr.lineno}\n")
def pools(*_):
    r, w = os.pipe()
    saved = os.dup(2)
    os.dup2(w, 2)
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(w)
    text = b""
    while chunk := os.read(r, 65536):
        text += chunk
    m = re.search(rb"([0-9,]+) unused pools", text)
    with open(out, "a") as f:
        count = int(m.group(1).replace(b",", b"")) if m else -1
        f.write(f"unused_pools {count}\n")
signal.signal(signal.SIGUSR1, report)
signal.signal(signal.SIGUSR2, pools)
print("listening on", server.address[1], flush=True)
server.serve_forever()
'''


def server_cmd(key: str, port: int) -> list[str]:
    return [sys.executable, "-m", *SERVERS[key][1], "--host", "127.0.0.1", "--port", str(port)]


def start(cmd: list[str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"listening on \S*?:?(\d+)\s*$", line)
    if not m:
        proc.kill()
        raise SystemExit(f"{cmd}: did not start: {line!r}")
    return proc, int(m.group(1))


def stop(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass
    proc.wait()


def hold(client: Path, port: int, n: int, burst: bool, on_open) -> dict[str, float]:
    """Open n connections with the C client (-H: held after its result
    line), call on_open() while they are all open, then let them go."""
    cmd = [str(client), "-H", *(["-b"] if burst else []), "127.0.0.1", str(port), str(n), "0.5", "1"]
    c = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert c.stdout is not None and c.stdin is not None
    result: dict[str, float] = {}
    for line in c.stdout:
        result = cclient.parse_result(line)
        if result:
            on_open()
            break
    c.stdin.close()
    if c.wait(60) != 0 or not result:
        raise SystemExit(f"the C client failed ({' '.join(cmd)})")
    return result


def memory(args: argparse.Namespace, client: Path) -> None:
    n = args.connections
    print(f"RSS per connection, {n:,} connections (server tree's RSS with them open less before the first)")
    for burst in (False, True):
        how = "burst" if burst else "one at a time"
        for key in args.servers:
            proc, port = start(server_cmd(key, free_port()))
            time.sleep(0.3)
            before = tree_rss(proc.pid)
            seen: list[int] = []
            try:
                hold(client, port, n, burst, lambda seen=seen, pid=proc.pid: seen.append(tree_rss(pid)))
            finally:
                stop(proc)
            print(f"  {how:<14} {SERVERS[key][0]:<16} {(seen[0] - before) / n / 1024:5.2f} KiB", flush=True)
    if not args.breakdown:
        return
    print(f"\nin-process greenline server, {n:,} connections (tracemalloc over greenline's allocations)")
    for burst in (False, True):
        text = ""
        for mode, sig, want in (("trace", 10, "traced"), ("pools", 12, "unused_pools")):  # SIGUSR1, SIGUSR2
            out = Path(f"/tmp/connection_costs.{os.getpid()}")
            out.unlink(missing_ok=True)
            proc, port = start([sys.executable, "-c", BREAKDOWN_SERVER, str(out), str(n), mode])

            def probe(pid: int = proc.pid, out: Path = out, sig: int = sig, want: str = want) -> None:
                os.kill(pid, sig)
                deadline = time.monotonic() + 30
                while not (out.exists() and want in out.read_text()):
                    if time.monotonic() > deadline:
                        raise SystemExit("the in-process server did not report")
                    time.sleep(0.05)
            try:
                hold(client, port, n, burst, probe)
            finally:
                stop(proc)
            text += out.read_text()
            out.unlink()
        traced = re.search(r"traced (\d+)", text)
        pools = re.search(r"unused_pools (-?\d+)", text)
        print(f"  {'burst' if burst else 'one at a time'}: {traced.group(1) if traced else '?'} bytes traced "
              f"per connection; {pools.group(1) if pools else '?'} pymalloc pools (16 KiB) left empty")
        for line in text.splitlines():
            if line.startswith("site "):
                _, size, count, where = line.split(maxsplit=3)
                print(f"    {int(size):6d} B  {float(count):4.2f} blocks  {where}")


CONNECT_ONLY = r'''
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = []
for _ in range(n):
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    socks.append(s)
print("connecting", flush=True)
sys.stdin.read()
'''


def accept(args: argparse.Namespace) -> None:
    n = args.connections
    print(f"server CPU per accepted connection, {n:,} clients connecting at once and sending nothing")
    for r in range(args.rounds):
        for key in args.servers:
            proc, port = start(server_cmd(key, free_port()))
            time.sleep(0.3)
            u0, s0 = tree_times(proc.pid)
            c = subprocess.Popen([sys.executable, "-c", CONNECT_ONLY, str(port), str(n)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                assert c.stdout is not None and c.stdin is not None
                c.stdout.readline()
                # Accepted once a process of the server holds n more
                # descriptors (or after 30 s: the figure then counts fewer).
                base = _most_fds(proc.pid)
                deadline = time.monotonic() + 30
                while _most_fds(proc.pid) < base + n and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(0.3)
                u1, s1 = tree_times(proc.pid)
            finally:
                if c.stdin is not None:
                    c.stdin.close()
                c.wait(30)
                stop(proc)
            print(f"  round {r + 1}  {SERVERS[key][0]:<16} {(u1 - u0 + s1 - s0) / n * 1e6:6.1f} µs "
                  f"(user {(u1 - u0) / n * 1e6:.1f} + system {(s1 - s0) / n * 1e6:.1f})", flush=True)


def _most_fds(pid: int) -> int:
    """Descriptors of the process of the tree that has the most."""
    counts = []
    for p in tree_pids(pid):
        try:
            counts.append(len(os.listdir(f"/proc/{p}/fd")))
        except OSError:
            continue
    return max(counts, default=0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["memory", "accept"])
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--servers", default="greenline", help="comma-separated: " + ", ".join(SERVERS))
    ap.add_argument("--rounds", type=int, default=2, help="accept: interleaved rounds (default 2)")
    ap.add_argument("--breakdown", action="store_true", help="memory: also tracemalloc and pymalloc's pools")
    args = ap.parse_args()
    args.servers = args.servers.split(",")
    for key in args.servers:
        if key not in SERVERS:
            raise SystemExit(f"unknown server {key!r}: one of {', '.join(SERVERS)}")
    check_kernel(args.connections)
    if args.what == "accept":
        accept(args)
        return 0
    client, note = cclient.build_client()
    if client is None:
        print(note, file=sys.stderr)
        return 0
    memory(args, client)
    return 0


if __name__ == "__main__":
    sys.exit(main())
