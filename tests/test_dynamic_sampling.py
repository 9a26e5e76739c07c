"""Dynamic sampling (grpo/dynamic_sampling.py): by hand on made-up batches, then in the training loop."""

import json

import numpy as np
import pytest
import torch

from conftest import tiny_config
from grpo import trainer
from grpo.advantages import centred_group_rewards
from grpo.config import build_reward_from_config
from grpo.dynamic_sampling import ScoredBatch, concat_rollouts, fill_with_informative_groups
from grpo.rollout import Rollout
from grpo.run.metrics import read_metrics

pytestmark = pytest.mark.usefixtures("repo_root")  # presets and data/ are read relative to the repository

PAD = 0


def test_group_std_by_hand():
    # groups of 3: [1, 2, 3] std 1; [5, 5, 5] std 0; [0, nan, 4]: valid [0, 4], std sqrt(8)
    scores = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0, 0.0, float("nan"), 4.0])
    _, std = centred_group_rewards(scores, 3, torch.isfinite(scores))
    assert torch.allclose(std, torch.tensor([1.0, 0.0, 8**0.5]))
    # a group with one valid row has no spread
    assert centred_group_rewards(torch.tensor([1.0, 7.0]), 2, torch.tensor([True, False]))[1].tolist() == [0.0]


def made_up_batch(rewards, prompt_len, completion_len, tag):
    """A ScoredBatch with G = 2 whose token ids tell where each row came from (tag * 100 + row)."""
    rows = len(rewards)
    ids = torch.arange(rows).unsqueeze(1) + 100 * tag
    rewards = torch.tensor(rewards)
    return ScoredBatch(
        examples=[{"id": f"{tag}-{row // 2}"} for row in range(rows)],
        rollout=Rollout(ids.expand(rows, prompt_len).clone(), torch.ones(rows, prompt_len, dtype=torch.long),
                        ids.expand(rows, completion_len).clone(), torch.ones(rows, completion_len),
                        torch.zeros(rows, dtype=torch.bool), -ids.expand(rows, completion_len).float()),
        completions=[f"{tag}/{row}" for row in range(rows)],
        rewards=rewards, components={"term": rewards.double().numpy() * 2}, errors={}, scores=rewards.clone())


def test_a_second_round_fills_the_batch_with_informative_groups():
    # round 1: group 0 [1, 1] is constant, group 1 [0, 2] kept;
    # round 2 (longer prompts and completions): group 0 [3, 3] constant, group 1 [5, 6] kept.
    first = made_up_batch([1.0, 1.0, 0.0, 2.0], prompt_len=3, completion_len=2, tag=1)
    second = made_up_batch([3.0, 3.0, 5.0, 6.0], prompt_len=5, completion_len=4, tag=2)
    batch, stats = fill_with_informative_groups(first, lambda: second, num_groups=2, group_size=2, tolerance=0.0,
                                                max_extra_rounds=3, pad_id=PAD)
    assert stats == {"dynamic_sampling/rounds": 2, "dynamic_sampling/frac_dropped": 0.5,
                     "dynamic_sampling/filled_with_dropped": 0}
    assert batch.rewards.tolist() == batch.scores.tolist() == [0.0, 2.0, 5.0, 6.0]
    assert batch.completions == ["1/2", "1/3", "2/2", "2/3"]
    assert [e["id"] for e in batch.examples] == ["1-1", "1-1", "2-1", "2-1"]
    assert batch.components["term"].tolist() == [0.0, 4.0, 10.0, 12.0]
    # round-1 rows are left-padded to 5 prompt tokens and right-padded to 4 completion tokens
    assert batch.rollout.prompt_ids[0].tolist() == [PAD, PAD, 102, 102, 102]
    assert batch.rollout.prompt_mask[0].tolist() == [0, 0, 1, 1, 1]
    assert batch.rollout.completion_ids[1].tolist() == [103, 103, PAD, PAD]
    assert batch.rollout.completion_mask[1].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert batch.rollout.sampler_logprobs[1].tolist() == [-103.0, -103.0, 0.0, 0.0]  # right-padded with 0
    assert batch.rollout.prompt_ids[2].tolist() == [202] * 5


def test_a_batch_still_short_after_the_last_round_takes_the_widest_dropped_groups():
    # tolerance 0.05: [1, 1.01] (std 0.00707) counts as constant, [4, 4.5] (std 0.354) does not.
    rounds = iter([made_up_batch([3.0, 3.0, 4.0, 4.5], 3, 2, tag=2), made_up_batch([9.0, 9.0, 9.0, 9.0], 3, 2, 3)])
    first = made_up_batch([1.0, 1.01, 2.0, 2.0], 3, 2, tag=1)
    batch, stats = fill_with_informative_groups(first, lambda: next(rounds), num_groups=2, group_size=2,
                                                tolerance=0.05, max_extra_rounds=1, pad_id=PAD)
    # one extra round only; the widest dropped group (round 1's [1, 1.01]) completes the batch
    assert stats == {"dynamic_sampling/rounds": 2, "dynamic_sampling/frac_dropped": 0.75,
                     "dynamic_sampling/filled_with_dropped": 1}
    assert batch.rewards.tolist() == pytest.approx([4.0, 4.5, 1.0, 1.01])
    # with no tolerance the nearly-equal group counts as informative and no round is needed
    _, stats = fill_with_informative_groups(made_up_batch([1.0, 1.01, 0.0, 1.0], 3, 2, tag=1), lambda: None, 2, 2,
                                            tolerance=0.0, max_extra_rounds=1, pad_id=PAD)
    assert stats["dynamic_sampling/rounds"] == 1


def test_concat_rollouts_keeps_log_probs(tiny):
    # Extra left padding of a prompt and right padding of a completion change no log-prob of a real token.
    from grpo.logprobs import completion_logprobs
    from grpo.rollout import sample_groups

    model, tokenizer = tiny
    rollouts = [sample_groups(model, tokenizer, [prompt], 2, 5, generator=torch.Generator().manual_seed(0))
                for prompt in ("one", "a much longer prompt than the first")]
    joined = concat_rollouts(rollouts, tokenizer.pad_token_id)

    def logprobs(r):
        return completion_logprobs(model, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)[0]

    with torch.no_grad():
        apart = [logprobs(r) for r in rollouts]
        together = logprobs(joined)
    short = rollouts[0].completion_ids.shape[1]
    assert torch.allclose(together[:2, :short], apart[0], atol=1e-5)
    assert torch.allclose(together[2:, : rollouts[1].completion_ids.shape[1]], apart[1], atol=1e-5)


# --------------------------------------------------------------------------- in the training loop
def custom_run(tmp_path, name, reward, **overrides):
    cfg = tiny_config(tmp_path / name, max_steps=2, reward_weights={"custom": 1.0},
                      custom_reward=f"support_rewards:{reward}", log_completions_every=1, **overrides)
    trainer.train(cfg, build_reward_from_config(cfg))
    run = tmp_path / name / "run"
    steps = [row for row in read_metrics(run / "metrics.jsonl") if "reward" in row]
    tables = {step: [json.loads(line) for line in open(run / "completions" / f"step-{step:06d}.jsonl")]
              for step in (1, 2)}
    return steps, tables


def group_stds(rows, group_size=4):
    rewards = np.array([row["reward"] for row in rows]).reshape(-1, group_size)
    return rewards.std(axis=1, ddof=1)


def test_dynamic_sampling_fills_the_batch_with_groups_that_have_a_spread(tmp_path):
    # The reward is constant for prompts whose target has an even length.
    off, _ = custom_run(tmp_path, "off", "constant_for_even_targets")
    on, tables = custom_run(tmp_path, "on", "constant_for_even_targets", filter_zero_std_groups=True,
                            max_extra_sampling_rounds=6)
    # Both runs draw the same first round: without the filter it holds a constant group ...
    assert off[0]["frac_reward_zero_std"] > 0
    assert "dynamic_sampling/rounds" not in off[0]
    # ... which the filter dropped, sampling more prompts until both groups had a spread.
    assert on[0]["dynamic_sampling/rounds"] >= 2 and on[0]["dynamic_sampling/frac_dropped"] > 0
    for row, step in zip(on, (1, 2)):
        assert row["dynamic_sampling/filled_with_dropped"] == 0
        assert row["frac_reward_zero_std"] == 0.0
        assert len(tables[step]) == 8 and (group_stds(tables[step]) > 0).all()


def test_dynamic_sampling_tolerance_drops_nearly_constant_groups(tmp_path):
    # Even-target groups score 1 + 0.001 * characters: a spread far below the tolerance.
    steps, tables = custom_run(tmp_path, "tol", "nearly_constant_for_even_targets", filter_zero_std_groups=True,
                               zero_std_tolerance=0.05, max_extra_sampling_rounds=6)
    assert any(row["dynamic_sampling/frac_dropped"] > 0 for row in steps)
    for row, step in zip(steps, (1, 2)):
        assert row["dynamic_sampling/filled_with_dropped"] == 0
        assert (group_stds(tables[step]) > 0.05).all()


def test_dynamic_sampling_stops_after_the_extra_rounds(tmp_path):
    steps, tables = custom_run(tmp_path, "max", "always_one", filter_zero_std_groups=True,
                               max_extra_sampling_rounds=2)
    for row in steps:
        assert row["dynamic_sampling/rounds"] == 3  # the first round and two extra
        assert row["dynamic_sampling/frac_dropped"] == 1.0
        assert row["dynamic_sampling/filled_with_dropped"] == 2  # both groups of the batch
    assert len(tables[1]) == 8
