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
the first rollout's seconds, and peak memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from bench.grpo_step import BENCH_DEFAULTS, cut_prompts, peak_gpu_gb, peak_rss_gb, run_in_fresh_process

MODES = ("eager", "static", "compiled")


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def time_rollouts(mode: str, overrides: dict, rollouts: int, warmup: int, generation_weights: bool) -> dict:
    """Sample `warmup + rollouts` rollouts with the `mode` sampler in this process and time each."""
    from grpo.config import GRPOConfig
    from grpo.run.config import load_config
    from grpo.run.models import load_model
    from grpo.run.training_run import autocast, load_task_examples
    from grpo.static_rollout import make_rollout_sampler

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
    bf16_weights = cfg.mixed_precision == "bf16" and generation_weights
    sampler = make_rollout_sampler(mode, torch.bfloat16 if bf16_weights else None)
    generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed)

    durations = []
    for _ in range(warmup + rollouts):
        synchronize(cfg.device)
        start = time.perf_counter()
        with autocast(cfg):
            rollout = sampler(model, tokenizer, prompts, cfg.group_size, cfg.max_new_tokens, cfg.temperature,
                              cfg.top_p, cfg.top_k, generator, ignore_eos=True)
        synchronize(cfg.device)
        durations.append(time.perf_counter() - start)
    seconds = statistics.median(durations[warmup:])
    completion_tokens = rollout.completion_ids.numel()
    if cfg.mixed_precision != "bf16":
        weights = f"{cfg.dtype} as stored"
    else:
        weights = "bf16 copies" if bf16_weights and mode != "eager" else "cast to bf16 at each matmul"
    return {
        "mode": mode, "model": cfg.model, "device": cfg.device, "P": cfg.prompts_per_step, "G": cfg.group_size,
        "T": cfg.max_new_tokens, "dtype": cfg.dtype, "mixed_precision": cfg.mixed_precision, "lora_r": cfg.lora_r,
        "generation_weights": weights,
        "prompt_tokens_longest": int(rollout.prompt_ids.shape[1]), "threads": cfg.threads,
        "rollouts_timed": rollouts, "first_rollout_seconds": durations[0], "rollout_seconds": seconds,
        "rollout_seconds_each": durations[warmup:],
        "decode_ms_per_token": 1000 * seconds / cfg.max_new_tokens,
        "completion_tokens_per_second": completion_tokens / seconds,
        "peak_rss_gb": peak_rss_gb(), "peak_gpu_gb": peak_gpu_gb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated generation modes")
    parser.add_argument("--rollouts", type=int, default=3, help="timed rollouts per mode")
    parser.add_argument("--warmup", type=int, default=1, help="rollouts before the timed ones (compilation)")
    parser.add_argument("--generation-weights", default="on", choices=("on", "off"),
                        help="bf16 copies of the weights for the static samplers under mixed_precision=bf16")
    parser.add_argument("--one", choices=MODES, help="run one mode in this process and print its JSON")
    parser.add_argument("--out", help="also write the results as JSON here")
    args, rest = parser.parse_known_args()
    from grpo.run.config import parse_value

    if args.one:
        values = {key: parse_value(value) for key, value in (item.split("=", 1) for item in rest)}
        print(json.dumps(time_rollouts(args.one, values, args.rollouts, args.warmup,
                                       args.generation_weights == "on")))
        return

    results = []
    for mode in args.modes.split(","):
        options = ["--one", mode, "--rollouts", str(args.rollouts), "--warmup", str(args.warmup),
                   "--generation-weights", args.generation_weights, *rest]
        result = run_in_fresh_process("bench.generation", options, mode)
        results.append(result)
        memory = f"peak GPU {result['peak_gpu_gb']:.2f} GB" if result["peak_gpu_gb"] else \
            f"peak RSS {result['peak_rss_gb']:.2f} GB"
        print(f"{mode:>8}: {result['rollout_seconds']:.3f} s/rollout, {result['decode_ms_per_token']:.2f} ms/token, "
              f"{result['completion_tokens_per_second']:.0f} tokens/s (first rollout "
              f"{result['first_rollout_seconds']:.1f} s), {memory}", flush=True)
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
