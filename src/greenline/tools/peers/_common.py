"""What every peer server shares: its command line and its `listening on` line.

Imports nothing but the stdlib, so a peer can import it before (or instead
of) its own library.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any

# The same backlog for every server, greenline's own default: with the
# seed's listen(5), 10,000 clients connecting at once would mostly measure
# the kernel dropping handshakes and the clients' SYN retry back-off.
BACKLOG = 2048
RECV_SIZE = 1024  # the seed's conn.recv(1024)


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port, 0 for any free one (default 8080)")
    p.add_argument("--backlog", type=int, default=BACKLOG, help=f"listen() backlog (default {BACKLOG})")
    return p.parse_args(argv)


def listening(sock: socket.socket) -> None:
    """Announce the bound address, the line ``greenline bench`` waits for."""
    host, port = sock.getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)
    sys.stdout.flush()


def serve_upper(conn: Any) -> None:
    """The echo-upper protocol on one blocking connection (a stdlib socket,
    or gevent's), until the client leaves or resets; then close it."""
    try:
        while True:
            data = conn.recv(RECV_SIZE)
            if not data:
                break
            conn.sendall(data.upper())
    except ConnectionError:
        pass
    finally:
        conn.close()


def bound_socket(host: str, port: int, backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


def run_asyncio(serve: Callable[[str, int, int], Coroutine[Any, Any, None]], what: str,
                argv: list[str] | None, use_uvloop: bool) -> int:
    """The command line of an asyncio peer: ``serve(host, port, backlog)`` on
    asyncio's own loop, or on uvloop's."""
    import asyncio  # only the asyncio peers pay for it

    what = f"{what} on uvloop" if use_uvloop else what
    args = parse_args(f"{what} serving the echo-upper protocol.", argv)
    if use_uvloop:
        import uvloop

        uvloop.run(serve(args.host, args.port, args.backlog))
    else:
        asyncio.run(serve(args.host, args.port, args.backlog))
    return 0
