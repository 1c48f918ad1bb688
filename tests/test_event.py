"""Event and AsyncResult: waking, timeouts, task links, OS threads."""

from __future__ import annotations

import time

import pytest

import greenline
from greenline._core.threadpool import to_thread
from greenline.event import AsyncResult, Event


def until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition never became true"
        greenline.sleep(0.001)


# -- Event ------------------------------------------------------------------


def test_event_flag():
    e = Event()
    assert not e.is_set() and not e.isSet() and not e.ready()
    e.set()
    assert e.is_set() and e.wait() is True and e.wait(0) is True
    e.clear()
    assert not e.is_set()
    assert e.wait(0) is False


def test_event_wait_times_out():
    e = Event()
    start = time.monotonic()
    assert e.wait(0.05) is False
    assert time.monotonic() - start >= 0.045
    assert not e._waiters


def test_event_set_wakes_1000_waiters():
    e = Event()
    tasks = [greenline.spawn(e.wait, 10) for _ in range(1000)]
    greenline.sleep(0)
    assert len(e._waiters) == 1000
    e.set()
    done = greenline.joinall(tasks, timeout=10)
    assert len(done) == 1000
    assert all(t.value is True for t in tasks)
    assert not e._waiters


def test_event_waiter_woken_by_set_returns_true_even_if_cleared():
    e = Event()
    t = greenline.spawn(e.wait, 10)
    greenline.sleep(0)
    e.set()
    e.clear()  # before the waiter gets to run
    assert t.get() is True


def test_event_wait_interrupted_by_timeout_exception():
    e = Event()
    with pytest.raises(greenline.Timeout):
        with greenline.Timeout(0.01):
            e.wait()
    assert not e._waiters
    t = greenline.spawn(e.wait)
    greenline.sleep(0)
    t.kill()
    assert not e._waiters


def test_event_set_from_os_thread_wakes_green_waiter():
    e = Event()
    t = greenline.spawn(e.wait, 10)
    greenline.sleep(0)
    to_thread(e.set)
    assert t.get() is True


def test_event_green_set_wakes_os_thread_waiter():
    e = Event()
    t = greenline.spawn(to_thread, e.wait, 10)
    until(lambda: len(e._waiters) == 1)
    e.set()
    assert t.get(timeout=10) is True


def test_event_rawlink():
    e = Event()
    calls = []
    e.rawlink(calls.append)
    e.set()
    assert calls == [e]
    late = []
    e.rawlink(late.append)  # already set: called at once
    assert late == [e]
    e2 = Event()
    e2.rawlink(calls.append)
    e2.unlink(calls.append)
    e2.set()
    assert calls == [e]


# -- AsyncResult --------------------------------------------------------------


def test_async_result_value():
    r = AsyncResult()
    assert not r.ready() and r.value is None and r.exception is None
    greenline.spawn_later(0.01, r.set, "v")
    assert r.get() == "v"
    assert r.ready() and r.successful() and r.value == "v"
    assert r.get(block=False) == "v" and r.get_nowait() == "v"
    assert r.wait() == "v" and r.result() == "v" and r.done()


def test_async_result_exception():
    r = AsyncResult()
    greenline.spawn(r.set_exception, KeyError("k"))
    with pytest.raises(KeyError):
        r.get()
    assert r.ready() and not r.successful()
    assert isinstance(r.exception, KeyError)
    assert r.wait() is None
    assert r.exc_info[0] is KeyError
    r2 = AsyncResult()
    r2.set_exception(ValueError)  # a class is instantiated
    with pytest.raises(ValueError):
        r2.get()


def test_async_result_get_times_out_with_greenline_timeout():
    r = AsyncResult()
    with pytest.raises(greenline.Timeout):
        r.get(timeout=0.01)
    with pytest.raises(greenline.Timeout):
        r.get(block=False)
    assert r.wait(0.01) is None
    assert not r._waiters


def test_async_result_wakes_many_getters():
    r = AsyncResult()
    tasks = [greenline.spawn(r.get) for _ in range(50)]
    greenline.sleep(0)
    r.set(7)
    assert [t.get() for t in tasks] == [7] * 50


def test_async_result_as_task_link():
    r = AsyncResult()
    task = greenline.spawn(lambda: 2 + 2)
    task.link(r)
    assert r.get(timeout=5) == 4

    failed = AsyncResult()
    bad = greenline.spawn(lambda: {}["missing"])
    bad.rawlink(failed)
    with pytest.raises(KeyError):
        failed.get(timeout=5)


def test_async_result_from_killed_task():
    r = AsyncResult()
    task = greenline.spawn(greenline.sleep, 10)
    task.link(r)
    greenline.sleep(0)
    task.kill()
    assert isinstance(r.get(timeout=5), greenline.GreenletExit)


def test_async_result_set_from_os_thread():
    r = AsyncResult()
    t = greenline.spawn(r.get, True, 10)
    greenline.sleep(0)
    to_thread(r.set, "from a thread")
    assert t.get() == "from a thread"


def test_async_result_futures_spellings():
    r = AsyncResult()
    assert r.cancel() is False and not r.cancelled()
    r.set_result(3)
    assert r.result(timeout=0) == 3
    assert "value=3" in repr(r)


@pytest.mark.parametrize("make, fire", [(Event, Event.set), (AsyncResult, lambda r: r.set(1))])
def test_callbacks_of_an_event_set_in_another_os_thread_run_in_the_linking_thread(make, fire):
    # gevent's: the callbacks run in the hub of the thread that linked them,
    # not inside set() in a thread that has nothing to do with them.
    import _thread

    e = make()
    ran_in: list[int] = []
    e.rawlink(lambda _: ran_in.append(_thread.get_ident()))
    to_thread(fire, e)
    greenline.sleep(0.01)
    assert ran_in == [_thread.get_ident()]
    # a callback linked once set still runs at once
    e.rawlink(lambda _: ran_in.append(0))
    assert ran_in[-1] == 0


def test_a_repeated_get_of_an_exception_does_not_pile_up_tracebacks():
    import traceback

    r = AsyncResult()
    r.set_exception(ValueError("boom"))
    lengths = []
    for _ in range(3):
        try:
            r.get()
        except ValueError as e:
            lengths.append(len(traceback.extract_tb(e.__traceback__)))
    assert lengths == [lengths[0]] * 3
