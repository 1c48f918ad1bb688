"""greenline bench: the harness on a tiny configuration (driven by the C
client and by greenline load), the C client itself (every reply checked,
latency, the burst start, its file descriptor limit), building it, the
table, the charts, and peers that are missing or do not start."""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from greenline.tools import bench, cclient
from greenline.tools.bench import REFERENCE, BenchConfig, Run, ServerSpec

PNG = b"\x89PNG\r\n\x1a\n"
# matplotlib is a [bench] extra: without it the bench writes no charts and says so.
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None

# The C client is built with the system's C compiler (cached in
# ~/.cache/greenline); where there is none its tests are skipped, saying so.
C_CLIENT, C_NOTE = cclient.build_client()
needs_c_client = pytest.mark.skipif(C_CLIENT is None, reason=f"the C client cannot be built here: {C_NOTE}")

# A server that answers every line unchanged instead of upper-cased.
WRONG_SERVER = textwrap.dedent("""
    import socket, threading
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(2048)
    print("listening on %s:%d" % s.getsockname(), flush=True)
    def serve(c):
        while data := c.recv(1024):
            c.sendall(data)
        c.close()
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
""")


def _start(argv: list[str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("listening on "), line
    return proc, int(line.rsplit(":", 1)[1])


@pytest.fixture
def upper_server():
    """A correct echo-upper server (asyncio Protocol, stdlib only): its port."""
    proc, port = _start([sys.executable, "-m", "greenline.tools.peers.asyncio_protocol", "--port", "0"])
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def wrong_server():
    proc, port = _start([sys.executable, "-c", WRONG_SERVER])
    yield port
    proc.kill()
    proc.wait(10)


def _client(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    assert C_CLIENT is not None
    return subprocess.run([str(C_CLIENT), *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("client", [pytest.param("c", marks=needs_c_client), "python"])
def test_tiny_bench_writes_the_table_results_and_charts(tmp_path: Path, client: str) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "greenline", "bench", "--servers", "greenline,asyncio Protocol",
         "--connections", "3", "--duration", "1.5", "--rounds", "1", "--big", "20", "--big-duration", "1.5",
         "--client", client, "--out", str(out)],
        capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr
    table = (out / "bench.md").read_text()
    assert table.strip() in proc.stdout
    # The report says what drove the servers.
    if client == "c":
        assert "- load: the C client (`upper_client.c`" in table and "greenline load" not in table
        assert "20 connections: all opened first, then the first line sent on every one at once" in table
    else:
        assert "- load: `greenline load --procs 1`" in table and "C client" not in table
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
    assert all(r["ok"] and r["cpu_us"] > 0 and r["rate"] > 0 and r["client"] == client for r in results)
    assert all(0 < r["p50_us"] <= r["p99_us"] for r in results)
    for r in results:
        if r["connections"] == 20:
            assert r["first_replied"] == 20 and r["first_reply_s"] > 0 and r["rss_per_conn"] is not None


# -- the C client ------------------------------------------------------------------


@needs_c_client
@pytest.mark.timeout(30)
def test_c_client_reports_requests_and_latency_of_the_window(upper_server: int) -> None:
    r = _client("127.0.0.1", str(upper_server), "10", "0.2", "0.5")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:2] == ["mark start", "mark end"] and len(lines) == 3
    res = cclient.parse_result(lines[2])
    assert res["connections"] == 10 and res["requests"] > 0 and 0.4 < res["seconds"] < 1.5
    assert 0 < res["p50_us"] <= res["p90_us"] <= res["p99_us"] <= res["max_us"]
    assert "first_got" not in res  # only the burst start times first replies


@needs_c_client
@pytest.mark.timeout(30)
def test_c_client_burst_times_every_first_reply(upper_server: int) -> None:
    r = _client("-b", "127.0.0.1", str(upper_server), "300", "0.2", "0.5")
    assert r.returncode == 0, r.stderr
    res = cclient.parse_result(r.stdout.splitlines()[-1])
    assert res["first_got"] == 300 and res["first_missing"] == 0
    assert 0 < res["first_p99_s"] <= res["first_max_s"] < 5 and res["connect_s"] >= 0
    assert res["requests"] > 0


# Answers (upper-cased) every other connection it accepts; holds the rest
# open without a word.
HALF_SERVER = textwrap.dedent("""
    import socket, threading
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(2048)
    print("listening on %s:%d" % s.getsockname(), flush=True)
    def serve(c):
        while data := c.recv(1024):
            c.sendall(data.upper())
    held = []
    while True:
        c, _ = s.accept()
        held.append(c)
        if len(held) % 2:
            threading.Thread(target=serve, args=(c,), daemon=True).start()
""")


@needs_c_client
@pytest.mark.timeout(30)
def test_c_client_burst_counts_the_connections_never_answered() -> None:
    proc, port = _start([sys.executable, "-c", HALF_SERVER])
    try:
        r = _client("-b", "127.0.0.1", str(port), "20", "0.2", "0.3")
    finally:
        proc.kill()
        proc.wait(10)
    assert r.returncode == 0, r.stderr  # the others were answered: a figure, not a failure
    res = cclient.parse_result(r.stdout.splitlines()[-1])
    assert (res["first_got"], res["first_missing"]) == (10, 10) and res["requests"] > 0


@needs_c_client
@pytest.mark.timeout(30)
def test_c_client_fails_when_nothing_is_answered() -> None:
    proc, port = _start([sys.executable, "-c", HALF_SERVER])
    try:
        # One connection, the server's second: accepted, never answered.
        r = _client("-b", "127.0.0.1", str(port), "1", "0", "0.3")
        r = _client("-b", "127.0.0.1", str(port), "1", "0", "0.3")
    finally:
        proc.kill()
        proc.wait(10)
    assert r.returncode == 1 and "no reply at all in the window" in r.stderr
    assert "first_missing=1" in r.stdout


@needs_c_client
@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", [[], ["-b"]], ids=["one-at-a-time", "burst"])
def test_c_client_fails_on_a_wrong_reply(wrong_server: int, mode: list[str]) -> None:
    r = _client(*mode, "127.0.0.1", str(wrong_server), "5", "0.1", "0.3")
    assert r.returncode == 1
    assert "wrong reply: abcdefghijklmnopqrstuvwxyz01234" in r.stderr
    assert "result" not in r.stdout


@needs_c_client
@pytest.mark.timeout(30)
def test_c_client_reports_a_failed_connect() -> None:
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        r = _client("-b", "127.0.0.1", str(port), "3", "0", "0.2")
    assert r.returncode == 1 and "connect" in r.stderr and "refused" in r.stderr


@needs_c_client
@pytest.mark.timeout(30)
def test_c_client_says_so_when_it_cannot_have_the_descriptors_it_needs() -> None:
    # More than the kernel allows any process (fs.nr_open), even root.
    too_many = int(Path("/proc/sys/fs/nr_open").read_text()) + 1
    r = _client("127.0.0.1", "9", str(too_many), "0", "1")
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1
    assert f"{too_many} connections need" in r.stderr and "RLIMIT_NOFILE" in r.stderr


@needs_c_client
@pytest.mark.timeout(60)
def test_bench_marks_a_server_with_wrong_replies_as_failed(tmp_path: Path) -> None:
    wrong = ServerSpec("wrong", (sys.executable, "-c", WRONG_SERVER))
    runs, notes = bench.run_bench([wrong], BenchConfig(connections=(5,), duration=1.5, rounds=1, big=0,
                                                       out=tmp_path))
    assert [(r.server, r.client, r.ok, r.cpu_us) for r in runs] == [("wrong", "c", False, None)]
    assert "the C client failed (exit 1): wrong reply" in runs[0].problems[0]
    assert any(n.startswith("wrong at 5 connections, round 1: the C client failed") for n in notes)
    text = bench.markdown(runs, notes, BenchConfig(big=0, out=tmp_path), ["wrong"], "# h")
    assert "| wrong ⚠ | – |" in text


def test_without_a_compiler_the_bench_falls_back_to_greenline_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cclient, "build_client",
                        lambda *a: (None, "no C compiler (cc, gcc, clang): the C client is not available"))
    cfg = BenchConfig()
    exe, notes = bench.resolve_client(cfg)
    assert exe is None and cfg.client == "python"
    assert notes == ["no C compiler (cc, gcc, clang): the C client is not available: greenline load drove the "
                     "servers instead, a Python client on the same cores, which shapes every server's figures"]
    assert bench.load_lines(cfg)[0].startswith("- load: `greenline load --procs 1`")


def test_build_client_caches_by_source_and_notes_a_missing_compiler(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    exe, note = cclient.build_client(tmp_path / "cache")
    assert exe is None and "\n" not in note and note.endswith("the C client is not available")
    assert "no-such-cc" in note
    if C_CLIENT is None:
        return
    monkeypatch.delenv("CC")
    exe, note = cclient.build_client(tmp_path / "cache")
    assert exe is not None and note == "" and exe.parent == tmp_path / "cache"
    built = exe.stat().st_mtime_ns
    assert cclient.build_client(tmp_path / "cache") == (exe, "") and exe.stat().st_mtime_ns == built
    changed = tmp_path / "upper_client.c"
    changed.write_text(cclient.SOURCE.read_text() + "/* changed */\n")
    exe2, _ = cclient.build_client(tmp_path / "cache", source=changed)
    assert exe2 is not None and exe2 != exe  # a changed source is built again
    broken = tmp_path / "broken.c"
    broken.write_text("int main(void) { return nope; }\n")
    exe3, note = cclient.build_client(tmp_path / "cache", source=broken)
    assert exe3 is None and note.startswith("the C client did not compile") and "\n" not in note


def test_the_c_client_source_ships_in_the_package() -> None:
    assert cclient.SOURCE.exists() and cclient.SOURCE.parent.name == "tools"
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"tools/upper_client.c"' in pyproject


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
    assert main(["bench", "--client", "wrk"]) == 2  # wrk speaks HTTP
    assert main(["bench", "--http", "--client", "c"]) == 2
    err = capsys.readouterr().err
    assert "greenline bench:" in err and "--client wrk drives HTTP servers" in err
    assert "--client c drives the line protocol" in err
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
