"""The hacking statistics of dev outputs, against values counted by hand."""

import pytest

from eval.hacking import hacking_warning, length_ratios, most_frequent_output, output_statistics


def test_statistics_of_a_hedge_counted_by_hand():
    outputs = ["西亚语", "西亚语 ", "西亚语", "我们走吧。", "Let's go."]
    references = [["他来了。"], ["我们走吧。", "走吧。"], ["西亚语"], ["我们走吧。"], ["走吧。"]]
    stats = output_statistics(outputs, references, "zh")
    # answers after stripping: 西亚语 x3, 我们走吧。, Let's go.  -> 3 distinct of 5, the top one 3 of 5
    assert stats["distinct_ratio"] == pytest.approx(3 / 5)
    assert stats["top_share"] == pytest.approx(3 / 5)
    # every output but the English one is Han only ("。" is punctuation, not a letter)
    assert stats["target_language"] == pytest.approx(4 / 5)
    # visible characters: 3/4, 3/mean(5, 3), 3/3, 5/5, 8/3 ("Let's" 5 + "go." 3)
    expected = [3 / 4, 3 / 4, 3 / 3, 5 / 5, 8 / 3]
    assert length_ratios(outputs, references) == pytest.approx(expected)
    assert stats["length_ratio"] == pytest.approx(sum(expected) / 5)
    assert 0.0 < stats["chrf"] < 1.0 and 0.0 <= stats["bleu"] < 1.0


def test_perfect_outputs_against_several_references():
    outputs = ["走吧。", "他来了。"]
    references = [["我们走吧。", "走吧。"], "他来了。"]  # a plain string is one reference
    stats = output_statistics(outputs, references, "zh")
    assert stats["distinct_ratio"] == 1.0 and stats["top_share"] == 0.5
    assert stats["chrf"] == pytest.approx(1.0) and stats["bleu"] == pytest.approx(1.0)
    # the length ratio compares with the mean reference length: 3 / mean(5, 3), 4 / 4
    assert stats["length_ratio"] == pytest.approx((3 / 4 + 1.0) / 2)


def test_warning_only_for_a_hedge():
    varied = [f"句子{i}" for i in range(20)]
    references = [[text] for text in varied]
    assert hacking_warning(output_statistics(varied, references, "zh"), varied) is None
    # 3 of 20 identical: 18 distinct answers, and the top share 15% passes 10%
    hedged = ["西亚语"] * 3 + varied[3:]
    warning = hacking_warning(output_statistics(hedged, references, "zh"), hedged)
    assert warning is not None and "('西亚语') is 15%" in warning and "90% distinct" in warning
    assert most_frequent_output(hedged) == "西亚语"


def test_misaligned_inputs_are_refused():
    with pytest.raises(ValueError, match="aligned"):
        output_statistics(["a"], [["a"], ["b"]], "zh")
