"""``greenline serve upper`` across threads and processes, from a C client.

Runs the server with each configuration (an interpreter, ``--procs``,
``--threads``), drives it with the C client ``src/greenline/tools/upper_client.c``
(compiled with the system C compiler by ``greenline.tools.cclient``; one OS
thread, epoll, closed loop, every reply checked), and reads the CPU time of the server's whole process tree
(supervisor and workers, from /proc) at the client's "mark start" and
"mark end".  Rounds are interleaved (every configuration once per round) so
drift in the machine's load hits them all alike; the medians are printed.

    python bench/threads_scaling.py                         # 3.13t t1/t2/p1/p2 + this python p1/p2
    python bench/threads_scaling.py --rounds 5 --seconds 5 --connections 200
    python bench/threads_scaling.py --config ft:1x1 --config ft:1x2 --perf-out /tmp/perf

A configuration is ``NAME:PROCSxTHREADS``; NAME is ``ft`` (the free-threaded
venv made by scripts/build-free-threaded.sh), ``this`` (the interpreter
running the script) or a path to a python.  ``--perf-out DIR`` records the
server of each configuration with ``perf record -g`` over the window of the
first round (``-X perf`` makes Python frames visible).

Only the standard library: the script itself may run on any Python.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
CCLIENT = ROOT / "src" / "greenline" / "tools" / "cclient.py"  # builds tools/upper_client.c
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")

DEFAULT_CONFIGS = ["ft:1x1", "ft:1x2", "ft:2x1", "this:1x1", "this:2x1"]


def load_cclient() -> ModuleType:
    """greenline.tools.cclient, loaded from this checkout by path (stdlib
    only), so the script needs no greenline importable where it runs."""
    spec = importlib.util.spec_from_file_location("greenline_cclient", CCLIENT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build_client(out_dir: Path) -> Path | None:
    """Compile the C client; None (with a note on stderr) without a compiler."""
    exe, note = load_cclient().build_client(out_dir)
    if exe is None:
        print(f"{note}: skipped", file=sys.stderr)
    return exe


def ft_python() -> str:
    out = subprocess.run([str(ROOT / "scripts" / "build-free-threaded.sh"), "--python"],
                         capture_output=True, text=True, check=True).stdout.strip()
    if not os.path.exists(out):
        raise SystemExit(f"{out} does not exist: run scripts/build-free-threaded.sh first")
    return out


def tree_pids(pid: int) -> list[int]:
    pids = [pid]
    i = 0
    while i < len(pids):
        p = pids[i]
        i += 1
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    pids.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return pids


def tree_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` and its descendants so far."""
    user = system = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        user += int(fields[11])
        system += int(fields[12])
    return user / _CLK_TCK, system / _CLK_TCK


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants so far."""
    return sum(tree_times(pid))


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants."""
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * _PAGE
        except OSError:
            continue
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Config:
    def __init__(self, spec: str) -> None:
        self.spec = spec
        # NAME:PxT:gil runs the server with PYTHON_GIL=1 (the GIL forced on,
        # as an extension that has not declared it can run without does).
        self.gil = spec.endswith(":gil")
        if self.gil:
            spec = spec[: -len(":gil")]
        name, _, shape = spec.rpartition(":")
        procs, _, threads = shape.partition("x")
        self.name = name or "this"
        self.procs = int(procs)
        self.threads = int(threads or 1)
        if self.name == "ft":
            self.python = ft_python()
        elif self.name == "this":
            self.python = sys.executable
        else:
            self.python = self.name
        self.version = subprocess.run(
            [self.python, "-c", "import sys; print(sys.version.split()[0] + "
             "('t' if hasattr(sys, '_is_gil_enabled') and not sys._is_gil_enabled() else ''))"],
            capture_output=True, text=True, check=True).stdout.strip()

    def label(self) -> str:
        return f"{self.version} procs {self.procs} threads {self.threads}" + (" GIL on" if self.gil else "")


def run_one(cfg: Config, client: Path, conns: int, warmup: float, seconds: float,
            perf_out: Path | None) -> dict[str, float]:
    port = free_port()
    cmd = [cfg.python]
    if perf_out is not None:
        cmd += ["-X", "perf"]
    cmd += ["-m", "greenline", "serve", "upper", "--port", str(port), "--procs", str(cfg.procs),
            "--threads", str(cfg.threads), "--log-level", "warning"]
    env = dict(os.environ)
    env.pop("PYTHON_GIL", None)
    if cfg.gil:
        env["PYTHON_GIL"] = "1"
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True, env=env)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"{cfg.spec}: server did not start: {line!r} {server.stderr.read() if server.stderr else ''}")
        proc = subprocess.Popen([str(client), "127.0.0.1", str(port), str(conns), str(warmup), str(seconds)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        perf = None
        out: dict[str, float] = {}
        for line in proc.stdout:
            if line.startswith("mark start"):
                cpu0, t0 = tree_cpu(server.pid), time.monotonic()
                if perf_out is not None:
                    perf_out.mkdir(parents=True, exist_ok=True)
                    data = perf_out / f"{cfg.spec.replace(':', '-').replace('/', '_')}.data"
                    perf = subprocess.Popen(["perf", "record", "-g", "-q", "-o", str(data), "-p",
                                             ",".join(map(str, tree_pids(server.pid)))],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            elif line.startswith("mark end"):
                cpu1, t1 = tree_cpu(server.pid), time.monotonic()
                if perf is not None:
                    perf.send_signal(2)
                    perf.wait(30)
            elif line.startswith("result"):
                for kv in line.split()[1:]:
                    k, _, v = kv.partition("=")
                    out[k] = float(v)
        if proc.wait(seconds + warmup + 60) != 0 or "requests" not in out:
            raise RuntimeError(f"{cfg.spec}: the client failed")
        out["cpu"] = cpu1 - cpu0
        out["wall"] = t1 - t0
        out["us_per_req"] = out["cpu"] / out["requests"] * 1e6
        return out
    finally:
        try:
            os.killpg(server.pid, 2)
            server.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(server.pid, 9)
            server.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", help="NAME:PROCSxTHREADS (repeatable)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--perf-out", type=Path, default=None)
    ap.add_argument("--build-dir", type=Path, default=ROOT / "bench-out")
    args = ap.parse_args()
    client = build_client(args.build_dir)
    if client is None:
        return 0
    configs = [Config(s) for s in (args.config or DEFAULT_CONFIGS)]
    print(f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}")
    print(f"load: C client, {args.connections} connections, 32-byte lines, closed loop, "
          f"{args.warmup:g} s warm-up + {args.seconds:g} s measured, {args.rounds} rounds interleaved")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    results: dict[str, list[dict[str, float]]] = {c.spec: [] for c in configs}
    print(f"{'round':>5}  {'server':<32} {'requests':>9} {'req/s':>8} {'CPU s':>6} {'cores':>5} {'CPU/req':>9}"
          "   load avg")
    for r in range(args.rounds):
        for cfg in configs:
            res = run_one(cfg, client, args.connections, args.warmup, args.seconds,
                          args.perf_out if r == 0 else None)
            results[cfg.spec].append(res)
            # cores: the server's CPU over the window's wall time.  Well
            # under the threads it runs, the machine (not the server) was
            # the limit; the load average says how busy it was.
            print(f"{r + 1:>5}  {cfg.label():<32} {res['requests']:>9.0f} {res['rps']:>8.0f} "
                  f"{res['cpu']:>6.2f} {res['cpu'] / res['wall']:>5.2f} {res['us_per_req']:>6.2f} µs"
                  f"   {os.getloadavg()[0]:.2f}", flush=True)
    print()
    print("medians:")
    med = {}
    for cfg in configs:
        rs = results[cfg.spec]
        med[cfg.spec] = (statistics.median(r["us_per_req"] for r in rs), statistics.median(r["rps"] for r in rs))
        cores = statistics.median(r["cpu"] / r["wall"] for r in rs)
        print(f"  {cfg.label():<32} {med[cfg.spec][0]:6.2f} µs/req {med[cfg.spec][1]:>9.0f} req/s "
              f"{cores:5.2f} cores")
    by_shape = {(c.version, c.procs, c.threads, c.gil): c for c in configs}
    for (version, _p, _t, _gil), cfg in by_shape.items():
        base = by_shape.get((version, 1, 1, False))
        if base is None or base is cfg:
            continue
        cpu_ratio = med[cfg.spec][0] / med[base.spec][0]
        rps_ratio = med[cfg.spec][1] / med[base.spec][1]
        print(f"  {cfg.label()} against threads 1: CPU/req {cpu_ratio:.2f}x, req/s {rps_ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
