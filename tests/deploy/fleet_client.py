"""A client of the fleet tests: GET a URL N times, each on a new connection
(bound to --source if given), once the fleet answers 200 (waiting up to
--wait seconds for that); print one JSON line per answer: the client's own
address and port, the status and the body (the backend's JSON).  Standard
library only: it runs in a network namespace of its own too."""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from urllib.parse import urlsplit


def get(host: str, port: int, path: str, source: str | None,
        headers: list[str] = ()) -> tuple[tuple[str, int], int, bytes]:  # type: ignore[assignment]
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(5)
    with s:
        if source:
            s.bind((source, 0))
        s.connect((host, port))
        me = s.getsockname()[:2]
        extra = "".join(h + "\r\n" for h in headers)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: fleet\r\nConnection: close\r\n{extra}\r\n".encode())
        out = b""
        while d := s.recv(65536):
            out += d
    head, _, body = out.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return me, status, body


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("-n", type=int, default=10)
    ap.add_argument("--source")
    ap.add_argument("--wait", type=float, default=15.0)
    ap.add_argument("-H", dest="headers", action="append", default=[])
    a = ap.parse_args()
    u = urlsplit(a.url)
    host, port, path = u.hostname or "127.0.0.1", u.port or 80, u.path or "/"
    deadline = time.monotonic() + a.wait
    while True:
        try:
            if get(host, port, path, a.source)[1] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            print(f"no 200 from {a.url} in {a.wait} s", file=sys.stderr)
            return 1
        time.sleep(0.05)  # polling for the fleet to come up, bounded above
    for _ in range(a.n):
        me, status, body = get(host, port, path, a.source, a.headers)
        print(json.dumps({"client": list(me), "status": status, "body": body.decode("latin-1")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
