"""Fault guards and bad input, tried as a new user would: one clear message, no traceback."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from support_rewards import nan_for_long_completions, raises_on_long_completions

from conftest import ROOT, env, run_args
from grpo.run.guards import (
    NonFiniteGuard,
    RewardFailure,
    TooManySkippedSteps,
    check_reward_failures,
    score_with_fallback,
)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "grpo", *args], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=300)


def assert_clean_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


# ----------------------------------------------------------------- reward failures
class Wrap:
    name = "custom"

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, prompts, completions, examples):
        from rewards.base import RewardOutput

        values = self.fn(prompts, completions, examples)
        return RewardOutput(values, {"custom": values})


COMPLETIONS = ["short", "a completion far too long", "ok", "also much too long here"]
EXAMPLES = [{"target": "t"}] * 4


def test_nan_reward_marks_only_that_sample():
    values, _, errors = score_with_fallback(Wrap(nan_for_long_completions), [""] * 4, COMPLETIONS, EXAMPLES)
    assert np.isnan(values[[1, 3]]).all() and values[[0, 2]].tolist() == [1.0, 1.0]
    assert sorted(errors) == [1, 3]


def test_raising_reward_falls_back_to_per_sample_scoring():
    with pytest.warns(UserWarning, match="scoring sample by sample"):
        values, components, errors = score_with_fallback(Wrap(raises_on_long_completions), [""] * 4, COMPLETIONS,
                                                         EXAMPLES)
    assert values[[0, 2]].tolist() == [1.0, 1.0] and np.isnan(values[[1, 3]]).all()
    assert "cannot score a long completion" in errors[1]
    assert components["custom"][0] == 1.0


def test_too_many_failures_stop_with_the_inputs():
    with pytest.raises(RewardFailure, match=r"(?s)2 of 4 samples.*a completion far too long"):
        check_reward_failures({1: "boom", 3: "boom"}, COMPLETIONS, EXAMPLES, max_fraction=0.25)
    check_reward_failures({1: "boom"}, COMPLETIONS, EXAMPLES, max_fraction=0.25)  # 1 of 4 is allowed


def test_run_survives_a_reward_that_fails_for_some_samples(tmp_path):
    # max_new_tokens=6 gives completions of varied character length: some fail, the run goes on
    result = subprocess.run(run_args(tmp_path / "run", "max_steps=2", "custom_reward=support_rewards:nan_for_long_completions",
                                     "max_reward_failures=1.0"), cwd=ROOT, env=env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl") if '"reward_failures"' in line]
    assert sum(row["reward_failures"] for row in rows) > 0


def test_run_stops_when_the_reward_always_fails(tmp_path):
    result = subprocess.run(run_args(tmp_path / "run", "max_steps=2", "custom_reward=support_rewards:always_raises"),
                            cwd=ROOT, env=env(), capture_output=True, text=True)
    assert_clean_error(result, "4 of 4 samples could not be scored", "the reward service is down")


# ----------------------------------------------------------------- non-finite steps
def test_guard_counts_consecutive_skips_and_stops():
    guard = NonFiniteGuard(max_consecutive=3)
    assert not guard.is_finite(float("nan"), 1.0) and not guard.is_finite(1.0, float("inf"))
    guard.record(True)
    guard.record(True)
    guard.record(False)  # a good step resets the streak
    guard.record(True)
    guard.record(True)
    with pytest.raises(TooManySkippedSteps, match="3 consecutive"):
        guard.record(True)
    assert guard.total == 5


def test_non_finite_steps_are_skipped_then_stop_the_run_with_a_checkpoint(tmp_path, monkeypatch):
    from grpo import trainer
    from grpo.config import GRPOConfig
    from grpo.run.config import load_config

    monkeypatch.chdir(ROOT)
    real_loss = trainer.grpo_loss
    monkeypatch.setattr(trainer, "grpo_loss", lambda *a, **k: (real_loss(*a, **k)[0] * float("nan"), real_loss(*a, **k)[1]))
    cfg = load_config(GRPOConfig, overrides=dict(
        out_dir=str(tmp_path / "run"), model="tiny-random-llama", max_steps=5, prompts_per_step=1, group_size=2,
        max_new_tokens=4, dev_limit=2, eval_every=0, max_prompt_tokens=96, max_skipped_steps=2, beta=0.0))
    before = {k: v.clone() for k, v in trainer.load_model("tiny-random-llama")[0].state_dict().items()}
    with pytest.raises(TooManySkippedSteps):
        trainer.train(cfg, Wrap(lambda p, c, e: np.arange(len(c)) % 2.0))
    rows = [r for r in json.loads("[" + ",".join(open(tmp_path / "run" / "metrics.jsonl")) + "]") if "reward" in r]
    assert [r["skipped_updates"] for r in rows] == [1]
    # the last good state (here: the untouched start) is checkpointed
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "run" / "checkpoints" / "step-000002" / "model.safetensors")
    for key, value in saved.items():
        assert torch.equal(value, before[key]), key


# ----------------------------------------------------------------- bad input at the CLI
def test_unknown_config_key():
    assert_clean_error(cli("configs/smoke.toml", "learning_rate=1"), "unknown config key 'learning_rate'")


def test_wrong_type_and_range():
    assert_clean_error(cli("configs/smoke.toml", "group_size=abc"), "'group_size' takes a int")
    assert_clean_error(cli("configs/smoke.toml", "top_p=2"), "'top_p' must be in (0, 1]")


def test_malformed_data(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"source": "a", "target": "b"}\n{"source": "a",\n')
    assert_clean_error(cli("configs/smoke.toml", f"data={tmp_path / 'train.jsonl'}", f"out_dir={tmp_path / 'r'}"),
                       "train.jsonl:2: malformed JSON")


def test_empty_and_non_utf8_data(tmp_path):
    (tmp_path / "train.jsonl").write_text("")
    assert_clean_error(cli("configs/smoke.toml", f"data={tmp_path / 'train.jsonl'}", f"out_dir={tmp_path / 'r'}"),
                       "is empty")
    (tmp_path / "train.jsonl").write_bytes(b'{"source": "\xc3\x28", "target": "b"}\n')
    assert_clean_error(cli("configs/smoke.toml", f"data={tmp_path / 'train.jsonl'}", f"out_dir={tmp_path / 'r'}"),
                       "train.jsonl:1: not valid UTF-8")


def test_unknown_model_lists_the_builtins(tmp_path):
    assert_clean_error(cli("configs/smoke.toml", "model=no-such-model", f"out_dir={tmp_path / 'r'}"),
                       "cannot load model 'no-such-model'", "smollm2-135m", "gemma3-270m", "tiny-random-llama")


def test_reward_encoder_that_cannot_load(tmp_path):
    assert_clean_error(cli("configs/smoke.toml", f"encoder={tmp_path / 'no-encoder'}", f"out_dir={tmp_path / 'r'}"),
                       "no-encoder")


def test_existing_run_folder_is_not_overwritten(tmp_path):
    out = tmp_path / "r"
    (out).mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    assert_clean_error(cli("configs/smoke.toml", f"out_dir={out}", "overwrite=false"), "already holds a run")
    assert (out / "metrics.jsonl").read_text() == '{"step": 1}\n'
