"""Cancel scopes: deadlines and cancellation over any block of blocking calls.

>>> import greenline
>>> from greenline import move_on_after
>>> with move_on_after(0.01) as scope:
...     greenline.sleep(1)
>>> scope.cancelled_caught
True

The semantics follow trio's cancel scopes:

* A cancelled scope raises :class:`Cancelled` at the next blocking point of
  every green thread inside it (a green thread parked right now is woken with
  it).  Cancellation never lands in pure computation.
* It is *level-triggered*: while the green thread is still inside a cancelled
  scope, every further blocking call raises ``Cancelled`` again, so cleanup
  code that needs to block must shield itself (``CancelScope(shield=True)``).
* The scope whose cancellation it is catches the ``Cancelled`` on the way
  out; an inner scope that was not cancelled lets it through, and when both
  are cancelled the outermost one visible catches it (an inner scope catches
  only its own cancellation).
* A shielded scope hides the cancellation of every scope around it (not its
  own).

:func:`fail_after` raises :class:`TooSlowError`, a subclass of the built-in
:class:`TimeoutError`, so code written for the standard library's timeouts
catches it.

How it coexists with :class:`greenline.Timeout` (gevent's edge-triggered
deadline): a Timeout raises once, at one blocking point, and is an ordinary
exception to a cancel scope (it passes through).  Both travel through the
hub's per-green-thread ``pending`` slot; a cancellation never overwrites an
exception already waiting there (a Timeout or a kill goes first, the
cancellation follows at the blocking point after it).
"""

from __future__ import annotations

import math
from time import monotonic
from types import TracebackType
from typing import Any

from greenlet import getcurrent, greenlet

from greenline._core.hub import Hub, get_hub, get_hub_if_exists

__all__ = [
    "Cancelled",
    "CancelScope",
    "TooSlowError",
    "move_on_after",
    "move_on_at",
    "fail_after",
    "fail_at",
    "current_cancel_scope",
]


class Cancelled(BaseException):
    """Raised at a blocking point inside a cancelled :class:`CancelScope`.

    A ``BaseException``, so that ``except Exception`` in the interrupted code
    does not swallow it; the scope that was cancelled catches it.
    """


class TooSlowError(TimeoutError):
    """Raised by :func:`fail_after` / :func:`fail_at` when the deadline
    passes (a :class:`TimeoutError`, as stdlib code expects)."""


# The innermost entered scope of each green thread.
_current: dict[greenlet, CancelScope] = {}


def _cancelled() -> BaseException:
    return Cancelled("cancelled by a cancel scope")


def _arm(g: greenlet, hub: Hub) -> None:
    """Make every blocking point of ``g`` raise Cancelled while its innermost
    scope is effectively cancelled (the hub's level-triggered slot), and wake
    it if it is parked.  A pending Timeout or kill is raised first."""
    scope = _current.get(g)
    if scope is None or not scope._effectively_cancelled() or g.dead:
        return
    hub.level[g] = _cancelled
    hub.wake(g)


def _disarm(g: greenlet, hub: Hub) -> None:
    hub.level.pop(g, None)


class CancelScope:
    """A block of code that can be cancelled, by :meth:`cancel` or when its
    ``deadline`` (a :func:`time.monotonic` time) passes.

    >>> import greenline
    >>> from greenline import CancelScope
    >>> with CancelScope() as scope:
    ...     scope.cancel()
    ...     greenline.sleep(1)       # raises Cancelled at once
    ...     print("never printed")
    >>> scope.cancelled_caught
    True

    A scope is used once, by one green thread.  ``cancel()`` may be called
    from any green thread (or, through the hub's ``call_threadsafe``, from
    another OS thread), before, during or after the block.
    """

    __slots__ = ("_deadline", "shield", "cancel_called", "cancelled_caught", "_parent",
                 "_children", "_owner", "_hub", "_timer", "_entered", "_exited",
                 "_fail", "_prev")

    def __init__(self, deadline: float = math.inf, shield: bool = False) -> None:
        self._deadline = deadline
        self.shield = shield
        self.cancel_called = False
        self.cancelled_caught = False
        self._parent: CancelScope | None = None
        self._children: set[CancelScope] = set()
        self._owner: greenlet | None = None
        self._hub: Hub = None  # type: ignore[assignment]  # set on entry
        self._timer: list[Any] | None = None
        self._entered = False
        self._exited = False
        # fail_after: turn the caught cancellation into TooSlowError.
        self._fail = False
        self._prev: CancelScope | None = None

    # -- deadline ----------------------------------------------------------

    @property
    def deadline(self) -> float:
        """The :func:`time.monotonic` time at which the scope cancels itself
        (``math.inf``: never).  May be changed while the scope is active."""
        return self._deadline

    @deadline.setter
    def deadline(self, value: float) -> None:
        self._deadline = float(value)
        if self._entered and not self._exited:
            self._arm_timer()

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._hub.cancel_timer(self._timer)
            self._timer = None
        if self.cancel_called or self._deadline == math.inf:
            return
        delay = self._deadline - monotonic()
        if delay <= 0:
            self.cancel()
        else:
            self._timer = self._hub.call_later(delay, self._on_deadline)

    def _on_deadline(self, _arg: object = None) -> None:
        self._timer = None
        self.cancel()

    # -- state ---------------------------------------------------------------

    def _effectively_cancelled(self) -> bool:
        scope: CancelScope | None = self
        while scope is not None:
            if scope.cancel_called:
                return True
            if scope.shield:
                return False
            scope = scope._parent
        return False

    def _parent_cancel_visible(self) -> bool:
        return not self.shield and self._parent is not None and self._parent._effectively_cancelled()

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called (or the deadline passed)."""
        return self.cancel_called

    def cancel(self) -> None:
        """Cancel the scope: every green thread inside it gets
        :class:`Cancelled` at its current or next blocking point."""
        if self.cancel_called:
            return
        hub = self._hub
        if hub is not None and get_hub_if_exists() is not hub:
            hub.call_threadsafe(lambda _arg: self.cancel())
            return
        self.cancel_called = True
        if hub is None:
            # Not entered: entering sees the flag.  Unless another OS thread
            # entered it meanwhile: then deliver in that thread's hub.
            hub = self._hub
            if hub is None:
                return
            if get_hub_if_exists() is not hub:
                hub.call_threadsafe(lambda _arg: self._after_cancel())
                return
        self._after_cancel()

    def _after_cancel(self) -> None:
        if self._timer is not None:
            self._hub.cancel_timer(self._timer)
            self._timer = None
        if self._entered and not self._exited:
            self._deliver()

    def _deliver(self) -> None:
        # Every green thread whose innermost scope lies below this one (and
        # not behind a shield) must hear of it.
        stack = [self]
        while stack:
            scope = stack.pop()
            if scope._owner is not None:
                _arm(scope._owner, scope._hub)
            stack.extend(c for c in scope._children if not c.shield)

    # -- entering and leaving -------------------------------------------------

    def _enter(self, parent: CancelScope | None) -> None:
        if self._entered:
            raise RuntimeError("a CancelScope can be entered only once")
        g = getcurrent()
        hub = get_hub()
        if g is hub.greenlet:
            raise RuntimeError("the hub cannot enter a cancel scope")
        self._entered = True
        self._owner = g
        self._hub = hub
        self._prev = _current.get(g)
        self._parent = parent
        if parent is not None:
            parent._children.add(self)
        _current[g] = self
        if self.shield:
            # The cancellation around is hidden from here on.
            _disarm(g, hub)
        self._arm_timer()
        _arm(g, hub)

    def __enter__(self) -> CancelScope:
        self._enter(_current.get(getcurrent()))
        return self

    def _leave(self) -> None:
        g = self._owner
        assert g is not None
        if _current.get(g) is not self:
            raise RuntimeError("cancel scopes must be left in the reverse order they were entered")
        self._exited = True
        if self._timer is not None:
            self._hub.cancel_timer(self._timer)
            self._timer = None
        if self._prev is None:
            del _current[g]
        else:
            _current[g] = self._prev
        if self._parent is not None:
            self._parent._children.discard(self)
        # The level changes to the enclosing scope's.
        _disarm(g, self._hub)
        _arm(g, self._hub)

    def _catches(self) -> bool:
        # trio's rule: the outermost visible cancelled scope takes it.
        return self.cancel_called and not self._parent_cancel_visible()

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        self._leave()
        if exc is None or not self._catches():
            return False
        if isinstance(exc, Cancelled):
            self.cancelled_caught = True
            if self._fail:
                raise TooSlowError("deadline exceeded") from None
            return True
        if isinstance(exc, BaseExceptionGroup):
            match, rest = exc.split(Cancelled)
            if match is None:
                return False
            self.cancelled_caught = True
            if rest is None:
                if self._fail:
                    raise TooSlowError("deadline exceeded") from None
                return True
            raise rest
        return False

    def __repr__(self) -> str:
        state = "cancelled" if self.cancel_called else "active"
        return f"<CancelScope {state} deadline={self._deadline} shield={self.shield}>"


def current_cancel_scope() -> CancelScope | None:
    """The innermost cancel scope of the calling green thread, if any."""
    return _current.get(getcurrent())


def cancel_scope_of(g: greenlet) -> CancelScope | None:
    """The innermost cancel scope of green thread ``g``, if any."""
    return _current.get(g)


def move_on_at(deadline: float) -> CancelScope:
    """A scope cancelled at ``deadline`` (:func:`time.monotonic`); the block
    is left quietly, ``scope.cancelled_caught`` tells whether it was cut."""
    return CancelScope(deadline=deadline)


def move_on_after(seconds: float) -> CancelScope:
    """A scope cancelled ``seconds`` from now; the block is left quietly.

    >>> import greenline
    >>> from greenline import move_on_after
    >>> with move_on_after(0.01) as scope:
    ...     greenline.sleep(1)
    >>> scope.cancelled_caught
    True
    """
    if seconds < 0 or seconds != seconds:
        raise ValueError("seconds must be a non-negative number")
    return CancelScope(deadline=monotonic() + seconds)


def fail_at(deadline: float) -> CancelScope:
    """Like :func:`move_on_at`, but raise :class:`TooSlowError` if the
    deadline cut the block."""
    scope = CancelScope(deadline=deadline)
    scope._fail = True
    return scope


def fail_after(seconds: float) -> CancelScope:
    """A scope cancelled ``seconds`` from now that raises
    :class:`TooSlowError` (a :class:`TimeoutError`) when it cuts the block.

    >>> import greenline
    >>> from greenline import fail_after
    >>> try:
    ...     with fail_after(0.01):
    ...         greenline.sleep(1)
    ... except TimeoutError as e:
    ...     print(type(e).__name__)
    TooSlowError
    """
    if seconds < 0 or seconds != seconds:
        raise ValueError("seconds must be a non-negative number")
    return fail_at(monotonic() + seconds)
