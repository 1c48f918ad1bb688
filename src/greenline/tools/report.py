"""The results of a ``greenline load`` run: merging, the text report, JSON.

A run is made of one or more *parts* (one per client process, or one per
JSON file being merged).  Each part carries its counters and its latency
histograms, HDR-encoded, so parts from several processes or hosts add up
exactly: counts are summed and histograms are added bucket by bucket, never
approximated from percentiles.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from hdrh.histogram import HdrHistogram

__all__ = [
    "LOWEST_US",
    "HIGHEST_US",
    "SIGNIFICANT_DIGITS",
    "new_histogram",
    "BUCKET_BITS",
    "record_counts",
    "LoadResult",
    "format_us",
]

# Latencies are recorded in microseconds, from 1 µs to 60 s, to three
# significant digits (0.1 % relative error at any magnitude).
LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3

PERCENTILES = (50.0, 90.0, 99.0, 99.9)

# Error kinds the report always lists (others are named after their errno).
ERROR_KINDS = ("refused", "reset", "timeout", "closed early")
# ... and for HTTP, where a response can also be cut short or not be HTTP.
HTTP_ERROR_KINDS = (*ERROR_KINDS, "truncated", "malformed")
HTTP_PROTOCOLS = ("http", "https")
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")

FORMAT_VERSION = 1


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def _bucket_bits() -> int:
    h = new_histogram()
    # With a lowest value of 1 the unit is 1 µs: bucket k holds values of
    # BUCKET_BITS + k bits, to a resolution of 2**k.
    assert h.unit_magnitude == 0
    return int(h.sub_bucket_half_count_magnitude) + 1


#: A client's hot path counts latencies in a dict and leaves the histogram
#: to ``record_counts`` once a second: a dict update costs about a tenth of
#: ``HdrHistogram.record_value`` (740 ns here).  Values below
#: ``2 ** BUCKET_BITS`` µs are exact in the histogram; above, dropping all but
#: the top ``BUCKET_BITS`` bits gives the lowest value of the value's own
#: bucket, so counting by that loses nothing the histogram keeps.
BUCKET_BITS = _bucket_bits()


def record_counts(h: HdrHistogram, counts: dict[int, int]) -> None:
    """Record ``counts`` (latency in µs -> how many times) into ``h`` and
    empty it; a value beyond the histogram's range counts as the highest."""
    for us, n in counts.items():
        if not h.record_value(us, n):
            h.record_value(HIGHEST_US, n)
    counts.clear()


def encode_histogram(h: HdrHistogram) -> str:
    return h.encode().decode("ascii")  # type: ignore[no-any-return]


def decode_histogram(text: str) -> HdrHistogram:
    h = new_histogram()
    if text:
        h.add(HdrHistogram.decode(text.encode("ascii")))
    return h


def format_us(us: float | None) -> str:
    """A latency for people: µs below 1 ms, ms below 1 s, else seconds."""
    if us is None:
        return "-"
    if us < 1000:
        return f"{us:.0f} µs"
    if us < 1_000_000:
        return f"{us / 1000:.2f} ms"
    return f"{us / 1_000_000:.3f} s"


# -- the schema ------------------------------------------------------------
#
# Each field of LoadResult says, next to its type and default, everything the
# rest of this module needs to know about it: its JSON key, how to read it
# back, whether a part must have it, and how the parts of a run add up.  The
# JSON output, reading it back and merging all go over ``fields(LoadResult)``,
# so a new figure is added in one place (and filled in by the Engine in
# greenline.tools.load, which measures it).


def _f(default: Any = None, *, merge: Callable[[list[Any]], Any] | None, load: Callable[[Any], Any],
       factory: Callable[[], Any] | None = None, required: bool = False, key: str | None = None,
       dump: Callable[[Any], Any] | None = None, last: bool = False) -> Any:
    """A LoadResult field.  ``merge`` makes the merged value from the parts'
    values (None: derived, computed by :meth:`LoadResult.merge` itself);
    ``load`` converts the value read from JSON, where a ``required`` key must
    be present; ``key`` is the JSON key (default: the field's name), ``dump``
    converts the value for JSON (default: as it is), and ``last`` fields go
    at the end of the file, after the figures people read."""
    meta = {"merge": merge, "load": load, "required": required, "key": key, "dump": dump, "last": last}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _histogram(key: str) -> Any:
    """A latency histogram field: HDR-encoded in the JSON, at the end."""
    return _f(factory=new_histogram, merge=_add_histograms, load=decode_histogram, key=key,
              dump=encode_histogram, last=True)


def _joined(sep: str, skip_empty: bool = False) -> Callable[[list[str]], str]:
    return lambda values: sep.join(sorted({v for v in values if v or not skip_empty}))


def _add_counts(counts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for kind, n in c.items():
            out[kind] = out.get(kind, 0) + n
    return out


def _first_seen(samples: list[dict[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in samples:
        for kind, text in s.items():
            out.setdefault(kind, text)
    return out


def _latest_unless_missing(firsts: list[float | None]) -> float | None:
    return None if any(f is None for f in firsts) else max(f for f in firsts if f is not None)


def _add_histograms(hs: list[HdrHistogram]) -> HdrHistogram:
    out = new_histogram()
    for h in hs:
        out.add(h)
    return out


def _sorted_errors(errors: dict[str, int], kinds: tuple[str, ...] = ERROR_KINDS) -> list[tuple[str, int]]:
    known = [(k, errors.get(k, 0)) for k in kinds]
    others = sorted((k, n) for k, n in errors.items() if k not in kinds)
    return known + others


def _by_code(statuses: dict[str, int]) -> dict[str, int]:
    return dict(sorted(statuses.items()))


def status_classes(statuses: dict[str, int]) -> dict[str, int]:
    """Responses by class (2xx, 3xx, 4xx, 5xx always; 1xx and others when
    there are any) from responses by code."""
    out = {c: 0 for c in STATUS_CLASSES}
    for code, n in statuses.items():
        c = f"{code[:1]}xx"
        out[c] = out.get(c, 0) + n
    return dict(sorted(out.items()))


def _optional_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _str_ints(d: dict[Any, Any]) -> dict[str, int]:
    return {str(k): int(v) for k, v in d.items()}


def _str_strs(d: dict[Any, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in d.items()}


@dataclass
class LoadResult:
    """Counters and histograms of a run, or of several merged runs."""

    target: str = _f("", merge=_joined(", "), load=str)
    connections: int = _f(0, merge=sum, load=int, required=True)
    protocol: str = _f("upper", merge=_joined("/"), load=str)
    size: int = _f(0, merge=max, load=int)
    mode: str = _f("closed loop", merge=_joined("/"), load=str)
    parts: int = _f(1, merge=sum, load=int)
    # Stopped early by Ctrl-C or SIGTERM: the figures cover the time it ran.
    interrupted: bool = _f(False, merge=any, load=bool)
    # Wall-clock length of the run (the longest part, when parts ran side by
    # side: they started together, so this is the wall clock) and the replies
    # per second over it.
    elapsed: float = _f(0.0, merge=max, load=float, required=True)
    replies_per_s: float = _f(0.0, merge=None, load=float)
    opened: int = _f(0, merge=sum, load=int, required=True)
    failed: int = _f(0, merge=sum, load=int, required=True)
    gave_up: int = _f(0, merge=sum, load=int)
    requests: int = _f(0, merge=sum, load=int, required=True)
    verified: int = _f(0, merge=sum, load=int, required=True)
    mismatches: int = _f(0, merge=sum, load=int, required=True)
    unfinished: int = _f(0, merge=sum, load=int)
    # Written with every kind the report always lists, zeros included.
    errors: dict[str, int] = _f(factory=dict, merge=_add_counts, load=_str_ints)
    # The first message seen for each error kind: the report's "why".
    error_samples: dict[str, str] = _f(factory=dict, merge=_first_seen, load=_str_strs, dump=dict)
    # "" for plain TCP, else how the connections were secured (TLS, and
    # whether the certificate was verified).
    security: str = _f("", merge=_joined("; ", skip_empty=True), load=str)
    # Seconds from the start until every connection had its first reply;
    # None if some connection never got one.
    first_reply: float | None = _f(None, merge=_latest_unless_missing, load=_optional_float)
    first_replied: int = _f(0, merge=sum, load=int)
    # HTTP (protocol http or https): the request as the report names it
    # ("GET", "POST with a 12-byte body, pipeline 8"), the statuses that
    # count as right, and the responses by status code.  For HTTP
    # ``verified`` counts the responses with an expected status and
    # ``mismatches`` the others; ``size`` is the request body's size.
    request: str = _f("", merge=_joined("; ", skip_empty=True), load=str)
    pipeline: int = _f(1, merge=max, load=int)
    expect_status: str = _f("", merge=_joined(" / ", skip_empty=True), load=str)
    statuses: dict[str, int] = _f(factory=dict, merge=_add_counts, load=_str_ints, key="status_counts",
                                  dump=_by_code)
    # The client's own CPU time (user + system, every client process).
    cpu_seconds: float = _f(0.0, merge=sum, load=float, key="client_cpu_s")
    latency: HdrHistogram = _histogram("histogram")
    first_latency: HdrHistogram = _histogram("first_histogram")

    # -- building ------------------------------------------------------

    @property
    def is_http(self) -> bool:
        return self.protocol in HTTP_PROTOCOLS

    @property
    def responses(self) -> int:
        """Replies (HTTP: responses) that came back whole."""
        return self.verified + self.mismatches

    @property
    def cpu_per_response_us(self) -> float | None:
        """The client's CPU time per reply, µs (None before any reply)."""
        return self.cpu_seconds / self.responses * 1e6 if self.responses and self.cpu_seconds else None

    @classmethod
    def from_part(cls, part: dict[str, Any]) -> LoadResult:
        """A result from one part's plain dictionary (see :meth:`to_dict`)."""
        if not isinstance(part, dict):
            raise ValueError(f"a result is a JSON object, not {type(part).__name__}")
        if part.get("format") not in (None, FORMAT_VERSION):
            raise ValueError(f"unknown result format {part.get('format')!r}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = f.metadata["key"] or f.name
            if f.metadata["required"] or key in part:
                values[f.name] = f.metadata["load"](part[key])
        r = cls(**values)
        if not r.replies_per_s and r.elapsed > 0:
            r.replies_per_s = (r.verified + r.mismatches) / r.elapsed
        return r

    @classmethod
    def merge(cls, results: list[LoadResult]) -> LoadResult:
        """Add up runs that went on side by side (processes or hosts)."""
        if not results:
            raise ValueError("nothing to merge")
        out = cls(**{f.name: f.metadata["merge"]([getattr(r, f.name) for r in results])
                     for f in fields(cls) if f.metadata["merge"] is not None})
        out.replies_per_s = (out.verified + out.mismatches) / out.elapsed if out.elapsed > 0 else 0.0
        return out

    # -- verdict -------------------------------------------------------

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def problems(self) -> list[str]:
        """What went wrong, in words; empty when the run was clean."""
        out = []
        if self.mismatches and self.is_http:
            codes = ", ".join(f"{code} {n:,}" for code, n in _by_code(self.statuses).items()
                              if not _expected(code, self.expect_status))
            s = "" if self.mismatches == 1 else "s"
            out.append(f"{self.mismatches:,} response{s} with an unexpected status ({codes}; expected "
                       f"{self.expect_status or 'any'})")
        elif self.mismatches:
            out.append(f"{self.mismatches:,} mismatched repl{'y' if self.mismatches == 1 else 'ies'}")
        if self.error_count:
            kinds = ", ".join(f"{k} {n:,}" for k, n in self._sorted_errors() if n)
            out.append(f"{self.error_count:,} error{'s' if self.error_count != 1 else ''} ({kinds})")
        if self.gave_up:
            out.append(f"{self.gave_up:,} connection{'s' if self.gave_up != 1 else ''} gave up after failing to connect")
        if self.verified == 0:
            out.append("no response had an expected status" if self.is_http else "no reply was verified")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems()

    def _sorted_errors(self) -> list[tuple[str, int]]:
        return _sorted_errors(self.errors, HTTP_ERROR_KINDS if self.is_http else ERROR_KINDS)

    def percentiles(self) -> dict[str, int | None]:
        h = self.latency
        if not h.get_total_count():
            return {**{_pname(p): None for p in PERCENTILES}, "max": None}
        out: dict[str, int | None] = {_pname(p): int(h.get_value_at_percentile(p)) for p in PERCENTILES}
        out["max"] = int(h.get_max_value())
        return out

    # -- output --------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Everything in the report, plus the encoded histograms."""
        first_pct = None
        if self.first_latency.get_total_count():
            first_pct = {
                "p50": int(self.first_latency.get_value_at_percentile(50.0)),
                "max": int(self.first_latency.get_max_value()),
            }
        figures: dict[str, Any] = {"format": FORMAT_VERSION}
        encoded: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            dump = f.metadata["dump"]
            (encoded if f.metadata["last"] else figures)[f.metadata["key"] or f.name] = (
                value if dump is None else dump(value))
        # Every kind the report lists, zeros included.
        figures["errors"] = dict(self._sorted_errors())
        cpu = self.cpu_per_response_us
        return {
            **figures,
            "status_classes": status_classes(self.statuses) if self.is_http else {},
            "client_cpu_us_per_response": None if cpu is None else round(cpu, 3),
            "latency_us": self.percentiles(),
            "latency_count": self.latency.get_total_count(),
            "first_exchange_us": first_pct,
            "ok": self.ok,
            "problems": self.problems(),
            **encoded,
        }

    def write_json(self, path: str) -> None:
        """Write the JSON to ``path``; ``-`` is standard output."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path == "-":
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    @classmethod
    def read_json(cls, path: str) -> LoadResult:
        """Read a result written by ``--json``; a ValueError, naming the file
        and what is wrong with it, for anything that is not one."""
        try:
            with open(path, encoding="utf-8") as f:
                return cls.from_part(json.load(f))
        except OSError as e:
            raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
        except Exception as e:  # noqa: BLE001 - any way a file can be wrong: one line saying so
            what = f"missing {e}" if isinstance(e, KeyError) else str(e).splitlines()[0] if str(e) else \
                type(e).__name__
            raise ValueError(f"{path} is not a greenline load result ({what})") from None

    def render(self) -> str:
        """The final report, as plain text."""
        http = self.is_http
        reply = "response" if http else "reply"
        replies_word = "responses" if http else "replies"
        replies = self.responses
        pct = self.percentiles()
        lines = []
        if http:
            head = f"greenline load {self.target}: {self.connections:,} connections, {self.mode}, " \
                   f"{self.request or 'GET'}"
        else:
            head = f"greenline load {self.target}: {self.connections:,} connections, {self.mode}, " \
                   f"{self.size}-byte messages, {self.protocol}"
        if self.parts > 1:
            head += f" ({self.parts} parts merged)"
        lines.append(head)
        if self.security:
            lines.append(f"  security     {self.security}")
        conn = f"opened {self.opened:,}, failed {self.failed:,}"
        if self.gave_up:
            conn += f", gave up {self.gave_up:,}"
        lines.append(f"  connections  {conn}")
        req = f"{self.requests:,} in {self.elapsed:.2f} s, {self.replies_per_s:,.0f} {replies_word}/s"
        if self.interrupted:
            req += " (interrupted)"
        if self.unfinished:
            req += f" ({self.unfinished:,} still in flight at the end, not counted)"
        lines.append(f"  requests     {req}")
        if pct["max"] is None:
            lines.append("  latency      no samples")
        else:
            parts = "  ".join(f"{k} {format_us(v)}" for k, v in pct.items())
            lines.append(f"  latency      {parts}")
            lines.append(f"               over {self.latency.get_total_count():,} {replies_word} "
                         "(each connection's first exchange left out)")
        if self.first_reply is not None:
            first = f"every connection had its first {reply} {self.first_reply:.3f} s after the start"
        else:
            first = f"{self.first_replied:,} of {self.connections:,} connections had a first {reply}"
        if self.first_latency.get_total_count():
            first += (f" (first exchanges: p50 {format_us(self.first_latency.get_value_at_percentile(50.0))},"
                      f" max {format_us(self.first_latency.get_max_value())})")
        lines.append(f"  first reply  {first}")
        lost = "" if replies == self.requests else f", {self.requests - replies:,} lost to errors"
        if http:
            classes = ", ".join(f"{c} {n:,}" for c, n in status_classes(self.statuses).items())
            codes = ", ".join(f"{code} {n:,}" for code, n in _by_code(self.statuses).items())
            lines.append(f"  status       {classes}" + (f"  ({codes})" if codes else ""))
            lines.append(f"  responses    {self.verified:,} with an expected status "
                         f"({self.expect_status or 'any'}), {self.mismatches:,} not" + lost)
        else:
            lines.append(f"  replies      {self.verified:,} verified, {self.mismatches:,} mismatched" + lost)
        errs = ", ".join(f"{k} {n:,}" for k, n in self._sorted_errors())
        lines.append(f"  errors       {errs}")
        for kind, n in self._sorted_errors():
            if n and kind in self.error_samples:
                lines.append(f"               {kind}: {self.error_samples[kind]}")
        cpu = self.cpu_per_response_us
        if cpu is not None:
            lines.append(f"  client CPU   {cpu:,.1f} µs per {reply} (user + system, {self.cpu_seconds:.2f} s "
                         f"in all{', every process' if self.parts > 1 else ''})")
        problems = self.problems()
        lines.append("  result       " + ("OK" if not problems else "FAILED: " + "; ".join(problems)))
        return "\n".join(lines)


def _expected(code: str, expect: str) -> bool:
    """Whether status ``code`` is among ``expect`` (``2xx,404``; merged
    results join theirs with `` / ``)."""
    items = {t for t in re.split(r"[\s,/]+", expect.lower()) if t}
    return not items or code in items or f"{code[:1]}xx" in items


def _pname(p: float) -> str:
    return f"p{p:g}"
