"""``greenline bench``: greenline's server against every peer, side by side.

Each server (``greenline serve upper`` and the peers of
``greenline.tools.peers``) runs in its own process, one at a time, and one
client process drives it: the C client (``upper_client.c``, built on first
use by :mod:`greenline.tools.cclient`; one OS thread, epoll, every reply
checked), so that the CPU figures are the server's own and not shaped by a
Python client on the same cores; ``greenline load`` where no C compiler is
found (with a note) or with ``--client python``.  Runs are interleaved
(for each connection count: A B C ... A B C ...) so that the machine's
drift hits every server alike; medians are reported, with ratios against
the seed's server under gevent.

Per run:

* **CPU per request**: user + system time of the server's whole process
  tree (psutil) over a window that leaves out connecting and winding down
  (the C client's "mark start" and "mark end" lines after its warm-up;
  ``greenline load``'s progress lines), divided by the replies counted in
  that window.  This is the figure that holds on a noisy shared machine;
  requests/s does not.
* requests/s over the same window; p50 and p99 latency (the C client: of
  every request in the window; ``greenline load``: its HDR histogram, each
  connection's first exchange left out).
* For the many-connections case: memory per connection (the C client: the
  server tree's RSS with the connections open, less its RSS once listening;
  ``greenline load``: the peak, ``VmHWM``), divided by the connections;
  p99/p50; and the time until every connection had its first reply (the C
  client opens every connection first, then sends the first line on all of
  them at once and times from that moment).

A peer whose library is not installed is skipped with a note.

``greenline bench --http`` does the same for HTTP: greenline's WSGIServer
against gunicorn -k gevent, gevent.pywsgi, granian and waitress, on a
hello-world application and a Flask JSON route, driven by wrk (greenline
load where wrk is missing), rounds interleaved; server CPU per request,
req/s, p50/p99; ``http.md``, ``http.json`` and a PNG.  The servers and the
applications are bench/wsgi_cpu.py's (a checkout's), not copied here.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from greenline.tools import cclient
from greenline.tools.peers import PEERS

if TYPE_CHECKING:
    import psutil

__all__ = ["ServerSpec", "BenchConfig", "SERVERS", "REFERENCE", "run_bench", "add_parser", "main"]

REFERENCE = "gevent seed"  # ratios are taken against this server


@dataclass(frozen=True)
class ServerSpec:
    """A server to benchmark: how to start it and what it needs."""

    name: str
    argv: tuple[str, ...]  # started with "--port 0" appended
    requires: tuple[str, ...] = ()
    about: str = ""
    # The serial server answers one connection at a time: more would only
    # time out, so it is measured at this many connections at most.
    max_connections: int | None = None


def _greenline(name: str, procs: str, about: str) -> ServerSpec:
    return ServerSpec(name, (sys.executable, "-m", "greenline", "serve", "upper", "--host", "127.0.0.1",
                             "--procs", procs, "--threads", "1", "--graceful-timeout", "1",
                             "--log-level", "warning"), (), about)


def _peer(name: str, module: str, max_connections: int | None = None) -> ServerSpec:
    about, requires = PEERS[module]
    return ServerSpec(name, (sys.executable, "-m", f"greenline.tools.peers.{module}", "--host", "127.0.0.1"),
                      requires, about, max_connections)


SERVERS: tuple[ServerSpec, ...] = (
    _greenline("greenline", "1", "greenline serve upper, 1 process, 1 thread"),
    _greenline("greenline all cores", "auto", "greenline serve upper --procs auto (one worker per core)"),
    _peer(REFERENCE, "seed_gevent"),
    _peer("gevent StreamServer", "gevent_server"),
    _peer("asyncio streams", "asyncio_streams"),
    _peer("asyncio Protocol", "asyncio_protocol"),
    _peer("uvloop streams", "uvloop_streams"),
    _peer("uvloop Protocol", "uvloop_protocol"),
    _peer("trio", "trio_server"),
    _peer("threads", "threads"),
    _peer("serial", "serial", max_connections=1),
)


@dataclass
class BenchConfig:
    connections: tuple[int, ...] = (1, 100, 5000)
    duration: float = 5.0  # seconds of load per run
    rounds: int = 3
    big: int = 10_000  # the many-connections case; 0 to leave it out
    big_duration: float = 6.0
    big_rounds: int = 1
    out: Path = Path("bench-out")
    charts: bool = True
    client: str = "c"  # "c" (the C client) or "python" (greenline load)


CLIENT_NAMES = {"c": "the C client", "python": "greenline load"}


@dataclass
class Run:
    """One server under one load: the figures of one run."""

    server: str
    connections: int
    cpu_us: float | None = None  # server CPU per request, µs
    rate: float | None = None  # replies/s in the measured window
    p50_us: float | None = None
    p99_us: float | None = None
    rss_per_conn: float | None = None  # bytes of peak RSS growth per connection
    first_reply_s: float | None = None  # until every connection had a reply
    first_replied: int = 0
    ok: bool = False
    problems: list[str] = field(default_factory=list)
    client: str = "python"  # what drove it: "c" or "python" (results.json of old runs: python)
    first_p99_s: float | None = None  # C client: p99 of the first replies' times
    connect_s: float | None = None  # C client, many connections: opening them all


class BenchError(Exception):
    pass


# ----------------------------------------------------------------------
# Measuring one run

_LISTENING = re.compile(r"^listening on (\S+):(\d+)\s*$")
_PROGRESS = re.compile(r"^\[\s*([\d.]+)/[\d.]+ s\].*?replies ([\d,]+)")
START_TIMEOUT = 20.0


def _raise_nofile() -> None:
    # Children (servers and client) inherit it: each of them holds one
    # descriptor per connection.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _tree(pid: int) -> list[psutil.Process]:
    import psutil

    p = psutil.Process(pid)
    return [p, *p.children(recursive=True)]


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User + system CPU time so far of ``procs`` (gone ones count 0)."""
    import psutil

    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def _status_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _rss(procs: list[psutil.Process], key: str = "VmRSS:") -> int:
    """Sum of ``key`` (VmRSS or VmHWM) over the processes, in bytes."""
    return sum(_status_kib(p.pid, key) for p in procs) * 1024


class ServerProcess:
    def __init__(self, spec: ServerSpec, logdir: Path) -> None:
        self.spec = spec
        self.out_path = logdir / "server.out"
        self.err_path = logdir / "server.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([*spec.argv, "--port", "0"], stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL)
        try:
            self.host, self.port = self._wait_listening()
            # A greenline server prints its line once every worker accepts,
            # so its process tree is complete by now.
            self.procs = _tree(self.proc.pid)
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self) -> tuple[str, int]:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            text = self.out_path.read_text(errors="replace")
            for line in text.splitlines():
                m = _LISTENING.match(line)
                if m:
                    return m.group(1), int(m.group(2))
            if self.proc.poll() is not None:
                raise BenchError(f"exited with status {self.proc.returncode} before listening: "
                                 f"{self.stderr_tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"printed no `listening on` line within {START_TIMEOUT:g} s")
            time.sleep(0.02)

    def stderr_tail(self, lines: int = 3) -> str:
        try:
            text = self.err_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(ln.strip() for ln in text.splitlines()[-lines:] if ln.strip())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _window(samples: list[tuple[float, float, int]], connections: int) -> tuple[float, float, int] | None:
    """(seconds, server CPU seconds, replies) between two progress lines,
    leaving out the start (connecting, first exchanges) where there are
    lines enough."""
    if len(samples) < 2:
        return None
    skip = 1 if connections < 1000 else 2
    start = min(skip, len(samples) - 2)
    (t0, c0, r0), (t1, c1, r1) = samples[start], samples[-1]
    if r1 <= r0:
        return None
    return t1 - t0, c1 - c0, r1 - r0


def measure(spec: ServerSpec, connections: int, duration: float, workdir: Path) -> Run:
    """Start the server, drive it with ``greenline load``, stop it."""
    run = Run(spec.name, connections)
    logdir = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    server = ServerProcess(spec, logdir)
    try:
        rss0 = _rss(server.procs)
        json_path = logdir / "load.json"
        cmd = [sys.executable, "-m", "greenline", "load", f"{server.host}:{server.port}",
               "-c", str(connections), "-d", f"{duration:g}", "--procs", "1", "--json", str(json_path)]
        samples: list[tuple[float, float, int]] = []
        # The progress lines come on the client's standard error, the report
        # on its standard output.
        with open(logdir / "load.out", "wb") as report:
            client = subprocess.Popen(cmd, stdout=report, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                      text=True)
            assert client.stderr is not None
            err_lines: list[str] = []
            try:
                for line in client.stderr:
                    if not line.startswith("["):
                        err_lines.append(line)
                    m = _PROGRESS.match(line)
                    if m:
                        samples.append((time.monotonic(), cpu_seconds(server.procs),
                                        int(m.group(2).replace(",", ""))))
                client.wait(timeout=60)
            finally:
                if client.poll() is None:
                    client.kill()
                    client.wait()
        hwm = _rss(server.procs, "VmHWM:")
        if server.proc.poll() is not None:
            run.problems.append(f"the server died during the run: {server.stderr_tail()}")
    finally:
        server.stop()
    try:
        result = json.loads(json_path.read_text())
    except (OSError, ValueError):
        tail = [ln.strip() for ln in err_lines if ln.strip()][-1:]
        run.problems.append(f"greenline load wrote no result ({client.returncode}): {' '.join(tail)}")
        return run
    run.ok = bool(result.get("ok")) and not run.problems
    run.problems += list(result.get("problems", []))
    window = _window(samples, connections)
    if window is not None:
        seconds, cpu, replies = window
        run.cpu_us = cpu / replies * 1e6
        run.rate = replies / seconds
    lat = result.get("latency_us") or {}
    run.p50_us, run.p99_us = lat.get("p50"), lat.get("p99")
    run.rss_per_conn = max(0, hwm - rss0) / connections
    run.first_reply_s = result.get("first_reply")
    run.first_replied = int(result.get("first_replied") or 0)
    return run


def c_window(duration: float) -> tuple[float, float]:
    """(warm-up, measured) seconds of a C client run ``duration`` long."""
    warmup = min(1.0, duration / 3)
    return warmup, duration - warmup


def measure_c(spec: ServerSpec, connections: int, duration: float, workdir: Path, exe: Path,
              burst: bool = False) -> Run:
    """Start the server, drive it with the C client, stop it.  ``burst``:
    open every connection first, then time every first reply."""
    run = Run(spec.name, connections, client="c")
    logdir = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    warmup, seconds = c_window(duration)
    server = ServerProcess(spec, logdir)
    result: dict[str, float] = {}
    cpu0 = cpu1 = None
    rss1 = 0
    try:
        rss0 = _rss(server.procs)
        # -H: the client keeps its connections open after its result line
        # until its standard input closes, so the memory is read with them.
        cmd = [str(exe), *(["-b"] if burst else []), "-H", server.host, str(server.port), str(connections),
               f"{warmup:g}", f"{seconds:g}"]
        err_path = logdir / "client.err"
        with open(err_path, "wb") as err:
            client = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
        assert client.stdin is not None and client.stdout is not None
        # Connecting (60 s at most in the client), the run, and room to spare.
        watchdog = threading.Timer(duration + 90, client.kill)
        watchdog.start()
        try:
            for line in client.stdout:
                if line.startswith("mark start"):
                    cpu0 = cpu_seconds(server.procs)
                elif line.startswith("mark end"):
                    cpu1 = cpu_seconds(server.procs)
                elif line.startswith("result "):
                    result = cclient.parse_result(line)
                    rss1 = _rss(server.procs)
                    break
            client.stdin.close()
            client.wait(timeout=30)
        finally:
            watchdog.cancel()
            if client.poll() is None:
                client.kill()
                client.wait()
        if server.proc.poll() is not None:
            run.problems.append(f"the server died during the run: {server.stderr_tail()}")
    finally:
        server.stop()
    if client.returncode != 0 or not result:
        tail = " ".join(ln.strip() for ln in err_path.read_text(errors="replace").splitlines()[-2:])
        run.problems.append(f"the C client failed (exit {client.returncode}): {tail or 'no output'}")
    requests = result.get("requests", 0)
    if requests and cpu0 is not None and cpu1 is not None:
        run.cpu_us = (cpu1 - cpu0) / requests * 1e6
        run.rate = result.get("rps")
        run.p50_us, run.p99_us = result.get("p50_us"), result.get("p99_us")
    if result:
        run.rss_per_conn = max(0, rss1 - rss0) / connections
    if burst and result:
        got = int(result.get("first_got", 0))
        run.first_replied = got
        run.first_reply_s = result.get("first_max_s") if got == connections else None
        run.first_p99_s = result.get("first_p99_s")
        run.connect_s = result.get("connect_s")
    run.ok = not run.problems and run.cpu_us is not None
    return run


def resolve_client(cfg: BenchConfig) -> tuple[Path | None, list[str]]:
    """The C client's executable when ``cfg.client`` is "c" and it builds;
    otherwise None, ``cfg.client`` set to "python" and a note saying why."""
    if cfg.client != "c":
        return None, []
    exe, note = cclient.build_client()
    if exe is not None:
        return exe, []
    cfg.client = "python"
    return None, [f"{note}: greenline load drove the servers instead, a Python client on the same cores, "
                  "which shapes every server's figures"]


# ----------------------------------------------------------------------
# The whole benchmark


def _median(values: list[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return statistics.median(vs) if vs else None


def _missing(spec: ServerSpec) -> list[str]:
    return [m for m in spec.requires if importlib.util.find_spec(m) is None]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_bench(specs: list[ServerSpec], cfg: BenchConfig) -> tuple[list[Run], list[str]]:
    """Every server at every connection count, interleaved; returns the runs
    and notes (skipped servers, failed runs)."""
    _raise_nofile()
    exe, notes = resolve_client(cfg)
    live: list[ServerSpec] = []
    for spec in specs:
        missing = _missing(spec)
        if missing:
            notes.append(f"{spec.name}: skipped, {', '.join(missing)} not installed "
                         "(pip install -e '.[bench]')")
        else:
            live.append(spec)
    plan: list[tuple[int, float, int]] = [(c, cfg.duration, cfg.rounds) for c in cfg.connections]
    if cfg.big:
        plan.append((cfg.big, cfg.big_duration, cfg.big_rounds))
    runs: list[Run] = []
    broken: set[str] = set()
    cfg.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="greenline-bench-") as tmp:
        for connections, duration, rounds in plan:
            for r in range(rounds):
                for spec in live:
                    if spec.name in broken:
                        continue
                    if spec.max_connections is not None and connections > spec.max_connections:
                        if r == 0:
                            notes.append(f"{spec.name}: not run at {connections:,} connections "
                                         f"(it answers one client at a time; the others would only wait)")
                        continue
                    try:
                        if exe is not None:
                            run = measure_c(spec, connections, duration, Path(tmp), exe,
                                            burst=bool(cfg.big) and connections == cfg.big)
                        else:
                            run = measure(spec, connections, duration, Path(tmp))
                    except BenchError as e:
                        notes.append(f"{spec.name}: skipped, could not start: {e}")
                        broken.add(spec.name)
                        continue
                    runs.append(run)
                    cpu = "-" if run.cpu_us is None else f"{run.cpu_us:.2f} µs/req"
                    rate = "-" if run.rate is None else f"{run.rate:,.0f} req/s"
                    lat = "" if run.p99_us is None else f"  p50 {_lat(run.p50_us)} p99 {_lat(run.p99_us)}"
                    _log(f"[{connections:>6,} conns, round {r + 1}/{rounds}] {spec.name:<20} {cpu:>14} "
                         f"{rate:>14}{lat}{'' if run.ok else '  PROBLEM: ' + '; '.join(run.problems)[:200]}")
                    if not run.ok:
                        notes.append(f"{spec.name} at {connections:,} connections, round {r + 1}: "
                                     + ("; ".join(run.problems) or "not OK")[:300])
    return runs, notes


# ----------------------------------------------------------------------
# Report


def _fmt(v: float | None, spec: str, unit: str = "") -> str:
    return "–" if v is None else f"{v:{spec}}{unit}"


def _ratio(v: float | None, ref: float | None) -> str:
    return "–" if v is None or not ref else f"{v / ref:.2f}×"


def _lat(us: float | None) -> str:
    if us is None:
        return "–"
    return f"{us:.0f} µs" if us < 1000 else f"{us / 1000:.2f} ms"


def summarise(runs: list[Run]) -> dict[int, dict[str, dict[str, Any]]]:
    """connections -> server -> medians over its rounds."""
    out: dict[int, dict[str, dict[str, Any]]] = {}
    for run in runs:
        out.setdefault(run.connections, {}).setdefault(run.server, {"runs": []})["runs"].append(run)
    for by_server in out.values():
        for s in by_server.values():
            rs: list[Run] = s["runs"]
            cpus = [r.cpu_us for r in rs if r.cpu_us is not None]
            s["cpu_us"] = _median(list(cpus))
            s["cpu_range"] = (min(cpus), max(cpus)) if cpus else None
            s["rate"] = _median([r.rate for r in rs])
            s["p50_us"] = _median([r.p50_us for r in rs])
            s["p99_us"] = _median([r.p99_us for r in rs])
            s["rss_per_conn"] = _median([r.rss_per_conn for r in rs])
            s["first_reply_s"] = _median([r.first_reply_s for r in rs])
            s["first_replied"] = min(r.first_replied for r in rs)
            s["ok"] = all(r.ok for r in rs)
            s["rounds"] = len(rs)
    return out


def machine() -> str:
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import psutil

    mem = psutil.virtual_memory().total / 2**30
    return (f"{cpu}, {os.cpu_count()} CPUs, {mem:.0f} GiB, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def versions() -> str:
    out = []
    for name in ("greenlet", "gevent", "uvloop", "trio"):
        try:
            from importlib.metadata import version

            out.append(f"{name} {version(name)}")
        except Exception:  # noqa: BLE001 - not installed: leave it out
            pass
    return ", ".join(out)


def markdown(runs: list[Run], notes: list[str], cfg: BenchConfig, order: list[str], header: str) -> str:
    summary = summarise(runs)
    lines = [header, ""]
    for connections in sorted(summary):
        big = connections == cfg.big
        by = summary[connections]
        ref = by.get(REFERENCE, {})
        rounds = max(s["rounds"] for s in by.values())
        lines.append(f"### {connections:,} connection{'s' if connections != 1 else ''}"
                     f" (median of {rounds} run{'s' if rounds != 1 else ''})")
        lines.append("")
        if big:
            lines.append("| server | CPU/request | × gevent seed | req/s | p50 | p99 | p99/p50 "
                         "| RSS/connection | × gevent seed | all first replies after | got a first reply |")
            lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        else:
            lines.append("| server | CPU/request | (runs) | × gevent seed | req/s | p50 | p99 |")
            lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for name in order:
            s = by.get(name)
            if s is None:
                continue
            flag = "" if s["ok"] else " ⚠"
            cpu = _fmt(s["cpu_us"], ".2f", " µs")
            rng = "–" if s["cpu_range"] is None else f"{s['cpu_range'][0]:.2f}–{s['cpu_range'][1]:.2f}"
            if big:
                tail = None if not (s["p50_us"] and s["p99_us"]) else s["p99_us"] / s["p50_us"]
                rss = None if s["rss_per_conn"] is None else s["rss_per_conn"] / 1024
                ref_rss = None if ref.get("rss_per_conn") is None else ref["rss_per_conn"] / 1024
                lines.append(
                    f"| {name}{flag} | {cpu} | {_ratio(s['cpu_us'], ref.get('cpu_us'))} "
                    f"| {_fmt(s['rate'], ',.0f')} | {_lat(s['p50_us'])} | {_lat(s['p99_us'])} "
                    f"| {_fmt(tail, '.2f')} | {_fmt(rss, '.1f', ' KiB')} | {_ratio(rss, ref_rss)} "
                    f"| {_fmt(s['first_reply_s'], '.2f', ' s')} | {s['first_replied']:,}/{connections:,} |")
            else:
                lines.append(
                    f"| {name}{flag} | {cpu} | {rng} | {_ratio(s['cpu_us'], ref.get('cpu_us'))} "
                    f"| {_fmt(s['rate'], ',.0f')} | {_lat(s['p50_us'])} | {_lat(s['p99_us'])} |")
        lines.append("")
    if notes:
        lines.append("Notes:")
        lines.append("")
        lines += [f"- {n}" for n in dict.fromkeys(notes)]
        lines.append("")
    if any(not r.ok for r in runs):
        lines.append("⚠: at least one run of this server was not clean (errors, timeouts or a crash; "
                     "see the notes).")
        lines.append("")
    return "\n".join(lines)


def charts(runs: list[Run], cfg: BenchConfig, order: list[str]) -> list[Path]:
    """Draw the PNG charts into ``cfg.out``; raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(runs)
    paths: list[Path] = []
    counts = sorted(summary)
    names = [n for n in order if any(n in summary[c] for c in counts)]
    if counts and names:
        fig, ax = plt.subplots(figsize=(11, 5))
        width = 0.8 / len(counts)
        values = [summary[c].get(n, {}).get("cpu_us") or 0.0 for c in counts for n in names]
        # One pathological server (threads at 10,000 connections: a GIL
        # convoy costing milliseconds per request) would flatten every other
        # bar: clip the axis and write the clipped values on their bars.
        top = 4 * statistics.median([v for v in values if v > 0] or [1.0])
        top = max(top, 1.05 * max((v for v in values if v <= top), default=1.0))
        for k, c in enumerate(counts):
            ys = [summary[c].get(n, {}).get("cpu_us") or 0.0 for n in names]
            xs = [i + k * width for i in range(len(names))]
            ax.bar(xs, [min(y, top) for y in ys], width, label=f"{c:,} conns")
            for x, y in zip(xs, ys, strict=True):
                if y > top:
                    ax.text(x, top * 0.98, f"{y:,.0f}", rotation=90, ha="center", va="top", fontsize=7)
        ax.set_ylim(0, top)
        ax.set_xticks([i + width * (len(counts) - 1) / 2 for i in range(len(names))])
        ax.set_xticklabels(names, rotation=30, ha="right")
        ax.set_ylabel("server CPU per request (µs)")
        ax.set_title("Server CPU time per request (lower is better)")
        ax.legend()
        fig.tight_layout()
        path = cfg.out / "cpu_per_request.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    if cfg.big and cfg.big in summary:
        by = summary[cfg.big]
        names = [n for n in order if n in by]
        fig, axes = plt.subplots(1, 3, figsize=(14, 4.5))
        metrics = [
            ("peak RSS growth per connection (KiB)", [(by[n]["rss_per_conn"] or 0) / 1024 for n in names]),
            ("p99 / p50 latency", [(by[n]["p99_us"] or 0) / (by[n]["p50_us"] or 1) for n in names]),
            ("s until every connection had a reply", [by[n]["first_reply_s"] or 0 for n in names]),
        ]
        for ax, (title, ys) in zip(axes, metrics, strict=True):
            ax.bar(range(len(names)), ys)
            if title.startswith("s until"):
                for i, n in enumerate(names):
                    if by[n]["first_replied"] < cfg.big:
                        # Some connection never had a reply: no time to draw.
                        ax.text(i, 0, f"{cfg.big - by[n]['first_replied']:,}\nnever\nanswered",
                                ha="center", va="bottom", fontsize=7, color="red")
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=40, ha="right", fontsize=8)
            ax.set_title(title, fontsize=10)
        fig.suptitle(f"{cfg.big:,} connections (lower is better)")
        fig.tight_layout()
        path = cfg.out / "many_connections.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def _runs_json(runs: list[Run]) -> list[dict[str, Any]]:
    return [run.__dict__ for run in runs]


# ----------------------------------------------------------------------
# HTTP: WSGI servers (greenline bench --http)
#
# The servers, the applications and the wrk runs are bench/wsgi_cpu.py's
# (start, stop, wrk, cpu_seconds, REQUIRES, PATHS): this only orders the
# runs, measures with the same functions and writes the table and the chart.
# That script lives in the checkout, not in the package, so `bench --http`
# needs a checkout (an editable install, as the README's).

HTTP_SERVERS: dict[str, str] = {
    "greenline": "greenline.wsgi.WSGIServer, 1 process",
    "gunicorn": "gunicorn -w 1 -k gevent",
    "pywsgi": "gevent.pywsgi.WSGIServer",
    "granian": "granian --interface wsgi --workers 1",
    "waitress": "waitress, its defaults (4 threads)",
}
HTTP_REFERENCE = "pywsgi"  # ratios are taken against gevent.pywsgi
HTTP_APPS: dict[str, str] = {
    "hello": "hello world: 13 bytes of text/plain with a Content-Length",
    "flask": "a Flask route returning jsonify(name=..., greeting=...)",
}
WSGI_BENCH = Path(__file__).resolve().parents[3] / "bench" / "wsgi_cpu.py"


@dataclass
class HTTPConfig:
    apps: tuple[str, ...] = ("hello", "flask")
    servers: tuple[str, ...] = tuple(HTTP_SERVERS)
    connections: tuple[int, ...] = (100,)
    duration: float = 5.0
    rounds: int = 3
    client: str = "wrk"  # or "greenline" (greenline load)
    out: Path = Path("bench-out")
    charts: bool = True


@dataclass
class HTTPRun:
    """One WSGI server, one application, one load: the figures of one run."""

    server: str
    app: str
    connections: int
    cpu_us: float | None = None  # server CPU per response, µs
    rate: float | None = None
    p50_us: float | None = None
    p99_us: float | None = None
    client: str = "wrk"
    ok: bool = False
    problems: list[str] = field(default_factory=list)


def wsgi_bench() -> Any:
    """bench/wsgi_cpu.py, imported from the checkout."""
    if not WSGI_BENCH.exists():
        raise BenchError(f"--http needs {WSGI_BENCH} (the WSGI servers and apps): run it from a greenline "
                         "checkout (pip install -e .)")
    import importlib.util as iu

    mod = sys.modules.get("wsgi_cpu")
    if mod is None:
        spec = iu.spec_from_file_location("wsgi_cpu", WSGI_BENCH)
        assert spec is not None and spec.loader is not None
        mod = iu.module_from_spec(spec)
        sys.modules["wsgi_cpu"] = mod
        spec.loader.exec_module(mod)
    missing = [name for name in ("start", "stop", "wrk", "cpu_seconds", "REQUIRES", "PATHS")
               if not hasattr(mod, name)]
    if missing:
        raise BenchError(f"{WSGI_BENCH} has no {', '.join(missing)}: it is older than this greenline")
    return mod


def drive(client: str, port: int, path: str, seconds: float, connections: int,
          wb: Any) -> tuple[int, float | None, float | None, list[str]]:
    """Load ``port`` for ``seconds``: (responses, p50 µs, p99 µs, problems)."""
    if client == "wrk":
        n, lat, errors = wb.wrk(port, path, seconds, connections)
        p50, p99 = lat.get("p50"), lat.get("p99")
        return n, None if p50 is None else p50 * 1000, None if p99 is None else p99 * 1000, \
            [errors] if errors else []
    cmd = [sys.executable, "-m", "greenline", "load", f"http://127.0.0.1:{port}{path}", "-c", str(connections),
           "-d", f"{seconds:g}", "--no-progress", "--json", "-"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    try:
        result = json.loads(p.stdout)
    except ValueError:
        tail = p.stderr.strip().splitlines()[-1:] or ["no output"]
        return 0, None, None, [f"greenline load failed ({p.returncode}): {tail[0]}"]
    lat = result.get("latency_us") or {}
    return int(result["verified"] + result["mismatches"]), lat.get("p50"), lat.get("p99"), \
        list(result.get("problems", []))


def run_http_bench(cfg: HTTPConfig) -> tuple[list[HTTPRun], list[str]]:
    """Every server on every application and load, rounds interleaved (each
    round in another order); returns the runs and notes."""
    wb = wsgi_bench()
    _raise_nofile()
    notes: list[str] = []
    servers = []
    for name in cfg.servers:
        needs = wb.REQUIRES.get(name)
        if needs and importlib.util.find_spec(needs) is None:
            notes.append(f"{name}: skipped, {needs} not installed (pip install {needs})")
        else:
            servers.append(name)
    apps = []
    for app in cfg.apps:
        if app == "flask" and importlib.util.find_spec("flask") is None:
            notes.append("flask: the Flask application skipped, flask not installed (pip install flask)")
        else:
            apps.append(app)
    runs: list[HTTPRun] = []
    for app in apps:
        path = wb.PATHS[app]
        started: dict[str, Any] = {}
        try:
            for name in servers:
                try:
                    started[name] = wb.start(name, app)
                except (SystemExit, OSError) as e:
                    notes.append(f"{name}: skipped for {app}, could not start: {e}")
            live = list(started)
            for _proc, port in started.values():
                drive(cfg.client, port, path, 1.0, max(cfg.connections), wb)  # warm-up
            for connections in cfg.connections:
                for r in range(cfg.rounds):
                    order = live[r % len(live):] + live[:r % len(live)] if live else []
                    for name in order:
                        proc, port = started[name]
                        run = HTTPRun(name, app, connections, client=cfg.client)
                        before = wb.cpu_seconds(proc.pid)
                        n, run.p50_us, run.p99_us, run.problems = drive(cfg.client, port, path, cfg.duration,
                                                                         connections, wb)
                        used = wb.cpu_seconds(proc.pid) - before
                        if proc.poll() is not None:
                            run.problems.append(f"the server exited with status {proc.returncode}")
                        if n:
                            run.cpu_us = used / n * 1e6
                            run.rate = n / cfg.duration
                        run.ok = bool(n) and not run.problems
                        runs.append(run)
                        cpu = "-" if run.cpu_us is None else f"{run.cpu_us:.1f} µs/req"
                        rate = "-" if run.rate is None else f"{run.rate:,.0f} req/s"
                        _log(f"[{app}, {connections:,} conns, round {r + 1}/{cfg.rounds}] {name:<10} {cpu:>14} "
                             f"{rate:>14}{'' if run.ok else '  PROBLEM: ' + '; '.join(run.problems)[:200]}")
                        if not run.ok:
                            notes.append(f"{name}, {app}, {connections:,} connections, round {r + 1}: "
                                         + ("; ".join(run.problems) or "no response")[:300])
        finally:
            for proc, _port in started.values():
                wb.stop(proc)
    return runs, notes


def summarise_http(runs: list[HTTPRun]) -> dict[tuple[str, int], dict[str, dict[str, Any]]]:
    """(app, connections) -> server -> medians over its rounds."""
    groups: dict[tuple[str, int], dict[str, list[HTTPRun]]] = {}
    for run in runs:
        groups.setdefault((run.app, run.connections), {}).setdefault(run.server, []).append(run)
    out: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for key, by_server in groups.items():
        out[key] = {}
        for name, rs in by_server.items():
            cpus = [r.cpu_us for r in rs if r.cpu_us is not None]
            out[key][name] = {
                "cpu_us": _median(list(cpus)), "cpu_range": (min(cpus), max(cpus)) if cpus else None,
                "rate": _median([r.rate for r in rs]), "p50_us": _median([r.p50_us for r in rs]),
                "p99_us": _median([r.p99_us for r in rs]), "ok": all(r.ok for r in rs), "rounds": len(rs),
            }
    return out


def http_markdown(runs: list[HTTPRun], notes: list[str], order: list[str], header: str) -> str:
    summary = summarise_http(runs)
    lines = [header, ""]
    apps = [a for a in HTTP_APPS if any(k[0] == a for k in summary)]
    apps += sorted({k[0] for k in summary} - set(apps))
    for app in apps:
        for connections in sorted(c for a, c in summary if a == app):
            by = summary[(app, connections)]
            ref = by.get(HTTP_REFERENCE, {})
            rounds = max(s["rounds"] for s in by.values())
            client = runs[0].client if runs else "wrk"
            load = f"wrk -t1 -c{connections}" if client == "wrk" else f"greenline load -c {connections}"
            lines.append(f"### {app}: {HTTP_APPS.get(app, app)} ({load}, median of {rounds} "
                         f"run{'s' if rounds != 1 else ''})")
            lines.append("")
            lines.append("| server | CPU/request | (runs) | × gevent.pywsgi | req/s | p50 | p99 |")
            lines.append("|---|---:|---:|---:|---:|---:|---:|")
            for name in order:
                st = by.get(name)
                if st is None:
                    continue
                flag = "" if st["ok"] else " ⚠"
                rng = "–" if st["cpu_range"] is None else f"{st['cpu_range'][0]:.1f}–{st['cpu_range'][1]:.1f}"
                lines.append(
                    f"| {name}{flag} | {_fmt(st['cpu_us'], '.1f', ' µs')} | {rng} "
                    f"| {_ratio(st['cpu_us'], ref.get('cpu_us'))} | {_fmt(st['rate'], ',.0f')} "
                    f"| {_lat(st['p50_us'])} | {_lat(st['p99_us'])} |")
            lines.append("")
    lines.append("Servers: " + "; ".join(f"{n}: {HTTP_SERVERS.get(n, n)}" for n in order
                                         if any(r.server == n for r in runs)) + ".")
    lines.append("")
    if notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in dict.fromkeys(notes)] + [""]
    if any(not r.ok for r in runs):
        lines += ["⚠: at least one run of this server was not clean (errors, or a crash; see the notes).", ""]
    return "\n".join(lines)


def http_chart(runs: list[HTTPRun], out: Path, order: list[str]) -> Path:
    """The CPU-per-request chart; raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise_http(runs)
    keys = sorted(summary, key=lambda k: (list(HTTP_APPS).index(k[0]) if k[0] in HTTP_APPS else 99, k[1]))
    names = [n for n in order if any(n in summary[k] for k in keys)]
    fig, ax = plt.subplots(figsize=(10, 4.8))
    width = 0.8 / max(1, len(keys))
    for j, key in enumerate(keys):
        ys = [summary[key].get(n, {}).get("cpu_us") or 0.0 for n in names]
        xs = [i + j * width for i in range(len(names))]
        label = f"{key[0]}, {key[1]:,} conns" if len({k[1] for k in keys}) > 1 else key[0]
        ax.bar(xs, ys, width, label=label)
        for x, y in zip(xs, ys, strict=True):
            if y:
                ax.text(x, y, f"{y:.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks([i + width * (len(keys) - 1) / 2 for i in range(len(names))])
    ax.set_xticklabels(names)
    ax.set_ylabel("server CPU per request (µs)")
    ax.set_title("WSGI servers: server CPU time per request (lower is better)")
    ax.legend()
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "http_cpu_per_request.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def http_versions() -> str:
    out = []
    for name in ("greenlet", "httptools", "gevent", "gunicorn", "granian", "waitress", "flask"):
        try:
            from importlib.metadata import version

            out.append(f"{name} {version(name)}")
        except Exception:  # noqa: BLE001 - not installed: leave it out
            pass
    return ", ".join(out)


def write_http_report(runs: list[HTTPRun], notes: list[str], order: list[str], header: str, out: Path,
                      charts: bool) -> str:
    text = http_markdown(runs, notes, order, header)
    out.mkdir(parents=True, exist_ok=True)
    (out / "http.md").write_text(text, encoding="utf-8")
    print(text)
    if charts and runs:
        try:
            print(f"chart: {http_chart(runs, out, order)}")
        except ImportError:
            print("no charts: matplotlib is not installed (pip install -e '.[bench]')")
    return text


def _machine_or_platform() -> str:
    try:
        return machine()
    except ImportError:  # psutil is a [bench] extra
        return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def main_http(args: argparse.Namespace) -> int:
    """``greenline bench --http``."""
    cfg = HTTPConfig(out=args.out, charts=not args.no_charts)
    if args.quick:
        cfg.duration, cfg.rounds = 3.0, 1
    if args.connections is not None:
        cfg.connections = args.connections
    if args.duration is not None:
        cfg.duration = args.duration
    if args.rounds is not None:
        cfg.rounds = args.rounds
    try:
        if args.apps:
            cfg.apps = tuple(a.strip() for a in args.apps.split(",") if a.strip())
            bad = [a for a in cfg.apps if a not in HTTP_APPS]
            if bad or not cfg.apps:
                raise BenchError(f"no application {', '.join(bad)!r}; choose from: {', '.join(HTTP_APPS)}")
        if args.servers:
            names = tuple(n.strip().lower() for n in args.servers.split(",") if n.strip())
            bad = [n for n in names if n not in HTTP_SERVERS]
            if bad or not names:
                raise BenchError(f"no WSGI server {', '.join(bad)!r}; choose from: {', '.join(HTTP_SERVERS)}")
            cfg.servers = names
        if cfg.duration < 1 or cfg.rounds < 1:
            raise BenchError("--duration must be at least 1 s and --rounds at least 1")
        notes: list[str] = []
        if args.client in ("c", "python"):
            raise BenchError(f"--client {args.client} drives the line protocol; --http takes wrk or greenline")
        if args.client:
            cfg.client = args.client
        elif shutil.which("wrk") is None:
            cfg.client = "greenline"
            notes.append("wrk is not installed (apt-get install wrk): greenline load drove the servers, "
                         "a Python client on the same cores, which shapes every server's figures")
        if cfg.client == "wrk" and shutil.which("wrk") is None:
            raise BenchError("--client wrk: wrk is not installed (apt-get install wrk)")
        started = datetime.datetime.now(datetime.UTC)
        t0 = time.monotonic()
        load0 = os.getloadavg()
        runs, run_notes = run_http_bench(cfg)
    except BenchError as e:
        print(f"greenline bench: {e}", file=sys.stderr)
        return 2
    notes += run_notes
    load1 = os.getloadavg()
    client = (f"`wrk -t1 -c{','.join(map(str, cfg.connections))} -d{cfg.duration:g}s`"
              if cfg.client == "wrk" else f"`greenline load -c {','.join(map(str, cfg.connections))}`")
    command = "greenline bench --http" + ("" if cfg.apps == HTTPConfig.apps else f" --apps {','.join(cfg.apps)}") \
        + f" --duration {cfg.duration:g} --rounds {cfg.rounds}"
    header = "\n".join([
        f"{command}: {started:%Y-%m-%d %H:%M} UTC, {time.monotonic() - t0:.0f} s",
        "",
        f"- machine: {_machine_or_platform()}",
        f"- versions: {http_versions()}",
        f"- load: {client}, keep-alive GETs, {cfg.duration:g} s per run, rounds interleaved; "
        "client and server share the machine's cores",
        f"- load average at start {load0[0]:.2f}, at end {load1[0]:.2f}",
        "- CPU/request: user+system of the server's process tree over the run / responses",
    ])
    order = [n for n in HTTP_SERVERS if n in cfg.servers]
    write_http_report(runs, notes, order, header, cfg.out, cfg.charts)
    saved = {"kind": "http", "header": header, "notes": notes, "runs": [r.__dict__ for r in runs]}
    (cfg.out / "http.json").write_text(json.dumps(saved, indent=1), encoding="utf-8")
    return 0 if runs else 1


# ----------------------------------------------------------------------
# CLI


def _counts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x.replace("_", "")) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("connection counts must be positive")
    return values


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="greenline's server against gevent, asyncio, uvloop, trio, threads: CPU, memory, latency",
        description="Serve the echo-upper protocol with greenline and each peer, one at a time, drive "
                    "each with a small C client (built on first use with the system's C compiler; "
                    "`greenline load` where there is none), runs interleaved; report server CPU per request, req/s, "
                    "p50/p99 and, at many connections, memory per connection and time to every first "
                    "reply, as a Markdown table with ratios against the seed's server on gevent, and "
                    "PNG charts.",
    )
    p.add_argument("--quick", action="store_true",
                   help="one short round at 1, 100 and 5,000 connections and none at 10,000 "
                        "(under 3 minutes on 2 cores)")
    p.add_argument("--out", type=Path, default=Path("bench-out"), metavar="DIR",
                   help="where the table (bench.md), results.json and the charts go (default: %(default)s)")
    p.add_argument("--servers", metavar="NAMES",
                   help="comma-separated subset of: " + ", ".join(s.name for s in SERVERS))
    p.add_argument("--connections", type=_counts, metavar="N,N,...",
                   help="connection counts (default 1,100,5000)")
    p.add_argument("--duration", type=float, metavar="S", help="seconds per run (default 5)")
    p.add_argument("--rounds", type=int, metavar="K", help="interleaved rounds (default 3)")
    p.add_argument("--big", type=int, metavar="N",
                   help="the many-connections case, 0 for none (default 10000)")
    p.add_argument("--big-duration", type=float, metavar="S", help="seconds of that run (default 6)")
    p.add_argument("--big-rounds", type=int, metavar="K", help="rounds of that case (default 1)")
    p.add_argument("--no-charts", action="store_true", help="table only")
    p.add_argument("--report", metavar="RESULTS.json",
                   help="run nothing: write the table and charts again from an earlier run's results.json "
                        "(or http.json)")
    http = p.add_argument_group(
        "HTTP (--http)",
        "greenline's WSGIServer against " + ", ".join(n for n in HTTP_SERVERS if n != "greenline")
        + " (each skipped with a note when not installed), on a hello-world app and a Flask JSON route, "
        "driven by wrk (greenline load where wrk is missing); writes http.md, http.json and "
        "http_cpu_per_request.png.  --servers, --connections (default 100), --duration, --rounds and "
        "--quick apply.  Needs a greenline checkout (it runs bench/wsgi_cpu.py's servers).")
    http.add_argument("--http", action="store_true", help="the WSGI servers instead of the line protocol")
    http.add_argument("--apps", metavar="NAMES", help="comma-separated subset of: " + ", ".join(HTTP_APPS))
    p.add_argument("--client", choices=("c", "python", "wrk", "greenline"), default=None,
                   help="what drives the servers: for the line protocol c (the C client, the default when a "
                        "C compiler is found) or python (greenline load); with --http wrk (the default when "
                        "installed) or greenline")
    p.set_defaults(func=main)
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    cfg = BenchConfig(out=args.out, charts=not args.no_charts)
    client = getattr(args, "client", None)
    if client == "wrk":
        raise BenchError("--client wrk drives HTTP servers (--http); the line protocol takes c or python")
    if client is not None:
        cfg.client = "c" if client == "c" else "python"  # greenline load is the Python client
    if args.quick:
        cfg.connections, cfg.duration, cfg.rounds, cfg.big = (1, 100, 5000), 3.0, 1, 0
    for name in ("connections", "duration", "rounds", "big", "big_duration", "big_rounds"):
        v = getattr(args, name)
        if v is not None:
            setattr(cfg, name, v)
    if cfg.duration < 1.5 or cfg.big_duration < 1.5:
        raise BenchError("--duration must be at least 1.5 s (the CPU window is between progress lines)")
    if cfg.rounds < 1 or cfg.big_rounds < 1 or cfg.big < 0:
        raise BenchError("--rounds must be positive, --big zero or positive")
    return cfg


def load_lines(cfg: BenchConfig) -> list[str]:
    """The report header's lines on the client and what its figures mean."""
    big = f", {cfg.big:,} connections for {cfg.big_duration:g} s" if cfg.big else ""
    if cfg.client == "python":
        return [
            f"- load: `greenline load --procs 1`, closed loop, 32-byte messages, {cfg.duration:g} s per run{big}; "
            "client and server share the machine's cores",
            "- CPU/request: user+system of the server's process tree over the measured window / replies",
        ]
    w, m = c_window(cfg.duration)
    lines = [
        f"- load: the C client (`upper_client.c`: one OS thread, epoll, every reply checked), closed loop, "
        f"32-byte messages, {w:.3g} s warm-up + {m:.3g} s measured per run{big}; its own CPU is small and fixed, "
        "so the server's figures are the server's",
        "- CPU/request: user+system of the server's process tree over the client's measured window / "
        "replies in it; p50/p99: latency of every request in the window",
    ]
    if cfg.big:
        lines.append(f"- {cfg.big:,} connections: all opened first, then the first line sent on every one at "
                     "once; first replies timed from that moment; RSS/connection: the server tree's RSS with the "
                     "connections open, less its RSS once listening, / connections")
    return lines


def select_servers(text: str | None) -> list[ServerSpec]:
    if not text:
        return list(SERVERS)
    by_name = {s.name.lower(): s for s in SERVERS}
    out = []
    for name in (n.strip().lower() for n in text.split(",")):
        if name not in by_name:
            raise BenchError(f"no server {name!r}; choose from: {', '.join(s.name for s in SERVERS)}")
        out.append(by_name[name])
    return out


def _report_again(args: argparse.Namespace, cfg: BenchConfig) -> int:
    """Table and charts from the results.json of an earlier run."""
    try:
        saved = json.loads(Path(args.report).read_text(encoding="utf-8"))
        if saved.get("kind") == "http":
            http_runs = [HTTPRun(**r) for r in saved["runs"]]
            order = list(dict.fromkeys([*HTTP_SERVERS, *(r.server for r in http_runs)]))
            write_http_report(http_runs, saved.get("notes", []), order, saved.get("header", ""), cfg.out,
                              cfg.charts)
            return 0
        runs = [Run(**r) for r in saved["runs"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        print(f"greenline bench: cannot read {args.report}: {e}", file=sys.stderr)
        return 2
    cfg.big = int(saved.get("big", 0))
    order = list(dict.fromkeys([*(s.name for s in SERVERS), *(r.server for r in runs)]))
    text = markdown(runs, saved.get("notes", []), cfg, order, saved.get("header", ""))
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "bench.md").write_text(text, encoding="utf-8")
    print(text)
    _draw(runs, cfg, order)
    return 0


def _draw(runs: list[Run], cfg: BenchConfig, order: list[str]) -> None:
    if not (cfg.charts and runs):
        return
    try:
        paths = charts(runs, cfg, order)
    except ImportError:
        print("no charts: matplotlib is not installed (pip install -e '.[bench]')")
        return
    for path in paths:
        print(f"chart: {path}")


def main(args: argparse.Namespace) -> int:
    if getattr(args, "http", False) and not args.report:
        return main_http(args)
    try:
        cfg = config_from_args(args)
        specs = select_servers(args.servers)
    except BenchError as e:
        print(f"greenline bench: {e}", file=sys.stderr)
        return 2
    if args.report:
        return _report_again(args, cfg)
    if importlib.util.find_spec("psutil") is None:
        print("greenline bench: needs psutil to read the servers' CPU time and memory "
              "(pip install -e '.[bench]')", file=sys.stderr)
        return 2
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.monotonic()
    load0 = os.getloadavg()
    runs, notes = run_bench(specs, cfg)
    load1 = os.getloadavg()
    header = "\n".join([
        f"greenline bench{' --quick' if args.quick else ''}: {started:%Y-%m-%d %H:%M} UTC, "
        f"{time.monotonic() - t0:.0f} s",
        "",
        f"- machine: {machine()}",
        f"- versions: {versions()}",
        *load_lines(cfg),
        f"- load average at start {load0[0]:.2f}, at end {load1[0]:.2f}",
    ])
    text = markdown(runs, notes, cfg, [s.name for s in specs], header)
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "bench.md").write_text(text, encoding="utf-8")
    saved = {"header": header, "notes": notes, "big": cfg.big, "runs": _runs_json(runs)}
    (cfg.out / "results.json").write_text(json.dumps(saved, indent=1), encoding="utf-8")
    print(text)
    _draw(runs, cfg, [s.name for s in specs])
    return 0 if runs else 1
