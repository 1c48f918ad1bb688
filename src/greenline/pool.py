"""Groups of tasks: ``Group`` tracks tasks, ``Pool`` also caps how many run
at once.  gevent's ``gevent.pool`` API.

>>> import greenline
>>> from greenline.pool import Pool
>>> pool = Pool(10)                       # at most 10 at a time
>>> pool.map(lambda n: n * n, range(5))
[0, 1, 4, 9, 16]
>>> sorted(pool.imap_unordered(abs, [-3, 1, -2]))
[1, 2, 3]
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from time import monotonic
from typing import Any

from greenlet import GreenletExit, getcurrent

from greenline._core.task import Task, joinall, killall, spawn
from greenline.event import Event
from greenline.lock import DummySemaphore, Semaphore
from greenline.queue import Full, Queue

__all__ = ["Group", "Pool", "PoolFull"]


class PoolFull(Full):
    """Raised by ``Pool.add(task, blocking=False)`` when the pool is full."""


class Group:
    """A set of running tasks that can be joined, killed or mapped over
    together.  Finished tasks leave the group by themselves.

    >>> import greenline
    >>> from greenline.pool import Group
    >>> group = Group()
    >>> _ = group.spawn(greenline.sleep, 0.01)
    >>> len(group)
    1
    >>> group.join()
    True
    >>> len(group)
    0
    """

    greenlet_class: type[Task] = Task

    def __init__(self, *tasks: Task) -> None:
        self.greenlets: set[Task] = set()
        self.dying: set[Task] = set()
        self._empty_event = Event()
        self._empty_event.set()
        for t in tasks:
            self.add(t)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {len(self.greenlets)} tasks>"

    def __len__(self) -> int:
        return len(self.greenlets)

    def __contains__(self, item: object) -> bool:
        return item in self.greenlets

    def __iter__(self) -> Iterator[Task]:
        return iter(list(self.greenlets))

    def empty(self) -> bool:
        return not self.greenlets

    # -- membership ----------------------------------------------------------

    def add(self, task: Task, blocking: bool = True, timeout: float | None = None) -> None:
        """Track ``task``; it leaves the group when it finishes."""
        if task in self.greenlets:
            return
        self.greenlets.add(task)
        self._empty_event.clear()
        # Called at once if it has already finished.
        task.rawlink(self._on_finish)

    def _on_finish(self, task: Task) -> None:
        self.discard(task)

    def discard(self, task: Task) -> None:
        """Stop tracking ``task`` (it keeps running)."""
        if task not in self.greenlets:
            return
        self.greenlets.discard(task)
        self.dying.discard(task)
        task.unlink(self._on_finish)
        self._removed()
        if not self.greenlets:
            self._empty_event.set()

    def _removed(self) -> None:
        pass

    def start(self, task: Task, blocking: bool = True, timeout: float | None = None) -> None:
        """Add an unstarted ``task`` and start it (a pool may wait for a
        slot: ``blocking``/``timeout`` as for :meth:`Pool.add`)."""
        self.add(task, blocking, timeout)
        task.start()

    def spawn(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Task:
        """Start ``function(*args, **kwargs)`` in a new task in this group."""
        task = self.greenlet_class(function, *args, **kwargs)
        self.start(task)
        return task

    # -- waiting and killing -------------------------------------------------

    def join(self, timeout: float | None = None, raise_error: bool = False) -> bool:
        """Wait until the group is empty; False if ``timeout`` passed first.

        With ``raise_error``, raise the exception of the first of the tasks
        in the group now that fails (as soon as it fails)."""
        deadline = None if timeout is None else monotonic() + timeout
        if raise_error:
            joinall(list(self.greenlets), timeout=timeout, raise_error=True)
        remaining = None if deadline is None else max(0.0, deadline - monotonic())
        self._empty_event.wait(remaining)
        return not self.greenlets

    def kill(self, exception: Any = GreenletExit, block: bool = True,
             timeout: float | None = None) -> None:
        """Kill every task in the group; with ``block`` wait (up to
        ``timeout``) until they have finished."""
        tasks = [t for t in self.greenlets if t is not getcurrent()]
        self.dying.update(tasks)
        killall(tasks, exception, block=block, timeout=timeout)

    def killone(self, task: Task, exception: Any = GreenletExit, block: bool = True,
                timeout: float | None = None) -> None:
        if task not in self.dying and task in self.greenlets:
            self.dying.add(task)
            task.kill(exception, block=block, timeout=timeout)

    # -- pool is full? -------------------------------------------------------

    def full(self) -> bool:
        return False

    def free_count(self) -> int:
        """How many more tasks could start now without waiting."""
        return 1

    def wait_available(self, timeout: float | None = None) -> int:
        """Wait until a task could start without waiting; return
        :meth:`free_count`."""
        return self.free_count()

    # -- applying functions --------------------------------------------------

    def apply(self, func: Callable[..., Any], args: Iterable[Any] | None = None,
              kwds: dict[str, Any] | None = None) -> Any:
        """Run ``func(*args, **kwds)`` in the group and return its result.
        Called from a task of this group, it runs right there (waiting for a
        slot of our own pool could deadlock)."""
        args = tuple(args or ())
        kwds = kwds or {}
        if getcurrent() in self.greenlets:
            return func(*args, **kwds)
        return self.spawn(func, *args, **kwds).get()

    def apply_cb(self, func: Callable[..., Any], args: Iterable[Any] | None = None,
                 kwds: dict[str, Any] | None = None,
                 callback: Callable[[Any], object] | None = None) -> Any:
        result = self.apply(func, args, kwds)
        if callback is not None:
            callback(result)
        return result

    def apply_async(self, func: Callable[..., Any], args: Iterable[Any] | None = None,
                    kwds: dict[str, Any] | None = None,
                    callback: Callable[[Any], object] | None = None) -> Task:
        """Start ``func(*args, **kwds)`` in the group; return its task.
        ``callback(result)`` runs if it succeeds."""
        task = self.spawn(func, *tuple(args or ()), **(kwds or {}))
        if callback is not None:
            task.link_value(lambda t: callback(t.value))
        return task

    def map(self, func: Callable[..., Any], iterable: Iterable[Any]) -> list[Any]:
        """``[func(x) for x in iterable]``, computed concurrently, in order."""
        it = self.imap(func, iterable)
        try:
            return list(it)
        finally:
            it.close()  # after a failure: stop the rest

    def map_async(self, func: Callable[..., Any], iterable: Iterable[Any],
                  callback: Callable[[Any], object] | None = None) -> Task:
        """:meth:`map` in a new task (outside the group); returns the task."""
        task = spawn(self.map, func, iterable)
        if callback is not None:
            task.link_value(lambda t: callback(t.value))
        return task

    def imap(self, func: Callable[..., Any], *iterables: Iterable[Any],
             maxsize: int | None = None) -> IMap:
        """Iterate over ``func(*args)`` for the items of ``iterables``, in
        order, computed concurrently.  ``maxsize`` caps the results computed
        ahead of the consumer.  A failure is raised when its turn comes;
        iterating on gives the results after it."""
        return IMap(self, func, iterables, ordered=True, maxsize=maxsize)

    def imap_unordered(self, func: Callable[..., Any], *iterables: Iterable[Any],
                       maxsize: int | None = None) -> IMap:
        """Like :meth:`imap`, yielding results as they finish."""
        return IMap(self, func, iterables, ordered=False, maxsize=maxsize)


class Pool(Group):
    """A :class:`Group` of at most ``size`` running tasks: :meth:`spawn`
    waits (first come, first served) while the pool is full.  ``size`` None
    means unbounded.

    >>> import greenline
    >>> from greenline.pool import Pool
    >>> pool = Pool(2)
    >>> tasks = [pool.spawn(greenline.sleep, 0.01) for _ in range(4)]
    >>> pool.free_count() <= 2
    True
    >>> pool.join()
    True
    """

    def __init__(self, size: int | None = None, greenlet_class: type[Task] | None = None) -> None:
        if size is not None and size < 1:
            raise ValueError(f"Pool size must be at least 1 or None, not {size!r}")
        self.size = size
        self._semaphore: Semaphore | DummySemaphore = (
            Semaphore(size) if size is not None else DummySemaphore())
        if greenlet_class is not None:
            self.greenlet_class = greenlet_class
        super().__init__()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} size={self.size} running={len(self.greenlets)}>"

    def full(self) -> bool:
        return self.free_count() <= 0

    def free_count(self) -> int:
        if self.size is None:
            return 1
        return max(0, self.size - len(self.greenlets))

    def wait_available(self, timeout: float | None = None) -> int:
        self._semaphore.wait(timeout)
        return self.free_count()

    def add(self, task: Task, blocking: bool = True, timeout: float | None = None) -> None:
        """Track ``task``, waiting for a free slot first; with
        ``blocking=False`` (or on timeout) raise :class:`PoolFull`."""
        if task in self.greenlets:
            return
        if not self._semaphore.acquire(blocking, timeout):
            raise PoolFull()
        try:
            super().add(task)
        except BaseException:
            self._semaphore.release()
            raise

    def _removed(self) -> None:
        self._semaphore.release()


_DONE: Any = object()


class IMap:
    """The iterator :meth:`Group.imap` and :meth:`Group.imap_unordered`
    return.  A feeder task starts one task per input item in the group (so
    a pool's size bounds them); results are handed over through a queue.
    Closing or dropping the iterator (or map() failing) stops the
    feeder and kills the tasks it started that are still running."""

    def __init__(self, group: Group, func: Callable[..., Any], iterables: tuple[Iterable[Any], ...],
                 ordered: bool, maxsize: int | None) -> None:
        # The feeder and the tasks reference only the core, so dropping this
        # object lets the garbage collector reach __del__ and stop them.
        self._core = _IMapCore(group, func, iterables, ordered, maxsize)

    def __iter__(self) -> IMap:
        return self

    def __next__(self) -> Any:
        return self._core.next()

    def close(self) -> None:
        """Stop starting tasks and kill those still running."""
        self._core.close()

    def __del__(self) -> None:
        try:
            self._core.close()
        except Exception:
            pass


class _IMapCore:

    def __init__(self, group: Group, func: Callable[..., Any], iterables: tuple[Iterable[Any], ...],
                 ordered: bool, maxsize: int | None) -> None:
        self._group = group
        self._func = func
        self._iterables = iterables
        self._ordered = ordered
        self._space = Semaphore(maxsize) if maxsize else None
        self._results: Queue = Queue()
        self._running: set[Task] = set()
        self._buffer: dict[int, Task] = {}
        self._next_index = 0
        self._total: int | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._feeder = spawn(self._feed)

    def _feed(self) -> None:
        index = 0
        try:
            for args in zip(*self._iterables, strict=False):
                if self._space is not None:
                    self._space.acquire()
                task = self._group.greenlet_class(self._func, *args)
                self._running.add(task)
                task.rawlink(functools.partial(self._deliver, index))
                self._group.start(task)
                index += 1
        except GreenletExit:
            raise
        except BaseException as e:
            # The input itself failed: raise it in the consumer.
            self._results.put((_DONE, e))
            return
        self._results.put((_DONE, index))

    def _deliver(self, index: int, task: Task) -> None:
        # In the hub: an unbounded put never blocks.
        self._running.discard(task)
        self._results.put((index, task))

    def next(self) -> Any:
        if self._closed:
            raise StopIteration
        try:
            task = self._next_task()
        except BaseException:
            self.close()
            raise
        if task is None:
            self.close()
            raise StopIteration
        if self._space is not None:
            self._space.release()
        if not task.successful():
            # As gevent's: the failure is raised in its turn, and iterating
            # on gives the results after it.
            raise task.exception  # type: ignore[misc]
        return task.value

    def _next_task(self) -> Task | None:
        while True:
            if self._ordered and self._next_index in self._buffer:
                self._next_index += 1
                return self._buffer.pop(self._next_index - 1)
            if self._total is not None and self._next_index >= self._total:
                return None
            index, payload = self._results.get()
            if index is _DONE:
                if isinstance(payload, BaseException):
                    raise payload
                self._total = payload
                continue
            if self._ordered:
                self._buffer[index] = payload
            else:
                self._next_index += 1
                return payload  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        me = getcurrent()
        running = [self._feeder, *self._running]
        self._running.clear()
        for t in running:
            if t is not me:
                t.kill(block=False)
