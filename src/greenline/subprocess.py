"""Cooperative ``subprocess``: the stdlib module, with a :class:`Popen` whose
waits and pipes park only the calling green thread.

>>> from greenline import subprocess
>>> subprocess.run(["echo", "hi"], capture_output=True).stdout
b'hi\\n'

What changes against the stdlib's ``Popen``:

* ``wait()`` (and everything built on it: ``run``, ``call``, ``__exit__``)
  waits on a pidfd (Linux 5.3+) through the hub; elsewhere it polls with
  ``waitpid(WNOHANG)`` and a growing green sleep, as the stdlib's own timed
  wait does.
* ``stdin``/``stdout``/``stderr`` pipes are cooperative file objects (same
  buffering and text settings as the stdlib would give), so
  ``proc.stdout.readline()`` and ``for line in proc.stdout`` switch.  The
  descriptors stay in blocking mode: each read or write is made only when the
  hub reports the pipe ready, and writes go in chunks of at most
  ``PIPE_BUF`` bytes, which a writable pipe always accepts at once.  So a pipe
  handed on to another process (``Popen(..., stdin=p1.stdout)``) keeps the
  blocking mode that process expects.
* ``communicate()`` feeds and drains the pipes in green threads of its own;
  after a ``TimeoutExpired`` it can be called again and loses nothing.
"""

from __future__ import annotations

import errno as _errno
import io as _io
import os as _os
import subprocess as _std
from subprocess import *  # noqa: F403 - the module is a drop-in for the stdlib's
from time import monotonic as _monotonic
from typing import Any

from greenline._core.fdio import read_when_ready as _read_when_ready
from greenline._core.fdio import wait_ready as _wait_ready
from greenline._core.fdio import write_all as _write_all
from greenline._core.hub import get_hub_if_exists as _get_hub_if_exists
from greenline._core.hub import sleep as _sleep

__all__ = list(_std.__all__)

_pidfd_open = getattr(_os, "pidfd_open", None)
_real_waitpid = _os.waitpid
_WNOHANG = _os.WNOHANG


class _GreenPipe(_io.RawIOBase):
    """Raw IO on one end of a pipe, waiting for readiness in the hub."""

    def __init__(self, fd: int, mode: str) -> None:
        super().__init__()
        self._fd = fd
        self._mode = mode

    @property
    def name(self) -> int:
        return self._fd

    @property
    def mode(self) -> str:
        return self._mode

    def fileno(self) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        return self._fd

    def readable(self) -> bool:
        return "r" in self._mode

    def writable(self) -> bool:
        return "w" in self._mode

    def isatty(self) -> bool:
        return False

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if not self.readable():
            raise _io.UnsupportedOperation("read")
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        data = _read_when_ready(self._fd, len(view))
        n = len(data)
        view[:n] = data
        return n

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if not self.writable():
            raise _io.UnsupportedOperation("write")
        # A raw write may be short; writing everything keeps the buffered
        # layer above from having to loop (and matches FileIO on a pipe).
        return _write_all(self._fd, data)

    def close(self) -> None:
        if self.closed:
            return
        hub = _get_hub_if_exists()
        st = hub.fds.get(self._fd) if hub is not None else None
        if st is not None and st.temporary:
            # Wake a green thread parked on this pipe with EBADF before the
            # number can be reused.
            hub.forget(st)  # type: ignore[union-attr]
        try:
            super().close()
        finally:
            _os.close(self._fd)


def _green_file(f: Any, bufsize: int) -> Any:
    """A cooperative equivalent of the stdlib's pipe file object ``f``."""
    text = isinstance(f, _io.TextIOWrapper)
    settings: dict[str, Any] = {}
    if text:
        settings = {"encoding": f.encoding, "errors": f.errors,
                    "line_buffering": f.line_buffering, "write_through": f.write_through}
    writing = f.writable()
    # Duplicate first: closing the stdlib's object closes its descriptor.
    fd = _os.dup(f.fileno())
    _os.set_inheritable(fd, False)
    f.close()
    raw = _GreenPipe(fd, "wb" if writing else "rb")
    if bufsize == 0 and not text:
        return raw
    size = _io.DEFAULT_BUFFER_SIZE if bufsize in (-1, 1, 0) else bufsize
    buffered: Any = _io.BufferedWriter(raw, size) if writing else _io.BufferedReader(raw, size)
    if text:
        return _io.TextIOWrapper(buffered, **settings)
    return buffered


def _blocking_for_child(f: Any) -> None:
    """Clear ``O_NONBLOCK`` on a descriptor handed to a child as a standard
    stream (a cooperative file object, such as ``FileObject``, made it
    non-blocking; the child expects blocking reads and writes).  The flag
    belongs to the open file, which the child shares, so it is cleared here,
    with the same effect as gevent clearing it in the child's copy."""
    if f is None or isinstance(f, bool):
        return
    if isinstance(f, int):
        fd = f
    else:
        fileno = getattr(f, "fileno", None)
        if fileno is None:
            return
        try:
            fd = fileno()
        except (OSError, ValueError):
            return
    if fd < 0:  # PIPE, STDOUT, DEVNULL
        return
    try:
        if not _os.get_blocking(fd):
            _os.set_blocking(fd, True)
    except OSError:
        pass  # the stdlib reports a bad descriptor


class Popen(_std.Popen):  # type: ignore[no-redef,type-arg]
    """:class:`subprocess.Popen` whose waiting and pipes are cooperative."""

    def __init__(self, args: Any, bufsize: int = -1, *a: Any, **kw: Any) -> None:
        for i, name in enumerate(("stdin", "stdout", "stderr"), 1):
            _blocking_for_child(kw[name] if name in kw else a[i] if len(a) > i else None)
        super().__init__(args, bufsize, *a, **kw)
        self._gl_feeder: Any = None
        self._gl_drains: dict[str, Any] = {}
        for name in ("stdin", "stdout", "stderr"):
            f = getattr(self, name)
            if f is not None:
                setattr(self, name, _green_file(f, bufsize))

    # -- gevent's rawlink: wait()/iwait() on processes ---------------------

    def rawlink(self, callback: Any) -> None:
        """Call ``callback(self)`` once the process has ended (at once if it
        has), so ``wait([proc, ...])`` and ``iwait`` take processes."""
        links = self.__dict__.setdefault("_gl_links", [])
        links.append(callback)
        if self.returncode is not None:
            self._gl_run_links()
        elif self.__dict__.get("_gl_watcher") is None:
            from greenline._core.task import spawn

            self._gl_watcher: Any = spawn(self._gl_watch)

    def unlink(self, callback: Any) -> None:
        links = self.__dict__.get("_gl_links", [])
        if callback in links:
            links.remove(callback)

    def ready(self) -> bool:
        return self.poll() is not None

    def _gl_watch(self) -> None:
        try:
            self.wait()
        finally:
            self._gl_watcher = None
            self._gl_run_links()

    def _gl_run_links(self) -> None:
        links: list[Any] = self.__dict__.get("_gl_links", [])
        self._gl_links: list[Any] = []
        for callback in links:
            callback(self)

    # -- waiting ---------------------------------------------------------

    def _wait(self, timeout: float | None) -> int:  # type: ignore[override]
        if self.returncode is not None:
            return self.returncode
        deadline = None if timeout is None else _monotonic() + timeout
        pidfd: int | None = None
        delay = 0.0005
        try:
            while True:
                reaped_by_us = self._waitpid_lock.acquire(False)  # type: ignore[attr-defined]
                if reaped_by_us:
                    try:
                        if self.returncode is not None:
                            break
                        pid, sts = self._try_wait(_WNOHANG)  # type: ignore[attr-defined]
                        if pid == self.pid:
                            self._handle_exitstatus(sts)  # type: ignore[attr-defined]
                            break
                    finally:
                        self._waitpid_lock.release()  # type: ignore[attr-defined]
                elif self.returncode is not None:
                    break
                remaining = None if deadline is None else deadline - _monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutExpired(self.args, timeout)  # type: ignore[arg-type]  # noqa: F405
                if reaped_by_us and pidfd is None and _pidfd_open is not None:
                    # The child is not reaped yet (WNOHANG said so), so its
                    # pid cannot have been reused: the pidfd is this child's.
                    try:
                        pidfd = _pidfd_open(self.pid)
                    except OSError:
                        pidfd = -1  # not supported here (old kernel, seccomp)
                if reaped_by_us and pidfd is not None and pidfd >= 0:
                    # Readable once the child has exited.
                    _wait_ready(pidfd, False, remaining)
                else:
                    # Someone else is reaping it right now, or no pidfd.
                    _sleep(delay if remaining is None else min(delay, remaining))
                    delay = min(delay * 2, 0.05)
        finally:
            if pidfd is not None and pidfd >= 0:
                _os.close(pidfd)
        return self.returncode  # type: ignore[return-value]

    # -- communicating ---------------------------------------------------

    def communicate(self, input: Any = None, timeout: float | None = None) -> tuple[Any, Any]:
        started: bool = self._communication_started  # type: ignore[has-type]
        if started and input:
            raise ValueError("Cannot send input after starting communication")
        if timeout is None and not started and [self.stdin, self.stdout, self.stderr].count(None) >= 2:
            # One pipe at most and no timeout: the stdlib's own path, a plain
            # write or read on that pipe, is cooperative with our file objects.
            return super().communicate(input)  # type: ignore[no-any-return]
        from greenline._core.task import spawn

        deadline = None if timeout is None else _monotonic() + timeout
        if not started:
            self._communication_started = True
            if self.stdin is not None:
                self._gl_feeder = spawn(self._gl_feed, self.stdin, input)
            for name in ("stdout", "stderr"):
                f = getattr(self, name)
                if f is not None:
                    chunks: list[Any] = []
                    self._gl_drains[name] = (spawn(self._gl_drain, f, chunks), chunks)
        tasks = [t for t, _ in self._gl_drains.values()]
        if self._gl_feeder is not None:
            tasks.append(self._gl_feeder)
        from greenline._core.task import joinall

        done = joinall(tasks, timeout=None if deadline is None else max(0.0, deadline - _monotonic()))
        if len(done) < len(tasks):
            raise TimeoutExpired(self.args, timeout,  # type: ignore[arg-type]  # noqa: F405
                                 output=self._gl_partial("stdout"), stderr=self._gl_partial("stderr"))
        for t in tasks:
            if not t.successful():
                raise t.exception  # type: ignore[misc]
        stdout = self._gl_result("stdout")
        stderr = self._gl_result("stderr")
        self.wait(timeout=None if deadline is None else max(0.0, deadline - _monotonic()))
        return stdout, stderr

    def _gl_partial(self, name: str) -> bytes | None:
        # Bytes even in text mode, as the stdlib's TimeoutExpired carries.
        entry = self._gl_drains.get(name)
        if entry is None or not entry[1]:
            return None
        return b"".join(entry[1])

    def _gl_result(self, name: str) -> Any:
        entry = self._gl_drains.get(name)
        if entry is None:
            return None
        task, chunks = entry
        return task.value

    # Feeding and draining work on the descriptors, not through the file
    # objects, as the stdlib's communicate does: a green thread parked in a
    # buffered read would hold the buffer's lock, and closing the file from
    # another green thread (Popen.__exit__ after a timeout) would then fail
    # with "reentrant call".  Parked in _read_when_ready it holds nothing, and a
    # close wakes it with EBADF.

    def _gl_feed(self, f: Any, data: Any) -> None:
        try:
            f.flush()  # what the caller wrote to stdin before communicating
        except BrokenPipeError:
            pass
        if data:
            if self.text_mode:  # type: ignore[attr-defined]
                data = data.encode(f.encoding, f.errors)
            try:
                _write_all(f.fileno(), data)
            except BrokenPipeError:
                pass  # the child does not read its input: the stdlib ignores it too
            except OSError as e:
                if e.errno not in (_errno.EINVAL, _errno.EBADF):
                    raise
        try:
            f.close()
        except BrokenPipeError:
            pass

    def _gl_drain(self, f: Any, chunks: list[bytes]) -> Any:
        fd = f.fileno()
        try:
            while True:
                chunk = _read_when_ready(fd, 32768)
                if not chunk:
                    break
                chunks.append(chunk)
        except OSError as e:
            if e.errno != _errno.EBADF:
                raise
            # Closed under us (the caller gave up after a timeout).
        if not f.closed:
            f.close()
        data = b"".join(chunks)
        if self.text_mode:  # type: ignore[attr-defined]
            # As the stdlib decodes it: the pipe's encoding, universal newlines.
            return data.decode(f.encoding, f.errors).replace("\r\n", "\n").replace("\r", "\n")
        return data


def waitpid(pid: int, options: int) -> tuple[int, int]:
    """:func:`os.waitpid`, parking only the calling green thread.

    For one child and no flags it waits on a pidfd where there is one;
    otherwise (a process group, ``WUNTRACED``...) it polls with ``WNOHANG``
    and a growing green sleep.
    """
    if options & _WNOHANG:
        return _real_waitpid(pid, options)
    result = _real_waitpid(pid, options | _WNOHANG)
    if result[0] != 0:
        return result
    pidfd = -1
    if pid > 0 and options == 0 and _pidfd_open is not None:
        try:
            # Not reaped (WNOHANG just said so): the pid is still this child's.
            pidfd = _pidfd_open(pid)
        except OSError:
            pidfd = -1
    delay = 0.0005
    try:
        while True:
            if pidfd >= 0:
                _wait_ready(pidfd, False)
            else:
                _sleep(delay)
                delay = min(delay * 2, 0.05)
            result = _real_waitpid(pid, options | _WNOHANG)
            if result[0] != 0:
                return result
    finally:
        if pidfd >= 0:
            _os.close(pidfd)
