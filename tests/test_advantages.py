import math

import numpy as np
import pytest
import torch

from grpo.advantages import group_advantages


def test_group_scale_hand_example():
    # groups [1, 2] and [3, 6]: centred [-0.5, 0.5] and [-1.5, 1.5]; n-1 stds 0.70711 and 2.12132
    advantages, zero_std = group_advantages(torch.tensor([1.0, 2.0, 3.0, 6.0]), group_size=2, std_offset=0.0)
    expected = torch.tensor([-0.5 / 0.5**0.5, 0.5 / 0.5**0.5, -1.5 / 4.5**0.5, 1.5 / 4.5**0.5])
    assert torch.allclose(advantages, expected, atol=1e-6)
    assert torch.allclose(advantages, torch.tensor([-0.70711, 0.70711, -0.70711, 0.70711]), atol=1e-5)
    assert zero_std.tolist() == [False, False]


def test_batch_scale_divides_by_the_batch_std():
    # batch [1, 2, 3, 6]: mean 3, n-1 variance 14/3, std 2.160247
    advantages, _ = group_advantages(torch.tensor([1.0, 2.0, 3.0, 6.0]), 2, scale="batch", std_offset=0.0)
    std = math.sqrt(14 / 3)
    assert torch.allclose(advantages, torch.tensor([-0.5, 0.5, -1.5, 1.5]) / std, atol=1e-6)
    assert torch.allclose(advantages, torch.tensor([-0.23146, 0.23146, -0.69437, 0.69437]), atol=1e-5)


def test_no_scale_is_centred_rewards():
    advantages, _ = group_advantages(torch.tensor([1.0, 2.0, 3.0, 6.0]), 2, scale="none")
    assert advantages.tolist() == [-0.5, 0.5, -1.5, 1.5]


def test_std_offset_enters_the_denominator():
    advantages, _ = group_advantages(torch.tensor([0.0, 2.0]), 2, std_offset=0.5)
    # std of [0, 2] (n-1) is sqrt(2); centred [-1, 1]
    assert torch.allclose(advantages, torch.tensor([-1.0, 1.0]) / (2**0.5 + 0.5))


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_equal_rewards_give_zero_advantage(scale):
    advantages, zero_std = group_advantages(torch.tensor([2.0, 2.0, 2.0, 1.0, 3.0, 5.0]), 3, scale=scale)
    assert advantages[:3].tolist() == [0.0, 0.0, 0.0]
    assert zero_std.tolist() == [True, False]
    assert float(zero_std.float().mean()) == 0.5


def test_invalid_rows_leave_the_statistics_and_get_zero():
    rewards = torch.tensor([1.0, float("nan"), 3.0, 4.0, 4.0, 4.0])
    valid = torch.isfinite(rewards)
    advantages, zero_std = group_advantages(rewards, 3, std_offset=0.0, valid=valid)
    # valid rewards of group 1: [1, 3], mean 2, std sqrt(2)
    assert torch.allclose(advantages[:3], torch.tensor([-1 / 2**0.5, 0.0, 1 / 2**0.5]), atol=1e-6)
    assert advantages[3:].tolist() == [0.0, 0.0, 0.0]
    assert zero_std.tolist() == [False, True]


def test_unknown_scale_raises():
    with pytest.raises(ValueError, match="scale"):
        group_advantages(torch.zeros(4), 2, scale="rank")


def test_normalize_then_sum_by_hand():
    from grpo.advantages import normalize_then_sum

    # G = 2. Group 1: a = [1, 3] -> centred [-1, 1], std sqrt(2) -> [-0.70711, 0.70711];
    #                 b = [0, 10] -> centred [-5, 5], std sqrt(50) -> [-0.70711, 0.70711].
    # Group 2: a = [2, 2] is constant -> 0; b = [5, 1] -> centred [2, -2], std sqrt(8) -> [0.70711, -0.70711].
    # r~ = 1.0 * a~ + 0.5 * b~
    terms = {"a": torch.tensor([1.0, 3.0, 2.0, 2.0]), "b": torch.tensor([0.0, 10.0, 5.0, 1.0])}
    summed = normalize_then_sum(terms, {"a": 1.0, "b": 0.5}, group_size=2, std_offset=0.0)
    assert torch.allclose(summed, torch.tensor([-1.06066, 1.06066, 0.35355, -0.35355]), atol=1e-5)
    # Summing first gives [1, 8, 4.5, 2.5]: the same group-1 order, but group 2's scale comes from b's raw range.
    total = terms["a"] + 0.5 * terms["b"]
    summed_first, _ = group_advantages(total, 2, std_offset=0.0)
    assert torch.allclose(summed_first, torch.tensor([-0.70711, 0.70711, 0.70711, -0.70711]), atol=1e-5)


def test_normalize_then_sum_leaves_invalid_rows_out():
    from grpo.advantages import normalize_then_sum

    # group [1, nan, 3]: the valid rows [1, 3] have mean 2 and std sqrt(2); the NaN row gets 0.
    values = torch.tensor([1.0, float("nan"), 3.0])
    summed = normalize_then_sum({"a": values}, {"a": 2.0}, group_size=3, std_offset=0.0, valid=torch.isfinite(values))
    assert torch.allclose(summed, torch.tensor([-2 / 2**0.5, 0.0, 2 / 2**0.5]), atol=1e-6)


def test_soft_overlong_penalty_by_hand():
    from grpo.overlong import soft_overlong_penalty
    from grpo.run.errors import ConfigError

    # L_max = 10, L_buf = 4: free up to 6 tokens, then -1/4 per token, -1 at the cap and beyond.
    lengths = np.array([3, 6, 7, 8, 10, 11])
    np.testing.assert_allclose(soft_overlong_penalty(lengths, max_tokens=10, buffer=4),
                               [0.0, 0.0, -0.25, -0.5, -1.0, -1.0])
    with pytest.raises(ConfigError, match="overlong buffer"):
        soft_overlong_penalty(lengths, max_tokens=10, buffer=0)


def test_term_weights_of_a_weighted_sum_and_of_a_plain_reward():
    from grpo.config import GRPOConfig
    from grpo.run.errors import ConfigError
    from grpo.trainer import reward_term_weights
    from rewards.base import RewardOutput, WeightedSum

    class Constant:
        name = "constant"

        def __call__(self, prompts, completions, examples):
            return RewardOutput(np.ones(len(completions)), {})

    summed = WeightedSum([(2.0, Constant())])
    gdpo = GRPOConfig(reward_normalization="normalize_then_sum", overlong_buffer=4, max_new_tokens=8,
                      reward_weights={"semantic": 1.0, "overlong": 0.5})
    assert reward_term_weights(summed, gdpo) == {"constant": 2.0, "overlong": 0.5}
    assert reward_term_weights(Constant(), GRPOConfig()) == {"reward": 1.0}
    # a reward without named terms cannot be normalised term by term: refused, not silently one term
    with pytest.raises(ConfigError, match="no `weights` mapping"):
        reward_term_weights(Constant(), gdpo)
