"""``greenline serve``: processes × threads × green threads on one port.

The supervisor (the process you start) binds the listening socket, then
forks ``--procs`` workers.  Each worker runs ``--threads`` OS threads, each
with its own hub, its own accept loop (a :class:`~greenline.servers.stream.StreamServer`
on a duplicate of the listening socket) and a green thread per connection.

Why one inherited listening socket rather than one ``SO_REUSEPORT`` socket per
worker: with ``SO_REUSEPORT`` the kernel gives each socket its own accept
queue and hashes every new connection to one of them, so when a worker exits
(replaced on SIGHUP, or killed) the connections waiting in its queue are
reset.  With one shared socket there is a single queue that outlives every
worker: a worker that stops accepting leaves the waiting connections to the
others, which is what lets SIGHUP replace workers without refusing anyone and
lets a SIGKILLed worker cost only its own connections.

Sharing connections out.  The price of one shared queue: the kernel wakes
every worker's epoll for a new connection, and whichever runs first accepts
everything waiting (a burst of 50 went to one of two workers).  With
``SO_REUSEPORT`` the kernel would hash connections evenly, at the cost
above.  So the workers balance themselves: each publishes how many
connections it holds in a table shared by all (:class:`Loads`, anonymous
shared memory made before the first fork), and a worker that holds more than
``BALANCE_SLACK`` above the least loaded one, finding a connection waiting,
leaves it in the queue for up to ``BALANCE_MAX_DEFER`` (sleeping, so that an
idle worker gets the CPU and takes it) before taking it itself.  Waiting for
a connection to be there without taking it is done on a duplicate of the
listener (the listener's own descriptor is registered for ``accept``).  A
worker whose deferral times out (the others take nothing: stuck, or at
their connection limit) stops deferring for ``BALANCE_BACKOFF``.  Nothing is
shared on the hot path but one write per accepted connection.

Signals (to the supervisor), gunicorn's:

* SIGTERM, SIGINT: every worker stops accepting and finishes its connections
  for up to ``--graceful-timeout`` seconds, then closes the rest; the
  supervisor exits 0.  SIGQUIT: the same, the connections closed at once.
* SIGHUP: workers are replaced one at a time, each new one accepting before
  the old one is told to stop; the new ones import the app's own modules
  again (``reload_factory``), so a reload loads new code.
* SIGTTIN, SIGTTOU: one worker more, one fewer.
* SIGUSR1: the log files are reopened, here and in every worker.
* A worker told to stop that is still alive ``KILL_MARGIN`` after its
  graceful timeout is killed (a handler spinning without IO never stops).
* A worker that dies is restarted, after a delay that grows while it keeps
  dying young.

The supervisor prints ``listening on HOST:PORT`` on stdout once, when every
worker accepts; everything else is logged on stderr, one line per event, each
with the pid of the process it concerns.

What runs on the connections is not the supervisor's business: it is given a
server factory (:data:`ServerFactory`), called in each worker thread with
that thread's copy of the listening socket, which returns the server to run
there: a :class:`~greenline.servers.stream.StreamServer` around a
``handle(sock, address)`` (:func:`stream_server_factory`), or a subclass of
it that speaks a protocol (``greenline serve --wsgi`` passes one making
:class:`greenline.wsgi.WSGIServer`).  The supervisor only starts, counts and
stops what the factory makes.

On a stop (SIGTERM, SIGINT) the listening socket is closed everywhere at
once, the supervisor's copy first: a client connecting then is refused at
once instead of waiting in a queue that no worker will ever accept from,
only to be reset when the last worker exits.
"""

from __future__ import annotations

import _thread
import errno
import logging
import math
import mmap
import os
import select
import signal
import socket as _stdsocket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from greenline.servers.stream import StreamServer
    from greenline.socket import socket as GreenSocket

__all__ = ["ServeConfig", "Supervisor", "Worker", "WORKER_BOOT_ERROR", "ServerFactory",
           "stream_server_factory"]

log = logging.getLogger("greenline.serve")

# Saved at import: a user's app may monkey-patch these in the supervisor or the
# workers, and our threads and our wait for events must stay real.
_start_new_thread = _thread.start_new_thread
_allocate_lock = _thread.allocate_lock
_poll = select.poll
_socketpair = _stdsocket.socketpair
_create_server = _stdsocket.create_server
# monkey.patch_all() wraps signal handlers to run in green threads; ours only
# note the signal, and must run as they are in any thread.
_set_handler = signal.signal
_waitpid = os.waitpid

# A worker that fails before it accepts exits with this; the supervisor then
# gives up instead of restarting it forever.
WORKER_BOOT_ERROR = 3

# A worker that accepted and lived at least this long was not crash-looping
# (killed by an operator or the OOM killer, or one bad request): restart it at
# once.  One that dies sooner, or before it accepts, restarts after a delay
# that doubles each time, so a crash loop costs a fork per RESTART_MAX_DELAY.
HEALTHY_SECONDS = 1.0
RESTART_MIN_DELAY = 0.1
RESTART_MAX_DELAY = 10.0
# How much longer than the graceful timeout a stopping worker may take before
# the supervisor kills it (the worker's own unwinding is bounded by a second
# and a half): a worker told to stop (SIGTERM, or replaced on SIGHUP, or
# dropped on SIGTTOU) whose handler spins without IO would never stop.
KILL_MARGIN = 3.0

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Fast stop: connections are closed at once.
_QUIT = signal.SIGQUIT
_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD,
                    signal.SIGUSR1, signal.SIGTTIN, signal.SIGTTOU)
# Of those, the ones a worker acts on (the others are the supervisor's; a
# worker ignores them, since a terminal or `kill -- -PGID` may send them to
# the whole process group).
_WORKER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1)


@dataclass
class ServeConfig:
    app: str
    host: str = "127.0.0.1"
    port: int = 8080
    #: A Unix socket path to listen on instead of host and port.
    unix: str | None = None
    procs: int = 1
    threads: int = 1
    max_conns: int | None = None
    idle_timeout: float | None = None
    graceful_timeout: float = 10.0
    backlog: int = 2048
    certfile: str | None = None
    keyfile: str | None = None
    stats_interval: float | None = None
    handshake_timeout: float | None = 10.0

    def where(self) -> str:
        """What the server listens on, as the ``listening on`` line says it."""
        if self.unix is not None:
            return f"unix:{self.unix}"
        return f"{format_host(self.host)}:{self.port}"

    def ssl_args(self) -> dict[str, Any]:
        if not self.certfile:
            return {}
        return {"certfile": self.certfile, "keyfile": self.keyfile}


#: Makes the server of one worker thread: called in that thread with its own
#: cooperative duplicate of the listening socket; returns an unstarted
#: :class:`~greenline.servers.stream.StreamServer` (or subclass).  Called in
#: the worker, after fork: what it captured travels by fork, not by pickling.
ServerFactory = Callable[["GreenSocket"], "StreamServer"]


def stream_server_factory(handler: Callable[[Any, Any], object], cfg: ServeConfig) -> ServerFactory:
    """The factory for a plain ``handle(sock, address)`` app."""

    def make(sock: GreenSocket) -> StreamServer:
        from greenline.servers.stream import StreamServer

        return StreamServer(sock, handler, max_connections=cfg.max_conns,
                            idle_timeout=cfg.idle_timeout, handshake_timeout=cfg.handshake_timeout,
                            **cfg.ssl_args())

    return make


def _somaxconn() -> int | None:
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def bind(cfg: ServeConfig) -> _stdsocket.socket:
    """The listening socket every worker accepts on."""
    backlog = cfg.backlog
    cap = _somaxconn()
    if cap is not None:
        backlog = min(backlog, cap)
    if cfg.unix is not None:
        return _bind_unix(cfg.unix, backlog)
    family = _stdsocket.AF_INET6 if ":" in cfg.host else _stdsocket.AF_INET
    return _create_server((cfg.host, cfg.port), family=family, backlog=backlog)


def _bind_unix(path: str, backlog: int) -> _stdsocket.socket:
    """A listening Unix socket at ``path``.  A socket file left there by a
    server that is gone (nobody accepts on it) is replaced; one a live server
    listens on, or a file that is not a socket, is an error (EADDRINUSE)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise OSError(errno.EADDRINUSE, f"{path} exists and is not a socket")
        probe = _stdsocket.socket(_stdsocket.AF_UNIX, _stdsocket.SOCK_STREAM)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # stale: its server is gone
        except OSError:
            pass  # let bind() say what is wrong
        else:
            raise OSError(errno.EADDRINUSE, "another server listens on it")
        finally:
            probe.close()
    sock = _stdsocket.socket(_stdsocket.AF_UNIX, _stdsocket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# Signals seen by the Python-level handler.  A worker is forked with the
# supervisor's handler still in place and sets up its own a moment later: a
# stop signal that lands in between is found here instead of being lost.
_seen_signals: set[int] = set()


def _ignore_signal(signum: int, frame: Any) -> None:
    # A Python-level handler must exist (the default would kill or ignore);
    # the work is done by whoever reads the wake-up descriptor.
    _seen_signals.add(signum)


def _nonblocking_pipe() -> tuple[int, int]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    return r, w


def _drain_signals(fd: int) -> list[int]:
    out: list[int] = []
    while True:
        try:
            data = os.read(fd, 512)
        except BlockingIOError:
            return out
        if not data:
            return out
        out.extend(data)


# ---------------------------------------------------------------------------
# Sharing the connections out between workers

# Open connections per worker, in memory shared by the supervisor and every
# worker (each writes its own cell, reads the others'); cell 0 holds how many
# cells are in use.  -1: not accepting (starting, stopping, gone).
MAX_CELLS = 1024
# A worker that holds more than this many connections above the least
# loaded worker leaves a pending connection to the others...
BALANCE_SLACK = 1
# ... for up to this long (checking every BALANCE_STEP): long enough for an
# idle worker on a busy machine to be scheduled and take it.  If nobody has
# taken it by then, it accepts it, and stops deferring for BALANCE_BACKOFF
# (a worker that does not take connections, say one whose handler spins,
# must not delay every new client by BALANCE_MAX_DEFER).
BALANCE_STEP = 0.001
BALANCE_MAX_DEFER = 0.05
BALANCE_BACKOFF = 1.0
# How often an idle worker publishes its count (connections closing lower it).
BALANCE_PUBLISH = 0.2


class Loads:
    """The shared table of connections per worker; see MAX_CELLS."""

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, 8 * (MAX_CELLS + 1))
        self.cells = memoryview(self._map).cast("q")
        for i in range(1, MAX_CELLS + 1):
            self.cells[i] = -1
        self.cells[0] = 0
        self._taken: set[int] = set()

    def allocate(self) -> int | None:
        """A free cell for a new worker (in the supervisor), or None: that
        worker then takes part in no balancing."""
        cells = self.cells
        for i in range(1, MAX_CELLS + 1):
            if cells[i] == -1 and i not in self._taken:
                self._taken.add(i)
                cells[0] = max(cells[0], i)
                return i
        return None

    def release(self, cell: int | None) -> None:
        if cell is not None:
            self.cells[cell] = -1
            self._taken.discard(cell)

    def least_of_others(self, mine: int) -> int | None:
        cells = self.cells
        least = None
        for i in range(1, cells[0] + 1):
            if i != mine:
                n = cells[i]
                if n >= 0 and (least is None or n < least):
                    least = n
        return least


def _balanced_socket_class() -> type:
    """A green listening socket whose ``accept`` first leaves a pending
    connection to a less loaded worker (see the module docstring)."""
    global _BalancedSocket
    if _BalancedSocket is not None:
        return _BalancedSocket
    from greenline._core.hub import get_hub
    from greenline.socket import socket as GreenSocketClass
    from greenline.socket import wait_read

    def pending(fd: int) -> bool:
        p = _poll()
        p.register(fd, select.POLLIN)
        return bool(p.poll(0))

    class BalancedSocket(GreenSocketClass):  # type: ignore[misc,valid-type]
        __slots__ = ("_gl_worker", "_gl_probe", "_gl_backoff_until")
        _gl_worker: Worker | None
        _gl_probe: int
        _gl_backoff_until: float

        def accept(self) -> Any:
            worker = self._gl_worker
            if worker is not None and worker.cell is not None:
                self._defer(worker)
            got = super().accept()
            if worker is not None:
                worker.publish(1)
            return got

        def _defer(self, worker: Worker) -> None:
            hub = get_hub()
            loads, cell = worker.loads, worker.cell
            assert loads is not None and cell is not None
            probe: int = self._gl_probe
            while True:
                least = loads.least_of_others(cell)
                if least is None or worker.load() <= least + BALANCE_SLACK:
                    return
                if monotonic() < self._gl_backoff_until:
                    return
                if probe < 0:
                    # A descriptor of its own to wait on: the listener's is
                    # registered for accept().
                    probe = self._gl_probe = os.dup(self.fileno())
                if not pending(probe):
                    # Nothing to leave to the others: wait for a connection
                    # (without taking it), then look again.
                    wait_read(probe)
                    continue
                deadline = monotonic() + BALANCE_MAX_DEFER
                while pending(probe) and monotonic() < deadline:
                    hub.sleep(BALANCE_STEP)
                    least = loads.least_of_others(cell)
                    if least is None or worker.load() <= least + BALANCE_SLACK:
                        return
                if pending(probe):
                    # Nobody took it: the others are not accepting.
                    self._gl_backoff_until = monotonic() + BALANCE_BACKOFF
                    return

        def _real_close(self, _ss: Any = None) -> None:
            probe, self._gl_probe = self._gl_probe, -1
            if probe >= 0:
                os.close(probe)
            super()._real_close(_ss)  # type: ignore[misc]

    _BalancedSocket = BalancedSocket
    return BalancedSocket


_BalancedSocket: type | None = None


# ---------------------------------------------------------------------------
# The worker process


class Worker:
    """One worker process: ``threads`` OS threads, each with a hub and an
    accept loop on the shared listener."""

    def __init__(self, cfg: ServeConfig, make_server: ServerFactory,
                 listener: _stdsocket.socket, ctrl: _stdsocket.socket,
                 reopen_logs: Callable[[], object] | None = None,
                 loads: Loads | None = None, cell: int | None = None) -> None:
        self.cfg = cfg
        self.make_server = make_server
        self.listener = listener
        self.ctrl = ctrl
        self.reopen_logs = reopen_logs
        self.loads = loads
        self.cell = cell if loads is not None else None
        self._lock = _allocate_lock()
        self._servers: list[tuple[Any, Any]] = []  # (hub, StreamServer)
        self._ready = 0
        self._done = 0
        self._failed = False
        self._stopping = False
        self._stop_timeout = cfg.graceful_timeout
        self._announced = False
        self._main_hub: Any = None
        self._main_waiter: Any = None

    def run(self) -> int:
        from greenline._core.hub import get_hub
        from greenline._core.task import Task
        from greenline.socket import wait_read

        hub = self._main_hub = get_hub()
        wake_r, wake_w = _nonblocking_pipe()
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for sig in _HANDLED_SIGNALS:
            if sig != signal.SIGCHLD:
                _set_handler(sig, _ignore_signal)
        _set_handler(signal.SIGCHLD, signal.SIG_DFL)

        def watch_signals() -> None:
            while True:
                wait_read(wake_r)
                for signum in _drain_signals(wake_r):
                    if signum in _STOP_SIGNALS:
                        self.begin_stop(signal.Signals(signum).name)
                    elif signum == _QUIT:
                        self.begin_stop("SIGQUIT", fast=True)
                    elif signum == signal.SIGUSR1:
                        self._reopen_logs()
                    # SIGHUP, SIGTTIN, SIGTTOU reach workers too when a
                    # terminal or a kill of the whole group sends them;
                    # replacing, adding and removing workers is the
                    # supervisor's job.

        def watch_supervisor() -> None:
            fd = self.ctrl.fileno()
            os.set_blocking(fd, False)
            while True:
                wait_read(fd)
                try:
                    data = os.read(fd, 64)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    # The supervisor is gone (killed): nobody would restart or
                    # stop us, so stop now rather than live on as an orphan.
                    log.warning("supervisor gone; stopping")
                    self.begin_stop("supervisor exit")
                    return

        Task(watch_signals).start()
        Task(watch_supervisor).start()
        if self.cfg.stats_interval:
            Task(self._log_stats, self.cfg.stats_interval).start()
        if _QUIT in _seen_signals:
            self.begin_stop("SIGQUIT", fast=True)
        early = _seen_signals.intersection(_STOP_SIGNALS)
        if early:
            self.begin_stop(signal.Signals(min(early)).name)
        for index in range(1, self.cfg.threads):
            _start_new_thread(self._thread_main, (index,))
        self._thread_main(0)
        # Our own server is done; wait for the other threads' to be.
        self._main_waiter = _current()
        while self._done < self.cfg.threads:
            hub.block()
        if self._failed:
            return 1 if self._announced else WORKER_BOOT_ERROR
        return 0

    def load(self) -> int:
        """Connections this worker handles now (plain reads of every
        thread's count: exact enough to share connections out)."""
        return sum(srv.connection_count for _hub, srv in self._servers)

    def publish(self, extra: int = 0) -> None:
        """Tell the other workers how loaded this one is (``extra``: a
        connection just accepted, not counted yet)."""
        if self.cell is not None and self.loads is not None and not self._stopping:
            self.loads.cells[self.cell] = self.load() + extra

    def _publish_every(self, interval: float) -> None:
        from greenline._core.hub import sleep

        while not self._stopping:
            self.publish()
            sleep(interval)

    def _reopen_logs(self) -> None:
        if self.reopen_logs is None:
            return
        try:
            self.reopen_logs()
        except Exception:
            log.exception("SIGUSR1: reopening the logs failed")
        else:
            log.info("SIGUSR1: logs reopened")

    def _log_stats(self, interval: float) -> None:
        from greenline._core.hub import sleep

        last = 0
        while not self._stopping:
            sleep(interval)
            # Plain reads of other threads' counters: exact enough for a log.
            servers = [srv for _hub, srv in list(self._servers)]
            accepted = sum(srv.accepted for srv in servers)
            log.info("stats: %d connection(s) open, %d accepted (+%d in %.3g s), %d handler error(s)",
                     sum(srv.connection_count for srv in servers), accepted, accepted - last,
                     interval, sum(srv.failed for srv in servers))
            for index, (hub, _srv) in enumerate(list(self._servers)):
                f = hub.stats(reset=True)
                log.info("stats: thread %d hub: %d live green threads, %d switches, %d loops "
                         "in %.3g s, %d ready, %d parked, largest loop lag %.1f ms",
                         index, f["live"], f["switches"], f["loops"], interval, f["ready"],
                         f["parked"], f["max_lag_ms"])
            last = accepted

    # -- per thread ------------------------------------------------------

    def _thread_main(self, index: int) -> None:
        from greenline import socket as gsocket
        from greenline._core.hub import get_hub

        if index:
            # Signals are the main thread's business: its wake-up descriptor
            # sees them; here they would only interrupt system calls.
            signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED_SIGNALS)
        hub = get_hub()
        server = None
        try:
            lst = self.listener
            with self._lock:
                # begin_stop closes the listener: copy it only while open.
                if self._stopping:
                    return
                if self.cell is None:
                    sock = gsocket.fromfd(lst.fileno(), lst.family, lst.type, lst.proto)
                else:
                    sock = _balanced_socket_class()(lst.family, lst.type, lst.proto, os.dup(lst.fileno()))
                    sock._gl_worker = self
                    sock._gl_probe = -1
                    sock._gl_backoff_until = 0.0
            server = self.make_server(sock)
            server.start()
            with self._lock:
                self._servers.append((hub, server))
                stopping = self._stopping
            self._main_call(self._on_ready, index)
            if stopping:
                _spawn_stop((server, self._stop_timeout))
            server.serve_forever(self.cfg.graceful_timeout)
        except BaseException:
            log.exception("worker thread %d failed", index)
            self._failed = True
            self._main_call(lambda _a: self.begin_stop("thread failure"), None)
        finally:
            if index:
                self._main_call(self._on_thread_done, index)
            else:
                self._on_thread_done(index)

    def _main_call(self, fn: Callable[[Any], object], arg: Any) -> None:
        hub = self._main_hub
        if _thread.get_ident() == hub.thread_ident:
            fn(arg)
        else:
            hub.call_threadsafe(fn, arg)

    # -- in the main thread's hub ---------------------------------------

    def _on_ready(self, _index: int) -> None:
        self._ready += 1
        if self._ready == self.cfg.threads and not self._announced:
            self._announced = True
            if self.cell is not None:
                from greenline._core.task import Task

                Task(self._publish_every, BALANCE_PUBLISH).start()
            log.debug("worker accepting in %d thread(s)", self.cfg.threads)
            try:
                os.write(self.ctrl.fileno(), b"R")
            except OSError:
                pass  # the supervisor is gone; watch_supervisor handles it

    def _on_thread_done(self, _index: int) -> None:
        self._done += 1
        g = self._main_waiter
        if g is not None:
            self._main_hub.wake(g)

    def begin_stop(self, why: str, fast: bool = False) -> None:
        with self._lock:
            if self._stopping:
                if fast and self._stop_timeout > 0:
                    # A fast stop asked for during a graceful one: end now.
                    log.info("stopping at once (%s)", why)
                    _flush_and_exit(0)
                return
            self._stopping = True
            if self.cell is not None and self.loads is not None:
                self.loads.cells[self.cell] = -1  # no longer takes connections
            if fast:
                self._stop_timeout = 0.0
            servers = list(self._servers)
            # Our inherited copy of the listening socket: each server closes
            # its own duplicate as it stops, and the last copy closed
            # anywhere makes the kernel refuse new clients (see the module
            # docstring).
            self.listener.close()
        timeout = self._stop_timeout
        if fast:
            log.info("stopping (%s): closing open connections now", why)
        else:
            log.info("stopping (%s): finishing open connections for up to %.3g s", why, timeout)
        for hub, server in servers:
            if hub is self._main_hub:
                _spawn_stop((server, timeout))
            else:
                hub.call_threadsafe(_spawn_stop, (server, timeout))


def _current() -> Any:
    from greenlet import getcurrent

    return getcurrent()


def _spawn_stop(arg: tuple[Any, float]) -> None:
    # Runs in the server's own hub (a hub callback must not block, stop does).
    from greenline._core.task import Task

    server, timeout = arg
    Task(server.stop, timeout).start()


def _flush_and_exit(code: int) -> NoReturn:
    try:
        for h in logging.getLogger().handlers:
            h.flush()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        # Never return into the supervisor's code, nor run its atexit hooks.
        os._exit(code)


def _worker_entry(cfg: ServeConfig, make_server: ServerFactory,
                  listener: _stdsocket.socket, ctrl: _stdsocket.socket,
                  load: Callable[[], ServerFactory] | None,
                  reopen_logs: Callable[[], object] | None,
                  loads: Loads | None = None, cell: int | None = None) -> NoReturn:
    code = 1
    try:
        if load is not None:
            # Forked after a SIGHUP: import the app's code again, so that the
            # new workers run what is on disk now (see the module docstring).
            try:
                make_server = load()
            except Exception as e:
                log.error("worker cannot load the app: %s", e)
                _flush_and_exit(WORKER_BOOT_ERROR)
            log.info("worker started (app imported again)")
        else:
            log.info("worker started")
        code = Worker(cfg, make_server, listener, ctrl, reopen_logs, loads, cell).run()
        log.info("worker exiting")
    except BaseException:
        log.exception("worker failed")
        code = WORKER_BOOT_ERROR
    finally:
        _flush_and_exit(code)


# ---------------------------------------------------------------------------
# The supervisor


@dataclass
class _Proc:
    pid: int
    slot: int
    ctrl: _stdsocket.socket
    started: float
    ready: bool = False
    stopping: bool = False
    replaces: int | None = None  # pid of the worker this one replaces (SIGHUP)
    stop_asked: float = 0.0  # when it was told to stop
    cell: int | None = None  # its cell in the shared Loads
    kill_at: float | None = None  # killed if still alive then


@dataclass
class _Slot:
    failures: int = 0
    restart_at: float | None = None


class Supervisor:
    """Forks and watches the workers; see the module docstring.

    ``reload_factory``, if given, makes a new server factory by importing the
    app's code again; a worker forked after a SIGHUP calls it (in the
    worker, after fork), so SIGHUP loads new code.  ``reopen_logs`` is called
    on SIGUSR1, in the supervisor and in every worker.
    """

    def __init__(self, cfg: ServeConfig, make_server: ServerFactory,
                 listener: _stdsocket.socket, out: Any = None, *,
                 reload_factory: Callable[[], ServerFactory] | None = None,
                 reopen_logs: Callable[[], object] | None = None) -> None:
        self.cfg = cfg
        self.make_server = make_server
        self.listener = listener
        self.out = out if out is not None else sys.stdout
        self.reload_factory = reload_factory
        self.reopen_logs = reopen_logs
        # Set by the first SIGHUP: from then on every new worker imports the
        # app again, so all of them run the code of the last reload.
        self.fresh_code = False
        self.procs: dict[int, _Proc] = {}
        self.loads = Loads()
        self.slots = [_Slot() for _ in range(cfg.procs)]
        self.announced = False
        self.shutting_down = False
        self.fast = False
        self.reload_queue: list[int] = []
        self.reload_current: _Proc | None = None
        self.exit_code = 0
        self._wake_r = -1
        self._wake_w = -1
        self._eof: set[int] = set()

    # -- processes ---------------------------------------------------------

    def spawn(self, slot: int, replaces: int | None = None) -> _Proc:
        parent_end, child_end = _socketpair()
        # The supervisor reads its signals from the wake-up descriptor; the
        # set is for the child, which must start with none but its own.
        _seen_signals.clear()
        fresh = self.fresh_code and self.reload_factory is not None
        cell = self.loads.allocate()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; covered by the CLI tests
            try:
                parent_end.close()
                for p in self.procs.values():
                    p.ctrl.close()
                signal.set_wakeup_fd(-1)
                os.close(self._wake_r)
                os.close(self._wake_w)
            except BaseException:
                os._exit(WORKER_BOOT_ERROR)
            _worker_entry(self.cfg, self.make_server, self.listener, child_end,
                          self.reload_factory if fresh else None, self.reopen_logs, self.loads, cell)
        child_end.close()
        proc = _Proc(pid, slot, parent_end, monotonic(), replaces=replaces, cell=cell)
        self.procs[pid] = proc
        self.slots[slot].restart_at = None
        log.info("started worker %d (slot %d)%s", pid, slot,
                 f", replacing {replaces}" if replaces else "")
        return proc

    def _signal(self, proc: _Proc, sig: int) -> None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop_worker(self, proc: _Proc, fast: bool = False) -> None:
        """Tell a worker to stop (SIGTERM, or SIGQUIT for a fast stop), and
        when to kill it if it has not: its graceful timeout (none for a fast
        stop) plus KILL_MARGIN."""
        if proc.stopping and not fast:
            return
        now = monotonic()
        if not proc.stopping:
            proc.stop_asked = now
        proc.stopping = True
        timeout = 0.0 if fast else self.cfg.graceful_timeout
        kill_at = now + timeout + KILL_MARGIN
        if math.isfinite(kill_at) and (proc.kill_at is None or kill_at < proc.kill_at):
            proc.kill_at = kill_at
        self._signal(proc, _QUIT if fast else signal.SIGTERM)

    def _kill_overdue(self, now: float) -> None:
        for proc in list(self.procs.values()):
            if proc.kill_at is not None and now >= proc.kill_at:
                log.warning("worker %d still running %.1f s after it was told to stop; "
                            "killing it (SIGKILL)", proc.pid, now - proc.stop_asked)
                proc.kill_at = None
                self._signal(proc, signal.SIGKILL)

    # -- events ------------------------------------------------------------

    def _on_ready(self, proc: _Proc) -> None:
        proc.ready = True
        log.info("worker %d accepting", proc.pid)
        if not self.announced and sum(1 for p in self.procs.values() if p.ready) >= self.cfg.procs:
            self.announced = True
            print(f"listening on {self.cfg.where()}", file=self.out, flush=True)
        if self.reload_current is proc:
            old = self.procs.get(proc.replaces or -1)
            if old is not None:
                log.info("worker %d replaced by %d; stopping it", old.pid, proc.pid)
                self.stop_worker(old)
            self.reload_current = None
            self._reload_next()

    def _on_exit(self, pid: int, status: int) -> None:
        proc = self.procs.pop(pid, None)
        if proc is None:
            return
        proc.ctrl.close()
        self._eof.discard(pid)
        self.loads.release(proc.cell)
        code = os.waitstatus_to_exitcode(status)
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        if proc.stopping or self.shutting_down:
            log.info("worker %d %s", pid, how)
            return
        lived = monotonic() - proc.started
        if self.reload_current is proc:
            log.error("new worker %d %s before accepting; reload abandoned, the old workers "
                      "go on", pid, how)
            self.reload_current = None
            self.reload_queue.clear()
            return
        if proc.slot >= len(self.slots):
            log.warning("worker %d %s", pid, how)
            return  # its slot was removed (SIGTTOU)
        if code == WORKER_BOOT_ERROR and not proc.ready and not self.announced:
            log.error("worker %d failed to start (%s); shutting down", pid, how)
            self.exit_code = 1
            self.begin_shutdown("a worker failed to start")
            return
        if any(p.slot == proc.slot and not p.stopping for p in self.procs.values()):
            log.warning("worker %d %s", pid, how)
            return  # its replacement is already running
        slot = self.slots[proc.slot]
        if proc.ready and lived >= HEALTHY_SECONDS:
            slot.failures = 0
            delay = 0.0
        else:
            slot.failures += 1
            delay = min(RESTART_MIN_DELAY * 2 ** (slot.failures - 1), RESTART_MAX_DELAY)
        log.warning("worker %d %s after %.1f s; restarting in %.1f s", pid, how, lived, delay)
        slot.restart_at = monotonic() + delay

    def begin_shutdown(self, why: str, fast: bool = False) -> None:
        if self.shutting_down:
            if fast and not self.fast:
                self.fast = True
                log.info("%s: stopping at once", why)
                for proc in list(self.procs.values()):
                    self.stop_worker(proc, fast=True)
            return
        self.shutting_down = True
        self.fast = fast
        self.reload_queue.clear()
        if fast:
            log.info("shutting down (%s): %d worker(s) closing their connections now",
                     why, len(self.procs))
        else:
            log.info("shutting down (%s): %d worker(s) finishing for up to %.3g s",
                     why, len(self.procs), self.cfg.graceful_timeout)
        # Nobody will be forked to accept from it again: our copy goes now,
        # the workers' as they stop (see the module docstring).
        self.listener.close()
        for proc in list(self.procs.values()):
            self.stop_worker(proc, fast=fast)

    def begin_reload(self) -> None:
        if self.shutting_down:
            return
        if self.reload_current is not None or self.reload_queue:
            log.info("SIGHUP: a reload is already under way")
            return
        if self.reload_factory is not None:
            self.fresh_code = True
        self.reload_queue = [p.pid for p in self.procs.values() if not p.stopping]
        log.info("SIGHUP: replacing %d worker(s) one at a time%s", len(self.reload_queue),
                 ", each importing the app again" if self.fresh_code else "")
        self._reload_next()

    def _reload_next(self) -> None:
        while self.reload_queue and self.reload_current is None:
            old = self.procs.get(self.reload_queue.pop(0))
            if old is None or old.stopping:
                continue
            self.reload_current = self.spawn(old.slot, replaces=old.pid)
        if not self.reload_queue and self.reload_current is None:
            log.info("reload complete")

    def add_worker(self) -> None:
        """SIGTTIN: one more worker, in a new slot."""
        if self.shutting_down:
            return
        self.slots.append(_Slot())
        self.cfg.procs = len(self.slots)
        log.info("SIGTTIN: %d worker(s)", self.cfg.procs)
        self.spawn(len(self.slots) - 1)

    def remove_worker(self) -> None:
        """SIGTTOU: one worker fewer (never none): the last slot's worker
        stops gracefully and is not replaced."""
        if self.shutting_down:
            return
        if len(self.slots) <= 1:
            log.info("SIGTTOU: already down to one worker")
            return
        self.slots.pop()
        gone = len(self.slots)
        self.cfg.procs = gone
        log.info("SIGTTOU: %d worker(s)", self.cfg.procs)
        for proc in list(self.procs.values()):
            if proc.slot == gone:
                if self.reload_current is proc:
                    self.reload_current = None
                self.stop_worker(proc)
        self._reload_next()

    def _reopen_logs(self) -> None:
        if self.reopen_logs is not None:
            try:
                self.reopen_logs()
            except Exception:
                log.exception("SIGUSR1: reopening the logs failed")
        log.info("SIGUSR1: logs reopened; telling %d worker(s)", len(self.procs))
        for proc in list(self.procs.values()):
            self._signal(proc, signal.SIGUSR1)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = _waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._on_exit(pid, status)

    # -- the loop ----------------------------------------------------------

    def run(self) -> int:
        self._wake_r, self._wake_w = _nonblocking_pipe()
        old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        old_handlers = {sig: _set_handler(sig, _ignore_signal) for sig in _HANDLED_SIGNALS}
        try:
            log.info("serving %s on %s%s with %d process(es) x %d thread(s)", self.cfg.app,
                     self.cfg.where(), " (TLS)" if self.cfg.certfile else "",
                     self.cfg.procs, self.cfg.threads)
            for slot in range(self.cfg.procs):
                self.spawn(slot)
            while self.procs or not self.shutting_down:
                self._step()
            log.info("stopped")
            return self.exit_code
        finally:
            for sig, h in old_handlers.items():
                _set_handler(sig, h)
            signal.set_wakeup_fd(old_wakeup)
            os.close(self._wake_r)
            os.close(self._wake_w)
            for p in self.procs.values():
                p.ctrl.close()

    def _on_signal(self, signum: int) -> None:
        if signum in _STOP_SIGNALS:
            self.begin_shutdown(signal.Signals(signum).name)
        elif signum == _QUIT:
            self.begin_shutdown("SIGQUIT", fast=True)
        elif signum == signal.SIGHUP:
            self.begin_reload()
        elif signum == signal.SIGTTIN:
            self.add_worker()
        elif signum == signal.SIGTTOU:
            self.remove_worker()
        elif signum == signal.SIGUSR1:
            self._reopen_logs()

    def _step(self) -> None:
        now = monotonic()
        deadlines = [s.restart_at for s in self.slots if s.restart_at is not None]
        deadlines += [p.kill_at for p in self.procs.values() if p.kill_at is not None]
        timeout = max(0.0, min(deadlines) - now) if deadlines else None
        watch = {p.ctrl.fileno(): p for p in self.procs.values() if p.pid not in self._eof}
        # poll, not select: descriptors may be numbered past FD_SETSIZE
        # (1024) when the process inherited many.
        poller = _poll()
        for fd in (self._wake_r, *watch):
            poller.register(fd, select.POLLIN)
        try:
            events = poller.poll(None if timeout is None else math.ceil(timeout * 1000))
        except OSError as e:  # pragma: no cover - EINTR is retried by Python
            if e.errno != errno.EINTR:
                raise
            events = []
        readable = [fd for fd, _mask in events]
        if self._wake_r in readable:
            for signum in _drain_signals(self._wake_r):
                self._on_signal(signum)
        for fd in readable:
            proc = watch.get(fd)
            if proc is None:
                continue
            try:
                data = proc.ctrl.recv(64)
            except OSError:
                data = b""
            if not data:
                self._eof.add(proc.pid)  # dying: waitpid will tell
            elif b"R" in data and not proc.ready:
                self._on_ready(proc)
        self._reap()
        now = monotonic()
        self._kill_overdue(now)
        if self.shutting_down:
            return
        for index, slot in enumerate(self.slots):
            if slot.restart_at is not None and now >= slot.restart_at:
                self.spawn(index)


# ---------------------------------------------------------------------------
# The command line
