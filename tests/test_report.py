"""The reproduction report on hand-made measurements: gains, matched pair, frontiers, the law, the headline."""

import json

import numpy as np
import pytest

from conftest import BASE, SWEEP, measurement
from eval.report import (
    checkpoint_row,
    forgetting_law,
    frontier_comparison,
    headline,
    load_measurements,
    matched_pair,
    write_report,
)


def test_checkpoint_row_is_the_paired_change_against_the_base():
    row = checkpoint_row(SWEEP[1], BASE, "chrf")
    assert row["arm"] == "sft"
    assert row["gain"] == {"mean": pytest.approx(0.3), "low": pytest.approx(0.3), "high": pytest.approx(0.3)}
    assert row["cloze_change"]["mean"] == pytest.approx(-30.0)   # 5 of 10 against 8 of 10
    assert row["task_kl_forward"] == 3.0


def test_matched_pair_takes_grpo_largest_gain_and_the_closest_sft():
    measurements = {m["label"]: m for m in [BASE, *SWEEP]}
    # GRPO's largest gain is 0.25 (step 20); SFT gains are 0.1 and 0.3: 0.3 is closer.
    assert matched_pair(measurements, "chrf") == (("sft-mt-lr0.0002", 20), ("grpo-mt-lr0.0001", 20))


def test_frontier_comparison_by_hand():
    rows = [checkpoint_row(m, BASE, "chrf") for m in SWEEP]
    comparison = frontier_comparison(rows, points=2)
    # SFT frontier: (0.1, -10), (0.3, -30). GRPO: (0.05, 0) is dominated by (0.15, 0), leaving
    # (0.15, 0), (0.25, -10), held at 0 down to GRPO's lowest gain 0.05. Overlap: from SFT's lowest
    # gain 0.1 to GRPO's highest 0.25.
    assert comparison["frontiers"]["grpo"] == [(pytest.approx(0.15), 0.0), (pytest.approx(0.25), -10.0)]
    assert comparison["overlap"] == [pytest.approx(0.1), pytest.approx(0.25)]
    # At 0.1: GRPO 0 (held), SFT -10 -> +10. At 0.25: GRPO -10, SFT -10 + (0.15 / 0.2) * -20 = -25 -> +15.
    assert comparison["grpo_minus_sft"] == [pytest.approx(10.0), pytest.approx(15.0)]


def test_forgetting_law_matches_a_direct_fit():
    rows = [checkpoint_row(m, BASE, "chrf") for m in SWEEP]
    law = forgetting_law(rows)
    # Drops 10, 30, 0, 0, 10 against forward KL 1, 3, 0.5, 0.6, 1.2: not exactly linear, but R² is high.
    drops, kls = np.array([10, 30, 0, 0, 10.0]), np.array([1, 3, 0.5, 0.6, 1.2])
    fitted = np.polyval(np.polyfit(kls, drops, 1), kls)
    expected = 1 - ((drops - fitted) ** 2).sum() / ((drops - drops.mean()) ** 2).sum()
    assert law["task_kl_forward"]["r2_linear"] == pytest.approx(expected)
    assert law["points"] == 5
    assert law["general_kl"]["r2_linear"] == 0.0   # every checkpoint has general KL 0.1: nothing explained


def test_log_likelihood_change_and_its_law_by_hand():
    checkpoints = [measurement("sft-mt-lr0.0002@10", 0.2, 8, 1.0, target_logprob=-1.5),
                   measurement("sft-mt-lr0.0002@20", 0.3, 8, 2.0, target_logprob=-2.0),
                   measurement("grpo-mt-lr0.0001@10", 0.2, 8, 0.5, target_logprob=-1.2),
                   measurement("grpo-mt-lr0.0001@20", 0.3, 8, 4.0, target_logprob=-0.9)]
    rows = [checkpoint_row(m, BASE, "chrf") for m in checkpoints]
    assert rows[0]["cloze_logprob_change"] == {"mean": pytest.approx(-0.5), "low": pytest.approx(-0.5),
                                               "high": pytest.approx(-0.5)}
    law = forgetting_law(rows, "cloze_logprob_change")
    drops, kls = np.array([0.5, 1.0, 0.2, -0.1]), np.array([1.0, 2.0, 0.5, 4.0])
    fitted = np.polyval(np.polyfit(kls, drops, 1), kls)
    expected = 1 - ((drops - fitted) ** 2).sum() / ((drops - drops.mean()) ** 2).sum()
    assert law["capability"] == "cloze_logprob_change"
    assert law["task_kl_forward"]["r2_linear"] == pytest.approx(expected)


def test_headline_means_over_seeds():
    measurements = {"headline/base": measurement("headline/base", 0.1, 8, 0.0, mmlu=3),
                    "headline/sft-s0": measurement("headline/sft-s0", 0.3, 5, 2.0, mmlu=3),
                    "headline/sft-s1": measurement("headline/sft-s1", 0.5, 7, 2.0, mmlu=3),
                    "headline/grpo-s0": measurement("headline/grpo-s0", 0.3, 8, 1.0, mmlu=4),
                    "headline/grpo-s1": measurement("headline/grpo-s1", 0.3, 8, 1.0, mmlu=2)}
    table = headline(measurements, "chrf")
    assert table["sft"]["seeds"] == 2
    assert table["sft"]["task_score"]["mean"] == pytest.approx(0.4)
    # two seeds 0.3, 0.5: s = 0.1414, half width 12.706 * s / sqrt 2 = 1.2706
    assert table["sft"]["task_score"]["high"] - 0.4 == pytest.approx(12.706 * 0.1)
    assert table["grpo"]["cloze"] == {"mean": 80.0, "low": 80.0, "high": 80.0}
    assert table["grpo"]["mmlu"]["mean"] == pytest.approx(30.0)
    assert table["base"]["mmlu"] == pytest.approx(30.0)


def test_write_report_reads_the_files_and_plots(tmp_path):
    folder = tmp_path / "measurements" / "mt"
    folder.mkdir(parents=True)
    for m in [BASE, *SWEEP]:
        (folder / f"{m['label']}.json").write_text(json.dumps(m))
    assert set(load_measurements(folder)) == {"base", *(m["label"] for m in SWEEP)}
    summary = write_report(tmp_path, ["mt"], {"mt": "chrf"})
    assert summary["tasks"]["mt"]["frontier"]["mean_grpo_minus_sft"] > 0
    assert (tmp_path / "frontier_mt.png").stat().st_size > 0
    assert (tmp_path / "forgetting_law.png").stat().st_size > 0
    assert "sft-mt-lr0.0002@20" in (tmp_path / "summary.md").read_text(encoding="utf-8")


def test_write_report_pools_the_law_over_two_tasks(tmp_path):
    # The HG sweep: SFT drops 0 and 40 points at forward KL 2 and 4; GRPO drops 10 at KL 0.5
    # and 20 at KL 1. Pooled with MT's five checkpoints, the fit is over nine points.
    hg = [measurement("base", 0.1, 8, 0.0, 0.0),
          measurement("sft-hg-lr0.0002@16", 0.2, 8, 2.0), measurement("sft-hg-lr0.0002@32", 0.3, 4, 4.0),
          measurement("grpo-hg-lr0.0001@8", 0.2, 7, 0.5), measurement("grpo-hg-lr0.0001@16", 0.3, 6, 1.0)]
    for task, ms in (("mt", [BASE, *SWEEP]), ("hg", hg)):
        folder = tmp_path / "measurements" / task
        folder.mkdir(parents=True)
        for m in ms:
            (folder / f"{m['label']}.json").write_text(json.dumps(m))
    summary = write_report(tmp_path, ["mt", "hg"], {"mt": "chrf", "hg": "rouge_l"})
    drops = np.array([10, 30, 0, 0, 10, 0, 40, 10, 20.0])
    kls = np.array([1, 3, 0.5, 0.6, 1.2, 2, 4, 0.5, 1.0])
    fitted = np.polyval(np.polyfit(kls, drops, 1), kls)
    expected = 1 - ((drops - fitted) ** 2).sum() / ((drops - drops.mean()) ** 2).sum()
    pooled = summary["forgetting_law_pooled"]["cloze_change"]
    assert pooled["points"] == 9
    assert pooled["task_kl_forward"]["r2_linear"] == pytest.approx(expected)
    assert "mt and hg pooled" in (tmp_path / "summary.md").read_text(encoding="utf-8")
