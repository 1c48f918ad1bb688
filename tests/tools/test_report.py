"""greenline.tools.report on its own: merging the parts of a run, the verdict
in words, latencies for people. (The load tests reach this module through a
``greenline load`` child process, where mutation testing sees no hit; these
call it directly. Issue 18, docs/testing.md.)"""

from __future__ import annotations

import json

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
    assert LoadResult.merge([LoadResult(elapsed=0.5, verified=3)]).replies_per_s == 6.0
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


def test_problems_of_an_http_run_speak_of_responses_and_statuses():
    one = LoadResult(protocol="http", verified=5, mismatches=1, statuses={"200": 5, "503": 1},
                     expect_status="2xx")
    assert one.problems() == ["1 response with an unexpected status (503 1; expected 2xx)"]
    bad = LoadResult(protocol="https", mismatches=3, statuses={"500": 2, "404": 1}, expect_status="2xx,3xx",
                     errors={"reset": 2, "refused": 1})
    assert bad.problems() == ["3 responses with an unexpected status (404 1, 500 2; expected 2xx,3xx)",
                              "3 errors (refused 1, reset 2)", "no response had an expected status"]


def test_format_us_picks_the_unit():
    assert [format_us(x) for x in (None, 0, 999, 1500, 2_500_000)] == \
        ["-", "0 µs", "999 µs", "1.50 ms", "2.500 s"]
    # The boundaries belong to the larger unit; each unit divides exactly.
    assert [format_us(x) for x in (1000, 999_000, 1_000_000, 1_000_000_000)] == \
        ["1.00 ms", "999.00 ms", "1.000 s", "1000.000 s"]


# The keys a part must have.
REQUIRED = ("connections", "elapsed", "opened", "failed", "requests", "verified", "mismatches")


def test_a_part_read_back_is_the_part_written():
    r = LoadResult(connections=2, elapsed=2.0, opened=2, requests=12, verified=10, mismatches=2,
                   first_reply=0.25, first_replied=2, errors={"reset": 1}, target="h:1")
    again = LoadResult.from_part(json.loads(json.dumps(r.to_dict())))
    assert (again.connections, again.elapsed, again.requests, again.verified, again.mismatches) == \
        (2, 2.0, 12, 10, 2)
    assert again.first_reply == 0.25 and again.first_replied == 2 and again.target == "h:1"
    assert again.errors["reset"] == 1
    # A part without a reply rate gets one from its counts; one with a rate keeps it.
    assert again.replies_per_s == pytest.approx(12 / 2.0)
    assert LoadResult.from_part({**r.to_dict(), "replies_per_s": 7.5}).replies_per_s == 7.5
    # The required keys alone make a part (no "format": taken as the current one).
    least = LoadResult.from_part(dict.fromkeys(REQUIRED, 1))
    assert (least.connections, least.elapsed, least.first_reply, least.target) == (1, 1.0, None, "")
    assert least.replies_per_s == 2.0  # a verified and a mismatched reply in one second
    assert LoadResult.from_part({**dict.fromkeys(REQUIRED, 1), "elapsed": 0}).replies_per_s == 0.0


@pytest.mark.parametrize(("content", "why"), [
    ("", "Expecting value: line 1 column 1 (char 0)"),
    ("[1, 2]", "a result is a JSON object, not list"),
    ('{"format": 2, "connections": 1}', "unknown result format 2"),
    ('{"format": 1}', "missing 'connections'"),
    ('{"connections": 1, "elapsed": "soon"}', "could not convert string to float: 'soon'"),
])
def test_a_file_that_is_not_a_result_is_refused_in_one_line_naming_it(tmp_path, content, why):
    # What `greenline load merge` prints for each file it cannot use.
    path = tmp_path / "part.json"
    path.write_text(content)
    with pytest.raises(ValueError) as err:
        LoadResult.read_json(str(path))
    assert str(err.value) == f"{path} is not a greenline load result ({why})"


def test_a_file_that_cannot_be_read_is_named_with_the_reason(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(ValueError) as err:
        LoadResult.read_json(str(missing))
    assert str(err.value) == f"cannot read {missing}: No such file or directory"


def test_from_part_refuses_what_is_not_a_part():
    with pytest.raises(ValueError) as err:
        LoadResult.from_part([1])  # type: ignore[arg-type]
    assert str(err.value) == "a result is a JSON object, not list"
    with pytest.raises(ValueError) as err:
        LoadResult.from_part({"format": "2"})
    assert str(err.value) == "unknown result format '2'"
    with pytest.raises(KeyError) as err:
        LoadResult.from_part({key: 1 for key in REQUIRED if key != "verified"})
    assert err.value.args == ("verified",)
