"""A gunicorn worker class, for those who keep gunicorn as their arbiter::

    gunicorn -k greenline.wsgi.gunicorn.Worker -w 4 myproject.wsgi:application

gunicorn forks and watches the workers (its signals, its config, its hooks);
each worker serves every connection in a green thread of greenline's, with
:class:`greenline.wsgi.WSGIServer` (HTTP on llhttp) instead of gunicorn's
own parser.  Like ``-k gevent``, the worker calls
:func:`greenline.monkey.patch_all` before it loads the application, so the
blocking calls the application makes (database drivers, ``time.sleep``,
``requests``) switch green threads.

gunicorn's settings, mapped:

=========================================  =====================================================
``worker_connections``                      ``max_connections`` of each listener's server
``keepalive`` (0: none)                     :attr:`~greenline.wsgi.Limits.keepalive_timeout`
``limit_request_line`` (0: no own limit)    :attr:`~greenline.wsgi.Limits.max_request_line`
                                            (the URL; gunicorn counts the whole request line)
``limit_request_fields`` (0: 32768)         :attr:`~greenline.wsgi.Limits.max_fields`
``limit_request_field_size`` (0: none)      :attr:`~greenline.wsgi.Limits.max_field_size`
``graceful_timeout``                        how long SIGTERM lets requests in flight go on
``accesslog``, ``access_log_format``        gunicorn's own access log, through ``log.access``
``max_requests`` (+ ``_jitter``)            the worker stops gracefully after that many
``certfile``, ``keyfile``, ``ssl_context``  TLS, the handshake in the connection's green thread
``timeout``                                 the heartbeat: the worker notifies once a second
=========================================  =====================================================

Life cycle: SIGTERM stops gracefully (stop accepting, let requests in flight
finish for up to ``graceful_timeout``, close idle connections after a last
call; see :meth:`greenline.wsgi.WSGIServer.close`); SIGQUIT and SIGINT stop
at once; a worker whose parent changed stops.

This is the only module of greenline that imports gunicorn; nothing imports
it unless gunicorn names it.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from typing import Any

from gunicorn.workers import base as _gunicorn_base

from greenline import socket as gsocket
from greenline._core.hub import sleep
from greenline._core.task import joinall, spawn
from greenline.wsgi.http import Limits, Request
from greenline.wsgi.server import WSGIServer

__all__ = ["Worker"]

# gunicorn's cap on header fields, which its limit_request_fields = 0 means.
MAX_FIELDS = 32768
# The longest the worker goes without telling the arbiter it is alive.
HEARTBEAT = 1.0


def limits_from(cfg: Any) -> Limits:
    """:class:`~greenline.wsgi.Limits` from gunicorn's settings."""
    base = Limits()
    head = base.max_head_size
    fields = cfg.limit_request_fields
    return Limits(
        max_request_line=cfg.limit_request_line or head,
        max_fields=min(fields, MAX_FIELDS) if fields > 0 else MAX_FIELDS,
        max_field_size=cfg.limit_request_field_size or head,
        keepalive_timeout=max(float(cfg.keepalive), 0.0),
    )


def _access_log_enabled(log: Any, cfg: Any) -> bool:
    enabled = getattr(log, "access_log_enabled", None)  # gunicorn 24 and later
    if isinstance(enabled, bool):
        return enabled
    return bool(cfg.accesslog or getattr(cfg, "logconfig", None) or getattr(cfg, "logconfig_dict", None)
                or (cfg.syslog and not cfg.disable_redirect_access_to_syslog))


class _Response:
    """What gunicorn's access log reads of a response."""

    __slots__ = ("status", "headers", "sent")

    def __init__(self, request: Request) -> None:
        self.status = request.status or str(request.code or "-")
        self.headers = request.out_headers
        self.sent = request.sent


class _Server(WSGIServer):
    """A WSGIServer whose access log is gunicorn's (its format, its files)."""

    def __init__(self, listener: Any, application: Any, worker: Worker, **kwargs: Any) -> None:
        self.worker = worker
        super().__init__(listener, application, **kwargs)

    def log_request(self, request: Request, environ: dict[str, Any], duration: float) -> None:
        headers = [(n.decode("latin-1").upper(), v.decode("latin-1")) for n, v in request.headers]
        self.worker.log.access(_Response(request), headers, environ, timedelta(seconds=duration))


class Worker(_gunicorn_base.Worker):
    """gunicorn worker: greenline's hub, green threads and WSGIServer."""

    #: Set by SIGQUIT/SIGINT: stop without waiting for requests in flight.
    quick_exit = False

    def init_signals(self) -> None:
        # gunicorn's init_process sets up the signals, then imports the
        # application: patch in between.  Before the application, so that its
        # modules see the cooperative socket, time, threading... (as
        # gunicorn's gevent worker does); after the signals, because until
        # then a SIGTERM meets the handler inherited from the arbiter, which
        # does nothing in a worker, and patching takes long enough for one to
        # land there (a worker stopped while booting would then never stop).
        super().init_signals()
        from greenline import monkey

        monkey.patch_all()

    # -- signals (gunicorn's handlers, which only note what to do) ---------

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.alive = False
        self._wake()

    def handle_quit(self, sig: int, frame: Any) -> None:
        self.alive = False
        self.quick_exit = True
        self.cfg.worker_int(self)
        self._wake()

    def _wake(self) -> None:
        # The run loop waits on gunicorn's wake-up pipe (which a signal
        # writes to as well).
        try:
            os.write(self.PIPE[1], b".")
        except (OSError, IndexError):
            pass

    # -- serving -------------------------------------------------------------

    def make_servers(self) -> list[WSGIServer]:
        """One server per gunicorn listener, all in this worker's hub."""
        cfg = self.cfg
        ssl_args: dict[str, Any] = {}
        if cfg.is_ssl:
            from gunicorn.sock import ssl_context

            from greenline import ssl as gssl

            ctx = ssl_context(cfg)
            if not isinstance(ctx, gssl.SSLContext):
                raise RuntimeError("the ssl_context hook returned a standard-library SSLContext; "
                                   "build it with greenline.ssl (or ssl after monkey.patch_all())")
            ssl_args["ssl_context"] = ctx
        app = self.wsgi
        if self.max_requests < sys.maxsize:
            app = self._counting(app)
        access = self.log if _access_log_enabled(self.log, cfg) else None
        limits = limits_from(cfg)
        error_log = getattr(self.log, "error_log", None)
        return [
            _Server(listener.sock if hasattr(listener, "sock") else listener, app, self,
                    log=access, error_log=error_log, limits=limits,
                    max_connections=cfg.worker_connections, multiprocess=cfg.workers > 1,
                    **ssl_args)
            for listener in self.sockets
        ]

    def _counting(self, app: Any) -> Any:
        def counted(environ: dict[str, Any], start_response: Any) -> Any:
            self.nr += 1
            if self.nr >= self.max_requests and self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
                self._wake()
            return app(environ, start_response)

        return counted

    def run(self) -> None:
        servers = self.make_servers()
        for server in servers:
            server.start()
        wake = self.PIPE[0]
        beat = min(HEARTBEAT, self.timeout) if self.timeout else HEARTBEAT
        while self.alive:
            self.notify()
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                break
            try:
                gsocket.wait_read(wake, beat)
            except TimeoutError:
                continue
            try:
                while os.read(wake, 512):
                    pass
            except BlockingIOError:
                pass
        self.alive = False
        timeout = 0.0 if self.quick_exit else float(self.cfg.graceful_timeout)
        heart = spawn(self._beat_while_stopping, beat)
        try:
            joinall([spawn(server.stop, timeout) for server in servers])
        finally:
            heart.kill(block=False)

    def _beat_while_stopping(self, beat: float) -> None:
        # gunicorn's arbiter kills a worker silent for `timeout` seconds, in
        # a reload too: keep telling it we are alive while requests finish.
        while True:
            self.notify()
            sleep(beat)
