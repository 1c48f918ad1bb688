"""Task: a green thread with a result, gevent's ``Greenlet`` under our name.

>>> import greenline
>>> t = greenline.spawn(lambda a, b: a + b, 2, 3)
>>> t.get()
5
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from types import MappingProxyType
from typing import Any

from greenlet import GreenletExit, getcurrent, greenlet

from greenline._core.hub import Hub, get_hub
from greenline._core.loop import unschedule
from greenline._core.timeout import Timeout

__all__ = [
    "Task",
    "GreenletExit",
    "spawn",
    "spawn_later",
    "joinall",
    "killall",
    "kill",
    "spawn_raw",
    "getcurrent",
]

_NO_KWARGS: Any = MappingProxyType({})

# Tasks' names, for the few that are ever named or asked for theirs.  Kept
# aside rather than in a slot: one slot less puts a Task in a smaller
# allocation class, 16 bytes per connection of a server.
_names: weakref.WeakKeyDictionary[Task, str] = weakref.WeakKeyDictionary()


def _task_main() -> None:
    # What greenlet runs for every Task: a plain function, not a ``run``
    # method.  greenlet keeps its ``run`` callable for the whole life of the
    # green thread, and a method would be a bound-method object per task
    # plus one more C frame under every switch, in the stack copy greenlet
    # keeps for each parked green thread: about 200 bytes per connection of
    # a server, measured with tracemalloc (bench/README.md).
    getcurrent()._body()  # type: ignore[attr-defined]  # always a Task here


class Task(greenlet):
    """A green thread that runs ``run(*args, **kwargs)`` and keeps its outcome.

    Create and start one with :func:`spawn`.  Its parent is the hub, so when
    it ends the hub goes on with the next ready green thread.
    """

    __slots__ = ("_fn", "args", "kwargs", "value", "_exc", "_links",
                 "_started", "_finished", "_hub")

    def __init__(self, run: Callable[..., Any] | None = None, *args: Any, **kwargs: Any) -> None:
        if run is not None and not callable(run):
            raise TypeError(f"The run argument or self._run must be callable, not {run!r}")
        hub = get_hub()
        greenlet.__init__(self, _task_main, hub.greenlet)
        self._hub = hub
        self._fn = run
        self.args = args
        # No keyword arguments (the usual case) shares one empty mapping
        # instead of keeping a dict per task.
        self.kwargs = kwargs if kwargs else _NO_KWARGS
        self.value: Any = None
        self._exc: BaseException | None = None
        # Called in the hub, in order, when the task finishes; they must not
        # block (link() wraps a user's callback in a new task for that).
        self._links: list[Callable[[Task], object]] | None = None
        self._started = False
        self._finished = False

    # -- lifecycle -----------------------------------------------------

    @classmethod
    def spawn(cls, run: Callable[..., Any], *args: Any, **kwargs: Any) -> Task:
        task = cls(run, *args, **kwargs)
        task.start()
        return task

    def start(self) -> None:
        """Schedule the task to run (once)."""
        if not self._started:
            self._started = True
            self._hub.live += 1
            self._hub.schedule(self)

    def start_later(self, seconds: float) -> None:
        if not self._started:
            self._started = True
            self._hub.live += 1
            self._hub.call_later(seconds, self._hub.schedule, self)

    def _body(self) -> None:  # _task_main calls this in the task's greenlet
        if self._finished:
            return  # killed before it ever ran
        hub = self._hub
        try:
            pending = hub.pending.pop(self, None)
            if pending is not None:
                raise pending
            fn = self._fn
            if fn is None:
                # gevent's way to give a Greenlet subclass its body.
                fn = getattr(self, "_run", None)
                if fn is None:
                    raise TypeError("Task has nothing to run")
            # Spelled out for the common shapes: a call with * or ** runs
            # the callee in a new C-level interpreter loop, and that C stack
            # is what greenlet copies aside for every parked green thread.
            args = self.args
            if self.kwargs:
                value = fn(*args, **self.kwargs)
            elif len(args) == 2:
                value = fn(args[0], args[1])
            elif len(args) == 1:
                value = fn(args[0])
            elif not args:
                value = fn()
            else:
                value = fn(*args)
        except GreenletExit as e:
            # Killed: that counts as a success whose value is the exception.
            self._finish(e, None)
        except BaseException as e:
            self._report(e)
            self._finish(None, e)
        else:
            self._finish(value, None)

    #: Print a failure to stderr when it happens (an orphan's failure must
    #: not pass silently).  Subclasses whose failures are always delivered to
    #: someone — a task group, an awaiting coroutine — turn it off.
    report_failures: bool = True

    def _report(self, exc: BaseException) -> None:
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            # Those end the program, as they would in a thread's main line.
            self._hub.throw(self._hub.main, exc)
            return
        if not self.report_failures:
            return
        # Through the hub, as gevent reports a dead greenlet, so a program
        # that replaces ``hub.handle_error`` sees every failure.
        self._hub.handle_error(self, type(exc), exc, exc.__traceback__)

    def _finish(self, value: Any, exc: BaseException | None) -> None:
        self.value = value
        self._exc = exc
        self._finished = True
        if self._started:
            self._hub.live -= 1
        # Drop references so a finished task holds no function or arguments.
        self._fn = None
        self.args = ()
        self.kwargs = _NO_KWARGS
        links = self._links
        if links:
            # Popped one at a time from the live list: a callback that
            # unlinks another one before it has run stops it from running.
            while links:
                callback = links.pop(0)
                try:
                    callback(self)
                except BaseException:
                    self._hub.handle_error(callback)
            self._links = None
        # Break the reference cycle through the traceback's frames.
        if isinstance(exc, BaseException) and exc.__traceback__ is not None:
            exc.__traceback__ = exc.__traceback__.tb_next

    # -- state ---------------------------------------------------------

    @property
    def name(self) -> str:
        name = _names.get(self)
        if name is None:
            # Made once, when first asked for (the function is let go of
            # when the task finishes, and the name must not change then).
            fn = self._fn
            name = f"Task-{id(self):x}" if fn is None else f"Task-{getattr(fn, '__name__', 'fn')}"
            _names[self] = name
        return name

    @name.setter
    def name(self, value: str) -> None:
        _names[self] = value

    @property
    def started(self) -> bool:
        """Started and not finished yet (gevent's meaning)."""
        return self._started and not self._finished

    @property
    def exc_info(self) -> tuple[Any, Any, Any] | None:
        """``(type, value, traceback)`` of the exception it failed with, or
        None."""
        e = self._exc
        return None if e is None else (type(e), e, e.__traceback__)

    @property
    def loop(self) -> Any:
        return self._hub.loop

    @property
    def minimal_ident(self) -> int:
        return id(self)

    def __enter__(self) -> Task:
        return self

    def __exit__(self, typ: Any, value: Any, tb: Any) -> None:
        # gevent's: leaving the block waits for it; an error in the block
        # kills it with that error.
        if typ is None:
            try:
                self.join()
            finally:
                self.kill()
        else:
            self.kill(value if value is not None else typ)

    @property
    def dead(self) -> bool:  # type: ignore[override]
        """Finished, or killed before it started."""
        return self._finished or greenlet.dead.__get__(self)  # type: ignore[attr-defined,no-any-return]

    def ready(self) -> bool:
        """True once the task has finished and has a value or an exception."""
        return self._finished

    def successful(self) -> bool:
        """True if it finished without an exception (a kill counts as one)."""
        return self._finished and self._exc is None

    @property
    def exception(self) -> BaseException | None:
        """The exception it failed with, or None."""
        return self._exc

    def __bool__(self) -> bool:
        return self._started and not self._finished

    def __repr__(self) -> str:
        state = "finished" if self._finished else ("running" if self._started else "new")
        return f"<Task {self.name} {state}>"

    # -- waiting -------------------------------------------------------

    def join(self, timeout: float | None = None) -> None:
        """Wait until the task finishes, or ``timeout`` seconds pass."""
        if self._finished:
            return
        if isinstance(timeout, Timeout):
            # gevent's: a Timeout object bounds the wait, raising itself.
            with timeout:
                return self.join()
        if getcurrent() is self:
            raise RuntimeError("a task cannot join itself")
        joiner = _Joiner([self])
        t = Timeout.start_new(timeout, False) if timeout is not None else None
        try:
            while not self._finished:
                joiner.hub.block()
        except Timeout as e:
            if e is not t:
                raise
        finally:
            if t is not None:
                t.cancel()
            joiner.close()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Return the task's value, or raise its exception.  Raises
        :class:`Timeout` if it is not finished in time (at once with
        ``block=False``)."""
        if not self._finished:
            if not block:
                raise Timeout()
            if isinstance(timeout, Timeout):
                with timeout:
                    return self.get()
            self.join(timeout)
            if not self._finished:
                raise Timeout(timeout)
        if self._exc is not None:
            raise self._exc
        return self.value

    def kill(self, exception: Any = GreenletExit, block: bool = True,
             timeout: float | None = None) -> None:
        """Raise ``exception`` in the task where it blocks.  A task that has
        not started yet dies without running.  With ``block`` wait (up to
        ``timeout``) until it has finished."""
        if self._finished:
            return
        if isinstance(exception, type):
            exception = exception()
        if not greenlet.__bool__(self):
            # Never switched into (new, or scheduled and not reached yet): it
            # will not run at all; when the hub reaches it, it returns at once.
            if isinstance(exception, GreenletExit):
                self._finish(exception, None)
            else:
                self._finish(None, exception)
            return
        if getcurrent() is self:
            raise exception
        hub = self._hub
        if hub is get_hub():
            hub.throw(self, exception)
        else:
            hub.call_threadsafe(lambda e: hub.throw(self, e), exception)
        if block:
            self.join(timeout)

    def rawlink(self, callback: Callable[[Task], object]) -> None:
        """Call ``callback(task)`` inside the hub when the task finishes.  It
        must not block; prefer :meth:`link`."""
        if self._finished:
            callback(self)
            return
        if self._links is None:
            self._links = []
        self._links.append(callback)

    def link(self, callback: Callable[[Task], object]) -> None:
        """Call ``callback(task)`` in a new green thread when the task
        finishes (at once if it already has)."""
        self.rawlink(_SpawnedLink(callback))

    def link_value(self, callback: Callable[[Task], object]) -> None:
        """Like :meth:`link`, only if the task succeeds."""
        self.rawlink(_SpawnedLink(callback, True))

    def link_exception(self, callback: Callable[[Task], object]) -> None:
        """Like :meth:`link`, only if the task fails."""
        self.rawlink(_SpawnedLink(callback, False))

    def unlink(self, callback: Callable[[Task], object]) -> None:
        """Remove a callback given to :meth:`link` or :meth:`rawlink`."""
        if self._links and callback in self._links:
            self._links.remove(callback)

    def unlink_all(self) -> None:
        """Remove every callback."""
        self._links = None

    def has_links(self) -> bool:
        return bool(self._links)


class _SpawnedLink:
    """A link callback that runs in its own task (so it may block)."""

    __slots__ = ("callback", "if_successful")

    def __init__(self, callback: Callable[[Task], object], if_successful: bool | None = None) -> None:
        self.callback = callback
        # None: always; True/False: only if the task did / did not succeed.
        self.if_successful = if_successful

    def __call__(self, task: Task) -> None:
        if self.if_successful is None or self.if_successful == task.successful():
            spawn(self.callback, task)

    def __eq__(self, other: object) -> bool:
        return other == self.callback or (
            isinstance(other, _SpawnedLink) and other.callback == self.callback)

    def __hash__(self) -> int:
        return hash(self.callback)


class _Joiner:
    """The calling green thread's wait for ``tasks`` to finish, for
    :meth:`Task.join` and :func:`joinall`: linked to each task that has not
    finished yet, it notes in ``finished`` (in order) each one that finishes
    and wakes the waiter.  :meth:`close` (in the waiter's ``finally``) ends
    the registration.

    A task's links run in its own hub's OS thread, which may not be the
    waiter's: then the wake goes through the waiter's hub
    (``call_threadsafe``), and is dropped there if the wait is already over,
    so it cannot resume the waiter out of a later, unrelated wait.
    """

    __slots__ = ("hub", "g", "finished", "linked", "waiting")

    def __init__(self, tasks: Iterable[Task]) -> None:
        self.hub: Hub = get_hub()
        self.g = getcurrent()
        self.finished: list[Task] = []
        self.linked: list[Task] = []
        self.waiting = True
        for t in tasks:
            if t.ready():
                self.finished.append(t)
            else:
                self.linked.append(t)
                t.rawlink(self)

    def __call__(self, task: Task) -> None:
        # In the hub of the task's OS thread.
        self.finished.append(task)
        hub = self.hub
        if task._hub is hub:
            hub.wake(self.g)
        else:
            hub.call_threadsafe(self._wake_if_waiting)

    def _wake_if_waiting(self, _arg: object = None) -> None:
        # In the waiter's hub, like close(): reading ``waiting`` cannot race.
        if self.waiting:
            self.hub.wake(self.g)

    def close(self) -> None:
        self.waiting = False
        for t in self.linked:
            t.unlink(self)


def spawn(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Task:
    """Start ``function(*args, **kwargs)`` in a new green thread.

    >>> import greenline
    >>> greenline.spawn(print, "hello from a green thread").join()
    hello from a green thread
    """
    task = Task(function, *args, **kwargs)
    task.start()
    return task


def spawn_later(seconds: float, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Task:
    """Like :func:`spawn`, starting after ``seconds``.

    >>> import greenline
    >>> greenline.spawn_later(0.01, lambda: "later").get()
    'later'
    """
    task = Task(function, *args, **kwargs)
    task.start_later(seconds)
    return task


def joinall(tasks: Iterable[Task], timeout: float | None = None, raise_error: bool = False,
            count: int | None = None) -> list[Task]:
    """Wait for ``tasks`` to finish; return those that did.

    Stops early at ``timeout`` seconds, after ``count`` tasks, or, with
    ``raise_error``, at the first failure, whose exception it raises.

    >>> import greenline
    >>> done = greenline.joinall([greenline.spawn(greenline.sleep, s) for s in (0.01, 0.02)])
    >>> len(done)
    2
    """
    tasks = list(tasks)
    done: list[Task] = []
    if not tasks:
        return done
    want = len(tasks) if count is None else min(count, len(tasks))
    joiner = _Joiner(tasks)
    hub = joiner.hub
    finished = joiner.finished
    timer = Timeout.start_new(timeout, False) if timeout is not None else None
    try:
        while True:
            while finished and len(done) < want:
                t = finished.pop(0)
                done.append(t)
                if raise_error and not t.successful():
                    raise t.exception  # type: ignore[misc]
            if len(done) >= want:
                break
            hub.block()
    except Timeout as e:
        if e is not timer:
            raise
    finally:
        if timer is not None:
            timer.cancel()
        joiner.close()
    return done


def spawn_raw(function: Callable[..., Any], *args: Any, **kwargs: Any) -> greenlet:
    """Start ``function(*args, **kwargs)`` in a bare greenlet (no result,
    no links), gevent's cheapest spawn."""
    if not callable(function):
        raise TypeError(f"function must be callable, not {function!r}")
    hub = get_hub()
    if args or kwargs:
        g = greenlet(lambda: function(*args, **kwargs), parent=hub.greenlet)
    else:
        g = greenlet(function, parent=hub.greenlet)
    hub.schedule(g)
    return g


def kill(g: greenlet, exception: Any = GreenletExit) -> None:
    """Kill ``g`` (a task or a bare greenlet) with ``exception`` where it
    blocks, without waiting."""
    if isinstance(g, Task):
        g.kill(exception, block=False)
        return
    if g.dead:
        return
    hub = get_hub()
    if not g:
        # A bare greenlet not started yet: it will never run.
        unschedule(hub, g)
        return
    hub.throw(g, exception if not isinstance(exception, type) else exception())


def killall(tasks: Sequence[Task] | Iterable[Task], exception: Any = GreenletExit,
            block: bool = True, timeout: float | None = None) -> None:
    """Kill every task in ``tasks``; with ``block`` wait (up to ``timeout``)
    until they have all finished."""
    tasks = list(tasks)
    for t in tasks:
        if isinstance(t, Task):
            t.kill(exception, block=False)
        else:
            kill(t, exception)
    if block:
        joinall([t for t in tasks if isinstance(t, Task)], timeout=timeout)

