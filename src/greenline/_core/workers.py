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
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from greenline._core import threadpool as _threads
from greenline._core.hub import get_hub, os_thread_ident
from greenline._core.task import Task, joinall
from greenline._core.threadpool import run_in
from greenline._core.waiters import Waiter, notify_all, park

__all__ = ["ThreadPool", "ThreadResult", "ThreadPoolExecutor", "InvalidThreadUseError"]


class InvalidThreadUseError(RuntimeError):
    """An object was used from an OS thread it does not belong to (a
    :class:`ThreadPool` spawned on from another thread than its hub's)."""


def get_thread_profile() -> Any:
    """The hook ``threading.setprofile`` set for new threads (None if
    ``threading`` was never imported: nobody set one)."""
    threading = sys.modules.get("threading")
    return None if threading is None else threading.getprofile()


def get_thread_trace() -> Any:
    """The hook ``threading.settrace`` set for new threads."""
    threading = sys.modules.get("threading")
    return None if threading is None else threading.gettrace()


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
        # Green threads waiting in spawn() for maxsize to be above 0.
        self._resized: list[Waiter] = []

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
        if value > 0 and self._resized:
            waiters, self._resized = self._resized, []
            notify_all(waiters)

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

    def _run(self, call: list[Any]) -> Any:
        # The job forgets its call before running it: once it is done, the
        # pool holds no reference to the function or its arguments.
        func, args, kwargs = call
        call.clear()
        return run_in(self._threads, self._call_in_worker, func, args, kwargs)

    def _call_in_worker(self, func: Callable[..., Any], args: tuple[Any, ...],
                        kwargs: dict[str, Any]) -> Any:
        _in_worker.pool = self
        # As gevent's: the hooks threading.setprofile/settrace hold now (a
        # profiler, coverage) see the call, though the worker thread was
        # started before they were set; they are cleared after it.  The
        # setters are called only when there is a hook to set or clear.
        profile = get_thread_profile()
        trace = get_thread_trace()
        if profile is not None:
            sys.setprofile(profile)
        if trace is not None:
            sys.settrace(trace)
        try:
            return func(*args, **kwargs)
        finally:
            _in_worker.pool = None
            if sys.getprofile() is not None:
                sys.setprofile(None)
            if sys.gettrace() is not None:
                sys.settrace(None)

    def spawn(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> ThreadResult:
        """Start ``func(*args, **kwargs)`` in a worker thread; its result."""
        if self.hub.thread_ident != os_thread_ident():
            raise InvalidThreadUseError(
                "a ThreadPool takes work only from the OS thread of its hub")
        while self._maxsize == 0:
            # Nothing may run until the pool is given threads again.
            w = Waiter()
            self._resized.append(w)
            try:
                park(w, None)
            finally:
                if w in self._resized:
                    self._resized.remove(w)
        job = ThreadResult(self._run, [func, args, kwargs])
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
    """A future run by a worker thread and settled there (so the stdlib's
    ``concurrent.futures.wait`` and ``as_completed`` see it as usual), whose
    own waits (``result``, ``exception``) block only the calling green
    thread, and which ``gevent.wait``/``iwait`` take (``rawlink``,
    ``unlink``: called back in the submitting thread's hub)."""

    def __init__(self) -> None:
        super().__init__()
        self._gl_hub = get_hub()
        self._gl_guard = _thread.allocate_lock()
        self._gl_waiters: list[Waiter] = []
        self._gl_links: dict[Any, Any] = {}
        # The hub must wait for the settling, not report a deadlock.
        self._gl_hub.refs += 1
        self.add_done_callback(self._gl_settled)

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # In a worker thread.
        if not self.set_running_or_notify_cancel():
            return
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:
            self.set_exception(e)
        else:
            self.set_result(result)

    def _gl_settled(self, _self: Any) -> None:
        # Wherever the future was settled (a worker, or cancel()).
        with self._gl_guard:
            waiters, self._gl_waiters = self._gl_waiters, []
        notify_all(waiters)
        self._gl_hub.call_threadsafe(self._gl_after)

    def _gl_after(self, _arg: object = None) -> None:
        # In the submitting thread's hub.
        self._gl_hub.refs -= 1
        for callback in list(self._gl_links):
            self._gl_call(callback)

    def _gl_call(self, callback: Any) -> None:
        if self._gl_links.pop(callback, None) is None:
            return
        try:
            callback(self)
        except BaseException:
            self._gl_hub.handle_error(callback, *sys.exc_info())

    def _wait(self, timeout: float | None) -> None:
        if not self.done():
            w = Waiter()
            with self._gl_guard:
                if not self.done():
                    self._gl_waiters.append(w)
            try:
                if not self.done():
                    park(w, timeout)
            finally:
                with self._gl_guard:
                    if w in self._gl_waiters:
                        self._gl_waiters.remove(w)
        if not self.done():
            raise concurrent.futures.TimeoutError()

    def result(self, timeout: float | None = None) -> Any:
        self._wait(timeout)
        return super().result(0)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        return super().exception(0)

    def rawlink(self, callback: Callable[[Any], object]) -> None:
        """Call ``callback(self)`` in this hub once the future is done."""
        if not callable(callback):
            raise TypeError(f"Expected callable: {callback!r}")
        self._gl_links[callback] = True
        if self.done():
            self._gl_hub.call_later(0, self._gl_call, callback)

    def unlink(self, callback: Callable[[Any], object]) -> None:
        self._gl_links.pop(callback, None)


class ThreadPoolExecutor(concurrent.futures.Executor):
    """``concurrent.futures`` on :class:`ThreadPool`'s threads:
    ``result()`` blocks only the calling green thread."""

    def __init__(self, max_workers: int | None = None, *args: Any, **kwargs: Any) -> None:
        self._pool = ThreadPool(max_workers or 10)
        self._shutdown = False
        self._futures: set[_Future] = set()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:  # type: ignore[type-arg]
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        future = _Future()
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)
        # Straight to a worker thread (not through a green thread that would
        # wait for its turn in the hub): a caller blocking the OS thread in
        # concurrent.futures.wait still sees it done.
        self._pool._threads.submit(lambda: future._run(fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True
        if cancel_futures:
            for f in list(self._futures):
                f.cancel()
        if wait:
            for f in list(self._futures):
                try:
                    f._wait(None)
                except concurrent.futures.CancelledError:
                    pass
        self._pool.kill()

    def kill(self) -> None:
        self._pool.kill()
