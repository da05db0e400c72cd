"""``tessera list [PATTERN]``: the registered model names."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list the registered models", description=__doc__)
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'swin*'")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import list_models

    for name in list_models(args.pattern):
        print(name)
    return 0
