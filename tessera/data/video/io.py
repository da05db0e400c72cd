"""Reading video frames by index: video files through PyAV, folders of frame images, and
frames already in memory. All three give ``uint8`` arrays ``(N, H, W, 3)`` (RGB), resized
so that the short side is ``short_side`` (when given) as they are read. Also writing
frames as a video file (:func:`write_video`).

Video files (any container and codec FFmpeg reads: mp4, avi, webm, mkv, ...):

* **Frame index.** One pass over the packets (demuxing only, no decoding, as decord does)
  gives every frame's presentation timestamp and which frames are keyframes, so frame ``k``
  is the ``k``-th timestamp in order. This does not trust the frame count of the header,
  which containers such as webm and mkv do not have and damaged files get wrong. When the
  packets carry no timestamps, the frames are counted by decoding the file once and read
  by decoding from the start. The index (or count) is cached per process, keyed by the
  file's path, size and modification time.
* **Seeking.** To read frame ``k`` the reader seeks to the last keyframe at or before its
  timestamp and decodes forward to it; several frames of a clip are read in increasing
  order, decoding on from the previous one when no keyframe lies between them. A frame read
  this way is exactly the frame of a decode from the start (see the tests).
* **Damage.** A file that cannot be opened, has no video stream or no frames raises
  :class:`UnreadableVideo` (or PyAV's error) with the reason; the data sets turn it into
  a skipped sample. When a frame the index promised cannot be decoded, the file is decoded
  once from the start to count the frames it really has; the corrected count is cached and
  :class:`FrameCountChanged` asks the caller to sample again.

Resizing on the short side keeps the aspect ratio, as mmaction2's ``Resize((-1, S))``:
the long side becomes ``int(long * S / short + 0.5)``. Video frames are resized by FFmpeg
(swscale) as they are converted to RGB; image frames by Pillow.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

from ...errors import DataError
from ..images import IMG_EXTENSIONS, read_image
from ..transforms import RESAMPLE

#: file endings read as videos (case-insensitive)
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ogv",
                    ".3gp", ".ts")

#: the errors that mean "this video cannot be read" (the data sets skip such a video)
READ_ERRORS = (OSError, ValueError, EOFError, av.FFmpegError)

_SWSCALE = {"bilinear": "BILINEAR", "bicubic": "BICUBIC", "nearest": "POINT"}


class UnreadableVideo(DataError):
    """A video without a video stream or without frames."""


class FrameCountChanged(UnreadableVideo):
    """The file has fewer frames than its packets promised; the count has been corrected."""


def short_side_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """``(width, height)`` with the short side scaled to ``short_side`` (unchanged for None)."""
    if short_side is None:
        return width, height
    scale = short_side / min(width, height)
    return int(width * scale + 0.5), int(height * scale + 0.5)


def resize_frames(frames: np.ndarray, size: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """``uint8 (N, H, W, C) -> (N, h, w, C)`` for ``size = (w, h)`` (Pillow, frame by frame)."""
    if (frames.shape[2], frames.shape[1]) == tuple(size):
        return frames
    resample = RESAMPLE[interpolation]
    return np.stack([np.asarray(Image.fromarray(f).resize(tuple(size), resample)) for f in frames])


def _gather(frames: dict[int, np.ndarray], indices: Sequence[int]) -> np.ndarray:
    return np.stack([frames[int(i)] for i in indices])


def _check_indices(indices: Sequence[int], count: int, what: str) -> list[int]:
    wanted = sorted({int(i) for i in indices})
    if wanted and (wanted[0] < 0 or wanted[-1] >= count):
        raise IndexError(f"{what}: frame {wanted[-1] if wanted[-1] >= count else wanted[0]} of {count}")
    return wanted


# ---------------------------------------------------------------------------------------
# Video files
# ---------------------------------------------------------------------------------------


class FrameSourceBase:
    """A context manager that closes what it opened (nothing, unless :meth:`close` says)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class FrameIndex:
    """Where a file's frames are: ``pts`` of every frame in presentation order and the
    ``keyframes``' pts (both ``None`` when the packets have no timestamps: sequential reading)."""

    count: int
    pts: np.ndarray | None = None
    keyframes: np.ndarray | None = None


_INDEX_CACHE: OrderedDict[tuple, FrameIndex] = OrderedDict()
_INDEX_CACHE_SIZE = 8192


def _cache_key(path: str) -> tuple:
    st = os.stat(path)
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


class VideoFile(FrameSourceBase):
    """A video file read by frame index (0-based, in presentation order).

    Args:
        path: the file.
        interpolation: of the short-side resize (``bilinear``, ``bicubic``, ``nearest``).

    Use as a context manager (or call :meth:`close`).
    """

    def __init__(self, path: str | os.PathLike, interpolation: str = "bilinear") -> None:
        self.path = str(path)
        self.interpolation = _SWSCALE[interpolation]
        self.container = av.open(self.path, metadata_errors="ignore")
        try:
            if not self.container.streams.video:
                raise UnreadableVideo(f"{self.path}: no video stream")
            self.stream = self.container.streams.video[0]
            key = _cache_key(self.path)
            index = _INDEX_CACHE.get(key)
            if index is None:
                index = self._build_index()
                self._remember(index)
            self.index = index
            if index.count == 0:
                raise UnreadableVideo(f"{self.path}: no video frames")
        except BaseException:
            self.container.close()
            raise

    def close(self) -> None:
        self.container.close()

    @property
    def num_frames(self) -> int:
        return self.index.count

    def _remember(self, index: FrameIndex) -> None:
        key = _cache_key(self.path)
        _INDEX_CACHE[key] = index
        _INDEX_CACHE.move_to_end(key)
        while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
            _INDEX_CACHE.popitem(last=False)

    def _build_index(self) -> FrameIndex:
        packets = [(p.pts, p.is_keyframe) for p in self.container.demux(self.stream) if p.size]
        if any(pts is None for pts, _ in packets):
            return FrameIndex(self._count_by_decoding())
        packets.sort()
        pts = np.array([p for p, _ in packets], dtype=np.int64)
        keys = np.array([p for p, k in packets if k], dtype=np.int64)
        if len(pts) and (not len(keys) or keys[0] > pts[0]):
            keys = np.concatenate([pts[:1], keys])  # the first frame is where decoding starts anyway
        return FrameIndex(len(pts), pts, keys)

    def _rewind(self) -> None:
        self.container.seek(0, stream=self.stream, backward=True, any_frame=False)

    def _count_by_decoding(self) -> int:
        self._rewind()
        count = sum(1 for _ in self.container.decode(self.stream))
        self._rewind()
        return count

    def _convert(self, frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
        return frame.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation=self.interpolation)

    def read(self, indices: Sequence[int], short_side: int | None = None) -> np.ndarray:
        """Frames ``indices`` (any order, repeats allowed) as ``uint8 (len(indices), H, W, 3)``."""
        wanted = _check_indices(indices, self.num_frames, self.path)
        cc = self.stream.codec_context
        size = short_side_size(cc.width, cc.height, short_side)
        if self.index.pts is not None:
            frames = self._read_seeking(wanted, size)
            if len(frames) < len(wanted):  # the index promised frames the file does not have
                frames = self._read_sequential(wanted, size, recount=True)
        else:
            frames = self._read_sequential(wanted, size)
        return _gather(frames, indices)

    def _read_seeking(self, wanted: list[int], size: tuple[int, int]) -> dict[int, np.ndarray]:
        pts, keys = self.index.pts, self.index.keyframes
        out: dict[int, np.ndarray] = {}
        frames, current = None, None
        for i in wanted:
            target = int(pts[i])
            keyframe = int(keys[np.searchsorted(keys, target, side="right") - 1])
            if frames is None or current is None or current >= target or keyframe > current:
                self.container.seek(keyframe, stream=self.stream, backward=True, any_frame=False)
                frames, current = self.container.decode(self.stream), None
            for frame in frames:
                if frame.pts is None:
                    continue
                current = frame.pts
                if frame.pts >= target:
                    out[i] = self._convert(frame, size)
                    break
            else:
                return out  # decoding ended before frame i
        return out

    def _read_sequential(self, wanted: list[int], size: tuple[int, int], recount: bool = False) -> dict[int, np.ndarray]:
        self._rewind()
        out: dict[int, np.ndarray] = {}
        todo = set(wanted)
        count = 0
        for count, frame in enumerate(self.container.decode(self.stream), start=1):
            if count - 1 in todo:
                out[count - 1] = self._convert(frame, size)
                if not recount and len(out) == len(todo):
                    break
        if recount:
            promised = self.index.count
            self.index = FrameIndex(count)
            self._remember(self.index)
            if count == 0:
                raise UnreadableVideo(f"{self.path}: no decodable video frames")
            if len(out) < len(todo):
                raise FrameCountChanged(f"{self.path}: {count} decodable frames, not the {promised} of its packets")
        return out


# ---------------------------------------------------------------------------------------
# Folders of frames and frames in memory
# ---------------------------------------------------------------------------------------


def _natural_key(name: str) -> list:
    """``frame_2.jpg`` before ``frame_10.jpg``: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def frame_files(folder: str | os.PathLike) -> list[Path]:
    """The image files of a frames folder, sorted by name (numbers compared as numbers)."""
    folder = Path(folder)
    names = [e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")
             and e.name.lower().endswith(IMG_EXTENSIONS)]
    return [folder / n for n in sorted(names, key=_natural_key)]


class FrameFolder(FrameSourceBase):
    """A video stored as one image file per frame (JPEG, PNG, ...), in name order."""

    def __init__(self, path: str | os.PathLike, interpolation: str = "bilinear") -> None:
        self.path = str(path)
        self.interpolation = interpolation
        self.files = frame_files(path)
        if not self.files:
            raise UnreadableVideo(f"{self.path}: a folder without frame images")

    @property
    def num_frames(self) -> int:
        return len(self.files)

    def _load(self, i: int) -> np.ndarray:
        return np.asarray(read_image(self.files[i]))

    def read(self, indices: Sequence[int], short_side: int | None = None) -> np.ndarray:
        wanted = _check_indices(indices, self.num_frames, self.path)
        first = self._load(wanted[0])
        size = short_side_size(first.shape[1], first.shape[0], short_side)
        frames = {}
        for i in wanted:
            arr = first if i == wanted[0] else self._load(i)
            if arr.shape != first.shape:  # frames of another size follow the first one
                arr = resize_frames(arr[None], (first.shape[1], first.shape[0]), self.interpolation)[0]
            frames[i] = resize_frames(arr[None], size, self.interpolation)[0]
        return _gather(frames, indices)


class FrameArray(FrameSourceBase):
    """Frames already in memory, ``uint8 (T, H, W, 3)``, read like a file."""

    def __init__(self, frames: np.ndarray, name: str = "<frames>", interpolation: str = "bilinear") -> None:
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        self.frames, self.path, self.interpolation = frames, name, interpolation

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def read(self, indices: Sequence[int], short_side: int | None = None) -> np.ndarray:
        _check_indices(indices, self.num_frames, self.path)
        h, w = self.frames.shape[1:3]
        return resize_frames(self.frames[np.asarray(indices, dtype=np.int64)], short_side_size(w, h, short_side),
                             self.interpolation)


def is_video_path(path: str | os.PathLike) -> bool:
    """A file with a video ending, or a folder holding frame images."""
    path = Path(path)
    if path.is_dir():
        return bool(frame_files(path))
    return path.suffix.lower() in VIDEO_EXTENSIONS


def open_video(path: str | os.PathLike, interpolation: str = "bilinear") -> VideoFile | FrameFolder:
    """A :class:`FrameFolder` for a directory, else a :class:`VideoFile`."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        return FrameFolder(path, interpolation)
    return VideoFile(path, interpolation)


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------

#: the encoder of each container written by :func:`write_video`
ENCODERS = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".webm": "libvpx-vp9", ".avi": "mpeg4"}


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 12, quality: int = 12) -> None:
    """Encode ``uint8 (T, H, W, 3)`` frames (even H and W) with PyAV: H.264 for mp4, mkv and
    mov, VP9 for webm, MPEG-4 part 2 for avi; ``quality`` is the constant-rate factor or
    quantiser (lower is closer to the frames; 12 is nearly lossless)."""
    path = Path(path)
    codec = ENCODERS.get(path.suffix.lower())
    if codec is None:
        raise DataError(f"{path}: cannot write {path.suffix or 'files without an ending'} (write {', '.join(ENCODERS)})")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"expected frames (T, H, W, 3) with even H and W, got {tuple(frames.shape)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if codec == "mpeg4":
            stream.codec_context.qscale = max(1, quality // 4)
            stream.codec_context.flags |= av.codec.context.Flags.qscale
        else:
            stream.options = {"crf": str(quality), **({"b:v": "0"} if codec == "libvpx-vp9" else {})}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
