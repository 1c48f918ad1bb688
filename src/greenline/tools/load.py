"""``greenline load``: a load tester built on greenline's own green threads.

Each connection is one green thread.  With a ``HOST:PORT`` target it speaks
the seed's line protocol: it sends ``conn-<i> say hello <n>`` (padded to
``--size`` bytes), reads until the whole reply has arrived and checks it.
With an ``http://`` or ``https://`` URL it sends one HTTP/1.1 request over a
keep-alive connection (or ``--pipeline N`` of them back to back) and parses
every response in full with llhttp (see :mod:`greenline.tools.load_http`).
Either way each latency goes into an HDR histogram.  Closed loop by default
(the next request goes out when the reply is in); with ``--rate`` open loop,
where every request has an intended send time and its latency is measured
from that time, so a server that stalls shows the stall in the tail instead
of quietly slowing the client down (coordinated omission).

``--procs N`` forks N client processes, each with its share of the
connections; they stream their histograms to the parent, which merges them.

``--tls`` (or an ``https://`` URL) wraps every connection in a
:mod:`greenline.ssl` client context.  The handshake belongs to connecting: it
is done (and its failures counted, as ``tls`` errors) before the first
request's clock starts, and the request loop runs the same code on either
kind of socket.

The per-request path is kept short on purpose: the client must cost less CPU
per request than the server it measures, or it measures itself.  The report
gives the client's own CPU time per response.
"""

from __future__ import annotations

import _socket
import argparse
import errno
import json
import math
import os
import re
import resource
import signal
import sys
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic
from typing import Any, NoReturn

from greenlet import getcurrent
from httptools import HttpParserError, HttpParserUpgrade

from greenline import socket as gsocket
from greenline import ssl as gssl
from greenline._core.hub import get_hub
from greenline._core.hub import sleep as gsleep
from greenline._core.task import Task, joinall, killall, spawn
from greenline.tools.load_http import (
    DEFAULT_EXPECT,
    MAX_KEPT,
    HeadResponses,
    HTTPArgumentError,
    HTTPRequest,
    MalformedResponse,
    Response,
    TrackedResponse,
    build_request,
    ended_by_eof,
    host_header,
    parse_expect_status,
    parse_header,
    parse_url,
)
from greenline.tools.report import (
    BUCKET_BITS,
    HIGHEST_US,
    LoadResult,
    decode_histogram,
    encode_histogram,
    format_us,
    new_histogram,
    record_counts,
)

__all__ = ["LoadConfig", "LoadError", "run_load", "add_parser", "main", "parse_duration", "http_request"]

# Descriptors the process needs besides its connections (stdio, the hub's
# epoll and eventfd, pipes to the parent, imports).
_SPARE_FDS = 64

# A connection that fails to connect this many times in a row gives up, so a
# run against a dead address ends instead of retrying forever.
MAX_CONNECT_FAILURES = 3

# Seconds the requests in flight at the end of a timed run get to finish.
END_GRACE = 1.0

# The deepest --pipeline.
MAX_PIPELINE = 1024


class LoadError(Exception):
    """The run could not start (bad target, descriptor limit): exit code 2."""


class _ReplyTimeout(Exception):
    """Thrown into a connection whose reply is later than ``--timeout``."""


class _ClosedEarly(Exception):
    """The server closed the connection before the reply (line protocol:
    the whole reply; HTTP: any byte of the response) arrived."""


class _Truncated(Exception):
    """HTTP: the connection ended in the middle of a response."""


class _HandshakeFailed(Exception):
    """The TLS handshake of a new connection failed (whatever the cause: a
    certificate refused, a peer that does not speak TLS, a reset or a
    timeout half-way through)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(cause)
        self.cause = cause


class _Broken(Exception):
    """A connection failed mid-request; carries the request counter so the
    next connection goes on from there (the open loop's schedule needs it),
    and how many requests were in flight on it (each counts as failed)."""

    def __init__(self, cause: BaseException, n: int, lost: int = 1) -> None:
        super().__init__(cause)
        self.cause = cause
        self.n = n
        self.lost = lost


_BREAKS = (OSError, _ReplyTimeout, _ClosedEarly)
_HTTP_BREAKS = (OSError, _ReplyTimeout, _ClosedEarly, _Truncated, MalformedResponse, HttpParserError,
                HttpParserUpgrade)


@dataclass
class LoadConfig:
    host: str
    port: int
    connections: int = 500
    duration: float | None = 10.0
    total: int | None = None
    rate: float | None = None
    size: int = 32
    protocol: str = "upper"
    procs: int = 1
    timeout: float = 10.0
    connect_timeout: float = 5.0
    tls: bool = False
    cafile: str | None = None
    insecure: bool = False
    server_name: str | None = None
    # The request of an HTTP run (None: the line protocol).
    http: HTTPRequest | None = None

    @property
    def target(self) -> str:
        if self.http is not None:
            return self.http.url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def mode(self) -> str:
        return "closed loop" if self.rate is None else f"open loop at {self.rate:g} req/s"

    @property
    def security(self) -> str:
        """How the connections are secured, as the report says it."""
        if not self.tls:
            return ""
        if self.insecure:
            return "TLS, certificate NOT verified (--insecure)"
        return f"TLS, certificate verified for {self.server_name or self.host}"


def client_context(cfg: LoadConfig) -> gssl.SSLContext | None:
    """The TLS client context for ``cfg`` (None without ``--tls``), or a
    LoadError saying what is wrong with the options or the CA file."""
    if not cfg.tls:
        if cfg.cafile or cfg.insecure or cfg.server_name:
            raise LoadError("--cafile, --insecure and --server-name need --tls (or an https:// URL)")
        return None
    if cfg.insecure and cfg.cafile:
        raise LoadError("--insecure verifies nothing, so --cafile would be ignored: give one or the other")
    try:
        ctx = gssl.create_default_context(cafile=cfg.cafile)
    except (OSError, ValueError) as e:
        # FileNotFoundError, or an SSLError for a file that holds no certificate.
        raise LoadError(f"cannot load the CA file {cfg.cafile!r}: {e}") from None
    if cfg.insecure:
        # check_hostname first: OpenSSL refuses CERT_NONE while it is on.
        ctx.check_hostname = False
        ctx.verify_mode = gssl.CERT_NONE
    return ctx


def parse_target(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6addr]:PORT`` for IPv6) to ``(host, port)``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LoadError(f"target must be HOST:PORT or an http:// or https:// URL, not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def raise_fd_limit(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE to ``needed`` if it is lower, or fail
    with what to do if the hard limit does not allow it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise LoadError(
            f"{needed} file descriptors are needed per client process, but the hard limit "
            f"(ulimit -Hn) is {hard}.  Raise it before running this: `ulimit -n {needed}` "
            f"(as root, or after raising `nofile` in /etc/security/limits.conf), or use fewer "
            f"connections (-c)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _classify(exc: BaseException) -> str:
    """The report's name for what broke a connection."""
    if isinstance(exc, _HandshakeFailed):
        return "tls"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "reset"
    if isinstance(exc, (_ReplyTimeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, _ClosedEarly):
        return "closed early"
    if isinstance(exc, _Truncated):
        return "truncated"
    if isinstance(exc, (MalformedResponse, HttpParserError, HttpParserUpgrade)):
        return "malformed"
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, f"errno {exc.errno}").lower()
    return type(exc).__name__


def _describe(exc: BaseException) -> str:
    """One line about an error, in words, for the report."""
    if isinstance(exc, _HandshakeFailed):
        exc = exc.cause
    text = str(exc)
    if isinstance(exc, gssl.SSLCertVerificationError) and exc.verify_message:
        text = f"certificate verify failed: {exc.verify_message}"
    elif isinstance(exc, HttpParserUpgrade):
        text = "the server switched protocols (an upgrade nobody asked for)"
    elif isinstance(exc, (MalformedResponse, HttpParserError)):
        text = f"not a valid HTTP/1.x response: {text or 'unparsable'}"
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror[:1].lower() + exc.strerror[1:]
    if not text:
        # Our own exceptions carry their words; anything else is named by
        # its docstring's first line rather than by its class.
        doc = (type(exc).__doc__ or type(exc).__name__).strip().splitlines()[0]
        text = doc.rstrip(".")
    return text.splitlines()[0]


_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``30s``, ``2m``, ``500ms``, ``1h`` or plain seconds (``1.5``) to
    seconds; a positive finite number or a ValueError."""
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f"not a duration: {text!r} (give seconds, or a number with ms, s, m or h)")
    seconds = float(m.group(1)) * _UNITS[(m.group(2) or "s").lower()]
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"a duration must be positive: {text!r}")
    return seconds


def http_request(url: str, method: str = "GET", headers: list[str] | None = None,
                 body: bytes | None = None, pipeline: int = 1, expect: str | None = None) -> HTTPRequest:
    """The :class:`HTTPRequest` for ``url`` and the command line's HTTP
    options; a LoadError says what is wrong with them."""
    try:
        scheme, host, port, target = parse_url(url)
        method = method.upper()
        pairs = [parse_header(h) for h in headers or []]
        if method == "HEAD" and body:
            raise HTTPArgumentError("a HEAD request has no body")
        if not 1 <= pipeline <= MAX_PIPELINE:
            raise HTTPArgumentError(f"--pipeline must be from 1 to {MAX_PIPELINE}")
        expect_text = expect if expect is not None else DEFAULT_EXPECT
        flags = parse_expect_status(expect_text)
        wire = build_request(method, host_header(host, port, scheme), target, pairs, body)
    except HTTPArgumentError as e:
        raise LoadError(str(e)) from None
    return HTTPRequest(scheme=scheme, host=host, port=port, method=method, target=target, wire=wire,
                       pipeline=pipeline, expect=flags, expect_text=expect_text.replace(" ", ""),
                       body_size=len(body or b""))


# Filler for messages: lower-case, so ``upper`` has something to change.
_PAD = b"x"


def message_format(index: int, digits: int, size: int) -> bytes:
    """The %-format of connection ``index``'s messages while the counter has
    ``digits`` digits: ``conn-<i> say hello <n> xxx...\\n``, ``size`` bytes
    long unless the text alone is longer."""
    head = b"conn-%d say hello " % index
    pad = size - len(head) - digits - 2
    return head + b"%d " + _PAD * max(0, pad) + b"\n"


class Engine:
    """The connections of one client process, and their counters.

    ``first`` and ``count`` say which connections (by global index) are
    ours; ``budget`` is our share of ``-n`` (None for a timed run).
    ``on_tick(snapshot, interval_histogram)`` is called about every
    ``tick`` seconds with the progress since the last call.
    """

    def __init__(self, cfg: LoadConfig, first: int, count: int, t0: float, budget: int | None,
                 tick: float, on_tick: Callable[[dict[str, Any], Any], None] | None = None) -> None:
        self.cfg = cfg
        self.first = first
        self.count = count
        self.t0 = t0
        self.remaining = budget if budget is not None else -1
        self.budgeted = budget is not None
        self.tick = tick
        self.on_tick = on_tick
        self.stopping = False
        # Latencies of this interval: the connections count them in
        # ``tally`` (by histogram bucket, see report.BUCKET_BITS); every tick
        # they go into ``interval``, which is added to the total and
        # cleared, so the live p99 is that of the last interval.
        self.tally: dict[int, int] = {}
        self.interval = new_histogram()
        self.latency = new_histogram()
        self.first_latency = new_histogram()
        self.opened = 0
        self.failed = 0
        self.gave_up = 0
        self.requests = 0
        self.verified = 0
        self.mismatches = 0
        self.unfinished = 0
        self.errors: dict[str, int] = {}
        # The first message of each kind of error, so the report can say why
        # (a certificate refused, say) and not only how often.
        self.error_samples: dict[str, str] = {}
        self.ssl_context = client_context(cfg)
        self.server_name = cfg.server_name or cfg.host
        self.first_replied = 0
        self.first_reply_at: float | None = None
        # Send time of each connection's oldest request in flight (0.0:
        # none), for the reply-timeout watchdog; and, for HTTP, how many
        # requests each has in flight.
        self.inflight = [0.0] * count
        self.owed = [0] * count
        self.first_replied_slots = [False] * count
        # HTTP: responses by status code (every connection counts here), and
        # the request bytes for 0..pipeline requests at once, built once.
        self.statuses: dict[int, int] = {}
        http = cfg.http
        self.batches = [http.wire * k for k in range(http.pipeline + 1)] if http is not None else []
        # Receive buffer per HTTP connection: big reads for few connections,
        # small buffers for many (about 16 MiB in all, 4 to 64 KiB each).
        self.rbuf_size = max(4096, min(65536, (16 << 20) // max(1, count)))
        self.tasks: list[Task] = []
        self.active = 0
        self._waiter: Any = None
        self.addr: Any = None
        self.family: int = int(gsocket.AF_INET)

    # -- connections -----------------------------------------------------

    def _error(self, kind: str, exc: BaseException | None = None, count: int = 1) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + count
        if exc is not None and kind not in self.error_samples:
            self.error_samples[kind] = _describe(exc)

    def _connect(self) -> gsocket.socket | None:
        failures = 0
        while not self.stopping:
            sock = None
            try:
                # Inside the try: out of descriptors (EMFILE) is a failed
                # connection like any other, not a crash.
                sock = gsocket.socket(self.family, gsocket.SOCK_STREAM)
                sock.settimeout(self.cfg.connect_timeout)
                sock.connect(self.addr)
                if self.ssl_context is not None:
                    sock = self._handshake(sock)
            except (OSError, _HandshakeFailed) as e:
                if sock is not None:
                    sock.close()
                self.failed += 1
                self._error(_classify(e), e)
                failures += 1
                if failures >= MAX_CONNECT_FAILURES:
                    self.gave_up += 1
                    return None
                gsleep(0.1 * failures)
                continue
            # Replies are bounded by the watchdog, not by a timer per call.
            sock.settimeout(None)
            sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
            self.opened += 1
            return sock
        return None

    def _handshake(self, sock: gsocket.socket) -> gsocket.socket:
        """The TLS handshake on a connected socket, within the connect
        timeout; the wrapped socket takes the descriptor over."""
        assert self.ssl_context is not None
        try:
            return self.ssl_context.wrap_socket(sock, server_hostname=self.server_name)
        except (OSError, ValueError) as e:
            # OSError covers SSLError (certificate, protocol), resets and the
            # handshake timeout; wrap_socket closed the descriptor already.
            raise _HandshakeFailed(e) from e

    def _connection(self, slot: int) -> None:
        n = 0
        requests = self._requests if self.cfg.http is None else self._http_requests
        try:
            while not self.stopping and (not self.budgeted or self.remaining > 0):
                sock = self._connect()
                if sock is None:
                    return
                try:
                    n, again = requests(slot, sock, n)
                    # It returns when this connection's work is done (the run
                    # is stopping, the budget or the schedule is out), or
                    # when the server said it closes the connection
                    # (HTTP): then connect again and go on.
                    if not again:
                        return
                except _Broken as e:
                    # The requests in flight failed: count them, connect again.
                    self.inflight[slot] = 0.0
                    self.owed[slot] = 0
                    self.requests += e.lost
                    self._error(_classify(e.cause), e.cause, e.lost)
                    n = e.n
                finally:
                    sock.close()
        finally:
            if self.inflight[slot]:
                # Killed at the end of a timed run with replies still due.
                self.unfinished += self.owed[slot] or 1
                self.inflight[slot] = 0.0
                self.owed[slot] = 0
            self.active -= 1
            if self.active == 0 and self._waiter is not None:
                get_hub().wake(self._waiter)

    def _wait_for_the_end(self, deadline: float) -> None:
        """Open loop, schedule done: stay until the run's end, so that the
        run lasts its -d however low the rate."""
        now = monotonic()
        if not self.stopping and deadline > now and math.isfinite(deadline):
            gsleep(deadline - now)

    def _requests(self, slot: int, sock: gsocket.socket, n: int) -> tuple[int, bool]:
        """The line protocol: send, receive, check and time requests on
        ``sock`` until this connection's work is done; return the request
        counter, and whether to connect again (the server closed the
        connection while it sat idle in the open loop).  One loop for both
        modes: open loop (``--rate``) only adds the ``if paced`` steps."""
        # Inlined on purpose: this is the client's per-request cost, which the
        # CPU benchmark holds against the server's.  Hence one loop with
        # branches on a local (cheaper than a helper called per request), and
        # only locals inside it.
        cfg = self.cfg
        index = self.first + slot
        size = cfg.size
        upper = cfg.protocol == "upper"
        digits = len(str(n + 1))
        fmt = message_format(index, digits, size)
        next_width = 10 ** digits
        paced = cfg.rate is not None
        period = intended = 0.0
        deadline = math.inf
        if cfg.rate is not None:
            # Each connection sends every `period` seconds, the connections
            # evenly staggered, so all together they send `rate` per second.
            period = cfg.connections / cfg.rate
            intended = self.t0 + period * (index / cfg.connections) + n * period
            if cfg.duration is not None:
                deadline = self.t0 + cfg.duration
        rbuf = bytearray(max(4096, 2 * size + 64))
        rview = memoryview(rbuf)
        sendall = sock.sendall
        recv_into = sock.recv_into
        inflight = self.inflight
        first = True
        budgeted = self.budgeted
        tally = self.tally
        tally_get = tally.get
        try:
            while not self.stopping:
                if paced and intended >= deadline:
                    # Nothing more is due before the end.
                    self._wait_for_the_end(deadline)
                    break
                if budgeted:
                    if self.remaining <= 0:
                        break
                    self.remaining -= 1
                n += 1
                if n == next_width:
                    digits += 1
                    next_width *= 10
                    fmt = message_format(index, digits, size)
                if paced:
                    now = monotonic()
                    if intended > now:
                        gsleep(intended - now)
                        if idle_closed(sock):
                            # The server closed the idle connection (serve
                            # --idle-timeout): connect again, nothing lost.
                            if budgeted:
                                self.remaining += 1
                            return n - 1, True
                msg = fmt % n
                expect = msg.upper() if upper else msg
                want = len(msg)
                start = monotonic()
                inflight[slot] = start
                sendall(msg)
                # The buffer is larger than any reply, so a whole reply is a
                # short read and the socket knows not to try again before the
                # next edge.
                got = recv_into(rbuf)
                while got < want:
                    if got == 0 or (more := recv_into(rview[got:])) == 0:
                        raise _ClosedEarly("the server closed the connection before the whole reply "
                                           "arrived")
                    got += more
                t_reply = monotonic()
                inflight[slot] = 0.0
                self.requests += 1
                if got == want and rbuf.startswith(expect):
                    self.verified += 1
                else:
                    self.mismatches += 1
                if paced:
                    # Timed from the intended send time: a late send counts
                    # against the server.
                    start = intended
                    intended += period
                if first:
                    first = False
                    self._first_reply(slot, t_reply - start)
                else:
                    us = int((t_reply - start) * 1e6)
                    if us >> BUCKET_BITS:
                        shift = us.bit_length() - BUCKET_BITS
                        us = us >> shift << shift
                    tally[us] = tally_get(us, 0) + 1
        except _BREAKS as e:
            raise _Broken(e, n) from e
        return n, False

    def _http_requests(self, slot: int, sock: gsocket.socket, n: int) -> tuple[int, bool]:
        """HTTP: send requests on ``sock``, parse every response, count its
        status and time it, until this connection's work is done; return the
        request counter, and True when the server closes the connection
        (``Connection: close``, or a body read to EOF), so that the caller
        connects again.

        One request in flight (the default, and the open loop) is the loop
        below, inlined as :meth:`_requests` is; ``--pipeline`` takes
        :meth:`_http_pipelined`.  Per response: one ``sendall`` of prebuilt
        bytes, one ``recv_into`` this connection's buffer, one ``feed_data``
        of a cached memoryview of it (the parser's callbacks count), two
        clock reads and a dict update."""
        cfg = self.cfg
        http = cfg.http
        assert http is not None
        if http.pipeline > 1 or http.head:
            return self._http_pipelined(slot, sock, n)
        proto = Response(self.statuses, http.expect)
        feed = proto.parser().feed_data
        index = self.first + slot
        wire = http.wire
        paced = cfg.rate is not None
        period = intended = 0.0
        deadline = math.inf
        if cfg.rate is not None:
            period = cfg.connections / cfg.rate
            intended = self.t0 + period * (index / cfg.connections) + n * period
            if cfg.duration is not None:
                deadline = self.t0 + cfg.duration
        rbuf = bytearray(self.rbuf_size)
        rview = memoryview(rbuf)
        # Memoryviews of the buffer by length: a server's responses tend to
        # be of a few lengths, so feeding the parser allocates nothing.
        views: dict[int, memoryview] = {}
        views_get = views.get
        sendall = sock.sendall
        recv_into = sock.recv_into
        inflight = self.inflight
        budgeted = self.budgeted
        tally = self.tally
        tally_get = tally.get
        first = True
        seen = good = 0  # proto.done and proto.good already accounted for
        # The start of a response that spans several reads, kept in case the
        # connection ends before the response does (ended_by_eof).  With one
        # request in flight a response starts at the first byte of a read.
        kept = bytearray()
        try:
            while not self.stopping and not proto.closing:
                if paced and intended >= deadline:
                    self._wait_for_the_end(deadline)
                    break
                if paced:
                    now = monotonic()
                    if intended > now:
                        gsleep(intended - now)
                        if idle_closed(sock):
                            # The server closed the idle connection (its
                            # keep-alive timeout): connect again, nothing lost.
                            return n, True
                if budgeted:
                    if self.remaining <= 0:
                        break
                    self.remaining -= 1
                n += 1
                start = monotonic()
                inflight[slot] = start
                sendall(wire)
                while True:
                    got = recv_into(rbuf)
                    if got:
                        view = views_get(got)
                        if view is None:
                            if len(views) >= 64:
                                views.clear()
                            view = views[got] = rview[:got]
                        feed(view)
                        if proto.done != seen:
                            break
                        if len(kept) < MAX_KEPT:
                            kept += view[:MAX_KEPT - len(kept)]
                    elif kept:
                        complete, whole_head = ended_by_eof(kept)
                        if complete:
                            # Its body had no length: it ran to the end of
                            # the connection, and is whole.
                            proto.on_message_complete()
                            proto.closing = True
                            break
                        raise _Truncated("the server closed the connection in the middle of a response "
                                         + ("(in its body)" if whole_head else "(in its head)"))
                    else:
                        raise _ClosedEarly("the server closed the connection before the response began")
                if kept:
                    kept.clear()
                t_reply = monotonic()
                seen += 1
                if proto.done != seen:
                    raise MalformedResponse(f"{proto.done - seen + 1} responses to one request")
                inflight[slot] = 0.0
                self.requests += 1
                if proto.good != good:
                    good += 1
                    self.verified += 1
                else:
                    self.mismatches += 1
                if paced:
                    # Timed from the intended send time: a late send counts
                    # against the server.
                    start = intended
                    intended += period
                if first:
                    first = False
                    self._first_reply(slot, t_reply - start)
                else:
                    us = int((t_reply - start) * 1e6)
                    if us >> BUCKET_BITS:
                        shift = us.bit_length() - BUCKET_BITS
                        us = us >> shift << shift
                    tally[us] = tally_get(us, 0) + 1
        except _HTTP_BREAKS as e:
            raise _Broken(e, n) from e
        return n, proto.closing

    def _http_pipelined(self, slot: int, sock: gsocket.socket, n: int) -> tuple[int, bool]:
        """:meth:`_http_requests` with up to ``--pipeline`` requests in
        flight (closed loop): send as many as are missing in one
        ``sendall``, take the responses as they come, oldest first.  Also
        HEAD's loop (at any depth), whose heads are parsed one by one.
        The parser's callbacks follow every message here, as responses do
        not start at the first byte of a read."""
        http = self.cfg.http
        assert http is not None
        proto = TrackedResponse(self.statuses, http.expect)
        feed = HeadResponses(proto) if http.head else proto.parser().feed_data
        depth = http.pipeline
        batches = self.batches
        rbuf = bytearray(self.rbuf_size)
        rview = memoryview(rbuf)
        views: dict[int, memoryview] = {}
        sendall = sock.sendall
        recv_into = sock.recv_into
        inflight = self.inflight
        owed = self.owed
        budgeted = self.budgeted
        tally = self.tally
        tally_get = tally.get
        first = True
        outstanding = 0  # requests sent, not yet answered
        seen = good = 0
        sent: deque[float] = deque()  # send times of the requests in flight, oldest first
        try:
            while True:
                if outstanding < depth and not self.stopping and not proto.closing:
                    k = depth - outstanding
                    if budgeted:
                        k = min(k, self.remaining)
                        self.remaining -= k
                    if k:
                        n += k
                        start = monotonic()
                        outstanding += k
                        owed[slot] = outstanding
                        if not inflight[slot]:
                            inflight[slot] = start
                        sent.extend([start] * k)
                        sendall(batches[k])
                if not outstanding:
                    break
                got = recv_into(rbuf)
                if got:
                    view = views.get(got)
                    if view is None:
                        if len(views) >= 64:
                            views.clear()
                        view = views[got] = rview[:got]
                    feed(view)
                elif proto.in_message:
                    if not proto.ends_at_eof():
                        raise _Truncated("the server closed the connection in the middle of a response "
                                         + ("(in its body)" if proto.headers_done else "(in its head)"))
                else:
                    raise _ClosedEarly("the server closed the connection before the response began")
                done = proto.done
                if done != seen:
                    k = done - seen
                    if k > outstanding:
                        raise MalformedResponse(f"{k} responses to {outstanding} requests")
                    seen = done
                    g = proto.good - good
                    good += g
                    t = monotonic()
                    self.requests += k
                    self.verified += g
                    self.mismatches += k - g
                    outstanding -= k
                    owed[slot] = outstanding
                    while k:
                        k -= 1
                        s = sent.popleft()
                        if first:
                            first = False
                            self._first_reply(slot, t - s)
                        else:
                            us = int((t - s) * 1e6)
                            if us >> BUCKET_BITS:
                                shift = us.bit_length() - BUCKET_BITS
                                us = us >> shift << shift
                            tally[us] = tally_get(us, 0) + 1
                    inflight[slot] = sent[0] if outstanding else 0.0
                if proto.closing:
                    if outstanding:
                        # Pipelined after a response that closes: the server
                        # will not answer them; the next connection sends them.
                        if budgeted:
                            self.remaining += outstanding
                        outstanding = 0
                        owed[slot] = 0
                        inflight[slot] = 0.0
                    break
        except _HTTP_BREAKS as e:
            raise _Broken(e, n, outstanding or 1) from e
        return n, proto.closing

    def _first_reply(self, slot: int, seconds: float) -> None:
        us = int(seconds * 1e6)
        if not self.first_latency.record_value(us):
            self.first_latency.record_value(HIGHEST_US)
        if not self.first_replied_slots[slot]:
            self.first_replied_slots[slot] = True
            self.first_replied += 1
            if self.first_replied == self.count:
                self.first_reply_at = monotonic()

    # -- the run ---------------------------------------------------------

    def _wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``; woken early when every connection is done."""
        if self.active == 0:
            return
        hub = get_hub()
        g = getcurrent()
        self._waiter = g
        timer = hub.call_later(max(0.0, seconds), hub.wake, g)
        try:
            hub.block()
        finally:
            self._waiter = None
            hub.cancel_timer(timer)

    def _watchdog(self) -> None:
        """Time out replies that are late.  One scan of every connection a
        few times per timeout, instead of a timer per request."""
        hub = get_hub()
        parked = hub.parked
        timeout = self.cfg.timeout
        reply = "reply" if self.cfg.http is None else "response"
        period = min(1.0, max(0.01, timeout / 4))
        while True:
            gsleep(period)
            limit = monotonic() - timeout
            for slot, t in enumerate(self.inflight):
                if t and t < limit:
                    task = self.tasks[slot]
                    # Only while it waits for this request's reply: a throw
                    # into a running task would land on a later, innocent call.
                    if task in parked:
                        hub.throw(task, _ReplyTimeout(f"no {reply} within {timeout:g} s"))

    def _snapshot(self, now: float, replies_before: int, t_before: float) -> tuple[dict[str, Any], int]:
        replies = self.verified + self.mismatches
        h = self.interval
        p99 = int(h.get_value_at_percentile(99.0)) if h.get_total_count() else None
        snap = {
            "elapsed": now - self.t0,
            "replies": replies,
            "rate": (replies - replies_before) / max(1e-9, now - t_before),
            "p99_us": p99,
            "errors": sum(self.errors.values()),
            "mismatches": self.mismatches,
        }
        return snap, replies

    def _fold(self) -> None:
        record_counts(self.interval, self.tally)
        self.latency.add(self.interval)
        self.interval.reset()

    def run(self, addr: Any, family: int) -> LoadResult:
        """Run the connections to the end; return this part's results."""
        self.addr = addr
        self.family = family
        self.active = self.count
        cpu0 = cpu_seconds()
        self.tasks = [spawn(self._connection, slot) for slot in range(self.count)]
        watchdog = spawn(self._watchdog)
        deadline = math.inf if self.cfg.duration is None else self.t0 + self.cfg.duration
        interrupted = _Interrupt.install()
        replies_before, t_before = 0, self.t0

        def tick(now: float) -> None:
            nonlocal replies_before, t_before
            record_counts(self.interval, self.tally)
            snap, replies_before = self._snapshot(now, replies_before, t_before)
            t_before = now
            if self.on_tick is not None:
                self.on_tick(snap, self.interval)
            self._fold()

        next_tick = self.t0 + self.tick
        try:
            while self.active and not interrupted.hit:
                now = monotonic()
                if now >= deadline:
                    break
                self._wait(min(next_tick, deadline) - now)
                now = monotonic()
                if now >= next_tick:
                    tick(now)
                    next_tick = max(next_tick + self.tick, now + self.tick / 2)
            end = min(monotonic(), deadline)
            if end - t_before > self.tick / 10:
                tick(end)  # the last stretch, so the progress ends where the run does
            self.stopping = True
            if self.active:
                # Give the replies in flight a moment, then end the rest.
                self._wait(min(END_GRACE, self.cfg.timeout))
        finally:
            self.stopping = True
            killall([*self.tasks, watchdog], block=True, timeout=5.0)
            interrupted.restore()
        self._fold()
        cpu = cpu_seconds() - cpu0
        elapsed = max(1e-9, end - self.t0)
        http = self.cfg.http
        return LoadResult(
            target=self.cfg.target, connections=self.count,
            protocol=self.cfg.protocol if http is None else http.scheme,
            size=self.cfg.size if http is None else http.body_size, mode=self.cfg.mode,
            request="" if http is None else http.describe(),
            pipeline=1 if http is None else http.pipeline,
            expect_status="" if http is None else http.expect_text,
            statuses={str(code): k for code, k in sorted(self.statuses.items())},
            cpu_seconds=cpu, interrupted=interrupted.hit,
            elapsed=elapsed, replies_per_s=(self.verified + self.mismatches) / elapsed,
            opened=self.opened, failed=self.failed, gave_up=self.gave_up,
            requests=self.requests, verified=self.verified, mismatches=self.mismatches,
            unfinished=self.unfinished, errors=dict(self.errors),
            error_samples=dict(self.error_samples), security=self.cfg.security,
            first_reply=None if self.first_reply_at is None else self.first_reply_at - self.t0,
            first_replied=self.first_replied, latency=self.latency, first_latency=self.first_latency,
        )


class _Interrupt:
    """Ctrl-C (or SIGTERM) ends the run early but still prints the report.
    The handler only sets a flag: it may run inside the hub, where waking
    anything would race the hub's own bookkeeping."""

    def __init__(self) -> None:
        self.hit = False
        self._old: dict[int, Any] = {}

    @classmethod
    def install(cls) -> _Interrupt:
        self = cls()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:
                pass  # not the main OS thread: leave signals alone
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.hit = True

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


_PEEK = gsocket.MSG_PEEK | gsocket.MSG_DONTWAIT
_raw_recv = _socket.socket.recv


def idle_closed(sock: gsocket.socket) -> bool:
    """Whether the server closed (or is closing) a connection that sat idle:
    anything to read on it before a request is sent — EOF, a reset, a TLS
    close_notify, a 408 — means it is going.  One non-blocking peek at the
    TCP level, made only after the open loop slept.  Under TLS the bytes
    may also be the server's own post-handshake messages (TLS 1.3 session
    tickets): then a non-blocking read through TLS tells, as it takes them
    in and finds nothing for the application."""
    try:
        _raw_recv(sock, 1, _PEEK)
    except BlockingIOError:
        return False
    except OSError:
        return True
    if not isinstance(sock, gssl.SSLSocket):
        return True
    sock.settimeout(0.0)
    try:
        sock.recv(1)  # data or b"" (EOF): going either way
    except (gssl.SSLWantReadError, gssl.SSLWantWriteError, BlockingIOError):
        return False  # only TLS housekeeping: still open
    except OSError:
        return True
    finally:
        sock.settimeout(None)
    return True


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _resolve(cfg: LoadConfig) -> tuple[Any, int]:
    try:
        infos = gsocket.getaddrinfo(cfg.host, cfg.port, 0, gsocket.SOCK_STREAM)
    except OSError as e:
        raise LoadError(f"cannot resolve {cfg.host!r}: {e}") from None
    if not infos:
        raise LoadError(f"{cfg.host!r} resolves to no address")
    family, _kind, _proto, _cn, sockaddr = infos[0]
    return sockaddr, int(family)


def _split(total: int, parts: int) -> list[tuple[int, int]]:
    return [(total * k // parts, total * (k + 1) // parts) for k in range(parts)]


# -- progress ----------------------------------------------------------------

class Progress:
    """Live progress: a rich status line on a terminal, plain lines otherwise."""

    def __init__(self, cfg: LoadConfig, mode: str, out: Any = None) -> None:
        self.cfg = cfg
        self.mode = mode  # "rich", "plain" or "off"
        # Standard error: standard output is the report's (or the JSON's).
        self.out = out if out is not None else sys.stderr
        self._live: Any = None
        if mode == "rich":
            from rich.console import Console
            from rich.live import Live

            self._live = Live(console=Console(file=self.out), auto_refresh=False, transient=False)
            self._live.start()

    def _text(self, snap: dict[str, Any]) -> str:
        elapsed = snap["elapsed"]
        when = f"{elapsed:5.1f} s" if self.cfg.duration is None else f"{elapsed:5.1f}/{self.cfg.duration:g} s"
        replies = f"{snap['replies']:,}" if self.cfg.total is None else f"{snap['replies']:,}/{self.cfg.total:,}"
        if self.cfg.http is not None:
            return (f"[{when}] {snap['rate']:9,.0f} req/s   p99 {format_us(snap['p99_us']):>9}   "
                    f"responses {replies}   errors {snap['errors']:,}   bad status {snap['mismatches']:,}")
        return (f"[{when}] {snap['rate']:9,.0f} req/s   p99 {format_us(snap['p99_us']):>9}   "
                f"replies {replies}   errors {snap['errors']:,}   mismatches {snap['mismatches']:,}")

    @property
    def tick(self) -> float:
        """Seconds between updates: a live display can afford twice a second."""
        return 0.5 if self._live is not None else 1.0

    def _renderable(self, snap: dict[str, Any]) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        elapsed = snap["elapsed"]
        if self.cfg.duration is not None:
            done, total, when = elapsed, self.cfg.duration, f"{elapsed:.1f}/{self.cfg.duration:g} s"
        else:
            assert self.cfg.total is not None
            done, total = snap["replies"], self.cfg.total
            when = f"{elapsed:.1f} s, {snap['replies']:,}/{self.cfg.total:,}"
        bar = Table.grid(padding=(0, 1))
        bar.add_row(ProgressBar(total=total, completed=min(done, total), width=40), Text(when))
        bad = "bold red"
        http = self.cfg.http is not None
        stats = Text.assemble(
            (f"{snap['rate']:,.0f}", "bold"), " req/s   p99 ", (format_us(snap["p99_us"]), "bold"),
            f"   {'responses' if http else 'replies'} {snap['replies']:,}   errors ",
            (f"{snap['errors']:,}", bad if snap["errors"] else "green"),
            "   bad status " if http else "   mismatches ",
            (f"{snap['mismatches']:,}", bad if snap["mismatches"] else "green"),
        )
        return Group(bar, stats)

    def update(self, snap: dict[str, Any]) -> None:
        if self.mode == "off":
            return
        if self._live is not None:
            self._live.update(self._renderable(snap), refresh=True)
        else:
            print(self._text(snap), file=self.out, flush=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


# -- running -----------------------------------------------------------------

def run_load(cfg: LoadConfig, progress: Progress | None = None, tick: float | None = None) -> LoadResult:
    """Run the load test described by ``cfg``; return the merged result."""
    if tick is None:
        tick = progress.tick if progress is not None else 1.0
    check_config(cfg)
    procs = min(cfg.procs, cfg.connections)
    client_context(cfg)  # bad TLS options or CA file: say so before any connection
    addr, family = _resolve(cfg)
    raise_fd_limit(math.ceil(cfg.connections / procs) + _SPARE_FDS)
    on_tick = None if progress is None else (lambda snap, _h: progress.update(snap))
    t0 = monotonic()
    if procs == 1:
        engine = Engine(cfg, 0, cfg.connections, t0, cfg.total, tick, on_tick)
        return engine.run(addr, family)
    return _run_forked(cfg, procs, addr, family, t0, tick, progress)


def check_config(cfg: LoadConfig) -> None:
    """A LoadError for settings that cannot make a run."""
    if cfg.connections < 1:
        raise LoadError("need at least one connection (-c)")
    if cfg.procs < 1:
        raise LoadError("--procs must be at least 1")
    for name, value in (("--timeout", cfg.timeout), ("--connect-timeout", cfg.connect_timeout),
                        ("-d", cfg.duration if cfg.duration is not None else 1.0)):
        if not (math.isfinite(value) and value > 0):
            raise LoadError(f"{name} must be a positive number of seconds, not {value!r}")
    if cfg.total is not None and cfg.total < 1:
        raise LoadError("-n must be at least 1")
    if cfg.rate is not None:
        if not (math.isfinite(cfg.rate) and cfg.rate > 0):
            raise LoadError(f"--rate must be a positive number of requests per second, not {cfg.rate!r}")
        if cfg.duration is not None and cfg.rate * cfg.duration < 1:
            raise LoadError(f"--rate {cfg.rate:g} for {cfg.duration:g} s is less than one request: "
                            f"raise the rate or the duration (-d)")
        if cfg.http is not None and cfg.http.pipeline > 1:
            raise LoadError("--pipeline needs the closed loop: with --rate every connection has one "
                            "request in flight at a time")


def _run_forked(cfg: LoadConfig, procs: int, addr: Any, family: int, t0: float, tick: float,
                progress: Progress | None) -> LoadResult:
    ranges = _split(cfg.connections, procs)
    budgets: list[int | None] = [None] * procs if cfg.total is None else [
        cfg.total * stop // cfg.connections - cfg.total * start // cfg.connections for start, stop in ranges]
    sys.stdout.flush()
    sys.stderr.flush()
    children: list[tuple[int, int]] = []
    for k, (start, stop) in enumerate(ranges):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child; checked by the tests' results
            code = 70
            try:
                os.close(r)
                for _pid, other in children:
                    os.close(other)
                code = _child(cfg, start, stop - start, t0, budgets[k], tick, addr, family, w)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(w)
        children.append((pid, r))
    return _gather(cfg, children, t0, tick, progress)


def _child(cfg: LoadConfig, first: int, count: int, t0: float, budget: int | None, tick: float,
           addr: Any, family: int, w: int) -> int:
    def send(msg: dict[str, Any]) -> None:
        data = (json.dumps(msg) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(w, view):]

    def on_tick(snap: dict[str, Any], interval: Any) -> None:
        send({"tick": snap, "histogram": encode_histogram(interval)})

    engine = Engine(cfg, first, count, t0, budget, tick, on_tick)
    send({"final": engine.run(addr, family).to_dict()})
    os.close(w)
    return 0


def _gather(cfg: LoadConfig, children: list[tuple[int, int]], t0: float, tick: float,
            progress: Progress | None) -> LoadResult:
    """In the parent: read each child's progress and final result, show the
    merged progress, and merge the results."""
    latest: dict[int, dict[str, Any]] = {}
    finals: dict[int, dict[str, Any]] = {}
    interval = new_histogram()

    def reader(k: int, fd: int) -> None:
        buf = b""
        while True:
            gsocket.wait_read(fd)
            data = os.read(fd, 1 << 16)
            if not data:
                break
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                msg = json.loads(line)
                if "tick" in msg:
                    latest[k] = msg["tick"]
                    interval.add(decode_histogram(msg["histogram"]))
                elif "final" in msg:
                    finals[k] = msg["final"]
        os.close(fd)

    for _pid, fd in children:
        os.set_blocking(fd, False)
    readers = [spawn(reader, k, fd) for k, (_pid, fd) in enumerate(children)]
    cpu0 = cpu_seconds()
    replies_before, t_before = 0, t0
    interrupted = _Interrupt.install()
    forwarded = False
    try:
        while True:
            joinall(readers, timeout=tick)
            done = all(t.dead for t in readers)
            if interrupted.hit and not forwarded:
                # Ctrl-C on a terminal reaches the children too, a kill of
                # the parent alone does not: pass it on, they stop and report.
                forwarded = True
                for pid, _fd in children:
                    os.kill(pid, signal.SIGINT)
            now = monotonic()
            if progress is not None and latest:
                replies = sum(s["replies"] for s in latest.values())
                snap = {
                    "elapsed": now - t0,
                    "replies": replies,
                    "rate": (replies - replies_before) / max(1e-9, now - t_before),
                    "p99_us": int(interval.get_value_at_percentile(99.0)) if interval.get_total_count() else None,
                    "errors": sum(s["errors"] for s in latest.values()),
                    "mismatches": sum(s["mismatches"] for s in latest.values()),
                }
                progress.update(snap)
                replies_before, t_before = replies, now
            interval.reset()
            if done:
                break
    finally:
        interrupted.restore()
    failed = []
    for k, (pid, _fd) in enumerate(children):
        _, status = os.waitpid(pid, 0)
        if k not in finals:
            failed.append(f"client process {k} ended without a result ({_describe_status(status)})")
    if failed:
        raise LoadError("; ".join(failed))
    parts = [LoadResult.from_part(finals[k]) for k in range(len(children))]
    result = LoadResult.merge(parts)
    result.target = cfg.target
    # The parent's own work (reading and merging the children's progress)
    # is part of what the client costs.
    result.cpu_seconds += cpu_seconds() - cpu0
    return result


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}"


# -- command line -------------------------------------------------------------

def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive_number(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(x) and x > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
    return x


def _count(text: str) -> int:
    try:
        n = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text!r}")
    return n


def one_line_errors(parser: argparse.ArgumentParser, prog: str) -> None:
    """Make ``parser`` report a bad argument as one line on standard error
    (``PROG: what is wrong``) and exit 2, without the usage block; unknown
    arguments included (argparse would leave those to the top parser)."""
    def error(message: str) -> NoReturn:
        print(f"{prog}: {message} (see {prog} --help)", file=sys.stderr)
        sys.exit(2)

    parse_known = parser.parse_known_args

    def parse_known_args(args: Any = None, namespace: Any = None) -> Any:
        ns, extras = parse_known(args, namespace)
        if extras:
            error(f"unrecognized arguments: {' '.join(extras)}")
        return ns, extras

    parser.error = error  # type: ignore[method-assign]
    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "load",
        help="load-test a server (line protocol or HTTP): requests/s, latency percentiles, every reply checked",
        description=(
            "Open -c connections to HOST:PORT, each sending 'conn-<i> say hello <n>' and checking "
            "the reply, or to an http:// or https:// URL, each sending keep-alive HTTP/1.1 requests "
            "and parsing every response in full; for -d seconds or -n requests.  Report requests/s, "
            "latency percentiles (HDR histogram), responses by status, every error by kind, and the "
            "client's own CPU per response.  Exit 0 only if every reply was right (HTTP: a status in "
            "--expect-status, no error), 1 otherwise, 2 for bad arguments.  "
            "`greenline load merge A.json B.json` merges the --json output of several runs."),
    )
    p.add_argument("target", metavar="HOST:PORT|URL",
                   help="the server: HOST:PORT for the line protocol, http://HOST[:PORT]/PATH or "
                        "https://... for HTTP (or `merge`, followed by JSON files)")
    p.add_argument("files", nargs="*", metavar="FILE.json", help="with `merge`: the --json files to merge")
    p.add_argument("-c", "--connections", type=_count, default=500, metavar="N",
                   help="concurrent connections (default: %(default)s)")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("-d", "--duration", type=_duration, default=None, metavar="TIME",
                      help="how long to run: 30s, 2m, 500ms, or plain seconds (default: 10s, unless -n "
                           "is given)")
    stop.add_argument("-n", "--requests", type=_count, default=None, dest="total", metavar="TOTAL",
                      help="stop after this many requests in total")
    p.add_argument("--rate", type=_positive_number, default=None, metavar="R",
                   help="open loop: R requests/s in total, latency counted from each request's "
                        "intended send time (default: closed loop)")
    p.add_argument("--procs", type=_count, default=1, metavar="N",
                   help="client processes to spread the connections over (default: %(default)s)")
    p.add_argument("--timeout", type=_duration, default=10.0, metavar="TIME",
                   help="how long to wait for a reply (default: 10s)")
    p.add_argument("--connect-timeout", type=_duration, default=5.0, metavar="TIME",
                   help="how long to wait for a connection and its TLS handshake (default: 5s)")
    line = p.add_argument_group("line protocol (HOST:PORT)")
    line.add_argument("--size", type=_count, default=None, metavar="BYTES",
                      help="message size (default: 32)")
    line.add_argument("--protocol", choices=("upper", "echo"), default=None,
                      help="what a right reply is: the message upper-cased, or the message itself "
                           "(default: upper)")
    http = p.add_argument_group("HTTP (http:// or https:// URL)")
    http.add_argument("-m", "--method", default=None, metavar="METHOD", help="(default: GET)")
    http.add_argument("-H", "--header", action="append", default=None, metavar="'NAME: VALUE'",
                      help="a request header; repeat for more (Host and User-Agent are sent unless given)")
    body = http.add_mutually_exclusive_group()
    body.add_argument("--body", default=None, metavar="TEXT", help="the request body (UTF-8)")
    body.add_argument("--body-file", default=None, metavar="PATH", help="the request body, from a file")
    http.add_argument("--pipeline", type=_count, default=None, metavar="N",
                      help="requests in flight per connection, sent back to back (default: 1; closed "
                           "loop only)")
    http.add_argument("--expect-status", default=None, metavar="LIST",
                      help="the statuses that count as right, codes and classes: 200,404 or 2xx,404 "
                           f"(default: {DEFAULT_EXPECT})")
    tls = p.add_argument_group("TLS")
    tls.add_argument("--tls", action="store_true",
                     help="connect with TLS (greenline.ssl; implied by an https:// URL); the handshake "
                          "is part of connecting, not of the first request's latency")
    tls.add_argument("--cafile", metavar="PEM", default=None,
                     help="with TLS: trust the CAs in this file instead of the system's")
    tls.add_argument("--insecure", action="store_true",
                     help="with TLS: do not verify the certificate or the host name (for "
                          "self-signed certificates); the report says so")
    tls.add_argument("--server-name", metavar="NAME", default=None,
                     help="with TLS: the name sent for SNI and checked against the certificate "
                          "(default: the target's host)")
    p.add_argument("--json", metavar="PATH", default=None,
                   help="also write the results, with the encoded histograms, to PATH; `-` writes "
                        "them to standard output (and the report to standard error)")
    p.add_argument("--no-progress", action="store_true",
                   help="no live progress (which goes to standard error)")
    one_line_errors(p, "greenline load")
    p.set_defaults(func=main)
    return p


_LINE_OPTIONS = {"size": "--size", "protocol": "--protocol"}
_HTTP_OPTIONS = {"method": "-m", "header": "-H", "body": "--body", "body_file": "--body-file",
                 "pipeline": "--pipeline", "expect_status": "--expect-status"}


def config_from_args(args: argparse.Namespace) -> LoadConfig:
    """The LoadConfig the command line asks for, or a LoadError."""
    duration = args.duration if args.duration is not None else (None if args.total else 10.0)
    common = dict(connections=args.connections, duration=duration, total=args.total, rate=args.rate,
                  procs=args.procs, timeout=args.timeout, connect_timeout=args.connect_timeout,
                  cafile=args.cafile, insecure=args.insecure, server_name=args.server_name)
    if "://" not in args.target:
        given = [flag for name, flag in _HTTP_OPTIONS.items() if getattr(args, name) is not None]
        if given:
            raise LoadError(f"{', '.join(given)}: HTTP options, for an http:// or https:// URL")
        host, port = parse_target(args.target)
        return LoadConfig(host=host, port=port, size=args.size or 32, protocol=args.protocol or "upper",
                          tls=args.tls, **common)  # type: ignore[arg-type]
    given = [flag for name, flag in _LINE_OPTIONS.items() if getattr(args, name) is not None]
    if given:
        raise LoadError(f"{', '.join(given)}: line-protocol options, for a HOST:PORT target")
    body: bytes | None = None
    if args.body is not None:
        body = args.body.encode()
    elif args.body_file is not None:
        try:
            with open(args.body_file, "rb") as f:
                body = f.read()
        except OSError as e:
            raise LoadError(f"cannot read --body-file {args.body_file!r}: {e.strerror or e}") from None
    http = http_request(args.target, args.method or "GET", args.header, body, args.pipeline or 1,
                        args.expect_status)
    if args.tls and http.scheme == "http":
        raise LoadError("--tls with an http:// URL: use https:// for TLS")
    return LoadConfig(host=http.host, port=http.port, tls=http.scheme == "https", http=http,
                      **common)  # type: ignore[arg-type]


def main(args: argparse.Namespace) -> int:
    if args.target == "merge":
        return _merge(args)
    if args.files:
        print(f"greenline load: unexpected arguments {' '.join(args.files)}", file=sys.stderr)
        return 2
    try:
        cfg = config_from_args(args)
        check_config(cfg)
        client_context(cfg)
        progress = Progress(cfg, progress_mode(args.no_progress))
        try:
            result = run_load(cfg, progress)
        finally:
            progress.close()
    except LoadError as e:
        print(f"greenline load: {e}", file=sys.stderr)
        return 2
    return finish(result, args.json)


def progress_mode(disabled: bool, stream: Any = None) -> str:
    """How to show progress on ``stream`` (standard error by default): a
    live display on a terminal, plain lines otherwise, or nothing."""
    stream = stream if stream is not None else sys.stderr
    if disabled:
        return "off"
    return "rich" if stream.isatty() else "plain"


def finish(result: LoadResult, json_path: str | None, live: bool = True) -> int:
    """Print the report, write the JSON, and return the exit code.  With
    ``--json -`` the JSON is standard output's, and the report goes to
    standard error."""
    to_stdout = json_path == "-"
    print(result.render(), file=sys.stderr if to_stdout else sys.stdout, flush=True)
    if json_path:
        try:
            result.write_json(json_path)
        except OSError as e:
            print(f"greenline load: cannot write {json_path}: {e.strerror or e}", file=sys.stderr)
            return 2
    if live and result.interrupted:
        return 130  # as a shell reports a command ended by Ctrl-C
    return 0 if result.ok else 1


def _merge(args: argparse.Namespace) -> int:
    if not args.files:
        print("greenline load merge: give the JSON files to merge", file=sys.stderr)
        return 2
    try:
        parts = [LoadResult.read_json(path) for path in args.files]
    except ValueError as e:
        print(f"greenline load merge: {e}", file=sys.stderr)
        return 2
    return finish(LoadResult.merge(parts), args.json, live=False)
