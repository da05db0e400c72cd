"""Swin and Video Swin take any input of at least one patch: odd, prime, non-divisible sizes
and single-frame clips give finite outputs of the shapes the padding rules predict.

Property-based (hypothesis) over the input size, on small models: three stages, two blocks
each (so shifted windows run), a window that does not divide the maps.
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tessera.models import SwinTransformer, VideoSwinTransformer

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
STAGES = 3


@pytest.fixture(scope="module")
def swin2d():
    torch.manual_seed(0)
    return SwinTransformer(img_size=64, embed_dim=16, depths=(2, 2, 2), num_heads=(1, 2, 2), window_size=5,
                           num_classes=6).eval()


@pytest.fixture(scope="module")
def swin3d():
    torch.manual_seed(0)
    return VideoSwinTransformer(embed_dim=16, depths=(2, 2, 2), num_heads=(1, 2, 2), window_size=(3, 5, 5),
                                num_classes=6).eval()


def stage_grids(spatial: tuple[int, int], time: int | None = None) -> list[tuple[int, ...]]:
    """The grid of each stage: patches of 4 pixels (and 2 frames), padded up; each merge
    halves H and W, rounding up; time is never merged."""
    h, w = (math.ceil(s / 4) for s in spatial)
    lead = () if time is None else (math.ceil(time / 2),)
    grids = []
    for _ in range(STAGES):
        grids.append((*lead, h, w))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return grids


def check(model, x: torch.Tensor, grids: list[tuple[int, ...]]) -> None:
    with torch.no_grad():
        logits = model(x)
        stages = model.forward_intermediates(x)
    assert logits.shape == (x.shape[0], 6) and torch.isfinite(logits).all()
    assert [tuple(s.shape[2:]) for s in stages] == grids
    assert [s.shape[1] for s in stages] == [16, 32, 64]
    assert all(torch.isfinite(s).all() for s in stages)


@SETTINGS
@given(h=st.integers(4, 72), w=st.integers(4, 72), batch=st.integers(1, 2))
def test_swin_2d_any_size_of_at_least_one_patch(swin2d, h, w, batch):
    check(swin2d, torch.randn(batch, 3, h, w), stage_grids((h, w)))


@SETTINGS
@given(t=st.integers(1, 9), h=st.integers(4, 40), w=st.integers(4, 40))
def test_video_swin_any_clip_of_at_least_one_patch(swin3d, t, h, w):
    check(swin3d, torch.randn(1, 3, t, h, w), stage_grids((h, w), time=t))


@pytest.mark.parametrize("shape", [(1, 3, 3, 64), (1, 3, 64, 3), (1, 3, 4, 3, 40)])
def test_one_pixel_short_of_a_patch_is_refused(swin2d, swin3d, shape):
    model = swin3d if len(shape) == 5 else swin2d
    with pytest.raises(ValueError, match=r"smaller than one patch \(4, 4\)"):
        model(torch.randn(shape))
