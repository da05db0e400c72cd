import numpy as np
import pytest

from tessera.data.digit_scenes import INK_THRESHOLD, digit_sprite, make_scenes, render_scene
from tessera.data.digits import digits_split
from tessera.errors import DataError


def test_scenes_are_the_same_every_time_and_render_deterministically():
    a, b = make_scenes("val", 5), make_scenes("val", 5)
    assert a == b
    for s in a:
        (ia, la), (ib, lb) = render_scene(s), render_scene(s)
        assert np.array_equal(ia, ib) and np.array_equal(la, lb)


def test_label_map_marks_exactly_each_digits_ink_inside_its_box():
    for scene in make_scenes("train", 20, digits_per_scene=(1, 4)):
        image, labels = render_scene(scene)
        assert image.shape == (scene.height, scene.width, 3) and image.dtype == np.uint8
        expected = np.zeros_like(labels)
        for p in scene.digits:
            x0, y0, x1, y1 = p.box
            ink = digit_sprite(p.digit, p.size) >= INK_THRESHOLD
            expected[y0:y1, x0:x1][ink] = 1 + p.label
        assert np.array_equal(labels, expected)
        # digits never overlap, so no digit's ink is hidden by another
        boxes = [p.box for p in scene.digits]
        for i, (ax0, ay0, ax1, ay1) in enumerate(boxes):
            for bx0, by0, bx1, by1 in boxes[i + 1:]:
                assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0


def test_scenes_use_only_their_splits_digits_and_balance_classes():
    train = {p.digit for s in make_scenes("train", 200) for p in s.digits}
    test = {p.digit for s in make_scenes("test", 200) for p in s.digits}
    assert train <= set(digits_split("train").tolist()) and test <= set(digits_split("test").tolist())
    labels = [p.label for s in make_scenes("train", 400, digits_per_scene=(1, 1)) for p in s.digits]
    counts = np.bincount(labels, minlength=10)
    assert counts.min() >= 25  # a seeded permutation of a stratified split: every class appears


def test_bad_arguments_name_the_problem():
    with pytest.raises(DataError, match="splits"):
        make_scenes("dev", 1)
    with pytest.raises(DataError, match="do not fit"):
        make_scenes("train", 1, height=16, width=16, sizes=(14, 28))

