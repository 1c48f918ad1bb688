"""``greenline lab``: the seed's two experiments, as commands.

``greenline lab switch``: the same CPU-bound work done serially, then
interleaved by a generator's ``yield``, by raw greenlet switches and by
``greenline.sleep(0)`` between two green threads; what one switch costs, and
the seed's conclusion (switching without IO only costs) drawn from the
numbers of this run.

``greenline lab sleep``: the seed's three sleepers (2, 3 and 5 s) run one
after the other, then as three green threads: the sum against the longest.
``--scale`` shrinks every sleep.

The measuring functions are shared with ``examples/seed/switch_cost.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from greenlet import getcurrent, greenlet

from greenline._core.hub import sleep
from greenline._core.task import joinall, spawn

__all__ = [
    "add_parser",
    "best_of",
    "serial",
    "with_yield",
    "with_greenlet",
    "with_sleep0",
    "switch_experiment",
    "sleep_experiment",
]

# The seed ran 10,000,000 steps per function (1.24 s serial, 2.12 s with
# yield on its machine); a twentieth of that shows the same thing in seconds.
DEFAULT_N = 500_000
DEFAULT_REPEAT = 3
SLEEPS = (("heng", 2.0), ("ha", 3.0), ("heiheihei", 5.0))  # the seed's three sleepers


def best_of(repeat: int, measure: Callable[[int], float], n: int) -> float:
    # The least disturbed run is the best estimate of the cost itself; the
    # others carry whatever else the machine was doing.
    return min(measure(n) for _ in range(repeat))


def serial(n: int) -> float:
    """func1() then func2(), n steps each."""
    def func1() -> None:
        for i in range(n):
            i + 1

    def func2() -> None:
        for i in range(n):
            i + 1

    start_time = time.perf_counter()
    func1()
    func2()
    return time.perf_counter() - start_time


def with_yield(n: int) -> float:
    """func2 resumes the generator func1 after each of its steps."""
    # The seed's func1 loops ``while True: 10000000 + 1; yield``; the compiler
    # folds that sum into a constant, so its func1 did no work at all and the
    # comparison flattered yield.  Here func1 does the same step as in
    # serial(), so the only difference left is the switch.
    def func1():  # type: ignore[no-untyped-def]
        for i in range(n):
            i + 1
            yield

    def func2() -> None:
        g = func1()
        for i in range(n):
            i + 1
            next(g)

    start_time = time.perf_counter()
    func2()
    return time.perf_counter() - start_time


def with_greenlet(n: int) -> float:
    """Two greenlets switching to each other after each step."""
    main = getcurrent()

    def func1() -> None:
        for i in range(n):
            i + 1
            main.switch()

    def func2() -> None:
        g = greenlet(func1)
        for i in range(n):
            i + 1
            g.switch()
        g.switch()  # let func1 leave its loop and end

    start_time = time.perf_counter()
    func2()
    return time.perf_counter() - start_time


def with_sleep0(n: int) -> float:
    """Two green threads, each yielding with sleep(0) after each step."""
    def func(m: int) -> None:
        for i in range(m):
            i + 1
            sleep(0)

    start_time = time.perf_counter()
    joinall([spawn(func, n), spawn(func, n)], raise_error=True)
    return time.perf_counter() - start_time


def switch_experiment(n: int, repeat: int, out: Any = None) -> dict[str, float]:
    """Run the four versions, print the comparison and the conclusion;
    return the seconds of each (keys: serial, yield, greenlet, sleep0)."""
    out = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    say(f"{n:,} steps per function, best of {repeat} run{'s' if repeat != 1 else ''} each")
    t_serial = best_of(repeat, serial, n)
    # (name, seconds, round trips, switches per round trip, what a round trip is)
    rows = [
        ("yield", "generator yield", best_of(repeat, with_yield, n), n, 2,
         "next(g) into the generator, yield back"),
        ("greenlet", "greenlet switch", best_of(repeat, with_greenlet, n), n, 2,
         "g.switch() to the other stack, main.switch() back"),
        ("sleep0", "greenline sleep(0)", best_of(repeat, with_sleep0, n), 2 * n, 2,
         "sleep(0): into the hub, out to the other green thread"),
    ]
    say(f"{'serial (func1 then func2)':<34}{t_serial:8.3f} s   "
        f"({t_serial / (2 * n) * 1e9:.0f} ns per step)")
    for _, name, t, _, _, _ in rows:
        say(f"interleaved by {name:<19}{t:8.3f} s   ({t / t_serial:.2f}x serial)")
    say()
    say("cost of switching (time above serial, per round trip and per switch):")
    for _, name, t, trips, switches, what in rows:
        per_trip = (t - t_serial) / trips * 1e9
        say(f"  {name:<19}{per_trip:7.0f} ns per round trip, {per_trip / switches:6.0f} ns per switch   ({what})")
    say()
    faster = [name for _, name, t, _, _, _ in rows if t <= t_serial]
    if faster:
        # Possible on a noisy machine with a tiny -n; say so instead of
        # printing a lesson this run's numbers do not show.
        say(f"Conclusion: this run was too short or too noisy to show it ({', '.join(faster)} "
            "came out no slower than serial); try a larger -n.")
    else:
        slowest = max(rows, key=lambda r: r[2])
        say(f"Conclusion: serial is the fastest; every interleaved version is slower, "
            f"{slowest[1]} most ({slowest[2] / t_serial:.2f}x serial). The work is pure computation "
            "with no IO to wait for, so a switch saves nothing: it only adds the cost of saving one "
            "task's state and restoring the other's. Switching pays off only when a task would "
            "otherwise sit waiting for IO (greenline lab sleep).")
    return {"serial": t_serial, **{key: t for key, _, t, _, _, _ in rows}}


def sleep_experiment(scale: float, out: Any = None) -> tuple[float, float]:
    """The three sleepers serially, then as green threads; print both totals
    and the conclusion; return (serial seconds, green seconds)."""
    out = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    def sleeper(name: str, seconds: float) -> None:
        say(f"  {name} starts sleeping {seconds:g} s")
        sleep(seconds)
        say(f"  {name} wakes up")

    total = sum(s for _, s in SLEEPS) * scale
    longest = max(s for _, s in SLEEPS) * scale
    say(f"serially: {'; '.join(f'{n}()' for n, _ in SLEEPS)}")
    t0 = time.perf_counter()
    for name, seconds in SLEEPS:
        sleeper(name, seconds * scale)
    t_serial = time.perf_counter() - t0
    say(f"total serially: {t_serial:.3f} s (the sum of the sleeps: {total:g} s)")
    say()
    say("as green threads: spawn all three, then join them")
    t0 = time.perf_counter()
    joinall([spawn(sleeper, name, seconds * scale) for name, seconds in SLEEPS], raise_error=True)
    t_green = time.perf_counter() - t0
    say(f"total as green threads: {t_green:.3f} s (the longest sleep: {longest:g} s)")
    say()
    if total > 0 and t_green < t_serial and abs(t_green - longest) < abs(t_green - total):
        say(f"Conclusion: the green threads took {t_green:.2f} s, the longest sleep, not the "
            f"{t_serial:.2f} s of the sum: while one waits, the others run, so the waits overlap. "
            "This is where switching pays: when there is something to wait for.")
    else:
        say(f"Conclusion: this run does not show the overlap ({t_green:.3f} s against "
            f"{t_serial:.3f} s serially); the machine may be too busy or --scale too small.")
    return t_serial, t_green


def _switch(args: argparse.Namespace) -> int:
    if args.n < 1 or args.repeat < 1:
        print("greenline lab switch: -n and --repeat must be at least 1", file=sys.stderr)
        return 2
    switch_experiment(args.n, args.repeat)
    return 0


def _sleep(args: argparse.Namespace) -> int:
    if args.scale < 0:
        print("greenline lab sleep: --scale must not be negative", file=sys.stderr)
        return 2
    sleep_experiment(args.scale)
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "lab",
        help="the seed's experiments: what a switch costs, and when switching pays",
        description="The seed's experiments. `switch`: the same work serially and interleaved by "
                    "yield, greenlet and greenline.sleep(0), with the cost of one switch. `sleep`: "
                    "three sleepers of 2, 3 and 5 s, serially (10 s) and as green threads (5 s).",
    )
    sub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    ps = sub.add_parser("switch", help="the cost of a switch, against doing the work serially",
                        description="Time n steps of work per function, serially and interleaved by a "
                                    "generator's yield, raw greenlet switches and greenline.sleep(0).")
    ps.add_argument("-n", type=int, default=DEFAULT_N,
                    help="steps per function (default: %(default)s; the seed used 10,000,000)")
    ps.add_argument("--repeat", type=int, default=DEFAULT_REPEAT,
                    help="runs of each version, the fastest counts (default: %(default)s)")
    ps.set_defaults(func=_switch)
    pl = sub.add_parser("sleep", help="three sleepers: the sum serially, the longest as green threads",
                        description="The seed's sleepers of 2, 3 and 5 s, one after the other, then as "
                                    "three green threads.")
    pl.add_argument("--scale", type=float, default=1.0,
                    help="multiply every sleep by this (default: %(default)s)")
    pl.set_defaults(func=_sleep)

    def _help(_args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_help)
    return p
