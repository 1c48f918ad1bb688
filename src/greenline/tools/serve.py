"""``greenline serve``: the command line of the supervisor.

Parses the options into a :class:`~greenline.servers.supervisor.ServeConfig`,
checks what can be checked once (the TLS certificate, the app, the access
log), patches the standard library if asked, binds, and hands over to the
:class:`~greenline.servers.supervisor.Supervisor` with a server factory: a
stream server around a ``handle(sock, address)``, or with ``--wsgi`` a
:class:`greenline.wsgi.WSGIServer` around a WSGI application.  The HTTP
options are gunicorn's names where gunicorn has the setting (docs/wsgi.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from greenline.servers.supervisor import (
    ServeConfig,
    ServerFactory,
    Supervisor,
    bind,
    format_host,
    stream_server_factory,
)

__all__ = ["add_parser", "run"]

log = logging.getLogger("greenline.serve")


def _procs(value: str) -> int:
    if value == "auto":
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            return os.cpu_count() or 1
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1, or auto")
    return n


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _positive_float(value: str) -> float:
    x = float(value)
    if not x > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return x


def _non_negative_float(value: str) -> float:
    x = float(value)
    if not x >= 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return x


def _non_negative_int(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return n


# The HTTP options (with --wsgi only): destination -> flag, for the message
# when one is given without --wsgi.
_HTTP_OPTIONS = {
    "limit_request_line": "--limit-request-line",
    "limit_request_fields": "--limit-request-fields",
    "limit_request_field_size": "--limit-request-field_size",
    "limit_request_head": "--limit-request-head",
    "limit_request_body": "--limit-request-body",
    "keep_alive": "--keep-alive",
    "header_timeout": "--header-timeout",
    "body_timeout": "--body-timeout",
    "access_log": "--access-log",
    "forwarded_allow_ips": "--forwarded-allow-ips",
}
# gunicorn's cap on the field count, which its 0 ("no limit") stands for.
MAX_FIELDS_CAP = 32768


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run a TCP server: processes x threads x green threads",
        description="Serve TCP connections with APP, one green thread per connection, in "
                    "PROCS pre-forked worker processes of THREADS threads each.  Prints "
                    "'listening on HOST:PORT' once every worker accepts.",
    )
    p.add_argument("app", metavar="APP",
                   help="upper (send back upper-cased), echo, or package.module:function "
                        "(a handle(sock, address) of yours); with --wsgi, module:application "
                        "(a WSGI application)")
    p.add_argument("--wsgi", action="store_true",
                   help="APP is a WSGI application: serve it over HTTP/1.1 (docs/wsgi.md)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="port, 0 for any free one (default: %(default)s)")
    p.add_argument("--procs", type=_procs, default=1, metavar="N|auto",
                   help="worker processes; auto is one per core (default: 1)")
    p.add_argument("--threads", type=_positive_int, default=1, metavar="T",
                   help="threads per worker, each with its own hub and accept loop (default: 1)")
    p.add_argument("--max-conns", type=_positive_int, default=None, metavar="N",
                   help="connections handled at once by each thread; beyond it new ones wait "
                        "in the backlog (default: no limit)")
    p.add_argument("--idle-timeout", type=_positive_float, default=None, metavar="S",
                   help="close a connection that makes no progress for S seconds (default: off)")
    p.add_argument("--graceful-timeout", type=_non_negative_float, default=10.0, metavar="S",
                   help="on SIGTERM/SIGINT, how long open connections may go on (default: %(default)s)")
    p.add_argument("--backlog", type=_positive_int, default=2048, metavar="N",
                   help="listen backlog, capped by net.core.somaxconn (default: %(default)s)")
    p.add_argument("--certfile", metavar="PEM", default=None,
                   help="serve TLS with this certificate (chain) file")
    p.add_argument("--keyfile", metavar="PEM", default=None,
                   help="the certificate's private key, if not in --certfile")
    p.add_argument("--stats-interval", type=_positive_float, default=None, metavar="S",
                   help="each worker logs its connection counts every S seconds (default: off)")
    p.add_argument("--monkey-patch", action="store_true",
                   help="call greenline.monkey.patch_all() before loading APP, so that the "
                        "blocking calls it makes (time.sleep, other sockets, ...) switch green threads")
    # Behind a load balancer (docs/deploy.md).
    p.add_argument("--proxy-protocol", action="store_true",
                   help="every connection starts with a PROXY protocol header (v1 or v2, as "
                        "HAProxy's send-proxy[-v2] sends): the client's address is taken from it; "
                        "a connection without one is closed (400 with --wsgi)")
    p.add_argument("--forwarded-allow-ips", type=_forwarded_allow_ips, default=None, metavar="IPS",
                   help="with --wsgi: the proxies (IPs, CIDR networks, comma-separated; * for all) "
                        "whose X-Forwarded-For and X-Forwarded-Proto set REMOTE_ADDR and "
                        "wsgi.url_scheme (default: none)")
    http = p.add_argument_group(
        "HTTP (with --wsgi)",
        "Limits and timeouts per request; gunicorn's option names where it has the setting. "
        "Defaults: greenline.wsgi.Limits.")
    http.add_argument("--limit-request-line", type=_non_negative_int, default=None, metavar="BYTES",
                      help="longest request target (URL), else 414; 0: only the head limit "
                           "(default: 8190)")
    http.add_argument("--limit-request-fields", type=_non_negative_int, default=None, metavar="N",
                      help=f"most header fields in a request, else 431; 0: {MAX_FIELDS_CAP} "
                           "(default: 100)")
    http.add_argument("--limit-request-field_size", "--limit-request-field-size",
                      dest="limit_request_field_size", type=_non_negative_int, default=None,
                      metavar="BYTES",
                      help="longest header field, name and value, else 431; 0: only the head "
                           "limit (default: 8190)")
    http.add_argument("--limit-request-head", type=_positive_int, default=None, metavar="BYTES",
                      help="largest request head, else 431 (default: 65536)")
    http.add_argument("--limit-request-body", type=_non_negative_int, default=None, metavar="BYTES",
                      help="largest request body, else 413; 0: no limit (default: 1073741824)")
    http.add_argument("--keep-alive", type=_non_negative_float, default=None, metavar="S",
                      help="how long a kept-alive connection may wait between requests; "
                           "0: no keep-alive (default: 5)")
    http.add_argument("--header-timeout", type=_positive_float, default=None, metavar="S",
                      help="from a request's first byte to the end of its head, else 408 "
                           "(default: 10)")
    http.add_argument("--body-timeout", type=_positive_float, default=None, metavar="S",
                      help="longest wait for the next bytes of a request body (default: 30)")
    http.add_argument("--access-log", "--access-logfile", dest="access_log", default=None,
                      metavar="FILE|-",
                      help="log each request in the common log format, to FILE (appended) or - "
                           "for stdout (default: off)")
    p.add_argument("--log-level", default="info", type=str.lower,
                   choices=["debug", "info", "warning", "error", "critical"],
                   help="(default: %(default)s)")
    p.set_defaults(func=run)
    # Bad input is one line (which option, what is wrong) and exit 2, not
    # the usage message as well.
    p.error = _one_line_error(p)  # type: ignore[method-assign]
    return p


def _one_line_error(parser: argparse.ArgumentParser) -> Any:
    def error(message: str) -> Any:
        parser.exit(2, f"{parser.prog}: error: {message}\n")

    return error


LOG_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"


def run(args: argparse.Namespace) -> int:
    """``greenline serve``: returns the exit code."""
    from greenline.servers.apps import AppError, load_app

    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    cfg = ServeConfig(app=args.app, host=args.host, port=args.port, procs=args.procs,
                      threads=args.threads, max_conns=args.max_conns, idle_timeout=args.idle_timeout,
                      graceful_timeout=args.graceful_timeout, backlog=args.backlog,
                      certfile=args.certfile, keyfile=args.keyfile,
                      stats_interval=getattr(args, "stats_interval", None))
    if cfg.keyfile and not cfg.certfile:
        log.error("--keyfile needs --certfile")
        return 2
    wsgi = getattr(args, "wsgi", False)
    if not wsgi:
        given = [flag for dest, flag in _HTTP_OPTIONS.items() if getattr(args, dest, None) is not None]
        if given:
            log.error("%s needs --wsgi", given[0])
            return 2
    if cfg.certfile:
        # Load it once here so a bad file is an error now, not in every worker.
        from greenline.servers.stream import make_ssl_context

        try:
            make_ssl_context(None, cfg.ssl_args())
        except (OSError, ValueError) as e:
            log.error("cannot load the TLS certificate: %s", e)
            return 2
    if getattr(args, "monkey_patch", False):
        # Here, not in the app module: patching while importlib holds its
        # module lock swaps the thread identity that lock is keyed on.
        from greenline import monkey

        monkey.patch_all()
    try:
        if wsgi:
            make_server = _wsgi_factory(args, cfg)
            cfg.app = f"{args.app} (WSGI)"
        else:
            make_server = stream_server_factory(load_app(args.app), cfg)
    except AppError as e:
        log.error("%s", e)
        return 2
    except _UsageError as e:
        log.error("%s", e)
        return 2
    make_server = _behind_balancer(make_server, args)
    try:
        listener = bind(cfg)
    except OSError as e:
        log.error("cannot listen on %s:%d: %s", format_host(cfg.host), cfg.port, e.strerror or e)
        return 1
    cfg.port = listener.getsockname()[1]
    try:
        return Supervisor(cfg, make_server, listener).run()
    finally:
        listener.close()


def _forwarded_allow_ips(value: str) -> Any:
    from greenline.wsgi.forwarded import trusted_proxies

    try:
        return trusted_proxies(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _behind_balancer(make: ServerFactory, args: argparse.Namespace) -> ServerFactory:
    """``make``, with --proxy-protocol and --forwarded-allow-ips applied to
    the servers it makes (both are read when a server starts)."""
    pp = getattr(args, "proxy_protocol", False)
    allow = getattr(args, "forwarded_allow_ips", None)
    if not pp and allow is None:
        return make

    def behind(sock: Any) -> Any:
        server: Any = make(sock)
        server.proxy_protocol = pp
        if allow is not None:
            server.forwarded_allow_ips = allow
        return server

    return behind


class _UsageError(Exception):
    """A bad option value found after parsing (one line, exit 2)."""


def _limits(args: argparse.Namespace) -> Any:
    """The :class:`~greenline.wsgi.Limits` the HTTP options ask for."""
    from greenline.wsgi import Limits

    base = Limits()
    head = args.limit_request_head or base.max_head_size
    changes: dict[str, Any] = {"max_head_size": head}
    if args.limit_request_line is not None:
        changes["max_request_line"] = args.limit_request_line or head
    if args.limit_request_field_size is not None:
        changes["max_field_size"] = args.limit_request_field_size or head
    if args.limit_request_fields is not None:
        changes["max_fields"] = min(args.limit_request_fields or MAX_FIELDS_CAP, MAX_FIELDS_CAP)
    if args.limit_request_body is not None:
        changes["max_body_size"] = args.limit_request_body or None
    if args.keep_alive is not None:
        changes["keepalive_timeout"] = args.keep_alive
    if args.header_timeout is not None:
        changes["header_timeout"] = args.header_timeout
    if args.body_timeout is not None:
        changes["body_timeout"] = args.body_timeout
    try:
        return Limits(**{**base.__dict__, **changes})
    except ValueError as e:
        raise _UsageError(str(e)) from None


def _access_log(target: str | None) -> Any:
    """The access log's file object: opened here, once, so a bad path is an
    error now; the workers inherit it (appends from several processes
    stay whole lines: one write each, O_APPEND)."""
    if target is None:
        return None
    if target == "-":
        return sys.stdout
    try:
        return open(target, "a", buffering=1, encoding="utf-8", errors="backslashreplace")
    except OSError as e:
        raise _UsageError(f"cannot open the access log {target}: {e.strerror or e}") from None


def _wsgi_factory(args: argparse.Namespace, cfg: ServeConfig) -> ServerFactory:
    """A factory of :class:`~greenline.wsgi.WSGIServer` for APP."""
    from greenline.servers.apps import load_app
    from greenline.wsgi import WSGIServer

    if ":" not in args.app:
        raise _UsageError(f"with --wsgi, APP is module:application, not {args.app!r}")
    app: Any = load_app(args.app)
    limits = _limits(args)
    access = _access_log(args.access_log)
    ssl_args = cfg.ssl_args()

    def make(sock: Any) -> WSGIServer:
        return WSGIServer(sock, app, log=access, limits=limits, max_connections=cfg.max_conns,
                          idle_timeout=cfg.idle_timeout, multiprocess=cfg.procs > 1,
                          multithread=cfg.threads > 1, **ssl_args)

    return make
