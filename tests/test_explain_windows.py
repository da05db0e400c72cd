"""Window drawings: the data of every drawn panel, read back from the figure, equals the
window core's own numbers (plan.mask, window order, patch merging), for several windows and
shifts, with padding and clamping, in 2D and 3D."""

import numpy as np
import pytest
import torch

import tessera
from tessera.explain.windows import MERGE_OFFSETS, draw_windows, merge_slots, window_layout
from tessera.layers.windows import window_partition
from tessera.models.swin import PatchMerging


def panel(fig, label):
    """The data ``imshow`` was given in the axes labelled ``label`` (the last image drawn)."""
    axes = [ax for ax in fig.axes if ax.get_label() == label]
    assert len(axes) == 1, f"no single panel {label!r}"
    return np.asarray(axes[0].images[-1].get_array())


def tokens_of(raster, stride):
    """A pixel raster read back at the centre of every token."""
    sy, sx = stride
    return torch.from_numpy(np.ascontiguousarray(raster[sy // 2 :: sy, sx // 2 :: sx])).long()


def mask_from_regions(regions, window):
    """The mask the drawn regions imply: 0 between tokens of a window from the same region."""
    labels = window_partition(regions[None, ..., None], window)[..., 0]  # (nW, N)
    same = labels[:, :, None] == labels[:, None, :]
    return torch.where(same, 0.0, -100.0)


# (model args, input size, stage, block): windows 4 and 7, shifts 2 and 3, a padded grid
# (56 wide at window 4 on stage 1 of 60), a clamped last stage, a regular block
IMAGE_CASES = [
    (dict(window_size=4, img_size=64), (64, 64), 0, 1),
    (dict(window_size=4, img_size=64), (64, 56), 1, 1),
    (dict(window_size=7, img_size=112), (112, 112), 0, 1),
    (dict(window_size=7, img_size=112), (100, 84), 0, 1),
    (dict(window_size=7, img_size=112), (112, 112), 2, 1),
    (dict(window_size=4, img_size=64), (64, 64), 0, 0),
]


def small_swin(**kwargs):
    return tessera.create_model("swin_t", embed_dim=8, depths=(2, 2, 2), num_heads=(1, 1, 1), num_classes=3, **kwargs)


@pytest.mark.parametrize("args, size, stage, block", IMAGE_CASES)
def test_drawn_regions_and_mask_are_the_window_cores(args, size, stage, block):
    model = small_swin(**args)
    layout = window_layout(model, size, stage, block)
    plan = model.layers[stage].plan(layout.grid, torch.device("cpu"))
    assert layout.plan is plan and layout.padded == plan.padded and layout.window == plan.window
    assert layout.shifted == (block % 2 == 1 and plan.shifted)
    image = np.random.default_rng(0).random((*size, 3)).astype(np.float32)
    fig = draw_windows(layout, image)
    stride = layout.stride
    # the regions drawn after the shift, read pixel by pixel, give the model's mask for every window
    regions = tokens_of(panel(fig, "regions"), stride)
    assert tuple(regions.shape) == plan.padded
    implied = mask_from_regions(regions, plan.window)
    if layout.shifted:
        assert torch.equal(implied, plan.mask)
    else:
        assert plan.mask is None or block % 2 == 0
        assert (implied == 0).all()
    # the mask matrix drawn is the window's own
    chosen = layout.default_window()
    mask = torch.from_numpy(panel(fig, "mask")).float()
    expected = plan.mask[chosen] if layout.shifted else torch.zeros_like(mask)
    assert torch.equal(mask, expected)
    # the block's windows drawn on the image: rolled by the shift, they are the regular windows
    drawn = tokens_of(panel(fig, "shifted"), stride)
    regular = tokens_of(panel(fig, "windows"), stride)
    colours = 10  # the windows' colour cycle: the raster holds ids modulo it
    assert torch.equal(drawn, layout.block_windows % colours)
    rolled = torch.roll(layout.block_windows, [-s for s in layout.shift], dims=(0, 1))
    assert torch.equal(rolled, layout.windows)
    counts = torch.tensor(plan.padded) // torch.tensor(plan.window)
    rows = torch.arange(plan.padded[0]) // plan.window[0]
    cols = torch.arange(plan.padded[1]) // plan.window[1]
    assert torch.equal(regular, (rows[:, None] * counts[1] + cols[None, :]) % colours)


def test_clamped_stage_draws_one_window_without_shift():
    model = small_swin(window_size=7, img_size=112)  # stage 2: a 7x7 map, window clamped, no shift
    layout = window_layout(model, (112, 112), stage=2, block=1)
    assert layout.grid == (7, 7) and layout.num_windows == 1 and not layout.shifted
    assert layout.merge_slots is None


@pytest.mark.parametrize("window, clip, block", [((2, 4, 4), (8, 32, 32), 1), ((4, 4, 4), (8, 32, 24), 1),
                                                  ((2, 7, 7), (8, 56, 56), 1), ((2, 4, 4), (6, 32, 32), 0)])
def test_video_panels_per_temporal_slice(window, clip, block):
    model = tessera.create_model("video_swin_t", embed_dim=8, depths=(2, 2), num_heads=(1, 1), num_classes=3,
                                 window_size=window)
    layout = window_layout(model, clip, 0, block)
    plan = layout.plan
    frames = np.random.default_rng(1).random((clip[0], clip[1], clip[2], 3)).astype(np.float32)
    fig = draw_windows(layout, frames, max_slices=16)
    stride = layout.stride[1:]
    regions = torch.stack([tokens_of(panel(fig, f"regions:{t}"), stride) for t in range(plan.padded[0])])
    implied = mask_from_regions(regions, plan.window)
    if layout.shifted:
        assert torch.equal(implied, plan.mask)
        # where time shifts too, the slices hold different temporal regions
        assert (len({int(regions[t].min()) // 9 for t in range(plan.padded[0])}) > 1) == (plan.shift[0] > 0)
    else:
        assert (implied == 0).all()
    assert torch.equal(torch.from_numpy(panel(fig, "mask")).float(),
                       plan.mask[layout.default_window()] if layout.shifted else torch.zeros(plan.tokens_per_window,
                                                                                            plan.tokens_per_window))


def test_merge_slots_are_the_order_patch_merging_concatenates():
    merging = PatchMerging(dim=3)
    slots = merge_slots(merging, (6, 5))  # odd width: padded like the module pads
    assert slots.shape == (6, 6)
    for (dy, dx), k in zip(MERGE_OFFSETS, range(4)):
        assert (slots[dy::2, dx::2] == k).all()
    # the module's own concatenation: channel block k of a merged token is the token at offset k
    x = torch.arange(30, dtype=torch.float32).view(1, 6, 5, 1).expand(1, 6, 5, 3)
    seen = []
    handle = merging.norm.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    merging(x)
    handle.remove()
    merged = seen[0][0, ..., ::3]  # (3, 3, 4)
    for k, (dy, dx) in enumerate(MERGE_OFFSETS):
        assert merged[1, 1, k] == (2 + dy) * 5 + (2 + dx)


def test_layout_errors_name_the_problem():
    model = small_swin(window_size=4, img_size=64)
    with pytest.raises(ValueError, match="stage 5 out of range"):
        window_layout(model, (64, 64), stage=5)
    with pytest.raises(ValueError, match="block 2 out of range"):
        window_layout(model, (64, 64), block=2)
    with pytest.raises(ValueError, match="window drawings are of Swin"):
        window_layout(tessera.create_model("vit_t_16", depth=1), (224, 224))
    layout = window_layout(model, (64, 64))
    with pytest.raises(ValueError, match="window 99 out of range"):
        draw_windows(layout, np.zeros((64, 64, 3), np.float32), window=99)


@pytest.mark.parametrize("rule", ["official", "torchvision", "timm"])
def test_layout_follows_the_models_size_rule(rule):
    """The drawn grid and plan are the ones the model's stages run with: an input that is no
    multiple of the patch (pixels padded or cropped by the rule) and grids that are no
    multiple of the window (windows padded, clamped or shrunk by the rule)."""
    model = tessera.create_model("swin_t", embed_dim=16, depths=(2, 2, 2), num_heads=(1, 1, 1), window_size=4,
                                 img_size=64, num_classes=3, size_rule=rule).eval()
    seen = []
    hooks = [layer.register_forward_pre_hook(lambda m, a: seen.append(tuple(a[0].shape[1:-1])))
             for layer in model.layers]
    with tessera.backends.use("reference"), torch.no_grad():
        model(torch.randn(1, 3, 38, 45))
    for h in hooks:
        h.remove()
    for stage, grid in enumerate(seen):
        layout = window_layout(model, (38, 45), stage, 1)
        plan = model.layers[stage].plan(grid, torch.device("cpu"))
        assert layout.grid == grid and layout.plan is plan
        assert (layout.padded, layout.window, layout.shift) == (plan.padded, plan.window,
                                                                plan.shift if layout.shifted else (0, 0))
