"""Raw descriptors without blocking the OS thread, and ``fork``: gevent's
``gevent.os`` (``make_nonblocking``, ``nb_read``, ``nb_write``,
``tp_read``, ``tp_write``, ``fork``, ``waitpid``).

>>> import os
>>> from greenline.blocking.os import nb_read, nb_write, make_nonblocking
>>> r, w = os.pipe()
>>> make_nonblocking(r), make_nonblocking(w)
(True, True)
>>> nb_write(w, b"hi"), nb_read(r, 10)
(2, b'hi')

May import: the standard library and ``_core``.
"""

from __future__ import annotations

import fcntl
import os as _os
from typing import Any

from greenline._core.fdio import wait_read, wait_write
from greenline._core.threadpool import to_thread

__all__ = ["fork", "make_nonblocking", "nb_read", "nb_write", "tp_read", "tp_write", "waitpid",
           "fork_and_watch", "forkpty"]

_real_read = _os.read
_real_write = _os.write
_real_fork = _os.fork
_real_waitpid = _os.waitpid


def make_nonblocking(fd: int) -> bool:
    """Put ``fd`` in non-blocking mode; True if it was blocking."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL, 0)
    if not flags & _os.O_NONBLOCK:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | _os.O_NONBLOCK)
        return True
    return False


def nb_read(fd: int, n: int) -> bytes:
    """Read up to ``n`` bytes from non-blocking ``fd``, parking only the
    calling green thread until there is something to read."""
    while True:
        try:
            return _real_read(fd, n)
        except BlockingIOError:
            pass
        wait_read(fd)


def nb_write(fd: int, buf: Any) -> int:
    """Write to non-blocking ``fd``; the number of bytes written."""
    while True:
        try:
            return _real_write(fd, buf)
        except BlockingIOError:
            pass
        wait_write(fd)


def tp_read(fd: int, n: int) -> bytes:
    """``os.read`` in the thread pool (for descriptors that cannot be made
    non-blocking, such as regular files)."""
    return to_thread(_real_read, fd, n)


def tp_write(fd: int, buf: Any) -> int:
    return to_thread(_real_write, fd, buf)


def fork() -> int:
    """``os.fork()``; the child starts with a fresh hub (greenline's fork
    hooks do that for every fork)."""
    return _real_fork()


def forkpty() -> tuple[int, int]:
    return _os.forkpty()


def waitpid(pid: int, options: int) -> tuple[int, int]:
    """``os.waitpid``, cooperative unless ``options`` has ``WNOHANG``."""
    from greenline.subprocess import waitpid as green_waitpid

    return green_waitpid(pid, options)


def fork_and_watch(callback: Any = None, loop: Any = None, ref: bool = False,
                   fork: Any = fork) -> int:
    """Fork; in the parent, call ``callback(watcher)`` when the child ends
    (``watcher.pid``, ``watcher.rstatus``)."""
    pid = fork()
    if pid and callback is not None:
        from greenline._core.task import spawn

        def watch() -> None:
            _, status = waitpid(pid, 0)
            callback(_ChildStatus(pid, status))

        spawn(watch)
    return pid


class _ChildStatus:
    def __init__(self, pid: int, status: int) -> None:
        self.pid = pid
        self.rpid = pid
        self.rstatus = status
