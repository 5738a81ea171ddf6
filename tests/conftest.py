import os
import sys

import pytest
import torch

# Tests never download: model hubs are unreachable in CI, and a test must not depend on them.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
torch.set_num_threads(1)


@pytest.fixture
def tiny():
    """A random tiny LlamaGen t2i backend (built in milliseconds)."""
    from common.models import load_model

    torch.manual_seed(0)
    bk = load_model("tiny")
    for m in bk.policy.modules():  # non-zero output head and sharper logits, so tests are not degenerate
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=0.3)
    return bk
