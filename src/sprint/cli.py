"""The `sprint` command line: a thin layer that parses options and calls one library function per command.

Each command lives in `sprint.commands.<name>` with `register(subparsers)`; heavy imports happen inside the
command's handler, so `sprint --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Order is the order shown in `sprint --help`.
COMMANDS = [
    "sprint.commands.demo",
    "sprint.commands.analyze",
    "sprint.commands.curate",
    "sprint.commands.countdown",
    "sprint.commands.train",
    "sprint.commands.run",
    "sprint.commands.eval",
    "sprint.commands.report",
]


def build_parser() -> argparse.ArgumentParser:
    from sprint import __version__

    parser = argparse.ArgumentParser(prog="sprint", description="SPRINT: interleaved planning and parallel "
                                     "execution for reasoning models.")
    parser.add_argument("--version", action="version", version=f"sprint {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError) as e:
        # Bad input: one clear line, no traceback.
        print(f"sprint {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
