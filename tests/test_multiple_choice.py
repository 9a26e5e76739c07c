"""Multiple-choice CSV layouts of MMLU, C-Eval and CMMLU, the prompts, the answer and letter scorings, and
the MMLU questions extracted from lm-eval's Flan CoT prompts by data/build_general.py."""

import json
from pathlib import Path

import pytest
import torch
from data_scripts import load_data_script

from eval.multiple_choice import (
    MCQuestion,
    accuracy,
    build_prompt,
    choices,
    evaluate_multiple_choice,
    find_subject_files,
    interleave_subjects,
    load_split,
    per_character,
    prompt_and_continuation_ids,
    read_subject_csv,
)
from eval.next_token import first_token_ids, next_token_logprobs
from grpo.run.errors import DataError, ModelError

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def test_layouts_of_the_three_benchmarks():
    # C-Eval: <split>/<subject>_<split>.csv; CMMLU: <split>/<subject>.csv; flat: <subject>_<split>.csv.
    assert find_subject_files(FIXTURES / "ceval", "val") == {
        "computer_network": FIXTURES / "ceval" / "val" / "computer_network_val.csv"}
    assert find_subject_files(FIXTURES / "cmmlu", "test") == {"agronomy": FIXTURES / "cmmlu" / "test" / "agronomy.csv"}
    assert sorted(find_subject_files(FIXTURES / "mmlu_flat", "test")) == ["anatomy", "astronomy"]
    with pytest.raises(DataError, match="no 'val' CSV files"):
        find_subject_files(FIXTURES / "cmmlu", "val")
    with pytest.raises(DataError, match="does not exist"):
        find_subject_files(FIXTURES / "missing", "test")


def test_ceval_csv_with_id_column():
    questions = read_subject_csv(FIXTURES / "ceval" / "val" / "computer_network_val.csv", "computer_network")
    assert questions[1] == MCQuestion("computer_network", "IPv4地址的长度是____位。",
                                      ("16", "32", "64", "128"), "B")


def test_cmmlu_csv_with_bom_index_column_and_quoted_comma():
    questions = read_subject_csv(FIXTURES / "cmmlu" / "test" / "agronomy.csv", "agronomy")
    assert [q.answer for q in questions] == ["B", "A"]
    assert questions[1].question == "下列肥料中，属于氮肥的是"
    assert questions[1].options[3] == "石灰, 生石灰"


def test_mmlu_csv_without_header():
    questions = read_subject_csv(FIXTURES / "mmlu_flat" / "astronomy_test.csv", "astronomy")
    assert len(questions) == 2
    assert questions[0] == MCQuestion("astronomy", "Which planet is closest to the Sun?",
                                      ("Venus", "Mercury", "Earth", "Mars"), "B")


def test_bad_answers_are_data_errors(tmp_path):
    (tmp_path / "test").mkdir()
    path = tmp_path / "test" / "law_test.csv"
    path.write_text("id,question,A,B,C,D,answer\n0,q,a,b,c,d,\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"row 2.*no public answers"):
        read_subject_csv(path, "law")
    path.write_text("question,A,B,C,D,answer\nq,a,b,c,d,E\n", encoding="utf-8")
    with pytest.raises(DataError, match="answer 'E'"):
        read_subject_csv(path, "law")
    path.write_text("q,a,b\n", encoding="utf-8")
    with pytest.raises(DataError, match="neither a header"):
        read_subject_csv(path, "law")


def test_interleave_spreads_a_limit_over_subjects():
    def q(subject, n):
        return MCQuestion(subject, f"{subject}{n}", ("a", "b", "c", "d"), "A")

    by_subject = {"x": [q("x", 1), q("x", 2), q("x", 3)], "y": [q("y", 1)]}
    assert [m.question for m in interleave_subjects(by_subject)] == ["x1", "y1", "x2", "x3"]
    assert [m.question for m in interleave_subjects(by_subject, limit=2)] == ["x1", "y1"]


def test_prompt_with_one_exemplar():
    exemplar = MCQuestion("high_school_physics", "E1?", ("a", "b", "c", "d"), "D")
    question = MCQuestion("high_school_physics", "Q?", ("w", "x", "y", "z"), "A")
    assert build_prompt(question, [exemplar], scoring="letter") == (
        "The following are multiple choice questions (with answers) about high school physics.\n\n"
        "E1?\nA. a\nB. b\nC. c\nD. d\nAnswer: D\n\n"
        "Q?\nA. w\nB. x\nC. y\nD. z\nAnswer:"
    )
    assert build_prompt(question, [], "zh").startswith("以下是关于high school physics的单项选择题")


def test_answer_prompt_hides_the_options_and_solves_exemplars_with_the_answer_text():
    exemplar = MCQuestion("high_school_physics", "E1?", ("a", "b", "c", "dee"), "D")
    question = MCQuestion("high_school_physics", "Q?", ("w", "x", "y", "z"), "A")
    assert build_prompt(question, [exemplar]) == (
        "The following are multiple choice questions (with answers) about high school physics.\n\n"
        "Question: E1?\nAnswer: dee\n\n"
        "Question: Q?\nAnswer:"
    )
    with pytest.raises(DataError, match="scoring must be one of"):
        build_prompt(question, [], scoring="essay")


def test_accuracy_by_hand():
    assert accuracy(["A", "B", "C", "D"], ["A", "B", "D", "C"]) == 50.0


def test_next_token_logprobs_equal_full_logits(tiny):
    model, tokenizer = tiny
    prompts = ["Question one?\nAnswer:", "A much longer second question about planets?\nAnswer:"]
    letter_ids = first_token_ids(tokenizer, [" A", " B", " C", " D"])
    ours = next_token_logprobs(model, tokenizer, prompts, letter_ids)
    for row, prompt in enumerate(prompts):  # unpadded, one prompt at a time
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            full = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), -1)
        assert torch.allclose(ours[row], full[letter_ids], atol=1e-5)


def test_evaluation_picks_the_most_likely_letter(tiny):
    model, tokenizer = tiny
    scores, rows = evaluate_multiple_choice(model, tokenizer, FIXTURES / "mmlu_flat", split="test", k_shot=1,
                                            batch_size=2, progress=False, scoring="letter")
    assert scores["n"] == 3 and [r["subject"] for r in rows] == ["anatomy", "astronomy", "astronomy"]
    for row in rows:
        assert row["predicted"] == "ABCD"[max(range(4), key=lambda i: row["logprobs"][i])]
        assert row["correct"] == (row["predicted"] == row["answer"])
    expected = 100.0 * sum(r["predicted"] == r["answer"] for r in rows) / 3
    assert scores["accuracy"] == pytest.approx(expected)
    limited, _ = evaluate_multiple_choice(model, tokenizer, FIXTURES / "cmmlu", max_examples=1, language="zh",
                                          progress=False)
    assert limited["n"] == 1


def test_k_shot_needs_dev_questions_of_each_subject(tiny, tmp_path):
    model, tokenizer = tiny
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "law_test.csv").write_text("question,A,B,C,D,answer\nq,a,b,c,d,A\n", encoding="utf-8")
    with pytest.raises(DataError, match="no 'dev' CSV files"):
        evaluate_multiple_choice(model, tokenizer, tmp_path, k_shot=1, progress=False)
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "art_dev.csv").write_text("question,A,B,C,D,answer\nq,a,b,c,d,A\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"k_shot=1 needs dev questions for the subjects \['law'\]"):
        evaluate_multiple_choice(model, tokenizer, tmp_path, k_shot=1, progress=False)


def test_flan_cot_prompts_become_mmlu_questions(tmp_path):
    build_general = load_data_script("build_general")
    prompts = json.loads((FIXTURES / "mmlu_cot_prompts_excerpt.json").read_text(encoding="utf-8"))
    questions, left_out = build_general.parse_cot_prompts(prompts)
    assert [(q.subject, q.answer) for q in questions] == [("astronomy", "B"), ("astronomy", "C"),
                                                          ("college_chemistry", "B")]
    assert questions[0].options == ("Venus", "Mercury", "Earth", "Mars")
    assert questions[1].question == "What is $\\frac{1}{2}$ of the 8 planets?"  # the form feed is \f again
    assert questions[1].options == ("2", "3", "4", "5")                        # one option per line
    assert left_out == ["college_chemistry question 1: options labelled ['A', 'B', 'C', 'D', 'E'], not A-D"]

    counts = build_general.write_mmlu_csv(tmp_path / "mmlu", questions)
    assert counts == {"astronomy": 2, "college_chemistry": 1}
    written = load_split(tmp_path / "mmlu", "dev")
    assert written["astronomy"][1] == MCQuestion("astronomy", questions[1].question, ("2", "3", "4", "5"), "C")


# --------------------------------------------------------------------------
# Answer scoring
# --------------------------------------------------------------------------
def test_option_tokens_follow_the_prompt_tokens(tiny):
    _, tokenizer = tiny
    prompt = "Question: Which bone is the longest?\nAnswer:"
    prompt_ids, option_ids = prompt_and_continuation_ids(tokenizer, prompt, " Femur")
    assert prompt_ids + option_ids == tokenizer(prompt + " Femur", add_special_tokens=False).input_ids
    assert prompt_ids == tokenizer(prompt, add_special_tokens=False).input_ids and option_ids
    # "Answer" + "s" is one word to the tokenizer: the prompt's token is not a prefix of the whole.
    with pytest.raises(ModelError, match="merges the end of the prompt"):
        prompt_and_continuation_ids(tokenizer, "Answer", "s")


def test_raw_and_normalised_scores_can_choose_different_options():
    raw = torch.tensor([[-4.0, -6.0, -9.0, -20.0]])
    characters = torch.tensor([[2.0, 6.0, 4.0, 40.0]])   # " a", " abcde", " abc", a 40-character option
    # per character: -2, -1, -2.25, -0.5
    assert torch.equal(per_character(raw, characters), torch.tensor([[-2.0, -1.0, -2.25, -0.5]]))
    assert choices(raw) == ["A"] and choices(per_character(raw, characters)) == ["D"]


def full_pass_option_logprob(model, tokenizer, prompt: str, option: str) -> float:
    """sum of log p(option token | everything before it) from one plain forward pass over prompt + option."""
    ids = tokenizer(prompt + " " + option, add_special_tokens=False).input_ids
    start = len(tokenizer(prompt, add_special_tokens=False).input_ids)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
    return sum(float(logprobs[position - 1, ids[position]]) for position in range(start, len(ids)))


def test_answer_scores_equal_a_full_pass_per_option(tiny):
    # batch_size 2 over 3 questions: prompts of different lengths padded together, options of 1-3 tokens.
    model, tokenizer = tiny
    scores, rows = evaluate_multiple_choice(model, tokenizer, FIXTURES / "mmlu_flat", split="test", k_shot=1,
                                            batch_size=2, progress=False)
    header = "The following are multiple choice questions (with answers) about {}.\n\n"
    expected = [  # the prompt written out by hand, the options, the answer
        (header.format("anatomy") + "Question: Which bone is the longest in the human body?\nAnswer: Femur\n\n"
         "Question: How many chambers does the human heart have?\nAnswer:", ("Two", "Three", "Four", "Five"), "C"),
        (header.format("astronomy") + "Question: What is the largest planet of the Solar System?\nAnswer: Jupiter"
         "\n\nQuestion: Which planet is closest to the Sun?\nAnswer:", ("Venus", "Mercury", "Earth", "Mars"), "B"),
        (header.format("astronomy") + "Question: What is the largest planet of the Solar System?\nAnswer: Jupiter"
         "\n\nQuestion: How long does light from the Sun take to reach Earth, roughly?\nAnswer:",
         ("8 seconds", "8 minutes", "8 hours", "8 days"), "B"),
    ]
    assert len(rows) == 3
    for row, (prompt, options, answer) in zip(rows, expected):
        raw = [full_pass_option_logprob(model, tokenizer, prompt, option) for option in options]
        norm = [value / (1 + len(option)) for value, option in zip(raw, options)]
        assert row["logprob_raw"] == pytest.approx(raw, abs=2e-4)
        assert row["logprob_norm"] == pytest.approx(norm, abs=2e-5)
        assert row["predicted_raw"] == "ABCD"[raw.index(max(raw))]
        assert row["predicted_norm"] == row["predicted"] == "ABCD"[norm.index(max(norm))]
        assert row["answer"] == answer and row["correct"] == (row["predicted"] == answer)
        assert row["prompt_tokens"] == len(tokenizer(prompt, add_special_tokens=False).input_ids)
    assert rows[2]["option_tokens"] == [3, 3, 3, 3]          # " 8 seconds": " ", "8", " seconds"
    assert rows[1]["predicted_raw"] != rows[1]["predicted_norm"]
    assert scores["accuracy"] == scores["accuracy_norm"] == accuracy([r["predicted_norm"] for r in rows], "CBB")
    assert scores["accuracy_raw"] == accuracy([r["predicted_raw"] for r in rows], "CBB")
    with pytest.raises(DataError, match="scoring must be one of"):
        evaluate_multiple_choice(model, tokenizer, FIXTURES / "mmlu_flat", scoring="cloze", progress=False)
