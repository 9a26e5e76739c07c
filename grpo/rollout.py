"""Group sampling: G completions for each prompt, with the KV cache.

The loop is written out rather than delegated to `model.generate` because it
does one thing `generate` cannot: each prompt is run through the model once
(the prefill) and its key/value cache is then copied G times, so the G
siblings of a group share their prompt's computation. The cache is
allocated once for the whole rollout (`GrowingLayer`), not copied a step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

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


# top-p looks for each row's nucleus among its NUCLEUS_PREFILTER most likely tokens first, and sorts
# the whole vocabulary only for a row whose nucleus is not there. On a CPU a sort of 16 x 49k logits
# takes ~27 ms of a ~140 ms decode step, the top 256 ~1.3 ms. SmolLM2's nucleus at top_p = 0.9 on the
# MT task holds at most 25 tokens at temperature 0.5, and more than 256 at 16% of positions at 1.0.
NUCLEUS_PREFILTER = 256


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the top-p nucleus.

    top-k keeps the k largest logits (0 = off). top-p keeps the smallest set of
    most likely tokens whose probability mass reaches top_p (1.0 = off); the
    most likely token is always kept. Log-probabilities give the same result
    as the logits they come from.

    Shapes: [B, V] -> [B, V].
    """
    if top_k > 0 and top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p < 1.0:
        # Only on a CPU and outside a compiled graph: the per-row branch would break a graph, and on a GPU,
        # where a sort is cheap, it would make the host wait for the device.
        if NUCLEUS_PREFILTER < logits.shape[-1] and logits.device.type == "cpu" and not torch.compiler.is_compiling():
            return nucleus_among_top(logits, top_p, NUCLEUS_PREFILTER)
        logits = nucleus_by_sort(logits, top_p)
    return logits


def nucleus_by_sort(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """top-p over the whole sorted vocabulary: a token is dropped when the mass of the more likely ones
    already reaches top_p. Shapes: [B, V] -> [B, V]."""
    sorted_logits, sorted_index = torch.sort(logits, dim=-1, descending=True)
    sorted_probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    sorted_remove = mass_before >= top_p       # the mass before this token already reached top_p
    remove = torch.zeros_like(sorted_remove).scatter(1, sorted_index, sorted_remove)
    return logits.masked_fill(remove, float("-inf"))


def nucleus_among_top(logits: torch.Tensor, top_p: float, k: int) -> torch.Tensor:
    """`nucleus_by_sort`, found among each row's k most likely tokens; a row whose nucleus needs more is sorted.

    If a row's top k hold at least top_p of its mass, every token outside
    them has at least that mass before it and is dropped: the nucleus lies
    within the k, and is the sort's. Shapes: [B, V] -> [B, V].
    """
    top_logits, top_index = torch.topk(logits, k, dim=-1)                       # [B, k], sorted
    top_probs = torch.exp(top_logits - torch.logsumexp(logits, dim=-1, keepdim=True))
    mass_before = torch.cumsum(top_probs, dim=-1) - top_probs
    kept = top_logits.masked_fill(mass_before >= top_p, float("-inf"))
    filtered = torch.full_like(logits, float("-inf")).scatter(1, top_index, kept)
    beyond = mass_before[:, -1] + top_probs[:, -1] < top_p                      # [B]: the nucleus needs more
    if bool(beyond.any()):
        filtered[beyond] = nucleus_by_sort(logits[beyond], top_p)
    return filtered


def exponential_noise(rows: int, vocab: int, device, generator: torch.Generator | None) -> torch.Tensor:
    """q = -log(u) ~ Exp(1), u ~ U[0, 1) in float32, for each of [rows, vocab] entries: all the randomness of one draw.

    -log of torch.rand, not Tensor.exponential_: the same distribution at a
    fifth of the time on a CPU (2.8 against 15 ms for 16 x 49k). u = 0 gives
    q = inf, and that token p / q = 0: it cannot win that draw, a bias of
    2^-24 per entry.
    """
    return torch.rand(rows, vocab, dtype=torch.float32, device=device, generator=generator).log_().neg_()


def draw_tokens(weights: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One token per row with P(v) = w_v / sum_u w_u:  argmax_v w_v / q_v,  q_v ~ Exp(1) i.i.d.

    q_v / w_v is exponential with rate w_v, and the smallest of independent
    exponentials is v with probability w_v / sum_u w_u: the weights need no
    normalising, and a weight of 0 never wins. It is how torch.multinomial
    draws one sample. The race is decided by the winner's margin alone, so
    logits that differ in the last bits (a static cache's attention sum, a
    compiled kernel) almost never change the token, where an inverse-CDF
    draw over a 49k cumulative sum would change it often. With the noise
    drawn apart, a compiled decode step takes it as an input.

    Shapes: weights [B, V] >= 0, noise [B, V] -> [B] long.
    """
    return (weights / noise).argmax(dim=-1)


def next_tokens(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
                noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's next token, drawn from softmax(filter(logits / temperature)) (greedy at temperature 0),
    and its sampler log-prob, log pi_sampler(token) = log_softmax(logits / temperature)[token].

    The log-prob is taken from the tempered distribution over the whole
    vocabulary, before top-k and top-p truncation: the distribution the
    trainer's log-prob pass computes (`logprobs.py`), so that with the same
    weights the sampler's and the trainer's log-probs agree and only a
    difference of weights (bfloat16 copies, a compiled graph, quantisation)
    moves their ratio. The truncated distribution the token was drawn from
    would move it too: renormalising over the nucleus raises every kept
    token's probability, by 1 / 0.9 on average at top_p = 0.9. At
    temperature 0 the sampler is a point mass: log-prob 0.

    Shapes: logits [B, V], noise [B, V] (`exponential_noise`; None at temperature 0)
    -> tokens [B] long, logprobs [B] float32.
    """
    if temperature == 0.0:
        tokens = logits.argmax(dim=-1)
        return tokens, torch.zeros(tokens.shape, dtype=torch.float32, device=tokens.device)
    logprobs = torch.log_softmax(logits.float() / temperature, dim=-1)          # [B, V]
    tokens = draw_tokens(filter_logits(logprobs, top_k, top_p).exp(), noise)
    return tokens, logprobs.gather(1, tokens.unsqueeze(1)).squeeze(1)


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


class GrowingLayer(DynamicLayer):
    """A layer of the key/value cache whose keys and values live in buffers sized for the whole rollout.

    transformers' DynamicLayer concatenates a new copy of the cache at every
    token: O(context) bytes into fresh memory per layer and step, about a
    quarter of a CPU decode step for SmolLM2-135M. This layer writes each
    new position in place and gives attention a view of the positions
    written so far; what attention reads is the same.

    Shapes: buffers [rows, kv_heads, capacity, head_dim]; keys, values views [rows, kv_heads, length, head_dim].
    """

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            rows, heads, _, dim = key_states.shape
            self.key_buffer = key_states.new_empty(rows, heads, self.capacity, dim)
            self.value_buffer = value_states.new_empty(rows, heads, self.capacity, value_states.shape[-1])
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise ValueError(f"the cache holds {self.capacity} positions; position {end} was written")
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Each row `repeats` times in a row: a prompt's cache for each member of its group."""
        self.key_buffer = self.key_buffer.repeat_interleave(repeats, dim=0)
        self.value_buffer = self.value_buffer.repeat_interleave(repeats, dim=0)
        self.keys, self.values = self.key_buffer[:, :, : self.length], self.value_buffer[:, :, : self.length]


def growing_cache(model, capacity: int) -> DynamicCache:
    """The model's DynamicCache with every full-attention layer a `GrowingLayer` of `capacity` positions
    (a sliding-window layer, as Gemma-3 has, keeps its own kind)."""
    cache = DynamicCache(config=model.config)
    cache.layers = [GrowingLayer(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


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
    cache = growing_cache(model, prompt_ids.shape[1] + max_new_tokens)
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
        noise = exponential_noise(*next_logits.shape, next_logits.device, generator) if temperature else None
        next_token, next_logprob = next_tokens(next_logits, temperature, top_k, top_p, noise)
        next_token = torch.where(finished, pad_id, next_token)
        tokens.append(next_token)
        token_logprobs.append(next_logprob)
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


# Rows per evaluation batch: on 2 CPU cores one batch of 64 dev sentences decodes 1.5x faster than four
# of 16 (the matmuls run nearer their peak), and on a GPU 64 rows of a 4B model's KV cache are small.
EVAL_BATCH_SIZE = 64


def greedy_completions(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = EVAL_BATCH_SIZE,
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
