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
import importlib
import logging
import math
import os
import sys
import sysconfig
from collections.abc import Callable
from typing import Any

from greenline.servers.supervisor import (
    ServeConfig,
    ServerFactory,
    Supervisor,
    bind,
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
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, not {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1, or auto")
    return n


def _port(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, not {value!r}") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {n}")
    return n


def _finite(x: float) -> float:
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, not {x}")
    return x


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _positive_float(value: str) -> float:
    x = float(value)
    if not x > 0 or not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number, not {value}")
    return x


def _non_negative_float(value: str) -> float:
    x = float(value)
    if not x >= 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return _finite(x)


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
    p.add_argument("--host", default=None, help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=_port, default=None,
                   help="port, 0 for any free one (default: 8080)")
    p.add_argument("-b", "--bind", default=None, metavar="HOST:PORT|unix:PATH",
                   help="where to listen, gunicorn's way: instead of --host and --port, or a "
                        "Unix socket")
    p.add_argument("--procs", "-w", "--workers", dest="procs", type=_procs, default=1, metavar="N|auto",
                   help="worker processes; auto is one per core (default: 1)")
    p.add_argument("--threads", type=_positive_int, default=1, metavar="T",
                   help="threads per worker, each with its own hub and accept loop (default: 1)")
    p.add_argument("--max-conns", type=_positive_int, default=None, metavar="N",
                   help="connections handled at once by each thread; beyond it new ones wait "
                        "in the backlog (default: no limit)")
    p.add_argument("--idle-timeout", type=_positive_float, default=None, metavar="S",
                   help="close a connection that makes no progress for S seconds (default: off)")
    p.add_argument("--graceful-timeout", type=_non_negative_float, default=10.0, metavar="S",
                   help="on SIGTERM/SIGINT, and for a worker replaced on SIGHUP, how long open "
                        "connections may go on; a worker still alive 3 s later is killed "
                        "(default: %(default)s)")
    p.add_argument("--backlog", type=_positive_int, default=2048, metavar="N",
                   help="listen backlog, capped by net.core.somaxconn (default: %(default)s)")
    p.add_argument("--certfile", metavar="PEM", default=None,
                   help="serve TLS with this certificate (chain) file")
    p.add_argument("--keyfile", metavar="PEM", default=None,
                   help="the certificate's private key, if not in --certfile")
    p.add_argument("--handshake-timeout", type=_positive_float, default=10.0, metavar="S",
                   help="with TLS, close a client whose handshake is not done S seconds after "
                        "it connected (default: %(default)s)")
    p.add_argument("--stats-interval", type=_positive_float, default=None, metavar="S",
                   help="each worker logs its connection counts every S seconds (default: off)")
    p.add_argument("--monkey-patch", action="store_true",
                   help="call greenline.monkey.patch_all() before loading APP, so that the "
                        "blocking calls it makes (time.sleep, other sockets, ...) switch green threads")
    p.add_argument("--preload", action="store_true",
                   help="on SIGHUP, new workers keep the code imported at start instead of "
                        "importing APP's modules again (gunicorn's --preload)")
    p.add_argument("--pid", metavar="FILE", default=None,
                   help="write the supervisor's pid to FILE (removed at exit)")
    p.add_argument("--log-file", "--error-logfile", dest="log_file", metavar="FILE|-", default=None,
                   help="append the log to FILE instead of stderr; SIGUSR1 reopens it "
                        "(default: -, stderr)")
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
        parser.exit(2, f"{parser.prog}: {message} (see {parser.prog} --help)\n")

    return error


LOG_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"
PROG = "greenline serve"


def _fail(message: str, code: int = 2) -> int:
    """Bad input (or a port that cannot be bound): one line, no log format."""
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)
    return code


def _listen_on(args: argparse.Namespace) -> tuple[str, int, str | None]:
    """(host, port, unix path) from --bind, or --host and --port."""
    host, port = args.host, args.port
    if args.bind is None:
        return host or "127.0.0.1", 8080 if port is None else port, None
    if host is not None or port is not None:
        raise _UsageError("--bind replaces --host and --port: give one or the other")
    spec = args.bind
    if spec.startswith("unix:"):
        path = spec[len("unix:"):]
        if not path:
            raise _UsageError("--bind unix:PATH needs a path")
        return "", 0, path
    where, sep, port_text = spec.rpartition(":")
    if not sep:
        where, port_text = spec, "8000"  # gunicorn's default port for a bare host
    where = where.strip("[]") or "127.0.0.1"
    try:
        port = _port(port_text)
    except argparse.ArgumentTypeError as e:
        raise _UsageError(f"--bind {spec}: {e}") from None
    return where, port, None


def _installed_paths() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    found = {os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    return tuple(p + os.sep for p in sorted(found))


def _own_modules(names: set[str]) -> list[str]:
    """Of the modules named, those that are the user's own source: not the
    standard library's, not an installed package's, not greenline's, and
    Python source (an extension module cannot be imported twice)."""
    installed = _installed_paths()
    out = []
    for name in names:
        mod = sys.modules.get(name)
        path = getattr(mod, "__file__", None)
        if not path or not path.endswith(".py"):
            continue
        real = os.path.realpath(path)
        if real.startswith(installed) or name == "greenline" or name.startswith("greenline."):
            continue
        out.append(name)
    return out


def _app_loader(args: argparse.Namespace, cfg: ServeConfig,
                access: Any) -> tuple[ServerFactory, Callable[[], ServerFactory]]:
    """The server factory for APP, and a function that imports APP's own
    modules again and makes a new one (what a worker forked after SIGHUP
    calls)."""

    def make() -> ServerFactory:
        if args.wsgi:
            factory = _wsgi_factory(args, cfg, access)
        else:
            factory = stream_server_factory(_load(args.app), cfg)
        return _behind_balancer(factory, args)

    before = set(sys.modules)
    factory = make()
    own = _own_modules(set(sys.modules) - before)

    def again() -> ServerFactory:
        for name in own:
            sys.modules.pop(name, None)
        importlib.invalidate_caches()
        return make()

    return factory, again


def _load(spec: str) -> Any:
    from greenline.servers.apps import AppError, load_app

    try:
        return load_app(spec)
    except AppError as e:
        raise _UsageError(str(e)) from None


class _Logs:
    """The files SIGUSR1 reopens (the log and the access log), by path: each
    is reopened onto the same descriptor number (dup2), so every object
    holding the file, in every thread, writes to the new one."""

    def __init__(self) -> None:
        self.files: list[tuple[Any, str]] = []

    def add(self, stream: Any, path: str) -> None:
        self.files.append((stream, os.path.abspath(path)))

    def reopen(self) -> None:
        for stream, path in self.files:
            stream.flush()
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.dup2(fd, stream.fileno())
            finally:
                os.close(fd)


def run(args: argparse.Namespace) -> int:
    """``greenline serve``: returns the exit code."""
    logs = _Logs()
    try:
        cfg = _config(args)
        handler: logging.Handler
        if args.log_file in (None, "-"):
            handler = logging.StreamHandler(sys.stderr)
        else:
            try:
                handler = logging.FileHandler(args.log_file, encoding="utf-8")
            except OSError as e:
                raise _UsageError(f"cannot open the log file {args.log_file}: {e.strerror or e}") from None
            logs.add(handler.stream, args.log_file)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(args.log_level.upper())
        if getattr(args, "monkey_patch", False):
            # Here, not in the app module: patching while importlib holds its
            # module lock swaps the thread identity that lock is keyed on.
            from greenline import monkey

            monkey.patch_all()
        access = _access_log(args.access_log) if args.wsgi else None
        if access is not None and args.access_log != "-":
            logs.add(access, args.access_log)
        make_server, load_again = _app_loader(args, cfg, access)
        if args.wsgi:
            cfg.app = f"{args.app} (WSGI)"
    except _UsageError as e:
        return _fail(str(e))
    try:
        listener = bind(cfg)
    except OverflowError as e:  # pragma: no cover - ports are checked when parsed
        return _fail(f"cannot listen on {cfg.where()}: {e}")
    except OSError as e:
        return _fail(f"cannot listen on {cfg.where()}: {e.strerror or e}", 1)
    if cfg.unix is None:
        cfg.port = listener.getsockname()[1]
    pidfile = args.pid
    try:
        if pidfile:
            try:
                with open(pidfile, "w") as f:
                    f.write(f"{os.getpid()}\n")
            except OSError as e:
                return _fail(f"cannot write the pid file {pidfile}: {e.strerror or e}")
        return Supervisor(cfg, make_server, listener,
                          reload_factory=None if args.preload else load_again,
                          reopen_logs=logs.reopen).run()
    finally:
        listener.close()
        if cfg.unix is not None:
            _unlink(cfg.unix)
        if pidfile:
            _unlink(pidfile)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _config(args: argparse.Namespace) -> ServeConfig:
    """The configuration the options ask for, every check that needs no
    import done (one line and exit 2 for anything wrong)."""
    host, port, unix = _listen_on(args)
    cfg = ServeConfig(app=args.app, host=host, port=port, unix=unix, procs=args.procs,
                      threads=args.threads, max_conns=args.max_conns, idle_timeout=args.idle_timeout,
                      graceful_timeout=args.graceful_timeout, backlog=args.backlog,
                      certfile=args.certfile, keyfile=args.keyfile,
                      stats_interval=getattr(args, "stats_interval", None),
                      handshake_timeout=args.handshake_timeout)
    if cfg.keyfile and not cfg.certfile:
        raise _UsageError("--keyfile needs --certfile")
    if not args.wsgi:
        given = [flag for dest, flag in _HTTP_OPTIONS.items() if getattr(args, dest, None) is not None]
        if given:
            raise _UsageError(f"{given[0]} needs --wsgi")
    if cfg.certfile:
        # Load it once here so a bad file is an error now, not in every worker.
        _check_certificate(cfg)
    return cfg


def _check_certificate(cfg: ServeConfig) -> None:
    from greenline.servers.stream import make_ssl_context

    try:
        make_ssl_context(None, cfg.ssl_args())
    except FileNotFoundError as e:
        raise _UsageError(f"cannot load the TLS certificate: no such file: {e.filename}") from None
    except (OSError, ValueError) as e:
        raise _UsageError(f"cannot load the TLS certificate: {_pem_trouble(cfg) or e}") from None


def _pem_trouble(cfg: ServeConfig) -> str | None:
    """What is wrong with the PEM files, in words (OpenSSL says "[SSL] PEM
    lib" for most of it)."""

    def read(path: str) -> str:
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    cert = read(cfg.certfile or "")
    key = read(cfg.keyfile) if cfg.keyfile else cert
    if "-----BEGIN CERTIFICATE-----" not in cert:
        return f"{cfg.certfile} holds no PEM certificate"
    if "PRIVATE KEY-----" not in key:
        if cfg.keyfile:
            return f"{cfg.keyfile} holds no PEM private key"
        return (f"{cfg.certfile} holds a certificate but no private key: give the key with "
                "--keyfile KEY.pem, or append it to the certificate's file")
    return None


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


def _wsgi_factory(args: argparse.Namespace, cfg: ServeConfig, access: Any) -> ServerFactory:
    """A factory of :class:`~greenline.wsgi.WSGIServer` for APP."""
    from greenline.wsgi import WSGIServer

    if ":" not in args.app:
        raise _UsageError(f"with --wsgi, APP is module:application, not {args.app!r}")
    app: Any = _load(args.app)
    limits = _limits(args)
    ssl_args: dict[str, Any] = {**cfg.ssl_args(), "handshake_timeout": cfg.handshake_timeout}
    environ = None
    if cfg.unix is not None:
        # No host and port to tell the application: say what a client
        # reaching it through a proxy on this machine would use.
        environ = {"SERVER_NAME": "localhost", "SERVER_PORT": "443" if cfg.certfile else "80"}

    def make(sock: Any) -> WSGIServer:
        return WSGIServer(sock, app, log=access, environ=environ, limits=limits,
                          max_connections=cfg.max_conns,
                          idle_timeout=cfg.idle_timeout, multiprocess=cfg.procs > 1,
                          multithread=cfg.threads > 1, **ssl_args)

    return make
