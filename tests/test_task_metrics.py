"""Task metrics against values worked out by hand."""

import math

import numpy as np
import pytest

from eval.task_metrics import (
    corpus_bleu,
    corpus_chrf,
    language_consistency_rate,
    lcs_length,
    mean_chars,
    mean_embedding_similarity,
    mean_rouge_l,
    per_example_scores,
    rouge_l_f1,
    rouge_tokens,
    task_metrics,
)
from grpo.run.errors import DataError


class TableEncoder:
    """An encoder whose unit vectors are written down, so cosines are known exactly."""

    identity = "table"
    VECTORS = {"甲": [1.0, 0.0], "乙": [0.0, 1.0], "丙": [0.6, 0.8]}

    def encode(self, texts):
        return np.array([self.VECTORS[text] for text in texts], dtype=np.float32)

    def unknown_char_fraction(self, text):
        return None


def test_bleu_english_words():
    # 1-4 gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths so BP = 1.
    expected = (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert corpus_bleu(["the cat sat on the mat"], ["the cat sat on a mat"], "en") == pytest.approx(expected)


def test_bleu_chinese_counts_characters():
    # 7 hypothesis characters, 4 reference: precisions 4/7, 3/6, 2/5, 1/4; longer hypothesis so BP = 1.
    expected = (4 / 7 * 3 / 6 * 2 / 5 * 1 / 4) ** 0.25
    assert corpus_bleu(["我爱北京天安门"], ["我爱北京"], "zh") == pytest.approx(expected)


def test_bleu_tibetan_counts_characters():
    # བ ོ ད ་ ཡ ི ག vs བ ོ ད ་ ས ྐ ད: the shared prefix བོད་ gives 4/7, 3/6, 2/5, 1/4.
    expected = (4 / 7 * 3 / 6 * 2 / 5 * 1 / 4) ** 0.25
    assert corpus_bleu(["བོད་ཡིག"], ["བོད་སྐད"], "bo") == pytest.approx(expected)


def test_chrf_single_and_corpus():
    # abc vs abd: order 1 F = 2/3, order 2 F = 1/2, order 3 F = 0; orders 4-6 absent.
    assert corpus_chrf(["abc"], ["abd"]) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    # Counts add over the corpus: 5/6, 3/4, 1/2.
    assert corpus_chrf(["abc", "abc"], ["abd", "abc"]) == pytest.approx((5 / 6 + 3 / 4 + 1 / 2) / 3)


def test_lcs_length():
    assert lcs_length("ABCBDAB", "BDCABA") == 4  # BCBA
    assert lcs_length("", "abc") == 0
    assert lcs_length(["the", "cat"], ["a", "cat", "the"]) == 1


def test_rouge_l_f1():
    # LCS 4, P = 4/7, R = 1: F = 2 * (4/7) / (4/7 + 1) = 8/11.
    assert rouge_l_f1(list("我爱北京天安门"), list("我爱北京")) == pytest.approx(8 / 11)
    assert rouge_l_f1([], list("我")) == 0.0
    assert rouge_l_f1(list("甲"), list("乙")) == 0.0


def test_rouge_tokens_follow_the_language():
    assert rouge_tokens("我 爱 北京", "zh") == ["我", "爱", "北", "京"]
    assert rouge_tokens("བོད་ ཡིག", "bo") == ["བ", "ོ", "ད", "་", "ཡ", "ི", "ག"]
    assert rouge_tokens("the cat  sat", "en") == ["the", "cat", "sat"]


def test_mean_rouge_l():
    # English words: LCS the cat sat on mat = 5 of 6 each way, F = 5/6; second pair F = 0.
    score = mean_rouge_l(["the cat sat on the mat", "dog"], ["the cat sat on a mat", "cat"], "en")
    assert score == pytest.approx((5 / 6 + 0) / 2)


def test_embedding_similarity_is_the_mean_cosine():
    # cos(甲, 甲) = 1, cos(丙, 甲) = 0.6, and an empty output scores 0.
    score = mean_embedding_similarity(["甲", "丙", ""], ["甲", "甲", "乙"], TableEncoder())
    assert score == pytest.approx((1 + 0.6 + 0) / 3)


def test_language_consistency_and_length():
    outputs = ["北京", "Beijing", "北京 Beijing", "2024年"]
    assert language_consistency_rate(outputs, "zh") == pytest.approx(2 / 4)
    assert mean_chars(outputs) == pytest.approx((2 + 7 + 10 + 5) / 4)


def test_task_metrics_collects_every_metric():
    metrics = task_metrics(["我爱北京天安门"], ["我爱北京"], "zh", encoder=None)
    assert set(metrics) == {"n", "bleu", "chrf", "rouge_l", "language_consistency", "mean_chars"}
    assert metrics["n"] == 1
    assert metrics["rouge_l"] == pytest.approx(8 / 11)
    assert metrics["bleu"] == pytest.approx((1 / 35) ** 0.25)
    assert metrics["language_consistency"] == 1.0
    assert metrics["mean_chars"] == 7.0
    with_encoder = task_metrics(["甲"], ["丙"], "zh", encoder=TableEncoder())
    assert with_encoder["embedding_sim"] == pytest.approx(0.6)
    assert math.isclose(with_encoder["bleu"], 0.0)


def test_task_metrics_rejects_misaligned_lists():
    with pytest.raises(DataError, match="aligned"):
        task_metrics(["a"], ["a", "b"], "en")
    with pytest.raises(DataError, match="no outputs"):
        task_metrics([], [], "en")


def test_per_example_scores_by_hand():
    scores = per_example_scores(["abc", "甲", "北京 Beijing"], ["abd", "丙", "北京"], "zh")
    # chrF of abc vs abd as in the corpus test (one pair); 甲 vs 丙 share no character.
    assert scores["chrf"][0] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert scores["chrf"][1] == 0.0
    assert scores["rouge_l"][:2] == [pytest.approx(2 / 3), 0.0]   # characters a, b common of 3 and 3
    assert scores["language_consistency"] == [0.0, 1.0, 0.0]
    assert "embedding_sim" not in scores
    with_encoder = per_example_scores(["甲", "丙", ""], ["甲", "甲", "乙"], "zh", encoder=TableEncoder())
    assert with_encoder["embedding_sim"] == [pytest.approx(1.0), pytest.approx(0.6), 0.0]
    # The corpus mean of the per-example ROUGE-L is the reported ROUGE-L.
    outputs, references = ["我爱北京天安门", "北京"], ["我爱北京", "南京"]
    assert np.mean(per_example_scores(outputs, references, "zh")["rouge_l"]) == pytest.approx(
        mean_rouge_l(outputs, references, "zh"))
