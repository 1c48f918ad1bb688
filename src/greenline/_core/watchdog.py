"""The blocking detector: reports a green thread that runs too long without
yielding, with its stack.

A green thread that computes for 200 ms holds up every other green thread
of its OS thread for 200 ms: the seed's lesson that switching only pays
around IO, seen from the other side.  Turn the detector on with the
environment variable ``GREENLINE_BLOCK_WARN_MS`` (read at import) or::

    import greenline
    greenline.watchdog.enable(100)   # warn after 100 ms without a switch

A real OS thread (made from ``_thread``, so patching cannot make it green)
samples which green thread each hub is running, and in which pass of its
loop; when that has not changed for the threshold, it logs a warning on the
``greenline._core.watchdog`` logger naming the green thread, with the stack it is
running.  One warning per stall.  Cost when off: none; when on, the hub
already keeps the two fields it reads.  A child made by ``fork()`` (a
``greenline serve`` worker, say) starts a watcher of its own if the parent
had the detector on.
"""

from __future__ import annotations

import _thread
import os
import sys
from time import monotonic
from typing import Any

from greenline._core import hub as _hub

__all__ = ["enable", "disable", "threshold_ms"]

_start_new_thread = _thread.start_new_thread
_allocate_lock = _thread.allocate_lock

threshold_ms: float | None = None
# The running watcher's stop signal: a lock held until disable() releases
# it.  Each watcher gets a lock of its own, so one told to stop can never
# take a later watcher's signal (or keep running on it) when the detector
# is turned off and on again before the old watcher has woken.
_stop: Any = None


def enable(ms: float) -> None:
    """Warn whenever a green thread runs ``ms`` milliseconds without yielding."""
    global threshold_ms, _stop
    if ms <= 0:
        raise ValueError("the threshold must be a positive number of milliseconds")
    threshold_ms = float(ms)
    if _stop is None:
        stop = _allocate_lock()
        stop.acquire()
        _stop = stop
        _start_new_thread(_watch, (stop,))


def disable() -> None:
    """Stop the detector."""
    global threshold_ms, _stop
    threshold_ms = None
    stop, _stop = _stop, None
    if stop is not None:
        stop.release()


def _watch(stop: Any) -> None:
    # hub -> (loop pass and green thread seen running, when first seen,
    # already warned).  The same pair seen again means nothing switched.
    seen: dict[int, tuple[tuple[int, object], float, bool]] = {}
    while True:
        threshold = threshold_ms
        if threshold is None:
            return
        limit = threshold / 1000.0
        # A timed acquire of this watcher's own lock, which disable()
        # releases: a sleep that stops at once when the detector is off.
        if stop.acquire(timeout=max(limit / 4, 0.005)):
            return
        now = monotonic()
        for hub in list(_hub.all_hubs):
            key = id(hub)
            current = hub.current
            running = (hub.loops, current)
            prev = seen.get(key)
            if current is None or prev is None or prev[0][0] != running[0] or prev[0][1] is not current:
                seen[key] = (running, now, False)
                continue
            _, since, warned = prev
            if not warned and now - since >= limit and _holds_others_up(hub, current):
                seen[key] = (running, since, True)
                _report(hub, current, now - since)


def _holds_others_up(hub: _hub.Hub, current: object) -> bool:
    # A green thread that runs on while nobody else of its hub waits to run,
    # for IO or for a timer (a thread-pool worker back in its job loop, say)
    # holds nobody up; and a hub whose OS thread has ended holds nothing.
    # (Thread idents are reused: a dead thread's hub is told by its main
    # greenlet, which dies with the thread, not by the ident.)
    if hub.closed or hub.main.dead or getattr(current, "dead", False):
        return False
    # A suspended green thread is not the one running: its hub is left in
    # the middle of a pass (one given up without being closed, say).
    if getattr(current, "gr_frame", None) is not None:
        return False
    if hub.thread_ident not in sys._current_frames():
        return False
    return bool(hub.ready or hub.timers or len(hub.parked) > (current in hub.parked))


def _report(hub: _hub.Hub, current: object, elapsed: float) -> None:
    import logging  # not at import: most programs never turn the detector on
    import traceback

    frame = sys._current_frames().get(hub.thread_ident)
    stack = "".join(traceback.format_stack(frame)) if frame is not None else "  (stack unavailable)\n"
    logging.getLogger("greenline.watchdog").warning(
        "green thread %r has run %.0f ms without yielding (threshold %.0f ms); "
        "every other green thread of this OS thread waits meanwhile:\n%s",
        current, elapsed * 1000, threshold_ms, stack,
    )


def _after_fork_in_child() -> None:
    # The watching thread does not survive fork (no thread but the forking
    # one does), and the parent's lock may be in any state: a child of a
    # process that had the detector on gets a watcher of its own, with the
    # same threshold.  That is every `greenline serve` worker, and every
    # multiprocessing child started by fork.
    global _stop
    if _stop is not None and threshold_ms is not None:
        _stop = None
        enable(threshold_ms)


os.register_at_fork(after_in_child=_after_fork_in_child)


_env = os.environ.get("GREENLINE_BLOCK_WARN_MS")
if _env:
    try:
        enable(float(_env))
    except ValueError:
        import logging

        logging.getLogger("greenline.watchdog").warning(
            "ignoring GREENLINE_BLOCK_WARN_MS=%r: not a positive number", _env)
