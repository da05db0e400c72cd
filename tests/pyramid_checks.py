"""Checks shared by the tests of the pyramid families (PVT v1, PVT v2, Shuffle)."""

import torch

from tessera.layers.sra import SpatialReductionAttention


def check_intermediates(model, size=(64, 96)):
    """Run ``forward_intermediates`` and ``forward_features`` on a batch of ``size`` images
    and check the maps against ``feature_info`` (channels and stride). Returns both."""
    model.eval()
    x = torch.randn(2, model.in_chans, *size)
    with torch.no_grad():
        maps = model.forward_intermediates(x)
        features = model.forward_features(x)
    assert [m.shape[1] for m in maps] == [f["num_chs"] for f in model.feature_info]
    strides = [(size[0] // m.shape[2], size[1] // m.shape[3]) for m in maps]
    assert strides == [(f["reduction"],) * 2 for f in model.feature_info]
    return maps, features


def kv_token_counts(model, x):
    """How many tokens each attention computes its queries and its keys/values from."""
    seen = []
    hooks = []
    for m in model.modules():
        if isinstance(m, SpatialReductionAttention):
            hooks.append(m.q.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[1])))
            hooks.append(m.kv.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[1])))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return list(zip(seen[::2], seen[1::2]))
