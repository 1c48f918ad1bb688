"""Cooperative sockets: the standard library's socket API, where every call
that would block parks only the calling green thread.

>>> from greenline import socket
>>> a, b = socket.socketpair()
>>> a.sendall(b"ping")
>>> b.recv(4)
b'ping'
>>> a.close(); b.close()

The descriptor underneath is always non-blocking; the timeout you set with
``settimeout`` (or the module default) is kept here and enforced by the hub,
with the standard library's semantics: ``None`` blocks, ``0`` raises
``BlockingIOError``, a number raises ``TimeoutError("timed out")``.

Fast path: each call is tried first (unless the descriptor is known not to be
ready), and only parks on EAGAIN.  A short read on a stream socket means the
kernel buffer was drained, so the next read parks at once instead of making a
call that would fail.
"""

from __future__ import annotations

import errno as _errno
import socket as _std
from socket import *  # noqa: F403 - the module is a drop-in for the stdlib's
from time import monotonic as _monotonic
from typing import Any

import _socket

from greenline.hub import FdState, get_hub

__all__ = list(_std.__all__)  # type: ignore[attr-defined]
for _name in ("socket", "SocketType", "socketpair", "fromfd", "create_connection",
              "create_server", "getaddrinfo", "gethostbyname", "gethostbyname_ex",
              "gethostbyaddr", "getnameinfo", "getfqdn", "wait_read", "wait_write"):
    if _name not in __all__:
        __all__.append(_name)

# Unbound C methods: calling these skips our overrides and the attribute
# look-ups of the stdlib's Python layer.
_recv = _socket.socket.recv
_recv_into = _socket.socket.recv_into
_recvfrom = _socket.socket.recvfrom
_recvfrom_into = _socket.socket.recvfrom_into
_send = _socket.socket.send
_sendto = _socket.socket.sendto
_accept = _socket.socket._accept
_connect_ex = _socket.socket.connect_ex
_c_settimeout = _socket.socket.settimeout
_c_close = _socket.socket.close
_c_detach = _socket.socket.detach
_SOCK_STREAM = _socket.SOCK_STREAM

_STD_SOCKET = _std.socket
_std_getaddrinfo = _socket.getaddrinfo
_timeout_error = TimeoutError


def _timed_out() -> BaseException:
    return _timeout_error("timed out")


class socket(_STD_SOCKET):
    """A socket whose blocking calls switch green threads instead of blocking
    the OS thread.  Same constructor and methods as :class:`socket.socket`."""

    __slots__ = ("_gl_timeout", "_gl_st", "_gl_stream")

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1, fileno: int | None = None) -> None:
        _STD_SOCKET.__init__(self, family, type, proto, fileno)
        self._gl_timeout: float | None = _socket.getdefaulttimeout()
        _c_settimeout(self, 0.0)
        self._gl_st = FdState(_socket.socket.fileno(self))
        self._gl_stream = self.type == _SOCK_STREAM

    # -- timeouts: kept here, the descriptor itself stays non-blocking -----

    def settimeout(self, value: float | None) -> None:
        if value is not None:
            value = float(value)
            if value < 0.0:
                raise ValueError("Timeout value out of range")
        self._gl_timeout = value

    def gettimeout(self) -> float | None:
        return self._gl_timeout

    def setblocking(self, flag: bool) -> None:
        self._gl_timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._gl_timeout != 0.0

    @property
    def timeout(self) -> float | None:  # type: ignore[override]
        return self._gl_timeout

    # -- waiting ---------------------------------------------------------

    def _wait(self, write: bool, deadline: float | None) -> None:
        if self._gl_timeout == 0.0:
            raise BlockingIOError(_errno.EAGAIN, "Resource temporarily unavailable")
        remaining = None
        if deadline is not None:
            remaining = deadline - _monotonic()
            if remaining <= 0:
                raise _timed_out()
        get_hub().wait_fd(self._gl_st, write, remaining, _timed_out)

    def _deadline(self) -> float | None:
        t = self._gl_timeout
        return None if t is None or t == 0.0 else _monotonic() + t

    # -- receiving -------------------------------------------------------

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        st = self._gl_st
        if st.readable:
            try:
                data = _recv(self, bufsize, flags)
            except BlockingIOError:
                st.readable = False
            else:
                hub = st.hub
                if hub is None:
                    hub = get_hub()
                elif 0 < len(data) < bufsize and self._gl_stream:
                    # Registered, so edges are being reported: a short read
                    # drained the buffer.  (Not at EOF: that stays readable.)
                    st.readable = False
                hub.io_budget -= 1
                if hub.io_budget <= 0:
                    hub.yield_now()
                return data
        deadline = self._deadline()
        while True:
            self._wait(False, deadline)
            try:
                data = _recv(self, bufsize, flags)
            except BlockingIOError:
                st.readable = False
                continue
            if 0 < len(data) < bufsize and self._gl_stream:
                st.readable = False
            return data

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        st = self._gl_st
        deadline: float | None = None
        first = True
        while True:
            if st.readable:
                try:
                    n = _recv_into(self, buffer, nbytes, flags)
                except BlockingIOError:
                    st.readable = False
                else:
                    want = nbytes or len(buffer)
                    if 0 < n < want and self._gl_stream and st.hub is not None:
                        st.readable = False
                    return n  # type: ignore[no-any-return]
            if first:
                deadline = self._deadline()
                first = False
            self._wait(False, deadline)

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        return self._retry_read(_recvfrom, bufsize, flags)  # type: ignore[no-any-return]

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        return self._retry_read(_recvfrom_into, buffer, nbytes, flags)  # type: ignore[no-any-return]

    def recvmsg(self, *args: Any) -> Any:
        return self._retry_read(_socket.socket.recvmsg, *args)

    def recvmsg_into(self, *args: Any) -> Any:
        return self._retry_read(_socket.socket.recvmsg_into, *args)

    def _retry_read(self, call: Any, *args: Any) -> Any:
        st = self._gl_st
        deadline: float | None = None
        first = True
        while True:
            if st.readable:
                try:
                    return call(self, *args)
                except BlockingIOError:
                    st.readable = False
            if first:
                deadline = self._deadline()
                first = False
            self._wait(False, deadline)

    # -- sending ---------------------------------------------------------

    def send(self, data: Any, flags: int = 0) -> int:
        st = self._gl_st
        if st.writable:
            try:
                n = _send(self, data, flags)
            except BlockingIOError:
                st.writable = False
            else:
                hub = st.hub or get_hub()
                hub.io_budget -= 1
                if hub.io_budget <= 0:
                    hub.yield_now()
                return n  # type: ignore[no-any-return]
        deadline = self._deadline()
        while True:
            self._wait(True, deadline)
            try:
                return _send(self, data, flags)  # type: ignore[no-any-return]
            except BlockingIOError:
                st.writable = False

    def sendall(self, data: Any, flags: int = 0) -> None:
        st = self._gl_st
        if st.writable:
            # The common case: everything fits in the send buffer at once.
            try:
                n = _send(self, data, flags)
            except BlockingIOError:
                st.writable = False
                n = 0
            else:
                if n == len(data):
                    hub = st.hub or get_hub()
                    hub.io_budget -= 1
                    if hub.io_budget <= 0:
                        hub.yield_now()
                    return
                st.writable = False
        else:
            n = 0
        view = memoryview(data).cast("B")
        total = len(view)
        deadline = self._deadline()  # the whole call, as in the stdlib
        with view:
            while n < total:
                self._wait(True, deadline)
                try:
                    n += _send(self, view[n:], flags)
                except BlockingIOError:
                    st.writable = False
                    continue
                if n < total:
                    st.writable = False

    def sendto(self, data: Any, flags_or_addr: Any, addr: Any = None) -> int:
        args = (data, flags_or_addr) if addr is None else (data, flags_or_addr, addr)
        return self._retry_write(_sendto, *args)  # type: ignore[no-any-return]

    def sendmsg(self, *args: Any) -> int:
        return self._retry_write(_socket.socket.sendmsg, *args)  # type: ignore[no-any-return]

    def _retry_write(self, call: Any, *args: Any) -> Any:
        st = self._gl_st
        deadline: float | None = None
        first = True
        while True:
            if st.writable:
                try:
                    return call(self, *args)
                except BlockingIOError:
                    st.writable = False
            if first:
                deadline = self._deadline()
                first = False
            self._wait(True, deadline)

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        # The stdlib's version polls with a selector of its own, which would
        # block the hub; sending through our send() keeps it cooperative.
        return self._sendfile_use_send(file, offset, count)  # type: ignore[attr-defined,no-any-return]

    # -- connections -----------------------------------------------------

    def accept(self) -> tuple[socket, Any]:
        st = self._gl_st
        deadline: float | None = None
        first = True
        while True:
            if st.readable:
                try:
                    fd, addr = _accept(self)
                except BlockingIOError:
                    st.readable = False
                else:
                    hub = st.hub
                    if hub is not None:
                        hub.io_budget -= 1
                        if hub.io_budget <= 0:
                            hub.yield_now()
                    sock = socket(self.family, self.type, self.proto, fileno=fd)
                    if self._gl_timeout is None and _socket.getdefaulttimeout() is None:
                        sock._gl_timeout = None
                    return sock, addr
            if first:
                deadline = self._deadline()
                first = False
            self._wait(False, deadline)

    def connect(self, address: Any) -> None:
        err = self.connect_ex(address)
        if err:
            raise OSError(err, _errno_message(err))

    def connect_ex(self, address: Any) -> int:
        if isinstance(address, tuple) and self.family in (AF_INET, AF_INET6):  # noqa: F405
            address = _resolve_for_connect(self, address)
        err = _connect_ex(self, address)
        if err in (0, _errno.EISCONN):
            return 0
        if err not in (_errno.EINPROGRESS, _errno.EAGAIN, _errno.EALREADY, _errno.EWOULDBLOCK):
            return err  # type: ignore[no-any-return]
        if self._gl_timeout == 0.0:
            return err  # type: ignore[no-any-return]
        st = self._gl_st
        st.writable = False
        try:
            self._wait(True, self._deadline())
        except TimeoutError:
            raise
        return self.getsockopt(SOL_SOCKET, SO_ERROR)  # noqa: F405

    # -- closing ---------------------------------------------------------

    def _real_close(self, _ss: Any = None) -> None:
        # Wake (with EBADF) anyone waiting on this descriptor and drop its
        # registration *before* the number can be reused.
        st = self._gl_st
        if st.hub is not None:
            st.hub.forget(st)
        elif st.reader is not None or st.writer is not None:  # pragma: no cover
            get_hub().forget(st)
        _c_close(self)

    def detach(self) -> int:
        st = self._gl_st
        if st.hub is not None:
            st.hub.forget(st)
        return _c_detach(self)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return _STD_SOCKET.__repr__(self).replace("socket.socket", "greenline.socket.socket", 1)


SocketType = socket


def _errno_message(err: int) -> str:
    import os

    return os.strerror(err)


# -- name resolution: off the hub, in the thread pool ------------------------

def _is_numeric_host(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    host = host.split("%", 1)[0]
    for fam in (_socket.AF_INET, _socket.AF_INET6):
        try:
            _socket.inet_pton(fam, host)
            return True
        except (OSError, ValueError):
            pass
    return host == ""


def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,
                flags: int = 0) -> list[tuple[Any, ...]]:
    """Like :func:`socket.getaddrinfo`; a name that needs a lookup is resolved
    in the thread pool, so only the calling green thread waits."""
    if _is_numeric_host(host):
        addrlist = _std_getaddrinfo(host, port, family, type, proto, flags)
    else:
        from greenline.threadpool import to_thread

        addrlist = to_thread(_std_getaddrinfo, host, port, family, type, proto, flags)
    return [(_intenum(AddressFamily, af), _intenum(SocketKind, kind), p, cn, sa)  # noqa: F405
            for af, kind, p, cn, sa in addrlist]


def _intenum(cls: Any, value: int) -> Any:
    try:
        return cls(value)
    except ValueError:
        return value


def _blocking_lookup(fn: Any, *args: Any) -> Any:
    from greenline.threadpool import to_thread

    return to_thread(fn, *args)


def gethostbyname(hostname: str) -> str:
    if _is_numeric_host(hostname):
        return _socket.gethostbyname(hostname)
    return _blocking_lookup(_socket.gethostbyname, hostname)  # type: ignore[no-any-return]


def gethostbyname_ex(hostname: str) -> tuple[str, list[str], list[str]]:
    return _blocking_lookup(_socket.gethostbyname_ex, hostname)  # type: ignore[no-any-return]


def gethostbyaddr(ip_address: str) -> tuple[str, list[str], list[str]]:
    return _blocking_lookup(_socket.gethostbyaddr, ip_address)  # type: ignore[no-any-return]


def getnameinfo(sockaddr: tuple[Any, ...], flags: int) -> tuple[str, str]:
    return _blocking_lookup(_socket.getnameinfo, sockaddr, flags)  # type: ignore[no-any-return]


def getfqdn(name: str = "") -> str:
    return _blocking_lookup(_std.getfqdn, name)  # type: ignore[no-any-return]


def _resolve_for_connect(sock: socket, address: tuple[Any, ...]) -> tuple[Any, ...]:
    host = address[0]
    if _is_numeric_host(host):
        return address
    info = getaddrinfo(host, address[1], sock.family, sock.type, sock.proto)
    if not info:  # pragma: no cover
        raise OSError(f"getaddrinfo returned nothing for {host!r}")
    sa = info[0][4]
    return sa + address[2:] if len(address) > 2 and len(sa) == 2 else sa


# -- constructors --------------------------------------------------------------

def socketpair(family: int = _socket.AF_UNIX, type: int = _socket.SOCK_STREAM,
               proto: int = 0) -> tuple[socket, socket]:
    """A connected pair of cooperative sockets."""
    a, b = _socket.socketpair(family, type, proto)
    return (socket(family, type, proto, a.detach()), socket(family, type, proto, b.detach()))


def fromfd(fd: int, family: int, type: int, proto: int = 0) -> socket:
    """A cooperative socket on a duplicate of ``fd``."""
    import os

    return socket(family, type, proto, os.dup(fd))


def create_server(address: Any, *, family: int = _socket.AF_INET, backlog: int | None = None,
                  reuse_port: bool = False, dualstack_ipv6: bool = False) -> socket:
    """Like :func:`socket.create_server` (binding never blocks), cooperative."""
    s = _std.create_server(address, family=family, backlog=backlog, reuse_port=reuse_port,
                           dualstack_ipv6=dualstack_ipv6)
    return socket(s.family, s.type, s.proto, s.detach())


_GLOBAL_DEFAULT_TIMEOUT = _std._GLOBAL_DEFAULT_TIMEOUT  # type: ignore[attr-defined]


def create_connection(address: tuple[str, int], timeout: Any = _GLOBAL_DEFAULT_TIMEOUT,
                      source_address: Any = None, *, all_errors: bool = False) -> socket:
    """Connect to ``(host, port)``, trying each address the name resolves to,
    like :func:`socket.create_connection`."""
    host, port = address
    errors: list[OSError] = []
    for af, kind, proto, _cn, sa in getaddrinfo(host, port, 0, _socket.SOCK_STREAM):
        sock = None
        try:
            sock = socket(af, kind, proto)
            if timeout is not _GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sa)
            errors.clear()
            return sock
        except OSError as exc:
            errors.append(exc)
            if sock is not None:
                sock.close()
    if errors:
        try:
            if all_errors:
                raise ExceptionGroup("create_connection failed", errors)
            raise errors[0]
        finally:
            errors.clear()
    raise OSError("getaddrinfo returns an empty list")


# -- raw descriptors -------------------------------------------------------------

def wait_read(fd: int, timeout: float | None = None) -> None:
    """Block the calling green thread until ``fd`` is readable.

    For a descriptor that is not a greenline socket (a pipe, a device).  The
    descriptor must stay open while waiting.
    """
    _wait_raw(fd, False, timeout)


def wait_write(fd: int, timeout: float | None = None) -> None:
    """Block the calling green thread until ``fd`` is writable."""
    _wait_raw(fd, True, timeout)


def _wait_raw(fd: int, write: bool, timeout: float | None) -> None:
    hub = get_hub()
    st = hub.fds.get(fd)
    if st is not None and not st.temporary:
        # A greenline socket on this descriptor is registered: share its state.
        hub.wait_fd(st, write, timeout)
        return
    # A raw descriptor may be closed and its number reused behind our back,
    # so it stays registered only while someone waits on it.
    if st is None:
        st = FdState(fd)
        st.temporary = True
    try:
        hub.wait_fd(st, write, timeout)
    finally:
        if st.reader is None and st.writer is None and st.hub is not None:
            st.hub._unregister(st)
