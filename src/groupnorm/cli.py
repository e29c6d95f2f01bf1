"""The ``groupnorm`` command line: a thin dispatcher over the library.

Each subcommand lives in its own module, which provides ``register(subparsers)``; that function adds one or
more sub-parsers and sets ``func`` (taking the parsed args, returning an exit code) on each.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Modules that contribute subcommands, in the order shown by --help.
COMMAND_MODULES = [
    "groupnorm.demo",
    "groupnorm.convert_cli",
    "groupnorm.experiments.cli",
    "groupnorm.bench",
    "groupnorm.info",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="groupnorm",
        description="Group Normalization: reference, fast kernels, model surgery, paper reproduction.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"groupnorm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"groupnorm {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
