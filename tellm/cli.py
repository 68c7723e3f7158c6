"""The ``tellm`` command. Each subcommand lives in its own module with ``register(subparsers)``;
handlers import their heavy dependencies lazily so that ``tellm --help`` stays fast and the
controller side never imports torch."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .errors import CLIError

# Module paths, in the order they appear in --help. Each exposes register(subparsers).
COMMAND_MODULES = [
    "tellm.commands.eval",
    "tellm.commands.paths",
    "tellm.commands.model",
    "tellm.commands.serve",
    "tellm.commands.controller",
    "tellm.commands.policy",
    "tellm.commands.demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tellm",
        description="tellm: real-time SDN traffic engineering. Learned TE head on ONNX Runtime, "
                    "os-ken OpenFlow controller, LLM policy loop.",
    )
    parser.add_argument("--version", action="version", version=f"tellm {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from tecore import LPError, PathError, TopologyError, TrafficError

    try:
        return int(args.func(args) or 0)
    except (CLIError, TopologyError, TrafficError, PathError, LPError, FileNotFoundError) as exc:
        print(f"tellm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tellm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
