"""TaskGroup: green threads that cannot outlive their block nor fail silently.

>>> import greenline
>>> from greenline import TaskGroup
>>> with TaskGroup() as tg:
...     a = tg.spawn(lambda: 1)
...     b = tg.spawn(greenline.sleep, 0.01)
>>> a.get()
1

The ``with`` block waits for every child.  The first child that fails
cancels the others (through the group's :class:`~greenline._core.cancel.CancelScope`,
so they get :class:`~greenline._core.cancel.Cancelled` at their next blocking
point) and the block raises an :class:`ExceptionGroup` holding every failure
(the cancellations it caused are not failures).  An exception in the body of
the block cancels the children as well and joins the group.

If the green thread that owns the group is interrupted while it waits at the
end of the block (``Task.kill``, a :class:`greenline.Timeout`, a deadlock's
``LoopExit``), the children are cancelled, waited for, and the interruption
propagates unchanged, so ``with Timeout(s, False)`` and ``kill`` keep working;
child failures seen meanwhile are then printed to stderr rather than lost.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any

from greenlet import GreenletExit, getcurrent, greenlet

from greenline._core.cancel import Cancelled, CancelScope, cancel_scope_of
from greenline._core.hub import Hub, get_hub
from greenline._core.task import Task

__all__ = ["TaskGroup"]


class QuietTask(Task):
    """A Task whose failure is delivered to someone (a group, an awaiting
    coroutine), so it is not also printed to stderr as an orphan's is."""

    __slots__ = ()
    report_failures = False


class TaskGroup:
    """A nursery of green threads; see the module docstring.

    ``tg.cancel_scope`` is the group's cancel scope: cancelling it cancels
    every child (and the body of the block) without that being an error.
    """

    def __init__(self) -> None:
        self.cancel_scope = CancelScope()
        self._live: set[Task] = set()
        self._failures: list[BaseException] = []
        self._owner: greenlet | None = None
        self._hub: Hub | None = None
        self._waiter: greenlet | None = None
        self._open = False
        self._closed = False

    def __enter__(self) -> TaskGroup:
        if self._open or self._closed:
            raise RuntimeError("a TaskGroup can be entered only once")
        self._owner = getcurrent()
        self._hub = get_hub()
        self.cancel_scope.__enter__()
        self._open = True
        return self

    def spawn(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Task:
        """Start ``function(*args, **kwargs)`` as a child; returns its
        :class:`greenline.Task` (whose ``get()`` raises its own failure)."""
        if not self._open:
            raise RuntimeError("TaskGroup.spawn outside the group's with block")
        task = QuietTask(self._child, function, args, kwargs)
        self._live.add(task)
        task.rawlink(self._child_done)
        task.start()
        return task

    def cancel(self) -> None:
        """Cancel every child and the body (shorthand for
        ``tg.cancel_scope.cancel()``)."""
        self.cancel_scope.cancel()

    def _child(self, function: Callable[..., Any], args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Any:
        # The child's root scope hangs below the group's scope, so the
        # group's cancellation (and that of every scope around the group)
        # reaches it.
        root = CancelScope()
        root._enter(self.cancel_scope)
        try:
            return function(*args, **kwargs)
        finally:
            if cancel_scope_of(getcurrent()) is root:
                root._leave()

    def _child_done(self, task: Task) -> None:
        # Runs where the child finished (in its greenlet, or in the one that
        # killed it before it started); must not block.
        self._live.discard(task)
        exc = task.exception
        if exc is not None and not (isinstance(exc, Cancelled)
                                    and self.cancel_scope._effectively_cancelled()):
            self._failures.append(exc)
            self.cancel_scope.cancel()
        if not self._live and self._waiter is not None and self._hub is not None:
            self._hub.wake(self._waiter)

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        hub = self._hub
        assert hub is not None and self._owner is not None
        # An interruption of the owner propagates as it is; any other
        # exception of the body is a failure of the group.
        interrupt: BaseException | None = None
        if exc is not None:
            if isinstance(exc, Cancelled):
                pass
            elif _is_interrupt(exc):
                interrupt = exc
            else:
                self._failures.insert(0, exc)
            self.cancel_scope.cancel()
        if self._live:
            # Wait shielded: the group's (level-triggered) cancellation must
            # not keep interrupting the wait itself.
            with CancelScope(shield=True):
                while self._live:
                    self._waiter = self._owner
                    try:
                        hub.block()
                    except BaseException as e:
                        if interrupt is None:
                            interrupt = e
                        self.cancel_scope.cancel()
                    finally:
                        self._waiter = None
        self._open = False
        self._closed = True
        self.cancel_scope._leave()
        failures = self._failures
        if interrupt is not None:
            for f in failures:
                if f is not exc:
                    _print_lost(f)
            if interrupt is exc:
                return False
            raise interrupt
        if failures:
            raise BaseExceptionGroup("unhandled errors in a TaskGroup", failures)
        if isinstance(exc, Cancelled):
            # The group's own cancellation ends here; one from a scope around
            # goes on to that scope.
            return self.cancel_scope._catches()
        # The end of the block is a blocking point: a scope around that was
        # cancelled meanwhile (its children were cancelled with it) is
        # reported here, not after more of the code it cancelled has run.
        scope = cancel_scope_of(self._owner)
        if scope is not None and scope._effectively_cancelled():
            raise Cancelled("cancelled by a cancel scope")
        return False

    def __repr__(self) -> str:
        state = "open" if self._open else ("closed" if self._closed else "new")
        return f"<TaskGroup {state} children={len(self._live)} failures={len(self._failures)}>"


def _is_interrupt(exc: BaseException) -> bool:
    from greenline._core.hub import LoopExit
    from greenline._core.timeout import Timeout

    return isinstance(exc, (GreenletExit, Timeout, KeyboardInterrupt, SystemExit, LoopExit))


def _print_lost(exc: BaseException) -> None:
    try:
        print("greenline: a TaskGroup child failed while its owner was interrupted:",
              file=sys.stderr)
        import traceback  # only when there is an error to print

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    except Exception:  # pragma: no cover - stderr gone
        pass
