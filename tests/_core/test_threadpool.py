"""to_thread: blocking calls in real threads, only the caller waits."""

from __future__ import annotations

import threading
import time

import pytest

import greenline
from greenline._core.threadpool import ThreadPool, get_threadpool, to_thread


def test_result_and_exception():
    assert to_thread(lambda a, b: a + b, 1, b=2) == 3
    with pytest.raises(ZeroDivisionError):
        to_thread(lambda: 1 / 0)


def test_runs_in_another_os_thread():
    assert to_thread(threading.get_ident) != threading.get_ident()


def test_only_the_caller_waits():
    ticks = []

    def ticker():
        for _ in range(10):
            ticks.append(time.monotonic())
            greenline.sleep(0.01)

    t = greenline.spawn(ticker)
    to_thread(time.sleep, 0.2)  # a real blocking call
    t.join()
    assert len(ticks) == 10


def test_calls_run_in_parallel():
    start = time.monotonic()
    tasks = [greenline.spawn(to_thread, time.sleep, 0.2) for _ in range(8)]
    greenline.joinall(tasks, raise_error=True)
    assert time.monotonic() - start < 1.2  # serially 1.6 s


def test_killed_caller_does_not_get_a_stale_wakeup():
    t = greenline.spawn(to_thread, time.sleep, 0.05)
    greenline.sleep(0.01)
    t.kill()
    # The thread's result arrives while this green thread sleeps: it must
    # not cut the sleep short.
    start = time.monotonic()
    greenline.sleep(0.15)
    assert time.monotonic() - start >= 0.14


def test_waiting_on_a_thread_is_not_a_deadlock():
    # Nothing else in the hub: it must wait for the thread, not raise LoopExit.
    assert to_thread(lambda: (time.sleep(0.05), "done")[1]) == "done"


def test_pool_grows_to_its_limit_only():
    pool = ThreadPool(maxsize=2)
    hub = greenline.get_hub()
    me = greenline.getcurrent()
    done = []
    lock = threading.Lock()

    def job():
        time.sleep(0.02)
        with lock:
            done.append(1)
            if len(done) == 6:
                hub.call_threadsafe(hub.wake, me)

    for _ in range(6):
        pool.submit(job)
    assert pool.size <= 2
    hub.refs += 1
    try:
        hub.block()
    finally:
        hub.refs -= 1
    assert len(done) == 6 and pool.size <= 2


def test_shared_pool_is_one_per_process():
    assert get_threadpool() is get_threadpool()


def test_a_worker_that_made_a_hub_closes_it_when_it_ends(monkeypatch, fd_count):
    from greenline._core import threadpool

    monkeypatch.setattr(threadpool, "IDLE_SECONDS", 0.05)
    pool = ThreadPool(maxsize=1)
    hub = greenline.get_hub()
    me = greenline.getcurrent()

    def job():
        greenline.sleep(0.01)  # makes a hub in the worker thread
        hub.call_threadsafe(hub.wake, me)

    hub.refs += 1
    try:
        pool.submit(job)
        hub.block()
    finally:
        hub.refs -= 1
    deadline = time.monotonic() + 5
    while pool.size and time.monotonic() < deadline:
        greenline.sleep(0.02)
    assert pool.size == 0
    fd_count()  # the worker's epoll and eventfd are gone with it


def test_an_idle_worker_keeps_nothing_of_its_last_job_alive(until):
    # gevent's TestRef: once a job's result is back it is the caller's
    # alone; a worker waiting for the next job must not hold it (it did,
    # through the finished job, until the next job replaced it).
    import gc
    import weakref

    class Payload:
        pass

    pool = ThreadPool(1)
    payload = Payload()
    ref = weakref.ref(payload)
    assert pool.apply(lambda p: p, (payload,)) is payload
    del payload
    until(lambda: gc.collect() >= 0 and ref() is None, 5, "the payload to be freed")
