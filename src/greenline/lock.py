"""Locks and semaphores for green threads: ``Semaphore``, ``BoundedSemaphore``,
``Lock`` and ``RLock``, with gevent's names and the stdlib's signatures.

>>> import greenline
>>> from greenline.lock import Semaphore
>>> sem = Semaphore(2)
>>> running = []
>>> def job(n):
...     with sem:
...         running.append(n)
...         greenline.sleep(0.01)
>>> _ = greenline.joinall([greenline.spawn(job, n) for n in range(5)])
>>> sorted(running)
[0, 1, 2, 3, 4]

Monkey-patching installs :class:`Lock` and :class:`RLock` as the stdlib's
``threading.Lock``/``_thread.allocate_lock``/``threading.RLock``, so they
also follow the stdlib's ``acquire(blocking=True, timeout=-1)`` protocol and
the private methods ``threading.Condition`` uses.

Waiting works across OS threads: a green thread parked here may be woken by a
release in another OS thread (the thread pool runs user code in real threads
that use the same patched locks).  Each primitive guards its few lines of
state changes with a real lock saved at import, never held across a block.

Waiters are served first come, first served: a release with waiters hands the
permit straight to the first one (nobody can barge in before it runs).  If
that waiter raises instead of taking it (a timeout or a kill landed first),
it passes the permit on to the next waiter, so no permit is ever lost.
"""

from __future__ import annotations

import _thread
import sys
from collections import deque
from typing import Any

from greenlet import getcurrent, greenlet

from greenline._core.hub import LoopExit, get_hub, get_hub_if_exists
from greenline._core.waiters import Waiter, notify, notify_all, park

__all__ = ["Semaphore", "BoundedSemaphore", "Lock", "RLock", "DummySemaphore"]

# Captured before anything can monkey-patch _thread: the guards must stay
# real OS-thread locks.
_allocate_real_lock = _thread.allocate_lock
_get_ident = _thread.get_ident
_TIMEOUT_MAX = _thread.TIMEOUT_MAX


# The owner of an RLock taken while the interpreter finalizes, in a thread
# without a hub (see _current).
_FINALIZING: Any = object()


def _current() -> Any:
    """``getcurrent()``, also while the interpreter finalizes.

    Then greenlet refuses ``getcurrent()`` (RuntimeError), yet finalizers and
    weakref callbacks (logging's ``_removeHandlerRef``) still take locks.  No
    green thread switches any more: what runs is the main green thread, which
    ended the program.  A lock free then is taken as usual; one held by a
    green thread that can no longer run raises (a real thread would hang).
    """
    try:
        return getcurrent()
    except RuntimeError:
        hub = get_hub_if_exists()
        return hub.main if hub is not None else _FINALIZING


class Semaphore:
    """A counter of permits: :meth:`acquire` takes one (blocking while there
    are none), :meth:`release` gives one back.  ``Semaphore(1)`` is a lock
    that any green thread (or OS thread) may release.

    >>> from greenline.lock import Semaphore
    >>> sem = Semaphore(1)
    >>> sem.acquire()
    True
    >>> sem.acquire(timeout=0.01)     # no permit left: gives up
    False
    >>> sem.release()
    1
    >>> with sem:
    ...     sem.locked()
    True
    """

    def __init__(self, value: int = 1, hub: Any = None) -> None:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self.counter = value
        self._waiters: deque[Waiter] = deque()
        # wait() callers: told when a permit is free, take none.
        self._watchers: list[Waiter] = []
        self._guard = _allocate_real_lock()

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} counter={self.counter} "
                f"waiters={len(self._waiters)} at {id(self):#x}>")

    def locked(self) -> bool:
        """True if an :meth:`acquire` now would block."""
        return self.counter <= 0

    def ready(self) -> bool:
        """True if a permit is free (gevent's name for ``not locked()``)."""
        return self.counter > 0

    def _acquire(self, blocking: bool, timeout: float | None) -> bool:
        guard = self._guard
        guard.acquire()
        if self.counter > 0:
            self.counter -= 1
            guard.release()
            return True
        guard.release()
        if not blocking or (timeout is not None and timeout <= 0):
            return False
        return self._acquire_slow(timeout)

    def _acquire_slow(self, timeout: float | None) -> bool:
        guard = self._guard
        # Made outside the guard: the first wait in a thread creates its hub.
        w = Waiter()
        with guard:
            if self.counter > 0:
                self.counter -= 1
                return True
            self._waiters.append(w)
        try:
            park(w, timeout)
        except BaseException:
            with guard:
                if w.fired:
                    # Handed a permit, but raising instead of taking it.
                    self._release_locked()
                else:
                    self._waiters.remove(w)
            raise
        if w.fired:
            return True
        with guard:
            if w.fired:  # granted just as the timer fired: keep it
                return True
            self._waiters.remove(w)
        return False

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a permit, waiting for one if needed; True if taken.

        With ``blocking=False`` (or a ``timeout`` of 0) only try; with a
        ``timeout`` give up after that many seconds and return False.
        """
        return self._acquire(blocking, timeout)

    def _release_locked(self) -> None:
        # Under the guard.  A waiter gets the permit directly, so nobody
        # can take it between this release and that waiter running.
        if self._waiters:
            w = self._waiters.popleft()
            w.fired = True
            notify(w)
            return
        self.counter += 1
        if self._watchers:
            watchers, self._watchers = self._watchers, []
            notify_all(watchers)

    def release(self) -> int:
        """Give a permit back (from any green thread or OS thread); returns
        the counter."""
        guard = self._guard
        guard.acquire()
        if self._waiters or self._watchers:
            try:
                self._release_locked()
            finally:
                guard.release()
            return self.counter
        self.counter += 1
        guard.release()
        return self.counter

    def wait(self, timeout: float | None = None) -> int:
        """Wait until a permit is free (without taking it), or ``timeout``
        passes; return the counter."""
        if self.counter > 0 or (timeout is not None and timeout <= 0):
            return self.counter
        w = Waiter()
        with self._guard:
            if self.counter > 0:
                return self.counter
            self._watchers.append(w)
        try:
            park(w, timeout)
        finally:
            if not w.fired:
                with self._guard:
                    if w in self._watchers:
                        self._watchers.remove(w)
        return self.counter

    def __enter__(self) -> bool:
        return self._acquire(True, None)

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- gevent's link API: call back (in the linking thread's hub, never
    # inside release()) whenever a permit is free, until unlinked ------------

    #: gevent's semaphores are bound to a hub; greenline's are not (any
    #: green or OS thread may wait on one): always None.
    hub: Any = None
    _links: list[_Link] | None = None

    def rawlink(self, callback: Any) -> None:
        """Call ``callback(self)`` soon after each time a permit becomes
        free (soon, if one is free now), until :meth:`unlink`."""
        if not callable(callback):
            raise TypeError(f"Expected callable: {callback!r}")
        link = _Link(self, callback)
        with self._guard:
            if self._links is None:
                self._links = []
            self._links.append(link)
            if self.counter <= 0:
                self._watchers.append(link)
                return
        link.release()  # free now: call back soon

    def unlink(self, callback: Any) -> None:
        with self._guard:
            for link in self._links or ():
                if link.callback == callback:
                    self._links.remove(link)  # type: ignore[union-attr]
                    if link in self._watchers:
                        self._watchers.remove(link)
                    return

    def linkcount(self) -> int:
        return len(self._links or ())

    def _at_fork_reinit(self) -> None:
        # The child has none of the parent's waiters, and the guard may have
        # been held by a thread that does not exist there.
        self._guard = _allocate_real_lock()
        self._waiters = deque()
        self._watchers = []
        self._links = None


class _Link(Waiter):
    """A :meth:`Semaphore.rawlink` callback, kept among the semaphore's
    watchers: ``notify`` takes it for a hub-less OS thread's waiter and
    calls ``os_lock.release()``, which schedules the callback in the hub of
    the thread that linked it (so release() costs nothing more)."""

    __slots__ = ("sem", "callback", "link_hub", "scheduled")

    def __init__(self, sem: Semaphore, callback: Any) -> None:
        # No green thread waits on it: none of Waiter's set-up.
        self.hub = None
        self.os_lock = self
        self.g = None  # type: ignore[assignment]
        self.fired = self.expired = self.waiting = False
        self.sem = sem
        self.callback = callback
        self.link_hub = get_hub()
        self.scheduled = False

    def release(self) -> None:
        if self.scheduled:
            return
        self.scheduled = True
        hub = self.link_hub
        if hub.thread_ident == _get_ident():
            hub.call_later(0, self._run)
        else:
            hub.call_threadsafe(self._run)

    def _run(self, _arg: object = None) -> None:
        self.scheduled = False
        self.fired = False
        sem = self.sem
        with sem._guard:
            if self not in (sem._links or ()):
                return
            if sem.counter <= 0:  # taken again meanwhile: wait for the next
                if self not in sem._watchers:
                    sem._watchers.append(self)
                return
            # Free: call back, and watch for the next time.
            if self not in sem._watchers:
                sem._watchers.append(self)
        try:
            self.callback(sem)
        except BaseException:
            self.link_hub.handle_error(self.callback, *sys.exc_info())


class BoundedSemaphore(Semaphore):
    """A :class:`Semaphore` that refuses to be released more often than it
    was acquired (``ValueError``), which catches a class of bugs.

    >>> from greenline.lock import BoundedSemaphore
    >>> sem = BoundedSemaphore(1)
    >>> sem.release()
    Traceback (most recent call last):
      ...
    ValueError: Semaphore released too many times
    """

    def __init__(self, value: int = 1, hub: Any = None) -> None:
        super().__init__(value)
        self._initial_value = value

    def release(self) -> int:
        with self._guard:
            if self.counter >= self._initial_value:
                raise ValueError("Semaphore released too many times")
            self._release_locked()
            return self.counter

    def _at_fork_reinit(self) -> None:
        super()._at_fork_reinit()
        self.counter = self._initial_value


class DummySemaphore:
    """A semaphore that never blocks (what an unbounded pool uses)."""

    def __init__(self, value: int | None = None) -> None:
        self.counter = 1

    def locked(self) -> bool:
        return False

    def ready(self) -> bool:
        return True

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        return True

    def release(self) -> int:
        return self.counter

    def wait(self, timeout: float | None = None) -> int:
        return self.counter

    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc: object) -> None:
        pass


def _stdlib_timeout(blocking: bool, timeout: float | None) -> float | None:
    # The stdlib spells "forever" -1; gevent code passes None.
    if timeout is None or timeout == -1:
        return None
    if not blocking:
        raise ValueError("can't specify a timeout for a non-blocking call")
    if timeout < 0:
        raise ValueError("timeout value must be positive")
    if timeout > _TIMEOUT_MAX:
        raise OverflowError("timeout value is too large")
    return timeout


class Lock(Semaphore):
    """A mutual-exclusion lock for green threads (and OS threads), usable
    wherever ``threading.Lock`` is.

    >>> from greenline.lock import Lock
    >>> lock = Lock()
    >>> with lock:
    ...     lock.acquire(blocking=False)
    False
    >>> lock.locked()
    False
    >>> lock.release()
    Traceback (most recent call last):
      ...
    RuntimeError: release unlocked lock
    """

    def __init__(self, hub: Any = None) -> None:
        super().__init__(1)

    # The uncontended paths are written out in full: under monkey-patching
    # every stdlib lock (logging, queue, futures) runs through them.

    def acquire(self, blocking: bool = True, timeout: float | None = -1) -> bool:  # type: ignore[override]
        """``threading.Lock.acquire``: ``timeout`` -1 (or None) waits
        forever; True if the lock was taken."""
        if timeout == -1 or timeout is None:
            timeout = None
        else:
            timeout = _stdlib_timeout(blocking, timeout)
        guard = self._guard
        guard.acquire()
        if self.counter:
            self.counter = 0
            guard.release()
            return True
        guard.release()
        if not blocking or (timeout is not None and timeout <= 0):
            return False
        return self._acquire_slow(timeout)

    acquire_lock = acquire

    def __enter__(self) -> bool:
        guard = self._guard
        guard.acquire()
        if self.counter:
            self.counter = 0
            guard.release()
            return True
        guard.release()
        return self._acquire_slow(None)

    def release(self) -> None:  # type: ignore[override]
        guard = self._guard
        guard.acquire()
        if self.counter:
            guard.release()
            raise RuntimeError("release unlocked lock")
        if self._waiters or self._watchers:
            try:
                self._release_locked()
            finally:
                guard.release()
            return
        self.counter = 1
        guard.release()

    release_lock = release

    def locked_lock(self) -> bool:
        return self.counter <= 0

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _at_fork_reinit(self) -> None:
        super()._at_fork_reinit()
        self.counter = 1

    def __repr__(self) -> str:
        state = "locked" if self.counter <= 0 else "unlocked"
        return f"<{state} {type(self).__module__}.{type(self).__name__} object at {id(self):#x}>"


class RLock:
    """A re-entrant lock: the green thread that holds it may acquire it
    again, and must release it as many times.  Works as the lock of the
    stdlib's ``threading.Condition``.

    >>> from greenline.lock import RLock
    >>> lock = RLock()
    >>> with lock:
    ...     with lock:
    ...         lock._recursion_count()
    2
    """

    __slots__ = ("_block", "_owner", "_count", "__weakref__")

    def __init__(self, hub: Any = None) -> None:
        self._block = Lock()
        self._owner: greenlet | None = None
        self._count = 0

    def __repr__(self) -> str:
        state = "locked" if self._owner is not None else "unlocked"
        return (f"<{state} {type(self).__module__}.{type(self).__name__} object "
                f"owner={self._owner!r} count={self._count} at {id(self):#x}>")

    def acquire(self, blocking: bool = True, timeout: float | None = -1) -> bool:
        try:
            me = getcurrent()
        except RuntimeError:  # the interpreter finalizes
            me = _current()
        if self._owner is me:
            self._count += 1
            return True
        block = self._block
        if timeout == -1 or timeout is None:
            # The underlying lock's fast path, inlined.
            guard = block._guard
            guard.acquire()
            if block.counter:
                block.counter = 0
                guard.release()
                self._owner = me
                self._count = 1
                return True
            guard.release()
        if not block.acquire(blocking, timeout):
            return False
        self._owner = me
        self._count = 1
        return True

    def __enter__(self) -> bool:
        return self.acquire()

    def release(self) -> None:
        try:
            me = getcurrent()
        except RuntimeError:  # the interpreter finalizes
            me = _current()
        if self._owner is not me:
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if not self._count:
            self._owner = None
            self._block.release()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def locked(self) -> bool:
        return self._block.locked()

    # -- the private protocol threading.Condition uses --------------------

    def _is_owned(self) -> bool:
        return self._owner is _current()

    def _recursion_count(self) -> int:
        return self._count if self._owner is _current() else 0

    def _release_save(self) -> tuple[int, greenlet | None]:
        if self._owner is not _current():
            raise RuntimeError("cannot release un-acquired lock")
        state = (self._count, self._owner)
        self._count = 0
        self._owner = None
        self._block.release()
        return state

    def _acquire_restore(self, state: tuple[int, greenlet | None]) -> None:
        # Condition.wait must return holding the lock whatever happens, or
        # the caller's ``with cond:`` would release a lock it does not hold.
        # So a kill or timeout landing here is raised only once the lock is
        # taken again.
        deferred: BaseException | None = None
        while True:
            try:
                self._block.acquire()
                break
            except LoopExit:
                raise
            except BaseException as e:
                if deferred is None:
                    deferred = e
        self._count, self._owner = state
        if deferred is not None:
            raise deferred

    def _at_fork_reinit(self) -> None:
        self._block._at_fork_reinit()
        self._owner = None
        self._count = 0
