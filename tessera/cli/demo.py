"""``tessera demo``: build Swin-T and run scikit-learn's two sample photos through it."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the demo", description=__doc__)
    p.add_argument("--model", default="swin_t")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from sklearn.datasets import load_sample_images

    from .. import create_model, model_stats

    torch.manual_seed(0)
    model = create_model(args.model).eval()
    size = model.default_cfg["input_size"][-1]
    mean = torch.tensor(model.default_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.default_cfg["std"]).view(1, 3, 1, 1)
    images = load_sample_images()
    batch = torch.from_numpy(np.stack(images.images)).permute(0, 3, 1, 2).float() / 255.0
    batch = torch.nn.functional.interpolate(batch, size=(size, size), mode="bicubic", antialias=True)
    batch = (batch - mean) / std
    stats = model_stats(model, (1, *batch.shape[1:]))
    with torch.no_grad():
        features = model.forward_features(batch)
        logits = model.forward_head(features)
    print(f"model {args.model}: {stats['params']:,} parameters, {stats['macs'] / 1e9:.2f} GMACs per image")
    print(f"input {tuple(batch.shape)} -> features {tuple(features.shape)} -> logits {tuple(logits.shape)}")
    probs = logits.softmax(-1)
    for name, p in zip(images.filenames, probs):
        top = p.topk(3)
        classes = ", ".join(f"class {i} ({v:.4f})" for v, i in zip(top.values.tolist(), top.indices.tolist()))
        print(f"{name.split('/')[-1]}: {classes}  (random weights)")
    return 0
