"""Training recipes: YAML files plus ``key=value`` overrides, validated into dataclasses.

A recipe has six sections (``model``, ``data``, ``augment``, ``optim``, ``schedule``,
``train``), a ``loss`` section for segmentation, and a ``task`` (``classification``, the
default, or ``segmentation``); each field below is a key, written ``section.field`` on the command line
(``optim.lr=1e-3 data.root=/data/train``). A recipe may start from another one with
``base: NAME`` (a shipped recipe or a path relative to the file) and change only what
differs. The value ``???`` marks a key the user must set (``data.root`` of the ImageNet
recipes). Unknown keys and values of the wrong type raise :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, DataError

#: a value the recipe leaves for the user to give
MISSING = "???"


@dataclass
class ModelConfig:
    name: str = "swin_t"
    #: constructor arguments that replace the variant's defaults (drop_path_rate, embed_dim, ...)
    args: dict = field(default_factory=dict)
    #: a checkpoint to start from (any format tessera reads); a head of another size is re-initialised
    pretrained: str | None = None
    pretrained_ema: bool = False
    grad_checkpointing: bool = False
    compile: bool = False


@dataclass
class DataConfig:
    #: what the samples are: ``image`` (a folder, or a built-in set such as ``digits:train``) or
    #: ``video`` (a folder of class folders, an annotation list, or ``moving_digits:train``)
    kind: str = "image"
    root: str | None = MISSING
    val_root: str | None = None
    #: without val_root: the fraction of the training samples held out for validation
    #: (stratified, drawn with train.seed; 0 for no validation)
    val_split: float = 0.1
    test_root: str | None = None
    img_size: int = 224
    #: normalisation; ``null`` takes the model's own (ImageNet's for the Swins)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    #: images per optimiser step, over all processes and accumulation steps together (a
    #: training set smaller than that trains with one step of all of it per epoch)
    batch_size: int = 1024
    #: images per evaluation batch and process (default: the training micro-batch)
    eval_batch_size: int | None = None
    #: DataLoader workers per process (null: the cores this process may use, shared among the
    #: processes of a machine, at most 8)
    num_workers: int | None = None
    #: stop with a DataError when more than this fraction of a split cannot be read
    max_bad_fraction: float = 0.01
    #: a training class folder without samples is an error (false) or left out of the classes
    #: with a warning (true)
    skip_empty_classes: bool = False
    # -- videos (data.kind=video); img_size is the side of the square crop ---------------
    #: frames per clip, and the step between them
    clip_len: int = 32
    frame_interval: int = 2
    #: one frame from each of clip_len equal segments instead (Something-Something v2); one clip
    frame_uniform: bool = False
    #: test views: clips spread over the video x spatial crops (1: centre, 3: along the long side)
    num_clips: int = 4
    num_crops: int = 3
    #: views per forward pass at test time (null: every view of a batch at once)
    max_testing_views: int | None = None
    #: the folder that the paths of an annotation list are relative to (null: the list's folder)
    video_prefix: str | None = None
    #: a file of class names, one per line in label order, for annotation lists (and
    #: segmentation folders)
    class_names: str | None = None
    # -- segmentation (data.kind=segmentation): image and label-map folders, or digit_scenes --
    #: folder layout: auto, ade20k (images/ and annotations/ with split folders), voc
    #: (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/<split>.txt), cityscapes
    #: (leftImg8bit/ and gtFine/ ..._labelTrainIds.png) or pairs (images/ and annotations/)
    layout: str = "auto"
    #: label 0 means "other" (ADE20K): it becomes ignore_index, every other label moves down by one
    reduce_zero_label: bool = False
    #: the label of pixels that count nowhere (loss and metrics)
    ignore_index: int = 255
    #: the training crop (height, width); null: img_size x img_size
    crop_size: tuple[int, int] | None = None
    #: images are rescaled, keeping their aspect ratio, to fit (long side, short side) times a
    #: ratio drawn from ratio_range in training (null: their own size times the ratio)
    img_scale: tuple[int, int] | None = None
    ratio_range: tuple[float, float] = (0.5, 2.0)
    #: a training crop is drawn again (up to 10 times) while one class covers more than this
    cat_max_ratio: float = 1.0
    #: mmseg's photometric distortion (brightness, contrast, saturation, hue) in training
    photometric: bool = False
    #: evaluation: whole (the rescaled image at once) or slide (windows of crop_size,
    #: test_stride apart, logits averaged where they overlap)
    test_mode: str = "whole"
    #: the sliding windows' stride (null: two thirds of the crop, rounded down)
    test_stride: tuple[int, int] | None = None
    #: multi-scale testing: ratios of img_scale (softmax averaged over scales and flips)
    test_ratios: tuple[float, ...] = (1.0,)
    test_flip: bool = False


@dataclass
class AugmentConfig:
    #: RandAugment operations per image and magnitude on timm's 0-10 scale (0 turns it off)
    randaugment_n: int = 2
    randaugment_m: float = 9.0
    #: RandAugment draws its operations once per call; the batch is cut into this many groups
    randaugment_groups: int = 8
    #: brightness/contrast/saturation jitter, used only without RandAugment (as timm)
    color_jitter: float = 0.4
    #: random erasing probability (per-pixel normal noise in the erased box)
    reprob: float = 0.25
    #: pixel noise: each image (each clip) gets Gaussian noise of a standard deviation drawn
    #: uniformly from [0, noise] in [0, 1] pixel units, new in every frame; 0 turns it off
    noise: float = 0.0
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.1


@dataclass
class LossConfig:
    """The segmentation loss: ``ce_weight * CE + dice_weight * Dice`` per output of the model,
    each output weighted by the model's ``loss_weights`` (UperNet's auxiliary head: 0.4)."""

    ce_weight: float = 1.0
    #: Swin-Unet's Dice loss (softmax probabilities against one-hot labels, per class,
    #: averaged over the classes; ignored pixels left out)
    dice_weight: float = 0.0
    #: the cross-entropy's weight per class, one per class in label order (mmseg's
    #: class_weight: each pixel's loss times its true class's weight); null: all 1
    class_weight: tuple[float, ...] | None = None


@dataclass
class OptimConfig:
    #: adamw, or sgd (with momentum; Swin-Unet's recipe)
    name: str = "adamw"
    momentum: float = 0.9
    lr: float = 5e-4
    #: the learning rates are scaled by ``data.batch_size / lr_base_batch`` (null: not scaled)
    lr_base_batch: int | None = 512
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    #: clip the gradient norm to this value (null: no clipping)
    clip_grad: float | None = 5.0
    #: micro-batches per step; the step's batch stays ``data.batch_size``
    accum_steps: int = 1
    #: learning-rate factor of every parameter but the classifier head (fine-tuning)
    backbone_lr_mult: float = 1.0
    #: ``standard`` (no decay on biases, norms, position tables; backbone_lr_mult on all but
    #: the head), ``official_video`` (the groups the official Video Swin code really built),
    #: ``official_seg`` (the official Swin segmentation configs: no decay on parameters whose
    #: name holds ``norm``, ``relative_position_bias_table`` or ``absolute_pos_embed``) or
    #: ``all`` (decay on every parameter); see tessera.train.optim
    param_groups: str = "standard"


@dataclass
class ScheduleConfig:
    epochs: int = 300
    #: a warm-up longer than the run is shortened to half of it (said when training starts)
    warmup_epochs: float = 20.0
    warmup_lr: float = 5e-7
    min_lr: float = 5e-6
    #: ``timm`` (per-iteration cosine after the warm-up, the image recipes), ``mmcv`` (the
    #: video recipes: cosine per epoch over the whole run, the warm-up scaling it) or ``poly``
    #: (the segmentation recipes: per iteration, ``(1 - step / total) ** power``, the warm-up
    #: scaling it as mmcv's); see tessera.train.schedule
    style: str = "timm"
    power: float = 1.0
    #: a length in optimiser steps instead of epochs (iteration-based recipes such as mmseg's
    #: 160k); the run ends after that many steps, in the middle of an epoch if need be
    iters: int | None = None
    #: the warm-up in steps (instead of warmup_epochs)
    warmup_iters: int | None = None


@dataclass
class TrainConfig:
    seed: int = 0
    #: ``auto`` (a GPU when there is one), ``cpu``, ``cuda``, ``cuda:1``
    device: str = "auto"
    #: ``auto`` (fp16 on a GPU as the official recipe, none on CPU), ``none``, ``bf16``, ``fp16``
    amp: str = "auto"
    #: decay of an exponential moving average of the weights, evaluated alongside (0: none)
    ema_decay: float = 0.0
    #: deterministic algorithms (slower on GPU); CPU runs are deterministic anyway
    deterministic: bool = False
    #: CPU threads per process (null: the cores divided among the processes)
    threads: int | None = None
    #: stop after this many steps in a row with a non-finite loss or gradient
    max_nan_steps: int = 10
    eval_every: int = 1
    #: also write the training state every this many steps (0: at the end of each epoch only)
    save_every_steps: int = 0
    #: stop after this many steps in total (0: the whole schedule); the schedule is unchanged
    max_steps: int = 0


@dataclass
class Recipe:
    #: classification or segmentation (per-pixel labels: data.kind=segmentation)
    task: str = "classification"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------
# Finding and reading recipes
# ---------------------------------------------------------------------------------------


def shipped_recipes() -> list[str]:
    """Names of the recipes shipped with tessera (``tessera/configs/*.yaml``)."""
    return sorted(p.name[: -len(".yaml")] for p in resources.files("tessera").joinpath("configs").iterdir()
                  if p.name.endswith(".yaml"))


def _read_yaml(source: str, relative_to: Path | None = None) -> tuple[dict, Path | None]:
    candidates = [Path(source)]
    if relative_to is not None:
        candidates.insert(0, relative_to / source)
    for path in candidates:
        if path.is_file():
            text, where = path.read_text(), path.resolve().parent
            break
    else:
        shipped = resources.files("tessera").joinpath("configs") / f"{source}.yaml"
        if not shipped.is_file():
            names = ", ".join(shipped_recipes())
            raise ConfigError(f"no recipe {source!r}: not a file, and not a shipped recipe ({names})")
        text, where = shipped.read_text(), None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {source!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {source!r} must be a mapping of sections, found {type(data).__name__}")
    return data, where


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_recipe_dict(source: str, relative_to: Path | None = None, _seen: tuple = ()) -> dict:
    """The raw mapping of a recipe, with its ``base`` chain merged in."""
    if source in _seen:
        raise ConfigError(f"recipe {source!r} is its own base")
    data, where = _read_yaml(source, relative_to)
    base = data.pop("base", None)
    if base is None:
        return data
    return _merge(read_recipe_dict(str(base), where, (*_seen, source)), data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=1e-3"`` -> ``(["optim", "lr"], 0.001)``; the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = _merge({}, data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
        node[path[-1]] = value
    return data


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if tp is dict:
        return "a mapping"
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        n = "" if args[-1] is Ellipsis else f"{len(args)} "
        return f"a list of {n}numbers"
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    return str(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    bad = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError:
                pass
        raise bad
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        args = typing.get_args(tp)
        if args[-1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise bad
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 5e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if tp is dict:
        if isinstance(value, dict):
            return dict(value)
        raise bad
    raise TypeError(f"unsupported recipe field type {tp}")  # pragma: no cover - a bug here


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f"; known keys: {', '.join(names)}"
            raise ConfigError(f"unknown key '{prefix}{key}'{hint}")
    values = {}
    for name in names:
        if name not in data:
            continue
        value, tp = data[name], hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, value, f"{prefix}{name}.")
        elif value == MISSING:
            values[name] = MISSING
        else:
            values[name] = _coerce(value, tp, f"{prefix}{name}")
    return cls(**values)


def _check_semantics(r: Recipe) -> None:
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    need(r.data.batch_size > 0, f"data.batch_size must be positive, got {r.data.batch_size}")
    need(r.optim.accum_steps >= 1, f"optim.accum_steps must be at least 1, got {r.optim.accum_steps}")
    need(r.data.batch_size % r.optim.accum_steps == 0,
         f"data.batch_size ({r.data.batch_size}) must be a multiple of optim.accum_steps ({r.optim.accum_steps})")
    need(r.schedule.epochs >= 1, f"schedule.epochs must be at least 1, got {r.schedule.epochs}")
    need(r.schedule.warmup_epochs >= 0, f"schedule.warmup_epochs must be at least 0, got {r.schedule.warmup_epochs}")
    need(0.0 <= r.data.val_split < 1.0, f"data.val_split must be in [0, 1), got {r.data.val_split}")
    need(r.data.num_workers is None or r.data.num_workers >= 0,
         f"data.num_workers must be at least 0 or null, got {r.data.num_workers}")
    need(r.train.amp in ("auto", "none", "bf16", "fp16"), f"train.amp must be auto, none, bf16 or fp16, got {r.train.amp!r}")
    need(0.0 <= r.train.ema_decay < 1.0, f"train.ema_decay must be in [0, 1), got {r.train.ema_decay}")
    need(0.0 < r.data.crop_pct <= 1.0, f"data.crop_pct must be in (0, 1], got {r.data.crop_pct}")
    need(r.data.interpolation in ("bicubic", "bilinear", "nearest"),
         f"data.interpolation must be bicubic, bilinear or nearest, got {r.data.interpolation!r}")
    need(0.0 <= r.augment.randaugment_m < 10.0, f"augment.randaugment_m must be in [0, 10), got {r.augment.randaugment_m}")
    need(r.train.max_nan_steps >= 1, f"train.max_nan_steps must be at least 1, got {r.train.max_nan_steps}")
    need(r.optim.param_groups in ("standard", "official_video", "official_seg", "all"),
         f"optim.param_groups must be standard, official_video, official_seg or all, got {r.optim.param_groups!r}")
    need(r.optim.name in ("adamw", "sgd"), f"optim.name must be adamw or sgd, got {r.optim.name!r}")
    need(r.schedule.style in ("timm", "mmcv", "poly"),
         f"schedule.style must be timm, mmcv or poly, got {r.schedule.style!r}")
    need(r.schedule.iters is None or r.schedule.iters >= 1, f"schedule.iters must be at least 1, got {r.schedule.iters}")
    need(r.schedule.warmup_iters is None or r.schedule.warmup_iters >= 0,
         f"schedule.warmup_iters must be at least 0, got {r.schedule.warmup_iters}")
    need(r.task in ("classification", "segmentation"),
         f"task must be classification or segmentation, got {r.task!r}")
    need((r.task == "segmentation") == (r.data.kind == "segmentation"),
         f"task {r.task} with data.kind={r.data.kind}: segmentation takes data.kind=segmentation and only it")
    d = r.data
    for key in ("clip_len", "frame_interval", "num_clips"):
        need(getattr(d, key) >= 1, f"data.{key} must be at least 1, got {getattr(d, key)}")
    need(d.num_crops in (1, 3), f"data.num_crops must be 1 (centre) or 3 (covering the short side), got {d.num_crops}")
    need(not d.frame_uniform or d.num_clips == 1,
         f"data.frame_uniform samples one clip per video; set data.num_clips=1 (got {d.num_clips})")
    need(d.max_testing_views is None or d.max_testing_views >= 1,
         f"data.max_testing_views must be at least 1 or null, got {d.max_testing_views}")
    need(d.layout in ("auto", "ade20k", "voc", "cityscapes", "pairs"),
         f"data.layout must be auto, ade20k, voc, cityscapes or pairs, got {d.layout!r}")
    need(d.test_mode in ("whole", "slide"), f"data.test_mode must be whole or slide, got {d.test_mode!r}")
    need(0 < d.ratio_range[0] <= d.ratio_range[1], f"data.ratio_range must be (low, high) with 0 < low <= high, "
                                                  f"got {d.ratio_range}")
    need(0 < d.cat_max_ratio <= 1, f"data.cat_max_ratio must be in (0, 1], got {d.cat_max_ratio}")
    need(len(d.test_ratios) >= 1 and min(d.test_ratios) > 0, f"data.test_ratios must be positive, got {d.test_ratios}")
    for key in ("crop_size", "img_scale", "test_stride"):
        need(getattr(d, key) is None or min(getattr(d, key)) >= 1, f"data.{key} must be positive, got {getattr(d, key)}")
    need(0 <= d.ignore_index <= 255, f"data.ignore_index must be in 0..255 (label maps are 8-bit), got {d.ignore_index}")
    need(r.loss.ce_weight >= 0 and r.loss.dice_weight >= 0 and r.loss.ce_weight + r.loss.dice_weight > 0,
         f"loss.ce_weight and loss.dice_weight must be non-negative and not both 0, got {r.loss.ce_weight}, "
         f"{r.loss.dice_weight}")


def check_complete(recipe: Recipe) -> None:
    """Raise a ConfigError for the first key still set to ``???``."""
    for section in dataclasses.fields(recipe):
        part = getattr(recipe, section.name)
        if not dataclasses.is_dataclass(part):  # task
            continue
        for f in dataclasses.fields(part):
            if getattr(part, f.name) == MISSING:
                key = f"{section.name}.{f.name}"
                raise ConfigError(f"{key}: the recipe needs a value; add {key}=... to the command line")


def recipe_from_dict(data: dict) -> Recipe:
    """Validate a raw mapping into a :class:`Recipe` (no ``???`` left, types and ranges checked)."""
    recipe = _build(Recipe, data, "")
    check_complete(recipe)
    _check_semantics(recipe)
    return recipe


def fit_to_data(recipe: Recipe, num_samples: int, world_size: int = 1) -> tuple[Recipe, list[str]]:
    """The recipe as it can run on a training set of ``num_samples`` samples, and one line
    for each thing it changes:

    * a batch larger than the training set becomes the whole set (rounded down to a
      multiple of ``optim.accum_steps`` x processes): one step per epoch; learning rates
      scaled by the batch (``optim.lr_base_batch``) follow the batch actually used;
    * a warm-up longer than the run is shortened to half of it, so that the run still
      ends on the cosine's way down rather than at the peak rate.

    Raises :class:`DataError` for fewer samples than micro-batches in a step.
    """
    notes = []
    d, s = recipe.data, recipe.schedule
    if num_samples < d.batch_size:
        parts = recipe.optim.accum_steps * world_size
        batch = num_samples // parts * parts
        if batch == 0:
            raise DataError(f"the training set has {num_samples} samples, fewer than the {parts} micro-batches "
                            f"of one step (optim.accum_steps x processes)")
        scaled = " (the learning rates scale with it, optim.lr_base_batch)" if recipe.optim.lr_base_batch else ""
        notes.append(f"data.batch_size={d.batch_size} is more than the {num_samples} training samples: "
                     f"steps of {batch} instead, one per epoch{scaled}")
        d = dataclasses.replace(d, batch_size=batch)
    if s.warmup_epochs > s.epochs:
        warmup = s.epochs / 2
        notes.append(f"schedule.warmup_epochs={s.warmup_epochs:g} is longer than the run "
                     f"(schedule.epochs={s.epochs}): warming up over its first half ({warmup:g} epochs) instead")
        s = dataclasses.replace(s, warmup_epochs=warmup)
    return dataclasses.replace(recipe, data=d, schedule=s), notes


def load_recipe(source: str, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe by shipped name or path, apply ``key=value`` overrides and validate it."""
    return recipe_from_dict(apply_overrides(read_recipe_dict(source), list(overrides)))
