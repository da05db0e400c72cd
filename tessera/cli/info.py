"""``tessera info``: versions, what this machine can do, and which implementation each operation
takes here, with the candidates' measured times or the reasons they were not used.

The choices are made by running a model once (``--model``, default a Swin-T on one image):
each operation meets its first calls there and measures its candidates, or reads the choices
measured before on this machine."""

from __future__ import annotations

import argparse
import json
import platform

from . import count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="versions, this machine's capabilities and the backends' choices",
                       description=__doc__)
    p.add_argument("--model", default="swin_t", help="the model whose operations are measured (default swin_t)")
    p.add_argument("--batch-size", type=count(1), default=1)
    p.add_argument("--img-size", type=count(1), help="image side (default: the model's own)")
    p.add_argument("--clip", help="video clip T,H,W (video models; default 16,224,224)")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="fp32, or bf16 autocast")
    p.add_argument("--train", action="store_true", help="measure a training step (forward and backward)")
    p.add_argument("--backend", help="a backend setting to use (default: TESSERA_BACKEND, or auto)")
    p.add_argument("--remeasure", action="store_true",
                   help="forget the choices kept for this machine and measure every op anew (on a quiet machine)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import __version__, backends, create_model
    from ..backends import capability, native
    from ..export import input_shape_for

    if args.backend:
        backends.use(args.backend)
    if args.remeasure:
        backends.dispatch.forget(disk=True)
    caps = capability.host()
    bf16, bf16_why = capability.native_bf16()
    lib = native.library()
    model = create_model(args.model)
    shape = input_shape_for(model, args.img_size, args.clip)
    x = torch.randn(args.batch_size, *shape[1:])
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    if args.train:
        model.train()
        with autocast:
            model(x).float().square().mean().backward()
    else:
        with torch.inference_mode(), autocast:
            model.eval()(x)
    info = {
        "tessera": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "cpu": caps.cpu, "machine": caps.machine, "tier": caps.tier, "limited_by": caps.limited_by,
        "flags": sorted(f for f in caps.flags if f.startswith(("avx", "fma", "amx", "sve", "asimd", "bf16"))),
        "native_bf16": bf16, "native_bf16_why": bf16_why, "compiler": caps.compiler,
        "native_kernels": f"built for {caps.tier}, {native.lanes()} floats per vector" if lib is not None
        else f"unavailable: {native.unavailable_reason()}",
        "onednn": caps.onednn, "threads": torch.get_num_threads(), "setting": str(backends.current()),
        "malloc": backends.memory.state(),
        "cache": backends.CACHE.stats(),
        "workload": {"model": args.model, "input": list(x.shape), "dtype": args.dtype,
                     "mode": "train" if args.train else "inference"},
        "choices": [dict(r, key=[list(r["key"][0]), *r["key"][1:]]) for r in backends.choices()],
    }
    print(json.dumps(info, indent=1) if args.json else format_info(info))
    return 0


def format_info(info: dict) -> str:
    from ..backends import format_choices

    yes = {True: "yes", False: "no"}
    limited = f" (limited by {info['limited_by']})" if info["limited_by"] else ""
    lines = [
        f"tessera {info['tessera']}, torch {info['torch']}, Python {info['python']}",
        f"CPU: {info['cpu']} ({info['machine']}), {info['threads']} threads",
        f"  instruction-set tier: {info['tier']}{limited}; flags: {' '.join(info['flags']) or '-'}",
        f"  native bf16: {yes[info['native_bf16']]} ({info['native_bf16_why']})",
        f"  C++ compiler: {info['compiler'] or 'none'}; native kernels: {info['native_kernels']}",
        f"  oneDNN fused linear: {yes[info['onednn']]}",
        f"backend setting: {info['setting']}; C allocator: {info['malloc']}",
        f"measured on {info['workload']['model']} {tuple(info['workload']['input'])}, {info['workload']['dtype']} "
        f"{info['workload']['mode']}:",
    ]
    lines += format_choices(info["choices"])
    return "\n".join(lines)
