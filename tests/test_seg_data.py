"""Segmentation data: the ADE20K, VOC, Cityscapes and pairs layouts, reduce_zero_label, the
joint transforms (the image and its labels move together), unreadable samples, the
built-in digit scenes."""

import numpy as np
import pytest
import torch
from PIL import Image

from tessera.data import build_dataset
from tessera.data.loader import collate_skipping_bad
from tessera.data.segmentation import (
    DigitScenes,
    SegmentationFolder,
    SegmentationTrainTransform,
    photometric_distortion,
    reduce_zero_label,
)
from tessera.errors import DataError
from tessera.train.recipe import DataConfig


def write_pair(image_path, label_path, labels, palette=False):
    """An image whose red channel encodes the label (20 * label), and its label map."""
    image_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.stack([(labels.astype(np.int32) * 20 % 256).astype(np.uint8), np.full_like(labels, 50),
                    np.full_like(labels, 90)], -1)
    Image.fromarray(rgb).save(image_path)
    img = Image.fromarray(labels)
    if palette:
        img = img.convert("P")
        img.putpalette([v for c in range(256) for v in (c, 0, 0)])
    img.save(label_path)


def blocks(seed, shape=(24, 32), values=(0, 1, 2, 3)):
    """A label map of 8x8 blocks."""
    rng = np.random.default_rng(seed)
    small = rng.choice(values, (shape[0] // 8, shape[1] // 8)).astype(np.uint8)
    return np.kron(small, np.ones((8, 8), dtype=np.uint8))


def test_ade20k_layout_with_reduce_zero_label(tmp_path):
    for split, n in (("training", 3), ("validation", 2)):
        for i in range(n):
            write_pair(tmp_path / "images" / split / f"ADE_{i}.jpg", tmp_path / "annotations" / split / f"ADE_{i}.png",
                       blocks(i))
    (tmp_path / "images" / "training" / "ADE_9.jpg").write_bytes(b"")  # no label map: left out
    train = SegmentationFolder(tmp_path, role="train", reduce_zero_label=True)
    val = SegmentationFolder(tmp_path, role="val", reduce_zero_label=True)
    assert train.layout == "ade20k" and len(train) == 3 and len(val) == 2 and len(train.classes) == 150
    assert train.classes[0] == "wall"
    image, labels = train[0]
    assert image.shape == (3, 24, 32) and labels.dtype == torch.uint8
    raw = blocks(0)
    assert torch.equal(labels, torch.from_numpy(reduce_zero_label(raw)))
    assert set(labels.unique().tolist()) <= {255, 0, 1, 2}
    assert (labels == 255).sum() == (raw == 0).sum()
    # the split named in the source
    cfg = DataConfig(kind="segmentation", root=f"{tmp_path}:validation", reduce_zero_label=True)
    assert len(build_dataset(cfg, "train")) == 2


def test_voc_layout_with_split_lists_and_palette_labels(tmp_path):
    for i in range(4):
        write_pair(tmp_path / "JPEGImages" / f"2007_{i}.jpg", tmp_path / "SegmentationClass" / f"2007_{i}.png",
                   blocks(i, values=(0, 15, 255)), palette=True)
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_0\n2007_2\n")
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_1\n")
    train = SegmentationFolder(tmp_path, role="train")
    val = SegmentationFolder(tmp_path, role="val")
    assert train.layout == "voc" and len(train) == 2 and len(val) == 1 and train.classes[15] == "person"
    assert torch.equal(train[1][1], torch.from_numpy(blocks(2, values=(0, 15, 255))))  # palette indices


def test_cityscapes_layout(tmp_path):
    for split in ("train", "val"):
        write_pair(tmp_path / "leftImg8bit" / split / "aachen" / "aachen_000000_000019_leftImg8bit.png",
                   tmp_path / "gtFine" / split / "aachen" / "aachen_000000_000019_gtFine_labelTrainIds.png",
                   blocks(5, values=(0, 18, 255)))
    ds = SegmentationFolder(tmp_path, role="val")
    assert ds.layout == "cityscapes" and len(ds) == 1 and len(ds.classes) == 19 and ds.classes[18] == "bicycle"


def test_pairs_layout_needs_class_names(tmp_path):
    for i in range(2):
        write_pair(tmp_path / "images" / f"{i}.png", tmp_path / "masks" / f"{i}.png", blocks(i))
    with pytest.raises(DataError, match="no class names"):
        SegmentationFolder(tmp_path)
    (tmp_path / "classes.txt").write_text("sky\nroad\ncar\ntree\n")
    ds = SegmentationFolder(tmp_path)
    assert ds.layout == "pairs" and ds.classes == ["sky", "road", "car", "tree"] and len(ds) == 2
    with pytest.raises(DataError, match="are not the model's"):
        SegmentationFolder(tmp_path, classes=["a", "b"])


def test_unreadable_and_mismatched_samples_are_reported_not_fatal(tmp_path):
    for i in range(3):
        write_pair(tmp_path / "images" / f"{i}.png", tmp_path / "labels" / f"{i}.png", blocks(i))
    (tmp_path / "classes.txt").write_text("a\nb\nc\nd\n")
    (tmp_path / "images" / "1.png").write_bytes(b"\x89PNG broken")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "labels" / "2.png")
    ds = SegmentationFolder(tmp_path)
    items = [ds[i] for i in range(3)]
    x, _, bad = collate_skipping_bad(items)
    assert x.shape == (1, 3, 24, 32) and [b.index for b in bad] == [1, 2]
    assert "label map" in bad[1].reason and str(tmp_path / "images" / "1.png") == bad[0].path


def test_the_joint_transform_moves_image_and_labels_together():
    labels = blocks(3, shape=(64, 96))
    rgb = np.stack([labels * 20, np.full_like(labels, 50), np.full_like(labels, 90)], -1).astype(np.uint8)
    transform = SegmentationTrainTransform((48, 48), img_scale=(96, 64), ratio_range=(0.5, 2.0), cat_max_ratio=0.75,
                                           hflip=0.5, ignore_index=255)
    flips = 0
    for seed in range(12):
        image, out = transform(rgb, labels, np.random.default_rng(seed))
        assert image.shape == (48, 48, 3) and out.shape == (48, 48)
        pad = out == 255
        assert (image[pad] == 0).all()  # padding: black image, ignored labels
        interior = ~pad
        # away from block edges (bilinear blends there) the colour still says the label
        agree = np.abs(image[..., 0].astype(int) - 20 * out.astype(int)) <= 2
        assert agree[interior].mean() > 0.8, seed
        flips += int(out.shape == (48, 48))
    # the photometric distortion changes the image only, within uint8
    rgb2 = photometric_distortion(rgb, np.random.default_rng(1))
    assert rgb2.shape == rgb.shape and rgb2.dtype == np.uint8 and not np.array_equal(rgb2, rgb)


def test_crops_are_redrawn_while_one_class_dominates():
    labels = np.zeros((64, 64), np.uint8)
    labels[:24, :24] = 1  # a crop of 16 holds two classes only around the corner of this block
    image = np.zeros((64, 64, 3), np.uint8)
    strict = SegmentationTrainTransform((16, 16), ratio_range=(1, 1), cat_max_ratio=0.75, hflip=0)
    loose = SegmentationTrainTransform((16, 16), ratio_range=(1, 1), cat_max_ratio=1.0, hflip=0)
    mixed = [len(np.unique(strict(image, labels, np.random.default_rng(s))[1])) > 1 for s in range(40)]
    plain = [len(np.unique(loose(image, labels, np.random.default_rng(s))[1])) > 1 for s in range(40)]
    assert sum(mixed) > sum(plain) + 5


def test_digit_scenes_are_a_fixed_split_with_eleven_classes():
    a, b = DigitScenes("val", count=20), DigitScenes("val", count=20)
    assert a.classes[0] == "background" and a.classes[1:] == [str(d) for d in range(10)]
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    image, labels = a[3]
    assert image.shape == (3, 64, 64) and labels.max() <= 10 and (labels > 0).any()
    with pytest.raises(DataError, match="splits"):
        DigitScenes("holdout")


def test_fresh_training_scenes_change_every_epoch_and_repeat_with_the_seed():
    a, b = DigitScenes("train", count=8, fresh=True, seed=3), DigitScenes("train", count=8, fresh=True, seed=3)
    first = [a[i][1] for i in range(8)]
    assert all(torch.equal(x, b[i][1]) for i, x in enumerate(first))
    a.set_epoch(1)
    assert not all(torch.equal(x, a[i][1]) for i, x in enumerate(first))
    b.set_epoch(1)
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(8))
