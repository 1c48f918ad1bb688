"""A serial blocking server: one client at a time, the next waits in the
backlog until the first leaves.  Why any of this matters.

    python -m greenline.peers.serial --port 0
"""

from __future__ import annotations

from greenline.peers._common import RECV_SIZE, bound_socket, listening, parse_args


def main(argv: list[str] | None = None) -> int:
    args = parse_args("A serial blocking server: one client at a time.", argv)
    server = bound_socket(args.host, args.port, args.backlog)
    listening(server)
    while True:
        conn, _ = server.accept()
        with conn:
            try:
                while True:
                    data = conn.recv(RECV_SIZE)
                    if not data:
                        break
                    conn.sendall(data.upper())
            except ConnectionError:
                pass


if __name__ == "__main__":
    raise SystemExit(main())
