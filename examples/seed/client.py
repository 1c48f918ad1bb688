"""The seed's client: 500 threads, each sending "<name> say hello <n>" forever.

Ported with ``monkey.patch_all()``, so each ``threading.Thread`` is a green
thread and all 500 share one OS thread, and bounded: every client stops after
``--seconds``, then the totals are printed.  Each reply is checked: it must be
exactly the message upper-cased (read until all of it has arrived, since TCP
may split it).  The exit status is 1 if any reply was wrong or any client met
an error.

    python examples/seed/server.py &
    python examples/seed/client.py --clients 500 --seconds 5
"""

# ruff: noqa: E402, E702, I001, UP031 - the seed's one-line patch comes first, before any other import
from greenline import monkey;monkey.patch_all()
import argparse
import socket
import sys
import time
from threading import Event, Thread, current_thread


class Stats:
    """What one client did; each thread owns its own, summed at the end."""

    __slots__ = ("connected", "connect_seconds", "requests", "verified", "errors")

    def __init__(self) -> None:
        self.connected = False
        self.connect_seconds = 0.0
        self.requests = 0
        self.verified = 0
        self.errors: list[str] = []


class Run:
    """When the clients may start sending, and until when."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.go = Event()
        self.deadline = 0.0  # set just before go

    def start(self) -> None:
        self.deadline = time.monotonic() + self.seconds
        self.go.set()


def x_client(host: str, port: int, run: Run, io_timeout: float, stats: Stats, verbose: bool) -> None:
    client = socket.socket()
    # Never wait forever on a server that stopped answering: a client that
    # cannot finish in time reports an error instead.
    client.settimeout(io_timeout)
    try:
        t0 = time.monotonic()
        client.connect((host, port))
        stats.connect_seconds = time.monotonic() - t0
        stats.connected = True
        # Thread.start() waits until the new thread runs, which for a green
        # thread means a pass of the hub; with the earlier clients already
        # busy, each pass gets longer and the last of 500 would start seconds
        # late.  So every client waits here until all have been started.
        run.go.wait()
        n = 0
        while time.monotonic() < run.deadline:
            msg = '%s say hello %s' % (current_thread().name, n)
            n += 1
            expected = msg.upper().encode('utf-8')
            client.sendall(msg.encode('utf-8'))
            stats.requests += 1
            data = b''
            while len(data) < len(expected):
                chunk = client.recv(1024)
                if not chunk:
                    raise ConnectionError('server closed the connection before replying in full')
                data += chunk
            if data != expected:
                # The stream is out of step now: later replies cannot be
                # matched to their messages either.
                stats.errors.append(f'reply {data!r} to {msg!r}')
                break
            stats.verified += 1
            if verbose:
                print(data.decode('utf-8'))
    except OSError as e:
        stats.errors.append(f'{type(e).__name__}: {e}')
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="The seed's client: many threads (green, after patch_all) sending "
        "'<name> say hello <n>' to the upper-casing server and checking every reply.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="server port (default 8080)")
    parser.add_argument("--clients", type=int, default=500, help="threads, one connection each (default 500)")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="each client stops sending after this long (default 5)")
    parser.add_argument("--io-timeout", type=float, default=10.0,
                        help="a reply slower than this counts as an error (default 10 s)")
    parser.add_argument("--verbose", action="store_true", help="print every reply, as the seed does")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.seconds < 0 or args.io_timeout <= 0:
        parser.error("--clients must be at least 1, --seconds not negative, --io-timeout positive")

    run = Run(args.seconds)
    stats = [Stats() for _ in range(args.clients)]
    threads = []
    for i in range(args.clients):
        t = Thread(target=x_client,
                   args=(args.host, args.port, run, args.io_timeout, stats[i], args.verbose))
        t.start()
        threads.append(t)
    start = time.monotonic()
    run.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start

    requests = sum(s.requests for s in stats)
    verified = sum(s.verified for s in stats)
    errors = [e for s in stats for e in s.errors]
    connected = sum(s.connected for s in stats)
    answered = sum(1 for s in stats if s.verified)
    print(f'clients: {args.clients} (connected: {connected}, with a verified reply: {answered})')
    # A client that connects only after --seconds sends nothing: the slowest
    # connect tells whether that is why a client got no reply.
    print(f'slowest connect: {max(s.connect_seconds for s in stats):.3f} s')
    print(f'requests done: {requests}')
    print(f'replies verified: {verified}')
    print(f'errors: {len(errors)}')
    print(f'time: {elapsed:.2f} s ({verified / elapsed if elapsed else 0:.0f} verified replies/s)')
    for e in errors[:10]:
        print(f'  {e}', file=sys.stderr)
    if len(errors) > 10:
        print(f'  ... and {len(errors) - 10} more', file=sys.stderr)
    return 1 if errors or connected < args.clients else 0


if __name__ == '__main__':
    raise SystemExit(main())
