"""Three sleepers of 2, 3 and 5 seconds, spawned together: done in 5 s, not 10.

The seed's gevent demo, ported.  After ``monkey.patch_all()`` the plain
``time.sleep`` inside each function is a point where greenline switches to
another green thread, so the three waits overlap and the whole run takes as
long as the longest one.

    python examples/seed/sleep_demo.py              # about 5.0 s
    python examples/seed/sleep_demo.py --scale 0.1  # the same, ten times faster
"""

# ruff: noqa: E402, E702, I001 - the seed's one-line patch comes first, before any other import
from greenline import monkey;monkey.patch_all()
import argparse
import time

from greenline import spawn

SCALE = 1.0  # set from --scale: multiplies every sleep


def heng() -> None:
    print('哼')
    time.sleep(2 * SCALE)
    print('哼')


def ha() -> None:
    print('哈')
    time.sleep(3 * SCALE)
    print('哈')


def heiheihei() -> None:
    print('heiheihei')
    time.sleep(5 * SCALE)
    print('heiheihei')


def main(argv: list[str] | None = None) -> int:
    global SCALE
    parser = argparse.ArgumentParser(
        description="Spawn three green threads sleeping 2, 3 and 5 s; they overlap, "
        "so the total is about 5 s (the longest), not 10 (the sum).",
    )
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every sleep by this (default 1.0)")
    args = parser.parse_args(argv)
    if args.scale < 0:
        parser.error("--scale must not be negative")
    SCALE = args.scale

    start_time = time.time()
    g1 = spawn(heng)
    g2 = spawn(ha)
    g3 = spawn(heiheihei)
    g1.join()
    g2.join()  # wait for the spawned tasks to finish before going on
    g3.join()
    # Run one after the other, heng(); ha(); heiheihei() would take the sum.
    total = time.time() - start_time
    print(f'total: {total:.3f} s (longest sleep {5 * SCALE:g} s, '
          f'sum of the sleeps {10 * SCALE:g} s)')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
