"""``signal_handler(signum, handler, *args)``: run ``handler(*args)`` in a
new green thread each time the signal arrives (gevent's ``gevent.signal_handler``).

May import: the standard library and ``_core``.
"""

from __future__ import annotations

import signal as _signal
from collections.abc import Callable
from typing import Any

from greenline._core.hub import get_hub
from greenline._core.task import Task

__all__ = ["signal_handler", "SignalHandler"]


class SignalHandler:
    """An installed handler; :meth:`cancel` restores the previous one."""

    def __init__(self, signalnum: int, handler: Callable[..., object], *args: Any,
                 **kwargs: Any) -> None:
        self.signalnum = signalnum
        self.handler = handler
        self.args = args
        self.kwargs = kwargs
        self.hub = get_hub()
        self._previous = _signal.signal(signalnum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Runs between bytecodes, possibly inside the hub's poll: through
        # the hub's wake-up descriptor so the poll returns and the new green
        # thread runs now, not at the next unrelated event.
        self.hub.call_threadsafe(self._start)

    def _start(self, _arg: object = None) -> None:
        Task(self._run).start()

    def _run(self) -> None:
        try:
            self.handler(*self.args, **self.kwargs)
        except BaseException as e:
            from greenlet import GreenletExit

            if not isinstance(e, GreenletExit):
                self.hub.throw(self.hub.main, e)

    def cancel(self) -> None:
        if self._previous is not None:
            _signal.signal(self.signalnum, self._previous)
            self._previous = None

    @property
    def ref(self) -> bool:
        return False


def signal_handler(signalnum: int, handler: Callable[..., object], *args: Any,
                   **kwargs: Any) -> SignalHandler:
    """Call ``handler(*args, **kwargs)`` in a new green thread whenever
    ``signalnum`` arrives; an exception it raises goes to the main green
    thread.  Returns an object whose ``cancel()`` restores the old handler."""
    if signalnum in (_signal.SIGKILL, _signal.SIGSTOP):
        raise ValueError(f"cannot install a handler for signal {signalnum}")
    return SignalHandler(signalnum, handler, *args, **kwargs)
