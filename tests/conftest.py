"""Shared fixtures: every test starts with a fresh hub, and none leaves green
threads behind for the next one."""

from __future__ import annotations

import os
import sys

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
