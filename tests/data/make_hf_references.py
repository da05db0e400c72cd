"""Make the Hugging Face reference directories of tests/test_hf_ports.py.

Run with an environment that has transformers (not a tessera dependency), from this folder:

    python make_hf_references.py

It saves tiny randomly initialised CvT and PVT v1 classifiers with ``save_pretrained``
(every parameter perturbed by N(0, 0.05), BatchNorm statistics randomised, so that every
weight matters) as ``hf_cvt_tiny/`` and ``hf_pvt_tiny/``, and records their logits on a
fixed input in ``hf_cases.pt`` (``{name: {"x", "logits", "transformers"}}``).
"""

import torch
import transformers
from transformers import CvtConfig, CvtForImageClassification, PvtConfig, PvtForImageClassification


def perturb(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand_like(b) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn_like(b) * 0.1)
    return model.eval()


torch.manual_seed(0)
models = {
    # transformers indexes each stage's drop-path rates by the stage number: depth[i] > i
    "hf_cvt_tiny": CvtForImageClassification(CvtConfig(embed_dim=[8, 12, 16], num_heads=[1, 2, 2], depth=[1, 2, 3],
                                                       num_labels=5)),
    "hf_pvt_tiny": PvtForImageClassification(PvtConfig(image_size=32, hidden_sizes=[8, 8, 16, 16],
                                                       num_attention_heads=[1, 1, 2, 2], depths=[1, 1, 1, 1],
                                                       num_labels=5)),
}
cases = {}
for name, model in models.items():
    perturb(model).save_pretrained(name)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        cases[name] = {"x": x, "logits": model(x).logits, "transformers": transformers.__version__}
torch.save(cases, "hf_cases.pt")
