"""CMRC 2018 scoring on hand examples, loading of the SQuAD-format fixture, and the greedy loop."""

import json
from pathlib import Path

import pytest

from eval.cmrc import (
    cmrc_prompt,
    evaluate_cmrc,
    exact_match,
    f1_score,
    load_cmrc,
    longest_common_substring_length,
    mixed_segmentation,
    score_cmrc,
    split_words,
    strip_punctuation,
)
from grpo.run.errors import DataError

FIXTURE = Path(__file__).parent / "fixtures" / "eval" / "cmrc2018_tiny.json"


def test_mixed_segmentation_splits_han_keeps_other_runs():
    assert mixed_segmentation("iPhone 5s是苹果的手机。") == [
        "iphone", "5s", "是", "苹", "果", "的", "手", "机", "。"]
    assert mixed_segmentation("《红楼梦》", remove_punctuation=True) == ["红", "楼", "梦"]
    assert mixed_segmentation("约3650米") == ["约", "3650", "米"]


def test_split_words_splits_ascii_punctuation_as_word_tokenize():
    assert split_words("hello, world.") == ["hello", ",", "world", "."]
    assert split_words(" 1,000.5 km ") == ["1,000.5", "km"]          # commas and points inside numbers stay
    assert split_words("china's (prc)") == ["china", "'s", "(", "prc", ")"]
    assert split_words("don't stop") == ["do", "n't", "stop"]
    assert split_words('he said "hi."') == ["he", "said", "``", "hi", ".", "''"]
    assert split_words("u.s. army") == ["u.s.", "army"]               # only the run's last period is split off
    assert split_words("50%; $3?!") == ["50", "%", ";", "$", "3", "?", "!"]
    assert mixed_segmentation("NBA的MVP, 2016年.", remove_punctuation=True) == [
        "nba", "的", "mvp", ",", "2016", "年", "."]


def test_english_punctuation_scored_as_the_official_script():
    # gold ["hello", "world"]; "Hello, world." -> ["hello", ",", "world", "."]: the longest common run is
    # one word, P = 1/4, R = 1/2, F1 = 2 * (1/8) / (3/4) = 1/3. EM compares "hello, world." with "hello world".
    assert f1_score(["Hello world"], "Hello, world.") == pytest.approx(1 / 3)
    assert exact_match(["Hello world"], "Hello, world.") == 0.0
    # "Hello world." -> ["hello", "world", "."]: lcs 2, P = 2/3, R = 1, F1 = 0.8.
    assert f1_score(["Hello world"], "Hello world.") == pytest.approx(0.8)
    # "Hello, world" -> ["hello", ",", "world"]: lcs 1, P = 1/3, R = 1/2, F1 = 0.4.
    assert f1_score(["Hello world"], "Hello, world") == pytest.approx(0.4)
    # Marks of the official list are removed before splitting: "Hello-world" -> "helloworld" is one word.
    assert f1_score(["helloworld"], "Hello-world") == 1.0 and exact_match(["helloworld"], "Hello-world") == 1.0


def test_strip_punctuation_uses_the_official_list():
    assert strip_punctuation(" 《红楼梦》：A-B ") == "红楼梦ab"
    # The official list holds "……" as one string, so a single "…" is never removed.
    assert strip_punctuation("好…") == "好…"


def test_longest_common_substring_is_contiguous():
    assert longest_common_substring_length(list("甲乙丙丁"), list("甲乙X丙丁")) == 2
    assert longest_common_substring_length(list("abcde"), list("xbcdy")) == 3
    assert longest_common_substring_length([], list("abc")) == 0


def test_f1_by_hand():
    # 4 gold tokens inside 7 predicted: P = 4/7, R = 1, F1 = 8/11.
    assert f1_score(["北京大学"], "北京大学出版社") == pytest.approx(8 / 11)
    # Substring, not subsequence: lcs 2 of 5 predicted and 4 gold tokens -> 2 * 0.4 * 0.5 / 0.9.
    assert f1_score(["甲乙丙丁"], "甲乙X丙丁") == pytest.approx(4 / 9)
    # The best gold answer counts.
    assert f1_score(["红山", "市中心的红山上"], "红山上") == pytest.approx(0.8)
    assert f1_score(["曹雪芹"], "") == 0.0


def test_exact_match_by_hand():
    assert exact_match(["红楼梦"], "《红楼梦》") == 1.0
    assert exact_match(["1998年"], "1998 年") == 0.0       # a space is not punctuation ...
    assert f1_score(["1998年"], "1998 年") == 1.0          # ... but the tokens agree
    assert exact_match(["甲", "乙"], "乙") == 1.0


def test_load_fixture():
    questions = load_cmrc(FIXTURE)
    assert [q.id for q in questions] == ["TRIAL_0_QUERY_0", "TRIAL_0_QUERY_1", "TRIAL_1_QUERY_0"]
    assert questions[0].answers == ("红山", "市中心的红山上")
    assert questions[2].context.startswith("《红楼梦》是清代作家曹雪芹")


def test_score_on_fixture_by_hand():
    questions = load_cmrc(FIXTURE)
    scores = score_cmrc(questions, ["红山上", "约3650米", "曹雪芹。"])
    # EM 0, 0, 1; F1 0.8 (best gold "红山"), 0.8 (P 2/3, R 1), 1.0.
    assert scores["em"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * 2.6 / 3)
    assert scores["avg"] == pytest.approx((100 / 3 + 100 * 2.6 / 3) / 2)
    assert scores["n"] == 3


def test_malformed_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_cmrc(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [{"paragraphs": [{"qas": []}]}]}', encoding="utf-8")
    with pytest.raises(DataError, match=r"paragraphs\[0\].*'context'"):
        load_cmrc(bad)
    unanswerable = tmp_path / "squad2.json"
    unanswerable.write_text(json.dumps({"data": [{"paragraphs": [{"context": "c", "qas": [
        {"id": "q", "question": "?", "answers": [], "is_impossible": True}]}]}]}), encoding="utf-8")
    with pytest.raises(DataError, match="no question with an answer"):
        load_cmrc(unanswerable)


def test_prompt_holds_context_and_question(tiny):
    _, tokenizer = tiny
    question = load_cmrc(FIXTURE)[2]
    plain = cmrc_prompt(tokenizer, question, "plain")
    assert plain.endswith("文章：" + question.context + "\n问题：《红楼梦》的作者是谁？\n答案：")
    chat = cmrc_prompt(tokenizer, question, "chat")
    assert question.context in chat and chat != plain


def test_greedy_evaluation_runs_and_scores_its_own_predictions(tiny):
    model, tokenizer = tiny
    scores, rows = evaluate_cmrc(model, tokenizer, FIXTURE, max_new_tokens=4, batch_size=2, progress=False)
    assert [row["id"] for row in rows] == ["TRIAL_0_QUERY_0", "TRIAL_0_QUERY_1", "TRIAL_1_QUERY_0"]
    rescored = score_cmrc(load_cmrc(FIXTURE), [row["prediction"] for row in rows])
    assert scores == rescored
    limited, _ = evaluate_cmrc(model, tokenizer, FIXTURE, max_examples=1, max_new_tokens=2, progress=False)
    assert limited["n"] == 1
