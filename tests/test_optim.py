"""The learning-rate schedule and the parameter groups of the official recipe."""

import math

import pytest
import torch
from torch import nn

import tessera
from tessera.backends.optim import adamw
from tessera.train.optim import build_optimizer, param_groups, scaled_lr
from tessera.train.recipe import load_recipe
from tessera.train.schedule import WarmupCosine


def test_warmup_then_cosine_values():
    s = WarmupCosine(base_lr=1.0, total_steps=110, warmup_steps=10, warmup_lr=0.1, min_lr=0.01)
    # linear from warmup_lr towards base_lr over the warm-up steps
    assert [s(t) for t in (0, 1, 5, 9)] == pytest.approx([0.1, 0.19, 0.55, 0.91])
    # then half a cosine from base_lr (at the end of warm-up) to min_lr (at total_steps)
    assert s(10) == pytest.approx(1.0)
    assert s(35) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.25)))
    assert s(60) == pytest.approx(0.505)
    assert s(110) == pytest.approx(0.01) and s(500) == pytest.approx(0.01)
    lrs = [s(t) for t in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # non-increasing after warm-up


def test_schedule_without_warmup_and_group_multipliers():
    s = WarmupCosine(base_lr=2.0, total_steps=4)
    assert [s(t) for t in range(5)] == pytest.approx([2.0, 1 + math.cos(math.pi / 4), 1.0, 1 - math.cos(math.pi / 4), 0.0])
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p], "lr_mult": 0.1}, {"params": [nn.Parameter(torch.zeros(1))]}])
    assert s.apply(opt, 0) == 2.0
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.2, 2.0])


def expected_no_decay(model: nn.Module) -> set[str]:
    """From the module types, independently of the implementation: every bias, the norms'
    affine parameters and the relative-position bias tables (and the absolute embedding)."""
    names = set()
    for mname, module in model.named_modules():
        for pname, _ in module.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if pname == "bias" or isinstance(module, nn.LayerNorm) or pname in (
                    "relative_position_bias_table", "absolute_pos_embed"):
                names.add(full)
    return names


@pytest.mark.parametrize("ape", [False, True])
def test_no_weight_decay_exactly_where_the_official_recipe_has_none(ape):
    model = tessera.create_model("swin_t", img_size=64, num_classes=5, depths=(2, 2), num_heads=(3, 6), ape=ape)
    groups = param_groups(model, weight_decay=0.05)
    by_decay = {g["weight_decay"]: set(g["param_names"]) for g in groups}
    assert set(by_decay) == {0.0, 0.05}
    assert by_decay[0.0] == expected_no_decay(model)
    assert ("absolute_pos_embed" in by_decay[0.0]) == ape
    assert any(n.endswith("relative_position_bias_table") for n in by_decay[0.0])
    # every weight matrix (linear and conv) decays, and nothing else
    matrices = {n for n, p in model.named_parameters() if p.ndim >= 2 and n.endswith("weight")}
    assert by_decay[0.05] == matrices
    assert by_decay[0.0] | by_decay[0.05] == {n for n, _ in model.named_parameters()}


def test_backbone_lr_multiplier_spares_the_head():
    model = tessera.create_model("swin_t", img_size=64, num_classes=5, depths=(2, 2), num_heads=(3, 6))
    groups = {g["name"]: g for g in param_groups(model, 0.05, backbone_lr_mult=0.1)}
    assert set(groups) == {"head_decay", "head_no_decay", "backbone_decay", "backbone_no_decay"}
    assert groups["head_decay"]["param_names"] == ["head.weight"] and groups["head_no_decay"]["param_names"] == ["head.bias"]
    assert groups["head_decay"]["lr_mult"] == 1.0 and groups["backbone_decay"]["lr_mult"] == 0.1


def test_linear_lr_scaling_and_optimizer():
    recipe = load_recipe("swin_t_in1k", ["data.root=x", "data.val_root=y"])
    assert scaled_lr(recipe.optim.lr, recipe) == pytest.approx(1e-3)  # 5e-4 x 1024 / 512
    assert scaled_lr(recipe.schedule.min_lr, recipe) == pytest.approx(1e-5)
    recipe.data.batch_size = 128
    assert scaled_lr(recipe.optim.lr, recipe) == pytest.approx(1.25e-4)
    model = tessera.create_model("swin_t", img_size=64, num_classes=5, depths=(2, 2), num_heads=(3, 6))
    opt = build_optimizer(model, recipe)
    assert isinstance(opt, torch.optim.AdamW)
    assert {(g["weight_decay"], g["betas"], g["eps"]) for g in opt.param_groups} == {
        (0.0, (0.9, 0.999), 1e-8), (0.05, (0.9, 0.999), 1e-8)}
    assert all(g["fused"] for g in opt.param_groups)  # PyTorch's fused kernel on the CPU


def test_fused_adamw_makes_the_same_updates():
    """The fused kernel and PyTorch's default AdamW agree step by step (rounding apart), over
    parameter groups with and without weight decay, given the same gradients."""
    model = tessera.create_model("swin_t", img_size=32, num_classes=4, embed_dim=16, depths=(2,), num_heads=(2,),
                                 window_size=4)
    start = [p.detach().clone() for p in model.parameters()]
    copies = [[nn.Parameter(p.clone()) for p in start] for _ in range(2)]

    def groups(params):
        return [{"params": [p for p in params if p.dim() > 1], "weight_decay": 0.05},
                {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]

    fused, plain = adamw(groups(copies[0]), lr=1e-3), torch.optim.AdamW(groups(copies[1]), lr=1e-3)
    assert fused.param_groups[0]["fused"] and not plain.param_groups[0]["fused"]
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=gen) for p in start]
        for params, opt in zip(copies, (fused, plain)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
    for a, b, before in zip(*copies, start):
        # a few float32 roundings per step in another order, on weights of order 1 moving by lr
        assert (a - b).abs().max() <= 1e-6
        assert (a - before).abs().max() > 1e-3  # three steps of lr 1e-3 moved every parameter


def test_adamw_falls_back_where_there_is_no_fused_kernel():
    """Integer or meta parameters have no fused kernel: the default implementation, no error."""
    meta = nn.Parameter(torch.empty(3, device="meta"))
    assert not adamw([meta], lr=1e-3).param_groups[0]["fused"]
