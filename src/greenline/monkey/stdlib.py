"""Patches for the standard library's blocking calls: ``time.sleep``,
``socket`` (and name resolution), ``ssl``, ``select``, ``selectors``,
``queue``, ``subprocess`` and ``os`` (``waitpid``, ``read``, ``write``).

Each replaces the stdlib's names with the cooperative module of the same
name in greenline (:mod:`greenline.socket`, :mod:`greenline.ssl`...).

May import: :mod:`.originals`, greenline's public modules and ``_core``.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Mapping
from typing import Any

from greenline.monkey.originals import MISSING, builtin_like, is_module_patched, patched, replace, warn

__all__ = [
    "patch_time", "patch_socket", "patch_dns", "patch_ssl", "patch_select", "patch_selectors",
    "patch_queue", "patch_subprocess", "patch_os",
]


# -- time ------------------------------------------------------------------------


def _green_time_sleep(secs: float) -> None:
    """time.sleep(secs), parking only the calling green thread."""
    from greenline._core.hub import sleep

    if secs < 0:
        raise ValueError("sleep length must be non-negative")
    sleep(secs)


def patch_time() -> None:
    """``time.sleep`` parks only the calling green thread."""
    import time

    replace(time, "sleep", builtin_like(_green_time_sleep, "time", "sleep"))
    patched.add("time")


# Not create_connection, create_server nor getfqdn: the stdlib's are built on
# names patched here (the socket class, getaddrinfo, gethostbyaddr), so they
# are cooperative as they are, and they keep working for code (and tests)
# that swap socket.socket for something else.  Not SocketType either: the
# stdlib's is the C base class _socket.socket, of which the green class is a
# subclass.
_SOCKET_NAMES = ("socket", "socketpair", "fromfd")
_DNS_NAMES = ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo")


def patch_socket(dns: bool = True, aggressive: bool = True) -> None:
    """``socket.socket``, ``socketpair`` and ``fromfd`` are greenline's (so
    the stdlib's ``create_connection``/``create_server`` make green sockets);
    with ``dns`` also name resolution (run in the thread pool)."""
    import socket

    from greenline import socket as gsocket

    for name in _SOCKET_NAMES:
        replace(socket, name, getattr(gsocket, name))
    patched.add("socket")
    if dns:
        patch_dns()


def patch_dns() -> None:
    """``socket.getaddrinfo`` and friends resolve off the hub."""
    import socket

    from greenline import socket as gsocket

    for name in _DNS_NAMES:
        replace(socket, name, getattr(gsocket, name))
    patched.add("dns")


_SSL_NAMES = ("SSLContext", "SSLSocket", "wrap_socket", "create_default_context", "get_server_certificate")


def _namespace(mod: object) -> Mapping[str, Any]:
    # The globals of a module in sys.modules, read without running its code:
    # a lazy module loads itself on attribute access, and what a program put
    # in sys.modules need not be a module at all (a lazy-module proxy may
    # have a __dict__ that is no dict, or one that raises).
    try:
        namespace = object.__getattribute__(mod, "__dict__")
    except Exception:
        return {}
    return namespace if isinstance(namespace, (dict, types.MappingProxyType)) else {}


def _ssl_already_used() -> str | None:
    std_ssl = sys.modules.get("ssl")
    if std_ssl is None or is_module_patched("ssl"):
        return None
    original = std_ssl.SSLContext
    holders = sorted(
        name for name, mod in list(sys.modules.items())
        if mod is not None and name not in ("ssl", "greenline.monkey") and not name.startswith("greenline")
        and _namespace(mod).get("SSLContext") is original
    )
    import gc

    # By type: isinstance() would ask a proxy for its __class__, which may
    # run its code (and raise).
    made = sum(1 for o in gc.get_objects() if issubclass(type(o), original))
    parts = []
    if made:
        parts.append(f"{made} ssl.SSLContext object(s) already exist and will keep making blocking sockets")
    if holders:
        parts.append("module(s) " + ", ".join(holders[:10]) + " imported ssl.SSLContext by name and keep the original")
    return "; ".join(parts) or None


def patch_ssl() -> None:
    """``ssl.SSLContext``/``SSLSocket`` and the module's helpers are
    greenline's.  Warns if contexts were already created."""
    problem = _ssl_already_used()
    if problem:
        warn(f"Monkey-patching ssl after it was already used: {problem}. "
              "Call greenline.monkey.patch_all() before anything imports or uses ssl.")
    import ssl

    from greenline import ssl as gssl

    for name in _SSL_NAMES:
        if hasattr(ssl, name) or name in ("SSLContext", "SSLSocket"):
            replace(ssl, name, getattr(gssl, name))
    patched.add("ssl")


# -- select, selectors ----------------------------------------------------------------


def patch_select(aggressive: bool = True) -> None:
    """``select.select``, ``select.poll`` and ``select.epoll`` park only the
    calling green thread.  ``kqueue``/``devpoll`` (no cooperative version)
    are removed, so code that probes for them falls back to ``poll``."""
    import select

    from greenline import select as gselect

    # No hub is made here (gevent's patch_all makes none either): the hub
    # module saved the real epoll when greenline was imported, before any
    # patching, so a hub made later still polls with it.
    replace(select, "select", builtin_like(gselect.select, "select", "select"))
    replace(select, "poll", builtin_like(gselect.poll, "select", "poll"))
    if hasattr(gselect, "epoll"):
        replace(select, "epoll", gselect.epoll)
    if aggressive:
        for name in ("kqueue", "kevent", "devpoll"):
            if hasattr(select, name):
                replace(select, name, MISSING)
    patched.add("select")


def patch_selectors(aggressive: bool = True) -> None:
    """``selectors.DefaultSelector`` (and the Select/Poll/Epoll selectors)
    are cooperative; so are the selectors ``subprocess`` and
    ``multiprocessing.connection`` captured at import."""
    import selectors

    from greenline import selectors as gselectors

    for name in ("SelectSelector", "PollSelector", "EpollSelector", "DefaultSelector"):
        if hasattr(gselectors, name):
            replace(selectors, name, getattr(gselectors, name))
    if aggressive:
        for name in ("KqueueSelector", "DevpollSelector"):
            if hasattr(selectors, name):
                replace(selectors, name, MISSING)
    # Modules that picked a selector class when they were imported.
    sub = sys.modules.get("subprocess")
    if sub is not None and hasattr(sub, "_PopenSelector"):
        replace(sub, "_PopenSelector", gselectors.PollSelector)
    conn = sys.modules.get("multiprocessing.connection")
    if conn is not None and hasattr(conn, "_WaitSelector"):
        replace(conn, "_WaitSelector", gselectors.PollSelector)
    patched.add("selectors")


# -- queue ------------------------------------------------------------------------------


def _make_simple_queue() -> type:
    from greenline.queue import Queue

    class SimpleQueue(Queue):
        """:class:`queue.SimpleQueue` for green threads: unbounded, ``put``
        never blocks."""

        def __init__(self) -> None:
            super().__init__()

        def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
            super().put(item)

        def put_nowait(self, item: Any) -> None:
            super().put(item)

        __class_getitem__: Any = classmethod(types.GenericAlias)

    SimpleQueue.__module__ = "queue"
    return SimpleQueue


_SimpleQueue: type | None = None


def patch_queue() -> None:
    """``queue.SimpleQueue`` (a C type that blocks the OS thread) becomes a
    green one.  ``Queue``, ``LifoQueue`` and ``PriorityQueue`` are built on
    ``threading``'s locks, so they are green once threads are patched (and
    keep every attribute, e.g. ``q.mutex``); if threads are not patched they
    are replaced by :mod:`greenline.queue`'s."""
    global _SimpleQueue
    import queue

    if _SimpleQueue is None:
        _SimpleQueue = _make_simple_queue()
    replace(queue, "SimpleQueue", _SimpleQueue)
    if "threading" not in patched:
        from greenline import queue as gqueue

        for name in ("Queue", "LifoQueue", "PriorityQueue"):
            replace(queue, name, getattr(gqueue, name))
    patched.add("queue")


# -- subprocess, os ---------------------------------------------------------------------


def patch_subprocess() -> None:
    """``subprocess.Popen`` is :class:`greenline.subprocess.Popen`
    (cooperative ``wait``, pipes and ``communicate``); ``run``, ``call``,
    ``check_output`` use it."""
    import subprocess

    from greenline import subprocess as gsub

    replace(subprocess, "Popen", gsub.Popen)
    patched.add("subprocess")


def patch_os() -> None:
    """``os.waitpid`` parks only the calling green thread (so do
    ``multiprocessing.Process.join`` and ``Popen.wait`` on its children), and
    so do ``os.read`` on a blocking pipe or terminal with nothing to read and
    ``os.write`` on one without room (a reader and a writer of one pipe may
    be green threads of one process).
    ``os.fork`` needs no patch: greenline's fork hooks give the child a fresh
    hub and thread pool."""
    import os

    from greenline import subprocess as gsub
    from greenline._core.fdio import cooperative_read, cooperative_write

    replace(os, "waitpid", builtin_like(gsub.waitpid, "os", "waitpid"))
    replace(os, "read", builtin_like(cooperative_read, "os", "read"))
    replace(os, "write", builtin_like(cooperative_write, "os", "write"))
    patched.add("os")
