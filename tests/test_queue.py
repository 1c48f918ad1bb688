"""Queue, LifoQueue, PriorityQueue: blocking, timeouts, hand-off, task
accounting, stdlib exceptions, many producers and consumers, OS threads."""

from __future__ import annotations

import queue as stdlib_queue
import time
from collections import Counter

import pytest

import greenline
from greenline._core.threadpool import to_thread
from greenline.queue import Empty, Full, JoinableQueue, LifoQueue, PriorityQueue, Queue


def until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition never became true"
        greenline.sleep(0.001)


def test_exceptions_are_the_stdlibs():
    assert Empty is stdlib_queue.Empty
    assert Full is stdlib_queue.Full
    with pytest.raises(stdlib_queue.Empty):
        Queue().get_nowait()
    q = Queue(1)
    q.put(1)
    with pytest.raises(stdlib_queue.Full):
        q.put_nowait(2)


def test_fifo_basics():
    q = Queue()
    assert q.empty() and not q.full() and q.qsize() == 0 and len(q) == 0
    assert bool(q) is True  # like gevent's
    for n in range(5):
        q.put(n)
    assert q.qsize() == 5 and q.peek() == 0 and q.peek_nowait() == 0
    assert [q.get() for _ in range(5)] == list(range(5))
    assert Queue(0).maxsize == 0 and Queue(None).maxsize == 0
    assert Queue(items=[1, 2]).get() == 1


def test_lifo_and_priority():
    lq = LifoQueue()
    pq = PriorityQueue()
    for n in (3, 1, 2):
        lq.put(n)
        pq.put(n)
    assert lq.peek() == 2
    assert [lq.get() for _ in range(3)] == [2, 1, 3]
    assert pq.peek() == 1
    assert [pq.get() for _ in range(3)] == [1, 2, 3]


def test_get_timeout_raises_empty():
    q = Queue()
    start = time.monotonic()
    with pytest.raises(Empty):
        q.get(timeout=0.05)
    assert time.monotonic() - start >= 0.045
    with pytest.raises(Empty):
        q.get(block=False)
    with pytest.raises(Empty):
        q.peek(timeout=0.01)
    assert not q._getters and not q._peekers


def test_put_blocks_while_full_and_times_out():
    q = Queue(2)
    q.put(1)
    q.put(2)
    assert q.full()
    with pytest.raises(Full):
        q.put(3, timeout=0.02)
    assert not q._putters
    t = greenline.spawn(q.put, 3)
    greenline.sleep(0)
    assert not t.dead and q.putters() == 1
    assert q.get() == 1
    t.join(timeout=5)
    assert t.dead and [q.get(), q.get()] == [2, 3]


def test_getter_is_handed_the_item_no_barging():
    q = Queue()
    t = greenline.spawn(q.get)
    greenline.sleep(0)
    q.put("x")
    # Reserved for the waiting getter: a later get_nowait cannot steal it.
    with pytest.raises(Empty):
        q.get_nowait()
    assert t.get() == "x"


def test_killed_getter_passes_its_item_on():
    q = Queue()
    a = greenline.spawn(q.get)
    b = greenline.spawn(q.get)
    greenline.sleep(0)
    q.put("item")          # reserved for a
    a.kill(block=False)    # a dies before taking it
    assert b.get(timeout=5) == "item"
    assert q.empty() and q._item_reserved == 0


def test_killed_getter_with_no_one_behind_leaves_item_in_queue():
    q = Queue()
    a = greenline.spawn(q.get)
    greenline.sleep(0)
    q.put("item")
    a.kill()
    assert q.get_nowait() == "item"


def test_killed_putter_passes_its_slot_on():
    q = Queue(1)
    q.put("first")
    a = greenline.spawn(q.put, "a")
    b = greenline.spawn(q.put, "b")
    greenline.sleep(0)
    assert q.get() == "first"  # the slot is reserved for a
    a.kill(block=False)
    b.join(timeout=5)
    assert b.dead and b.successful()
    assert q.get_nowait() == "b"
    assert q.empty() and q._slot_reserved == 0


def test_task_done_and_join():
    q = JoinableQueue()
    assert q.join(timeout=0) is True
    processed = []

    def worker():
        for item in q:
            processed.append(item)
            q.task_done()

    t = greenline.spawn(worker)
    for n in range(10):
        q.put(n)
    assert q.unfinished_tasks > 0 or processed
    assert q.join(timeout=5) is True
    assert processed == list(range(10))
    q.put(StopIteration)
    t.join(timeout=5)
    assert t.dead
    with pytest.raises(ValueError):
        q.task_done()
        q.task_done()


def test_join_times_out():
    q = Queue()
    q.put(1)
    assert q.join(timeout=0.01) is False
    assert not q._joiners


def test_iteration_stops_at_stopiteration():
    q = Queue()
    for item in (1, 2, StopIteration):
        q.put(item)
    assert list(q) == [1, 2]


def test_peek_waits_for_an_item():
    q = Queue()
    t = greenline.spawn(q.peek)
    greenline.sleep(0)
    q.put("p")
    assert t.get(timeout=5) == "p"
    assert q.get_nowait() == "p"


def test_subclass_storage_hooks():
    class Reversed(Queue):
        def _init(self, maxsize):
            self.queue = []

        def _get(self):
            return self.queue.pop()

    q = Reversed()
    q.put(1)
    q.put(2)
    assert q.get() == 2


@pytest.mark.parametrize("maxsize", [0, 1, 10])
def test_100_producers_100_consumers_lose_and_duplicate_nothing(maxsize):
    q = Queue(maxsize)
    per_producer = 50
    received: list[tuple[int, int]] = []

    def producer(p):
        for i in range(per_producer):
            q.put((p, i))
            if i % 7 == 0:
                greenline.sleep(0)

    def consumer():
        for item in q:
            received.append(item)
            if len(received) % 11 == 0:
                greenline.sleep(0)

    consumers = [greenline.spawn(consumer) for _ in range(100)]
    producers = [greenline.spawn(producer, p) for p in range(100)]
    greenline.joinall(producers, raise_error=True)
    for _ in consumers:
        q.put(StopIteration)
    greenline.joinall(consumers, raise_error=True, timeout=30)
    assert all(c.dead for c in consumers)
    counts = Counter(received)
    assert len(counts) == 100 * per_producer
    assert max(counts.values()) == 1
    assert q.empty() and not q._getters and not q._putters
    # each producer's items come out in the order it put them
    for p in range(100):
        assert [i for (pp, i) in received if pp == p] == list(range(per_producer))


def test_os_thread_producer_green_consumer():
    q = Queue(5)

    def produce():
        for n in range(200):
            q.put(n)  # blocks this OS thread's own hub while full
        q.put(StopIteration)

    t = greenline.spawn(to_thread, produce)
    assert list(q) == list(range(200))
    t.get(timeout=10)


def test_green_producer_os_thread_consumer():
    q = Queue()
    t = greenline.spawn(to_thread, lambda: [q.get(timeout=10) for _ in range(3)])
    until(lambda: len(q._getters) == 1)
    for n in range(3):
        q.put(n)
    assert t.get(timeout=10) == [0, 1, 2]


def test_timeout_exception_while_putting_leaves_no_registration():
    q = Queue(1)
    q.put(0)
    with pytest.raises(greenline.Timeout):
        with greenline.Timeout(0.01):
            q.put(1)
    assert not q._putters and q.qsize() == 1
    assert q.get() == 0 and q.empty()


@pytest.mark.timeout(60)
def test_os_threads_and_green_threads_share_a_bounded_queue():
    # Producers and consumers on both sides of the OS-thread boundary: every
    # hand-off between them crosses hubs.
    q = Queue(4)
    per_producer = 300
    got: list[tuple[str, int]] = []

    def produce(name):
        for i in range(per_producer):
            q.put((name, i))
        return name

    def consume():
        mine = []
        while True:
            item = q.get()
            if item is StopIteration:
                return mine
            mine.append(item)

    os_producers = [greenline.spawn(to_thread, produce, f"os{k}") for k in range(3)]
    green_producers = [greenline.spawn(produce, f"green{k}") for k in range(2)]
    os_consumer = greenline.spawn(to_thread, consume)
    green_consumers = [greenline.spawn(consume) for _ in range(3)]
    greenline.joinall(os_producers + green_producers, timeout=30, raise_error=True)
    assert all(t.dead for t in os_producers + green_producers)
    for _ in range(4):
        q.put(StopIteration)
    for t in [os_consumer, *green_consumers]:
        got.extend(t.get(timeout=30))
    counts = Counter(got)
    assert len(counts) == 5 * per_producer and max(counts.values()) == 1
    assert q.empty() and not q._getters and not q._putters


# Tests for mutmut's survivors in queue.py (issue 18, docs/testing.md).


def test_join_wakes_at_the_last_task_done_only():
    # Each task_done but the last leaves the joiner parked; the last wakes it
    # at once (well before its timeout), with nothing unfinished.
    q = JoinableQueue()
    for n in range(3):
        q.put(n)
    seen = []
    joiner = greenline.spawn(lambda: seen.append((q.join(timeout=0.8), q.unfinished_tasks)))
    until(lambda: q._joiners)
    for n in range(3):
        assert q.get() == n
        q.task_done()
        for _ in range(3):
            greenline.sleep(0)  # give a wrongly woken joiner its turn
        if n < 2:
            assert not seen, f"join returned with {3 - n - 1} tasks unfinished"
    start = time.monotonic()
    joiner.join(timeout=5)
    assert seen == [(True, 0)]
    assert time.monotonic() - start < 0.5  # woken, not timed out


def test_a_put_that_waited_for_a_slot_counts_as_unfinished():
    q = JoinableQueue(1)
    q.put("a")
    putter = greenline.spawn(q.put, "b")
    until(lambda: q._putters)
    assert q.get() == "a"
    putter.join(timeout=5)
    assert putter.dead and q.get_nowait() == "b"
    assert q.unfinished_tasks == 2


def test_nowait_calls_and_timeout_objects_keep_item_and_blocking():
    q = Queue(3)
    q.put_nowait("a")
    q.put("b", timeout=greenline.Timeout(1))
    assert [q.get_nowait(), q.get_nowait()] == ["a", "b"]
    with greenline.Timeout(1):  # a blocking peek_nowait would raise this
        with pytest.raises(Empty):
            q.peek_nowait()
    # A Timeout object makes the call block until it fires, raising itself.
    t = greenline.Timeout(0.05)
    with pytest.raises(greenline.Timeout) as e:
        q.peek(timeout=t)
    assert e.value is t
    for n in range(3):
        q.put(n)
    t = greenline.Timeout(0.05)
    with pytest.raises(greenline.Timeout) as e:
        q.put(3, timeout=t)
    assert e.value is t
    # join with a timeout shorter than a second still waits for the work.
    jq = JoinableQueue()
    jq.put(1)

    def worker():
        jq.get()
        greenline.sleep(0.02)
        jq.task_done()

    greenline.spawn(worker)
    assert jq.join(timeout=0.5) is True
