"""A serial blocking server: one client at a time, the next waits in the
backlog until the first leaves.  Why any of this matters.

    python -m greenline.tools.peers.serial --port 0
"""

from __future__ import annotations

from greenline.tools.peers._common import bound_socket, listening, parse_args, serve_upper


def main(argv: list[str] | None = None) -> int:
    args = parse_args("A serial blocking server: one client at a time.", argv)
    server = bound_socket(args.host, args.port, args.backlog)
    listening(server)
    while True:
        conn, _ = server.accept()
        serve_upper(conn)


if __name__ == "__main__":
    raise SystemExit(main())
