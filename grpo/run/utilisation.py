"""How close each phase of a step runs to the machine's limit, as nanoGPT prints MFU.

A phase's *floor* is the time it could not beat on this machine; its
utilisation is floor / measured seconds (1.0 = at the limit).

- Generation. A decode token-step reads every weight and each row's KV cache
  once, and does 2 flops per matmul weight per row plus the attention over
  the cache. Its floor is the larger of bytes / memory bandwidth and
  flops / matmul peak (a roofline). The prefill is compute: 2 flops per
  weight per prompt token.
- Log-prob passes and the update: 2 flops per weight per token for a
  forward pass, 6 for forward and backward (4 with LoRA, whose frozen
  weights get no weight gradient), against the matmul peak: the MFU.

Bandwidth and peak are measured in the same process (`Machine.measure`), not
taken from a data sheet: 2 threads of a shared CPU are not the chip's spec.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import torch
from torch import nn


def synchronize(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def matmul_peak_flops(dtype: torch.dtype = torch.float32, device: str = "cpu", repeats: int = 10) -> float:
    """Best achieved FLOP/s of a square matmul (2 n^3 flops) on this device, now.

    n = 1024 on a CPU, 8192 on a GPU (a small product would not fill it).
    """
    size = 8192 if str(device).startswith("cuda") else 1024
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def memory_bandwidth(device: str = "cpu", megabytes: int = 256, repeats: int = 5) -> float:
    """Best achieved bytes/s of reading a float32 tensor of `megabytes` once (a sum), on this device, now.

    256 MB is far beyond any CPU cache, so the sum streams from memory, as a
    decode step streams the weights.
    """
    data = torch.ones(megabytes * 2**20 // 4, dtype=torch.float32, device=device)
    data.sum()
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        data.sum()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return data.numel() * 4 / best


def matmul_dtype(cfg) -> torch.dtype:
    """The dtype a run's matmuls run in: bf16 under bf16 autocast or with bf16 weights, else float32."""
    return torch.bfloat16 if cfg.mixed_precision == "bf16" or cfg.dtype == "bfloat16" else torch.float32


@dataclass(frozen=True)
class Machine:
    """What this device achieves now: memory bandwidth (bytes/s) and matmul peak (FLOP/s) in `dtype`."""

    bandwidth: float
    matmul_peak: float

    @classmethod
    def measure(cls, device: str, dtype: torch.dtype) -> Machine:
        """About half a second on a CPU, once per process, device and dtype."""
        return measured_machine(str(device), dtype)


@functools.cache
def measured_machine(device: str, dtype: torch.dtype) -> Machine:
    return Machine(memory_bandwidth(device), matmul_peak_flops(dtype, device))


@dataclass(frozen=True)
class ModelCost:
    """The counts a roofline needs, read off a loaded model.

    matmul_weights: the weights of every nn.Linear, the LM head included
        (tied or not): what a forward pass multiplies by, once per token.
    weight_bytes: the bytes a decode step streams for them.
    kv_bytes_per_position: one row's key and value bytes per cached position, all layers.
    attention_flops_per_position: one row's flops per cached position (q.k and p.v), all layers.
    """

    matmul_weights: int
    weight_bytes: int
    kv_bytes_per_position: int
    attention_flops_per_position: int

    @classmethod
    def of(cls, model: nn.Module, weight_bytes_each: int | None = None,
           cache_bytes_each: int | None = None) -> ModelCost:
        """`weight_bytes_each`: bytes per weight the decoder reads (2 for bf16 copies; default: as stored).
        `cache_bytes_each`: bytes per cached key or value element (2 under bf16 autocast; default: as stored)."""
        linears = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
        weights = sum(w.numel() for w in linears)
        stored = linears[0].element_size() if linears else 4
        config = model.config
        layers = config.num_hidden_layers
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return cls(
            matmul_weights=weights,
            weight_bytes=weights * (weight_bytes_each or stored),
            kv_bytes_per_position=2 * layers * kv_heads * head_dim * (cache_bytes_each or stored),
            attention_flops_per_position=4 * layers * heads * head_dim,
        )

    def decode_step_floor(self, machine: Machine, rows: int, context: int) -> float:
        """Seconds of one token-step of `rows` rows over `context` cached positions, at the roofline:
        max(bytes / bandwidth, flops / peak), bytes = weights + rows * context * KV bytes."""
        bytes_read = self.weight_bytes + rows * context * self.kv_bytes_per_position
        flops = rows * (2 * self.matmul_weights + context * self.attention_flops_per_position)
        return max(bytes_read / machine.bandwidth, flops / machine.matmul_peak)

    def generation_floor(self, machine: Machine, prompt_tokens: int, prompt_length: int, rows: int,
                         steps: int) -> float:
        """Seconds of a rollout at the roofline: the prefill of `prompt_tokens` real prompt tokens (compute-bound),
        then `steps` token-steps of `rows` rows whose context grows from `prompt_length`."""
        prefill = 2 * self.matmul_weights * prompt_tokens / machine.matmul_peak
        return prefill + sum(self.decode_step_floor(machine, rows, prompt_length + t) for t in range(steps))

    def pass_floor(self, machine: Machine, tokens: float, backward: bool = False, lora: bool = False) -> float:
        """Seconds of a forward pass over `tokens` tokens (2 flops a weight), or forward and backward (6; 4 with
        LoRA), at the matmul peak. A checkpointed body's replayed forward is work, not model flops: not counted."""
        flops_per_weight = (4 if lora else 6) if backward else 2
        return flops_per_weight * self.matmul_weights * tokens / machine.matmul_peak


@dataclass(frozen=True)
class Roofline:
    """A machine and a model: the floors of a GRPO step's phases, and the line that reports them."""

    machine: Machine
    cost: ModelCost

    def rollout_floor(self, prompt_tokens: int, prompt_length: int, rows: int, completion_length: int) -> float:
        """A rollout's floor: the prefill, then a token-step for every completion token but the first,
        which the prefill's logits give (so one fewer than the completion's length)."""
        return self.cost.generation_floor(self.machine, prompt_tokens, prompt_length, rows,
                                          max(completion_length - 1, 0))

    @classmethod
    def measure(cls, model: nn.Module, cfg, bf16_weight_copies: bool) -> Roofline:
        """This machine's limits in the dtype `cfg`'s matmuls run in, and `model`'s counts (before any sharding).

        Under bf16 the KV cache holds bf16; the weights a decode step reads
        are bf16 where the sampler decodes with bf16 copies of them (the
        static samplers under bf16 autocast), else the stored ones, which
        autocast casts at each matmul.
        """
        dtype = matmul_dtype(cfg)
        return cls(Machine.measure(cfg.device, dtype),
                   ModelCost.of(model, weight_bytes_each=2 if bf16_weight_copies else None,
                                cache_bytes_each=2 if dtype == torch.bfloat16 else None))

    def line(self, step: int, utilisation: dict[str, float]) -> str:
        """One line, as nanoGPT prints MFU: each phase's share of its floor."""
        shares = {key.split("/", 1)[1]: value for key, value in utilisation.items()}
        parts = [f"generate {shares['generate']:.2f} of its roofline"] if "generate" in shares else []
        parts += [f"{phase} {share:.2f}" for phase, share in shares.items() if phase != "generate"]
        return (f"step {step} utilisation: " + ", ".join(parts) + " of the matmul peak "
                f"(measured: {self.machine.matmul_peak / 1e9:.0f} GFLOP/s, {self.machine.bandwidth / 1e9:.0f} GB/s)")
