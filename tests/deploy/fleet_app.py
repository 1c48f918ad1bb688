"""The fleet's backends (tests/deploy/test_fleet.py, docs/deploy.md): a WSGI
application and a stream handler that say which backend answered and whom
they think they are talking to.

``FLEET_NAME`` names the backend; ``FLEET_LOG``, if set, is a file where
each request appends ``S`` when the application starts on it and ``E`` when
it is done (one ``write`` each, ``O_APPEND``), so the test can count the
requests in flight on a backend it kills.
"""

from __future__ import annotations

import json
import os

import greenline

NAME = os.environ.get("FLEET_NAME", "backend")
_LOG = os.environ.get("FLEET_LOG")
_fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if _LOG else None


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/healthz":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok\n"]
    if _fd is not None:
        os.write(_fd, b"S")
    try:
        if path == "/slow":
            greenline.sleep(0.02)
        body = json.dumps({"backend": NAME, "pid": os.getpid(), "remote_addr": environ["REMOTE_ADDR"],
                           "remote_port": environ["REMOTE_PORT"],
                           "scheme": environ["wsgi.url_scheme"]}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    finally:
        if _fd is not None:
            os.write(_fd, b"E")


def whoami(sock, address):
    """A stream app: one line with the backend's name and the client's
    address, then the seed's protocol (every byte back upper-cased)."""
    sock.sendall(f"{NAME} {address[0]} {address[1]}\n".encode())
    while data := sock.recv(65536):
        sock.sendall(data.upper())
