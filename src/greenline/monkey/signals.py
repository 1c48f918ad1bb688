"""``patch_signal``: Python signal handlers that green threads survive.

May import: :mod:`.originals` and ``_core``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from greenline.monkey.originals import builtin_like, get_original, patched, replace

__all__ = ["patch_signal"]


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

        from greenline._core.hub import get_hub_if_exists

        hub = get_hub_if_exists()
        if hub is not None and getcurrent() is not hub.main:
            from greenline._core.task import Task

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

    replace(signal, "signal", builtin_like(_green_signal, "signal", "signal"))
    replace(signal, "getsignal", builtin_like(_green_getsignal, "signal", "getsignal"))
    patched.add("signal")
    real_getsignal = get_original("signal", "getsignal")
    for signum in signal.valid_signals():
        try:
            handler = real_getsignal(signum)
            if callable(handler) and not isinstance(handler, _GreenSignalHandler):
                _green_signal(signum, handler)
        except (OSError, ValueError, RuntimeError):
            # Not settable (SIGKILL...), or not the main thread: leave it.
            continue
