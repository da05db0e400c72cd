"""Throughput of a model, and of a peer library's model with the same weights, in one process.

Timing: warm-up iterations, then ``rounds`` timed rounds of ``iters`` iterations each; the
figure is the median round. With a peer, rounds alternate between tessera and the peer so
that both see the same machine (a busy machine slows both alike and the ratio survives).

The achieved fraction of the machine's own matrix-product rate is measured on the spot:
model FLOPs x throughput / FLOP/s of a large GEMM in the same dtype.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .stats import model_stats

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Timing:
    name: str
    ms_per_batch: float
    samples_per_s: float
    rounds_ms: list[float] = field(default_factory=list)


@dataclass
class BenchResult:
    model: str
    input_shape: tuple[int, ...]
    dtype: str
    mode: str  # "inference" or "train"
    device: str
    threads: int
    gmacs_per_sample: float
    matmul_tflops: float  # the fastest GEMM reachable here (see matmul_rates)
    matmul_rates: dict[str, float]
    matmul_dtype: str  # the dtype the products run in (fp32 under bf16 autocast without native bf16)
    ours: Timing
    peer: Timing | None = None
    peer_max_abs_diff: float | None = None
    fraction_of_matmul: float = 0.0
    peak_memory_mib: float = 0.0
    #: fraction of random samples whose top-1 class in ``dtype`` is the fp32 one, per runner
    agreement: dict[str, float] = field(default_factory=dict)
    agreement_samples: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        return None if self.peer is None else self.ours.samples_per_s / self.peer.samples_per_s

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ratio"] = self.ratio
        return d


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rates(dtype: torch.dtype, device: torch.device, n: int = 2048, iters: int = 10) -> dict[str, float]:
    """TFLOP/s of an ``n x n x n`` matrix product on this machine, now, with each GEMM that
    PyTorch can reach here: the default (``torch.mm``: the BLAS library on CPU) and, on CPU,
    oneDNN's (which tessera's linear layers use)."""
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.float32  # no fast fp16 GEMM on CPU; autocast fp16 runs fp32 kernels there
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    kernels = {"torch.mm": lambda: a @ b}
    onednn = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if device.type == "cpu" and onednn is not None and torch.backends.mkldnn.is_available():
        kernels["oneDNN"] = lambda: onednn(a, b, None, "none", [], "")
    rates = {}
    with torch.no_grad():
        for name, fn in kernels.items():
            for _ in range(2):
                fn()
            _sync(device)
            times = []
            for _ in range(iters):
                t = time.perf_counter()
                fn()
                _sync(device)
                times.append(time.perf_counter() - t)
            rates[name] = 2 * n**3 / statistics.median(times) / 1e12
    return rates


def make_step(model: nn.Module, x: torch.Tensor, dtype: torch.dtype, train: bool,
              optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.AdamW) -> Callable[[], None]:
    """One timed unit of work: a forward pass, or forward + backward + an AdamW step made by
    ``optimizer`` (each library's own: tessera's trainer uses :func:`tessera.backends.optim.adamw`,
    the peers' ``torch.optim.AdamW`` as they make it)."""
    device = x.device
    autocast = (
        torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    )
    if not train:
        model.eval()

        def infer() -> None:
            with torch.inference_mode(), autocast:
                model(x)

        return infer

    model.train()
    opt = optimizer(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16 and device.type == "cuda")
    target = torch.zeros(x.shape[0], dtype=torch.long, device=device)

    def step() -> None:
        with autocast:
            loss = nn.functional.cross_entropy(model(x).float(), target)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


def time_rounds(fns: dict[str, Callable[[], None]], device: torch.device, warmup: int, iters: int, rounds: int,
                batch: int) -> dict[str, Timing]:
    """Median time per iteration of each function, rounds interleaved."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    per_round: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            for _ in range(iters):
                fn()
            _sync(device)
            per_round[name].append((time.perf_counter() - t) / iters * 1e3)
    out = {}
    for name, ms in per_round.items():
        med = statistics.median(ms)
        out[name] = Timing(name, med, batch / med * 1e3, ms)
    return out


def top1_agreement(model: nn.Module, input_shape: tuple[int, ...], samples: int, dtype: torch.dtype,
                   device: torch.device, seed: int = 1) -> float:
    """Fraction of ``samples`` random inputs (drawn in batches of ``input_shape``) on which the
    model's top-1 class under ``dtype`` autocast is its top-1 class in fp32."""
    gen = torch.Generator().manual_seed(seed)
    agree, seen = 0, 0
    model.eval()
    while seen < samples:
        x = torch.randn(*input_shape, generator=gen)[: samples - seen].to(device)
        with torch.inference_mode():
            full = model(x).argmax(-1)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                low = model(x).argmax(-1)
        agree += int((full == low).sum())
        seen += x.shape[0]
    return agree / samples


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # the process's high-water resident set (Linux reports KiB)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def benchmark(
    model: nn.Module,
    name: str,
    input_shape: tuple[int, ...],
    dtype: str = "fp32",
    train: bool = False,
    device: str = "cpu",
    compile: bool = False,
    channels_last: bool = False,
    peer: tuple[str, nn.Module] | None = None,
    peer_dtype: str | None = None,
    warmup: int = 3,
    iters: int = 3,
    rounds: int = 5,
    agreement_samples: int = 0,
) -> BenchResult:
    """Time ``model`` (and ``peer``, a ``(label, module)`` with the same weights) on random
    inputs of ``input_shape`` (batch first). With ``agreement_samples``, also count on that
    many random inputs how often the top-1 class under ``dtype`` is the fp32 one.
    ``peer_dtype`` runs the peer in another dtype (the model itself in fp32 as the peer: does
    ``dtype`` pay on this machine?)."""
    dev = torch.device(device)
    torch_dtype = DTYPES[dtype]
    notes: list[str] = []
    macs = model_stats(model, (1, *input_shape[1:]))["macs"]
    model = model.to(dev)
    x = torch.randn(*input_shape, device=dev)
    if channels_last:
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        x = x.contiguous(memory_format=fmt)
        model = model.to(memory_format=fmt)
    runners = {"tessera": model}
    diff = None
    if peer is not None:
        label, peer_model = peer
        peer_model = peer_model.to(dev)
        with torch.no_grad():
            diff = (model.eval()(x) - peer_model.eval()(x)).abs().max().item()
        runners[label] = peer_model
    if compile:
        runners = {k: torch.compile(m) for k, m in runners.items()}
    dtypes = {k: DTYPES[peer_dtype] if peer_dtype and k != "tessera" else torch_dtype for k in runners}
    from .backends.optim import adamw

    # each library's own optimizer: tessera's (also for its model in another dtype), the peers'
    optimizers = {k: adamw if k == "tessera" or peer_dtype else torch.optim.AdamW for k in runners}
    fns = {k: make_step(m, x, dtypes[k], train, optimizers[k]) for k, m in runners.items()}
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    timings = time_rounds(fns, dev, warmup, iters, rounds, input_shape[0])
    notes += backend_notes(dev)
    computed = _computed_dtype(torch_dtype, dev)
    rates = matmul_rates(computed, dev)
    rate = max(rates.values())
    agreement = {}
    if agreement_samples:
        same = peer is not None and peer[1] is model
        models = {"tessera": model, **dict([peer] if peer is not None and not same else [])}  # uncompiled
        agreement = {k: top1_agreement(m, input_shape, agreement_samples, torch_dtype, dev) for k, m in models.items()}
    work = 2 * macs * (3 if train else 1)  # backward costs about twice the forward
    ours = timings["tessera"]
    result = BenchResult(
        model=name, input_shape=tuple(input_shape), dtype=dtype, mode="train" if train else "inference",
        device=str(dev), threads=torch.get_num_threads(), gmacs_per_sample=macs / 1e9, matmul_tflops=rate,
        matmul_rates=rates, matmul_dtype=next(k for k, v in DTYPES.items() if v == computed),
        ours=ours, peer=next((t for k, t in timings.items() if k != "tessera"), None), peer_max_abs_diff=diff,
        fraction_of_matmul=work * ours.samples_per_s / (rate * 1e12), peak_memory_mib=peak_memory_mib(dev),
        agreement=agreement, agreement_samples=agreement_samples, notes=notes,
    )
    return result


def _computed_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype the products run in: fp32 under bf16 autocast on a CPU without native bf16
    (as :func:`tessera.backends.precision_policy` has it; timing an emulated bf16 product
    there would take minutes)."""
    if device.type == "cpu" and dtype == torch.bfloat16:
        from .backends import capability

        if not capability.native_bf16()[0]:
            return torch.float32
    return dtype


def backend_notes(device: torch.device) -> list[str]:
    """What the backends chose during the run: the host, and per op how many kinds of call
    took each implementation."""
    from . import backends
    from .backends import capability, native

    if device.type != "cpu":
        return [f"backend setting {backends.current()}"]
    caps = capability.host()
    bf16, why = capability.native_bf16()
    lib = "built" if native.library() is not None else f"unavailable ({native.unavailable_reason()})"
    notes = [f"backend setting {backends.current()}; CPU tier {caps.tier}; native bf16 "
             f"{'yes' if bf16 else 'no'} ({why}); native kernels {lib}", f"C allocator: {backends.memory.state()}"]
    rows = [r for r in backends.choices() if r["setting"] == str(backends.current())]
    return notes + ["chosen (op, call, choice, candidates):"] + backends.format_choices(rows, indent="    ")


def format_result(r: BenchResult) -> str:
    unit = "clips" if len(r.input_shape) == 5 else "images"
    lines = [
        f"{r.model} {r.mode} {r.dtype} on {r.device} ({r.threads} threads), input {r.input_shape}",
        f"  tessera: {r.ours.samples_per_s:8.2f} {unit}/s  {r.ours.ms_per_batch:9.1f} ms/batch",
    ]
    if r.peer is not None:
        lines.append(f"  {r.peer.name}: {r.peer.samples_per_s:8.2f} {unit}/s  {r.peer.ms_per_batch:9.1f} ms/batch"
                     f"  (max |diff| of outputs {r.peer_max_abs_diff:.2e})")
        lines.append(f"  ratio tessera / {r.peer.name}: {r.ratio:.2f}x")
    lines += [
        f"  {r.gmacs_per_sample:.3f} GMACs per sample; matrix product here now ({r.matmul_dtype}, 2048^3): "
        + ", ".join(f"{k} {v * 1e3:.0f} GFLOP/s" for k, v in r.matmul_rates.items()),
        f"  tessera reaches {100 * r.fraction_of_matmul:.0f}% of the fastest"
        + (" (model FLOPs x throughput; training counts 3x the forward)" if r.mode == "train" else
           " (model FLOPs x throughput)"),
        f"  peak memory {r.peak_memory_mib:.0f} MiB ({'allocated on the GPU' if r.device.startswith('cuda') else 'resident, whole process'})",
    ]
    for k, v in r.agreement.items():
        lines.append(f"  {k}: top-1 in {r.dtype} equals top-1 in fp32 on {100 * v:.1f}% of {r.agreement_samples} "
                     "random inputs")
    lines += [f"  note: {n}" for n in r.notes]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Peers: the same architecture from timm or torchvision, with tessera's weights
# ---------------------------------------------------------------------------------------

TIMM_NAMES = {
    "swin_t": "swin_tiny_patch4_window7_224", "swin_s": "swin_small_patch4_window7_224",
    "swin_b": "swin_base_patch4_window7_224", "swin_b_384": "swin_base_patch4_window12_384",
    "swin_l": "swin_large_patch4_window7_224", "swin_l_384": "swin_large_patch4_window12_384",
    "vit_t_16": "vit_tiny_patch16_224", "vit_s_16": "vit_small_patch16_224", "vit_b_16": "vit_base_patch16_224",
    "vit_l_16": "vit_large_patch16_224", "deit_t": "deit_tiny_patch16_224", "deit_s": "deit_small_patch16_224",
    "deit_b": "deit_base_patch16_224", "deit_t_distilled": "deit_tiny_distilled_patch16_224",
    "deit_s_distilled": "deit_small_distilled_patch16_224", "deit_b_distilled": "deit_base_distilled_patch16_224",
    "cait_xxs24": "cait_xxs24_224", "cait_s24": "cait_s24_224", "levit_128s": "levit_128s", "levit_256": "levit_256",
    "pvt_v2_b0": "pvt_v2_b0", "pvt_v2_b2": "pvt_v2_b2", "pvt_v2_b2_li": "pvt_v2_b2_li",
    "swinv2_t": "swinv2_tiny_window8_256", "swinv2_s": "swinv2_small_window8_256",
    "swinv2_b": "swinv2_base_window8_256", "swinv2_t_w16": "swinv2_tiny_window16_256",
    "swinv2_s_w16": "swinv2_small_window16_256", "swinv2_b_w16": "swinv2_base_window16_256",
    "swinv2_b_192_22k": "swinv2_base_window12_192", "swinv2_l_192_22k": "swinv2_large_window12_192",
    "swinv2_b_w12to16_256": "swinv2_base_window12to16_192to256",
    "swinv2_b_w12to24_384": "swinv2_base_window12to24_192to384",
    "swinv2_l_w12to16_256": "swinv2_large_window12to16_192to256",
    "swinv2_l_w12to24_384": "swinv2_large_window12to24_192to384",
}
TORCHVISION_NAMES = {
    "swin_t": "swin_t", "swin_s": "swin_s", "swin_b": "swin_b",
    "swinv2_t": "swin_v2_t", "swinv2_s": "swin_v2_s", "swinv2_b": "swin_v2_b",
    "video_swin_t": "swin3d_t", "video_swin_s": "swin3d_s", "video_swin_b": "swin3d_b",
}


def peer_model(library: str, name: str, model: nn.Module) -> nn.Module:
    """Build ``library``'s version of the registered model ``name`` and give ``model`` the
    peer's weights (through tessera's own converter of that library's format), so that both
    compute the same function."""
    from .errors import TesseraError
    from .weights import load_checkpoint

    args = getattr(model, "model_args", {})
    drop_path = float(args.get("drop_path_rate", 0.0))
    if library == "timm":
        if name not in TIMM_NAMES:
            raise TesseraError(f"no timm counterpart of {name!r} is known; known: {', '.join(sorted(TIMM_NAMES))}")
        try:
            import timm
        except ImportError:
            raise TesseraError("--compare timm needs timm installed in this environment") from None
        kwargs = {"num_classes": model.num_classes, "drop_path_rate": drop_path}
        if "img_size" in args and name.startswith("swin"):
            kwargs["img_size"] = args["img_size"]
        peer = timm.create_model(TIMM_NAMES[name], **kwargs)
    elif library == "torchvision":
        if name not in TORCHVISION_NAMES:
            raise TesseraError(f"no torchvision counterpart of {name!r} is known; known: {', '.join(TORCHVISION_NAMES)}")
        try:
            import torchvision.models as tvm
            import torchvision.models.video as tvv
        except ImportError:
            raise TesseraError("--compare torchvision needs torchvision installed in this environment") from None
        builder = getattr(tvv if name.startswith("video") else tvm, TORCHVISION_NAMES[name])
        peer = builder(num_classes=model.num_classes)  # its own stochastic depth, as ours: the paper's
    else:
        raise TesseraError(f"unknown peer library {library!r}; use timm or torchvision")
    load_checkpoint(model, peer.state_dict(), strict=True, verbose=False)
    return peer


# ---------------------------------------------------------------------------------------
# Deployment runtimes: tessera's own ONNX graph run by ONNX Runtime or OpenVINO
# ---------------------------------------------------------------------------------------

RUNTIMES = ("onnxruntime", "openvino")


class RuntimePeer(nn.Module):
    """``model`` exported by tessera to ONNX (fp32, the batch and size of ``input_shape``) and
    run by a deployment runtime on the CPU with ``threads`` threads: ONNX Runtime, or OpenVINO
    with its latency hint and the precision ``dtype`` (``fp32``, or ``bf16`` where the CPU
    has it). Called like the model on inputs of ``input_shape``."""

    def __init__(self, library: str, model: nn.Module, input_shape: tuple[int, ...], dtype: str, threads: int,
                 workdir: str) -> None:
        from .errors import TesseraError
        from .export import export_onnx

        super().__init__()
        self.library = library
        path = f"{workdir}/model.onnx"
        export_onnx(model, path, input_shape, verify=False)
        if library == "onnxruntime":
            if dtype != "fp32":
                raise TesseraError("--compare onnxruntime measures fp32 only (its CPU kernels have no bf16)")
            try:
                import onnxruntime as ort
            except ImportError:
                raise TesseraError("--compare onnxruntime needs onnxruntime: pip install onnxruntime") from None
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            self._run = lambda x: session.run(None, {"input": x})[0]
        elif library == "openvino":
            try:
                import openvino as ov
            except ImportError:
                raise TesseraError("--compare openvino needs OpenVINO: pip install openvino") from None
            config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
                      "INFERENCE_PRECISION_HINT": "bf16" if dtype == "bf16" else "f32"}
            compiled = ov.Core().compile_model(path, "CPU", config)
            request, output = compiled.create_infer_request(), compiled.output(0)
            self._run = lambda x: request.infer({0: x})[output]
        else:
            raise TesseraError(f"unknown runtime {library!r}; expected one of {', '.join(RUNTIMES)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._run(x.detach().float().contiguous().numpy()).copy())
