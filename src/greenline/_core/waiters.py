"""The wait list under every lock, event and queue.

A primitive keeps a list of :class:`Waiter` registrations under a guard of
its own (a real lock, as primitives may be shared between OS threads);
whoever hands a waiter what it waits for sets ``fired`` under that guard and
calls :func:`notify`; the waiter sleeps in :func:`park`.  The wake crosses
OS threads through the waiter's hub's ``call_threadsafe``, and a plain OS
thread with no hub blocks on a real lock of its own instead.

May import: the standard library, ``greenlet`` and :mod:`.hub`.
"""

from __future__ import annotations

import _thread
from typing import Any

from greenlet import getcurrent, greenlet

from greenline._core.hub import Hub, get_hub, get_hub_if_exists

__all__ = ["Waiter", "notify", "notify_all", "park"]

# Captured before anything can monkey-patch _thread: a hub-less thread's
# wait must stay a real OS-thread lock.
_allocate_real_lock = _thread.allocate_lock
_get_ident = _thread.get_ident
_TIMEOUT_MAX = _thread.TIMEOUT_MAX


def _main_os_ident() -> int | None:
    # greenline is imported before any patching, so this is the real one.
    import threading

    return threading.main_thread().ident


_MAIN_IDENT = _main_os_ident()


class Waiter:
    """One green thread's registration in a primitive's waiter list.

    ``fired`` is set (under the primitive's guard) by whoever hands the
    waiter what it waits for; ``expired`` by its own timer; ``waiting`` is
    True only while the green thread is inside :func:`park` for this
    registration, so a wake arriving late from another OS thread cannot
    resume it out of some later, unrelated wait.

    A plain OS thread that has no hub (a thread-pool worker, a thread started
    before patching) is not given one just to wait: it has no other green
    threads to run meanwhile, so it blocks on a real lock of its own
    (``os_lock``), exactly as with the stdlib, and needs no descriptors.  The
    main thread always waits through its hub, so a wait nothing can end is
    reported as :class:`LoopExit` rather than hanging.
    """

    __slots__ = ("g", "hub", "fired", "expired", "waiting", "os_lock")

    def __init__(self) -> None:
        hub = get_hub_if_exists()
        self.os_lock: Any = None
        if hub is None and _get_ident() != _MAIN_IDENT:
            lock = _allocate_real_lock()
            lock.acquire()
            self.os_lock = lock
        elif hub is None:
            hub = get_hub()
        self.hub: Hub | None = hub
        self.g: greenlet = getcurrent()
        self.fired = False
        self.expired = False
        self.waiting = False


def notify(w: Waiter) -> None:
    """Wake waiter ``w`` (its ``fired`` flag is already set).  Never blocks;
    callable from any OS thread and from the hub."""
    hub = w.hub
    if hub is None:
        w.os_lock.release()
        return
    if hub.thread_ident == _get_ident():
        # Same thread: w is parked in park right now (it is registered and
        # nothing else in this thread runs concurrently), or already woken.
        hub.wake(w.g)
    else:
        hub.call_threadsafe(_wake_if_waiting, w)


def _wake_if_waiting(w: Waiter) -> None:
    # Runs in the waiter's own hub, so reading ``waiting`` cannot race.
    if w.waiting:
        w.hub.wake(w.g)  # type: ignore[union-attr]


def _expire(w: Waiter) -> None:
    w.expired = True
    w.hub.wake(w.g)  # type: ignore[union-attr]


def park(w: Waiter, timeout: float | None) -> None:
    """Block until ``w.fired`` or (with a timeout) ``w.expired``.

    Raises whatever the hub raises at this blocking point (Timeout, kill,
    LoopExit); the caller must then give up or pass on its registration.
    """
    hub = w.hub
    if hub is None:
        # A plain OS thread: block it on its own real lock, which notify
        # releases.  The hand-off may land just after the timeout; callers
        # look at ``fired`` under the guard either way.
        if not w.os_lock.acquire(True, -1 if timeout is None else min(timeout, _TIMEOUT_MAX)):
            w.expired = True
        return
    w.waiting = True
    try:
        if timeout is None:
            # A loop, not one block(): a stale wake must not end the wait.
            while not w.fired:
                hub.block()
        else:
            timer = hub.call_later(timeout, _expire, w)
            try:
                while not w.fired and not w.expired:
                    hub.block()
            finally:
                hub.cancel_timer(timer)
    finally:
        w.waiting = False


def notify_all(waiters: list[Waiter]) -> None:
    for w in waiters:
        w.fired = True
        notify(w)
