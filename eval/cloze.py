"""Last-word cloze accuracy on held-out text: a capability the base model has, measured without generation.

Each item is a passage cut just before its final word (LAMBADA's format):

    {"id": "...", "context": "... Names listed in a nonlocal statement must not collide with", "target": "pre-existing"}

The model is right on an item when greedy decoding would write the target,
which teacher forcing checks in one pass (lm-eval's `lambada` accuracy):

    correct_i = 1[ argmax_v p(v | context, y_<k) = y_k  for every target token y_k ]

with y = tokens(" " + target). We also report the target's log-likelihood
log p(y | context) = sum_k log p(y_k | context, y_<k), a smoother score of the
same skill. The items are English prose paragraphs that ship with Python
(`data/build_general.py`), so an English-centric base model scores far
above chance (which is about 1 / vocabulary size) and the probe can show a
loss of that skill.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from eval.drift import pad_sequences, pad_token_id
from grpo.logprobs import completion_hidden_states, head_logits, lm_head
from grpo.run.data import read_jsonl
from grpo.run.errors import DataError

DEFAULT_BATCH_SIZE = 16


def load_cloze_items(path: str | Path, limit: int = 0) -> list[dict]:
    """Cloze items ({"id", "context", "target"} a line); `limit` > 0 keeps the first `limit`."""
    items = read_jsonl(path, required=("context", "target"))
    return items[:limit] if limit > 0 else items


def encode_items(tokenizer, items: list[dict]) -> tuple[list[list[int]], list[list[int]]]:
    """Context and target token ids of each item: the target is what the full text adds to the context.

    Tokenising "context target" as a whole and splitting it where the context's
    own tokens end keeps the boundary the model would see; a tokenizer that
    merges across the boundary (the context's tokens are not a prefix) is refused.
    """
    contexts, targets = [], []
    for item in items:
        context_ids = tokenizer(item["context"], add_special_tokens=True).input_ids
        full_ids = tokenizer(item["context"] + " " + item["target"], add_special_tokens=True).input_ids
        if full_ids[: len(context_ids)] != context_ids or len(full_ids) == len(context_ids):
            raise DataError(f"cloze item {item['id']}: the tokenizer merges the target into the context")
        contexts.append(context_ids)
        targets.append(full_ids[len(context_ids):])
    return contexts, targets


@torch.inference_mode()
def score_cloze(model, tokenizer, items: list[dict], batch_size: int = DEFAULT_BATCH_SIZE,
                progress: bool = True) -> list[dict]:
    """One row per item: {"id", "correct", "target_logprob", "target_tokens"}.

    One pass per batch over [left-padded contexts; right-padded targets]; only
    the target positions go through the LM head.
    """
    if not items:
        raise DataError("no cloze items given")
    device = next(model.parameters()).device
    head_weight, softcap = lm_head(model)
    pad_id = pad_token_id(tokenizer)
    contexts, targets = encode_items(tokenizer, items)
    model.eval()
    rows = []
    for start in tqdm(range(0, len(items), batch_size), desc="cloze", disable=not progress, leave=False):
        context_ids, context_mask = pad_sequences(contexts[start : start + batch_size], pad_id, "left")
        target_ids, target_mask = pad_sequences(targets[start : start + batch_size], pad_id, "right")
        hidden = completion_hidden_states(model, context_ids.to(device), context_mask.to(device),
                                          target_ids.to(device), target_mask.to(device))      # [B, Lt, H]
        logprobs = torch.log_softmax(head_logits(hidden, head_weight, 1.0, softcap), dim=-1).cpu()  # [B, Lt, V]
        token_logprobs = logprobs.gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)       # [B, Lt]
        greedy_hit = (logprobs.argmax(dim=-1) == target_ids) | (target_mask == 0)          # padding counts as hit
        for offset, item in enumerate(items[start : start + batch_size]):
            rows.append({
                "id": item["id"],
                "correct": bool(greedy_hit[offset].all()),
                "target_logprob": float((token_logprobs[offset] * target_mask[offset]).sum()),
                "target_tokens": int(target_mask[offset].sum()),
            })
    return rows


def cloze_summary(rows: list[dict]) -> dict:
    """{"n", "accuracy" (percent), "target_logprob" (mean nats per item)} of scored rows."""
    return {
        "n": len(rows),
        "accuracy": 100.0 * sum(row["correct"] for row in rows) / len(rows),
        "target_logprob": sum(row["target_logprob"] for row in rows) / len(rows),
    }


def evaluate_cloze(model, tokenizer, path: str | Path, max_examples: int = 0,
                   batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True) -> tuple[dict, list[dict]]:
    """Accuracy (percent) and mean target log-likelihood on a cloze file, and one row per item."""
    rows = score_cloze(model, tokenizer, load_cloze_items(path, max_examples), batch_size, progress)
    return cloze_summary(rows), rows
