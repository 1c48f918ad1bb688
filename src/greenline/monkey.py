"""Make the standard library cooperative: ``monkey.patch_all()``.

>>> from greenline import monkey
>>> monkey.patch_all()          # doctest: +SKIP

Call it first thing in the program, before other imports: after it,
``socket``, ``ssl``, ``time.sleep``, ``select``, ``selectors``,
``threading``/``_thread``, ``queue``, ``subprocess``, ``os.waitpid``,
``os.read``/``os.write``, ``signal.signal`` and ``multiprocessing``'s pipes and locks are
greenline's, so plain blocking code (a thread per client, ``sock.recv()``,
``time.sleep()``) runs as green threads that switch wherever they would
block.  ``threading.Thread(...).start()`` starts a green thread; locks,
conditions, events, semaphores, barriers, timers and thread-locals follow,
and at exit the interpreter waits for non-daemon green threads as it does
for real ones.

What stays different from real threads: a green thread that never blocks
(a pure-Python busy loop) is not preempted; ``threading.get_native_id()`` is
the OS thread's for every green thread; an asyncio event loop runs one per
OS thread at a time.

Or run an unmodified program patched::

    python -m greenline.monkey script.py ARGS...
    python -m greenline.monkey --module package.module ARGS...

Patching twice is harmless (the originals are saved once; see
:func:`get_original`).  Patching a module that was already used in a way the
patch cannot reach (real threads already running; ``ssl`` contexts already
made, or ``SSLContext`` imported by name elsewhere) warns with
:class:`MonkeyPatchWarning`, naming the module.

Patching never imports gevent or eventlet.
"""

from __future__ import annotations

if __name__ == "__main__":
    # ``python -m greenline.monkey``: hand over to the real module, so the
    # program sees one greenline.monkey (with one set of saved originals),
    # not this __main__ copy.
    import sys as _sys

    from greenline.monkey import main as _main

    _sys.exit(_main())

import importlib
import sys
import types
import warnings
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

__all__ = [
    "MonkeyPatchWarning",
    "patch_all",
    "patch_socket",
    "patch_dns",
    "patch_ssl",
    "patch_time",
    "patch_select",
    "patch_selectors",
    "patch_thread",
    "patch_queue",
    "patch_subprocess",
    "patch_os",
    "patch_signal",
    "patch_multiprocessing",
    "is_module_patched",
    "is_object_patched",
    "get_original",
    "main",
]


class MonkeyPatchWarning(RuntimeWarning):
    """Patching came too late to cover everything (see the message)."""


_MISSING: Any = object()
# module name -> {attribute: the original value, or _MISSING if there was none}
_saved: dict[str, dict[str, Any]] = {}
# Names of what was patched (the keys patch_all takes: "socket", "thread"...).
_patched: set[str] = set()


def _patch(module: ModuleType, name: str, value: Any) -> None:
    saved = _saved.setdefault(module.__name__, {})
    if name not in saved:
        saved[name] = getattr(module, name, _MISSING)
    if value is _MISSING:
        if hasattr(module, name):
            delattr(module, name)
    else:
        setattr(module, name, value)


def _warn(message: str) -> None:
    # Point at the caller's patch_all()/patch_X() line, not at this module.
    level = 2  # 1 is this function, 2 its caller
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__") == __name__:
        level += 1
        frame = frame.f_back
    warnings.warn(message, MonkeyPatchWarning, stacklevel=level)


class _BuiltinLike:
    """Stands in for a C function of the stdlib (``time.sleep``,
    ``select.select``...) the way that function behaves: it does not turn into
    a method when code keeps it as a class attribute (``class Poller: wait =
    select.select``), it pickles by reference under the stdlib's name (a
    ``multiprocessing`` target of ``time.sleep`` reaches the child as
    ``time.sleep``, patched or not there), and, having no ``__dict__``,
    serializers that refuse functions refuse it too (xmlrpc would send an
    object with a ``__dict__`` as a struct).  Each replacement is an instance
    of its own subclass, whose ``__module__`` is the stdlib module's."""

    __slots__ = ("__wrapped__", "__name__", "__qualname__")
    __wrapped__: Callable[..., Any]
    __name__: str
    __qualname__: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__wrapped__(*args, **kwargs)

    def __reduce__(self) -> str:
        return self.__qualname__

    def __repr__(self) -> str:
        return f"<greenline replacement for {self.__module__}.{self.__name__}>"


def _builtin_like(fn: Callable[..., Any], module: str, name: str) -> Any:
    """One :class:`_BuiltinLike` per function, so patching twice installs
    the same object."""
    wrapped = _builtin_likes.get(fn)
    if wrapped is None:
        cls = type(name, (_BuiltinLike,), {"__module__": module, "__slots__": (), "__doc__": fn.__doc__})
        wrapped = cls()
        wrapped.__wrapped__ = fn
        wrapped.__name__ = wrapped.__qualname__ = name
        _builtin_likes[fn] = wrapped
    return wrapped


_builtin_likes: dict[Callable[..., Any], Any] = {}


def is_module_patched(name: str) -> bool:
    """True if ``name`` (a module, e.g. ``"socket"``, or a patch_all keyword)
    has been patched."""
    return name in _patched or name in _saved


def is_object_patched(mod_name: str, item_name: str) -> bool:
    """True if ``mod_name.item_name`` was replaced by patching."""
    return item_name in _saved.get(mod_name, {})


def get_original(mod_name: str, item_name: str | list[str] | tuple[str, ...]) -> Any:
    """The original ``mod_name.item_name`` before patching (the current one
    if it was never patched).  A list of names gives a list of values."""
    if isinstance(item_name, (list, tuple)):
        return [get_original(mod_name, n) for n in item_name]
    saved = _saved.get(mod_name, {})
    if item_name in saved:
        value = saved[item_name]
        if value is _MISSING:
            raise AttributeError(f"module {mod_name!r} had no attribute {item_name!r} before patching")
        return value
    return getattr(importlib.import_module(mod_name), item_name)


# -- time ------------------------------------------------------------------------


def _green_time_sleep(secs: float) -> None:
    """time.sleep(secs), parking only the calling green thread."""
    from greenline.hub import sleep

    if secs < 0:
        raise ValueError("sleep length must be non-negative")
    sleep(secs)


def patch_time() -> None:
    """``time.sleep`` parks only the calling green thread."""
    import time

    _patch(time, "sleep", _builtin_like(_green_time_sleep, "time", "sleep"))
    _patched.add("time")


# -- socket, dns, ssl ---------------------------------------------------------------

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
        _patch(socket, name, getattr(gsocket, name))
    _patched.add("socket")
    if dns:
        patch_dns()


def patch_dns() -> None:
    """``socket.getaddrinfo`` and friends resolve off the hub."""
    import socket

    from greenline import socket as gsocket

    for name in _DNS_NAMES:
        _patch(socket, name, getattr(gsocket, name))
    _patched.add("dns")


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
        if mod is not None and name not in ("ssl", __name__) and not name.startswith("greenline")
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
        _warn(f"Monkey-patching ssl after it was already used: {problem}. "
              "Call greenline.monkey.patch_all() before anything imports or uses ssl.")
    import ssl

    from greenline import ssl as gssl

    for name in _SSL_NAMES:
        if hasattr(ssl, name) or name in ("SSLContext", "SSLSocket"):
            _patch(ssl, name, getattr(gssl, name))
    _patched.add("ssl")


# -- select, selectors ----------------------------------------------------------------


def patch_select(aggressive: bool = True) -> None:
    """``select.select``, ``select.poll`` and ``select.epoll`` park only the
    calling green thread.  ``kqueue``/``devpoll`` (no cooperative version)
    are removed, so code that probes for them falls back to ``poll``."""
    import select

    from greenline import select as gselect
    from greenline.hub import get_hub

    # Make this thread's hub now, on the real epoll: one made after patching
    # gets greenline's wrapper, which works (it knows when the hub itself
    # polls) but costs a Python call on every pass of the loop.
    get_hub()
    _patch(select, "select", _builtin_like(gselect.select, "select", "select"))
    _patch(select, "poll", _builtin_like(gselect.poll, "select", "poll"))
    if hasattr(gselect, "epoll"):
        _patch(select, "epoll", gselect.epoll)
    if aggressive:
        for name in ("kqueue", "kevent", "devpoll"):
            if hasattr(select, name):
                _patch(select, name, _MISSING)
    _patched.add("select")


def patch_selectors(aggressive: bool = True) -> None:
    """``selectors.DefaultSelector`` (and the Select/Poll/Epoll selectors)
    are cooperative; so are the selectors ``subprocess`` and
    ``multiprocessing.connection`` captured at import."""
    import selectors

    from greenline import selectors as gselectors

    for name in ("SelectSelector", "PollSelector", "EpollSelector", "DefaultSelector"):
        if hasattr(gselectors, name):
            _patch(selectors, name, getattr(gselectors, name))
    if aggressive:
        for name in ("KqueueSelector", "DevpollSelector"):
            if hasattr(selectors, name):
                _patch(selectors, name, _MISSING)
    # Modules that picked a selector class when they were imported.
    sub = sys.modules.get("subprocess")
    if sub is not None and hasattr(sub, "_PopenSelector"):
        _patch(sub, "_PopenSelector", gselectors.PollSelector)
    conn = sys.modules.get("multiprocessing.connection")
    if conn is not None and hasattr(conn, "_WaitSelector"):
        _patch(conn, "_WaitSelector", gselectors.PollSelector)
    _patched.add("selectors")


# -- threads --------------------------------------------------------------------------


def _real_threads_running(threading: ModuleType) -> list[str]:
    main = threading.main_thread()
    return [t.name for t in list(threading._active.values())  # type: ignore[attr-defined]
            if t is not main and not isinstance(t, threading._DummyThread)  # type: ignore[attr-defined]
            and t.is_alive()]


def patch_thread(threading: bool = True, _threading_local: bool = True, logging: bool = True,
                 existing_locks: bool = True) -> None:
    """Threads become green threads: ``_thread`` is :mod:`greenline.thread`;
    with ``threading`` also the ``threading`` module's locks, ``local`` and
    thread start (so ``Thread``, ``Condition``, ``Event``, ``Semaphore``,
    ``Timer``, ``Barrier`` follow), and the main thread is re-keyed to the
    main green thread's identity.  ``threading._shutdown`` then waits for
    non-daemon green threads at exit, as it does for real threads.

    Warns if real threads were already started (they stay real, and a green
    lock shared with one cannot wake it)."""
    import _thread

    from greenline import thread as gthread
    from greenline.hub import get_hub
    from greenline.local import local as glocal
    from greenline.lock import Lock, RLock

    first = "thread" not in _patched
    loaded_threading = sys.modules.get("threading")
    if first and loaded_threading is not None:
        running = _real_threads_running(loaded_threading)
        if running:
            _warn(f"Monkey-patching threading after {len(running)} real thread(s) were started "
                  f"({', '.join(running[:5])}): they stay OS threads, and green locks, events and "
                  "queues shared with them can block the hub. Call greenline.monkey.patch_all() first.")

    global _main_os_ident
    if _main_os_ident is None:
        # Still unpatched: the main Thread's ident is the OS thread's.
        import threading as unpatched_threading

        _main_os_ident = unpatched_threading.main_thread().ident
    on_main_os_thread = gthread._real_get_ident() == _main_os_ident
    if on_main_os_thread and gthread._main_hub is None:
        gthread._main_hub = get_hub()

    # _count only below: the hub may still ask it how many OS threads exist.
    for name in ("allocate_lock", "allocate", "start_new_thread", "start_new", "get_ident",
                 "stack_size", "interrupt_main",
                 # Python 3.11/3.12: threads are joined through a sentinel lock
                 "_set_sentinel",
                 # Python 3.13+: through handles
                 "start_joinable_thread", "_ThreadHandle", "_make_thread_handle",
                 "_get_main_thread_ident", "_shutdown"):
        if hasattr(_thread, name):
            _patch(_thread, name, getattr(gthread, name))
    _patch(_thread, "LockType", Lock)
    _patch(_thread, "RLock", RLock)
    _patch(_thread, "_local", glocal)
    import greenline.hub

    if getattr(greenline.hub, "_thread_count", None) is not None:
        # The hub keeps the real count of OS threads for its deadlock check;
        # the program's _thread._count() counts its (green) threads.
        _patch(_thread, "_count", gthread._count)
    _patched.add("thread")

    if _threading_local:
        import _threading_local as tl

        _patch(tl, "local", glocal)

    if not threading:
        return
    import threading as std_threading

    handles = hasattr(std_threading, "_start_joinable_thread")
    if not handles and not hasattr(std_threading, "_set_sentinel"):  # pragma: no cover
        _warn("greenline does not know how to patch this Python's threading module; "
              "threading stays real")
        return
    # The names threading copied from _thread when it was imported.
    copied: dict[str, Any] = {
        "_allocate_lock": gthread.allocate_lock,
        "get_ident": gthread.get_ident,
        "Lock": gthread.allocate_lock,
        "_CRLock": RLock,
        "local": glocal,
    }
    if handles:
        copied.update({
            "_start_joinable_thread": gthread.start_joinable_thread,
            "_ThreadHandle": gthread._ThreadHandle,
            "_make_thread_handle": gthread._make_thread_handle,
            "_get_main_thread_ident": gthread._get_main_thread_ident,
            "_thread_shutdown": gthread._shutdown,
            "_LockType": Lock,
        })
    else:
        copied.update({
            "_start_new_thread": gthread.start_new_thread,
            "_set_sentinel": gthread._set_sentinel,
        })
    for name, value in copied.items():
        _patch(std_threading, name, value)
    _make_main_thread_joinable(std_threading)
    if std_threading.excepthook is std_threading.__excepthook__:  # not replaced by the program
        _patch(std_threading, "excepthook", gthread._green_excepthook)
        _patch(std_threading, "__excepthook__", gthread._green_excepthook)
    _patched.add("threading")

    if logging:
        _patch_logging_locks(RLock)


_main_os_ident: int | None = None


def _make_main_thread_joinable(threading: ModuleType) -> None:
    # The main Thread got what Thread.join waits on when threading was
    # imported, a real one: its _tstate_lock (3.11, 3.12) or its _handle
    # (3.13+).  A green thread joining the main thread would block the whole
    # OS thread on it, the main green thread included, which then never ends.
    # Swap in a green one; threading._shutdown releases it (marks it done)
    # once the main thread's code is done, as it does the real one.
    from greenline import thread as gthread

    main = threading.main_thread()
    lock = getattr(main, "_tstate_lock", None)
    if lock is not None and not isinstance(lock, gthread._StateLock) and lock.locked():
        green = gthread._StateLock()
        green.acquire()
        with threading._shutdown_locks_lock:  # type: ignore[attr-defined]
            # _shutdown also waits on the main thread's lock (as on every
            # non-daemon thread's): the real one would not be released.
            if lock in threading._shutdown_locks:  # type: ignore[attr-defined]
                threading._shutdown_locks.discard(lock)  # type: ignore[attr-defined]
                threading._shutdown_locks.add(green)  # type: ignore[attr-defined]
            main._tstate_lock = green
    handle = getattr(main, "_handle", None)
    if (handle is not None and not isinstance(handle, gthread._ThreadHandle)
            and not handle.is_done()):
        main._handle = gthread._make_thread_handle(main.ident)  # type: ignore[arg-type]


def _patch_logging_locks(rlock_class: type) -> None:
    # logging made its module lock and each handler's lock with the real
    # RLock when it was imported; a green thread blocking in a handler while
    # holding one would let every other green thread in (one OS owner).
    logging = sys.modules.get("logging")
    if logging is None:
        return  # imported later, it makes green locks itself
    real_rlock_type = type(get_original("threading", "_CRLock")()) if is_object_patched(
        "threading", "_CRLock") else None
    if real_rlock_type is None:
        return
    lock = getattr(logging, "_lock", None)
    if isinstance(lock, real_rlock_type):
        _patch(logging, "_lock", rlock_class())
    for ref in list(getattr(logging, "_handlerList", [])):
        handler = ref() if callable(ref) else None
        if handler is not None and isinstance(getattr(handler, "lock", None), real_rlock_type):
            handler.lock = rlock_class()


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
    _patch(queue, "SimpleQueue", _SimpleQueue)
    if "threading" not in _patched:
        from greenline import queue as gqueue

        for name in ("Queue", "LifoQueue", "PriorityQueue"):
            _patch(queue, name, getattr(gqueue, name))
    _patched.add("queue")


# -- subprocess, os, signal -------------------------------------------------------------


def patch_subprocess() -> None:
    """``subprocess.Popen`` is :class:`greenline.subprocess.Popen`
    (cooperative ``wait``, pipes and ``communicate``); ``run``, ``call``,
    ``check_output`` use it."""
    import subprocess

    from greenline import subprocess as gsub

    _patch(subprocess, "Popen", gsub.Popen)
    _patched.add("subprocess")


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
    from greenline.select import _cooperative_os_read, _cooperative_os_write

    _patch(os, "waitpid", _builtin_like(gsub.waitpid, "os", "waitpid"))
    _patch(os, "read", _builtin_like(_cooperative_os_read, "os", "read"))
    _patch(os, "write", _builtin_like(_cooperative_os_write, "os", "write"))
    _patched.add("os")


def _green_fd_read(handle: int, size: int) -> bytes:
    from greenline.select import _wait_fd

    _wait_fd(handle, False)
    return _os_read(handle, size)


def _green_fd_write(handle: int, buf: Any) -> int:
    from greenline.select import _wait_fd
    from greenline.subprocess import _PIPE_BUF

    _wait_fd(handle, True)
    # At most PIPE_BUF: a writable pipe takes that much at once, so the
    # (blocking) descriptor never blocks; the caller loops over the rest.
    return _os_write(handle, buf[:_PIPE_BUF])


_os_read: Callable[[int, int], bytes]
_os_write: Callable[[int, Any], int]


def patch_multiprocessing() -> None:
    """``multiprocessing`` connections (``Pipe``, ``Queue``, ``Pool``'s
    channels) read and write only when the hub reports the descriptor ready,
    so a green thread waiting for a message from another process (a Pool's
    result handler, a feeder thread) parks instead of blocking the hub."""
    global _os_read, _os_write
    if sys.platform == "win32":  # pragma: no cover
        return
    import multiprocessing.connection as conn

    _os_read = get_original("os", "read")
    _os_write = get_original("os", "write")
    cls: Any = conn.Connection
    # Saved once, so patching again wraps the originals, not our wrappers.
    saved = _saved.setdefault("multiprocessing.connection", {})
    send = saved.setdefault("Connection._send", cls._send)
    recv = saved.setdefault("Connection._recv", cls._recv)

    # The stdlib's loops take the read/write calls as arguments: hand them
    # cooperative ones, keep its framing and EOF handling.
    def _send(self: Any, buf: Any, write: Any = _green_fd_write) -> None:
        send(self, buf, write)

    def _recv(self: Any, size: int, read: Any = _green_fd_read) -> Any:
        return recv(self, size, read)

    cls._send = _send
    cls._recv = _recv

    try:
        import multiprocessing.synchronize as msync
    except ImportError:  # pragma: no cover - no working sem_open on this system
        pass
    else:
        semlock: Any = msync.SemLock
        saved = _saved.setdefault("multiprocessing.synchronize", {})
        make_methods = saved.setdefault("SemLock._make_methods", semlock._make_methods)

        def _make_methods_green(self: Any) -> None:
            make_methods(self)
            self.acquire = _GreenSemAcquire(self._semlock)

        def _enter_green(self: Any) -> bool:
            return self.acquire()  # type: ignore[no-any-return]

        saved.setdefault("SemLock.__enter__", semlock.__enter__)
        semlock._make_methods = _make_methods_green
        semlock.__enter__ = _enter_green
    _patched.add("multiprocessing")


class _GreenSemAcquire:
    """``acquire`` of a multiprocessing lock/semaphore that parks only the
    calling green thread.

    A process-shared semaphore has no descriptor to wait on, and blocking in
    ``sem_wait`` would stop every green thread, including the one that holds
    the lock and would release it (multiprocessing's Pool and Queue hold
    their locks across reads).  So: try without blocking, then retry after
    green sleeps that grow to 20 ms.
    """

    __slots__ = ("_try",)

    def __init__(self, semlock: Any) -> None:
        self._try = semlock.acquire

    def __call__(self, block: bool = True, timeout: float | None = None) -> bool:
        if self._try(False):
            return True
        if not block:
            return False
        from time import monotonic

        from greenline.hub import sleep

        deadline = None if timeout is None else monotonic() + max(0.0, timeout)
        delay = 0.0005
        while True:
            if deadline is not None:
                remaining = deadline - monotonic()
                if remaining <= 0:
                    return False
                sleep(min(delay, remaining))
            else:
                sleep(delay)
            if self._try(False):
                return True
            delay = min(delay * 2, 0.02)


class _GreenSignalHandler:
    """A Python signal handler, run the way CPython runs it "in the main
    thread", for green threads.

    Signals are handled between bytecodes of whatever runs in the main OS
    thread: the main green thread, another one, or often the hub itself, idle
    in its poll.  In the main green thread the handler runs in place, as in
    CPython.  Anywhere else it runs in a new green thread (in the hub it could
    not block, and a KeyboardInterrupt raised there would end the hub's
    loop), and an exception it raises is thrown into the main green thread at
    its blocking point, as CPython raises it in the main thread (Ctrl-C, or
    ``signal.alarm`` interrupting a blocking ``sendall``, keep working).
    """

    __slots__ = ("handler",)

    def __init__(self, handler: Callable[..., Any]) -> None:
        self.handler = handler

    def __call__(self, signum: int, frame: Any) -> Any:
        from greenlet import getcurrent

        from greenline.hub import get_hub_if_exists

        hub = get_hub_if_exists()
        if hub is not None and getcurrent() is not hub.main:
            from greenline.task import Task

            # A bare Task: an exception goes to the main green thread, not
            # to the Task's own error report.
            task = Task(self._in_green_thread, hub, signum, frame)
            # Through the hub's wake-up descriptor: in the hub the handler
            # runs inside its poll, which the kernel call resumes (PEP 475)
            # when the handler returns; a plain start would wait for other
            # events.
            hub.call_threadsafe(_start_task, task)
            return None
        return self.handler(signum, frame)

    def _in_green_thread(self, hub: Any, signum: int, frame: Any) -> None:
        from greenlet import GreenletExit

        try:
            self.handler(signum, frame)
        except GreenletExit:
            pass
        except BaseException as e:
            hub.throw(hub.main, e)


def _start_task(task: Any) -> None:
    task.start()


def _green_signal(signalnum: int, handler: Any) -> Any:
    real_signal = get_original("signal", "signal")
    if callable(handler) and not isinstance(handler, _GreenSignalHandler):
        handler = _GreenSignalHandler(handler)
    old = real_signal(signalnum, handler)
    return old.handler if isinstance(old, _GreenSignalHandler) else old


def _green_getsignal(signalnum: int) -> Any:
    old = get_original("signal", "getsignal")(signalnum)
    return old.handler if isinstance(old, _GreenSignalHandler) else old


def patch_signal() -> None:
    """``signal.signal`` wraps Python handlers so that one that fires while
    the hub is running runs in a new green thread (where it may block), and
    its exception reaches the main green thread.  The handlers installed
    already (Python's own SIGINT handler among them, whose KeyboardInterrupt
    raised inside the hub's poll would otherwise end the hub's loop) are
    wrapped too.  ``signal.getsignal`` returns the handlers as given."""
    import signal

    _patch(signal, "signal", _builtin_like(_green_signal, "signal", "signal"))
    _patch(signal, "getsignal", _builtin_like(_green_getsignal, "signal", "getsignal"))
    _patched.add("signal")
    real_getsignal = get_original("signal", "getsignal")
    for signum in signal.valid_signals():
        try:
            handler = real_getsignal(signum)
            if callable(handler) and not isinstance(handler, _GreenSignalHandler):
                _green_signal(signum, handler)
        except (OSError, ValueError, RuntimeError):
            # Not settable (SIGKILL...), or not the main thread: leave it.
            continue


# -- all -----------------------------------------------------------------------------------

# gevent's patch_all keywords that need nothing here: greenline covers them
# already (aggressive select patching, green threading.Event, per-greenlet
# contextvars in greenlet 3) or they concern Python 2.
_ACCEPTED_NOOPS = {"aggressive", "Event", "builtins", "contextvars", "sys", "httplib"}


def patch_all(socket: bool = True, dns: bool = True, time: bool = True, select: bool = True,
              selectors: bool = True, thread: bool = True, threading: bool = True,
              queue: bool = True, ssl: bool = True, subprocess: bool = True, os: bool = True,
              signal: bool = True, logging: bool = True, multiprocessing: bool = True,
              **kwargs: Any) -> None:
    """Patch the standard library (see the module docstring).  Every keyword
    defaults to True; pass False to leave that part alone.  Calling it again
    is harmless."""
    unknown = set(kwargs) - _ACCEPTED_NOOPS
    if unknown:
        raise TypeError(f"patch_all() got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    if kwargs.get("sys"):
        raise ValueError("greenline does not patch sys (stdin/stdout/stderr stay blocking)")
    if os:
        patch_os()
    if time:
        patch_time()
    if thread:
        patch_thread(threading=threading, logging=logging)
    if socket:
        patch_socket(dns=dns)
    elif dns:
        patch_dns()
    if select:
        patch_select()
    if selectors:
        patch_selectors()
    if ssl:
        patch_ssl()
    if subprocess:
        patch_subprocess()
    if signal:
        patch_signal()
    if queue:
        patch_queue()
    if multiprocessing:
        patch_multiprocessing()


# -- python -m greenline.monkey ---------------------------------------------------------------

_USAGE = """\
usage: python -m greenline.monkey [--no-NAME ...] [--module] TARGET [ARGS...]

Run a Python script (or, with --module, a module, as python -m does) with the
standard library patched by greenline.monkey.patch_all().  TARGET sees
sys.argv as it would when run directly and __name__ == "__main__"; its exit
status is this command's.

  --module, -m   TARGET is a module name
  --no-NAME      leave NAME unpatched; NAME is one of:
                 {names}
"""

_KEYWORDS = ("socket", "dns", "time", "select", "selectors", "thread", "threading", "queue",
             "ssl", "subprocess", "os", "signal", "logging", "multiprocessing")


def main(argv: list[str] | None = None) -> int:
    """``python -m greenline.monkey [--module] TARGET ARGS...``"""
    import os
    import runpy

    args = list(sys.argv[1:] if argv is None else argv)
    options: dict[str, bool] = {}
    module = False
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt in ("-h", "--help"):
            print(_USAGE.format(names=", ".join(_KEYWORDS)), end="")
            return 0
        if opt in ("--module", "-m"):
            module = True
        elif opt.startswith("--no-") and opt[5:] in _KEYWORDS:
            options[opt[5:]] = False
        elif opt == "--":
            break
        else:
            print(f"greenline.monkey: unknown option {opt!r}", file=sys.stderr)
            print(_USAGE.format(names=", ".join(_KEYWORDS)), end="", file=sys.stderr)
            return 2
    if not args:
        print(_USAGE.format(names=", ".join(_KEYWORDS)), end="", file=sys.stderr)
        return 2
    target = args[0]
    patch_all(**options)
    if module:
        sys.argv[:] = [target] + args[1:]
        # As python -m: the module's own __file__ becomes argv[0].
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.argv[:] = args
        # As python script.py: the script's directory comes first on the path.
        sys.path[0] = os.path.dirname(os.path.abspath(target))
        runpy.run_path(target, run_name="__main__")
    return 0
