"""Which frames a clip takes: mmaction2's ``SampleFrames`` as the official Video Swin
recipes use it, written as pure functions of the frame count and a random generator.

Two ways of sampling:

* **interval** (Kinetics): a clip is ``clip_len`` frames ``frame_interval`` apart. Training
  takes ``num_clips`` clips (1 in the recipes) at random offsets, one in each of
  ``num_clips`` equal segments of the start positions; testing takes ``num_clips`` clips
  spread uniformly, each in the middle of its segment: with
  ``avg = (T - clip_len * interval + 1) / num_clips``, clip ``i`` starts at
  ``int(i * avg + avg / 2)``.
* **uniform** (Something-Something v2, the official ``frame_uniform``): the video is cut into
  ``clip_len`` equal segments and one frame is taken from each, at random in training and
  in the middle at test time. ``frame_interval`` plays no part and there is one clip.

Short videos (fewer than ``clip_len * interval`` frames) are handled as the official pipeline
does (``out_of_bound_opt='loop'``): the clip starts at frame 0 (training: at offsets
spread over what little room there is, see :func:`interval_clips`) and indices past the
end wrap around to the start, so a 40-frame video sampled 32 x 2 gives frames
``0, 2, ..., 38, 0, 2, ..., 22``. With uniform sampling, segments shorter than one frame
repeat frames in order (8 frames from 5: ``0, 0, 1, 2, 2, 2, 3, 4`` at test time).

The arithmetic follows mmaction2 to the rounding: ``//`` and ``int`` truncation, and NumPy's
round-half-to-even where the official code uses ``np.around``/``np.round``.
"""

from __future__ import annotations

import numpy as np

MODES = ("train", "test")


def _check(num_frames: int, clip_len: int, interval: int, num_clips: int, mode: str) -> None:
    if num_frames < 1:
        raise ValueError(f"cannot sample a clip from a video of {num_frames} frames")
    if clip_len < 1 or interval < 1 or num_clips < 1:
        raise ValueError(f"clip_len, interval and num_clips must be positive, got {clip_len}, {interval}, {num_clips}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def clip_offsets(num_frames: int, clip_len: int, interval: int = 1, num_clips: int = 1, mode: str = "test",
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """The first frame of each clip, ``(num_clips,)`` (before wrapping around)."""
    _check(num_frames, clip_len, interval, num_clips, mode)
    span = clip_len * interval  # the official "ori_clip_len" (one interval more than the clip covers)
    if mode == "test":
        if num_frames < span:
            return np.zeros(num_clips, dtype=np.int64)
        avg = (num_frames - span + 1) / float(num_clips)
        return (np.arange(num_clips) * avg + avg / 2.0).astype(np.int64)
    rng = rng if rng is not None else np.random.default_rng()
    avg = (num_frames - span + 1) // num_clips
    if avg > 0:  # room for every clip in its own segment: a random start within it
        return np.arange(num_clips) * avg + rng.integers(avg, size=num_clips)
    if num_frames > max(num_clips, span):  # several clips overlapping: random sorted starts
        return np.sort(rng.integers(num_frames - span + 1, size=num_clips))
    if avg == 0:  # exactly no room: starts spread by a fraction of a frame, rounded
        ratio = (num_frames - span + 1.0) / num_clips
        return np.around(np.arange(num_clips) * ratio).astype(np.int64)
    return np.zeros(num_clips, dtype=np.int64)


def interval_clips(num_frames: int, clip_len: int, interval: int = 1, num_clips: int = 1, mode: str = "test",
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """Frame indices ``(num_clips, clip_len)`` of interval sampling; indices past the end
    wrap around (``% num_frames``)."""
    offsets = clip_offsets(num_frames, clip_len, interval, num_clips, mode, rng)
    return (offsets[:, None] + np.arange(clip_len)[None, :] * interval) % num_frames


def uniform_clip(num_frames: int, clip_len: int, mode: str = "test", rng: np.random.Generator | None = None) -> np.ndarray:
    """Frame indices ``(1, clip_len)`` of uniform sampling: segment ``i`` spans frames
    ``round(i * s) .. round((i + 1) * s)`` (both included) with ``s = (T - 1) / clip_len``;
    training draws one frame of each segment, testing takes ``(start + end) // 2``."""
    _check(num_frames, clip_len, 1, 1, mode)
    seg = float(num_frames - 1) / clip_len
    bounds = np.round(seg * np.arange(clip_len + 1)).astype(np.int64)
    start, end = bounds[:-1], bounds[1:]
    if mode == "test":
        return ((start + end) // 2)[None]
    rng = rng if rng is not None else np.random.default_rng()
    return rng.integers(start, end + 1)[None]


def sample_frames(num_frames: int, clip_len: int, interval: int = 1, num_clips: int = 1, mode: str = "test",
                  rng: np.random.Generator | None = None, uniform: bool = False) -> np.ndarray:
    """Frame indices ``(clips, clip_len)``: :func:`uniform_clip` when ``uniform`` (one clip;
    ``interval`` and ``num_clips`` are not used), else :func:`interval_clips`."""
    if uniform:
        return uniform_clip(num_frames, clip_len, mode, rng)
    return interval_clips(num_frames, clip_len, interval, num_clips, mode, rng)
