"""gevent's ``ThreadPool`` and ``ThreadPoolExecutor``: calls that block the
OS thread, run in real threads, awaited cooperatively.

>>> import time
>>> from greenline._core.workers import ThreadPool
>>> pool = ThreadPool(3)
>>> pool.map(lambda s: time.sleep(s) or s, [0.01, 0.02, 0.01])
[0.01, 0.02, 0.01]

Each job is a task in the calling hub that waits for its call to come back
from a worker thread (:func:`greenline._core.threadpool.run_in`): so the
result of :meth:`ThreadPool.spawn` is waited on like any task (``get``,
``join``, ``rawlink``, ``wait``/``iwait``), and only the green thread that
asks for it waits.  The workers are :class:`greenline._core.threadpool.ThreadPool`'s,
made from the saved originals, so monkey-patching never turns them green.

May import: the standard library, ``greenlet`` and ``_core``.
"""

from __future__ import annotations

import _thread
import concurrent.futures
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from greenline._core import threadpool as _threads
from greenline._core.hub import get_hub
from greenline._core.task import Task, joinall
from greenline._core.threadpool import run_in

__all__ = ["ThreadPool", "ThreadResult", "ThreadPoolExecutor"]

class _InWorker(_thread._local):  # type: ignore[misc,valid-type]
    pool: Any = None


_in_worker = _InWorker()


class ThreadResult(Task):
    """One job of a :class:`ThreadPool`: a task whose value is the call's."""

    report_failures = False  # the caller gets the error from get()

    def wait(self, timeout: float | None = None) -> Any:
        """Wait until done (or ``timeout``); the value, or None."""
        self.join(timeout)
        return self.value if self.successful() else None

    def result(self, timeout: float | None = None) -> Any:
        return self.get(timeout=timeout)

    def done(self) -> bool:
        return self.ready()

    def exc_info_or_none(self) -> Any:
        return self.exc_info


class ThreadPool:
    """Run calls in up to ``maxsize`` OS threads; ``spawn`` returns a
    :class:`ThreadResult`, ``apply``/``map``/``imap`` wait for results,
    blocking only the calling green thread."""

    def __init__(self, maxsize: int = 10, hub: Any = None, idle_task_timeout: float = -1) -> None:
        if maxsize < 0:
            raise ValueError(f"maxsize must not be negative: {maxsize!r}")
        self.hub = hub if hub is not None else get_hub()
        self._maxsize = maxsize
        self._size = 0
        self._threads = _threads.ThreadPool(max(1, maxsize))
        self._jobs: set[ThreadResult] = set()
        self.idle_task_timeout = idle_task_timeout

    # -- size ------------------------------------------------------------

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"maxsize must not be negative: {value!r}")
        self._maxsize = value
        self._threads.maxsize = max(1, value)
        if self._size > value:
            self._size = value

    @property
    def size(self) -> int:
        """Worker threads (started on demand, up to :attr:`maxsize`)."""
        return self._size

    @size.setter
    def size(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"Size of the pool cannot be negative: {value!r}")
        if value > self._maxsize:
            raise ValueError(f"Size of the pool cannot be bigger than maxsize: {value!r} > {self._maxsize!r}")
        self._size = value

    def __len__(self) -> int:
        """Jobs submitted and not finished."""
        return len(self._jobs)

    def free_count(self) -> int:
        return max(0, self._maxsize - len(self._jobs))

    # -- running -----------------------------------------------------------

    def _run(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return run_in(self._threads, self._call_in_worker, func, args, kwargs)

    def _call_in_worker(self, func: Callable[..., Any], args: tuple[Any, ...],
                        kwargs: dict[str, Any]) -> Any:
        _in_worker.pool = self
        try:
            return func(*args, **kwargs)
        finally:
            _in_worker.pool = None

    def spawn(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> ThreadResult:
        """Start ``func(*args, **kwargs)`` in a worker thread; its result."""
        if self._maxsize == 0:
            raise ValueError("a ThreadPool of maxsize 0 cannot run anything")
        job = ThreadResult(self._run, func, args, kwargs)
        self._jobs.add(job)
        job.rawlink(self._jobs.discard)
        if self._size < self._maxsize and self._size < len(self._jobs):
            self._size += 1
        job.start()
        return job

    def apply(self, func: Callable[..., Any], args: Iterable[Any] | None = None,
              kwds: dict[str, Any] | None = None) -> Any:
        """``func(*args, **kwds)`` in a worker thread, waited for.  From one
        of this pool's own workers it is called directly (a worker waiting
        for a free worker could wait forever)."""
        args = tuple(args or ())
        kwds = kwds or {}
        if _in_worker.pool is self:
            return func(*args, **kwds)
        return self.spawn(func, *args, **kwds).get()

    def apply_async(self, func: Callable[..., Any], args: Iterable[Any] | None = None,
                    kwds: dict[str, Any] | None = None,
                    callback: Callable[[Any], object] | None = None) -> ThreadResult:
        job = self.spawn(func, *tuple(args or ()), **(kwds or {}))
        if callback is not None:
            job.link_value(lambda t: callback(t.value))
        return job

    def apply_cb(self, func: Callable[..., Any], args: Iterable[Any] | None = None,
                 kwds: dict[str, Any] | None = None,
                 callback: Callable[[Any], object] | None = None) -> Any:
        result = self.apply(func, args, kwds)
        if callback is not None:
            callback(result)
        return result

    def map(self, func: Callable[..., Any], iterable: Iterable[Any]) -> list[Any]:
        return list(self.imap(func, iterable))

    def map_async(self, func: Callable[..., Any], iterable: Iterable[Any],
                  callback: Callable[[Any], object] | None = None) -> Task:
        task = Task(self.map, func, iterable)
        if callback is not None:
            task.link_value(lambda t: callback(t.value))
        task.start()
        return task

    def map_cb(self, func: Callable[..., Any], iterable: Iterable[Any],
               callback: Callable[[Any], object] | None = None) -> list[Any]:
        result = self.map(func, iterable)
        if callback is not None:
            callback(result)
        return result

    def imap(self, func: Callable[..., Any], *iterables: Iterable[Any]) -> Iterator[Any]:
        """Results in the order of the inputs, computed at most
        :attr:`maxsize` at a time."""
        jobs = [self.spawn(func, *args) for args in zip(*iterables, strict=False)]
        return (job.get() for job in jobs)

    def imap_unordered(self, func: Callable[..., Any], *iterables: Iterable[Any]) -> Iterator[Any]:
        """Results as they come."""
        from greenline._core.wait import iwait

        jobs = [self.spawn(func, *args) for args in zip(*iterables, strict=False)]
        return (job.get() for job in iwait(jobs))

    def join(self, timeout: float | None = None) -> bool:
        """Wait for every job; False if ``timeout`` passed first."""
        jobs = list(self._jobs)
        done = joinall(jobs, timeout=timeout)
        return len(done) == len(jobs)

    def kill(self) -> None:
        """Shrink to no threads; jobs already running end on their own (a
        thread cannot be interrupted)."""
        self._size = 0

    def adjust(self) -> None:
        pass


class _Future(concurrent.futures.Future):  # type: ignore[type-arg]
    """A future whose waits block only the calling green thread."""

    def __init__(self, job: ThreadResult) -> None:
        super().__init__()
        self._job = job
        self.set_running_or_notify_cancel()
        job.rawlink(self._settle)

    def _settle(self, job: Task) -> None:
        if self.done():
            return
        if job.successful():
            self.set_result(job.value)
        else:
            self.set_exception(job.exception)

    def result(self, timeout: float | None = None) -> Any:
        self._job.join(timeout)
        if not self._job.ready():
            raise concurrent.futures.TimeoutError()
        return super().result(0)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._job.join(timeout)
        if not self._job.ready():
            raise concurrent.futures.TimeoutError()
        return super().exception(0)


class ThreadPoolExecutor(concurrent.futures.Executor):
    """``concurrent.futures`` over a :class:`ThreadPool`: ``result()`` blocks
    only the calling green thread."""

    def __init__(self, max_workers: int | None = None, *args: Any, **kwargs: Any) -> None:
        self._pool = ThreadPool(max_workers or 10)
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:  # type: ignore[type-arg]
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        return _Future(self._pool.spawn(fn, *args, **kwargs))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True
        if wait:
            self._pool.join()
        self._pool.kill()

    def kill(self) -> None:
        self._pool.kill()
