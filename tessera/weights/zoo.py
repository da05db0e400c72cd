"""Pretrained weights by name: ``create_model("swin_t.ms_in1k", pretrained=True)``.

Every published weight is a :class:`Pretrained` entry named ``<model>.<tag>`` (timm's
convention): the registered model, and a tag that says what the weights were trained on
(``ms_in1k``: Microsoft's ImageNet-1K release, ``tv_in1k``: torchvision's, ``k400_1k``:
Kinetics-400 from ImageNet-1K weights, ...). An entry records where the file is (one or more
:class:`Source` s, tried in order), its format and licence, the accuracy its publisher
reports, the preprocessing it was evaluated with, its label set, and the constructor
arguments that differ from the registered model's. The entries themselves are data, in
:mod:`tessera.weights.zoo_entries`.

Loading an entry downloads its file once (:mod:`tessera.weights.hub`), converts it to
tessera's names and keeps that as ``$TESSERA_HOME/weights/<model>.<tag>.safetensors``, so
that every later load reads one safetensors file (no pickle, no conversion).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UnknownModelError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: bump when a converter changes what it writes: converted files of an older version are redone
CONVERSION_VERSION = 1
#: the metadata key of a converted file in the weights cache
ZOO_KEY = "tessera_pretrained"


@dataclass(frozen=True)
class Source:
    """Where a weight file is published: a plain ``url``, or a ``hub`` repository and its
    ``file``; ``sha256`` is its published digest (or the first hex digits of it); ``format``
    the checkpoint layout (a name of :mod:`tessera.weights.formats`)."""

    format: str
    url: str | None = None
    hub: str | None = None
    file: str = "model.safetensors"
    sha256: str | None = None

    def __post_init__(self) -> None:
        if (self.url is None) == (self.hub is None):
            raise ValueError("a source is a url or a hub repository, not both or neither")

    @property
    def location(self) -> str:
        """The URL, or ``hf-hub:<repo>/<file>``."""
        return self.url if self.url else f"hf-hub:{self.hub}/{self.file}"

    @property
    def file_name(self) -> str:
        return Path(self.url).name if self.url else self.file

    def fetch(self) -> Path:
        from .hub import download_hub, download_url

        return download_url(self.url, self.sha256) if self.url else download_hub(self.hub, self.file)


@dataclass(frozen=True)
class VideoViews:
    """How a video is sampled for evaluation: ``num_clips`` clips of ``clip_len`` frames
    ``frame_interval`` apart (or ``clip_len`` segments, one frame each, with
    ``frame_uniform``) times ``num_crops`` crops (1: centre, 3: along the long side)."""

    clip_len: int = 32
    frame_interval: int = 2
    num_clips: int = 4
    num_crops: int = 3
    frame_uniform: bool = False


@dataclass(frozen=True)
class Pretrained:
    """One published set of weights (see the module docstring)."""

    model: str
    tag: str
    sources: tuple[Source, ...]
    license: str
    label_set: str
    #: the publisher's accuracy on the label set's validation data (ImageNet-1K, Kinetics, SSv2)
    top1: float | None = None
    top5: float | None = None
    #: constructor arguments that differ from the registered model's
    args: dict[str, Any] = field(default_factory=dict)
    img_size: int = 224
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    video: VideoViews | None = None
    #: where the accuracy and the preprocessing come from, and anything else worth knowing
    notes: str = ""

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"

    @property
    def num_classes(self) -> int:
        from ..labels import LABEL_SETS

        return int(self.args.get("num_classes", LABEL_SETS[self.label_set][1]))

    def data_config(self) -> dict[str, Any]:
        """The weight's evaluation preprocessing, in the keys of a run's ``data`` section
        (see :func:`tessera.data.preprocess.data_config`)."""
        from ..data.preprocess import make_data_config

        views = dataclasses.asdict(self.video) if self.video else None
        return make_data_config(self.img_size, self.crop_pct, self.interpolation, self.mean, self.std, views)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (``tessera list --pretrained --json``)."""
        out = dataclasses.asdict(self)
        out["name"] = self.name
        out["sources"] = [{k: v for k, v in dataclasses.asdict(s).items() if v is not None} for s in self.sources]
        return out


_ENTRIES: dict[str, Pretrained] = {}


def register_pretrained(entry: Pretrained) -> Pretrained:
    """Add an entry; the first entry of a model is its default (``pretrained=True``)."""
    if entry.name in _ENTRIES:
        raise ValueError(f"pretrained weights {entry.name!r} are registered twice")
    if "." in entry.tag or not entry.tag:
        raise ValueError(f"{entry.name!r}: a tag is one word without dots")
    _ENTRIES[entry.name] = entry
    return entry


def _ensure_loaded() -> None:
    from . import zoo_entries  # noqa: F401  (registers the published weights)


def list_pretrained(pattern: str = "*") -> list[str]:
    """The ``model.tag`` names matching a shell-style ``pattern`` (matched against
    ``model.tag``), in the order of the table (each model's default first)."""
    _ensure_loaded()
    return [n for n in _ENTRIES if fnmatch.fnmatch(n, pattern) or fnmatch.fnmatch(n, pattern + ".*")]


def pretrained_tags(model: str) -> list[str]:
    """The tags of ``model``'s weights, its default first."""
    _ensure_loaded()
    return [e.tag for e in _ENTRIES.values() if e.model == model]


def is_pretrained_name(name: str) -> bool:
    """``name`` is a registered ``model.tag``."""
    _ensure_loaded()
    return name in _ENTRIES


_SEE_LIST = "tessera list --pretrained shows those there are"


def get_pretrained(model: str, tag: str | None = None) -> Pretrained:
    """The entry of ``model.tag`` (``model`` may carry the tag itself); without a tag, the
    model's default. Raises :class:`UnknownModelError` naming the tags there are."""
    _ensure_loaded()
    if tag is None and "." in model:
        model, tag = model.split(".", 1)
    tags = pretrained_tags(model)
    if tag is None:
        if not tags:
            from ..registry import model_entrypoint

            model_entrypoint(model)  # an unknown model: the registry's error, with close names
            raise UnknownModelError(f"{model} has no pretrained weights ({_SEE_LIST})")
        tag = tags[0]
    entry = _ENTRIES.get(f"{model}.{tag}")
    if entry is None:
        if not tags:
            from ..registry import model_entrypoint

            model_entrypoint(model)
            raise UnknownModelError(f"{model} has no pretrained weights ({_SEE_LIST})")
        raise UnknownModelError(f"{model} has no weights tagged {tag!r}; its tags: {', '.join(tags)}")
    return entry


def find_by_file_name(name: str) -> Pretrained | None:
    """The entry one of whose sources publishes a file of this name (for a downloaded file
    given by path: ``swin_tiny_patch4_window7_224.pth``), or None."""
    _ensure_loaded()
    for entry in _ENTRIES.values():
        if any(s.url and s.file_name == name for s in entry.sources):
            return entry
    return None


# ---------------------------------------------------------------------------------------
# The converted cache
# ---------------------------------------------------------------------------------------


def converted_path(entry: Pretrained) -> Path:
    from .hub import tessera_home

    return tessera_home() / "weights" / f"{entry.name}.safetensors"


def _cache_stamp(entry: Pretrained, source: Source) -> dict[str, Any]:
    return {"name": entry.name, "source": source.location, "version": CONVERSION_VERSION}


def _read_stamp(path: Path) -> dict[str, Any] | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return json.loads((f.metadata() or {}).get(ZOO_KEY, "null"))
    except Exception:  # a damaged cache file is converted again
        return None


def _fresh(path: Path, entry: Pretrained) -> bool:
    stamp = _read_stamp(path) if path.is_file() else None
    return bool(stamp) and stamp.get("name") == entry.name and stamp.get("version") == CONVERSION_VERSION and \
        stamp.get("source") in {s.location for s in entry.sources}


def _fetch_any(entry: Pretrained) -> tuple[Path, Source]:
    """The first source whose file can be had; the errors of all of them otherwise."""
    from .hub import DownloadError

    errors: list[DownloadError] = []
    for source in entry.sources:
        try:
            return source.fetch(), source
        except DownloadError as e:
            if not e.unreachable:  # a damaged file: said as it is
                raise DownloadError(f"{entry.name}: {e}") from None
            errors.append(e)
    first = errors[0]
    copies = f" nor its copies {', '.join(e.where for e in errors[1:])}" if len(errors) > 1 else ""
    raise DownloadError(f"{entry.name}: cannot download {first.where} ({first.reason}){copies}; download it "
                        f"yourself and put it at {first.manual}", first.where, first.reason, first.manual)


def cached_weights(entry: Pretrained) -> Path:
    """The entry's weights as tessera safetensors (converted on first use; see the module
    docstring). Raises :class:`~tessera.weights.hub.DownloadError` or
    :class:`CheckpointError` when the file cannot be had or read."""
    from safetensors.torch import save_file

    from ..atomic import atomic_path
    from .hub import file_lock
    from .load import convert_state_dict, read_state_dict

    target = converted_path(entry)
    if _fresh(target, entry):
        return target
    with file_lock(target):
        if _fresh(target, entry):  # converted by another process while we waited
            return target
        raw, source = _fetch_any(entry)
        sd, _, name = read_state_dict(raw)
        sd, _ = convert_state_dict(sd, source.format, name)
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}
        with atomic_path(target) as tmp:
            save_file(tensors, str(tmp), metadata={ZOO_KEY: json.dumps(_cache_stamp(entry, source)), "format": "pt"})
        log.info("%s: converted %s to %s", entry.name, raw, target)
    return target


def load_pretrained(model: Any, entry: Pretrained, verbose: bool = True):
    """Load ``entry``'s weights into ``model`` (downloaded and converted on first use).
    Returns the :class:`~tessera.weights.load.LoadReport`."""
    from .load import load_checkpoint

    path = cached_weights(entry)
    report = load_checkpoint(model, path, format="tessera", verbose=verbose)
    report.source = entry.name
    return report


def describe_model(model: Any, entry: Pretrained) -> None:
    """Give a freshly built model its weights' description: ``model.pretrained_cfg`` (the
    entry as a dict) and the weight's preprocessing in ``model.default_cfg``."""
    cfg = entry.data_config()
    model.pretrained_cfg = {**entry.to_dict(), "data": cfg}
    default = getattr(model, "default_cfg", None)
    if isinstance(default, dict):
        default.update(crop_pct=cfg["crop_pct"], interpolation=cfg["interpolation"], mean=tuple(cfg["mean"]),
                       std=tuple(cfg["std"]))


def is_path_like(text: str) -> bool:
    """Whether a string names a file or directory rather than a tag."""
    return os.path.exists(text) or os.sep in text or "/" in text or text.endswith((".pth", ".pt", ".bin",
                                                                                    ".safetensors"))


__all__ = [
    "Pretrained", "Source", "VideoViews", "cached_weights", "describe_model", "find_by_file_name",
    "get_pretrained", "is_pretrained_name", "list_pretrained", "load_pretrained", "pretrained_tags",
    "register_pretrained",
]
