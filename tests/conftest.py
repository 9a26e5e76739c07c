import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# One thread: tiny-model ops gain nothing from two, and subprocess tests run beside this process.
torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption("--run-compile", action="store_true",
                     help="also run the tests marked `compile` (torch.compile of the decode step: minutes on a CPU)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-compile"):
        return
    skip = pytest.mark.skip(reason="torch.compile takes 1-2 minutes on a 2-core CPU; run with --run-compile")
    for item in items:
        if item.get_closest_marker("compile"):
            item.add_marker(skip)


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
