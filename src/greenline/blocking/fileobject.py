"""File objects that block only the calling green thread: gevent's
``FileObjectThread`` (every call in the thread pool; any file) and
``FileObjectPosix`` (a pipe or socket descriptor made non-blocking and
waited on by the hub).  ``FileObject`` is ``FileObjectPosix``.

>>> import os
>>> from greenline.blocking.fileobject import FileObjectPosix
>>> r, w = os.pipe()
>>> writer, reader = FileObjectPosix(w, "wb"), FileObjectPosix(r, "rb")
>>> writer.write(b"line\\n"); writer.flush()
5
>>> reader.readline()
b'line\\n'

May import: the standard library and ``_core``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any

from greenline._core.threadpool import to_thread
from greenline.blocking.os import make_nonblocking, nb_read, nb_write

__all__ = ["FileObject", "FileObjectBlock", "FileObjectPosix", "FileObjectThread"]


def _fd_and_close(fobj: Any, close: bool | None) -> tuple[int | None, Any]:
    if isinstance(fobj, int):
        return fobj, True if close is None else close
    return None, True if close is None else close


class _Wrapper:
    """What the three file objects share: delegate to ``io`` object
    ``self.io``; ``close`` closes it only if ``close`` was true."""

    io: Any
    _close: bool

    def __getattr__(self, name: str) -> Any:
        if name == "io":
            raise AttributeError(name)
        return getattr(self.io, name)

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return bool(self.io.closed)

    def close(self) -> None:
        if self.io.closed:
            return
        if self._close:
            self.io.close()
        else:
            try:
                self.io.flush()
            except (OSError, ValueError):
                pass
            self.io = _Closed()

    def readline(self, *args: Any) -> Any:
        return self.io.readline(*args)


class _Closed:
    closed = True

    def __getattr__(self, name: str) -> Any:
        raise ValueError("I/O operation on closed file")


class _GreenFileIO(io.RawIOBase):
    """A non-blocking descriptor whose reads and writes park only the calling
    green thread."""

    def __init__(self, fd: int, mode: str, closefd: bool) -> None:
        super().__init__()
        self._fd = fd
        self._mode = mode
        self._closefd = closefd
        self._seekable: bool | None = None
        make_nonblocking(fd)

    def fileno(self) -> int:
        return self._fd

    def readable(self) -> bool:
        return "r" in self._mode or "+" in self._mode

    def writable(self) -> bool:
        return "w" in self._mode or "a" in self._mode or "+" in self._mode

    def seekable(self) -> bool:
        if self._seekable is None:
            try:
                os.lseek(self._fd, 0, os.SEEK_CUR)
                self._seekable = True
            except OSError:
                self._seekable = False
        return self._seekable

    def seek(self, offset: int, whence: int = 0) -> int:
        return os.lseek(self._fd, offset, whence)

    def readinto(self, b: Any) -> int:
        data = nb_read(self._fd, len(b))
        n = len(data)
        b[:n] = data
        return n

    def readall(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            data = nb_read(self._fd, 65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)

    def write(self, b: Any) -> int:
        return nb_write(self._fd, b)

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()
        finally:
            if self._closefd:
                os.close(self._fd)

    def isatty(self) -> bool:
        return os.isatty(self._fd)


def _buffered(raw: io.RawIOBase, mode: str, bufsize: int, encoding: Any, errors: Any,
              newline: Any) -> Any:
    if bufsize == 0 and "b" in mode:
        return raw
    size = io.DEFAULT_BUFFER_SIZE if bufsize in (-1, 0, 1) or bufsize is None else bufsize
    if raw.readable() and raw.writable():
        buf: Any = io.BufferedRWPair(raw, raw, size) if not raw.seekable() else io.BufferedRandom(raw, size)  # type: ignore[arg-type]
    elif raw.writable():
        buf = io.BufferedWriter(raw, size)  # type: ignore[arg-type]
    else:
        buf = io.BufferedReader(raw, size)  # type: ignore[arg-type]
    if "b" in mode:
        return buf
    return io.TextIOWrapper(buf, encoding=encoding, errors=errors, newline=newline,
                            line_buffering=bufsize == 1)


class FileObjectPosix(_Wrapper):
    """A file over a descriptor (or an object with ``fileno()``) that is
    made non-blocking: reads and writes park the green thread until the
    descriptor is ready.  For pipes, terminals and sockets; regular files
    are always "ready" and so block the OS thread, like ``FileObjectBlock``."""

    def __init__(self, fobj: Any, mode: str = "rb", bufsize: int = -1, close: bool = True,
                 encoding: Any = None, errors: Any = None, newline: Any = None, **kw: Any) -> None:
        if isinstance(fobj, int):
            fd = fobj
        else:
            fd = fobj.fileno()
            if close:
                # The new object owns the descriptor now.
                fd = os.dup(fd)
                fobj.close()
        mode = mode.replace("U", "")
        self._close = close
        raw = _GreenFileIO(fd, mode, closefd=close)
        self.io = _buffered(raw, mode, bufsize, encoding, errors, newline)
        self.mode = mode
        self.name = fd


FileObject = FileObjectPosix


class FileObjectBlock(_Wrapper):
    """A plain file object under gevent's name: calls block the OS thread."""

    def __init__(self, fobj: Any, mode: str = "rb", bufsize: int = -1, close: bool = True,
                 **kw: Any) -> None:
        self._close = close
        self.io = open(fobj, mode, bufsize, closefd=close, **kw) if isinstance(fobj, (int, str, bytes, os.PathLike)) else fobj


class FileObjectThread(_Wrapper):
    """Any file (or path, or descriptor); every call runs in the thread
    pool, so only the calling green thread waits for the disk."""

    def __init__(self, fobj: Any, mode: str = "rb", bufsize: int = -1, close: bool = True,
                 threadpool: Any = None, lock: bool = True, **kw: Any) -> None:
        self._close = close
        self._pool = threadpool
        if isinstance(fobj, (int, str, bytes, os.PathLike)):
            fobj = open(fobj, mode, bufsize, closefd=close if isinstance(fobj, int) else True, **kw)
        self.io = fobj
        for name in ("read", "readinto", "readline", "readlines", "write", "writelines", "flush",
                     "seek", "tell", "truncate", "readall", "read1"):
            if hasattr(fobj, name):
                setattr(self, name, self._threaded(getattr(fobj, name)))

    def _threaded(self, method: Callable[..., Any]) -> Callable[..., Any]:
        pool = self._pool

        def call(*args: Any, **kwargs: Any) -> Any:
            if pool is not None:
                return pool.apply(method, args, kwargs)
            return to_thread(method, *args, **kwargs)

        call.__name__ = getattr(method, "__name__", "call")
        return call

    def close(self) -> None:
        if self.io.closed:
            return
        io_obj = self.io
        if self._close:
            to_thread(io_obj.close)
        else:
            try:
                to_thread(io_obj.flush)
            except (OSError, ValueError):
                pass
            self.io = _Closed()

    def readline(self, *args: Any) -> Any:
        return to_thread(self.io.readline, *args)
