"""Size rules: the window, shift, padding, their order and the patch remainder of every stage,
per axis, where the map is not a multiple of the window.

The expected plans are those of the official code, torchvision 0.28 and timm 1.0 (read from
their code; ``scripts/compare_size_rules.py`` checks the whole models against them with the
same weights: the README's figures). Maps that are multiples of the window (224, 384) are
the same function under every rule; the golden peer checkpoints check that at 224.
"""

import json

import pytest
import torch

import tessera
from tessera.cli import main
from tessera.layers.windows import (
    CLASSIFIER_RULES,
    SIZE_RULES,
    cyclic_shift,
    get_plan,
    official_sizes,
    pad_grid,
    rules_agree,
    size_rule,
    timm_sizes,
    torchvision_sizes,
    window_partition,
)
from tessera.models import SwinTransformer

SMALL_2D = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), num_classes=3)


def stage_plans(img_size, rule: str) -> list[tuple]:
    """``(map, table window, shift of the odd blocks, window, padded, shift_first)`` of every
    stage of a Swin-T built for and run at ``img_size`` (shift, window and padding as the
    stage runs them)."""
    with torch.device("meta"):
        model = tessera.create_model("swin_t", img_size=img_size, size_rule=rule)
    grids = size_rule(rule).stage_grids(model.img_size, model.patch_size, 4)
    out = []
    for grid, stage in zip(grids, model.layers):
        plan = stage.plan(grid, torch.device("cpu"))
        out.append((grid, stage.window_size, plan.shift if any(stage.shift_size) else (0, 0), plan.window,
                    plan.padded, plan.shift_first))
    return out


# -- point 1: each stage's map is what patch merging makes (odd sides rounded up) ----------


def test_stage_maps_round_up_as_patch_merging_does():
    rule = size_rule("official")
    assert rule.stage_grids((232, 232), (4, 4), 4) == [(58, 58), (29, 29), (15, 15), (8, 8)]
    assert rule.stage_grids((200, 200), (4, 4), 4) == [(50, 50), (25, 25), (13, 13), (7, 7)]
    assert rule.stage_grids((8, 200, 200), (2, 4, 4), 2, merged_axes=2) == [(4, 50, 50), (4, 25, 25)]


def test_swin_t_at_232_keeps_the_last_stage_shift():
    """The map of stage 4 is 8x8, larger than the window: shifted, and padded to 14x14."""
    last = stage_plans(232, "official")[3]
    assert last == ((8, 8), (7, 7), (3, 3), (7, 7), (14, 14), False)


def test_swin_t_at_200_keeps_the_window_and_its_tables():
    """Stage 4 is 7x7 (50, 25, 13, 7): window 7 and no shift, and a 224 checkpoint's 13x13
    tables load as they are."""
    assert stage_plans(200, "official")[3] == ((7, 7), (7, 7), (0, 0), (7, 7), (7, 7), False)
    source = SwinTransformer(img_size=224, window_size=7, **SMALL_2D)
    target = SwinTransformer(img_size=200, window_size=7, **SMALL_2D)
    report = tessera.load_checkpoint(target, source.state_dict(), strict=True)
    assert not [n for n in report.notes if "resized" in n]
    assert torch.equal(target.layers[3].blocks[0].attn.relative_position_bias_table,
                       source.layers[3].blocks[0].attn.relative_position_bias_table)


# -- point 2: each library's rule, per axis -----------------------------------------------


def test_run_time_sizes_of_each_rule():
    # an 8x6 map, window 7, shift 3: official clamps the short axis, torchvision pads it
    assert official_sizes((8, 6), (7, 7), (3, 3)) == ((7, 6), (3, 0), (14, 6), False)
    assert torchvision_sizes((8, 6), (7, 7), (3, 3)) == ((7, 7), (3, 0), (14, 7), False)
    # timm keeps what construction fixed, and rolls before it pads
    assert timm_sizes((8, 6), (7, 6), (3, 0)) == ((7, 6), (3, 0), (14, 6), True)
    # a map larger than the window: everyone pads and shifts
    for sizes in (official_sizes, torchvision_sizes):
        assert sizes((8, 8), (7, 7), (3, 3))[:3] == ((7, 7), (3, 3), (14, 14))


def test_construction_windows_of_each_rule():
    # a 14x7 map: official clamps both axes when either is small, timm per axis, torchvision not at all
    assert size_rule("official").stage_window((14, 7), (7, 7)) == ((7, 7), (0, 0))
    assert size_rule("timm").stage_window((14, 7), (7, 7)) == ((7, 7), (3, 0))
    assert size_rule("timm").stage_window((8, 6), (7, 7)) == ((7, 6), (3, 0))
    assert size_rule("torchvision").stage_window((8, 6), (7, 7)) == ((7, 7), (3, 3))
    assert size_rule("official").stage_window((8, 6), (7, 7)) == ((6, 6), (0, 0))


def test_patch_remainder_of_each_rule():
    assert size_rule("official").patch_grid((230, 230), (4, 4)) == (58, 58)
    assert size_rule("torchvision").patch_grid((230, 230), (4, 4)) == (57, 57)
    assert size_rule("timm").patch_grid((230, 230), (4, 4)) == (57, 57)
    for rule, side in (("official", 58), ("torchvision", 57)):
        model = SwinTransformer(img_size=230, window_size=7, size_rule=rule, **SMALL_2D).eval()
        with torch.no_grad():
            assert model.forward_intermediates(torch.randn(1, 3, 230, 230))[0].shape[-1] == side


@pytest.mark.parametrize(
    "img_size,rule,last_stages",
    [
        # torchvision at 256x192: stage 4 (8x6) keeps window 7, padded to 14x7, shifted in height only
        ((256, 192), "torchvision", [((16, 12), (7, 7), (3, 3), (7, 7), (21, 14), False),
                                     ((8, 6), (7, 7), (3, 0), (7, 7), (14, 7), False)]),
        ((256, 192), "official", [((16, 12), (7, 7), (3, 3), (7, 7), (21, 14), False),
                                  ((8, 6), (6, 6), (0, 0), (6, 6), (12, 6), False)]),
        ((256, 192), "timm", [((16, 12), (7, 7), (3, 3), (7, 7), (21, 14), True),
                              ((8, 6), (7, 6), (3, 0), (7, 6), (14, 6), True)]),
        # 448x224: stage 4 (14x7) keeps its shift in height with torchvision and timm
        ((448, 224), "torchvision", [((28, 14), (7, 7), (3, 3), (7, 7), (28, 14), False),
                                     ((14, 7), (7, 7), (3, 0), (7, 7), (14, 7), False)]),
        ((448, 224), "timm", [((28, 14), (7, 7), (3, 3), (7, 7), (28, 14), True),
                              ((14, 7), (7, 7), (3, 0), (7, 7), (14, 7), True)]),
        ((448, 224), "official", [((28, 14), (7, 7), (3, 3), (7, 7), (28, 14), False),
                                  ((14, 7), (7, 7), (0, 0), (7, 7), (14, 7), False)]),
        # 230x230: torchvision drops 2 pixels (57 patches), tessera pads them (58)
        ((230, 230), "torchvision", [((15, 15), (7, 7), (3, 3), (7, 7), (21, 21), False),
                                     ((8, 8), (7, 7), (3, 3), (7, 7), (14, 14), False)]),
        ((230, 230), "official", [((15, 15), (7, 7), (3, 3), (7, 7), (21, 21), False),
                                  ((8, 8), (7, 7), (3, 3), (7, 7), (14, 14), False)]),
    ],
)
def test_swin_t_plans_at_sizes_the_official_code_refuses(img_size, rule, last_stages):
    plans = stage_plans(img_size, rule)
    assert plans[2:] == last_stages
    assert plans[0][0] == size_rule(rule).patch_grid(img_size, (4, 4))


@pytest.mark.parametrize("shift_first", [False, True])
def test_partition_orders_padding_and_roll_as_the_rule_says(shift_first):
    grid, window, shift = (5, 9), (3, 4), (1, 2)
    plan = get_plan(grid, window, shift, torch.device("cpu"), "timm" if shift_first else "official")
    assert plan.shift_first == shift_first
    x = torch.randn(2, *grid, 3)
    padded = plan.padded
    if shift_first:
        expected = window_partition(pad_grid(cyclic_shift(x, shift), padded), window)
    else:
        expected = window_partition(cyclic_shift(pad_grid(x, padded), shift), window)
    assert torch.equal(plan.partition(x, shifted=True), expected)
    assert torch.equal(plan.reverse(plan.partition(x, shifted=True), shifted=True), x)
    assert not torch.equal(expected, window_partition(pad_grid(x, padded), window))


def test_rules_agree_only_where_maps_fit_the_window():
    for a in CLASSIFIER_RULES:
        for b in CLASSIFIER_RULES:
            assert rules_agree(a, b, (224, 224), (4, 4), (7, 7), 4)
            assert rules_agree(a, b, (384, 384), (4, 4), (12, 12), 4)
    assert not rules_agree("official", "torchvision", (256, 192), (4, 4), (7, 7), 4)
    assert not rules_agree("official", "timm", (448, 224), (4, 4), (7, 7), 4)
    assert rules_agree("torchvision", "timm", (448, 224), (4, 4), (7, 7), 4)  # no padding there
    assert not rules_agree("torchvision", "timm", (232, 232), (4, 4), (7, 7), 4)  # roll before pad
    # the dense backbones keep stage 4's shift on its 7x7 map at 224; at 256 (8x8) all agree
    assert set(SIZE_RULES) == {*CLASSIFIER_RULES, "always_partition"}
    assert not rules_agree("official", "always_partition", (224, 224), (4, 4), (7, 7), 4)
    assert rules_agree("official", "always_partition", (448, 448), (4, 4), (7, 7), 4)


def test_always_partition_keeps_window_and_shift_and_pads_before_rolling():
    """The official detection and segmentation backbones: window and shift on every stage,
    the map padded to a multiple of the window, then rolled (with the shift mask)."""
    assert stage_plans(224, "always_partition")[3] == ((7, 7), (7, 7), (3, 3), (7, 7), (7, 7), False)
    assert stage_plans(224, "official")[3] == ((7, 7), (7, 7), (0, 0), (7, 7), (7, 7), False)
    # 200: stage 4 is 7x7 (odd sides rounded up), stage 3 13x13 padded to 14x14, both shifted
    plans = stage_plans(200, "always_partition")
    assert plans[2] == ((13, 13), (7, 7), (3, 3), (7, 7), (14, 14), False)
    plan = get_plan((5, 3), (7, 7), (3, 3), torch.device("cpu"), "always_partition")
    assert (plan.window, plan.shift, plan.padded, plan.shift_first) == ((7, 7), (3, 3), (7, 7), False)
    assert plan.mask is not None  # a single padded window still separates the rolled regions
    x = torch.randn(1, 5, 3, 4)
    expected = window_partition(cyclic_shift(pad_grid(x, (7, 7)), (3, 3)), (7, 7))
    assert torch.equal(plan.partition(x, shifted=True), expected)


def test_unknown_rule_is_refused():
    with pytest.raises(tessera.errors.ConfigError, match="size_rule 'tf'"):
        tessera.create_model("swin_t", size_rule="tf")


# -- the rule travels with the weights ----------------------------------------------------


def test_convert_to_a_named_model_records_the_rule(golden, tmp_path, capsys):
    args = ["convert", str(golden / "torchvision_swin2d.pth"), str(tmp_path), "--model", "swin_t",
            "embed_dim=16", "depths=2,2,2,2", "num_heads=1,2,2,4", "img_size=256,192"]
    assert main(args) == 0
    assert "size_rule='torchvision'" in capsys.readouterr().out
    assert json.loads((tmp_path / "config.json").read_text())["args"]["size_rule"] == "torchvision"


def test_loading_peer_weights_says_when_their_rule_differs(golden, peer_cases):
    case = peer_cases["torchvision_swin2d"]
    at_224 = SwinTransformer(**{"img_size": 224, **case["config"]}).eval()
    report = tessera.load_checkpoint(at_224, golden / "torchvision_swin2d.pth")
    assert report.size_rule == "torchvision" and not [n for n in report.notes if "size_rule" in n]
    with torch.no_grad():  # at 224 the rules agree: the recorded outputs
        torch.testing.assert_close(at_224(case["x"]), case["logits"], atol=1e-4, rtol=1e-4)
    other = SwinTransformer(**{**case["config"], "img_size": (256, 192)})
    report = tessera.load_checkpoint(other, golden / "torchvision_swin2d.pth")
    assert any("build the model with size_rule='torchvision'" in n for n in report.notes)


@pytest.fixture(scope="module")
def peer_cases():
    from conftest import GOLDEN

    if not GOLDEN.is_dir():
        pytest.skip(f"no golden reference data at {GOLDEN}")
    return torch.load(GOLDEN / "peer_cases.pt", weights_only=True)
