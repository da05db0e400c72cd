"""Data: the digits split, ImageFolder, worker-side crops, samplers, mixup/cutmix, and
the device-side augmentation."""

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from tessera.data import ImageAugment, ImageFolder, Mixup, build_dataset
from tessera.data.digits import Digits, digits_split
from tessera.data.images import BadSample
from tessera.data.loader import ShardSampler, SkippedSamples, StepSampler, collate_skipping_bad
from tessera.data.mixup import smooth_one_hot
from tessera.data.transforms import RandomResizedCropFlip, ResizeCenterCrop
from tessera.errors import DataError
from tessera.train.recipe import load_recipe

# ---------------------------------------------------------------------------------------
# digits


def test_digits_split_is_fixed_disjoint_and_complete():
    splits = {s: digits_split(s) for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in splits.items()} == {"train": 1258, "val": 179, "test": 360}
    union = np.concatenate(list(splits.values()))
    assert len(np.unique(union)) == 1797 == len(union)
    # the same indices on every call and every machine (recorded when the split was made)
    digest = hashlib.sha256(splits["test"].astype(np.int64).tobytes()).hexdigest()[:16]
    assert digest == TEST_SPLIT_SHA256
    assert splits["test"][:8].tolist() == TEST_SPLIT_HEAD
    assert np.array_equal(digits_split("test"), splits["test"])
    # stratified: every class in every split
    test = Digits("test")
    assert np.bincount(test.targets).min() >= 34


TEST_SPLIT_SHA256 = "dae0ca977abc0434"
TEST_SPLIT_HEAD = [0, 10, 12, 16, 29, 35, 40, 41]


def test_digits_images_are_upsampled_rgb():
    ds = Digits("val", size=24)
    img = ds.load(0)
    assert img.size == (24, 24) and img.mode == "RGB"
    x, y = ds[0]
    assert x.shape == (3, 24, 24) and x.dtype == torch.uint8 and y == ds.targets[0]
    with pytest.raises(DataError, match="splits train, val, test"):
        Digits("dev")


# ---------------------------------------------------------------------------------------
# image folders


def make_folder(root, classes=("cat", "dog"), per_class=3, size=(20, 16)):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)
            ext = ("png", "jpg", "JPEG")[i % 3]
            Image.fromarray(arr).save(root / c / f"{i}.{ext}")
    return root


def test_image_folder_reads_sorted_classes_and_skips_bad_files(tmp_path):
    root = make_folder(tmp_path / "train", classes=("zebra", "ant"))
    (root / "ant" / "notes.txt").write_text("not an image")
    (root / "ant" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    (root / ".hidden").mkdir()
    ds = ImageFolder(root)
    assert ds.classes == ["ant", "zebra"]
    assert len(ds) == 7 and ds.targets == [0, 0, 0, 0, 1, 1, 1]
    names = [p.split("/")[-1] for p, _ in ds.samples[:4]]
    assert names == ["0.png", "1.jpg", "2.JPEG", "broken.png"]
    x, y = ds[0]
    assert x.shape == (3, 16, 20) and x.dtype == torch.uint8 and y == 0
    bad = ds[3]
    assert isinstance(bad, BadSample) and bad.path.endswith("broken.png") and bad.reason


def test_validation_folder_follows_training_classes(tmp_path):
    make_folder(tmp_path / "val", classes=("dog",))
    ds = ImageFolder(tmp_path / "val", classes=["cat", "dog"])
    assert ds.classes == ["cat", "dog"] and set(ds.targets) == {1}
    make_folder(tmp_path / "other", classes=("cow",))
    with pytest.raises(DataError, match="class folders not among the model's 2 classes: cow"):
        ImageFolder(tmp_path / "other", classes=["cat", "dog"])
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no images found"):
        ImageFolder(tmp_path / "empty")
    with pytest.raises(DataError, match="no such directory"):
        ImageFolder(tmp_path / "missing")


def test_build_dataset_takes_folders_and_builtin_sets(tmp_path):
    cfg = load_recipe("demo", [f"data.root={make_folder(tmp_path / 'train')}"]).data
    train = build_dataset(cfg, "train")
    assert isinstance(train, ImageFolder) and train.classes == ["cat", "dog"]
    assert train[0][0].shape == (3, 32, 32)  # cropped to data.img_size in the worker
    cfg.root = "digits"
    assert len(build_dataset(cfg, "val")) == 179 and len(build_dataset(cfg, "test", source="digits:train")) == 1258
    with pytest.raises(DataError, match="not a built-in data set"):
        build_dataset(cfg, "train", source=str(tmp_path / "nowhere"))


def test_collate_and_skipped_sample_report(caplog):
    good = (torch.zeros(3, 4, 4, dtype=torch.uint8), 1)
    bad = BadSample(5, "/data/x.jpg", "truncated")
    x, y, skipped = collate_skipping_bad([good, bad, good])
    assert x.shape == (2, 3, 4, 4) and y.tolist() == [1, 1] and skipped == [bad]
    assert collate_skipping_bad([bad])[:2] == (None, None)
    report = SkippedSamples("train", dataset_size=100, max_fraction=0.02)
    report.add([bad, bad])
    report.add([bad])
    assert len(report) == 1 and caplog.text.count("/data/x.jpg") == 1  # reported once
    report.add([BadSample(6, "/data/y.jpg", "empty")])
    with pytest.raises(DataError, match=r"3 of the 100 train samples could not be read \(more than 2.0%"):
        report.add([BadSample(7, "/data/z.jpg", "empty")])


# ---------------------------------------------------------------------------------------
# crops


def test_random_resized_crop_depends_only_on_the_seed():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    crop = RandomResizedCropFlip(24, scale=(0.2, 1.0))
    a = np.asarray(crop(img, np.random.default_rng((0, 1, 2))))
    b = np.asarray(crop(img, np.random.default_rng((0, 1, 2))))
    c = np.asarray(crop(img, np.random.default_rng((0, 1, 3))))
    assert a.shape == (24, 24, 3) and np.array_equal(a, b) and not np.array_equal(a, c)
    for seed in range(50):
        left, top, w, h = crop.box(70, 50, np.random.default_rng(seed))
        assert 0 <= left and left + w <= 70 and 0 <= top and top + h <= 50
        assert 0.2 * 3500 * 0.9 <= w * h <= 3500 and 0.7 <= w / h <= 1.45


def test_flip_and_full_crop():
    arr = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    img = Image.fromarray(arr)
    crop = RandomResizedCropFlip(8, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=1.0, interpolation="nearest")
    assert np.array_equal(np.asarray(crop(img, np.random.default_rng(0))), arr[:, ::-1])


def test_resize_center_crop_is_the_official_evaluation_crop():
    img = Image.fromarray(np.random.default_rng(2).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    out = ResizeCenterCrop(224, crop_pct=0.875)(img)
    # short side to 256 (so 341 x 256), then the centre 224 x 224
    ref = img.resize((341, 256), Image.Resampling.BICUBIC).crop((58, 16, 282, 240))
    assert out.size == (224, 224) and np.array_equal(np.asarray(out), np.asarray(ref))
    assert ResizeCenterCrop(32, crop_pct=1.0)(img).size == (32, 32)


# ---------------------------------------------------------------------------------------
# samplers


def test_processes_see_the_same_samples_as_one_process():
    one = list(StepSampler(50, batch_size=12, accum_steps=2, seed=3))
    assert len(one) == 48 and len(set(one)) == 48  # 4 steps of 12, the rest dropped
    ranks = [list(StepSampler(50, 12, 2, rank=r, world_size=2, seed=3)) for r in range(2)]
    for step in range(4):
        for micro in range(2):
            chunk = one[step * 12 + micro * 6: step * 12 + micro * 6 + 6]
            shards = [r[step * 6 + micro * 3: step * 6 + micro * 3 + 3] for r in ranks]
            assert shards[0] + shards[1] == chunk


def test_sampler_epochs_and_resume_position():
    s = StepSampler(40, batch_size=8, seed=0)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert sorted(e0) == sorted(e1) == list(range(40)) and e0 != e1
    s.set_epoch(1, start_step=3)
    assert list(s) == e1[24:] and len(s) == 16
    with pytest.raises(DataError, match="fewer than one batch"):
        StepSampler(5, batch_size=8)
    with pytest.raises(DataError, match="cannot be cut"):
        StepSampler(40, batch_size=8, accum_steps=3)


def test_shard_sampler_covers_everything_once():
    shards = [list(ShardSampler(11, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))


# ---------------------------------------------------------------------------------------
# mixup / cutmix


def test_smoothed_targets():
    y = smooth_one_hot(torch.tensor([2, 0]), 4, 0.1)
    assert torch.allclose(y, torch.tensor([[0.025, 0.025, 0.925, 0.025], [0.925, 0.025, 0.025, 0.025]]))


@pytest.mark.parametrize("mixup, cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixed_targets_sum_to_one_and_match_the_mixing(mixup, cutmix):
    torch.manual_seed(0)
    mix = Mixup(mixup, cutmix, prob=1.0, switch_prob=0.5, label_smoothing=0.1, num_classes=5)
    x = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 3, 8, 8).contiguous()
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    for _ in range(10):
        xm, t = mix(x, y)
        assert t.shape == (6, 5) and torch.allclose(t.sum(1), torch.ones(6))
        # each image is a lam : (1 - lam) mix of itself and its mirror in the batch, in its
        # pixels and in its target (the share of the pixels for cutmix)
        own = (xm - x.flip(0)) / (x - x.flip(0))  # per pixel: 1 where own, 0 where pasted
        lam = own[0].mean()
        smooth = smooth_one_hot(y, 5, 0.1)
        assert torch.allclose(t, smooth * lam + smooth.flip(0) * (1 - lam), atol=1e-5)
        assert 0.0 <= lam <= 1.0


def test_no_mixing_keeps_smoothed_labels():
    mix = Mixup(0.8, 1.0, prob=0.0, label_smoothing=0.1, num_classes=3)
    x = torch.randn(4, 3, 8, 8)
    xm, t = mix(x, torch.tensor([0, 1, 2, 0]))
    assert torch.equal(xm, x) and torch.allclose(t, smooth_one_hot(torch.tensor([0, 1, 2, 0]), 3, 0.1))


# ---------------------------------------------------------------------------------------
# device-side augmentation


def test_eval_augment_only_normalises():
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    out = ImageAugment((0.5, 0.4, 0.3), (0.2, 0.2, 0.25))(x)
    ref = (x.float() / 255 - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.2, 0.25]).view(1, 3, 1, 1)
    assert out.dtype == torch.float32 and torch.allclose(out, ref)


def test_train_augment_changes_images_and_erases_with_noise():
    torch.manual_seed(0)
    x = torch.full((16, 3, 32, 32), 128, dtype=torch.uint8)
    ra = ImageAugment((0.5,) * 3, (0.5,) * 3, train=True, randaugment_m=9, randaugment_groups=4)(x)
    assert ra.shape == x.shape and torch.isfinite(ra).all()
    plain = ImageAugment((0.5,) * 3, (0.5,) * 3)(x)
    assert not torch.allclose(ra, plain)
    erased = ImageAugment((0.5,) * 3, (0.5,) * 3, train=True, reprob=1.0)(x)
    changed = (erased - plain).abs().amax(1) > 0  # (B, H, W): the erased box
    assert changed.flatten(1).any(1).all()  # every image got a box
    assert erased[changed.unsqueeze(1).expand_as(erased)].std() > 0.5  # filled with noise, not a constant
    jitter = ImageAugment((0.5,) * 3, (0.5,) * 3, train=True, color_jitter=0.4)(x)
    assert not torch.allclose(jitter, plain)
