"""greenline.select and greenline.selectors: the stdlib's readiness APIs,
parking only the calling green thread (used directly, without patching)."""

from __future__ import annotations

import errno
import os
import select as stdselect
import selectors as stdselectors
import socket as stdsocket
import time

import pytest

import greenline
from greenline import select, selectors, socket
from greenline._core.hub import get_hub


def _ticker(ticks: list[int], n: int = 1000, every: float = 0.005):
    def run():
        for i in range(n):
            greenline.sleep(every)
            ticks.append(i)

    return greenline.spawn(run)


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


# -- select.select ------------------------------------------------------------------


def test_select_reports_ready_descriptors_at_once(pair):
    a, b = pair
    assert select.select([a], [], [], 0) == ([], [], [])
    b.sendall(b"x")
    r, w, x = select.select([a, b], [a, b], [], 0)
    assert r == [a] and w == [a, b] and x == []


def test_select_parks_only_the_caller_while_others_run(pair):
    a, b = pair
    ticks: list[int] = []
    ticker = _ticker(ticks)

    def send_later():
        greenline.sleep(0.1)
        b.sendall(b"late")

    greenline.spawn(send_later)
    r, _, _ = select.select([a], [], [], 5)
    assert r == [a]
    # The hub kept running other green threads while select waited.
    assert len(ticks) >= 3
    assert a.recv(10) == b"late"
    ticker.kill()


def test_select_timeout_returns_empty_lists(pair):
    a, _ = pair
    t0 = time.monotonic()
    assert select.select([a], [], [], 0.05) == ([], [], [])
    assert time.monotonic() - t0 >= 0.045


def test_select_returns_the_callers_objects_and_accepts_raw_fds(pair):
    a, b = pair
    b.sendall(b"x")

    class Wrapper:
        def fileno(self):
            return a.fileno()

    w = Wrapper()
    assert select.select([w], [], [], 1)[0] == [w]
    assert select.select([a.fileno()], [], [], 1)[0] == [a.fileno()]
    # Any iterable, as the stdlib takes any sequence.
    assert select.select((s for s in [a]), [], [], 1)[0] == [a]


def test_select_on_a_pipe_waits_for_data():
    r, w = os.pipe()
    try:
        greenline.spawn_later(0.05, os.write, w, b"hi")
        assert select.select([r], [], [], 5) == ([r], [], [])
        assert os.read(r, 10) == b"hi"
    finally:
        os.close(r)
        os.close(w)


def test_select_reports_urgent_data_in_the_exceptional_list():
    srv = socket.create_server(("127.0.0.1", 0))
    c = socket.create_connection(srv.getsockname())
    s, _ = srv.accept()
    try:
        greenline.spawn_later(0.05, c.send, b"!", stdsocket.MSG_OOB)
        r, w, x = select.select([], [], [s], 5)
        assert x == [s]
    finally:
        for sock in (c, s, srv):
            sock.close()


def test_select_write_wait_on_a_full_socket(pair):
    a, b = pair
    a.setblocking(False)
    chunk = b"x" * 65536
    try:
        while True:
            a.send(chunk)
    except BlockingIOError:
        pass
    assert select.select([], [a], [], 0) == ([], [], [])

    def drain():
        greenline.sleep(0.05)
        b.setblocking(False)
        try:
            while True:
                b.recv(1 << 20)
        except BlockingIOError:
            pass

    greenline.spawn(drain)
    assert select.select([], [a], [], 5)[1] == [a]


def test_select_argument_errors_are_the_stdlibs(pair):
    a, _ = pair
    with pytest.raises(ValueError):
        select.select([a], [], [], -1)
    with pytest.raises(TypeError):
        select.select([object()], [], [], 0)
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError) as info:
        select.select([r], [], [], 1)
    assert info.value.errno == errno.EBADF


def test_select_with_nothing_to_wait_for_sleeps_cooperatively():
    ticks: list[int] = []
    ticker = _ticker(ticks)
    t0 = time.monotonic()
    assert select.select([], [], [], 0.1) == ([], [], [])
    assert time.monotonic() - t0 >= 0.095
    assert ticks
    ticker.kill()


def test_select_is_interrupted_by_a_timeout_and_a_kill(pair):
    a, _ = pair
    with pytest.raises(greenline.Timeout):
        with greenline.Timeout(0.05):
            select.select([a], [], [])
    t = greenline.spawn(select.select, [a], [], [])
    greenline.sleep(0.01)
    t.kill()
    assert t.dead
    # Nothing stays registered in the hub for the private epoll.
    assert all(not st.temporary for st in get_hub().fds.values())


def test_select_many_green_threads_on_the_same_descriptor(pair):
    # Unlike sock.recv (one reader per descriptor), select may be called
    # by any number of green threads on the same socket.
    a, b = pair
    results = []

    def waiter():
        results.append(select.select([a], [], [], 5)[0] == [a])

    tasks = [greenline.spawn(waiter) for _ in range(20)]
    greenline.sleep(0.02)
    b.sendall(b"x")
    greenline.joinall(tasks)
    assert results == [True] * 20


def test_a_repeatedly_ready_select_yields_to_other_green_threads(pair):
    # A polling loop whose answer is always "ready" must not starve the
    # green thread that would consume the data (real threads get preempted).
    a, b = pair
    b.sendall(b"x")
    ran = []
    greenline.spawn(ran.append, 1)
    for _ in range(1000):
        select.select([a], [], [], 0)
        if ran:
            break
    assert ran == [1]


# -- select.poll ---------------------------------------------------------------------


def test_poll_register_modify_unregister_follow_the_stdlib(pair):
    a, b = pair
    p = select.poll()
    p.register(a, select.POLLIN)
    assert p.poll(0) == []
    b.sendall(b"x")
    assert p.poll(0) == [(a.fileno(), select.POLLIN)]
    p.modify(a, select.POLLOUT)
    assert p.poll(0) == [(a.fileno(), select.POLLOUT)]
    p.unregister(a)
    assert p.poll(0) == []
    with pytest.raises(KeyError):
        p.unregister(a)
    with pytest.raises(FileNotFoundError):
        p.modify(a, select.POLLIN)


def test_poll_waits_cooperatively_in_milliseconds(pair):
    a, b = pair
    p = select.poll()
    p.register(a, select.POLLIN)
    ticks: list[int] = []
    ticker = _ticker(ticks)
    t0 = time.monotonic()
    assert p.poll(50) == []
    assert time.monotonic() - t0 >= 0.045
    greenline.spawn_later(0.05, b.sendall, b"x")
    assert p.poll() == [(a.fileno(), select.POLLIN)]
    assert p.poll(-1) == [(a.fileno(), select.POLLIN)]
    assert ticks
    ticker.kill()


def test_poll_reports_hangup(pair):
    a, b = pair
    p = select.poll()
    p.register(a, select.POLLIN)
    greenline.spawn_later(0.02, b.close)
    events = p.poll(5000)
    assert events and events[0][0] == a.fileno()
    assert events[0][1] & (select.POLLHUP | select.POLLIN)


def test_poll_object_is_not_shared_by_concurrent_calls(pair):
    a, _ = pair
    p = select.poll()
    p.register(a, select.POLLIN)
    t = greenline.spawn(p.poll, 5000)
    greenline.sleep(0.01)
    with pytest.raises(RuntimeError):
        p.poll(10)
    t.kill()


# -- select.epoll ----------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(stdselect, "epoll"), reason="epoll is Linux only")
class TestEpoll:
    def test_poll_waits_cooperatively(self, pair):
        a, b = pair
        ticks: list[int] = []
        ticker = _ticker(ticks)
        with select.epoll() as ep:
            ep.register(a.fileno(), select.EPOLLIN)
            assert ep.poll(0) == []
            assert ep.poll(0.03) == []
            greenline.spawn_later(0.05, b.sendall, b"x")
            assert ep.poll() == [(a.fileno(), select.EPOLLIN)]
            assert ep.poll(1, 1) == [(a.fileno(), select.EPOLLIN)]
        assert ep.closed
        assert ticks
        ticker.kill()

    def test_edge_triggered_registration_keeps_its_meaning(self, pair):
        a, b = pair
        ep = select.epoll()
        try:
            ep.register(a.fileno(), select.EPOLLIN | select.EPOLLET)
            b.sendall(b"x")
            assert ep.poll(1) == [(a.fileno(), select.EPOLLIN)]
            # Same data, no new edge: nothing to report.
            assert ep.poll(0.02) == []
        finally:
            ep.close()

    def test_fromfd_modify_unregister_and_closed(self, pair):
        a, b = pair
        ep = select.epoll()
        ep.register(a, select.EPOLLOUT)
        assert ep.poll(1) == [(a.fileno(), select.EPOLLOUT)]
        ep.modify(a, select.EPOLLIN)
        assert ep.poll(0) == []
        ep.unregister(a)
        dup = select.epoll.fromfd(os.dup(ep.fileno()))
        assert isinstance(dup, select.epoll)
        dup.close()
        ep.close()
        with pytest.raises(ValueError):
            ep.poll(0)
        with pytest.raises(ValueError):
            ep.fileno()


# -- selectors ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls_name", ["DefaultSelector", "SelectSelector", "PollSelector"])
def test_selectors_are_the_stdlibs_but_cooperative(pair, cls_name):
    a, b = pair
    cls = getattr(selectors, cls_name)
    assert issubclass(cls, stdselectors.BaseSelector)
    ticks: list[int] = []
    ticker = _ticker(ticks)
    with cls() as sel:
        key = sel.register(a, selectors.EVENT_READ, data="a")
        assert sel.get_key(a) is key
        assert sel.select(0) == []
        assert sel.select(0.02) == []
        greenline.spawn_later(0.05, b.sendall, b"x")
        ready = sel.select()
        assert [(k.fileobj, k.data, ev) for k, ev in ready] == [(a, "a", selectors.EVENT_READ)]
        sel.modify(a, selectors.EVENT_WRITE)
        assert [ev for _, ev in sel.select(1)] == [selectors.EVENT_WRITE]
    assert ticks
    ticker.kill()


def test_default_selector_is_epoll_based_on_linux():
    if hasattr(stdselect, "epoll"):
        assert selectors.DefaultSelector is selectors.EpollSelector
        assert issubclass(selectors.DefaultSelector, stdselectors.EpollSelector)
