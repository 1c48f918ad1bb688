"""Queues between green threads: ``Queue``, ``LifoQueue``, ``PriorityQueue``
(and ``JoinableQueue``, the same as ``Queue``), with gevent's API.

>>> import greenline
>>> from greenline.queue import Queue
>>> q = Queue()
>>> def producer():
...     for n in range(3):
...         q.put(n)
...     q.put(StopIteration)        # ends the consumer's for loop
>>> _ = greenline.spawn(producer)
>>> [item for item in q]
[0, 1, 2]

``get`` and ``put`` raise the stdlib's own ``queue.Empty`` and
``queue.Full`` (re-exported here), so code catching those keeps working when
monkey-patching swaps the stdlib queues for these.

Waiting getters and putters are served first come, first served, also across
OS threads.  When an item arrives for a waiting getter, one item is reserved
for it (nobody else can take it before it runs); likewise a slot freed for a
waiting putter.  A waiter that raises instead (timeout, kill) passes its
reservation on: no item is lost or duplicated.
"""

from __future__ import annotations

import _queue
import _thread
import heapq
import queue as _stdlib_queue  # absolute import: the stdlib module
from collections import deque
from collections.abc import Iterable, Iterator
from time import monotonic
from types import GenericAlias
from typing import Any

from greenline._core.timeout import Timeout
from greenline._core.waiters import Waiter, notify, notify_all, park

__all__ = ["Queue", "LifoQueue", "PriorityQueue", "JoinableQueue", "SimpleQueue", "Channel",
           "Empty", "Full", "ShutDown"]

Empty = _queue.Empty
Full = _stdlib_queue.Full


class _ShutDown(Exception):
    """Raised by put() on a queue that was shut down, and by get() on one
    that is also empty (``queue.ShutDown`` of Python 3.13)."""


ShutDown: type[Exception] = getattr(_stdlib_queue, "ShutDown", _ShutDown)

_allocate_real_lock = _thread.allocate_lock


class Queue:
    """A FIFO queue; ``maxsize`` <= 0 (or None) means unbounded.

    >>> from greenline.queue import Queue, Empty
    >>> q = Queue(maxsize=1)
    >>> q.put("a")
    >>> q.full(), q.qsize()
    (True, 1)
    >>> q.get(), q.empty()
    ('a', True)
    >>> try:
    ...     q.get(timeout=0.01)
    ... except Empty:
    ...     print("nothing came")
    nothing came

    Subclasses may override the stdlib's storage hooks ``_init``,
    ``_qsize``, ``_put``, ``_get`` (and ``_peek``).
    """

    __class_getitem__: Any = classmethod(GenericAlias)

    def __init__(self, maxsize: int | None = None, items: Iterable[Any] = ()) -> None:
        self.maxsize = maxsize if maxsize is not None and maxsize > 0 else 0
        self._init(self.maxsize)
        self._guard = _allocate_real_lock()
        self._getters: deque[Waiter] = deque()
        self._putters: deque[Waiter] = deque()
        self._peekers: list[Waiter] = []
        self._joiners: list[Waiter] = []
        # Items promised to woken getters, slots promised to woken putters.
        self._item_reserved = 0
        self._slot_reserved = 0
        self.unfinished_tasks = 0
        self.is_shutdown = False
        # Waiters woken by shutdown(): they raise ShutDown, not take a slot.
        self._shut: set[Waiter] = set()
        for item in items:
            self._put(item)
            self.unfinished_tasks += 1

    # -- storage hooks (the stdlib's names) -------------------------------

    def _init(self, maxsize: int) -> None:
        self.queue: Any = deque()

    def _qsize(self) -> int:
        return len(self.queue)

    def _put(self, item: Any) -> None:
        self.queue.append(item)

    def _get(self) -> Any:
        return self.queue.popleft()

    def _peek(self) -> Any:
        return self.queue[0]

    # -- state -------------------------------------------------------------

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} maxsize={self.maxsize} qsize={self._qsize()} "
                f"getters={len(self._getters)} putters={len(self._putters)}>")

    def qsize(self) -> int:
        """Number of items in the queue."""
        return self._qsize()

    def __len__(self) -> int:
        return self._qsize()

    def __bool__(self) -> bool:
        # As gevent's: a queue object is always true, even when empty.
        return True

    def empty(self) -> bool:
        return self._qsize() == 0

    def full(self) -> bool:
        return 0 < self.maxsize <= self._qsize()

    def copy(self) -> Queue:
        return type(self)(self.maxsize, list(self.queue))

    # -- state changes; all under the guard ---------------------------------

    def _has_slot(self) -> bool:
        return self.maxsize <= 0 or self._qsize() + self._slot_reserved < self.maxsize

    def _added(self) -> None:
        self.unfinished_tasks += 1
        self._added_with_waiters()

    def _added_with_waiters(self) -> None:
        # An item went in: reserve it for the first waiting getter, and let
        # peekers look.
        self._grant_getter()
        if self._peekers:
            peekers, self._peekers = self._peekers, []
            notify_all(peekers)

    def _grant_getter(self) -> None:
        if self._getters and self._qsize() > self._item_reserved:
            w = self._getters.popleft()
            self._item_reserved += 1
            w.fired = True
            notify(w)

    def _grant_putter(self) -> None:
        if self._putters and self._has_slot():
            w = self._putters.popleft()
            self._slot_reserved += 1
            w.fired = True
            notify(w)

    # -- put -----------------------------------------------------------------

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``item`` in, waiting (up to ``timeout``) while the queue is
        full; raises :class:`Full` if it stays full (at once with
        ``block=False``)."""
        if isinstance(timeout, Timeout):
            # gevent's: a Timeout object bounds the wait, raising itself.
            with timeout:
                return self.put(item, block)
        if self.is_shutdown:
            raise ShutDown
        guard = self._guard
        with guard:
            maxsize = self.maxsize
            if maxsize <= 0 or self._qsize() + self._slot_reserved < maxsize:
                self._put(item)
                self.unfinished_tasks += 1
                if self._getters or self._peekers:
                    self._added_with_waiters()
                return
        if not block or (timeout is not None and timeout <= 0):
            raise Full
        w = Waiter()
        with guard:
            if self._has_slot():
                self._put(item)
                self._added()
                return
            self._putters.append(w)
        try:
            park(w, timeout)
        except BaseException:
            with guard:
                if w in self._shut:
                    self._shut.discard(w)
                elif w.fired:
                    self._slot_reserved -= 1
                    self._grant_putter()
                else:
                    self._putters.remove(w)
            raise
        with guard:
            if w in self._shut:
                self._shut.discard(w)
                raise ShutDown
            if w.fired:
                self._slot_reserved -= 1
                self._put(item)
                self._added()
                return
            self._putters.remove(w)
        raise Full

    def put_nowait(self, item: Any) -> None:
        self.put(item, False)

    # -- get -----------------------------------------------------------------

    def _take(self) -> Any:
        item = self._get()
        self._grant_putter()
        return item

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return an item, waiting (up to ``timeout``) for one;
        raises :class:`Empty` if none comes (at once with ``block=False``)."""
        if isinstance(timeout, Timeout):
            with timeout:
                return self.get(block)
        guard = self._guard
        with guard:
            if self._qsize() > self._item_reserved:
                item = self._get()
                if self._putters:
                    self._grant_putter()
                return item
        if self.is_shutdown:
            raise ShutDown
        if not block or (timeout is not None and timeout <= 0):
            raise Empty
        w = Waiter()
        with guard:
            if self._qsize() > self._item_reserved:
                return self._take()
            self._getters.append(w)
        try:
            park(w, timeout)
        except BaseException:
            with guard:
                if w in self._shut:
                    self._shut.discard(w)
                elif w.fired:
                    self._item_reserved -= 1
                    self._grant_getter()
                else:
                    self._getters.remove(w)
            raise
        with guard:
            if w in self._shut:
                self._shut.discard(w)
                raise ShutDown
            if w.fired:
                self._item_reserved -= 1
                return self._take()
            self._getters.remove(w)
        raise Empty

    def get_nowait(self) -> Any:
        return self.get(False)

    def peek(self, block: bool = True, timeout: float | None = None) -> Any:
        """Return the next item without removing it, waiting for one like
        :meth:`get`."""
        if isinstance(timeout, Timeout):
            with timeout:
                return self.peek(block)
        deadline = None if timeout is None else monotonic() + timeout
        guard = self._guard
        while True:
            with guard:
                if self._qsize():
                    return self._peek()
            remaining = None if deadline is None else deadline - monotonic()
            if not block or (remaining is not None and remaining <= 0):
                raise Empty
            w = Waiter()
            with guard:
                if self._qsize():
                    return self._peek()
                self._peekers.append(w)
            try:
                park(w, remaining)
            finally:
                if not w.fired:
                    with guard:
                        if not w.fired:
                            self._peekers.remove(w)
            # Woken by a put, but a getter may have taken the item first:
            # look again.

    def peek_nowait(self) -> Any:
        return self.peek(False)

    # -- task accounting (the stdlib's JoinableQueue protocol) ---------------

    def task_done(self) -> None:
        """Mark one item got from the queue as processed (for :meth:`join`)."""
        with self._guard:
            if self.unfinished_tasks <= 0:
                raise ValueError("task_done() called too many times")
            self.unfinished_tasks -= 1
            if self.unfinished_tasks == 0 and self._joiners:
                joiners, self._joiners = self._joiners, []
                notify_all(joiners)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every item put has been marked done with
        :meth:`task_done`; False if ``timeout`` passed first."""
        if self.unfinished_tasks == 0:
            return True
        if timeout is not None and timeout <= 0:
            return False
        w = Waiter()
        with self._guard:
            if self.unfinished_tasks == 0:
                return True
            self._joiners.append(w)
        try:
            park(w, timeout)
        finally:
            if not w.fired:
                with self._guard:
                    if not w.fired:
                        self._joiners.remove(w)
        return w.fired or self.unfinished_tasks == 0

    # -- iteration, as gevent's: ends at a StopIteration item ----------------

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        item = self.get()
        if item is StopIteration:
            raise StopIteration
        return item

    next = __next__

    def shutdown(self, immediate: bool = False) -> None:
        """Refuse further puts (``ShutDown``); gets drain what is left, then
        raise ``ShutDown``.  With ``immediate``, drop what is left too.
        Green threads waiting to put or get wake with ``ShutDown``."""
        with self._guard:
            self.is_shutdown = True
            if immediate:
                while self._qsize() > self._item_reserved:
                    self._get()
                    if self.unfinished_tasks > 0:
                        self.unfinished_tasks -= 1
                if self.unfinished_tasks == 0 and self._joiners:
                    joiners, self._joiners = self._joiners, []
                    notify_all(joiners)
            woken = list(self._putters)
            self._putters.clear()
            if immediate or not self._qsize():
                woken.extend(self._getters)
                self._getters.clear()
            self._shut.update(woken)
            notify_all(woken)

    # gevent's names
    def getters(self) -> int:
        return len(self._getters)

    def putters(self) -> int:
        return len(self._putters)


JoinableQueue = Queue


class SimpleQueue(Queue):
    """gevent's name for the queue without the need to call ``task_done``
    (greenline's Queue keeps the count either way)."""


class Channel:
    """A queue of size zero: :meth:`put` waits until a :meth:`get` takes the
    item, and the other way round (gevent's ``Channel``).

    >>> import greenline
    >>> from greenline.queue import Channel
    >>> ch = Channel()
    >>> t = greenline.spawn(ch.put, "hand-over")
    >>> ch.get(), t.get()
    ('hand-over', None)
    """

    maxsize = 0
    __class_getitem__: Any = classmethod(GenericAlias)

    def __init__(self, maxsize: int = 1) -> None:
        if maxsize != 1:
            raise ValueError("Channel maxsize must be 1")
        self._guard = _allocate_real_lock()
        # (waiter, [item]) of green threads waiting to hand an item over,
        # and (waiter, [slot]) of those waiting to receive one.
        self._putters: deque[tuple[Waiter, list[Any]]] = deque()
        self._getters: deque[tuple[Waiter, list[Any]]] = deque()

    def __repr__(self) -> str:
        return f"<Channel getters={len(self._getters)} putters={len(self._putters)}>"

    @property
    def balance(self) -> int:
        return len(self._putters) - len(self._getters)

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    def full(self) -> bool:
        return True

    def __len__(self) -> int:
        return 0

    def __bool__(self) -> bool:
        return True

    def _transfer(self, mine: deque[tuple[Waiter, list[Any]]],
                  theirs: deque[tuple[Waiter, list[Any]]], cell: list[Any], block: bool,
                  timeout: Any, fail: type[Exception]) -> None:
        if isinstance(timeout, Timeout):
            with timeout:
                return self._transfer(mine, theirs, cell, block, None, fail)
        with self._guard:
            if theirs:
                w, other = theirs.popleft()
                if cell:
                    other.append(cell[0])
                else:
                    cell.append(other[0])
                w.fired = True
                notify(w)
                return
            if not block or (timeout is not None and timeout <= 0):
                raise fail
            w = Waiter()
            entry = (w, cell)
            mine.append(entry)
        try:
            park(w, timeout)
        finally:
            if not w.fired:
                with self._guard:
                    if not w.fired:
                        mine.remove(entry)
        if not w.fired:
            raise fail

    def put(self, item: Any, block: bool = True, timeout: Any = None) -> None:
        self._transfer(self._putters, self._getters, [item], block, timeout, Full)

    def put_nowait(self, item: Any) -> None:
        self.put(item, False)

    def get(self, block: bool = True, timeout: Any = None) -> Any:
        cell: list[Any] = []
        self._transfer(self._getters, self._putters, cell, block, timeout, Empty)
        return cell[0]

    def get_nowait(self) -> Any:
        return self.get(False)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        item = self.get()
        if item is StopIteration:
            raise StopIteration
        return item

    next = __next__


class LifoQueue(Queue):
    """Last in, first out.

    >>> from greenline.queue import LifoQueue
    >>> q = LifoQueue()
    >>> for n in (1, 2, 3):
    ...     q.put(n)
    >>> [q.get() for _ in range(3)]
    [3, 2, 1]
    """

    def _init(self, maxsize: int) -> None:
        self.queue = []

    def _get(self) -> Any:
        return self.queue.pop()

    def _peek(self) -> Any:
        return self.queue[-1]


class PriorityQueue(Queue):
    """Lowest first (items are compared, as with ``heapq``).

    >>> from greenline.queue import PriorityQueue
    >>> q = PriorityQueue()
    >>> for item in [(2, "b"), (1, "a"), (3, "c")]:
    ...     q.put(item)
    >>> q.get()
    (1, 'a')
    """

    def _init(self, maxsize: int) -> None:
        self.queue = []

    def _put(self, item: Any) -> None:
        heapq.heappush(self.queue, item)

    def _get(self) -> Any:
        return heapq.heappop(self.queue)

    def _peek(self) -> Any:
        return self.queue[0]
