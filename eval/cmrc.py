"""CMRC 2018 extractive reading comprehension: greedy answers, EM and F1 as the official script.

Data: a local file in the CMRC 2018 / SQuAD JSON format,

    {"data": [{"paragraphs": [{"context": "...",
                               "qas": [{"id": "...", "question": "...",
                                        "answers": [{"text": "...", "answer_start": 0}, ...]}]}]}]}

The model reads the context and the question and writes a short answer
(greedy, with the project's sampler). The scores follow the official
`cmrc2018_evaluate.py` (v5) step by step:

* text is lower-cased and stripped; a Han character (U+4E00-U+9FA5) or one of
  the official punctuation marks is a token of its own, and every other run
  of characters is split into words as `nltk.word_tokenize` splits them,
  which splits ASCII punctuation off the words ("hello," -> "hello", ",");
* EM: 1 if the answer equals a gold answer after removing the punctuation marks;
* F1: with the longest common *substring* (contiguous run of tokens) of
  prediction and gold answer, P = lcs / |prediction|, R = lcs / |gold|,
  F1 = 2PR / (P + R);
* both take the best gold answer; EM and F1 are averaged over questions and
  reported in percent with Avg = (EM + F1) / 2, the paper's "CMRC Avg".

The official list of punctuation marks removes only what it lists: a "," or
"." split off an English word stays a token, so "Hello, world." scores
F1 = 1/3 against "Hello world" (P = 1/4, R = 1/2), as in the official script.
`split_words` reproduces word_tokenize without NLTK (and without the
tokenizer data it downloads); see there for the few cases it leaves out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from grpo.rollout import greedy_completions
from grpo.run.data import render_prompt
from grpo.run.errors import DataError

# The official script's punctuation list, in its order. "……" is a
# two-character string, so the script's per-character test never matches it
# and a lone "…" survives; we keep that behaviour to reproduce its scores.
CMRC_PUNCTUATION = (
    "-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=",
    "，", "。", "：", "？", "！", "“", "”", "；", "’", "《", "》", "……", "·", "、",
    "「", "」", "（", "）", "－", "～", "『", "』",
)

INSTRUCTION = "阅读下面的文章，用文章中的原文片段回答问题，只输出答案。"
CHAT_TEMPLATE = "{instruction}\n\n文章：{context}\n\n问题：{question}"
PLAIN_TEMPLATE = "{instruction}\n\n文章：{context}\n问题：{question}\n答案："

DEFAULT_MAX_NEW_TOKENS = 32
DEFAULT_BATCH_SIZE = 8


def is_han(char: str) -> bool:
    """The official script's test for a Chinese character: U+4E00 <= c <= U+9FA5."""
    return "\u4e00" <= char <= "\u9fa5"


# nltk.word_tokenize's splits of ASCII punctuation (its Treebank rules), in its order. The text is
# lower-cased and padded with a space at both ends; marks of CMRC_PUNCTUATION never get here.
WORD_SPLITS = (
    (re.compile(r'(?<=[\s(\[{<])"'), " `` "),                  # an opening double quote becomes ``
    (re.compile(r'([^.])\.([\])}>"\']*)\s*$'), r"\1 . \2 "),     # the period that ends the text
    (re.compile(r"([:,])(?=\D)"), r" \1 "),                     # commas, but not inside "1,000"
    (re.compile(r"\.{2,}|[;@#$%&?!*\[\](){}<>]"), r" \g<0> "),   # "...", symbols, brackets
    (re.compile(r"([^'])' "), r"\1 ' "),                         # a closing single quote
    (re.compile(r'"'), " '' "),                                  # every other double quote becomes ''
    (re.compile(r"([^' ])('s|'m|'d|'ll|'re|'ve|n't|') "), r"\1 \2 "),  # clitics: "china's" -> "china", "'s"
)


def split_words(run: str) -> list[str]:
    """A non-Han run split into words as `nltk.word_tokenize` splits lower-cased text.

        "hello, world."  -> ["hello", ",", "world", "."]
        "1,000.5 km"     -> ["1,000.5", "km"]
        "china's (prc)"  -> ["china", "'s", "(", "prc", ")"]

    Not reproduced, as CMRC's answers are spans of Chinese text with Latin
    names, numbers and short phrases: the Punkt sentence split that runs
    first (a period ending an English sentence in the middle of a run stays
    on its word; only the run's last one is split off) and the rare English
    contractions ("cannot" -> "can", "not"; "gonna"; "'tis").
    """
    text = f" {run} "
    for pattern, replacement in WORD_SPLITS:
        text = pattern.sub(replacement, text)
    return text.split()


def mixed_segmentation(text: str, remove_punctuation: bool = False) -> list[str]:
    """Official CMRC tokens: each Han character or punctuation mark alone, other runs split into words.

    "iPhone 5s是手机。" -> ["iphone", "5s", "是", "手", "机", "。"]
    "Hello, world."   -> ["hello", ",", "world", "."]     (`split_words`)
    """
    tokens, run = [], ""
    for char in text.lower().strip():
        if remove_punctuation and char in CMRC_PUNCTUATION:
            continue
        if is_han(char) or char in CMRC_PUNCTUATION:
            tokens.extend(split_words(run))
            run = ""
            tokens.append(char)
        else:
            run += char
    tokens.extend(split_words(run))
    return tokens


def strip_punctuation(text: str) -> str:
    """The official `remove_punctuation`: lower-case, strip, drop every mark of CMRC_PUNCTUATION."""
    return "".join(char for char in text.lower().strip() if char not in CMRC_PUNCTUATION)


def longest_common_substring_length(a: list[str], b: list[str]) -> int:
    """Length of the longest run of consecutive tokens shared by a and b.

        M[i][j] = M[i-1][j-1] + 1   if a_i == b_j,   else 0;     result = max_ij M[i][j]

    (The official script's `find_lcs`; memory O(|b|) by keeping one row.)
    """
    best = 0
    previous = [0] * (len(b) + 1)
    for token_a in a:
        current = [0] * (len(b) + 1)
        for j, token_b in enumerate(b, start=1):
            if token_a == token_b:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def f1_score(answers: list[str], prediction: str) -> float:
    """max over gold answers of F1 = 2PR / (P + R), P = lcs / |pred|, R = lcs / |gold| (tokens, punctuation removed)."""
    prediction_tokens = mixed_segmentation(prediction, remove_punctuation=True)
    scores = []
    for answer in answers:
        answer_tokens = mixed_segmentation(answer, remove_punctuation=True)
        common = longest_common_substring_length(answer_tokens, prediction_tokens)
        if common == 0:
            scores.append(0.0)
            continue
        precision, recall = common / len(prediction_tokens), common / len(answer_tokens)
        scores.append(2 * precision * recall / (precision + recall))
    return max(scores)


def exact_match(answers: list[str], prediction: str) -> float:
    """1.0 if the prediction equals some gold answer once punctuation is stripped, else 0.0."""
    return float(any(strip_punctuation(answer) == strip_punctuation(prediction) for answer in answers))


@dataclass(frozen=True)
class CMRCQuestion:
    id: str
    context: str
    question: str
    answers: tuple[str, ...]


def _field(obj: dict, key: str, kind: type, where: str):
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind):
        raise DataError(
            f"{where}: expected '{key}' to be a {kind.__name__}; the file must be in CMRC 2018 / SQuAD format"
        )
    return value


def load_cmrc(path: str | Path) -> list[CMRCQuestion]:
    """Every question of a CMRC 2018 / SQuAD JSON file that has at least one gold answer.

    Questions without answers (SQuAD 2.0's unanswerable ones) cannot be
    scored by EM/F1 against a span and are left out; the count is printed.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CMRC file '{path}' does not exist")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"CMRC file '{path}' is not UTF-8 JSON: {err}") from None
    questions, unanswerable = [], 0
    for a, article in enumerate(_field(document, "data", list, str(path))):
        for p, paragraph in enumerate(_field(article, "paragraphs", list, f"{path}: data[{a}]")):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            context = _field(paragraph, "context", str, where)
            for q, qa in enumerate(_field(paragraph, "qas", list, where)):
                qa_where = f"{where}.qas[{q}]"
                answers = tuple(
                    _field(answer, "text", str, f"{qa_where}.answers")
                    for answer in _field(qa, "answers", list, qa_where)
                )
                if not answers:
                    unanswerable += 1
                    continue
                question_id = str(qa.get("id", f"{a}-{p}-{q}"))
                questions.append(CMRCQuestion(question_id, context, _field(qa, "question", str, qa_where), answers))
    if unanswerable:
        print(f"{path}: left out {unanswerable} questions without a gold answer")
    if not questions:
        raise DataError(f"CMRC file '{path}' holds no question with an answer")
    return questions


def cmrc_prompt(tokenizer, question: CMRCQuestion, prompt_format: str = "auto") -> str:
    """The reading-comprehension prompt: the chat template for chat models, else a plain '答案：' prompt."""
    fields = {"instruction": INSTRUCTION, "context": question.context, "question": question.question}
    return render_prompt(tokenizer, CHAT_TEMPLATE.format(**fields), PLAIN_TEMPLATE.format(**fields), prompt_format)


def answer_from_completion(completion: str) -> str:
    """The answer is the first non-empty line of the completion; models often explain after it."""
    for line in completion.splitlines():
        if line.strip():
            return line.strip()
    return ""


@torch.no_grad()
def generate_answers(
    model,
    tokenizer,
    questions: list[CMRCQuestion],
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    prompt_format: str = "auto",
    progress: bool = True,
) -> list[str]:
    """Greedy answers, one per question."""
    prompts = [cmrc_prompt(tokenizer, question, prompt_format) for question in questions]
    completions = greedy_completions(model, tokenizer, prompts, max_new_tokens, batch_size, progress, desc="cmrc")
    return [answer_from_completion(text) for text in completions]


def score_cmrc(questions: list[CMRCQuestion], predictions: list[str]) -> dict[str, float]:
    """EM, F1 and Avg = (EM + F1) / 2 in percent over aligned questions and predictions."""
    if len(questions) != len(predictions) or not questions:
        raise DataError(
            f"{len(predictions)} predictions for {len(questions)} questions: they must be aligned and non-empty"
        )
    em = 100.0 * sum(exact_match(list(q.answers), p) for q, p in zip(questions, predictions)) / len(questions)
    f1 = 100.0 * sum(f1_score(list(q.answers), p) for q, p in zip(questions, predictions)) / len(questions)
    return {"n": len(questions), "em": em, "f1": f1, "avg": (em + f1) / 2}


def evaluate_cmrc(
    model,
    tokenizer,
    path: str | Path,
    max_examples: int = 0,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    prompt_format: str = "auto",
    progress: bool = True,
) -> tuple[dict[str, float], list[dict]]:
    """Scores on the first `max_examples` questions of a CMRC file (0 = all), and the predictions.

    Returns (scores, rows) with rows {"id", "question", "answers", "prediction"}.
    """
    questions = load_cmrc(path)
    if max_examples > 0:
        questions = questions[:max_examples]
    predictions = generate_answers(model, tokenizer, questions, max_new_tokens, batch_size, prompt_format, progress)
    rows = [
        {"id": q.id, "question": q.question, "answers": list(q.answers), "prediction": p}
        for q, p in zip(questions, predictions)
    ]
    return score_cmrc(questions, predictions), rows
