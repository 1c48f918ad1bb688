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

import errno as _errno
import fcntl as _fcntl
import math as _math
import operator as _operator
import os as _os
import select as _std
import stat as _stat
from collections.abc import Iterable
from select import *  # noqa: F403 - the module is a drop-in for the stdlib's
from time import monotonic as _monotonic
from typing import Any

from greenlet import getcurrent as _getcurrent

from greenline._core.hub import FdState as _FdState
from greenline._core.hub import get_hub as _get_hub
from greenline._core.hub import get_hub_if_exists as _get_hub_if_exists

__all__ = [name for name in dir(_std) if not name.startswith("_")]

# The real calls, saved before monkey-patching can replace them.
_select = _std.select
_poll = _std.poll
_epoll: Any = getattr(_std, "epoll", None)

_POLLIN = _std.POLLIN
_POLLOUT = _std.POLLOUT
_POLLPRI = _std.POLLPRI


class _Expired(Exception):
    """The wait's own deadline passed (kept apart from a caller's TimeoutError)."""


def _expired() -> BaseException:
    return _Expired()


def _in_hub() -> bool:
    # The hub itself polls with these objects once select is patched (a hub
    # created after patching gets our epoll): there the call must really block.
    hub = _get_hub_if_exists()
    return hub is not None and _getcurrent() is hub.greenlet


def _spend() -> None:
    """Count a call that may return at once against the hub's IO budget.

    A loop that polls something always ready (a result pipe another green
    thread is about to drain) would otherwise never give the hub, or that
    other green thread, a turn: real threads get preempted, green ones must
    yield.  Called before the readiness check, so what it reports is fresh.
    """
    hub = _get_hub_if_exists()
    if hub is not None:
        hub.io_budget -= 1
        if hub.io_budget <= 0 and _getcurrent() is not hub.greenlet:
            hub.yield_now()


def _ready_now(fd: int, write: bool) -> bool:
    """Whether a read (or write) on ``fd`` would not block right now.  An
    invalid descriptor counts as ready: the call itself then reports it."""
    probe = _poll()
    probe.register(fd, _POLLOUT if write else _POLLIN)
    return bool(probe.poll(0))


def _wait_fd(fd: int, write: bool, timeout: float | None = None) -> bool:
    """Park until ``fd`` is readable (writable with ``write``): True; False
    if ``timeout`` passed first.

    Ready is checked with the kernel, so on return a read, or a write of up
    to ``PIPE_BUF`` bytes, will not block even on a blocking descriptor.  Any
    number of green threads may wait on one descriptor: the first shares the
    hub's registration of it (a greenline socket's, or a temporary one),
    the others wait on a private epoll.
    """
    from greenline.socket import wait_read, wait_write

    deadline = None if timeout is None else _monotonic() + timeout
    while True:
        if _ready_now(fd, write):
            return True
        remaining = None if deadline is None else deadline - _monotonic()
        if remaining is not None and remaining <= 0:
            return False
        try:
            (wait_write if write else wait_read)(fd, remaining)
        except TimeoutError:
            return False
        except RuntimeError:
            # That direction of this descriptor already has a waiter (in
            # this hub or another thread's).
            _wait_any({fd: _POLLOUT if write else _POLLIN}, remaining)


_os_read = _os.read


def _may_wait(fd: int, wrong_mode: int) -> bool:
    """Whether a call that is not ready now would block on ``fd``: it is a
    blocking descriptor opened for that direction.  A non-blocking one
    answers at once (BlockingIOError), and so does one opened the other way
    (EBADF), so both go straight to the real call."""
    try:
        flags = _fcntl.fcntl(fd, _fcntl.F_GETFL)
    except OSError:
        return False  # invalid: the real call reports it
    return not flags & _os.O_NONBLOCK and flags & _os.O_ACCMODE != wrong_mode


def _cooperative_os_read(fd: int, n: int) -> bytes:
    """:func:`os.read` that parks only the calling green thread while a
    blocking descriptor (a pipe, a terminal) has nothing to read.  Ready or
    non-blocking descriptors, and regular files, are read at once, so
    errors and ``BlockingIOError`` are the stdlib's."""
    if not _ready_now(fd, False) and not _in_hub() and _may_wait(fd, _os.O_WRONLY):
        _wait_fd(fd, False)
    return _os_read(fd, n)


_os_write = _os.write
_os_fstat = _os.fstat
_PIPE_BUF: int = getattr(_std, "PIPE_BUF", 512)


def _is_stream(fd: int) -> bool:
    # A pipe, socket or terminal: where a blocking write can wait for a reader.
    mode = _os_fstat(fd).st_mode
    return _stat.S_ISFIFO(mode) or _stat.S_ISSOCK(mode) or _stat.S_ISCHR(mode)


def _cooperative_os_write(fd: int, data: Any) -> int:
    """:func:`os.write` that parks only the calling green thread while a
    blocking pipe, socket or terminal has no room.

    Such a write is made in pieces of at most ``PIPE_BUF`` bytes, each once
    the descriptor is writable, so none blocks; like the blocking call it
    returns only when everything is written (a write of up to ``PIPE_BUF``
    bytes stays one atomic write).  If the reader goes away after part was
    written, the count written so far is returned, as the kernel does.
    Non-blocking descriptors and regular files are written at once.
    """
    if _in_hub():
        return _os_write(fd, data)
    ready = _ready_now(fd, True)
    if ready and (memoryview(data).nbytes <= _PIPE_BUF or not _is_stream(fd)):
        return _os_write(fd, data)
    if not _may_wait(fd, _os.O_RDONLY):
        return _os_write(fd, data)
    view = memoryview(data).cast("B")
    total = len(view)
    done = 0
    while done < total:
        _wait_fd(fd, True)
        try:
            done += _os_write(fd, view[done:done + _PIPE_BUF])
        except OSError:
            if done:
                return done
            raise
    return total


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


def _wait_fd_readable(fd: int, timeout: float | None) -> bool:
    """Park until ``fd`` (a descriptor nobody else waits on) is readable.
    False if ``timeout`` passed first."""
    hub = _get_hub()
    st = _FdState(fd)
    st.temporary = True
    try:
        hub.wait_fd(st, False, timeout, _expired)
    except _Expired:
        return False
    finally:
        if st.hub is not None:
            st.hub._unregister(st)
    return True


if _epoll is not None:
    _EPOLLIN = _std.EPOLLIN
    _EPOLLOUT = _std.EPOLLOUT
    _EPOLLPRI = _std.EPOLLPRI

    def _wait_any(interest: dict[int, int], timeout: float | None) -> None:
        """Park until one of ``interest`` (fd -> poll mask) may be ready, or
        ``timeout`` passes.  A spurious return is allowed: callers re-check."""
        ep = _epoll(len(interest) or 1)
        try:
            for fd, mask in interest.items():
                events = 0
                if mask & _POLLIN:
                    events |= _EPOLLIN
                if mask & _POLLOUT:
                    events |= _EPOLLOUT
                if mask & _POLLPRI:
                    events |= _EPOLLPRI
                try:
                    ep.register(fd, events)
                except FileExistsError:
                    ep.modify(fd, events)
                except OSError as e:
                    if e.errno in (_errno.EPERM, _errno.EBADF):
                        # A regular file (always ready) or a closed
                        # descriptor: the caller's check reports either.
                        return
                    raise
            _wait_fd_readable(ep.fileno(), timeout)
        finally:
            ep.close()
else:  # pragma: no cover - macOS/BSD: the selector's kernel object is pollable too
    import selectors as _selectors

    _KernelSelector = _selectors.DefaultSelector

    def _wait_any(interest: dict[int, int], timeout: float | None) -> None:
        sel = _KernelSelector()
        try:
            if not hasattr(sel, "fileno"):
                # No pollable kernel object: wait in a pool thread instead.
                from greenline._core.threadpool import to_thread

                p = _poll()
                for fd, mask in interest.items():
                    p.register(fd, mask)
                to_thread(p.poll, None if timeout is None else _math.ceil(timeout * 1000))
                return
            for fd, mask in interest.items():
                events = (_selectors.EVENT_READ if mask & (_POLLIN | _POLLPRI) else 0) | (
                    _selectors.EVENT_WRITE if mask & _POLLOUT else 0)
                try:
                    sel.register(fd, events)
                except (OSError, ValueError):
                    return
            _wait_fd_readable(sel.fileno(), timeout)
        finally:
            sel.close()


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
    if _in_hub():
        return _select(rlist, wlist, xlist, timeout)
    _spend()
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
        _wait_any(interest, remaining)
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
        if _in_hub():
            return self._real.poll(timeout)
        _spend()
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
                _wait_any(self._fds, remaining)
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
            if _in_hub():
                return ep.poll(-1 if timeout is None else timeout, maxevents)  # type: ignore[no-any-return]
            _spend()
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
                _wait_fd_readable(ep.fileno(), remaining)
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
