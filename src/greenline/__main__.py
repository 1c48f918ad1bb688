"""The ``greenline`` command: ``greenline serve|load|demo|bench|lab ...``.

Each subcommand lives in :mod:`greenline.tools`, in the module named for
what it does; that module defines ``add_parser(subparsers)`` (which sets
``func`` on its parser) and this file only gathers them.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
import warnings

# subcommand -> module that implements it
COMMANDS = {
    "serve": "greenline.tools.serve",
    "load": "greenline.tools.load",
    "demo": "greenline.tools.demo",
    "bench": "greenline.tools.bench",
    "lab": "greenline.tools.lab",
    "run": "greenline.tools.run",
}


# On a free-threaded build, the load client's histograms (hdrhistogram's C
# extension, which has not declared that it can run without the GIL) turn
# the GIL back on when imported.  That is accepted for `greenline load` (and
# the commands that run it in-process) and said once in the docs, not on
# every run; `greenline serve` never imports them and keeps the GIL off.
warnings.filterwarnings("ignore", message=r".*GIL.*has been enabled to load module 'pyhdrh'",
                        category=RuntimeWarning)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line; with ``only``, just that subcommand's module is
    imported (``greenline serve`` must not load the load client's
    dependencies)."""
    from greenline import __version__

    parser = argparse.ArgumentParser(
        prog="greenline",
        description="Green threads for Python: servers, load tests and measurements.",
    )
    parser.add_argument("--version", action="version", version=f"greenline {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(module_name).add_parser(sub)
    return parser


def unknown_command(word: str) -> str:
    """The one line for a command that does not exist: the nearest one if
    it looks like a typo (argparse says so itself only from Python 3.14)."""
    near = difflib.get_close_matches(word, list(COMMANDS), n=1, cutoff=0.6)
    hint = f"did you mean '{near[0]}'?" if near else "the commands are " + ", ".join(COMMANDS)
    return f"greenline: unknown command '{word}' ({hint})"


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words and not words[0].startswith("-") and words[0] not in COMMANDS:
        print(unknown_command(words[0]), file=sys.stderr)
        return 2
    parser = build_parser(words[0] if words and words[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
