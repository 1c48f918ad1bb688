"""Running ``greenline serve`` as a user runs it, for the tests that drive it
(tests/servers/test_supervisor.py, tests/servers/test_faults.py): a subprocess on port 0, its
port read from the ``listening on`` line, its log kept in a file, and clients
as green threads of the test.  A plain module, imported by those tests."""

from __future__ import annotations

import os
import resource
import select as stdselect
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

import greenline
from greenline import socket

SRC = str(Path(__file__).resolve().parents[2] / "src")
MiB = 1 << 20


def fds(pid: int) -> int:
    """How many descriptors the process has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


class Serve:
    """``greenline serve ARGS --port 0``, stopped by :meth:`terminate` (the
    test's own check) and always by :meth:`close`."""

    def __init__(self, tmp_path: Path, *args: str, nofile: int | None = None,
                 pythonpath: str | None = None) -> None:
        self.log_path = tmp_path / f"serve-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "wb")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, SRC, env.get("PYTHONPATH")) if p)

        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "greenline", "serve", *args, "--port", "0"],
            stdout=subprocess.PIPE, stderr=self.log, env=env, preexec_fn=limit, cwd=tmp_path,
        )
        self.port = self._read_port()

    def _read_port(self, timeout: float = 20) -> int:
        assert self.proc.stdout is not None
        ready, _, _ = stdselect.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("listening on 127.0.0.1:"):
            # The constructor fails, so no fixture will ever close it (its
            # log read first: close() closes the file).
            logs = self.logs()
            self.close()
            raise AssertionError(f"no 'listening on' line in {timeout} s: {line!r}\n{logs}")
        return int(line.rsplit(":", 1)[1])

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def workers(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children()
        except psutil.NoSuchProcess:
            return []

    def wait_workers(self, n: int, exclude: frozenset[int] | set[int] = frozenset(),
                     timeout: float = 15) -> list[int]:
        """The pids of the n workers (not in ``exclude``), once each logs
        that it accepts."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = [p.pid for p in self.workers() if p.pid not in exclude]
            if len(pids) == n and all(self.accepting(pid) for pid in pids):
                return pids
            greenline.sleep(0.02)
        raise AssertionError(f"expected {n} accepting workers:\n{self.logs()}")

    def accepting(self, pid: int) -> bool:
        return f"worker {pid} accepting" in self.logs()

    def logs(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if it still runs after ``timeout``; polled
        so that the test's green threads go on running meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                return code
            greenline.sleep(0.02)
        return None

    def terminate(self, timeout: float = 15) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self, workers: list[psutil.Process] | None = None) -> None:
        """SIGKILL the supervisor and its workers (``workers``: the ones
        seen before it was stopped, since once it is gone they have no
        parent to find them by)."""
        kids = self.workers() if workers is None else workers
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for k in kids:
            try:
                k.kill()
            except psutil.NoSuchProcess:
                pass

    def close(self) -> None:
        kids = self.workers()
        if self.proc.poll() is None:
            self.terminate(10)
        self.kill(kids)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


def serving(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    """The body of a ``serve`` fixture: ``serve(*args, **kw)`` starts a
    :class:`Serve`; all are closed when the test ends."""
    started: list[Serve] = []

    def start(*args: str, **kw: Any) -> Serve:
        s = Serve(tmp_path, *args, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


def recv_all(sock: socket.socket, n: int | None = None) -> bytes:
    """n bytes, or everything until end of file (fewer if it ends first)."""
    chunks = []
    got = 0
    while n is None or got < n:
        data = sock.recv(MiB if n is None else min(MiB, n - got))
        if not data:
            break
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """n bytes, fewer only if the peer closes first."""
    return recv_all(sock, n)


def ask(address: tuple[str, int], msg: bytes, timeout: float = 10) -> bytes:
    """Send msg on a new connection and read as many bytes back; the reply
    is read while sending, so a msg larger than the socket buffers works."""
    c = socket.create_connection(address, timeout=timeout)
    try:
        reader = greenline.spawn(recv_all, c, len(msg))
        c.sendall(msg)
        return reader.get(timeout=timeout)
    finally:
        c.close()


def owners(pids: list[int], port: int) -> dict[int, int]:
    """client port -> the worker pid holding that connection to ``port``
    (a worker already gone holds none)."""
    out = {}
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        for conn in conns:
            if conn.raddr and conn.laddr.port == port:
                out[conn.raddr.port] = pid
    return out
