"""Cooperative TLS: the standard library's :mod:`ssl` API on greenline
sockets, where a handshake, read or write that would block parks only the
calling green thread.

>>> from greenline import ssl
>>> ctx = ssl.create_default_context()
>>> isinstance(ctx, ssl.SSLContext) and ctx.sslsocket_class is ssl.SSLSocket
True

``SSLContext.wrap_socket`` returns an :class:`SSLSocket`, a
:class:`greenline.socket.socket`.  OpenSSL works directly on the
(non-blocking) descriptor; when it asks for more input or for room to write
(``SSLWantReadError``/``SSLWantWriteError``, which always follow an EAGAIN),
the green thread waits for the descriptor's next edge in the hub, within the
socket's timeout.  A socket with timeout 0 raises those errors as the
stdlib's non-blocking ``SSLSocket`` does.

Every other public name of :mod:`ssl` (constants, exceptions, ``Purpose``,
``DER_cert_to_PEM_cert``, ...) is re-exported unchanged, so this module can
stand in for ``ssl``; ``greenline.monkey`` swaps ``ssl.SSLContext`` and
``ssl.SSLSocket`` for the classes here.
"""

from __future__ import annotations

import _socket
import _ssl
import errno as _errno
import os as _os
import ssl as _std_ssl
import sys as _sys
from collections.abc import Callable
from ssl import *  # noqa: F403 - the module is a drop-in for the stdlib's
from types import ModuleType as _ModuleType
from typing import Any

from greenline import socket as _gsocket
from greenline._core.hub import get_hub as _get_hub

# Names of the stdlib module that are its own imports, not its API.
_NOT_API = {"socket", "create_connection", "SOCK_STREAM", "SOL_SOCKET", "SO_TYPE", "namedtuple"}
_OURS = ["SSLContext", "SSLSocket", "wrap_socket", "create_default_context",
         "get_server_certificate"]
__all__ = sorted(
    {name for name, value in vars(_std_ssl).items()
     if not name.startswith("_") and not isinstance(value, _ModuleType) and name not in _NOT_API}
    | set(_OURS)
)

_STD_CONTEXT = _std_ssl.SSLContext
# The descriptors of the C base class and of the stdlib's Python class.
_C_ATTR: dict[str, Any] = dict(vars(_ssl._SSLContext))
_STD_ATTR: dict[str, Any] = dict(vars(_std_ssl.SSLContext))
_SSLWantRead = _std_ssl.SSLWantReadError
_SSLWantWrite = _std_ssl.SSLWantWriteError
_SSLError = _std_ssl.SSLError
_SSL_ERROR_EOF = _std_ssl.SSL_ERROR_EOF
_GLOBAL_DEFAULT_TIMEOUT: Any = _gsocket._GLOBAL_DEFAULT_TIMEOUT

# In this module ``socket`` and ``create_connection`` are greenline's.
socket = _gsocket.socket
create_connection = _gsocket.create_connection


# The stdlib's messages, so code that matches on them keeps working.
def _handshake_timed_out() -> BaseException:
    return TimeoutError("The handshake operation timed out")


def _read_timed_out() -> BaseException:
    return TimeoutError("The read operation timed out")


def _write_timed_out() -> BaseException:
    return TimeoutError("The write operation timed out")


def _shutdown_timed_out() -> BaseException:
    return TimeoutError("The shutdown operation timed out")


class GreenSSLSocket(_gsocket.GreenSocket):
    """A TLS connection over a cooperative socket.  Made by
    :meth:`SSLContext.wrap_socket`; same methods as :class:`ssl.SSLSocket`."""

    _context: GreenSSLContext
    _sslobj: Any
    _session: Any
    _connected: bool
    server_side: bool
    server_hostname: str | None
    do_handshake_on_connect: bool
    suppress_ragged_eofs: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            f"{self.__class__.__name__} does not have a public constructor. "
            "Instances are returned by SSLContext.wrap_socket()."
        )

    @classmethod
    def _create(cls, sock: Any, server_side: bool = False, do_handshake_on_connect: bool = True,
                suppress_ragged_eofs: bool = True, server_hostname: str | None = None,
                context: GreenSSLContext | None = None, session: Any = None) -> GreenSSLSocket:
        # Called by SSLContext.wrap_socket with these keywords.
        if context is None:  # pragma: no cover - wrap_socket always passes it
            raise ValueError("a context is required")
        if sock.getsockopt(_gsocket.SOL_SOCKET, _gsocket.SO_TYPE) != _gsocket.SOCK_STREAM:
            raise NotImplementedError("only stream sockets are supported")
        if server_side:
            if server_hostname:
                raise ValueError("server_hostname can only be specified in client mode")
            if session is not None:
                raise ValueError("session can only be specified in client mode")
        if context.check_hostname and not server_hostname:
            raise ValueError("check_hostname requires server_hostname")
        family, type_, proto = sock.family, sock.type, sock.proto
        timeout = sock.gettimeout()
        # An idle timeout (set_idle_timeout) carries over, as the timeout does.
        idle = getattr(sock, "idle_timeout", None) is not None
        # The new object takes the descriptor over; ``sock`` is left detached,
        # as with the stdlib.  (A plain stdlib socket works too: it is made
        # non-blocking here.)
        fd = sock.detach()
        self = cls.__new__(cls)
        _gsocket.socket.__init__(self, family, type_, proto, fd)
        self._gl_timeout = timeout
        self._gl_idle = idle
        self._context = context
        self._session = session
        self._sslobj = None
        self.server_side = server_side
        self.server_hostname = context._encode_hostname(server_hostname)  # type: ignore[attr-defined]
        self.do_handshake_on_connect = do_handshake_on_connect
        self.suppress_ragged_eofs = suppress_ragged_eofs
        try:
            self.getpeername()
        except OSError as e:
            if e.errno != _errno.ENOTCONN:
                self.close()
                raise
            self._connected = False
            # Not connected, yet bytes may sit in the receive buffer of a
            # connection the peer already closed: they must never reach the
            # caller as if TLS had protected them (CVE-2023-40217).  A
            # non-blocking peek at one byte tells.
            try:
                early = _socket.socket.recv(self, 1)
            except OSError as e2:
                if e2.errno not in (_errno.ENOTCONN, _errno.EINVAL, _errno.EAGAIN):
                    self.close()
                    raise
                early = b""
            if early:
                reason = "Closed before TLS handshake with data in recv buffer."
                err = _SSLError(e.errno, reason)
                err.reason = reason  # type: ignore[attr-defined]
                err.library = None  # type: ignore[assignment]
                self.close()
                raise err from None
        else:
            self._connected = True
        if self._connected:
            try:
                self._sslobj = context._wrap_socket(  # type: ignore[attr-defined]
                    self, server_side, self.server_hostname, owner=self, session=session)
                if do_handshake_on_connect:
                    if timeout == 0.0:
                        raise ValueError("do_handshake_on_connect should not be specified "
                                         "for non-blocking sockets")
                    self.do_handshake()
            except BaseException:
                # Failed handshake, timeout, kill: the caller never gets the
                # object, so it must not keep the descriptor.
                self.close()
                raise
        return self

    # -- the retry loop ----------------------------------------------------

    def _ssl_call(self, op: Callable[..., Any], timeout_exc: Callable[[], BaseException],
                  *args: Any) -> Any:
        """Run an SSL operation, waiting in the hub whenever OpenSSL needs the
        descriptor readable or writable, within the socket's timeout for the
        whole call (for each wait, under an idle timeout: OpenSSL's progress
        inside one call is not visible, but each wake is the peer's)."""
        deadline: float | None = None
        first = True
        while True:
            try:
                result = op(*args)
            except _SSLWantRead:
                if self._gl_timeout == 0.0:
                    raise
                write = False
            except _SSLWantWrite:
                if self._gl_timeout == 0.0:
                    raise
                write = True
            else:
                hub = self._gl_st.hub or _get_hub()
                hub.io_budget -= 1
                if hub.io_budget <= 0:
                    hub.budget_spent()
                return result
            if first or self._gl_idle:
                deadline = self._deadline()
                first = False
            # Want-read/write come from an EAGAIN in OpenSSL's own recv/send,
            # so the descriptor's next edge is sure to come.
            self._wait(write, deadline, timeout_exc)

    def _check_connected(self) -> None:
        if not self._connected:
            # Raises ENOTCONN, the error the stdlib reports here.
            self.getpeername()

    # -- handshake and teardown ----------------------------------------------

    def do_handshake(self, block: bool = False) -> None:
        """Perform the TLS handshake.  The socket's timeout bounds the whole
        handshake (a peer that trickles bytes cannot stretch it)."""
        self._check_connected()
        if self._sslobj is None:
            raise ValueError("No SSL wrapper around " + repr(self))
        timeout = self._gl_timeout
        try:
            if timeout == 0.0 and block:
                self._gl_timeout = None
            self._ssl_call(self._sslobj.do_handshake, _handshake_timed_out)
        finally:
            self._gl_timeout = timeout

    def unwrap(self) -> GreenSSLSocket:
        """Send and await the TLS close_notify; the socket goes on in clear."""
        if self._sslobj is None:
            raise ValueError("No SSL wrapper around " + repr(self))
        s = self._ssl_call(self._sslobj.shutdown, _shutdown_timed_out)
        self._sslobj = None
        return s  # type: ignore[no-any-return]

    def shutdown(self, how: int) -> None:
        self._sslobj = None
        super().shutdown(how)

    def _real_close(self, _ss: Any = None) -> None:
        self._sslobj = None
        super()._real_close()

    # -- connecting and accepting ------------------------------------------

    def _real_connect(self, address: Any, connect_ex: bool) -> int:
        if self.server_side:
            raise ValueError("can't connect in server-side mode")
        if self._connected or self._sslobj is not None:
            raise ValueError("attempt to connect already-connected SSLSocket!")
        self._sslobj = self.context._wrap_socket(  # type: ignore[attr-defined]
            self, False, self.server_hostname, owner=self, session=self._session)
        try:
            if connect_ex:
                rc = super().connect_ex(address)
            else:
                rc = 0
                super().connect(address)
            if not rc:
                self._connected = True
                if self.do_handshake_on_connect:
                    self.do_handshake()
            return rc
        except BaseException:
            self._sslobj = None
            raise

    def connect(self, address: Any) -> None:
        self._real_connect(address, False)

    def connect_ex(self, address: Any) -> int:
        return self._real_connect(address, True)

    def accept(self) -> tuple[GreenSSLSocket, Any]:  # type: ignore[override]
        """Accept a connection and wrap it server-side (with the handshake,
        if ``do_handshake_on_connect``)."""
        sock, addr = super().accept()
        wrapped = self.context.wrap_socket(
            sock, do_handshake_on_connect=self.do_handshake_on_connect,
            suppress_ragged_eofs=self.suppress_ragged_eofs, server_side=True)
        return wrapped, addr  # type: ignore[return-value]

    # -- data ----------------------------------------------------------------

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        """Read up to ``len`` decrypted bytes (into ``buffer`` if given)."""
        sslobj = self._sslobj
        if sslobj is None:
            raise ValueError("Read on closed or unwrapped SSL socket.")
        try:
            if buffer is None:
                return self._ssl_call(sslobj.read, _read_timed_out, len)
            return self._ssl_call(sslobj.read, _read_timed_out, len, buffer)
        except _SSLError as x:
            # The peer closed TCP without a close_notify: EOF, if allowed.
            if x.args[0] == _SSL_ERROR_EOF and self.suppress_ragged_eofs:
                return b"" if buffer is None else 0
            raise

    def write(self, data: Any) -> int:
        """Encrypt and send ``data``; returns the number of bytes written."""
        sslobj = self._sslobj
        if sslobj is None:
            raise ValueError("Write on closed or unwrapped SSL socket.")
        return self._ssl_call(sslobj.write, _write_timed_out, data)  # type: ignore[no-any-return]

    def _no_flags(self, flags: int, what: str) -> None:
        if flags != 0:
            raise ValueError(f"non-zero flags not allowed in calls to {what}() on {self.__class__}")

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        if self._sslobj is None:
            return super().recv(buflen, flags)
        self._no_flags(flags, "recv")
        return self.read(buflen)  # type: ignore[no-any-return]

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        if nbytes is None:
            # Bytes, not items: an array('i') of 4 holds 16.
            nbytes = 0
            if buffer is not None:
                with memoryview(buffer) as view:
                    nbytes = view.nbytes
            nbytes = nbytes or 1024
        if self._sslobj is None:
            return super().recv_into(buffer, nbytes, flags)
        self._no_flags(flags, "recv_into")
        return self.read(nbytes, buffer)  # type: ignore[no-any-return]

    def send(self, data: Any, flags: int = 0) -> int:
        if self._sslobj is None:
            return super().send(data, flags)
        self._no_flags(flags, "send")
        return self.write(data)

    def sendall(self, data: Any, flags: int = 0) -> None:
        if self._sslobj is None:
            super().sendall(data, flags)
            return
        self._no_flags(flags, "sendall")
        # OpenSSL writes a whole buffer or nothing (partial writes are off),
        # so this loop runs once unless the buffer was not bytes-shaped.
        with memoryview(data) as view, view.cast("B") as byte_view:
            total = len(byte_view)
            count = 0
            while count < total:
                count += self.write(byte_view[count:])

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        if self._sslobj is None:
            return super().sendfile(file, offset, count)
        # sendfile(2) would bypass the encryption.
        return self._sendfile_use_send(file, offset, count)  # type: ignore[attr-defined,no-any-return]

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        if self._sslobj is not None:
            raise ValueError(f"recvfrom not allowed on instances of {self.__class__}")
        return super().recvfrom(bufsize, flags)

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, Any]:
        if self._sslobj is not None:
            raise ValueError(f"recvfrom_into not allowed on instances of {self.__class__}")
        return super().recvfrom_into(buffer, nbytes, flags)

    def sendto(self, data: Any, *args: Any) -> int:
        if self._sslobj is not None:
            raise ValueError(f"sendto not allowed on instances of {self.__class__}")
        return super().sendto(data, *args)

    def recvmsg(self, *args: Any) -> Any:
        raise NotImplementedError(f"recvmsg not allowed on instances of {self.__class__}")

    def recvmsg_into(self, *args: Any) -> Any:
        raise NotImplementedError(f"recvmsg_into not allowed on instances of {self.__class__}")

    def sendmsg(self, *args: Any) -> int:
        raise NotImplementedError(f"sendmsg not allowed on instances of {self.__class__}")

    def pending(self) -> int:
        """Decrypted bytes buffered and readable without touching the socket."""
        return self._sslobj.pending() if self._sslobj is not None else 0  # type: ignore[no-any-return]

    def dup(self) -> Any:
        raise NotImplementedError(f"Can't dup() {self.__class__.__name__} instances")

    # -- connection facts ----------------------------------------------------

    @property
    def context(self) -> GreenSSLContext:
        return self._context

    @context.setter
    def context(self, ctx: GreenSSLContext) -> None:
        self._context = ctx
        if self._sslobj is not None:
            self._sslobj.context = ctx

    @property
    def session(self) -> Any:
        return self._sslobj.session if self._sslobj is not None else None

    @session.setter
    def session(self, session: Any) -> None:
        self._session = session
        if self._sslobj is not None:
            self._sslobj.session = session

    @property
    def session_reused(self) -> bool | None:
        return self._sslobj.session_reused if self._sslobj is not None else None

    def getpeercert(self, binary_form: bool = False) -> Any:
        self._check_connected()
        if self._sslobj is None:
            raise ValueError("No SSL wrapper around " + repr(self))
        return self._sslobj.getpeercert(binary_form)

    def cipher(self) -> tuple[str, str, int] | None:
        return self._sslobj.cipher() if self._sslobj is not None else None

    def shared_ciphers(self) -> list[tuple[str, str, int]] | None:
        return self._sslobj.shared_ciphers() if self._sslobj is not None else None

    def compression(self) -> str | None:
        return self._sslobj.compression() if self._sslobj is not None else None

    def version(self) -> str | None:
        return self._sslobj.version() if self._sslobj is not None else None

    def selected_alpn_protocol(self) -> str | None:
        return self._sslobj.selected_alpn_protocol() if self._sslobj is not None else None

    def selected_npn_protocol(self) -> str | None:
        # NPN is gone from OpenSSL 3 and deprecated in the stdlib.
        return None

    def get_channel_binding(self, cb_type: str = "tls-unique") -> bytes | None:
        if self._sslobj is not None:
            return self._sslobj.get_channel_binding(cb_type)  # type: ignore[no-any-return]
        if cb_type not in _std_ssl.CHANNEL_BINDING_TYPES:
            raise ValueError(f"{cb_type} channel binding type not implemented")
        return None

    def verify_client_post_handshake(self) -> None:
        if self._sslobj is None:
            raise ValueError("No SSL wrapper around " + repr(self))
        self._sslobj.verify_client_post_handshake()


class GreenSSLContext(_std_ssl.SSLContext):
    """:class:`ssl.SSLContext` whose ``wrap_socket`` makes greenline
    :class:`SSLSocket` objects (``wrap_bio`` is unchanged: memory BIOs never
    block)."""

    sslsocket_class = GreenSSLSocket  # type: ignore[assignment]

    # The stdlib's setters of these reach the C base class through the
    # module-global name ``ssl.SSLContext``; once monkey-patching rebinds
    # that name to this class, they would find themselves again and recurse
    # forever.  These go to the C base class directly.

    def _set_options(self, value: Any) -> None:
        _C_ATTR["options"].__set__(self, value)

    def _set_verify_flags(self, value: Any) -> None:
        _C_ATTR["verify_flags"].__set__(self, value)

    def _set_verify_mode(self, value: Any) -> None:
        _C_ATTR["verify_mode"].__set__(self, value)

    def _set_minimum_version(self, value: Any) -> None:
        if value == _std_ssl.TLSVersion.SSLv3:
            self.options &= ~_std_ssl.Options.OP_NO_SSLv3
        _C_ATTR["minimum_version"].__set__(self, value)

    def _set_maximum_version(self, value: Any) -> None:
        _C_ATTR["maximum_version"].__set__(self, value)

    def _set_msg_callback(self, callback: Any) -> None:
        if _std_ssl.SSLContext is _STD_CONTEXT:
            _STD_ATTR["_msg_callback"].fset(self, callback)
            return
        if callback is not None and not callable(callback):
            raise TypeError(f"{callback} is not callable.")
        _C_ATTR["_msg_callback"].__set__(
            self, None if callback is None else _MsgCallback(callback))

    options = property(_STD_ATTR["options"].fget, _set_options)
    verify_flags = property(_STD_ATTR["verify_flags"].fget, _set_verify_flags)
    verify_mode = property(_STD_ATTR["verify_mode"].fget, _set_verify_mode)
    minimum_version = property(_STD_ATTR["minimum_version"].fget, _set_minimum_version)
    maximum_version = property(_STD_ATTR["maximum_version"].fget, _set_maximum_version)
    _msg_callback = property(_STD_ATTR["_msg_callback"].fget, _set_msg_callback)


class _MsgCallback:
    """The TLS message hook once ``ssl.SSLContext`` is patched (a debugging
    aid): passes OpenSSL's raw numbers, not the stdlib's enums."""

    __slots__ = ("user_function",)

    def __init__(self, user_function: Callable[..., Any]) -> None:
        self.user_function = user_function

    def __call__(self, conn: Any, *args: Any) -> Any:
        return self.user_function(conn, *args)


# Second names for the same classes, only because type checkers keep the
# stdlib's classes under the star-imported ones.
GreenSSLSocket.__name__ = GreenSSLSocket.__qualname__ = "SSLSocket"
GreenSSLContext.__name__ = GreenSSLContext.__qualname__ = "SSLContext"
SSLSocket = GreenSSLSocket  # type: ignore[misc,assignment]
SSLContext = GreenSSLContext  # type: ignore[misc,assignment]


def create_default_context(purpose: Any = _std_ssl.Purpose.SERVER_AUTH, *, cafile: Any = None,  # type: ignore[no-redef]
                           capath: Any = None, cadata: Any = None) -> GreenSSLContext:
    """Like :func:`ssl.create_default_context`, returning a greenline
    :class:`SSLContext`: for ``SERVER_AUTH`` (a client) certificates and host
    names are checked against the system's trusted roots."""
    if not isinstance(purpose, _std_ssl._ASN1Object):  # type: ignore[attr-defined]
        raise TypeError(purpose)
    if purpose == _std_ssl.Purpose.SERVER_AUTH:
        ctx = GreenSSLContext(_std_ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = _std_ssl.CERT_REQUIRED
        ctx.check_hostname = True
    elif purpose == _std_ssl.Purpose.CLIENT_AUTH:
        ctx = GreenSSLContext(_std_ssl.PROTOCOL_TLS_SERVER)
    else:
        raise ValueError(purpose)
    if cafile or capath or cadata:
        ctx.load_verify_locations(cafile, capath, cadata)
    elif ctx.verify_mode != _std_ssl.CERT_NONE:
        ctx.load_default_certs(purpose)
    keylog = _os.environ.get("SSLKEYLOGFILE")
    if keylog and not _sys.flags.ignore_environment and hasattr(ctx, "keylog_filename"):
        ctx.keylog_filename = keylog
    return ctx


def wrap_socket(sock: Any, keyfile: Any = None, certfile: Any = None, server_side: bool = False,  # type: ignore[no-redef]
                cert_reqs: Any = _std_ssl.CERT_NONE, ssl_version: Any = None, ca_certs: Any = None,
                do_handshake_on_connect: bool = True, suppress_ragged_eofs: bool = True,
                ciphers: str | None = None) -> GreenSSLSocket:
    """The stdlib's old module-level ``wrap_socket`` (gone from Python 3.12),
    cooperative.  No host name checking: prefer a context's ``wrap_socket``.
    ``ssl_version`` defaults to the client or server TLS protocol."""
    if server_side and not certfile:
        raise ValueError("certfile must be specified for server-side operations")
    if keyfile and not certfile:
        raise ValueError("certfile must be specified")
    if ssl_version is None:
        ssl_version = _std_ssl.PROTOCOL_TLS_SERVER if server_side else _std_ssl.PROTOCOL_TLS_CLIENT
    ctx = GreenSSLContext(ssl_version)
    ctx.check_hostname = False
    ctx.verify_mode = cert_reqs
    if ca_certs:
        ctx.load_verify_locations(ca_certs)
    if certfile:
        ctx.load_cert_chain(certfile, keyfile)
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx.wrap_socket(sock, server_side=server_side,  # type: ignore[return-value]
                           do_handshake_on_connect=do_handshake_on_connect,
                           suppress_ragged_eofs=suppress_ragged_eofs)


def get_server_certificate(addr: tuple[str, int], ssl_version: Any = _std_ssl.PROTOCOL_TLS_CLIENT,  # type: ignore[no-redef]
                           ca_certs: Any = None, timeout: Any = _GLOBAL_DEFAULT_TIMEOUT) -> str:
    """Fetch the PEM certificate of the TLS server at ``addr`` (verified
    against ``ca_certs`` if given), blocking only the calling green thread."""
    ctx = GreenSSLContext(ssl_version)
    ctx.check_hostname = False
    if ca_certs is not None:
        ctx.verify_mode = _std_ssl.CERT_REQUIRED
        ctx.load_verify_locations(ca_certs)
    else:
        ctx.verify_mode = _std_ssl.CERT_NONE
    with _gsocket.create_connection(addr, timeout=timeout) as sock:
        with ctx.wrap_socket(sock, server_hostname=addr[0]) as ssock:
            der = ssock.getpeercert(True)
    assert der is not None  # a handshake was made
    return _std_ssl.DER_cert_to_PEM_cert(der)
