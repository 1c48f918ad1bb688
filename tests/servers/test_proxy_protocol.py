"""The PROXY protocol (issue 17): the parser rule by rule against HAProxy's
doc/proxy-protocol.txt, read_header on real sockets, and StreamServer and
WSGIServer with ``proxy_protocol=True``.  The fleet behind a real HAProxy is
tests/deploy/test_fleet.py."""

from __future__ import annotations

import ssl as stdssl
import struct
import time

import pytest
from serve_helpers import recv_exactly

from greenline import socket
from greenline.servers import proxy
from greenline.servers.proxy import (
    V2_SIGNATURE,
    ProxyHeader,
    ProxyProtocolError,
    crc32c,
    encode_v1,
    encode_v2,
    parse,
    read_header,
)
from greenline.servers.stream import StreamServer
from greenline.wsgi import WSGIServer

SIG = V2_SIGNATURE


def v2(ver_cmd: int, fam: int, block: bytes, length: int | None = None) -> bytes:
    return SIG + bytes([ver_cmd, fam]) + struct.pack("!H", len(block) if length is None else length) + block


IP4_BLOCK = bytes([192, 168, 0, 1, 192, 168, 0, 11]) + struct.pack("!HH", 56324, 443)


# -- version 1 ------------------------------------------------------------------


def test_v1_tcp4_as_in_the_spec_example():
    h = parse(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n")
    assert h == ProxyHeader(1, "PROXY", ("192.168.0.1", 56324), ("192.168.0.11", 443), 47)
    assert h.address(("10.0.0.1", 1)) == ("192.168.0.1", 56324)


def test_v1_tcp6_gives_an_accept_shaped_address():
    h = parse(b"PROXY TCP6 2001:db8::1 2001:DB8::2 1 65535\r\n")
    assert h is not None and h.source == ("2001:db8::1", 1) and h.destination == ("2001:db8::2", 65535)
    assert h.address(("10.0.0.1", 1)) == ("2001:db8::1", 1, 0, 0)


def test_v1_tcp6_takes_what_inet_ntop_writes_for_a_mapped_ipv4():
    h = parse(b"PROXY TCP6 ::ffff:10.0.0.1 ::1 80 81\r\n")
    assert h is not None and h.source == ("::ffff:10.0.0.1", 80)


@pytest.mark.parametrize("line", [b"PROXY UNKNOWN\r\n",
                                  b"PROXY UNKNOWN ffff:f::f:ffff ffff::ffff 65535 65535\r\n",
                                  b"PROXY UNKNOWN \xff anything at all\r\n"])
def test_v1_unknown_keeps_the_connections_own_address(line):
    h = parse(line + b"rest")
    assert h is not None and h.source is None and h.length == len(line)
    assert h.address(("10.0.0.1", 5)) == ("10.0.0.1", 5)


def test_v1_longest_lines_are_accepted():
    six = ":".join(["ffff"] * 8).encode()
    line = b"PROXY TCP6 " + six + b" " + six + b" 65535 65535\r\n"
    assert len(line) == 104 and parse(line) is not None
    # UNKNOWN's worst case is 107 bytes with its CRLF: still a line.
    worst = b"PROXY UNKNOWN " + six + b" " + six + b" 65535 65535\r\n"
    assert len(worst) == 107 and parse(worst) is not None


def test_v1_no_crlf_in_the_first_107_bytes_is_refused():
    with pytest.raises(ProxyProtocolError, match="107"):
        parse(b"PROXY UNKNOWN " + b"x" * 93 + b"\r\n")
    with pytest.raises(ProxyProtocolError, match="107"):
        parse(b"PROXY TCP4 " + b"1" * 120)


@pytest.mark.parametrize("data", [b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
                                  b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\n",
                                  b"PROXY TCP4 1.2.3.4\n5.6.7.8 1 2\r\n",
                                  b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n"])
def test_v1_a_lone_cr_or_lf_is_no_line_end(data):
    with pytest.raises(ProxyProtocolError):
        parse(data)


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2",      # two spaces
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ",      # trailing space
    b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1",         # a field missing
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3",     # one too many
    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2",       # no such protocol
    b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2",       # keywords are upper case
    b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2",
    b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2",      # leading zero: octal?
    b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2",
    b"PROXY TCP4 1.2.3 5.6.7.8 1 2",
    b"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2",
    b"PROXY TCP4 ::1 5.6.7.8 1 2",           # the family must match
    b"PROXY TCP6 1.2.3.4 ::1 1 2",
    b"PROXY TCP6 ::1 fe80::1%eth0 1 2",      # no zones
    b"PROXY TCP6 1::2::3 ::1 1 2",           # '::' once
    b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2",  # 128 bits, no more
    b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2",      # ports: no leading zeros
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\x00",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xd9\xa2",  # Arabic-Indic digits are not ASCII
    b"PROXY",
])
def test_v1_anything_not_exactly_the_format_is_refused(line):
    with pytest.raises(ProxyProtocolError):
        parse(line + b"\r\n")


def test_v1_port_zero_and_address_extremes_are_valid():
    h = parse(b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n")
    assert h is not None and h.source == ("0.0.0.0", 0) and h.destination == ("255.255.255.255", 65535)


# -- version 2 ------------------------------------------------------------------


def test_v2_tcp4():
    h = parse(v2(0x21, 0x11, IP4_BLOCK) + b"GET")
    assert h == ProxyHeader(2, "PROXY", ("192.168.0.1", 56324), ("192.168.0.11", 443), 28)


def test_v2_tcp6():
    block = bytes(15) + b"\x01" + bytes(15) + b"\x02" + struct.pack("!HH", 1, 2)
    h = parse(v2(0x21, 0x21, block))
    assert h is not None and h.source == ("::1", 1) and h.destination == ("::2", 2) and h.length == 52
    assert h.address(None) == ("::1", 1, 0, 0)


@pytest.mark.parametrize("fam", [0x00, 0x11, 0x21, 0x31, 0x12])
def test_v2_local_keeps_the_socket_address_and_skips_the_block(fam):
    # "must not assume zero is presented for LOCAL connections"
    h = parse(v2(0x20, fam, IP4_BLOCK) + b"next")
    assert h is not None and h.command == "LOCAL" and h.source is None and h.length == 16 + 12
    assert h.address(("127.0.0.1", 9)) == ("127.0.0.1", 9)
    empty = parse(v2(0x20, 0x00, b""))
    assert empty is not None and empty.length == 16


@pytest.mark.parametrize("fam,block", [(0x00, b""), (0x12, IP4_BLOCK), (0x22, bytes(36)),
                                       (0x31, bytes(216)), (0x32, bytes(216))])
def test_v2_proxy_of_another_family_or_transport_falls_back_to_the_real_address(fam, block):
    h = parse(v2(0x21, fam, block))
    assert h is not None and h.command == "PROXY" and h.source is None
    assert h.address(("127.0.0.1", 9)) == ("127.0.0.1", 9)


@pytest.mark.parametrize("ver_cmd", [0x11, 0x31, 0x01, 0xF1])
def test_v2_only_version_2_is_accepted(ver_cmd):
    with pytest.raises(ProxyProtocolError, match="version"):
        parse(v2(ver_cmd, 0x11, IP4_BLOCK))


@pytest.mark.parametrize("ver_cmd", [0x22, 0x2F])
def test_v2_unassigned_commands_are_refused(ver_cmd):
    with pytest.raises(ProxyProtocolError, match="command"):
        parse(v2(ver_cmd, 0x11, IP4_BLOCK))


@pytest.mark.parametrize("fam", [0x41, 0x13, 0xF0, 0x03])
def test_v2_unspecified_family_or_transport_values_are_refused(fam):
    with pytest.raises(ProxyProtocolError, match="family"):
        parse(v2(0x21, fam, IP4_BLOCK))


@pytest.mark.parametrize("fam,n", [(0x11, 11), (0x21, 35), (0x31, 100)])
def test_v2_an_address_block_shorter_than_its_family_is_refused(fam, n):
    with pytest.raises(ProxyProtocolError, match="needs"):
        parse(v2(0x21, fam, bytes(n)))


def test_v2_tlvs_are_kept_and_a_tlv_past_the_end_refused():
    tlvs = bytes([0x01, 0, 2]) + b"h2" + bytes([0x04, 0, 0])
    h = parse(v2(0x21, 0x11, IP4_BLOCK + tlvs))
    assert h is not None and h.tlvs == ((0x01, b"h2"), (0x04, b"")) and h.source is not None
    with pytest.raises(ProxyProtocolError, match="past"):
        parse(v2(0x21, 0x11, IP4_BLOCK + bytes([0x01, 0, 9]) + b"h2"))
    with pytest.raises(ProxyProtocolError, match="truncated"):
        parse(v2(0x21, 0x11, IP4_BLOCK + bytes([0x01, 0])))


def test_v2_crc32c_is_checked():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    good = encode_v2(("10.0.0.1", 1), ("10.0.0.2", 2), with_crc=True)
    h = parse(good)
    assert h is not None and h.source == ("10.0.0.1", 1)
    bad = good[:-1] + bytes([good[-1] ^ 1])
    with pytest.raises(ProxyProtocolError, match="CRC32C"):
        parse(bad)
    flipped = good[:17] + bytes([good[17] ^ 1]) + good[18:]  # an address byte changed in transit
    with pytest.raises(ProxyProtocolError, match="CRC32C"):
        parse(flipped)


def test_v2_the_length_says_where_the_header_ends():
    data = v2(0x21, 0x11, IP4_BLOCK + b"\x04\x00\x02ab") + b"PAYLOAD"
    h = parse(data)
    assert h is not None and data[h.length:] == b"PAYLOAD"


# -- detection and partial headers --------------------------------------------


@pytest.mark.parametrize("whole", [encode_v1(("1.2.3.4", 1), ("5.6.7.8", 2)),
                                   encode_v2(("1.2.3.4", 1), ("5.6.7.8", 2), ((1, b"xyz"),)),
                                   encode_v2(None)])
def test_every_proper_prefix_is_incomplete_and_the_whole_is_a_header(whole):
    for n in range(len(whole)):
        assert parse(whole[:n]) is None, n
    h = parse(whole)
    assert h is not None and h.length == len(whole)


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\n", b"\x16\x03\x01\x02\x00", b"P", b"PROXX",
                                  b"PROXY\t", SIG[:5] + b"X", b"\r\n\r\n\x01"])
def test_not_a_header_is_refused_at_the_first_wrong_byte(data):
    if data == b"P":
        assert parse(data) is None  # still a prefix of 'PROXY '
        return
    with pytest.raises(ProxyProtocolError):
        parse(data)


def test_encoders_round_trip():
    for src, dst in [(("1.2.3.4", 1), ("5.6.7.8", 2)), (("::1", 3), ("fe80::1", 4))]:
        for enc in (encode_v1, encode_v2):
            h = parse(enc(src, dst))
            assert h is not None and h.source == src and h.destination == dst


# -- read_header on sockets -------------------------------------------------------


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    return a, b


def test_read_header_leaves_what_follows_unread():
    a, b = _pair()
    with a, b:
        a.sendall(encode_v1(("1.2.3.4", 1), ("5.6.7.8", 2)) + b"hello")
        h = read_header(b, 2)
        assert h is not None and h.source == ("1.2.3.4", 1)
        assert recv_exactly(b, 5) == b"hello"
        a.sendall(encode_v2(("1.2.3.4", 1), ("5.6.7.8", 2), ((0x04, b"\0" * 300),)) + b"world")
        h = read_header(b, 2)
        assert h is not None and h.length == 16 + 12 + 303
        assert recv_exactly(b, 5) == b"world"


@pytest.mark.parametrize("whole", [encode_v1(("1.2.3.4", 1), ("5.6.7.8", 2)),
                                   encode_v2(("1.2.3.4", 1), ("5.6.7.8", 2), ((0x04, b"\0" * 1000),))])
def test_read_header_waits_for_a_header_in_pieces(whole):
    import greenline

    a, b = _pair()
    with a, b:
        def dribble():
            for i in range(0, len(whole), 7):
                a.sendall(whole[i:i + 7])
                greenline.sleep(0.001)
            a.sendall(b"after")

        greenline.spawn(dribble)
        h = read_header(b, 5)
        assert h is not None and h.length == len(whole)
        assert recv_exactly(b, 5) == b"after"


def test_read_header_times_out_restores_the_timeout_and_sees_eof():
    a, b = _pair()
    with a, b:
        b.set_idle_timeout(7)
        a.sendall(b"PROXY TCP4 1.2.3.4")
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            read_header(b, 0.2)
        assert 0.15 < time.monotonic() - t0 < 2
        assert b.idle_timeout == 7
    a, b = _pair()
    with a, b:
        a.sendall(b"PROXY TCP4 1.2.3.4")
        a.close()
        with pytest.raises(ProxyProtocolError, match="closed"):
            read_header(b, 1)
    c, d = _pair()
    with c, d:
        d.settimeout(3)
        c.close()
        assert read_header(d, 1) is None
        assert d.gettimeout() == 3


# -- the servers --------------------------------------------------------------------


def _addr_handler(sock, address):
    sock.sendall(repr(address).encode() + b"\n")
    while data := sock.recv(65536):
        sock.sendall(data.upper())


def _line(c: socket.socket) -> bytes:
    out = b""
    while not out.endswith(b"\n"):
        d = c.recv(1)
        if not d:
            break
        out += d
    return out


@pytest.fixture
def pp_server():
    servers = []

    def make(**kw):
        s = StreamServer(("127.0.0.1", 0), _addr_handler, proxy_protocol=True, **kw)
        s.start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


@pytest.mark.parametrize("header,seen", [
    (encode_v1(("203.0.113.7", 4242), ("127.0.0.1", 80)), "('203.0.113.7', 4242)"),
    (encode_v2(("203.0.113.7", 4242), ("127.0.0.1", 80)), "('203.0.113.7', 4242)"),
    (encode_v2(("2001:db8::7", 4242), ("::1", 80)), "('2001:db8::7', 4242, 0, 0)"),
])
def test_stream_server_hands_the_clients_address_to_handle(pp_server, header, seen):
    server = pp_server()
    c = socket.create_connection(server.address)
    c.settimeout(5)
    with c:
        c.sendall(header + b"abc")
        assert _line(c).decode().strip() == seen
        assert recv_exactly(c, 3) == b"ABC"


def test_stream_server_local_and_unknown_keep_the_socket_address(pp_server):
    server = pp_server()
    for header in (encode_v2(None), encode_v1(None)):
        c = socket.create_connection(server.address)
        c.settimeout(5)
        with c:
            c.sendall(header)
            assert _line(c).decode().strip() == repr(c.getsockname())


def test_stream_server_closes_a_connection_without_a_header_at_once(pp_server):
    server = pp_server(proxy_protocol_timeout=30)
    c = socket.create_connection(server.address)
    c.settimeout(5)
    with c:
        c.sendall(b"hello\n")
        t0 = time.monotonic()
        try:
            assert c.recv(100) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - t0 < 2


def test_stream_server_closes_a_silent_connection_after_the_header_timeout(pp_server):
    server = pp_server(proxy_protocol_timeout=0.3)
    c = socket.create_connection(server.address)
    c.settimeout(5)
    with c:
        t0 = time.monotonic()
        c.sendall(b"PROXY TCP4 ")  # a start, never finished
        assert c.recv(100) == b""
        assert 0.2 < time.monotonic() - t0 < 3


def test_proxy_header_comes_before_tls(pp_server, tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    certfile, keyfile = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.private_key_pem.write_to_path(str(keyfile))
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    server = pp_server(certfile=str(certfile), keyfile=str(keyfile))
    from greenline import ssl

    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    raw = socket.create_connection(server.address)
    raw.settimeout(5)
    raw.sendall(encode_v2(("198.51.100.1", 1234), ("127.0.0.1", 443)))
    with ctx.wrap_socket(raw, server_hostname="localhost") as c:
        assert _line(c).decode().strip() == "('198.51.100.1', 1234)"
    assert isinstance(ctx, stdssl.SSLContext)


def test_the_option_is_read_at_start_and_off_costs_nothing():
    server = StreamServer(("127.0.0.1", 0), _addr_handler)
    server.proxy_protocol = True  # what greenline serve does: set before start()
    server.start()
    try:
        assert not server._bare
        c = socket.create_connection(server.address)
        c.settimeout(5)
        with c:
            c.sendall(encode_v1(("192.0.2.1", 1), ("192.0.2.2", 2)))
            assert _line(c).decode().strip() == "('192.0.2.1', 1)"
    finally:
        server.stop()
    plain = StreamServer(("127.0.0.1", 0), _addr_handler)
    plain.start()
    try:
        assert plain._bare  # handle() gets the socket straight from accept
    finally:
        plain.stop()
    with pytest.raises(ValueError):
        StreamServer(("127.0.0.1", 0), _addr_handler, proxy_protocol=True, proxy_protocol_timeout=0)


def _wsgi_app(environ, start_response):
    body = f"{environ['REMOTE_ADDR']} {environ['REMOTE_PORT']} {environ['wsgi.url_scheme']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def _get(address, prefix: bytes, headers: bytes = b"") -> bytes:
    c = socket.create_connection(address)
    c.settimeout(5)
    with c:
        c.sendall(prefix + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers + b"\r\n")
        out = b""
        while d := c.recv(65536):
            out += d
    return out


def test_wsgi_remote_addr_and_port_come_from_the_header_and_no_header_is_a_400():
    server = WSGIServer(("127.0.0.1", 0), _wsgi_app, proxy_protocol=True)
    server.start()
    try:
        out = _get(server.address, encode_v2(("203.0.113.9", 6543), ("10.0.0.1", 80)))
        assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"\r\n\r\n203.0.113.9 6543 http")
        out = _get(server.address, encode_v1(("2001:db8::9", 6543), ("::1", 80)))
        assert out.endswith(b"\r\n\r\n2001:db8::9 6543 http")
        out = _get(server.address, encode_v2(None))  # a health check
        assert out.startswith(b"HTTP/1.1 200") and out.split(b"\r\n\r\n")[1].startswith(b"127.0.0.1 ")
        out = _get(server.address, b"")
        assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"Connection: close" in out
        out = _get(server.address, b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n")
        assert out.startswith(b"HTTP/1.1 400 ")
    finally:
        server.stop()


def test_the_default_timeout_follows_the_spec():
    assert proxy.DEFAULT_TIMEOUT >= 3  # "at least 3 seconds to cover a TCP retransmit"
