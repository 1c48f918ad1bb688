"""The ``greenline`` command as a newcomer meets it: ``--version``, and a
mistyped command answered with the one it looks like (issue 15)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import greenline

SRC = str(Path(__file__).resolve().parent.parent / "src")


def greenline_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "greenline", *args], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHONPATH=SRC))


def test_version():
    r = greenline_cli("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"greenline {greenline.__version__}\n"


@pytest.mark.parametrize(("typed", "meant"), [("sevre", "serve"), ("lod", "load"), ("demmo", "demo"),
                                              ("bnech", "bench"), ("runn", "run")])
def test_a_mistyped_command_gets_did_you_mean(typed, meant):
    r = greenline_cli(typed, "--port", "0")
    assert r.returncode == 2
    assert r.stderr == f"greenline: unknown command '{typed}' (did you mean '{meant}'?)\n"
    assert r.stdout == ""


def test_an_unknown_command_lists_the_commands():
    r = greenline_cli("frobnicate")
    assert r.returncode == 2
    assert r.stderr.startswith("greenline: unknown command 'frobnicate' (the commands are serve, load")
    assert len(r.stderr.splitlines()) == 1
