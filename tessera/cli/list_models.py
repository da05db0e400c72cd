"""``tessera list [PATTERN]``: the registered model names matching a shell-style pattern.

Exit status: 0 when some model matches; 1 when none does (as ``grep``), with one line on
stderr that says so and names the closest models.
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list the registered models", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'swin*'")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..registry import close_names, list_models

    names = list_models(args.pattern)
    for name in names:
        print(name)
    if names:
        return 0
    close = close_names(args.pattern)
    hint = f"; close names: {', '.join(close)}" if close else "; `tessera list` shows them all"
    print(f"tessera list: no registered model matches {args.pattern!r}{hint}", file=sys.stderr)
    return 1
