"""Server CPU time per request: the seed's server on greenline vs on gevent.

Runs ``examples/seed/server.py`` (greenline, ``monkey.patch_all()``) and the
seed's server text under gevent (``greenline.tools.peers.seed_gevent``, the text
``greenline bench`` runs too, here with the seed's own ``listen(5)``), each
in its own process, and drives each with the same
load from a separate client process: a lean closed-loop client, one OS
thread, epoll, ``--connections`` connections each with one ``--size``-byte
message in flight, every reply checked.  Rounds are interleaved (greenline,
gevent, greenline, gevent, ...) so drift in the machine's load hits both.

For each run the server process's CPU time (user + system, from
/proc/PID/stat) over the measured window is divided by the requests answered
in that window.  Prints every run, the medians and the ratio
greenline / gevent (below 1.0: greenline spends less CPU per request).

This is a benchmark, not a test: run it on a quiet machine.

    python bench/seed_server_cpu.py
    python bench/seed_server_cpu.py --rounds 5 --seconds 5
    git worktree add /tmp/before <commit>
    python bench/seed_server_cpu.py --baseline /tmp/before   # before/after a change
"""

from __future__ import annotations

import argparse
import datetime
import os
import select
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from greenline.tools.bench import machine

ROOT = Path(__file__).resolve().parent.parent
GREENLINE_SERVER = ROOT / "examples" / "seed" / "server.py"

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name (field 2) may contain spaces: count from after it.
    fields = stat[stat.rindex(b")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return utime / _CLK_TCK, stime / _CLK_TCK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not listening on port {port} after {timeout} s") from None
            time.sleep(0.05)


# ----------------------------------------------------------------------
# The load client (run as a separate process: ``seed_server_cpu.py _client``).

def run_client(port: int, connections: int, size: int, warmup: float, seconds: float) -> int:
    """Closed loop over ``connections`` sockets.  Prints ``mark`` when the
    measured window opens and ``done <requests>`` when it closes, flushing
    each, so the parent can read the server's CPU time at those moments."""
    msg = (b"say hello " * (size // 10 + 1))[:size]
    expected = msg.upper()
    socks = []
    for _ in range(connections):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # One round trip before the next connect: it proves the server has
        # accepted this connection, so the seed's listen(5) queue never
        # overflows (an overflow drops the handshake and costs a retry
        # seconds later).
        s.sendall(msg)
        reply = b""
        while len(reply) < size:
            chunk = s.recv(4096)
            if not chunk:
                print("error: the server closed a new connection", file=sys.stderr)
                return 1
            reply += chunk
        if reply != expected:
            print(f"error: reply {reply!r} to {msg!r}", file=sys.stderr)
            return 1
        s.setblocking(False)
        socks.append(s)
    ep = select.epoll()
    by_fd = {}
    got = {}
    for s in socks:
        by_fd[s.fileno()] = s
        got[s.fileno()] = b""
        ep.register(s.fileno(), select.EPOLLIN)
        s.send(msg)
    count = 0
    t_mark = time.monotonic() + warmup
    t_end = t_mark + seconds
    marked = False
    count_at_mark = 0
    out = sys.stdout
    in_flight = connections
    sending = True
    while in_flight:
        for fd, _ in ep.poll(0.5):
            s = by_fd[fd]
            chunk = s.recv(4096)
            if not chunk:
                print("error: the server closed a connection", file=sys.stderr)
                return 1
            data = got[fd] + chunk
            if len(data) < size:
                got[fd] = data
                continue
            if data != expected:
                print(f"error: reply {data!r} to {msg!r}", file=sys.stderr)
                return 1
            got[fd] = b""
            count += 1
            if sending:
                s.send(msg)
            else:
                in_flight -= 1
        now = time.monotonic()
        if not marked and now >= t_mark:
            marked = True
            count_at_mark = count
            out.write("mark\n")
            out.flush()
        elif marked and sending and now >= t_end:
            # Close the window, then collect the replies still in flight so
            # no connection is closed with unread data (the server would see
            # a reset and print it).
            out.write(f"done {count - count_at_mark} {now - t_mark:.6f}\n")
            out.flush()
            sending = False
    for s in socks:
        s.close()
    return 0


# ----------------------------------------------------------------------
# The benchmark

class Server:
    def __init__(self, name: str, argv: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.port = port
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        try:
            wait_listening(port, self.proc)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err.decode("utf-8", "replace")


def measure(server: Server, args: argparse.Namespace) -> tuple[float, float, int, float]:
    """One run: (server user CPU seconds, system CPU seconds, requests,
    window seconds)."""
    client = subprocess.Popen(
        [sys.executable, __file__, "_client", "--port", str(server.port),
         "--connections", str(args.connections), "--size", str(args.size),
         "--warmup", str(args.warmup), "--seconds", str(args.seconds)],
        stdout=subprocess.PIPE, text=True,
    )
    assert client.stdout is not None
    try:
        line = client.stdout.readline()
        cpu0 = cpu_seconds(server.proc.pid)
        if line.strip() != "mark":
            raise RuntimeError(f"client failed before the window opened: {line!r}")
        line = client.stdout.readline()
        cpu1 = cpu_seconds(server.proc.pid)
        parts = line.split()
        if len(parts) != 3 or parts[0] != "done":
            raise RuntimeError(f"client failed during the window: {line!r}")
        rc = client.wait(timeout=60)
        if rc != 0:
            raise RuntimeError(f"client exited with status {rc}")
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    return cpu1[0] - cpu0[0], cpu1[1] - cpu0[1], int(parts[1]), float(parts[2])


def versions() -> str:
    import greenlet

    out = [f"greenlet {greenlet.__version__}"]
    try:
        import gevent

        out.append(f"gevent {gevent.__version__}")
    except ImportError:
        pass
    return ", ".join(out)


def bench(args: argparse.Namespace) -> int:
    try:
        import gevent  # noqa: F401 - only to know whether the peer can run
        have_gevent = True
    except ImportError:
        have_gevent = False

    print(f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}")
    print(f"machine: {machine()}")
    print(f"versions: {versions()}")
    print(f"load: {args.connections} connections, {args.size}-byte messages, closed loop, "
          f"{args.warmup:g} s warm-up + {args.seconds:g} s measured per run, {args.rounds} rounds")
    # Other processes compete for the same cores and make every figure
    # noisier: say how busy the machine was.
    print(f"load average (1, 5, 15 min) at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not have_gevent:
        print("note: gevent is not installed (pip install gevent): measuring greenline alone, no ratio")
    print()

    servers: list[Server] = []
    try:
        port = free_port()
        servers.append(Server("greenline", [sys.executable, str(GREENLINE_SERVER), "--port", str(port),
                                                   "--backlog", "5"], port))
        if args.baseline:
            # The same seed server on another checkout of greenline (an
            # earlier commit): before/after a change, in the same rounds.
            base = Path(args.baseline).resolve()
            port = free_port()
            env = dict(os.environ, PYTHONPATH=str(base / "src"))
            servers.append(Server("baseline", [sys.executable, str(base / "examples" / "seed" / "server.py"),
                                               "--port", str(port), "--backlog", "5"], port, env))
        if have_gevent:
            port = free_port()
            # The seed's text under gevent, as greenline bench runs it, with
            # the seed's own listen(5).
            servers.append(Server("gevent", [sys.executable, "-m", "greenline.tools.peers.seed_gevent",
                                             "--port", str(port), "--backlog", "5"], port))

        results: dict[str, list[float]] = {s.name: [] for s in servers}
        rates: dict[str, list[float]] = {s.name: [] for s in servers}
        users: dict[str, list[float]] = {s.name: [] for s in servers}
        systems: dict[str, list[float]] = {s.name: [] for s in servers}
        # user = the server's own code and the interpreter; system = the
        # kernel, mostly the socket calls and the TCP work they do.
        print(f"{'round':>5}  {'server':<10} {'requests':>9} {'req/s':>8} {'server CPU':>11} "
              f"{'CPU/request':>12} {'(user':>7} {'+ system)':>10}")
        for r in range(1, args.rounds + 1):
            for server in servers:
                user, system, requests, window = measure(server, args)
                cpu = user + system
                per = cpu / requests * 1e6
                results[server.name].append(per)
                rates[server.name].append(requests / window)
                users[server.name].append(user / requests * 1e6)
                systems[server.name].append(system / requests * 1e6)
                print(f"{r:>5}  {server.name:<10} {requests:>9} {requests / window:>8.0f} "
                      f"{cpu:>9.2f} s {per:>9.2f} µs {user / requests * 1e6:>7.2f} "
                      f"{system / requests * 1e6:>7.2f} µs", flush=True)
        print()
        for name, values in results.items():
            print(f"median {name:<10} {statistics.median(values):8.2f} µs CPU/request "
                  f"(user {statistics.median(users[name]):.2f} + system {statistics.median(systems[name]):.2f}; "
                  f"runs {min(values):.2f} to {max(values):.2f}; {statistics.median(rates[name]):.0f} req/s)")
        print(f"load average (1, 5, 15 min) at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if args.baseline:
            ratio = statistics.median(results["greenline"]) / statistics.median(results["baseline"])
            print(f"ratio greenline/baseline: {ratio:.3f}  (this checkout against {args.baseline})")
        if have_gevent:
            ratio = statistics.median(results["greenline"]) / statistics.median(results["gevent"])
            print(f"ratio greenline/gevent: {ratio:.3f}  "
                  f"({'at or below' if ratio <= 1.0 else 'above'} gevent's CPU per request)")
    finally:
        for server in servers:
            err = server.stop()
            # A server that printed anything on stderr (a traceback, a reset)
            # did something the load should not have caused: show it.
            lines = [ln for ln in err.splitlines() if ln.strip()]
            if lines:
                print(f"\n{server.name} server stderr:\n  " + "\n  ".join(lines[-20:]))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd")
    client = sub.add_parser("_client", help="the load client (used by the benchmark itself)")
    for p in (parser, client):
        p.add_argument("--connections", type=int, default=100, help="connections (default 100)")
        p.add_argument("--size", type=int, default=32, help="message size in bytes (default 32)")
        p.add_argument("--warmup", type=float, default=1.0, help="seconds before the window opens (default 1)")
        p.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run (default 3)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per server (default 5)")
    parser.add_argument("--baseline", metavar="DIR", default=None,
                        help="also run the seed server of another greenline checkout (e.g. a git worktree "
                             "of an earlier commit) in the same interleaved rounds")
    client.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.size < 1 or args.size > 1024 or args.connections < 1:
        parser.error("--size must be 1..1024 (the seed's server reads 1024 at most), --connections >= 1")
    if args.cmd == "_client":
        return run_client(args.port, args.connections, args.size, args.warmup, args.seconds)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return bench(args)


if __name__ == "__main__":
    raise SystemExit(main())
