"""The pointing game's ground truth: boxes on a wrapping canvas, through the evaluation crop,
for the built-in scenes and moving digits; the digit scenes as a classification set."""

import numpy as np
import pytest
import torch
from PIL import Image

from tessera.data import build_dataset
from tessera.data.digit_scenes import SCENE_DIGIT_SIZES, DigitScenes, render_scene, scene_split
from tessera.data.moving_digits import moving_digits_split
from tessera.errors import DataError
from tessera.explain.cam import Explanation
from tessera.explain.inputs import Geometry, prepare_clip, prepare_image
from tessera.explain.pointing import (
    PointingResult,
    box_distance,
    boxes_in_crop,
    digit_scene_samples,
    in_boxes,
    moving_digit_samples,
    pointing_game_images,
    wrapped_boxes,
)
from tessera.train.recipe import load_recipe


def test_wrapped_boxes_split_at_the_edges():
    assert wrapped_boxes(2, 3, 16, 16, (32, 40)) == [(3, 2, 19, 18)]
    assert wrapped_boxes(20, 30, 16, 16, (32, 40)) == [(30, 20, 40, 32), (0, 20, 6, 32), (30, 0, 40, 4), (0, 0, 6, 4)]
    assert wrapped_boxes(-2, 44, 16, 16, (32, 40)) == [(4, 30, 20, 32), (4, 0, 20, 14)]  # positions wrap too
    boxes = wrapped_boxes(20, 30, 16, 16, (32, 40))
    canvas = np.zeros((32, 40), bool)
    for x0, y0, x1, y1 in boxes:
        canvas[y0:y1, x0:x1] = True
    assert canvas.sum() == 256
    assert in_boxes((31, 39), boxes) and in_boxes((0, 0), boxes) and not in_boxes((10, 10), boxes)
    assert in_boxes((19, 29), boxes, tolerance=1) and not in_boxes((19, 29), boxes)
    assert box_distance((19, 27), boxes) == 3 and box_distance((0, 0), boxes) == 0


def test_geometry_maps_crop_and_source():
    # a 40x32 frame, no resize, centre crop of 32 starting at x=4
    g = Geometry(40, 32, (1.0, 1.0), 4, 0)
    assert g.to_source(0, 0) == (0, 4) and g.to_source(31, 31) == (31, 35)
    assert g.box_to_crop(0, 0, 6, 4, 32) == (0, 0, 2, 4)
    assert g.box_to_crop(36, 0, 40, 4, 32) is None
    # an image resized by 2: crop pixel 10 is source pixel ~5
    g = Geometry(64, 64, (2.0, 2.0), 0, 0)
    assert g.to_source(10, 11) == (5, 5) and g.box_to_crop(10, 10, 20, 30, 128) == (20, 20, 40, 60)


def test_moving_digit_boxes_hold_all_ink_of_the_clip():
    """Every digit pixel of every frame of the validation clips (after the centre crop) lies in
    the frame's boxes, and the boxes hold nothing but the digit's square."""
    info = {"data": dict(load_recipe("video_demo").data.__dict__, mean=[0.0] * 3, std=[1.0] * 3)}
    wrapped = 0
    for source, label, boxes_of in moving_digit_samples(moving_digits_split("val", 2)):
        clip = prepare_clip(source, info)
        assert clip.pixels.shape == (8, 32, 32, 3) and clip.frames == list(range(8, 16))  # the middle clip
        for t, frame in enumerate(clip.frames):
            boxes = boxes_in_crop(boxes_of(frame), clip.geometry, 32)
            wrapped += len(boxes_of(frame)) > 1
            ink = np.argwhere(clip.pixels[t, ..., 0] > 0.2)
            assert len(ink) and all(in_boxes(p, boxes) for p in ink)
            assert sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes) <= 256
    assert wrapped > 0  # some digits cross the canvas' edge


def test_digit_scenes_classification_set():
    test = DigitScenes("test", count=20)
    assert len(test) == 20 and test.classes == [str(i) for i in range(10)]
    image = np.asarray(test.load(3))
    assert image.shape == (64, 64, 3)
    scene = test.scenes[3]
    _, labels = render_scene(scene)
    x0, y0, x1, y1 = test.boxes[3]
    assert (labels[y0:y1, x0:x1] == 1 + test.targets[3]).any() and (labels[:y0] == 0).all()
    assert len(scene_split("train")) == 2500 and len(scene_split("val")) == 300 and len(scene_split("test")) == 600
    # its digits are those of the digits' split: no test digit in training
    train_digits = {s.digits[0].digit for s in scene_split("train")}
    assert not train_digits & {s.digits[0].digit for s in scene_split("test")}
    with pytest.raises(DataError, match="splits train, val, test"):
        DigitScenes("holdout")
    cfg = load_recipe("scenes_demo").data
    ds = build_dataset(cfg, "val", classes=[str(i) for i in range(10)])
    assert len(ds) == 300 and tuple(ds[0][0].shape) == (3, 64, 64)


def test_pointing_game_counts_hits_in_the_evaluation_crop():
    """A 'model' whose CAM is the input's brightness points at the brightest pixel: on scenes
    where the digit is the only bright thing the game is won, and the geometry of a resize
    and crop is followed."""
    scenes = scene_split("test", 6)
    samples = digit_scene_samples(scenes)
    # blank scenes with a white square inside the box (and a bigger scene, resized by the crop)
    made = []
    for image, label, (box,) in samples:
        canvas = np.zeros((128, 128, 3), np.uint8)
        x0, y0, x1, y1 = (2 * v for v in box)
        canvas[y0 + 4 : y1 - 4, x0 + 4 : x1 - 4] = 255
        made.append((Image.fromarray(canvas), label, [(x0, y0, x1, y1)]))
    # and one whose bright square lies in the corner farthest from its box
    _, label, (box,) = samples[0]
    canvas = np.zeros((128, 128, 3), np.uint8)
    far = 0 if box[0] + box[2] > 64 else 120
    canvas[far : far + 8, far : far + 8] = 255
    made.append((Image.fromarray(canvas), label, [tuple(2 * v for v in box)]))
    info = {"data": {"img_size": 64, "crop_pct": 1.0, "interpolation": "bilinear", "mean": [0, 0, 0],
                     "std": [1, 1, 1]}, "classes": [str(i) for i in range(10)]}

    def brightness(model, x, target):
        maps = x.mean(1)
        return Explanation(maps, maps, target, torch.full((len(x), 10), 0.1), "brightness", "input")

    result = pointing_game_images(torch.nn.Identity(), info, made, explain=brightness)
    assert isinstance(result, PointingResult) and len(result.distances) == 7
    assert result.distances[:6] == [0] * 6 and result.distances[6] > 4
    assert result.hits(0) == 6 and result.tolerance == 4  # 15 px at 224 is 4 at 64
    assert result.accuracy() == pytest.approx(600 / 7)
    assert prepare_image(made[0][0], info).pixels.shape == (64, 64, 3)


def test_digit_scenes_training_split_draws_new_scenes_every_epoch():
    """Sample i of the training split keeps its digit (its class) and gets a new scene each
    epoch, the same for the same (seed, epoch, index); validation and test stay fixed."""
    train, test = DigitScenes("train", count=4), DigitScenes("test", count=4)
    assert train.fresh and not test.fresh
    train.set_epoch(0)
    first = [train.scene(i) for i in range(4)]
    again = np.asarray(train.load(2))
    assert np.array_equal(again, np.asarray(DigitScenes("train", count=4).load(2)))  # deterministic
    train.set_epoch(1)
    second = [train.scene(i) for i in range(4)]
    for a, b, fixed in zip(first, second, train.scenes):
        assert a.digits[0].digit == b.digits[0].digit == fixed.digits[0].digit  # the same digit image
        assert a != b
        lo, hi = SCENE_DIGIT_SIZES["train"]
        assert lo <= b.digits[0].size <= hi and b.digits[0].box[2] <= 64 and b.digits[0].box[3] <= 64
    assert not np.array_equal(again, np.asarray(train.load(2)))
    assert train.targets == [s.digits[0].label for s in second]
    _, labels = render_scene(second[2])
    x0, y0, x1, y1 = second[2].digits[0].box
    assert (labels[y0:y1, x0:x1] == 1 + train.targets[2]).any() and labels.sum() == labels[y0:y1, x0:x1].sum()
    for epoch in (0, 3):
        test.set_epoch(epoch)
        assert np.array_equal(np.asarray(test.load(1)), render_scene(test.scenes[1])[0])
