"""Waiting for any of several things: gevent's ``wait``, ``iwait`` and ``idle``.

>>> import greenline
>>> from greenline._core.wait import iwait
>>> tasks = [greenline.spawn(greenline.sleep, s) for s in (0.02, 0.01)]
>>> [tasks.index(t) for t in iwait(tasks)]     # in the order they finish
[1, 0]

Anything with ``rawlink(callback)`` and ``unlink(callback)`` can be waited
on: tasks, events, async results, thread-pool results.  ``wait()`` with no
objects runs the hub until nothing is left for it to do.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from greenlet import getcurrent

from greenline._core.hub import LoopExit, get_hub, os_thread_ident

__all__ = ["wait", "iwait", "idle"]


class _AnyReady:
    """The rawlink callback of one iwait: notes each object as it becomes
    ready and wakes the waiter, but only while it waits here: between two
    items the consumer may block on something else, and a wake then would
    end that unrelated wait."""

    __slots__ = ("hub", "g", "ready", "waiting")

    def __init__(self) -> None:
        self.hub = get_hub()
        self.g = getcurrent()
        self.ready: deque[Any] = deque()
        self.waiting = False

    def __call__(self, obj: Any) -> None:
        self.ready.append(obj)
        hub = self.hub
        if hub.thread_ident == os_thread_ident():
            if self.waiting:
                hub.wake(self.g)
        else:
            hub.call_threadsafe(self._wake_if_waiting)

    def _wake_if_waiting(self, _arg: object = None) -> None:
        if self.waiting:
            self.hub.wake(self.g)

    def expire(self, _arg: object = None) -> None:
        self.ready.append(_EXPIRED)
        self._wake_if_waiting()


_EXPIRED: Any = object()


def iwait(objects: Iterable[Any], timeout: float | None = None, count: int | None = None) -> Iterator[Any]:
    """Yield each of ``objects`` as it becomes ready, until all of them (or
    ``count``) are, or ``timeout`` seconds have passed."""
    objects = list(objects)
    want = len(objects) if count is None else min(count, len(objects))
    if want <= 0:
        return
    waiter = _AnyReady()
    linked = []
    timer = None
    try:
        for obj in objects:
            linked.append(obj)
            obj.rawlink(waiter)
        hub = waiter.hub
        if timeout is not None:
            timer = hub.call_later(max(0.0, timeout), waiter.expire)
        given = 0
        while given < want:
            while not waiter.ready:
                waiter.waiting = True
                try:
                    hub.block()
                finally:
                    waiter.waiting = False
            obj = waiter.ready.popleft()
            if obj is _EXPIRED:
                return
            given += 1
            yield obj
    finally:
        if timer is not None:
            waiter.hub.cancel_timer(timer)
        for obj in linked:
            try:
                obj.unlink(waiter)
            except Exception:  # an object already done may refuse
                pass


def wait(objects: Iterable[Any] | None = None, timeout: float | None = None,
         count: int | None = None) -> Any:
    """Wait for ``objects`` to be ready and return the list of those that
    are (in the order they became so), stopping at ``count`` of them or
    after ``timeout`` seconds.

    With no objects, run the hub until it has nothing left to do (no green
    thread, timer or descriptor could still wake anyone): return True then,
    or False if ``timeout`` passed first."""
    if objects is None:
        return _run_until_idle(timeout)
    return list(iwait(objects, timeout, count))


def _run_until_idle(timeout: float | None) -> bool:
    hub = get_hub()
    me = getcurrent()
    timer = None
    timed_out: list[bool] = []

    def expire(_arg: object) -> None:
        timed_out.append(True)
        hub.wake(me)

    if timeout is not None:
        timer = hub.call_later(max(0.0, timeout), expire)
    try:
        while not timed_out:
            hub.block()
    except LoopExit:
        # The hub found nothing left that could wake anyone: done.
        return True
    finally:
        if timer is not None:
            hub.cancel_timer(timer)
    return False


def idle(priority: int = 0) -> None:
    """Wait until the hub has run everything else that was ready."""
    hub = get_hub()
    # Bounded: green threads that keep yielding would otherwise keep the
    # hub from ever being idle.
    for _ in range(100):
        hub.yield_now()
        if not hub.ready:
            return
