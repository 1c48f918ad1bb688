"""The hub: one event loop per OS thread, running in its own greenlet.

Every green thread that would block switches into the hub; the hub runs
whatever is ready, polls the kernel for descriptors, fires timers, and
switches back into the green threads that can go on.  The whole scheduler is
this file.

Invariants (each is kept by the code right below the place it is written):

* A green thread is *parked* (a key of ``Hub.parked``) exactly while it sits
  in :meth:`Hub.block`, waiting for a wake.  :meth:`Hub.wake` and
  :meth:`Hub.throw` pop it from ``parked`` before they put it on the ready
  queue, so however many wakers fire in one pass (readiness, a timer, a kill),
  only the first one schedules it: a green thread is never resumed twice for
  one wait.
* A waker may only reach a green thread through a registration that is gone
  before the green thread can block again (a timer, a waiter list, removed in
  a ``finally``; ``FdState.reader``/``writer``, cleared by the loop as it
  wakes the waiter, or by :meth:`Hub.wait_fd` when the wait is interrupted).
  So a late waker can never resume it out of some *later*, unrelated wait.
* An exception thrown at a green thread that is not parked (it is running, or
  already on the ready queue) is kept in ``Hub.pending`` and raised at its next
  blocking point, or as soon as its current one returns.
* ``Hub.level`` holds level-triggered interrupts (cancel scopes): while a
  green thread is a key there, every blocking point it reaches raises
  ``level[g]()``, after any pending exception.  Both are checked on entry to
  a blocking point and again when it returns.
* The ready queue is FIFO, and one pass runs only the green threads that were
  ready when the pass began (``Hub.run_left`` counts what is left of it, for
  the loop and for :meth:`Hub.wait_fd`, which hands over to the next one
  directly): a green thread that keeps yielding cannot keep the hub from
  polling, and so cannot starve the ones waiting for IO.
* A cancelled timer stays in the heap, its callback set to None, until it
  comes to the head (or :meth:`Hub.cancel_timer` compacts the heap);
  ``Hub._cancelled_timers`` counts those entries.  It never keeps the hub
  waiting: before the loop sleeps it pops cancelled timers off the head, so
  it sleeps until the first live timer, and a heap of cancelled timers only
  is no timer at all (a deadlock is reported at once).  Timers that are not
  cancelled pay nothing for this: only an idle loop looks, at the head only.
* Hubs of different OS threads share nothing on the hot path: each has its
  own poller, ready queue, timers, descriptor table and counters, and no
  lock is taken between a readiness edge and the switch into the green
  thread that waits for it.  On a free-threaded build (3.13t) that is what
  lets one process's threads run their hubs in parallel: the loop touches
  no object made by another thread except immortal ones (functions, types,
  small ints).  ``all_hubs`` is touched only when a hub is made or closed.
* Readiness is edge-triggered: a descriptor is registered once, for both
  directions, the first time a call on it would block.  ``FdState.readable``
  and ``writable`` remember what the last edge or the last call said, so a
  call known to fail with EAGAIN is never made; a new edge is raised by the
  kernel whenever data or buffer space arrives after that, so no wake is lost.
"""

from __future__ import annotations

import _thread
import errno
import heapq
import os
import select
import sys
import weakref
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Any

from greenlet import getcurrent, greenlet

from greenline._core.loop import HubAPI

__all__ = [
    "Hub",
    "LoopExit",
    "FdState",
    "IO_BUDGET",
    "get_hub",
    "get_hub_if_exists",
    "this_thread",
    "os_thread_ident",
    "other_os_threads",
    "close_thread_hub",
    "sleep",
    "stats",
    "getcurrent",
]

# Saved before anything can monkey-patch them: the hub's own thread-local
# storage and locks must stay real OS-thread ones.
_local = _thread._local
os_thread_ident = _thread.get_ident
# The real count of OS threads: patching may make _thread._count count
# green threads, but deadlock detection asks about OS threads.
_thread_count = _thread._count

_HAVE_EPOLL = hasattr(select, "epoll")
if _HAVE_EPOLL:
    # The real class, before patching can replace select.epoll with a
    # cooperative wrapper (a hub made later, in another thread or after a
    # fork, must still get the kernel's).
    _epoll = select.epoll
    _EPOLLIN = select.EPOLLIN
    _EPOLLOUT = select.EPOLLOUT
    _ERR = select.EPOLLERR | select.EPOLLHUP
    # Hang-up and error wake both directions: the next call then reports it.
    _READ_MASK = select.EPOLLIN | select.EPOLLRDHUP | _ERR | select.EPOLLPRI
    _WRITE_MASK = select.EPOLLOUT | _ERR
    _HUP_MASK = select.EPOLLRDHUP | _ERR
    _REGISTER_MASK = (
        select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
    )
else:  # macOS/BSD; on Linux, tests/_core/test_hub.py::test_the_selectors_path_for_platforms_without_epoll
    _READ_MASK = 1
    _WRITE_MASK = 4
    _HUP_MASK = 1  # no hang-up bit from selectors: every read edge may be one

# How many non-blocking IO calls a green thread may complete in a row before
# it is made to yield.  A connection whose peer always has data ready never
# blocks, and without this it would keep the hub forever.  The hub refills
# ``Hub.io_budget`` whenever it switches into a green thread; each call that
# completes without blocking spends one.  socket.py and ssl.py spend it
# inline (``hub.io_budget -= 1; if hub.io_budget <= 0: hub.budget_spent()``)
# rather than through a method: a call costs 40-65 ns more, about 1 % of a
# request, on the hottest path there is.  Everyone else calls
# fdio.spend_budget().
IO_BUDGET = 64

# How often a hub with nothing to do but wait for other OS threads checks
# whether it is alone (and so deadlocked); see the poll phase of _run.
_ALONE_RECHECK = 0.05

# epoll_wait's maxevents.  Events not returned stay at the head of the
# kernel's ready list and come first next time, so a small batch is fair.
_MAX_EVENTS = 1024


class LoopExit(Exception):
    """Raised in the main green thread when it waits for something that
    nothing left in this thread could ever provide (a deadlock)."""


class FdState:
    """What the hub knows of one descriptor: its readiness and its waiters.

    One per descriptor, shared by every object that waits on it (a socket
    keeps a reference to skip the dictionary look-up).  ``hub`` is set while
    the descriptor is registered with that hub's poller.
    """

    __slots__ = ("fd", "readable", "writable", "reader", "writer", "hub", "temporary", "hup")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        # True for a raw descriptor registered only while someone waits on it.
        self.temporary = False
        # Unknown until a call says otherwise: try the call first.
        self.readable = True
        self.writable = True
        # Set once a hang-up or error edge was seen: from then on the
        # descriptor stays readable (EOF/error), whatever a short read says.
        self.hup = False
        self.reader: greenlet | None = None
        self.writer: greenlet | None = None
        self.hub: Hub | None = None


# Every live hub, for the blocking detector (watchdog.py).
all_hubs: weakref.WeakSet[Hub] = weakref.WeakSet()


class _Expired(Exception):
    """Thrown by a wait's own timer; turned into the caller's timeout error."""


class Hub(HubAPI):
    """The event loop of one OS thread.  Get it with :func:`get_hub`."""

    # Slots for what the loop and the socket calls read and write: on a
    # free-threaded build (3.13t) a store into an instance's __dict__ takes
    # the object's lock, a slot store does not, and every request stores
    # several (io_budget, run_left, current).  The __dict__ (and weak
    # references) come from HubAPI, which has no slots: gevent code and tests
    # set attributes of their own on a hub.
    __slots__ = (
        "thread_ident", "ready", "parked", "pending", "level", "timers", "_timer_seq",
        "_cancelled_timers", "fds", "io_waiters", "refs", "io_budget", "run_left", "_xcalls",
        "_polling", "switches", "loops", "live", "max_lag", "current", "main", "greenlet",
        "_poller", "_wake_r", "_wake_w", "_poll", "_interest", "closed",
    )

    def __init__(self) -> None:
        self.thread_ident = os_thread_ident()
        self.ready: deque[greenlet] = deque()
        self.parked: dict[greenlet, None] = {}
        self.pending: dict[greenlet, BaseException | type[BaseException]] = {}
        # Level-triggered interrupts (cancel scopes): while g is a key, each
        # blocking point of g raises level[g](), after any pending exception.
        self.level: dict[greenlet, Callable[[], BaseException]] = {}
        # Each timer is a list [deadline, seq, callback, arg]; cancelling sets
        # callback to None and leaves the entry for the heap to drop lazily.
        self.timers: list[list[Any]] = []
        self._timer_seq = 0
        self._cancelled_timers = 0
        self.fds: dict[int, FdState] = {}
        self.io_waiters = 0
        # Work another OS thread has promised to hand back (thread pool jobs):
        # while it is non-zero, an idle hub waits instead of raising LoopExit.
        self.refs = 0
        self.io_budget = IO_BUDGET
        # Green threads of the loop's current pass not yet run (see _run).
        self.run_left = 0
        # Cross-thread calls: deque.append is atomic under the GIL, and the
        # hub reads _polling before it sleeps (see call_threadsafe).
        self._xcalls: deque[tuple[Callable[[Any], object], Any]] = deque()
        self._polling = False
        # Figures for greenline.stats() and the blocking detector.
        self.switches = 0
        self.loops = 0
        self.live = 0  # started tasks that have not finished
        self.max_lag = 0.0  # longest stretch the hub spent away from polling
        self.current: greenlet | None = None
        self.main = getcurrent()
        self.greenlet = greenlet(self._run, parent=self.main)
        self._poller: Any
        if _HAVE_EPOLL:
            self._poller = _epoll()
            os.set_inheritable(self._poller.fileno(), False)
            self._wake_r = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._wake_w = self._wake_r
            self._poller.register(self._wake_r, select.EPOLLIN | select.EPOLLET)
            self._poll = self._poller.poll
        else:  # pragma: no cover
            import selectors

            self._poller = selectors.DefaultSelector()
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._poller.register(self._wake_r, selectors.EVENT_READ)
            self._poll = self._selector_poll
            # fd -> directions registered with the selector (see
            # _selector_poll): only those someone waits for.
            self._interest: dict[int, int] = {}
        self.closed = False
        all_hubs.add(self)

    # ------------------------------------------------------------------
    # Parking and waking: the only ways a green thread leaves and re-enters
    # the ready queue.

    def block(self) -> None:
        """Park the current green thread until something wakes it.

        The caller has registered itself wherever its waker will look, and
        removes that registration in a ``finally``.  Returns on a wake; raises
        what :meth:`throw` sent, or a pending exception.
        """
        g = getcurrent()
        pending = self.pending
        if pending and g in pending:
            raise pending.pop(g)
        level = self.level
        if level and g in level:
            raise level[g]()
        if g is self.greenlet:
            raise RuntimeError("the hub itself cannot block")
        self.parked[g] = None
        try:
            self.greenlet.switch()
        except BaseException:
            self.parked.pop(g, None)
            raise
        if pending and g in pending:
            raise pending.pop(g)
        if level and g in level:
            raise level[g]()

    def wake(self, g: greenlet) -> None:
        """Schedule parked green thread ``g``; no-op if it is not parked."""
        if g in self.parked:
            del self.parked[g]
            self.ready.append(g)

    def throw(self, g: greenlet, exc: BaseException | type[BaseException]) -> None:
        """Raise ``exc`` in ``g`` at its current blocking point, or at its next
        one if it is not blocked now."""
        if g in self.parked:
            del self.parked[g]
            self.pending[g] = exc
            self.ready.append(g)
        else:
            self.pending[g] = exc

    def budget_spent(self) -> None:
        """The rare path of the IO budget: the running green thread made
        IO_BUDGET calls in a row without blocking, so let the others run.
        ``self`` may be another OS thread's hub (a socket handed between
        threads is registered there): yield in our own."""
        if self.thread_ident == os_thread_ident():
            self.yield_now()
        else:
            # The calls spent that hub's budget, which only its own loop
            # refills: refill it here, or every later call would yield.
            self.io_budget = IO_BUDGET
            get_hub().yield_now()

    def exempt_from_budget(self) -> None:
        """The running green thread keeps a fairness rule of its own (the
        accept loop yields after a batch of connections): its calls do not
        spend the IO budget until it next yields."""
        self.io_budget = 1 << 30

    def schedule(self, g: greenlet) -> None:
        """Put a new (not yet started) green thread on the ready queue."""
        self.ready.append(g)

    def yield_now(self) -> None:
        """Go to the back of the ready queue (``sleep(0)``)."""
        g = getcurrent()
        if g is self.greenlet:
            raise RuntimeError("the hub itself cannot yield")
        pending = self.pending
        if pending and g in pending:
            raise pending.pop(g)
        level = self.level
        if level and g in level:
            raise level[g]()
        self.ready.append(g)
        self.greenlet.switch()
        if pending and g in pending:
            raise pending.pop(g)
        if level and g in level:
            raise level[g]()

    # ------------------------------------------------------------------
    # Timers

    def call_later(self, delay: float, callback: Callable[[Any], object], arg: Any = None) -> list[Any]:
        """Run ``callback(arg)`` in the hub after ``delay`` seconds.  Returns a
        handle for :meth:`cancel_timer`."""
        self._timer_seq += 1
        entry = [monotonic() + delay, self._timer_seq, callback, arg]
        heapq.heappush(self.timers, entry)
        return entry

    def cancel_timer(self, entry: list[Any]) -> None:
        if entry[2] is not None:
            entry[2] = None
            entry[3] = None
            self._cancelled_timers += 1
            # Keep the heap from filling up with dead entries (a socket with a
            # timeout sets and cancels one timer per blocking call).
            if self._cancelled_timers > 256 and self._cancelled_timers * 2 > len(self.timers):
                # In place: the loop holds a reference to this list.
                self.timers[:] = [t for t in self.timers if t[2] is not None]
                heapq.heapify(self.timers)
                self._cancelled_timers = 0

    def _drop_cancelled_timers(self) -> bool:
        """Pop the cancelled timers at the head of the heap (the loop does,
        before it sleeps); True if a live timer is left."""
        timers = self.timers
        while timers and timers[0][2] is None:
            heapq.heappop(timers)
            self._cancelled_timers -= 1
        return bool(timers)

    def _expire(self, g: greenlet) -> None:
        self.throw(g, _Expired)

    def sleep(self, seconds: float) -> None:
        g = getcurrent()
        timer = self.call_later(seconds, self.wake, g)
        try:
            self.block()
        finally:
            self.cancel_timer(timer)

    # ------------------------------------------------------------------
    # Descriptors

    def wait_fd(self, st: FdState, write: bool, timeout: float | None = None,
                timeout_exc: Callable[[], BaseException] | None = None) -> None:
        """Block until ``st`` is readable (or writable, with ``write``).

        Call it only once a call on the descriptor failed, or its flag says
        it would: the flag is cleared, and the next edge sets it and ends
        the wait.  On timeout raises ``timeout_exc()`` (``TimeoutError`` by
        default).  Raises ``OSError(EBADF)`` if the descriptor is closed
        meanwhile.

        This is the hot path of every socket call that has to wait, so it
        is :meth:`block` inlined, and the slot is shared with the loop: the
        green thread sets ``st.reader`` (or ``writer``) and counts itself in
        ``io_waiters``; whoever ends the wait undoes both, exactly once:
        the loop (or :meth:`wake_reader`) when readiness wakes it, and then
        this returns normally; or this method's ``except``, when the wait
        ends in an exception (a throw, a kill, the timer, a cancel scope).
        Nothing else may wake a green thread parked here.
        """
        if timeout is not None:
            self._wait_fd_timed(st, write, timeout, timeout_exc)
            return
        if st.hub is not self:
            self._register(st)
        g = getcurrent()
        if self.pending or self.level or g is self.greenlet:
            self._interrupt(g)
        if write:
            if st.writer is not None:
                raise RuntimeError(f"another green thread is already waiting to write fd {st.fd}")
            st.writer = g
            st.writable = False
        else:
            if st.reader is not None:
                raise RuntimeError(f"another green thread is already waiting to read fd {st.fd}")
            st.reader = g
            st.readable = False
        self.io_waiters += 1
        self.parked[g] = None
        try:
            if self.run_left and self.ready[0].gr_frame is not None:
                # The loop is part way through a pass and its next green
                # thread is a started one: go straight to it (one switch
                # instead of two through the hub).  The last of the pass, or
                # one not started yet, goes back to the hub: a greenlet
                # starts on the stack, and with the recursion depth, of
                # whoever first switches to it, and only the hub's stay
                # shallow.
                self.run_left -= 1
                nxt = self.ready.popleft()
                self.io_budget = IO_BUDGET
                self.current = nxt
                nxt.switch()
            else:
                self.greenlet.switch()
            if self.pending or self.level:
                self._interrupt(g)
        except BaseException:
            # Interrupted (a throw, a kill, the timer, a cancel scope): the
            # slot may still be ours to clear.
            self.parked.pop(g, None)
            if write:
                if st.writer is g:
                    st.writer = None
                    self.io_waiters -= 1
            elif st.reader is g:
                st.reader = None
                self.io_waiters -= 1
            raise

    def _wait_fd_timed(self, st: FdState, write: bool, timeout: float,
                       timeout_exc: Callable[[], BaseException] | None) -> None:
        timer = self.call_later(timeout, self._expire, getcurrent())
        try:
            self.wait_fd(st, write)
        except _Expired:
            raise (timeout_exc or _default_timeout)() from None
        finally:
            self.cancel_timer(timer)

    def wake_reader(self, st: FdState) -> None:
        """End the read wait on ``st`` as readiness would (the loop inlines
        this); a no-op if nobody waits there."""
        g = st.reader
        if g is not None and g in self.parked:
            st.reader = None
            self.io_waiters -= 1
            del self.parked[g]
            self.ready.append(g)

    def _interrupt(self, g: greenlet) -> None:
        """Raise what is due at a blocking point of ``g``: a pending
        exception first, then a level-triggered one (the rare paths of
        :meth:`wait_fd`)."""
        if g is self.greenlet:
            raise RuntimeError("the hub itself cannot wait for a descriptor")
        exc = self.pending.pop(g, None)
        if exc is not None:
            raise exc
        make = self.level.get(g)
        if make is not None:
            raise make()

    def _register(self, st: FdState) -> None:
        if st.hub is not None:
            # Used from a second OS thread: move it, unless someone waits there.
            old = st.hub
            if st.reader is not None or st.writer is not None:
                raise RuntimeError(
                    f"fd {st.fd} is being waited on in another OS thread's hub"
                )
            old.unregister(st)
        fd = st.fd
        stale = self.fds.get(fd)
        if stale is not None and stale is not st:
            # The number was closed behind our back and reused: the old state
            # is dead.  Wake its waiters with the error, forget it.
            self.forget(stale, raise_in_waiters=True)
        if _HAVE_EPOLL:
            try:
                self._poller.register(fd, _REGISTER_MASK)
            except FileExistsError:
                # A stale registration of a closed-and-reused number.
                self._poller.modify(fd, _REGISTER_MASK)
        # Without epoll the selector's interest follows the waiters instead
        # (_selector_poll), so there is nothing to register yet.
        self.fds[fd] = st
        st.hub = self
        # Registering reports current readiness as a fresh edge, so the
        # flags may be cleared now without losing anything.
        st.readable = False
        st.writable = False
        st.hup = False

    def unregister(self, st: FdState) -> None:
        """Stop watching the descriptor, without waking its waiters (a raw
        descriptor's registration ends with its last wait; see
        :meth:`forget` for one about to be closed)."""
        if self.fds.get(st.fd) is st:
            del self.fds[st.fd]
            if _HAVE_EPOLL or self._interest.pop(st.fd, 0):
                try:
                    self._poller.unregister(st.fd)
                except (OSError, ValueError, KeyError):
                    pass  # already closed: the kernel dropped it
        st.hub = None
        st.readable = st.writable = True

    def forget(self, st: FdState, raise_in_waiters: bool = True) -> None:
        """The descriptor is about to be closed: unregister it and wake its
        waiters with EBADF (never leave them hanging)."""
        hub = st.hub
        if hub is None:
            return
        if hub is not self and hub.thread_ident != os_thread_ident():
            hub.call_threadsafe(lambda s: hub.forget(s, raise_in_waiters), st)
            return
        hub.unregister(st)
        if raise_in_waiters:
            for g in (st.reader, st.writer):
                if g is not None:
                    hub.throw(g, OSError(errno.EBADF, "Bad file descriptor: the socket was closed by another green thread"))

    # ------------------------------------------------------------------
    # Cross-thread

    def call_threadsafe(self, callback: Callable[[Any], object], arg: Any = None) -> None:
        """Run ``callback(arg)`` in this hub's thread; callable from any thread."""
        self._xcalls.append((callback, arg))
        # The hub sets _polling before it checks _xcalls and goes to sleep, so
        # either it sees our call or we see it polling and wake it.
        if self._polling:
            try:
                if _HAVE_EPOLL:
                    os.eventfd_write(self._wake_w, 1)
                else:  # pragma: no cover
                    os.write(self._wake_w, b"\0")
            except (BlockingIOError, OSError):
                pass  # already signalled, or closed after fork

    def _run_xcalls(self) -> None:
        xcalls = self._xcalls
        while xcalls:
            callback, arg = xcalls.popleft()
            try:
                callback(arg)
            except BaseException:
                self.handle_error(self)

    # ------------------------------------------------------------------
    # The loop

    def _run(self) -> None:
        ready = self.ready
        popleft = ready.popleft
        append = ready.append
        timers = self.timers
        fds = self.fds
        parked = self.parked
        poll = self._poll
        heappop = heapq.heappop
        # This thread's own int, not the module's: on a free-threaded build
        # an object made by another thread has its reference count updated
        # atomically, in a cache line every hub would share (the loop loads
        # it every pass).  Small ints and functions are immortal, and the
        # rest of what a pass touches is this hub's own (see the module doc).
        max_events = _MAX_EVENTS + 0
        while True:
            self.loops += 1
            # 1. Poll.  Block only if there is nothing to run.  (Polling and
            # timers come before running: a green thread that yields sees any
            # timeout that fell due meanwhile raised at that yield.)
            # _polling is set before _xcalls is looked at: a call another
            # thread appends after that look finds it set, and wakes us.
            self._polling = True
            if ready or self._xcalls:
                timeout: float = 0
            elif timers and (timers[0][2] is not None or self._drop_cancelled_timers()):
                timeout = max(0.0, timers[0][0] - monotonic())
            elif self.io_waiters or self.refs:
                timeout = -1
            elif self._other_threads():
                # Only another OS thread could still wake us.  It would do
                # so through call_threadsafe, but nothing tells us when it
                # ends, or goes idle in a pool, instead: look again every so
                # often, so that a deadlock is still reported once we are
                # alone (a worker could finish its last job and wake us
                # just before it counted itself idle).
                timeout = _ALONE_RECHECK
            else:
                self._deadlock()
                timeout = 0
            try:
                events = poll(timeout, max_events)
            except InterruptedError:
                events = []
            except BaseException as e:
                # A signal handler raised (KeyboardInterrupt, say) while we
                # slept: it belongs to the main green thread.  The hub must
                # live on, or every later block() would return at once.
                self._polling = False
                self.throw(self.main, e)
                events = []
            self._polling = False
            # A waiter is woken only if still parked (a throw or its timer
            # may have woken it already); waking it ends its wait, so the
            # slot and its count in io_waiters are cleared here (wait_fd).
            woken = 0
            for fd, ev in events:
                st = fds.get(fd)
                if st is None:
                    continue  # the wake-up descriptor, or one just forgotten
                if ev & _READ_MASK:
                    st.readable = True
                    if ev & _HUP_MASK:
                        st.hup = True
                    g = st.reader
                    if g is not None and g in parked:
                        st.reader = None
                        woken += 1
                        del parked[g]
                        append(g)
                # A writer parks only with the flag cleared (wait_fd), so a
                # descriptor already known writable has none to wake.
                if ev & _WRITE_MASK and not st.writable:
                    st.writable = True
                    g = st.writer
                    if g is not None and g in parked:
                        st.writer = None
                        woken += 1
                        del parked[g]
                        append(g)
            self.io_waiters -= woken
            if self._xcalls:
                if _HAVE_EPOLL:
                    try:
                        os.eventfd_read(self._wake_r)
                    except BlockingIOError:
                        pass
                self._run_xcalls()

            # 2. Timers that are due.
            if timers:
                now = monotonic()
                while timers and timers[0][0] <= now:
                    entry = heappop(timers)
                    callback = entry[2]
                    if callback is None:
                        self._cancelled_timers -= 1
                        continue
                    entry[2] = None
                    try:
                        callback(entry[3])
                    except BaseException:
                        self.handle_error(callback)

            # 3. Run what is ready now; whatever becomes ready meanwhile waits
            # for the next pass, after the next poll.
            n = len(ready)
            if not n:
                continue
            started = monotonic()
            self.switches += n
            # What is left of this pass.  A green thread parking in wait_fd
            # takes the next one itself (see there), so this is shared.
            self.run_left = n
            try:
                while self.run_left:
                    self.run_left -= 1
                    g = popleft()
                    self.io_budget = IO_BUDGET
                    # The blocking detector's thread watches this and loops.
                    self.current = g
                    g.switch()
            except BaseException:
                # A raw greenlet (not a Task) ended with an exception that
                # greenlet delivered to us, its parent.  Report it, go on;
                # the rest of this pass runs in the next one.
                self.switches -= self.run_left
                self.run_left = 0
                self.handle_error(self)
            self.current = None
            lag = monotonic() - started
            if lag > self.max_lag:
                self.max_lag = lag

    def _other_threads(self) -> bool:
        return other_os_threads()

    def _deadlock(self) -> None:
        # Nothing is ready, no timer, no descriptor, no other thread: every
        # parked green thread waits for something that cannot come.  Tell the
        # main green thread (it is parked too: only it can have switched here).
        main = self.main
        others = len(self.parked) - (main in self.parked)
        msg = "This operation would block forever"
        if others:
            msg += f" ({others} other green thread(s) wait for events that cannot come)"
        self.parked.pop(main, None)
        self.pending[main] = LoopExit(msg)
        self.ready.append(main)

    def _selector_poll(self, timeout: float, maxevents: int) -> list[tuple[int, int]]:
        # The poll of platforms without epoll (macOS, the BSDs: kqueue or
        # poll through selectors).  Those selectors are level-triggered: a
        # descriptor registered for a direction that nobody waits on (a
        # socket that is writable, as almost every socket is) would be
        # reported on every call, and the hub would never sleep.  So before
        # each call the selector's interest is brought in line with the
        # waiters: a direction is registered exactly while a green thread
        # waits on it.  That costs a pass over the registered descriptors
        # per poll, and a system call only where a waiter came or went.
        sel = self._poller
        interest = self._interest
        for fd, st in list(self.fds.items()):
            want = (1 if st.reader is not None else 0) | (2 if st.writer is not None else 0)
            have = interest.get(fd, 0)
            if want == have:
                continue
            try:
                if not have:
                    sel.register(fd, want)
                elif not want:
                    sel.unregister(fd)
                else:
                    sel.modify(fd, want)
            except (OSError, ValueError, KeyError):
                # Closed behind our back: its waiters get the error.
                if interest.pop(fd, 0):
                    try:
                        sel.unregister(fd)
                    except (OSError, ValueError, KeyError):
                        pass
                self.forget(st, raise_in_waiters=True)
                continue
            if want:
                interest[fd] = want
            else:
                del interest[fd]
        out = []
        for key, mask in sel.select(None if timeout < 0 else timeout):
            if key.fd == self._wake_r:
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
                continue
            out.append((key.fd, (1 if mask & 1 else 0) | (4 if mask & 2 else 0)))
        return out

    def stats(self, reset: bool = False) -> dict[str, float | int]:
        """This hub's figures (see :func:`greenline.stats`).  Plain reads:
        another thread may call it for a log line."""
        figures: dict[str, float | int] = {
            "live": self.live,
            "switches": self.switches,
            "loops": self.loops,
            "ready": len(self.ready),
            "parked": len(self.parked),
            "fds": len(self.fds),
            "timers": len(self.timers) - self._cancelled_timers,
            "max_lag_ms": round(self.max_lag * 1000, 3),
        }
        if reset:
            self.switches = self.loops = 0
            self.max_lag = 0.0
        return figures

    def close(self) -> None:
        """Release the poller and wake-up descriptors."""
        if self.closed:
            return
        self.closed = True
        all_hubs.discard(self)
        self.current = None
        try:
            self._poller.close()
        finally:
            os.close(self._wake_r)
            if self._wake_w != self._wake_r:
                os.close(self._wake_w)


def _default_timeout() -> BaseException:
    return TimeoutError("timed out")


class _HubLocal(_local):
    hub: Hub | None = None


# ``this_thread.hub`` is the calling OS thread's hub, or None.  Read it
# directly where a call to get_hub() would cost too much (socket's recv);
# everyone else calls get_hub().
this_thread = _HubLocal()


def other_os_threads() -> bool:
    """Whether another live OS thread (not an idle pool worker) could still
    release a lock or set an event a green thread here waits on: only a lone
    thread can be sure it is deadlocked."""
    from greenline._core import threadpool

    return _thread_count() > threadpool.idle_workers()


def get_hub() -> Hub:
    """The hub of the calling OS thread, created on first use."""
    hub = this_thread.hub
    if hub is None:
        hub = this_thread.hub = Hub()
    return hub


def get_hub_if_exists() -> Hub | None:
    return this_thread.hub


def close_thread_hub() -> None:
    """Close the calling OS thread's hub, if it has one (for a thread that is
    about to end: its descriptors would otherwise outlive it)."""
    hub = this_thread.hub
    if hub is not None:
        this_thread.hub = None
        hub.close()


def stats(reset: bool = False) -> dict[str, float | int]:
    """Figures of the calling thread's hub.

    ``live``: tasks started and not finished; ``switches``: switches into
    green threads; ``loops``: loop passes; ``ready``: green threads waiting to
    run; ``parked``: green threads blocked; ``fds``: descriptors registered;
    ``timers``: armed timers; ``max_lag_ms``: the longest the hub spent running
    green threads between two polls (how late an IO event could be served).
    ``reset`` zeroes the counters and the lag after reading them.

    >>> import greenline
    >>> sorted(greenline.stats())
    ['fds', 'live', 'loops', 'max_lag_ms', 'parked', 'ready', 'switches', 'timers']
    """
    return get_hub().stats(reset)


def sleep(seconds: float = 0) -> None:
    """Block the calling green thread for ``seconds``; ``sleep(0)`` lets every
    other ready green thread run once first.

    >>> import greenline
    >>> greenline.sleep(0.01)
    """
    hub = get_hub()
    if seconds <= 0:
        hub.yield_now()
    else:
        hub.sleep(seconds)


def _after_fork_in_child() -> None:
    # The child keeps only the green thread that called fork().  The parent's
    # hub, poller (an epoll instance shared with the parent!), timers and
    # other green threads are dropped; a fresh hub is made on first use.
    old = this_thread.hub
    this_thread.hub = None
    if old is None:
        return
    current = getcurrent()
    all_hubs.discard(old)
    old.closed = True
    try:
        old._poller.close()
    except OSError:
        pass
    for fd in {old._wake_r, old._wake_w}:
        try:
            os.close(fd)
        except OSError:
            pass
    for st in old.fds.values():
        st.hub = None
        st.reader = st.writer = None
        st.readable = st.writable = True
    if current is not old.main and current is not old.greenlet:
        # fork() was called from a green thread: it becomes the child's only
        # one, and the new hub's main (deadlocks are reported to it).  When it
        # ends the child exits, as a process does when its last thread ends:
        # the parent's main green thread is parked in the parent's hub and
        # must never run here.
        get_hub()
        current.parent = greenlet(_child_exit, parent=old.main)


def _child_exit(*_args: object) -> None:
    # Reached when the green thread that forked returns in the child.
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(0)


os.register_at_fork(after_in_child=_after_fork_in_child)
