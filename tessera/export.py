"""Deployment: a model as an ONNX graph or a ``torch.export`` program, checked by running it.

Both exporters trace the model once, in eval mode and fp32 on the CPU, at one input shape.
The batch axis can be left dynamic; the other axes are fixed at export for every model
(Swin's window clamping, padding, shift masks and window-order gathers all follow from the
grid size at trace time; export again for another size).

After writing the file, the export runs it (ONNX Runtime on the CPU, or the reloaded
``ExportedProgram``) on random inputs and compares with the PyTorch model, at the export
batch and, with a dynamic batch, at another batch size too.

``onnx``, ``onnxscript`` and ``onnxruntime`` are optional: ``pip install
'tessera-vision[export]'``.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError, TesseraError

__all__ = ["ExportResult", "export", "export_onnx", "export_program", "input_shape_for", "load_model"]

FORMATS = ("onnx", "torch-export")
#: the lowest opset that torch's ONNX exporter writes
MIN_OPSET = 18
#: weights above this size go to a side file (a protobuf file cannot exceed 2 GiB)
EXTERNAL_DATA_BYTES = 1536 * 2**20


@dataclass
class ExportResult:
    """What an export wrote and how its check went."""

    path: Path
    format: str
    input_shape: tuple[int, ...]
    dynamic_batch: bool
    opset: int | None = None
    #: the largest absolute difference from the PyTorch model; None when not verified
    max_abs_diff: float | None = None
    #: the largest absolute value of the model's outputs in the check
    max_abs_output: float | None = None
    #: the batch sizes the check ran at
    checked_batches: tuple[int, ...] = ()
    atol: float = 1e-4

    @property
    def verified(self) -> bool:
        return self.max_abs_diff is not None and self.max_abs_diff <= self.atol

    def describe_input(self) -> str:
        b, c, *spatial = self.input_shape
        batch = "batch dynamic" if self.dynamic_batch else f"batch fixed at {b}"
        what = "clip size" if len(spatial) == 3 else "spatial size"
        return (f"input (B, {c}, {', '.join(map(str, spatial))}): {batch}, {what} fixed at "
                f"{'x'.join(map(str, spatial))} (export again for another size)")

    def __str__(self) -> str:
        what = f"ONNX opset {self.opset}" if self.format == "onnx" else "torch.export ExportedProgram"
        lines = [f"wrote {self.path} ({what}, {_megabytes(self.path)})", self.describe_input()]
        if self.max_abs_diff is None:
            lines.append("not verified")
        else:
            runner = "ONNX Runtime (CPU)" if self.format == "onnx" else "the reloaded program"
            batches = ", ".join(map(str, self.checked_batches))
            verdict = "ok" if self.verified else "FAILED"
            lines.append(
                f"verified with {runner} at batch {batches}: largest difference from PyTorch "
                f"{self.max_abs_diff:.2e} (atol {self.atol:.0e}) {verdict}"
            )
        return "\n".join(lines)


def _megabytes(path: Path) -> str:
    size = path.stat().st_size if path.exists() else 0
    side = path.with_name(path.name + ".data")  # ONNX external data
    size += side.stat().st_size if side.exists() else 0
    return f"{size / 1e6:.1f} MB"


# ---------------------------------------------------------------------------------------
# What to export: a model and an input shape
# ---------------------------------------------------------------------------------------


def load_model(source: str | os.PathLike | nn.Module, checkpoint: str | os.PathLike | None = None) -> nn.Module:
    """A model object as it is, or what :func:`tessera.resolve_model` makes of ``source``: a
    registered name (random weights, or ``checkpoint``'s), a ``name.tag`` of published
    weights, a run directory or its weights file, a weights directory or a checkpoint."""
    if isinstance(source, nn.Module):
        if checkpoint is not None:
            from .weights.resolve import load_weights_into

            load_weights_into(source, checkpoint)
        return source
    from .weights.resolve import resolve_model

    return resolve_model(source, checkpoint).model


def input_shape_for(
    model: nn.Module,
    img_size: int | None = None,
    clip: str | Sequence[int] | None = None,
    batch_size: int = 1,
) -> tuple[int, ...]:
    """``(B, C, H, W)`` or ``(B, C, T, H, W)``: the model's default input (``default_cfg``)
    with the side ``img_size`` or the video clip ``clip`` (``(T, H, W)`` or ``"T,H,W"``)."""
    shape = list(getattr(model, "default_cfg", {}).get("input_size", (3, 224, 224)))
    if clip is not None:
        if img_size is not None:
            raise ConfigError("give either an image size or a clip size, not both")
        values = parse_clip(clip)
        if len(shape) != 4:
            raise ConfigError(f"a clip size is for video models; this model takes images {tuple(shape)}")
        shape[1:] = values
    elif img_size is not None:
        if img_size < 1:
            raise ConfigError(f"image size {img_size}: expected a positive integer")
        shape[-2:] = [img_size, img_size]
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size}: expected a positive integer")
    return (batch_size, *shape)


def parse_clip(clip: str | Sequence[int]) -> tuple[int, int, int]:
    """``"T,H,W"`` or ``(T, H, W)`` as three positive integers."""
    parts = clip.split(",") if isinstance(clip, str) else list(clip)
    try:
        values = tuple(int(v) for v in parts)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise ConfigError(f"clip size {clip!r}: expected three positive integers T,H,W, e.g. 32,224,224")
    return values


# ---------------------------------------------------------------------------------------
# Tracing
# ---------------------------------------------------------------------------------------


def _require(*modules: str) -> list[Any]:
    try:
        return [importlib.import_module(m) for m in modules]
    except ImportError as e:
        raise TesseraError(
            f"export needs {', '.join(modules)} ({e.name} is missing): pip install 'tessera-vision[export]'"
        ) from None


def _as_cpu_fp32(model: nn.Module) -> nn.Module:
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.device.type == "cpu" and (t.dtype == torch.float32 or not t.is_floating_point()) for t in tensors):
        return model
    return copy.deepcopy(model).float().cpu()  # the export is made and checked in fp32 on the CPU


def _outputs(out: Any) -> list[torch.Tensor]:
    """The tensors of a model's output (a tensor, or a tuple/list/dict of them), in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    return [t for o in out for t in _outputs(o)]


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients; the training flag is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Without the exporters' notes about their own work (deprecations inside torch, the
    optional torchvision ops that the ONNX registry skips, every step of the graph optimiser)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _warm_up(model: nn.Module, example: torch.Tensor) -> int:
    """Run the model once eagerly; returns how many tensors it outputs.

    Models cache tensors that depend only on sizes (Swin's window plans: gather orders and
    shift masks). Made here from real tensors, they become constants of the graph where the
    model lets a trace use its cache, instead of being computed in the graph on each call."""
    return len(_outputs(model(example)))


def _prepare(
    model: nn.Module, input_shape: Sequence[int], dynamic_batch: bool, path: str | os.PathLike
) -> tuple[nn.Module, torch.Tensor, Path]:
    """The model in fp32 on the CPU, the example input to trace with, the output path."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) < 3 or min(shape) < 1:
        raise ConfigError(f"input shape {shape}: expected (B, C, H, W) or (B, C, T, H, W) with positive sizes")
    if dynamic_batch and shape[0] == 1:
        shape = (2, *shape[1:])  # the tracer specialises a size-1 axis; any other size stays symbolic
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _as_cpu_fp32(model), _random(shape), path


def _random(shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _batch_dim() -> dict[int, Any]:
    return {0: torch.export.Dim("batch", min=1)}


def _check_batches(example: torch.Tensor, dynamic_batch: bool) -> tuple[int, ...]:
    """The export batch, and with a dynamic batch one more size (1, or 3 after a batch of 1)."""
    b = example.shape[0]
    return (b, 1 if b != 1 else 3) if dynamic_batch else (b,)


def _compare(
    model: nn.Module, run, example: torch.Tensor, batches: Sequence[int], what: str
) -> tuple[float, float]:
    """The largest absolute difference between ``model`` and ``run`` (an exported copy) over
    random inputs of each batch size, and the largest absolute output of the model."""
    worst = scale = 0.0
    for i, b in enumerate(batches):
        x = _random((b, *example.shape[1:]), seed=1 + i)
        with torch.no_grad():
            expected = _outputs(model(x))
        got = run(x)
        if len(got) != len(expected) or any(tuple(g.shape) != tuple(e.shape) for g, e in zip(got, expected)):
            raise TesseraError(
                f"{what} gives outputs of shapes {[tuple(g.shape) for g in got]}, "
                f"the model {[tuple(e.shape) for e in expected]} (batch {b})"
            )
        worst = max([worst, *((g.double() - e.double()).abs().max().item() for g, e in zip(got, expected))])
        scale = max([scale, *(e.abs().max().item() for e in expected)])
    return worst, scale


def _finish(result: ExportResult, model: nn.Module, run, example: torch.Tensor, what: str) -> ExportResult:
    result.checked_batches = _check_batches(example, result.dynamic_batch)
    result.max_abs_diff, result.max_abs_output = _compare(model, run, example, result.checked_batches, what)
    if not result.verified:
        # fp32 rounding differences grow with the outputs: a model whose outputs reach 1e4
        # may need a larger atol than one whose logits are of order 10
        raise TesseraError(
            f"{result.path}: {what} differs from the PyTorch model by {result.max_abs_diff:.2e}, more than "
            f"atol {result.atol:.0e} (outputs up to {result.max_abs_output:.2e}); the file is kept for inspection"
        )
    return result


# ---------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    input_shape: Sequence[int],
    dynamic_batch: bool = False,
    opset: int | None = None,
    verify: bool = True,
    atol: float = 1e-4,
) -> ExportResult:
    """Write ``model`` as an ONNX graph and check it in ONNX Runtime.

    Args:
        model: any tessera model (it is exported in eval mode, fp32, on the CPU).
        path: the ``.onnx`` file to write (weights above 1.5 GiB go to ``path + '.data'``).
        input_shape: ``(B, C, H, W)`` or ``(B, C, T, H, W)``; everything but the batch is
            fixed in the graph.
        dynamic_batch: leave the batch axis symbolic (named ``batch``).
        opset: the ONNX opset (18 or newer); default: the exporter's.
        verify: run the file with ONNX Runtime (CPU) and compare with the model.
        atol: the largest absolute difference the check accepts (fp32 rounding: 1e-4 suits
            outputs up to about 100).

    The graph has one input ``input`` and one output ``output`` (``output_0``, ... when the
    model returns several tensors).

    Raises: :class:`tessera.errors.TesseraError` when the optional packages are missing, the
    opset is not available, or the check fails (the file is kept).
    """
    onnx = _require("onnx", "onnxscript", *(["onnxruntime"] if verify else []))[0]
    if opset is not None and opset < MIN_OPSET:
        raise ConfigError(f"opset {opset}: the ONNX exporter writes opset {MIN_OPSET} or newer")
    model, example, path = _prepare(model, input_shape, dynamic_batch, path)
    with _eval_mode(model):
        n_out = _warm_up(model, example)
        names = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
        with _quiet():
            # The dynamo-based exporter (torch.export, then onnxscript), not the TorchScript
            # one: it is the maintained path; it translates roll, the index_select gathers,
            # SDPA with an additive mask and the constants of Swin's window plans; and it
            # takes the batch as a torch.export.Dim. The TorchScript exporter writes invalid
            # Transpose nodes for movedim(-1, 1) (a negative axis in perm), which Swin uses.
            program = torch.onnx.export(
                model, (example,), dynamo=True, verbose=False, opset_version=opset, input_names=["input"],
                output_names=names, dynamic_shapes=(_batch_dim(),) if dynamic_batch else None,
            )
        written = next(o.version for o in program.model_proto.opset_import if o.domain in ("", "ai.onnx"))
        if opset is not None and written != opset:
            raise TesseraError(f"could not write opset {opset}: the exporter fell back to opset {written}")
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        program.save(str(path), external_data=size > EXTERNAL_DATA_BYTES)
        result = ExportResult(path, "onnx", tuple(example.shape), dynamic_batch, written, atol=atol)
        if not verify:
            return result
        import onnxruntime as ort

        onnx.checker.check_model(str(path))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run(x: torch.Tensor) -> list[torch.Tensor]:
            return [torch.from_numpy(o) for o in session.run(None, {"input": x.numpy()})]

        return _finish(result, model, run, example, "the ONNX graph")


# ---------------------------------------------------------------------------------------
# torch.export
# ---------------------------------------------------------------------------------------


def export_program(
    model: nn.Module,
    path: str | os.PathLike,
    input_shape: Sequence[int],
    dynamic_batch: bool = False,
    verify: bool = True,
    atol: float = 1e-4,
) -> ExportResult:
    """Write ``model`` as a ``torch.export`` ``ExportedProgram`` (``torch.export.save``,
    conventionally ``.pt2``), reload it with ``torch.export.load`` and compare.

    Arguments as :func:`export_onnx`. Load it with
    ``torch.export.load(path).module()(x)``.
    """
    model, example, path = _prepare(model, input_shape, dynamic_batch, path)
    with _eval_mode(model):
        _warm_up(model, example)
        with _quiet():
            program = torch.export.export(
                model, (example,), dynamic_shapes=(_batch_dim(),) if dynamic_batch else None
            )
        torch.export.save(program, str(path))
        result = ExportResult(path, "torch-export", tuple(example.shape), dynamic_batch, atol=atol)
        if not verify:
            return result
        loaded = torch.export.load(str(path)).module()

        def run(x: torch.Tensor) -> list[torch.Tensor]:
            return _outputs(loaded(x))

        return _finish(result, model, run, example, "the reloaded program")


# ---------------------------------------------------------------------------------------
# One entry point for the command line
# ---------------------------------------------------------------------------------------


def export(
    model_or_checkpoint: str | os.PathLike | nn.Module,
    format: str,
    output: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    input_shape: Sequence[int] | None = None,
    img_size: int | None = None,
    clip: str | Sequence[int] | None = None,
    batch_size: int = 1,
    dynamic_batch: bool = False,
    opset: int | None = None,
    verify: bool = True,
    atol: float = 1e-4,
    on_start: Callable[[tuple[int, ...]], None] | None = None,
) -> ExportResult:
    """Export a model (anything :func:`load_model` takes: a name, published weights, a run,
    a weights directory or file, or a model object) to ``format`` (``"onnx"`` or ``"torch-export"``) at ``output``.

    The input is ``input_shape`` if given, else the model's default input with ``img_size``
    or ``clip`` and ``batch_size`` (see :func:`input_shape_for`). ``on_start(input_shape)``
    is called once the model is built and the arguments are checked, before the (slow) export.
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; expected one of {', '.join(FORMATS)}")
    if opset is not None and format != "onnx":
        raise ConfigError("an opset is for the onnx format")
    if clip is not None:
        parse_clip(clip)  # a typo is reported before the model is built
    model = load_model(model_or_checkpoint, checkpoint)
    if input_shape is None:
        input_shape = input_shape_for(model, img_size, clip, batch_size)
    if on_start is not None:
        on_start(tuple(input_shape))
    if format == "onnx":
        return export_onnx(model, output, input_shape, dynamic_batch, opset, verify, atol)
    return export_program(model, output, input_shape, dynamic_batch, verify, atol)
