"""The PROXY protocol, versions 1 and 2, receiving side: every rule in one place.

A load balancer in front of the server (HAProxy's ``send-proxy`` and
``send-proxy-v2``, nginx's ``proxy_protocol on``, a cloud's L4 balancer)
opens each connection with one header saying whose connection it relays:
the client's address and port, and its own.  The server reads it before
anything else (before TLS, before the application), and the connection's
address becomes the client's.

:func:`parse` decides what bytes are (a complete header, the start of one,
or not a header), with no I/O; :func:`read_header` reads one header off a
socket, consuming exactly its bytes and nothing of what follows.  The rules,
from HAProxy's ``doc/proxy-protocol.txt`` (each has a test in
``tests/servers/test_proxy_protocol.py``):

Version 1 (text): ``PROXY``, one space, ``TCP4``, ``TCP6`` or ``UNKNOWN``;
for TCP4/TCP6 exactly one space before each of source address, destination
address, source port and destination port, then CRLF.  IPv4 addresses are
four decimal numbers 0-255 without leading zeros; IPv6 addresses are what
``inet_pton`` takes (``::`` once, ``::ffff:1.2.3.4`` included; no zone);
the family must match the keyword.  Ports are decimal 0-65535 without
leading zeros.  ``UNKNOWN`` may be followed by anything up to the CRLF, and
the connection keeps its own addresses.  The CRLF must come within the
first 107 bytes; a lone CR or LF is no line end.

Version 2 (binary): the 12-byte signature, a byte whose high nibble is the
version (2, nothing else) and low nibble the command (0 LOCAL, 1 PROXY,
nothing else), a byte of family (0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) and
transport (0 UNSPEC, 1 STREAM, 2 DGRAM), any other value refused, and a
16-bit big-endian length of what follows.  LOCAL (a balancer's own
connection: HAProxy's health checks) keeps the connection's own addresses
whatever the family, skipping ``length`` bytes.  PROXY with TCP over IPv4
(12 address bytes) or IPv6 (36) gives the client's address and port; the
block must be that long at least.  PROXY with any other valid family and
transport (UNSPEC, UDP, UNIX) keeps the connection's own addresses, as the
specification allows.  Bytes after the addresses are TLVs (type, 16-bit
length, value): kept in :attr:`ProxyHeader.tlvs`; a TLV that runs past the
header is refused, and a CRC32C TLV (``0x03``) must match the header's
checksum.

Detection: the first bytes must be a prefix of the version 2 signature or of
``PROXY ``; anything else is refused as soon as one byte differs, so a
client speaking HTTP straight to the port is answered at once, not after the
timeout.  A header split over several TCP segments is waited for (until the
timeout).

May import: the standard library, and :mod:`greenline.socket` for the
constants of the socket it reads.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from time import monotonic
from typing import Any

from greenline import socket as gsocket

__all__ = ["ProxyHeader", "ProxyProtocolError", "parse", "read_header", "V2_SIGNATURE", "V1_MAX_LINE",
           "DEFAULT_TIMEOUT", "encode_v1", "encode_v2", "crc32c"]

#: The version 2 signature (12 bytes; it holds a NUL and is no C string).
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_PREFIX = b"PROXY "
#: The longest version 1 line, CRLF included.
V1_MAX_LINE = 107
#: A connection that has not sent a whole header this long after it was
#: accepted is closed (the specification asks for at least 3 s, a TCP
#: retransmission).
DEFAULT_TIMEOUT = 5.0

# What to peek at first: a whole version 1 line, or a version 2 header with
# room for some TLVs, in one call.
_PEEK = 536

LOCAL, PROXY = "LOCAL", "PROXY"

# Version 2 TLV types this module looks at.
PP2_TYPE_CRC32C = 0x03


class ProxyProtocolError(ValueError):
    """The bytes are not a valid PROXY protocol header; the connection must
    be closed."""


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed header.

    ``source`` and ``destination`` are ``(host, port)`` when the header
    carries TCP addresses (version 1 TCP4/TCP6, version 2 PROXY over
    TCP/IPv4 or IPv6), else None: the connection keeps its own addresses
    (version 1 UNKNOWN, version 2 LOCAL, version 2 PROXY of another family
    or transport).  ``length`` is the header's size in bytes."""

    version: int
    command: str
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    length: int
    tlvs: tuple[tuple[int, bytes], ...] = ()

    def address(self, own: Any) -> Any:
        """The address a handler should see: the client's, in the shape
        ``accept()`` gives for its family (``(host, port)`` for IPv4,
        ``(host, port, 0, 0)`` for IPv6), or ``own`` (the connection's)
        when the header carries none."""
        if self.source is None:
            return own
        host, port = self.source
        return (host, port, 0, 0) if ":" in host else (host, port)


def _fail(reason: str) -> ProxyProtocolError:
    return ProxyProtocolError(reason)


# -- version 1 ---------------------------------------------------------------

_DIGITS = frozenset(b"0123456789")
_HEX6 = frozenset(b"0123456789abcdefABCDEF:.")


def _v1_port(field: bytes) -> int:
    if not field or not _DIGITS.issuperset(field) or (len(field) > 1 and field[:1] == b"0") \
            or len(field) > 5:
        raise _fail(f"bad port {field[:8]!r}")
    port = int(field)
    if port > 65535:
        raise _fail(f"port {port} out of range")
    return port


def _v6_text(packed: bytes) -> str:
    # What inet_ntop writes, on every Python: str(IPv6Address) writes a
    # mapped IPv4 address as ::ffff:10.0.0.1 from 3.13 on (::ffff:a00:1 before).
    return gsocket.inet_ntop(gsocket.AF_INET6, packed)


def _v1_address(field: bytes, v6: bool) -> str:
    if v6:
        # inet_pton's forms: hex groups, one '::', a trailing dotted quad.
        if not field or not _HEX6.issuperset(field):
            raise _fail(f"bad IPv6 address {field[:40]!r}")
        try:
            return _v6_text(ipaddress.IPv6Address(field.decode("ascii")).packed)
        except ValueError:
            raise _fail(f"bad IPv6 address {field[:40]!r}") from None
    parts = field.split(b".")
    if len(parts) != 4 or not all(p and _DIGITS.issuperset(p) and len(p) <= 3
                                  and (len(p) == 1 or p[:1] != b"0") and int(p) <= 255 for p in parts):
        raise _fail(f"bad IPv4 address {field[:16]!r}")
    return field.decode("ascii")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX_LINE)
    if end < 0:
        if len(data) >= V1_MAX_LINE:
            raise _fail(f"no CRLF in the first {V1_MAX_LINE} bytes of a version 1 header")
        # A lone LF, or a CR followed by anything but LF, can never become
        # the line's end: refuse now rather than at the timeout.
        lf = data.find(b"\n")
        cr = data.find(b"\r")
        if lf >= 0 or (0 <= cr < len(data) - 1):
            raise _fail("a lone CR or LF in a version 1 header")
        return None
    line = data[:end]
    if b"\n" in line or b"\r" in line:
        raise _fail("a lone CR or LF in a version 1 header")
    fields = line.split(b" ")
    proto = fields[1] if len(fields) > 1 else b""
    if proto == b"UNKNOWN":
        # Anything may follow up to the CRLF; the connection is its own.
        return ProxyHeader(1, PROXY, None, None, end + 2)
    if any(b > 0x7E or b < 0x20 for b in line):
        raise _fail("a version 1 header is printable US-ASCII")
    if proto not in (b"TCP4", b"TCP6"):
        raise _fail(f"unknown protocol {proto[:16]!r} (TCP4, TCP6 or UNKNOWN)")
    if len(fields) != 6:
        raise _fail(f"{proto.decode()} takes 4 fields separated by single spaces, got {len(fields) - 2}")
    v6 = proto == b"TCP6"
    src = _v1_address(fields[2], v6)
    dst = _v1_address(fields[3], v6)
    sport = _v1_port(fields[4])
    dport = _v1_port(fields[5])
    return ProxyHeader(1, PROXY, (src, sport), (dst, dport), end + 2)


# -- version 2 ---------------------------------------------------------------

_ADDR_LEN = {0x11: 12, 0x12: 12, 0x21: 36, 0x22: 36, 0x31: 216, 0x32: 216}


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < 16:
        return None
    ver_cmd = data[12]
    if ver_cmd >> 4 != 2:
        raise _fail(f"version {ver_cmd >> 4} in a version 2 header (only 2 is valid)")
    command = ver_cmd & 0x0F
    if command > 1:
        raise _fail(f"unassigned command {command} (0 LOCAL, 1 PROXY)")
    fam = data[13]
    if fam >> 4 > 3 or fam & 0x0F > 2:
        raise _fail(f"invalid family and transport byte 0x{fam:02x}")
    length = (data[14] << 8) | data[15]
    total = 16 + length
    if len(data) < total:
        return None
    block = data[16:total]
    if command == 0:
        # LOCAL: the balancer's own connection; family and block ignored.
        return ProxyHeader(2, LOCAL, None, None, total)
    if fam not in (0x11, 0x21):
        # Valid, but no TCP addresses (UNSPEC, UDP, UNIX): the
        # specification lets a receiver fall back to the real endpoints.
        need = _ADDR_LEN.get(fam, 0)
        if length < need:
            raise _fail(f"address block of {length} bytes, family 0x{fam:02x} needs {need}")
        return ProxyHeader(2, PROXY, None, None, total, _tlvs(data, 16 + need, total))
    need = _ADDR_LEN[fam]
    if length < need:
        raise _fail(f"address block of {length} bytes, family 0x{fam:02x} needs {need}")
    if fam == 0x11:
        src = str(ipaddress.IPv4Address(block[0:4]))
        dst = str(ipaddress.IPv4Address(block[4:8]))
        sport, dport = struct.unpack_from("!HH", block, 8)
    else:
        src = _v6_text(block[0:16])
        dst = _v6_text(block[16:32])
        sport, dport = struct.unpack_from("!HH", block, 32)
    return ProxyHeader(2, PROXY, (src, sport), (dst, dport), total, _tlvs(data, 16 + need, total))


def _tlvs(data: bytes, start: int, end: int) -> tuple[tuple[int, bytes], ...]:
    out = []
    i = start
    while i < end:
        if end - i < 3:
            raise _fail("a truncated TLV at the end of the header")
        kind = data[i]
        n = (data[i + 1] << 8) | data[i + 2]
        if i + 3 + n > end:
            raise _fail(f"TLV 0x{kind:02x} of {n} bytes runs past the header")
        out.append((kind, data[i + 3:i + 3 + n]))
        if kind == PP2_TYPE_CRC32C:
            if n != 4:
                raise _fail("a CRC32C TLV holds 4 bytes")
            zeroed = data[:i + 3] + b"\0\0\0\0" + data[i + 7:end]
            if crc32c(zeroed) != int.from_bytes(data[i + 3:i + 7], "big"):
                raise _fail("CRC32C mismatch")
        i += 3 + n
    return tuple(out)


# -- both --------------------------------------------------------------------


def _begins(data: bytes, signature: bytes) -> bool:
    """Does ``data`` start with ``signature``, or is it a start of it?"""
    n = min(len(data), len(signature))
    return data[:n] == signature[:n]


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``; None if ``data`` is the start of
    a header and more bytes are needed (then all of ``data`` belongs to the
    header).  Raises :class:`ProxyProtocolError` if it is not a header."""
    data = bytes(data)
    if _begins(data, V2_SIGNATURE):
        return _parse_v2(data) if len(data) > len(V2_SIGNATURE) else None
    if _begins(data, _V1_PREFIX):
        return _parse_v1(data) if len(data) > len(_V1_PREFIX) else None
    raise _fail(f"not a PROXY protocol header: {data[:16]!r}")


def read_header(sock: Any, timeout: float | None = DEFAULT_TIMEOUT) -> ProxyHeader | None:
    """Read one header from a connected ``sock`` (a green or standard
    socket), consuming exactly its bytes: what follows it stays unread for
    the application (or the TLS handshake).  None if the peer closed before
    sending anything.  Raises :class:`ProxyProtocolError` for anything that
    is not a valid header (or a connection closed inside one), and
    ``TimeoutError`` if no whole header came within ``timeout`` seconds.
    The socket's timeout (or idle timeout) is as it was on return."""
    deadline = None if timeout is None else monotonic() + timeout
    idle = getattr(sock, "idle_timeout", None)
    saved = sock.gettimeout()
    buf = b""
    try:
        while True:
            if deadline is not None:
                left = deadline - monotonic()
                if left <= 0:
                    raise TimeoutError("no whole PROXY protocol header in time")
                sock.settimeout(left)
            want = _PEEK
            if len(buf) >= 16 and buf[:12] == V2_SIGNATURE:
                want = 16 + ((buf[14] << 8) | buf[15]) - len(buf)
            chunk = sock.recv(want, gsocket.MSG_PEEK)
            if not chunk:
                if not buf:
                    return None
                raise _fail(f"connection closed inside a PROXY protocol header ({len(buf)} bytes)")
            data = buf + chunk
            header = parse(data)
            # Complete: take exactly the header's bytes.  Not yet: every byte
            # seen belongs to it; take them all and wait for more.
            take = len(chunk) if header is None else header.length - len(buf)
            while take > 0:
                got = sock.recv(take)
                if not got:
                    raise _fail("connection closed inside a PROXY protocol header")
                take -= len(got)
            if header is not None:
                return header
            buf = data
    finally:
        if idle is not None:
            sock.set_idle_timeout(idle)
        else:
            sock.settimeout(saved)


# -- the sending side, for tests and tools -------------------------------------


def encode_v1(source: tuple[str, int] | None, destination: tuple[str, int] | None = None) -> bytes:
    """A version 1 line; ``source`` None gives ``PROXY UNKNOWN``."""
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    proto = "TCP6" if ":" in source[0] else "TCP4"
    return f"PROXY {proto} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n".encode("ascii")


def encode_v2(source: tuple[str, int] | None, destination: tuple[str, int] | None = None,
              tlvs: tuple[tuple[int, bytes], ...] = (), *, with_crc: bool = False) -> bytes:
    """A version 2 header: PROXY over TCP for ``source``/``destination``,
    LOCAL when ``source`` is None; ``with_crc`` appends a CRC32C TLV."""
    if source is None or destination is None:
        ver_cmd, fam, block = 0x20, 0x00, b""
    elif ":" in source[0]:
        ver_cmd, fam = 0x21, 0x21
        block = (ipaddress.IPv6Address(source[0]).packed + ipaddress.IPv6Address(destination[0]).packed
                 + struct.pack("!HH", source[1], destination[1]))
    else:
        ver_cmd, fam = 0x21, 0x11
        block = (ipaddress.IPv4Address(source[0]).packed + ipaddress.IPv4Address(destination[0]).packed
                 + struct.pack("!HH", source[1], destination[1]))
    extra = b"".join(bytes([kind]) + len(value).to_bytes(2, "big") + value for kind, value in tlvs)
    if with_crc:
        extra += bytes([PP2_TYPE_CRC32C, 0, 4]) + b"\0\0\0\0"
    body = block + extra
    header = V2_SIGNATURE + bytes([ver_cmd, fam]) + len(body).to_bytes(2, "big") + body
    if with_crc:
        header = header[:-4] + crc32c(header).to_bytes(4, "big")
    return header


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE: list[int] = []


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as the version 2 CRC32C TLV carries it."""
    if not _CRC_TABLE:
        _CRC_TABLE.extend(_crc_table())
    table = _CRC_TABLE
    c = 0xFFFFFFFF
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF
