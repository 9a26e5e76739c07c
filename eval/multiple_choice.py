"""Multiple-choice benchmarks (MMLU, C-Eval, CMMLU) scored by likelihood, without generation.

Data: a local folder of CSV files, one per subject, with the columns
question, A, B, C, D, answer (case-insensitive; extra columns such as C-Eval's
`id` and `explanation` or CMMLU's unnamed index are ignored; the original
MMLU files have no header row and exactly these six columns). The layouts
of the three benchmarks' releases are all found:

    folder/<split>/<subject>_<split>.csv    MMLU (Hendrycks) and C-Eval
    folder/<split>/<subject>.csv            CMMLU
    folder/<subject>_<split>.csv            everything in one folder

Every prompt starts with the MMLU header line naming the subject, then k
solved exemplars from the dev split, then the question. Two scorings:

* "answer" (the default; lm-eval's "cloze" formulation, OLMES's "CF"): the
  options are not shown. The prompt is "Question: <question>\\nAnswer:" and
  each option is scored as the continuation c = " <option text>":

      raw(c)  = sum_{t=1..T} log p(c_t | prompt, c_<t)       T = tokens of c
      norm(c) = raw(c) / len(c)                              len = characters of c, leading space included

  Both choices are reported (accuracy_raw, accuracy_norm); the headline
  `accuracy` is the normalised one, as lm-eval's acc_norm is for cloze
  tasks: the raw sum is a sum of negative terms, so it favours short options
  whatever they say. (lm-eval 0.4.13 divides by len(option), without the
  space, and also reports acc_bytes with UTF-8 bytes; characters count a
  Chinese option by its characters rather than 3 bytes each.) The model
  never has to tie an answer to its letter, which is why the harnesses use
  this form for small models. Its cost is about the letter scoring's: the
  prompt is run once and its key/value cache serves the four options.
* "letter" (MMLU's original formulation): the options are listed after the
  question as "A. ..", .., "D. .." and the prompt ends in "Answer:"; the
  model's choice is the most likely next letter,

      prediction = argmax_{L in A..D} log p(" L" | prompt)

  which needs one forward pass per question; a small model may answer
  with the letter it prefers whatever the question (SmolLM2-135M-Instruct
  picks "A" for 277 of the 281 questions of data/general/mmlu).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

import torch
from tqdm.auto import tqdm

from eval.next_token import first_token_ids, next_token_logprobs
from grpo.logprobs import completion_logprobs
from grpo.run.data import render_prompt
from grpo.run.errors import DataError, ModelError

LETTERS = ("A", "B", "C", "D")
COLUMNS = ("question", "a", "b", "c", "d", "answer")
SPLITS = ("dev", "val", "test")
# The header line of each benchmark language; C-Eval's and CMMLU's papers use the Chinese one.
HEADERS = {
    "en": "The following are multiple choice questions (with answers) about {subject}.",
    "zh": "以下是关于{subject}的单项选择题，请直接给出正确答案的选项。",
}
DEFAULT_BATCH_SIZE = 8
SCORINGS = ("answer", "letter")
DEFAULT_SCORING = "answer"


@dataclass(frozen=True)
class MCQuestion:
    subject: str
    question: str
    options: tuple[str, str, str, str]
    answer: str  # one of LETTERS


# --------------------------------------------------------------------------
# Reading the CSV files
# --------------------------------------------------------------------------
def find_subject_files(folder: str | Path, split: str) -> dict[str, Path]:
    """subject -> CSV file of `split`, in whichever of the supported layouts the folder uses."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"multiple-choice folder '{folder}' does not exist")
    suffix = f"_{split}"
    found: dict[str, Path] = {}
    for path in sorted((folder / split).glob("*.csv")) if (folder / split).is_dir() else []:
        found[path.stem.removesuffix(suffix)] = path
    for path in sorted(folder.glob(f"*{suffix}.csv")):
        found.setdefault(path.stem.removesuffix(suffix), path)
    if not found:
        raise DataError(
            f"no '{split}' CSV files in '{folder}': expected {split}/<subject>_{split}.csv, "
            f"{split}/<subject>.csv or <subject>_{split}.csv"
        )
    return found


def _column_positions(first_row: list[str], path: Path) -> tuple[dict[str, int], bool]:
    """Where each of COLUMNS sits, and whether the first row is a header (original MMLU has none)."""
    names = [cell.strip().lower() for cell in first_row]
    if all(column in names for column in COLUMNS):
        return {column: names.index(column) for column in COLUMNS}, True
    if len(first_row) == len(COLUMNS):
        return {column: index for index, column in enumerate(COLUMNS)}, False
    raise DataError(
        f"{path}: the first row is neither a header with the columns question, A, B, C, D, answer "
        f"nor a six-column MMLU row; it has {len(first_row)} cells: {first_row[:8]}"
    )


def read_subject_csv(path: str | Path, subject: str) -> list[MCQuestion]:
    """The questions of one subject's CSV file; every problem names the file and line."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: Chinese releases often carry a BOM
            rows = list(csv.reader(f))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"{path}: empty file")
    positions, has_header = _column_positions(rows[0], path)
    questions = []
    for number, row in enumerate(rows[1:] if has_header else rows, start=2 if has_header else 1):
        if len(row) <= max(positions.values()):
            raise DataError(f"{path}: row {number} has {len(row)} cells, fewer than the header's columns")
        answer = row[positions["answer"]].strip().upper()
        if answer not in LETTERS:
            hint = " (C-Eval's test split has no public answers: use its val split)" if not answer else ""
            raise DataError(f"{path}: row {number}: answer {answer!r} is not one of A, B, C, D{hint}")
        options = tuple(row[positions[letter.lower()]].strip() for letter in LETTERS)
        questions.append(MCQuestion(subject, row[positions["question"]].strip(), options, answer))
    return questions


def load_split(folder: str | Path, split: str) -> dict[str, list[MCQuestion]]:
    """subject -> its questions in `split`, subjects in alphabetical order."""
    return {subject: read_subject_csv(path, subject) for subject, path in find_subject_files(folder, split).items()}


def interleave_subjects(questions_by_subject: dict[str, list[MCQuestion]], limit: int = 0) -> list[MCQuestion]:
    """All questions taken round-robin over subjects, cut to `limit` (0 = all).

    A limit then still covers every subject instead of the alphabetically first ones.
    """
    rounds = zip_longest(*questions_by_subject.values())
    ordered = [question for round_ in rounds for question in round_ if question is not None]
    return ordered[:limit] if limit > 0 else ordered


# --------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------
def format_question(question: MCQuestion, with_answer: bool) -> str:
    """Letter scoring: '<question>\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:' and, for an exemplar, ' <letter>\\n\\n'."""
    lines = [question.question] + [f"{letter}. {option}" for letter, option in zip(LETTERS, question.options)]
    text = "\n".join(lines) + "\nAnswer:"
    return text + f" {question.answer}\n\n" if with_answer else text


def format_cloze_question(question: MCQuestion, with_answer: bool) -> str:
    """Answer scoring: 'Question: <question>\\nAnswer:' (no options) and, for an exemplar, ' <answer text>\\n\\n'."""
    text = f"Question: {question.question}\nAnswer:"
    return text + answer_continuation(question.options[LETTERS.index(question.answer)]) + "\n\n" if with_answer else text


def answer_continuation(option: str) -> str:
    """The text scored for an option under answer scoring: the option after one space."""
    return " " + option


def build_prompt(question: MCQuestion, exemplars: list[MCQuestion], language: str = "en",
                 scoring: str = DEFAULT_SCORING) -> str:
    """Header, the solved exemplars, then the question, ending in 'Answer:' (plain text, no special tokens)."""
    if language not in HEADERS:
        raise DataError(f"multiple-choice language must be one of {sorted(HEADERS)}, got {language!r}")
    if scoring not in SCORINGS:
        raise DataError(f"multiple-choice scoring must be one of {SCORINGS}, got {scoring!r}")
    form = format_cloze_question if scoring == "answer" else format_question
    header = HEADERS[language].format(subject=question.subject.replace("_", " ")) + "\n\n"
    return header + "".join(form(e, with_answer=True) for e in exemplars) + form(question, False)


# --------------------------------------------------------------------------
# Letter scoring
# --------------------------------------------------------------------------
def score_letters(model, tokenizer, questions: list[MCQuestion], prompts: list[str], batch_size: int,
                  progress: bool = True, desc: str = "mc") -> list[dict]:
    """Rows {"subject", "question", "answer", "predicted", "correct", "logprobs"}: the most likely next letter."""
    letter_ids = first_token_ids(tokenizer, [f" {letter}" for letter in LETTERS])
    rows = []
    for start in tqdm(range(0, len(questions), batch_size), desc=desc, disable=not progress, leave=False):
        logprobs = next_token_logprobs(model, tokenizer, prompts[start : start + batch_size], letter_ids).cpu()
        for question, scores in zip(questions[start : start + batch_size], logprobs):
            predicted = LETTERS[int(scores.argmax())]
            rows.append({
                "subject": question.subject, "question": question.question, "answer": question.answer,
                "predicted": predicted, "correct": predicted == question.answer,
                "logprobs": [round(float(s), 4) for s in scores],
            })
    return rows


# --------------------------------------------------------------------------
# Answer scoring
# --------------------------------------------------------------------------
def prompt_and_continuation_ids(tokenizer, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of the prompt, and of the continuation as the tokenizer writes it after that prompt.

    The continuation's tokens are those of tokenize(prompt + continuation)
    after the prompt's own tokens, so the option is scored in the tokens the
    model would read it in. That needs the prompt's tokens to be a prefix of
    the whole string's, which a merge across the boundary would break: then
    it is a ModelError rather than a silently wrong score.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    full_ids = tokenizer(prompt + continuation, add_special_tokens=False).input_ids
    if full_ids[: len(prompt_ids)] != prompt_ids or len(full_ids) == len(prompt_ids):
        raise ModelError(
            f"the tokenizer merges the end of the prompt ...{prompt[-20:]!r} with the option {continuation!r}, "
            "so the option's tokens cannot be scored apart from the prompt; use scoring = \"letter\""
        )
    return prompt_ids, full_ids[len(prompt_ids):]


@torch.no_grad()
def continuation_logprob_sums(model, tokenizer, prompt_ids: list[list[int]],
                              continuation_ids: list[list[list[int]]]) -> torch.Tensor:
    """raw = sum_t log p(c_t | prompt, c_<t) of every continuation: P prompts, K continuations each -> [P, K].

    Each prompt goes through the model once and its key/value cache serves
    its K continuations (`completion_logprobs` with group_size = K), so a
    question costs its prompt once plus its options' tokens. Prompts are
    left-padded, continuations right-padded; float32.
    """
    device = next(model.parameters()).device
    n_prompts, n_continuations = len(prompt_ids), len(continuation_ids[0])
    prompts = {"input_ids": [ids for ids in prompt_ids for _ in range(n_continuations)]}          # P*K rows
    continuations = {"input_ids": [ids for group in continuation_ids for ids in group]}
    prompt_batch = tokenizer.pad(prompts, padding_side="left", return_tensors="pt")
    continuation_batch = tokenizer.pad(continuations, padding_side="right", return_tensors="pt")
    continuation_mask = continuation_batch["attention_mask"].to(device).float()                  # [P*K, Lc]
    logprobs, _ = completion_logprobs(
        model, prompt_batch["input_ids"].to(device), prompt_batch["attention_mask"].to(device),
        continuation_batch["input_ids"].to(device), continuation_mask, group_size=n_continuations,
    )                                                                                             # [P*K, Lc]
    return (logprobs * continuation_mask).sum(dim=1).view(n_prompts, n_continuations).cpu()


def per_character(raw: torch.Tensor, n_characters: torch.Tensor) -> torch.Tensor:
    """norm = raw / len(continuation) in characters: [N, K], [N, K] -> [N, K]."""
    return raw / n_characters


def choices(scores: torch.Tensor) -> list[str]:
    """The letter of each row's highest score (the first one on a tie): [N, K] -> N letters."""
    return [LETTERS[int(index)] for index in scores.argmax(dim=1)]


def score_answers(model, tokenizer, questions: list[MCQuestion], prompts: list[str], batch_size: int,
                  progress: bool = True, desc: str = "mc") -> list[dict]:
    """One row per question: its answer, the raw and normalised score of each option and both choices.

    Rows {"subject", "question", "answer", "predicted" (normalised choice),
    "correct", "predicted_raw", "predicted_norm", "logprob_raw" [4],
    "logprob_norm" [4], "prompt_tokens", "option_tokens" [4]}. Questions are
    batched in order of prompt length, so a batch pads little, and the rows
    come back in question order.
    """
    encoded = []
    for question, prompt in zip(questions, prompts):
        pairs = [prompt_and_continuation_ids(tokenizer, prompt, answer_continuation(o)) for o in question.options]
        encoded.append((pairs[0][0], [continuation for _, continuation in pairs]))
    order = sorted(range(len(questions)), key=lambda index: len(encoded[index][0]))
    rows: list[dict | None] = [None] * len(questions)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
        batch = order[start : start + batch_size]
        raw = continuation_logprob_sums(model, tokenizer, [encoded[i][0] for i in batch],
                                        [encoded[i][1] for i in batch])                           # [B, 4]
        n_characters = torch.tensor([[len(answer_continuation(o)) for o in questions[i].options] for i in batch],
                                    dtype=torch.float32)
        norm = per_character(raw, n_characters)
        for index, raw_row, norm_row, by_raw, by_norm in zip(batch, raw, norm, choices(raw), choices(norm)):
            question = questions[index]
            rows[index] = {
                "subject": question.subject, "question": question.question, "answer": question.answer,
                "predicted": by_norm, "correct": by_norm == question.answer,
                "predicted_raw": by_raw, "predicted_norm": by_norm,
                "logprob_raw": [round(float(s), 4) for s in raw_row],
                "logprob_norm": [round(float(s), 5) for s in norm_row],
                "prompt_tokens": len(encoded[index][0]), "option_tokens": [len(ids) for ids in encoded[index][1]],
            }
    return rows


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------
def accuracy(predicted: list[str], answers: list[str]) -> float:
    """Percent of questions whose predicted letter is the answer: 100 * (1/N) sum_i 1[pred_i == ans_i]."""
    return 100.0 * sum(p == a for p, a in zip(predicted, answers)) / len(answers)


def evaluate_multiple_choice(
    model,
    tokenizer,
    folder: str | Path,
    split: str = "test",
    k_shot: int = 0,
    language: str = "en",
    max_examples: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    scoring: str = DEFAULT_SCORING,
) -> tuple[dict[str, float], list[dict]]:
    """Accuracy (percent) on a benchmark folder, and one row per question.

    k_shot > 0 prepends the first k questions of the subject's dev split.
    max_examples > 0 keeps that many questions, spread over the subjects.
    Returns scores and rows: for "answer" scoring {"n", "accuracy" (= accuracy_norm),
    "accuracy_raw", "accuracy_norm"} and the rows of `score_answers`; for
    "letter" scoring {"n", "accuracy"} and the rows of `score_letters`.
    """
    if split not in SPLITS:
        raise DataError(f"multiple-choice split must be one of {SPLITS}, got {split!r}")
    if scoring not in SCORINGS:
        raise DataError(f"multiple-choice scoring must be one of {SCORINGS}, got {scoring!r}")
    questions = interleave_subjects(load_split(folder, split), max_examples)
    exemplars = load_split(folder, "dev") if k_shot > 0 else {}
    missing = sorted({q.subject for q in questions} - set(exemplars)) if k_shot > 0 else []
    if missing:
        raise DataError(f"k_shot={k_shot} needs dev questions for the subjects {missing[:5]} in '{folder}'")
    prompts = [
        render_prompt(tokenizer, text, text, "plain")  # adds BOS where the model expects it
        for text in (build_prompt(q, exemplars.get(q.subject, [])[:k_shot], language, scoring) for q in questions)
    ]
    model.eval()
    score = score_answers if scoring == "answer" else score_letters
    rows = score(model, tokenizer, questions, prompts, batch_size, progress, desc=Path(folder).name)
    answers = [row["answer"] for row in rows]
    scores = {"n": len(rows), "accuracy": accuracy([row["predicted"] for row in rows], answers)}
    if scoring == "answer":
        scores["accuracy_raw"] = accuracy([row["predicted_raw"] for row in rows], answers)
        scores["accuracy_norm"] = accuracy([row["predicted_norm"] for row in rows], answers)
    return scores, rows
