"""Pool and Group: size limit, map/imap, join, kill, errors."""

from __future__ import annotations

import gc

import pytest

import greenline
from greenline.event import Event
from greenline.pool import Group, Pool, PoolFull


def test_pool_never_exceeds_its_size():
    pool = Pool(5)
    active = 0
    peak = 0

    def job(n):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        assert len(pool) <= 5
        greenline.sleep(0.001 * (n % 3))
        active -= 1
        return n

    tasks = [pool.spawn(job, n) for n in range(100)]
    assert pool.join(timeout=10) is True
    assert peak == 5
    assert [t.value for t in tasks] == list(range(100))
    assert len(pool) == 0 and pool.free_count() == 5


def test_spawn_blocks_while_full():
    pool = Pool(1)
    gate = Event()
    first = pool.spawn(gate.wait)
    assert pool.full() and pool.free_count() == 0
    spawner = greenline.spawn(pool.spawn, lambda: "second")
    greenline.sleep(0)
    assert not spawner.dead  # waiting for a slot
    gate.set()
    second = spawner.get(timeout=5)
    assert second.get(timeout=5) == "second"
    assert first.get() is True


def test_map_imap_keep_order():
    pool = Pool(3)

    def slow_square(n):
        greenline.sleep(0.001 * (5 - n % 5))
        return n * n

    assert pool.map(slow_square, range(20)) == [n * n for n in range(20)]
    assert list(pool.imap(slow_square, range(20))) == [n * n for n in range(20)]
    assert list(pool.imap(pow, [2, 3], [3, 2])) == [8, 9]
    assert sorted(pool.imap_unordered(slow_square, range(20))) == sorted(n * n for n in range(20))
    assert pool.map(abs, []) == []


def test_imap_unordered_yields_as_finished():
    pool = Pool(10)
    out = list(pool.imap_unordered(lambda d: greenline.sleep(d) or d, [0.05, 0.01, 0.03]))
    assert out == [0.01, 0.03, 0.05]


def test_imap_raises_a_failure_in_its_turn_goes_on_after_it_and_close_stops_it():
    pool = Pool(2)
    started = []

    def job(n):
        started.append(n)
        if n == 3:
            raise KeyError(n)
        greenline.sleep(0.01)
        return n

    it = pool.imap(job, range(100))
    got = []
    with pytest.raises(KeyError):
        for value in it:
            got.append(value)
    assert got == [0, 1, 2]
    assert next(it) == 4  # as gevent's: the results after the failure follow
    it.close()
    assert pool.join(timeout=5)
    assert len(started) < 100  # the feeder was stopped


def test_map_stops_the_rest_at_a_failure():
    pool = Pool(2)
    started = []

    def job(n):
        started.append(n)
        if n == 3:
            raise KeyError(n)
        greenline.sleep(0.01)

    with pytest.raises(KeyError):
        pool.map(job, range(100))
    assert pool.join(timeout=5)
    assert len(started) < 100


def test_imap_input_error_is_raised():
    def bad_input():
        yield 1
        raise RuntimeError("input broke")

    with pytest.raises(RuntimeError, match="input broke"):
        list(Pool(2).imap(abs, bad_input()))


def test_imap_maxsize_bounds_read_ahead():
    pool = Pool(10)
    started = []

    def job(n):
        started.append(n)
        return n

    it = pool.imap(job, range(50), maxsize=2)
    assert next(it) == 0
    greenline.sleep(0.01)
    assert len(started) <= 4
    assert list(it) == list(range(1, 50))


def test_dropped_imap_stops_its_tasks():
    pool = Pool(2)
    it = pool.imap(greenline.sleep, [10] * 5)
    greenline.sleep(0)
    assert len(pool) == 2
    del it
    gc.collect()
    assert pool.join(timeout=5) is True


def test_join_timeout_and_raise_error():
    pool = Pool(4)
    pool.spawn(greenline.sleep, 10)
    assert pool.join(timeout=0.01) is False
    pool.kill()
    assert len(pool) == 0

    def fail():
        greenline.sleep(0.01)
        raise ValueError("boom")

    pool.spawn(fail)
    slow = pool.spawn(greenline.sleep, 10)
    with pytest.raises(ValueError, match="boom"):
        pool.join(raise_error=True, timeout=5)
    assert not slow.dead  # raised at the failure, not after everything
    pool.kill(timeout=5)
    assert pool.join(timeout=1)


def test_kill_and_killone():
    group = Group()
    tasks = [group.spawn(greenline.sleep, 10) for _ in range(5)]
    greenline.sleep(0)
    group.killone(tasks[0])
    assert tasks[0].dead and len(group) == 4
    group.kill()
    assert all(t.dead for t in tasks) and len(group) == 0


def test_add_discard_and_poolfull():
    pool = Pool(1)
    t = greenline.Task(greenline.sleep, 10)
    pool.add(t)
    assert t in pool and len(pool) == 1 and pool.full()
    other = greenline.Task(lambda: None)
    with pytest.raises(PoolFull):
        pool.add(other, blocking=False)
    with pytest.raises(PoolFull):
        pool.add(other, timeout=0.01)
    pool.discard(t)
    assert t not in pool and pool.free_count() == 1
    pool.add(other)
    other.start()
    assert pool.join(timeout=5)
    t.kill()


def test_wait_available():
    pool = Pool(1)
    pool.spawn(greenline.sleep, 0.02)
    assert pool.free_count() == 0
    assert pool.wait_available(timeout=0.001) == 0
    assert pool.wait_available(timeout=5) == 1


def test_apply_and_async():
    pool = Pool(2)
    assert pool.apply(divmod, (7, 2)) == (3, 1)
    assert pool.apply(lambda: pool.apply(lambda: "nested")) == "nested"
    seen = []
    task = pool.apply_async(sum, ([1, 2, 3],), callback=seen.append)
    assert task.get() == 6
    greenline.sleep(0)
    assert seen == [6]
    assert pool.apply_cb(len, ("abc",), callback=seen.append) == 3 and seen[-1] == 3
    mapped = pool.map_async(str, range(3), callback=seen.append)
    assert mapped.get(timeout=5) == ["0", "1", "2"]
    greenline.sleep(0)
    assert seen[-1] == ["0", "1", "2"]


def test_group_has_no_limit():
    group = Group()
    tasks = [group.spawn(greenline.sleep, 0.01) for _ in range(200)]
    assert len(group) == 200 and not group.full()
    assert group.join(timeout=5)
    assert all(t.dead for t in tasks)


def test_invalid_sizes():
    with pytest.raises(ValueError):
        Pool(0)
    with pytest.raises(ValueError):
        Pool(-1)
    assert Pool(None).free_count() == 1


def test_failed_task_leaves_the_pool_and_frees_its_slot():
    pool = Pool(1)
    t = pool.spawn(lambda: 1 / 0)
    t.join()
    assert len(pool) == 0 and pool.free_count() == 1
    assert pool.spawn(lambda: "ok").get() == "ok"
