"""The blocking detector and greenline.stats()."""

from __future__ import annotations

import logging
import time

import pytest

import greenline
from greenline._core import watchdog


@pytest.fixture
def detector():
    watchdog.enable(50)
    yield
    watchdog.disable()


def cpu_hog_for_the_test(seconds):
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:  # never yields
        n += 1
    return n


def cpu_hog_for_the_test_until_reported(records, at_most, then=0.3):
    # Stall until the detector speaks (at most ``at_most`` seconds: on a
    # busy machine its thread may be scheduled late), then stall as long
    # again, so that a second warning for the same stall would show.
    deadline = time.monotonic() + at_most
    reported = False
    while time.monotonic() < deadline:  # never yields
        if not reported and any(r.name == "greenline.watchdog" for r in records):
            reported = True
            deadline = time.monotonic() + then


def test_a_cpu_hog_is_reported_with_its_stack(detector, caplog):
    caplog.set_level(logging.WARNING, logger="greenline.watchdog")
    t = greenline.spawn(cpu_hog_for_the_test_until_reported, caplog.records, 5)
    t.join()
    greenline.sleep(0.05)
    warnings = [r.getMessage() for r in caplog.records if r.name == "greenline.watchdog"]
    assert len(warnings) == 1, warnings  # one warning per stall
    assert "without yielding" in warnings[0]
    assert "cpu_hog_for_the_test" in warnings[0]  # the stack names the hog


def test_green_threads_that_yield_are_not_reported(detector, caplog):
    caplog.set_level(logging.WARNING, logger="greenline.watchdog")

    def polite():
        for _ in range(20):
            greenline.sleep(0.01)

    greenline.joinall([greenline.spawn(polite) for _ in range(50)])
    assert not [r for r in caplog.records if r.name == "greenline.watchdog"]


def test_enable_rejects_a_nonsense_threshold():
    with pytest.raises(ValueError):
        watchdog.enable(0)


def test_stats_count_live_tasks_switches_and_lag():
    greenline.stats(reset=True)
    tasks = [greenline.spawn(greenline.sleep, 0.05) for _ in range(10)]
    greenline.sleep(0)
    s = greenline.stats()
    assert s["live"] == 10
    assert s["parked"] >= 10
    assert s["timers"] >= 10
    greenline.joinall(tasks)
    greenline.spawn(cpu_hog_for_the_test, 0.05).join()
    s = greenline.stats(reset=True)
    assert s["live"] == 0
    assert s["switches"] >= 20
    assert s["max_lag_ms"] >= 45  # the hog kept the hub away from polling
    assert greenline.stats()["max_lag_ms"] < 45  # reset


def test_a_thread_back_in_plain_code_with_nothing_waiting_is_not_reported(detector, caplog):
    import threading

    caplog.set_level(logging.WARNING, logger="greenline.watchdog")

    def worker():
        greenline.sleep(0.01)  # this thread now has a hub
        time.sleep(0.3)  # then plain blocking code, with no green thread waiting

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert not [r for r in caplog.records if r.name == "greenline.watchdog"]


# -- after fork, and in `greenline serve` workers (issue 15, item 1) ------------

FORKED_HOG = """
import logging, os, sys, time
logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
import greenline

class Heard(logging.Handler):
    said = False
    def emit(self, record):
        Heard.said = True

# On the root logger, after the stderr handler: the hog stops once the
# warning is written, not while the detector's thread is still writing it
# (without a GIL the two run at once, and the child's os._exit would cut
# the warning off).
logging.getLogger().addHandler(Heard())

def hog_in_the_child():
    # Stall until the detector speaks (at most 5 s: on a loaded machine its
    # thread may be scheduled late), never yielding.
    deadline = time.monotonic() + 5
    while not Heard.said and time.monotonic() < deadline:
        pass

pid = os.fork()
if pid == 0:
    sleeper = greenline.spawn(greenline.sleep, 1.0)   # waits on a timer: held up
    greenline.sleep(0)
    greenline.spawn(hog_in_the_child).join()
    sleeper.kill()
    sys.stderr.flush()
    os._exit(0)
_, status = os.waitpid(pid, 0)
print("child exit", os.waitstatus_to_exitcode(status))
"""


def _run_script(tmp_path, code, env_extra, timeout=30):
    import os
    import subprocess
    import sys

    script = tmp_path / "prog.py"
    script.write_text(code)
    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path, env=env)


def test_the_detector_reports_a_hog_in_a_forked_child(tmp_path):
    proc = _run_script(tmp_path, FORKED_HOG, {"GREENLINE_BLOCK_WARN_MS": "100"})
    assert proc.stdout.strip() == "child exit 0", proc.stdout + proc.stderr
    assert "without yielding" in proc.stderr, proc.stderr
    assert "hog_in_the_child" in proc.stderr


def test_a_detector_turned_off_before_fork_stays_off_in_the_child(tmp_path):
    code = FORKED_HOG.replace("import greenline\n", "import greenline\ngreenline.watchdog.disable()\n")
    code = code.replace("time.monotonic() + 5", "time.monotonic() + 0.4")  # it would never speak
    proc = _run_script(tmp_path, code, {"GREENLINE_BLOCK_WARN_MS": "100"})
    assert proc.stdout.strip() == "child exit 0", proc.stdout + proc.stderr
    assert "without yielding" not in proc.stderr, proc.stderr


HOG_APP = """
import logging, time

class Heard(logging.Handler):
    said = False
    def emit(self, record):
        Heard.said = True

logging.getLogger("greenline.watchdog").addHandler(Heard())

def handle(sock, address):
    sock.recv(100)
    # The real time.sleep (no --monkey-patch): the hub stops, until the
    # detector has spoken (at most 5 s).
    deadline = time.monotonic() + 5
    while not Heard.said and time.monotonic() < deadline:
        time.sleep(0.05)
    sock.sendall(b"done")
"""


def test_the_detector_reports_a_hog_inside_a_serve_worker(tmp_path):
    import os
    import select
    import socket as stdsocket
    import subprocess
    import sys

    (tmp_path / "hogapp.py").write_text(HOG_APP)
    log_path = tmp_path / "serve.log"
    env = dict(os.environ, GREENLINE_BLOCK_WARN_MS="100", PYTHONPATH=str(tmp_path))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "greenline", "serve", "hogapp:handle",
                                 "--port", "0", "--procs", "1"],
                                stdout=subprocess.PIPE, stderr=log, env=env, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        line = proc.stdout.readline().decode() if ready else ""
        assert line.startswith("listening on 127.0.0.1:"), line + log_path.read_text()
        port = int(line.rsplit(":", 1)[1])
        with stdsocket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b"go")
            assert c.recv(100) == b"done"
        # The warning is written (logging flushes each record) before the
        # handler stops sleeping, so before the reply: it is in the log now.
        logs = log_path.read_text()
        assert "without yielding" in logs, logs
        assert "hogapp.py" in logs  # the stack names the app's line
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


def test_turning_the_detector_off_and_on_again_leaves_exactly_one_watcher(caplog):
    # disable() then enable() at once, while the old watcher sits in its
    # timed wait: the old one must go and the new one must stay.  (Before,
    # both could stay, and every stall was reported twice; or the old one
    # could take the new one's stop signal with it, and nothing was reported.)
    caplog.set_level(logging.WARNING, logger="greenline.watchdog")
    counts = []
    try:
        for _ in range(15):
            watchdog.enable(20)
            time.sleep(0.006)  # the watcher starts and parks in its wait
            watchdog.disable()
            watchdog.enable(20)
            caplog.clear()
            greenline.spawn(cpu_hog_for_the_test_until_reported, caplog.records, 5, 0.1).join()
            counts.append(sum(r.name == "greenline.watchdog" for r in caplog.records))
    finally:
        watchdog.disable()
    assert counts == [1] * 15, counts
