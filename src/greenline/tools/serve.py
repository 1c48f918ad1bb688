"""``greenline serve``: the command line of the supervisor.

Parses the options into a :class:`~greenline.servers.supervisor.ServeConfig`,
checks what can be checked once (the TLS certificate, the app), patches the
standard library if asked, binds, and hands over to the
:class:`~greenline.servers.supervisor.Supervisor`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from greenline.servers.supervisor import ServeConfig, Supervisor, bind, format_host

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
                        "(a handle(sock, address) of yours)")
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
    p.add_argument("--log-level", default="info", type=str.lower,
                   choices=["debug", "info", "warning", "error", "critical"],
                   help="(default: %(default)s)")
    p.set_defaults(func=run)
    return p


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
        handler = load_app(args.app)
    except AppError as e:
        log.error("%s", e)
        return 2
    try:
        listener = bind(cfg)
    except OSError as e:
        log.error("cannot listen on %s:%d: %s", format_host(cfg.host), cfg.port, e.strerror or e)
        return 1
    cfg.port = listener.getsockname()[1]
    try:
        return Supervisor(cfg, handler, listener).run()
    finally:
        listener.close()
