"""The ``greenline`` command: ``greenline serve|load|demo|bench|lab ...``.

Each subcommand lives in :mod:`greenline.tools`, in the module named for
what it does; that module defines ``add_parser(subparsers)`` (which sets
``func`` on its parser) and this file only gathers them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module that implements it
COMMANDS = {
    "serve": "greenline.tools.serve",
    "load": "greenline.tools.load",
    "demo": "greenline.tools.demo",
    "bench": "greenline.tools.bench",
    "lab": "greenline.tools.lab",
    "run": "greenline.tools.run",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="greenline",
        description="Green threads for Python: servers, load tests and measurements.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
