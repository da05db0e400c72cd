"""``tessera train --config RECIPE [key=value ...] --output DIR``: train or fine-tune a model.

RECIPE is a shipped recipe by name (``tessera train --list``) or a YAML file; every key
can be overridden on the command line (``optim.lr=1e-3 data.root=/data/train``).
``--resume DIR`` continues a run where it stopped. Under ``torchrun`` every process runs
this same command.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train or fine-tune a model from a recipe", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. optim.lr=1e-3")
    p.add_argument("--config", "-c", help="a shipped recipe name or a YAML file")
    p.add_argument("--output", "-o", help="the run directory (default: runs/<recipe name>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR (its recipe, its state)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in the output directory")
    p.add_argument("--list", action="store_true", help="list the shipped recipes and exit")
    p.set_defaults(func=run)


def recipe_for(args: argparse.Namespace):
    """The recipe of a new run (``--config``) or of the run to resume (``--resume``)."""
    from ..errors import ConfigError, TesseraError
    from ..train.recipe import apply_overrides, load_recipe, recipe_from_dict

    if args.resume:
        if args.config:
            raise ConfigError("--resume continues a run with its own recipe; leave out --config")
        run_json = Path(args.resume) / "run.json"
        if not run_json.is_file():
            raise TesseraError(f"{args.resume}: not a run directory (no run.json)")
        try:
            recipe = json.loads(run_json.read_text())["recipe"]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            raise TesseraError(f"{run_json}: not a run description written by tessera train ({e!r})") from None
        return recipe_from_dict(apply_overrides(recipe, args.overrides))
    if not args.config:
        raise ConfigError("give a recipe with --config NAME (tessera train --list shows the shipped ones)")
    return load_recipe(args.config, args.overrides)


def run(args: argparse.Namespace) -> int:
    from ..train import Trainer, shipped_recipes
    from ..train.interrupt import stop_on_signals

    if args.list:
        for name in shipped_recipes():
            print(name)
        return 0
    recipe = recipe_for(args)
    output = args.resume or args.output or str(Path("runs") / Path(args.config).stem)
    trainer = Trainer(recipe, output, resume=bool(args.resume), overwrite=args.overwrite)
    try:
        with stop_on_signals(trainer) as stop:
            summary = trainer.fit()
    finally:
        trainer.close()
    if trainer.info.is_main:
        print(finish_message(summary, output, trainer.info.world_size), flush=True)
    return stop.exit_code if not summary["finished"] else 0


def resume_command(output: str, world_size: int = 1) -> str:
    """The command line that continues the run in ``output``."""
    launcher = f"torchrun --nproc_per_node {world_size} -m tessera" if world_size > 1 else "tessera"
    return f"{launcher} train --resume {shlex.quote(str(output))}"


def finish_message(summary: dict, output: str, world_size: int = 1) -> str:
    if not summary["finished"]:
        return (f"stopped after step {summary['steps']}, checkpoint saved in {output}; "
                f"continue with: {resume_command(output, world_size)}")
    lines = [f"done: {summary['epochs']} epochs, {summary['steps']} steps; weights and metrics in {output}"]
    metric = summary.get("best_metric", "top1")
    name = {"top1": "top-1", "miou": "mIoU"}.get(metric, metric)
    if summary.get(f"best_val_{metric}") is not None:
        lines.append(f"best validation {name}: {summary[f'best_val_{metric}']:.2f} %")
    if "test" in summary:
        t = summary["test"]
        if metric == "miou":
            lines.append(f"test mIoU: {t['miou']:.2f} %  pixel accuracy: {t['acc']:.2f} %  ({t['num_samples']} images)")
        else:
            top5 = f"  top-5: {t['top5']:.2f} %" if t.get("top5") is not None else ""
            lines.append(f"test top-1: {t['top1']:.2f} %{top5}  ({t['num_samples']} samples)")
    lines.append(f"evaluate: tessera evaluate --checkpoint {output} --data TEST_DIR")
    return "\n".join(lines)
