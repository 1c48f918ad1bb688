"""Pools of real OS threads for calls that cannot be made cooperative.

>>> import greenline, time
>>> greenline.to_thread(time.sleep, 0.01)   # only this green thread waits

The pools are built from ``_thread`` and ``_queue`` objects saved at import,
so monkey-patching ``threading`` can never turn their workers into green
threads.  Workers start on demand up to ``maxsize`` and exit after a minute
idle.

Two pools, two lanes: the shared one of :func:`to_thread` (sized for work:
``min(32, cores + 4)`` threads, as ``concurrent.futures``), and the resolver's
(:func:`get_resolver_pool`), with many more threads, because a name lookup
only waits (for a DNS server that may take seconds) and twenty slow lookups
must not queue behind one another, nor hold up the shared pool's jobs.
"""

from __future__ import annotations

import _queue
import _thread
import os
from collections.abc import Callable
from typing import Any, TypeVar

from greenlet import getcurrent

from greenline._core import hub as _hub
from greenline._core.hub import get_hub

__all__ = ["ThreadPool", "to_thread", "run_in", "get_threadpool", "get_resolver_pool",
           "RESOLVER_THREADS"]

T = TypeVar("T")

_start_new_thread = _thread.start_new_thread
_allocate_lock = _thread.allocate_lock
_SimpleQueue = _queue.SimpleQueue
_Empty = _queue.Empty

IDLE_SECONDS = 60.0

# Threads of the resolver's lane: lookups that wait on a slow DNS server at
# once before the next one queues.
RESOLVER_THREADS = 64


class ThreadPool:
    """Runs functions in up to ``maxsize`` OS threads."""

    def __init__(self, maxsize: int | None = None) -> None:
        self.maxsize = maxsize or min(32, (os.cpu_count() or 1) + 4)
        self._jobs: Any = _SimpleQueue()
        self._lock = _allocate_lock()
        self.size = 0
        self.idle = 0
        self.queued = 0

    def submit(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` in a worker thread.  ``fn`` must not raise."""
        with self._lock:
            self._jobs.put(fn)
            self.queued += 1
            # Idle workers may not have picked up earlier jobs yet: compare
            # with what is queued, not with zero.
            if self.queued > self.idle and self.size < self.maxsize:
                self.size += 1
                _start_new_thread(self._worker, ())

    def _worker(self) -> None:
        global _idle_total
        jobs = self._jobs
        lock = self._lock
        while True:
            with lock:
                self.idle += 1
                _idle_total += 1
            try:
                job = jobs.get(timeout=IDLE_SECONDS)
            except _Empty:
                with lock:
                    self.idle -= 1
                    _idle_total -= 1
                    # Leave only if no job slipped in meanwhile.
                    if jobs.empty():
                        self.size -= 1
                        break
                continue
            with lock:
                self.idle -= 1
                self.queued -= 1
                _idle_total -= 1
            job()
            # Let go of it now, not when the next job comes: an idle worker
            # would otherwise keep the finished job, with its result and the
            # caller's green thread and hub, alive.
            del job
        # A job may have made a hub in this thread (green threads, a
        # Timeout): its epoll and eventfd would outlive the thread.
        _hub.close_thread_hub()

    def apply(self, fn: Callable[..., T], args: tuple[Any, ...] = (),
              kwargs: dict[str, Any] | None = None) -> T:
        """Run ``fn(*args, **kwargs)`` in one of this pool's threads and
        return its result (or raise its exception), blocking only the
        calling green thread (gevent's ``ThreadPool.apply``).  See
        :func:`to_thread`."""
        return _apply(self, fn, args, kwargs or {})


_pool: ThreadPool | None = None
_resolver_pool: ThreadPool | None = None
_pool_lock = _allocate_lock()


def get_threadpool() -> ThreadPool:
    """The process's shared pool (made on first use)."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPool()
    return _pool


def get_resolver_pool() -> ThreadPool:
    """The pool name lookups run in (made on first use): a lane of its own,
    of :data:`RESOLVER_THREADS` threads."""
    global _resolver_pool
    if _resolver_pool is None:
        with _pool_lock:
            if _resolver_pool is None:
                _resolver_pool = ThreadPool(RESOLVER_THREADS)
    return _resolver_pool


# Idle workers of every pool: threads that exist but can wake nobody.  The
# hub subtracts them when it decides whether another thread could still
# end a wait (see Hub._other_threads).
_idle_total = 0


def idle_workers() -> int:
    return _idle_total


class _Call:
    __slots__ = ("fn", "args", "kwargs", "hub", "g", "value", "exc", "done", "waiting")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.hub = get_hub()
        self.g = getcurrent()
        self.value: Any = None
        self.exc: BaseException | None = None
        self.done = False
        self.waiting = True

    def __call__(self) -> None:  # in a worker thread
        try:
            self.value = self.fn(*self.args, **self.kwargs)
        except BaseException as e:
            self.exc = e
        self.fn = self.args = self.kwargs = None  # type: ignore[assignment]
        self.hub.call_threadsafe(self._deliver)

    def _deliver(self, _arg: object) -> None:  # in the caller's hub
        self.done = True
        self.hub.refs -= 1
        if self.waiting:
            self.hub.wake(self.g)


def to_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` in the thread pool and return its result
    (or raise its exception), blocking only the calling green thread.

    If the caller is killed or times out meanwhile, the call still runs to
    its end in its thread (a thread cannot be interrupted); its result is
    dropped.
    """
    return _apply(get_threadpool(), fn, args, kwargs)


def run_in(pool: ThreadPool, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """:func:`to_thread` in the threads of ``pool``."""
    return _apply(pool, fn, args, kwargs)


def _apply(pool: ThreadPool, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    call = _Call(fn, args, kwargs)
    hub = call.hub
    hub.refs += 1  # the hub must wait for the delivery, not report deadlock
    pool.submit(call)
    try:
        while not call.done:
            hub.block()
    finally:
        call.waiting = False
    if call.exc is not None:
        exc, call.exc = call.exc, None
        raise exc
    return call.value  # type: ignore[no-any-return]


def _after_fork_in_child() -> None:
    # The parent's workers do not exist in the child; its queue and lock may
    # be in any state.  Start afresh.
    global _pool, _resolver_pool, _pool_lock, _idle_total
    _pool = None
    _resolver_pool = None
    _idle_total = 0
    _pool_lock = _allocate_lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
