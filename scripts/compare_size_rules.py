"""Swin-T against torchvision and timm at sizes the official code refuses, with each size rule.

Needs timm and torchvision in the environment (they are not dependencies of tessera):

    PYTHONPATH=. python scripts/compare_size_rules.py

For every case the peer is built with its own initialisation, every parameter perturbed by
N(0, 0.05) so that every weight matters; tessera's swin_t loads the peer's state dict
through its converter and both run the same random batch in fp32, eval mode. Printed: the
largest absolute difference of the logits for each of tessera's size rules.
"""

from __future__ import annotations

import argparse

import torch

import tessera
from tessera.errors import CheckpointError

CASES = [("torchvision", (256, 192)), ("torchvision", (448, 224)), ("torchvision", (230, 230)),
         ("torchvision", (232, 232)), ("torchvision", (224, 224)), ("timm", (448, 224)), ("timm", (224, 224)),
         ("timm", (232, 232)), ("timm", (256, 192))]


def peer(library: str, size: tuple[int, int]) -> torch.nn.Module:
    if library == "torchvision":
        import torchvision

        model = torchvision.models.swin_t(num_classes=1000)
    else:
        import timm

        model = timm.create_model("swin_tiny_patch4_window7_224", img_size=size, num_classes=1000)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"{'peer':<12} {'size':<9} " + " ".join(f"{r:>12}" for r in ("official", "torchvision", "timm")))
    for library, size in CASES:
        reference = peer(library, size)
        x = torch.randn(args.batch, 3, *size)
        with torch.no_grad():
            expected = reference(x)
            diffs = []
            for rule in ("official", "torchvision", "timm"):
                model = tessera.create_model("swin_t", img_size=size, size_rule=rule).eval()
                try:
                    tessera.load_checkpoint(model, reference.state_dict(), verbose=False)
                except CheckpointError:  # e.g. a non-square table into a model with another window
                    diffs.append("not loaded")
                    continue
                diffs.append(f"{(model(x) - expected).abs().max().item():.1e}")
        print(f"{library:<12} {size[0]}x{size[1]:<5} " + " ".join(f"{d:>12}" for d in diffs), flush=True)


if __name__ == "__main__":
    main()
