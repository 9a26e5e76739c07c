"""The summary table of make train-mt: its differences, its constant answer and its markdown."""

import numpy as np
import pytest

from eval.hacking import best_constant_answer
from eval.train_summary import markdown_table, paired_differences
from rewards import RewardOutput


def test_paired_differences_are_per_item_after_minus_before():
    before = {"per_item": {"chrf": [0.1, 0.2, 0.3, 0.4]}}
    after = {"per_item": {"chrf": [0.2, 0.3, 0.4, 0.5]}}
    diff = paired_differences(after, before)["chrf"]
    # every item gains exactly 0.1, so every resample does too
    assert (diff["mean"], diff["low"], diff["high"]) == pytest.approx((0.1, 0.1, 0.1))


def test_best_constant_is_the_candidate_with_the_highest_mean_reward():
    # reward: 1 for the item's own reference, 0.5 for "generic", 0 otherwise
    def reward(prompts, completions, examples):
        values = [1.0 if c == e["target"] else 0.5 if c == "generic" else 0.0 for c, e in zip(completions, examples)]
        return RewardOutput(values=np.array(values))

    pool = [{"prompt": "", "target": t, "targets": [t, "generic"] if t == "a" else [t]} for t in ("a", "b", "c")]
    # candidates a, generic, b, c: a and b and c earn 1/3 each, generic earns 0.5
    assert best_constant_answer(reward, pool) == ("generic", pytest.approx(0.5))


def test_markdown_table_has_a_row_per_output_set():
    scores = {"reward": 1.5, "chrf": 0.083, "bleu": 0.065, "similarity": 0.47, "target_language": 0.96,
              "distinct_ratio": 0.005, "top_share": 1.0, "length_ratio": 1.08}
    table = markdown_table({"cold start": scores})
    assert table.splitlines()[2] == "| cold start | 1.500 | 8.3% | 6.5% | 0.470 | 96% | 0.5% | 100.0% | 1.08 |"
