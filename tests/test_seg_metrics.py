"""Segmentation scores, losses and inference: mIoU and friends against a direct computation
with the ignore index, the losses against their formulas, sliding windows, multi-scale +
flip testing, the poly schedule and the official weight-decay groups."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from tessera.errors import DataError
from tessera.losses import dice_loss, pixel_cross_entropy, segmentation_loss
from tessera.train.optim import param_groups
from tessera.train.schedule import WarmupCosine
from tessera.train.seg_inference import EvalProtocol, eval_size, segment, slide_logits, window_boxes
from tessera.train.seg_metrics import SegmentationMeter, confusion_matrix, scores_from_confusion


def direct_scores(preds, labels, num_classes, ignore=255):
    """IoU, accuracy and Dice of every class counted pixel by pixel over all images."""
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    area_label = np.zeros(num_classes)
    area_pred = np.zeros(num_classes)
    for p, t in zip(preds, labels):
        keep = t != ignore
        for c in range(num_classes):
            pc, tc = (p == c) & keep, (t == c) & keep
            inter[c] += (pc & tc).sum()
            union[c] += (pc | tc).sum()
            area_label[c] += tc.sum()
            area_pred[c] += pc.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        iou, acc, dice = inter / union, inter / area_label, 2 * inter / (area_label + area_pred)
    return iou, acc, dice, inter.sum() / area_label.sum()


def test_miou_agrees_with_a_direct_computation_with_ignored_pixels():
    rng = np.random.default_rng(0)
    k = 6
    labels = [rng.integers(0, k - 2, (13, 17)) for _ in range(5)]  # classes 4 and 5 never occur...
    for t in labels:
        t[rng.random(t.shape) < 0.2] = 255  # ... and a fifth of the pixels is ignored
    preds = [np.where(rng.random(t.shape) < 0.6, np.where(t == 255, 0, t), rng.integers(0, k - 2, t.shape))
             for t in labels]  # mostly right; classes 4 and 5 never predicted
    labels[0][0, 0], preds[0][0, 0] = 3, 4  # class 4: predicted once, never right -> IoU 0
    meter = SegmentationMeter(k)
    for p, t in zip(preds, labels):
        meter.update(torch.from_numpy(p)[None], torch.from_numpy(t)[None])
    res = meter.result()
    iou, acc, dice, pixel_acc = direct_scores(preds, labels, k)
    assert math.isnan(res["iou"][5]) and math.isnan(iou[5]) and res["iou"][4] == 0.0
    np.testing.assert_allclose(res["iou"], 100 * iou, rtol=1e-12)
    np.testing.assert_allclose(res["class_acc"], 100 * acc, rtol=1e-12)
    np.testing.assert_allclose(res["dice"], 100 * dice, rtol=1e-12)
    assert res["miou"] == pytest.approx(100 * np.nanmean(iou), rel=1e-12)
    assert res["mdice"] == pytest.approx(100 * np.nanmean(dice), rel=1e-12)
    assert res["macc"] == pytest.approx(100 * np.nanmean(acc), rel=1e-12)
    assert res["acc"] == pytest.approx(100 * pixel_acc, rel=1e-12)
    assert res["num_samples"] == 5 and res["num_pixels"] == sum(int((t != 255).sum()) for t in labels)


def test_a_label_outside_the_classes_is_a_clear_error():
    with pytest.raises(DataError, match="label 9, but there are 4 classes"):
        confusion_matrix(torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0, 9], [255, 1]]), 4)


def test_scores_of_a_perfect_and_an_empty_prediction():
    c = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 1, 2]), 3)
    assert scores_from_confusion(c)["miou"] == 100.0
    c = confusion_matrix(torch.tensor([1, 1]), torch.tensor([0, 0]), 2)
    res = scores_from_confusion(c)
    assert res["iou"] == [0.0, 0.0] and res["acc"] == 0.0 and math.isnan(res["class_acc"][1])


# ---------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------


def test_pixel_cross_entropy_averages_over_all_pixels_as_mmseg():
    logits = torch.randn(2, 4, 5, 6)
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, 0] = 255
    per_pixel = -torch.log_softmax(logits, 1).gather(1, target.clamp(max=3)[:, None])[:, 0]
    per_pixel[target == 255] = 0
    torch.testing.assert_close(pixel_cross_entropy(logits, target), per_pixel.sum() / target.numel())


def test_class_weight_scales_each_pixels_loss_by_its_true_class_and_averages_over_pixels():
    logits = torch.randn(2, 3, 4, 5)
    target = torch.randint(0, 3, (2, 4, 5))
    target[1, 0] = 255
    weight = torch.tensor([1.0, 3.0, 0.5])
    per_pixel = -torch.log_softmax(logits, 1).gather(1, target.clamp(max=2)[:, None])[:, 0]
    per_pixel = per_pixel * weight[target.clamp(max=2)] * (target != 255)
    torch.testing.assert_close(pixel_cross_entropy(logits, target, class_weight=weight), per_pixel.mean())
    both = segmentation_loss(logits, target, ce_weight=1.0, dice_weight=1.0, class_weight=weight)
    torch.testing.assert_close(both, per_pixel.mean() + dice_loss(logits, target))


def test_dice_loss_is_swin_unets_formula_without_ignored_pixels():
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    probs = torch.softmax(logits, 1)
    expected = []
    for c in range(3):
        p, t = probs[:, c], (target == c).float()
        expected.append(1 - (2 * (p * t).sum() + 1e-5) / ((p * p).sum() + (t * t).sum() + 1e-5))
    torch.testing.assert_close(dice_loss(logits, target), torch.stack(expected).mean())
    masked = target.clone()
    masked[0] = 255
    torch.testing.assert_close(dice_loss(logits, masked), dice_loss(logits[1:], target[1:]))


def test_segmentation_loss_weights_the_outputs():
    target = torch.randint(0, 3, (1, 4, 4))
    out, aux = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    loss = segmentation_loss({"out": out, "aux": aux}, target, {"out": 1.0, "aux": 0.4}, 1.0, 0.5)
    expected = sum(w * (pixel_cross_entropy(x, target) + 0.5 * dice_loss(x, target)) for x, w in ((out, 1), (aux, 0.4)))
    torch.testing.assert_close(loss, expected)


# ---------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------


class Pointwise(nn.Module):
    """A per-pixel model (a 1x1 convolution): every window sees the same logits at a pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.conv(x)


class Ones(nn.Module):
    def forward(self, x):
        return torch.ones(x.shape[0], 1, *x.shape[-2:])


def test_sliding_windows_cover_the_image_as_mmseg():
    # ADE20K's 512x683 at crop 512, stride 341: one row, two windows, the last flush right
    assert window_boxes(512, 683, (512, 512), (341, 341)) == [(0, 512, 0, 512), (0, 512, 171, 683)]
    # a smaller image: one window shrunk to it
    assert window_boxes(300, 200, (512, 512), (341, 341)) == [(0, 300, 0, 200)]
    boxes = window_boxes(70, 90, (32, 32), (21, 21))
    cover = np.zeros((70, 90), dtype=int)
    for t, b, l, r in boxes:
        assert b - t == 32 and r - l == 32
        cover[t:b, l:r] += 1
    assert cover.min() >= 1
    torch.testing.assert_close(slide_logits(Ones(), torch.randn(1, 3, 70, 90), (32, 32), (21, 21)),
                               torch.ones(1, 1, 70, 90))  # overlaps averaged


def test_sliding_windows_of_a_pointwise_model_equal_the_whole_image():
    model = Pointwise().eval()
    x = torch.randn(2, 3, 50, 70)
    whole = segment(model, x, EvalProtocol("whole"))
    slide = segment(model, x, EvalProtocol("slide", crop=(24, 24), stride=(16, 16)))
    torch.testing.assert_close(slide, whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(whole.exp().sum(1), torch.ones(2, 50, 70))


def test_multi_scale_and_flip_average_the_softmax():
    model = Pointwise().eval()
    x = torch.randn(1, 3, 32, 48)
    protocol = EvalProtocol("whole", ratios=(0.5, 1.0), flip=True)
    got = segment(model, x, protocol)
    views = []
    for ratio in (0.5, 1.0):
        size = eval_size(32, 48, None, ratio)
        xi = nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        for flip in (False, True):
            v = model(xi.flip(-1) if flip else xi)
            v = nn.functional.interpolate(v, size=(32, 48), mode="bilinear", align_corners=False)
            views.append(torch.softmax(v.flip(-1) if flip else v, 1))
    torch.testing.assert_close(got, torch.stack(views).mean(0).log(), atol=1e-5, rtol=1e-5)


def test_test_size_keeps_the_aspect_ratio_within_the_scale():
    assert eval_size(512, 683, (2048, 512), 1.0) == (512, 683)
    assert eval_size(375, 500, (2048, 512), 1.0) == (512, 683)  # the short side reaches 512
    assert eval_size(1024, 2048, (2048, 512), 1.0) == (512, 1024)
    assert eval_size(375, 500, (2048, 512), 0.5) == (256, 341)


# ---------------------------------------------------------------------------------------
# Schedule and optimiser groups
# ---------------------------------------------------------------------------------------


def test_poly_schedule_with_linear_warm_up_as_mmcv():
    s = WarmupCosine(6e-5, 160_000, 1500, 6e-5 * 1e-6, 0.0, "poly", power=1.0)
    assert s(0) == pytest.approx(6e-5 * 1e-6)
    regular = 6e-5 * (1 - 750 / 160_000)
    assert s(750) == pytest.approx(regular * (1 - 0.5 * (1 - 1e-6)))
    assert s(1500) == pytest.approx(6e-5 * (1 - 1500 / 160_000))
    assert s(159_999) == pytest.approx(6e-5 / 160_000) and s(160_000) == 0.0


def test_official_segmentation_decay_groups():
    model = nn.ModuleDict({"backbone": nn.ModuleDict({"norm0": nn.LayerNorm(4), "fc": nn.Linear(4, 4)}),
                           "decode_head": nn.ModuleDict({"bn": nn.BatchNorm2d(4), "conv_seg": nn.Conv2d(4, 2, 1)})})
    model.backbone.register_parameter("relative_position_bias_table", nn.Parameter(torch.zeros(3, 1)))
    groups = param_groups(model, 0.01, rule="official_seg")
    decay = {n for g in groups if g["weight_decay"] for n in g["param_names"]}
    assert decay == {"backbone.fc.weight", "backbone.fc.bias", "decode_head.bn.weight", "decode_head.bn.bias",
                     "decode_head.conv_seg.weight", "decode_head.conv_seg.bias"}
