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
call that would fail -- unless the peer has hung up (the hub saw a hang-up
edge, ``FdState.hup``): EOF is never "drained".  Datagram sockets, peeks and
non-blocking sockets (timeout 0) never skip the call.

Known limits: one green thread at a time may wait to read (and one to write)
on a socket; a socket cannot be waited on from two OS threads at once; the
descriptor is made non-blocking, which ``fromfd`` and ``socket(fileno=...)``
share with every other holder of the open file.
"""

from __future__ import annotations

import _socket
import _thread
import errno as _errno
import io as _io
import os as _os
import socket as _std
from socket import *  # noqa: F403 - the module is a drop-in for the stdlib's
from time import monotonic as _monotonic
from typing import Any

from greenline._core.fdio import wait_read, wait_write  # noqa: F401 - gevent.socket has them
from greenline._core.hub import FdState, get_hub
from greenline._core.hub import this_thread as _this_thread

__all__ = list(_std.__all__)  # type: ignore[attr-defined]
for _name in ("socket", "SocketType", "GreenSocket", "socketpair", "fromfd", "create_connection",
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
_accept = _socket.socket._accept  # type: ignore[attr-defined]
_connect_ex = _socket.socket.connect_ex
_c_init = _socket.socket.__init__
_c_settimeout = _socket.socket.settimeout
_c_close = _socket.socket.close
_c_detach = _socket.socket.detach
_c_fileno = _socket.socket.fileno
_c_bind = _socket.socket.bind
# The C getters, without the stdlib's conversion to enums (an enum call costs
# more than the whole accept fast path otherwise).
_c_family = _socket.socket.family.__get__  # type: ignore[attr-defined]
_c_type = _socket.socket.type.__get__  # type: ignore[attr-defined]
_c_proto = _socket.socket.proto.__get__  # type: ignore[attr-defined]
_SOCK_STREAM = _socket.SOCK_STREAM
_SOCK_NONBLOCK = getattr(_socket, "SOCK_NONBLOCK", 0)
_MSG_DONTWAIT = getattr(_socket, "MSG_DONTWAIT", 0)
_INET_FAMILIES = (_socket.AF_INET, _socket.AF_INET6)
_EBADF = _errno.EBADF
# EINTR too: an interrupted connect() goes on asynchronously (POSIX).
_CONNECT_PENDING = frozenset((_errno.EINPROGRESS, _errno.EAGAIN, _errno.EALREADY,
                              _errno.EWOULDBLOCK, _errno.EINTR))

_STD_SOCKET = _std.socket
# Saved before patching can swap in ours (which call these): no recursion,
# and the poll probe stays the kernel's.
_std_create_server = _std.create_server
_std_getfqdn = _std.getfqdn
_std_getaddrinfo = _socket.getaddrinfo
_get_ident = _thread.get_ident
_timeout_error = TimeoutError


def _timed_out() -> BaseException:
    return _timeout_error("timed out")


def _closed_error() -> OSError:
    return OSError(_EBADF, "Bad file descriptor")


class GreenSocket(_STD_SOCKET):
    """A socket whose blocking calls switch green threads instead of blocking
    the OS thread.  Same constructor and methods as :class:`socket.socket`."""

    __slots__ = ("_gl_timeout", "_gl_st", "_gl_stream", "_gl_idle")

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1, fileno: int | None = None) -> None:
        # What the stdlib's __init__ does, minus a Python frame (this runs
        # once per accepted connection).
        if fileno is None:
            if family == -1:
                family = _socket.AF_INET
            if type == -1:
                type = _SOCK_STREAM
            if proto == -1:
                proto = 0
        _c_init(self, family, type, proto, fileno)
        self._io_refs = 0
        self._closed = False
        self._gl_timeout: float | None = _socket.getdefaulttimeout()
        self._gl_idle = False
        if type != -1 and type & _SOCK_NONBLOCK:
            self._gl_timeout = 0.0  # asked for non-blocking, as the stdlib honours
        _c_settimeout(self, 0.0)
        self._gl_st = FdState(_c_fileno(self))
        # "A short read drained the buffer" holds for byte streams, and is
        # safe only if the hub remembers a hang-up edge (EOF, error) it has
        # already consumed: otherwise a peer's last data and its FIN, seen in
        # one poll, would leave us waiting for an edge that never comes.
        self._gl_stream = _c_type(self) == _SOCK_STREAM

    # -- timeouts: kept here, the descriptor itself stays non-blocking -----

    def settimeout(self, value: float | None) -> None:
        if value is not None:
            if isinstance(value, (str, bytes, bytearray)):
                raise TypeError("Timeout value must be int, float or None")
            value = float(value)
            if value != value or value < 0.0:
                raise ValueError("Timeout value out of range")
        self._gl_timeout = value
        self._gl_idle = False

    def gettimeout(self) -> float | None:
        return self._gl_timeout

    def set_idle_timeout(self, seconds: float | None) -> None:
        """greenline's own: like ``settimeout(seconds)``, except that the
        timeout bounds each wait for the peer, not a whole call.  A
        ``sendall`` (or ``sendfile``, or a TLS read or write) that keeps
        making progress goes on for as long as it takes; one that makes none
        for ``seconds`` raises ``TimeoutError``.  What a server's idle
        timeout means (:class:`~greenline.servers.stream.StreamServer`'s
        ``idle_timeout``).  ``settimeout`` and ``setblocking`` go back to the
        standard library's semantics, where since Python 3.5 the timeout
        bounds the whole of ``sendall``."""
        self.settimeout(seconds)
        self._gl_idle = seconds is not None and seconds > 0.0

    @property
    def idle_timeout(self) -> float | None:
        """The timeout set by :meth:`set_idle_timeout`, or None."""
        return self._gl_timeout if self._gl_idle else None

    def setblocking(self, flag: bool) -> None:
        # The descriptor stays non-blocking whatever the flag, but the call
        # is still made, so a closed socket raises EBADF as the stdlib's does.
        _c_settimeout(self, 0.0)
        self._gl_timeout = None if flag else 0.0
        self._gl_idle = False

    def getblocking(self) -> bool:
        return self._gl_timeout != 0.0

    @property
    def timeout(self) -> float | None:  # type: ignore[override]
        return self._gl_timeout

    @property
    def parked_reader(self) -> Any:
        """The green thread parked waiting to read this socket, or None (a
        server closing idle connections at shutdown asks this: a handler
        parked reading has answered everything it read)."""
        return self._gl_st.reader

    # -- waiting ---------------------------------------------------------

    def _wait(self, write: bool, deadline: float | None,
              timeout_exc: Any = _timed_out) -> None:
        """Park until the descriptor is ready.  Only call this after a call
        failed with EAGAIN (or the readiness flag says it would): an edge is
        then guaranteed to come when it is ready."""
        if _c_fileno(self) == -1:
            # Closed (or detached): never register a number that may have
            # been reused by now.
            raise _closed_error()
        if self._gl_timeout == 0.0:
            # Non-blocking (perhaps made so by another green thread while
            # this one was waiting): never park.
            raise BlockingIOError(_errno.EAGAIN, "Resource temporarily unavailable")
        remaining = None
        if deadline is not None:
            remaining = deadline - _monotonic()
            if remaining <= 0:
                raise timeout_exc()
        get_hub().wait_fd(self._gl_st, write, remaining, timeout_exc)

    def _deadline(self) -> float | None:
        t = self._gl_timeout
        return None if t is None or t == 0.0 else _monotonic() + t

    # -- receiving -------------------------------------------------------
    #
    # Each call: try it unless the flag says it would fail with EAGAIN; park
    # only on EAGAIN.  A non-blocking socket (timeout 0) always makes the
    # call: its user may be polling with a poller of its own, whose events
    # our flags never see, and must get the kernel's answer.

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        st = self._gl_st
        if not st.readable and not flags and self._gl_timeout is None:
            # The server's hot path: known drained, no deadline to keep, so
            # park first and make the call once the next edge says there is
            # something to read (the wake itself is the yield: no budget).
            hub = _this_thread.hub or get_hub()
            while True:
                hub.wait_fd(st, False)
                try:
                    data = _recv(self, bufsize)
                except BlockingIOError:
                    st.readable = False  # an edge with nothing for us
                    continue
                if len(data) < bufsize and self._gl_stream and not st.hup:
                    st.readable = False
                return data
        return self._receive(_recv, bufsize, flags, bufsize)  # type: ignore[no-any-return]

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        # As recv: the park-first loop is written in each of the two, as it
        # is the path of every request a server reads (a shared helper would
        # cost a Python call there); the rest is _receive.  len() of an
        # exotic buffer counts items, not bytes: it can only understate the
        # room, never fake a short read.
        st = self._gl_st
        if not st.readable and not flags and self._gl_timeout is None:
            hub = _this_thread.hub or get_hub()
            while True:
                hub.wait_fd(st, False)
                try:
                    n: int = _recv_into(self, buffer, nbytes)
                except BlockingIOError:
                    st.readable = False
                    continue
                if n < (nbytes or len(buffer)) and self._gl_stream and not st.hup:
                    st.readable = False
                return n
        return self._receive(_recv_into, nbytes or len(buffer), flags, buffer, nbytes)  # type: ignore[no-any-return]

    def _receive(self, call: Any, want: int, flags: int, *args: Any) -> Any:
        """recv or recv_into (``call``, asked for ``want`` bytes) when the
        socket may be readable already, has flags or a timeout, or is
        non-blocking."""
        st = self._gl_st
        if st.readable:
            try:
                result = call(self, *args, flags)
            except BlockingIOError:
                st.readable = False
            else:
                got = result if type(result) is int else len(result)
                if got < want and self._gl_stream and not flags and not st.hup:
                    # A short read drained the buffer.  Not at a known EOF
                    # (the hub saw the hang-up: that stays readable), not for
                    # datagrams, not for a peek (it drains nothing).  If the
                    # descriptor is not registered yet, registering reports
                    # what is there as a fresh edge, so nothing is lost.
                    st.readable = False
                hub = st.hub or get_hub()
                hub.io_budget -= 1
                if hub.io_budget <= 0:
                    hub.budget_spent()
                return result
        if self._gl_timeout == 0.0 or flags & _MSG_DONTWAIT:
            return call(self, *args, flags)
        deadline = self._deadline()
        while True:
            self._wait(False, deadline)
            try:
                result = call(self, *args, flags)
            except BlockingIOError:
                st.readable = False
                continue
            got = result if type(result) is int else len(result)
            if got < want and self._gl_stream and not flags and not st.hup:
                st.readable = False
            return result

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        return self._retry(False, flags, _recvfrom, bufsize, flags)  # type: ignore[no-any-return]

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        return self._retry(False, flags, _recvfrom_into, buffer, nbytes, flags)  # type: ignore[no-any-return]

    def recvmsg(self, *args: Any) -> Any:
        return self._retry(False, _flags_at(args, 2), _socket.socket.recvmsg, *args)

    def recvmsg_into(self, *args: Any) -> Any:
        return self._retry(False, _flags_at(args, 2), _socket.socket.recvmsg_into, *args)

    def _retry(self, write: bool, flags: int, call: Any, *args: Any) -> Any:
        """The less travelled calls (recvfrom, recvmsg, sendto, sendmsg):
        try unless known not ready, park on EAGAIN, try again.  No "short
        read means drained" here: these serve datagrams too."""
        st = self._gl_st
        nowait = self._gl_timeout == 0.0 or flags & _MSG_DONTWAIT
        if (st.writable if write else st.readable) or nowait:
            try:
                result = call(self, *args)
            except BlockingIOError:
                if nowait:
                    raise
                _not_ready(st, write)
            else:
                hub = st.hub or get_hub()
                hub.io_budget -= 1
                if hub.io_budget <= 0:
                    hub.budget_spent()
                return result
        deadline = self._deadline()
        while True:
            self._wait(write, deadline)
            try:
                return call(self, *args)
            except BlockingIOError:
                _not_ready(st, write)

    # -- sending ---------------------------------------------------------

    def send(self, data: Any, flags: int = 0) -> int:
        st = self._gl_st
        if st.writable:
            try:
                n: int = _send(self, data, flags)
            except BlockingIOError:
                st.writable = False
            else:
                hub = st.hub or get_hub()
                hub.io_budget -= 1
                if hub.io_budget <= 0:
                    hub.budget_spent()
                return n
        if self._gl_timeout == 0.0 or flags & _MSG_DONTWAIT:
            return _send(self, data, flags)  # type: ignore[no-any-return]
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
                n: int = _send(self, data, flags)
            except BlockingIOError:
                st.writable = False
            else:
                if type(data) is bytes and n == len(data):
                    hub = st.hub or get_hub()
                    hub.io_budget -= 1
                    if hub.io_budget <= 0:
                        hub.budget_spent()
                    return
                # Anything else (a bytearray, a memoryview, a partial send):
                # the rest, then the budget as above, whether or not the
                # rest had to wait.
                self._send_rest(data, flags, n)
                hub = st.hub or get_hub()
                hub.io_budget -= 1
                if hub.io_budget <= 0:
                    hub.budget_spent()
                return
        self._send_rest(data, flags, 0)

    def _send_rest(self, data: Any, flags: int, n: int) -> None:
        # sendall once its first try is over: ``n`` bytes are gone; the
        # buffer is full (the try failed, or was skipped as known to fail),
        # or they were not all of ``data``.
        st = self._gl_st
        with memoryview(data) as mv, mv.cast("B") as view:
            total = len(view)
            if self._gl_timeout == 0.0 or flags & _MSG_DONTWAIT:
                # Never wait: send until done, or until the kernel says
                # EAGAIN (raised), as the stdlib's sendall does.
                while n < total:
                    n += _send(self, view[n:], flags)
                return
            if 0 < n < total:
                # A partial send: the buffer is full (the kernel flagged it,
                # so an edge will come when there is room).
                st.writable = False
            # For the whole call, as in the stdlib; from the last progress
            # under an idle timeout.
            deadline = self._deadline()
            idle = self._gl_idle
            while n < total:
                if not st.writable:
                    self._wait(True, deadline)
                try:
                    n += _send(self, view[n:], flags)
                except BlockingIOError:
                    st.writable = False
                    continue
                if n < total:
                    st.writable = False
                    if idle:
                        deadline = self._deadline()

    def sendto(self, data: Any, *args: Any) -> int:
        # sendto(data, address) or sendto(data, flags, address): by count,
        # as the C layer decides (an address may be None for some families).
        flags = args[0] if len(args) == 2 and isinstance(args[0], int) else 0
        return self._retry(True, flags, _sendto, data, *args)  # type: ignore[no-any-return]

    def sendmsg(self, *args: Any) -> int:
        return self._retry(True, _flags_at(args, 2), _socket.socket.sendmsg, *args)  # type: ignore[no-any-return]

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        """Like :meth:`socket.socket.sendfile`: ``os.sendfile`` where the file
        allows it (zero-copy), else plain sends; the calling green thread
        waits on the socket's readiness, never the OS thread."""
        self._check_sendfile_params(file, offset, count)  # type: ignore[attr-defined]
        try:
            fileno = file.fileno()
            fsize = _os.fstat(fileno).st_size
        except (AttributeError, _io.UnsupportedOperation, OSError):
            return self._sendfile_use_send(file, offset, count)  # type: ignore[attr-defined,no-any-return]
        if not fsize:
            return 0
        if self._gl_timeout == 0.0:
            raise ValueError("non-blocking sockets are not supported")
        st = self._gl_st
        sockno = _c_fileno(self)
        blocksize = min(count or fsize, 2 ** 30)
        deadline = self._deadline()
        total = 0
        try:
            while True:
                if count:
                    blocksize = count - total
                    if blocksize <= 0:
                        break
                if not st.writable:
                    self._wait(True, deadline)
                try:
                    sent = _os.sendfile(sockno, fileno, offset, blocksize)
                except BlockingIOError:
                    st.writable = False
                    continue
                except OSError:
                    if total == 0:
                        # Not a file sendfile(2) can read (a pipe, a /proc
                        # file): nothing sent yet, so plain sends can take over.
                        return self._sendfile_use_send(file, offset, count)  # type: ignore[attr-defined,no-any-return]
                    raise
                if sent == 0:
                    break  # end of file
                offset += sent
                total += sent
                if self._gl_idle:
                    deadline = self._deadline()
            return total
        finally:
            if total > 0 and hasattr(file, "seek"):
                file.seek(offset)

    # -- connections -----------------------------------------------------

    def accept(self) -> tuple[GreenSocket, Any]:
        st = self._gl_st
        if not st.readable and self._gl_timeout != 0.0:
            deadline = self._deadline()
            self._wait(False, deadline)
        else:
            deadline = None
        while True:
            try:
                fd, addr = _accept(self)
            except BlockingIOError:
                st.readable = False
                if self._gl_timeout == 0.0:
                    raise
                if deadline is None:
                    deadline = self._deadline()
                self._wait(False, deadline)
                continue
            hub = st.hub or get_hub()
            hub.io_budget -= 1
            if hub.io_budget <= 0:
                hub.budget_spent()
            # As in the stdlib, the new socket gets the default timeout, not
            # the listener's.
            return GreenSocket(_c_family(self), _c_type(self), _c_proto(self), fd), addr

    def connect(self, address: Any) -> None:
        err = self._connect(address, self._connect_timed_out)
        if err:
            raise OSError(err, _os.strerror(err))

    def connect_ex(self, address: Any) -> int:
        # As in the stdlib, a timeout is reported as EAGAIN, not raised.
        return self._connect(address, self._connect_ex_timed_out)

    @staticmethod
    def _connect_timed_out() -> BaseException:
        return _timed_out()

    @staticmethod
    def _connect_ex_timed_out() -> BaseException:
        return _ConnectTimedOut()

    def _connect(self, address: Any, timeout_exc: Any) -> int:
        if isinstance(address, tuple) and _c_family(self) in _INET_FAMILIES:
            address = _resolve(self, address)
        err: int = _connect_ex(self, address)
        if err not in _CONNECT_PENDING or self._gl_timeout == 0.0:
            return err
        # In progress: the descriptor becomes writable (or reports an error)
        # when the handshake ends; SO_ERROR then has the outcome.
        st = self._gl_st
        st.writable = False
        deadline = self._deadline()
        while True:
            try:
                self._wait(True, deadline, timeout_exc)
            except _ConnectTimedOut:
                return _errno.EAGAIN
            err = self.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
            if err:
                return err
            try:
                self.getpeername()
            except OSError as e:
                if e.errno == _errno.ENOTCONN:
                    continue  # a wake that was not the connection's end
                raise
            return 0

    def bind(self, address: Any) -> None:
        # Binding to a name would resolve it in C, blocking the hub.
        if isinstance(address, tuple) and _c_family(self) in _INET_FAMILIES:
            if len(address) > 1 and isinstance(address[1], int) and not 0 <= address[1] <= 65535:
                # The C layer's check, made before any lookup of the name.
                raise OverflowError("bind(): port must be 0-65535.")
            address = _resolve(self, address, _socket.AI_PASSIVE)
        _c_bind(self, address)

    # -- closing ---------------------------------------------------------

    def _real_close(self, _ss: Any = None) -> None:
        # Wake (with EBADF) anyone waiting on this descriptor and drop its
        # registration *before* the number can be reused.
        st = self._gl_st
        if st.hub is not None:
            st.hub.forget(st)
        # From now on every call goes to the C layer, which raises EBADF.
        st.readable = st.writable = True
        _c_close(self)

    def detach(self) -> int:
        st = self._gl_st
        if st.hub is not None:
            st.hub.forget(st)
        st.readable = st.writable = True
        self._closed = True
        return _c_detach(self)  # type: ignore[no-any-return]

    # __repr__ is the stdlib's: it names the class by its module and
    # qualified name, so it already says greenline.socket.socket.


def _not_ready(st: FdState, write: bool) -> None:
    if write:
        st.writable = False
    else:
        st.readable = False


def _flags_at(args: tuple[Any, ...], index: int) -> int:
    # The flags argument of recvmsg/sendmsg, when given (an int or not: the
    # C layer reports a wrong type).
    flags = args[index] if len(args) > index else 0
    return flags if isinstance(flags, int) else 0


class _ConnectTimedOut(Exception):
    pass


# The class is ``socket`` to everyone; it has a second name only because
# type checkers keep the stdlib's class under the star-imported one.
GreenSocket.__name__ = GreenSocket.__qualname__ = "socket"
socket = SocketType = GreenSocket  # type: ignore[misc,assignment]


# -- name resolution: off the hub, in the resolver's thread pool ---------------

def _is_numeric_host(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    if host == "" or host == "<broadcast>":
        return True  # the C layer maps these without a lookup
    host = host.split("%", 1)[0]
    for fam in (_socket.AF_INET, _socket.AF_INET6):
        try:
            _socket.inet_pton(fam, host)
            return True
        except (OSError, ValueError):
            pass
    return False


class _HostsFile:
    """The names and addresses of /etc/hosts, for the C library that reads
    it before asking DNS (``hosts: files ...`` in /etc/nsswitch.conf, glibc's
    way; without that file glibc asks DNS first, and so does any other
    order).  A lookup the file answers is made inline: it never waits behind
    slow DNS lookups in the resolver's pool, and costs no thread hand-off.
    Both files are read again when they change (looked at once a second at
    most)."""

    def __init__(self, hosts: str = "/etc/hosts", nsswitch: str = "/etc/nsswitch.conf") -> None:
        self.hosts_path = hosts
        self.nsswitch_path = nsswitch
        self._checked = -1.0
        self._key: tuple[Any, ...] | None = None
        # name (lower case) -> the address families it has; addresses.
        self._names: dict[str, set[int]] = {}
        self._addresses: set[str] = set()

    def _stat(self, path: str) -> Any:
        try:
            st = _os.stat(path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _refresh(self) -> None:
        now = _monotonic()
        if now - self._checked < 1.0:
            return
        self._checked = now
        key = (self._stat(self.hosts_path), self._stat(self.nsswitch_path))
        if key == self._key:
            return
        self._key = key
        self._names, self._addresses = {}, set()
        if key[0] is None or not self._files_first():
            return
        try:
            with open(self.hosts_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return
        for line in lines:
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            address = _normal_address(fields[0])
            if address is None:
                continue
            family, text = address
            self._addresses.add(text)
            for name in fields[1:]:
                self._names.setdefault(name.lower(), set()).add(family)

    def _files_first(self) -> bool:
        try:
            with open(self.nsswitch_path, "rb") as f:
                for raw in f.read().decode("utf-8", "replace").splitlines():
                    line = raw.split("#", 1)[0].strip()
                    if line.startswith("hosts:"):
                        sources = line[len("hosts:"):].split()
                        return bool(sources) and sources[0] == "files"
        except OSError:
            pass
        return False

    def has_name(self, host: Any, family: int = 0) -> bool:
        """Whether the C library finds ``host`` in the file, for ``family``
        (any family for AF_UNSPEC: glibc then takes every address the file
        has and looks no further)."""
        if isinstance(host, bytes):
            try:
                host = host.decode("ascii")
            except UnicodeDecodeError:
                return False
        if not isinstance(host, str):
            return False
        self._refresh()
        families = self._names.get(host.lower())
        if not families:
            return False
        return family == 0 or family in families

    def has_address(self, address: Any) -> bool:
        if not isinstance(address, str):
            return False
        self._refresh()
        normal = _normal_address(address)
        return normal is not None and normal[1] in self._addresses


def _normal_address(text: str) -> tuple[int, str] | None:
    text = text.split("%", 1)[0]
    for fam in (_socket.AF_INET, _socket.AF_INET6):
        try:
            return fam, _socket.inet_ntop(fam, _socket.inet_pton(fam, text))
        except (OSError, ValueError):
            pass
    return None


_hosts_file = _HostsFile()


def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,  # type: ignore[no-redef]
                flags: int = 0) -> list[tuple[Any, ...]]:
    """Like :func:`socket.getaddrinfo`; a name that needs DNS is resolved in
    the resolver's thread pool, so only the calling green thread waits.
    Numeric addresses, and names the C library finds in /etc/hosts before
    any DNS, are resolved inline."""
    if _is_numeric_host(host) or _hosts_file.has_name(host, family):
        addrlist = _std_getaddrinfo(host, port, family, type, proto, flags)
    else:
        addrlist = _blocking_lookup(_std_getaddrinfo, host, port, family, type, proto, flags)
    return [(_intenum(AddressFamily, af), _intenum(SocketKind, kind), p, cn, sa)  # noqa: F405
            for af, kind, p, cn, sa in addrlist]


def _intenum(cls: Any, value: int) -> Any:
    try:
        return cls(value)
    except ValueError:
        return value


def _blocking_lookup(fn: Any, *args: Any) -> Any:
    from greenline._core.threadpool import get_resolver_pool

    return get_resolver_pool().apply(fn, args)


def gethostbyname(hostname: str) -> str:  # type: ignore[no-redef]
    if _is_numeric_host(hostname) or _hosts_file.has_name(hostname, _socket.AF_INET):
        return _socket.gethostbyname(hostname)
    return _blocking_lookup(_socket.gethostbyname, hostname)  # type: ignore[no-any-return]


def gethostbyname_ex(hostname: str) -> tuple[str, list[str], list[str]]:  # type: ignore[no-redef]
    if _hosts_file.has_name(hostname, _socket.AF_INET):
        return _socket.gethostbyname_ex(hostname)
    return _blocking_lookup(_socket.gethostbyname_ex, hostname)  # type: ignore[no-any-return]


def gethostbyaddr(ip_address: str) -> tuple[str, list[str], list[str]]:  # type: ignore[no-redef]
    if _hosts_file.has_address(ip_address):
        return _socket.gethostbyaddr(ip_address)
    return _blocking_lookup(_socket.gethostbyaddr, ip_address)  # type: ignore[no-any-return]


def getnameinfo(sockaddr: tuple[Any, ...], flags: int) -> tuple[str, str]:  # type: ignore[no-redef]
    # Argument errors belong to the caller, not to a pool thread's traceback.
    if not isinstance(sockaddr, tuple):
        # The traceback keeps this frame: let it not keep the argument too.
        kind = type(sockaddr).__name__
        del sockaddr
        raise TypeError(f"getnameinfo() argument 1 must be a tuple, not {kind}")
    if not isinstance(flags, int):
        raise TypeError(f"'{type(flags).__name__}' object cannot be interpreted as an integer")
    numeric = _socket.NI_NUMERICHOST | _socket.NI_NUMERICSERV
    if flags & numeric == numeric and _is_numeric_host(sockaddr[0]):
        return _socket.getnameinfo(sockaddr, flags)  # no lookup to make
    return _blocking_lookup(_socket.getnameinfo, sockaddr, flags)  # type: ignore[no-any-return]


def getfqdn(name: str = "") -> str:  # type: ignore[no-redef]
    return _blocking_lookup(_std_getfqdn, name)  # type: ignore[no-any-return]


def _resolve(sock: GreenSocket, address: tuple[Any, ...], flags: int = 0) -> tuple[Any, ...]:
    """``address`` with its host name replaced by an address, looked up in
    the resolver's pool (the C layer would look it up blocking the hub)."""
    host = address[0]
    if _is_numeric_host(host):
        return address
    info = getaddrinfo(host, address[1], _c_family(sock), _c_type(sock), _c_proto(sock), flags)
    if not info:  # pragma: no cover - getaddrinfo raises instead
        raise OSError(f"getaddrinfo returned nothing for {host!r}")
    return (info[0][4][0],) + tuple(address[1:])


# -- constructors --------------------------------------------------------------

def socketpair(family: int | None = None, type: int = _socket.SOCK_STREAM,  # type: ignore[no-redef]
               proto: int = 0) -> tuple[GreenSocket, GreenSocket]:
    """A connected pair of cooperative sockets (``AF_UNIX`` by default)."""
    if family is None:
        family = _socket.AF_UNIX
    a, b = _socket.socketpair(family, type, proto)
    return (GreenSocket(family, type, proto, a.detach()), GreenSocket(family, type, proto, b.detach()))


def fromfd(fd: int, family: int, type: int, proto: int = 0) -> GreenSocket:  # type: ignore[no-redef]
    """A cooperative socket on a duplicate of ``fd``.

    The duplicate shares the open file description, so ``fd`` becomes
    non-blocking too (greenline's sockets always are underneath).
    """
    return GreenSocket(family, type, proto, _os.dup(fd))


def create_server(address: Any, *, family: int = _socket.AF_INET, backlog: int | None = None,  # type: ignore[no-redef]
                  reuse_port: bool = False, dualstack_ipv6: bool = False) -> GreenSocket:
    """Like :func:`socket.create_server`, cooperative; a host name is looked up
    in the thread pool."""
    if isinstance(address, tuple) and not _is_numeric_host(address[0]):
        info = getaddrinfo(address[0], address[1], family, _SOCK_STREAM, 0, _socket.AI_PASSIVE)
        if not info:  # pragma: no cover - getaddrinfo raises instead
            raise OSError(f"getaddrinfo returned nothing for {address[0]!r}")
        address = (info[0][4][0],) + tuple(address[1:])
    s = _std_create_server(address, family=family, backlog=backlog, reuse_port=reuse_port,
                           dualstack_ipv6=dualstack_ipv6)
    return GreenSocket(s.family, s.type, s.proto, s.detach())


_GLOBAL_DEFAULT_TIMEOUT = _std._GLOBAL_DEFAULT_TIMEOUT  # type: ignore[attr-defined]


def create_connection(address: tuple[str, int], timeout: Any = _GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[no-redef]
                      source_address: Any = None, *, all_errors: bool = False) -> GreenSocket:
    """Connect to ``(host, port)``, trying each address the name resolves to,
    like :func:`socket.create_connection`."""
    host, port = address
    errors: list[OSError] = []
    for af, kind, proto, _cn, sa in getaddrinfo(host, port, 0, _socket.SOCK_STREAM):
        sock = None
        try:
            sock = GreenSocket(af, kind, proto)
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
