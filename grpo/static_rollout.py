"""Group sampling with a static KV cache: the Rollout of `rollout.sample_groups`, in shapes that repeat.

The eager sampler's key/value cache grows by a position a step (written in
place, `rollout.GrowingLayer`, but seen by attention at a new length each
step), it builds a new attention mask every step, and asks the host after
every token whether all rows are done. On a GPU a decode step of a small model is then the time it
takes Python to launch a few hundred kernels, not to run them. This sampler
keeps everything a decode step touches at a fixed shape and address:

- the cache holds B = P * G rows and Lb + T positions, allocated once and
  written in place (transformers' StaticCache); Lb is the prompt length
  rounded up to a power of two (`prompt_bucket`), so that rollouts with
  different prompt lengths fall into a few shapes;
- each distinct prompt is run through the model once (the prefill, exactly
  as the eager sampler runs it) and its keys and values are copied into the
  cache rows of its G completions;
- a decode step is one function, `decode_step(tokens, positions, ...)` ->
  next tokens, that writes the tokens' keys and values at the next cache
  slot and samples (temperature, top-k, top-p) on the device. The random
  numbers of each draw are made outside it (`rollout.exponential_noise`),
  so the same function runs eagerly ("static") or compiled ("compiled":
  torch.compile, which on a GPU captures it as a CUDA graph);
- whether all rows have finished is asked every `check_every` steps, not
  after every token, so the host does not wait for the device each step.

The samples are those of the eager sampler: with logits that agree bit for
bit, a seeded generator gives the same tokens (tests/test_static_rollout.py).
Only models whose every layer attends to the whole sequence are supported
(no sliding-window layers such as Gemma-3's), and not FSDP-sharded ones.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, StaticCache
from transformers.cache_utils import StaticLayer

from grpo.logprobs import position_ids_from_mask
from grpo.rollout import Rollout, encode_prompts, exponential_noise, finish_rollout, next_tokens, sample_groups
from grpo.run.errors import ModelError

GENERATION_MODES = ("eager", "static", "compiled")
MIN_PROMPT_BUCKET = 16
FINISHED_CHECK_EVERY = 8


def prompt_bucket(length: int, minimum: int = MIN_PROMPT_BUCKET) -> int:
    """The padded prompt length: the smallest power of two >= length, and at least `minimum`.

    Powers of two keep the number of distinct cache shapes (and so of
    compiled graphs) logarithmic in the longest prompt, at the price of at
    most twice the prompt positions in the prefill and in decode attention.
    """
    bucket = minimum
    while bucket < length:
        bucket *= 2
    return bucket


class GenerationWeights:
    """The model's Linear weights and biases in the autocast dtype, swapped in while it decodes.

    Under mixed_precision = "bf16" the weights are float32 and autocast
    casts each one to bfloat16 at every matmul: T decode steps cast every
    weight T times. These copies are cast once per rollout, written in place
    (a CUDA graph keeps reading the same addresses), and hold exactly the
    values autocast would have made, so the tokens do not change. They cost
    half the float32 size of the Linear weights in memory. Linear layers
    already in the autocast dtype (a bfloat16 base under LoRA) are used as
    they are. Outside autocast in `dtype` nothing is swapped.
    """

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype
        self.copies: dict[str, nn.Parameter] = {}

    def _copy_of(self, name: str, parameter: torch.Tensor) -> nn.Parameter:
        copy = self.copies.get(name)
        if copy is None or copy.shape != parameter.shape or copy.device != parameter.device:
            copy = nn.Parameter(torch.empty_like(parameter, dtype=self.dtype), requires_grad=False)
            self.copies[name] = copy
        copy.data.copy_(parameter.data)
        return copy

    @contextmanager
    def swapped_in(self, model: nn.Module):
        device_type = next(model.parameters()).device.type
        if not (torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == self.dtype):
            yield
            return
        originals = []
        try:
            for module_name, module in model.named_modules():
                if not isinstance(module, nn.Linear):
                    continue
                for kind in ("weight", "bias"):
                    parameter = getattr(module, kind)
                    if parameter is None or parameter.dtype == self.dtype:
                        continue
                    originals.append((module, kind, parameter))
                    # Per module: a tied LM head gets its own copy while the embedding keeps its float32 weight.
                    setattr(module, kind, self._copy_of(f"{module_name}.{kind}", parameter))
            yield
        finally:
            for module, kind, parameter in reversed(originals):
                setattr(module, kind, parameter)


class StaticSampler:
    """`rollout.sample_groups` with a static cache; called with the same arguments, returns the same Rollout.

    One sampler serves a whole run: it keeps its cache (while the number of
    rows and the bucketed length stay the same), its compiled decode step
    and its generation weights from one rollout to the next.
    """

    def __init__(self, compile: bool = False, weights_dtype: torch.dtype | None = None,
                 check_every: int = FINISHED_CHECK_EVERY):
        self.compile = compile
        self.check_every = check_every
        self.weights = GenerationWeights(weights_dtype) if weights_dtype is not None else None
        self.cache: StaticCache | None = None
        self.cache_key: tuple | None = None
        self.compiled_step = None
        self.on_cuda = False

    def decode_step(self, model, cache: StaticCache, tokens: torch.Tensor, positions: torch.Tensor,
                    attention_mask: torch.Tensor, noise: torch.Tensor | None,
                    temperature: float, top_k: int, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed each row's current token at its position, write its keys and values at the next slot, sample.

        Shapes: tokens [B], positions [B], attention_mask [B, Lb + T] (1 for
        the prompt's real tokens and every slot written so far, this one
        included), noise [B, V] (`rollout.exponential_noise`) -> next tokens [B] and their log-probs [B].
        """
        logits = model(input_ids=tokens.unsqueeze(1), position_ids=positions.unsqueeze(1),
                       attention_mask=attention_mask, cache=cache, use_cache=True).logits[:, -1]
        return next_tokens(logits, temperature, top_k, top_p, noise)

    def _step_function(self, device: torch.device):
        if not self.compile:
            return self.decode_step
        if self.compiled_step is None:
            self.on_cuda = device.type == "cuda"
            # reduce-overhead: CUDA graphs, replayed each step; on a CPU the default mode (fused kernels).
            self.compiled_step = torch.compile(self.decode_step, mode="reduce-overhead" if self.on_cuda else None,
                                               dynamic=False)
        return self.compiled_step

    def _cache_for(self, model, rows: int, length: int, prompt_cache: DynamicCache) -> StaticCache:
        """A StaticCache of [rows, length] holding the prompt cache's layers repeated per row group."""
        keys = prompt_cache.layers[0].keys
        key = (rows, length, keys.dtype, keys.device)
        if self.cache_key != key:
            self.cache, self.cache_key = None, None  # free the old buffers before allocating new ones
            cache = StaticCache(config=model.config, max_cache_len=length)
            unsupported = sorted({type(layer).__name__ for layer in cache.layers if type(layer) is not StaticLayer})
            if unsupported:
                raise ModelError(f"generation = static/compiled needs full attention in every layer, but this "
                                 f"model's cache has {', '.join(unsupported)} layers (sliding-window attention, as "
                                 f"in Gemma-3); set generation = eager")
            self.cache, self.cache_key = cache, key
        self.cache.reset()
        group_size = rows // keys.shape[0]
        for static_layer, prompt_layer in zip(self.cache.layers, prompt_cache.layers):
            static_layer.update(prompt_layer.keys.repeat_interleave(group_size, dim=0),
                                prompt_layer.values.repeat_interleave(group_size, dim=0))
        return self.cache

    @torch.no_grad()  # not inference_mode: these tensors feed the autograd pass later
    def __call__(
        self,
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
        """Sample `group_size` completions for each prompt; the arguments are those of `rollout.sample_groups`."""
        prompt_ids, prompt_mask, eos_token_ids = encode_prompts(model, tokenizer, prompts)  # [P, Lp], [P, Lp], [E]
        device = prompt_ids.device
        pad_id = tokenizer.pad_token_id
        batch = prompt_ids.shape[0] * group_size
        bucket = prompt_bucket(prompt_ids.shape[1])
        # More left padding changes nothing a real token sees: positions and the mask skip it.
        padded_ids = F.pad(prompt_ids, (bucket - prompt_ids.shape[1], 0), value=pad_id)     # [P, Lb]
        padded_mask = F.pad(prompt_mask, (bucket - prompt_ids.shape[1], 0), value=0)

        with self.weights.swapped_in(model) if self.weights is not None else nullcontext():
            # The prefill: each distinct prompt once, as the eager sampler runs it.
            prompt_cache = DynamicCache(config=model.config)
            out = model(input_ids=padded_ids, attention_mask=padded_mask,
                        position_ids=position_ids_from_mask(padded_mask), cache=prompt_cache, use_cache=True,
                        logits_to_keep=1)
            first_logits = out.logits[:, -1].repeat_interleave(group_size, dim=0)          # [B, V]
            cache = self._cache_for(model, batch, bucket + max_new_tokens, prompt_cache)
            del prompt_cache, out

            vocab = first_logits.shape[-1]
            attention_mask = padded_mask.new_zeros(batch, bucket + max_new_tokens)        # [B, Lb + T]
            attention_mask[:, :bucket] = padded_mask.repeat_interleave(group_size, dim=0)
            positions = prompt_mask.sum(dim=1).repeat_interleave(group_size)              # [B]
            completion_ids = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=device)
            sampler_logprobs = torch.zeros(batch, max_new_tokens, dtype=torch.float32, device=device)
            finished = torch.zeros(batch, dtype=torch.bool, device=device)
            step_function = self._step_function(device)

            def noise():
                return exponential_noise(batch, vocab, device, generator) if temperature else None

            next_token, next_logprob = next_tokens(first_logits, temperature, top_k, top_p, noise())
            steps = 0
            for step in range(max_new_tokens):
                next_token = torch.where(finished, pad_id, next_token)
                # Copied out before the next step: a CUDA graph's replay overwrites its outputs.
                completion_ids[:, step] = next_token
                sampler_logprobs[:, step] = next_logprob
                steps = step + 1
                if not ignore_eos:
                    finished |= torch.isin(next_token, eos_token_ids)
                    # The one host synchronisation, every check_every tokens.
                    if steps % self.check_every == 0 and bool(finished.all()):
                        break
                if steps == max_new_tokens:
                    break  # the last token needs no forward pass
                attention_mask[:, bucket + step] = 1
                if self.on_cuda and self.compile:
                    torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs are consumed
                next_token, next_logprob = step_function(model, cache, next_token, positions, attention_mask,
                                                         noise(), temperature, top_k, top_p)
                positions = positions + 1

        # Up to check_every - 1 steps may have run after the last row's EOS: finish_rollout drops them.
        return finish_rollout(prompt_ids, prompt_mask, completion_ids[:, :steps], sampler_logprobs[:, :steps],
                              eos_token_ids, pad_id, group_size, ignore_eos)


def generation_weights_dtype(generation: str, mixed_precision: str) -> torch.dtype | None:
    """The dtype of the weight copies a `generation` mode decodes with, or None for the stored weights.

    Only the static samplers under mixed_precision = "bf16" decode with
    copies (bfloat16, cast once per rollout); the eager sampler, and every
    sampler without autocast, use the weights as stored.
    """
    return torch.bfloat16 if mixed_precision == "bf16" and generation != "eager" else None


def make_rollout_sampler(generation: str, weights_dtype: torch.dtype | None = None):
    """The rollout function of a `generation` mode; each takes the arguments of `rollout.sample_groups`.

    eager: `rollout.sample_groups`; static: a StaticSampler; compiled: a
    StaticSampler whose decode step is compiled. `weights_dtype`
    (`generation_weights_dtype`) gives the static samplers their generation
    weights; the eager one casts at each matmul as before.
    """
    if generation not in GENERATION_MODES:
        raise ValueError(f"generation must be one of {GENERATION_MODES}, got {generation!r}")
    if generation == "eager":
        return sample_groups
    return StaticSampler(compile=generation == "compiled", weights_dtype=weights_dtype)
