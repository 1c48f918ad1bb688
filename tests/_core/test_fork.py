"""Fork safety: os.fork with a busy hub, fork from a green thread,
multiprocessing and subprocess, with and without monkey-patching.

Each program runs in a fresh interpreter (a script in tmp_path): a fork in
the test process itself would copy pytest.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PATCH = "from greenline import monkey; monkey.patch_all()\n"


def run(tmp_path: Path, code: str, *args: str, patch: bool = True,
        timeout: float = 50) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "prog.py"
    script.write_text((PATCH if patch else "") + textwrap.dedent(code))
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path)


def ok(proc: subprocess.CompletedProcess[str]) -> list[str]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


BUSY_HUB_FORK = """
import os, sys
import greenline
from greenline import socket as gsocket

pairs = [gsocket.socketpair() for _ in range(50)]
got = []

def sleeper(i):
    greenline.sleep(0.2 + i * 0.001)
    got.append(("slept", i))

def reader(i, a):
    got.append(("read", i, a.recv(10)))

tasks = [greenline.spawn(sleeper, i) for i in range(50)]
tasks += [greenline.spawn(reader, i, a) for i, (a, b) in enumerate(pairs)]
greenline.sleep(0.01)          # all 100 are parked: mid-sleep and mid-recv
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    report = []
    try:
        # None of the parent's green threads exist here.
        results = []
        def child_job(n):
            greenline.sleep(0.01)
            results.append(n)
        greenline.joinall([greenline.spawn(child_job, n) for n in range(20)])
        report.append(f"spawned {len(results)}")
        a, b = gsocket.socketpair()
        greenline.spawn(b.sendall, b"ping")
        report.append(f"socket {a.recv(4).decode()}")
        # A parent's socket still works here, as a plain descriptor.
        pairs[0][1].sendall(b"c")
        report.append(f"inherited {pairs[0][0].recv(1).decode()}")
        greenline.sleep(0.3)   # past every parent sleeper's deadline
        report.append(f"parent threads ran here: {len(got)}")
        if PATCHED:
            import threading, time, subprocess
            t = threading.Thread(target=time.sleep, args=(0.01,))
            t.start(); t.join()
            report.append(f"thread joined {not t.is_alive()}")
            out = subprocess.run(["echo", "sub"], capture_output=True).stdout.decode().strip()
            report.append(f"subprocess {out}")
        os.write(w, ("\\n".join(report) + "\\n").encode())
    except BaseException:
        import traceback
        os.write(w, traceback.format_exc().encode())
        os._exit(3)
    os._exit(0)
os.close(w)
for i, (a, b) in enumerate(pairs):
    b.sendall(b"x%d" % i)
greenline.joinall(tasks)
_, status = os.waitpid(pid, 0)
child_out = b""
while chunk := os.read(r, 65536):
    child_out += chunk
print(child_out.decode(), end="")
print("child exit", os.waitstatus_to_exitcode(status))
print("parent", sum(1 for g in got if g[0] == "slept"), sum(1 for g in got if g[0] == "read"))
print("parent reads intact", sorted(g[2] for g in got if g[0] == "read") == sorted(b"x%d" % i for i in range(50)))
"""


@pytest.mark.parametrize("patched", [False, True], ids=["plain", "patch_all"])
def test_fork_with_a_busy_hub(tmp_path, patched):
    code = f"PATCHED = {patched}\n" + BUSY_HUB_FORK
    out = ok(run(tmp_path, code, patch=patched))
    expected = ["spawned 20", "socket ping", "inherited c", "parent threads ran here: 0"]
    if patched:
        expected += ["thread joined True", "subprocess sub"]
    assert out == expected + ["child exit 0", "parent 50 50", "parent reads intact True"]


@pytest.mark.parametrize("patched", [False, True], ids=["plain", "patch_all"])
def test_fork_from_a_green_thread_keeps_only_that_green_thread(tmp_path, patched):
    out = ok(run(tmp_path, """
        import os, greenline
        marks = []
        def noisy():
            while True:
                greenline.sleep(0.005)
                marks.append(1)
        greenline.spawn(noisy)
        r, w = os.pipe()
        def forker():
            pid = os.fork()
            if pid == 0:
                before = len(marks)
                greenline.sleep(0.1)
                os.write(w, b"noisy ran in child: %d\\n" % (len(marks) - before))
                return "child's forker returns"   # ends the child, status 0
            return pid
        pid = greenline.spawn(forker).get()
        os.close(w)
        _, status = os.waitpid(pid, 0)
        print(os.read(r, 100).decode().strip())
        print("child exit", os.waitstatus_to_exitcode(status))
        before = len(marks); greenline.sleep(0.05); print("noisy runs in parent", len(marks) > before)
    """, patch=patched))
    assert out == ["noisy ran in child: 0", "child exit 0", "noisy runs in parent True"]


def test_child_forked_from_main_waits_for_its_threads_at_exit(tmp_path):
    out = ok(run(tmp_path, """
        import os, sys, threading, time
        pid = os.fork()
        if pid == 0:
            def late():
                time.sleep(0.1)
                print("child thread done", flush=True)
            threading.Thread(target=late).start()
            print("child main done", flush=True)
            sys.exit(4)
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status))
    """))
    assert out == ["child main done", "child thread done", "child exit 4"]


def test_threading_state_in_a_child_forked_from_a_green_thread(tmp_path):
    out = ok(run(tmp_path, """
        import os, threading, time
        r, w = os.pipe()
        def forker():
            pid = os.fork()
            if pid == 0:
                me = threading.current_thread()
                t = threading.Thread(target=time.sleep, args=(0.01,)); t.start(); t.join()
                os.write(w, f"{me.name} {me is threading.main_thread()} {t.is_alive()} "
                            f"{threading.active_count()}".encode())
                os._exit(0)
            os.waitpid(pid, 0)
        t = threading.Thread(target=forker, name="forker"); t.start(); t.join()
        os.close(w)
        print(os.read(r, 200).decode())
    """))
    assert out == ["forker True False 1"]


# -- multiprocessing -----------------------------------------------------------------------

MP_PROGRAM = """
import multiprocessing as mp, os, sys, threading, time

def work(q, n):
    time.sleep(0.05)
    q.put((n * 2, os.getpid() != PARENT))

def fail():
    raise SystemExit(3)

PARENT = int(os.environ.get("PARENT_PID", "0"))

if __name__ == "__main__":
    os.environ["PARENT_PID"] = str(os.getpid())
    PARENT = os.getpid()
    ctx = mp.get_context(sys.argv[1])
    ticks = []
    stop = threading.Event()
    def ticker():
        while not stop.is_set():
            time.sleep(0.01)
            ticks.append(1)
    threading.Thread(target=ticker).start()
    q = ctx.Queue()
    procs = [ctx.Process(target=work, args=(q, n)) for n in range(3)]
    for p in procs:
        p.start()
    results = sorted(q.get(timeout=30) for _ in procs)
    for p in procs:
        p.join()
    print("results", results)
    print("exitcodes", [p.exitcode for p in procs])
    p = ctx.Process(target=fail); p.start(); p.join(); print("failing exitcode", p.exitcode)
    p = ctx.Process(target=time.sleep, args=(0.3,)); p.start()
    before = len(ticks)
    p.join()
    print("ticked during join", len(ticks) - before >= 5)
    p = ctx.Process(target=time.sleep, args=(5,)); p.start()
    p.join(0.05); print("alive after join(timeout)", p.is_alive())
    p.terminate(); p.join(); print("terminated", p.exitcode)
    stop.set()
"""


@pytest.mark.parametrize("method", [
    "fork",
    pytest.param("spawn", marks=pytest.mark.slow),
    pytest.param("forkserver", marks=pytest.mark.slow),
])
def test_multiprocessing_process_under_patch_all(tmp_path, method):
    out = ok(run(tmp_path, MP_PROGRAM, method))
    assert out == [
        "results [(0, True), (2, True), (4, True)]",
        "exitcodes [0, 0, 0]",
        "failing exitcode 3",
        "ticked during join True",
        "alive after join(timeout) True",
        "terminated -15",
    ]


@pytest.mark.parametrize("method", [
    "fork",
    pytest.param("spawn", marks=pytest.mark.slow),
    pytest.param("forkserver", marks=pytest.mark.slow),
])
def test_multiprocessing_pool_under_patch_all(tmp_path, method):
    # gevent's tracker: Pool hangs once threads are patched (its handler
    # threads block the hub in pipe reads and semaphore waits).
    out = ok(run(tmp_path, """
        import multiprocessing as mp, sys, concurrent.futures as cf
        def square(x):
            return x * x
        if __name__ == "__main__":
            ctx = mp.get_context(sys.argv[1])
            with ctx.Pool(2) as pool:
                print(pool.map(square, range(10)))
                print(pool.apply_async(square, (7,)).get(timeout=30))
            with cf.ProcessPoolExecutor(2, mp_context=ctx) as ex:
                print(list(ex.map(square, range(4))))
    """, method))
    assert out == ["[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]", "49", "[0, 1, 4, 9]"]


def test_process_join_after_a_subprocess_is_prompt(tmp_path):
    # gevent#600: after a Popen, Process.join waited for its whole timeout.
    out = ok(run(tmp_path, """
        import multiprocessing as mp, subprocess, time
        if __name__ == "__main__":
            print(subprocess.run(["echo", "hi"], capture_output=True).stdout)
            p = mp.get_context("fork").Process(target=time.sleep, args=(0.1,))
            p.start()
            t0 = time.monotonic()
            p.join(20)
            print(p.exitcode, time.monotonic() - t0 < 10)
    """))
    assert out == ["b'hi\\n'", "0 True"]


def test_is_alive_loop_ends_once_the_process_is_killed(tmp_path):
    # gevent#914: `while p.is_alive(): os.kill(...)` spun forever.
    out = ok(run(tmp_path, """
        import multiprocessing as mp, os, time
        if __name__ == "__main__":
            p = mp.get_context("fork").Process(target=time.sleep, args=(30,))
            p.start()
            n = 0
            while p.is_alive():
                os.kill(p.pid, 9)
                n += 1
                time.sleep(0.001)
            print("dead", p.exitcode)
    """))
    assert out == ["dead -9"]


def test_fork_hook_using_the_thread_pool_in_the_child(tmp_path):
    # gevent#2023: a fork hook that used the thread pool hung the child.
    out = ok(run(tmp_path, """
        import os, subprocess, time, greenline
        def hook():
            greenline.to_thread(lambda: None)
            os.write(1, b"hook ran in child\\n")
        os.register_at_fork(after_in_child=hook)
        pid = os.fork()
        if pid == 0:
            time.sleep(0.01)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        r = subprocess.run(["echo", "ended"], capture_output=True)
        print(os.waitstatus_to_exitcode(status), r.stdout.decode().strip())
    """))
    assert out == ["hook ran in child", "0 ended"]


# -- subprocess ----------------------------------------------------------------------------


@pytest.mark.parametrize("patched", [False, True], ids=["greenline.subprocess", "patch_all"])
def test_subprocess_while_other_green_threads_tick(tmp_path, patched):
    out = ok(run(tmp_path, f"""
        import greenline
        import {'subprocess' if patched else 'greenline.subprocess as subprocess'}
        ticks = []
        def ticker():
            while True:
                greenline.sleep(0.02)
                ticks.append(1)
        t = greenline.spawn(ticker)
        r = subprocess.run(["echo", "a", "b"], capture_output=True)
        print(r.returncode, r.stdout)
        p = subprocess.Popen(["sh", "-c", "sleep 0.5; echo done"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        before = len(ticks)
        print(p.communicate(timeout=20), p.returncode)
        print("ticked", len(ticks) - before >= 5)
        t.kill()
    """, patch=patched))
    assert out == ["0 b'a b\\n'", "(b'done\\n', b'') 0", "ticked True"]


def test_many_concurrent_subprocesses(tmp_path):
    out = ok(run(tmp_path, """
        import subprocess, threading
        outs = []
        def one(n):
            outs.append(subprocess.run(["sh", "-c", f"sleep 0.1; echo {n}"],
                                       capture_output=True, text=True).stdout.strip())
        ts = [threading.Thread(target=one, args=(n,)) for n in range(20)]
        [t.start() for t in ts]; [t.join() for t in ts]
        print(sorted(map(int, outs)) == list(range(20)))
    """))
    assert out == ["True"]


def test_wait_is_shared_by_several_green_threads(tmp_path):
    out = ok(run(tmp_path, """
        import subprocess, threading
        p = subprocess.Popen(["sh", "-c", "sleep 0.2; exit 6"])
        codes = []
        ts = [threading.Thread(target=lambda: codes.append(p.wait())) for _ in range(5)]
        [t.start() for t in ts]; [t.join() for t in ts]
        print(codes)
        p = subprocess.Popen(["sleep", "5"])
        try:
            p.wait(timeout=0.05)
        except subprocess.TimeoutExpired as e:
            print("TimeoutExpired", e.timeout)
        p.kill()
        print(p.wait())
    """))
    assert out == ["[6, 6, 6, 6, 6]", "TimeoutExpired 0.05", "-9"]


# -- more cases from gevent's tracker -------------------------------------------------------

STRANGERS = """
import os, tempfile, time, subprocess
import greenline
fd, path = tempfile.mkstemp()
os.close(fd)
out = os.open(path, os.O_WRONLY | os.O_APPEND)
parent = os.getpid()
stop = []
def worker():
    while not stop:
        os.write(out, b"%d\\n" % os.getpid())
        greenline.sleep(0.001)
workers = [greenline.spawn(worker) for _ in range(4)]
greenline.sleep(0.02)
"""

STRANGERS_END = """
stop.append(1)
greenline.joinall(workers)
os.close(out)
with open(path) as f:
    strangers = {int(line) for line in f} - {parent}
os.unlink(path)
print("children that ran the parent's green threads:", len(strangers))
"""


@pytest.mark.parametrize("patched", [False, True], ids=["plain", "patch_all"])
def test_a_fork_hook_that_yields_does_not_run_the_parents_green_threads(tmp_path, patched):
    # gevent#2202: an at-fork hook that yields let the child run copies of
    # the parent's greenlets.
    out = ok(run(tmp_path, STRANGERS + """
os.register_at_fork(after_in_child=lambda: greenline.sleep(0))
for _ in range(5):
    pid = os.fork()
    if pid == 0:
        greenline.sleep(0.01)
        os._exit(0)
    os.waitpid(pid, 0)
""" + STRANGERS_END, patch=patched))
    assert out == ["children that ran the parent's green threads: 0"]


def test_preexec_fn_that_blocks_under_patch_all(tmp_path):
    # gevent#2196: preexec_fn runs in the forked child before exec; if it
    # blocks it must not resume the parent's green threads there.
    out = ok(run(tmp_path, STRANGERS + """
def pre():
    time.sleep(0.01)      # patched: parks in the child's own fresh hub
codes = [subprocess.Popen(["true"], preexec_fn=pre).wait() for _ in range(3)]
print("codes", codes)
""" + STRANGERS_END))
    assert out == ["codes [0, 0, 0]", "children that ran the parent's green threads: 0"]


def test_thread_pool_used_before_fork_works_in_the_child(tmp_path):
    # gevent#154: the child hung on a name lookup because it reused the
    # parent's thread pool (whose threads do not exist after fork).
    out = ok(run(tmp_path, """
        import os, socket, greenline
        print(socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)[0][4][1])
        greenline.to_thread(sum, [1, 2])
        pid = os.fork()
        if pid == 0:
            ok = socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)[0][4][1] == 80
            ok = ok and greenline.to_thread(sum, [1, 2]) == 3
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
    """))
    assert out == ["80", "child 0"]


@pytest.mark.parametrize("method", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])
def test_multiprocessing_event_wait_is_cooperative(tmp_path, method):
    # gevent#2017: multiprocessing.Event().wait() hung the patched process.
    out = ok(run(tmp_path, """
        import multiprocessing as mp, sys, threading, time
        def setter(ev):
            time.sleep(0.3)
            ev.set()
        if __name__ == "__main__":
            ctx = mp.get_context(sys.argv[1])
            ev = ctx.Event()
            ticks = []
            stop = threading.Event()
            def ticker():
                while not stop.is_set():
                    time.sleep(0.01)
                    ticks.append(1)
            threading.Thread(target=ticker).start()
            p = ctx.Process(target=setter, args=(ev,))
            p.start()
            before = len(ticks)
            print(ev.wait(20), len(ticks) - before >= 5, ev.wait(0.01))
            p.join()
            stop.set()
            with ctx.Manager() as manager:
                d = manager.dict(a=1)
                print(dict(d))
    """, method))
    assert out == ["True True True", "{'a': 1}"]


def test_interrupt_main_in_a_forked_child_reaches_the_childs_main(tmp_path):
    out = ok(run(tmp_path, """
        import os, _thread, threading, time
        pid = os.fork()
        if pid == 0:
            threading.Timer(0.02, _thread.interrupt_main).start()
            try:
                time.sleep(5)
            except KeyboardInterrupt:
                os._exit(7)
            os._exit(1)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
    """))
    assert out == ["7"]
