"""gevent's API on greenline, in greenline's own modules: each test is one
promise of issue 14 (wait/iwait, the thread pool, the Greenlet API, queues,
loop watchers, file objects, the datagram server, error reporting)."""

from __future__ import annotations

import os
import signal
import time

import pytest

import greenline
from greenline import socket
from greenline._core.hub import get_hub
from greenline._core.task import Task, kill, spawn_raw
from greenline._core.wait import idle, iwait, wait
from greenline._core.workers import ThreadPool, ThreadPoolExecutor
from greenline.blocking.fileobject import FileObjectPosix, FileObjectThread
from greenline.blocking.os import make_nonblocking, nb_read, nb_write
from greenline.blocking.signal import signal_handler
from greenline.event import AsyncResult, Event
from greenline.queue import Channel, Empty, Queue, ShutDown, SimpleQueue
from greenline.servers.datagram import DatagramServer


def test_iwait_yields_in_the_order_things_finish():
    tasks = [greenline.spawn(greenline.sleep, s) for s in (0.03, 0.01, 0.02)]
    assert [tasks.index(t) for t in iwait(tasks)] == [1, 2, 0]


def test_wait_takes_events_results_and_tasks_and_stops_at_count_or_timeout():
    e, r = Event(), AsyncResult()
    greenline.spawn_later(0.01, e.set)
    assert wait([e, r], count=1) == [e]
    assert wait([r], timeout=0.01) == []


def test_wait_with_no_arguments_runs_until_nothing_is_left():
    done = []
    for s in (0.01, 0.02):
        greenline.spawn(lambda s=s: (greenline.sleep(s), done.append(s)))
    assert wait() is True
    assert done == [0.01, 0.02]


def test_idle_returns_after_the_others_ran():
    ran = []
    greenline.spawn(ran.append, 1)
    idle()
    assert ran == [1]


def test_threadpool_spawn_apply_map_imap_and_the_hubs_pool():
    pool = ThreadPool(3)
    assert pool.spawn(time.sleep, 0).get() is None
    assert pool.apply(sum, ([1, 2],)) == 3
    assert pool.map(abs, [-1, -2]) == [1, 2]
    assert list(pool.imap(abs, [-3, -4])) == [3, 4]
    assert sorted(pool.imap_unordered(abs, [-5, -6])) == [5, 6]
    got = []
    pool.apply_async(abs, (-7,), callback=got.append).join()
    greenline.sleep(0.01)
    assert got == [7]
    assert get_hub().threadpool.apply(pow, (2, 3)) == 8


def test_threadpool_jobs_run_at_once_in_real_threads():
    pool = ThreadPool(4)
    started = time.monotonic()
    pool.map(time.sleep, [0.1] * 4)  # the real sleep: it blocks its OS thread
    assert time.monotonic() - started < 0.35


def test_threadpool_executor_future_waits_cooperatively():
    with ThreadPoolExecutor(2) as ex:
        f = ex.submit(pow, 2, 10)
        assert f.result(timeout=5) == 1024


def test_greenlet_subclass_runs_its__run_and_reports_exc_info():
    class Job(Task):
        def _run(self, x):
            if x < 0:
                raise ValueError(x)
            return x * 2

    assert Job.spawn(None, 4).get() == 8
    bad = Job(None, -1)
    bad.report_failures = False
    bad.start()
    bad.join()
    assert bad.exc_info[0] is ValueError and not bad.started and bad.dead


def test_greenlet_as_context_manager_joins_and_unlink_all():
    with Task.spawn(lambda: 5) as t:
        t.link(lambda _t: None)
        t.unlink_all()
        assert not t.has_links()
    assert t.value == 5


def test_spawn_raw_and_kill_of_a_raw_greenlet():
    ran = []
    g = spawn_raw(lambda: (ran.append(1), greenline.sleep(10)))
    greenline.sleep(0)
    kill(g)
    greenline.sleep(0)
    assert ran == [1] and g.dead


def test_a_failing_task_is_reported_through_hub_handle_error():
    seen = []
    hub = get_hub()
    hub.handle_error = lambda *args: seen.append(args)  # type: ignore[method-assign]
    try:
        greenline.spawn(lambda: 1 / 0).join()
    finally:
        del hub.handle_error
    (context, typ, value, tb), = seen
    assert isinstance(context, Task) and typ is ZeroDivisionError and tb is not None


def test_timeout_objects_are_accepted_as_timeouts():
    t = greenline.Timeout(0.01)
    with pytest.raises(greenline.Timeout) as raised:
        Queue().get(timeout=t)
    assert raised.value is t
    assert Event().wait(timeout=greenline.Timeout(0.01)) is False


def test_channel_hands_over_only_when_both_sides_are_there():
    ch = Channel()
    with pytest.raises(Empty):
        ch.get(block=False)
    t = greenline.spawn(ch.put, "x")
    assert ch.get(timeout=1) == "x"
    t.join()
    assert t.successful()


def test_queue_shutdown_drains_then_refuses_and_wakes_waiters():
    q = SimpleQueue()
    q.put(1)
    waiter = greenline.spawn(Queue.get, Queue())  # another queue: untouched
    q.shutdown()
    with pytest.raises(ShutDown):
        q.put(2)
    assert q.get() == 1
    with pytest.raises(ShutDown):
        q.get()
    empty = Queue()
    getter = greenline.spawn(empty.get)
    greenline.sleep(0)
    empty.shutdown()
    with pytest.raises(ShutDown):
        getter.get(timeout=1)
    waiter.kill()


def test_loop_watchers_timer_callback_and_io():
    loop = get_hub().loop
    fired = Event()
    timer = loop.timer(0.01)
    timer.start(fired.set)
    assert fired.wait(1)
    called = []
    loop.run_callback(called.append, 1)
    greenline.sleep(0.01)
    assert called == [1]
    a, b = socket.socketpair()
    readable = Event()
    watcher = loop.io(a.fileno(), 1)
    watcher.start(readable.set)
    b.sendall(b"x")
    assert readable.wait(1)
    watcher.stop()
    a.close()
    b.close()


def test_nb_read_write_and_file_objects_over_a_pipe():
    r, w = os.pipe()
    assert make_nonblocking(r) is True
    make_nonblocking(w)
    reader = greenline.spawn(nb_read, r, 10)
    greenline.sleep(0)
    nb_write(w, b"abc")
    assert reader.get(timeout=1) == b"abc"
    out, inp = FileObjectPosix(w, "wb"), FileObjectPosix(r, "rb")
    out.write(b"line\n")
    out.flush()
    assert inp.readline() == b"line\n"
    out.close()
    inp.close()


def test_file_object_thread_reads_a_file(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("hello\n")
    with FileObjectThread(str(path), "r") as f:
        assert f.read() == "hello\n"


def test_signal_handler_runs_in_a_green_thread():
    got = Event()
    handler = signal_handler(signal.SIGUSR1, got.set)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert got.wait(2)
    finally:
        handler.cancel()


def test_datagram_server_answers_each_datagram():
    server = DatagramServer("127.0.0.1:0", lambda data, addr: server.sendto(data.upper(), addr))
    server.start()
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(2)
    try:
        c.sendto(b"hi", server.address)
        assert c.recvfrom(100)[0] == b"HI"
    finally:
        c.close()
        server.stop()


def test_patch_all_makes_no_hub():
    import subprocess
    import sys

    code = ("from greenline import monkey; monkey.patch_all();"
            "from greenline._core.hub import get_hub_if_exists; assert get_hub_if_exists() is None;"
            "assert monkey.is_anything_patched()")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_semaphore_rawlink_calls_back_when_a_permit_is_free_and_wait_takes_it():
    from greenline.lock import Semaphore

    sem = Semaphore(0)
    seen = []
    sem.rawlink(seen.append)
    greenline.sleep(0)
    assert seen == [] and sem.hub is None
    greenline.spawn_later(0.01, sem.release)
    assert wait([sem], timeout=5) == [sem]
    greenline.sleep(0)
    assert seen == [sem]
    sem.unlink(seen.append)
    sem.release()
    greenline.sleep(0)
    assert seen == [sem]


def test_executor_futures_are_waitable_by_gevent_wait_and_the_stdlib_wait():
    import concurrent.futures

    ex = ThreadPoolExecutor(2)
    f = ex.submit(time.sleep, 0.02)
    assert wait([f], timeout=5) == [f]
    g = ex.submit(sum, [1, 2])
    # The OS thread blocked in the stdlib's wait still sees it settled.
    done, _ = concurrent.futures.wait([g], timeout=5)
    assert done == {g} and g.result() == 3
    ex.shutdown()


def test_threadpool_of_maxsize_zero_waits_and_refuses_other_threads():
    from greenline._core.workers import InvalidThreadUseError

    pool = ThreadPool(0)
    done = []
    t = greenline.spawn(lambda: pool.spawn(done.append, 1).get())
    greenline.sleep(0.02)  # time in which nothing may run
    assert done == [] and not t.ready()
    pool.maxsize = 1
    t.join(timeout=5)
    assert done == [1]
    other = ThreadPool(1)
    with pytest.raises(InvalidThreadUseError):
        other.apply(lambda: pool.spawn(done.append, 2))


def test_copying_a_local_copies_the_callers_attributes_shallowly():
    import copy

    from greenline.local import local

    a = local()
    a.path, a.obj = "123", []
    b = copy.copy(a)
    b.path = "321"
    assert a.path == "123" and b.obj is a.obj


def test_gevent_time_sleep_is_the_patched_time_sleep_once_patched():
    import importlib

    gtime = importlib.import_module("greenline.gevent.time")
    from greenline.monkey import is_module_patched

    if is_module_patched("time"):
        assert gtime.sleep is time.sleep
    else:
        assert gtime.sleep is greenline.sleep


def test_a_file_object_given_to_a_child_as_stdin_is_made_blocking_for_it():
    # FileObjectPosix makes its descriptor non-blocking; a child reading it
    # as stdin would get EAGAIN at once (gevent clears the flag: its #134).
    from greenline import subprocess

    r, w = os.pipe()
    stdin = FileObjectPosix(r, "rb")
    assert not os.get_blocking(r)
    try:
        with subprocess.Popen(["cat"], stdin=stdin, stdout=subprocess.PIPE) as p:
            greenline.sleep(0.1)
            assert p.poll() is None  # still reading, not failed on EAGAIN
            os.write(w, b"text")
            os.close(w)
            w = -1
            assert p.stdout.read() == b"text"
        assert p.returncode == 0
        assert os.get_blocking(r)
    finally:
        stdin.close()
        if w >= 0:
            os.close(w)


@pytest.mark.parametrize("hook", ["profile", "trace"])
def test_threadpool_workers_run_calls_under_threading_profile_and_trace_hooks(hook):
    # A profiler or coverage sets its hook with threading.setprofile/settrace,
    # possibly after the pool's threads started: the calls must be seen.
    import sys
    import threading

    set_for_threads = getattr(threading, "set" + hook)
    get_in_thread = getattr(sys, "get" + hook)
    pool = ThreadPool(1)
    pool.apply(lambda: None)  # the worker thread exists before the hook
    seen: list[str] = []

    def hook_fn(frame, event, arg):
        seen.append(frame.f_code.co_name)
        return None

    def job():
        return get_in_thread() is hook_fn

    set_for_threads(hook_fn)
    try:
        assert pool.apply(job) is True
    finally:
        set_for_threads(None)
    assert "job" in seen
    assert pool.apply(get_in_thread) is None  # cleared after the call
    pool.kill()
