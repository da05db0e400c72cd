"""Video data sets: a folder of class folders and an annotation list (the Kinetics /
mmaction2 layout). Each video is a file (any container FFmpeg reads) or a folder of
frame images.

Folder of class folders::

    root/<class>/<video>.mp4            (any of VIDEO_EXTENSIONS)
    root/<class>/<video>/00001.jpg ...  (a frames folder: its images in name order)

Annotation list: a text file with one video per line, ``relative/path label_index``
(the path may not contain spaces; a rawframes line ``path num_frames label`` is read too,
the count being taken from the folder itself). Paths are relative to the data section's
``video_prefix``, else to the list file's folder. Class names come from ``class_names``
(a file of one name per line, line ``i`` naming label ``i``); without it, the classes are
called ``0, 1, ...`` up to the largest label. Blank lines and lines starting with ``#``
are ignored.

A video that is missing, empty or damaged is not an error: its sample comes back as a
:class:`~tessera.data.images.BadSample` naming the path, and the loop reports and counts it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ...errors import DataError
from ..images import SampleDataset, class_folder_samples
from .clips import ClipPipeline, FrameSource
from .io import READ_ERRORS, VIDEO_EXTENSIONS, frame_files, open_video


class VideoDataset(SampleDataset):
    """Base class: subclasses set ``classes``, ``targets`` and implement :meth:`open`
    (index to a frame source, a context manager) and :meth:`describe`.

    Args:
        pipeline: the split's worker-side clips and crops (:class:`ClipPipeline`).
        seed: the seed of the per-sample random generators (sampling and crops).
    """

    read_errors = READ_ERRORS

    def __init__(self, pipeline: ClipPipeline, seed: int = 0) -> None:
        super().__init__(seed)
        self.pipeline = pipeline

    @property
    def num_views(self) -> int:
        return self.pipeline.num_views

    def open(self, index: int) -> FrameSource:  # pragma: no cover - abstract
        raise NotImplementedError

    def sample(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        with self.open(index) as source:
            return self.pipeline(source, rng)


class VideoFiles(VideoDataset):
    """Videos at known paths: ``samples`` is a list of ``(path, label)``."""

    samples: list[tuple[str, int]]

    def open(self, index: int) -> FrameSource:
        return open_video(self.samples[index][0], self.pipeline.interpolation)

    def describe(self, index: int) -> str:
        return self.samples[index][0]


def _videos_under(folder: Path) -> tuple[list[Path], list[Path]]:
    """``(videos, other files)`` under ``folder``, in name order. A video is a file with a
    video ending or a frames folder (a folder that holds images); other folders are searched,
    and one under which nothing is found is taken for a frames folder that lost its frames:
    listed as a video, it is reported and counted as a skipped sample when it is read."""
    videos, others = [], []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_dir():
            found, left_out = ([path], []) if frame_files(path) else _videos_under(path)
            videos += found or [path]
            others += left_out
        else:
            (videos if entry.name.lower().endswith(VIDEO_EXTENSIONS) else others).append(path)
    return videos, others


class VideoFolder(VideoFiles):
    """``root/<class>/<video>`` (video files or frames folders); classes in sorted order.

    Args:
        root: the folder of class folders.
        pipeline: the split's clips (:class:`ClipPipeline`).
        classes: the class names to use (a validation folder takes the training folder's
            classes); by default the sub-directories of ``root``.
        seed: the seed of the per-sample random generators.
        skip_empty_classes: leave class folders without videos out of the classes (with a
            warning) instead of refusing them.
    """

    def __init__(self, root: str | os.PathLike, pipeline: ClipPipeline, classes: Sequence[str] | None = None,
                 seed: int = 0, skip_empty_classes: bool = False) -> None:
        super().__init__(pipeline, seed)
        self.root = Path(root)
        self.classes, self.samples = class_folder_samples(
            self.root, classes, _videos_under, f"videos found (expected {self.root}/<class>/<video> with one of "
                                               f"{', '.join(VIDEO_EXTENSIONS)}, or folders of frame images)",
            "files that are not videos (by their ending)", skip_empty_classes, "videos")
        self.targets = [t for _, t in self.samples]


def read_class_names(path: str | os.PathLike) -> list[str]:
    """One class name per line (blank lines ignored)."""
    try:
        names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as e:
        raise DataError(f"{path}: cannot read the class names ({e.strerror or e})") from None
    if len(set(names)) != len(names):
        raise DataError(f"{path}: the class names are not unique")
    return names


class VideoList(VideoFiles):
    """An annotation list: ``relative/path label_index`` per line (see the module docstring).

    Args:
        list_file: the annotation list.
        pipeline: the split's clips (:class:`ClipPipeline`).
        prefix: the folder the paths are relative to (default: the list file's folder).
        classes: the class names (label ``i`` is ``classes[i]``); by default read from
            ``class_names``, else ``0 .. max label``.
        class_names: a file of class names, one per line.
        seed: the seed of the per-sample random generators.
    """

    def __init__(self, list_file: str | os.PathLike, pipeline: ClipPipeline, prefix: str | os.PathLike | None = None,
                 classes: Sequence[str] | None = None, class_names: str | os.PathLike | None = None,
                 seed: int = 0) -> None:
        super().__init__(pipeline, seed)
        self.list_file = Path(list_file)
        base = Path(prefix) if prefix else self.list_file.parent
        try:
            lines = self.list_file.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{self.list_file}: not a readable annotation list ({e})") from None
        self.samples = []
        for number, line in enumerate(lines, start=1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            if len(parts) not in (2, 3) or not parts[-1].lstrip("-").isdigit():
                raise DataError(f"{self.list_file}:{number}: expected 'path label_index' "
                                f"(or 'path num_frames label_index'), got {line.strip()!r}")
            self.samples.append((str(base / parts[0]), int(parts[-1])))
        if not self.samples:
            raise DataError(f"{self.list_file}: an annotation list without videos")
        self.targets = [t for _, t in self.samples]
        if classes is None:
            classes = read_class_names(class_names) if class_names else [str(i) for i in range(max(self.targets) + 1)]
        self.classes = list(classes)
        bad = next(((p, t) for p, t in self.samples if not 0 <= t < len(self.classes)), None)
        if bad is not None:
            raise DataError(f"{self.list_file}: {bad[0]} has label {bad[1]}, outside 0..{len(self.classes) - 1} "
                            f"({len(self.classes)} classes)")
