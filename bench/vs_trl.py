"""Our GRPO step against TRL's GRPOTrainer at identical settings: `python -m bench.vs_trl`.

Identical settings: the same model, P prompts x G completions per optimizer
step, T new tokens forced on both sides (we sample past EOS, TRL gets
min_new_tokens = T), beta, mu, dtype, learning rate, token-level loss
aggregation (TRL's "dapo"), group reward scaling, temperature 1, top-p 1,
and one reward: the USE embedding cosine to the reference, computed by the
same code. Each implementation runs in its own process (peak memory is per
process), alternating ours, TRL, ours, TRL... and the ratio of the medians
is printed:

    python -m bench.vs_trl                       # fp32, 2 rounds
    python -m bench.vs_trl --dtype bfloat16 --rounds 3
    python -m bench.vs_trl --prompt-tokens 16    # prompts cut to their last 16 tokens (also 64, 128)
    python -m bench.vs_trl --impl trl steps=4    # one side only, prints its JSON

Known differences kept as they are (see docs/PERFORMANCE.md): TRL multiplies
the k3 KL by the importance ratio (use_bias_correction_kl) and computes
entropy over prompt positions too; neither changes the amount of work much.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from bench.grpo_step import (
    BENCH_DEFAULTS,
    cut_prompts,
    peak_gpu_gb,
    peak_rss_gb,
    run_in_fresh_process,
)


def trl_settings(overrides: dict) -> dict:
    return {**BENCH_DEFAULTS, "steps": 5, "warmup": 1, **overrides}


def run_trl(overrides: dict) -> dict:
    """Train TRL's GRPOTrainer for `steps` steps and time each optimizer step."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer

    from grpo.config import GRPOConfig
    from grpo.run.config import load_config
    from grpo.run.models import load_model
    from grpo.run.training_run import load_task_examples
    from rewards.embedding import EmbeddingCosineReward, USEEncoder

    settings = trl_settings(overrides)
    steps, warmup = int(settings.pop("steps")), int(settings.pop("warmup"))
    prompt_tokens = int(settings.pop("prompt_tokens", 0))
    if prompt_tokens and "max_prompt_tokens" not in overrides:
        settings["max_prompt_tokens"] = 0  # as on our side: cut every prompt that is long enough
    torch.set_num_threads(int(settings["threads"]))
    cfg = load_config(GRPOConfig, overrides=settings)
    model, tokenizer = load_model(cfg.model, "float32")
    train_examples, _ = load_task_examples(cfg, tokenizer)
    if prompt_tokens:
        train_examples = cut_prompts(train_examples, tokenizer, prompt_tokens)
    dataset = Dataset.from_list([{"prompt": e["prompt"], "target": e["target"]} for e in train_examples])
    semantic = EmbeddingCosineReward(USEEncoder())

    def use_cosine(prompts, completions, target, **_):
        return semantic.__call__(prompts, completions, [{"target": t} for t in target]).values.tolist()

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.durations = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.durations.append(time.perf_counter() - self.start)

    timer = StepTimer()
    batch = cfg.prompts_per_step * cfg.group_size
    with tempfile.TemporaryDirectory() as tmp:
        args = TRLConfig(
            output_dir=tmp, report_to="none", use_cpu=cfg.device == "cpu", seed=cfg.seed, max_steps=steps, logging_steps=1,
            save_strategy="no", learning_rate=cfg.lr, per_device_train_batch_size=batch,
            generation_batch_size=batch, num_generations=cfg.group_size, max_completion_length=cfg.max_new_tokens,
            generation_kwargs={"min_new_tokens": cfg.max_new_tokens}, temperature=cfg.temperature,
            top_p=cfg.top_p, top_k=0, beta=cfg.beta, num_iterations=cfg.mu, epsilon=cfg.eps_low,
            epsilon_high=cfg.eps_high, loss_type="dapo", scale_rewards=cfg.scale_rewards,
            bf16=cfg.mixed_precision == "bf16", fp16=False, gradient_checkpointing=False, max_grad_norm=cfg.max_grad_norm,
            dataloader_num_workers=0,
        )
        trainer = GRPOTrainer(model=model, reward_funcs=use_cosine, args=args, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=[timer])
        trainer.train()
    timed = timer.durations[warmup:]
    seconds = statistics.median(timed)
    return {
        "implementation": "trl", "model": cfg.model, "P": cfg.prompts_per_step, "G": cfg.group_size,
        "T": cfg.max_new_tokens, "beta": cfg.beta, "mu": cfg.mu, "dtype": cfg.dtype, "steps_timed": len(timed),
        "prompt_tokens_mean": statistics.mean(len(tokenizer(e["prompt"], add_special_tokens=False).input_ids)
                                              for e in train_examples),
        "seconds_per_step": seconds,
        "completion_tokens_per_second": batch * cfg.max_new_tokens / seconds,
        "peak_rss_gb": peak_rss_gb(),
        "peak_gpu_gb": peak_gpu_gb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", choices=("ours", "trl"), help="run one side only in this process")
    parser.add_argument("--rounds", type=int, default=2, help="alternating (ours, TRL) pairs")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="bfloat16: autocast with fp32 weights on both sides")
    parser.add_argument("--prompt-tokens", type=int, default=0,
                        help="cut every prompt to its last N tokens, leaving out shorter ones (0: as they are)")
    parser.add_argument("--out", help="also write the results as JSON here")
    args, rest = parser.parse_known_args()
    from grpo.run.config import parse_value

    # bf16 on both sides means autocast over fp32 weights and fp32 optimizer state (TRL's bf16=True).
    overrides = [*rest, "mixed_precision=bf16"] if args.dtype == "bfloat16" else rest
    if args.prompt_tokens:
        overrides = [*overrides, f"prompt_tokens={args.prompt_tokens}"]
    if args.impl:
        values = {k: parse_value(v) for k, v in (item.split("=", 1) for item in overrides)}
        if args.impl == "ours":
            from bench.grpo_step import run

            print(json.dumps(run(values)))
        else:
            print(json.dumps(run_trl(values)))
        return

    results = {"ours": [], "trl": []}
    for round_index in range(args.rounds):
        for impl in ("ours", "trl"):
            result = run_in_fresh_process("bench.vs_trl", ["--impl", impl, *overrides], impl)
            results[impl].append(result)
            if args.out:  # keep what was measured so far, should a later run fail
                with open(args.out, "w") as f:
                    json.dump({"dtype": args.dtype, "overrides": overrides, "runs": results}, f, indent=2)
            gpu = f", peak GPU {result['peak_gpu_gb']:.2f} GB" if result.get("peak_gpu_gb") else ""
            print(f"round {round_index + 1} {impl:>4}: {result['seconds_per_step']:.2f} s/step, "
                  f"peak RSS {result['peak_rss_gb']:.2f} GB{gpu}", flush=True)
    ours_seconds = statistics.median(r["seconds_per_step"] for r in results["ours"])
    trl_seconds = statistics.median(r["seconds_per_step"] for r in results["trl"])
    # On a GPU the memory that matters is the device's; on a CPU it is the process's RSS.
    memory_key = "peak_gpu_gb" if results["ours"][0].get("peak_gpu_gb") else "peak_rss_gb"
    ours_memory = statistics.median(r[memory_key] for r in results["ours"])
    trl_memory = statistics.median(r[memory_key] for r in results["trl"])
    summary = {"dtype": args.dtype, "overrides": overrides, "ours_seconds_per_step": ours_seconds,
               "trl_seconds_per_step": trl_seconds, "time_ratio_trl_over_ours": trl_seconds / ours_seconds,
               "memory_measure": memory_key, f"ours_{memory_key}": ours_memory, f"trl_{memory_key}": trl_memory,
               "memory_ratio_ours_over_trl": ours_memory / trl_memory, "runs": results}
    print(f"time per step: TRL {trl_seconds:.2f} s / ours {ours_seconds:.2f} s = {trl_seconds / ours_seconds:.2f}x")
    print(f"{memory_key}: ours {ours_memory:.2f} GB / TRL {trl_memory:.2f} GB = {ours_memory / trl_memory:.2f}x")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
