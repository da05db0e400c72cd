"""The same checks for every registered model, at a small input.

A new family gets all of these by registering itself. Image models are built with
``img_size=64`` (every image family takes that argument), video models run on 4x32x32 clips.
Every family has a variant of at most 30M parameters; those run every check. The larger
variants share their family's code and are checked on the ``meta`` device (built, and their
shapes traced through the whole API, without allocating or computing anything), which keeps
the suite fast. So is a small variant with the class and parameter count of another (the
same network with another window or other training defaults: DeiT-T and ViT-T, Swin V2-T
with window 16).

Segmentation models (``task = "segmentation"``: per-pixel logits) have checks of their own at
the end; UperNet's official variants are all above 30M parameters, its every check runs on a
small configuration in ``test_seg_models.py``.
"""

import pytest
import torch

import tessera
from tessera.errors import InputShapeError

IMAGE_SIZE = 64
CLIP = (4, 32, 32)
HEAVY_PARAMS = 30_000_000


def _signature(name: str) -> tuple[str, int, str]:
    with torch.device("meta"):
        model = tessera.create_model(name)
    return type(model).__name__, sum(p.numel() for p in model.parameters()), getattr(model, "task", "classification")


_SIGNATURES = {name: _signature(name) for name in tessera.list_models()}
_FIRST = {}
for _name, _sig in _SIGNATURES.items():
    _FIRST.setdefault(_sig, _name)
_CLASSIFIERS = [n for n, (_, _, task) in _SIGNATURES.items() if task == "classification"]
MODELS = [n for n in _CLASSIFIERS if _SIGNATURES[n][1] <= HEAVY_PARAMS and _FIRST[_SIGNATURES[n]] == n]
HEAVY = [n for n in _CLASSIFIERS if n not in MODELS]
SEGMENTATION = [n for n, (_, _, task) in _SIGNATURES.items() if task == "segmentation"]


def is_video(name: str) -> bool:
    return name.startswith("video_")


def build(name: str, **overrides) -> torch.nn.Module:
    kwargs = {} if is_video(name) else {"img_size": IMAGE_SIZE}
    return tessera.create_model(name, **kwargs, **overrides)


def sample(model: torch.nn.Module, batch: int = 2) -> torch.Tensor:
    chans = model.default_cfg["input_size"][0]
    size = CLIP if len(model.default_cfg["input_size"]) == 4 else (IMAGE_SIZE, IMAGE_SIZE)
    return torch.randn(batch, chans, *size)


@pytest.fixture(scope="module", params=MODELS)
def built(request):
    """One model per name for the whole module (building the large ones is the slow part)."""
    torch.manual_seed(0)
    return request.param, build(request.param, num_classes=7)


def test_forward_backward(built):
    name, model = built
    model.train()
    x = sample(model)
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    model.zero_grad(set_to_none=True)
    out.square().mean().backward()
    without = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not without, f"parameters without gradient: {without[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_features_then_head_is_forward(built):
    name, model = built
    model.eval()
    x = sample(model)
    with torch.no_grad():
        out = model(x)
        features = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(features), out, atol=1e-5, rtol=1e-5)
        pooled = model.forward_head(features, pre_logits=True)
    assert pooled.shape == (2, model.num_features)


def test_reset_classifier(built):
    name, _ = built
    torch.manual_seed(0)
    model = build(name, num_classes=7).eval()
    x = sample(model)
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        model.reset_classifier(3)
        assert model(x).shape == (2, 3)
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pooled, atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_same_output_and_gradients(built):
    name, model = built
    model.eval()  # no dropout / stochastic depth, so both runs compute the same function
    x = sample(model)
    results = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad(set_to_none=True)
        out = model(x)
        out.sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    model.set_grad_checkpointing(False)
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-5)
    assert len(results[1][1]) == len(results[0][1])
    for a, b in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_backends_equal_reference_outputs_and_gradients(built):
    """Whatever the backends choose here computes the reference's outputs and gradients; the
    window families also at a size that pads the first stages and clamps the last one."""
    name, model = built
    model.eval()  # no dropout / stochastic depth
    windowed = hasattr(model, "layers") and hasattr(model.layers[0], "plan")
    x = sample(model, batch=1)
    if windowed:
        x = torch.randn(1, 3, 6, 36, 20) if is_video(name) else torch.randn(1, 3, 72, 40)
    results = []
    for setting in ("reference", "auto"):
        model.zero_grad(set_to_none=True)
        with tessera.backends.use(setting):
            out = model(x)
            out.square().sum().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-5)
    assert results[1][1].keys() == results[0][1].keys()
    for key, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][key], grad, atol=1e-4, rtol=1e-3, msg=key)


def test_batch_independence(built):
    name, model = built
    model.eval()
    x = sample(model, batch=3)
    with torch.no_grad():
        full = model(x)
        alone = model(x[:1])
        x2 = x.clone()
        x2[1:] = torch.randn_like(x2[1:]) * 3
        changed = model(x2)
    torch.testing.assert_close(alone[0], full[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(changed[0], full[0], atol=1e-5, rtol=1e-4)


def test_state_dict_round_trip_and_model_args(built):
    name, model = built
    model.eval()
    clone = type(model)(**model.model_args).eval()
    clone.load_state_dict(model.state_dict())
    x = sample(model)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x), atol=1e-6, rtol=1e-6)
    assert model.model_name == name


def bad_input(kind: str, x: torch.Tensor) -> torch.Tensor:
    """``x`` spoiled in one way: a missing batch axis, one channel too many, integer pixels,
    or a spatial size (2 pixels) smaller than any model's patch."""
    if kind == "rank":
        return x[0]
    if kind == "channels":
        return torch.randn(x.shape[0], x.shape[1] + 1, *x.shape[2:])
    if kind == "dtype":
        return torch.randint(0, 255, x.shape)
    return x[..., :2, :2].contiguous()


@pytest.mark.parametrize("kind", ["rank", "channels", "dtype", "too_small"])
def test_bad_input_is_a_clear_error_before_any_computation(built, kind):
    name, model = built
    bad = bad_input(kind, sample(model))
    called = []
    hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: called.append(n))
             for n, m in model.named_modules() if n]
    try:
        with pytest.raises(InputShapeError) as info:
            model(bad)
    finally:
        for h in hooks:
            h.remove()
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in message
    assert str(tuple(bad.shape)) in message, message  # what it got
    assert "expected" in message or "at least" in message, message  # what it needs
    assert {"channels": "channels", "dtype": "floating-point", "rank": "dimensions"}.get(kind, "") in message
    assert not called, f"{name} ran {called[:3]} before refusing the input"


def test_every_family_has_a_variant_that_runs_every_check():
    with torch.device("meta"):
        heavy = {type(build(n)) for n in HEAVY}
        light = {type(build(n)) for n in MODELS}
    assert heavy <= light


@pytest.mark.parametrize("name", HEAVY)
def test_large_variant_shapes_on_meta(name):
    """Built on the meta device: every parameter, the forward, the head/feature API and
    rebuilding from model_args, as shapes only."""
    with torch.device("meta"):
        model = build(name, num_classes=7).eval()
        x = sample(model)
        out = model(x)
        features = model.forward_features(x)
        pooled = model.forward_head(features, pre_logits=True)
        clone = type(model)(**model.model_args)
        assert [p.shape for p in clone.parameters()] == [p.shape for p in model.parameters()]
        model.reset_classifier(0)
        bare = model(x)
    assert out.shape == (2, 7)
    assert pooled.shape == bare.shape == (2, model.num_features)


# ---------------------------------------------------------------------------------------
# Segmentation models: (B, C, H, W) -> (B, classes, H, W)
# ---------------------------------------------------------------------------------------

SEG_LIGHT = [n for n in SEGMENTATION if _SIGNATURES[n][1] <= HEAVY_PARAMS]


@pytest.fixture(scope="module", params=SEG_LIGHT)
def seg_built(request):
    torch.manual_seed(0)
    return request.param, build(request.param, num_classes=7)


def test_segmentation_forward_backward_and_round_trip(seg_built):
    name, model = seg_built
    model.train()
    x = sample(model)
    out = model(x)
    outputs = out if isinstance(out, dict) else {"out": out}
    assert all(v.shape == (2, 7, IMAGE_SIZE, IMAGE_SIZE) and torch.isfinite(v).all() for v in outputs.values())
    sum(v.square().mean() for v in outputs.values()).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        full = model(x)
        torch.testing.assert_close(model(x[:1]), full[:1], atol=1e-5, rtol=1e-4)
        clone = type(model)(**model.model_args).eval()
        clone.load_state_dict(model.state_dict())
        torch.testing.assert_close(clone(x), full, atol=1e-6, rtol=1e-6)
    clone.reset_classifier(3)
    with torch.no_grad():
        assert clone(x).shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)


@pytest.mark.parametrize("kind", ["rank", "channels", "dtype", "too_small"])
def test_segmentation_bad_input_is_a_clear_error(seg_built, kind):
    name, model = seg_built
    bad = bad_input(kind, sample(model))
    called = []
    hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: called.append(n))
             for n, m in model.named_modules() if n]
    try:
        with pytest.raises(InputShapeError) as info:
            model(bad)
    finally:
        for h in hooks:
            h.remove()
    assert str(tuple(bad.shape)) in str(info.value) and not called


@pytest.mark.parametrize("name", SEGMENTATION)
def test_segmentation_shapes_on_meta(name):
    with torch.device("meta"):
        model = build(name, num_classes=7)
        x = sample(model)
        out = model.train()(x)
        outputs = out if isinstance(out, dict) else {"out": out}
        assert all(v.shape == (2, 7, IMAGE_SIZE, IMAGE_SIZE) for v in outputs.values())
        assert model.eval()(x).shape == (2, 7, IMAGE_SIZE, IMAGE_SIZE)
        clone = type(model)(**model.model_args)
        assert [p.shape for p in clone.parameters()] == [p.shape for p in model.parameters()]
