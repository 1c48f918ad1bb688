# ruff: noqa: E402, E701, E702, I001 - the seed's text, as the seed writes it
"""The seed's server, verbatim, under gevent.

The seed's text from ``communication`` to ``server`` is unchanged except for
two things ``greenline bench`` needs: ``server()`` takes the backlog (the
seed's ``listen(5)`` is the bench's common backlog; see ``_common.BACKLOG``)
and prints the ``listening on`` line after ``listen``; the port comes from
the command line.

    python -m greenline.tools.peers.seed_gevent --port 0
"""
# 服务端
from gevent import monkey;monkey.patch_all()
import socket
from gevent import spawn

from greenline.tools.peers._common import listening, parse_args


def communication(conn):  # type: ignore[no-untyped-def]
    while True:
        try:
            data = conn.recv(1024)
            if len(data) == 0: break
            conn.send(data.upper())
        except ConnectionResetError as e:
            print(e)
            break
    conn.close()


def server(ip, port, backlog=5):  # type: ignore[no-untyped-def]
    server = socket.socket()
    server.bind((ip, port))
    server.listen(backlog)
    listening(server)
    while True:
        conn, addr = server.accept()
        spawn(communication, conn)


if __name__ == '__main__':
    args = parse_args("The seed's upper-casing server under gevent.")
    g1 = spawn(server, args.host, args.port, args.backlog)
    g1.join()
