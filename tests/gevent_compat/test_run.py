"""``greenline run [--as-gevent]``: the import hook and the command, in
fresh processes as users run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def _run(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.run([sys.executable, "-m", "greenline", "run", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=timeout)


def test_import_gevent_resolves_to_greenline_and_never_to_the_real_one(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(
        "import sys, gevent, gevent.pool, gevent.queue, gevent.monkey\n"
        "from gevent import pywsgi, server, threadpool\n"
        "assert gevent.__name__ == 'greenline.gevent', gevent.__name__\n"
        "assert gevent.pool.Pool.__module__ == 'greenline.pool'\n"
        "assert not [m for m, mod in sys.modules.items()\n"
        "            if 'site-packages/gevent/' in (getattr(mod, '__file__', '') or '')]\n"
        "print(gevent.__version__, sys.argv[1:], gevent.spawn(lambda: 6 * 7).get())\n")
    done = _run("--as-gevent", str(script), "a", "b")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["26.9.0", "['a',", "'b']", "42"]


def test_module_mode_and_a_missing_gevent_module(tmp_path):
    (tmp_path / "mod.py").write_text("import sys, gevent.hub; print(sys.argv[1:]); import gevent.nope\n")
    done = _run("--as-gevent", "-m", "mod", "-k", "x", cwd=tmp_path)
    assert "['-k', 'x']" in done.stdout
    assert done.returncode == 1 and "No module named 'gevent.nope'" in done.stderr


def test_without_the_flag_it_patches_like_greenline_monkey(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text("import socket, greenline.socket\n"
                      "print(socket.socket is greenline.socket.socket)\n")
    done = _run(str(script))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


@pytest.mark.parametrize("args", [[], ["--as-gevent"], ["--as-gevent", "-m"], ["--bogus", "x.py"],
                                  ["--as-gevent", "no_such_script.py"]])
def test_bad_input_gets_one_line_and_exit_2(args):
    done = _run(*args)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
