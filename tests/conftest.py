import os
import sys
from pathlib import Path

import numpy as np
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
    from grpo.run.models import load_model

    model, tokenizer = load_model("tiny-random-llama")
    return model.eval(), tokenizer


@pytest.fixture
def fresh_tiny():
    from grpo.run.models import load_model

    model, tokenizer = load_model("tiny-random-llama")
    return model.eval(), tokenizer


@pytest.fixture
def repo_root(monkeypatch):
    """Run the test from the repository root, where the relative paths of presets and data/ resolve.

    A module that needs it for every test says `pytestmark = pytest.mark.usefixtures("repo_root")`.
    """
    monkeypatch.chdir(ROOT)


# --------------------------------------------------------------------------
# Helpers the test modules share (imported as `from conftest import ...`)
# --------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
TIMING_KEYS = ("time", "time/", "tokens_per_second", "utilisation/")  # what the clock and the machine decide


def run_args(out_dir, *extra):
    return [sys.executable, "-m", "grpo", f"out_dir={out_dir}", "model=tiny-random-llama", "data=data/mt",
            "max_steps=6", "save_every=2", "keep_checkpoints=10", "prompts_per_step=2", "group_size=4",
            "max_new_tokens=6", "eval_max_new_tokens=6", "dev_limit=4", "eval_every=3", "max_prompt_tokens=96",
            "lr=1e-2", "beta=0.04", "reward_weights={custom=1.0}",
            "custom_reward=support_rewards:low_half_share", "threads=1", *extra]


def env():
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1"}


def comparable(rows):
    return [{k: v for k, v in row.items() if not k.startswith(TIMING_KEYS)} for row in rows]


def tiny_config(tmp_path, **overrides):
    """A two-step GRPO config on the tiny random Llama and data/mt."""
    from grpo.config import GRPOConfig
    from grpo.run.config import load_config

    base = dict(out_dir=str(tmp_path / "run"), model="tiny-random-llama", data="data/mt", max_steps=2,
                prompts_per_step=2, group_size=4, max_new_tokens=6, eval_max_new_tokens=6, dev_limit=4,
                eval_every=0, lr=1e-3, beta=0.04, reward_weights={"language": 1.0}, max_prompt_tokens=96)
    base.update(overrides)
    return load_config(GRPOConfig, overrides=base)


TINY_RUN = ["model=tiny-random-llama", "data=data/mt", "prompts_per_step=2", "group_size=2", "max_new_tokens=4",
            "eval_max_new_tokens=4", "dev_limit=2", "eval_every=0", "max_prompt_tokens=96", "lr=1e-2", "beta=0.04",
            "reward_weights={custom=1.0}", "custom_reward=support_rewards:low_half_share"]


def grpo_args(out_dir, *extra) -> list[str]:
    return [f"out_dir={out_dir}", *TINY_RUN, *extra]


def run_cli(capsys, args, entry=None) -> tuple[int, str, str]:
    """Run a command line's main (`python -m grpo`'s by default) in this process: (exit code, stdout, stderr)."""
    from grpo.cli import main as grpo_main

    entry = entry or grpo_main
    code = entry(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def grpo_main_with(reward):
    """`python -m grpo`'s main, training with `reward` in place of the one the config describes."""
    from grpo import trainer
    from grpo.cli import main as grpo_main

    return lambda argv: grpo_main(argv, run=lambda cfg: trainer.train(cfg, reward))


def error_line(code: int, err: str, *fragments: str) -> str:
    """The one 'error: ...' line a refusal prints (exit code 2, no traceback), holding every fragment."""
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.split("\n") if line.startswith("error: ")]  # on a line of its own, not after a bar
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def measurement(label, chrf, cloze, kl_forward, kl_general=0.1, mmlu=None, target_logprob=-1.0):
    """A measurement whose per-item lists are constant, so every mean and interval is known."""
    data = {
        "label": label,
        "task": {"ids": ["a", "b", "c", "d"], "outputs": ["x"] * 4, "chrf": [chrf] * 4, "rouge_l": [chrf] * 4,
                 "embedding_sim": [chrf] * 4, "language_consistency": [1.0] * 4},
        "cloze": {"correct": [1.0] * cloze + [0.0] * (10 - cloze), "target_logprob": [target_logprob] * 10},
        "drift": {"kl_mean": kl_general, "kl_p90": 2 * kl_general, "nll_increase_mean": kl_general,
                  "nll_increase_p90": 3 * kl_general},
        "task_kl": {"forward": [kl_forward] * 3, "reverse": [kl_forward / 2] * 3},
    }
    if mmlu is not None:
        data["mmlu"] = {"correct": [1.0] * mmlu + [0.0] * (10 - mmlu)}
    return data


BASE = measurement("base", 0.1, 8, 0.0, 0.0)
SWEEP = [
    measurement("sft-mt-lr0.0002@10", 0.2, 7, 1.0),
    measurement("sft-mt-lr0.0002@20", 0.4, 5, 3.0),
    measurement("cold-start-mt", 0.15, 8, 0.5),
    measurement("grpo-mt-lr0.0001@10", 0.25, 8, 0.6),
    measurement("grpo-mt-lr0.0001@20", 0.35, 7, 1.2),
]


def state_of(folder: Path) -> dict[str, bytes]:
    """Every file under a folder and its bytes, to show that nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class Scores:
    """A reward for in-process runs: 1 for even-length completions, whatever `hook` does first."""

    name = "custom"

    def __init__(self, hook=None):
        self.hook = hook

    def __call__(self, prompts, completions, examples):
        if self.hook is not None:
            self.hook()
        from rewards.base import RewardOutput

        values = np.array([float(len(c) % 2 == 0) for c in completions])
        return RewardOutput(values, {"custom": values})


HOLD_LOCK = ("import sys, time\nfrom grpo.run import run_folder\nrun_folder.lock(sys.argv[1])\n"
             "print('locked', flush=True)\ntime.sleep(600)\n")
