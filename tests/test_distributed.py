"""Two processes under gloo produce the update of one process on the same global batch, with and without FSDP,
and for SFT; batch-std advantages use the std of the global batch;
a sharded torchrun training run writes whole checkpoints and resumes from them exactly."""

import math
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, comparable, env

WORKER = str(ROOT / "tests" / "dist_worker.py")


def run_processes(command: list[str]) -> None:
    """Run a (torchrun) command; on failure, fail with the end of its stderr, where the cause is."""
    result = subprocess.run(command, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command[:8])} ... exited {result.returncode}:\n{result.stderr[-4000:]}"


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The single-process update, computed once per (aggregation, lora) for the whole module."""
    results = {}

    def run(aggregation: str, *flags: str) -> dict:
        if (aggregation, flags) not in results:
            out = tmp_path_factory.mktemp("one") / "one.pt"
            run_processes([sys.executable, WORKER, str(out), aggregation, *flags])
            results[aggregation, flags] = torch.load(out)
        return results[aggregation, flags]

    return run


def two_processes(out, aggregation: str, *flags: str) -> dict:
    run_processes([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   WORKER, str(out), aggregation, *flags])
    return torch.load(out)


@pytest.mark.parametrize("aggregation, fsdp, lora", [
    ("token-mean", False, False), ("seq-mean-token-mean", False, False), ("seq-mean-token-sum-norm", False, False),
    ("token-mean", True, False), ("seq-mean-token-mean", True, False), ("token-mean", True, True),
])
def test_two_gloo_processes_match_one_process(tmp_path, one_process, aggregation, fsdp, lora):
    from dist_worker import MAX_GRAD_NORM

    lora_flag = ["lora"] if lora else []
    one = one_process(aggregation, *lora_flag)
    two = two_processes(tmp_path / "two.pt", aggregation, *(["fsdp"] if fsdp else []), *lora_flag)
    # Clipping acted, so the update depends on the global gradient norm, which must match.
    assert one["grad_norm"][0] > MAX_GRAD_NORM
    assert two["grad_norm"][0] == pytest.approx(one["grad_norm"][0], rel=1e-5)

    one, two = one["weights"], two["weights"]
    assert one.keys() == two.keys()
    if lora:
        # B starts at zero, so the adapters start as the base model: moved B means the update reached them.
        assert all(two[key].abs().max() > 0 for key in two if "lora_B" in key)
    else:
        from grpo.run.models import load_model

        start = load_model("tiny-random-llama")[0].state_dict()
        # Every weight moved, the root FSDP unit's too (tied embedding and LM head, final norm).
        assert all(not torch.equal(start[key], two[key]) for key in start)
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-6), key


def test_batch_std_is_the_global_batch_std_under_two_gloo_processes(tmp_path):
    """scale_rewards = "batch": A_i = (r_i - mean of its group) / (std of every valid reward of all ranks + eps)."""
    import numpy as np
    from dist_worker import GLOBAL_REWARDS, GROUP

    two = two_processes(tmp_path / "two.pt", "advantages")
    rewards = GLOBAL_REWARDS.double().numpy().reshape(-1, GROUP)
    valid = ~np.isnan(rewards)
    group_means = np.nansum(rewards, axis=1, keepdims=True) / valid.sum(axis=1, keepdims=True)
    batch_std = np.std(rewards[valid], ddof=1)  # unbiased, over the 15 valid rewards of both ranks
    expected = np.where(valid, (rewards - group_means) / (batch_std + 1e-4), 0.0).flatten()
    assert two["advantages"].numpy() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert two["zero_std"].tolist() == [False] * 4


def train_fsdp(out_dir, *extra: str) -> None:
    """`torchrun --nproc_per_node 2 -m grpo configs/smoke.toml fsdp=true` for 2 steps, a checkpoint after each."""
    run_processes([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   "-m", "grpo", "configs/smoke.toml", "fsdp=true", f"out_dir={out_dir}", "save_every=1",
                   "threads=1", *extra])


def test_fsdp_training_run_saves_whole_checkpoints_and_resumes_exactly(tmp_path):
    from safetensors.torch import load_file

    from grpo.run.metrics import read_metrics
    from grpo.run.models import load_model

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    train_fsdp(whole)
    train_fsdp(resumed, f"resume={whole / 'checkpoints' / 'step-000001'}")

    rows = read_metrics(whole / "metrics.jsonl")
    steps = [row for row in rows if "loss" in row]
    assert [row["step"] for row in steps] == [1, 2]
    assert all(row["grad_norm"] > 0 and math.isfinite(row["loss"]) for row in steps)
    assert steps[1]["kl"] > 0, "the sharded frozen reference took no part"
    assert any("eval/reward" in row for row in rows)
    # The run resumed from step 1 (sharded weights and optimizer state loaded) repeats step 2 exactly.
    assert comparable(read_metrics(resumed / "metrics.jsonl")) == comparable(rows)[-2:]

    saved = load_file(whole / "checkpoints" / "step-000002" / "model.safetensors")
    again = load_file(resumed / "checkpoints" / "step-000002" / "model.safetensors")
    assert all(torch.equal(saved[key], again[key]) for key in saved)
    # The checkpoint holds the whole model: it loads as a plain model, with the saved weights.
    loaded = load_model(str(whole / "final"))[0].state_dict()
    start = load_model("tiny-random-llama")[0].state_dict()
    assert loaded.keys() == start.keys()
    for key in saved:
        assert torch.equal(loaded[key], saved[key]), key
        assert not torch.equal(loaded[key], start[key]), f"{key} was not trained"


def test_fsdp_without_torchrun_is_refused(tmp_path):
    from grpo.config import GRPOConfig
    from grpo.run.config import load_config
    from grpo.run.errors import ConfigError
    from grpo.trainer import train

    with pytest.raises(ConfigError, match="torchrun"):
        train(load_config(GRPOConfig, overrides={"fsdp": True, "out_dir": str(tmp_path / "run")}),
              reward_fn=lambda prompts, completions, examples: None)  # refused before any reward is asked


def train_sft(out_dir, processes: int) -> None:
    """Two SFT steps of 8 examples (2 micro-batches per process) on the MT data, in 1 or N processes."""
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    run_processes([*launcher, "-m", "baselines.sft", "model=tiny-random-llama", "data=data/mt", f"out_dir={out_dir}",
                   "batch_size=8", "micro_batch_size=2", "max_steps=2", "lr=1e-3", "warmup_steps=0", "dev_limit=4",
                   "eval_every=1", "max_prompt_tokens=96", "max_target_tokens=32", "threads=1"])


def test_sft_two_gloo_processes_match_one_process(tmp_path):
    from safetensors.torch import load_file

    from grpo.run.metrics import read_metrics
    from grpo.run.models import load_model

    train_sft(tmp_path / "one", 1)
    train_sft(tmp_path / "two", 2)

    one, two = read_metrics(tmp_path / "one" / "metrics.jsonl"), read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [row["step"] for row in one] == [row["step"] for row in two] == [0, 1, 1, 2, 2]
    for row_one, row_two in zip(one, two):
        for key in ("loss", "grad_norm", "completion_tokens", "eval/loss"):
            if key in row_one:
                assert row_two[key] == pytest.approx(row_one[key], rel=1e-5), (row_one["step"], key)
    weights_one = load_file(tmp_path / "one" / "final" / "model.safetensors")
    weights_two = load_file(tmp_path / "two" / "final" / "model.safetensors")
    start = load_model("tiny-random-llama")[0].state_dict()
    assert any(not torch.equal(start[key], weights_one[key]) for key in weights_one), "the steps changed nothing"
    for key in weights_one:
        assert torch.allclose(weights_one[key], weights_two[key], atol=1e-6), key


def test_dynamic_sampling_and_completion_tables_under_two_processes(tmp_path):
    """Both ranks sample the same number of rounds (or the run would hang), and rank 0 writes every rank's rows."""
    import json

    from grpo.run.metrics import read_metrics

    out = tmp_path / "run"
    run_processes([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   "-m", "grpo", "configs/smoke.toml", f"out_dir={out}", "threads=1", "dev_limit=2",
                   "reward_weights={custom=1.0}", "custom_reward=support_rewards:constant_for_even_targets",
                   "filter_zero_std_groups=true", "max_extra_sampling_rounds=6", "log_completions_every=1"])
    steps = [row for row in read_metrics(out / "metrics.jsonl") if "reward" in row]
    assert any(row["dynamic_sampling/rounds"] > 1 for row in steps)
    for row in steps:
        table = [json.loads(line) for line in open(out / "completions" / f"step-{row['step']:06d}.jsonl")]
        assert len(table) == 2 * 2 * 4  # 2 processes x 2 prompts x 4 completions
        assert [r["group"] for r in table] == [g for g in range(4) for _ in range(4)]
        assert row["dynamic_sampling/filled_with_dropped"] == 0 and row["frac_reward_zero_std"] == 0.0
