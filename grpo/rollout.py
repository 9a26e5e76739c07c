"""Group sampling: G completions for each prompt, with the KV cache.

The loop is written out rather than delegated to `model.generate` because it
does one thing `generate` cannot: each prompt is run through the model once
(the prefill) and its key/value cache is then copied G times, so the G
siblings of a group share their prompt's computation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from grpo.logprobs import position_ids_from_mask
from grpo.run import distributed as dist


@dataclass
class Rollout:
    """A batch of B = P * G sampled completions, grouped contiguously by prompt."""

    prompt_ids: torch.Tensor        # [B, Lp] left-padded
    prompt_mask: torch.Tensor       # [B, Lp] 1 for real prompt tokens
    completion_ids: torch.Tensor    # [B, Lc] pad after the first EOS
    completion_mask: torch.Tensor   # [B, Lc] float, 1 up to and including the first EOS
    truncated: torch.Tensor         # [B] bool, True if no EOS within max_new_tokens
    sampler_logprobs: torch.Tensor  # [B, Lc] float32, log pi_sampler of each completion token, 0 where masked
                                    #         (`sampled_token_logprobs`: the weights the sampler decoded with)

    @property
    def completion_lengths(self) -> torch.Tensor:  # [B]
        return self.completion_mask.sum(dim=1)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the top-p nucleus.

    top-k keeps the k largest logits (0 = off). top-p keeps the smallest set of
    most likely tokens whose probability mass reaches top_p (1.0 = off); the
    most likely token is always kept.

    Shapes: [B, V] -> [B, V].
    """
    if top_k > 0 and top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p < 1.0:
        sorted_logits, sorted_index = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        sorted_remove = mass_before >= top_p       # the mass before this token already reached top_p
        remove = torch.zeros_like(sorted_remove).scatter(1, sorted_index, sorted_remove)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def sampling_probs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """p = softmax(filter(logits / temperature)) in float32. Shapes: [B, V] -> [B, V]."""
    return torch.softmax(filter_logits(logits.float() / temperature, top_k, top_p), dim=-1)


def exponential_noise(rows: int, vocab: int, device, generator: torch.Generator | None) -> torch.Tensor:
    """q ~ Exp(1) in float32, independently for each of [rows, vocab] entries: all the randomness of one draw."""
    return torch.empty(rows, vocab, dtype=torch.float32, device=device).exponential_(1, generator=generator)


def draw_tokens(probs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One token per row with P(v) = p_v:  argmax_v p_v / q_v,  q_v ~ Exp(1) i.i.d.

    q_v / p_v is exponential with rate p_v, and the smallest of independent
    exponentials is v with probability p_v / sum_u p_u. It is how
    torch.multinomial draws one sample (same noise, same division, same
    argmax), so from the same generator state both give the same tokens;
    with the noise drawn apart, a compiled decode step can take it as an
    input. Unlike torch.multinomial it does not check that p is a
    distribution. Shapes: [B, V], [B, V] -> [B] long.
    """
    return (probs / noise).argmax(dim=-1)


def sample_next_token(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Draw one token per row from softmax(filter(logits / temperature)); greedy if temperature == 0.

    Shapes: [B, V] -> [B] long.
    """
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    probs = sampling_probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


def sampled_token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """log pi_sampler(token) = log_softmax(logits / temperature)[token], in float32; 0 at temperature 0.

    This is the tempered distribution over the whole vocabulary, before top-k
    and top-p truncation: the distribution the trainer's log-prob pass
    computes (`logprobs.py`), so that with the same weights the sampler's and
    the trainer's log-probs agree and only a difference of weights (bfloat16
    copies, a compiled graph, quantisation) moves their ratio. The truncated
    distribution the token was drawn from would move it too: renormalising
    over the nucleus raises every kept token's probability, by 1 / 0.9 on
    average at top_p = 0.9. At temperature 0 the sampler is a point mass.

    Shapes: logits [B, V], tokens [B] -> [B].
    """
    if temperature == 0.0:
        return torch.zeros(tokens.shape, dtype=torch.float32, device=tokens.device)
    logprobs = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logprobs.gather(1, tokens.unsqueeze(1)).squeeze(1)


def completion_mask_after_eos(completion_ids: torch.Tensor, eos_token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask that keeps tokens up to and including the first EOS, and the truncated flags.

    Shapes: completion_ids [B, Lc], eos_token_ids [E] -> mask [B, Lc] float, truncated [B] bool.
    """
    is_eos = torch.isin(completion_ids, eos_token_ids)                   # [B, Lc]
    eos_seen_before = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0  # an EOS strictly earlier
    completion_mask = (~eos_seen_before).float()
    truncated = ~is_eos.any(dim=1)
    return completion_mask, truncated


def eos_ids_of(tokenizer, model=None) -> list[int]:
    """Every token id that ends a completion: the tokenizer's EOS and the model's generation EOS ids."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    generation_config = getattr(model, "generation_config", None)
    extra = getattr(generation_config, "eos_token_id", None)
    if isinstance(extra, int):
        extra = [extra]
    ids.update(extra or [])
    return sorted(ids)


def encode_prompts(model, tokenizer, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The start of every sampler: prompts left-padded on the model's device, and the ids that end a completion.

    Shapes: -> prompt_ids [P, Lp], prompt_mask [P, Lp], eos_token_ids [E].
    """
    device = next(model.parameters()).device
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    eos_token_ids = torch.tensor(eos_ids_of(tokenizer, model), device=device)
    return encoded.input_ids, encoded.attention_mask, eos_token_ids


def finish_rollout(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_ids: torch.Tensor,
                   sampler_logprobs: torch.Tensor, eos_token_ids: torch.Tensor, pad_id: int, group_size: int,
                   ignore_eos: bool) -> Rollout:
    """The end of every sampler: each prompt repeated for its group, each completion cut after its first EOS.

    Tokens after a row's EOS become pad and leave the mask; columns after the
    last row's EOS are dropped, so a sampler that ran a few steps past it
    returns what one that stopped there would. With ignore_eos every token
    counts and every row is truncated.

    Shapes: prompt_ids, prompt_mask [P, Lp], completion_ids, sampler_logprobs [B, T] (B = P * G)
    -> Rollout with Lc <= T.
    """
    prompt_ids = prompt_ids.repeat_interleave(group_size, dim=0)                    # [B, Lp]
    prompt_mask = prompt_mask.repeat_interleave(group_size, dim=0)
    if ignore_eos:
        completion_mask = torch.ones_like(completion_ids, dtype=torch.float)
        truncated = torch.ones(completion_ids.shape[0], dtype=torch.bool, device=completion_ids.device)
        return Rollout(prompt_ids, prompt_mask, completion_ids, completion_mask, truncated, sampler_logprobs)
    completion_mask, truncated = completion_mask_after_eos(completion_ids, eos_token_ids)
    width = int(completion_mask.sum(dim=1).max())
    completion_ids, completion_mask = completion_ids[:, :width], completion_mask[:, :width]
    completion_ids = torch.where(completion_mask.bool(), completion_ids, pad_id)
    sampler_logprobs = sampler_logprobs[:, :width] * completion_mask
    return Rollout(prompt_ids, prompt_mask, completion_ids, completion_mask, truncated, sampler_logprobs)


@torch.no_grad()  # not inference_mode: these tensors feed the autograd pass later
def sample_groups(
    model,
    tokenizer,
    prompts: list[str],
    group_size: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
    ignore_eos: bool = False,
) -> Rollout:
    """Sample `group_size` completions for each prompt.

    Args:
        prompts: P rendered prompt strings (special tokens already included).
        group_size: G; the output has B = P * G rows, rows g*G ... g*G+G-1 for prompt g.
        max_new_tokens: completion cap Lc.
        temperature, top_p, top_k: sampling; temperature 0 is greedy.
        generator: a seeded torch.Generator for reproducible samples.
        ignore_eos: keep sampling past EOS (fixed-length completions for timing).
    """
    prompt_ids, prompt_mask, eos_token_ids = encode_prompts(model, tokenizer, prompts)  # [P, Lp], [P, Lp], [E]
    pad_id = tokenizer.pad_token_id

    # Prefill each distinct prompt once, then give every group member a copy of its cache.
    cache = DynamicCache(config=model.config)
    out = model(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=position_ids_from_mask(prompt_mask),
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    cache.batch_repeat_interleave(group_size)
    next_logits = out.logits[:, -1].repeat_interleave(group_size, dim=0)         # [B, V]
    attention_mask = prompt_mask.repeat_interleave(group_size, dim=0)            # [B, Lp], grows a column a step
    next_position = attention_mask.sum(dim=1, keepdim=True)                      # [B, 1]

    finished = torch.zeros(attention_mask.shape[0], dtype=torch.bool, device=attention_mask.device)
    tokens, token_logprobs = [], []
    for step in range(max_new_tokens):
        next_token = sample_next_token(next_logits, temperature, top_k, top_p, generator)
        next_token = torch.where(finished, pad_id, next_token)
        tokens.append(next_token)
        token_logprobs.append(sampled_token_logprobs(next_logits, next_token, temperature))
        if not ignore_eos:
            finished |= torch.isin(next_token, eos_token_ids)
            done = bool(finished.all())
            if dist.is_sharded(model):
                done = dist.all_ranks(done)  # each forward is a collective: all ranks stop together
            if done:
                break
        if step == max_new_tokens - 1:
            break  # the last token needs no forward pass
        attention_mask = torch.cat([attention_mask, torch.ones_like(next_token).unsqueeze(1)], dim=1)
        out = model(
            input_ids=next_token.unsqueeze(1),
            attention_mask=attention_mask,
            position_ids=next_position,
            cache=cache,
            use_cache=True,
        )
        next_logits = out.logits[:, -1]
        next_position = next_position + 1

    completion_ids = torch.stack(tokens, dim=1)                                  # [B, Lc]
    return finish_rollout(prompt_ids, prompt_mask, completion_ids, torch.stack(token_logprobs, dim=1),
                          eos_token_ids, pad_id, group_size, ignore_eos)


def decode_completions(tokenizer, rollout: Rollout) -> list[str]:
    """Completion texts without special tokens (what rewards and humans read)."""
    return tokenizer.batch_decode(rollout.completion_ids, skip_special_tokens=True)


def greedy_completions(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 16,
                       progress: bool = False, desc: str = "generate") -> list[str]:
    """The model's greedy completion of each prompt, decoded, in batches (evaluation)."""
    from tqdm.auto import tqdm

    model.eval()
    outputs = []
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=not progress, leave=False):
        rollout = sample_groups(model, tokenizer, prompts[start : start + batch_size], group_size=1,
                                max_new_tokens=max_new_tokens, temperature=0.0)
        outputs += decode_completions(tokenizer, rollout)
    return outputs
