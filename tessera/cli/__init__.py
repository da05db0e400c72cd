"""The ``tessera`` command: a thin layer over the Python API, one module per command.

Each command module defines ``register(subparsers)`` (which adds its parser and sets
``func``). Errors about the user's input (a TesseraError, or an OSError about one of their
files) print one line and exit with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable

#: command modules, in the order ``tessera --help`` lists them
COMMANDS = [
    "demo", "train", "evaluate", "predict", "explain", "windows", "make_moving_digits", "list_models", "summary",
    "convert", "inflate", "benchmark", "export", "info",
]


class UsageError(Exception):
    """A command line that argparse cannot parse; ``prog`` is the (sub)command it concerns."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``tessera train: error: ...``) and exit
    status 2, as every other error of the command line, instead of a usage block."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(self.prog, f"{message} (see {self.prog} --help)")


def count(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer of at least ``minimum`` (batch sizes, top-k, workers)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer of at least {minimum}, got {text!r}")
        return value

    return parse


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tessera-vision")
    except PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tessera", description="Hierarchical vision transformers on PyTorch.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("--version", action="version", version=f"tessera {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..errors import TesseraError

    parser = build_parser()
    try:
        # KEY=VALUE overrides may follow options (``--model NAME num_classes=10``), which plain
        # argparse does not accept after its positionals: they join the command's ``overrides``
        args, extra = parser.parse_known_args(argv)
        if extra:
            if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
                prog = f"tessera {args.command}" if getattr(args, "command", None) else "tessera"
                raise UsageError(prog, f"unrecognized arguments: {' '.join(extra)} (see {prog} --help)")
            args.overrides = [*args.overrides, *extra]
    except UsageError as e:
        print(f"{e.prog}: error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except TesseraError as e:
        if args.debug:
            raise
        print(f"tessera {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file or folder of the user's that cannot be read or written
        if args.debug:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"tessera {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tessera {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
