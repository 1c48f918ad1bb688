"""Does switching make a program faster?  Only when there is IO to wait for.

The seed's experiment, ported: the same CPU-bound work done

1. serially (``func1()`` then ``func2()``),
2. interleaved by a generator's ``yield`` (``func2`` calls ``next(g)`` after
   each step so ``func1`` does one step too),
3. interleaved by raw greenlet switches (the stack switch greenline is built
   on),
4. interleaved by ``greenline.sleep(0)`` in two green threads (a switch that
   goes through the hub's ready queue),

then the time of each, what one switch cost, and which is slower and why.

    python examples/seed/switch_cost.py            # about a few seconds
    python examples/seed/switch_cost.py --n 10000000   # the seed's size
"""

from __future__ import annotations

import argparse
import gc
import math

# The four measurements are greenline's own (`greenline lab switch` runs
# them too); this script prints them the way the seed's experiment did.
from greenline.tools.lab import DEFAULT_N, DEFAULT_REPEAT, serial, with_greenlet, with_sleep0, with_yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time the seed's experiment: the same work done serially, "
        "and interleaved by yield, greenlet switches and greenline.sleep(0).",
    )
    parser.add_argument("--n", type=int, default=DEFAULT_N,
                        help=f"steps per function (default {DEFAULT_N:,}; the seed used 10,000,000)")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT,
                        help=f"runs of each version; the fastest counts (default {DEFAULT_REPEAT})")
    args = parser.parse_args(argv)
    n, repeat = args.n, args.repeat
    if n < 1 or repeat < 1:
        parser.error("--n and --repeat must be at least 1")

    print(f"{n:,} steps per function, best of {repeat} runs each")
    versions = [serial, with_yield, with_greenlet, with_sleep0]
    best = [math.inf] * len(versions)
    # Round after round of all four, rather than all runs of one and then
    # the next: a burst of load from elsewhere then spoils one run of each,
    # not every run of one.  The collector stays off so that its pauses do
    # not land in one version's time.
    gc.disable()
    try:
        for _ in range(repeat):
            for i, measure in enumerate(versions):
                best[i] = min(best[i], measure(n))
    finally:
        gc.enable()
    t_serial = best[0]
    print(f"serial (func1 then func2)         {t_serial:8.3f} s")
    rows = [
        ("generator yield", best[1], n, "next(g): into the generator and back"),
        ("greenlet switch", best[2], n, "g.switch(): into the other stack and back"),
        ("greenline sleep(0)", best[3], 2 * n,
         "sleep(0): through the hub's ready queue to the other green thread"),
    ]
    for name, t, _, _ in rows:
        print(f"interleaved by {name:<19}{t:8.3f} s   ({t / t_serial:.2f}x serial)")
    print()
    print("cost of one round trip (time above serial, divided by round trips):")
    for name, t, trips, what in rows:
        per = (t - t_serial) / trips * 1e9
        print(f"  {name:<19}{per:8.0f} ns   {what}")
    print()
    slowest = max(rows, key=lambda r: r[1])
    faster = [name for name, t, _, _ in rows if t < t_serial]
    if faster:
        # Possible on a noisy machine with a tiny --n; say so instead of
        # printing a lesson the numbers do not show.
        print(f"Conclusion: this run was too short or too noisy to show it "
              f"({', '.join(faster)} came out faster than serial); try a larger --n.")
    else:
        print(f"Conclusion: serial is the fastest; every interleaved version is slower, "
              f"{slowest[0]} most ({slowest[1] / t_serial:.2f}x).  "
              "The work is pure computation with no IO to wait for, so a switch "
              "saves nothing: it only adds the cost of saving one task's state and "
              "restoring the other's.  Switching pays off only when the task would "
              "otherwise sit waiting for IO (see sleep_demo.py and server.py).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
