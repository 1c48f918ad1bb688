"""``gevent.hub``: the hub and the waits on it.

``get_hub()`` is greenline's hub of the calling OS thread; it has gevent's
``loop``, ``parent``, ``switch``, ``handle_error``, ``threadpool`` and
``join``.

May import: greenline's modules, not the tools.
"""

from __future__ import annotations

from typing import Any

from greenlet import GreenletExit, getcurrent

from greenline._core.hub import Hub, LoopExit, get_hub, get_hub_if_exists, sleep
from greenline._core.task import kill, spawn_raw
from greenline._core.timeout import Timeout
from greenline._core.wait import idle, iwait, wait
from greenline.gevent import reinit, signal_handler

__all__ = ["Hub", "LoopExit", "GreenletExit", "Timeout", "Waiter", "get_hub", "getcurrent", "idle",
           "iwait", "kill", "reinit", "set_hub", "signal", "sleep", "spawn_raw", "wait"]

signal = signal_handler


def set_hub(hub: Any) -> None:
    raise NotImplementedError("greenline makes one hub per OS thread itself")


def set_default_hub_class(cls: Any) -> None:
    """Accepted and ignored: every OS thread gets a greenline hub."""


def get_hub_class() -> type[Hub]:
    return Hub


def _get_hub() -> Hub | None:
    return get_hub_if_exists()


class Waiter:
    """gevent's low-level one-shot handoff: one green thread ``get()``s,
    another ``switch(value)``es or ``throw()``s into it."""

    def __init__(self, hub: Any = None) -> None:
        self.hub = hub if hub is not None else get_hub()
        self.greenlet: Any = None
        self.value: Any = None
        self._exception: Any = _NONE

    def ready(self) -> bool:
        return self._exception is not _NONE

    def successful(self) -> bool:
        return self._exception is None

    @property
    def exc_info(self) -> Any:
        return None if self._exception in (None, _NONE) else self._exception

    def switch(self, value: Any = None) -> None:
        if self.greenlet is None:
            self.value = value
            self._exception = None
        else:
            self.value = value
            self._exception = None
            self.hub.wake(self.greenlet)

    def switch_args(self, *args: Any) -> None:
        self.switch(args)

    def throw(self, *throw_args: Any) -> None:
        exc = throw_args[1] if len(throw_args) > 1 and throw_args[1] is not None else throw_args[0]
        if self.greenlet is None:
            self._exception = throw_args
        else:
            self._exception = throw_args
            self.hub.throw(self.greenlet, exc)

    def get(self) -> Any:
        if self._exception is not _NONE:
            if self._exception is None:
                return self.value
            args = self._exception
            exc = args[1] if len(args) > 1 and args[1] is not None else args[0]
            raise exc
        if self.greenlet is not None:
            raise AssertionError(f"This Waiter is already used by {self.greenlet!r}")
        self.greenlet = getcurrent()
        try:
            while self._exception is _NONE:
                self.hub.block()
            return self.value
        finally:
            self.greenlet = None

    def __call__(self, source: Any) -> None:
        if source.exception is None:
            self.switch(source.value)
        else:
            self.throw(source.exception)


_NONE: Any = object()
