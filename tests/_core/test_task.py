"""Task: spawn, join, get, kill, links, joinall, killall."""

from __future__ import annotations

import threading
import time

import pytest

import greenline
from greenline import GreenletExit, Task, socket
from greenline._core.hub import close_thread_hub


def test_spawn_get_returns_the_value():
    t = greenline.spawn(lambda a, b=0: a * 10 + b, 4, b=2)
    assert t.get() == 42
    assert t.ready() and t.successful() and t.dead
    assert t.value == 42 and t.exception is None


def test_exception_reaches_get_and_is_reported(capsys):
    def fail():
        greenline.sleep(0.01)
        raise KeyError("lost key")

    t = greenline.spawn(fail)
    with pytest.raises(KeyError, match="lost key"):
        t.get()
    assert t.ready() and not t.successful()
    assert isinstance(t.exception, KeyError)
    # Not swallowed: the failure is printed when it happens, as threads do.
    assert "lost key" in capsys.readouterr().err


def test_get_with_timeout_and_nonblocking():
    t = greenline.spawn(greenline.sleep, 1)
    with pytest.raises(greenline.Timeout):
        t.get(block=False)
    with pytest.raises(greenline.Timeout):
        t.get(timeout=0.01)
    t.kill()


def test_join_timeout_returns_while_task_still_runs():
    t = greenline.spawn(greenline.sleep, 1)
    start = time.monotonic()
    t.join(timeout=0.05)
    assert not t.ready()
    assert time.monotonic() - start < 0.5
    t.kill()
    assert t.dead


def test_kill_a_sleeping_task():
    reached = []

    def sleeper():
        try:
            greenline.sleep(10)
        finally:
            reached.append("finally")

    t = greenline.spawn(sleeper)
    greenline.sleep(0)
    t.kill()
    assert reached == ["finally"]
    assert t.successful() and isinstance(t.value, GreenletExit)


def test_kill_with_custom_exception():
    t = greenline.spawn(greenline.sleep, 10)
    greenline.sleep(0)
    t.kill(ValueError("stop"))
    assert isinstance(t.exception, ValueError)
    with pytest.raises(ValueError):
        t.get()


def test_kill_before_start_never_runs():
    ran = []
    t = greenline.spawn(ran.append, 1)
    t.kill()
    greenline.sleep(0.01)
    assert ran == [] and t.dead and t.ready()


def test_kill_a_task_blocked_in_recv():
    a, b = socket.socketpair()
    t = greenline.spawn(a.recv, 100)
    greenline.sleep(0.01)
    t.kill(block=True, timeout=1)
    assert t.dead
    # The socket is still usable afterwards.
    b.sendall(b"after")
    assert a.recv(100) == b"after"
    a.close()
    b.close()


def test_kill_nonblocking_then_join():
    t = greenline.spawn(greenline.sleep, 10)
    greenline.sleep(0)
    t.kill(block=False)
    assert not t.dead
    t.join()
    assert t.dead


def test_killing_self_raises_at_once():
    def suicide():
        greenline.getcurrent().kill(RuntimeError("me"))
        return "not reached"

    t = greenline.spawn(suicide)
    t.join()
    assert isinstance(t.exception, RuntimeError)


def test_joinall_raise_error_raises_the_first_failure():
    def fail(d):
        greenline.sleep(d)
        raise ValueError(d)

    tasks = [greenline.spawn(greenline.sleep, 0.5), greenline.spawn(fail, 0.01)]
    start = time.monotonic()
    with pytest.raises(ValueError):
        greenline.joinall(tasks, raise_error=True)
    assert time.monotonic() - start < 0.4
    greenline.killall(tasks)


def test_joinall_timeout_and_count():
    tasks = [greenline.spawn(greenline.sleep, d) for d in (0.01, 0.02, 1)]
    done = greenline.joinall(tasks, timeout=0.3)
    assert set(done) == set(tasks[:2])
    assert greenline.joinall(tasks, count=1) == [tasks[0]]
    greenline.killall(tasks)
    assert all(t.dead for t in tasks)


def _spawned_in_another_os_thread(fn, *args):
    """Spawn ``fn(*args)`` in the hub of a new OS thread, which waits for it
    there; return the task and that thread."""
    box = []
    spawned = threading.Event()

    def other():
        try:
            box.append(greenline.spawn(fn, *args))
            spawned.set()
            box[0].join()
        finally:
            spawned.set()
            close_thread_hub()

    th = threading.Thread(target=other)
    th.start()
    assert spawned.wait(5) and box
    return box[0], th


@pytest.mark.timeout(10)
def test_joinall_wakes_when_a_task_of_another_os_thread_finishes():
    t, th = _spawned_in_another_os_thread(greenline.sleep, 0.2)
    start = time.monotonic()
    done = greenline.joinall([t], timeout=2)
    assert done == [t]
    assert time.monotonic() - start < 1
    th.join(5)


@pytest.mark.timeout(10)
def test_joinall_without_timeout_returns_when_a_task_of_another_os_thread_finishes():
    t, th = _spawned_in_another_os_thread(greenline.sleep, 0.2)
    other = greenline.spawn(greenline.sleep, 0.05)  # this hub has work of its own too
    assert greenline.joinall([t, other]) in ([other, t], [t, other])
    assert t.successful()
    th.join(5)


def test_killall_waits():
    tasks = [greenline.spawn(greenline.sleep, 10) for _ in range(100)]
    greenline.sleep(0)
    greenline.killall(tasks, timeout=1)
    assert all(t.dead for t in tasks)


def test_links_run_in_their_own_task_and_may_block():
    seen = []

    def on_done(task):
        greenline.sleep(0.01)  # a link may block
        seen.append(task.value)

    t = greenline.spawn(lambda: "result")
    t.link(on_done)
    t.join()
    greenline.sleep(0.05)
    assert seen == ["result"]


def test_link_value_and_link_exception():
    ok, bad = [], []
    good = greenline.spawn(lambda: 1)
    failing = greenline.spawn(lambda: 1 / 0)
    for t in (good, failing):
        t.link_value(lambda t: ok.append(t))
        t.link_exception(lambda t: bad.append(t))
    greenline.joinall([good, failing])
    greenline.sleep(0.01)
    assert ok == [good] and bad == [failing]


def test_link_after_finish_still_fires():
    t = greenline.spawn(lambda: 7)
    t.join()
    seen = []
    t.link(lambda t: seen.append(t.value))
    greenline.sleep(0.01)
    assert seen == [7]


def test_spawn_later_waits():
    start = time.monotonic()
    t = greenline.spawn_later(0.05, time.monotonic)
    assert t.get() - start >= 0.045


def test_state_of_a_new_task():
    t = Task(lambda: None)
    assert not t.started and not t.ready() and not t.dead and not t
    t.start()
    assert t.started and t
    t.join()
    assert not t and t.dead
    assert "finished" in repr(t)


def test_task_subclass_with_run_method():
    class Worker(Task):
        def __init__(self, n):
            super().__init__(self.work, n)

        def work(self, n):
            greenline.sleep(0)
            return n * 2

    w = Worker(21)
    w.start()
    assert w.get() == 42


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt()], ids=["SystemExit", "KeyboardInterrupt"])
def test_system_exit_and_keyboard_interrupt_in_a_task_reach_the_main_green_thread(exc):
    # gevent's semantics, kept: they end the program, as in a thread's main
    # line.  (A server's handler is different: StreamServer ends only that
    # connection, tests/servers/test_stream.py.)
    def raiser():
        raise exc

    t = greenline.spawn(raiser)
    with pytest.raises(type(exc)):
        greenline.sleep(0.05)
    assert t.dead and t.exception is exc


# -- what the mutants of task.py showed untested (issue 18) ------------------------

def test_the_errors_say_what_is_wrong():
    with pytest.raises(TypeError, match=r"^The run argument or self._run must be callable, not 5$"):
        greenline.Task(5)

    def self_join():
        greenline.getcurrent().join()

    t = greenline.spawn(self_join)
    t.join(timeout=2)
    assert isinstance(t.exception, RuntimeError) and str(t.exception) == "a task cannot join itself"


def test_repr_says_new_running_or_finished():
    seen = []
    t = greenline.Task(lambda: seen.append(repr(greenline.getcurrent())))
    assert repr(t) == f"<Task {t.name} new>"
    t.start()
    t.join(timeout=2)
    assert seen == [f"<Task {t.name} running>"]
    assert repr(t) == f"<Task {t.name} finished>"


def test_a_subclass_runs_its_own_run_method():
    class Job(greenline.Task):
        def _run(self, x):
            return x * 2

    j = Job(None, 21)
    j.start()
    assert j.get(timeout=2) == 42


def test_join_with_a_timeout_returns_quietly_when_the_task_goes_on():
    t = greenline.spawn(greenline.sleep, 5)
    start = time.monotonic()
    t.join(timeout=0.02)  # no Timeout raised out of join
    assert not t.dead and time.monotonic() - start < 1
    greenline.joinall([t], timeout=0.02)  # nor out of joinall
    assert not t.dead
    t.kill(timeout=2)
    assert t.dead


def test_killall_delivers_the_exception_given_and_waits_up_to_its_timeout():
    from greenlet import greenlet as raw_greenlet

    class Stop(Exception):
        pass

    caught: list[BaseException] = []

    def sleeper():
        try:
            greenline.sleep(5)
        except BaseException as e:
            caught.append(e)
            raise

    tasks = [greenline.spawn(sleeper) for _ in range(3)]
    greenline.sleep(0)  # all three parked in their sleep
    greenline.killall(tasks, Stop)
    assert [type(e) for e in caught] == [Stop] * 3
    assert all(t.dead and isinstance(t.exception, Stop) for t in tasks)

    # A task that takes its time to die: killall waits no longer than asked.
    def stubborn():
        try:
            greenline.sleep(5)
        except BaseException:
            greenline.sleep(0.5)  # its cleanup blocks

    t = greenline.spawn(stubborn)
    greenline.sleep(0)
    start = time.monotonic()
    greenline.killall([t], timeout=0.05)
    assert time.monotonic() - start < 0.4 and not t.dead
    t.join(timeout=2)

    # killall(block=False) returns before the tasks have died.
    t = greenline.spawn(stubborn)
    greenline.sleep(0)
    greenline.killall([t], block=False)
    assert not t.dead
    t.join(timeout=2)
    assert t.dead

    # A raw greenlet among them gets the exception too.
    got: list[BaseException] = []
    hub = greenline.get_hub()

    def raw():
        try:
            hub.block()
        except BaseException as e:
            got.append(e)

    g = raw_greenlet(raw, parent=hub.greenlet)
    hub.ready.append(g)
    greenline.sleep(0)  # it runs and parks
    greenline.killall([g], Stop("raw"))
    greenline.sleep(0)
    assert [str(e) for e in got] == ["raw"]


def test_kill_from_another_os_thread_reaches_the_task():
    class Stop(Exception):
        pass

    t = greenline.spawn(greenline.sleep, 5)
    greenline.sleep(0)
    th = threading.Thread(target=t.kill, args=(Stop,), kwargs={"block": False})
    th.start()
    th.join(5)
    t.join(timeout=2)
    assert t.dead and isinstance(t.exception, Stop)


def test_a_task_killed_before_it_starts_dies_with_the_exception_given():
    class Stop(Exception):
        pass

    t = greenline.Task(greenline.sleep, 5)
    t.kill(Stop("early"))
    assert t.dead and isinstance(t.exception, Stop) and str(t.exception) == "early"
    t2 = greenline.Task(greenline.sleep, 5)
    t2.kill()  # GreenletExit: a successful death
    assert t2.dead and t2.successful()


def test_the_hub_counts_live_tasks_back_down():
    hub = greenline.get_hub()
    before = hub.live
    tasks = [greenline.spawn(greenline.sleep, 0.01) for _ in range(5)]
    assert hub.live == before + 5
    greenline.joinall(tasks, timeout=2)
    assert hub.live == before
