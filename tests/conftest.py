import os
from pathlib import Path

import pytest
import torch

#: recorded outputs of the reference implementations, beside the checkout when available
GOLDEN = Path(os.environ.get("TESSERA_GOLDEN", Path(__file__).resolve().parents[2] / "shared" / "golden"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def golden() -> Path:
    if not GOLDEN.is_dir():
        pytest.skip(f"no golden reference data at {GOLDEN}")
    return GOLDEN


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
