"""``tessera list [PATTERN]``: the registered model names matching a shell-style pattern;
``--pretrained``: the published weights, ``name.tag`` (what ``create_model``, ``--model`` and
every command take), with their accuracy, input size, label set and source.

Exit status: 0 when something matches; 1 when nothing does (as ``grep``), with one line on
stderr that says so and names the closest models.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list the registered models, or the published weights", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'swin*'")
    p.add_argument("--pretrained", action="store_true", help="list published weights (name.tag) instead")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--markdown", action="store_true",
                     help="with --pretrained: the README's table (with parameters and GMACs)")
    out.add_argument("--json", action="store_true", help="with --pretrained: one JSON object per line")
    p.set_defaults(func=run)


def _nothing_matches(pattern: str, what: str) -> int:
    from ..registry import close_names

    close = close_names(pattern.split(".", 1)[0])
    hint = f"; close names: {', '.join(close)}" if close else "; `tessera list` shows them all"
    print(f"tessera list: no {what} matches {pattern!r}{hint}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError

    if not args.pretrained:
        if args.markdown or args.json:
            raise ConfigError("--markdown and --json are for --pretrained")
        from ..registry import list_models

        names = list_models(args.pattern)
        for name in names:
            print(name)
        return 0 if names else _nothing_matches(args.pattern, "registered model")
    from ..weights.zoo import get_pretrained, list_pretrained
    from ..weights.zoo_table import input_size, markdown_table

    names = list_pretrained(args.pattern)
    if not names:
        return _nothing_matches(args.pattern, "published weight")
    if args.markdown:
        print(markdown_table(args.pattern))
        return 0
    if args.json:
        for name in names:
            print(json.dumps(get_pretrained(name).to_dict()))
        return 0
    width = max(len(n) for n in names)
    for e in (get_pretrained(n) for n in names):
        acc = "   -  " if e.top1 is None else f"{e.top1:6.2f}"
        print(f"{e.name:<{width}}  {acc}  {input_size(e):>6}  {e.label_set:<22}  {e.sources[0].location}")
    return 0
