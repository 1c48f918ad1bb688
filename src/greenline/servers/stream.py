"""StreamServer: a TCP server that runs each connection in its own green thread.

The same shape as gevent's ``StreamServer``, so a gevent server ports by
changing the import::

    from greenline.servers.stream import StreamServer

    def handle(sock, address):
        while data := sock.recv(65536):
            sock.sendall(data.upper())

    StreamServer(("127.0.0.1", 8080), handle).serve_forever()

One server belongs to the hub of the OS thread that starts it: its accept loop
and every connection's green thread run there.  To use several threads or
processes, run one server per thread on the same port (what ``greenline
serve`` does; see :mod:`greenline.servers.supervisor`).

The accept loop is written to survive what a real network throws at it:

* out of descriptors (``EMFILE``/``ENFILE``) it sleeps with a growing delay
  and logs once per episode, instead of spinning on a listener that stays
  readable; the connections wait in the kernel's backlog meanwhile;
* ``ECONNABORTED`` and kin (a client gone before we accepted it) are skipped;
* a handler that raises is logged with its peer address, its connection is
  closed, and nothing else is disturbed (``SystemExit`` and
  ``KeyboardInterrupt`` included); a reset by the peer is only a debug
  line, as the seed's server treats it;
* a TLS client gets its TLS state only once it has sent something, and is
  closed if its handshake is not done within ``handshake_timeout``;
* after a burst of connections, the C heap's free memory goes back to the
  system (:func:`release_free_memory`).
"""

from __future__ import annotations

import errno
import logging
import sys
from collections.abc import Callable
from time import monotonic
from typing import Any

from greenlet import getcurrent

from greenline import socket as gsocket
from greenline._core.hub import Hub, get_hub, os_thread_ident
from greenline._core.task import Task
from greenline._core.threadpool import to_thread
from greenline.servers import proxy

__all__ = ["StreamServer", "BoundAddress", "family_for", "Handler", "parse_address", "DEFAULT_BACKLOG", "DEFAULT_HANDSHAKE_TIMEOUT",
           "release_free_memory"]

log = logging.getLogger("greenline.server")

Handler = Callable[[gsocket.socket, Any], object]

# Large, so that a burst of clients connecting at once waits in the kernel's
# queue instead of having its handshakes dropped and retried a second later;
# the kernel caps it at net.core.somaxconn.
DEFAULT_BACKLOG = 2048

# Connections accepted in one go before the accept loop lets the connections
# it accepted run.  Large enough to empty a full backlog in a few passes of
# the hub even when thousands of busy connections share each pass, small
# enough that one pass never stalls them for long.
MAX_ACCEPT = 256

# A TLS handshake must be done this long after the connection was accepted
# (seconds), or the connection is closed: a client that connects and says
# nothing, or stops half-way, must not hold a connection, its green thread and
# its TLS state for ever.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0

# After a burst of at least this many connections open at once, once three
# quarters of them have closed, the server gives the C heap's free memory back
# to the system (glibc keeps it otherwise: the long-lived objects allocated
# during the burst pin the heap), TRIM_DELAY seconds later so that the rest
# of a burst ending all at once is gone by then.
TRIM_BURST = 1000
TRIM_DELAY = 1.0

# After stop()'s timeout, how long a handler that is not waiting to read may
# still take to answer what it has read.
CLOSE_GRACE = 0.5

# Out of descriptors: first and longest pause before trying accept() again.
EMFILE_MIN_DELAY = 0.05
EMFILE_MAX_DELAY = 1.0

# accept() errors that concern one connection only: the next one may be fine.
_SKIP_ERRNOS = frozenset(
    e for e in (
        getattr(errno, "ECONNABORTED", None),
        getattr(errno, "EPROTO", None),
        getattr(errno, "EPERM", None),  # a firewall refused this one
        getattr(errno, "ENETDOWN", None),
        getattr(errno, "ENOPROTOOPT", None),
        getattr(errno, "EHOSTDOWN", None),
        getattr(errno, "ENONET", None),
        getattr(errno, "EHOSTUNREACH", None),
        getattr(errno, "EOPNOTSUPP", None),
        getattr(errno, "ENETUNREACH", None),
        errno.EINTR,
    ) if e is not None
)
# accept() errors that mean "out of resources": wait for some to free up.
_RESOURCE_ERRNOS = frozenset(
    e for e in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM) if e is not None
)


def parse_address(address: Any) -> tuple[str, int]:
    """``(host, port)``, ``"host:port"``, ``":port"`` or a port number."""
    if isinstance(address, int):
        return ("127.0.0.1", address)
    if isinstance(address, str):
        host, sep, port = address.rpartition(":")
        if not sep:
            raise ValueError(f"expected host:port, got {address!r}")
        host = host.strip("[]") or "127.0.0.1"
        return (host, int(port))
    if isinstance(address, tuple) and len(address) >= 2:
        return (address[0], int(address[1]))
    raise TypeError(f"expected an address or a listening socket, got {address!r}")


def family_for(host: str) -> int:
    """The address family of a host given as an address string."""
    return gsocket.AF_INET6 if ":" in host else gsocket.AF_INET


class BoundAddress:
    """What a server says of the address it serves, shared by the stream
    and datagram servers: the one it was given, or, once bound, the socket's
    own (with the real port when it was given port 0)."""

    socket: Any
    _address: tuple[str, int] | None

    @property
    def address(self) -> tuple[str, int]:
        """The address the server listens on, with the real port once bound."""
        if self.socket is not None:
            try:
                name = self.socket.getsockname()
                return (name[0], name[1])
            except OSError:
                pass
        assert self._address is not None
        return self._address

    @property
    def server_host(self) -> str:
        return self.address[0]

    @property
    def server_port(self) -> int:
        return self.address[1]


class StreamServer(BoundAddress):
    """Accept TCP connections; run ``handle(sock, address)`` for each one in a
    new green thread.

    ``listener`` is an address (``(host, port)`` or ``"host:port"``; port 0
    picks a free port, see :attr:`address`) or a listening socket.  A socket
    from the standard library is duplicated into a cooperative one; the
    caller's object stays its own.

    ``max_connections`` bounds the connections handled at once: at the bound
    the accept loop waits for one to finish, and new clients wait in the
    kernel's backlog meanwhile.  Nothing is dropped.

    ``idle_timeout`` (seconds) closes a connection that makes no progress for
    that long (a silent client, or one that stops reading): the handler's
    socket starts with it as an idle timeout
    (:meth:`~greenline.socket.socket.set_idle_timeout`), so a ``sendall`` to a
    client that reads slowly but steadily goes on as long as it takes.

    ``handshake_timeout`` (seconds, TLS only; None for no limit): a client
    that has not finished its TLS handshake that long after it connected is
    closed.  Its TLS state is made only once the client has sent something,
    so a client that connects and says nothing costs no more than a plain
    connection meanwhile.

    ``proxy_protocol``: every connection starts with a PROXY protocol
    header (version 1 or 2, :mod:`greenline.servers.proxy`), sent by a load
    balancer; it is read before TLS and before ``handle``, and ``handle``
    gets the client's address from it.  A connection without a valid header
    within ``proxy_protocol_timeout`` seconds is closed
    (:meth:`proxy_header_failed`).  Only for a port that nothing but the
    balancer can reach: a header is believed.

    When ``handle`` returns or raises, its socket is closed.
    """

    #: Default for :meth:`stop`'s timeout, as in gevent.
    stop_timeout: float = 1.0
    #: Connections accepted in one go before the new ones get to run.
    max_accept: int = MAX_ACCEPT

    def __init__(self, listener: Any, handle: Handler | None = None, backlog: int | None = None,
                 spawn: Any = "default", *, max_connections: int | None = None,
                 idle_timeout: float | None = None, reuse_port: bool = False,
                 ssl_context: Any = None, handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
                 proxy_protocol: bool = False, proxy_protocol_timeout: float = proxy.DEFAULT_TIMEOUT,
                 **ssl_args: Any) -> None:
        if handle is not None:
            self.handle = handle  # type: ignore[method-assign,assignment]
        # gevent's spawn argument: "default", a connection limit (int), a
        # Pool/Group whose spawn() starts the handlers (a Pool's size then
        # limits the connections, as in gevent), or a callable that does.
        self.pool: Any = None
        self._spawn: Callable[..., Any] | None = None
        if isinstance(spawn, int) and not isinstance(spawn, bool):
            max_connections = spawn if max_connections is None else max_connections
        elif hasattr(spawn, "spawn"):
            self.pool = spawn
        elif callable(spawn):
            self._spawn = spawn
        elif spawn not in ("default", None):
            raise TypeError("spawn must be 'default', a connection limit (int), a Pool or a callable")
        self.ssl_context = make_ssl_context(ssl_context, ssl_args)
        if max_connections is not None and max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        if handshake_timeout is not None and not handshake_timeout > 0:
            raise ValueError("handshake_timeout must be positive (or None)")
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        if not proxy_protocol_timeout > 0:
            raise ValueError("proxy_protocol_timeout must be positive")
        #: Read a PROXY protocol header first (may be set until start()).
        self.proxy_protocol = proxy_protocol
        self.proxy_protocol_timeout = proxy_protocol_timeout
        # Neither TLS nor a PROXY header: handle() gets the socket as accepted.
        self._bare = True
        self.backlog = backlog
        self.reuse_port = reuse_port
        self.socket: gsocket.socket | None = None
        self._address: tuple[str, int] | None = None
        if hasattr(listener, "accept") and hasattr(listener, "fileno"):
            self._set_socket(listener)
        else:
            self._address = parse_address(listener)
        self._hub: Hub | None = None
        self._accept_task: Task | None = None
        self._conns: dict[Task, gsocket.socket] = {}
        # Green threads parked until a connection finishes: the accept loop
        # at max_connections, and stop() waiting for the handlers to end.
        self._waiters: list[Any] = []
        self._stop_waiters: list[Any] = []
        self._started = False
        self._closing = False
        self._stopped = False
        #: Connections accepted so far, and handlers that raised.
        self.accepted = 0
        self.failed = 0
        # The most connections seen open at once since memory was last
        # given back, and whether that is scheduled (see TRIM_BURST).
        self._high = 0
        self._trim_armed = False

    # -- the listening socket ------------------------------------------

    def _set_socket(self, sock: Any) -> None:
        if not isinstance(sock, gsocket.socket):
            sock = gsocket.fromfd(sock.fileno(), sock.family, sock.type, sock.proto)
        self.socket = sock

    def init_socket(self) -> None:
        """Bind and listen, if the server was given an address."""
        if self.socket is not None:
            return
        assert self._address is not None
        host, port = self._address
        backlog = self.backlog if self.backlog is not None else DEFAULT_BACKLOG
        self.socket = gsocket.create_server((host, port), family=family_for(host), backlog=backlog,
                                            reuse_port=self.reuse_port)

    # -- life cycle ----------------------------------------------------

    @property
    def started(self) -> bool:
        """True while the server accepts connections."""
        return self._started and not self._closing

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def connection_count(self) -> int:
        """Connections being handled now."""
        return len(self._conns)

    def handle(self, sock: gsocket.socket, address: Any) -> object:
        """Serve one connection; override, or pass ``handle`` to the constructor."""
        raise NotImplementedError("give StreamServer a handle(sock, address) function")

    def set_handle(self, handle: Handler) -> None:
        """Serve the connections accepted from now on with ``handle``."""
        self.handle = handle  # type: ignore[method-assign,assignment]

    def handler_failed(self, address: Any) -> None:
        """Called in the handler's green thread, inside ``except``, when
        ``handle`` raised: logs it with the peer's address.  Override to
        report differently (gevent's servers hand it to the hub's
        ``handle_error``)."""
        log.exception("%s: handler failed", _peer(address))

    def stop_accepting(self) -> None:
        """Stop accepting (the listener stays open: clients wait in the
        backlog); :meth:`start_accepting` resumes."""
        task, self._accept_task = self._accept_task, None
        if task is not None and not task.dead and task is not getcurrent():
            task.kill(block=False)

    def start_accepting(self) -> None:
        if self._started and not self._closing and self._accept_task is None:
            self._accept_task = Task(self._accept_loop)
            self._accept_task.start()

    def start(self) -> None:
        """Bind if needed and start accepting in a new green thread; returns at once."""
        if self._started:
            raise RuntimeError("this server has already been started")
        if self._closing:
            raise RuntimeError("this server has been stopped")
        self.init_socket()
        self._hub = get_hub()
        self._started = True
        self._bare = self.ssl_context is None and not self.proxy_protocol
        self._accept_task = Task(self._accept_loop)
        self._accept_task.name = f"accept-{self.server_port}"
        self._accept_task.start()

    def serve_forever(self, stop_timeout: float | None = None) -> None:
        """Start if needed and block until :meth:`stop` is called.  If the
        waiting green thread is killed (or interrupted), stop the server
        first, letting handlers finish for up to ``stop_timeout``."""
        if not self._started:
            self.start()
        hub = get_hub()
        me = getcurrent()
        try:
            while not self._stopped:
                self._stop_waiters.append(me)
                try:
                    hub.block()
                finally:
                    if me in self._stop_waiters:
                        self._stop_waiters.remove(me)
        except BaseException:
            if not self._stopped:
                self.stop(stop_timeout)
            raise

    def close(self) -> None:
        """Stop accepting (close the listener); connections go on."""
        if self._closing:
            return
        self._closing = True
        task = self._accept_task
        if task is not None and not task.dead and task is not getcurrent():
            task.kill(block=False)
        sock = self.socket
        if sock is not None:
            # Wakes the accept loop with EBADF if it waits on the listener.
            sock.close()

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, let the handlers finish for up to ``timeout``
        seconds (:attr:`stop_timeout` by default), then close the connections
        that are left (their green threads wake with an error and end)."""
        if timeout is None:
            timeout = self.stop_timeout
        self.close()
        hub = get_hub()
        me = getcurrent()
        if me not in self._conns:
            self._wait_conns(hub, monotonic() + timeout)
        if self._conns:
            log.info("closing %d connection(s) still open after %.3g s", len(self._conns), timeout)
            if me not in self._conns:
                self._close_waiting_readers(hub)
            for task, sock in list(self._conns.items()):
                _abort(sock)
                if task is not me:
                    task.kill(block=False)
            if me not in self._conns:
                # Let them unwind (their finally blocks run) before returning.
                self._wait_conns(hub, monotonic() + 1.0)
        self._stopped = True
        waiters, self._stop_waiters = self._stop_waiters, []
        for g in waiters:
            hub.wake(g)

    def __enter__(self) -> StreamServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "closed" if self._closing else ("started" if self._started else "new")
        try:
            where = "{}:{}".format(*self.address)
        except Exception:  # pragma: no cover
            where = "?"
        return f"<StreamServer {where} {state} connections={len(self._conns)}>"

    def _handshake(self, sock: gsocket.socket, address: Any) -> Any:
        # Here, in the connection's green thread, not in the accept loop: a
        # slow or silent client must not hold up the others' handshakes.
        # The whole of it is bounded by the handshake timeout (and by the
        # idle timeout, which bounded it before there was a handshake one).
        limits = [t for t in (self.handshake_timeout, self.idle_timeout) if t is not None]
        limit = min(limits) if limits else None
        deadline = None if limit is None else monotonic() + limit
        timeout = sock.gettimeout()
        try:
            # Wait for the client's first bytes before making any TLS state:
            # OpenSSL's (some 40 KB with its buffers) would otherwise be held
            # by every client that connects and says nothing.
            sock.settimeout(limit)
            if not sock.recv(1, gsocket.MSG_PEEK):
                log.debug("%s: closed before the TLS handshake", _peer(address))
                return None
            tls = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except TimeoutError:
            log.debug("%s: no TLS handshake in %.3g s, closing", _peer(address), limit)
            return None
        except OSError as e:
            log.debug("%s: TLS setup failed: %s", _peer(address), e)
            return None
        me = getcurrent()
        self._conns[me] = tls  # type: ignore[index]  # stop() must close this one now
        try:
            if deadline is not None:
                tls.settimeout(max(deadline - monotonic(), 1e-6))
            tls.do_handshake()
        except TimeoutError:
            log.debug("%s: TLS handshake not done in %.3g s, closing", _peer(address), limit)
            tls.close()
            return None
        except (OSError, ValueError) as e:
            # A client's bad handshake is its problem, not a server error.
            log.debug("%s: TLS handshake failed: %s", _peer(address), e)
            tls.close()
            return None
        if self.idle_timeout is not None:
            tls.set_idle_timeout(self.idle_timeout)
        else:
            tls.settimeout(timeout)
        return tls

    def _close_waiting_readers(self, hub: Hub) -> None:
        # Out of time.  A handler parked reading its own connection has
        # answered all it has read: closing it loses nothing.  One that is
        # running or writing may hold a request it has read and not yet
        # answered, so it gets a moment more to get back to reading.
        deadline = monotonic() + CLOSE_GRACE
        while True:
            for task, sock in list(self._conns.items()):
                if getattr(sock, "parked_reader", None) is task:
                    _abort(sock)
            if not self._conns or monotonic() >= deadline:
                return
            hub.sleep(0.01)

    def _wait_conns(self, hub: Hub, deadline: float) -> None:
        me = getcurrent()
        while self._conns:
            remaining = deadline - monotonic()
            if remaining <= 0:
                return
            timer = hub.call_later(remaining, hub.wake, me)
            self._waiters.append(me)
            try:
                hub.block()
            finally:
                hub.cancel_timer(timer)
                if me in self._waiters:
                    self._waiters.remove(me)

    # -- accepting -----------------------------------------------------

    def _wait_for_slot(self, hub: Hub) -> None:
        me = getcurrent()
        limit = self.max_connections
        assert limit is not None
        while len(self._conns) >= limit and not self._closing:
            self._waiters.append(me)
            try:
                hub.block()
            finally:
                if me in self._waiters:
                    self._waiters.remove(me)

    def _accept_loop(self) -> None:
        sock = self.socket
        assert sock is not None and self._hub is not None
        hub = self._hub
        accept = sock.accept
        conns = self._conns
        limit = self.max_connections
        idle = self.idle_timeout
        serve = self._serve
        delay = 0.0
        accepted = 0
        pool = self.pool
        while not self._closing:
            if limit is not None and len(conns) >= limit:
                self._wait_for_slot(hub)
                continue
            if pool is not None and hasattr(pool, "full") and pool.full():
                pool.wait_available()
                continue
            try:
                # The socket's accept makes each green thread yield after a
                # few calls that did not block; the listener gets a bigger
                # share per pass (max_accept) so a burst of clients is taken
                # in quickly even when busy connections fill every pass.
                hub.exempt_from_budget()
                conn, address = accept()
            except OSError as e:
                if self._closing:
                    break
                err = e.errno
                if err in _RESOURCE_ERRNOS:
                    if delay == 0.0:
                        delay = EMFILE_MIN_DELAY
                        log.warning("accept: %s (open connections: %d); pausing accept until "
                                    "resources free up", e.strerror or e, len(conns))
                    else:
                        delay = min(delay * 2, EMFILE_MAX_DELAY)
                    hub.sleep(delay)
                    continue
                if err in _SKIP_ERRNOS or isinstance(e, ConnectionError):
                    log.debug("accept: %s", e)
                    continue
                log.error("accept failed: %r; retrying in %.1f s", e, EMFILE_MAX_DELAY)
                hub.sleep(EMFILE_MAX_DELAY)
                continue
            if delay:
                log.warning("accepting again (open connections: %d)", len(conns))
                delay = 0.0
            self.accepted += 1
            if type(address) is tuple and type(address[0]) is str:
                # Every accept makes a new string for the peer's host, and
                # the handler keeps it for the connection's life: interned,
                # 10,000 clients of one host share one (64 bytes each saved).
                # (Not every family's first field is a string: AF_VSOCK's
                # is a number.)
                address = (sys.intern(address[0]), *address[1:])
            if idle is not None:
                conn.set_idle_timeout(idle)  # type: ignore[attr-defined]  # ours, always
            if self._spawn is not None:
                try:
                    conns[self._spawn(serve, conn, address)] = conn
                except Exception:
                    conn.close()
                    self.handler_failed(address)
            elif pool is None:
                task = Task(serve, conn, address)
                conns[task] = conn
                task.start()
            else:
                # Scheduled, not run yet: registering it now is in time.
                conns[pool.spawn(serve, conn, address)] = conn
            accepted += 1
            if accepted >= self.max_accept:
                accepted = 0
                hub.yield_now()

    def _serve(self, sock: gsocket.socket, address: Any) -> None:
        try:
            if self._bare:
                self.handle(sock, address)
            else:
                self._serve_wrapped(sock, address)
        except (ConnectionResetError, BrokenPipeError) as e:
            log.debug("%s: %s", _peer(address), e)
        except TimeoutError:
            log.debug("%s: idle for %s s, closing", _peer(address), self.idle_timeout)
        except OSError as e:
            if self._closing and e.errno == errno.EBADF:
                pass  # closed by stop(): expected
            else:
                self.failed += 1
                self.handler_failed(address)
        except Exception:
            self.failed += 1
            self.handler_failed(address)
        except (SystemExit, KeyboardInterrupt) as e:
            # A handler is a connection's thread: sys.exit() in it ends that
            # connection, not the server (a plain task would send it on to
            # the main green thread, which here is serve_forever).  Except
            # Ctrl-C: in the main OS thread under Python's own SIGINT handler
            # a KeyboardInterrupt may be the user's, landing in whichever
            # handler runs; it must still stop the program.
            if isinstance(e, KeyboardInterrupt) and _sigint_raises_here():
                raise
            self.failed += 1
            log.error("%s: handler raised %s; closing this connection only",
                      _peer(address), type(e).__name__, exc_info=True)
        finally:
            me = getcurrent()
            conns = self._conns
            current = conns.pop(me, None)  # type: ignore[call-overload]
            sock.close()
            if current is not None and current is not sock:
                current.close()
            waiters = self._waiters
            if waiters:
                hub = self._hub
                assert hub is not None
                for g in waiters:
                    hub.wake(g)
            n = len(conns)
            if n > self._high:
                self._high = n
            elif n <= self._high >> 2 and self._high >= TRIM_BURST and not self._trim_armed:
                self._trim_armed = True
                hub = self._hub
                assert hub is not None
                hub.call_later(TRIM_DELAY, self._after_burst)

    def _serve_wrapped(self, sock: gsocket.socket, address: Any) -> None:
        # The PROXY header first (it comes before the TLS handshake on the
        # wire), then TLS, then the handler.
        if self.proxy_protocol:
            try:
                header = proxy.read_header(sock, self.proxy_protocol_timeout)
            except TimeoutError:
                log.debug("%s: no PROXY protocol header in %.3g s, closing", _peer(address),
                          self.proxy_protocol_timeout)
                self.proxy_header_failed(sock, address, "timeout")
                return
            except proxy.ProxyProtocolError as e:
                log.warning("%s: bad PROXY protocol header, closing: %s", _peer(address), e)
                self.proxy_header_failed(sock, address, str(e))
                return
            if header is None:
                log.debug("%s: closed before its PROXY protocol header", _peer(address))
                return
            address = header.address(address)
        if self.ssl_context is None:
            self.handle(sock, address)
        else:
            tls = self._handshake(sock, address)
            if tls is not None:
                self.handle(tls, address)

    def proxy_header_failed(self, sock: gsocket.socket, address: Any, reason: str) -> None:
        """Called, in the connection's green thread, when a connection to a
        ``proxy_protocol`` server sent no valid header (``reason`` is
        "timeout" or what was wrong); the connection is closed after it
        returns.  Override to answer first (the WSGI server sends a 400)."""

    def _after_burst(self, _arg: object = None) -> None:
        # In the hub, TRIM_DELAY after a burst of connections mostly ended.
        log.debug("a burst of %d connections is over (%d open): giving free memory back",
                  self._high, len(self._conns))
        self._trim_armed = False
        self._high = len(self._conns)
        # In a thread of the pool: trimming a heap of hundreds of megabytes
        # takes a tenth of a second, which this hub's connections need not wait.
        Task(to_thread, release_free_memory).start()


def make_ssl_context(context: Any, ssl_args: dict[str, Any]) -> Any:
    """A server-side context from gevent's ``ssl_context`` or its
    ``keyfile``/``certfile`` keywords; None for plain TCP."""
    if context is not None:
        if ssl_args:
            raise TypeError("give either ssl_context or certfile/keyfile, not both")
        return context
    if not ssl_args:
        return None
    known = {"certfile", "keyfile", "password", "ca_certs", "cert_reqs", "ciphers"}
    unknown = set(ssl_args) - known
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    if "certfile" not in ssl_args:
        raise TypeError("TLS needs a certfile")
    from greenline import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(ssl_args["certfile"], ssl_args.get("keyfile"), ssl_args.get("password"))
    if ssl_args.get("ca_certs"):
        ctx.load_verify_locations(ssl_args["ca_certs"])
    if ssl_args.get("cert_reqs") is not None:
        ctx.verify_mode = ssl_args["cert_reqs"]
    if ssl_args.get("ciphers"):
        ctx.set_ciphers(ssl_args["ciphers"])
    return ctx


_malloc_trim: Any = None


def release_free_memory() -> bool:
    """Give the free memory of the C heap back to the system (glibc's
    ``malloc_trim(0)``, which releases free pages anywhere in the heap, not
    just at its top).  False where there is no such call (musl, macOS)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            trim = ctypes.CDLL(None).malloc_trim
            trim.argtypes = [ctypes.c_size_t]
            trim.restype = ctypes.c_int
            _malloc_trim = trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if not _malloc_trim:
        return False
    _malloc_trim(0)
    return True


def _sigint_raises_here() -> bool:
    """Could a Ctrl-C raise KeyboardInterrupt in this OS thread?  Only in the
    main thread, and only under Python's own SIGINT handler (which patch_all
    wraps, and ``signal.getsignal`` still gives back)."""
    import signal
    import threading

    if os_thread_ident() != threading.main_thread().ident:
        return False
    return signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _abort(sock: gsocket.socket) -> None:
    # shutdown() also ends a handler that reads through makefile() (whose
    # reference keeps close() from closing): it sees end of file.
    try:
        sock.shutdown(gsocket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _peer(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in str(host) else f"{host}:{address[1]}"
    return str(address) or "peer"
