"""Shared fixtures: every test starts with a fresh hub, and none leaves green
threads behind for the next one."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import pytest
from greenlet import GreenletExit

from greenline._core import hub as _hub


def _open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")} if os.path.isdir("/proc/self/fd") else set()


@pytest.fixture(autouse=True)
def fresh_hub():
    """Give each test its own hub; afterwards kill what it left running and
    close that hub, so no test can hang or disturb the next."""
    _hub.this_thread.hub = None
    yield
    hub = _hub.this_thread.hub
    if hub is None:
        return
    leftovers = [g for g in list(hub.parked) if g is not hub.main]
    for g in leftovers:
        hub.throw(g, GreenletExit)
    # Let them unwind (their finally blocks may close sockets).
    for _ in range(3):
        if not hub.ready:
            break
        try:
            _hub.sleep(0)
        except BaseException:
            break
    _hub.this_thread.hub = None
    hub.close()


# On a free-threaded build, GREENLINE_REQUIRE_GIL_OFF=1 (.ci/run sets it)
# fails the test after which the GIL is on: something it imported (a C
# extension that has not declared it can run without the GIL) turned it on
# for the rest of the run.  tests/tools import the load client, which does.
_REQUIRE_GIL_OFF = os.environ.get("GREENLINE_REQUIRE_GIL_OFF") == "1" and hasattr(sys, "_is_gil_enabled")


@pytest.fixture(autouse=_REQUIRE_GIL_OFF)
def gil_stays_off():
    if sys._is_gil_enabled():
        pytest.fail("the GIL was already on when this test began (turned on at import or collection)")
    yield
    if sys._is_gil_enabled():
        pytest.fail("the GIL is on after this test: something it imported turned it on")


@pytest.fixture
def fd_count():
    """Call the returned function to assert no descriptor leaked since the
    test began."""
    _hub.get_hub()  # the hub's own epoll and eventfd are not a leak
    before = _open_fds()

    def check() -> None:
        leaked = _open_fds() - before
        # /proc listing itself may hold one transient descriptor.
        leaked = {fd for fd in leaked if os.path.exists(f"/proc/self/fd/{fd}")}
        assert not leaked, f"descriptors leaked: {sorted(leaked)}"

    return check


# -- timing: tight bounds that a loaded machine does not break ---------------

def measure_loop_lag(delay: float = 0.02) -> float:
    """How late this hub wakes a plain sleep of ``delay`` right now (the
    worst of three): the slack a timer of the same delay may need too."""
    worst = 0.0
    for _ in range(3):
        start = time.monotonic()
        _hub.sleep(delay)
        worst = max(worst, time.monotonic() - start - delay)
    return worst


def on_time(elapsed: float, delay: float, lag: float) -> bool:
    """Whether something due after ``delay`` happened on time: never early;
    late by at most the loop's measured lag, twice over, plus half the delay
    or 10 ms, whichever is more (a process descheduled for one time slice
    on two shared cores is 5-10 ms late whatever the lag measured before).
    A timer firing at four times its delay fails; at twice, it fails for
    delays of 20 ms and more when the machine is quiet."""
    return delay - 0.001 <= elapsed <= delay + 2 * lag + max(delay / 2, 0.01)


@pytest.fixture
def loop_lag() -> Callable[..., float]:
    """``loop_lag(delay=0.02)``: see :func:`measure_loop_lag`."""
    return measure_loop_lag


@pytest.fixture
def fires_on_time() -> Callable[[float, float, float], bool]:
    """``fires_on_time(elapsed, delay, lag)``: see :func:`on_time`."""
    return on_time


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, what: str = "the condition") -> None:
    """Let the hub run until ``predicate()`` is true; fail after ``timeout``
    seconds.  The way to reach a state: never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} was not reached in {timeout} s")
        _hub.sleep(0.005)


@pytest.fixture
def until() -> Callable[..., None]:
    """``until(predicate, timeout=5, what=...)``: see :func:`wait_until`."""
    return wait_until


def calls_in_a_row(call: Callable[[], object], calls: int) -> list[int]:
    """Make ``calls`` calls of ``call`` in a green thread beside another that
    counts its own turns; return how many calls ran in a row between two of
    those turns (the IO budget's fairness, seen from outside)."""
    import greenline

    passes = 0
    seen: list[int] = []  # the counter's count at each call
    done = False

    def caller() -> None:
        nonlocal done
        for _ in range(calls):
            seen.append(passes)
            call()
        done = True

    def counter() -> None:
        nonlocal passes
        while not done:
            passes += 1
            greenline.sleep(0)

    greenline.joinall([greenline.spawn(caller), greenline.spawn(counter)], raise_error=True, timeout=10)
    assert done
    return [seen.count(p) for p in sorted(set(seen))]


@pytest.fixture
def in_a_row() -> Callable[[Callable[[], object], int], list[int]]:
    """``in_a_row(call, calls)``: see :func:`calls_in_a_row`."""
    return calls_in_a_row
