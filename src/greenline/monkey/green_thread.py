"""A green ``_thread``: the low-level thread API, where a "thread" is a green
thread of the calling OS thread's hub.

Monkey-patching installs these names in the stdlib's ``_thread`` and
``threading`` modules, so ``threading.Thread(...).start()`` spawns a green
thread and every lock, condition and event built on ``_thread`` parks green
threads instead of OS threads.

>>> from greenline.monkey import green_thread
>>> import greenline
>>> seen = []
>>> ident = thread.start_new_thread(lambda: seen.append(thread.get_ident()), ())
>>> greenline.sleep(0)
>>> seen == [ident]
True

A thread's identity is the id of its green thread (its :class:`greenlet`),
unique among the live ones, as a real thread's ident is; the main green
thread keeps the OS thread's.
"""

from __future__ import annotations

import _thread as _real
import os as _os
import signal as _signal
import sys
from collections.abc import Callable
from time import monotonic as _monotonic
from typing import Any

from greenlet import GreenletExit
from greenlet import getcurrent as _getcurrent

from greenline._core.hub import get_hub as _get_hub
from greenline._core.task import Task as _Task
from greenline.local import local as _local
from greenline.lock import Lock as LockType
from greenline.lock import RLock

__all__ = [
    "LockType", "RLock", "TIMEOUT_MAX", "allocate", "allocate_lock", "error",
    "exit", "exit_thread", "get_ident", "get_native_id", "interrupt_main",
    "stack_size", "start_new", "start_new_thread", "_count", "_local",
    "_set_sentinel", "_excepthook", "_ExceptHookArgs",
]

error = _real.error
TIMEOUT_MAX = _real.TIMEOUT_MAX
# One OS thread underneath: its native id is everyone's.
get_native_id = _real.get_native_id
_excepthook = _real._excepthook
_ExceptHookArgs = _real._ExceptHookArgs

# Saved: once patched, _thread.interrupt_main is ours.
_real_interrupt_main = _real.interrupt_main
_real_get_ident = _real.get_ident
_real_shutdown = getattr(_real, "_shutdown", None)  # Python 3.13+

# Identities of the green threads started here that have not finished.
_running: set[int] = set()
# Each green thread's sentinel lock (see _set_sentinel), released when the
# green thread ends: threading.Thread.join and interpreter shutdown wait on it.
_sentinels: dict[Any, LockType] = {}
_stack_size = 0


def get_ident() -> int:
    """The calling green thread's identity.

    An OS thread's own greenlet (the main green thread, or a real thread's
    only one) keeps the OS thread's identity, so threads registered before
    patching, and the main thread, are found under the same identity after
    it; every other green thread is identified by its greenlet.  (The two
    cannot collide: thread identities are addresses of thread control
    blocks, greenlets live on the Python heap.)  While the interpreter
    finalizes, when greenlet refuses ``getcurrent()``, only the main green
    thread can be running.
    """
    try:
        g = _getcurrent()
    except RuntimeError:
        return _real_get_ident()
    return _real_get_ident() if g.parent is None else id(g)


# The class itself, not a function: code keeps ``allocate_lock`` as a class
# attribute (``locktype = _thread.allocate_lock``), where a Python function
# would become a method.
allocate_lock = LockType
allocate = LockType


def start_new_thread(function: Callable[..., object], args: tuple[Any, ...],
                     kwargs: dict[str, Any] | None = None) -> int:
    """Run ``function(*args, **kwargs)`` in a new green thread; return its
    identity.  As with a real thread, its return value is dropped,
    ``SystemExit`` ends it quietly, and another exception is reported through
    :func:`sys.unraisablehook`."""
    if not isinstance(args, tuple):
        raise TypeError("2nd arg must be a tuple")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError("optional 3rd arg must be a dictionary")
    if not callable(function):
        raise TypeError("first arg must be callable")
    task = _Task(_bootstrap, function, args, kwargs or {})
    _running.add(id(task))
    task.start()
    return id(task)


start_new = start_new_thread


def _bootstrap(function: Callable[..., object], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    me = _getcurrent()
    try:
        function(*args, **kwargs)
    except (SystemExit, GreenletExit):
        pass
    except BaseException as e:
        _report(e, function)
    finally:
        _running.discard(id(me))
        lock = _sentinels.pop(me, None)
        if lock is not None and lock.locked():
            lock.release()


def _report(exc: BaseException, function: Callable[..., object]) -> None:
    # What the C implementation does with an exception nobody caught.
    try:
        hook = sys.unraisablehook
        args = _UnraisableArgs(type(exc), exc, exc.__traceback__,
                               "Exception ignored in thread started by", function)
        hook(args)  # type: ignore[arg-type]
    except BaseException:  # pragma: no cover - the hook itself failed
        pass


class _UnraisableArgs:
    __slots__ = ("exc_type", "exc_value", "exc_traceback", "err_msg", "object")

    def __init__(self, exc_type: Any, exc_value: Any, exc_traceback: Any, err_msg: str, obj: Any) -> None:
        self.exc_type = exc_type
        self.exc_value = exc_value
        self.exc_traceback = exc_traceback
        self.err_msg = err_msg
        self.object = obj


def _set_sentinel() -> LockType:
    """A lock released when the calling green thread ends (``threading``
    acquires it at thread start and joins threads by waiting for it)."""
    lock = LockType()
    _sentinels[_getcurrent()] = lock
    return lock


class StateLock(LockType):
    """The lock ``threading`` joins the main thread by (its ``_tstate_lock``
    on Python 3.11 and 3.12), made green by patching: held while the main
    thread runs, released by ``threading._shutdown`` when its code is done;
    each joiner then takes and releases it.

    Unlike :class:`~greenline.lock.Lock`, a release does not hand the lock
    to the first waiter (``threading`` asserts it is unlocked right after
    releasing it): it is left free and the waiters are told, and they take
    it as they would a real lock."""

    def acquire(self, blocking: bool = True, timeout: float | None = -1) -> bool:  # type: ignore[override]
        if not blocking or timeout == 0:
            return super().acquire(False)
        deadline = None if timeout is None or timeout < 0 else _monotonic() + timeout
        while not super().acquire(False):
            if deadline is None:
                self.wait()
            else:
                left = deadline - _monotonic()
                if left <= 0:
                    return False
                self.wait(left)
        return True

    acquire_lock = acquire

    def __enter__(self) -> bool:
        return self.acquire()


def _count() -> int:
    """How many green threads started by :func:`start_new_thread` still run."""
    return len(_running)


def stack_size(size: int = 0) -> int:
    """Accepted for compatibility: green threads grow their stacks on
    demand, so the value is recorded and returned but changes nothing."""
    global _stack_size
    if size != 0 and size < 32768:
        raise ValueError("size not valid: 32768 bytes minimum")
    old, _stack_size = _stack_size, size
    return old


def exit() -> None:
    """End the calling thread (raises :class:`SystemExit`)."""
    raise SystemExit


exit_thread = exit


def interrupt_main(signum: int = _signal.SIGINT) -> None:
    """Simulate ``signum`` arriving in the main thread.

    With Python's default SIGINT handler this raises ``KeyboardInterrupt`` in
    the main green thread at its blocking point (a real signal would be
    handled in whichever green thread happens to run).  Any other handler is
    run as the stdlib would run it.
    """
    hub = _main_hub if _main_hub is not None else _find_main_hub()
    on_main_os_thread = hub.thread_ident == _real_get_ident()
    if on_main_os_thread and _getcurrent() is hub.main:
        # Called by the main green thread itself: the real one raises right
        # here, at the next bytecode, as the stdlib's does.
        _real_interrupt_main(signum)  # type: ignore[arg-type]
        return
    if signum == _signal.SIGINT and _signal.getsignal(signum) is _signal.default_int_handler:
        if on_main_os_thread:
            hub.throw(hub.main, KeyboardInterrupt())
        else:
            hub.call_threadsafe(_throw_interrupt, hub)
        return
    _real_interrupt_main(signum)  # type: ignore[arg-type]


def _throw_interrupt(hub: Any) -> None:
    hub.throw(hub.main, KeyboardInterrupt())


# The main OS thread's hub, recorded when monkey-patching installs this module
# (interrupt_main from a pool thread must reach the main thread's main green
# thread, not its own).
_main_hub: Any = None


def set_main_hub(hub: Any) -> None:
    """Record the main OS thread's hub, unless one is recorded already
    (called by patching, in the main OS thread, if it has a hub yet)."""
    global _main_hub
    if _main_hub is None and hub is not None:
        _main_hub = hub


def _find_main_hub() -> Any:
    # Patching does not make the main thread's hub (gevent's patch_all does
    # not either: a program may fork or configure first); find it now.
    import threading

    from greenline._core.hub import all_hubs

    main_ident = threading.main_thread().ident
    for hub in list(all_hubs):
        if hub.thread_ident == main_ident:
            set_main_hub(hub)
            return hub
    return _get_hub()


def excepthook(args: Any) -> None:
    """``threading.excepthook``: the stdlib's report, naming a thread given
    by identity with its green identity (the C hook prints the OS thread's)."""
    if args.exc_type is SystemExit:
        return
    stderr = sys.stderr
    if stderr is None:
        thread = args.thread
        stderr = getattr(thread, "_stderr", None) if thread is not None else None
        if stderr is None:
            return
    name = args.thread.name if args.thread is not None else get_ident()
    print(f"Exception in thread {name}:", file=stderr, flush=True)
    import traceback

    traceback.print_exception(args.exc_type, args.exc_value, args.exc_traceback, file=stderr)
    stderr.flush()


def daemon_threads_allowed() -> bool:
    return True


# -- Python 3.13+: threads are joined through handles -------------------------------


class _ThreadHandle:
    """A green thread's handle (``_thread._ThreadHandle``): its identity and
    a flag set when it has finished, which ``threading.Thread.join`` waits
    for and interpreter shutdown waits for on non-daemon threads."""

    __slots__ = ("_ident", "_done", "_started", "__weakref__")

    def __init__(self) -> None:
        from greenline.event import Event

        self._ident: int | None = None
        self._done = Event()
        self._started = False

    @property
    def ident(self) -> int | None:
        return self._ident

    def is_done(self) -> bool:
        return self._done.is_set()

    def _set_done(self) -> None:
        self._done.set()

    def join(self, timeout: float | None = None) -> None:
        if timeout is not None and timeout < 0:
            timeout = 0
        if not self._done.is_set() and self._ident == get_ident():
            raise RuntimeError("Cannot join current thread")
        self._done.wait(timeout)

    def __repr__(self) -> str:
        return f"<greenline.monkey.green_thread._ThreadHandle ident={self._ident} done={self.is_done()}>"


# Handles of green threads that have not finished: the non-daemon ones are
# what _shutdown waits for; all of them are marked done in a forked child
# (only the green thread that forked exists there).
_live_handles: dict[_ThreadHandle, bool] = {}


def start_joinable_thread(function: Callable[[], object], handle: _ThreadHandle | None = None,
                          daemon: bool = True) -> _ThreadHandle:
    """Run ``function()`` in a new green thread; return its handle (marked
    done when it ends)."""
    if not callable(function):
        raise TypeError("thread function must be callable")
    if handle is None:
        handle = _ThreadHandle()
    elif handle._started:
        raise RuntimeError("thread already started")
    task = _Task(_bootstrap_joinable, function, handle)
    handle._started = True
    handle._ident = id(task)
    _live_handles[handle] = bool(daemon)
    _running.add(id(task))
    task.start()
    return handle


def _bootstrap_joinable(function: Callable[[], object], handle: _ThreadHandle) -> None:
    try:
        function()
    except (SystemExit, GreenletExit):
        pass
    except BaseException as e:
        _report(e, function)
    finally:
        _running.discard(handle._ident)  # type: ignore[arg-type]
        _live_handles.pop(handle, None)
        handle._set_done()


def _make_thread_handle(ident: int) -> _ThreadHandle:
    """A handle for a thread that was not started by start_joinable_thread
    (the main thread, a dummy thread)."""
    handle = _ThreadHandle()
    handle._ident = ident
    handle._started = True
    return handle


def _get_main_thread_ident() -> int:
    """The main green thread of this OS thread's hub (after a fork from a
    green thread, that green thread: it is all the child has)."""
    main = _get_hub().main
    return _real_get_ident() if main.parent is None else id(main)


def _shutdown() -> None:
    """Wait until every non-daemon green thread has finished (interpreter
    exit); threads started meanwhile are waited for too."""
    while True:
        waiting = [h for h, daemon in list(_live_handles.items()) if not daemon and not h.is_done()]
        if not waiting:
            break
        for handle in waiting:
            if handle._ident != get_ident():
                handle.join()
    if _real_shutdown is not None:
        # Real threads started before patching are still the runtime's to
        # wait for.
        _real_shutdown()


def _after_fork_in_child() -> None:
    # Every green thread but the one that forked is gone: mark their handles
    # done so joining one returns at once, as for a real thread.  Fresh
    # events: the old ones may list waiters of the parent's hub.
    from greenline.event import Event

    global _main_hub
    # The parent's main hub is gone here: interrupt_main must reach the
    # child's (made on first use).
    _main_hub = None
    me = get_ident()
    for handle in list(_live_handles):
        if handle._ident != me:
            done = Event()
            done.set()
            handle._done = done
            del _live_handles[handle]
    for greenlet_ in list(_sentinels):
        if id(greenlet_) != me:
            del _sentinels[greenlet_]
    _running.intersection_update({me})


_os.register_at_fork(after_in_child=_after_fork_in_child)
