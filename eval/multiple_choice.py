"""Multiple-choice benchmarks (MMLU, C-Eval, CMMLU) scored by the likelihood of the option letter.

Data: a local folder of CSV files, one per subject, with the columns
question, A, B, C, D, answer (case-insensitive; extra columns such as C-Eval's
`id` and `explanation` or CMMLU's unnamed index are ignored; the original
MMLU files have no header row and exactly these six columns). The layouts
of the three benchmarks' releases are all found:

    folder/<split>/<subject>_<split>.csv    MMLU (Hendrycks) and C-Eval
    folder/<split>/<subject>.csv            CMMLU
    folder/<subject>_<split>.csv            everything in one folder

The prompt is the MMLU one (a header naming the subject, k solved exemplars
from the dev split, then the question) and ends in "Answer:". The model's
choice is the letter whose token is most likely next:

    prediction = argmax_{L in A..D} log p(" L" | prompt)

which needs one forward pass per question and no generation, and cannot be
thrown off by a model that answers in prose.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

import torch
from tqdm.auto import tqdm

from grpo.data import render_prompt
from grpo.errors import DataError, ModelError
from grpo.logprobs import logprobs_from_hidden, position_ids_from_mask

LETTERS = ("A", "B", "C", "D")
COLUMNS = ("question", "a", "b", "c", "d", "answer")
SPLITS = ("dev", "val", "test")
# The header line of each benchmark language; C-Eval's and CMMLU's papers use the Chinese one.
HEADERS = {
    "en": "The following are multiple choice questions (with answers) about {subject}.",
    "zh": "以下是关于{subject}的单项选择题，请直接给出正确答案的选项。",
}
DEFAULT_BATCH_SIZE = 8


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
# Prompts and scoring
# --------------------------------------------------------------------------
def format_question(question: MCQuestion, with_answer: bool) -> str:
    """'<question>\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:' and, for an exemplar, ' <letter>\\n\\n'."""
    lines = [question.question] + [f"{letter}. {option}" for letter, option in zip(LETTERS, question.options)]
    text = "\n".join(lines) + "\nAnswer:"
    return text + f" {question.answer}\n\n" if with_answer else text


def build_prompt(question: MCQuestion, exemplars: list[MCQuestion], language: str = "en") -> str:
    """Header, the solved exemplars, then the question, ending in 'Answer:' (plain text, no special tokens)."""
    if language not in HEADERS:
        raise DataError(f"multiple-choice language must be one of {sorted(HEADERS)}, got {language!r}")
    header = HEADERS[language].format(subject=question.subject.replace("_", " ")) + "\n\n"
    return header + "".join(format_question(e, with_answer=True) for e in exemplars) + format_question(question, False)


def first_token_ids(tokenizer, words: list[str]) -> list[int]:
    """The first token of each word as the tokenizer writes it; ModelError if two words share it."""
    ids = [tokenizer(word, add_special_tokens=False).input_ids[0] for word in words]
    if len(set(ids)) != len(ids):
        raise ModelError(f"the tokenizer starts several of {words} with the same token, so they cannot be told apart")
    return ids


@torch.no_grad()
def next_token_logprobs(model, tokenizer, prompts: list[str], candidate_ids: list[int]) -> torch.Tensor:
    """log p(candidate | prompt) for each prompt and candidate token: [P] prompts, [K] ids -> [P, K] float32.

    One pass of the transformer body over the left-padded prompts; only the
    last position's hidden state goes through the LM head, K times.
    """
    device = next(model.parameters()).device
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    input_ids, attention_mask = encoded.input_ids.to(device), encoded.attention_mask.to(device)
    last_hidden = model.base_model(
        input_ids=input_ids, attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask), use_cache=False,
    ).last_hidden_state[:, -1:]                                                    # [P, 1, H]
    n_prompts, n_candidates = len(prompts), len(candidate_ids)
    targets = torch.tensor(candidate_ids, device=device).expand(n_prompts, n_candidates)   # [P, K]
    logprobs, _ = logprobs_from_hidden(
        last_hidden.expand(-1, n_candidates, -1), model.get_output_embeddings().weight, targets,
        torch.ones(n_prompts, n_candidates, device=device),
        softcap=getattr(model.config, "final_logit_softcapping", None),
    )
    return logprobs


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
) -> tuple[dict[str, float], list[dict]]:
    """Accuracy (percent) on a benchmark folder, and one row per question.

    k_shot > 0 prepends the first k questions of the subject's dev split.
    max_examples > 0 keeps that many questions, spread over the subjects.
    Returns ({"n", "accuracy"}, rows {"subject", "question", "answer", "predicted", "logprobs"}).
    """
    if split not in SPLITS:
        raise DataError(f"multiple-choice split must be one of {SPLITS}, got {split!r}")
    questions = interleave_subjects(load_split(folder, split), max_examples)
    exemplars = load_split(folder, "dev") if k_shot > 0 else {}
    missing = sorted({q.subject for q in questions} - set(exemplars)) if k_shot > 0 else []
    if missing:
        raise DataError(f"k_shot={k_shot} needs dev questions for the subjects {missing[:5]} in '{folder}'")
    prompts = [
        render_prompt(tokenizer, text, text, "plain")  # adds BOS where the model expects it
        for text in (build_prompt(q, exemplars.get(q.subject, [])[:k_shot], language) for q in questions)
    ]
    letter_ids = first_token_ids(tokenizer, [f" {letter}" for letter in LETTERS])

    rows = []
    model.eval()
    for start in tqdm(range(0, len(questions), batch_size), desc=f"{Path(folder).name}", disable=not progress,
                      leave=False):
        logprobs = next_token_logprobs(model, tokenizer, prompts[start : start + batch_size], letter_ids).cpu()
        for question, scores in zip(questions[start : start + batch_size], logprobs):
            rows.append({
                "subject": question.subject, "question": question.question, "answer": question.answer,
                "predicted": LETTERS[int(scores.argmax())], "logprobs": [round(float(s), 4) for s in scores],
            })
    scores = {"n": len(rows), "accuracy": accuracy([r["predicted"] for r in rows], [r["answer"] for r in rows])}
    return scores, rows
