"""One bounded cache for everything the backends keep between calls: window plans, bias and
mask buffers, low-precision copies of weights.

Entries are kept in least-recently-used order and counted by the bytes of their tensors;
past the limit (``TESSERA_CACHE_MB``, default 512 MiB) the oldest go. An entry made from
parameters carries their *stamp* (identity, version counter, storage address): when a
parameter changes (an optimiser step, ``load_state_dict``), the stamp no longer matches and
the entry is rebuilt on its next use, so a cache can never serve stale numbers. (A fused
optimizer step writes the parameters without counting a version; a hook on every optimizer
step counts it for them, see :func:`_count_fused_step`.)

Tensors cached here are made outside ``torch.inference_mode`` (inference tensors could not
be used by autograd later) and without gradient.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import torch
from torch.autograd.graph import increment_version
from torch.optim.optimizer import register_optimizer_step_post_hook

DEFAULT_LIMIT_MB = 512


def stamp(tensors: Iterable[torch.Tensor | None]) -> tuple:
    """What identifies the current value of some parameters: a cache entry built from them is
    valid while this is unchanged and the same tensors are alive (an entry also holds weak
    references to them: a new tensor may reuse a dead one's address and version)."""
    return tuple(None if t is None else (id(t), t._version, t.data_ptr(), t.dtype) for t in tensors)


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    nbytes = getattr(value, "nbytes", None)
    return int(nbytes) if isinstance(nbytes, int) else 0


def outside_inference_mode():
    """A context in which tensors are made as normal tensors even when the caller runs under
    ``torch.inference_mode``."""
    if not torch.compiler.is_compiling() and torch.is_inference_mode_enabled():
        return torch.inference_mode(False)
    return contextlib.nullcontext()


class BoundedCache:
    """A least-recently-used cache bounded by the bytes of its tensors (see the module
    docstring). Thread-safe; never used while compiling (a traced value may be fake)."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        # key -> (stamp, weak references to the tensors it depends on, value, bytes)
        self._entries: OrderedDict[Hashable, tuple[tuple, tuple, Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._dead: list[Hashable] = []  # keys whose tensors were freed, dropped on the next call
        self.hits = self.misses = self.evictions = 0

    def get(self, key: Hashable, build: Callable[[], Any], depends_on: Iterable[torch.Tensor | None] = ()) -> Any:
        """The value cached under ``key``, or ``build()`` (cached) when there is none or the
        tensors it ``depends_on`` changed since."""
        if torch.compiler.is_compiling():
            return build()
        tensors = [t for t in depends_on]
        current = stamp(tensors)
        with self._lock:
            self._drop_dead()
            entry = self._entries.get(key)
            if entry is not None and entry[0] == current and all(r() is t for r, t in zip(entry[1], tensors) if r):
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[2]
        with outside_inference_mode(), torch.no_grad():
            value = build()
        size = _nbytes(value)
        forget = self._dead.append
        refs = tuple(None if t is None else weakref.ref(t, lambda _, k=key: forget(k)) for t in tensors)
        with self._lock:
            self.misses += 1
            self._pop(key)
            if size <= self.limit_bytes:
                self._entries[key] = (current, refs, value, size)
                self._bytes += size
                while self._bytes > self.limit_bytes:
                    self._pop(next(iter(self._entries)))
                    self.evictions += 1
        return value

    def peek(self, key: Hashable) -> Any:
        """The value under ``key`` without building or checking it, or ``None``."""
        with self._lock:
            entry = self._entries.get(key)
            return None if entry is None else entry[2]

    def _pop(self, key: Hashable) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old[3]

    def _drop_dead(self) -> None:
        while self._dead:
            key = self._dead.pop()
            entry = self._entries.get(key)
            if entry is not None and any(r is not None and r() is None for r in entry[1]):
                self._pop(key)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self._entries), "bytes": self._bytes, "limit_bytes": self.limit_bytes,
                    "hits": self.hits, "misses": self.misses, "evictions": self.evictions}


def _limit_from_env() -> int:
    raw = os.environ.get("TESSERA_CACHE_MB", "")
    try:
        return max(0, int(float(raw) * 2**20)) if raw else DEFAULT_LIMIT_MB * 2**20
    except ValueError:
        return DEFAULT_LIMIT_MB * 2**20


#: the process's cache
CACHE = BoundedCache(_limit_from_env())


def cached_cast(param: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``param`` in ``dtype``, kept while the parameter is unchanged (inference: casting every
    weight on every call would cost a pass over all of them)."""
    if param.dtype == dtype:
        return param
    if torch.is_grad_enabled() and param.requires_grad:
        return param.to(dtype)
    return CACHE.get(("cast", id(param), dtype), lambda: param.detach().to(dtype), (param,))


def _count_fused_step(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """After a step of a fused optimizer (``fused=True``; tessera's AdamW is one), count a
    version of its parameters: the fused kernels write them in place without doing so, and
    an entry built from a parameter (a packed or bf16 copy of a weight) would otherwise
    outlive the step and serve the old values."""
    params = [p for group in optimizer.param_groups if group.get("fused") for p in group["params"]]
    if params:
        increment_version(params)


register_optimizer_step_post_hook(_count_fused_step)
