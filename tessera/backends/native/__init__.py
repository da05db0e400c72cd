"""Native CPU kernels, compiled on first use with this machine's C++ compiler.

``kernels.cpp`` holds them, all for inference: windowed attention (every window and head of a
Swin block in one call, bias, mask and softmax fused, fp32 arithmetic), a LayerNorm from the
fp32 residual stream straight to bf16, and the add of a bf16 layer output to that stream.

The source is plain C++ without PyTorch headers, so it builds in about a second. It is built
for the instruction-set tier of :func:`tessera.backends.capability.host` (``-march=native``
when that is the processor's own; ``x86-64-v3`` for AVX2 + FMA, ``x86-64-v4`` for AVX-512,
plus ``-mavx512bf16``, when a lower tier is asked for), cached under the cache directory by a
hash of the source, the compiler, its flags and the processor, and written atomically, so
processes may build it concurrently. Where no compiler is found, or the build fails (an
unsupported architecture among others), :func:`unavailable_reason` says why and the backends
use PyTorch's operators.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import platform
import subprocess
import threading
from pathlib import Path

import torch

from ...atomic import atomic_path
from .. import capability
from ..dispatch import cache_dir

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels.cpp")
COMMON_FLAGS = ["-O3", "-fopenmp", "-shared", "-fPIC", "-std=c++17", "-fno-math-errno", "-fno-strict-aliasing"]
_DTYPES = {torch.float32: 0, torch.bfloat16: 1}

_lock = threading.Lock()
_libs: dict[tuple, ctypes.CDLL | str] = {}  # (tier, compiler) -> the library, or why there is none


def arch_flags(caps: capability.Capabilities) -> list[str]:
    """The code-generation flags for the tier tessera runs at on this host."""
    if caps.machine not in ("x86_64", "AMD64", "amd64"):
        return ["-mcpu=native"] if caps.machine in ("aarch64", "arm64") and not caps.simulated else []
    own = capability._processor_tier(caps.machine, caps.flags)
    if caps.tier == own and not caps.simulated:
        return ["-march=native"]
    return {
        "portable": ["-march=x86-64-v2"],
        "avx2": ["-march=x86-64-v3"],
        "avx512": ["-march=x86-64-v4"],
        "avx512_bf16": ["-march=x86-64-v4", "-mavx512bf16"],
    }[caps.tier]


def _build(caps: capability.Capabilities) -> Path:
    compiler = caps.compiler
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set CXX to one)")
    flags = [*COMMON_FLAGS, *arch_flags(caps)]
    version = subprocess.run([compiler, "--version"], check=False, capture_output=True, text=True, timeout=60).stdout
    key = hashlib.sha256(b"\0".join([
        SOURCE.read_bytes(), compiler.encode(), version.encode(), " ".join(flags).encode(),
        " ".join(sorted(caps.flags)).encode(), platform.machine().encode(),
    ])).hexdigest()[:16]
    target = cache_dir() / f"kernels-{caps.tier}-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:  # whole or not at all, also with concurrent builds
        result = subprocess.run([compiler, *flags, str(SOURCE), "-o", str(tmp)], check=False, capture_output=True,
                                text=True, timeout=300)
        if result.returncode:
            raise RuntimeError(f"{compiler} failed: {' '.join(result.stderr.split())[-600:]}")
    return target


def _load(caps: capability.Capabilities) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(_build(caps)))  # the name hashes the source: never a stale build
    i, ll, p, f = ctypes.c_int, ctypes.c_longlong, ctypes.c_void_p, ctypes.c_float
    signatures = {
        "tessera_lanes": [],
        "tessera_window_attention": [i, p, ll, p, i, p, ll, p, ll, ll, i, i, i, f, p, i, i],
        "tessera_layer_norm": [p, ll, i, p, p, f, i, p, i],
        "tessera_add_bf16": [p, p, p, ll, i],
    }
    for name, argtypes in signatures.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = ctypes.c_int, argtypes
    return lib


def library() -> ctypes.CDLL | None:
    """The kernels for this host's tier, built on the first call; ``None`` if they cannot be."""
    caps = capability.host()
    key = (caps.tier, caps.compiler, caps.machine)
    lib = _libs.get(key)
    if lib is None:
        with _lock:
            lib = _libs.get(key)
            if lib is None:
                try:
                    lib = _load(caps)
                except Exception as exc:  # noqa: BLE001 -- any failure means: not available here
                    lib = " ".join(str(exc).split()) or type(exc).__name__
                    logger.info("native kernels unavailable (%s); using PyTorch's operators", lib)
                _libs[key] = lib
    return lib if isinstance(lib, ctypes.CDLL) else None


def unavailable_reason() -> str | None:
    """Why :func:`library` gives ``None`` here (``None`` when the kernels are available)."""
    library()
    caps = capability.host()
    lib = _libs.get((caps.tier, caps.compiler, caps.machine))
    return lib if isinstance(lib, str) else None


def takes(x: torch.Tensor) -> str | None:
    """Why the kernels cannot take ``x``, or ``None``: a CPU fp32 or bf16 tensor, kernels built."""
    if x.device.type != "cpu":
        return f"runs on the CPU, not {x.device.type}"
    if x.dtype not in _DTYPES:
        return f"takes fp32 or bf16, not {x.dtype}"
    if torch.is_grad_enabled() and x.requires_grad:
        return "inference only (no gradient)"
    return unavailable_reason()


def lanes() -> int:
    lib = library()
    return lib.tessera_lanes() if lib is not None else 16


def pad_bias(bias: torch.Tensor) -> torch.Tensor:
    """``(W, h, N, N)`` additive bias -> the kernel's ``(W, h, N, Np)`` fp32 layout: rows
    padded with ``-inf`` to a whole number of vectors."""
    n, step = bias.shape[-1], lanes()
    padded = bias.new_full((*bias.shape[:-1], -(-n // step) * step), float("-inf"), dtype=torch.float32)
    padded[..., :n] = bias
    return padded


_STATUS = {1: "arguments out of range", 2: "unknown storage type", 3: "out of memory for its scratch buffers"}


def _check(status: int, name: str) -> None:
    if status:
        raise RuntimeError(f"native {name} failed: {_STATUS.get(status, f'status {status}')}")


def window_attention(qkv: torch.Tensor, bias: torch.Tensor | None, heads: int, tokens: int,
                     scale: float | torch.Tensor, cosine: bool = False,
                     order: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(q k^T * scale + bias) v`` in every window, for inference.

    Args:
        qkv: ``(B, L, 3C)`` contiguous, tokens in window order (``L = nW * N``), fp32 or bf16;
            channels ``[q | k | v]``, each split into ``heads`` heads of ``C / heads``. With
            ``order``, the tokens in any order instead.
        bias: from :func:`pad_bias`, ``(W, h, N, Np)`` fp32; window ``w`` of the flattened
            ``B * nW`` uses ``bias[w % W]``. ``None`` for no bias.
        heads, tokens: h and N.
        scale: one number, or ``(h,)`` fp32 (one per head).
        cosine: normalise the q and k rows to unit length first (cosine attention).
        order: ``(L,)`` int32, or ``None`` (window order): where each image's tokens in window
            order are, ``order[w * N + j]`` the position in ``qkv`` of window ``w``'s token
            ``j``. The output is written in ``qkv``'s order; no gather is needed before or after.

    Returns ``(B, L, C)`` in ``qkv``'s dtype, heads side by side in the channels.
    """
    lib = library()
    b, length, c3 = qkv.shape
    if lib is None or not qkv.is_contiguous() or length % tokens or c3 % (3 * heads):
        raise ValueError(f"qkv of shape {tuple(qkv.shape)} does not hold {heads} heads of {tokens}-token windows")
    c = c3 // 3
    out = qkv.new_empty(b, length, c)
    windows = b * length // tokens
    if bias is not None:
        step = lanes()
        assert bias.dtype == torch.float32 and bias.is_contiguous() and bias.shape[1:3] == (heads, tokens)
        assert bias.shape[3] == -(-tokens // step) * step
    if order is not None:
        assert order.dtype == torch.int32 and order.is_contiguous() and order.numel() == length
    scales = None
    if isinstance(scale, torch.Tensor):
        scales = scale.detach().to(torch.float32).contiguous()
        assert scales.numel() == heads
    status = lib.tessera_window_attention(
        _DTYPES[qkv.dtype], qkv.data_ptr(), c3, None if bias is None else bias.data_ptr(),
        0 if bias is None else bias.shape[0], out.data_ptr(), c, None if order is None else order.data_ptr(),
        length, windows, heads, tokens, c // heads,
        float(scale) if scales is None else 1.0, None if scales is None else scales.data_ptr(), int(cosine),
        torch.get_num_threads(),
    )
    _check(status, "window attention")
    return out


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
               dtype: torch.dtype) -> torch.Tensor:
    """``layer_norm(x).to(dtype)`` in one pass, for ``x`` fp32 and contiguous, over its last axis."""
    lib = library()
    c = x.shape[-1]
    weight = weight.detach().float().contiguous() if weight is not None else torch.ones(c)
    bias = bias.detach().float().contiguous() if bias is not None else torch.zeros(c)
    out = torch.empty(x.shape, dtype=dtype)
    _check(lib.tessera_layer_norm(x.data_ptr(), x.numel() // c, c, weight.data_ptr(), bias.data_ptr(), eps,
                                  _DTYPES[dtype], out.data_ptr(), torch.get_num_threads()), "layer norm")
    return out


def add_bf16(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a + b`` for ``a`` fp32 and ``b`` bf16 of the same shape, both contiguous: fp32."""
    lib = library()
    out = torch.empty_like(a)
    _check(lib.tessera_add_bf16(a.data_ptr(), b.data_ptr(), out.data_ptr(), a.numel(), torch.get_num_threads()), "add")
    return out
