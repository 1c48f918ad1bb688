"""Waiting on raw descriptors: pipes, terminals, epoll objects, sockets
that are not greenline's.

A greenline socket keeps its own readiness state (``FdState``) and waits
through :meth:`Hub.wait_fd` directly.  A raw descriptor may be closed and
its number reused behind our back, so here it is registered with the hub
only while someone waits on it, and readiness is asked of the kernel
(``poll`` with a zero timeout) before parking: no wait is started for
what is ready already, and a stale edge can never be trusted.

:mod:`greenline.select`, :mod:`greenline.subprocess`, the cooperative
``os.read``/``os.write`` that :mod:`greenline.monkey` installs, and
:mod:`greenline.socket`'s ``wait_read``/``wait_write`` are all built on this
module.

May import: the standard library, ``greenlet`` and :mod:`.hub`.
"""

from __future__ import annotations

import errno as _errno
import fcntl as _fcntl
import math as _math
import os as _os
import select as _std
import stat as _stat
from time import monotonic
from typing import Any

from greenlet import getcurrent

from greenline._core.hub import FdState, get_hub, get_hub_if_exists

__all__ = [
    "PIPE_BUF", "in_hub", "spend_budget", "ready_now", "wait_ready", "wait_any", "wait_readable_alone",
    "wait_read", "wait_write", "read_when_ready", "write_all", "cooperative_read", "cooperative_write",
]

# The real calls, saved before monkey-patching can replace them.
_poll = _std.poll
_epoll: Any = getattr(_std, "epoll", None)
_os_read = _os.read
_os_write = _os.write
_os_fstat = _os.fstat

_POLLIN = _std.POLLIN
_POLLOUT = _std.POLLOUT
_POLLPRI = _std.POLLPRI

# A write of at most this many bytes to a writable pipe is taken whole and
# at once, so it never blocks even on a blocking descriptor.
PIPE_BUF: int = getattr(_std, "PIPE_BUF", 512)


class _Expired(Exception):
    """The wait's own deadline passed (kept apart from a caller's TimeoutError)."""


def _expired() -> BaseException:
    return _Expired()


def in_hub() -> bool:
    # The hub itself polls with these objects once select is patched (a hub
    # created after patching gets our epoll): there the call must really block.
    hub = get_hub_if_exists()
    return hub is not None and getcurrent() is hub.greenlet


def spend_budget() -> None:
    """Count a call that may return at once against the hub's IO budget.

    A loop that polls something always ready (a result pipe another green
    thread is about to drain) would otherwise never give the hub, or that
    other green thread, a turn: real threads get preempted, green ones must
    yield.  Called before the readiness check, so what it reports is fresh.
    """
    hub = get_hub_if_exists()
    if hub is not None:
        hub.io_budget -= 1
        if hub.io_budget <= 0 and getcurrent() is not hub.greenlet:
            hub.yield_now()


def ready_now(fd: int, write: bool) -> bool:
    """Whether a read (or write) on ``fd`` would not block right now.  An
    invalid descriptor counts as ready: the call itself then reports it."""
    probe = _poll()
    probe.register(fd, _POLLOUT if write else _POLLIN)
    return bool(probe.poll(0))


def wait_ready(fd: int, write: bool, timeout: float | None = None) -> bool:
    """Park until ``fd`` is readable (writable with ``write``): True; False
    if ``timeout`` passed first.

    Ready is checked with the kernel, so on return a read, or a write of up
    to ``PIPE_BUF`` bytes, will not block even on a blocking descriptor.  Any
    number of green threads may wait on one descriptor: the first shares the
    hub's registration of it (a greenline socket's, or a temporary one),
    the others wait on a private epoll.
    """
    deadline = None if timeout is None else monotonic() + timeout
    while True:
        if ready_now(fd, write):
            return True
        remaining = None if deadline is None else deadline - monotonic()
        if remaining is not None and remaining <= 0:
            return False
        try:
            (wait_write if write else wait_read)(fd, remaining)
        except TimeoutError:
            return False
        except RuntimeError:
            # That direction of this descriptor already has a waiter (in
            # this hub or another thread's).
            wait_any({fd: _POLLOUT if write else _POLLIN}, remaining)


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


def cooperative_read(fd: int, n: int) -> bytes:
    """:func:`os.read` that parks only the calling green thread while a
    blocking descriptor (a pipe, a terminal) has nothing to read.  Ready or
    non-blocking descriptors, and regular files, are read at once, so
    errors and ``BlockingIOError`` are the stdlib's."""
    if not ready_now(fd, False) and not in_hub() and _may_wait(fd, _os.O_WRONLY):
        wait_ready(fd, False)
    return _os_read(fd, n)


def _is_stream(fd: int) -> bool:
    # A pipe, socket or terminal: where a blocking write can wait for a reader.
    mode = _os_fstat(fd).st_mode
    return _stat.S_ISFIFO(mode) or _stat.S_ISSOCK(mode) or _stat.S_ISCHR(mode)


def cooperative_write(fd: int, data: Any) -> int:
    """:func:`os.write` that parks only the calling green thread while a
    blocking pipe, socket or terminal has no room.

    Such a write is made in pieces of at most ``PIPE_BUF`` bytes, each once
    the descriptor is writable, so none blocks; like the blocking call it
    returns only when everything is written (a write of up to ``PIPE_BUF``
    bytes stays one atomic write).  If the reader goes away after part was
    written, the count written so far is returned, as the kernel does.
    Non-blocking descriptors and regular files are written at once.
    """
    if in_hub():
        return _os_write(fd, data)
    ready = ready_now(fd, True)
    if ready and (memoryview(data).nbytes <= PIPE_BUF or not _is_stream(fd)):
        return _os_write(fd, data)
    if not _may_wait(fd, _os.O_RDONLY):
        return _os_write(fd, data)
    return write_all(fd, data)


def read_when_ready(fd: int, n: int) -> bytes:
    """Park until ``fd`` is readable, then read at most ``n`` bytes: the read
    of a blocking pipe that never blocks the OS thread."""
    wait_ready(fd, False)
    return _os_read(fd, n)


def write_all(fd: int, data: Any) -> int:
    """Write all of ``data`` to ``fd`` in pieces of at most ``PIPE_BUF``
    bytes, each once the descriptor is writable, so that none blocks even on
    a blocking pipe; return the count written.  If the reader goes away
    after part was written, that count is returned, as the kernel does; an
    error before anything was written is raised."""
    view = memoryview(data).cast("B")
    total = len(view)
    done = 0
    while done < total:
        wait_ready(fd, True)
        try:
            done += _os_write(fd, view[done:done + PIPE_BUF])
        except OSError:
            if done:
                return done
            raise
    return total


def wait_readable_alone(fd: int, timeout: float | None) -> bool:
    """Park until ``fd`` (a descriptor nobody else waits on) is readable.
    False if ``timeout`` passed first."""
    hub = get_hub()
    st = FdState(fd)
    st.temporary = True
    try:
        hub.wait_fd(st, False, timeout, _expired)
    except _Expired:
        return False
    finally:
        if st.hub is not None:
            st.hub.unregister(st)
    return True


if _epoll is not None:
    _EPOLLIN = _std.EPOLLIN
    _EPOLLOUT = _std.EPOLLOUT
    _EPOLLPRI = _std.EPOLLPRI

    def wait_any(interest: dict[int, int], timeout: float | None) -> None:
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
            wait_readable_alone(ep.fileno(), timeout)
        finally:
            ep.close()
else:  # pragma: no cover - macOS/BSD: the selector's kernel object is pollable too
    import selectors as _selectors

    _KernelSelector = _selectors.DefaultSelector

    def wait_any(interest: dict[int, int], timeout: float | None) -> None:
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
            wait_readable_alone(sel.fileno(), timeout)
        finally:
            sel.close()


def wait_read(fd: int, timeout: float | None = None) -> None:
    """Block the calling green thread until ``fd`` is readable.

    For a descriptor that is not a greenline socket (a pipe, a device).  The
    descriptor must stay open while waiting.
    """
    _wait_raw(fd, False, timeout)


def wait_write(fd: int, timeout: float | None = None) -> None:
    """Block the calling green thread until ``fd`` is writable."""
    _wait_raw(fd, True, timeout)


def _wait_raw(fd: int, write: bool, timeout: float | None) -> None:
    hub = get_hub()
    st = hub.fds.get(fd)
    if st is not None and not st.temporary:
        # A greenline socket on this descriptor is registered: share its
        # state.  Its next edge may be long in coming if it is ready now (the
        # edge was consumed), and its flags may be stale if the caller used
        # the raw descriptor, so ask the kernel first: ready means return.
        probe = _poll()
        probe.register(fd, _POLLOUT if write else _POLLIN)
        if probe.poll(0):
            if write:
                st.writable = True
            else:
                st.readable = True
            return
        hub.wait_fd(st, write, timeout)
        return
    # A raw descriptor may be closed and its number reused behind our back,
    # so it stays registered only while someone waits on it.
    if st is None:
        st = FdState(fd)
        st.temporary = True
    try:
        hub.wait_fd(st, write, timeout)
    finally:
        if st.reader is None and st.writer is None and st.hub is not None:
            st.hub.unregister(st)
