"""What this host can do: its instruction set, native bf16 arithmetic, a C++ compiler, oneDNN.

Read once per process. Two kinds of limit are honoured, so that one machine can stand in for
another:

* the environment variables that PyTorch's own kernels obey, read when the process starts:
  ``ONEDNN_MAX_CPU_ISA`` (oneDNN: ``AVX2``, ``AVX512_CORE``, ``AVX512_CORE_BF16``, ...) and
  ``ATEN_CPU_CAPABILITY`` (ATen: ``default``, ``avx2``, ``avx512``). With
  ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` a processor with AVX-512 behaves as
  one without it, also in tessera's native kernels, which are then built for AVX2;
* :func:`simulate`, a context for tests that changes what tessera believes in this process
  (the instruction-set tier, native bf16, the compiler, oneDNN) without touching PyTorch.

Native bf16 is *measured*, not assumed: where the instruction set has bf16 dot products, a
bf16 matrix product is timed against an fp32 one once, and counts as native only when faster
(a processor without them emulates bf16 at a small fraction of its fp32 speed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

#: instruction-set tiers of x86-64, lowest first ("portable" on other architectures)
TIERS = ("portable", "avx2", "avx512", "avx512_bf16")
_ONEDNN_TIERS = {  # ONEDNN_MAX_CPU_ISA values -> the highest tier they allow
    "SSE41": "portable", "AVX": "portable", "AVX2": "avx2", "AVX2_VNNI": "avx2", "AVX2_VNNI_2": "avx2",
    "AVX512_CORE": "avx512", "AVX512_CORE_VNNI": "avx512", "AVX512_CORE_BF16": "avx512_bf16",
    "AVX512_CORE_FP16": "avx512_bf16", "AVX512_CORE_AMX": "avx512_bf16", "AVX512_CORE_AMX_FP16": "avx512_bf16",
    "AVX10_1_512": "avx512_bf16", "AVX10_1_512_AMX": "avx512_bf16", "AVX10_1_512_AMX_FP16": "avx512_bf16",
    "ALL": "avx512_bf16", "DEFAULT": "avx512_bf16",
}
_ATEN_TIERS = {"default": "portable", "avx2": "avx2", "avx512": "avx512_bf16", "zvector": "portable"}


@dataclass(frozen=True)
class Capabilities:
    """What tessera may use on this host.

    Attributes:
        machine: ``platform.machine()`` (``x86_64``, ``aarch64``, ...).
        cpu: the processor's model name.
        flags: the processor's feature flags (``/proc/cpuinfo``), as reported.
        tier: the instruction-set tier tessera builds and chooses for (see :data:`TIERS`),
            after the limits above.
        limited_by: what lowered ``tier`` below the processor's own, or ``""``.
        compiler: the C++ compiler for the native kernels, or ``None``.
        onednn: whether PyTorch's oneDNN fused linear operator is there.
    """

    machine: str
    cpu: str
    flags: frozenset[str]
    tier: str
    limited_by: str
    compiler: str | None
    onednn: bool
    simulated: bool = False

    @property
    def bf16_instructions(self) -> bool:
        """Whether the instruction set has bf16 dot products (x86 AVX512-BF16, Arm BF16)."""
        if self.machine in ("aarch64", "arm64"):
            return "bf16" in self.flags and not self.limited_by
        return self.tier == "avx512_bf16"

    def describe(self) -> str:
        limit = f", limited by {self.limited_by}" if self.limited_by else ""
        return f"{self.cpu} ({self.machine}, {self.tier}{limit})"


def _cpuinfo() -> tuple[str, frozenset[str]]:
    model, flags = platform.processor() or platform.machine(), frozenset()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model Name", "cpu model") and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = frozenset(value.split())
    except OSError:
        pass
    return model or "unknown", flags


def _processor_tier(machine: str, flags: frozenset[str]) -> str:
    if machine not in ("x86_64", "AMD64", "amd64"):
        return "portable"
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "avx512_bf16" if "avx512_bf16" in flags else "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    return "portable"


def _limits(tier: str) -> tuple[str, str]:
    """The tier after ``ONEDNN_MAX_CPU_ISA`` and ``ATEN_CPU_CAPABILITY``, and what limited it."""
    why = []
    for var, table in (("ONEDNN_MAX_CPU_ISA", _ONEDNN_TIERS), ("ATEN_CPU_CAPABILITY", _ATEN_TIERS)):
        value = os.environ.get(var, "").strip()
        cap = table.get(value.upper() if table is _ONEDNN_TIERS else value.lower())
        if cap is not None and TIERS.index(cap) < TIERS.index(tier):
            tier = cap
            why.append(f"{var}={value}")
    return tier, ", ".join(why)


def _find_compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


_detected: list[Capabilities] = []


def _detect() -> Capabilities:
    if _detected:
        return _detected[0]
    machine = platform.machine()
    cpu, flags = _cpuinfo()
    tier, limited_by = _limits(_processor_tier(machine, flags))
    onednn = getattr(torch.ops.mkldnn, "_linear_pointwise", None) is not None and torch.backends.mkldnn.is_available()
    _detected.append(Capabilities(machine, cpu, flags, tier, limited_by, _find_compiler(), onednn))
    return _detected[0]


_simulated: list[Capabilities] = []


def host() -> Capabilities:
    """This host's capabilities (or the innermost :func:`simulate`'s)."""
    return _simulated[-1] if _simulated else _detect()


@contextlib.contextmanager
def simulate(*, tier: str | None = None, compiler: str | None | bool = True, onednn: bool | None = None,
             native_bf16: bool | None = None) -> Iterator[Capabilities]:
    """Make tessera believe, inside the block, that the host has less than it has: a lower
    instruction-set ``tier`` (native kernels are then built for it), no ``compiler``
    (``compiler=None``), no ``onednn``, or no ``native_bf16``. Choices made inside are
    forgotten when the block ends. For tests; PyTorch's own kernels are not affected (use
    ``ONEDNN_MAX_CPU_ISA`` and ``ATEN_CPU_CAPABILITY`` in a new process for that)."""
    from . import dispatch  # the choices made under other capabilities must not leak out

    base = host()
    if tier is not None and tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}")
    caps = dataclasses.replace(
        base,
        tier=base.tier if tier is None else tier,
        limited_by="simulated" if tier is not None else base.limited_by,
        compiler=base.compiler if compiler is True else (compiler or None),
        onednn=base.onednn if onednn is None else (onednn and base.onednn),
        simulated=True,
    )
    _simulated.append(caps)
    if native_bf16 is not None:
        _bf16_override.append(native_bf16)
    dispatch.forget()
    try:
        yield caps
    finally:
        _simulated.pop()
        if native_bf16 is not None:
            _bf16_override.pop()
        dispatch.forget()


_bf16_override: list[bool] = []
_bf16_measured: dict[str, tuple[bool, str]] = {}


def native_bf16() -> tuple[bool, str]:
    """Whether bf16 matrix products run natively here, and why (measured once per tier)."""
    if _bf16_override:
        return _bf16_override[-1], "simulated"
    caps = host()
    if not caps.bf16_instructions:
        return False, f"no bf16 instructions at tier {caps.tier}"
    hit = _bf16_measured.get(caps.tier)
    if hit is None:
        hit = _bf16_measured[caps.tier] = _measure_bf16()
    return hit


def _measure_bf16(n: int = 256) -> tuple[bool, str]:
    """Time an n^3 bf16 product against an fp32 one (best of five each)."""
    a = torch.randn(n, n)
    times = {}
    with torch.inference_mode():
        for dtype in (torch.float32, torch.bfloat16):
            x = a.to(dtype)
            x @ x
            best = float("inf")
            for _ in range(5):
                t = time.perf_counter()
                x @ x
                best = min(best, time.perf_counter() - t)
            times[dtype] = best
    ratio = times[torch.float32] / times[torch.bfloat16]
    fast = ratio > 1.0
    return fast, f"bf16 product {ratio:.2f}x the fp32 speed"
