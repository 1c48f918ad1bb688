"""``forwarded_allow_ips``: whom to believe about X-Forwarded-For and -Proto.

Behind an HTTP proxy (nginx, HAProxy in ``mode http``) every request comes
from the proxy; the proxy says whose request it relays in
``X-Forwarded-For`` and over what in ``X-Forwarded-Proto``.  Anybody can send
those headers, so they are believed only from the proxies listed, gunicorn's
``forwarded_allow_ips``: IP addresses and networks (CIDR), comma-separated,
or ``*`` for everyone.

From a listed peer:

* ``X-Forwarded-For: client, proxy1, proxy2`` (several headers count as one
  list): read from the right, every address that is itself a listed proxy is
  skipped; the first that is not is the client, and becomes ``REMOTE_ADDR``
  (``REMOTE_PORT`` becomes ``"0"``: the header has no port).  If every
  address is a listed proxy (always, with ``*``), the leftmost is taken.
  An entry that is not an IP address (``unknown``, a name, an obfuscated
  ``_id``) ends the search and the header is ignored.
* ``X-Forwarded-Proto``: its last value, ``http`` or ``https`` (any case),
  becomes ``wsgi.url_scheme``; another value is ignored.

From anyone else both are ignored (they stay in the environ as
``HTTP_X_FORWARDED_*``, as every header does).

May import: the standard library.
"""

from __future__ import annotations

import ipaddress
from typing import Any

__all__ = ["TrustedProxies", "trusted_proxies"]

_Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6] or [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class TrustedProxies:
    """A parsed ``forwarded_allow_ips``.  ``spec``: ``"*"``, or addresses and
    networks, comma-separated (a string) or as a list."""

    __slots__ = ("spec", "everyone", "networks", "_cache")

    def __init__(self, spec: str | list[str] | tuple[str, ...]) -> None:
        items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
        items = [s for s in items if s]
        self.spec = ",".join(items)
        self.everyone = "*" in items
        nets: list[_Net] = []
        for item in items:
            if item == "*":
                continue
            try:
                nets.append(ipaddress.ip_network(item, strict=True))
            except ValueError:
                raise ValueError(f"forwarded_allow_ips: {item!r} is not an IP address or network "
                                 "(CIDR, host bits zero), nor *") from None
        self.networks = tuple(nets)
        # Peer address -> trusted?  A server sees few proxies.
        self._cache: dict[str, bool] = {}

    def __repr__(self) -> str:
        return f"TrustedProxies({self.spec!r})"

    def trusts(self, host: Any) -> bool:
        """Is ``host`` (an address string) one of the listed proxies?"""
        if self.everyone:
            return True
        key = str(host)
        hit = self._cache.get(key)
        if hit is None:
            ip = _ip(key)
            hit = ip is not None and any(ip in net for net in self.networks)
            if len(self._cache) < 1024:
                self._cache[key] = hit
        return hit

    def apply(self, environ: dict[str, Any]) -> None:
        """Rewrite ``environ`` (of a request from a listed proxy) by its
        X-Forwarded-For and X-Forwarded-Proto headers."""
        xff = environ.get("HTTP_X_FORWARDED_FOR")
        if xff:
            client = None
            for entry in reversed(xff.split(",")):
                ip = _ip(entry)
                if ip is None:
                    client = None
                    break
                client = str(ip)
                if not self.trusts(client):
                    break
            if client is not None:
                environ["REMOTE_ADDR"] = client
                environ["REMOTE_PORT"] = "0"
        proto = environ.get("HTTP_X_FORWARDED_PROTO")
        if proto:
            last = proto.rsplit(",", 1)[-1].strip().lower()
            if last == "https" or last == "http":
                environ["wsgi.url_scheme"] = last


def trusted_proxies(spec: Any) -> TrustedProxies | None:
    """None (nobody trusted) for None or an empty list; a
    :class:`TrustedProxies` as it is; else parsed (``ValueError`` if bad)."""
    if spec is None or isinstance(spec, TrustedProxies):
        return spec
    parsed = TrustedProxies(spec)
    return parsed if parsed.everyone or parsed.networks else None
