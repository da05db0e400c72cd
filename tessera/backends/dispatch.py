"""Choosing, per operation and kind of call, the fastest implementation that works here.

An :class:`Op` has a *reference* implementation (plain PyTorch, in the order of the official
code) and candidates that compute the same function faster on some machines. The first time
an op meets a kind of call -- its *key*: device, dtypes, autocast, whether gradients flow,
threads, and a shape class the op defines -- every candidate that says it can take the call
is tried on that very call:

* one that raises is unavailable here, and its reason is kept;
* in inference, one whose result differs from the reference's by more than the arithmetic
  allows is unavailable too (a safety net: the tests hold every candidate to the reference);
* the rest are timed briefly, interleaved, and the fastest is kept.

The choice is remembered for the process and, on disk (beside the native kernels, in
``choices-<host>.json``), for every later process on the same processor, torch version and
tessera source; so a run that resumes makes the same choices as the run it continues. A
choice measured while other work competed for the processor says so (``tessera info``);
:func:`forget` with ``disk=True`` (``tessera info --remeasure``) measures everything anew.
Probing forks the random number generator, so it never changes what a training run draws.

What runs is set by :func:`use`: ``"auto"`` (measure, the default), ``"reference"`` (every op
its reference), a candidate's name (that candidate wherever it can run, the reference
elsewhere), optionally followed by exclusions: ``"auto,-native"``; ``-malloc`` leaves the C
allocator as it is (:mod:`tessera.backends.memory`). The environment variable
``TESSERA_BACKEND`` sets the starting value, read once.

Where an op cannot be timed or must stay portable, the rule is fixed: under ``torch.export``,
ONNX export, ``torch.jit`` tracing and Python dispatch modes (FLOP counting, fake tensors)
every op takes its reference; under ``torch.compile`` the first candidate that declares
itself ``traceable`` and can take the call (candidates are listed fastest-expected first).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from . import capability, memory

try:
    from torch.utils._python_dispatch import _get_current_dispatch_mode
except ImportError:  # pragma: no cover - torch without it
    _get_current_dispatch_mode = None

logger = logging.getLogger(__name__)

REFERENCE = "reference"


# ---------------------------------------------------------------------------------------
# The setting: what ``use`` chose
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """``mode`` is ``"auto"``, ``"reference"`` or a candidate's name; ``exclude`` names
    candidates never to choose."""

    mode: str = "auto"
    exclude: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, spec: str | Setting) -> Setting:
        if isinstance(spec, Setting):
            return spec
        parts = [p.strip() for p in str(spec).split(",") if p.strip()]
        mode, exclude = "auto", set()
        for i, part in enumerate(parts):
            if part.startswith("-"):
                exclude.add(part[1:])
            elif i == 0:
                mode = part
            else:
                raise ConfigError(f"backend setting {spec!r}: only the first entry may name a mode; "
                                  f"exclusions start with '-' (e.g. 'auto,-native')")
        known = known_candidates()
        for name in ({mode} - {"auto"}) | exclude:
            if name not in known:
                raise ConfigError(f"backend setting {spec!r}: unknown backend {name!r}; "
                                  f"expected auto, {', '.join(sorted(known))}")
        if REFERENCE in exclude:
            raise ConfigError(f"backend setting {spec!r}: the reference cannot be excluded")
        if mode == memory.NAME:
            raise ConfigError(f"backend setting {spec!r}: {memory.NAME} is not a mode; it can only be excluded "
                              f"('auto,-{memory.NAME}')")
        return cls(mode, frozenset(exclude))

    def __str__(self) -> str:
        return ",".join([self.mode, *(f"-{n}" for n in sorted(self.exclude))])


_setting: Setting | None = None  # parsed from TESSERA_BACKEND on first use


def current() -> Setting:
    """The setting in force."""
    global _setting
    if _setting is None:
        _setting = Setting.parse(os.environ.get("TESSERA_BACKEND", "auto"))
    return _setting


class use:
    """Set which implementations run: ``"auto"``, ``"reference"``, a backend's name, with
    optional exclusions (``"auto,-native"``).

    Called on its own it changes the setting from then on; as a context manager it restores
    the previous setting when the block ends::

        tessera.backends.use("reference")          # from now on
        with tessera.backends.use("auto,-native"):  # only here
            model(x)
    """

    def __init__(self, spec: str | Setting) -> None:
        global _setting
        setting = Setting.parse(spec)
        self._previous = current()
        _setting = self.setting = setting

    def __enter__(self) -> Setting:
        return self.setting

    def __exit__(self, *exc: object) -> None:
        global _setting
        _setting = self._previous


# ---------------------------------------------------------------------------------------
# Ops and candidates
# ---------------------------------------------------------------------------------------


@dataclass
class Candidate:
    """One implementation of an op. ``check(*args, **kwargs)`` returns why it cannot take a
    call (``None`` when it can); ``traceable`` means it may run under ``torch.compile``."""

    name: str
    fn: Callable[..., Any]
    check: Callable[..., str | None] | None = None
    traceable: bool = False

    def reason(self, args: tuple, kwargs: dict) -> str | None:
        return None if self.check is None else self.check(*args, **kwargs)


@dataclass
class Choice:
    """What an op runs for one key, and why: per candidate its time in ms or the reason it
    was not used."""

    name: str
    fn: Callable[..., Any]
    how: str  # "measured", "from disk", "forced", "the only one", "traced", "fallback"
    results: dict[str, float | str] = field(default_factory=dict)


_OPS: dict[str, Op] = {}


def known_candidates() -> set[str]:
    return {REFERENCE, memory.NAME} | {name for op in _OPS.values() for name in op.candidates}


class Op:
    """An operation with a reference implementation and faster candidates (see the module
    docstring). ``key(*args, **kwargs)`` returns the op's shape class: calls with the same key
    share a choice, so it should hold what the speed depends on, and bucket the rest."""

    def __init__(self, name: str, reference: Callable[..., Any], key: Callable[..., tuple]) -> None:
        if name in _OPS:
            raise ValueError(f"op {name!r} is defined twice")
        self.name = name
        self.reference = reference
        self.key = key
        self.candidates: dict[str, Candidate] = {}
        self.choices: dict[tuple, Choice] = {}
        _OPS[name] = self

    def candidate(self, name: str, check: Callable[..., str | None] | None = None, traceable: bool = False):
        """Register the decorated function as a candidate (in the order of registration:
        fastest-expected first)."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.candidates[name] = Candidate(name, fn, check, traceable)
            return fn

        return register

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        setting = current()
        if setting.mode == REFERENCE:
            return self.reference(*args, **kwargs)
        traced = _traced()
        if traced not in (None, "compile") or _on_meta(args, kwargs):
            return self.reference(*args, **kwargs)
        if traced == "compile":  # decided while tracing, from the call's properties alone
            return self._choose(setting, None, traced, args, kwargs).fn(*args, **kwargs)
        key = (_call_key(args, kwargs), *self.key(*args, **kwargs))
        choice = self.choices.get((setting, key))
        if choice is None:
            choice = self.choices[(setting, key)] = self._choose(setting, key, traced, args, kwargs)
        if choice.name == REFERENCE:
            return self.reference(*args, **kwargs)
        try:
            return choice.fn(*args, **kwargs)
        except RuntimeError as exc:  # a call of the same key it cannot take after all
            if traced is not None:
                raise
            logger.warning("%s: %s failed (%s); using the reference from now on", self.name, choice.name,
                           " ".join(str(exc).split())[:200])
            self.choices[(setting, key)] = Choice(REFERENCE, self.reference, "fallback",
                                                  {**choice.results, choice.name: f"failed: {exc}"})
            return self.reference(*args, **kwargs)

    # -- choosing --------------------------------------------------------------------------

    def _choose(self, setting: Setting, key: tuple, traced: str | None, args: tuple, kwargs: dict) -> Choice:
        if traced is None and memory.NAME not in setting.exclude:
            memory.keep_freed_blocks()  # before anything is timed: the times then hold for the runs
        results: dict[str, float | str] = {}
        runnable: list[Candidate] = []
        for cand in self.candidates.values():
            if cand.name in setting.exclude:
                results[cand.name] = "excluded"
                continue
            if traced == "compile" and not cand.traceable:
                reason = "not traceable by torch.compile"
            else:
                reason = cand.reason(args, kwargs)
            if reason is None:
                runnable.append(cand)
            else:
                results[cand.name] = reason
        if setting.mode != "auto":
            forced = next((c for c in runnable if c.name == setting.mode), None)
            if forced is not None:
                return Choice(forced.name, forced.fn, "forced", results)
            return Choice(REFERENCE, self.reference, "forced", results)
        if not runnable:
            return Choice(REFERENCE, self.reference, "the only one", results)
        if traced == "compile":
            return Choice(runnable[0].name, runnable[0].fn, "traced", results)
        remembered = DISK.get(self.name, key, setting)
        if remembered is not None:
            hit = next((c for c in runnable if c.name == remembered["choice"]), None)
            if hit is not None or remembered["choice"] == REFERENCE:
                results.update(remembered.get("results", {}))
                fn = hit.fn if hit is not None else self.reference
                how = "from disk" + (" (measured on a busy machine)" if "busy" in remembered.get("how", "") else "")
                return Choice(remembered["choice"], fn, how, results)
        choice = self._measure(runnable, results, args, kwargs)
        if not _quiet():  # kept all the same: a run that resumes must make the same choices
            choice.how = "measured on a busy machine"
        DISK.put(self.name, key, setting, choice)
        return choice

    def _measure(self, runnable: list[Candidate], results: dict, args: tuple, kwargs: dict) -> Choice:
        grad = _needs_grad(args, kwargs)
        timed = [Candidate(REFERENCE, self.reference), *runnable]
        with torch.random.fork_rng(devices=[]), _quiet_probe():
            expected = None
            working: list[Candidate] = []
            for cand in timed:
                try:
                    out = _run(cand.fn, args, kwargs, grad)
                except Exception as exc:  # noqa: BLE001 -- any failure makes it unavailable here
                    if cand.name == REFERENCE:
                        raise
                    results[cand.name] = f"failed: {' '.join(str(exc).split())[:160]}"
                    continue
                if not grad:
                    if cand.name == REFERENCE:
                        expected = out
                    else:
                        problem = _disagreement(out, expected)
                        if problem:
                            results[cand.name] = problem
                            continue
                working.append(cand)
            times = _time(working, args, kwargs, grad)
        for name, seconds in times.items():
            results[name] = float(f"{seconds * 1e3:.4g}")
        winner = min(working, key=lambda c: times[c.name])
        return Choice(winner.name, winner.fn, "measured", results)


def _time(working: list[Candidate], args: tuple, kwargs: dict, grad: bool, rounds: int = 3,
          max_rounds: int = 9) -> dict[str, float]:
    """The best time of each candidate over interleaved rounds (another process can only add
    time, so the best is the fairest figure); more rounds while the two fastest are within
    15 % of each other."""
    times = {c.name: float("inf") for c in working}
    for r in range(max_rounds):
        best = min(times.values())
        for cand in working:
            if r >= 1 and times[cand.name] > 4 * best:
                continue  # far behind: no need to time it again
            start = time.perf_counter()
            _run(cand.fn, args, kwargs, grad)
            times[cand.name] = min(times[cand.name], time.perf_counter() - start)
        ranked = sorted(times.values())
        if r + 1 >= rounds and (len(ranked) < 2 or ranked[0] < 0.85 * ranked[1]):
            break
    return times


def _run(fn: Callable[..., Any], args: tuple, kwargs: dict, grad: bool) -> Any:
    """One call; with gradients, the backward pass too, without touching any ``.grad``."""
    if not grad:
        return fn(*args, **kwargs)
    out = fn(*args, **kwargs)
    outs = [o for o in (out if isinstance(out, (tuple, list)) else (out,)) if isinstance(o, torch.Tensor)]
    outs = [o for o in outs if o.requires_grad]
    inputs = _grad_leaves(args, kwargs)
    if outs and inputs:
        # the graph is kept: a probe may run inside another op's probe (a stage's candidate calls
        # the linear op), whose own backward pass goes through the same part of the graph
        torch.autograd.grad(outs, inputs, [torch.ones_like(o) for o in outs], allow_unused=True, retain_graph=True)
    return out


def _tensors(args: tuple, kwargs: dict) -> Iterator[torch.Tensor]:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, nn.Module):
            yield from value.parameters()
        elif isinstance(value, (tuple, list)):
            yield from (v for v in value if isinstance(v, torch.Tensor))


def _grad_leaves(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    seen, leaves = set(), []
    for t in _tensors(args, kwargs):
        if t.requires_grad and id(t) not in seen:
            seen.add(id(t))
            leaves.append(t)
    return leaves


def _quiet() -> bool:
    """Whether the machine is quiet enough for a measurement worth keeping: the load (runnable
    threads, this process's included) at most one above the cores."""
    try:
        return os.getloadavg()[0] <= (os.cpu_count() or 1) + 1
    except OSError:  # pragma: no cover - platforms without a load average
        return True


def _needs_grad(args: tuple, kwargs: dict) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in _tensors(args, kwargs))


def _disagreement(out: Any, expected: Any) -> str | None:
    """Why ``out`` cannot stand for ``expected`` (the reference's result), or ``None``: a
    difference beyond what reordering the arithmetic gives in the precision of the call."""
    outs = out if isinstance(out, (tuple, list)) else (out,)
    refs = expected if isinstance(expected, (tuple, list)) else (expected,)
    half = any(torch.is_autocast_enabled(d) for d in ("cpu", "cuda") if d == "cpu" or torch.cuda.is_available())
    for o, r in zip(outs, refs):
        if not isinstance(o, torch.Tensor) or not isinstance(r, torch.Tensor):
            continue
        if o.shape != r.shape:
            return f"gives shape {tuple(o.shape)} where the reference gives {tuple(r.shape)}"
        if not r.numel() or not r.is_floating_point():
            continue
        low = half or max(torch.finfo(o.dtype).eps, torch.finfo(r.dtype).eps) > 1e-6
        tol = 6e-2 if low else 1e-4  # bf16 keeps 8 bits of mantissa, fp32 24
        scale = 1.0 + r.detach().float().abs().max().item()
        diff = (o.detach().float() - r.detach().float()).abs().max().item()
        if not diff <= tol * scale:  # also catches NaN
            return f"differs from the reference by {diff:.2e} (allowed {tol * scale:.1e})"
    return None


@contextlib.contextmanager
def _quiet_probe() -> Iterator[None]:
    """Warnings of a candidate that fails while it is probed stay out of the user's log."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _traced() -> str | None:
    """How the call is being traced, if it is: ``compile``, ``export``, ``trace`` or
    ``dispatch`` (a Python dispatch mode such as FLOP counting or fake tensors)."""
    if torch.compiler.is_exporting():
        return "export"
    if torch.compiler.is_compiling():
        return "compile"
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return "trace"
    if _dispatch_mode_active():
        return "dispatch"
    if torch.onnx.is_in_onnx_export():
        return "export"
    return None


def _dispatch_mode_active() -> bool:
    return _get_current_dispatch_mode is not None and _get_current_dispatch_mode() is not None


def _on_meta(args: tuple, kwargs: dict) -> bool:
    """Shapes only (models built on the ``meta`` device): nothing to choose."""
    first = next(_tensors(args, kwargs), None)
    return first is not None and first.device.type == "meta"


def _call_key(args: tuple, kwargs: dict) -> tuple:
    first = next(_tensors(args, kwargs), None)
    device = first.device.type if first is not None else "cpu"
    dtype = str(first.dtype).removeprefix("torch.") if first is not None else ""
    autocast = ""
    if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
        autocast = str(torch.get_autocast_dtype(device)).removeprefix("torch.")
    grad = "grad" if _needs_grad(args, kwargs) else "nograd"
    return (device, dtype, autocast, grad, torch.get_num_threads())


def bucket(n: int) -> int:
    """``n`` rounded up to a power of two: sizes that are timed alike share a key."""
    return 1 << max(0, int(n) - 1).bit_length()


# ---------------------------------------------------------------------------------------
# Choices kept on disk
# ---------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where tessera keeps what it builds and measures: ``$TESSERA_CACHE_DIR``, or
    ``$XDG_CACHE_HOME/tessera`` (``~/.cache/tessera``)."""
    root = os.environ.get("TESSERA_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tessera"


def _source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*")):
        if path.suffix in (".py", ".cpp"):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


class _DiskChoices:
    """Choices per host, torch version and source, in one JSON file written atomically."""

    def __init__(self) -> None:
        self._data: dict[str, dict] | None = None
        self._path: Path | None = None
        self._lock = threading.Lock()

    def _file(self) -> Path | None:
        caps = capability.host()
        if caps.simulated:
            return None
        if self._path is None:
            ident = "\0".join([caps.cpu, " ".join(sorted(caps.flags)), caps.tier, torch.__version__, _source_hash()])
            self._path = cache_dir() / f"choices-{hashlib.sha256(ident.encode()).hexdigest()[:16]}.json"
        return self._path

    def _load(self) -> dict[str, dict]:
        if self._data is None:
            self._data = {}
            path = self._file()
            if path is not None and path.exists():
                try:
                    self._data = json.loads(path.read_text())
                except (OSError, ValueError):
                    self._data = {}
        return self._data

    @staticmethod
    def _entry(op: str, key: tuple, setting: Setting) -> str:
        return "|".join([op, str(setting), *map(str, key)])

    def get(self, op: str, key: tuple, setting: Setting) -> dict | None:
        if self._file() is None:
            return None
        with self._lock:
            return self._load().get(self._entry(op, key, setting))

    def put(self, op: str, key: tuple, setting: Setting, choice: Choice) -> None:
        path = self._file()
        if path is None:
            return
        from ..atomic import atomic_path

        with self._lock:
            data = self._load()
            data[self._entry(op, key, setting)] = {"choice": choice.name, "results": choice.results, "how": choice.how}
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.exists():  # another process may have added choices meanwhile
                    try:
                        data = {**json.loads(path.read_text()), **data}
                        self._data = data
                    except (OSError, ValueError):
                        pass
                with atomic_path(path) as tmp:
                    tmp.write_text(json.dumps(data, indent=0, sort_keys=True))
            except OSError as exc:  # a read-only cache: choices stay in this process
                logger.debug("cannot keep backend choices in %s: %s", path, exc)

    def forget(self, delete: bool = False) -> None:
        with self._lock:
            if delete and self._file() is not None:
                self._file().unlink(missing_ok=True)
            self._data = None
            self._path = None


DISK = _DiskChoices()


def forget(disk: bool = False) -> None:
    """Forget every choice made in this process (after the capabilities changed); with
    ``disk``, also those kept for this host, so that every op is measured anew."""
    for op in _OPS.values():
        op.choices.clear()
    DISK.forget(delete=disk)


def choices() -> list[dict[str, Any]]:
    """Every choice made so far in this process: op, key, setting, the choice, how it was
    made, and per candidate its time in ms or why it was not used."""
    rows = []
    for op in _OPS.values():
        for (setting, key), choice in op.choices.items():
            rows.append({"op": op.name, "key": key, "setting": str(setting), "choice": choice.name,
                         "how": choice.how, "results": dict(choice.results)})
    return rows


def format_choices(rows: list[dict[str, Any]] | None = None, indent: str = "  ") -> list[str]:
    """The choices as a table: op, kind of call, choice (and how it was made), and each
    candidate's time in ms or the reason it was not used."""
    rows = choices() if rows is None else rows
    table = [("op", "call", "choice", "candidates (ms, or why not)")]
    for c in rows:
        parts = [f"{name} {value:.3g}" if isinstance(value, (int, float)) else f"{name}: {value}"
                 for name, value in c["results"].items()]
        device, dtype, autocast, grad, _ = (str(k) for k in c["key"][0])
        call = [dtype if device == "cpu" else f"{device} {dtype}", f"autocast {autocast}" if autocast else "",
                "grad" if grad == "grad" else "", *(str(k) for k in c["key"][1:])]
        table.append((c["op"], " ".join(p for p in call if p), f"{c['choice']} ({c['how']})", "; ".join(parts)))
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    return [indent + "  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in table]


def ops() -> dict[str, Op]:
    return dict(_OPS)
