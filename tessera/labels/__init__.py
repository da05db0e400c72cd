"""Class names of the label sets that published weights predict, shipped as text files.

Each file has one class per line, in the order of the classifiers' outputs (line ``i``
names output ``i``). The ImageNet files also give each class's WordNet synset (``n01440764``)
before a tab, which is how ImageNet-style folders name their classes.

=========================  =======  ===========================================================
label set                  classes  names from
=========================  =======  ===========================================================
``imagenet-1k``            1000     synsets: timm's ``imagenet_synsets.txt``; names: torchvision's
                                    ``_IMAGENET_CATEGORIES``
``imagenet-22k``           21841    synsets: timm's ``imagenet22k_synsets.txt`` (the fall 2011
                                    release, sorted, as the official Swin ImageNet-22K heads);
                                    names: the first WordNet lemma of each synset (timm's
                                    ``imagenet_synset_to_lemma.txt``)
``kinetics-400``           400      torchvision's ``_KINETICS400_CATEGORIES`` (sorted, as
                                    mmaction2's ``label_map_k400.txt``)
``kinetics-600``           600      the Kinetics-600 class list, sorted as mmaction2's
                                    ``label_map_k600.txt``
``something-something-v2`` 174      mmaction2's ``tools/data/sthv2/label_map.txt`` (the order of
                                    the data set's ``labels.json``)
=========================  =======  ===========================================================
"""

from __future__ import annotations

import functools
from importlib import resources

from ..errors import ConfigError

#: label set -> (file in this package, number of classes)
LABEL_SETS: dict[str, tuple[str, int]] = {
    "imagenet-1k": ("imagenet-1k.txt", 1000),
    "imagenet-22k": ("imagenet-22k.txt", 21841),
    "kinetics-400": ("kinetics-400.txt", 400),
    "kinetics-600": ("kinetics-600.txt", 600),
    "something-something-v2": ("something-something-v2.txt", 174),
}

__all__ = ["LABEL_SETS", "label_names", "label_set_for", "synsets", "synset_to_index"]


def _check(label_set: str) -> str:
    if label_set not in LABEL_SETS:
        raise ConfigError(f"unknown label set {label_set!r}; known: {', '.join(LABEL_SETS)}")
    return label_set


@functools.lru_cache(maxsize=None)
def _read(label_set: str) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """``(names, synsets or None)`` of a label set, read once."""
    file, count = LABEL_SETS[_check(label_set)]
    lines = resources.files(__name__).joinpath(file).read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t", 1) for line in lines if line]
    if len(rows) != count:  # a damaged installation, not the user's input
        raise RuntimeError(f"{file}: {len(rows)} classes, expected {count}")
    if all(len(r) == 2 for r in rows):
        return tuple(r[1] for r in rows), tuple(r[0] for r in rows)
    return tuple(r[0] for r in rows), None


def label_names(label_set: str) -> list[str]:
    """The class names of ``label_set`` in output order (``label_names("imagenet-1k")[0]`` is
    ``"tench"``)."""
    return list(_read(label_set)[0])


def synsets(label_set: str) -> list[str] | None:
    """The WordNet synset of each class of an ImageNet label set (None for the others)."""
    ids = _read(label_set)[1]
    return list(ids) if ids is not None else None


def synset_to_index(label_set: str) -> dict[str, int]:
    """``{"n01440764": 0, ...}`` for an ImageNet label set (empty for the others)."""
    return {s: i for i, s in enumerate(synsets(label_set) or [])}


def label_set_for(num_classes: int) -> str | None:
    """The label set a classifier of ``num_classes`` outputs most likely predicts (every set
    here has its own class count), or None."""
    return next((name for name, (_, count) in LABEL_SETS.items() if count == num_classes), None)
