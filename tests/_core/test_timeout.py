"""Timeout and with_timeout: raised where the green thread blocks, never in
the middle of computation; nesting; cancelling."""

from __future__ import annotations

import time

import pytest

import greenline
from greenline import Timeout, socket, with_timeout


def test_timeout_interrupts_a_sleep(loop_lag, fires_on_time):
    lag = loop_lag()
    start = time.monotonic()
    with pytest.raises(Timeout) as info:
        with Timeout(0.02):
            greenline.sleep(5)
    elapsed = time.monotonic() - start
    assert fires_on_time(elapsed, 0.02, lag), (elapsed, lag)
    assert str(info.value) == "0.02 seconds"


def test_timeout_false_is_swallowed_by_its_block(loop_lag, fires_on_time):
    lag = loop_lag(0.01)
    reached_the_end = False
    start = time.monotonic()
    with Timeout(0.01, False) as t:
        greenline.sleep(5)
        reached_the_end = True
    elapsed = time.monotonic() - start
    assert not reached_the_end  # the block was left by the timeout...
    assert fires_on_time(elapsed, 0.01, lag), (elapsed, lag)  # ...when it was due
    assert not t.pending


def test_timeout_with_custom_exception():
    with pytest.raises(ConnectionError):
        with Timeout(0.01, ConnectionError("gave up")):
            greenline.sleep(5)


def test_timeout_interrupts_recv_and_socket_stays_usable():
    a, b = socket.socketpair()
    with Timeout(0.02, False):
        a.recv(10)
    b.sendall(b"still fine")
    assert a.recv(100) == b"still fine"
    a.close()
    b.close()


def test_cancelled_timeout_never_fires():
    t = Timeout(0.01)
    t.start()
    t.cancel()
    greenline.sleep(0.05)  # would have raised here


def test_timeout_never_interrupts_computation_only_the_next_block():
    with pytest.raises(Timeout):
        with Timeout(0.01):
            deadline = time.monotonic() + 0.05
            spins = 0
            while time.monotonic() < deadline:  # no blocking point here
                spins += 1
            computed = True
            greenline.sleep(0)  # the first blocking point: raised here
    assert computed and spins > 0


def test_fired_but_unraised_timeout_is_withdrawn_by_cancel():
    # A timeout thrown at its green thread while that green thread is not
    # blocked waits in the hub to be raised at the next blocking point (the
    # hub's invariant).  Here it is thrown while the block's own code runs,
    # the way the hub throws it when its timer fires then; leaving the block
    # before blocking again must withdraw it, not let it escape later.
    hub = greenline.get_hub()
    with Timeout(5) as t:
        hub.throw(greenline.getcurrent(), t)
        assert hub.pending  # fired, not raised yet
    assert not hub.pending
    greenline.sleep(0.01)  # must not raise
    with Timeout(5, ConnectionError("late")) as t:
        hub.throw(greenline.getcurrent(), t.exception)
    greenline.sleep(0.01)  # nor a timeout's own exception


def test_nested_inner_shorter():
    with pytest.raises(Timeout) as info:
        with Timeout(1) as outer:
            with Timeout(0.01) as inner:
                greenline.sleep(5)
    assert info.value is inner and info.value is not outer


def test_nested_outer_shorter_passes_through_inner_handler():
    outer = Timeout(0.01)
    with pytest.raises(Timeout) as info:
        with outer:
            try:
                with Timeout(1):
                    greenline.sleep(5)
            except Timeout as t:
                assert t is outer
                raise
    assert info.value is outer


def test_timeout_in_another_task_does_not_leak(loop_lag, fires_on_time):
    lag = loop_lag(0.01)

    def short():
        start = time.monotonic()
        with Timeout(0.01, False):
            greenline.sleep(1)
        return time.monotonic() - start

    t = greenline.spawn(short)
    greenline.sleep(0.05)  # this green thread's own sleep is not cut short...
    elapsed = t.get()
    assert fires_on_time(elapsed, 0.01, lag), (elapsed, lag)  # ...the task's was


def test_with_timeout_value_and_raise():
    assert with_timeout(0.01, greenline.sleep, 1, timeout_value="late") == "late"
    with pytest.raises(Timeout):
        with_timeout(0.01, greenline.sleep, 1)
    assert with_timeout(1, lambda: "fast") == "fast"


def test_timeout_is_not_caught_by_except_exception():
    caught = []
    with pytest.raises(Timeout):
        with Timeout(0.01):
            try:
                greenline.sleep(1)
            except Exception:  # what sloppy code does
                caught.append(1)
    assert caught == []


def test_start_new_and_none_seconds():
    t = Timeout.start_new(None)
    assert not t.pending
    greenline.sleep(0.01)
    t2 = Timeout.start_new(5)
    assert t2.pending
    t2.cancel()
    assert not t2.pending


# -- the small print, each pinned by a mutant that survived without it -------------

def test_a_timeout_carries_its_seconds_and_says_them():
    assert Timeout(0.5).args == (0.5,)
    assert str(Timeout()) == ""
    assert str(Timeout(1)) == "1 second"
    assert str(Timeout(2)) == "2 seconds"
    assert str(Timeout(0.5, False)) == "0.5 seconds"
    assert str(Timeout(0.5, ConnectionError("gave up"))) == "0.5 seconds: gave up"


def test_starting_a_started_timeout_is_an_error_that_says_so():
    with Timeout(5) as t:
        with pytest.raises(AssertionError, match=r"^this Timeout is already started; cancel it first$"):
            t.start()


def test_start_new_starts_a_timeout_given_to_it_once_and_passes_the_exception_on():
    t = Timeout(5)
    try:
        assert Timeout.start_new(t) is t and t.pending  # started...
        assert Timeout.start_new(t) is t  # ...and not started twice (that would raise)
    finally:
        t.cancel()
    with pytest.raises(ConnectionError, match="gave up"):
        t = Timeout.start_new(0.01, ConnectionError("gave up"))
        try:
            greenline.sleep(5)
        finally:
            t.cancel()


def test_with_timeout_passes_keyword_arguments_on():
    assert with_timeout(1, lambda a, b=0: (a, b), 1, b=2) == (1, 2)
