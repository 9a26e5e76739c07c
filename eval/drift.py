"""How far a tuned model drifted from its base on general text: the paper's mechanism measure.

For every token t of a set of general texts (text the task training never
showed) we compare the tuned model q with the base model p:

    NLL increase   d_t  = -log q(x_t | x_<t) - (-log p(x_t | x_<t))
    token KL       KL_t = sum_v q(v | x_<t) (log q(v | x_<t) - log p(v | x_<t))

and report the mean and the 90th percentile of both. The paper finds the
semantic-reward GRPO model drifts less than the SFT model on both counts
(mean NLL increase +0.24 vs +0.64, 90th-percentile KL 0.084 vs 0.093).

The KL needs each model's full next-token distribution at every position. A
[T, V] float32 logits tensor for a vocabulary of 262k is a gigabyte per
thousand tokens, so, as in `grpo.logprobs`, the transformer body runs once per
batch and its hidden states go through the LM head a chunk of positions at a
time: the largest object is [chunk_tokens, V], whatever the text lengths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from eval.cmrc import load_cmrc
from grpo.logprobs import completion_hidden_states, head_logits, lm_head
from grpo.run.data import read_jsonl
from grpo.run.errors import DataError, ModelError

DEFAULT_MAX_TOKENS = 256
DEFAULT_BATCH_SIZE = 8
DRIFT_CHUNK_POSITIONS = 256      # positions per LM-head chunk: two models' [N, V] float32 logits at once, fixed (not sized by bytes)


def load_drift_texts(path: str | Path, limit: int = 0) -> list[str]:
    """General texts from a JSONL file (one {"text": ...} object a line) or a CMRC / SQuAD JSON file.

    A CMRC file gives its distinct passages, in file order: the paper measured
    drift on CMRC 2018 text. `limit` > 0 keeps the first `limit` texts.
    """
    path = Path(path)
    if path.suffix == ".json":
        texts = list(dict.fromkeys(question.context for question in load_cmrc(path)))
    else:
        texts = [record["text"] for record in read_jsonl(path, required=("text",))]
    return texts[:limit] if limit > 0 else texts


def token_nll(logprobs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of each target token: -log p(target_n).

    Shapes: logprobs [N, V] (log-softmax), targets [N] -> [N].
    """
    return -logprobs.gather(1, targets.unsqueeze(1)).squeeze(1)


def token_kl(logprobs_q: torch.Tensor, logprobs_p: torch.Tensor) -> torch.Tensor:
    """Exact KL(q || p) of two next-token distributions at each position.

        KL_n = sum_v q_n(v) (log q_n(v) - log p_n(v))

    Shapes: [N, V] log-softmax each -> [N]. Clamped at 0, which it is in exact
    arithmetic; float rounding can leave a -1e-9.
    """
    return (logprobs_q.exp() * (logprobs_q - logprobs_p)).sum(dim=-1).clamp(min=0.0)


def percentile_90(values: np.ndarray) -> float:
    """The 90th percentile with linear interpolation between order statistics (numpy's default)."""
    return float(np.percentile(values, 90))


@dataclass
class DriftResult:
    """Per-token measurements over all texts, concatenated in text order.

    nll_base, nll_tuned: [N] float64, one entry per scored token.
    kl: [N] KL(tuned || base), the paper's drift direction.
    kl_forward: [N] KL(base || tuned), the direction RL's Razor finds predicts forgetting.
    text_index: [N] int, the text each token belongs to.
    """

    nll_base: np.ndarray
    nll_tuned: np.ndarray
    kl: np.ndarray
    text_index: np.ndarray
    kl_forward: np.ndarray | None = None

    def kl_per_text(self, forward: bool = True) -> np.ndarray:
        """Token KLs summed over each text: [number of texts] (texts without a scored token are absent)."""
        values = self.kl_forward if forward else self.kl
        _, index = np.unique(self.text_index, return_inverse=True)
        return np.bincount(index, weights=values)

    @property
    def nll_increase(self) -> np.ndarray:
        """d_t = NLL_tuned - NLL_base per token, [N]."""
        return self.nll_tuned - self.nll_base

    def summary(self) -> dict[str, float]:
        """Means and 90th percentiles of the NLL increase and the KL, plus the mean NLLs."""
        if self.kl.size == 0:
            raise DataError("no token was scored: every drift text is shorter than two tokens")
        increase = self.nll_increase
        return {
            "tokens": int(self.kl.size),
            "texts": int(np.unique(self.text_index).size),
            "nll_base": float(self.nll_base.mean()),
            "nll_tuned": float(self.nll_tuned.mean()),
            "nll_increase_mean": float(increase.mean()),
            "nll_increase_p90": percentile_90(increase),
            "kl_mean": float(self.kl.mean()),
            "kl_p90": percentile_90(self.kl),
            **({"kl_forward_mean": float(self.kl_forward.mean())} if self.kl_forward is not None else {}),
        }


def _chunk_drift(
    tuned_hidden: torch.Tensor, base_hidden: torch.Tensor, tuned_model, base_model, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """NLL under each model and both KLs for one chunk of positions.

    Shapes: hidden states [N, H] each (on their model's device), targets [N]
    -> (nll_tuned, nll_base, KL(tuned || base), KL(base || tuned)), each [N] float32 on the CPU.
    """
    logprobs = []
    for model, hidden in ((tuned_model, tuned_hidden), (base_model, base_hidden)):
        head_weight, softcap = lm_head(model)
        logits = head_logits(hidden, head_weight, temperature=1.0, softcap=softcap)    # [N, V] float32
        logprobs.append(torch.log_softmax(logits, dim=-1))
    # Both models usually share a device and the move is free; otherwise it meets on the tuned one.
    tuned_logprobs, base_logprobs = logprobs[0], logprobs[1].to(logprobs[0].device)
    targets = targets.to(tuned_logprobs.device)
    nll_tuned, nll_base = token_nll(tuned_logprobs, targets), token_nll(base_logprobs, targets)
    return (nll_tuned.cpu(), nll_base.cpu(), token_kl(tuned_logprobs, base_logprobs).cpu(),
            token_kl(base_logprobs, tuned_logprobs).cpu())


def check_same_vocabulary(base_model, tuned_model) -> None:
    """ModelError unless both models share one output vocabulary (a KL needs the same support)."""
    base_vocab = base_model.get_output_embeddings().weight.shape[0]
    tuned_vocab = tuned_model.get_output_embeddings().weight.shape[0]
    if base_vocab != tuned_vocab:
        raise ModelError(
            f"the base model has {base_vocab} output tokens and the tuned model {tuned_vocab}: "
            "drift compares next-token distributions, so both must use the same tokenizer"
        )


def pad_sequences(rows: list[list[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """[B] ragged id lists -> ids [B, L] and mask [B, L], padded on `side`."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[index, span], mask[index, span] = torch.tensor(row, dtype=torch.long), 1
    return ids, mask


# Scripts, digits, spacing and punctuation: tokenizers that split any of them differently disagree on it.
TOKENIZER_SAMPLE = "The 3 cats sat on 12 mats, naïve café!  藏文是藏族的文字。 བོད་ཡིག x=42\n\tend"


def check_same_tokenizer(base_tokenizer, tuned_tokenizer, tuned_label: str) -> None:
    """ModelError unless both tokenizers have one vocabulary and encode a sample text alike.

    Drift and the benchmarks feed one tokenizer's ids to both models; equal
    vocabulary sizes do not show that an id means the same token to both.
    """
    base_vocab, tuned_vocab = base_tokenizer.get_vocab(), tuned_tokenizer.get_vocab()
    differing = sorted(t for t in base_vocab.keys() | tuned_vocab.keys() if base_vocab.get(t) != tuned_vocab.get(t))
    if differing:
        problem = (f"{len(differing)} tokens have another id or none (e.g. {differing[0]!r}: "
                   f"{base_vocab.get(differing[0])} in the base, {tuned_vocab.get(differing[0])} in the tuned model)")
    elif base_tokenizer(TOKENIZER_SAMPLE).input_ids != tuned_tokenizer(TOKENIZER_SAMPLE).input_ids:
        problem = "the vocabularies match but a sample text encodes differently"
    else:
        return
    raise ModelError(f"tuned model '{tuned_label}' does not use the base model's tokenizer: {problem}. "
                     "Probes compare both models on the same token ids; pass the base model it was trained from")


@torch.inference_mode()
def measure_pairs(
    base_model,
    tuned_model,
    prefixes: list[list[int]],
    continuations: list[list[int]],
    pad_id: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    chunk_tokens: int = DRIFT_CHUNK_POSITIONS,
    progress: bool = True,
    desc: str = "drift",
    sequence_ids: list[int] | None = None,
) -> DriftResult:
    """Per-token NLL under both models and both KLs at every continuation token, given its prefix.

    Args:
        prefixes, continuations: token ids per sequence (a prefix of at least one token); only
            continuation tokens are scored. Prefixes are left-padded and continuations
            right-padded, so one pass per batch and model serves all rows.
        chunk_tokens: positions per LM-head chunk (peak extra memory 2 * chunk_tokens * V floats per model).
        sequence_ids: what `text_index` calls each sequence (default: its position in the lists).
    """
    check_same_vocabulary(base_model, tuned_model)
    columns = {"nll_tuned": [], "nll_base": [], "kl": [], "kl_forward": [], "text_index": []}
    for start in tqdm(range(0, len(prefixes), batch_size), desc=desc, disable=not progress, leave=False):
        prefix_ids, prefix_mask = pad_sequences(prefixes[start : start + batch_size], pad_id, "left")
        continuation_ids, continuation_mask = pad_sequences(continuations[start : start + batch_size], pad_id, "right")
        hidden = []
        for model in (tuned_model, base_model):
            device = next(model.parameters()).device
            states = completion_hidden_states(model, prefix_ids.to(device), prefix_mask.to(device),
                                              continuation_ids.to(device), continuation_mask.to(device))
            hidden.append(states.flatten(0, 1))                                         # [B*Lc, H]
        scored = continuation_mask.flatten().nonzero().squeeze(1)                        # [N] flat positions
        targets = continuation_ids.flatten()[scored]                                     # [N]
        rows, width = continuation_ids.shape
        columns["text_index"].append((start + torch.arange(rows)).repeat_interleave(width)[scored].numpy())
        for first in range(0, scored.numel(), chunk_tokens):
            positions = scored[first : first + chunk_tokens]
            chunk = _chunk_drift(hidden[0][positions.to(hidden[0].device)], hidden[1][positions.to(hidden[1].device)],
                                 tuned_model, base_model, targets[first : first + chunk_tokens])
            for key, values in zip(("nll_tuned", "nll_base", "kl", "kl_forward"), chunk):
                columns[key].append(values.double().numpy())
    joined = {key: np.concatenate(parts) if parts else np.zeros(0) for key, parts in columns.items()}
    text_index = joined["text_index"].astype(np.int64)
    if sequence_ids is not None:
        text_index = np.asarray(sequence_ids, dtype=np.int64)[text_index]
    return DriftResult(nll_base=joined["nll_base"], nll_tuned=joined["nll_tuned"], kl=joined["kl"],
                       text_index=text_index, kl_forward=joined["kl_forward"])


def measure_drift(
    base_model,
    tuned_model,
    tokenizer,
    texts: list[str],
    max_tokens: int = DEFAULT_MAX_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    chunk_tokens: int = DRIFT_CHUNK_POSITIONS,
    progress: bool = True,
) -> DriftResult:
    """Per-token NLL under both models and the KLs over `texts`, every token after the first scored.

    Args:
        base_model, tuned_model: causal LMs sharing `tokenizer`'s vocabulary.
        texts: general-domain texts; each is cut to its first `max_tokens` tokens.
        batch_size: texts per transformer pass.
    """
    if not texts:
        raise DataError("no drift texts given")
    encoded = [tokenizer(text, truncation=True, max_length=max_tokens, add_special_tokens=True).input_ids
               for text in texts]
    # The first token has no context: it plays the prefix, and texts of one token score nothing.
    kept = [index for index, ids in enumerate(encoded) if len(ids) >= 2]
    if not kept:
        raise DataError("no token was scored: every drift text is shorter than two tokens")
    return measure_pairs(base_model, tuned_model, [encoded[i][:1] for i in kept], [encoded[i][1:] for i in kept],
                         pad_token_id(tokenizer), batch_size, chunk_tokens, progress, sequence_ids=kept)


def pad_token_id(tokenizer) -> int:
    """The id that fills padding (masked out everywhere): the pad token, else EOS."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def measure_task_kl(base_model, tuned_model, tokenizer, prompts: list[str], response_ids: list[list[int]],
                    batch_size: int = DEFAULT_BATCH_SIZE, chunk_tokens: int = DRIFT_CHUNK_POSITIONS,
                    progress: bool = True) -> DriftResult:
    """Both KLs at every token of the responses (sampled from the base model) given their task prompts.

    RL's Razor's forgetting predictor is E_{x ~ task, y ~ pi_0(.|x)} [ sum_t KL(pi_0 || pi)(. | x, y_<t) ]:
    `result.kl_per_text(forward=True).mean()` over the prompts. Prompts carry their special
    tokens already (chat template); responses are the sampled token ids themselves (decoding and
    re-encoding could change them). An empty response scores nothing and is left out.
    """
    prefixes = [tokenizer(prompt, add_special_tokens=False).input_ids for prompt in prompts]
    continuations = [list(ids) for ids in response_ids]
    kept = [index for index, ids in enumerate(continuations) if ids]
    if not kept:
        raise DataError("every base response is empty: nothing to measure the task KL on")
    return measure_pairs(base_model, tuned_model, [prefixes[i] for i in kept], [continuations[i] for i in kept],
                         pad_token_id(tokenizer), batch_size, chunk_tokens, progress, desc="task KL", sequence_ids=kept)
