"""The ``tessera`` command: a thin layer over the Python API, one module per command.

Each command module defines ``register(subparsers)`` (which adds its parser and sets
``func``). Errors about the user's input print one line and exit with status 2; ``--debug``
shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

#: command modules, in the order ``tessera --help`` lists them
COMMANDS = [
    "demo", "train", "evaluate", "predict", "make_moving_digits", "list_models", "summary", "convert", "inflate",
    "benchmark", "export",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tessera", description="Hierarchical vision transformers on PyTorch.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..errors import TesseraError

    parser = build_parser()
    # KEY=VALUE overrides may follow options (``--model NAME num_classes=10``), which plain
    # argparse does not accept after its positionals: they join the command's ``overrides``
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
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
    except KeyboardInterrupt:
        print(f"tessera {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
