"""greenline.monkey.green_thread: the green ``_thread`` (used directly, without patching)."""

from __future__ import annotations

import signal
import sys

import pytest

import greenline
from greenline.local import local
from greenline.monkey import green_thread as thread


def _run_pending():
    # Let every green thread that is ready run to its next blocking point.
    for _ in range(5):
        greenline.sleep(0)


def test_start_new_thread_runs_with_args_and_kwargs_and_returns_its_ident():
    seen = []

    def f(a, b, *, c):
        seen.append((a, b, c, thread.get_ident()))

    ident = thread.start_new_thread(f, (1, 2), {"c": 3})
    assert seen == []  # started, not run yet: the caller did not block
    _run_pending()
    assert seen == [(1, 2, 3, ident)]
    assert ident != thread.get_ident()


def test_idents_are_distinct_and_stable_per_green_thread():
    idents = []

    def f():
        first = thread.get_ident()
        greenline.sleep(0.001)
        idents.append((first, thread.get_ident()))

    for _ in range(10):
        thread.start_new_thread(f, ())
    greenline.sleep(0.05)
    assert len(idents) == 10
    assert all(a == b for a, b in idents)
    assert len({a for a, _ in idents}) == 10
    assert thread.get_ident() == thread.get_ident()


def test_argument_errors_match_the_stdlib():
    with pytest.raises(TypeError):
        thread.start_new_thread(print, [1])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        thread.start_new_thread(print, (), [])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        thread.start_new_thread(42, ())  # type: ignore[arg-type]


def test_an_uncaught_exception_goes_to_unraisablehook_and_systemexit_is_quiet(monkeypatch):
    reports = []
    monkeypatch.setattr(sys, "unraisablehook", reports.append)

    def boom():
        raise ValueError("boom")

    def leave():
        thread.exit()

    thread.start_new_thread(boom, ())
    thread.start_new_thread(leave, ())
    _run_pending()
    assert len(reports) == 1
    assert reports[0].exc_type is ValueError
    # As the C implementation reports it (the hook prints "...: <function>").
    assert reports[0].object is boom
    assert reports[0].err_msg == "Exception ignored in thread started by"


def test_count_tracks_running_green_threads():
    from greenline.event import Event

    base = thread._count()
    gate = Event()
    for _ in range(5):
        thread.start_new_thread(gate.wait, ())
    _run_pending()
    assert thread._count() == base + 5
    gate.set()
    _run_pending()
    assert thread._count() == base


def test_allocate_lock_is_green_and_follows_the_stdlib_protocol():
    lock = thread.allocate_lock()
    assert isinstance(lock, thread.LockType)
    assert lock.acquire()
    assert not lock.acquire(False)
    assert not lock.acquire(True, 0.02)
    order = []

    def other():
        with lock:
            order.append("other")

    thread.start_new_thread(other, ())
    greenline.sleep(0.01)
    order.append("main releases")
    lock.release()
    greenline.sleep(0.01)
    assert order == ["main releases", "other"]
    assert not lock.locked()


def test_sentinel_lock_is_released_when_the_green_thread_ends():
    from greenline.event import Event

    got = []
    gate = Event()

    def f():
        lock = thread._set_sentinel()
        lock.acquire()
        got.append(lock)
        gate.wait()

    thread.start_new_thread(f, ())
    _run_pending()
    (lock,) = got
    assert lock.locked()
    assert not lock.acquire(True, 0.02)
    gate.set()
    assert lock.acquire(True, 1)


def test_stack_size_is_validated_and_remembered():
    old = thread.stack_size()
    with pytest.raises(ValueError):
        thread.stack_size(100)
    thread.stack_size(1 << 20)
    assert thread.stack_size(old) == 1 << 20


def test_interrupt_main_raises_keyboardinterrupt_in_the_main_green_thread():
    greenline.spawn_later(0.02, thread.interrupt_main)
    with pytest.raises(KeyboardInterrupt):
        greenline.sleep(5)


def test_interrupt_main_runs_a_custom_handler():
    calls = []
    old = signal.signal(signal.SIGUSR1, lambda *a: calls.append(a[0]))
    try:
        thread.interrupt_main(signal.SIGUSR1)
        for _ in range(100):
            if calls:
                break
            greenline.sleep(0.001)
        assert calls == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_local_is_per_green_thread():
    assert thread._local is local
    data = thread._local()
    data.x = "main"
    seen = []

    def f(n):
        data.x = n
        greenline.sleep(0.001)
        seen.append(data.x)

    for n in range(3):
        thread.start_new_thread(f, (n,))
    greenline.sleep(0.05)
    assert sorted(seen) == [0, 1, 2]
    assert data.x == "main"


def test_joinable_threads_and_their_handles():
    from greenline.event import Event

    gate = Event()
    seen = []

    def f():
        seen.append(thread.get_ident())
        gate.wait()

    handle = thread.start_joinable_thread(f, daemon=False)
    assert isinstance(handle, thread._ThreadHandle)
    _run_pending()
    assert seen == [handle.ident]
    assert not handle.is_done()
    handle.join(0.02)  # times out quietly, as the stdlib's does
    assert not handle.is_done()
    with pytest.raises(RuntimeError):
        thread.start_joinable_thread(f, handle=handle)
    greenline.spawn_later(0.02, gate.set)
    thread._shutdown()  # waits for the non-daemon thread
    assert handle.is_done()
    handle.join()


def test_a_thread_cannot_join_its_own_handle():
    errors = []
    box = []

    def f():
        try:
            box[0].join()
        except RuntimeError as e:
            errors.append(str(e))

    box.append(thread.start_joinable_thread(f))
    box[0].join(1)
    assert errors == ["Cannot join current thread"]
    main_handle = thread._make_thread_handle(thread._get_main_thread_ident())
    assert main_handle.ident == thread.get_ident() and not main_handle.is_done()


def test_interrupt_main_from_the_main_green_thread_raises_at_once():
    with pytest.raises(KeyboardInterrupt):
        thread.interrupt_main()
        for _ in range(1000):  # the next bytecodes, no blocking point
            pass
    greenline.sleep(0.01)  # nothing was left pending for later
