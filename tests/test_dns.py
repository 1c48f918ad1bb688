"""Name resolution in greenline.socket: a lookup runs in the thread pool and
blocks only the green thread that asked; numeric addresses need no lookup
and are converted inline."""

from __future__ import annotations

import socket as stdsocket
import threading
import time

import pytest

import greenline
from greenline import socket
from greenline._core import threadpool

LOOKUP_SECONDS = 0.2


@pytest.fixture
def slow_resolver(monkeypatch):
    """Make the C resolver take LOOKUP_SECONDS of real (OS-thread-blocking)
    time, and record which OS thread ran each lookup."""
    threads = []
    real = socket._std_getaddrinfo

    def slow(*args):
        threads.append(threading.get_ident())
        time.sleep(LOOKUP_SECONDS)
        return real(*args)

    monkeypatch.setattr(socket, "_std_getaddrinfo", slow)
    return threads


@pytest.fixture
def no_thread_pool(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a numeric address went to the thread pool")

    monkeypatch.setattr(threadpool, "to_thread", refuse)


def _ticker(ticks):
    while True:
        ticks.append(time.monotonic())
        greenline.sleep(0.01)


def test_getaddrinfo_localhost_runs_in_the_pool_while_others_go_on(slow_resolver):
    ticks: list[float] = []
    ticker = greenline.spawn(_ticker, ticks)
    greenline.sleep(0)
    start = time.monotonic()
    info = socket.getaddrinfo("localhost", 8080, socket.AF_INET, socket.SOCK_STREAM)
    end = time.monotonic()
    ticker.kill()
    assert end - start >= LOOKUP_SECONDS
    # The lookup blocked another OS thread, not this one's hub: the ticker
    # kept running all along (it ticks every 10 ms).
    during = [t for t in ticks if start <= t <= end]
    assert len(during) >= 5
    assert slow_resolver and slow_resolver[0] != threading.get_ident()
    assert info and all(sa == ("127.0.0.1", 8080) for *_, sa in info)
    family, kind, *_ = info[0]
    assert family is socket.AF_INET and kind is socket.SOCK_STREAM


def test_lookups_of_many_green_threads_overlap(slow_resolver):
    start = time.monotonic()
    tasks = [greenline.spawn(socket.getaddrinfo, "localhost", 80, socket.AF_INET)
             for _ in range(4)]
    greenline.joinall(tasks, raise_error=True)
    # Four lookups on a pool of several threads: about one lookup's time.
    assert time.monotonic() - start < LOOKUP_SECONDS * 3
    assert len(set(slow_resolver)) > 1


def test_real_localhost_lookup_matches_the_stdlib():
    ours = socket.getaddrinfo("localhost", 80, 0, socket.SOCK_STREAM)
    theirs = stdsocket.getaddrinfo("localhost", 80, 0, stdsocket.SOCK_STREAM)
    assert ours == theirs
    assert socket.gethostbyname("localhost") == stdsocket.gethostbyname("localhost")
    assert socket.gethostbyname_ex("localhost") == stdsocket.gethostbyname_ex("localhost")
    assert socket.gethostbyaddr("127.0.0.1") == stdsocket.gethostbyaddr("127.0.0.1")
    assert socket.getnameinfo(("127.0.0.1", 80), 0) == stdsocket.getnameinfo(("127.0.0.1", 80), 0)
    assert socket.getfqdn() == stdsocket.getfqdn()


def test_numeric_hosts_are_resolved_inline(no_thread_pool):
    assert socket.getaddrinfo("127.0.0.1", 80, socket.AF_INET, socket.SOCK_STREAM) == \
        stdsocket.getaddrinfo("127.0.0.1", 80, stdsocket.AF_INET, stdsocket.SOCK_STREAM)
    assert socket.getaddrinfo("::1", 80, socket.AF_INET6)[0][4][:2] == ("::1", 80)
    assert socket.getaddrinfo(None, 80, socket.AF_INET, 0, 0, socket.AI_PASSIVE)[0][4] == ("0.0.0.0", 80)
    assert socket.getaddrinfo(b"10.1.2.3", "80", socket.AF_INET)[0][4] == ("10.1.2.3", 80)
    assert socket.gethostbyname("192.0.2.7") == "192.0.2.7"
    flags = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
    assert socket.getnameinfo(("127.0.0.1", 80), flags) == ("127.0.0.1", "80")
    # Connecting and binding to numeric addresses need no lookup either.
    srv = socket.create_server(("127.0.0.1", 0))
    c = socket.create_connection(srv.getsockname())
    c.close()
    srv.close()


def test_connect_bind_and_create_server_resolve_names_in_the_pool(slow_resolver):
    srv = socket.create_server(("localhost", 0))
    assert srv.getsockname()[0] == "127.0.0.1"
    s = socket.socket()
    s.bind(("localhost", 0))
    c = socket.socket()
    c.connect(("localhost", srv.getsockname()[1]))
    assert len(slow_resolver) == 3
    for x in (c, s, srv):
        x.close()


def test_lookup_errors_reach_the_caller(monkeypatch):
    def failing(*args):
        raise stdsocket.gaierror(stdsocket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "_std_getaddrinfo", failing)
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("no.such.host", 80)
    with pytest.raises(socket.gaierror):
        socket.create_connection(("no.such.host", 80))


def test_a_timeout_interrupts_a_slow_lookup(slow_resolver):
    start = time.monotonic()
    with pytest.raises(greenline.Timeout):
        with greenline.Timeout(0.05):
            socket.getaddrinfo("localhost", 80)
    assert time.monotonic() - start < LOOKUP_SECONDS
    # The abandoned lookup finishes in its thread; the hub stays usable.
    greenline.sleep(LOOKUP_SECONDS)
    assert socket.getaddrinfo("127.0.0.1", 80)
