"""gevent's view of the hub: ``get_hub().loop`` and its watchers, and the
hub methods gevent code calls (``handle_error(context, type, value, tb)``,
``parent``, ``switch``, ``join``, ``threadpool``).

Libraries built on gevent's loop (zmq.green, geventhttpclient, gunicorn)
ask it for watchers: ``loop.io(fd, events)``, ``loop.timer(after, repeat)``,
``loop.run_callback(fn, *args)``.  greenline has no libev loop, so each
watcher here is a small object over the hub's own means: a timer is a hub
timer, a callback is a call on the next pass, and an IO watcher is a green
thread that waits for the descriptor and calls back, for as long as it is
started (level-triggered, as libev's are).

May import: the standard library, ``greenlet`` and ``_core``.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from time import monotonic
from typing import Any

from greenlet import GreenletExit, getcurrent, greenlet

__all__ = ["unschedule", "HubAPI", "Loop", "IoWatcher", "TimerWatcher", "Callback", "READ", "WRITE"]

READ = 1
WRITE = 2


class Callback:
    """``loop.run_callback(fn, *args)``: a call on the hub's next pass."""

    __slots__ = ("callback", "args")

    def __init__(self, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.callback: Callable[..., object] | None = callback
        self.args = args

    def __call__(self, _arg: object = None) -> None:
        cb, self.callback = self.callback, None
        if cb is not None:
            cb(*self.args)

    @property
    def pending(self) -> bool:
        return self.callback is not None

    def stop(self) -> None:
        self.callback = None

    close = stop


class _Watcher:
    """What libev watchers have in common: start(callback, *args), stop(),
    close(), ``active``, ``ref``, ``callback``, ``args``; a context manager
    that closes."""

    def __init__(self, loop: Loop, ref: bool = True, priority: int | None = None) -> None:
        self.loop = loop
        self.ref = ref
        self.priority = priority
        self.callback: Callable[..., object] | None = None
        self.args: tuple[Any, ...] = ()

    @property
    def active(self) -> bool:
        return self.callback is not None

    @property
    def pending(self) -> bool:
        return False

    def start(self, callback: Callable[..., object], *args: Any) -> None:
        self.callback = callback
        self.args = args

    def stop(self) -> None:
        self.callback = None
        self.args = ()

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> _Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fire(self) -> None:
        cb = self.callback
        if cb is None:
            return
        try:
            cb(*self.args)
        except BaseException:
            self.loop.hub.handle_error(self, *sys.exc_info())


class TimerWatcher(_Watcher):
    """``loop.timer(after, repeat=0.0)``: calls back ``after`` seconds after
    :meth:`start`, then every ``repeat`` seconds if that is not zero."""

    def __init__(self, loop: Loop, after: float = 0.0, repeat: float = 0.0, ref: bool = True,
                 priority: int | None = None) -> None:
        if repeat < 0:
            raise ValueError(f"repeat must be positive or zero: {repeat!r}")
        super().__init__(loop, ref, priority)
        self.after = after
        self.repeat = repeat
        self._entry: list[Any] | None = None

    @property
    def pending(self) -> bool:
        return self._entry is not None

    def start(self, callback: Callable[..., object], *args: Any, update: Any = None) -> None:
        self.stop()
        super().start(callback, *args)
        self._arm(self.after)

    def again(self, callback: Callable[..., object], *args: Any, update: bool = True) -> None:
        self.start(callback, *args)

    def _arm(self, delay: float) -> None:
        hub = self.loop.hub
        self._entry = hub.call_later(max(0.0, delay), self._expired)
        if not self.ref:
            # An unref'd timer must not keep a waiting hub alive by itself:
            # its callback is not something another green thread waits for.
            pass

    def _expired(self, _arg: object = None) -> None:
        self._entry = None
        if self.callback is None:
            return
        if self.repeat:
            self._arm(self.repeat)
        self._fire()
        if not self.repeat and self._entry is None:
            self.callback = None

    def stop(self) -> None:
        if self._entry is not None:
            self.loop.hub.cancel_timer(self._entry)
            self._entry = None
        super().stop()


class IoWatcher(_Watcher):
    """``loop.io(fd, events)``: calls back while ``fd`` is readable
    (``events & 1``) or writable (``events & 2``), from a green thread of its
    own that waits for the descriptor between calls."""

    def __init__(self, loop: Loop, fd: int, events: int, ref: bool = True,
                 priority: int | None = None) -> None:
        if fd < 0:
            raise ValueError(f"fd must be non-negative: {fd!r}")
        if events & ~(READ | WRITE):
            raise ValueError(f"illegal event mask: {events!r}")
        super().__init__(loop, ref, priority)
        self.fd = fd
        self.events = events
        self._g: greenlet | None = None

    def start(self, callback: Callable[..., object], *args: Any, pass_events: bool = False) -> None:
        super().start(callback, *(((self.events,) + args) if pass_events else args))
        if self._g is None:
            hub = self.loop.hub
            self._g = greenlet(self._watch, parent=hub.greenlet)
            hub.schedule(self._g)

    def _watch(self) -> None:
        from greenline._core.fdio import wait_ready

        hub = self.loop.hub
        me = getcurrent()
        try:
            while self.callback is not None and self._g is me:
                write = not self.events & READ
                try:
                    wait_ready(self.fd, write)
                except OSError:
                    pass  # a closed descriptor: let the callback find out
                if self.callback is None or self._g is not me:
                    break
                self._fire()
                # Level-triggered: the callback may have left data unread;
                # let everybody else run before looking again.
                hub.yield_now()
        except GreenletExit:
            pass
        finally:
            if self._g is me:
                self._g = None

    def stop(self) -> None:
        g, self._g = self._g, None
        super().stop()
        if g is not None and g is not getcurrent() and not g.dead:
            hub = self.loop.hub
            if g:  # started: it is parked on the descriptor
                hub.throw(g, GreenletExit())
            else:
                unschedule(hub, g)


def unschedule(hub: Any, g: greenlet) -> None:
    """Take a green thread that has not started off the ready queue."""
    # In place: the hub's loop holds the deque in a local.
    try:
        hub.ready.remove(g)
    except ValueError:
        pass


class Loop:
    """gevent's ``hub.loop``, over one greenline hub."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub

    def io(self, fd: int, events: int, ref: bool = True, priority: int | None = None) -> IoWatcher:
        return IoWatcher(self, fd, events, ref, priority)

    def timer(self, after: float = 0.0, repeat: float = 0.0, ref: bool = True,
              priority: int | None = None) -> TimerWatcher:
        return TimerWatcher(self, after, repeat, ref, priority)

    def run_callback(self, func: Callable[..., object], *args: Any) -> Callback:
        cb = Callback(func, args)
        self.hub.call_later(0, cb)
        return cb

    def run_callback_threadsafe(self, func: Callable[..., object], *args: Any) -> Callback:
        cb = Callback(func, args)
        self.hub.call_threadsafe(cb)
        return cb

    def now(self) -> float:
        return monotonic()

    def update_now(self) -> None:
        """Nothing to do: greenline reads the clock when it needs it."""

    def fileno(self) -> int | None:
        return None

    @property
    def default(self) -> bool:
        return self.hub.main is not None

    def destroy(self) -> None:
        pass


class HubAPI:
    """The members of gevent's ``Hub`` that gevent code uses, on greenline's."""

    #: Errors that are not printed when a green thread dies of them.
    NOT_ERROR: tuple[type[BaseException], ...] = (GreenletExit, SystemExit)
    #: Errors raised in the main green thread when a green thread dies of them.
    SYSTEM_ERROR: Any = (KeyboardInterrupt, SystemExit, SystemError)

    main: greenlet
    greenlet: greenlet
    _loop_facade: Loop | None = None
    _threadpool: Any = None
    #: A callable making the pool ``hub.threadpool`` returns (set by
    #: :mod:`greenline._core.workers`, which imports this module).
    threadpool_class: Any = None

    def throw(self, g: greenlet, exc: BaseException | type[BaseException]) -> None:
        raise NotImplementedError

    @property
    def loop(self) -> Loop:
        if self._loop_facade is None:
            self._loop_facade = Loop(self)
        return self._loop_facade

    @loop.setter
    def loop(self, value: Loop) -> None:
        self._loop_facade = value

    @property
    def parent(self) -> greenlet:
        """The greenlet the hub returns to: the OS thread's main one."""
        return self.main

    @property
    def threadpool(self) -> Any:
        if self._threadpool is None:
            from greenline._core.workers import ThreadPool

            self._threadpool = ThreadPool(10, hub=self)
        return self._threadpool

    @threadpool.setter
    def threadpool(self, pool: Any) -> None:
        self._threadpool = pool

    def join(self, timeout: float | None = None) -> bool:
        """Run the hub until nothing is left for it to do (True), or
        ``timeout`` passes (False): gevent's ``hub.join()``."""
        from greenline._core.wait import wait

        return bool(wait(None, timeout))

    def destroy(self, destroy_loop: bool | None = None) -> None:
        """gevent's: let go of the hub.  greenline's hub belongs to its OS
        thread and goes with it; nothing to do."""

    def switch(self) -> Any:
        """Let the hub run, from a green thread that arranged its own wake
        (a timer, a waiter): parked like any wait, so a Timeout or a kill
        reaches it there."""
        self.block()

    def block(self) -> None:
        raise NotImplementedError

    def handle_error(self, context: object, type: Any = None, value: Any = None,
                     tb: Any = None) -> None:
        """Report an exception nobody else will see: print it unless it is
        a :attr:`NOT_ERROR`, and raise :attr:`SYSTEM_ERROR` ones (and those
        with no context) in the main green thread.  With only ``context``,
        the exception being handled is reported."""
        if type is None and value is None:
            type, value, tb = sys.exc_info()
            if type is None:
                return
        if value is None:
            value = type()
        elif not isinstance(value, BaseException):
            value = type(value)
        type = value.__class__
        if not issubclass(type, self.NOT_ERROR):
            self.print_exception(context, type, value, tb)
        if context is None or issubclass(type, self.SYSTEM_ERROR):
            self.handle_system_error(type, value, tb)

    def handle_system_error(self, type: Any, value: BaseException, tb: Any = None) -> None:
        self.throw(self.main, value)

    def print_exception(self, context: object, type: Any, value: BaseException, tb: Any) -> None:
        try:
            traceback.print_exception(type, value, tb if tb is not None else value.__traceback__,
                                      file=sys.stderr)
            print(f"{context!r} failed with {type.__name__}", file=sys.stderr)
        except Exception:  # pragma: no cover - stderr gone
            pass
