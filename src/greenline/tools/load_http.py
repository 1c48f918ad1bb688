"""The HTTP side of ``greenline load``: what to send and how to read it.

* :func:`parse_url` and :func:`parse_header` turn the command line into an
  :class:`HTTPRequest`, whose bytes are built once: every request a
  connection sends is the same ``bytes`` object (``bytes * k`` for ``k``
  pipelined requests, also built once).
* :func:`parse_expect_status` turns ``--expect-status 2xx,404`` into a table
  of 1,000 flags, indexed by status code on the hot path.
* :class:`Response` is the protocol object fed to one
  ``httptools.HttpResponseParser`` per connection (llhttp underneath):
  status, Content-Length or chunked framing, trailers and malformed input are
  llhttp's business; one callback per response counts.  A body read until
  the connection closes (no Content-Length, not chunked) is complete at EOF;
  any other response cut short is *truncated* (:func:`ended_by_eof` tells
  them apart, and :class:`TrackedResponse` where responses are pipelined).
* :class:`HeadResponses` reads the responses to HEAD, which llhttp cannot be
  told carry no body through httptools: each head is cut at its blank line
  and parsed by a parser of its own.

Nothing here touches a socket; :mod:`greenline.tools.load` runs the loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

__all__ = ["HTTPRequest", "HTTPArgumentError", "MalformedResponse", "Response", "TrackedResponse",
           "HeadResponses", "ended_by_eof", "MAX_KEPT",
           "parse_url", "parse_header", "parse_expect_status", "build_request", "host_header",
           "DEFAULT_EXPECT"]

DEFAULT_EXPECT = "2xx,3xx"

# A token (RFC 9110): what a method and a header name may be made of.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")

# The longest response head HeadResponses waits for before calling it malformed.
MAX_HEAD = 1 << 20


class HTTPArgumentError(ValueError):
    """A URL, header, method or status list that cannot be used."""


class MalformedResponse(Exception):
    """The server sent something that is not an HTTP/1.x response (or more
    responses than there were requests)."""


@dataclass(frozen=True)
class HTTPRequest:
    """One request, as every connection sends it, and how to judge the
    responses."""

    scheme: str  # http or https
    host: str
    port: int
    method: str
    target: str  # path and query, as sent on the request line
    wire: bytes  # the whole request, head and body
    pipeline: int = 1
    expect: bytes = b""  # 1,000 flags: expect[code] is 1 for an accepted status
    expect_text: str = DEFAULT_EXPECT
    body_size: int = 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.target}"

    @property
    def head(self) -> bool:
        return self.method == "HEAD"

    def describe(self) -> str:
        """The request for the report's first line."""
        text = self.method
        if self.body_size:
            text += f" with a {self.body_size:,}-byte body"
        if self.pipeline > 1:
            text += f", pipeline {self.pipeline}"
        return text


def parse_url(text: str) -> tuple[str, str, int, str]:
    """``http://HOST[:PORT][/PATH][?QUERY]`` to (scheme, host, port, target)."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise HTTPArgumentError(f"bad URL {text!r}: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise HTTPArgumentError(f"the URL must start with http:// or https://, not {text!r}")
    host = parts.hostname
    if not host:
        raise HTTPArgumentError(f"no host in the URL {text!r}")
    if parts.username or parts.password:
        raise HTTPArgumentError("user names and passwords in the URL are not supported; send an "
                                "Authorization header with -H")
    if port is None:
        port = 443 if scheme == "https" else 80
    elif not 0 < port < 65536:
        raise HTTPArgumentError(f"bad port in the URL {text!r}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    if any(c in target for c in " \r\n\t") or not target.isascii():
        raise HTTPArgumentError(f"the path must be ASCII without spaces (percent-encode it): {target!r}")
    return scheme, host, port, target


def parse_header(text: str) -> tuple[str, str]:
    """``-H 'Name: value'`` to (name, value)."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _TOKEN.match(name):
        raise HTTPArgumentError(f"a header is 'Name: value', not {text!r}")
    if "\r" in value or "\n" in value:
        raise HTTPArgumentError(f"a header value cannot span lines: {text!r}")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise HTTPArgumentError(f"a header value must be Latin-1: {text!r}") from None
    return name, value


def parse_expect_status(text: str) -> bytes:
    """``200,404`` or ``2xx,404`` to 1,000 flags, one per status code."""
    flags = bytearray(1000)
    items = [t.strip().lower() for t in text.split(",")]
    if not text.strip() or not all(items):
        raise HTTPArgumentError(f"--expect-status takes codes and classes like 200,404 or 2xx,404, "
                                f"not {text!r}")
    for item in items:
        if re.fullmatch(r"[1-9]xx", item):
            base = int(item[0]) * 100
            flags[base:base + 100] = b"\x01" * 100
        elif re.fullmatch(r"[1-9][0-9][0-9]", item):
            flags[int(item)] = 1
        else:
            raise HTTPArgumentError(f"--expect-status: {item!r} is neither a status code (200) nor a "
                                    f"class (2xx)")
    return bytes(flags)


def build_request(method: str, host_header: str, target: str, headers: list[tuple[str, str]],
                  body: bytes | None) -> bytes:
    """The bytes of one request: request line, Host, the user's headers, a
    Content-Length when there is a body (or the method usually has one)."""
    if not _TOKEN.match(method):
        raise HTTPArgumentError(f"bad method {method!r}")
    names = {name.lower() for name, _ in headers}
    if "transfer-encoding" in names:
        raise HTTPArgumentError("Transfer-Encoding cannot be set: the body is sent with a Content-Length")
    lines = [f"{method} {target} HTTP/1.1"]
    if "host" not in names:
        lines.append(f"Host: {host_header}")
    if "user-agent" not in names:
        lines.append("User-Agent: greenline-load")
    lines += [f"{name}: {value}" for name, value in headers]
    if "content-length" not in names and (body or method in ("POST", "PUT", "PATCH")):
        lines.append(f"Content-Length: {len(body or b'')}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def host_header(host: str, port: int, scheme: str) -> str:
    default = 443 if scheme == "https" else 80
    name = f"[{host}]" if ":" in host else host
    return name if port == default else f"{name}:{port}"


# -- reading responses --------------------------------------------------------

_FRAMING = (b"content-length", b"transfer-encoding")
_FRAMING_LENGTHS = (14, 17)


class Response:
    """The callbacks of one connection's response parser, as few as will do:
    only the end of each message calls back into Python.

    ``done`` counts final responses (1xx ones are skipped); each one's
    status is counted in ``statuses`` (shared by every connection of the
    process) and judged against ``expect``: ``good`` counts the accepted
    ones.  ``closing`` is set by a response after which the server will
    close the connection (``Connection: close``, or a body read to EOF).

    Whether a response cut short by the end of the connection was complete
    after all (a body without a length runs to EOF) is for
    :func:`ended_by_eof` to say, from the bytes the loop kept of it: that
    costs nothing while responses come whole.
    """

    __slots__ = ("done", "good", "statuses", "expect", "closing", "status", "keep_alive")

    def __init__(self, statuses: dict[int, int], expect: bytes) -> None:
        self.done = 0
        self.good = 0
        self.statuses = statuses
        self.expect = expect
        self.closing = False
        self.status: Any = None
        self.keep_alive: Any = None

    def parser(self) -> HttpResponseParser:
        """A new parser calling back into this object."""
        p = HttpResponseParser(self)
        self.status = p.get_status_code
        self.keep_alive = p.should_keep_alive
        return p

    def on_message_complete(self) -> None:
        code = self.status()
        if code < 200:
            return  # 100 Continue and the like: the final response follows
        self.done += 1
        statuses = self.statuses
        statuses[code] = statuses.get(code, 0) + 1
        if self.expect[code]:
            self.good += 1
        if not self.keep_alive():
            self.closing = True


class TrackedResponse(Response):
    """A Response that also follows where each message is (``in_message``,
    ``headers_done``) and whether it has a length (``framed``), so that the
    end of the connection can be judged from the parser's state alone.  For
    pipelined responses (which do not start at a read's first byte) and
    for HEAD."""

    __slots__ = ("in_message", "headers_done", "framed")

    def __init__(self, statuses: dict[int, int], expect: bytes) -> None:
        super().__init__(statuses, expect)
        self.in_message = False
        self.headers_done = False
        self.framed = False

    def on_message_begin(self) -> None:
        self.in_message = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) in _FRAMING_LENGTHS and name.lower() in _FRAMING:
            self.framed = True

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_message_complete(self) -> None:
        self.in_message = self.headers_done = self.framed = False
        Response.on_message_complete(self)

    def ends_at_eof(self) -> bool:
        """At EOF in the middle of a response: True if that response was
        complete (its body had no length and ran to the end of the
        connection), in which case it is counted now."""
        if self.in_message and self.headers_done and not self.framed:
            self.on_message_complete()
            self.closing = True
            return True
        return False


# How much of a response that spans several reads the one-request loop
# keeps, in case the connection ends before the response does: the head is
# in there.
MAX_KEPT = 1 << 16


def ended_by_eof(kept: Any) -> tuple[bool, bool]:
    """For a response cut off by the end of the connection, of which
    ``kept`` is the start: (whether it was complete after all — a head
    without a length, its body running to EOF —, whether its head was
    whole).  Parsed again, with every callback, on this rare path only."""
    probe = TrackedResponse({}, bytes(1000))
    try:
        probe.parser().feed_data(kept)
    except (HttpParserError, HttpParserUpgrade):
        return False, probe.headers_done
    return probe.in_message and probe.headers_done and not probe.framed, probe.headers_done


class HeadResponses:
    """``feed`` for the responses to HEAD: each is a head alone, whatever its
    Content-Length says, so each is cut at its blank line and parsed by a
    parser of its own (llhttp would otherwise wait for the body)."""

    def __init__(self, proto: TrackedResponse) -> None:
        self.proto = proto
        self.carry = bytearray()

    def __call__(self, data: Any) -> None:
        proto = self.proto
        carry = self.carry
        carry += data
        while carry:
            end = carry.find(b"\r\n\r\n")
            if end < 0:
                if len(carry) > MAX_HEAD:
                    raise MalformedResponse(f"no end of the response head in {len(carry):,} bytes")
                proto.in_message = True
                return
            head = bytes(carry[:end + 4])
            del carry[:end + 4]
            proto.parser().feed_data(head)
            if proto.in_message:
                # llhttp waits for a body (the head has a length, or none):
                # the head is the whole response, that body is not coming.
                if not proto.headers_done:
                    raise MalformedResponse("incomplete response head")
                proto.on_message_complete()
