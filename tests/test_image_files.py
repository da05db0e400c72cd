"""Image files and class folders as they come: 16-bit, 32-bit integer and float samples,
EXIF orientation, one reader behind every path that opens an image (training, evaluation,
prediction, video frames folders), and class folders without samples."""

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tessera
from tessera.data import ImageFolder
from tessera.data.images import read_image, to_rgb
from tessera.data.video.io import FrameFolder
from tessera.errors import DataError
from tessera.train.evaluation import predict_images

RNG = np.random.default_rng(0)
#: a grey photograph-like image: a gradient with noise, mean about 100 (far from white)
GREY = np.clip(np.linspace(20, 180, 48)[None, :] + RNG.normal(0, 10, (40, 48)), 0, 255).astype(np.uint8)


def _array(path) -> np.ndarray:
    return np.asarray(read_image(path)).astype(int)


@pytest.mark.parametrize(
    "name,values",
    [
        ("sixteen.png", GREY.astype(np.uint16) * 257),           # 16-bit PNG (Pillow: I;16)
        ("sixteen.tif", GREY.astype(np.uint16) * 257),           # 16-bit TIFF
        ("int32_wide.tif", GREY.astype(np.int32) * 257),         # 16-bit data in 32-bit integers (I)
        ("int32_narrow.tif", GREY.astype(np.int32)),             # 8-bit data in 32-bit integers
        ("float01.tif", GREY.astype(np.float32) / 255),          # floats in 0-1 (F)
        ("float255.tif", GREY.astype(np.float32)),               # floats in 0-255
    ],
)
def test_deep_samples_are_scaled_not_clipped(tmp_path, name, values):
    Image.fromarray(values).save(tmp_path / name)
    Image.fromarray(GREY).save(tmp_path / "eight.png")
    deep, eight = _array(tmp_path / name), _array(tmp_path / "eight.png")
    assert deep.shape == (40, 48, 3)
    assert np.abs(deep - eight).max() <= 1, f"{name}: mean {deep.mean():.1f} against {eight.mean():.1f}"


def test_sixteen_bit_scaling_rounds_to_the_nearest_level():
    img = Image.fromarray(np.array([[0, 128, 257, 32896, 65535]], dtype=np.uint16))
    assert np.asarray(to_rgb(img))[0, :, 0].tolist() == [0, 0, 1, 128, 255]


def _upright() -> Image.Image:
    """An image whose orientation is obvious: dark on the left, bright on the right, a white
    block at the top left."""
    a = np.repeat(np.linspace(0, 200, 48).astype(np.uint8)[None, :], 32, 0)
    a[:8, :8] = 255
    return Image.fromarray(np.stack([a, a, a], -1))


@pytest.mark.parametrize("orientation,stored", [(6, Image.Transpose.ROTATE_90), (3, Image.Transpose.ROTATE_180),
                                                (8, Image.Transpose.ROTATE_270), (2, Image.Transpose.FLIP_LEFT_RIGHT)])
def test_exif_orientation_is_applied(tmp_path, orientation, stored):
    upright = _upright()
    exif = Image.Exif()
    exif[0x0112] = orientation
    upright.transpose(stored).save(tmp_path / "photo.jpg", quality=95, exif=exif)
    got = _array(tmp_path / "photo.jpg")
    assert got.shape == (32, 48, 3)
    assert np.abs(got - np.asarray(upright).astype(int)).mean() < 3


@pytest.fixture(scope="module")
def tiny_model():
    model = tessera.create_model("swin_t", img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2),
                                 window_size=4, num_classes=3).eval()
    info = {"classes": ["a", "b", "c"], "data": {"img_size": 32, "crop_pct": 1.0, "interpolation": "bicubic",
                                                 "mean": [0.5] * 3, "std": [0.25] * 3}}
    return model, info


def test_prediction_sees_deep_and_rotated_images_as_their_plain_copies(tmp_path, tiny_model):
    model, info = tiny_model
    upright = _upright()
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.save(tmp_path / "plain.png")
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "rotated.png", exif=exif)
    Image.fromarray(np.asarray(upright)[..., 0].astype(np.uint16) * 257).save(tmp_path / "deep.png")
    plain, rotated, deep = (predict_images(model, info, [Image.open(tmp_path / f)], top_k=3)[0]
                            for f in ("plain.png", "rotated.png", "deep.png"))
    for other in (rotated, deep):
        assert [c for c, _ in other] == [c for c, _ in plain]
        assert np.allclose([p for _, p in other], [p for _, p in plain], atol=1e-5)


def test_training_and_frames_folders_read_through_the_same_reader(tmp_path):
    values = GREY.astype(np.uint16) * 257
    for folder in ("train/a", "train/b", "frames"):
        (tmp_path / folder).mkdir(parents=True)
    Image.fromarray(values).save(tmp_path / "train/a/deep.png")
    Image.fromarray(GREY).save(tmp_path / "train/b/plain.png")
    Image.fromarray(values).save(tmp_path / "frames/0.png")
    folder = ImageFolder(tmp_path / "train")
    assert abs(np.asarray(folder.load(0)).mean() - np.asarray(folder.load(1)).mean()) < 1
    frames = FrameFolder(tmp_path / "frames").read([0])
    assert abs(frames.mean() - GREY.mean()) < 1


def test_no_other_code_opens_image_files():
    """Every image file is read by tessera.data.images.read_image, so that every reader gets
    its depth scaling and orientation."""
    package = Path(tessera.__file__).parent
    opened = [f"{p.relative_to(package)}:{i + 1}" for p in package.rglob("*.py")
              for i, line in enumerate(p.read_text().splitlines())
              if re.search(r"Image\.open\(|imread\(|decode_image\(", line)]
    assert len(opened) == 1 and opened[0].startswith("data/images.py:"), opened


def test_an_empty_file_is_named_as_such(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(OSError, match="the file is empty"):
        read_image(tmp_path / "empty.png")


# -- class folders without samples ---------------------------------------------------------


def _folders(root: Path, kinds: dict) -> Path:
    for name, files in kinds.items():
        (root / name).mkdir(parents=True)
        for f in files:
            Image.fromarray(GREY).save(root / name / f)
    return root


def test_an_empty_class_folder_is_refused_naming_it(tmp_path):
    root = _folders(tmp_path / "train", {"cat": ["a.png"], "dog": [], "eel": ["b.png"]})
    (root / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"train/dog: a class folder without images; remove it, or leave empty "
                                        r"classes out with data.skip_empty_classes=true") as e:
        ImageFolder(root)
    assert "\n" not in str(e.value)


def test_empty_class_folders_are_left_out_when_asked(tmp_path, caplog):
    root = _folders(tmp_path / "train", {"cat": ["a.png"], "dog": [], "eel": ["b.png", "c.png"]})
    folder = ImageFolder(root, skip_empty_classes=True)
    assert folder.classes == ["cat", "eel"] and folder.targets == [0, 1, 1]
    assert "left out 1 empty class folders (data.skip_empty_classes): dog" in caplog.text
    # a validation folder may lack samples of a class
    val = _folders(tmp_path / "val", {"cat": [], "eel": ["d.png"]})
    assert ImageFolder(val, classes=folder.classes).targets == [1]


def test_an_empty_video_class_folder_is_refused_or_left_out(tmp_path):
    from tessera.data import build_dataset
    from tessera.train.recipe import DataConfig

    root = tmp_path / "videos"
    (root / "empty").mkdir(parents=True)
    frames = root / "wave" / "clip1"
    frames.mkdir(parents=True)
    for i in range(4):
        Image.fromarray(GREY).save(frames / f"{i}.png")
    cfg = DataConfig(kind="video", root=str(root), img_size=32, clip_len=2, frame_interval=1)
    with pytest.raises(DataError, match=r"videos/empty: a class folder without videos"):
        build_dataset(cfg, "train")
    cfg.skip_empty_classes = True
    assert build_dataset(cfg, "train").classes == ["wave"]
