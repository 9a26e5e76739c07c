"""Scoring a few candidate next tokens after each prompt: the multiple-choice letters, the judge's verdicts."""

from __future__ import annotations

import torch

from grpo.logprobs import lm_head, logprobs_from_hidden, position_ids_from_mask
from grpo.run.errors import ModelError


def first_token_ids(tokenizer, words: list[str]) -> list[int]:
    """The first token of each word as the tokenizer writes it; ModelError if two words share it."""
    ids = [tokenizer(word, add_special_tokens=False).input_ids[0] for word in words]
    if len(set(ids)) != len(ids):
        raise ModelError(f"the tokenizer starts several of {words} with the same token, so they cannot be told apart")
    return ids


@torch.no_grad()
def next_token_logprobs(model, tokenizer, prompts: list[str], candidate_ids: list[int]) -> torch.Tensor:
    """log p(candidate | prompt) for each prompt and candidate token: [P] prompts, [K] ids -> [P, K] float32.

    One pass of the transformer body over the left-padded prompts; only the
    last position's hidden state goes through the LM head, K times.
    """
    device = next(model.parameters()).device
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    input_ids, attention_mask = encoded.input_ids.to(device), encoded.attention_mask.to(device)
    last_hidden = model.base_model(
        input_ids=input_ids, attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask), use_cache=False,
    ).last_hidden_state[:, -1:]                                                    # [P, 1, H]
    n_prompts, n_candidates = len(prompts), len(candidate_ids)
    targets = torch.tensor(candidate_ids, device=device).expand(n_prompts, n_candidates)   # [P, K]
    head_weight, softcap = lm_head(model)
    logprobs, _ = logprobs_from_hidden(
        last_hidden.expand(-1, n_candidates, -1), head_weight, targets,
        torch.ones(n_prompts, n_candidates, device=device), softcap=softcap,
    )
    return logprobs
