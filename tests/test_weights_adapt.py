"""Adapting weights to the model: inflation of image weights to video, resized bias tables
and position embeddings, re-initialised heads."""

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tessera
from tessera.errors import CheckpointError
from tessera.models import SwinTransformer, VideoSwinTransformer
from tessera.weights.adapt import resize_table_3d, table_window

WIDTHS = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
TABLE = "relative_position_bias_table"


def official_2d(golden) -> dict:
    return torch.load(golden / "official_swin2d_tiny16.pth", weights_only=True)["model"]


def bicubic(table: torch.Tensor, side: int) -> torch.Tensor:
    """The official resize: (L, nH) -> (1, nH, S, S) -> bicubic -> (L', nH)."""
    heads, old = table.shape[1], int(table.shape[0] ** 0.5)
    grid = table.permute(1, 0).reshape(1, heads, old, old)
    return F.interpolate(grid, size=(side, side), mode="bicubic").reshape(heads, side * side).permute(1, 0)


# ---------------------------------------------------------------------------------------
# inflation
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", [(8, 7, 7), (4, 5, 5)])
def test_inflation_follows_the_official_rule_element_by_element(golden, window, caplog):
    image = official_2d(golden)
    model = VideoSwinTransformer(**WIDTHS, window_size=window, num_classes=3)
    with caplog.at_level(logging.WARNING, logger="tessera"):
        report = tessera.load_checkpoint(model, golden / "official_swin2d_tiny16.pth")
    assert any(n.startswith("inflated image weights to video") for n in report.notes)
    assert "inflated image weights to video" in caplog.text
    assert not report.missing and not report.unexpected and not report.reinitialized
    video = model.state_dict()

    pt = model.patch_size[0]
    conv2d, conv3d = image["patch_embed.proj.weight"], video["patch_embed.proj.weight"]
    assert conv3d.shape == (*conv2d.shape[:2], pt, *conv2d.shape[2:])
    for t in range(pt):
        assert torch.equal(conv3d[:, :, t], conv2d / pt)

    wd, wh, ww = window
    tables = [k for k in image if k.endswith(TABLE)]
    assert len(tables) == 8
    for key in tables:
        table2d = image[key] if (wh, ww) == (7, 7) else bicubic(image[key], 2 * wh - 1)
        table3d = video[key]
        assert table3d.shape == ((2 * wd - 1) * (2 * wh - 1) * (2 * ww - 1), image[key].shape[1])
        # every (time, row, column) offset gets the 2-D bias of its (row, column) offset
        for dt in range(-(wd - 1), wd):
            for dh in range(-(wh - 1), wh):
                for dw in range(-(ww - 1), ww):
                    row3d = ((dt + wd - 1) * (2 * wh - 1) + dh + wh - 1) * (2 * ww - 1) + dw + ww - 1
                    row2d = (dh + wh - 1) * (2 * ww - 1) + dw + ww - 1
                    assert torch.equal(table3d[row3d], table2d[row2d])
    for key, value in image.items():  # everything else is taken as it is
        if key in video and key != "patch_embed.proj.weight" and not key.endswith(TABLE):
            assert torch.equal(video[key], value), key


def test_inflated_model_on_a_still_clip_is_the_image_model(golden):
    """Identical frames: the repeated patch embedding gives the image's tokens and the tiled
    biases give every frame the image's attention, so each frame's features and the logits
    are the image model's."""
    image_model = SwinTransformer(img_size=224, **WIDTHS, num_classes=3).eval()
    tessera.load_checkpoint(image_model, golden / "official_swin2d_tiny16.pth")
    video_model = VideoSwinTransformer(**WIDTHS, window_size=(2, 7, 7), num_classes=3).eval()
    tessera.load_checkpoint(video_model, golden / "official_swin2d_tiny16.pth")
    x = torch.randn(1, 3, 224, 224)
    clip = x[:, :, None].expand(1, 3, 4, 224, 224)
    with torch.no_grad():
        expected = image_model.forward_features(x)
        features = video_model.forward_features(clip)
        for t in range(features.shape[2]):
            torch.testing.assert_close(features[:, :, t], expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(video_model(clip), image_model(x), atol=1e-4, rtol=1e-4)


def test_inflation_reinitialises_a_head_of_another_size(golden, caplog):
    model = VideoSwinTransformer(**WIDTHS, window_size=(8, 7, 7))  # 400 classes
    with caplog.at_level(logging.WARNING, logger="tessera"):
        report = tessera.load_checkpoint(model, golden / "official_swin2d_tiny16.pth")
    assert report.reinitialized == ["head.weight", "head.bias"]
    assert "re-initialised" in caplog.text


def test_video_weights_into_an_image_model_is_a_clear_error(golden):
    with pytest.raises(CheckpointError, match=r"official_swin3d_tiny16\.pth: a video checkpoint .* into an image model"):
        tessera.load_checkpoint(SwinTransformer(img_size=224, **WIDTHS, num_classes=4), golden / "official_swin3d_tiny16.pth")


# ---------------------------------------------------------------------------------------
# resizing bias tables
# ---------------------------------------------------------------------------------------


def test_window_7_checkpoint_into_a_window_12_model(golden):
    image = official_2d(golden)
    model = SwinTransformer(img_size=384, window_size=12, **WIDTHS, num_classes=3)
    report = tessera.load_checkpoint(model, golden / "official_swin2d_tiny16.pth")
    assert "resized 8 relative position bias tables from window 7x7 to 12x12" in report.notes
    assert not report.missing and not report.unexpected
    loaded = model.state_dict()
    for key in (k for k in image if k.endswith(TABLE)):
        assert loaded[key].shape == (23 * 23, image[key].shape[1])
        torch.testing.assert_close(loaded[key], bicubic(image[key], 23), atol=0, rtol=0)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 96, 96))).all()


def test_only_tables_of_another_window_are_resized(golden):
    """At 224 the official model clamps stage 4 (a 7x7 map) to window 7, so a window-12
    model keeps that stage's window-7 table as it is."""
    image = official_2d(golden)
    model = SwinTransformer(img_size=224, window_size=12, **WIDTHS, num_classes=3)
    report = tessera.load_checkpoint(model, golden / "official_swin2d_tiny16.pth")
    assert "resized 6 relative position bias tables from window 7x7 to 12x12" in report.notes
    loaded = model.state_dict()
    for j in range(2):
        key = f"layers.3.blocks.{j}.attn.{TABLE}"
        assert torch.equal(loaded[key], image[key])


def test_video_table_resize_keeps_time_offsets_and_resizes_space():
    torch.manual_seed(0)
    table = torch.randn(7 * 13 * 13, 2)  # window (4, 7, 7)
    grid = table.T.reshape(2, 7, 13, 13)
    longer = resize_table_3d(table, (6, 7, 7), (4, 7, 7)).T.reshape(2, 11, 13, 13)
    assert torch.equal(longer[:, 2:9], grid)  # the offsets -3..3 are kept
    assert torch.equal(longer[:, 0], grid[:, 0]) and torch.equal(longer[:, 1], grid[:, 0])  # beyond: the outermost
    assert torch.equal(longer[:, 10], grid[:, 6])
    shorter = resize_table_3d(table, (2, 7, 7), (4, 7, 7)).T.reshape(2, 3, 13, 13)
    assert torch.equal(shorter, grid[:, 2:5])
    spatial = resize_table_3d(table, (4, 5, 5), (4, 7, 7)).T.reshape(2, 7, 9, 9)
    for t in range(7):
        expected = F.interpolate(grid[None, :, t], size=(9, 9), mode="bicubic")[0]
        torch.testing.assert_close(spatial[:, t], expected, atol=0, rtol=0)


def test_video_checkpoint_into_a_longer_temporal_window(golden):
    model = VideoSwinTransformer(**WIDTHS, window_size=(8, 7, 7), num_classes=4)
    report = tessera.load_checkpoint(model, golden / "official_swin3d_tiny16.pth")
    assert "resized 8 relative position bias tables from window 4x7x7 to 8x7x7" in report.notes
    source = torch.load(golden / "official_swin3d_tiny16.pth", weights_only=True)["state_dict"]
    key = f"layers.1.blocks.0.attn.{TABLE}"
    expected = resize_table_3d(source["backbone." + key], (8, 7, 7), (4, 7, 7))
    assert torch.equal(model.state_dict()[key], expected)


@pytest.mark.parametrize(
    "rows,ndim,like,window",
    [(169, 2, None, (7, 7)), (529, 2, None, (12, 12)), (2535, 3, None, (8, 7, 7)), (5239, 3, None, (16, 7, 7)),
     (1521, 3, None, (5, 7, 7)), (1521, 3, (1, 20, 20), (1, 20, 20)), (7 * 9 * 11, 3, (4, 5, 6), (4, 5, 6))],
)
def test_table_window(rows, ndim, like, window):
    assert table_window(rows, ndim, like) == window


def test_table_of_no_window_is_an_error():
    with pytest.raises(CheckpointError, match="170 rows fits no square window"):
        table_window(170, 2)


# ---------------------------------------------------------------------------------------
# absolute position embeddings and heads
# ---------------------------------------------------------------------------------------


def test_absolute_position_embedding_is_interpolated_bicubically():
    source = SwinTransformer(img_size=64, ape=True, **WIDTHS, num_classes=3)
    target = SwinTransformer(img_size=96, ape=True, **WIDTHS, num_classes=3)
    report = tessera.load_checkpoint(target, source.state_dict())
    assert "interpolated absolute_pos_embed from a 16x16 to a 24x24 grid" in report.notes
    old = source.absolute_pos_embed.detach().reshape(1, 16, 16, 16).permute(0, 3, 1, 2)
    expected = F.interpolate(old, size=(24, 24), mode="bicubic").permute(0, 2, 3, 1).reshape(1, 576, 16)
    torch.testing.assert_close(target.absolute_pos_embed.detach(), expected, atol=0, rtol=0)


class _TokenModel(nn.Module):
    """A ViT-like owner of a position embedding with a class token in front."""

    num_prefix_tokens = 1

    def __init__(self, grid: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + grid * grid, 8))


def test_position_embedding_keeps_prefix_tokens():
    small, large = _TokenModel(3), _TokenModel(5)
    tessera.load_checkpoint(large, small.state_dict())
    assert torch.equal(large.pos_embed[:, :1], small.pos_embed[:, :1])
    grid = small.pos_embed.detach()[:, 1:].reshape(1, 3, 3, 8).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(5, 5), mode="bicubic").permute(0, 2, 3, 1).reshape(1, 25, 8)
    torch.testing.assert_close(large.pos_embed.detach()[:, 1:], expected, atol=0, rtol=0)


def test_head_of_another_class_count_is_reinitialised_with_a_warning(golden, caplog):
    image = official_2d(golden)
    model = SwinTransformer(img_size=224, **WIDTHS, num_classes=10)
    with caplog.at_level(logging.WARNING, logger="tessera"):
        report = tessera.load_checkpoint(model, golden / "official_swin2d_tiny16.pth")
    assert report.reinitialized == ["head.weight", "head.bias"] and "re-initialised" in caplog.text
    assert model.head.weight.shape == (10, 128)
    assert torch.equal(model.norm.weight, image["norm.weight"])
