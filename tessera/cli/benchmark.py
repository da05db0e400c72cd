"""``tessera benchmark MODEL``: throughput, latency, memory and the achieved fraction of this
machine's matrix-product rate; ``--compare timm`` times the peer's model with the same weights
in the same process and prints the ratio."""

from __future__ import annotations

import argparse
import json

from . import count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="measure speed (optionally against timm or torchvision)",
                       description=__doc__)
    p.add_argument("model", help="a registered name (random weights), NAME.TAG (published weights), a run directory, "
                                 "or a weights file or directory")
    p.add_argument("--batch-size", type=count(1), help="default: 8 images or 1 clip")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--img-size", type=count(1), help="image side (default: the model's own)")
    size.add_argument("--clip", help="video clip T,H,W (default 16,224,224)")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="fp32, or autocast to bf16/fp16")
    p.add_argument("--train", action="store_true", help="time forward + backward + AdamW step")
    p.add_argument("--compile", action="store_true", help="torch.compile the model(s)")
    p.add_argument("--channels-last", action="store_true", help="channels-last input and weights")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--compare", choices=["timm", "torchvision", "onnxruntime", "openvino", "fp32"],
                   help="time the same model in a peer library (same weights), a deployment runtime "
                        "(tessera's own ONNX graph), or itself in fp32 (fp32: does --dtype pay here?), "
                        "rounds interleaved")
    p.add_argument("--backend", help="backend setting: auto (default), reference, a backend's name, "
                                     "or exclusions such as auto,-native (see tessera info)")
    p.add_argument("--threads", type=count(1), help="CPU threads (default: torch's)")
    p.add_argument("--warmup", type=count(0), default=3)
    p.add_argument("--iters", type=count(1), default=3, help="iterations per timed round")
    p.add_argument("--rounds", type=count(1), default=5, help="timed rounds (the median is reported)")
    p.add_argument("--agreement", type=count(0), default=0, metavar="N",
                   help="also compare the top-1 class under --dtype with fp32 on N random inputs")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tempfile

    import torch

    from .. import backends
    from ..bench import RUNTIMES, RuntimePeer, benchmark, format_result, peer_model
    from ..device import resolve_device
    from ..errors import TesseraError

    resolve_device(args.device)  # a device this machine has, before any work
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from ..weights.resolve import resolve_model

    model = resolve_model(args.model).model  # the weights matter for --agreement
    video = len(model.default_cfg["input_size"]) == 4
    chans = model.default_cfg["input_size"][0]
    if video:
        if args.img_size:
            raise TesseraError("--img-size is for image models; use --clip T,H,W")
        try:
            clip = tuple(int(v) for v in (args.clip or "16,224,224").split(","))
            assert len(clip) == 3 and min(clip) > 0
        except (ValueError, AssertionError):
            raise TesseraError(f"--clip takes three positive integers T,H,W, got {args.clip!r}") from None
        shape = (args.batch_size or 1, chans, *clip)
    else:
        if args.clip:
            raise TesseraError("--clip is for video models; use --img-size")
        side = args.img_size or model.default_cfg["input_size"][-1]
        shape = (args.batch_size or 8, chans, side, side)
    if args.backend:
        backends.use(args.backend)
    peer = None
    with tempfile.TemporaryDirectory(prefix="tessera-bench-") as workdir:
        if args.compare in RUNTIMES:
            if args.train or args.compile or args.device != "cpu":
                raise TesseraError(f"--compare {args.compare} times CPU inference (no --train, --compile, --device)")
            peer = (args.compare, RuntimePeer(args.compare, model, shape, args.dtype, torch.get_num_threads(), workdir))
        elif args.compare == "fp32":
            if args.dtype == "fp32":
                raise TesseraError("--compare fp32 times the model in fp32 against --dtype bf16 or fp16")
            peer = ("tessera fp32", model)
        elif args.compare:
            registered = getattr(model, "model_name", None) or args.model
            peer = (args.compare, peer_model(args.compare, registered, model))
        result = benchmark(model, args.model, shape, dtype=args.dtype, train=args.train, device=args.device,
                           compile=args.compile, channels_last=args.channels_last, peer=peer,
                           peer_dtype="fp32" if args.compare == "fp32" else None, warmup=args.warmup, iters=args.iters, rounds=args.rounds,
                           agreement_samples=args.agreement)
    print(json.dumps(result.to_dict()) if args.json else format_result(result))
    return 0
