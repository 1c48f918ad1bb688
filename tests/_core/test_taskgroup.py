"""TaskGroup: waits for every child, a failure cancels the siblings at their
blocking points, and every failure arrives in one ExceptionGroup."""

from __future__ import annotations

import time

import pytest

import greenline
from greenline import Timeout, socket
from greenline._core.cancel import Cancelled, CancelScope, move_on_after
from greenline._core.taskgroup import TaskGroup
from greenline.queue import Queue


def test_waits_for_every_child_and_returns_their_tasks():
    start = time.monotonic()
    with TaskGroup() as tg:
        tasks = [tg.spawn(lambda i: (greenline.sleep(0.01 * (i % 3)), i * i)[1], i)
                 for i in range(50)]
    assert all(isinstance(t, greenline.Task) for t in tasks)
    assert [t.get(block=False) for t in tasks] == [i * i for i in range(50)]
    assert time.monotonic() - start < 2


def test_failing_child_cancels_blocked_siblings_and_errors_arrive_together(capfd):
    a, b = socket.socketpair()
    q: Queue = Queue()
    cancelled: list[str] = []

    def reader() -> None:
        try:
            a.recv(10)
        except Cancelled:
            cancelled.append("recv")
            raise

    def getter() -> None:
        try:
            q.get()
        except Cancelled:
            cancelled.append("queue")
            raise

    def sleeper() -> None:
        try:
            greenline.sleep(10)
        except Cancelled:
            cancelled.append("sleep")
            raise

    def fails(delay: float, exc: Exception) -> None:
        greenline.sleep(delay)
        raise exc

    def fails_while_cancelled() -> None:
        try:
            greenline.sleep(10)
        except Cancelled:
            raise KeyError("cleanup failed") from None

    start = time.monotonic()
    try:
        with pytest.raises(ExceptionGroup) as info:
            with TaskGroup() as tg:
                tg.spawn(reader)
                tg.spawn(getter)
                tg.spawn(sleeper)
                tg.spawn(fails_while_cancelled)
                tg.spawn(fails, 0.02, ValueError("first"))
        assert time.monotonic() - start < 2
        errors = info.value.exceptions
        assert [type(e) for e in errors] == [ValueError, KeyError]
        assert str(errors[0]) == "first"
        assert sorted(cancelled) == ["queue", "recv", "sleep"]
        # The interrupted recv left the socket usable.
        b.sendall(b"ok")
        assert a.recv(10) == b"ok"
    finally:
        a.close()
        b.close()
    # Failures go to the group, not to stderr as orphans.
    assert "failed with" not in capfd.readouterr().err


def test_failures_before_any_blocking_point_all_arrive():
    def fail(i: int) -> None:
        raise ValueError(i)

    with pytest.raises(ExceptionGroup) as info:
        with TaskGroup() as tg:
            for i in range(3):
                tg.spawn(fail, i)
    assert sorted(e.args[0] for e in info.value.exceptions) == [0, 1, 2]


def test_the_childs_task_reports_its_own_failure():
    with pytest.raises(ExceptionGroup):
        with TaskGroup() as tg:
            t = tg.spawn(lambda: 1 / 0)
    assert isinstance(t.exception, ZeroDivisionError)
    with pytest.raises(ZeroDivisionError):
        t.get()


def test_body_exception_cancels_children_and_is_included():
    cancelled = []

    def child() -> None:
        try:
            greenline.sleep(10)
        except Cancelled:
            cancelled.append(True)
            raise

    with pytest.raises(ExceptionGroup) as info:
        with TaskGroup() as tg:
            tg.spawn(child)
            greenline.sleep(0.01)
            raise RuntimeError("body")
    assert [str(e) for e in info.value.exceptions] == ["body"]
    assert cancelled == [True]


def test_body_blocked_when_a_child_fails_is_cancelled_too():
    reached_after_sleep = False
    with pytest.raises(ExceptionGroup) as info:
        with TaskGroup() as tg:
            tg.spawn(lambda: (greenline.sleep(0.01), 1 / 0))
            greenline.sleep(10)
            reached_after_sleep = True
    assert [type(e) for e in info.value.exceptions] == [ZeroDivisionError]
    assert not reached_after_sleep


def test_cancelling_the_group_is_not_an_error():
    with TaskGroup() as tg:
        t = tg.spawn(greenline.sleep, 10)
        greenline.sleep(0.01)
        tg.cancel()
        greenline.sleep(10)  # the body is in the group's scope: cancelled too
    assert t.dead and isinstance(t.exception, Cancelled)


def test_killed_child_is_not_a_failure():
    with TaskGroup() as tg:
        t = tg.spawn(greenline.sleep, 10)
        greenline.sleep(0.01)
        t.kill()
    assert t.successful()


def test_children_can_spawn_siblings_while_the_group_is_open():
    out: list[int] = []

    def parent(tg: TaskGroup) -> None:
        greenline.sleep(0.01)
        tg.spawn(lambda: (greenline.sleep(0.01), out.append(2)))
        out.append(1)

    with TaskGroup() as tg:
        tg.spawn(parent, tg)
    assert sorted(out) == [1, 2]
    with pytest.raises(RuntimeError):
        tg.spawn(greenline.sleep, 0)


def test_outer_deadline_cancels_the_children_and_leaves_the_scope():
    after_group = False
    start = time.monotonic()
    with move_on_after(0.03) as scope:
        with TaskGroup() as tg:
            tasks = [tg.spawn(greenline.sleep, 10) for _ in range(10)]
        after_group = True
    assert scope.cancelled_caught and not after_group
    assert all(t.dead for t in tasks)
    assert time.monotonic() - start < 2


def test_outer_deadline_while_the_body_blocks():
    with move_on_after(0.02) as scope:
        with TaskGroup() as tg:
            t = tg.spawn(greenline.sleep, 10)
            greenline.sleep(10)
    assert scope.cancelled_caught and t.dead


def test_timeout_of_the_owner_cancels_children_and_propagates_as_itself():
    cancelled = []

    def child() -> None:
        try:
            greenline.sleep(10)
        except Cancelled:
            cancelled.append(True)
            raise

    with Timeout(0.02, False) as timeout:
        with TaskGroup() as tg:
            tg.spawn(child)
        pytest.fail("Timeout did not propagate")
    assert cancelled == [True] and not timeout.pending


def test_killing_the_owner_while_it_waits_cancels_children():
    children: list[greenline.Task] = []

    def owner() -> None:
        with TaskGroup() as tg:
            children.extend(tg.spawn(greenline.sleep, 10) for _ in range(3))

    t = greenline.spawn(owner)
    greenline.sleep(0.01)
    t.kill(timeout=2)
    assert t.dead and t.successful()
    assert all(c.dead and isinstance(c.exception, Cancelled) for c in children)


def test_child_cleanup_can_block_when_shielded():
    cleaned = []

    def child() -> None:
        try:
            greenline.sleep(10)
        finally:
            with CancelScope(shield=True):
                greenline.sleep(0.01)
                cleaned.append(True)

    with pytest.raises(ExceptionGroup):
        with TaskGroup() as tg:
            tg.spawn(child)
            tg.spawn(lambda: (greenline.sleep(0.01), 1 / 0))
    assert cleaned == [True]


def test_nested_groups_nest_their_exception_groups():
    def inner() -> None:
        with TaskGroup() as tg:
            tg.spawn(lambda: (greenline.sleep(0.01), 1 / 0))
            tg.spawn(greenline.sleep, 10)

    with pytest.raises(ExceptionGroup) as info:
        with TaskGroup() as tg:
            tg.spawn(inner)
            tg.spawn(greenline.sleep, 10)
    (nested,) = info.value.exceptions
    assert isinstance(nested, ExceptionGroup)
    assert [type(e) for e in nested.exceptions] == [ZeroDivisionError]


def test_base_exception_failures_make_a_base_exception_group():
    class Stop(BaseException):
        pass

    def stop() -> None:
        raise Stop()

    with pytest.raises(BaseExceptionGroup) as info:
        with TaskGroup() as tg:
            tg.spawn(stop)
    assert not isinstance(info.value, ExceptionGroup)
    assert [type(e) for e in info.value.exceptions] == [Stop]


def test_thousand_children_one_failure():
    def child(i: int) -> None:
        greenline.sleep(10 if i != 500 else 0.01)
        if i == 500:
            raise ValueError(i)

    with pytest.raises(ExceptionGroup) as info:
        with TaskGroup() as tg:
            tasks = [tg.spawn(child, i) for i in range(1000)]
    assert [e.args for e in info.value.exceptions] == [(500,)]
    assert all(t.dead for t in tasks)
    assert sum(isinstance(t.exception, Cancelled) for t in tasks) == 999


def test_fail_after_around_a_group_raises_too_slow_error():
    from greenline._core.cancel import TooSlowError, fail_after

    with pytest.raises(TooSlowError):
        with fail_after(0.02):
            with TaskGroup() as tg:
                t = tg.spawn(greenline.sleep, 10)
    assert t.dead and isinstance(t.exception, Cancelled)
