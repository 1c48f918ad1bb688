#!/usr/bin/env python3
"""Mutation testing, one module at a time, against that module's own tests.

    python scripts/mutation.py greenline/_core/timeout.py
    python scripts/mutation.py greenline/socket.py --time-limit 1800 --max-children 1
    python scripts/mutation.py greenline/lock.py --tests tests/test_lock.py tests/test_sync_properties.py

mutmut 3 reads its settings from ``pyproject.toml`` in the directory it runs
in, mutates a copy of ``src`` under ``mutants/`` and runs the tests there
(``mutants/src`` first on ``sys.path``, the real ``src`` taken off it).  To
point it at one module and its tests without touching the shared
pyproject.toml, this script makes a scratch directory ``mutants/<module>/``
(``mutants/`` is git-ignored) holding symlinks to ``src``, ``tests`` and
``examples`` and a pyproject.toml that is the repository's with
``[tool.mutmut]`` extended by
``only_mutate`` (this module) and ``pytest_add_cli_args_test_selection`` (its
tests: the mirrored test file, see ``TESTS``, or ``--tests``).  Child
processes the tests start (``greenline serve``, ``greenline load``) get
``PYTHONPATH`` pointing at the mutated copy too, so they run the mutant.

It prints killed / timeout / survived / no tests and the score (killed and
timed out over all mutants with tests), how long the run took, then the diff of
every survivor.  With ``--time-limit`` the run is stopped after that many
seconds and the mutants checked so far are reported (marked partial).  Exit
status: 0, or 1 if the score is below ``--fail-under``.  docs/testing.md
records the scores and explains every survivor.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A module's own tests, where the mirror rule (src/greenline/a/b.py ->
# tests/a/test_b.py) does not name them all.
TESTS: dict[str, list[str]] = {
    "greenline/lock.py": ["tests/test_lock.py", "tests/test_sync_properties.py"],
    "greenline/event.py": ["tests/test_event.py", "tests/test_sync_properties.py"],
    "greenline/queue.py": ["tests/test_queue.py", "tests/test_sync_properties.py"],
    "greenline/_core/waiters.py": ["tests/test_lock.py", "tests/test_event.py", "tests/test_queue.py"],
    # load.py holds the HTTP request loops too (load_http.py parses).
    "greenline/tools/load.py": ["tests/tools/test_load.py", "tests/tools/test_load_checks.py",
                                "tests/tools/test_load_http.py"],
    "greenline/tools/report.py": ["tests/tools/test_report.py", "tests/tools/test_load_http.py",
                                  "tests/tools/test_load.py", "tests/tools/test_load_checks.py"],
}

# Exit codes in mutmut's meta files (mutmut.stats.status_by_exit_code).
KILLED = {1, 3}
TIMEOUT = {36, 24, -24, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}


def module_path(arg: str) -> str:
    """'greenline/_core/timeout.py' from that, 'src/greenline/...', or a dotted name."""
    p = arg.removeprefix("./").removeprefix("src/")
    if not p.endswith(".py"):
        p = p.replace(".", "/") + ".py"
    if not (ROOT / "src" / p).is_file():
        raise SystemExit(f"mutation.py: no such module: src/{p}")
    return p


def tests_for(mod: str) -> list[str]:
    if mod in TESTS:
        return TESTS[mod]
    parts = Path(mod).parts[1:]  # without the package directory
    mirrored = Path("tests", *parts[:-1], "test_" + parts[-1])
    if not (ROOT / mirrored).is_file():
        raise SystemExit(f"mutation.py: no mirrored tests for {mod} ({mirrored}); name them with --tests")
    return [str(mirrored)]


def toml_value(v: object) -> str:
    # Strings, numbers, booleans and lists of them: JSON spells them as TOML does.
    return json.dumps(v)


def scratch_config(mod: str, tests: list[str], slow: bool) -> str:
    """The repository's pyproject.toml with [tool.mutmut] made for this run."""
    text = (ROOT / "pyproject.toml").read_text()
    base = tomllib.loads(text).get("tool", {}).get("mutmut", {})
    # Drop the section (up to the next table header) and write it anew.
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)
    conf = dict(base)
    conf["only_mutate"] = [f"src/{mod}"]
    conf["pytest_add_cli_args_test_selection"] = tests
    args = list(conf.get("pytest_add_cli_args", []))
    if slow and "-m" in args:
        i = args.index("-m")
        del args[i:i + 2]
    conf["pytest_add_cli_args"] = args
    lines = ["[tool.mutmut]"] + [f"{k} = {toml_value(v)}" for k, v in conf.items()]
    return text.rstrip() + "\n\n" + "\n".join(lines) + "\n"


def collect(work: Path, mod: str) -> dict[str, int | None]:
    meta = work / "mutants" / "src" / (mod + ".meta")
    if not meta.is_file():
        return {}
    data = json.loads(meta.read_text())
    return data.get("exit_code_by_key", {})  # type: ignore[no-any-return]


def sample_no_tests(work: Path, env: dict[str, str], tests: list[str], slow: bool, names: list[str],
                    n: int) -> dict[str, str]:
    """Run the whole selection against ``n`` of the mutants mutmut mapped to no
    test (the trampoline records no hit in a child process, so a function run
    only in ``greenline serve`` or ``greenline load`` children gets none):
    with MUTANT_UNDER_TEST set, this process and every child run the mutant.
    Stops at the first failing test.  Returns name -> killed / survived /
    timeout."""
    import random

    picked = sorted(random.Random(1).sample(names, min(n, len(names))))
    marks = [] if slow else ["-m", "not slow and not stdlib"]
    out: dict[str, str] = {}
    print(f"\nthe whole selection against {len(picked)} of the {len(names)} mutants with no tests:", flush=True)
    for name in picked:
        started = time.monotonic()
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
               *marks, *tests]
        proc = subprocess.Popen(cmd, cwd=work / "mutants", env={**env, "MUTANT_UNDER_TEST": name},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            code = proc.wait(timeout=900)
            verdict = "survived" if code == 0 else "killed" if code == 1 else f"other (pytest exit {code})"
        except subprocess.TimeoutExpired:
            verdict = "timeout"
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever its tests left running
        except ProcessLookupError:
            pass
        proc.wait()
        out[name] = verdict
        print(f"  {name}: {verdict} ({time.monotonic() - started:.0f} s)", flush=True)
    done = [v for v in out.values() if v in ("killed", "timeout", "survived")]
    caught = sum(v != "survived" for v in done)
    if done:
        print(f"sample: {caught} of {len(done)} caught ({100.0 * caught / len(done):.0f}%)")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("module", help="e.g. greenline/_core/timeout.py")
    ap.add_argument("--tests", nargs="+", help="test files to run (default: the module's own, see TESTS)")
    ap.add_argument("--slow", action="store_true", help="include tests marked slow")
    ap.add_argument("--max-children", type=int, default=2, help="mutants tested at once (default 2)")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="stop after this many seconds and report what was checked (partial)")
    ap.add_argument("--keep", action="store_true",
                    help="reuse the scratch directory's earlier results instead of starting afresh")
    ap.add_argument("--report-only", action="store_true",
                    help="do not run mutmut: report the scratch directory's results (of an earlier run)")
    ap.add_argument("--no-diffs", action="store_true", help="do not print the survivors' diffs")
    ap.add_argument("--fail-under", type=float, default=0.0, help="exit 1 if the score (%%) is below this")
    ap.add_argument("--json", help="also write the counts and survivors' names to this file")
    ap.add_argument("--sample-no-tests", type=int, default=0, metavar="N",
                    help="then run the whole test selection against N mutants (drawn at random, seed 1) "
                         "that mutmut found no test for: code run only in child processes")
    ap.add_argument("--sample-only", metavar="TEXT",
                    help="draw that sample only from the mutants whose name contains TEXT (a function)")
    args = ap.parse_args()

    mod = module_path(args.module)
    tests = args.tests or tests_for(mod)
    for t in tests:
        if not (ROOT / t).is_file():
            raise SystemExit(f"mutation.py: no such test file: {t}")
    work = ROOT / "mutants" / mod.removesuffix(".py").replace("/", ".")
    if work.exists() and not (args.keep or args.report_only):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    # examples/: tests start servers from examples/apps (mutmut copies it
    # next to the tests: also_copy in [tool.mutmut]).
    for name in ("src", "tests", "examples"):
        link = work / name
        if not link.exists():
            link.symlink_to(ROOT / name)
    (work / "pyproject.toml").write_text(scratch_config(mod, tests, args.slow))

    env = dict(os.environ)
    # Subprocesses started by the tests (serve, load) import the mutated copy
    # and run the mutant under test (mutmut passes its name in
    # MUTANT_UNDER_TEST).  While mutmut maps tests to functions ("stats"), a
    # child must run the original code: the trampoline would record the hit
    # by reading mutmut's configuration from the child's directory, and fail.
    child_site = work / "child-site"
    child_site.mkdir(exist_ok=True)
    (child_site / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('MUTANT_UNDER_TEST') in ('stats', 'mutant_generation', 'list_all_tests'):\n"
        "    os.environ['MUTANT_UNDER_TEST'] = ''\n")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(child_site), str(work / "mutants" / "src"), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-c", "import sys; from mutmut.__main__ import cli; sys.exit(cli())",
           "run", "--max-children", str(args.max_children)]
    print(f"mutmut on src/{mod} against {' '.join(tests)}" + (" (slow tests too)" if args.slow else ""),
          flush=True)
    # mutmut puts mutants/src on sys.path (and takes src off) when it
    # starts, only if it exists: on a fresh run it did not yet, and the
    # first unmutated test run failed on "No module named 'greenline'".
    (work / "mutants" / "src").mkdir(parents=True, exist_ok=True)
    log_path = work / "mutmut.log"
    started = time.monotonic()
    partial = False
    returncode: int | None = 0
    if not args.report_only:
        for attempt in range(3):
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
                left = None if args.time_limit is None else max(1.0, args.time_limit - (time.monotonic() - started))
                try:
                    proc.wait(timeout=left)
                except subprocess.TimeoutExpired:
                    partial = True
                    # The run, its forked mutants and whatever their tests started.
                    os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
            # mutmut first runs the tests once unmutated (to map tests to
            # functions, then as a clean run); a timing test failing there on a
            # loaded machine stops it before any mutant.  Try again: the stats
            # it collected are kept.
            returncode = proc.returncode
            if partial or returncode == 0 or "Failed to run" not in log_path.read_text(errors="replace"):
                break
            print(f"mutmut's unmutated test run failed (attempt {attempt + 1}); trying again", flush=True)
            log_path.rename(log_path.with_suffix(f".failed{attempt + 1}.log"))
    took = time.monotonic() - started
    codes = collect(work, mod)
    if not codes or (returncode not in (0, None) and not partial and not any(
            c is not None for c in codes.values())):
        print(log_path.read_text(errors="replace")[-4000:])
        print(f"mutation.py: mutmut failed (exit {returncode}); log: {log_path}")
        return 2

    killed = sorted(k for k, c in codes.items() if c in KILLED)
    timeout = sorted(k for k, c in codes.items() if c in TIMEOUT)
    survived = sorted(k for k, c in codes.items() if c in SURVIVED)
    no_tests = sorted(k for k, c in codes.items() if c in NO_TESTS)
    unchecked = sorted(k for k, c in codes.items() if c is None)
    other = sorted(k for k, c in codes.items()
                   if c is not None and c not in KILLED | TIMEOUT | SURVIVED | NO_TESTS)
    checked = len(killed) + len(timeout) + len(survived)
    score = 100.0 * (len(killed) + len(timeout)) / checked if checked else 0.0
    print(f"src/{mod}: {len(codes)} mutants; killed {len(killed)}, timeout {len(timeout)}, "
          f"survived {len(survived)}, no tests {len(no_tests)}, other {len(other)}, "
          f"not checked {len(unchecked)}")
    print(f"score {score:.1f}% ({len(killed) + len(timeout)} of {checked} checked, timeouts count as killed)"
          f" in {took:.0f} s{' - PARTIAL: stopped at the time limit' if partial else ''}")
    if other:
        print("other outcomes (suspicious, segfault...):", ", ".join(f"{k}={codes[k]}" for k in other))
    if no_tests:
        print("no tests reach:", ", ".join(no_tests))
    if survived and not args.no_diffs:
        print("\nsurvivors:")
        for name in survived:
            diff = subprocess.run(
                [sys.executable, "-c", "import sys; from mutmut.__main__ import cli; sys.exit(cli())",
                 "show", name], cwd=work, env=env, capture_output=True, text=True)
            print(f"--- {name}")
            print(diff.stdout.strip() or diff.stderr.strip())
    sample: dict[str, str] = {}
    pool = [n for n in no_tests if args.sample_only is None or args.sample_only in n]
    if args.sample_no_tests and pool:
        sample = sample_no_tests(work, env, tests, args.slow, pool, args.sample_no_tests)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "module": f"src/{mod}", "tests": tests, "seconds": round(took), "partial": partial,
            "killed": len(killed), "timeout": len(timeout), "survived": survived,
            "no_tests": no_tests, "not_checked": len(unchecked), "score": round(score, 1),
            "no_tests_sample": sample}, indent=1))
    return 1 if score < args.fail_under else 0


if __name__ == "__main__":
    sys.exit(main())
