"""Cooperative ``select``: ``select``, ``poll`` and ``epoll`` that park only the
calling green thread.

>>> from greenline import select, socket
>>> a, b = socket.socketpair()
>>> select.select([a], [], [], 0)
([], [], [])
>>> b.sendall(b"x")
>>> select.select([a], [], [], 1)[0] == [a]
True
>>> a.close(); b.close()

How a wait on many descriptors works: the readiness check itself is the
standard library's own call with a zero timeout (so its semantics, errors and
accepted arguments are exactly the stdlib's); only when nothing is ready does
the green thread park, on a private epoll instance that holds the descriptors
it waits for.  An epoll descriptor is itself pollable, so the hub waits on it
like on a socket, and the descriptors stay free for other green threads to
read or write meanwhile (the hub allows one reader per descriptor, a private
epoll does not take that slot).
"""

from __future__ import annotations

import math as _math
import operator as _operator
import select as _std
from collections.abc import Iterable
from select import *  # noqa: F403 - the module is a drop-in for the stdlib's
from time import monotonic as _monotonic
from typing import Any

from greenline._core import fdio as _fdio

__all__ = [name for name in dir(_std) if not name.startswith("_")]

# The real calls, saved before monkey-patching can replace them.
_select = _std.select
_poll = _std.poll
_epoll: Any = getattr(_std, "epoll", None)

_POLLIN = _std.POLLIN
_POLLOUT = _std.POLLOUT
_POLLPRI = _std.POLLPRI
if _epoll is not None:
    _EPOLLIN = _std.EPOLLIN
    _EPOLLOUT = _std.EPOLLOUT
    _EPOLLPRI = _std.EPOLLPRI


def _fileno(obj: Any) -> int:
    if isinstance(obj, int):
        fd = obj
    else:
        try:
            fd = obj.fileno()
        except AttributeError:
            raise TypeError("argument must be an int, or have a fileno() method.") from None
        if not isinstance(fd, int):
            raise TypeError("fileno() returned a non-integer")
    if fd < 0:
        raise ValueError(f"file descriptor cannot be a negative integer ({fd})")
    return fd


def select(rlist: Iterable[Any], wlist: Iterable[Any], xlist: Iterable[Any],  # type: ignore[no-redef]
           timeout: float | None = None) -> tuple[list[Any], list[Any], list[Any]]:
    """:func:`select.select`, parking only the calling green thread.

    Same arguments, results and errors as the standard library's (which does
    the readiness check, so its ``FD_SETSIZE`` limit stays too).
    """
    if timeout is not None:
        # As the stdlib converts it: a float, or anything usable as an int.
        timeout = float(timeout) if isinstance(timeout, float) else float(_operator.index(timeout))
        if _math.isnan(timeout):
            raise ValueError("Invalid value NaN (not a number)")
        if timeout < 0:
            raise ValueError("timeout must be non-negative")
    # Lists are passed on as they are: the stdlib's select walks the caller's
    # own list (a fileno() that mutates it sees the same effect).
    if not isinstance(rlist, (list, tuple)):
        rlist = list(rlist)
    if not isinstance(wlist, (list, tuple)):
        wlist = list(wlist)
    if not isinstance(xlist, (list, tuple)):
        xlist = list(xlist)
    if _fdio.in_hub():
        return _select(rlist, wlist, xlist, timeout)
    _fdio.spend_budget()
    result = _select(rlist, wlist, xlist, 0)
    if result[0] or result[1] or result[2] or timeout == 0:
        return result
    interest: dict[int, int] = {}
    for objs, mask in ((rlist, _POLLIN), (wlist, _POLLOUT), (xlist, _POLLPRI)):
        for obj in objs:
            fd = _fileno(obj)
            interest[fd] = interest.get(fd, 0) | mask
    if not interest:
        # select([], [], [], t) is a portable sleep.
        if timeout is None:
            raise ValueError("select() with nothing to wait for and no timeout would block forever")
        from greenline._core.hub import sleep

        sleep(timeout)
        return [], [], []
    deadline = None if timeout is None else _monotonic() + timeout
    while True:
        remaining = None if deadline is None else deadline - _monotonic()
        if remaining is not None and remaining <= 0:
            return [], [], []
        _fdio.wait_any(interest, remaining)
        result = _select(rlist, wlist, xlist, 0)
        if result[0] or result[1] or result[2]:
            return result


def _poll_timeout_seconds(timeout: Any) -> float | None:
    """poll()'s timeout is in milliseconds; None or negative waits forever.
    Converted and range-checked as the stdlib does."""
    if timeout is None:
        return None
    if isinstance(timeout, float):
        if _math.isnan(timeout):
            raise ValueError("Invalid value NaN (not a number)")
        ms: float = timeout
    else:
        ms = _operator.index(timeout)
    if not -(2 ** 31) <= _math.ceil(ms) <= 2 ** 31 - 1:
        raise OverflowError("timeout is too large")
    if ms < 0:
        return None
    return ms / 1000.0


class _Poll:
    """What :func:`poll` returns: a poll object whose :meth:`poll` parks only
    the calling green thread.  Registration is kept in a real poll object,
    which also does every readiness check, so event masks and results are the
    kernel's own.  Made only by :func:`poll`, as the stdlib's."""

    __slots__ = ("_real", "_fds", "_busy")
    _real: Any
    _fds: dict[int, int]
    _busy: bool

    def __new__(cls, *args: Any, **kwargs: Any) -> _Poll:
        raise TypeError(f"cannot create '{cls.__module__}.{cls.__qualname__}' instances")

    @classmethod
    def _make(cls) -> _Poll:
        self = object.__new__(cls)
        self._real = _poll()
        self._fds = {}
        self._busy = False
        return self

    def register(self, fd: Any, eventmask: int = _POLLIN | _POLLPRI | _POLLOUT) -> None:
        fd = _fileno(fd)
        self._real.register(fd, eventmask)
        self._fds[fd] = eventmask

    def modify(self, fd: Any, eventmask: int) -> None:
        fd = _fileno(fd)
        self._real.modify(fd, eventmask)
        self._fds[fd] = eventmask

    def unregister(self, fd: Any) -> None:
        fd = _fileno(fd)
        self._real.unregister(fd)
        del self._fds[fd]

    def poll(self, timeout: Any = None) -> list[tuple[int, int]]:
        seconds = _poll_timeout_seconds(timeout)
        if self._busy:
            raise RuntimeError("concurrent poll() invocation")
        if _fdio.in_hub():
            return self._real.poll(timeout)
        _fdio.spend_budget()
        if seconds == 0:
            return self._real.poll(0)
        self._busy = True
        try:
            events = self._real.poll(0)
            if events:
                return events
            if not self._fds:
                if seconds is None:
                    raise ValueError("poll() with nothing registered and no timeout would block forever")
                from greenline._core.hub import sleep

                sleep(seconds)
                return []
            deadline = None if seconds is None else _monotonic() + seconds
            while True:
                remaining = None if deadline is None else deadline - _monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                _fdio.wait_any(self._fds, remaining)
                events = self._real.poll(0)
                if events:
                    return events
        finally:
            self._busy = False


def poll() -> _Poll:  # type: ignore[no-redef]
    """:func:`select.poll`: a poll object whose ``poll()`` parks only the
    calling green thread."""
    return _Poll._make()


if _epoll is not None:

    class epoll:  # type: ignore[no-redef]
        """:class:`select.epoll`, whose :meth:`poll` parks only the calling
        green thread (the stdlib type cannot be subclassed, so this wraps
        one).  Everything else is the real epoll's."""

        __slots__ = ("_ep", "__weakref__")

        def __init__(self, sizehint: int = -1, flags: int = 0) -> None:
            self._ep = _epoll(sizehint, flags)

        @classmethod
        def fromfd(cls, fd: int) -> Any:
            self = cls.__new__(cls)
            self._ep = _epoll.fromfd(fd)
            return self

        @property
        def closed(self) -> bool:
            return self._ep.closed  # type: ignore[no-any-return]

        def close(self) -> None:
            self._ep.close()

        def fileno(self) -> int:
            return self._ep.fileno()  # type: ignore[no-any-return]

        def register(self, fd: Any, eventmask: int = _EPOLLIN | _EPOLLOUT | _EPOLLPRI) -> None:
            self._ep.register(fd, eventmask)

        def modify(self, fd: Any, eventmask: int) -> None:
            self._ep.modify(fd, eventmask)

        def unregister(self, fd: Any) -> None:
            self._ep.unregister(fd)

        def poll(self, timeout: float | None = None, maxevents: int = -1) -> list[tuple[int, int]]:
            ep = self._ep
            if timeout is not None:
                timeout = float(timeout)
                if timeout < 0:
                    timeout = None
            if _fdio.in_hub():
                return ep.poll(-1 if timeout is None else timeout, maxevents)  # type: ignore[no-any-return]
            _fdio.spend_budget()
            if timeout == 0:
                return ep.poll(0, maxevents)  # type: ignore[no-any-return]
            events = ep.poll(0, maxevents)
            if events:
                return events  # type: ignore[no-any-return]
            deadline = None if timeout is None else _monotonic() + timeout
            while True:
                remaining = None if deadline is None else deadline - _monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                # The epoll descriptor is readable while it has events ready.
                if ep.closed:
                    raise ValueError("I/O operation on closed epoll object")
                _fdio.wait_readable_alone(ep.fileno(), remaining)
                events = ep.poll(0, maxevents)
                if events:
                    return events  # type: ignore[no-any-return]

        def __enter__(self) -> Any:
            if self._ep.closed:
                raise ValueError("I/O operation on closed epoll object")
            return self

        def __exit__(self, *exc: object) -> None:
            self._ep.close()

        def __repr__(self) -> str:
            return f"<greenline.select.epoll fd={-1 if self._ep.closed else self._ep.fileno()}>"



error = OSError  # type: ignore[misc]
