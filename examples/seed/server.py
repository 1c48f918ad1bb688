"""The seed's coroutine TCP server: upper-cases whatever each client sends.

One green thread accepts; one more per connection runs the plain blocking
``recv``/``send`` loop.  ``monkey.patch_all()`` makes the standard ``socket``
module cooperative, so every ``accept`` and ``recv`` that would block
switches to another connection instead, and thousands of clients are served
by one OS thread.

    python examples/seed/server.py                  # listening on 127.0.0.1:8080
    python examples/seed/server.py --port 9000
    python examples/seed/server.py --port 0         # any free port; the first line says which
    python examples/seed/client.py --clients 500 --seconds 5
"""

# ruff: noqa: E402, E702, I001 - the seed's one-line patch comes first, before any other import
from greenline import monkey;monkey.patch_all()
import argparse
import socket

from greenline import spawn

# The seed listens with a backlog of 5.  When 500 clients connect at once,
# the kernel drops the handshakes that do not fit, and the dropped clients
# retry together, with backoff (0.2 s, 0.4 s, 0.8 s, ...), so only a handful
# get in per retry and the last ones wait many seconds.  A backlog as large
# as the crowd of clients avoids that; --backlog 5 restores the seed's.
BACKLOG = 1024


def communication(conn: socket.socket) -> None:
    while True:
        try:
            data = conn.recv(1024)
            if len(data) == 0: break  # noqa: E701 - as the seed writes it
            conn.send(data.upper())
        except ConnectionResetError as e:
            print(e)
            break
    conn.close()


def server(ip: str, port: int, backlog: int = BACKLOG) -> None:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restartable at once
    server.bind((ip, port))
    server.listen(backlog)
    host, port = server.getsockname()[:2]
    print(f"listening on {host}:{port}", flush=True)  # the real port, with --port 0 too
    while True:
        conn, addr = server.accept()
        spawn(communication, conn)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="The seed's upper-casing TCP server: one green thread per connection.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080,
                        help="port to listen on; 0 for any free one (default 8080)")
    parser.add_argument("--backlog", type=int, default=BACKLOG,
                        help=f"listen() backlog (default {BACKLOG}; the seed uses 5)")
    args = parser.parse_args(argv)
    g1 = spawn(server, args.host, args.port, args.backlog)
    try:
        g1.join()
    except KeyboardInterrupt:
        pass
    # join() returns when server() ended; if it ended by an error (the port is
    # taken, say), the task has reported it on stderr: say so in the exit code.
    return 0 if g1.successful() else 1


if __name__ == '__main__':
    raise SystemExit(main())
