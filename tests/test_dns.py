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
SLOW = ".slow.test"  # names the fake DNS answers, slowly, with 127.0.0.1


class SlowDNS(list):
    """The OS threads that ran each slow lookup; ``seconds`` is how long
    one takes."""

    seconds = LOOKUP_SECONDS


@pytest.fixture
def slow_resolver(monkeypatch):
    """Make the real getaddrinfo (the one greenline calls, in the pool or
    inline) a resolver whose DNS takes ``seconds`` of real, OS-thread
    blocking time for names ending in ``.slow.test`` (answered as 127.0.0.1).
    Other names (the /etc/hosts ones) go to the C library as they are."""
    record = SlowDNS()
    real = socket._std_getaddrinfo

    def slow(host, *args):
        name = host.decode() if isinstance(host, bytes) else host
        if isinstance(name, str) and name.endswith(SLOW):
            record.append(threading.get_ident())
            time.sleep(record.seconds)
            return real("127.0.0.1", *args)
        return real(host, *args)

    monkeypatch.setattr(socket, "_std_getaddrinfo", slow)
    return record


@pytest.fixture
def no_thread_pool(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a lookup that needs no DNS went to a thread pool")

    monkeypatch.setattr(threadpool, "to_thread", refuse)
    monkeypatch.setattr(threadpool.ThreadPool, "apply", refuse)


def _ticker(ticks):
    while True:
        ticks.append(time.monotonic())
        greenline.sleep(0.01)


def test_getaddrinfo_runs_in_the_pool_while_others_go_on(slow_resolver):
    ticks: list[float] = []
    ticker = greenline.spawn(_ticker, ticks)
    greenline.sleep(0)
    start = time.monotonic()
    info = socket.getaddrinfo("a" + SLOW, 8080, socket.AF_INET, socket.SOCK_STREAM)
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
    tasks = [greenline.spawn(socket.getaddrinfo, "a" + SLOW, 80, socket.AF_INET)
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
    srv = socket.create_server(("a" + SLOW, 0))
    assert srv.getsockname()[0] == "127.0.0.1"
    s = socket.socket()
    s.bind(("b" + SLOW, 0))
    c = socket.socket()
    c.connect(("c" + SLOW, srv.getsockname()[1]))
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
            socket.getaddrinfo("a" + SLOW, 80)
    assert time.monotonic() - start < LOOKUP_SECONDS
    # The abandoned lookup finishes in its thread; the hub stays usable.
    greenline.sleep(LOOKUP_SECONDS)
    assert socket.getaddrinfo("127.0.0.1", 80)


# -- slow DNS: lookups do not queue, /etc/hosts names never wait (issue 15, item 4)

def _hosts_file_comes_first() -> bool:
    """Whether the C library reads /etc/hosts before asking DNS and has
    localhost there (glibc's ``hosts: files ...``)."""
    try:
        with open("/etc/nsswitch.conf") as f:
            hosts = [line.split(":", 1)[1].split() for line in f if line.strip().startswith("hosts:")]
        with open("/etc/hosts") as f:
            names = {n for line in f for n in line.split("#", 1)[0].split()[1:]}
    except OSError:
        return False
    return bool(hosts and hosts[0] and hosts[0][0] == "files" and "localhost" in names)


def test_forty_slow_lookups_take_about_one_lookups_time_and_localhost_does_not_wait(slow_resolver):
    if not _hosts_file_comes_first():
        pytest.skip("the C library does not read /etc/hosts first here")
    slow_resolver.seconds = 0.5
    n = 40  # more than any machine's general thread pool (32 at most)
    start = time.monotonic()
    tasks = [greenline.spawn(socket.getaddrinfo, f"h{i}{SLOW}", 80, socket.AF_INET, socket.SOCK_STREAM)
             for i in range(n)]
    greenline.sleep(0)  # all 40 lookups are under way
    t0 = time.monotonic()
    local = socket.getaddrinfo("localhost", 80, socket.AF_INET, socket.SOCK_STREAM)
    assert time.monotonic() - t0 < 0.25  # not behind the DNS lookups (each takes 0.5 s)
    assert local[0][4] == ("127.0.0.1", 80)
    t0 = time.monotonic()
    assert socket.gethostbyname("localhost") == "127.0.0.1"
    assert socket.gethostbyaddr("127.0.0.1") == stdsocket.gethostbyaddr("127.0.0.1")
    assert time.monotonic() - t0 < 0.25
    greenline.joinall(tasks, raise_error=True)
    assert time.monotonic() - start < slow_resolver.seconds * 2  # six at a time (two cores): 3.5 s
    assert len(slow_resolver) == n and threading.get_ident() not in slow_resolver


def test_a_name_from_etc_hosts_is_resolved_without_the_pool(no_thread_pool):
    if not _hosts_file_comes_first():
        pytest.skip("the C library does not read /etc/hosts first here")
    assert socket.getaddrinfo("localhost", 80, socket.AF_INET, socket.SOCK_STREAM) == \
        stdsocket.getaddrinfo("localhost", 80, stdsocket.AF_INET, stdsocket.SOCK_STREAM)
    assert socket.getaddrinfo("LocalHost", 80, 0, socket.SOCK_STREAM) == \
        stdsocket.getaddrinfo("LocalHost", 80, 0, stdsocket.SOCK_STREAM)
    assert socket.gethostbyname("localhost") == "127.0.0.1"
    assert socket.gethostbyname_ex("localhost") == stdsocket.gethostbyname_ex("localhost")
    assert socket.gethostbyaddr("127.0.0.1") == stdsocket.gethostbyaddr("127.0.0.1")
    srv = socket.create_server(("localhost", 0))
    c = socket.create_connection(("localhost", srv.getsockname()[1]))
    c.close()
    srv.close()


SLOW_DNS_SERVER = r"""
import socket, struct, sys, threading, time
DELAY = float(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
print("ready", flush=True)

def answer(query, peer):
    time.sleep(DELAY)   # a slow upstream: each query waits, in parallel
    qid, = struct.unpack("!H", query[:2])
    end = 12
    while query[end]:
        end += query[end] + 1
    question = query[12:end + 5]
    reply = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question
    reply += struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton("127.0.0.2")
    s.sendto(reply, peer)

while True:
    query, peer = s.recvfrom(512)
    threading.Thread(target=answer, args=(query, peer), daemon=True).start()
"""

SLOW_DNS_CLIENT = r"""
import os, subprocess, sys, time
# In a user, network and mount namespace of our own: our resolv.conf, our
# DNS server on 127.0.0.1:53.
subprocess.run(["ip", "link", "set", "lo", "up"], check=False, capture_output=True)
subprocess.run(["mount", "--bind", sys.argv[1], "/etc/resolv.conf"], check=True)
dns = subprocess.Popen([sys.executable, sys.argv[2], "1.0"], stdout=subprocess.PIPE, text=True)
assert dns.stdout.readline().strip() == "ready"

from greenline import monkey; monkey.patch_all()
import socket
import greenline

def lookup(i):
    return socket.getaddrinfo(f"host{i}.slow.test", 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]

start = time.monotonic()
tasks = [greenline.spawn(lookup, i) for i in range(40)]
greenline.sleep(0)
t0 = time.monotonic()
local = socket.getaddrinfo("localhost", 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
print("localhost", local, "after %.3f s" % (time.monotonic() - t0))
answers = {t.get() for t in greenline.joinall(tasks, raise_error=True)}
print("40 lookups", sorted(answers), "in %.3f s" % (time.monotonic() - start))
dns.kill()
"""


def test_real_dns_through_the_c_resolver_in_a_namespace_of_our_own(tmp_path):
    """The real path end to end: glibc's resolver asking a slow DNS server
    (1 s per answer) on a loopback of our own (a user + network + mount
    namespace, with its own resolv.conf), under patch_all."""
    import shutil
    import subprocess
    import sys

    if not shutil.which("unshare") or not _hosts_file_comes_first():
        pytest.skip("needs unshare(1) and a C library that reads /etc/hosts first")
    probe = subprocess.run(["unshare", "-rnm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no user namespaces here: {probe.stderr.decode().strip()}")
    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:5 attempts:1\n")
    (tmp_path / "dns.py").write_text(SLOW_DNS_SERVER)
    (tmp_path / "client.py").write_text(SLOW_DNS_CLIENT)
    proc = subprocess.run(["unshare", "-rnm", sys.executable, str(tmp_path / "client.py"),
                           str(tmp_path / "resolv.conf"), str(tmp_path / "dns.py")],
                          capture_output=True, text=True, timeout=40)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    local, lookups = lines[0].split(), lines[1].split()
    assert local[:2] == ["localhost", "127.0.0.1"] and float(local[3]) < 0.5, lines
    assert lookups[2] == "['127.0.0.2']", lines   # every answer came from our DNS server
    assert float(lookups[4]) < 1.8, lines          # 40 lookups of 1 s each: about 1 s
