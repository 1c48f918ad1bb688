"""The hub: scheduling order, timers, readiness, wake-ups, deadlock reports."""

from __future__ import annotations

import os
import re
import socket as stdsocket
import threading
import time

import pytest
from greenlet import getcurrent, greenlet

import greenline
from greenline import socket
from greenline._core.hub import LoopExit, get_hub


def test_sleepers_finish_in_order_of_their_deadlines():
    order = []

    def sleeper(d):
        greenline.sleep(d)
        order.append(d)

    tasks = [greenline.spawn(sleeper, d) for d in (0.05, 0.01, 0.03, 0.02)]
    greenline.joinall(tasks)
    assert order == [0.01, 0.02, 0.03, 0.05]


def test_sleep_zero_is_round_robin():
    trace = []

    def worker(name):
        for i in range(3):
            trace.append((name, i))
            greenline.sleep(0)

    greenline.joinall([greenline.spawn(worker, n) for n in "abc"])
    assert trace == [(n, i) for i in range(3) for n in "abc"]


def test_ten_thousand_sleepers_run_concurrently():
    start = time.monotonic()
    tasks = [greenline.spawn(greenline.sleep, 0.5) for _ in range(10_000)]
    done = greenline.joinall(tasks)
    elapsed = time.monotonic() - start
    assert len(done) == 10_000 and all(t.successful() for t in done)
    # Serially this would take 5,000 s; concurrently about the longest sleep.
    assert elapsed < 3.0


def test_no_green_thread_starves_among_ten_thousand_busy_ones():
    # Every green thread yields in a loop; each must make progress in every
    # round (FIFO ready queue), so after the run all counts are equal and
    # the order within each round is the spawn order.
    rounds = 5
    counts = [0] * 10_000
    seen_round = []

    def busy(i):
        for _r in range(rounds):
            counts[i] += 1
            if i == 0:
                seen_round.append(min(counts))
            greenline.sleep(0)

    greenline.joinall([greenline.spawn(busy, i) for i in range(10_000)])
    assert counts == [rounds] * 10_000
    # When green thread 0 starts round r, everyone has finished round r-1.
    assert seen_round == [0, 1, 2, 3, 4]


def test_green_threads_started_in_one_pass_each_park_on_a_socket():
    # Parking in wait_fd hands over to the pass's next green thread, but one
    # not started yet must be started by the hub: started from the parker's
    # stack it would inherit its recursion depth, and a pass of many new
    # readers would end in RecursionError.
    pairs = [socket.socketpair() for _ in range(400)]
    try:
        tasks = [greenline.spawn(b.recv, 16) for _a, b in pairs]
        greenline.sleep(0)  # all of them start, and park, in one pass
        assert get_hub().io_waiters == len(pairs)
        for i, (a, _b) in enumerate(pairs):
            a.sendall(b"%d" % i)
        greenline.joinall(tasks, raise_error=True)
        assert [t.value for t in tasks] == [b"%d" % i for i in range(len(pairs))]
        assert get_hub().io_waiters == 0
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_readers_woken_in_one_pass_run_in_the_order_of_their_edges():
    # Within a pass each reader that parks again hands over to the next one
    # directly; the order must still be the order the poller reported.
    n, rounds = 50, 4
    pairs = [socket.socketpair() for _ in range(n)]
    order: list[int] = []

    def reader(i, sock):
        for _ in range(rounds):
            sock.recv(16)
            order.append(i)

    try:
        tasks = [greenline.spawn(reader, i, b) for i, (_a, b) in enumerate(pairs)]
        greenline.sleep(0)
        for r in range(rounds):
            for a, _b in pairs:
                a.sendall(b"x")
            while len(order) < n * (r + 1):
                greenline.sleep(0)
        greenline.joinall(tasks, raise_error=True)
        assert order == list(range(n)) * rounds
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_a_green_thread_that_always_has_data_cannot_keep_the_hub():
    a, b = socket.socketpair()
    payload = b"x" * 200_000
    b.setblocking(False)
    sent = 0
    while sent < len(payload):
        try:
            sent += b.send(payload[sent:])
        except BlockingIOError:
            break
    got = []
    ticks = []

    def hog():
        # Data is always there: recv never has to wait.
        while len(got) < 4000:
            got.append(a.recv(1))

    def ticker():
        for _ in range(3):
            ticks.append(len(got))
            greenline.sleep(0)

    h = greenline.spawn(hog)
    t = greenline.spawn(ticker)
    greenline.joinall([h, t])
    # The ticker ran while the hog still had data to read, not after it.
    assert ticks[-1] < 4000
    a.close()
    b.close()


def _calls_in_a_row_in_a_second_os_thread(in_a_row, calls: int) -> list[int]:
    """A socket registered with the main thread's hub, then used by a second
    OS thread whose ``calls`` recv calls never block, beside a green thread
    counting its turns: how many calls ran in a row between two turns."""
    from greenline._core.hub import close_thread_hub

    main_hub = get_hub()
    a, b = socket.socketpair()
    a.settimeout(0.01)
    with pytest.raises(TimeoutError):
        a.recv(1)  # registers it with this thread's hub
    a.settimeout(None)
    b.sendall(b"x" * (calls + 1))
    assert a.recv(1) == b"x"  # a wait here: known readable from now on
    assert a._gl_st.hub is main_hub and a._gl_st.readable
    runs: list[int] = []
    errors: list[BaseException] = []

    def recv_one():
        assert a.recv(1) == b"x"

    def second_thread():
        try:
            runs.extend(in_a_row(recv_one, calls))
        except BaseException as e:  # reported to the main thread below
            errors.append(e)
        finally:
            close_thread_hub()

    th = threading.Thread(target=second_thread)
    th.start()
    th.join(timeout=20)  # the main thread's hub stays still meanwhile
    assert not th.is_alive() and errors == []
    assert a._gl_st.hub is main_hub  # never waited there: the budget was the main hub's
    a.close()
    b.close()
    return runs


def test_a_socket_another_os_threads_hub_watches_spends_the_budget_yielding_in_the_callers_hub(in_a_row):
    # Its calls spend the budget of the hub that watches the socket; when
    # that runs out the caller must yield in its own thread's hub (no green
    # thread can switch into another thread's), letting that thread's other
    # green threads run.
    from greenline._core.hub import IO_BUDGET

    runs = _calls_in_a_row_in_a_second_os_thread(in_a_row, IO_BUDGET * 3)
    assert len(runs) > 1 and max(runs) <= IO_BUDGET, runs


def test_a_second_os_thread_yields_once_per_io_budget_not_at_every_call(in_a_row):
    # budget_spent once refilled only the caller's own hub, leaving the
    # other's spent: every later call yielded, runs [64, 1, 1, ...].
    from greenline._core.hub import IO_BUDGET

    assert _calls_in_a_row_in_a_second_os_thread(in_a_row, IO_BUDGET * 3) == [IO_BUDGET] * 3


def test_deadlock_is_reported_not_hung():
    t = greenline.Task(lambda: None)  # never started: nothing can finish it
    with pytest.raises(LoopExit):
        t.join()


def test_wake_twice_resumes_once():
    hub = get_hub()
    resumed = []
    waiter = None

    def sleeper():
        nonlocal waiter
        waiter = getcurrent()
        hub.block()
        resumed.append(1)
        greenline.sleep(0.05)  # a second wake must not cut this short
        resumed.append(2)

    t = greenline.spawn(sleeper)
    greenline.sleep(0)
    hub.wake(waiter)
    hub.wake(waiter)
    start = time.monotonic()
    t.join()
    assert resumed == [1, 2]
    assert time.monotonic() - start >= 0.04


def test_call_threadsafe_wakes_a_sleeping_hub():
    hub = get_hub()
    me = getcurrent()
    got = []

    def from_thread():
        time.sleep(0.05)
        hub.call_threadsafe(lambda v: (got.append(v), hub.wake(me)), "hello")

    threading.Thread(target=from_thread).start()
    hub.block()  # nothing else to do: the hub sleeps in the poller
    assert got == ["hello"]


def test_idle_hub_does_not_spin():
    a, b = socket.socketpair()
    hub = get_hub()

    def reader():
        with greenline.Timeout(0.3, False):
            a.recv(10)

    loops = hub.loops
    cpu = time.process_time()
    greenline.spawn(reader).join()
    assert hub.loops - loops < 20
    assert time.process_time() - cpu < 0.1
    a.close()
    b.close()


def test_cancelled_timers_do_not_pile_up():
    a, b = socket.socketpair()
    a.settimeout(5)
    hub = get_hub()
    for i in range(2000):
        b.send(b"x")
        assert a.recv(1) == b"x"  # blocks once each time, timer set and cancelled
        if i % 2 == 0:
            greenline.sleep(0)
    assert len(hub.timers) < 600
    a.close()
    b.close()


@pytest.mark.timeout(10)
def test_a_finished_timeout_does_not_delay_deadlock_detection():
    with greenline.Timeout(3):
        pass  # its timer is cancelled, 3 s before its deadline
    start = time.monotonic()
    with pytest.raises(LoopExit):
        greenline.Event().wait()  # nobody will ever set it
    assert time.monotonic() - start < 1


def test_cancelled_timers_do_not_wake_an_idle_hub():
    hub = get_hub()
    for i in range(20):
        greenline.Timeout.start_new(0.01 + i * 0.005).cancel()
    loops = hub.loops
    greenline.sleep(0.2)
    assert hub.loops - loops <= 3


def test_error_in_raw_greenlet_is_reported_and_hub_goes_on(capsys):
    hub = get_hub()

    def boom():
        raise ValueError("raw greenlet failed")

    hub.schedule(greenlet(boom, parent=hub.greenlet))
    greenline.sleep(0.01)
    greenline.sleep(0)
    assert "raw greenlet failed" in capsys.readouterr().err


def test_closing_a_socket_wakes_its_reader_with_an_error():
    a, b = socket.socketpair()
    errors = []

    def reader():
        try:
            a.recv(10)
        except OSError as e:
            errors.append(e)

    t = greenline.spawn(reader)
    greenline.sleep(0.01)
    a.close()
    t.join(timeout=1)
    assert t.ready()
    assert errors and errors[0].errno == 9  # EBADF
    b.close()


def test_descriptor_closed_behind_our_back_and_reused():
    a, b = socket.socketpair()
    a.settimeout(0.01)
    with pytest.raises(TimeoutError):
        a.recv(1)  # registers a's descriptor with the hub
    fd = a.fileno()
    os.close(fd)  # not through the socket: the hub is not told
    a.detach()
    c, d = stdsocket.socketpair()
    # Find a new greenline socket on the same number.
    if c.fileno() != fd:
        c.close()
        d.close()
        pytest.skip("descriptor number not reused")
    c2 = socket.socket(fileno=c.detach())
    got = []

    def reader():
        got.append(c2.recv(10))

    t = greenline.spawn(reader)
    greenline.sleep(0.01)
    d.send(b"reused")
    t.join(timeout=2)
    assert got == [b"reused"]
    c2.close()
    d.close()
    b.close()


def test_dup_then_close_original_does_not_spin():
    a, b = socket.socketpair()
    a.settimeout(0.01)
    with pytest.raises(TimeoutError):
        a.recv(1)
    a2 = a.dup()
    a2.settimeout(None)
    a.close()  # unregisters a's number before closing it
    hub = get_hub()
    b.send(b"data for the dup")
    loops = hub.loops
    assert a2.recv(100) == b"data for the dup"
    with greenline.Timeout(0.2, False):
        a2.recv(100)
    assert hub.loops - loops < 20
    a2.close()
    b.close()


def test_fork_from_main_with_a_busy_hub_gives_a_working_child():
    done = []

    def sleeper(i):
        greenline.sleep(0.2)
        done.append(i)

    tasks = [greenline.spawn(sleeper, i) for i in range(100)]
    greenline.sleep(0.01)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            child_done = []
            ts = [greenline.spawn(lambda i: (greenline.sleep(0.01), child_done.append(i)), i) for i in range(10)]
            greenline.joinall(ts)
            # None of the parent's green threads run here.
            greenline.sleep(0.3)
            ok = sorted(child_done) == list(range(10)) and not done
            os.write(w, b"ok" if ok else b"bad")
        finally:
            os._exit(0)
    os.close(w)
    greenline.joinall(tasks)
    assert sorted(done) == list(range(100))
    data = b""
    while True:
        socket.wait_read(r, timeout=5)
        chunk = os.read(r, 10)
        if not chunk:
            break
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert data == b"ok"
    assert os.waitstatus_to_exitcode(status) == 0


def test_fork_from_a_green_thread_child_exits_when_it_ends():
    r, w = os.pipe()
    others = [greenline.spawn(greenline.sleep, 0.2) for _ in range(10)]

    def forker():
        pid = os.fork()
        if pid == 0:
            greenline.sleep(0.01)  # the child's fresh hub works
            os.write(w, b"child ran")
            return "child"  # ends the child's only green thread: exit 0
        return pid

    pid = greenline.spawn(forker).get()
    os.close(w)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.read(r, 100) == b"child ran"
    os.close(r)
    greenline.joinall(others)


def test_a_signal_handler_that_raises_while_the_hub_sleeps_reaches_main_and_the_hub_lives():
    import signal

    class Alarm(Exception):
        pass

    def handler(signum, frame):
        raise Alarm

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        start = time.monotonic()
        with pytest.raises(Alarm):
            greenline.sleep(2)  # the hub is in epoll_wait when the signal lands
        assert time.monotonic() - start < 1
        # The hub still works: a sleep sleeps (a dead hub would return at once).
        start = time.monotonic()
        greenline.sleep(0.05)
        assert time.monotonic() - start >= 0.045
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# The modules whose tests are run again, in a subprocess, on the hub's path
# for platforms without epoll.  Not select.py's or aio.py's: without epoll
# they need the selector's own pollable kernel object (kqueue's, on macOS
# and the BSDs), which Linux's poll-based stand-in has not.
_NO_EPOLL_MODULES = ["_core/test_hub", "test_socket", "servers/test_stream", "_core/test_timeout", "test_ssl",
                     "test_event", "test_lock", "_core/test_threadpool"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_selectors_path_for_platforms_without_epoll():
    # macOS and the BSDs poll through selectors (level-triggered) instead of
    # epoll.  Removing select.epoll before greenline is imported puts this
    # Linux machine on that path; test_idle_hub_does_not_spin, among these,
    # fails there if the hub leaves an idle socket registered (it would spin).
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = (
        "import select, sys\n"
        "del select.epoll\n"
        "import pytest\n"
        "sys.exit(pytest.main(sys.argv[1:]))\n"
    )
    args = ["-q", "-p", "no:cacheprovider", "-m", "not slow and not stdlib",
            *(f"tests/{m}.py" for m in _NO_EPOLL_MODULES)]
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=root,
                          capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and not re.search(r"\b\d+ failed", proc.stdout)


@pytest.mark.timeout(20)
def test_a_deadlock_is_reported_once_the_other_os_thread_has_ended():
    # While another OS thread lives it might still wake us, so a wait
    # nobody else can end is not a deadlock yet; once it has ended (without
    # a word to the hub: a thread's end wakes nobody), it is.
    import _thread

    from greenline import Event, LoopExit

    lock, started = _thread.allocate_lock(), _thread.allocate_lock()
    lock.acquire()
    started.acquire()

    def other():
        started.release()
        lock.acquire(timeout=0.3)  # a real thread, living 0.3 s

    _thread.start_new_thread(other, ())
    started.acquire()  # it runs (and counts) before we wait
    start = time.monotonic()
    with pytest.raises(LoopExit):
        Event().wait()
    assert time.monotonic() - start < 5
