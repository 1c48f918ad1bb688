"""forwarded_allow_ips (issue 17): X-Forwarded-For and X-Forwarded-Proto are
believed from the listed proxies only (greenline.wsgi.forwarded), in
WSGIServer and through ``greenline serve --forwarded-allow-ips``."""

from __future__ import annotations

import pytest

from greenline import socket
from greenline.servers.proxy import encode_v2
from greenline.wsgi import WSGIServer
from greenline.wsgi.forwarded import TrustedProxies, trusted_proxies


def env(xff=None, proto=None, addr="10.0.0.1"):
    e = {"REMOTE_ADDR": addr, "REMOTE_PORT": "5000", "wsgi.url_scheme": "http"}
    if xff is not None:
        e["HTTP_X_FORWARDED_FOR"] = xff
    if proto is not None:
        e["HTTP_X_FORWARDED_PROTO"] = proto
    return e


def applied(spec, **kw):
    e = env(**kw)
    TrustedProxies(spec).apply(e)
    return e["REMOTE_ADDR"], e["REMOTE_PORT"], e["wsgi.url_scheme"]


def test_parsing_addresses_networks_and_star():
    t = TrustedProxies(" 127.0.0.1, 10.0.0.0/8 ,::1,2001:db8::/32 ")
    assert t.spec == "127.0.0.1,10.0.0.0/8,::1,2001:db8::/32" and not t.everyone
    for ok in ("127.0.0.1", "10.9.8.7", "::1", "2001:db8::5", "::ffff:10.1.1.1"):
        assert t.trusts(ok), ok
    for no in ("127.0.0.2", "11.0.0.1", "::2", "2001:db9::1", "", "unix:/sock", "garbage"):
        assert not t.trusts(no), no
    assert TrustedProxies("*").trusts("anything")
    assert TrustedProxies(["192.0.2.1", "*"]).everyone
    assert trusted_proxies(None) is None and trusted_proxies("") is None and trusted_proxies(" , ") is None
    assert trusted_proxies(t) is t


@pytest.mark.parametrize("bad", ["10.0.0.1/8", "300.1.1.1", "example.com", "10.0.0.0/33", "1.2.3.4:80"])
def test_a_bad_entry_is_refused(bad):
    with pytest.raises(ValueError, match="forwarded_allow_ips"):
        TrustedProxies(f"127.0.0.1,{bad}")


def test_x_forwarded_for_is_read_from_the_right_skipping_listed_proxies():
    # 10.0.0.0/8 are our proxies; 198.51.100.1 is a client who forged a first entry.
    assert applied("10.0.0.0/8", xff="6.6.6.6, 198.51.100.1, 10.0.0.2") == ("198.51.100.1", "0", "http")
    assert applied("10.0.0.0/8", xff="198.51.100.1") == ("198.51.100.1", "0", "http")
    # Every entry a proxy: the leftmost.
    assert applied("10.0.0.0/8", xff="10.0.0.3, 10.0.0.2") == ("10.0.0.3", "0", "http")
    # '*': everyone is a proxy, so the leftmost is the client.
    assert applied("*", xff="203.0.113.1, 198.51.100.1") == ("203.0.113.1", "0", "http")


def test_x_forwarded_for_forms_and_garbage():
    assert applied("*", xff="[2001:db8::1]:443")[0] == "2001:db8::1"
    assert applied("*", xff="2001:db8::1")[0] == "2001:db8::1"
    assert applied("*", xff="192.0.2.1:5555")[0] == "192.0.2.1"
    assert applied("*", xff="::ffff:192.0.2.1")[0] == "192.0.2.1"
    # Not an address: the header is ignored, the peer stays.
    assert applied("10.0.0.0/8", xff="unknown, 10.0.0.2") == ("10.0.0.1", "5000", "http")
    assert applied("*", xff="") == ("10.0.0.1", "5000", "http")
    assert applied("10.0.0.0/8", xff="_hidden") == ("10.0.0.1", "5000", "http")


def test_x_forwarded_proto():
    assert applied("*", proto="https")[2] == "https"
    assert applied("*", proto="HTTPS")[2] == "https"
    assert applied("*", proto="https, http")[2] == "http"  # the last hop's word
    assert applied("*", proto="ftp")[2] == "http"
    e = env(proto="http")
    e["wsgi.url_scheme"] = "https"
    TrustedProxies("*").apply(e)
    assert e["wsgi.url_scheme"] == "http"


def _app(environ, start_response):
    body = f"{environ['REMOTE_ADDR']} {environ['REMOTE_PORT']} {environ['wsgi.url_scheme']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def _get(server, headers: bytes, prefix: bytes = b"") -> bytes:
    c = socket.create_connection(server.address)
    c.settimeout(5)
    with c:
        port = c.getsockname()[1]
        c.sendall(prefix + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers + b"\r\n")
        out = b""
        while d := c.recv(65536):
            out += d
    body = out.split(b"\r\n\r\n", 1)[1].decode()
    return body.replace(f" {port} ", " PORT ").encode()


HEADERS = b"X-Forwarded-For: 203.0.113.5\r\nX-Forwarded-Proto: https\r\n"


@pytest.mark.parametrize("allow,expect", [
    (None, b"127.0.0.1 PORT http"),               # the default: nobody is believed
    ("127.0.0.1", b"203.0.113.5 0 https"),
    ("127.0.0.0/8,::1", b"203.0.113.5 0 https"),
    ("*", b"203.0.113.5 0 https"),
    ("10.0.0.1", b"127.0.0.1 PORT http"),         # we are not listed
])
def test_wsgi_server_believes_only_the_listed_peers(allow, expect):
    server = WSGIServer(("127.0.0.1", 0), _app, forwarded_allow_ips=allow)
    server.start()
    try:
        assert _get(server, HEADERS) == expect
        assert _get(server, b"") == b"127.0.0.1 PORT http"
    finally:
        server.stop()


def test_with_the_proxy_protocol_the_listed_peer_is_the_one_in_the_header():
    server = WSGIServer(("127.0.0.1", 0), _app, proxy_protocol=True, forwarded_allow_ips="192.0.2.0/24")
    server.start()
    try:
        # The PROXY header says 192.0.2.7 (a listed proxy): its X-Forwarded-* count.
        assert _get(server, HEADERS, encode_v2(("192.0.2.7", 1), ("127.0.0.1", 80))) == b"203.0.113.5 0 https"
        # A client itself (198.51.100.2, not listed) cannot forge them.
        assert _get(server, HEADERS, encode_v2(("198.51.100.2", 9), ("127.0.0.1", 80))) == \
            b"198.51.100.2 9 http"
    finally:
        server.stop()


def test_set_before_start_as_greenline_serve_does():
    server = WSGIServer(("127.0.0.1", 0), _app)
    server.forwarded_allow_ips = "127.0.0.1"
    server.start()
    try:
        assert _get(server, HEADERS) == b"203.0.113.5 0 https"
    finally:
        server.stop()
    with pytest.raises(ValueError):
        WSGIServer(("127.0.0.1", 0), _app, forwarded_allow_ips="nonsense")


def _serve(*args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "greenline", "serve", *args, "--port", "0"],
                          capture_output=True, text=True, timeout=30)


def test_greenline_serve_refuses_bad_values_in_one_line():
    r = _serve("--wsgi", "greenline.tools.demo:app", "--forwarded-allow-ips", "10.0.0.1/8")
    assert r.returncode == 2 and "forwarded_allow_ips: '10.0.0.1/8'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = _serve("echo", "--forwarded-allow-ips", "127.0.0.1")
    assert r.returncode == 2 and "--forwarded-allow-ips needs --wsgi" in r.stderr
