"""``greenline serve upper`` against uvloop and gevent from the C client, at
100, 5,000 and 10,000 connections (issue 16's comparison).

Each server runs in its own process, one at a time, and the C client
(``src/greenline/tools/upper_client.c``, built by ``greenline.tools.cclient``
with the system's C compiler; one OS thread, epoll, every reply checked)
drives it in "burst" mode: it opens every connection first, then sends the
first line on all of them at once and keeps one 32-byte line in flight per
connection (closed loop) for a warm-up and a measured window.  For each
connection count, rounds of (greenline, uvloop Protocol, uvloop streams,
gevent seed), so that drift in the machine's load hits them all alike; the
medians are printed with ratios against uvloop Protocol, as a Markdown
table, and then issue 16's targets, met or not.

    python bench/c_client_peers.py                          # 100, 5000, 10000; 3 rounds of 1 + 5 s
    python bench/c_client_peers.py --connections 10000 --rounds 1 --seconds 2
    python bench/c_client_peers.py --servers greenline,uvloop-protocol --json runs.json

Per run, all of the server's process tree (greenline's supervisor and
worker), from /proc:

* CPU/request: user + system CPU time over the client's measured window
  (read at its "mark start" and "mark end" lines) / the requests answered
  in that window;
* req/s: those requests / the window's length;
* RSS/connection: the tree's RSS with every connection open (at the end of
  the window) less its RSS right after it started listening, before any
  connection, / connections;
* p50, p99: latency (line sent to the whole reply in) of every request in
  the window;
* all connected after: how long opening every connection took (the
  client starts every connect at once; a server that accepts more slowly
  than they come lets its accept queue, 2048 long, overflow, and the
  kernel retries the dropped handshakes 1 s later, then 3 s...);
* first replies by: the time from the moment the first line went out on
  every connection (all of them connected) until the last of them had its
  reply; "no first reply": how many had none when the window closed.

Only the standard library (and this checkout's ``cclient.py``, loaded by
path); the servers are run with this interpreter, which needs greenline,
uvloop and gevent (a server whose library is missing is skipped with a
note).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# bench/ is on sys.path: the script's directory
from threads_scaling import load_cclient, tree_rss, tree_times

cclient = load_cclient()  # src/greenline/tools/cclient.py: builds the client, reads its result line


# key -> (label, module or command after "python -m", the library it needs)
SERVERS: dict[str, tuple[str, list[str], str | None]] = {
    "greenline": ("greenline", ["greenline", "serve", "upper", "--procs", "1", "--threads", "1",
                                "--graceful-timeout", "1", "--log-level", "warning"], None),
    "uvloop-protocol": ("uvloop Protocol", ["greenline.tools.peers.uvloop_protocol"], "uvloop"),
    "uvloop-streams": ("uvloop streams", ["greenline.tools.peers.uvloop_streams"], "uvloop"),
    "gevent-seed": ("gevent seed", ["greenline.tools.peers.seed_gevent"], "gevent"),
}
REFERENCE = "uvloop-protocol"
START_TIMEOUT = 30.0


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def check_kernel(connections: int) -> list[str]:
    """Raise RLIMIT_NOFILE for this process and the servers it starts; exit
    saying why if the limits cannot hold ``connections``.  Returns lines
    describing the limits for the header."""
    need = connections + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        new_hard = hard if hard == resource.RLIM_INFINITY or hard >= need else need
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(need, min(new_hard, 1 << 20)), new_hard))
        except (ValueError, OSError):
            raise SystemExit(f"{connections:,} connections need {need:,} file descriptors per process; "
                             f"RLIMIT_NOFILE is {soft} (hard {hard}) and cannot be raised: ulimit -n {need}") \
                from None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = map(int, f.read().split())
    except (OSError, ValueError):
        lo, hi = 32768, 60999
    ports = hi - lo + 1
    # The client's connections all go to one server address: one ephemeral
    # port each, so the range must hold them (with room to spare).
    if ports < connections + 100:
        raise SystemExit(f"{connections:,} connections to one server need as many ephemeral ports; the kernel "
                         f"allows {ports:,} ({lo}-{hi}): sysctl -w net.ipv4.ip_local_port_range='1024 65535'")
    somaxconn = _read_int("/proc/sys/net/core/somaxconn")
    lines = [f"kernel: ephemeral ports {lo}-{hi} ({ports:,}), somaxconn {somaxconn}, "
             f"tcp_max_syn_backlog {_read_int('/proc/sys/net/ipv4/tcp_max_syn_backlog')}, "
             f"syncookies {_read_int('/proc/sys/net/ipv4/tcp_syncookies')}, RLIMIT_NOFILE {soft}"]
    if somaxconn is not None and somaxconn < 2048:
        lines.append(f"note: net.core.somaxconn is {somaxconn}: every server's backlog of 2048 is capped to it")
    return lines


class Server:
    def __init__(self, key: str, workdir: Path) -> None:
        self.key = key
        self.label, argv, _ = SERVERS[key]
        self.out = workdir / f"{key}.out"
        self.err = workdir / f"{key}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", *argv, "--host", "127.0.0.1", "--port", "0"],
                                         stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        try:
            self.port = self._wait_listening()
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            for line in self.out.read_text(errors="replace").splitlines():
                if line.startswith("listening on "):
                    # greenline serve prints it once its worker accepts.
                    return int(line.rsplit(":", 1)[1])
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited ({self.proc.returncode}) before listening: "
                                   f"{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label} did not listen within {START_TIMEOUT:g} s")
            time.sleep(0.02)

    def tail(self) -> str:
        lines = [ln.strip() for ln in self.err.read_text(errors="replace").splitlines() if ln.strip()]
        return " | ".join(lines[-2:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def run_one(key: str, client: Path, connections: int, warmup: float, seconds: float,
            workdir: Path) -> dict[str, Any]:
    """One server under one load; the run's figures, or "problem"."""
    server = Server(key, workdir)
    run: dict[str, Any] = {"server": key, "connections": connections}
    try:
        rss0 = tree_rss(server.proc.pid)
        cmd = [str(client), "-b", "-H", "127.0.0.1", str(server.port), str(connections), f"{warmup:g}",
               f"{seconds:g}"]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        assert proc.stdin is not None and proc.stdout is not None
        t0 = t1 = None
        result: dict[str, float] = {}
        # The client bounds itself (60 s to connect, then the window); this
        # is for a client stuck anyway.
        watchdog = threading.Timer(warmup + seconds + 120, proc.kill)
        watchdog.start()
        for line in proc.stdout:
            if line.startswith("mark start"):
                t0 = tree_times(server.proc.pid)
            elif line.startswith("mark end"):
                t1 = tree_times(server.proc.pid)
            elif line.startswith("result "):
                result = cclient.parse_result(line)
                run["rss_per_conn"] = (tree_rss(server.proc.pid) - rss0) / connections
                break
        try:
            # Closes its standard input: with -H, the client closes its
            # connections now.
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        finally:
            watchdog.cancel()
        if server.proc.poll() is not None:
            run["problem"] = f"the server died: {server.tail()}"
        elif proc.returncode != 0 or not result or t0 is None or t1 is None:
            run["problem"] = f"the client failed ({proc.returncode}): {' '.join(err.split())[-300:]}"
    finally:
        server.stop()
    if "problem" in run:
        return run
    assert t0 is not None and t1 is not None
    n = result["requests"]
    run.update(
        requests=n, rps=result["rps"],
        cpu_us=(t1[0] + t1[1] - t0[0] - t0[1]) / n * 1e6,
        user_us=(t1[0] - t0[0]) / n * 1e6, sys_us=(t1[1] - t0[1]) / n * 1e6,
        p50_us=result["p50_us"], p99_us=result["p99_us"], max_us=result["max_us"],
        connect_s=result["connect_s"], first_got=int(result["first_got"]),
        first_missing=int(result["first_missing"]), first_p99_s=result["first_p99_s"],
        first_max_s=result["first_max_s"])
    return run


def _lat(us: float | None) -> str:
    if us is None:
        return "–"
    return f"{us:.0f} µs" if us < 1000 else f"{us / 1000:.2f} ms"


def _dur(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def _ratio(v: float | None, ref: float | None) -> str:
    return "–" if v is None or not ref else f"{v / ref:.2f}×"


def summarise(runs: list[dict[str, Any]], key: str, connections: int) -> dict[str, Any] | None:
    rs = [r for r in runs if r["server"] == key and r["connections"] == connections]
    good = [r for r in rs if "problem" not in r]
    if not rs:
        return None
    s: dict[str, Any] = {"runs": len(rs), "failed": len(rs) - len(good)}
    if not good:
        return s
    med = statistics.median
    for k in ("cpu_us", "user_us", "sys_us", "rps", "rss_per_conn", "p50_us", "p99_us", "connect_s"):
        s[k] = med(r[k] for r in good)
    s["tail"] = med(r["p99_us"] / r["p50_us"] for r in good if r["p50_us"])
    s["cpu_range"] = (min(r["cpu_us"] for r in good), max(r["cpu_us"] for r in good))
    s["missing"] = max(r["first_missing"] for r in good)
    complete = [r["first_max_s"] for r in good if r["first_missing"] == 0]
    s["first_by"] = med(complete) if len(complete) == len(good) else None
    return s


def table(runs: list[dict[str, Any]], keys: list[str], counts: list[int], rounds: int) -> list[str]:
    ref_label = SERVERS[REFERENCE][0]
    out = []
    for c in counts:
        out += [f"### {c:,} connections (median of {rounds} round{'s' if rounds != 1 else ''})", "",
                f"| server | CPU/request | (user + system) | (runs) | × {ref_label} | req/s | RSS/connection "
                "| p50 | p99 | p99/p50 | all connected after | first replies by | no first reply |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        ref = summarise(runs, REFERENCE, c) or {}
        for key in keys:
            s = summarise(runs, key, c)
            if s is None:
                continue
            label = SERVERS[key][0] + (f" ⚠ {s['failed']} failed" if s["failed"] else "")
            if "cpu_us" not in s:
                out.append(f"| {label} |" + " – |" * 12)
                continue
            out.append(
                f"| {label} | {s['cpu_us']:.2f} µs | {s['user_us']:.2f} + {s['sys_us']:.2f} "
                f"| {s['cpu_range'][0]:.2f}–{s['cpu_range'][1]:.2f} | {_ratio(s['cpu_us'], ref.get('cpu_us'))} "
                f"| {s['rps']:,.0f} | {s['rss_per_conn'] / 1024:.1f} KiB | {_lat(s['p50_us'])} "
                f"| {_lat(s['p99_us'])} | {s['tail']:.2f} | {_dur(s['connect_s'])} | {_dur(s['first_by'])} "
                f"| {s['missing']:,} |")
        out.append("")
    return out


def targets(runs: list[dict[str, Any]], counts: list[int]) -> list[str]:
    """Issue 16's targets for greenline, where this run has the figures."""
    out = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    for c, limit in ((100, 1.15), (5000, 1.3)):
        g, u = summarise(runs, "greenline", c), summarise(runs, REFERENCE, c)
        if c in counts and g and u and "cpu_us" in g and "cpu_us" in u:
            r = g["cpu_us"] / u["cpu_us"]
            out.append(f"- {c:,} connections: CPU/request {r:.2f}× uvloop Protocol "
                       f"(target ≤ {limit}×): {verdict(r <= limit)}")
    g = summarise(runs, "greenline", 10000)
    if 10000 in counts and g and "cpu_us" in g:
        kib = g["rss_per_conn"] / 1024
        out.append(f"- 10,000 connections: RSS/connection {kib:.1f} KiB (target ≤ 6.5 KiB): {verdict(kib <= 6.5)}")
        out.append(f"- 10,000 connections: p99/p50 {g['tail']:.2f} (target ≤ 1.25): {verdict(g['tail'] <= 1.25)}")
        if g["first_by"] is None:
            out.append(f"- 10,000 connections: {g['missing']:,} connections had no first reply in the run "
                       "(target: every first reply within 1 s): NOT met")
        else:
            out.append(f"- 10,000 connections: every first reply by {g['first_by']:.2f} s "
                       f"(target ≤ 1 s): {verdict(g['first_by'] <= 1.0)}")
    return out


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = [f"Python {platform.python_version()}"]
    for name in ("greenlet", "gevent", "uvloop"):
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out)


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "log", "-1", "--format=%h"],
                              capture_output=True, text=True, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", default="100,5000,10000", help="comma-separated (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per count (default %(default)s)")
    ap.add_argument("--seconds", type=float, default=5.0, help="measured window per run (default %(default)s)")
    ap.add_argument("--warmup", type=float, default=1.0, help="warm-up before it (default %(default)s)")
    ap.add_argument("--servers", default=",".join(SERVERS),
                    help="comma-separated subset of: " + ", ".join(SERVERS) + " (default: all, in that order)")
    ap.add_argument("--json", type=Path, help="also write every run's figures here")
    args = ap.parse_args()
    try:
        counts = [int(c.replace("_", "")) for c in args.connections.split(",") if c.strip()]
    except ValueError:
        ap.error(f"--connections: not a list of numbers: {args.connections!r}")
    keys = [k.strip().lower().replace(" ", "-") for k in args.servers.split(",") if k.strip()]
    bad = [k for k in keys if k not in SERVERS]
    if bad or not keys:
        ap.error(f"--servers: no server {', '.join(bad)!r}; choose from {', '.join(SERVERS)}")
    if not counts or min(counts) < 1 or args.rounds < 1 or args.seconds <= 0 or args.warmup < 0:
        ap.error("--connections, --rounds and --seconds must be positive")
    notes = []
    for k in list(keys):
        lib = SERVERS[k][2]
        if lib and importlib.util.find_spec(lib) is None:
            notes.append(f"{SERVERS[k][0]}: skipped, {lib} is not installed")
            keys.remove(k)
    kernel = check_kernel(max(counts))
    client, note = cclient.build_client()
    if client is None:
        print(f"{note}: nothing to run", file=sys.stderr)
        return 2

    print(f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, commit {_commit()}")
    print(f"machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; {versions()}")
    print(f"load: C client ({client.name}), burst start, {args.warmup:g} s warm-up + {args.seconds:g} s "
          f"measured per run, 32-byte lines, closed loop; {args.rounds} round{'s' if args.rounds != 1 else ''} of "
          f"({', '.join(SERVERS[k][0] for k in keys)}) per connection count")
    for line in kernel + notes:
        print(line)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print(f"{'conns':>6} {'rd':>2}  {'server':<16} {'req/s':>7} {'CPU/req':>9} {'RSS/conn':>9} {'p50':>9} "
          f"{'p99':>9} {'connect':>7} {'firsts by':>9} {'none':>5}  load")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="c-client-peers-") as tmp:
        for c in counts:
            for r in range(args.rounds):
                for key in keys:
                    try:
                        run = run_one(key, client, c, args.warmup, args.seconds, Path(tmp))
                    except RuntimeError as e:
                        run = {"server": key, "connections": c, "problem": str(e)}
                    run["round"] = r + 1
                    runs.append(run)
                    head = f"{c:>6} {r + 1:>2}  {SERVERS[key][0]:<16}"
                    if "problem" in run:
                        print(f"{head} PROBLEM: {run['problem']}", flush=True)
                        continue
                    print(f"{head} {run['rps']:>7.0f} {run['cpu_us']:>6.2f} µs {run['rss_per_conn'] / 1024:>5.1f} KiB "
                          f"{_lat(run['p50_us']):>9} {_lat(run['p99_us']):>9} {run['connect_s']:>5.2f} s "
                          f"{run['first_max_s']:>7.3f} s {run['first_missing']:>5}  {os.getloadavg()[0]:.2f}",
                          flush=True)
    print()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    for line in table(runs, keys, counts, args.rounds):
        print(line)
    goals = targets(runs, counts)
    if goals:
        print("Issue 16's targets for greenline:")
        print()
        for line in goals:
            print(line)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))
    return 1 if any("problem" in r for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
