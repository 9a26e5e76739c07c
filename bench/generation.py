"""Generation speed of the rollout samplers: `python -m bench.generation`.

Times whole rollouts, P prompts x G completions of exactly T tokens (sampled
past EOS), with each sampler (`generation = eager | static | compiled`),
each in a fresh process: peak memory is per process, and so is the one-off
work of the first rollout (torch.compile, CUDA graph capture), reported on
its own. Every rollout samples the same P prompts (the first P training
prompts), so the compiled sampler meets one cache shape.

    python -m bench.generation                                    # SmolLM2-135M, P=2, G=8, T=32, fp32, CPU
    python -m bench.generation mixed_precision=bf16               # bf16 autocast
    python -m bench.generation --modes static --generation-weights off mixed_precision=bf16
    python -m bench.generation model=/tmp/qwen2.5-0.5b-random device=cuda max_new_tokens=256 mixed_precision=bf16

Options are GRPOConfig keys (model, device, dtype, mixed_precision,
prompts_per_step, group_size, max_new_tokens, temperature, top_p, top_k,
threads, lora_r, ...) plus `prompt_tokens` (prompts cut to that many
tokens). `--generation-weights off` makes the static samplers cast the
float32 weights at every matmul under bf16 autocast, as the eager one does.

Reported per mode: seconds per rollout (median of the timed ones), decode
milliseconds per token (rollout seconds / T: the prefill is included, once
per rollout), completion tokens per second (P * G * T / rollout seconds),
the first rollout's seconds, and peak memory; and against the machine's
limit, measured in the same process (`grpo.run.utilisation`): the rollout's
roofline in milliseconds per token (the prefill at the matmul peak, then
each token-step at the larger of weight and KV-cache bytes / memory
bandwidth and its flops / matmul peak) and the fraction of it achieved.

`--profile` adds one more rollout under torch.profiler and splits its time
by operator into the body's matmuls, the LM head (matmuls with a
vocabulary-sized operand), attention, the KV cache's writes (the eager
cache's concatenation, the static cache's index_copy), sampling (every other operator on
[rows, vocabulary] tensors: softmax, sort, cumsum, the noise, the draw),
other operators (norms, rotary, residual adds) and the rest, which is
Python and dispatch. A compiled graph's fused kernels count as "other".
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from bench.grpo_step import BENCH_DEFAULTS, cut_prompts, peak_gpu_gb, peak_rss_gb, run_in_fresh_process
from grpo.run.utilisation import Roofline, synchronize

MODES = ("eager", "static", "compiled")


MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")
PARTS = ("body matmuls", "LM head", "attention", "KV cache", "sampling", "other operators", "Python and dispatch")
# A concatenating cache's copy (transformers' DynamicLayer), a static one's write.
CACHE_WRITES = ("aten::cat", "aten::index_copy_", "aten::index_copy")


def operator_part(name: str, shapes: list, vocab: int) -> str:
    """Which part of a decode step an operator belongs to, by its name and its inputs' shapes."""
    has_vocab = any(isinstance(shape, list) and vocab in shape for shape in shapes)
    if name in MATMULS:
        return "LM head" if has_vocab else "body matmuls"
    if "scaled_dot_product" in name or "flash_attention" in name:
        return "attention"
    if name in CACHE_WRITES:
        return "KV cache"
    return "sampling" if has_vocab else "other operators"


def profile_rollout(sample, vocab: int) -> dict:
    """Seconds of one rollout under torch.profiler, split into PARTS by each operator's own (self) time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        start = time.perf_counter()
        sample()
        wall = time.perf_counter() - start
    seconds = dict.fromkeys(PARTS, 0.0)
    for event in prof.key_averages(group_by_input_shape=True):
        seconds[operator_part(event.key, event.input_shapes, vocab)] += event.self_cpu_time_total / 1e6
    seconds["Python and dispatch"] = max(wall - sum(seconds.values()), 0.0)
    return {"profiled_rollout_seconds": wall, "seconds_by_part": seconds,
            "share_by_part": {part: value / wall for part, value in seconds.items()}}


def time_rollouts(mode: str, overrides: dict, rollouts: int, warmup: int, generation_weights: bool,
                  with_profile: bool = False) -> dict:
    """Sample `warmup + rollouts` rollouts with the `mode` sampler in this process and time each."""
    from grpo.config import GRPOConfig
    from grpo.run.config import load_config
    from grpo.run.models import load_model
    from grpo.run.training_run import autocast, load_task_examples
    from grpo.static_rollout import generation_weights_dtype, make_rollout_sampler

    overrides = dict(overrides)
    prompt_tokens = int(overrides.pop("prompt_tokens", 0))
    settings = {**BENCH_DEFAULTS, **({"max_prompt_tokens": 0} if prompt_tokens else {}), **overrides,
                "generation": mode}
    cfg = load_config(GRPOConfig, overrides=settings)
    torch.set_num_threads(cfg.threads)
    model, tokenizer = load_model(cfg.model, cfg.dtype, cfg.device, lora=cfg.lora)
    model.eval()
    examples, _ = load_task_examples(cfg, tokenizer)
    if prompt_tokens:
        examples = cut_prompts(examples, tokenizer, prompt_tokens)
    prompts = [examples[i % len(examples)]["prompt"] for i in range(cfg.prompts_per_step)]
    weights_dtype = generation_weights_dtype(mode, cfg.mixed_precision) if generation_weights else None
    sampler = make_rollout_sampler(mode, weights_dtype)
    generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed)

    def sample():
        with autocast(cfg):
            return sampler(model, tokenizer, prompts, cfg.group_size, cfg.max_new_tokens, cfg.temperature,
                           cfg.top_p, cfg.top_k, generator, ignore_eos=True)

    durations = []
    for _ in range(warmup + rollouts):
        synchronize(cfg.device)
        start = time.perf_counter()
        rollout = sample()
        synchronize(cfg.device)
        durations.append(time.perf_counter() - start)
    seconds = statistics.median(durations[warmup:])

    # The roofline of this rollout's shape, on this machine now (a floor no sampler can beat).
    roofline = Roofline.measure(model, cfg, bf16_weight_copies=weights_dtype is not None)
    machine, cost = roofline.machine, roofline.cost
    prompt_mask = rollout.prompt_mask[:: cfg.group_size]
    floor = roofline.rollout_floor(int(prompt_mask.sum()), prompt_mask.shape[1], rollout.completion_ids.shape[0],
                                   cfg.max_new_tokens)
    vocab = model.get_output_embeddings().weight.shape[0]
    profiled = profile_rollout(sample, vocab) if with_profile else {}
    completion_tokens = rollout.completion_ids.numel()
    if cfg.mixed_precision != "bf16":
        weights = f"{cfg.dtype} as stored"
    else:
        weights = "bf16 copies" if weights_dtype is not None else "cast to bf16 at each matmul"
    return {
        "mode": mode, "model": cfg.model, "device": cfg.device, "P": cfg.prompts_per_step, "G": cfg.group_size,
        "T": cfg.max_new_tokens, "dtype": cfg.dtype, "mixed_precision": cfg.mixed_precision, "lora_r": cfg.lora_r,
        "generation_weights": weights,
        "prompt_tokens_longest": int(rollout.prompt_ids.shape[1]), "threads": cfg.threads,
        "rollouts_timed": rollouts, "first_rollout_seconds": durations[0], "rollout_seconds": seconds,
        "rollout_seconds_each": durations[warmup:],
        "decode_ms_per_token": 1000 * seconds / cfg.max_new_tokens,
        "completion_tokens_per_second": completion_tokens / seconds,
        "roofline_ms_per_token": 1000 * floor / cfg.max_new_tokens,
        "fraction_of_roofline": floor / seconds,
        "memory_bandwidth_bytes_per_second": machine.bandwidth, "matmul_peak_flops_per_second": machine.matmul_peak,
        "weight_bytes": cost.weight_bytes, "matmul_weights": cost.matmul_weights,
        "peak_rss_gb": peak_rss_gb(), "peak_gpu_gb": peak_gpu_gb(),
        **profiled,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated generation modes")
    parser.add_argument("--rollouts", type=int, default=3, help="timed rollouts per mode")
    parser.add_argument("--warmup", type=int, default=1, help="rollouts before the timed ones (compilation)")
    parser.add_argument("--generation-weights", default="on", choices=("on", "off"),
                        help="bf16 copies of the weights for the static samplers under mixed_precision=bf16")
    parser.add_argument("--profile", action="store_true", help="split one more rollout's time by part (torch.profiler)")
    parser.add_argument("--one", choices=MODES, help="run one mode in this process and print its JSON")
    parser.add_argument("--out", help="also write the results as JSON here")
    args, rest = parser.parse_known_args()
    from grpo.run.config import parse_value

    if args.one:
        values = {key: parse_value(value) for key, value in (item.split("=", 1) for item in rest)}
        print(json.dumps(time_rollouts(args.one, values, args.rollouts, args.warmup,
                                       args.generation_weights == "on", args.profile)))
        return

    results = []
    for mode in args.modes.split(","):
        options = ["--one", mode, "--rollouts", str(args.rollouts), "--warmup", str(args.warmup),
                   "--generation-weights", args.generation_weights, *(["--profile"] if args.profile else []), *rest]
        result = run_in_fresh_process("bench.generation", options, mode)
        results.append(result)
        memory = f"peak GPU {result['peak_gpu_gb']:.2f} GB" if result["peak_gpu_gb"] else \
            f"peak RSS {result['peak_rss_gb']:.2f} GB"
        print(f"{mode:>8}: {result['rollout_seconds']:.3f} s/rollout, {result['decode_ms_per_token']:.2f} ms/token, "
              f"{result['completion_tokens_per_second']:.0f} tokens/s (first rollout "
              f"{result['first_rollout_seconds']:.1f} s), {memory}; roofline {result['roofline_ms_per_token']:.1f} "
              f"ms/token, {result['fraction_of_roofline']:.2f} of it", flush=True)
        if "share_by_part" in result:
            print("          " + ", ".join(f"{part} {share:.0%}" for part, share in result["share_by_part"].items())
                  + f" of a profiled rollout of {result['profiled_rollout_seconds']:.2f} s", flush=True)
        if args.out:  # keep what was measured so far, should a later mode fail
            with open(args.out, "w") as f:
                json.dump(results, f, indent=2)
    eager = next((r for r in results if r["mode"] == "eager"), None)
    for result in results:
        if eager is not None and result is not eager:
            print(f"{result['mode']} / eager tokens per second: "
                  f"{result['completion_tokens_per_second'] / eager['completion_tokens_per_second']:.2f}x")


if __name__ == "__main__":
    main()
