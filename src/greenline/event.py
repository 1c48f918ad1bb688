"""One-shot signals between green threads: ``Event`` and ``AsyncResult``.

>>> import greenline
>>> from greenline.event import Event
>>> ready = Event()
>>> waiter = greenline.spawn(ready.wait)
>>> greenline.sleep(0)          # the waiter is now parked
>>> ready.set()
>>> waiter.get()
True

Both work across OS threads: a green thread waiting here is woken by a
``set()`` made in another OS thread through its own hub.
"""

from __future__ import annotations

import _thread
from collections.abc import Callable
from typing import Any

from greenline._core.hub import get_hub, os_thread_ident
from greenline._core.timeout import Timeout
from greenline._core.waiters import Waiter, notify_all, park

__all__ = ["Event", "AsyncResult"]

_allocate_real_lock = _thread.allocate_lock


class Event:
    """A flag green threads can wait for, like ``threading.Event``.

    :meth:`set` wakes every waiter; until :meth:`clear`, later waits return
    at once.

    >>> from greenline.event import Event
    >>> e = Event()
    >>> e.wait(timeout=0.01)       # nobody sets it
    False
    >>> e.set()
    >>> e.is_set(), e.wait()
    (True, True)
    """

    # The hub of the OS thread that added the callbacks: a set() made in
    # another OS thread runs them there, through its loop (gevent's).
    _links_hub: Any = None
    _links_pending = False

    def __init__(self) -> None:
        self._flag = False
        self._waiters: list[Waiter] = []
        self._links: list[Callable[[Any], object]] = []
        self._guard = _allocate_real_lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {'set' if self._flag else 'clear'} waiters={len(self._waiters)}>"

    def is_set(self) -> bool:
        return self._flag

    isSet = is_set
    ready = is_set

    def set(self) -> None:
        """Set the flag and wake every green thread waiting for it."""
        with self._guard:
            self._flag = True
            waiters, self._waiters = self._waiters, []
            notify_all(waiters)
        if self._links:
            self._notify_links()

    def clear(self) -> None:
        """Reset the flag; waiters already woken by :meth:`set` still return
        True (as with ``threading.Event``)."""
        self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the flag is set or ``timeout`` seconds pass; return
        True if it was set (False on timeout)."""
        if self._flag:
            return True
        if isinstance(timeout, Timeout):
            # gevent's: a Timeout object bounds the wait; its expiry is a
            # timed-out wait, not an error.
            try:
                with timeout:
                    return self.wait()
            except Timeout as e:
                if e is not timeout:
                    raise
                return self._flag
        if timeout is not None and timeout <= 0:
            return False
        return self._wait(timeout)

    def _wait(self, timeout: float | None) -> bool:
        w = Waiter()
        with self._guard:
            if self._flag:
                return True
            self._waiters.append(w)
        try:
            park(w, timeout)
        finally:
            if not w.fired:
                with self._guard:
                    if not w.fired:
                        self._waiters.remove(w)
        return w.fired or self._flag

    # -- callbacks (gevent's rawlink) ---------------------------------------

    def rawlink(self, callback: Callable[[Any], object]) -> None:
        """Call ``callback(self)`` when the event is set (at once if it is).
        It runs inside :meth:`set`, so it must not block; when :meth:`set` is
        called in another OS thread, it runs in this one's hub instead (as
        in gevent), possibly before that ``set()`` returns."""
        if not callable(callback):
            raise TypeError(f"Expected callable: {callback!r}")
        if self._links_hub is None:
            self._links_hub = get_hub()
        self._links.append(callback)
        if self.ready() and not self._links_pending:
            self._run_links()

    def unlink(self, callback: Callable[[Any], object]) -> None:
        if callback in self._links:
            self._links.remove(callback)

    def linkcount(self) -> int:
        return len(self._links)

    def _notify_links(self) -> None:
        hub = self._links_hub
        if hub is None or hub.thread_ident == os_thread_ident():
            self._run_links()
            return
        if self._links_pending:
            return  # the owner's hub runs them, new ones included
        self._links_pending = True
        hub.loop.run_callback_threadsafe(self._run_pending_links)

    def _run_pending_links(self) -> None:
        try:
            self._run_links()
        finally:
            self._links_pending = False

    def _run_links(self) -> None:
        # Popped one at a time from the live list: a callback that unlinks
        # another one before it has run stops it from running.
        links = self._links
        while links:
            cb = links.pop(0)
            try:
                cb(self)
            except BaseException:
                get_hub().handle_error(cb)


_UNSET: Any = object()


class AsyncResult(Event):
    """A value (or an exception) that one green thread delivers and others
    wait for: a one-shot future, gevent's ``AsyncResult``.

    >>> import greenline
    >>> from greenline.event import AsyncResult
    >>> result = AsyncResult()
    >>> _ = greenline.spawn_later(0.01, result.set, 42)
    >>> result.get()
    42

    It is also a task callback: ``task.link(result)`` (or ``rawlink``)
    delivers the task's value or exception into it.

    >>> r = AsyncResult()
    >>> greenline.spawn(lambda: 1 / 0).rawlink(r)
    >>> r.get()
    Traceback (most recent call last):
      ...
    ZeroDivisionError: division by zero
    """

    def __init__(self) -> None:
        super().__init__()
        self._value: Any = _UNSET
        self._exception: BaseException | None = None

    def __repr__(self) -> str:
        if self._exception is not None:
            state = f"exception={self._exception!r}"
        elif self._value is not _UNSET:
            state = f"value={self._value!r}"
        else:
            state = "unset"
        return f"<{type(self).__name__} {state} waiters={len(self._waiters)}>"

    # -- delivering --------------------------------------------------------

    _exc_tb: Any = None

    def set(self, value: Any = None) -> None:
        """Store ``value`` and wake every waiter."""
        self._value = value
        self._exception = None
        super().set()

    def set_exception(self, exception: BaseException | type[BaseException],
                      exc_info: Any = None) -> None:
        """Store ``exception`` (raised by :meth:`get`) and wake every waiter."""
        if isinstance(exception, type):
            exception = exception()
        # The traceback as it is now (or exc_info's): each get() raises the
        # exception with it, so repeated gets do not pile up their frames.
        self._exc_tb = exc_info[2] if exc_info else exception.__traceback__
        self._exception = exception
        self._value = _UNSET
        super().set()

    def __call__(self, source: Any) -> None:
        """Take a finished task's outcome: ``task.link(async_result)``."""
        if source.successful():
            self.set(source.value)
        else:
            self.set_exception(source.exception)

    # -- state -------------------------------------------------------------

    def successful(self) -> bool:
        """True once it holds a value (not an exception)."""
        return self._flag and self._exception is None

    @property
    def value(self) -> Any:
        """The value, or None if not set (or set to an exception)."""
        return None if self._value is _UNSET else self._value

    @property
    def exception(self) -> BaseException | None:
        """The exception it holds, or None."""
        return self._exception

    @property
    def exc_info(self) -> tuple[Any, ...]:
        e = self._exception
        return () if e is None else (type(e), e, self._exc_tb)

    # -- waiting -----------------------------------------------------------

    def _outcome(self) -> Any:
        if self._exception is not None:
            raise self._exception.with_traceback(self._exc_tb)
        return self.value

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Return the value or raise the exception, waiting for one.

        Raises :class:`greenline.Timeout` if nothing is delivered within
        ``timeout`` seconds (at once with ``block=False``)."""
        if self._flag:
            return self._outcome()
        if isinstance(timeout, Timeout):
            with timeout:
                return self.get(block)
        if not block or (timeout is not None and timeout <= 0):
            raise Timeout(timeout)
        if not self._wait(timeout):
            raise Timeout(timeout)
        return self._outcome()

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def wait(self, timeout: float | None = None) -> Any:  # type: ignore[override]
        """Wait until ready (or ``timeout``); return the value, or None if
        it holds an exception or the wait timed out (gevent's contract)."""
        super().wait(timeout)
        return self.value

    # concurrent.futures-style spellings, as gevent has them
    def result(self, timeout: float | None = None) -> Any:
        return self.get(timeout=timeout)

    set_result = set

    def done(self) -> bool:
        return self._flag

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False
