"""Cancel scopes: deadlines over blocking calls, level-triggered, nesting and
shielding the way trio's do, and living with greenline.Timeout."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import greenline
from greenline import Timeout, socket
from greenline._core.cancel import (
    Cancelled,
    CancelScope,
    TooSlowError,
    current_cancel_scope,
    fail_after,
    move_on_after,
)
from greenline.event import Event
from greenline.queue import Queue


def _no_cancellation_left() -> None:
    hub = greenline.get_hub()
    assert not any(isinstance(v, type) and issubclass(v, BaseException) and v.__name__ == "_Rearm"
                   for v in hub.pending.values())


def test_move_on_after_interrupts_recv_and_socket_stays_usable():
    a, b = socket.socketpair()
    try:
        start = time.monotonic()
        with move_on_after(0.05) as scope:
            a.recv(10)
            pytest.fail("recv returned")
        assert scope.cancelled_caught
        assert 0.04 <= time.monotonic() - start < 2
        # Nothing was lost or corrupted by the interruption.
        b.sendall(b"after the deadline")
        assert a.recv(100) == b"after the deadline"
        a.sendall(b"and back")
        assert b.recv(100) == b"and back"
        _no_cancellation_left()
    finally:
        a.close()
        b.close()


def test_fail_after_raises_too_slow_error_a_timeout_error():
    a, b = socket.socketpair()
    try:
        with pytest.raises(TimeoutError) as info:
            with fail_after(0.03):
                a.recv(10)
        assert type(info.value) is TooSlowError
        b.sendall(b"x")
        assert a.recv(10) == b"x"
    finally:
        a.close()
        b.close()


def test_fail_after_in_time_returns_normally():
    with fail_after(5) as scope:
        greenline.sleep(0.01)
    assert not scope.cancelled_caught and not scope.cancel_called


def test_a_scope_that_is_not_cut_leaves_no_trace():
    with move_on_after(5) as scope:
        greenline.sleep(0.01)
    assert not scope.cancelled_caught
    assert current_cancel_scope() is None
    greenline.sleep(0.01)  # no stray cancellation
    _no_cancellation_left()


def test_level_triggered_every_blocking_call_raises_again():
    attempts = 0
    with move_on_after(0.02) as scope:
        for _ in range(3):
            try:
                greenline.sleep(5)
            except Cancelled:
                attempts += 1
        greenline.sleep(5)
        pytest.fail("a cancelled scope let a blocking call through")
    assert attempts == 3 and scope.cancelled_caught
    # Outside the scope blocking works again.
    start = time.monotonic()
    greenline.sleep(0.02)
    assert time.monotonic() - start >= 0.015


def test_cancellation_never_lands_in_computation():
    reached = False
    with move_on_after(0.01) as scope:
        end = time.monotonic() + 0.05
        while time.monotonic() < end:  # pure computation past the deadline
            pass
        reached = True
        greenline.sleep(0)  # the first blocking point
        pytest.fail("not cancelled at the blocking point")
    assert reached and scope.cancelled_caught


def test_cancel_from_another_green_thread_wakes_a_parked_one():
    scope = CancelScope()
    got: list[str] = []

    def victim() -> None:
        with scope:
            greenline.sleep(10)
        got.append("left quietly" if scope.cancelled_caught else "not cancelled")

    t = greenline.spawn(victim)
    greenline.sleep(0.01)
    scope.cancel()
    t.join(timeout=2)
    assert got == ["left quietly"]


def test_cancel_before_entering_raises_at_first_blocking_point():
    scope = CancelScope()
    scope.cancel()
    with scope:
        x = 1 + 1  # runs: no blocking point yet
        greenline.sleep(5)
        pytest.fail("not cancelled")
    assert x == 2 and scope.cancelled_caught


def test_cancel_from_another_os_thread():
    scope = CancelScope()
    ready = threading.Event()
    threading.Thread(target=lambda: (ready.wait(5), scope.cancel())).start()
    with scope:
        ready.set()
        greenline.sleep(10)
    assert scope.cancelled_caught


def test_outer_deadline_fires_through_an_inner_scope():
    start = time.monotonic()
    after_inner = False
    with move_on_after(0.03) as outer:
        with move_on_after(10) as inner:
            greenline.sleep(10)
        after_inner = True
    assert outer.cancelled_caught and not inner.cancelled_caught
    assert not inner.cancel_called
    assert not after_inner
    assert time.monotonic() - start < 2


def test_inner_scope_catches_only_its_own_cancellation():
    with move_on_after(10) as outer:
        with move_on_after(0.02) as inner:
            greenline.sleep(10)
        greenline.sleep(0.01)  # the outer scope is not cancelled: this blocks normally
        done = True
    assert inner.cancelled_caught and not outer.cancelled_caught and done


def test_when_both_are_cancelled_the_outer_scope_catches_it():
    after_inner = False
    with CancelScope() as outer:
        with CancelScope() as inner:
            inner.cancel()
            outer.cancel()
            greenline.sleep(5)
        after_inner = True
    assert outer.cancelled_caught and not inner.cancelled_caught and not after_inner


def test_shield_hides_the_outer_cancellation():
    start = time.monotonic()
    with move_on_after(0.02) as outer:
        with CancelScope(shield=True) as shielded:
            greenline.sleep(0.08)  # the outer deadline passes meanwhile
            finished_shielded = True
        greenline.sleep(10)  # the first blocking point after the shield
        pytest.fail("not cancelled after the shield")
    assert finished_shielded and outer.cancelled_caught and not shielded.cancelled_caught
    assert 0.07 <= time.monotonic() - start < 2


def test_a_shielded_scope_can_still_cancel_itself():
    with move_on_after(0.01) as outer:
        with CancelScope(shield=True, deadline=time.monotonic() + 0.03) as shielded:
            greenline.sleep(10)
        greenline.sleep(10)
    assert shielded.cancelled_caught and outer.cancelled_caught


def test_shielded_cleanup_can_block_inside_a_cancelled_scope():
    a, b = socket.socketpair()
    try:
        with move_on_after(0.02) as scope:
            try:
                a.recv(10)
            finally:
                with CancelScope(shield=True):
                    b.sendall(b"goodbye")
                    assert a.recv(10) == b"goodbye"  # blocks fine, shielded
        assert scope.cancelled_caught
    finally:
        a.close()
        b.close()


def test_deadline_can_be_moved_while_active():
    start = time.monotonic()
    with CancelScope() as scope:
        scope.deadline = time.monotonic() + 10
        scope.deadline = time.monotonic() + 0.02
        greenline.sleep(10)
    assert scope.cancelled_caught and time.monotonic() - start < 2


def test_a_deadline_in_the_past_cancels_at_once():
    with CancelScope(deadline=time.monotonic() - 1) as scope:
        greenline.sleep(10)
    assert scope.cancelled_caught


def test_cancelled_wait_on_a_queue_loses_no_item():
    q: Queue = Queue()
    got: list[int] = []

    def patient() -> None:
        got.append(q.get(timeout=5))

    with move_on_after(0.01) as scope:
        q.get()
    assert scope.cancelled_caught
    t = greenline.spawn(patient)
    greenline.sleep(0)
    q.put(7)
    t.join(timeout=2)
    assert got == [7]


def test_cancelled_event_wait_then_the_event_works():
    ev = Event()
    with move_on_after(0.01) as scope:
        ev.wait()
    assert scope.cancelled_caught
    greenline.spawn_later(0.01, ev.set)
    assert ev.wait(timeout=2)


def test_timeout_inside_a_cancel_scope_is_raised_as_itself():
    with CancelScope() as scope:
        with pytest.raises(Timeout):
            with Timeout(0.01):
                greenline.sleep(5)
    assert not scope.cancelled_caught


def test_timeout_around_a_cancel_scope_passes_through_it():
    with Timeout(0.01, False):
        with move_on_after(10) as scope:
            greenline.sleep(5)
        pytest.fail("Timeout swallowed by the scope")
    assert not scope.cancelled_caught


def test_cancellation_waits_behind_a_pending_timeout_then_follows():
    # A Timeout has fired but is not raised yet when the scope is cancelled:
    # the Timeout goes first, the cancellation at the next blocking point.
    order: list[str] = []
    with CancelScope() as scope:
        t = Timeout(0.01)
        t.start()
        end = time.monotonic() + 0.03
        while time.monotonic() < end:
            pass
        greenline.get_hub().call_later(0, lambda _a: scope.cancel())
        try:
            greenline.sleep(0)  # the hub fires the Timeout, then the cancel
        except Timeout:
            order.append("timeout")
        try:
            greenline.sleep(5)
        except Cancelled:
            order.append("cancelled")
            raise
    assert order == ["timeout", "cancelled"] and scope.cancelled_caught


def test_kill_inside_a_cancel_scope():
    def victim() -> None:
        with CancelScope():
            greenline.sleep(10)

    t = greenline.spawn(victim)
    greenline.sleep(0.01)
    t.kill(timeout=2)
    assert t.dead and t.successful()


def test_misnested_scopes_are_an_error():
    outer = CancelScope()
    inner = CancelScope()
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(RuntimeError):
        outer.__exit__(None, None, None)
    inner.__exit__(None, None, None)
    outer.__exit__(None, None, None)
    with pytest.raises(RuntimeError):
        with outer:
            pass


def test_move_on_after_rejects_bad_durations():
    with pytest.raises(ValueError):
        move_on_after(-1)
    with pytest.raises(ValueError):
        fail_after(float("nan"))


def test_many_green_threads_with_their_own_deadlines():
    results: dict[int, bool] = {}

    def worker(i: int) -> None:
        with move_on_after(0.01 if i % 2 else 5) as scope:
            greenline.sleep(0.05 if i % 2 else 0.02)
        results[i] = scope.cancelled_caught

    greenline.joinall([greenline.spawn(worker, i) for i in range(200)], timeout=10)
    assert results == {i: bool(i % 2) for i in range(200)}
    _no_cancellation_left()


def test_deadline_interrupts_a_thread_pool_wait():
    finished = threading.Event()

    def job() -> None:
        time.sleep(0.5)
        finished.set()

    with move_on_after(0.02) as scope:
        greenline.to_thread(job)
    assert scope.cancelled_caught
    assert not finished.is_set()  # left while the job still ran
    # The worker's late result is dropped without disturbing anything.
    while greenline.get_hub().refs:
        greenline.sleep(0.01)
    assert finished.is_set()
    _no_cancellation_left()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=5))
def test_nesting_model(layers):
    """Scopes nested outermost first, each (cancelled?, shielded?); a blocking
    call in the innermost.  trio's rule: the outermost cancelled scope of the
    innermost run of scopes up to the first shield catches it; with none, the
    call completes and nothing is caught."""
    scopes = [CancelScope(shield=shield) for _, shield in layers]
    ran_after: list[bool] = []

    def enter(i: int) -> None:
        if i == len(scopes):
            greenline.sleep(0.001)
            ran_after.append(True)
            return
        with scopes[i]:
            if layers[i][0]:
                scopes[i].cancel()
            enter(i + 1)

    enter(0)
    visible = []
    for i in reversed(range(len(layers))):
        visible.append(i)
        if layers[i][1]:
            break
    cancelled_visible = [i for i in visible if layers[i][0]]
    expected_catcher = min(cancelled_visible) if cancelled_visible else None
    assert [i for i, s in enumerate(scopes) if s.cancelled_caught] == (
        [] if expected_catcher is None else [expected_catcher])
    assert ran_after == ([] if cancelled_visible else [True])
    _no_cancellation_left()
    assert current_cancel_scope() is None


# -- what the mutants of cancel.py showed untested (issue 18) ----------------------

def test_the_messages_say_what_happened():
    with CancelScope() as scope:
        scope.cancel()
        with pytest.raises(Cancelled) as info:
            greenline.sleep(1)
        assert str(info.value) == "cancelled by a cancel scope"
        raise info.value  # caught by the scope
    with pytest.raises(TooSlowError, match=r"^deadline exceeded$"):
        with fail_after(0.001):
            greenline.sleep(1)
    for make in (move_on_after, fail_after):
        with pytest.raises(ValueError, match=r"^seconds must be a non-negative number$"):
            make(-1)
    with pytest.raises(ValueError, match=r"^seconds must be a non-negative number$"):
        move_on_after(float("nan"))
    scope = CancelScope()
    with scope:
        pass
    with pytest.raises(RuntimeError, match=r"^a CancelScope can be entered only once$"):
        with scope:
            pass
    outer, inner = CancelScope(), CancelScope()
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(RuntimeError, match=r"^cancel scopes must be left in the reverse order they were entered$"):
        outer.__exit__(None, None, None)
    inner.__exit__(None, None, None)
    outer.__exit__(None, None, None)


def test_the_hub_itself_cannot_enter_a_scope():
    hub = greenline.get_hub()
    seen: list[BaseException] = []

    def in_the_hub(_arg: object) -> None:
        try:
            CancelScope().__enter__()
        except RuntimeError as e:
            seen.append(e)

    hub.call_later(0, in_the_hub)
    greenline.sleep(0.01)
    assert [str(e) for e in seen] == ["the hub cannot enter a cancel scope"]


def test_a_zero_duration_is_allowed_and_cuts_at_the_first_blocking_point():
    with move_on_after(0) as scope:
        greenline.sleep(1)
    assert scope.cancelled_caught
    with pytest.raises(TooSlowError):
        with fail_after(0):
            greenline.sleep(1)


def test_a_deadline_that_is_now_cancels_on_entry(monkeypatch):
    import greenline._core.cancel as cancel_module

    monkeypatch.setattr(cancel_module, "monotonic", lambda: 100.0)
    scope = CancelScope(deadline=100.0)
    with scope:
        assert scope.cancel_called  # at once, not by a timer of zero seconds
        with pytest.raises(Cancelled):
            greenline.sleep(0)
        raise Cancelled()


def test_state_before_entering_and_the_small_helpers():
    from greenline._core.cancel import cancel_scope_of, move_on_at

    scope = CancelScope()
    assert scope.cancelled is False and scope.cancel_called is False and scope.cancelled_caught is False
    assert repr(scope) == "<CancelScope active deadline=inf shield=False>"
    scope.cancel()
    assert repr(scope) == "<CancelScope cancelled deadline=inf shield=False>"
    assert repr(CancelScope(5.0, shield=True)) == "<CancelScope active deadline=5.0 shield=True>"
    assert move_on_at(123.5).deadline == 123.5
    assert current_cancel_scope() is None
    with CancelScope() as outer:
        assert current_cancel_scope() is outer
        assert cancel_scope_of(greenline.getcurrent()) is outer
        with CancelScope() as inner:
            assert current_cancel_scope() is inner
        assert current_cancel_scope() is outer
        assert not outer._children  # a left scope is forgotten by its parent
    assert current_cancel_scope() is None


def test_cancelling_a_scope_with_a_deadline_disarms_it_cleanly():
    # Cancelled by hand before its deadline: its timer is withdrawn, and
    # leaving is clean.
    hub = greenline.get_hub()
    with move_on_after(60) as scope:
        scope.cancel()
        greenline.sleep(1)
    assert scope.cancelled_caught
    assert all(t[2] is None for t in hub.timers)  # no live timer left behind
    # Its deadline moved to never while active: not cut, leaving is clean.
    with move_on_after(0.01) as scope:
        scope.deadline = float("inf")
        greenline.sleep(0.03)
    assert not scope.cancel_called and not scope.cancelled_caught
    # Cancelled after it was left: only the flag changes.
    with move_on_after(60) as scope:
        pass
    scope.cancel()
    assert scope.cancel_called and not scope.cancelled_caught


def test_a_deadline_set_after_leaving_does_nothing():
    with CancelScope() as scope:
        pass
    scope.deadline = time.monotonic() - 1  # in the past
    assert not scope.cancel_called
    greenline.sleep(0.01)
    assert not scope.cancel_called


def test_an_exception_inside_a_cancelled_scope_passes_through_it():
    with pytest.raises(ValueError):
        with CancelScope() as scope:
            scope.cancel()
            raise ValueError("not a cancellation")
    assert not scope.cancelled_caught


def test_exception_groups_the_scope_takes_its_cancellations_out_of():
    # Only cancellations: swallowed (or TooSlowError for fail_after).
    with CancelScope() as scope:
        scope.cancel()
        raise BaseExceptionGroup("g", [Cancelled(), Cancelled()])
    assert scope.cancelled_caught
    with pytest.raises(TooSlowError, match=r"^deadline exceeded$"):
        with fail_after(60) as scope:
            scope.cancel()
            raise BaseExceptionGroup("g", [Cancelled()])
    # Cancellations and others: the others go on, as a group.
    with pytest.raises(ExceptionGroup) as info:
        with CancelScope() as scope:
            scope.cancel()
            raise BaseExceptionGroup("g", [Cancelled(), ValueError("v")])
    assert scope.cancelled_caught
    assert [type(e) for e in info.value.exceptions] == [ValueError]
    # No cancellation in the group: untouched.
    group = ExceptionGroup("g", [ValueError("v")])
    with pytest.raises(ExceptionGroup) as info:
        with CancelScope() as scope:
            scope.cancel()
            raise group
    assert info.value is group and not scope.cancelled_caught
    # And a scope that was not cancelled lets a group with cancellations by.
    with pytest.raises(BaseExceptionGroup):
        with CancelScope() as scope:
            raise BaseExceptionGroup("g", [Cancelled()])
    assert not scope.cancelled_caught


def test_cancel_reaches_other_green_threads_whose_scopes_hang_below():
    # A TaskGroup's children enter a scope whose parent is the group's
    # (CancelScope._enter(parent)): cancelling the parent must reach them
    # even when its own green thread does nothing to pass it on.
    outer = CancelScope()
    got: list[str] = []

    def child():
        scope = CancelScope()
        scope._enter(outer)
        try:
            greenline.sleep(5)
            got.append("not cancelled")
        except Cancelled:
            got.append("cancelled")
        finally:
            scope._leave()

    with outer:
        t = greenline.spawn(child)
        greenline.sleep(0.01)  # a pass for the child to park in its sleep
        canceller = greenline.spawn(outer.cancel)
        with pytest.raises(Cancelled):
            greenline.sleep(5)
        raise Cancelled()
    t.join(timeout=1)  # (outside: inside the cancelled scope every wait raises)
    canceller.join(timeout=1)
    assert got == ["cancelled"]


def test_cancel_before_entering_with_a_hub_running():
    greenline.get_hub()
    scope = CancelScope()
    scope.cancel()  # no hub of its own yet: just the flag
    with scope:
        greenline.sleep(5)
    assert scope.cancelled_caught


class _EnteredMeanwhile(CancelScope):
    """A scope that another OS thread enters between cancel()'s two looks
    at its hub: the first look sees none (not entered), the second the
    other thread's.  The race cancel() handles, made deterministic."""

    def __init__(self) -> None:
        super().__init__()
        self.racing = False
        self.real_hub = None

    @property  # type: ignore[override]
    def _hub(self):
        if self.racing:
            self.racing = False
            return None
        return self.real_hub

    @_hub.setter
    def _hub(self, value):
        self.real_hub = value


def test_cancel_racing_an_entry_in_another_os_thread_is_delivered_there():
    scope = _EnteredMeanwhile()
    entered = threading.Event()
    outcome: list[object] = []

    def other_thread():
        try:
            start = time.monotonic()
            with scope:
                entered.set()
                greenline.sleep(5)
            outcome.append((scope.cancelled_caught, time.monotonic() - start))
        except BaseException as e:  # reported below
            outcome.append(e)

    th = threading.Thread(target=other_thread)
    th.start()
    assert entered.wait(5)
    greenline.get_hub()  # this thread has a hub of its own
    scope.racing = True
    scope.cancel()
    th.join(5)
    assert not th.is_alive()
    (result,) = outcome
    assert isinstance(result, tuple), result
    caught, took = result
    assert caught and took < 2
