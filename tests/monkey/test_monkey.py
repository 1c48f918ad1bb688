"""greenline.monkey: patch_all and ``python -m greenline.monkey``.

Every patched program runs in a fresh interpreter (a script written to
tmp_path), so patching never leaks into the test process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PRELUDE = "from greenline import monkey; monkey.patch_all()\n"


def run(tmp_path: Path, code: str, *args: str, patch: bool = True, timeout: float = 45,
        name: str = "prog.py", python_args: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    script = tmp_path / name
    script.write_text((PRELUDE if patch else "") + textwrap.dedent(code))
    return subprocess.run([sys.executable, *python_args, str(script), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=tmp_path)


def ok(proc: subprocess.CompletedProcess[str]) -> list[str]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


# -- what patch_all does -----------------------------------------------------------------


def test_patch_all_never_imports_gevent_or_eventlet(tmp_path):
    out = ok(run(tmp_path, """
        import sys
        import greenline
        greenline.monkey.patch_all()
        import socket, ssl, threading, subprocess, selectors, queue, multiprocessing
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("gevent", "eventlet"))
        print("peers:", bad)
    """, patch=False))
    assert out == ["peers: []"]


def test_patched_names_are_greenlines_and_originals_are_kept(tmp_path):
    out = ok(run(tmp_path, """
        import _thread, queue, select, selectors, socket, ssl, subprocess, threading, time, os
        import greenline.socket, greenline.ssl, greenline.select, greenline.monkey.green_thread
        import greenline.subprocess, greenline.selectors
        g = monkey.get_original
        srv = socket.create_server(("127.0.0.1", 0))
        checks = {
            "socket": socket.socket is greenline.socket.socket and g("socket", "socket").__module__ == "socket",
            # the stdlib's, on the patched class and resolver
            "create_connection": socket.create_connection is g("socket", "create_connection")
                                 and isinstance(socket.create_connection(srv.getsockname()), greenline.socket.socket),
            "SocketType": socket.SocketType is g("socket", "SocketType") and issubclass(socket.socket, socket.SocketType),
            "getaddrinfo": socket.getaddrinfo is greenline.socket.getaddrinfo,
            "ssl": ssl.SSLContext is greenline.ssl.SSLContext and ssl.SSLSocket is greenline.ssl.SSLSocket,
            "time": time.sleep is not g("time", "sleep") and g("time", "sleep").__module__ == "time",
            "select": select.select.__wrapped__ is greenline.select.select
                      and select.poll.__wrapped__ is greenline.select.poll,
            "epoll": select.epoll is greenline.select.epoll,
            "selectors": selectors.DefaultSelector is greenline.selectors.DefaultSelector,
            "thread": _thread.start_new_thread is greenline.monkey.green_thread.start_new_thread,
            "threading": threading.get_ident is greenline.monkey.green_thread.get_ident,
            "subprocess": subprocess.Popen is greenline.subprocess.Popen,
            "os": os.waitpid.__wrapped__ is greenline.subprocess.waitpid,
            "queue": queue.SimpleQueue is not g("queue", "SimpleQueue"),
        }
        print(sorted(k for k, v in checks.items() if not v))
        print(all(monkey.is_module_patched(m) for m in
                  ("socket", "ssl", "time", "select", "selectors", "thread", "threading",
                   "subprocess", "os", "queue", "signal", "multiprocessing")))
        print(monkey.is_object_patched("socket", "socket"), monkey.is_object_patched("socket", "inet_aton"))
        print(g("socket", ["socket", "inet_aton"])[1] is socket.inet_aton)
    """))
    assert out == ["[]", "True", "True False", "True"]


def test_patched_functions_stay_unbound_as_class_attributes(tmp_path):
    # C functions do not become methods when a class keeps them as
    # attributes; their replacements must not either.
    out = ok(run(tmp_path, """
        import _thread, os, select, threading, time
        class Keeps:
            sleep = time.sleep
            sel = select.select
            pol = select.poll
            lock = _thread.allocate_lock
            tlock = threading.Lock
            waitpid = os.waitpid
        k = Keeps()
        k.sleep(0)
        print(k.sel([], [], [], 0), k.pol().poll(0), k.lock().acquire(), k.tlock().locked())
        try:
            k.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            print("no children")
        try:
            type(select.poll())()
        except TypeError as e:
            print("TypeError", "cannot create" in str(e))
        # and they pickle by reference, under the stdlib's names
        import pickle
        print(pickle.loads(pickle.dumps(time.sleep)) is time.sleep, b"time" in pickle.dumps(time.sleep))
        # and serializers that refuse functions refuse them (CPython's
        # test_multiprocessing test_remote counts on it)
        import xmlrpc.client
        try:
            xmlrpc.client.dumps((time.sleep,))
        except TypeError:
            print("xmlrpc refuses", time.sleep.__module__, time.sleep.__name__)
    """))
    assert out == ["([], [], []) [] True False", "no children", "TypeError True", "True True",
                   "xmlrpc refuses time sleep"]


def test_patch_all_twice_is_harmless(tmp_path):
    out = ok(run(tmp_path, """
        import socket, threading, time, warnings
        first = (socket.socket, time.sleep, threading.Lock, monkey.get_original("time", "sleep"))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            monkey.patch_all()
            monkey.patch_all()
        second = (socket.socket, time.sleep, threading.Lock, monkey.get_original("time", "sleep"))
        print(first == second, monkey.get_original("time", "sleep").__module__)
        t = threading.Thread(target=time.sleep, args=(0.01,))
        t.start(); t.join()
        print(threading.current_thread() is threading.main_thread(), t.is_alive())
    """))
    assert out == ["True time", "True False"]


def test_selective_patching(tmp_path):
    out = ok(run(tmp_path, """
        from greenline import monkey
        monkey.patch_all(thread=False, ssl=False, subprocess=False, aggressive=True)
        import socket, threading, _thread, subprocess
        print(monkey.is_module_patched("socket"), monkey.is_module_patched("thread"),
              monkey.is_module_patched("ssl"), subprocess.Popen.__module__)
        print(_thread.get_ident() == threading.main_thread().ident)
        try:
            monkey.patch_all(bogus=True)
        except TypeError as e:
            print("TypeError", "bogus" in str(e))
    """, patch=False))
    assert out == ["True False False subprocess", "True", "TypeError True"]


# -- threading ----------------------------------------------------------------------------


def test_threads_are_green_threads(tmp_path):
    out = ok(run(tmp_path, """
        import threading, time, _thread
        import greenline
        main = threading.current_thread()
        print(main is threading.main_thread(), main.ident == threading.get_ident())
        order = []
        def worker(n):
            time.sleep(0.02 * (5 - n))
            order.append(n)
        threads = [threading.Thread(target=worker, args=(n,), name=f"w{n}") for n in range(5)]
        for t in threads:
            t.start()
        # All started: their idents are green threads of this OS thread.
        print(len({t.ident for t in threads}) == 5, {t.native_id for t in threads} == {main.native_id})
        print(threading.active_count() >= 6, sorted(t.name for t in threading.enumerate())[:2])
        for t in threads:
            t.join()
        print(order)
        # current_thread() inside a green thread is its Thread object
        seen = []
        t = threading.Thread(target=lambda: seen.append(threading.current_thread()))
        t.start(); t.join()
        print(seen == [t], t.is_alive())
        # join(timeout) on a thread that keeps running returns in time
        stop = threading.Event()
        t = threading.Thread(target=stop.wait)
        t.start()
        t.join(0.05)
        print(t.is_alive())
        stop.set(); t.join(); print(t.is_alive())
        # the real OS thread count did not grow (thread pool aside)
        print(greenline.getcurrent() is not None)
    """))
    assert out == ["True True", "True True", "True ['MainThread', 'w0']", "[4, 3, 2, 1, 0]",
                   "True False", "True", "False", "True"]


def test_threading_primitives_are_cooperative(tmp_path):
    out = ok(run(tmp_path, """
        import threading, time
        # Lock / RLock / Condition / Semaphore / Event / Barrier / Timer / local
        lock = threading.Lock(); rlock = threading.RLock()
        with rlock:
            with rlock:
                print("rlock reentrant", rlock._is_owned())
        cond = threading.Condition()
        items = []
        def consumer():
            with cond:
                cond.wait_for(lambda: items)
                items.append("consumed")
        c = threading.Thread(target=consumer); c.start()
        time.sleep(0.01)
        with cond:
            items.append("item"); cond.notify()
        c.join(); print(items)

        sem = threading.BoundedSemaphore(2); inside = []; peak = []
        def user():
            with sem:
                inside.append(1); peak.append(len(inside)); time.sleep(0.01); inside.pop()
        ts = [threading.Thread(target=user) for _ in range(6)]
        [t.start() for t in ts]; [t.join() for t in ts]
        print("peak", max(peak))

        b = threading.Barrier(3); out = []
        def party(n):
            b.wait(); out.append(n)
        ts = [threading.Thread(target=party, args=(n,)) for n in range(3)]
        [t.start() for t in ts]; [t.join() for t in ts]
        print("barrier", sorted(out))

        ev = threading.Event(); fired = []
        timer = threading.Timer(0.02, lambda: (fired.append(1), ev.set()))
        timer.start()
        print("event", ev.wait(5), fired)
        cancelled = threading.Timer(0.01, fired.append, (2,)); cancelled.start(); cancelled.cancel()
        time.sleep(0.03); print("timer", fired)

        data = threading.local(); data.v = "main"; vals = []
        def loc(n):
            data.v = n; time.sleep(0.001); vals.append(data.v)
        ts = [threading.Thread(target=loc, args=(n,)) for n in range(3)]
        [t.start() for t in ts]; [t.join() for t in ts]
        print("local", sorted(vals), data.v)
        print("lock timeout", lock.acquire(), lock.acquire(timeout=0.01))
    """))
    assert out == ["rlock reentrant True", "['item', 'consumed']", "peak 2", "barrier [0, 1, 2]",
                   "event True [1]", "timer [1]", "local [0, 1, 2] main", "lock timeout True False"]


def test_thread_pool_executor_runs_on_green_threads(tmp_path):
    out = ok(run(tmp_path, """
        import concurrent.futures as cf, threading, time
        main_native = threading.get_native_id()
        def job(n):
            time.sleep(0.01 * (5 - n))
            return n, threading.get_native_id() == main_native
        with cf.ThreadPoolExecutor(5) as ex:
            futures = [ex.submit(job, n) for n in range(5)]
            done_order = [f.result()[0] for f in cf.as_completed(futures)]
            print(sorted(f.result() for f in futures) == [(n, True) for n in range(5)])
            print(done_order)
    """))
    assert out == ["True", "[4, 3, 2, 1, 0]"]


def test_main_hub_keeps_the_real_epoll(tmp_path):
    out = ok(run(tmp_path, """
        import select
        from greenline._core.hub import get_hub
        print(type(get_hub()._poller).__module__, select.epoll.__module__)
    """))
    assert out == ["select greenline.select"]


def test_thread_exceptions_are_reported_with_green_identities(tmp_path):
    proc = run(tmp_path, """
        import sys, threading
        def boom():
            raise ValueError("in a thread")
        t = threading.Thread(target=boom, name="worker"); t.start(); t.join()
        try:
            raise KeyError("no thread")
        except KeyError:
            threading.excepthook(threading.ExceptHookArgs([*sys.exc_info(), None]))
        print(threading.get_ident())
    """)
    assert proc.returncode == 0, proc.stderr
    ident = proc.stdout.strip()
    assert "Exception in thread worker:" in proc.stderr and "ValueError: in a thread" in proc.stderr
    assert f"Exception in thread {ident}:" in proc.stderr and "KeyError: 'no thread'" in proc.stderr


def test_thread_count_under_patching(tmp_path):
    out = ok(run(tmp_path, """
        import _thread, threading, greenline._core.hub
        patched = getattr(greenline._core.hub, "_thread_count", None) is not None
        before = _thread._count()
        stop = threading.Event()
        ts = [threading.Thread(target=stop.wait) for _ in range(3)]
        [t.start() for t in ts]
        during = _thread._count()
        stop.set(); [t.join() for t in ts]
        after = _thread._count()
        print(during - before == (3 if patched else 0), after == before)
    """))
    assert out == ["True True"]


def test_interpreter_exit_waits_for_non_daemon_green_threads(tmp_path):
    proc = run(tmp_path, """
        import threading, time, sys
        def slow(n):
            time.sleep(0.1 * n)
            print("thread", n, "done", flush=True)
        for n in (1, 2):
            threading.Thread(target=slow, args=(n,)).start()
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
        print("main done", flush=True)
        sys.exit(3)
    """)
    # Waited for both non-daemon threads, not for the daemon one; kept the status.
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.splitlines() == ["main done", "thread 1 done", "thread 2 done"]
    assert proc.stderr == ""


def test_a_green_thread_joining_the_main_thread_waits_cooperatively_until_main_ends(tmp_path):
    # As with real threads: join() returns once the main thread's code is
    # done (at interpreter exit, threading._shutdown marks it finished), and
    # join(timeout) returns after the timeout while it runs.  Meanwhile the
    # main green thread and the others go on.
    proc = run(tmp_path, """
        import threading, time
        main = threading.main_thread()
        log = []
        def joiner():
            main.join(0.05)
            log.append(f"timed out, main alive: {main.is_alive()}")
            main.join()
            print("joined, main alive:", main.is_alive(), flush=True)
        t = threading.Thread(target=joiner)
        t.start()
        time.sleep(0.3)
        print(log, t.is_alive())
        try:
            main.join()
        except RuntimeError as e:
            print("RuntimeError:", e)
        print("main done", flush=True)
    """, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "['timed out, main alive: True'] True", "RuntimeError: cannot join current thread",
        "main done", "joined, main alive: False"]
    assert proc.stderr == ""


def test_main_thread_and_a_green_thread_joining_each_other_is_reported_not_hung(tmp_path):
    # Real threads would hang forever; the hub sees the deadlock.
    proc = run(tmp_path, """
        import threading
        from greenline import LoopExit
        t = threading.Thread(target=threading.main_thread().join)
        t.start()
        try:
            t.join()
        except LoopExit:
            print("LoopExit", flush=True)
    """, timeout=20)
    assert ok(proc) == ["LoopExit"]
    assert proc.stderr == ""


def test_patching_after_real_threads_started_warns(tmp_path):
    proc = run(tmp_path, """
        import threading, warnings
        stop = threading.Event()
        t = threading.Thread(target=stop.wait, name="early-bird"); t.start()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            from greenline import monkey
            monkey.patch_all()
            monkey.patch_all()
        ours = [x for x in w if x.category is monkey.MonkeyPatchWarning]
        msgs = [str(x.message) for x in ours]
        print(len(msgs), "threading" in msgs[0], "early-bird" in msgs[0])
        print(ours[0].filename.endswith("prog.py"))
        stop.set(); t.join()
        # a real thread still running at exit is waited for, as before
        threading.Thread(target=time.sleep, args=(0.1,)).start()
    """.replace("import threading, warnings", "import threading, time, warnings"), patch=False)
    assert ok(proc) == ["1 True True", "True"]
    # The real thread ended cleanly after patching (found under its own ident).
    assert proc.stderr == ""


def test_patching_after_ssl_was_used_warns(tmp_path):
    proc = run(tmp_path, """
        import ssl, warnings
        ctx = ssl.create_default_context()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            from greenline import monkey
            monkey.patch_all()
        msgs = [str(x.message) for x in w if x.category is monkey.MonkeyPatchWarning]
        print(len(msgs), "ssl" in msgs[0], "SSLContext" in msgs[0])
    """, patch=False)
    assert ok(proc) == ["1 True True"]


def test_patching_after_ssl_was_imported_copes_with_module_proxies_in_sys_modules(tmp_path):
    # Lazy-module proxies sit in sys.modules; their __dict__ need not be a
    # dict, and looking at their attributes may run code that fails.
    proc = run(tmp_path, """
        import sys, warnings
        class LazyProxy:
            @property
            def __dict__(self):
                return None
            @property
            def __class__(self):
                raise ImportError("not loaded")
            def __getattr__(self, name):
                raise ImportError("not loaded")
        sys.modules["lazy_thing"] = proxy = LazyProxy()
        # and a lazy module (importlib's), which must not be loaded by looking
        import importlib.util
        spec = importlib.util.find_spec("wave")
        spec.loader = importlib.util.LazyLoader(spec.loader)
        lazy = sys.modules["wave"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(lazy)
        import ssl, types
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            from greenline import monkey
            monkey.patch_all()
        print(ssl.SSLContext.__module__, type(lazy) is types.ModuleType)
    """, patch=False)
    assert ok(proc) == ["greenline.ssl False"]
    assert proc.stderr == ""


def test_patching_early_does_not_warn(tmp_path):
    proc = run(tmp_path, """
        import warnings
        warnings.simplefilter("error")
        import ssl   # imported, never used: nothing to warn about
        from greenline import monkey
        monkey.patch_all()
        import threading
        print(ssl.create_default_context().__class__.__module__)
    """, patch=False)
    assert ok(proc) == ["greenline.ssl"]


# -- socket, select, time, queue, ssl ------------------------------------------------------


def test_thread_per_client_echo_server_under_patch_all(tmp_path):
    out = ok(run(tmp_path, """
        import socket, threading
        srv = socket.create_server(("127.0.0.1", 0))
        def handle(conn):
            with conn:
                while data := conn.recv(1024):
                    conn.sendall(data.upper())
        def serve():
            while True:
                conn, _ = srv.accept()
                threading.Thread(target=handle, args=(conn,), daemon=True).start()
        threading.Thread(target=serve, daemon=True).start()
        replies = []
        def client(n):
            with socket.create_connection(srv.getsockname(), timeout=10) as c:
                for i in range(5):
                    msg = f"c{n}m{i}".encode()
                    c.sendall(msg)
                    replies.append(c.recv(1024) == msg.upper())
        ts = [threading.Thread(target=client, args=(n,)) for n in range(100)]
        [t.start() for t in ts]; [t.join() for t in ts]
        print(len(replies), all(replies))
        # the stdlib's create_server and getfqdn, on the patched names
        print(type(srv).__module__, isinstance(socket.getfqdn("localhost"), str))
        # a blocking-call timeout keeps the stdlib's semantics
        c = socket.create_connection(srv.getsockname())
        c.settimeout(0.05)
        try:
            c.recv(1)
        except socket.timeout as e:
            print("timeout", e)
    """))
    assert out == ["500 True", "greenline.socket True", "timeout timed out"]


def test_time_sleep_and_select_let_other_threads_run(tmp_path):
    out = ok(run(tmp_path, """
        import threading, time, select, selectors, socket
        trace = []
        def sleeper(name, d):
            for _ in range(3):
                time.sleep(d)
                trace.append(name)
        ts = [threading.Thread(target=sleeper, args=(n, d)) for n, d in (("a", 0.09), ("b", 0.15))]
        [t.start() for t in ts]; [t.join() for t in ts]
        print("".join(trace))
        a, b = socket.socketpair()
        threading.Timer(0.05, b.send, (b"x",)).start()
        ticks = []
        t = threading.Thread(target=lambda: [time.sleep(0.005) or ticks.append(1) for _ in range(5)])
        t.start()
        print(select.select([a], [], [], 5)[0] == [a], len(ticks) > 0)
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ)
        print(type(sel).__module__, len(sel.select(1)))
        try:
            time.sleep(-1)
        except ValueError as e:
            print("ValueError", e)
    """))
    assert out == ["abaabb", "True True", "greenline.selectors 1", "ValueError sleep length must be non-negative"]


def test_hubs_in_real_threads_use_the_real_epoll(tmp_path):
    # A hub made after patching (here: in a thread-pool worker) polls with
    # the kernel's epoll class saved before patching, not the cooperative
    # wrapper patch_select installs, and blocks for real there.
    out = ok(run(tmp_path, """
        import time, greenline
        def in_worker():
            import select
            from greenline._core.hub import get_hub
            hub = get_hub()
            time.sleep(0.02)   # patched: runs this worker thread's hub
            return type(hub._poller).__module__
        print(greenline.to_thread(in_worker))
    """))
    assert out == ["select"]


def test_queues_are_cooperative(tmp_path):
    out = ok(run(tmp_path, """
        import queue, threading, time
        q = queue.Queue(maxsize=1)
        def producer():
            for i in range(3):
                q.put(i)
            q.put(None)
        threading.Thread(target=producer).start()
        got = []
        while (item := q.get(timeout=5)) is not None:
            got.append(item)
        print(got, hasattr(q, "mutex"))
        try:
            q.get(timeout=0.01)
        except queue.Empty:
            print("Empty")
        lq = queue.LifoQueue(); [lq.put(i) for i in range(3)]; print([lq.get() for _ in range(3)])
        pq = queue.PriorityQueue(); [pq.put(i) for i in (2, 0, 1)]; print([pq.get() for _ in range(3)])
        sq = queue.SimpleQueue()
        threading.Timer(0.02, sq.put, ("late",)).start()
        print(sq.get(timeout=5), sq.empty(), sq.qsize())
        try:
            sq.get(timeout=0.01)
        except queue.Empty:
            print("Empty")
    """))
    assert out == ["[0, 1, 2] True", "Empty", "[2, 1, 0]", "[0, 1, 2]", "late True 0", "Empty"]


def test_queue_without_threading_uses_greenline_queues(tmp_path):
    out = ok(run(tmp_path, """
        from greenline import monkey
        monkey.patch_all(thread=False, threading=False)
        import queue, greenline
        q = queue.Queue()
        greenline.spawn_later(0.02, q.put, "x")
        print(type(q).__module__, q.get(timeout=5))
    """, patch=False))
    assert out == ["greenline.queue x"]


def test_ssl_client_and_server_under_patch_all(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    out = ok(run(tmp_path, """
        import socket, ssl, threading
        sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        sctx.load_cert_chain("server.pem")
        cctx = ssl.create_default_context(cafile="ca.pem")
        srv = socket.create_server(("127.0.0.1", 0))
        def serve():
            for _ in range(20):
                conn, _ = srv.accept()
                threading.Thread(target=handle, args=(conn,), daemon=True).start()
        def handle(conn):
            with sctx.wrap_socket(conn, server_side=True) as s:
                s.sendall(s.recv(100).upper())
        threading.Thread(target=serve, daemon=True).start()
        ok = []
        def client(n):
            with socket.create_connection(srv.getsockname()) as raw:
                with cctx.wrap_socket(raw, server_hostname="localhost") as c:
                    c.sendall(b"hi%d" % n)
                    ok.append(c.recv(100) == b"HI%d" % n)
        ts = [threading.Thread(target=client, args=(n,)) for n in range(20)]
        [t.start() for t in ts]; [t.join() for t in ts]
        print(len(ok), all(ok), type(cctx).__module__)
    """))
    assert out == ["20 True greenline.ssl"]


def test_logging_locks_become_green(tmp_path):
    out = ok(run(tmp_path, """
        import io, logging
        h = logging.StreamHandler(io.StringIO())
        logging.getLogger("t").addHandler(h)
        from greenline import monkey
        monkey.patch_all()
        import threading, time
        from greenline.lock import RLock
        print(isinstance(logging._lock, RLock), isinstance(h.lock, RLock))
        print(isinstance(logging.StreamHandler(io.StringIO()).lock, RLock))
        log = logging.getLogger("t")
        log.setLevel(logging.INFO)
        def w(n):
            for i in range(3):
                log.info("w%d-%d", n, i)
                time.sleep(0.001)
        ts = [threading.Thread(target=w, args=(n,)) for n in range(4)]
        [t.start() for t in ts]; [t.join() for t in ts]
        print(len(h.stream.getvalue().splitlines()))
    """, patch=False))
    assert out == ["True True", "True", "12"]


def test_locks_taken_by_finalizers_at_interpreter_exit_work(tmp_path):
    # Once the interpreter finalizes, greenlet refuses getcurrent(); objects
    # collected then may still take patched locks: logging's weakref callback
    # _removeHandlerRef takes its module lock, a __del__ its own RLock.
    proc = run(tmp_path, """
        import gc, io, logging, threading
        gc.disable()   # the cycles below are collected only at exit
        h = logging.StreamHandler(io.StringIO())
        h.cycle = h
        logging.getLogger("t").addHandler(h)
        logging.getLogger("t").removeHandler(h)
        del h
        class Finalized:
            def __init__(self):
                self.lock = threading.RLock()
                self.cond = threading.Condition(self.lock)
                self.cycle = self
            def __del__(self):
                with self.lock, self.lock, self.cond:
                    self.cond.notify_all()
                    print("finalized in", threading.current_thread().name,
                          threading.get_ident() == threading.main_thread().ident, flush=True)
        Finalized()
        print("main done", flush=True)
    """, timeout=20)
    assert proc.stderr == ""
    assert ok(proc) == ["main done", "finalized in MainThread True"]


def test_signal_handler_exception_interrupts_the_main_thread(tmp_path):
    # As CPython's own test_socket.test_sendall_interrupted: an alarm whose
    # handler raises interrupts a sendall blocked on a full socket.
    out = ok(run(tmp_path, """
        import signal, socket, threading, time
        a, b = socket.socketpair()
        def handler(signum, frame):
            1 / 0
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        ticks = []
        threading.Thread(target=lambda: [time.sleep(0.01) or ticks.append(1) for _ in range(5)],
                         daemon=True).start()
        try:
            a.sendall(b"x" * (10 * 1024 * 1024))
        except ZeroDivisionError:
            print("interrupted")
        # the hub survived: other green threads still run
        time.sleep(0.1)
        print(len(ticks))
        # a handler that returns normally lets the call go on
        signal.signal(signal.SIGALRM, lambda *a: None)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        a.settimeout(0.3)
        try:
            a.sendall(b"x" * (10 * 1024 * 1024))
        except socket.timeout:
            print("timed out after the alarm")
    """))
    assert out == ["interrupted", "5", "timed out after the alarm"]


def test_ctrl_c_reaches_the_main_green_thread_and_the_hub_survives(tmp_path):
    # SIGINT lands while the hub polls (sent by another process), or while
    # another green thread runs (sent by it): either way CPython raises
    # KeyboardInterrupt in the main thread, and the hub must go on.  (This is
    # CPython's test_multiprocessing test_wait_result: a child interrupts its
    # parent waiting on a multiprocessing.Condition.)
    out = ok(run(tmp_path, """
        import os, signal, threading, time, greenline
        print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        pid = os.fork()
        if pid == 0:
            time.sleep(0.1)
            os.kill(os.getppid(), signal.SIGINT)
            os._exit(0)
        try:
            time.sleep(10)
        except KeyboardInterrupt:
            print("interrupted while the hub polled")
        os.waitpid(pid, 0)
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            time.sleep(10)
        except KeyboardInterrupt:
            print("interrupted from a green thread")
        print(greenline.spawn(lambda: "hub alive").get(timeout=5))
    """))
    assert out == ["True", "interrupted while the hub polled", "interrupted from a green thread", "hub alive"]


def test_signal_handler_that_blocks_runs_in_its_own_green_thread(tmp_path):
    out = ok(run(tmp_path, """
        import os, signal, threading, time
        done = threading.Event()
        def handler(signum, frame):
            time.sleep(0.01)          # would be "the hub cannot block" in the hub
            done.set()
        signal.signal(signal.SIGUSR1, handler)
        print(signal.getsignal(signal.SIGUSR1) is handler)
        threading.Timer(0.02, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        print(done.wait(5))
    """))
    assert out == ["True", "True"]


# -- subprocess ---------------------------------------------------------------------------------


def test_subprocess_run_and_communicate(tmp_path):
    out = ok(run(tmp_path, """
        import subprocess, sys
        r = subprocess.run(["echo", "hello"], capture_output=True)
        print(r.returncode, r.stdout, r.stderr)
        print(subprocess.check_output(["sh", "-c", "echo out; echo err >&2"], stderr=subprocess.STDOUT))
        print(subprocess.run(["cat"], input="text\\n", capture_output=True, text=True).stdout.strip())
        big = b"x" * 1_000_000
        print(len(subprocess.run(["cat"], input=big, capture_output=True).stdout))
        p = subprocess.Popen(["sh", "-c", "echo early; sleep 1; echo late"], stdout=subprocess.PIPE)
        try:
            p.communicate(timeout=0.3)
        except subprocess.TimeoutExpired as e:
            print("timeout, partial", e.output)
        print(p.communicate(timeout=10), p.returncode)
        try:
            subprocess.run(["sleep", "5"], timeout=0.1)
        except subprocess.TimeoutExpired:
            print("run timeout")
        print(subprocess.call(["sh", "-c", "exit 7"]))
    """))
    assert out == ["0 b'hello\\n' b''", "b'out\\nerr\\n'", "text", "1000000",
                   "timeout, partial b'early\\n'", "(b'early\\nlate\\n', None) 0", "run timeout", "7"]


def test_run_timeout_with_a_grandchild_holding_the_pipe(tmp_path):
    # The child is killed at the timeout but a grandchild keeps stdout open:
    # run() must raise TimeoutExpired with the output so far, and closing
    # the pipes must not trip over the green thread still reading them.
    proc = run(tmp_path, """
        import subprocess, time
        try:
            subprocess.run(["sh", "-c", "sleep 3 & echo partial; sleep 3"], capture_output=True, timeout=0.3)
        except subprocess.TimeoutExpired as e:
            print("timeout", e.output)
        p = subprocess.Popen(["sh", "-c", "printf 'a\\r\\nb\\n'; echo err >&2"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        print(repr(p.communicate(timeout=10)))
        time.sleep(0.05)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["timeout b'partial\\n'", "('a\\nb\\n', 'err\\n')"]
    assert proc.stderr == ""


def test_asyncio_subprocess_under_patch_all(tmp_path):
    # asyncio drives the (green) Popen's descriptors itself and reaps the
    # child from a watcher thread (a green thread in os.waitpid).
    out = ok(run(tmp_path, """
        import asyncio
        async def main():
            p = await asyncio.create_subprocess_exec(
                "sh", "-c", "read x; echo got $x", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE)
            out, _ = await asyncio.wait_for(p.communicate(b"hello\\n"), 20)
            print(out, p.returncode)
        asyncio.run(main())
    """))
    assert out == ["b'got hello\\n' 0"]


def test_other_threads_keep_running_while_a_child_runs(tmp_path):
    out = ok(run(tmp_path, """
        import subprocess, threading, time
        ticks = []
        stop = threading.Event()
        def ticker():
            while not stop.is_set():
                time.sleep(0.02); ticks.append(1)
        threading.Thread(target=ticker).start()
        for label, fn in [
            ("wait", lambda: subprocess.Popen(["sleep", "0.5"]).wait()),
            ("run", lambda: subprocess.run(["sleep", "0.5"], capture_output=True)),
            ("check_output", lambda: subprocess.check_output(["sh", "-c", "sleep 0.5; echo x"])),
            ("readline", lambda: subprocess.Popen(["sh", "-c", "sleep 0.5; echo x"],
                                                  stdout=subprocess.PIPE).stdout.readline()),
        ]:
            before = len(ticks)
            fn()
            # 0.5 s at one tick per 20 ms: a blocked hub would give 0 or 1.
            print(label, len(ticks) - before >= 5)
        stop.set()
    """))
    assert out == ["wait True", "run True", "check_output True", "readline True"]


def test_popen_pipes_keep_blocking_mode_for_the_next_process(tmp_path):
    out = ok(run(tmp_path, """
        import subprocess, os
        p1 = subprocess.Popen(["sh", "-c", "sleep 0.2; printf 'b\\na\\n'"], stdout=subprocess.PIPE)
        p2 = subprocess.Popen(["sort"], stdin=p1.stdout, stdout=subprocess.PIPE)
        p1.stdout.close()
        print(p2.communicate(timeout=10)[0], p1.wait(), p2.returncode)
        p = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        print(os.get_blocking(p.stdin.fileno()), os.get_blocking(p.stdout.fileno()))
        p.stdin.write("line1\\n"); p.stdin.flush()
        print(repr(p.stdout.readline()))
        p.stdin.close(); print(repr(p.stdout.read()), p.wait())
    """))
    assert out == ["b'a\\nb\\n' 0 0", "True True", "'line1\\n'", "'' 0"]


def test_os_waitpid_is_cooperative(tmp_path):
    out = ok(run(tmp_path, """
        import os, threading, time
        ticks = []
        stop = threading.Event()
        threading.Thread(target=lambda: [ticks.append(1) or time.sleep(0.02)
                                         for _ in iter(stop.is_set, True)]).start()
        pid = os.fork()
        if pid == 0:
            time.sleep(0.4)
            os._exit(5)
        wpid, status = os.waitpid(pid, 0)
        stop.set()
        print(wpid == pid, os.waitstatus_to_exitcode(status), len(ticks) >= 5)
    """))
    assert out == ["True 5 True"]


def test_os_read_waits_cooperatively_on_a_blocking_pipe(tmp_path):
    # As CPython's test_thread.TestForkInThread: the main thread reads a pipe
    # that another thread will write to.
    out = ok(run(tmp_path, """
        import os, threading, time
        r, w = os.pipe()
        threading.Timer(0.05, os.write, (w, b"late")).start()
        print(os.read(r, 10))
        # ready, non-blocking and regular-file reads behave as before
        os.write(w, b"now"); print(os.read(r, 10))
        os.set_blocking(r, False)
        try:
            os.read(r, 10)
        except BlockingIOError:
            print("BlockingIOError")
        os.close(w); print(os.read(r, 10))
        with open("f.txt", "wb") as f:
            f.write(b"file")
        fd = os.open("f.txt", os.O_RDONLY); print(os.read(fd, 10)); os.close(fd)
        try:
            os.read(fd, 1)
        except OSError as e:
            print("EBADF", e.errno == 9)
        # two green threads reading one pipe both get their data
        r, w = os.pipe()
        got = []
        ts = [threading.Thread(target=lambda: got.append(os.read(r, 1))) for _ in range(2)]
        [t.start() for t in ts]
        time.sleep(0.02); os.write(w, b"ab")
        [t.join() for t in ts]
        print(sorted(got))
    """))
    assert out == ["b'late'", "b'now'", "BlockingIOError", "b''", "b'file'", "EBADF True", "[b'a', b'b']"]


def test_os_write_and_read_between_green_threads_of_one_process(tmp_path):
    # More than a pipe holds: with a real blocking write the writer would
    # stop the OS thread, and so the reader, for good.
    out = ok(run(tmp_path, """
        import os, threading
        r, w = os.pipe()
        data = bytes(range(256)) * 4096   # 1 MiB
        written = []
        t = threading.Thread(target=lambda: written.append(os.write(w, data)))
        t.start()
        got = bytearray()
        while len(got) < len(data):
            got += os.read(r, 65536)
        t.join()
        print(written == [len(data)], bytes(got) == data)
        # small writes stay single atomic writes; regular files are written at once
        print(os.write(w, b"x" * 512), os.read(r, 1024) == b"x" * 512)
        fd = os.open("big.bin", os.O_WRONLY | os.O_CREAT)
        print(os.write(fd, data) == len(data)); os.close(fd)
        # a descriptor opened the other way fails at once, as before
        for call in (lambda: os.write(r, b"z" * 100_000), lambda: os.read(w, 1)):
            try:
                call()
            except OSError as e:
                print("EBADF", e.errno == 9)
        # the reader goes away mid-write: the count written so far, then EPIPE
        os.close(r)
        try:
            os.write(w, b"y")
        except BrokenPipeError:
            print("BrokenPipeError")
    """))
    assert out == ["True True", "512 True", "True", "EBADF True", "EBADF True", "BrokenPipeError"]


# -- python -m greenline.monkey ------------------------------------------------------------------


def test_monkey_main_runs_a_script_patched(tmp_path):
    (tmp_path / "helper.py").write_text("VALUE = 'from the script dir'\n")
    script = tmp_path / "target.py"
    script.write_text(textwrap.dedent("""
        import sys, socket, threading, time
        import greenline.monkey, helper
        print(__name__, sys.argv[1:], socket.socket.__module__, helper.VALUE)
        print(greenline.monkey.is_module_patched("socket"),
              sys.modules["greenline.monkey"] is greenline.monkey,
              [m for m in sys.modules if m.endswith("monkey")])
        def late():
            time.sleep(0.1)
            print("late thread done", flush=True)
        threading.Thread(target=late).start()
        if __name__ == "__main__":
            sys.exit(int(sys.argv[1]))
    """))
    other = tmp_path / "elsewhere"
    other.mkdir()
    proc = subprocess.run([sys.executable, "-m", "greenline.monkey", str(script), "9", "--flag"],
                          capture_output=True, text=True, timeout=30, cwd=other)
    assert proc.returncode == 9, proc.stderr
    assert proc.stdout.splitlines() == [
        "__main__ ['9', '--flag'] greenline.socket from the script dir",
        "True True ['greenline.monkey']",
        "late thread done",
    ]


def test_monkey_main_runs_a_module_and_propagates_errors(tmp_path):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text("import sys, time\nprint(__name__, sys.argv[1:], time.sleep.__wrapped__.__module__)\n")
    (pkg / "fails.py").write_text("raise RuntimeError('boom')\n")
    proc = subprocess.run([sys.executable, "-m", "greenline.monkey", "--module", "mypkg", "a", "-b"],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["__main__ ['a', '-b'] greenline.monkey.stdlib"]
    proc = subprocess.run([sys.executable, "-m", "greenline.monkey", "-m", "mypkg.fails"],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 1
    assert "RuntimeError: boom" in proc.stderr


def test_monkey_main_options_and_usage(tmp_path):
    script = tmp_path / "t.py"
    script.write_text("import socket, threading, greenline.monkey as m\n"
                      "print(socket.socket.__module__, m.is_module_patched('thread'))\n")
    proc = subprocess.run([sys.executable, "-m", "greenline.monkey", "--no-socket", "--no-thread", str(script)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["socket", "False"]
    proc = subprocess.run([sys.executable, "-m", "greenline.monkey"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "usage" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "greenline.monkey", "--help"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0 and "--module" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "greenline.monkey", "--bogus", "x.py"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2 and "--bogus" in proc.stderr


def test_monkey_main_never_imports_gevent(tmp_path):
    script = tmp_path / "t.py"
    script.write_text("import sys\nprint(sorted(m for m in sys.modules if m.split('.')[0] in ('gevent', 'eventlet')))\n")
    proc = subprocess.run([sys.executable, "-m", "greenline.monkey", str(script)], capture_output=True,
                          text=True, timeout=30, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
