"""asyncio and green threads on one OS thread, each able to call the other.

>>> import asyncio, greenline
>>> from greenline import aio
>>> async def double(x):
...     await asyncio.sleep(0.01)
...     return 2 * x
>>> aio.await_(double(21))            # from a green thread
42
>>> async def main():
...     return await aio.run_green(lambda: greenline.sleep(0.01) or "green")
>>> asyncio.run(main())                # from a coroutine
'green'

How: an asyncio selector event loop whose selector, when the loop has
nothing to do, *parks the loop's green thread in the hub* instead of
blocking the OS thread in ``epoll_wait``.  The selector's own epoll
descriptor is pollable, so the hub waits on it like on a socket; when it
becomes readable (or a green thread hands the loop work and wakes it), the
loop's green thread resumes and the loop runs one more iteration.  When the
loop is busy it lets the hub run a pass between its iterations, so neither
side can starve the other.

Either side can host:

* a greenline program: :func:`get_loop` gives the hub's loop, run by a
  green thread of its own (started on first use, stopped again when idle);
* ``asyncio.run(main())``: the first :func:`run_green` swaps the running
  loop's selector for a hub-aware one, so that loop (run by whichever green
  thread called ``asyncio.run``, usually the main one) drives the hub from
  its ``select`` call, and it becomes the hub's loop for :func:`await_`.

Exceptions cross in both directions unchanged.  Cancellation too: a green
thread killed (or timed out, or cancelled by a cancel scope) in
:func:`await_` cancels the asyncio task and waits for it to unwind; an
asyncio task cancelled while awaiting :func:`run_green` kills the green
thread (``GreenletExit`` at its blocking point) and waits for it to end.  A
green thread killed by someone else makes :func:`run_green` raise
``asyncio.CancelledError``.

While the loop's green thread is parked, :func:`asyncio.get_running_loop`
sees no running loop (the OS thread's running-loop slot is cleared), since
the green threads that run meanwhile are not inside the loop.

Limitations: a coroutine that makes a greenline blocking call (``sleep``, a
green socket) does not block the OS thread but does stall its loop until the
call returns (use :func:`run_green`).  On a loop that :func:`get_loop`
adopted from ``asyncio.run``, a green thread must schedule work with
``call_soon_threadsafe`` (or through this module) for the loop to notice it
at once; the hub's own loop wakes itself on ``call_soon``/``call_at``.
"""

from __future__ import annotations

import _thread
import asyncio
import contextvars
import selectors as _std_selectors
from asyncio import events as _events
from asyncio.selector_events import BaseSelectorEventLoop as _SelectorLoop
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, TypeVarTuple, Unpack

from greenlet import GreenletExit, getcurrent, greenlet

from greenline._core.cancel import CancelScope
from greenline._core.hub import FdState, Hub, get_hub
from greenline._core.hub import os_thread_ident as _os_thread_ident
from greenline._core.hub import other_os_threads as _other_os_threads
from greenline._core.task import Task
from greenline._core.taskgroup import QuietTask

__all__ = ["get_loop", "await_", "run_green", "close_loop", "GreenEventLoop"]

T = TypeVar("T")
_Ts = TypeVarTuple("_Ts")

# Saved at import: the loop's own kernel selector must be the real one even
# if the selectors module is monkey-patched later.
_KernelSelector = _std_selectors.DefaultSelector


class _SelectTimeout(Exception):
    """The selector's wait reached the loop's timeout (nothing went wrong)."""


def _select_timeout() -> BaseException:
    return _SelectTimeout()


class _Bridge:
    """One hub's asyncio loop and what the bridge knows about it."""

    __slots__ = ("hub", "loop", "selector", "owned", "task", "inflight")

    def __init__(self, hub: Hub, loop: asyncio.AbstractEventLoop, selector: _HubSelector,
                 owned: bool) -> None:
        self.hub = hub
        self.loop = loop
        self.selector = selector
        # True: our GreenEventLoop, run by self.task; False: a loop adopted
        # from asyncio.run(), run by whoever runs it.
        self.owned = owned
        self.task: Task | None = None
        # await_() calls waiting on the loop: while there are some, an idle
        # owned loop keeps running.
        self.inflight = 0

    def ensure_running(self) -> None:
        if not self.owned or self.loop.is_running():
            return
        if self.task is None or self.task.dead:
            self.task = Task(_run_owned_loop, self.loop)
            self.task.name = "greenline-asyncio-loop"
            self.task.start()

    def idle(self) -> bool:
        # Nothing the loop could ever do without new work from this thread:
        # no await_ waiting, no task alive, nothing registered but its own
        # self-pipe, and no other OS thread that could post to it (the hub's
        # own criterion: with one, it never reports a deadlock anyway).  Then
        # its green thread may end, so it does not count as a waiter and the
        # hub's deadlock detection stays meaningful; a call_soon or get_loop
        # starts it again.
        return (self.owned and self.inflight == 0
                and len(self.selector.get_map()) <= 1
                and not _other_os_threads()
                and not asyncio.all_tasks(self.loop))


def _run_owned_loop(loop: asyncio.AbstractEventLoop) -> None:
    if not loop.is_closed():
        loop.run_forever()


class _HubSelector(_std_selectors.BaseSelector):
    """A kernel selector whose blocking ``select`` parks the calling green
    thread in the hub (see the module docstring)."""

    def __init__(self, inner: _std_selectors.BaseSelector) -> None:
        self._inner = inner
        self._st = FdState(inner.fileno())  # type: ignore[attr-defined]
        # The green thread parked in select(), for wakeup().
        self._waiting: greenlet | None = None
        self._hub: Hub | None = None
        self.bridge: _Bridge | None = None
        # The green thread that runs the loop (seen in its last select()).
        self.loop_greenlet: greenlet | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> _std_selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> _std_selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> _std_selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def get_key(self, fileobj: Any) -> _std_selectors.SelectorKey:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Mapping[Any, _std_selectors.SelectorKey]:
        return self._inner.get_map()

    def fileno(self) -> int:
        return self._st.fd

    def close(self) -> None:
        st = self._st
        if st.hub is not None:
            # Unregister before the number can be reused.
            st.hub.forget(st, raise_in_waiters=False)
        self._inner.close()

    def wakeup(self) -> None:
        """Resume the loop's green thread if it is parked in select()."""
        if self._waiting is not None and self._hub is not None:
            self._hub.wake_reader(self._st)

    def select(self, timeout: float | None = None) -> list[tuple[_std_selectors.SelectorKey, int]]:
        inner = self._inner
        ready = inner.select(0)
        hub = get_hub()
        g = getcurrent()
        self.loop_greenlet = g
        if g is hub.greenlet:  # pragma: no cover - a loop run by the hub itself
            return ready or inner.select(timeout)
        if ready or (timeout is not None and timeout <= 0):
            # Busy: let the green threads have a pass between iterations.
            if hub.ready or hub.parked or hub.timers:
                self._park(hub, g, None)
            return ready
        bridge = self.bridge
        if timeout is None and bridge is not None and bridge.idle():
            bridge.loop.stop()
            return []
        self._park(hub, g, timeout if timeout is not None else -1.0)
        return inner.select(0)

    def _park(self, hub: Hub, g: greenlet, timeout: float | None) -> None:
        # timeout None: only yield a pass; -1: wait with no limit.
        running = _events._get_running_loop()
        _events._set_running_loop(None)
        self._hub = hub
        self._waiting = g
        try:
            if timeout is None:
                hub.yield_now()
            else:
                try:
                    hub.wait_fd(self._st, False, None if timeout < 0 else timeout, _select_timeout)
                except _SelectTimeout:
                    pass
        finally:
            self._waiting = None
            _events._set_running_loop(running)


class GreenEventLoop(asyncio.SelectorEventLoop):
    """The hub's own asyncio loop: a selector loop over a hub-aware
    selector, which wakes its parked green thread whenever a green thread
    schedules something on it."""

    _selector: _HubSelector

    def __init__(self) -> None:
        self._os_ident = _os_thread_ident()
        super().__init__(_HubSelector(_KernelSelector()))

    def _check_thread(self) -> None:
        _check_os_thread(self, self._os_ident)

    def call_soon(self, callback: Callable[[Unpack[_Ts]], object], *args: *_Ts,
                  context: contextvars.Context | None = None) -> asyncio.Handle:
        handle = super().call_soon(callback, *args, context=context)
        self._kick()
        return handle

    def call_at(self, when: float, callback: Callable[[Unpack[_Ts]], object], *args: *_Ts,
                context: contextvars.Context | None = None) -> asyncio.TimerHandle:
        handle = super().call_at(when, callback, *args, context=context)
        self._kick()
        return handle

    def _kick(self) -> None:
        # Scheduled from a green thread: wake the loop if it is parked, start
        # it again if it had stopped for being idle.
        if self.is_running():
            self._selector.wakeup()
        else:
            bridge = self._selector.bridge
            if bridge is not None and bridge is _local.bridge:
                bridge.ensure_running()


def _check_os_thread(loop: asyncio.AbstractEventLoop, ident: int) -> None:
    # asyncio's debug-mode check compares threading.get_ident() with the
    # loop's, and a monkey-patched get_ident tells green threads apart: every
    # green thread of the loop's OS thread is on the loop's thread here.
    if getattr(loop, "_thread_id", None) is not None and _os_thread_ident() != ident:
        raise RuntimeError("Non-thread-safe operation invoked on an event loop other "
                           "than the current one")


class _BridgeLocal(_thread._local):
    bridge: _Bridge | None = None


_local = _BridgeLocal()


def _current_bridge() -> _Bridge | None:
    hub = get_hub()
    bridge = _local.bridge
    if bridge is not None:
        if bridge.hub is hub and not bridge.loop.is_closed():
            return bridge
        _discard(bridge)
        _local.bridge = None
    return None


def _discard(bridge: _Bridge) -> None:
    # A loop of a previous hub of this thread (or a closed one): release it
    # if nothing runs it any more.
    if bridge.owned and not bridge.loop.is_running() and not bridge.loop.is_closed():
        bridge.loop.close()


def _adopt(loop: asyncio.AbstractEventLoop) -> _Bridge:
    """Make a running selector loop (asyncio.run's) hub-aware."""
    if not isinstance(loop, _SelectorLoop):
        raise RuntimeError(f"greenline.aio needs a selector event loop, not {type(loop).__name__}")
    sel = loop._selector  # type: ignore[attr-defined]
    if isinstance(sel, _HubSelector):
        bridge = sel.bridge
        assert bridge is not None
    else:
        sel = _HubSelector(sel)
        loop._selector = sel  # type: ignore[attr-defined]
        ident = _os_thread_ident()
        loop._check_thread = lambda: _check_os_thread(loop, ident)  # type: ignore[attr-defined]
        bridge = _Bridge(get_hub(), loop, sel, owned=False)
        sel.bridge = bridge
    old = _current_bridge()
    if old is not bridge:
        if old is not None:
            _discard(old)
        _local.bridge = bridge
    return bridge


def _bridge() -> _Bridge:
    running = _events._get_running_loop()
    if running is not None and not running.is_closed():
        # Called in a coroutine, or from a green thread while the loop's own
        # green thread is blocked in a greenline call (not in select): this
        # thread's running loop is the hub's.
        return _adopt(running)
    bridge = _current_bridge()
    if bridge is not None:
        bridge.ensure_running()
        return bridge
    loop = GreenEventLoop()
    bridge = _Bridge(get_hub(), loop, loop._selector, owned=True)
    loop._selector.bridge = bridge
    _local.bridge = bridge
    bridge.ensure_running()
    return bridge


def get_loop() -> asyncio.AbstractEventLoop:
    """The calling hub's asyncio loop: the loop of a running
    ``asyncio.run()`` that uses :func:`run_green`, else the hub's own
    :class:`GreenEventLoop`, started on first use.

    Called in a coroutine, it makes the running loop the hub's (as the first
    :func:`run_green` does): do that before spawning green threads directly
    from a coroutine, so that the loop lets them run while it waits."""
    return _bridge().loop


def close_loop() -> None:
    """Stop and close the hub's own loop (it is made again on next use).
    A loop adopted from ``asyncio.run`` is left to its owner."""
    bridge = _local.bridge
    _local.bridge = None
    if bridge is None or not bridge.owned or bridge.loop.is_closed():
        return
    loop = bridge.loop
    task = bridge.task
    if loop.is_running() and task is not None and not task.dead:
        loop.stop()
        bridge.selector.wakeup()
        task.join()
    if not loop.is_running():
        loop.close()


def await_(awaitable: Awaitable[T]) -> T:
    """Run ``awaitable`` on the hub's asyncio loop and return its result (or
    raise its exception), blocking only the calling green thread.

    If the green thread is interrupted meanwhile (killed, a Timeout, a
    cancel scope), the asyncio task is cancelled and awaited before the
    interruption propagates.
    """
    bridge = _bridge()
    loop = bridge.loop
    g = getcurrent()
    if _events._get_running_loop() is loop and bridge.selector.loop_greenlet in (None, g):
        if asyncio.iscoroutine(awaitable):
            awaitable.close()  # never to be awaited: say so quietly
        raise RuntimeError("await_() called from inside the event loop (in a coroutine or "
                           "callback): use await there")
    hub = bridge.hub
    fut = asyncio.ensure_future(awaitable, loop=loop)

    def done(_f: object) -> None:
        hub.wake(g)

    fut.add_done_callback(done)
    bridge.inflight += 1
    try:
        bridge.ensure_running()
        bridge.selector.wakeup()
        try:
            while not fut.done():
                hub.block()
        except BaseException:
            if not fut.done():
                fut.cancel()
                bridge.selector.wakeup()
                # Wait for the coroutine to unwind (its finally blocks run),
                # unless interrupted once more.  A scope's level-triggered
                # cancellation must not cut this wait short.
                with CancelScope(shield=True):
                    while not fut.done():
                        hub.block()
            raise
    finally:
        fut.remove_done_callback(done)
        bridge.inflight -= 1
        if not bridge.inflight:
            # Let the loop see whether it is idle now (and then end).
            bridge.selector.wakeup()
    return fut.result()


async def run_green(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking-style ``function(*args, **kwargs)`` in a new green
    thread and return its result (or raise its exception).

    Cancelling the awaiting task kills the green thread and waits for it to
    end.  The green thread runs in a copy of the coroutine's context
    (``contextvars``).
    """
    loop = asyncio.get_running_loop()
    sel = getattr(loop, "_selector", None)
    bridge = sel.bridge if isinstance(sel, _HubSelector) and sel.bridge is not None else _adopt(loop)
    fut: asyncio.Future[T] = loop.create_future()
    wakeup = bridge.selector.wakeup

    def done(t: Task) -> None:
        if not fut.done():
            exc = t.exception
            if exc is not None:
                fut.set_exception(exc)
            elif isinstance(t.value, GreenletExit):
                fut.cancel()  # killed by someone: a cancellation for us
            else:
                fut.set_result(t.value)
        wakeup()

    ctx = contextvars.copy_context()
    task = QuietTask(ctx.run, function, *args, **kwargs)
    task.rawlink(done)
    task.start()
    wakeup()
    try:
        return await fut
    except asyncio.CancelledError:
        if not task.dead:
            ended: asyncio.Future[None] = loop.create_future()

            def on_end(_t: Task) -> None:
                if not ended.done():
                    ended.set_result(None)
                wakeup()

            task.rawlink(on_end)
            task.kill(block=False)
            await ended
        raise
