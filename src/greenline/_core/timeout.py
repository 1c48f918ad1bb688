"""Timeout: a deadline on whatever a green thread does, raised where it blocks.

>>> import greenline
>>> try:
...     with greenline.Timeout(0.01):
...         greenline.sleep(1)
... except greenline.Timeout as t:
...     print("timed out after", t)
timed out after 0.01 seconds
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from greenlet import getcurrent

from greenline._core.hub import get_hub

__all__ = ["Timeout", "with_timeout"]

T = TypeVar("T")


class Timeout(BaseException):
    """Raise ``exception`` (by default the Timeout itself) in the green thread
    that started it, ``seconds`` after :meth:`start`, at the point where that
    green thread blocks.  A timeout never interrupts pure computation.

    As a context manager it starts on entry and is cancelled on exit.  Pass
    ``exception=False`` to make the ``with`` block swallow its own timeout::

        with Timeout(5, False):
            data = sock.recv(1024)   # gives up quietly after 5 s

    It derives from ``BaseException`` (as gevent's does) so that a bare
    ``except Exception`` in the code it interrupts cannot swallow it.
    """

    def __init__(self, seconds: float | None = None, exception: Any = None, ref: bool = True,
                 priority: int = -1) -> None:
        super().__init__(seconds)
        self.seconds = seconds
        self.exception = exception
        self._timer: list[Any] | None = None
        self._hub: Any = None
        self._target: Any = None

    def start(self) -> None:
        """Arm the timer for the calling green thread (no-op without seconds)."""
        if self.pending:
            raise AssertionError("this Timeout is already started; cancel it first")
        if self.seconds is None:
            return
        hub = get_hub()
        self._hub = hub
        self._target = getcurrent()
        self._timer = hub.call_later(self.seconds, self._fire)

    @classmethod
    def start_new(cls, timeout: float | Timeout | None = None, exception: Any = None,
                  ref: bool = True) -> Timeout:
        """Create and start a Timeout (or start the one given)."""
        if isinstance(timeout, Timeout):
            if not timeout.pending:
                timeout.start()
            return timeout
        t = cls(timeout, exception)
        t.start()
        return t

    @classmethod
    def _start_new_or_dummy(cls, timeout: float | Timeout | None,
                            exception: Any = None) -> Any:
        """gevent's: a started Timeout, or a context manager doing nothing
        when ``timeout`` is None."""
        if timeout is None:
            from contextlib import nullcontext

            return nullcontext()
        return cls.start_new(timeout, exception)

    def _fire(self, _arg: object = None) -> None:
        self._timer = None
        exc = self.exception
        if exc is None or exc is False or isinstance(exc, str):
            # A string is the message (gevent's): the Timeout itself is raised.
            exc = self
        self._hub.throw(self._target, exc)

    @property
    def pending(self) -> bool:
        """True while the timer is armed and has not fired."""
        return self._timer is not None

    def cancel(self) -> None:
        """Disarm; also withdraw the exception if it fired but has not yet
        been raised (the green thread had not blocked again)."""
        hub = self._hub
        if hub is None:
            return
        if self._timer is not None:
            hub.cancel_timer(self._timer)
            self._timer = None
        target = self._target
        if target is not None:
            raised = hub.pending.get(target)
            if raised is self or (raised is not None and raised is self.exception):
                del hub.pending[target]

    close = cancel

    def __enter__(self) -> Timeout:
        if not self.pending:
            self.start()
        return self

    def __exit__(self, typ: object, value: object, tb: object) -> bool:
        self.cancel()
        return value is self and self.exception is False

    def __str__(self) -> str:
        if self.seconds is None:
            return ""
        unit = "second" if self.seconds == 1 else "seconds"
        if self.exception is None or self.exception is False:
            return f"{self.seconds} {unit}"
        return f"{self.seconds} {unit}: {self.exception}"

    def __repr__(self) -> str:
        return f"<Timeout seconds={self.seconds} exception={self.exception!r} pending={self.pending}>"


_NONE: Any = object()


def with_timeout(seconds: float, function: Callable[..., T], *args: Any,
                 timeout_value: Any = _NONE, **kwargs: Any) -> T:
    """Call ``function(*args, **kwargs)`` with a deadline.  On expiry return
    ``timeout_value`` if given, else raise :class:`Timeout`.

    >>> import greenline
    >>> greenline.with_timeout(0.01, greenline.sleep, 1, timeout_value="late")
    'late'
    """
    timeout = Timeout.start_new(seconds)
    try:
        return function(*args, **kwargs)
    except Timeout as t:
        if t is timeout and timeout_value is not _NONE:
            return timeout_value  # type: ignore[no-any-return]
        raise
    finally:
        timeout.cancel()

