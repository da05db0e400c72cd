"""The training loop: one code path for one process and for ``torchrun``.

Per step: ``data.batch_size`` samples over all processes, cut into ``optim.accum_steps``
micro-batches; each micro-batch is augmented on the device, mixed (mixup/cutmix), run under
autocast and back-propagated (gradients synchronised only on the last one). Then the
gradients are unscaled (fp16), their norm checked — a non-finite loss or gradient skips the
step and is counted, too many in a row stop the run — clipped, and the optimiser, scaler
and EMA step. The learning rate follows the per-iteration warm-up + cosine schedule.

After each epoch: validation (model and EMA), ``metrics.jsonl``, ``curves.png``,
``last.safetensors``, ``best.safetensors`` (by validation top-1, then loss) and ``state.pt``, which
holds everything needed to continue the run exactly (``Trainer(..., resume=True)``).
Only the main process prints and writes.

What depends on the problem (the loss, batch mixing, validation scores, the score that
picks the best weights, the curves) comes from the recipe's task
(:mod:`tessera.train.tasks`): classification, or segmentation (mIoU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from .. import __version__
from ..atomic import remove_stale_temporaries, write_text_atomic
from ..data import SPLIT_KEYS, build_augment, build_dataset, build_train_and_val, data_kind
from ..data.loader import ShardSampler, SkippedSamples, StepSampler, build_loader, default_num_workers
from ..errors import CheckpointError, ConfigError, TesseraError
from ..registry import create_model
from ..weights.resolve import load_weights_into, stored_architecture
from . import distributed
from .checkpoint import (
    load_state,
    load_trained_model,
    rng_state,
    save_state,
    save_weights,
    set_rng_state,
)
from .ema import ModelEma
from .evaluation import autocast
from .metrics import significant, write_metrics
from .optim import build_optimizer, scaled_lr
from .recipe import Recipe, fit_to_data, recipe_from_dict
from .schedule import WarmupCosine
from .tasks import build_task

log = logging.getLogger("tessera")

#: the files a run writes into its directory
RUN_FILES = ("run.json", "state.pt", "last.safetensors", "best.safetensors", "metrics.jsonl", "curves.png",
             "test.json")


def amp_settings(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None, use a GradScaler)`` for ``train.amp`` on ``device``."""
    if amp == "auto":
        amp = "fp16" if device.type == "cuda" else "none"
    if amp == "none":
        return None, False
    if amp == "bf16":
        return torch.bfloat16, False
    if device.type != "cuda":
        raise ConfigError("train.amp=fp16 needs a GPU (its loss scaler is CUDA's); use bf16 or none on CPU")
    return torch.float16, True


class Trainer:
    """Trains ``recipe`` into the directory ``output``.

    Args:
        recipe: a validated recipe (:func:`tessera.train.recipe.load_recipe`).
        output: the run directory.
        resume: continue the run saved in ``output`` (its ``state.pt``).
        overwrite: replace the files of a run already in ``output``.

    ``fit()`` runs the schedule (or up to ``train.max_steps``) and returns a summary.
    ``criterion(logits, target)`` is an attribute, so that a test or a subclass can change
    the loss.
    """

    def __init__(self, recipe: Recipe, output: str | os.PathLike, resume: bool = False, overwrite: bool = False) -> None:
        self.recipe = recipe
        self.output = Path(output)
        if resume and not (self.output / "state.pt").exists() and (self.output / "run.json").exists():
            # killed before its first checkpoint: the run starts again from the beginning
            log.warning("%s: no checkpoint was written yet; starting the run from its beginning", self.output)
            resume, overwrite = False, True
        self.info = distributed.setup(recipe.train.device)
        self._configure_torch()
        r, d, info = recipe, recipe.data, self.info
        seed = r.train.seed
        self.amp_dtype, use_scaler = amp_settings(r.train.amp, info.device)

        # data: the training set defines the classes; the other splits follow its order. The
        # recipe is fitted to the data (a batch or warm-up too long for it); the notes say so.
        self.train_set, self.val_set, self.data_notes = build_train_and_val(d, seed)
        self.classes = list(self.train_set.classes)
        self.recipe, fitted = fit_to_data(recipe, len(self.train_set), info.world_size)
        self.data_notes += fitted
        r, d = self.recipe, self.recipe.data
        self.num_workers = d.num_workers if d.num_workers is not None else default_num_workers(info.local_world_size)
        self.sampler = StepSampler(len(self.train_set), d.batch_size, r.optim.accum_steps, info.rank,
                                   info.world_size, seed)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        pin = info.device.type == "cuda"
        self.loader = build_loader(self.train_set, self.sampler, self.sampler.micro_batch, self.num_workers, pin, seed)
        self.eval_batch = d.eval_batch_size or self.sampler.micro_batch
        self.val_loader = None
        if self.val_set is not None:
            shard = ShardSampler(len(self.val_set), info.rank, info.world_size)
            self.val_loader = build_loader(self.val_set, shard, self.eval_batch, self.num_workers, pin, seed)
        self.skipped = {"train": SkippedSamples("train", len(self.train_set), d.max_bad_fraction)}
        if self.val_set is not None:
            self.skipped["val"] = SkippedSamples("val", len(self.val_set), d.max_bad_fraction)

        # the model, initialised identically on every process
        torch.manual_seed(seed)
        self.model = self._build_model(load_pretrained=not resume).to(info.device)
        self.task = build_task(r, self.classes, self.model)
        self.model = self.task.prepare_model(self.model, info)
        cfg = self.model.default_cfg
        self.mean = tuple(d.mean or cfg["mean"])
        self.std = tuple(d.std or cfg["std"])
        self.train_augment = build_augment(d, r.augment, self.mean, self.std).to(info.device)
        self.eval_augment = build_augment(d, None, self.mean, self.std).to(info.device)
        self.mixup = self.task.mixup(r)
        self.criterion = self.task.criterion

        # optimisation
        self.optimizer = build_optimizer(self.model, r)
        # iteration-based recipes (schedule.iters) end in the middle of their last epoch
        self.total_steps = r.schedule.iters or r.schedule.epochs * self.steps_per_epoch
        self.num_epochs = -(-self.total_steps // self.steps_per_epoch)
        self.schedule = self._schedule(r, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.ema = ModelEma(self.model, r.train.ema_decay) if r.train.ema_decay > 0 else None
        self.train_model = distributed.wrap(self.model, info)
        if r.model.compile:
            self.train_model = torch.compile(self.train_model)

        # progress; all of it is saved in state.pt
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.best = (-math.inf, -math.inf)  # (validation top-1, minus validation loss) of best.safetensors
        self.nan_in_row = 0
        self.nan_total = 0
        self.epoch_sums = {"loss": 0.0, "count": 0.0}
        self.stop_requested = False
        self._last_batch: tuple[torch.Tensor, torch.Tensor] | None = None

        if resume:
            self._load_state()
        else:
            self._prepare_output(overwrite)
            torch.manual_seed(seed + info.rank)

    # -- set-up ------------------------------------------------------------------------------

    def _configure_torch(self) -> None:
        t, info = self.recipe.train, self.info
        self._threads_before = torch.get_num_threads()  # given back by close()
        if t.threads:
            torch.set_num_threads(t.threads)
        elif info.device.type == "cpu" and info.local_world_size > 1:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // info.local_world_size))
        if t.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif info.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    @staticmethod
    def _schedule(r: Recipe, steps_per_epoch: int) -> WarmupCosine:
        """The learning rate of every step of the recipe ``r``."""
        s = r.schedule
        warmup = s.warmup_iters if s.warmup_iters is not None else round(s.warmup_epochs * steps_per_epoch)
        return WarmupCosine(
            scaled_lr(r.optim.lr, r), s.iters or s.epochs * steps_per_epoch, warmup,
            scaled_lr(s.warmup_lr, r), scaled_lr(s.min_lr, r), s.style, steps_per_epoch, s.power,
        )

    def _build_model(self, load_pretrained: bool = True) -> nn.Module:
        """The recipe's model for the data's classes; ``model.pretrained`` is loaded for a new
        run (a resumed one has its weights in its state)."""
        m, d = self.recipe.model, self.recipe.data
        # weights that record their model (a run, a tessera directory, name.tag) are fine-tuned as
        # that model, unless they are another kind of data's (image weights inflated into a video model)
        stored = stored_architecture(m.pretrained) if m.pretrained else None
        name, base = m.name, {}
        if stored is not None and stored.kind == d.kind:
            name, base = stored.name, {k: v for k, v in stored.args.items() if k != "num_classes"}
        args = {**base, **data_kind(d.kind).model_kwargs(d), **m.args}
        if args.get("num_classes", len(self.classes)) != len(self.classes):
            raise ConfigError(f"model.args.num_classes={args['num_classes']} but the data has {len(self.classes)} classes")
        args["num_classes"] = len(self.classes)
        model = create_model(name, **args)
        self.load_report = None
        if m.pretrained and load_pretrained:
            # printed with the run's description (inflation, resized tables, a new head)
            self.load_report = load_weights_into(model, m.pretrained, use_ema=m.pretrained_ema, verbose=False)
            if base:
                self.load_report.notes.insert(0, f"the model is {name} with the arguments {m.pretrained} records")
        if m.grad_checkpointing:
            model.set_grad_checkpointing(True)
        return model

    def run_info(self, weights: str = "model") -> dict[str, Any]:
        """What evaluation and prediction need besides the weights."""
        data = {k: v for k, v in dataclasses.asdict(self.recipe.data).items() if k not in SPLIT_KEYS.values()}
        data.update(mean=list(self.mean), std=list(self.std))  # as resolved from the model's defaults
        return {
            "model": self.model.model_name, "model_args": self.model.model_args, "classes": self.classes,
            "data": data, "weights": weights, "tessera_version": __version__, "task": self.task.name,
        }

    def _prepare_output(self, overwrite: bool) -> None:
        if not self.info.is_main:
            return
        if (self.output / "state.pt").exists() and not overwrite:
            raise TesseraError(f"{self.output} already holds a run; continue it with --resume {self.output}, "
                               f"or choose another --output (or --overwrite)")
        if overwrite:
            for name in RUN_FILES:
                (self.output / name).unlink(missing_ok=True)
            shutil.rmtree(self.output / "samples", ignore_errors=True)
        remove_stale_temporaries(self.output, RUN_FILES)
        self.output.mkdir(parents=True, exist_ok=True)
        self._write_run_json()

    def _write_run_json(self) -> None:
        info = {**self.run_info(), "recipe": self.recipe.to_dict(), "world_size": self.info.world_size}
        write_text_atomic(self.output / "run.json", json.dumps(info, indent=2) + "\n")

    def _schedule_change(self, before: dict[str, Any]) -> str | None:
        """A line saying how the learning rate changes when the run is resumed with other
        schedule settings than the recipe ``before`` it ran with so far; None when the same."""
        now = self.recipe.to_dict()
        keys = [("schedule", k) for k in now["schedule"]] + [("optim", "lr"), ("optim", "lr_base_batch"),
                                                             ("data", "batch_size")]
        changed = [f"{a}.{b} {before[a][b]!r} -> {now[a][b]!r}" for a, b in keys
                   if b in before.get(a, {}) and before[a][b] != now[a][b]]
        if not changed:
            return None
        try:
            old = self._schedule(recipe_from_dict(before), len(self.train_set) // before["data"]["batch_size"])
            moves = f"; at step {self.global_step} it moves from {old(self.global_step):.3g} to " \
                    f"{self.schedule(self.global_step):.3g}"
        except (TesseraError, KeyError, TypeError, ValueError, ZeroDivisionError):
            moves = ""
        return (f"resumed with another learning-rate schedule ({', '.join(changed)}): it is recomputed for "
                f"{self.num_epochs} epochs, {self.total_steps} steps{moves}")

    # -- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The whole training state, as plain containers of tensors and numbers."""
        rng = rng_state()
        torch_states = [rng["torch"]]
        if self.info.distributed:  # every process draws its own random numbers: keep them all
            own = rng["torch"].to(self.info.device)  # NCCL gathers device tensors only
            gathered = [torch.empty_like(own) for _ in range(self.info.world_size)]
            torch.distributed.all_gather(gathered, own)
            torch_states = [t.cpu() for t in gathered]
        return {
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "ema": self.ema.module.state_dict() if self.ema else None,
            "rng": rng, "rng_torch_per_rank": torch_states, "history": self.history,
            "best": list(self.best), "nan_in_row": self.nan_in_row, "nan_total": self.nan_total,
            "epoch_sums": dict(self.epoch_sums),
            "skipped": {k: dict(v.seen) for k, v in self.skipped.items()},
            "world_size": self.info.world_size,
        }

    def save_state(self) -> None:
        state = self.state_dict()  # collective under torchrun: every process takes part
        if self.info.is_main:
            save_state(self.output / "state.pt", state)

    def _load_state(self) -> None:
        path = self.output / "state.pt"
        if not path.exists():
            raise TesseraError(f"{self.output}: nothing to resume (no state.pt)")
        state = load_state(path)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scaler.load_state_dict(state["scaler"])
            if self.ema is not None and state["ema"] is not None:
                self.ema.module.load_state_dict(state["ema"])
        except (KeyError, RuntimeError, ValueError) as e:
            detail = " ".join(str(e).split())
            raise CheckpointError(f"{path}: does not fit this run's model and optimiser: {detail[:300]}") from None
        if self.info.is_main:
            remove_stale_temporaries(self.output, RUN_FILES)
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step, self.history = state["global_step"], list(state["history"])
        self.best, self.nan_in_row, self.nan_total = tuple(state["best"]), state["nan_in_row"], state["nan_total"]
        self.epoch_sums = dict(state["epoch_sums"])
        for split, seen in state["skipped"].items():
            if split in self.skipped:
                self.skipped[split].seen.update(seen)
        set_rng_state(state["rng"])
        per_rank = state["rng_torch_per_rank"]
        if len(per_rank) == self.info.world_size:
            torch.set_rng_state(per_rank[self.info.rank])
        else:
            log.warning("resuming with %d processes instead of %d: the random streams are reseeded",
                        self.info.world_size, len(per_rank))
            torch.manual_seed(self.recipe.train.seed + self.info.rank + 7919 * self.global_step)
        if self.info.is_main:
            write_metrics(self.output / "metrics.jsonl", self.history)
            log.info("resuming %s at epoch %d, step %d of %d", self.output, self.epoch + 1, self.step_in_epoch,
                     self.steps_per_epoch)
            try:
                before = json.loads((self.output / "run.json").read_text())["recipe"]
            except (OSError, ValueError, KeyError, TypeError):
                before = None
            if before is not None and before != json.loads(json.dumps(self.recipe.to_dict())):
                change = self._schedule_change(before)
                if change:
                    log.warning("%s", change)
                self._write_run_json()  # the run directory describes the run as it now continues

    # -- one step ------------------------------------------------------------------------------

    def _micro_batches(self, it) -> list[tuple[torch.Tensor, torch.Tensor]]:
        batches = []
        for _ in range(self.recipe.optim.accum_steps):
            x, y, bad = next(it)
            self.skipped["train"].add(bad)
            weight = 1.0
            if x is None:  # nothing readable in this micro-batch
                if not self.info.distributed or self._last_batch is None:
                    continue
                (x, y), weight = self._last_batch, 0.0  # keep the processes in step, add nothing
            self._last_batch = (x, y)
            batches.append((x, y, weight))
        return batches

    def train_step(self, micro_batches) -> float | None:
        """One optimiser step over the micro-batches; returns the mean loss, or ``None``
        when the step was skipped for a non-finite loss or gradient."""
        r, info = self.recipe, self.info
        lr = self.schedule.apply(self.optimizer, self.global_step)
        self.last_lr = lr
        self.train_model.train()
        accum = r.optim.accum_steps
        loss_sum = torch.zeros((), device=info.device)
        count = 0.0
        for i, (x, y, weight) in enumerate(micro_batches):
            x = x.to(info.device, non_blocking=True)
            y = y.to(info.device, non_blocking=True)
            x = self.train_augment(x)
            target = y
            if self.mixup.active:
                x, target = self.mixup(x, y)
            last = i == len(micro_batches) - 1
            sync = self.train_model.no_sync() if info.distributed and not last else contextlib.nullcontext()
            with sync:
                with autocast(info.device, self.amp_dtype):
                    logits = self.train_model(x)
                loss = self.criterion(logits, target)
                self.scaler.scale(loss * (weight / accum)).backward()
            loss_sum += loss.detach() * (weight * y.shape[0])
            count += weight * y.shape[0]
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        clip = r.optim.clip_grad
        if clip:
            norm = torch.nn.utils.clip_grad_norm_(params, clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        bad = ~torch.isfinite(loss_sum)
        if not self.scaler.is_enabled():  # with fp16 the scaler skips overflowing steps itself
            bad = bad | ~torch.isfinite(norm)
        bad = distributed.all_reduce_max(bad.float(), info)
        if bad.item() > 0:
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler.is_enabled():
                self.scaler.update()
            self.nan_in_row += 1
            self.nan_total += 1
            log.warning("step %d skipped: non-finite loss or gradient (%d in a row)", self.global_step + 1,
                        self.nan_in_row)
            if self.nan_in_row >= r.train.max_nan_steps:
                raise TesseraError(
                    f"stopped: {self.nan_in_row} steps in a row had a non-finite loss or gradient "
                    f"(train.max_nan_steps); the last good checkpoint in {self.output} is intact "
                    f"(try a lower optim.lr, optim.clip_grad, or train.amp=none)"
                )
            return None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        self.nan_in_row = 0
        mean_loss = (loss_sum / max(count, 1e-12)).item()
        self.epoch_sums["loss"] += mean_loss * count
        self.epoch_sums["count"] += count
        return mean_loss

    # -- epochs --------------------------------------------------------------------------------

    def _print(self, text: str) -> None:
        if self.info.is_main:
            tqdm.write(text)

    def train_epoch(self) -> dict[str, float] | None:
        """The rest of the current epoch (from ``step_in_epoch``). Returns the training
        statistics, or ``None`` when stopped before the epoch's end (``train.max_steps``,
        or a stop request)."""
        r, info = self.recipe, self.info
        epoch, start = self.epoch, self.step_in_epoch
        end = min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)
        self.sampler.set_epoch(epoch, start)
        self.train_set.set_epoch(epoch)
        bar = tqdm(total=end, initial=start, desc=f"epoch {epoch + 1}/{self.num_epochs}",
                   leave=False, dynamic_ncols=True, disable=None if info.is_main else True)
        it = iter(self.loader)
        samples, t0 = 0, time.perf_counter()
        unit = data_kind(r.data.kind).unit
        try:
            for step in range(start, end):
                loss = self.train_step(self._micro_batches(it))
                self.step_in_epoch, self.global_step = step + 1, self.global_step + 1
                samples += r.data.batch_size
                rate = samples / max(time.perf_counter() - t0, 1e-9)
                bar.update(1)
                if loss is not None:
                    postfix = {"loss": f"{loss:.4f}", "lr": f"{self.last_lr:.2e}", f"{unit}/s": significant(rate)}
                    bar.set_postfix(postfix, refresh=False)
                every = r.train.save_every_steps
                stop = self._should_stop()
                if step + 1 < end and (stop or (every and self.global_step % every == 0)):
                    self.save_state()  # the epoch's end saves anyway
                    if stop:
                        return None
        finally:
            bar.close()
            del it
        sums = torch.tensor([self.epoch_sums["loss"], self.epoch_sums["count"]], dtype=torch.float64,
                            device=info.device)
        distributed.all_reduce_sum(sums, info)
        elapsed = time.perf_counter() - t0
        return {"train_loss": float(sums[0] / sums[1]) if sums[1] > 0 else math.nan,
                "images_per_s": samples / elapsed if elapsed > 0 else math.nan}

    def _should_stop(self) -> bool:
        """``train.max_steps`` reached, or a stop requested (a signal, see
        :mod:`tessera.train.interrupt`). A signal reaches the processes of a ``torchrun`` at
        different moments: they agree here to stop after the same step."""
        if self.info.distributed:
            flag = torch.tensor(float(self.stop_requested), device=self.info.device)
            self.stop_requested = distributed.all_reduce_max(flag, self.info).item() > 0
        limit = self.recipe.train.max_steps
        return self.stop_requested or bool(limit and self.global_step >= limit)

    def validate(self) -> dict[str, float]:
        if self.val_loader is None:
            return {}
        out = {}
        runs = [("val", self.model)] + ([("ema_val", self.ema.module)] if self.ema is not None else [])
        for prefix, model in runs:
            res = self.task.validate(model, self.val_loader, self.eval_augment, self.info, self.amp_dtype,
                                     self.skipped["val"])
            out.update({f"{prefix}_{k}": v for k, v in res.items()})
        return out

    def end_epoch(self, train_stats: dict[str, float], val_stats: dict[str, float]) -> None:
        """Record the epoch, write weights, state, metrics and curves (main process)."""
        epochs, metric = self.num_epochs, self.task.best_metric
        row = {"epoch": self.epoch + 1, "step": self.global_step, **train_stats,
               **{f"val_{k}": None for k in self.task.metric_keys}, **val_stats,
               "lr": self.last_lr, "skipped_samples": sum(len(s) for s in self.skipped.values()),
               "nan_steps": self.nan_total}
        self.history.append(row)
        best_weights = None
        for prefix, weights in (("val", "model"), ("ema_val", "ema")):
            top1 = val_stats.get(f"{prefix}_{metric}")
            # the best score (top-1, mIoU); among equal ones (a small validation set has few
            # distinct values), the lowest loss
            score = (top1, -val_stats.get(f"{prefix}_loss", math.inf)) if top1 is not None else None
            if score is not None and score > self.best:
                self.best, best_weights = score, weights
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self.epoch_sums = {"loss": 0.0, "count": 0.0}
        if self.info.is_main:
            info = self.run_info()
            save_weights(self.output / "last.safetensors", self.model.state_dict(), {**info, "epoch": row["epoch"]})
            if best_weights is not None:
                module = self.model if best_weights == "model" else self.ema.module
                save_weights(self.output / "best.safetensors", module.state_dict(),
                             {**self.run_info(best_weights), "epoch": row["epoch"], f"val_{metric}": self.best[0]})
        self.save_state()
        if self.info.is_main:
            write_metrics(self.output / "metrics.jsonl", self.history)
            self.task.plot(self.history, self.output / "curves.png")
            self._print(self.summary_line(row, epochs, data_kind(self.recipe.data.kind).unit, self.task.summary_keys))

    @staticmethod
    def summary_line(row: dict[str, Any], epochs: int, unit: str = "img",
                     keys: tuple[str, ...] = ("val_loss", "val_top1", "val_top5", "ema_val_top1")) -> str:
        parts = [f"epoch {row['epoch']:>3}/{epochs}", f"train_loss {row['train_loss']:.4f}"]
        for key in keys:
            if row.get(key) is not None:
                parts.append(f"{key} {row[key]:.4f}" if key.endswith("loss") else f"{key} {row[key]:.2f}")
        parts += [f"lr {row['lr']:.2e}", f"{significant(row['images_per_s'])} {unit}/s"]
        if row["skipped_samples"]:
            parts.append(f"skipped {row['skipped_samples']} samples")
        if row["nan_steps"]:
            parts.append(f"{row['nan_steps']} non-finite steps skipped")
        return "  ".join(parts)

    def fit(self) -> dict[str, Any]:
        """Train to the end of the schedule (or ``train.max_steps``); returns a summary."""
        r = self.recipe
        if self.info.is_main and self.epoch == 0 and self.step_in_epoch == 0:
            if self.load_report is not None:
                self._print(str(self.load_report))
            for note in self.data_notes:  # a held-out validation split, a shortened batch or warm-up
                self._print(note)
            self._print(self.describe())
        while self.epoch < self.num_epochs and not self._should_stop():
            train_stats = self.train_epoch()
            if train_stats is None:
                break
            evaluate_now = (self.epoch + 1) % r.train.eval_every == 0 or self.epoch + 1 == self.num_epochs
            self.end_epoch(train_stats, self.validate() if evaluate_now else {})
        summary = {"epochs": self.epoch, "steps": self.global_step, "best_metric": self.task.best_metric,
                   f"best_val_{self.task.best_metric}": self.best[0] if self.best[0] > -math.inf else None,
                   "skipped_samples": {k: len(v) for k, v in self.skipped.items()},
                   "nan_steps": self.nan_total, "finished": self.epoch >= self.num_epochs}
        if summary["finished"] and r.data.test_root:
            summary["test"] = self.test()
        if self.info.is_main:
            skipped = sum(summary["skipped_samples"].values())
            if skipped:
                self._print(f"skipped {skipped} unreadable samples in all (each reported above)")
        self._finished = True
        return summary

    def test(self) -> dict[str, Any]:
        """Evaluate the best weights (else the last) on ``data.test_root``; writes ``test.json``."""
        d = self.recipe.data
        test_set = build_dataset(d, "test", classes=self.classes, seed=self.recipe.train.seed)
        loader = build_loader(test_set, ShardSampler(len(test_set), self.info.rank, self.info.world_size),
                              self.eval_batch, self.num_workers, self.info.device.type == "cuda")
        distributed.barrier(self.info)  # the main process has written the weights
        model, info = load_trained_model(self.output, self.info.device)
        skipped = SkippedSamples("test", len(test_set), d.max_bad_fraction)
        res = self.task.test(model, loader, self.eval_augment, self.info, self.amp_dtype, skipped)
        res.update(checkpoint=Path(info["checkpoint"]).name, skipped_samples=len(skipped))
        if self.info.is_main:
            write_text_atomic(self.output / "test.json", json.dumps(res, indent=2) + "\n")
        return res

    def describe(self) -> str:
        r, d = self.recipe, self.recipe.data
        params = sum(p.numel() for p in self.model.parameters())
        procs = f" on {self.info.world_size} processes" if self.info.distributed else ""
        amp = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]
        return (f"training {r.model.name} ({params / 1e6:.2f}M parameters) on {len(self.train_set)} samples "
                f"of {len(self.classes)} classes{procs}, {self.info.device} {amp}: {self.num_epochs} epochs of "
                f"{self.steps_per_epoch} steps of {d.batch_size}"
                f"{f' ({self.total_steps} steps in all)' if r.schedule.iters else ''}, "
                f"peak lr {self.schedule.base_lr:.2e}"
                f" -> {self.output}")

    def close(self) -> None:
        if getattr(self, "_threads_before", None):
            torch.set_num_threads(self._threads_before)  # the recipe's threads were for this run only
        # after a run that ended well, every process waits for the others before the process
        # group is torn down: a process that leaves first can close its connections under one
        # still finishing its last collective, which gloo may answer by aborting that
        # process. After an error, no wait: the others may never come.
        distributed.cleanup(self.info, synchronise=getattr(self, "_finished", False))
