"""greenline.tools.report on its own: merging the parts of a run, the verdict
in words, latencies for people. (The load tests reach this module through a
``greenline load`` child process, where mutation testing sees no hit; these
call it directly. Issue 18, docs/testing.md.)"""

from __future__ import annotations

import pytest

from greenline.tools.report import LoadResult, format_us


def test_merge_adds_the_parts_and_recomputes_the_reply_rate():
    a = LoadResult(connections=2, elapsed=2.0, verified=300, requests=300, target="h:1", security="")
    b = LoadResult(connections=3, elapsed=4.0, verified=500, mismatches=100, requests=600,
                   target="h:1", security="tls")
    m = LoadResult.merge([a, b])
    assert (m.connections, m.elapsed, m.requests, m.verified, m.mismatches) == (5, 4.0, 900, 800, 100)
    assert m.replies_per_s == pytest.approx(900 / 4.0)  # verified and mismatched, over the longest
    assert m.target == "h:1" and m.security == "tls"  # one target; empty security skipped
    assert LoadResult.merge([LoadResult()]).replies_per_s == 0.0  # no time, no rate
    with pytest.raises(ValueError, match="^nothing to merge$"):
        LoadResult.merge([])


def test_problems_name_each_failure_in_words():
    assert LoadResult(verified=5).problems() == [] and LoadResult(verified=5).ok
    assert LoadResult().problems() == ["no reply was verified"]
    one = LoadResult(verified=5, mismatches=1, errors={"reset": 2}, gave_up=1)
    assert one.problems() == ["1 mismatched reply", "2 errors (reset 2)",
                              "1 connection gave up after failing to connect"]
    many = LoadResult(verified=5, mismatches=2, errors={"reset": 1}, gave_up=3)
    assert many.problems() == ["2 mismatched replies", "1 error (reset 1)",
                               "3 connections gave up after failing to connect"]
    assert not many.ok


def test_format_us_picks_the_unit():
    assert [format_us(x) for x in (None, 0, 999, 1500, 2_500_000)] == \
        ["-", "0 µs", "999 µs", "1.50 ms", "2.500 s"]
