"""greenline bench: the harness on a tiny configuration, the table, the
charts, and peers that are missing or do not start."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from greenline.tools import bench
from greenline.tools.bench import REFERENCE, BenchConfig, Run, ServerSpec

PNG = b"\x89PNG\r\n\x1a\n"
# matplotlib is a [bench] extra: without it the bench writes no charts and says so.
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_tiny_bench_writes_the_table_results_and_charts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "greenline", "bench", "--servers", "greenline,asyncio Protocol",
         "--connections", "3", "--duration", "1.5", "--rounds", "1", "--big", "20", "--big-duration", "1.5",
         "--out", str(out)],
        capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr
    table = (out / "bench.md").read_text()
    assert table.strip() in proc.stdout
    assert "### 3 connections" in table and "### 20 connections" in table
    rows = [ln for ln in table.splitlines() if ln.startswith(("| greenline |", "| asyncio Protocol |"))]
    assert len(rows) == 4  # each server at 3 and at 20 connections
    for row in rows:
        cpu = row.split("|")[2].strip()
        assert cpu.endswith(" µs") and float(cpu.split()[0]) > 0, row
    # The many-connections table has memory and first-reply columns.
    assert "RSS/connection" in table and "20/20" in table
    if HAVE_MATPLOTLIB:
        for chart in ("cpu_per_request.png", "many_connections.png"):
            assert (out / chart).read_bytes().startswith(PNG)
    else:
        assert "no charts: matplotlib is not installed" in proc.stdout
    results = json.loads((out / "results.json").read_text())["runs"]
    assert {(r["server"], r["connections"]) for r in results} == {
        ("greenline", 3), ("asyncio Protocol", 3), ("greenline", 20), ("asyncio Protocol", 20)}
    assert all(r["ok"] and r["cpu_us"] > 0 and r["rate"] > 0 for r in results)


def test_missing_peer_is_skipped_with_a_note(tmp_path: Path) -> None:
    missing = ServerSpec("ghost", (sys.executable, "-c", "pass"), requires=("greenline_no_such_peer_lib",))
    runs, notes = bench.run_bench([missing], BenchConfig(connections=(1,), big=0, out=tmp_path))
    assert runs == []
    assert notes == ["ghost: skipped, greenline_no_such_peer_lib not installed (pip install -e '.[bench]')"]


def test_a_server_that_does_not_start_is_skipped_with_a_note(tmp_path: Path) -> None:
    broken = ServerSpec("broken", (sys.executable, "-c", "import sys; sys.exit('no such thing')"))
    runs, notes = bench.run_bench([broken], BenchConfig(connections=(1, 2), rounds=2, big=0, out=tmp_path))
    assert runs == []
    assert len(notes) == 1  # tried once, not once per run
    assert notes[0].startswith("broken: skipped, could not start: exited with status 1")
    assert "no such thing" in notes[0]


def test_cli_skips_what_is_missing_and_still_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    ghost = ServerSpec("ghost", (sys.executable, "-c", "pass"), requires=("greenline_no_such_peer_lib",))
    monkeypatch.setattr(bench, "SERVERS", (ghost,))
    from greenline.__main__ import main

    assert main(["bench", "--servers", "ghost", "--out", str(tmp_path), "--no-charts"]) == 1  # nothing ran
    out = capsys.readouterr().out
    assert "ghost: skipped, greenline_no_such_peer_lib not installed" in out
    assert "ghost: skipped" in (tmp_path / "bench.md").read_text()


def test_table_ratios_are_against_the_seed_server_on_gevent(tmp_path: Path) -> None:
    runs = [
        Run("greenline", 100, cpu_us=6.0, rate=30000, p50_us=2000, p99_us=3000, ok=True),
        Run("greenline", 100, cpu_us=8.0, rate=20000, p50_us=2000, p99_us=3000, ok=True),
        Run("greenline", 100, cpu_us=7.0, rate=25000, p50_us=2000, p99_us=3000, ok=True),
        Run(REFERENCE, 100, cpu_us=10.0, rate=20000, p50_us=2500, p99_us=9000, ok=True),
        Run("greenline", 50, cpu_us=9.0, rate=20000, p50_us=1000, p99_us=1200, rss_per_conn=6 * 1024,
            first_reply_s=0.5, first_replied=50, ok=True),
        Run(REFERENCE, 50, cpu_us=12.0, rate=20000, p50_us=1000, p99_us=1300, rss_per_conn=8 * 1024,
            first_reply_s=0.7, first_replied=49, ok=False, problems=["1 timeout"]),
    ]
    cfg = BenchConfig(big=50, out=tmp_path)
    text = bench.markdown(runs, ["a note"], cfg, ["greenline", REFERENCE], "# header")
    row = next(ln for ln in text.splitlines() if ln.startswith("| greenline | 7.00 µs"))
    assert "| 6.00–8.00 | 0.70× | 25,000 | 2.00 ms | 3.00 ms |" in row  # medians, range, ratio
    big = next(ln for ln in text.splitlines() if ln.startswith("| greenline | 9.00 µs"))
    assert "| 0.75× |" in big and "| 1.20 |" in big and "| 6.0 KiB | 0.75× |" in big and "| 50/50 |" in big
    assert f"| {REFERENCE} ⚠ |" in text and "- a note" in text
    if HAVE_MATPLOTLIB:
        paths = bench.charts(runs, cfg, ["greenline", REFERENCE])
        assert [p.name for p in paths] == ["cpu_per_request.png", "many_connections.png"]
        assert all(p.read_bytes().startswith(PNG) for p in paths)


def test_report_rewrites_table_and_charts_from_results_json(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    runs = [Run("greenline", 100, cpu_us=6.0, rate=30000, p50_us=2000, p99_us=3000, ok=True),
            Run(REFERENCE, 100, cpu_us=8.0, rate=20000, p50_us=2500, p99_us=9000, ok=True)]
    saved = {"header": "# earlier run", "notes": ["uvloop: skipped"], "big": 0,
             "runs": [r.__dict__ for r in runs]}
    (tmp_path / "results.json").write_text(json.dumps(saved))
    from greenline.__main__ import main

    assert main(["bench", "--report", str(tmp_path / "results.json"), "--out", str(tmp_path / "again")]) == 0
    table = (tmp_path / "again" / "bench.md").read_text()
    assert table.startswith("# earlier run") and "| greenline | 6.00 µs | 6.00–6.00 | 0.75× |" in table
    assert "- uvloop: skipped" in table
    assert "earlier run" in capsys.readouterr().out
    assert main(["bench", "--report", str(tmp_path / "missing.json")]) == 2


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from greenline.__main__ import main

    assert main(["bench", "--servers", "nginx"]) == 2
    assert main(["bench", "--duration", "0.5"]) == 2
    assert "greenline bench:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--connections", "0"])


def test_quick_is_one_short_round_without_the_big_case() -> None:
    import argparse

    ns = argparse.Namespace(out=Path("x"), no_charts=False, quick=True, connections=None, duration=None,
                            rounds=None, big=None, big_duration=None, big_rounds=None)
    cfg = bench.config_from_args(ns)
    assert (cfg.connections, cfg.rounds, cfg.big) == ((1, 100, 5000), 1, 0)


# -- greenline bench --http --------------------------------------------------------

HAVE_WRK = shutil.which("wrk") is not None


def _wsgi_bench_error() -> str:
    try:
        bench.wsgi_bench()
    except bench.BenchError as e:
        return str(e)
    return ""


# bench --http runs bench/wsgi_cpu.py's servers: without it (an installed
# greenline, not a checkout) there is nothing to run.
needs_wsgi_bench = pytest.mark.skipif(bool(_wsgi_bench_error()), reason=_wsgi_bench_error() or "-")


@needs_wsgi_bench
@pytest.mark.timeout(120)
@pytest.mark.parametrize("client", ["greenline", pytest.param("wrk", marks=pytest.mark.skipif(
    not HAVE_WRK, reason="wrk is not installed"))])
def test_tiny_http_bench_writes_the_table_json_and_chart(tmp_path: Path, client: str) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "greenline", "bench", "--http", "--servers", "greenline", "--apps", "hello",
         "--connections", "10", "--duration", "1", "--rounds", "2", "--client", client, "--out", str(out)],
        capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = (out / "http.md").read_text()
    assert table.strip() in proc.stdout
    load = "wrk -t1 -c10" if client == "wrk" else "greenline load -c 10"
    assert f"### hello: hello world: 13 bytes of text/plain with a Content-Length ({load}, median of 2 runs)" \
        in table
    row = next(ln for ln in table.splitlines() if ln.startswith("| greenline |"))
    cells = [c.strip() for c in row.split("|")]
    assert cells[2].endswith(" µs") and float(cells[2].split()[0]) > 0, row
    assert cells[4] == "–"  # no gevent.pywsgi in this run to compare with
    assert int(cells[5].replace(",", "")) > 100 and cells[6].endswith("s") and cells[7].endswith("s")
    assert "greenline bench --http --apps hello --duration 1 --rounds 2" in table
    saved = json.loads((out / "http.json").read_text())
    assert saved["kind"] == "http" and len(saved["runs"]) == 2
    assert all(r["ok"] and r["cpu_us"] > 0 and r["client"] == client for r in saved["runs"])
    if HAVE_MATPLOTLIB:
        assert (out / "http_cpu_per_request.png").read_bytes().startswith(PNG)
    # The table again from the JSON, without running anything.
    from greenline.__main__ import main

    again = tmp_path / "again"
    assert main(["bench", "--report", str(out / "http.json"), "--out", str(again), "--no-charts"]) == 0
    assert (again / "http.md").read_text() == table


@needs_wsgi_bench
@pytest.mark.timeout(60)
def test_http_peer_not_installed_is_skipped_with_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wb = bench.wsgi_bench()
    monkeypatch.setitem(wb.REQUIRES, "waitress", "greenline_no_such_peer_lib")
    cfg = bench.HTTPConfig(apps=("hello",), servers=("waitress",), connections=(2,), duration=1.0, rounds=1,
                           client="greenline", out=tmp_path)
    runs, notes = bench.run_http_bench(cfg)
    assert runs == []
    assert notes == ["waitress: skipped, greenline_no_such_peer_lib not installed "
                     "(pip install greenline_no_such_peer_lib)"]


def test_http_table_ratios_are_against_pywsgi(tmp_path: Path) -> None:
    runs = [
        bench.HTTPRun("greenline", "hello", 100, cpu_us=20.0, rate=30000, p50_us=2000, p99_us=5000, ok=True),
        bench.HTTPRun("greenline", "hello", 100, cpu_us=24.0, rate=28000, p50_us=2200, p99_us=6000, ok=True),
        bench.HTTPRun("pywsgi", "hello", 100, cpu_us=40.0, rate=15000, p50_us=6000, p99_us=9000, ok=True),
        bench.HTTPRun("pywsgi", "hello", 100, cpu_us=44.0, rate=14000, p50_us=6500, p99_us=9500, ok=True),
        bench.HTTPRun("greenline", "flask", 100, cpu_us=100.0, rate=8000, p50_us=9000, p99_us=20000, ok=True),
        bench.HTTPRun("waitress", "flask", 100, cpu_us=300.0, rate=2000, p50_us=40000, p99_us=90000, ok=False,
                      problems=["Non-2xx or 3xx responses: 3"]),
    ]
    text = bench.http_markdown(runs, ["granian: skipped, granian not installed"], list(bench.HTTP_SERVERS),
                               "# header")
    assert "| greenline | 22.0 µs | 20.0–24.0 | 0.52× | 29,000 | 2.10 ms | 5.50 ms |" in text
    assert "| pywsgi | 42.0 µs | 40.0–44.0 | 1.00× | 14,500 | 6.25 ms | 9.25 ms |" in text
    assert "| waitress ⚠ | 300.0 µs | 300.0–300.0 | – |" in text  # no pywsgi run for flask: no ratio
    assert text.index("### hello") < text.index("### flask")
    assert "- granian: skipped, granian not installed" in text
    if HAVE_MATPLOTLIB:
        assert bench.http_chart(runs, tmp_path, list(bench.HTTP_SERVERS)).read_bytes().startswith(PNG)


def test_http_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from greenline.__main__ import main

    assert main(["bench", "--http", "--servers", "nginx"]) == 2
    assert main(["bench", "--http", "--apps", "django"]) == 2
    assert main(["bench", "--http", "--duration", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "no WSGI server 'nginx'" in err and "no application 'django'" in err
