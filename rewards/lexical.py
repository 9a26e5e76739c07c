"""Surface-overlap rewards: sentence BLEU and chrF from sacrebleu, on [0, 1].

These are the baselines the paper's ablation compares the semantic reward
against (BLEU + language check, BLEU + embedding + language check).
"""

from __future__ import annotations

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

from rewards.base import RewardOutput, check_batch, example_field, example_references
from rewards.errors import RewardError
from rewards.language import primary_language

# sacrebleu tokenizer for each target language. Chinese has sacrebleu's own
# segmentation; Tibetan, Japanese and Thai write no spaces between words and
# no segmenter for them ships with sacrebleu, so BLEU counts characters.
# Everything else uses the standard "13a" tokenizer.
BLEU_TOKENIZERS: dict[str, str] = {"zh": "zh", "bo": "char", "ja": "char", "th": "char"}
DEFAULT_BLEU_TOKENIZER = "13a"


def bleu_tokenizer_for(target_lang: str, table: dict[str, str] = BLEU_TOKENIZERS) -> str:
    """sacrebleu tokenizer name for a language code (exact, then primary subtag)."""
    for key in (target_lang, primary_language(target_lang)):
        if key in table:
            return table[key]
    return DEFAULT_BLEU_TOKENIZER


def percent_to_unit(score: float) -> float:
    """sacrebleu's 0-100 score -> [0, 1] (clipped: 100 can come out as 100.00000000000004)."""
    return float(np.clip(score / 100.0, 0.0, 1.0))


class SentenceBleuReward:
    """Sentence-level BLEU-4 against the example's references, on [0, 1].

    values[i] = BLEU(completion_i, references_i) / 100   [N]
    With several references (`example["targets"]`) this is multi-reference
    BLEU: each n-gram's count is clipped by its largest count in any one
    reference, and the brevity penalty takes the reference closest in length.
    effective_order=True so that a short sentence without 4-gram matches is
    scored on the orders it has instead of collapsing to 0.
    """

    def __init__(self, name: str = "bleu", tokenizers: dict[str, str] | None = None) -> None:
        self.name = name
        self.tokenizers = dict(BLEU_TOKENIZERS if tokenizers is None else tokenizers)
        self._metrics: dict[str, BLEU] = {}

    def _metric(self, tokenizer: str) -> BLEU:
        if tokenizer not in self._metrics:
            try:
                self._metrics[tokenizer] = BLEU(tokenize=tokenizer, effective_order=True)
            except Exception as err:
                raise RewardError(
                    f"sacrebleu cannot build a BLEU with tokenizer {tokenizer!r}: {err}"
                ) from err
        return self._metrics[tokenizer]

    def __call__(
        self, prompts: list[str], completions: list[str], examples: list[dict]
    ) -> RewardOutput:
        check_batch(prompts, completions, examples)
        scores = []
        for completion, example in zip(completions, examples):
            target_lang = str(example_field(example, "target_lang", self.name))
            metric = self._metric(bleu_tokenizer_for(target_lang, self.tokenizers))
            references = example_references(example, self.name)
            scores.append(percent_to_unit(metric.sentence_score(completion, references).score))
        values = np.array(scores, dtype=np.float64)
        return RewardOutput(values=values, components={self.name: values})


def best_chrf(metric: CHRF, completion: str, references: list[str]) -> float:
    """chrF of `completion` against its best-matching reference, on [0, 1].

        chrF(c, {r_1 .. r_k}) = max_j chrF(c, r_j)

    sacrebleu's chrF with several references keeps the statistics of the
    reference with the highest F-score, which is this maximum.
    """
    return percent_to_unit(metric.sentence_score(completion, references).score)


class ChrfReward:
    """Sentence-level chrF (character 6-grams, beta 2) against the best of the example's references, on [0, 1].

    values[i] = max_r chrF(completion_i, target_{i,r}) / 100   [N]
    chrF works on characters, so it needs no tokenizer for any language.
    """

    def __init__(self, name: str = "chrf") -> None:
        self.name = name
        self._metric = CHRF()

    def __call__(
        self, prompts: list[str], completions: list[str], examples: list[dict]
    ) -> RewardOutput:
        check_batch(prompts, completions, examples)
        values = np.array(
            [best_chrf(self._metric, completion, example_references(example, self.name))
             for completion, example in zip(completions, examples)],
            dtype=np.float64,
        )
        return RewardOutput(values=values, components={self.name: values})
