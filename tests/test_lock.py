"""Semaphore, BoundedSemaphore, Lock, RLock: gevent's API, the stdlib's lock
protocol, FIFO hand-off, and waking across OS threads."""

from __future__ import annotations

import _thread
import threading
import time

import pytest

import greenline
from greenline._core.hub import LoopExit
from greenline._core.threadpool import to_thread
from greenline.lock import BoundedSemaphore, Lock, RLock, Semaphore

_real_lock = _thread.allocate_lock


def until(predicate, timeout: float = 5.0) -> None:
    """Yield to the hub until ``predicate()`` holds (bounded): used to wait
    for another OS thread to have registered as a waiter."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition never became true"
        greenline.sleep(0.001)


# -- Semaphore ------------------------------------------------------------


def test_semaphore_counts_permits():
    sem = Semaphore(2)
    assert sem.acquire() and sem.acquire()
    assert sem.counter == 0 and sem.locked()
    assert sem.acquire(blocking=False) is False
    assert sem.release() == 1
    assert not sem.locked() and sem.ready()
    assert sem.acquire(timeout=0) is True


def test_semaphore_negative_value_rejected():
    with pytest.raises(ValueError):
        Semaphore(-1)


def test_semaphore_timeout_expires():
    sem = Semaphore(0)
    start = time.monotonic()
    assert sem.acquire(timeout=0.05) is False
    assert time.monotonic() - start >= 0.045
    assert not sem._waiters  # the timed-out waiter left no registration


def test_semaphore_limits_concurrency():
    sem = Semaphore(3)
    active = 0
    peak = 0

    def job():
        nonlocal active, peak
        with sem:
            active += 1
            peak = max(peak, active)
            greenline.sleep(0.001)
            active -= 1

    greenline.joinall([greenline.spawn(job) for _ in range(30)])
    assert peak == 3
    assert sem.counter == 3


def test_semaphore_waiters_served_fifo_without_barging():
    sem = Semaphore(0)
    order = []

    def waiter(n):
        sem.acquire()
        order.append(n)

    tasks = [greenline.spawn(waiter, n) for n in range(10)]
    greenline.sleep(0)  # all parked, in spawn order
    for _ in range(10):
        sem.release()
        # The permit went to the first waiter, not into the counter: a
        # green thread that did not wait cannot take it.
        assert sem.acquire(blocking=False) is False
    greenline.joinall(tasks)
    assert order == list(range(10))
    assert sem.counter == 0


def test_semaphore_wait_does_not_take_a_permit():
    sem = Semaphore(0)
    seen = []
    t = greenline.spawn(lambda: seen.append(sem.wait()))
    greenline.sleep(0)
    assert seen == []
    sem.release()
    t.join()
    assert seen == [1] and sem.counter == 1
    assert sem.wait(timeout=0.01) == 1


def test_semaphore_wait_times_out():
    sem = Semaphore(0)
    assert sem.wait(timeout=0.01) == 0
    assert not sem._watchers


def test_killed_waiter_passes_the_permit_on():
    sem = Semaphore(0)
    got = []

    def waiter(n):
        sem.acquire()
        got.append(n)

    a = greenline.spawn(waiter, "a")
    b = greenline.spawn(waiter, "b")
    greenline.sleep(0)
    sem.release()          # hands the permit to a...
    a.kill(block=False)    # ...which is killed before it runs
    greenline.joinall([a, b], timeout=5)
    assert a.dead and a.successful()  # killed: GreenletExit
    assert got == ["b"]
    assert sem.counter == 0 and not sem._waiters


def test_timeout_exception_in_waiter_passes_the_permit_on():
    sem = Semaphore(0)
    got = []

    def waiter(n):
        try:
            with greenline.Timeout(10):
                sem.acquire()
        except greenline.Timeout:
            got.append(("timeout", n))
            return
        got.append(n)

    a = greenline.spawn(waiter, "a")
    b = greenline.spawn(waiter, "b")
    greenline.sleep(0)
    sem.release()
    # a's grant is pending; a Timeout thrown at it now lands first.
    greenline.get_hub().throw(a, greenline.Timeout(0))
    greenline.joinall([a, b], timeout=5)
    assert got == [("timeout", "a"), "b"]
    assert sem.counter == 0


def test_bounded_semaphore_refuses_over_release():
    sem = BoundedSemaphore(2)
    with pytest.raises(ValueError):
        sem.release()
    sem.acquire()
    sem.release()
    with pytest.raises(ValueError):
        sem.release()
    assert sem.counter == 2


def test_greenline_timeout_while_waiting_leaves_no_registration():
    sem = Semaphore(0)
    with pytest.raises(greenline.Timeout):
        with greenline.Timeout(0.01):
            sem.acquire()
    assert not sem._waiters
    sem.release()
    assert sem.counter == 1


def test_deadlock_is_reported_not_hung():
    sem = Semaphore(0)
    with pytest.raises(LoopExit):
        sem.acquire()
    assert not sem._waiters


# -- Lock ------------------------------------------------------------------


def test_lock_basic_protocol():
    lock = Lock()
    assert not lock.locked()
    assert lock.acquire() is True
    assert lock.locked()
    assert lock.acquire(False) is False
    assert lock.acquire(True, 0.01) is False
    assert lock.acquire(timeout=0) is False
    lock.release()
    assert not lock.locked()
    with pytest.raises(RuntimeError, match="release unlocked lock"):
        lock.release()
    with lock as entered:
        assert entered is True and lock.locked()
    assert not lock.locked()
    assert "unlocked" in repr(lock)


def test_lock_stdlib_argument_checks():
    lock = Lock()
    with pytest.raises(ValueError):
        lock.acquire(False, 1)
    with pytest.raises(ValueError):
        lock.acquire(True, -2)
    with pytest.raises(OverflowError):
        lock.acquire(True, threading.TIMEOUT_MAX + 1)
    with pytest.raises(OverflowError):
        RLock().acquire(True, threading.TIMEOUT_MAX + 1)
    assert lock.acquire(True, -1) is True
    assert lock.acquire(False, -1) is False
    lock.release()
    # gevent's spelling of "forever"
    assert lock.acquire(True, None) is True
    lock.release()


def test_lock_excludes_green_threads():
    lock = Lock()
    counter = 0

    def bump():
        nonlocal counter
        for _ in range(50):
            with lock:
                value = counter
                greenline.sleep(0)  # would lose updates without the lock
                counter = value + 1

    greenline.joinall([greenline.spawn(bump) for _ in range(10)])
    assert counter == 500


def test_lock_released_by_another_green_thread():
    # Like threading.Lock (not RLock), any thread may release it.
    lock = Lock()
    lock.acquire()
    greenline.spawn(lock.release).join()
    assert not lock.locked()


def test_lock_at_fork_reinit():
    lock = Lock()
    lock.acquire()
    lock._at_fork_reinit()
    assert not lock.locked()
    assert lock.acquire(False)


# -- RLock -----------------------------------------------------------------


def test_rlock_reentrant_and_owned():
    lock = RLock()
    assert lock.acquire() and lock.acquire()
    assert lock._is_owned() and lock._recursion_count() == 2
    other = greenline.spawn(lambda: (lock._is_owned(), lock.acquire(timeout=0.01)))
    assert other.get() == (False, False)
    with pytest.raises(RuntimeError):
        greenline.spawn(lock.release).get()
    lock.release()
    assert lock.locked()
    lock.release()
    assert not lock.locked()
    with pytest.raises(RuntimeError, match="un-acquired"):
        lock.release()


def test_rlock_release_save_and_restore():
    lock = RLock()
    lock.acquire()
    lock.acquire()
    state = lock._release_save()
    assert not lock.locked()
    assert greenline.spawn(lambda: lock.acquire(False) and (lock.release() or True)).get()
    lock._acquire_restore(state)
    assert lock._recursion_count() == 2
    lock.release()
    lock.release()
    assert not lock.locked()
    with pytest.raises(RuntimeError):
        lock._release_save()


def test_rlock_handed_to_waiting_green_thread():
    lock = RLock()
    lock.acquire()
    t = greenline.spawn(lambda: lock.acquire() and lock._is_owned())
    greenline.sleep(0)
    lock.release()
    assert t.get() is True
    assert not lock._is_owned()


# -- threading.Condition on our locks -------------------------------------


@pytest.fixture
def green_condition(monkeypatch):
    # Condition.wait parks on a fresh lock from threading._allocate_lock:
    # what monkey-patching makes of it.
    monkeypatch.setattr(threading, "_allocate_lock", Lock)


@pytest.mark.parametrize("lock_class", [RLock, Lock])
def test_stdlib_condition_producer_consumer(green_condition, lock_class):
    cond = threading.Condition(lock_class())
    items: list[int] = []
    got: list[int] = []

    def consumer():
        for _ in range(20):
            with cond:
                while not items:
                    cond.wait()
                got.append(items.pop(0))

    def producer():
        for n in range(20):
            with cond:
                items.append(n)
                cond.notify()
            greenline.sleep(0)

    greenline.joinall([greenline.spawn(consumer), greenline.spawn(producer)], raise_error=True)
    assert got == list(range(20))


def test_stdlib_condition_wait_timeout_and_notify_all(green_condition):
    cond = threading.Condition(RLock())
    with cond:
        assert cond.wait(0.01) is False
        assert cond._is_owned()
    woken = []

    def waiter(n):
        with cond:
            if cond.wait(5):
                woken.append(n)

    tasks = [greenline.spawn(waiter, n) for n in range(5)]
    greenline.sleep(0)
    with cond:
        cond.notify_all()
    greenline.joinall(tasks)
    assert sorted(woken) == list(range(5))


def test_stdlib_condition_wait_for(green_condition):
    cond = threading.Condition(RLock())
    box = []
    t = greenline.spawn(lambda: cond.__enter__() and (cond.wait_for(lambda: box, 5), cond.release())[0])
    greenline.sleep(0)
    with cond:
        box.append(1)
        cond.notify()
    assert t.get() == [1]


def test_condition_waiter_killed_still_returns_lock(green_condition):
    cond = threading.Condition(RLock())
    state = []

    def waiter():
        try:
            with cond:
                cond.wait()
        finally:
            state.append(cond._is_owned())

    t = greenline.spawn(waiter)
    greenline.sleep(0)
    with cond:
        t.kill(block=False)
        greenline.sleep(0)  # t must now wait to re-take the lock we hold
        assert not t.dead
    t.join(timeout=5)
    assert t.dead and t.successful()
    # It re-took the lock before the kill was raised, and released it on
    # the way out of ``with cond``: no "release un-acquired lock" error.
    assert state == [False]
    assert not cond._lock.locked()


# -- across OS threads ------------------------------------------------------


def test_release_from_os_thread_wakes_green_waiter():
    lock = Lock()
    lock.acquire()
    t = greenline.spawn(lambda: lock.acquire(timeout=10))
    greenline.sleep(0)
    assert len(lock._waiters) == 1
    to_thread(lock.release)
    assert t.get() is True


def test_green_release_wakes_waiter_in_os_thread():
    sem = Semaphore(0)
    t = greenline.spawn(to_thread, sem.acquire, True, 10)
    until(lambda: len(sem._waiters) == 1)
    sem.release()
    assert t.get(timeout=10) is True
    assert sem.counter == 0


def test_os_thread_waiter_timeout():
    sem = Semaphore(0)
    assert to_thread(sem.acquire, True, 0.02) is False
    assert not sem._waiters


def test_raw_os_thread_and_green_threads_share_a_lock():
    lock = Lock()
    counter = [0]
    n = 300
    done = _real_lock()
    done.acquire()

    def os_worker():
        try:
            for _ in range(n):
                with lock:
                    value = counter[0]
                    time.sleep(0)  # lets the GIL go: updates race without the lock
                    counter[0] = value + 1
        finally:
            done.release()

    _thread.start_new_thread(os_worker, ())

    def green_worker():
        for _ in range(n):
            with lock:
                value = counter[0]
                greenline.sleep(0)
                counter[0] = value + 1

    greenline.joinall([greenline.spawn(green_worker) for _ in range(3)])
    # Wait for the OS thread without blocking the hub it may need to wake.
    until(lambda: done.acquire(False), timeout=30)
    assert counter[0] == 4 * n
    assert not lock.locked()


@pytest.mark.timeout(60)
def test_pool_threads_contend_with_green_threads():
    lock = RLock()
    counter = [0]

    def work(k):
        for _ in range(200):
            with lock:
                with lock:
                    value = counter[0]
                    time.sleep(0)
                    counter[0] = value + 1
        return k

    tasks = [greenline.spawn(to_thread, work, k) for k in range(4)]
    tasks += [greenline.spawn(work, 10 + k) for k in range(2)]
    assert sorted(t.get(timeout=30) for t in tasks) == [0, 1, 2, 3, 10, 11]
    assert counter[0] == 6 * 200


def test_green_threads_of_another_os_threads_hub_are_woken():
    # Waiters that are green threads of a second hub (in a pool thread) are
    # woken through that hub, not by blocking its OS thread.
    sem = Semaphore(0)

    def in_thread():
        tasks = [greenline.spawn(sem.acquire, True, 10) for _ in range(3)]
        return [t.get() for t in tasks]

    t = greenline.spawn(to_thread, in_thread)
    until(lambda: len(sem._waiters) == 3)
    assert all(w.hub is not None and w.hub is not greenline.get_hub() for w in sem._waiters)
    for _ in range(3):
        sem.release()
    assert t.get(timeout=10) == [True, True, True]
    assert sem.counter == 0


def test_plain_os_threads_wait_without_a_hub(fd_count):
    # A thread that never ran green threads blocks on a real lock: it is not
    # given a hub (and its descriptors) just to wait.
    from greenline._core.hub import get_hub_if_exists

    sem = Semaphore(0)
    for _ in range(10):
        result = []
        done = _real_lock()
        done.acquire()

        def worker(result=result, done=done):
            try:
                result.append(Semaphore(0).acquire(timeout=0.001))
                result.append(sem.acquire(timeout=10))
                result.append(get_hub_if_exists())
            finally:
                done.release()

        _thread.start_new_thread(worker, ())
        until(lambda: len(sem._waiters) == 1)  # noqa: B023 - used at once
        sem.release()
        until(lambda: done.acquire(False))  # noqa: B023
        assert result == [False, True, None]
    fd_count()
