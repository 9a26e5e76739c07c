"""The alignment-tax suite: which general-capability probes run, on which data.

A suite is a TOML file with one table per probe; the table's name names the
probe and its `kind` says what it is:

    [drift]                       # per-token NLL increase and KL to the base on general text
    kind = "drift"
    texts = "data/general/drift.jsonl"

    [mmlu]                        # a multiple-choice benchmark folder (MMLU, C-Eval, CMMLU)
    kind = "multiple_choice"
    folder = "data/general/mmlu"
    split = "dev"
    scoring = "answer"            # likelihood of each option's text; "letter": of the letters A-D

    [cloze]                       # last-word cloze accuracy on held-out English prose
    kind = "cloze"
    file = "data/general/cloze.jsonl"

    [cmrc]                        # CMRC 2018 reading comprehension
    kind = "cmrc"
    file = "data/general/cmrc2018_dev.json"
    optional = true               # skipped with a note when the file is missing

The keys of each kind, with their defaults, are the fields of the dataclasses
below; an unknown key or a wrong type stops with the file, table and key.
Paths are relative to the working directory, like every config of the project.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eval.cloze import DEFAULT_BATCH_SIZE as CLOZE_BATCH_SIZE
from eval.cloze import evaluate_cloze
from eval.cmrc import DEFAULT_MAX_NEW_TOKENS, evaluate_cmrc
from eval.drift import DEFAULT_MAX_TOKENS, DRIFT_CHUNK_POSITIONS, DriftResult, load_drift_texts, measure_drift
from eval.multiple_choice import DEFAULT_SCORING, HEADERS, SCORINGS, SPLITS, evaluate_multiple_choice
from grpo.run.config import check, load_config, option, read_toml
from grpo.run.errors import ConfigError

DEFAULT_SUITE = Path("configs") / "alignment_suite.toml"


@dataclass
class DriftProbe:
    """Drift of the tuned model from the base on general text (needs both models at once)."""

    texts: str = option("data/general/drift.jsonl",
                        "JSONL file of general texts (field 'text'), or a CMRC JSON file whose passages are the texts")
    max_texts: int = option(0, "use the first N texts (0 = all)")
    max_tokens: int = option(DEFAULT_MAX_TOKENS, "each text is cut to this many tokens")
    batch_size: int = option(8, "texts per transformer pass")
    chunk_tokens: int = option(DRIFT_CHUNK_POSITIONS, "positions per LM-head chunk")
    optional: bool = option(False, "skip the probe with a note when its data is missing, instead of stopping")

    @property
    def data_path(self) -> Path:
        return Path(self.texts)

    def validate(self) -> None:
        check(self.max_texts >= 0, "max_texts", "be >= 0", self.max_texts)
        check(self.max_tokens >= 2, "max_tokens", "be >= 2 (the first token has no context)", self.max_tokens)
        check(self.batch_size >= 1, "batch_size", "be >= 1", self.batch_size)
        check(self.chunk_tokens >= 1, "chunk_tokens", "be >= 1", self.chunk_tokens)

    def run(self, base_model, tuned_model, tokenizer, progress: bool = True) -> DriftResult:
        texts = load_drift_texts(self.texts, self.max_texts)
        return measure_drift(base_model, tuned_model, tokenizer, texts, self.max_tokens, self.batch_size,
                             self.chunk_tokens, progress)


@dataclass
class MultipleChoiceProbe:
    """Accuracy (percent) on a MMLU / C-Eval / CMMLU CSV folder."""

    folder: str = option("data/general/mmlu", "folder of per-subject CSV files")
    split: str = option("dev", "which split is scored", SPLITS)
    k_shot: int = option(0, "solved exemplars from the dev split before each question")
    language: str = option("en", "language of the prompt's header line", tuple(HEADERS))
    scoring: str = option(DEFAULT_SCORING, "answer: log-likelihood of each option's text per character "
                          "(options not shown); letter: of the option letter after the listed options", SCORINGS)
    max_examples: int = option(0, "score this many questions, spread over the subjects (0 = all)")
    batch_size: int = option(8, "questions per forward pass")
    optional: bool = option(False, "skip the probe with a note when its data is missing, instead of stopping")

    score_key = "accuracy"

    @property
    def report_keys(self) -> tuple[str, ...]:
        """The scores of the report's table, in its column order."""
        return ("n", "accuracy", "accuracy_raw", "accuracy_norm") if self.scoring == "answer" else ("n", "accuracy")

    @property
    def data_path(self) -> Path:
        return Path(self.folder)

    def validate(self) -> None:
        check(self.k_shot >= 0, "k_shot", "be >= 0", self.k_shot)
        check(self.max_examples >= 0, "max_examples", "be >= 0", self.max_examples)
        check(self.batch_size >= 1, "batch_size", "be >= 1", self.batch_size)

    def run(self, model, tokenizer, progress: bool = True) -> tuple[dict, list[dict]]:
        return evaluate_multiple_choice(model, tokenizer, self.folder, self.split, self.k_shot, self.language,
                                        self.max_examples, self.batch_size, progress, self.scoring)


@dataclass
class CMRCProbe:
    """EM, F1 and Avg (percent) on a CMRC 2018 / SQuAD JSON file."""

    file: str = option("data/general/cmrc2018_dev.json", "CMRC 2018 / SQuAD-format JSON file")
    max_examples: int = option(0, "score the first N questions (0 = all)")
    max_new_tokens: int = option(DEFAULT_MAX_NEW_TOKENS, "answer length cap in tokens (greedy)")
    batch_size: int = option(8, "questions generated together")
    prompt_format: str = option("auto", "auto: chat template when the tokenizer has one", ("auto", "chat", "plain"))
    optional: bool = option(False, "skip the probe with a note when its data is missing, instead of stopping")

    score_key = "avg"
    report_keys = ("n", "em", "f1", "avg")

    @property
    def data_path(self) -> Path:
        return Path(self.file)

    def validate(self) -> None:
        check(self.max_examples >= 0, "max_examples", "be >= 0", self.max_examples)
        check(self.max_new_tokens >= 1, "max_new_tokens", "be >= 1", self.max_new_tokens)
        check(self.batch_size >= 1, "batch_size", "be >= 1", self.batch_size)

    def run(self, model, tokenizer, progress: bool = True) -> tuple[dict, list[dict]]:
        return evaluate_cmrc(model, tokenizer, self.file, self.max_examples, self.max_new_tokens, self.batch_size,
                             self.prompt_format, progress)


@dataclass
class ClozeProbe:
    """Last-word cloze accuracy (percent) and the target's mean log-likelihood on a cloze JSONL file."""

    file: str = option("data/general/cloze.jsonl", "JSONL of {id, context, target}: passages cut before the last word")
    max_examples: int = option(0, "score the first N items (0 = all)")
    batch_size: int = option(CLOZE_BATCH_SIZE, "items per forward pass")
    optional: bool = option(False, "skip the probe with a note when its data is missing, instead of stopping")

    score_key = "accuracy"
    report_keys = ("n", "accuracy", "target_logprob")

    @property
    def data_path(self) -> Path:
        return Path(self.file)

    def validate(self) -> None:
        check(self.max_examples >= 0, "max_examples", "be >= 0", self.max_examples)
        check(self.batch_size >= 1, "batch_size", "be >= 1", self.batch_size)

    def run(self, model, tokenizer, progress: bool = True) -> tuple[dict, list[dict]]:
        return evaluate_cloze(model, tokenizer, self.file, self.max_examples, self.batch_size, progress)


PROBE_KINDS = {"drift": DriftProbe, "multiple_choice": MultipleChoiceProbe, "cloze": ClozeProbe, "cmrc": CMRCProbe}
Benchmark = MultipleChoiceProbe | ClozeProbe | CMRCProbe


@dataclass
class Suite:
    """The probes of a suite file, in file order, and the optional ones skipped for missing data."""

    path: Path
    drift: dict[str, DriftProbe]
    benchmarks: dict[str, Benchmark]
    skipped: dict[str, str]  # probe name -> why


def _probe(name: str, table, path: Path):
    """Build one probe from its TOML table; ConfigError names the file and table."""
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: '{name}' must be a table ([{name}]) describing a probe")
    settings = dict(table)
    kind = settings.pop("kind", None)
    if kind not in PROBE_KINDS:
        raise ConfigError(f"{path}: [{name}] needs kind = one of {', '.join(map(repr, PROBE_KINDS))}; got {kind!r}")
    try:
        return load_config(PROBE_KINDS[kind], overrides=settings)
    except ConfigError as err:
        raise ConfigError(f"{path}: [{name}] (kind '{kind}'): {err}") from None


def load_suite(path: str | Path = DEFAULT_SUITE) -> Suite:
    """Read a suite file. A probe whose data is missing stops the run unless it is `optional`."""
    path = Path(path)
    tables = read_toml(path, "suite file")
    drift, benchmarks, skipped = {}, {}, {}
    for name, table in tables.items():
        probe = _probe(name, table, path)
        if not probe.data_path.exists():
            missing = f"its data '{probe.data_path}' does not exist"
            if not probe.optional:
                raise ConfigError(f"{path}: probe [{name}]: {missing}; build the default data with "
                                  "`make data-general`, fix the path, or mark the probe optional = true")
            skipped[name] = missing
            continue
        (drift if isinstance(probe, DriftProbe) else benchmarks)[name] = probe
    if not drift and not benchmarks:
        raise ConfigError(f"suite file '{path}' has no probe to run" + (f" (skipped: {skipped})" if skipped else ""))
    return Suite(path, drift, benchmarks, skipped)
