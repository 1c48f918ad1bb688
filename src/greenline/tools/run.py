"""``greenline run [--as-gevent] script.py | -m module [args...]``: run an
unmodified program on greenline.

Without ``--as-gevent`` it is ``python -m greenline.monkey``: the standard
library is patched, then the program runs.  With it, ``import gevent`` and
every ``gevent.X`` resolve to :mod:`greenline.gevent` (an import hook; the
real gevent, installed or not, is never imported) and nothing is patched
before the program starts: gevent programs patch themselves
(``gevent.monkey.patch_all()``), and get greenline's patching when they do.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from typing import Any, NoReturn

__all__ = ["add_parser", "main", "run"]

_USAGE = "greenline run [--as-gevent] (SCRIPT | -m MODULE) [ARGS...]"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "run", prefix_chars="+", add_help=False,
        help="run an unmodified program patched, or a gevent program with --as-gevent",
        usage=_USAGE,
        description="Run a Python script (or -m a module) on greenline.  Without --as-gevent the "
                    "standard library is patched first (as python -m greenline.monkey).  With "
                    "--as-gevent, `import gevent` and gevent.* resolve to greenline's compatible "
                    "modules and the program patches what it patches itself.",
    )
    # Everything after ``run`` is ours to read (the program's own options
    # included): no option prefix argparse would act on.
    p.add_argument("program", nargs=argparse.REMAINDER,
                   help="[--as-gevent] SCRIPT [ARGS...] or [--as-gevent] -m MODULE [ARGS...]")
    p.set_defaults(func=main, as_gevent=False)
    # Bad input gets one line, not argparse's usage block.
    p.error = _parser_error  # type: ignore[method-assign]
    return p


def _parser_error(message: str) -> NoReturn:
    sys.exit(_usage_error(message))


def main(args: argparse.Namespace) -> int:
    program = list(args.program)
    as_gevent = args.as_gevent
    while program and program[0] in ("--as-gevent", "-h", "--help"):
        if program.pop(0) != "--as-gevent":
            print(f"usage: {_USAGE}\n\n{__doc__}", end="")
            return 0
        as_gevent = True
    module = None
    if program and program[0] == "-m":
        if len(program) < 2:
            return _usage_error("-m needs a module name")
        module, rest = program[1], program[2:]
    elif program and program[0].startswith("-m") and len(program[0]) > 2:
        module, rest = program[0][2:], program[1:]
    elif program and program[0].startswith("-"):
        return _usage_error(f"unknown option {program[0]!r}")
    elif program:
        rest = program[1:]
    else:
        return _usage_error("nothing to run")
    if not as_gevent:
        from greenline.monkey.__main__ import main as monkey_main

        return monkey_main((["--module", module] if module else [program[0]]) + rest)
    if module is None and not os.path.exists(program[0]):
        return _usage_error(f"no such script: {program[0]}")
    return run(program[0] if module is None else None, module, rest)


def run(script: str | None, module: str | None, argv: list[str]) -> int:
    """Run ``script`` (or ``module``) as ``__main__`` with gevent resolving
    to greenline."""
    from greenline.gevent.importhook import install

    install()
    if module is not None:
        sys.argv[:] = [module] + argv
        sys.path.insert(0, os.getcwd())
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        assert script is not None
        sys.argv[:] = [script] + argv
        sys.path[0] = os.path.dirname(os.path.abspath(script))
        runpy.run_path(script, run_name="__main__")
    return 0


def _usage_error(message: str) -> int:
    print(f"greenline run: {message} (usage: {_USAGE})", file=sys.stderr)
    return 2
