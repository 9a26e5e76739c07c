import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# One thread: tiny-model ops gain nothing from two, and subprocess tests run beside this process.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer): the 2-layer random Llama with SmolLM2's real tokenizer, in eval mode."""
    from grpo.models import load_model

    model, tokenizer = load_model("tiny-random-llama")
    return model.eval(), tokenizer


@pytest.fixture
def fresh_tiny():
    from grpo.models import load_model

    model, tokenizer = load_model("tiny-random-llama")
    return model.eval(), tokenizer
