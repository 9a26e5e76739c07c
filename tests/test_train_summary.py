"""The summary table of make train-mt: its differences, its constant answer and its markdown."""

import numpy as np
import pytest

from eval.hacking import best_constant_answer
from eval.train_summary import markdown_table, paired_differences, pooled_differences, refuse_unlike_runs
from grpo.run.errors import DataError
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


def test_pooled_differences_resample_seeds_and_items():
    # seed 1 gains 0.1 on every item, seed 2 gains 0.3: items add no noise, only seeds do
    before = {"per_item": {"chrf": [0.0, 0.1, 0.2, 0.3]}}
    runs = [{"per_item": {"chrf": [0.1, 0.2, 0.3, 0.4]}}, {"per_item": {"chrf": [0.3, 0.4, 0.5, 0.6]}}]
    pooled = pooled_differences(runs, before)["chrf"]
    assert pooled["seed_means"] == pytest.approx([0.1, 0.3])
    # a resample's mean is 0.1 (seed 1 twice, p = 1/4), 0.2 or 0.3 (seed 2 twice, p = 1/4)
    assert (pooled["mean"], pooled["low"], pooled["high"]) == pytest.approx((0.2, 0.1, 0.3))
    # t interval of two seed means: 0.2 +- 12.706 * (0.1 * sqrt(2)) / sqrt(2)
    assert (pooled["seed_low"], pooled["seed_high"]) == pytest.approx((0.2 - 1.2706, 0.2 + 1.2706))


def _saved_run(folder, **values):
    folder.mkdir()
    (folder / "config.toml").write_text("".join(f"{key} = {value!r}\n" for key, value in values.items()))
    return folder


def test_runs_pooled_as_seeds_may_differ_only_in_their_seed(tmp_path):
    a = _saved_run(tmp_path / "a", seed=0, out_dir="a", lr=2e-4)
    b = _saved_run(tmp_path / "b", seed=1, out_dir="b", lr=2e-4)
    c = _saved_run(tmp_path / "c", seed=2, out_dir="c", lr=3e-4)
    refuse_unlike_runs([a, b])
    with pytest.raises(DataError, match="differ in lr"):
        refuse_unlike_runs([a, b, c])
    with pytest.raises(DataError, match="named twice"):
        refuse_unlike_runs([a, a])
