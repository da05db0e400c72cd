"""Native CPU kernels, compiled on first use with this machine's C++ compiler.

``csrc/kernels.cpp`` holds them, all for inference:

* windowed attention, which does every (window, head) pair of a Swin block in one call, with
  the bias, the shift mask and the softmax fused and fp32 arithmetic throughout (PyTorch's
  fused attention sets up each 49-token window as a separate problem and spends most of its
  time doing so; see BENCHMARKS.md);
* for the fp32 residual stream under autocast: a LayerNorm from the fp32 stream straight to
  the half-precision input of the next linear layer, and the add of a half-precision layer
  output to the stream.

The source is plain C++ without PyTorch headers, so it builds in about a second with
``-O3 -march=native``. The library is cached under ``$TESSERA_CACHE_DIR`` (default
``~/.cache/tessera``) by a hash of the source, the compiler, its flags and this processor's
features, and written atomically, so processes may build it concurrently. Where no compiler
is found, the build fails, or ``TESSERA_NATIVE=0`` is set, :func:`available` is ``False``
and callers use ``torch.nn.functional.scaled_dot_product_attention`` as before.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import threading
from pathlib import Path

import torch

from ..atomic import atomic_path

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "kernels.cpp"
FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17", "-fno-math-errno", "-fno-strict-aliasing"]
_DTYPES = {torch.float32: 0, torch.bfloat16: 1}
LANES = 16  # the kernel's vector width in floats; score rows are padded to a multiple of it

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_error: str | None = None  # why the kernel is unavailable, once a load was tried
_tried = False
_enabled = True


def set_native(enable: bool) -> None:
    """Switch the native kernels on or off in this process (for comparisons)."""
    global _enabled
    _enabled = enable


def _cache_dir() -> Path:
    root = os.environ.get("TESSERA_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tessera"


def _cpu_features() -> str:
    """The processor's feature flags: a library built with ``-march=native`` on one processor
    may not run on another that shares the cache directory."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


def _build() -> Path:
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set CXX to one)")
    version = subprocess.run([compiler, "--version"], check=False, capture_output=True, text=True, timeout=60).stdout
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([
        source, compiler.encode(), version.encode(), " ".join(FLAGS).encode(), _cpu_features().encode(),
        platform.machine().encode(),
    ])).hexdigest()[:16]
    target = _cache_dir() / f"kernels-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:  # whole or not at all, also with concurrent builds
        result = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(tmp)], check=False, capture_output=True,
                                text=True, timeout=300)
        if result.returncode:
            raise RuntimeError(f"{compiler} failed: {result.stderr.strip()[-2000:]}")
    return target


def _load() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(_build()))  # the name hashes the source: never a stale build
    i, ll, p, f = ctypes.c_int, ctypes.c_longlong, ctypes.c_void_p, ctypes.c_float
    signatures = {
        "tessera_window_attention": [i, p, ll, p, i, p, ll, ll, i, i, i, f, i],
        "tessera_layer_norm": [p, ll, i, p, p, f, i, p, i],
        "tessera_add_bf16": [p, p, p, ll, i],
    }
    for name, argtypes in signatures.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = ctypes.c_int, argtypes
    return lib


def available() -> bool:
    """Whether the native kernels can be used (building them on the first call)."""
    global _lib, _error, _tried
    if _tried:
        return _lib is not None
    with _lock:
        if not _tried:
            if os.environ.get("TESSERA_NATIVE", "1") == "0":
                _error = "switched off by TESSERA_NATIVE=0"
            else:
                try:
                    _lib = _load()
                except Exception as exc:  # noqa: BLE001 -- any failure means: use the fallback
                    _error = str(exc) or type(exc).__name__
                    logger.info("native kernels unavailable (%s); using PyTorch's operators", _error)
            _tried = True
    return _lib is not None


def unavailable_reason() -> str | None:
    """Why :func:`available` is ``False`` (``None`` when it is ``True`` or was never asked)."""
    return _error


def describe() -> str:
    """One line for reports: whether the kernels are in use here, and if not, why."""
    if not _enabled:
        return "off (switched off)"
    return "on" if available() else f"off ({_error})"


def _dispatch_mode_active() -> bool:
    """A Python dispatch mode (FLOP counting, fake tensors, ...) must see every operator; a
    call into the library would be invisible to it."""
    try:
        from torch.utils._python_dispatch import _get_current_dispatch_mode
    except ImportError:  # pragma: no cover - older or newer torch without it
        return False
    return _get_current_dispatch_mode() is not None


def supports(x: torch.Tensor) -> bool:
    """Whether the kernels take ``x`` (a CPU fp32 or bf16 tensor) here: switched on and
    built, and nothing that must see every operator -- compiling, tracing, a dispatch mode --
    is under way."""
    return (_enabled and x.device.type == "cpu" and x.dtype in _DTYPES and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing() and not _dispatch_mode_active() and available())


def pad_bias(bias: torch.Tensor) -> torch.Tensor:
    """``(W, h, N, N)`` additive bias -> the kernel's ``(W, h, N, Np)`` fp32 layout: rows
    padded with ``-inf`` to a whole number of vectors."""
    n = bias.shape[-1]
    padded = bias.new_full((*bias.shape[:-1], -(-n // LANES) * LANES), float("-inf"), dtype=torch.float32)
    padded[..., :n] = bias
    return padded


def window_attention(qkv: torch.Tensor, bias: torch.Tensor | None, heads: int, tokens: int,
                     scale: float) -> torch.Tensor:
    """``softmax(q k^T * scale + bias) v`` in every window, for inference.

    Args:
        qkv: ``(B, L, 3C)`` contiguous, tokens in window order (``L = nW * N``), fp32 or bf16;
            channels ``[q | k | v]``, each split into ``heads`` heads of ``C / heads``.
        bias: from :func:`pad_bias`, ``(W, h, N, Np)`` fp32; window ``w`` of the flattened
            ``B * nW`` uses ``bias[w % W]``. ``None`` for no bias.
        heads, tokens: h and N.

    Returns ``(B, L, C)`` in ``qkv``'s dtype, heads side by side in the channels.
    """
    b, length, c3 = qkv.shape
    if not qkv.is_contiguous() or length % tokens or c3 % (3 * heads):
        raise ValueError(f"qkv of shape {tuple(qkv.shape)} does not hold {heads} heads of {tokens}-token windows")
    c = c3 // 3
    out = qkv.new_empty(b, length, c)
    windows = b * length // tokens
    if bias is not None:
        assert bias.dtype == torch.float32 and bias.is_contiguous() and bias.shape[1:3] == (heads, tokens)
    status = _lib.tessera_window_attention(
        _DTYPES[qkv.dtype], qkv.data_ptr(), c3, None if bias is None else bias.data_ptr(),
        0 if bias is None else bias.shape[0], out.data_ptr(), c, windows, heads, tokens, c // heads, scale,
        torch.get_num_threads(),
    )
    _check(status, "window attention")
    return out


def _check(status: int, name: str) -> None:
    if status:
        raise RuntimeError(f"native {name} failed with status {status}")


def layer_norm(x: torch.Tensor, norm: torch.nn.LayerNorm, dtype: torch.dtype) -> torch.Tensor:
    """``norm(x).to(dtype)`` in one pass, for ``x`` fp32 and contiguous, over its last axis."""
    c = x.shape[-1]
    weight = norm.weight if norm.weight is not None else torch.ones(c)
    bias = norm.bias if norm.bias is not None else torch.zeros(c)
    out = torch.empty(x.shape, dtype=dtype)
    _check(_lib.tessera_layer_norm(
        x.data_ptr(), x.numel() // c, c, weight.data_ptr(), bias.data_ptr(), norm.eps, _DTYPES[dtype], out.data_ptr(),
        torch.get_num_threads(),
    ), "layer norm")
    return out


def add_bf16(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a + b`` for ``a`` fp32 and ``b`` bf16 of the same shape, both contiguous: fp32."""
    out = torch.empty_like(a)
    _check(_lib.tessera_add_bf16(a.data_ptr(), b.data_ptr(), out.data_ptr(), a.numel(), torch.get_num_threads()), "add")
    return out
