"""The results of a ``greenline load`` run: merging, the text report, JSON.

A run is made of one or more *parts* (one per client process, or one per
JSON file being merged).  Each part carries its counters and its latency
histograms, HDR-encoded, so parts from several processes or hosts add up
exactly: counts are summed and histograms are added bucket by bucket, never
approximated from percentiles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
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


@dataclass
class LoadResult:
    """Counters and histograms of a run, or of several merged runs."""

    target: str = ""
    connections: int = 0
    protocol: str = "upper"
    size: int = 0
    mode: str = "closed loop"
    # Wall-clock length of the run (the longest part, when parts ran side by
    # side) and the replies per second over it.
    elapsed: float = 0.0
    replies_per_s: float = 0.0
    opened: int = 0
    failed: int = 0
    gave_up: int = 0
    requests: int = 0
    verified: int = 0
    mismatches: int = 0
    unfinished: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    # The first message seen for each error kind: the report's "why".
    error_samples: dict[str, str] = field(default_factory=dict)
    # "" for plain TCP, else how the connections were secured (TLS, and
    # whether the certificate was verified).
    security: str = ""
    # Seconds from the start until every connection had its first reply;
    # None if some connection never got one.
    first_reply: float | None = None
    first_replied: int = 0
    latency: HdrHistogram = field(default_factory=new_histogram)
    first_latency: HdrHistogram = field(default_factory=new_histogram)
    parts: int = 1
    # Stopped early by Ctrl-C or SIGTERM: the figures cover the time it ran.
    interrupted: bool = False

    # -- building ------------------------------------------------------

    @classmethod
    def from_part(cls, part: dict[str, Any]) -> LoadResult:
        """A result from one part's plain dictionary (see :meth:`to_dict`)."""
        if part.get("format") not in (None, FORMAT_VERSION):
            raise ValueError(f"unknown result format {part.get('format')!r}")
        r = cls(
            target=part.get("target", ""),
            connections=int(part["connections"]),
            protocol=part.get("protocol", "upper"),
            size=int(part.get("size", 0)),
            mode=part.get("mode", "closed loop"),
            elapsed=float(part["elapsed"]),
            replies_per_s=float(part.get("replies_per_s", 0.0)),
            opened=int(part["opened"]),
            failed=int(part["failed"]),
            gave_up=int(part.get("gave_up", 0)),
            requests=int(part["requests"]),
            verified=int(part["verified"]),
            mismatches=int(part["mismatches"]),
            unfinished=int(part.get("unfinished", 0)),
            errors={str(k): int(v) for k, v in part.get("errors", {}).items()},
            error_samples={str(k): str(v) for k, v in part.get("error_samples", {}).items()},
            security=str(part.get("security", "")),
            first_reply=None if part.get("first_reply") is None else float(part["first_reply"]),
            first_replied=int(part.get("first_replied", 0)),
            latency=decode_histogram(part.get("histogram", "")),
            first_latency=decode_histogram(part.get("first_histogram", "")),
            parts=int(part.get("parts", 1)),
            interrupted=bool(part.get("interrupted", False)),
        )
        if not r.replies_per_s and r.elapsed > 0:
            r.replies_per_s = (r.verified + r.mismatches) / r.elapsed
        return r

    @classmethod
    def merge(cls, results: list[LoadResult]) -> LoadResult:
        """Add up runs that went on side by side (processes or hosts)."""
        if not results:
            raise ValueError("nothing to merge")
        out = cls()
        targets = sorted({r.target for r in results})
        out.target = ", ".join(targets)
        out.protocol = "/".join(sorted({r.protocol for r in results}))
        out.mode = "/".join(sorted({r.mode for r in results}))
        out.security = "; ".join(sorted({r.security for r in results if r.security}))
        out.size = max(r.size for r in results)
        out.elapsed = max(r.elapsed for r in results)
        out.parts = sum(r.parts for r in results)
        out.interrupted = any(r.interrupted for r in results)
        for r in results:
            out.connections += r.connections
            out.opened += r.opened
            out.failed += r.failed
            out.gave_up += r.gave_up
            out.requests += r.requests
            out.verified += r.verified
            out.mismatches += r.mismatches
            out.unfinished += r.unfinished
            out.first_replied += r.first_replied
            for kind, n in r.errors.items():
                out.errors[kind] = out.errors.get(kind, 0) + n
            for kind, text in r.error_samples.items():
                out.error_samples.setdefault(kind, text)
            out.latency.add(r.latency)
            out.first_latency.add(r.first_latency)
        # Over the longest part: the parts started together (one run's
        # processes, or hosts started at once), so this is the wall clock.
        out.replies_per_s = (out.verified + out.mismatches) / out.elapsed if out.elapsed > 0 else 0.0
        firsts = [r.first_reply for r in results]
        out.first_reply = None if any(f is None for f in firsts) else max(f for f in firsts if f is not None)
        return out

    # -- verdict -------------------------------------------------------

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def problems(self) -> list[str]:
        """What went wrong, in words; empty when the run was clean."""
        out = []
        if self.mismatches:
            out.append(f"{self.mismatches:,} mismatched repl{'y' if self.mismatches == 1 else 'ies'}")
        if self.error_count:
            kinds = ", ".join(f"{k} {n:,}" for k, n in self._sorted_errors() if n)
            out.append(f"{self.error_count:,} error{'s' if self.error_count != 1 else ''} ({kinds})")
        if self.gave_up:
            out.append(f"{self.gave_up:,} connection{'s' if self.gave_up != 1 else ''} gave up after failing to connect")
        if self.verified == 0:
            out.append("no reply was verified")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems()

    def _sorted_errors(self) -> list[tuple[str, int]]:
        known = [(k, self.errors.get(k, 0)) for k in ERROR_KINDS]
        others = sorted((k, n) for k, n in self.errors.items() if k not in ERROR_KINDS)
        return known + others

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
        return {
            "format": FORMAT_VERSION,
            "target": self.target,
            "connections": self.connections,
            "protocol": self.protocol,
            "size": self.size,
            "mode": self.mode,
            "parts": self.parts,
            "interrupted": self.interrupted,
            "elapsed": self.elapsed,
            "replies_per_s": self.replies_per_s,
            "opened": self.opened,
            "failed": self.failed,
            "gave_up": self.gave_up,
            "requests": self.requests,
            "verified": self.verified,
            "mismatches": self.mismatches,
            "unfinished": self.unfinished,
            "errors": {k: n for k, n in self._sorted_errors()},
            "error_samples": dict(self.error_samples),
            "security": self.security,
            "first_reply": self.first_reply,
            "first_replied": self.first_replied,
            "latency_us": self.percentiles(),
            "latency_count": self.latency.get_total_count(),
            "first_exchange_us": first_pct,
            "ok": self.ok,
            "problems": self.problems(),
            "histogram": encode_histogram(self.latency),
            "first_histogram": encode_histogram(self.first_latency),
        }

    def write_json(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")

    @classmethod
    def read_json(cls, path: str) -> LoadResult:
        with open(path, encoding="utf-8") as f:
            return cls.from_part(json.load(f))

    def render(self) -> str:
        """The final report, as plain text."""
        replies = self.verified + self.mismatches
        pct = self.percentiles()
        lines = []
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
        req = f"{self.requests:,} in {self.elapsed:.2f} s, {self.replies_per_s:,.0f} replies/s"
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
            lines.append(f"               over {self.latency.get_total_count():,} replies "
                         "(each connection's first exchange left out)")
        if self.first_reply is not None:
            first = f"every connection had its first reply {self.first_reply:.3f} s after the start"
        else:
            first = f"{self.first_replied:,} of {self.connections:,} connections had a first reply"
        if self.first_latency.get_total_count():
            first += (f" (first exchanges: p50 {format_us(self.first_latency.get_value_at_percentile(50.0))},"
                      f" max {format_us(self.first_latency.get_max_value())})")
        lines.append(f"  first reply  {first}")
        lines.append(f"  replies      {self.verified:,} verified, {self.mismatches:,} mismatched"
                     + ("" if replies == self.requests else f", {self.requests - replies:,} lost to errors"))
        errs = ", ".join(f"{k} {n:,}" for k, n in self._sorted_errors())
        lines.append(f"  errors       {errs}")
        for kind, n in self._sorted_errors():
            if n and kind in self.error_samples:
                lines.append(f"               {kind}: {self.error_samples[kind]}")
        problems = self.problems()
        lines.append("  result       " + ("OK" if not problems else "FAILED: " + "; ".join(problems)))
        return "\n".join(lines)


def _pname(p: float) -> str:
    return f"p{p:g}"
