"""Per-token log-probs of completion tokens, without materialising full logits.

A [batch, time, vocab] float32 logits tensor is the largest object in a GRPO
step: for Gemma-3's 262k vocabulary, 16 completions of 64 tokens take 1.07 GB,
and its gradient as much again. We run the transformer body once, then push
the hidden states through the LM head a chunk of tokens at a time, keeping
only the log-prob of the sampled token (and, for logging, the entropy). When
gradients are needed each chunk is checkpointed, so the backward pass
recomputes that chunk's logits instead of storing them. With
`checkpoint_decoder_layers` the decoder layers are checkpointed too
(gradient checkpointing of the body), and the backward pass recomputes each
layer's activations from its input.
"""

from __future__ import annotations

import types
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from transformers import DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer

from grpo.run.errors import ModelError

DEFAULT_CHUNK_TOKENS = 0           # 0: as many positions as fit in CHUNK_LOGITS_BYTES
CHUNK_LOGITS_BYTES = 128 * 2**20   # float32 logits of one LM-head chunk


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding: the first real token is position 0.

    Shapes: [B, L] -> [B, L]. Generation uses the same rule, so a token's
    position at scoring time equals its position at sampling time.
    """
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def lm_head(model) -> tuple[torch.Tensor, float | None]:
    """The LM head's weight W [V, H] and the model's final logit soft-cap (None when it has none, as most)."""
    return model.get_output_embeddings().weight, getattr(model.config, "final_logit_softcapping", None)


def head_logits(hidden: torch.Tensor, head_weight: torch.Tensor, temperature: float, softcap: float | None) -> torch.Tensor:
    """z = (W h) / temperature, in float32, soft-capped first if the model does so. [N, H] -> [N, V]."""
    logits = F.linear(hidden, head_weight).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits / temperature


def auto_chunk_tokens(vocab_size: int, budget_bytes: int = CHUNK_LOGITS_BYTES) -> int:
    """Positions per LM-head chunk whose float32 logits fit in the budget: budget / (4 V).

    A fixed token count would not do: 1,024 positions are 200 MB of logits
    for a 49k vocabulary but 1 GB for Gemma-3's 262k one. With 128 MB this
    gives 682 positions for SmolLM2, 220 for Qwen2.5, 128 for Gemma-3.
    """
    return max(1, budget_bytes // (4 * vocab_size))


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(p) = logsumexp(z) - sum_v p_v z_v with p = softmax(z). Shapes: [N, V] -> [N]."""
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


def _chunk_logprobs(
    hidden: torch.Tensor,
    head_weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    softcap: float | None,
    with_entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log softmax(z)[target] = z_target - logsumexp(z) for one chunk, and its entropy.

    Shapes: hidden [N, H], head_weight [V, H], targets [N] -> logprobs [N]
    float32 and entropy [N] (detached; empty if not asked for).
    """
    logits = head_logits(hidden, head_weight, temperature, softcap)
    target_logits = logits.gather(1, targets.unsqueeze(1)).squeeze(1)
    logprobs = target_logits - torch.logsumexp(logits, dim=-1)
    entropy = _entropy(logits.detach()) if with_entropy else logits.new_empty(0)
    return logprobs, entropy


def logprobs_from_hidden(
    hidden: torch.Tensor,
    head_weight: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
    softcap: float | None = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked log pi(target | context) for every unmasked position.

    Only positions with mask == 1 go through the LM head (padding-free), in
    chunks of `chunk_tokens` (0: `auto_chunk_tokens`), so peak extra memory
    is a small multiple of chunk_tokens * V floats.

    Args:
        hidden: [B, T, H] final hidden states at the positions that predict `targets`.
        head_weight: [V, H] the LM head (output embedding) weight.
        targets: [B, T] token ids.
        mask: [B, T] 1 for positions to score.
        temperature: logits are divided by it, matching the sampling distribution.
        softcap: Gemma-2 style final logit soft-capping, if the model uses it.

    Returns:
        logprobs [B, T] float32 (0 at masked positions) and, if asked,
        entropy [B, T] float32 (detached).
    """
    batch, time = targets.shape
    flat_positions = mask.flatten().nonzero().squeeze(1)               # [N]
    flat_hidden = hidden.reshape(batch * time, -1).index_select(0, flat_positions)
    flat_targets = targets.flatten().index_select(0, flat_positions)
    needs_grad = torch.is_grad_enabled() and (flat_hidden.requires_grad or head_weight.requires_grad)
    chunk_tokens = chunk_tokens or auto_chunk_tokens(head_weight.shape[0])

    logprob_chunks, entropy_chunks = [], []
    for start in range(0, flat_positions.numel(), chunk_tokens):
        args = (flat_hidden[start : start + chunk_tokens], head_weight, flat_targets[start : start + chunk_tokens],
                temperature, softcap, with_entropy)
        if needs_grad:
            # Recompute this chunk's logits in backward instead of keeping them.
            logprobs, entropy = checkpoint(_chunk_logprobs, *args, use_reentrant=False)
        else:
            logprobs, entropy = _chunk_logprobs(*args)
        logprob_chunks.append(logprobs)
        entropy_chunks.append(entropy)

    def scatter(chunks: list[torch.Tensor]) -> torch.Tensor:
        out = torch.zeros(batch * time, dtype=torch.float32, device=hidden.device)
        if chunks:
            out = out.index_put((flat_positions,), torch.cat(chunks))
        return out.view(batch, time)

    return scatter(logprob_chunks), (scatter(entropy_chunks) if with_entropy else None)


def final_hidden_states(model, input_ids: torch.Tensor, **inputs) -> torch.Tensor:
    """The transformer's final (normed) hidden states, without computing any logits.

    The whole model is called, not just its body (`model.base_model`), so that
    every pass goes through `model.forward`: with sharded weights that is where
    the root FSDP unit gathers the embeddings, final norm and LM head, and it
    keeps them gathered for the chunked head that follows
    (`grpo.run.distributed.shard_model`). `logits_to_keep` names no position, so
    the model's own LM head computes nothing, and `output_hidden_states=-1`
    keeps only the last hidden state, which transformers gives after the
    final norm.

    Shapes: input_ids [B, L] -> [B, L, H].
    """
    no_positions = input_ids.new_zeros(0)
    outputs = model(input_ids=input_ids, logits_to_keep=no_positions, output_hidden_states=-1, **inputs)
    return outputs.hidden_states[-1]


def completion_hidden_states(model, prompt_ids, prompt_mask, completion_ids, completion_mask) -> torch.Tensor:
    """Final hidden states at the positions that predict each completion token.

    One pass over [prompt; completion]; the state at position p predicts token p + 1.
    Shapes: prompts [B, Lp], completions [B, Lc] -> [B, Lc, H].
    """
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)          # [B, Lp+Lc]
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1).long()
    hidden = final_hidden_states(
        model,
        input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )                                                                   # [B, Lp+Lc, H]
    return hidden[:, prompt_ids.shape[1] - 1 : -1]


def shared_prompt_hidden_states(
    model, prompt_ids, prompt_mask, completion_ids, completion_mask, group_size: int
) -> torch.Tensor:
    """Same result as `completion_hidden_states`, running each group's prompt once.

    Rows g*G ... g*G+G-1 share one prompt. The prompt pass builds a key/value
    cache for the P distinct prompts, the cache is repeated G times, and the
    B completions attend to it. Gradients flow back through the cache into
    the prompt pass, so the gradient is unchanged while the prompt tokens are
    processed P times instead of B = P * G times.

    Shapes: prompts [B, Lp], completions [B, Lc] -> [B, Lc, H].
    """
    distinct_prompt_ids = prompt_ids[::group_size]                      # [P, Lp]
    distinct_prompt_mask = prompt_mask[::group_size]
    cache = DynamicCache(config=model.config)
    prompt_hidden = final_hidden_states(
        model,
        distinct_prompt_ids,
        attention_mask=distinct_prompt_mask,
        position_ids=position_ids_from_mask(distinct_prompt_mask),
        cache=cache,
        use_cache=True,
    )                                                                   # [P, Lp, H]
    cache.batch_repeat_interleave(group_size)
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1).long()
    completion_hidden = final_hidden_states(
        model,
        completion_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask)[:, prompt_ids.shape[1]:],
        cache=cache,
        use_cache=True,
    )                                                                   # [B, Lc, H]
    # The last prompt position predicts the first completion token.
    first = prompt_hidden[:, -1:].repeat_interleave(group_size, dim=0)  # [B, 1, H]
    return torch.cat([first, completion_hidden[:, :-1]], dim=1)


def naive_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature=1.0):
    """log softmax(z / temperature)[o_t] from the full logits z = model(q; o), 0 where masked.

    The textbook route: it holds all [B, Lp+Lc, V] logits at once, which
    `completion_logprobs` avoids. It is the independent check of that chunked
    pass in the tests, and the baseline of bench/logprob_memory.py.
    Shapes: prompts [B, Lp], completions [B, Lc]; logits [B, Lp+Lc, V] -> [B, Lc].
    """
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1).long()
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=position_ids_from_mask(attention_mask), use_cache=False).logits
    completion_logits = logits[:, prompt_ids.shape[1] - 1 : -1].float() / temperature    # [B, Lc, V]
    logprobs = F.log_softmax(completion_logits, dim=-1).gather(2, completion_ids.unsqueeze(2)).squeeze(2)
    return logprobs * completion_mask


class TokenLogprobs(NamedTuple):
    """What `completion_logprobs` returns, per completion token."""

    logprobs: torch.Tensor              # [B, Lc] float32, log pi(o_t | q, o_<t)
    entropy: torch.Tensor | None        # [B, Lc] float32 entropy of pi(. | q, o_<t), when asked for


def completion_logprobs(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    with_entropy: bool = False,
    group_size: int = 1,
) -> TokenLogprobs:
    """log pi(o_t | q, o_<t) for every completion token.

    Args:
        model: a transformers causal LM.
        prompt_ids, prompt_mask: [B, Lp] left-padded prompts.
        completion_ids, completion_mask: [B, Lc] completions, mask 0 after EOS.
        temperature: the sampling temperature (log-probs of the distribution
            the tokens were actually drawn from).
        group_size: G > 1 when rows come in contiguous groups of G sharing a
            prompt: each prompt then goes through the model once.

    Returns:
        TokenLogprobs: logprobs [B, Lc] float32 and, with `with_entropy`, entropy [B, Lc] (else None).
    """
    if group_size > 1:
        hidden = shared_prompt_hidden_states(model, prompt_ids, prompt_mask, completion_ids, completion_mask, group_size)
    else:
        hidden = completion_hidden_states(model, prompt_ids, prompt_mask, completion_ids, completion_mask)
    head_weight, softcap = lm_head(model)
    return TokenLogprobs(*logprobs_from_hidden(
        hidden, head_weight, completion_ids, completion_mask, temperature, softcap, chunk_tokens, with_entropy
    ))


def _cache_state(cache) -> tuple[list, list[dict]] | None:
    """What a layer's forward pass may change in a transformers cache: its list of layers and each one's fields."""
    if cache is None:
        return None
    return list(cache.layers), [dict(vars(layer)) for layer in cache.layers]


def _restore_cache_state(cache, state: tuple[list, list[dict]] | None) -> None:
    if state is None:
        return
    layers, fields = state
    cache.layers[:] = layers
    for layer, layer_fields in zip(layers, fields):
        vars(layer).clear()
        vars(layer).update(layer_fields)


def _checkpointed_layer_forward(layer, *args, **kwargs):
    """The layer's forward under activation checkpointing, when gradients are being recorded.

    The shared prompt pass (`shared_prompt_hidden_states`) needs the cache:
    the prompt pass writes each layer's keys and values into it and the
    completion pass reads and extends them. transformers' own gradient
    checkpointing switches the cache off, so this one keeps it and instead
    puts the cache back as it was before the layer ran whenever the backward
    pass replays the layer, so that the replay reads and writes what the
    first run did. (A transformers cache replaces its tensors rather than
    writing into them, so the saved references stay valid.)
    """
    forward = type(layer).forward
    if not torch.is_grad_enabled():
        return forward(layer, *args, **kwargs)
    cache = kwargs.get("cache")
    state_before = _cache_state(cache)

    def run(*inputs):
        _restore_cache_state(cache, state_before)
        return forward(layer, *inputs, **kwargs)

    return checkpoint(run, *args, use_reentrant=False)


def checkpoint_decoder_layers(model) -> int:
    """Gradient checkpointing of the decoder body: keep each layer's input, recompute the rest in backward.

    The activations a layer stores for backward (attention inputs and
    outputs, the MLP's wide intermediate) are freed after its forward pass
    and recomputed from the layer's input during backward: about one more
    forward pass of the body, for the memory of one layer's activations
    instead of all of them. It acts only where gradients are recorded (the
    update's log-prob pass); the no-grad passes run as before. The LM head
    is chunked and checkpointed on its own (`logprobs_from_hidden`).

    Returns the number of layers; raises ModelError if the model has none
    that transformers marks as a checkpointable decoder layer.
    """
    layers = [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]
    if not layers:
        raise ModelError(f"gradient_checkpointing: {type(model).__name__} has no decoder layers to checkpoint "
                         "(no transformers GradientCheckpointingLayer); set gradient_checkpointing = false")
    for layer in layers:
        # Bound to the layer instance (not a closure over it), so a deep copy of the model stays self-contained.
        layer.forward = types.MethodType(_checkpointed_layer_forward, layer)
    return len(layers)
