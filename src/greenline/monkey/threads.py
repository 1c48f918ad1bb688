"""``patch_thread``: threads become green threads.

``_thread`` is replaced by :mod:`greenline.monkey.green_thread`, and the
names ``threading`` copied from it at import are replaced too.  How
``threading`` joins a thread changed between Python versions (3.11 and 3.12
use a sentinel lock per thread, 3.13 thread handles), so that part is one
function per scheme.

May import: :mod:`.originals`, :mod:`.green_thread`, greenline's public
modules and ``_core``.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

from greenline._core.hub import os_thread_ident
from greenline.monkey.originals import get_original, is_object_patched, patched, replace, warn

__all__ = ["patch_thread"]


def _real_threads_running(threading: ModuleType) -> list[str]:
    main = threading.main_thread()
    return [t.name for t in list(threading._active.values())  # type: ignore[attr-defined]
            if t is not main and not isinstance(t, threading._DummyThread)  # type: ignore[attr-defined]
            and t.is_alive()]


def patch_thread(threading: bool = True, _threading_local: bool = True, logging: bool = True,
                 existing_locks: bool = True) -> None:
    """Threads become green threads: ``_thread`` is :mod:`greenline.monkey.green_thread`;
    with ``threading`` also the ``threading`` module's locks, ``local`` and
    thread start (so ``Thread``, ``Condition``, ``Event``, ``Semaphore``,
    ``Timer``, ``Barrier`` follow), and the main thread is re-keyed to the
    main green thread's identity.  ``threading._shutdown`` then waits for
    non-daemon green threads at exit, as it does for real threads.

    Warns if real threads were already started (they stay real, and a green
    lock shared with one cannot wake it)."""
    import _thread

    from greenline._core.hub import get_hub_if_exists
    from greenline.local import local as glocal
    from greenline.lock import Lock, RLock
    from greenline.monkey import green_thread as gthread

    first = "thread" not in patched
    loaded_threading = sys.modules.get("threading")
    if first and loaded_threading is not None:
        running = _real_threads_running(loaded_threading)
        if running:
            warn(f"Monkey-patching threading after {len(running)} real thread(s) were started "
                  f"({', '.join(running[:5])}): they stay OS threads, and green locks, events and "
                  "queues shared with them can block the hub. Call greenline.monkey.patch_all() first.")

    if _on_main_os_thread():
        gthread.set_main_hub(get_hub_if_exists())

    # _count only below: the hub may still ask it how many OS threads exist.
    for name in ("allocate_lock", "allocate", "start_new_thread", "start_new", "get_ident",
                 "stack_size", "interrupt_main",
                 # Python 3.11/3.12: threads are joined through a sentinel lock
                 "_set_sentinel",
                 # Python 3.13+: through handles
                 "start_joinable_thread", "_ThreadHandle", "_make_thread_handle",
                 "_get_main_thread_ident", "_shutdown"):
        if hasattr(_thread, name):
            replace(_thread, name, getattr(gthread, name))
    replace(_thread, "LockType", Lock)
    replace(_thread, "RLock", RLock)
    replace(_thread, "_local", glocal)
    # The hub saved the real count of OS threads for its deadlock check;
    # the program's _thread._count() counts its (green) threads.
    replace(_thread, "_count", gthread._count)
    patched.add("thread")

    if _threading_local:
        import _threading_local as tl

        replace(tl, "local", glocal)

    if not threading:
        return
    import threading as std_threading

    if hasattr(std_threading, "_start_joinable_thread"):
        copied = _names_copied_with_handles()
    elif hasattr(std_threading, "_set_sentinel"):
        copied = _names_copied_with_sentinels()
    else:  # pragma: no cover
        warn("greenline does not know how to patch this Python's threading module; "
             "threading stays real")
        return
    for name, value in copied.items():
        replace(std_threading, name, value)
    _make_main_thread_joinable(std_threading)
    if std_threading.excepthook is std_threading.__excepthook__:  # not replaced by the program
        replace(std_threading, "excepthook", gthread.excepthook)
        replace(std_threading, "__excepthook__", gthread.excepthook)
    patched.add("threading")

    if logging:
        _patch_logging_locks(RLock)


def _common_names_copied() -> dict[str, Any]:
    """The names every supported ``threading`` copied from ``_thread`` when it
    was imported."""
    from greenline.local import local as glocal
    from greenline.lock import RLock
    from greenline.monkey import green_thread as gthread

    return {
        "_allocate_lock": gthread.allocate_lock,
        "get_ident": gthread.get_ident,
        "Lock": gthread.allocate_lock,
        "_CRLock": RLock,
        "local": glocal,
    }


def _names_copied_with_sentinels() -> dict[str, Any]:
    """Python 3.11 and 3.12: ``Thread.join`` waits on a per-thread sentinel
    lock that ``_thread`` releases when the thread ends."""
    from greenline.monkey import green_thread as gthread

    return {**_common_names_copied(),
            "_start_new_thread": gthread.start_new_thread,
            "_set_sentinel": gthread._set_sentinel}


def _names_copied_with_handles() -> dict[str, Any]:
    """Python 3.13 and later: ``Thread.join`` waits on a thread handle, and
    ``threading._shutdown`` on the handles of non-daemon threads."""
    from greenline.lock import Lock
    from greenline.monkey import green_thread as gthread

    return {**_common_names_copied(),
            "_start_joinable_thread": gthread.start_joinable_thread,
            "_ThreadHandle": gthread._ThreadHandle,
            "_make_thread_handle": gthread._make_thread_handle,
            "_get_main_thread_ident": gthread._get_main_thread_ident,
            "_thread_shutdown": gthread._shutdown,
            "_LockType": Lock}


_main_os_ident: int | None = None


def _make_main_thread_joinable(threading: ModuleType) -> None:
    # The main Thread got what Thread.join waits on when threading was
    # imported, a real one: its _tstate_lock (3.11, 3.12) or its _handle
    # (3.13+).  A green thread joining the main thread would block the whole
    # OS thread on it, the main green thread included, which then never ends.
    # Swap in a green one; threading._shutdown releases it (marks it done)
    # once the main thread's code is done, as it does the real one.
    from greenline.monkey import green_thread as gthread

    main = threading.main_thread()
    lock = getattr(main, "_tstate_lock", None)
    if lock is not None and not isinstance(lock, gthread.StateLock) and lock.locked():
        green = gthread.StateLock()
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


def _on_main_os_thread() -> bool:
    global _main_os_ident
    if _main_os_ident is None:
        # Still unpatched: the main Thread's ident is the OS thread's.
        import threading as unpatched_threading

        _main_os_ident = unpatched_threading.main_thread().ident
    return os_thread_ident() == _main_os_ident


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
        replace(logging, "_lock", rlock_class())
    for ref in list(getattr(logging, "_handlerList", [])):
        handler = ref() if callable(ref) else None
        if handler is not None and isinstance(getattr(handler, "lock", None), real_rlock_type):
            handler.lock = rlock_class()
