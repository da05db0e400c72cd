"""Video data: clip sampling against hand-computed indices, the three crops, decoding and
seeking with PyAV, frames folders, bad videos, annotation lists, the device-side
augmentation and the moving digits."""

import hashlib

import av
import numpy as np
import pytest
import torch
from PIL import Image

from tessera.data import VideoAugment, build_dataset
from tessera.data.images import BadSample
from tessera.data.loader import SkippedSamples, collate_skipping_bad
from tessera.data.moving_digits import (
    CLASSES,
    DIRECTIONS,
    HEIGHT,
    NUM_FRAMES,
    SPEED,
    WIDTH,
    moving_digits_split,
    render,
    write_moving_digits,
)
from tessera.data.video import (
    ClipPipeline,
    FrameArray,
    FrameFolder,
    VideoFile,
    VideoFolder,
    VideoList,
    open_video,
    three_crop_boxes,
    write_video,
)
from tessera.data.video.sampling import clip_offsets, interval_clips, sample_frames, uniform_clip
from tessera.errors import ConfigError, DataError
from tessera.train.recipe import DataConfig, load_recipe

from digit_folders import write_no_frames

# ---------------------------------------------------------------------------------------
# sampling (mmaction2's SampleFrames), against indices worked out by hand


def test_kinetics_test_clips_are_spread_uniformly():
    # 300 frames, 4 clips of 32 x 2: avg = (300 - 64 + 1) / 4 = 59.25, starts int(59.25 i + 29.625)
    idx = interval_clips(300, 32, 2, 4, "test")
    assert idx.shape == (4, 32)
    assert idx[:, 0].tolist() == [29, 88, 148, 207]
    assert idx[0].tolist() == list(range(29, 29 + 64, 2))
    assert idx[3, -1] == 207 + 62


def test_training_clip_starts_at_a_random_offset_within_the_room():
    # 300 frames, one clip of 32 x 2: avg = 237, start = randint(237) drawn from the generator
    expected = int(np.random.default_rng(7).integers(237, size=1)[0])
    idx = interval_clips(300, 32, 2, 1, "train", np.random.default_rng(7))
    assert idx.tolist() == [list(range(expected, expected + 64, 2))]
    starts = {int(interval_clips(300, 32, 2, 1, "train", np.random.default_rng(s))[0, 0]) for s in range(300)}
    assert min(starts) >= 0 and max(starts) <= 236 and len(starts) > 100
    # three clips of 4 x 2 from 20 frames: avg = (20 - 8 + 1) // 3 = 4, one start in each of 0-3, 4-7, 8-11
    for s in range(20):
        offsets = clip_offsets(20, 4, 2, 3, "train", np.random.default_rng(s))
        assert [o // 4 for o in offsets] == [0, 1, 2]


def test_short_videos_loop_as_the_official_pipeline():
    # 40 frames, 32 x 2 (needs 64): the clip starts at 0 and wraps around
    loop = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38,
            0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22]
    assert interval_clips(40, 32, 2, 4, "test").tolist() == [loop] * 4
    assert interval_clips(40, 32, 2, 1, "train", np.random.default_rng(0)).tolist() == [loop]
    assert interval_clips(1, 4, 3, 1, "test").tolist() == [[0, 0, 0, 0]]
    # exactly no room (avg == 0): starts at round(i * (T - 8 + 1) / clips), half to even
    assert clip_offsets(8, 4, 2, 2, "train", np.random.default_rng(0)).tolist() == [0, 0]
    assert clip_offsets(9, 4, 2, 4, "train", np.random.default_rng(0)).tolist() == sorted(
        np.random.default_rng(0).integers(2, size=4).tolist())  # 9 > max(4, 8): random sorted starts
    # test mode with exactly clip_len * interval frames: every clip at 0
    assert clip_offsets(64, 32, 2, 4, "test").tolist() == [0, 0, 0, 0]


def test_uniform_sampling_takes_one_frame_per_segment():
    # 100 frames, 8 segments of 99 / 8 = 12.375: bounds round(12.375 i) = 0 12 25 37 50 62 74 87 99
    assert uniform_clip(100, 8, "test").tolist() == [[6, 18, 31, 43, 56, 68, 80, 93]]
    bounds = [0, 12, 25, 37, 50, 62, 74, 87, 99]
    for s in range(30):
        idx = uniform_clip(100, 8, "train", np.random.default_rng(s))[0]
        assert all(lo <= i <= hi for i, lo, hi in zip(idx, bounds, bounds[1:]))
    # a short video repeats frames in order: 8 from 5 (segments of 0.5)
    assert uniform_clip(5, 8, "test").tolist() == [[0, 0, 1, 2, 2, 2, 3, 4]]
    assert sample_frames(100, 8, interval=5, num_clips=3, mode="test", uniform=True).shape == (1, 8)
    with pytest.raises(ValueError, match="0 frames"):
        sample_frames(0, 8)


def test_recipe_checks_video_keys():
    with pytest.raises(ConfigError, match="data.num_crops must be 1"):
        load_recipe("video_demo", ["data.num_crops=2"])
    with pytest.raises(ConfigError, match="set data.num_clips=1"):
        load_recipe("video_demo", ["data.frame_uniform=true"])


# ---------------------------------------------------------------------------------------
# crops


def test_three_crops_cover_the_short_side():
    # landscape 398 x 224: left, centre, right squares of 224, each the whole height
    assert three_crop_boxes(398, 224, 224) == [(0, 0), (87, 0), (174, 0)]
    # portrait: top, centre, bottom
    assert three_crop_boxes(224, 300, 224) == [(0, 0), (0, 38), (0, 76)]
    cfg = DataConfig(kind="video", img_size=16, clip_len=2, frame_interval=1, num_clips=2, num_crops=3)
    pipeline = ClipPipeline(cfg, "test")
    # a 6-frame video whose pixel (y, x) of frame t holds (t, y, x) (short side 16 already)
    t, y, x = np.meshgrid(np.arange(6), np.arange(16), np.arange(28), indexing="ij")
    frames = np.stack([t, y, x], axis=-1).astype(np.uint8)
    views = pipeline(FrameArray(frames), np.random.default_rng(0)).numpy()
    assert views.shape == (6, 2, 16, 16, 3) and pipeline.num_views == 6
    # clips at int(i * 2.5 + 1.25) = 1, 3 (frames 1-2 and 3-4), crops at x = 0, 6, 12
    assert [v[:, 0, 0, 0].tolist() for v in views] == [[1, 2]] * 3 + [[3, 4]] * 3
    assert [v[0, 0, 0, 2] for v in views[:3]] == [0, 6, 12]
    for v in views:
        assert v[0, :, 0, 1].tolist() == list(range(16))  # every row of the short side
    covered = {int(c) for v in views[:3] for c in v[0, 0, :, 2]}
    assert covered == set(range(28))


def test_train_and_val_clips():
    cfg = DataConfig(kind="video", img_size=16, clip_len=4, frame_interval=2, crop_pct=0.8, scale=(0.5, 1.0))
    frames = np.random.default_rng(0).integers(0, 255, (30, 40, 60, 3), dtype=np.uint8)
    train = ClipPipeline(cfg, "train")
    a = train(FrameArray(frames), np.random.default_rng((0, 0, 1)))
    b = train(FrameArray(frames), np.random.default_rng((0, 0, 1)))
    assert a.shape == (4, 16, 16, 3) and a.dtype == torch.uint8 and torch.equal(a, b)
    val = ClipPipeline(cfg, "val")
    assert val.num_views == 1 and val.short_side == 20
    v = val(FrameArray(frames), np.random.default_rng(0))
    assert v.shape == (4, 16, 16, 3)


# ---------------------------------------------------------------------------------------
# decoding


def solid_colours(n=30, h=48, w=64, seed=0):
    cols = np.random.default_rng(seed).integers(0, 256, (n, 3))
    return np.broadcast_to(cols[:, None, None, :], (n, h, w, 3)).astype(np.uint8).copy()


def moving_square(n=60, h=48, w=64):
    frames = np.full((n, h, w, 3), 40, np.uint8)
    for i in range(n):
        x = (i * 3) % (w - 8)
        frames[i, 10:18, x : x + 8] = (255, 40, 40)
        frames[i, 30:34, : (i % w)] = (40, 200, 90)
    return frames


@pytest.mark.parametrize("ext", [".mp4", ".webm", ".mkv", ".avi"])
def test_decoded_video_returns_the_frames_written(tmp_path, ext):
    frames = solid_colours()
    path = tmp_path / f"colours{ext}"
    write_video(path, frames)
    with open_video(path) as video:
        assert isinstance(video, VideoFile) and video.num_frames == 30  # webm and mkv have no count in the header
        got = video.read(range(30))
    assert got.shape == frames.shape and got.dtype == np.uint8
    # within the YUV 4:2:0 round trip of the codec
    assert np.abs(got.astype(int) - frames).max() <= 4
    # each frame is its own colour, not a neighbour's
    nearest = np.abs(got[:, 0, 0, None, :].astype(int) - frames[None, :, 0, 0, :]).sum(-1).argmin(-1)
    assert nearest.tolist() == list(range(30))


def test_reading_frame_k_equals_decoding_to_k(tmp_path):
    path = tmp_path / "square.mp4"
    frames = moving_square()
    with av.open(str(path), "w") as c:  # B-frames and a keyframe every 12 frames
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt, s.gop_size = 64, 48, "yuv420p", 12
        s.options = {"bf": "3", "crf": "20"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with av.open(str(path)) as c:
        sequential = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with VideoFile(path) as video:
        assert video.num_frames == 60 and len(video.index.keyframes) >= 5
        for k in range(60):
            assert np.array_equal(video.read([k])[0], sequential[k]), k
        order = [50, 3, 4, 20, 21, 40, 59, 3, 12, 11]
        assert np.array_equal(video.read(order), np.stack([sequential[k] for k in order]))
    # a fresh reader (the index cached) gives the same
    with VideoFile(path) as video:
        assert np.array_equal(video.read([37])[0], sequential[37])
    # short-side resizing: 48 x 64 -> 24 x 32
    with open_video(path) as video:
        assert video.read([0, 1], short_side=24).shape == (2, 24, 32, 3)


def test_streams_without_timestamps_and_lying_indices_fall_back_to_decoding(tmp_path):
    from tessera.data.video.io import _INDEX_CACHE, FrameCountChanged, FrameIndex, _cache_key

    path = tmp_path / "square.mkv"
    frames = moving_square(n=20)
    write_video(path, frames)
    with VideoFile(path) as video:
        truth = video.read(range(20))
        index = video.index
    # packets without timestamps: the count comes from decoding once, frames by decoding on
    _INDEX_CACHE[_cache_key(str(path))] = FrameIndex(20)
    with VideoFile(path) as video:
        assert np.array_equal(video.read([19, 4, 4]), truth[[19, 4, 4]])
    # an index promising frames the file does not have: the count is corrected and cached,
    # and the clip is sampled again from the frames that are there
    step = index.pts[1] - index.pts[0]
    longer = np.concatenate([index.pts, index.pts[-1] + step * np.arange(1, 11)])
    _INDEX_CACHE[_cache_key(str(path))] = FrameIndex(30, longer, index.keyframes)
    with VideoFile(path) as video:
        assert np.array_equal(video.read([3, 5]), truth[[3, 5]])  # there: read as usual
        with pytest.raises(FrameCountChanged, match="20 decodable frames, not the 30"):
            video.read([25])
        assert video.num_frames == 20
    assert _INDEX_CACHE[_cache_key(str(path))].count == 20
    _INDEX_CACHE[_cache_key(str(path))] = FrameIndex(30, longer, index.keyframes)
    cfg = DataConfig(kind="video", img_size=16, clip_len=8, frame_interval=3, num_clips=1, num_crops=1, crop_pct=1.0)
    with VideoFile(path) as video:  # 30 frames would start the clip at frame 3; 20 loop from 0
        clip = ClipPipeline(cfg, "test")(video, np.random.default_rng(0))
    assert clip.shape == (8, 16, 16, 3) and _INDEX_CACHE[_cache_key(str(path))].count == 20


def test_frames_folder_is_read_in_name_order(tmp_path):
    frames = solid_colours(n=12, h=20, w=30)
    folder = tmp_path / "clip"
    folder.mkdir()
    for i, f in enumerate(frames):  # frame_2 before frame_10; PNG is lossless
        Image.fromarray(f).save(folder / f"frame_{i}.png")
    (folder / "notes.txt").write_text("not a frame")
    with open_video(folder) as video:
        assert isinstance(video, FrameFolder) and video.num_frames == 12
        assert np.array_equal(video.read([10, 2, 2]), frames[[10, 2, 2]])
        assert video.read([0], short_side=10).shape == (1, 10, 15, 3)


def make_video_folder(root, classes=("left", "right"), per_class=3, bad=True):
    """Real mp4 files (moving squares) in class folders, plus a frames folder and, with
    ``bad``, one video of each broken kind."""
    for c, cls in enumerate(classes):
        for i in range(per_class):
            frames = moving_square(n=12 + i, h=32, w=40)
            write_video(root / cls / f"{i}.mp4", frames[:, :, ::-1] if c else frames)
    frames_dir = root / classes[0] / "as_frames"
    frames_dir.mkdir()
    for i, f in enumerate(moving_square(n=10, h=32, w=40)):
        Image.fromarray(f).save(frames_dir / f"img_{i:05d}.jpg")
    broken = {}
    if bad:
        d = root / classes[1]
        (d / "zero.mp4").write_bytes(b"")
        (d / "garbage.mkv").write_bytes(b"this is not a video" * 50)
        good = (root / classes[0] / "0.mp4").read_bytes()
        (d / "truncated.mp4").write_bytes(good[: len(good) // 2])
        write_no_frames(d / "empty.avi")
        write_no_frames(d / "audio_only.mp4", "libx264")
        (d / "frames_lost" / "nothing_inside").mkdir(parents=True)  # a frames folder without frames (nothing under it)
        (d / "notes.txt").write_text("not a video")  # no video by its ending: named once, not a sample
        broken = {"zero.mp4", "garbage.mkv", "truncated.mp4", "empty.avi", "audio_only.mp4", "nothing_inside"}
    return root, broken


VIDEO_CFG = dict(kind="video", img_size=16, clip_len=4, frame_interval=2, num_clips=2, num_crops=3, crop_pct=1.0,
                 interpolation="bilinear")


def test_video_folder_and_bad_videos_are_reported_and_skipped(tmp_path, caplog):
    root, broken = make_video_folder(tmp_path / "train")
    cfg = DataConfig(**VIDEO_CFG)
    ds = build_dataset(cfg, "train", source=str(root))
    assert isinstance(ds, VideoFolder) and ds.classes == ["left", "right"]
    assert len(ds) == 3 + 1 + 3 + 6  # videos, the frames folder, the broken ones
    items = [ds[i] for i in range(len(ds))]
    bad = [it for it in items if isinstance(it, BadSample)]
    assert sorted(b.path.rsplit("/", 1)[1] for b in bad) == sorted(broken)
    assert all(b.reason for b in bad)
    reasons = {b.path.rsplit("/", 1)[1]: b.reason for b in bad}
    assert "no video frames" in reasons["empty.avi"] and "no video stream" in reasons["audio_only.mp4"]
    assert reasons["nothing_inside"] == "a folder without frame images"
    assert caplog.text.count("notes.txt") == 1 and "ignored 1 files that are not videos" in caplog.text
    good = [it for it in items if not isinstance(it, BadSample)]
    assert all(x.shape == (4, 16, 16, 3) and x.dtype == torch.uint8 for x, _ in good)
    # the loop's machinery: each reported once with its path, counted, too many stop the run
    skipped = SkippedSamples("train", len(ds), max_fraction=0.5)
    for _ in range(2):
        x, _, bad_batch = collate_skipping_bad(items)
        skipped.add(bad_batch)
    assert len(skipped) == 6 and x.shape == (7, 4, 16, 16, 3)
    for name in broken:
        assert caplog.text.count(name) == 1
    with pytest.raises(DataError, match="6 of the 13 train samples could not be read"):
        SkippedSamples("train", len(ds), max_fraction=0.2).add(bad)
    test = build_dataset(cfg, "test", classes=ds.classes, source=str(root))
    x, _ = test[0]
    assert x.shape == (6, 4, 16, 16, 3) and test.num_views == 6


def test_annotation_list_with_prefix_class_names_and_missing_files(tmp_path):
    root, _ = make_video_folder(tmp_path / "videos", bad=False)
    lines = ["# path label", "left/0.mp4 0", "right/1.mp4 1", "", "left/as_frames 10 0", "right/missing.mp4 1"]
    (tmp_path / "lists").mkdir()
    listing = tmp_path / "lists" / "train.txt"
    listing.write_text("\n".join(lines) + "\n")
    (tmp_path / "lists" / "names.txt").write_text("to the left\nto the right\n")
    cfg = DataConfig(**VIDEO_CFG, video_prefix=str(root), class_names=str(tmp_path / "lists" / "names.txt"))
    ds = build_dataset(cfg, "train", source=str(listing))
    assert isinstance(ds, VideoList) and ds.classes == ["to the left", "to the right"]
    assert ds.targets == [0, 1, 0, 1] and ds.samples[2][0] == str(root / "left" / "as_frames")
    assert ds[0][0].shape == (4, 16, 16, 3) and ds[2][0].shape == (4, 16, 16, 3)
    missing = ds[3]
    assert isinstance(missing, BadSample) and missing.path.endswith("missing.mp4") and missing.reason == "no such file or directory"
    # paths relative to the list's folder when no prefix is given; classes 0..max label
    (root / "all.txt").write_text("left/0.mp4 0\nright/2.mp4 2\n")
    plain = build_dataset(DataConfig(**VIDEO_CFG), "train", source=str(root / "all.txt"))
    assert plain.classes == ["0", "1", "2"] and plain[1][1] == 2
    (root / "bad.txt").write_text("left/0.mp4\n")
    with pytest.raises(DataError, match=r"bad.txt:1: expected 'path label_index'"):
        build_dataset(DataConfig(**VIDEO_CFG), "train", source=str(root / "bad.txt"))
    with pytest.raises(DataError, match="label 2, outside 0..1"):
        build_dataset(DataConfig(**VIDEO_CFG), "val", classes=["a", "b"], source=str(root / "all.txt"))
    with pytest.raises(DataError, match="not a built-in data set: moving_digits"):
        build_dataset(DataConfig(**VIDEO_CFG), "train", source=str(tmp_path / "nowhere"))


# ---------------------------------------------------------------------------------------
# device-side augmentation


def test_video_augment_treats_every_frame_of_a_clip_alike():
    torch.manual_seed(0)
    frame = torch.randint(0, 256, (6, 1, 24, 24, 3), dtype=torch.uint8)
    clips = frame.expand(6, 5, 24, 24, 3).contiguous()  # (B, T, H, W, C): five identical frames
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    plain = VideoAugment(mean, std)(clips)
    ref = (clips.permute(0, 4, 1, 2, 3).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1, 1)) / torch.tensor(
        std).view(1, 3, 1, 1, 1)
    assert plain.shape == (6, 3, 5, 24, 24) and torch.allclose(plain, ref)
    for kwargs in (dict(randaugment_m=9, randaugment_groups=2), dict(color_jitter=0.4), dict(reprob=1.0),
                   dict(hflip=1.0)):
        out = VideoAugment(mean, std, train=True, randaugment_m=kwargs.pop("randaugment_m", 0), **kwargs)(clips)
        assert out.shape == plain.shape
        # the frames of each clip stay identical to each other (one draw per clip) ...
        assert torch.equal(out, out[:, :, :1].expand_as(out)), kwargs
        # ... and the augmentation did something
        assert not torch.allclose(out, plain), kwargs
    flipped = VideoAugment(mean, std, train=True, hflip=1.0)(clips)
    assert torch.allclose(flipped, plain.flip(-1))


def test_pixel_noise_is_new_in_every_frame_at_one_level_per_clip_and_only_in_training():
    torch.manual_seed(0)
    clips = torch.full((64, 4, 16, 16, 3), 128, dtype=torch.uint8)  # mid-grey: no clamping
    mean, std = (0.5,) * 3, (1.0,) * 3
    noisy = VideoAugment(mean, std, train=True, noise=0.1)(clips)  # (B, C, T, H, W), 0 where no noise
    assert VideoAugment(mean, std, noise=0.1)(clips).abs().max() < 0.01  # evaluation: none
    frames = noisy.std(dim=(1, 3, 4))  # (B, T): the noise level of every frame
    # one level per clip: its frames agree, and the clips' levels spread over [0, 0.1]
    assert (frames.max(1).values - frames.min(1).values).max() < 0.01
    levels = frames.mean(1)
    assert levels.max() < 0.105 and levels.min() < 0.02 and levels.max() > 0.08
    # new noise in every frame: consecutive frames differ
    assert (noisy[:, :, 1:] - noisy[:, :, :-1]).abs().amax(dim=(1, 2, 3, 4)).min() > 0


# ---------------------------------------------------------------------------------------
# moving digits


def test_moving_digits_split_is_fixed_and_classes_share_digits_and_starts():
    splits = {s: moving_digits_split(s) for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in splits.items()} == {"train": 1280, "val": 192, "test": 360}
    digits = {s: {m.digit for m in v} for s, v in splits.items()}
    assert not digits["train"] & digits["test"] and not digits["train"] & digits["val"]
    for motions in splits.values():
        per_class = [sorted((m.digit, m.y0, m.x0) for m in motions if m.label == c) for c in range(8)]
        assert all(p == per_class[0] for p in per_class)  # the same digits and starts in every class
    # the same on every call and machine (recorded when the set was made)
    text = ";".join(f"{m.digit},{m.label},{m.y0},{m.x0}" for m in splits["test"])
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == TEST_SPLIT_SHA256
    assert [(m.digit, m.label, m.y0, m.x0) for m in splits["test"][:3]] == [(0, 0, 6, 31), (53, 0, 21, 34), (120, 0, 16, 5)]
    assert CLASSES == sorted(CLASSES)  # label order = the order of class folders
    assert moving_digits_split("test") == splits["test"]


TEST_SPLIT_SHA256 = "eb8b426181cdc198"


def test_no_single_frame_tells_the_direction():
    motions = moving_digits_split("val")
    videos = np.stack([render(m)[..., 0] for m in motions])  # (N, T, H, W)
    labels = np.array([m.label for m in motions])
    assert videos.shape == (192, NUM_FRAMES, HEIGHT, WIDTH)
    # frame t of every class holds the same pixel values (the canvas wraps around), so
    # any statistic of one frame's pixels is the same in every class
    for t in (0, 7, NUM_FRAMES - 1):
        stats = [np.sort(videos[labels == c, t].reshape(-1)) for c in range(8)]
        assert all(np.array_equal(s, stats[0]) for s in stats)
    # the digit moves SPEED pixels per frame in the class's direction
    for m, video in zip(motions[::23], videos[::23]):
        dy, dx = DIRECTIONS[CLASSES[m.label]]
        assert np.array_equal(video[5], np.roll(video[4], (SPEED * dy, SPEED * dx), axis=(0, 1)))


def test_moving_digits_in_memory_and_as_files(tmp_path):
    counts = write_moving_digits(tmp_path / "md", splits=("val",), per_class=2)
    assert counts == {"val": 16}
    lines = (tmp_path / "md" / "val.txt").read_text().splitlines()
    assert len(lines) == 16 and lines[0] == "val/east/00000.mp4 0" and lines[-1].endswith(" 7")
    assert (tmp_path / "md" / "classes.txt").read_text().split() == CLASSES
    motions = moving_digits_split("val", per_class=2)
    assert lines[5] == f"val/{CLASSES[motions[5].label]}/00005.mp4 {motions[5].label}" and CLASSES[2] == "north-east"
    with open_video(tmp_path / "md" / "val" / "north-east" / "00005.mp4") as video:
        got = video.read(range(video.num_frames))
    want = render(motions[5])
    assert got.shape == want.shape and np.abs(got.astype(int) - want).mean() < 2.0
    cfg = load_recipe("video_demo").data
    listed = build_dataset(cfg, "test", classes=CLASSES, source=str(tmp_path / "md" / "val.txt"))
    memory = build_dataset(cfg, "test", source="moving_digits:val")
    assert len(listed) == 16 and len(memory) == 192 and listed.num_views == memory.num_views == 6
    # the decoded file gives the views of the frames in memory, within the codec's tolerance
    a = listed[5][0]
    b = ClipPipeline(cfg, "test")(FrameArray(render(motions[5])), np.random.default_rng(0))
    assert a.shape == b.shape == (6, 8, 32, 32, 3) and (a.int() - b.int()).abs().float().mean() < 2.0
