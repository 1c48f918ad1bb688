"""A thread per connection with plain blocking sockets: what green threads
replace.

    python -m greenline.tools.peers.threads --port 0
"""

from __future__ import annotations

import threading

from greenline.tools.peers._common import bound_socket, listening, parse_args, serve_upper


def main(argv: list[str] | None = None) -> int:
    args = parse_args("A thread per connection serving the echo-upper protocol.", argv)
    # 10,000 threads with the default 8 MiB stack reserve 80 GiB of address
    # space; 256 KiB is plenty for this loop and keeps the reservation sane.
    threading.stack_size(256 * 1024)
    server = bound_socket(args.host, args.port, args.backlog)
    listening(server)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve_upper, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    raise SystemExit(main())
