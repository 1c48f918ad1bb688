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


def test_a_cpu_hog_is_reported_with_its_stack(detector, caplog):
    caplog.set_level(logging.WARNING, logger="greenline.watchdog")
    t = greenline.spawn(cpu_hog_for_the_test, 0.3)
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
