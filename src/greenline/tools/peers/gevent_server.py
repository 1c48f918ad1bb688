"""gevent's ``StreamServer``: a greenlet per connection, gevent's own socket.

    python -m greenline.tools.peers.gevent_server --port 0
"""

from __future__ import annotations

from typing import Any

from greenline.tools.peers._common import bound_socket, listening, parse_args, serve_upper


def handle(conn: Any, address: Any) -> None:
    serve_upper(conn)


def main(argv: list[str] | None = None) -> int:
    args = parse_args("gevent StreamServer serving the echo-upper protocol.", argv)
    from gevent import socket as gsocket
    from gevent.server import StreamServer

    plain = bound_socket(args.host, args.port, args.backlog)
    listener = gsocket.socket(fileno=plain.detach())
    server = StreamServer(listener, handle)
    server.start()
    listening(listener)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
