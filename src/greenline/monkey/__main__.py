"""``python -m greenline.monkey [--no-NAME ...] [--module] TARGET ARGS...``:
run an unmodified program with the standard library patched.

The program sees the one ``greenline.monkey`` package (with one set of
saved originals): this file is only the command line.
"""

from __future__ import annotations

import sys

from greenline.monkey import patch_all

__all__ = ["main"]

_USAGE = """\
usage: python -m greenline.monkey [--no-NAME ...] [--module] TARGET [ARGS...]

Run a Python script (or, with --module, a module, as python -m does) with the
standard library patched by greenline.monkey.patch_all().  TARGET sees
sys.argv as it would when run directly and __name__ == "__main__"; its exit
status is this command's.

  --module, -m   TARGET is a module name
  --no-NAME      leave NAME unpatched; NAME is one of:
                 {names}
"""

_KEYWORDS = ("socket", "dns", "time", "select", "selectors", "thread", "threading", "queue",
             "ssl", "subprocess", "os", "signal", "logging", "multiprocessing")


def main(argv: list[str] | None = None) -> int:
    """``python -m greenline.monkey [--module] TARGET ARGS...``"""
    import os
    import runpy

    args = list(sys.argv[1:] if argv is None else argv)
    options: dict[str, bool] = {}
    module = False
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt in ("-h", "--help"):
            print(_USAGE.format(names=", ".join(_KEYWORDS)), end="")
            return 0
        if opt in ("--module", "-m"):
            module = True
        elif opt.startswith("--no-") and opt[5:] in _KEYWORDS:
            options[opt[5:]] = False
        elif opt == "--":
            break
        else:
            print(f"greenline.monkey: unknown option {opt!r}", file=sys.stderr)
            print(_USAGE.format(names=", ".join(_KEYWORDS)), end="", file=sys.stderr)
            return 2
    if not args:
        print(_USAGE.format(names=", ".join(_KEYWORDS)), end="", file=sys.stderr)
        return 2
    target = args[0]
    patch_all(**options)
    if module:
        sys.argv[:] = [target] + args[1:]
        # As python -m: the module's own __file__ becomes argv[0].
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.argv[:] = args
        # As python script.py: the script's directory comes first on the path.
        sys.path[0] = os.path.dirname(os.path.abspath(target))
        runpy.run_path(target, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
