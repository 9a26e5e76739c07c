"""Time our GRPO step: `python -m bench.grpo_step [key=value ...]`.

Runs the real trainer (`grpo.trainer.train`) for a fixed number of steps on
the MT prompts with fixed-length completions, then reports from its metrics:
the median seconds per step and per phase, completion tokens/s, the peak
resident memory of the process, and each phase's utilisation as the trainer
logs it (`grpo.run.utilisation`): generation against its roofline, the
log-prob passes and the update against the matmul peak, both measured in the
same process.

    python -m bench.grpo_step                      # SmolLM2-135M, P=2, G=8, T=32, beta=0.04, mu=1, fp32
    python -m bench.grpo_step dtype=bfloat16 steps=6
    python -m bench.grpo_step model=gemma3-270m max_new_tokens=64

Options are GRPOConfig keys plus `steps` (default 5), `warmup` (steps
left out of the medians, default 1) and `prompt_tokens` (train on prompts cut
to that many tokens, `cut_prompts`; default 0: the MT prompts as they are).
Prints one JSON object last.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

BENCH_DEFAULTS = {
    "model": "smollm2-135m",
    "data": "data/mt/train.jsonl",  # no dev split: no evaluation inside the timed run
    "prompts_per_step": 2,
    "group_size": 8,
    "max_new_tokens": 32,
    "beta": 0.04,
    "mu": 1,
    "lr": 1e-6,
    "loss_aggregation": "token-mean",
    "scale_rewards": "group",
    "reward_weights": {"semantic": 1.0},
    "ignore_eos": True,
    "max_prompt_tokens": 128,
    "temperature": 1.0,
    "top_p": 1.0,
    "threads": 2,
}


def run_in_fresh_process(module: str, args: list[str], label: str) -> dict:
    """`python -m module args...` in a new process (peak memory is per process); returns its last line as JSON."""
    command = [sys.executable, "-m", module, *args]
    result = subprocess.run(command, capture_output=True, text=True, check=False,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if result.returncode != 0:
        raise SystemExit(f"{label} run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def peak_rss_gb() -> float:
    """Peak resident set size of this process in GB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def peak_gpu_gb() -> float | None:
    """Peak GPU memory held by torch's allocator in this process, in GB (None without a GPU)."""
    return torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None


def cut_prompts(examples: list[dict], tokenizer, prompt_tokens: int) -> list[dict]:
    """The examples whose prompts have at least `prompt_tokens` tokens, each prompt cut to its last ones.

    For timing at a chosen prompt length: the MT chat prompts have 55 to over
    1,000 SmolLM2 tokens, and what the shared prompt pass saves grows with
    the prompt. The cut keeps each prompt's end (the tail of the source text
    and the assistant turn's header); the text it decodes to may tokenize
    to a token or two more or fewer.
    """
    cut = []
    for example in examples:
        ids = tokenizer(example["prompt"], add_special_tokens=False).input_ids
        if len(ids) >= prompt_tokens:
            cut.append({**example, "prompt": tokenizer.decode(ids[-prompt_tokens:])})
    if not cut:
        raise SystemExit(f"no prompt has {prompt_tokens} tokens to cut to")
    return cut


@contextmanager
def prompts_cut_to(prompt_tokens: int):
    """Within the block, `grpo.trainer.train` trains on `cut_prompts` of its examples (0: as they are)."""
    from grpo import trainer

    load = trainer.load_task_examples
    if prompt_tokens:
        trainer.load_task_examples = lambda cfg, tokenizer, **room: (
            cut_prompts(load(cfg, tokenizer, **room)[0], tokenizer, prompt_tokens), [])
    try:
        yield
    finally:
        trainer.load_task_examples = load


def run(overrides: dict) -> dict:
    """Train for `steps` steps and summarise the timings of the steps after `warmup`."""
    from grpo.cli import train_grpo
    from grpo.config import GRPOConfig
    from grpo.run.config import load_config
    from grpo.run.errors import ConfigError
    from grpo.run.metrics import read_metrics
    from grpo.run.utilisation import Machine, matmul_dtype

    steps, warmup = overrides.pop("steps", 5), overrides.pop("warmup", 1)
    prompt_tokens = overrides.pop("prompt_tokens", 0)
    for key, value, least in (("steps", steps, 1), ("warmup", warmup, 0), ("prompt_tokens", prompt_tokens, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"bench option '{key}' takes an integer >= {least}; got {value!r}")
    settings = {**BENCH_DEFAULTS, **({"max_prompt_tokens": 0} if prompt_tokens else {}), **overrides,
                "max_steps": steps, "eval_every": 0, "save_every": 0}
    with tempfile.TemporaryDirectory() as tmp:
        settings.update(out_dir=str(Path(tmp) / "run"), overwrite=True)
        cfg = load_config(GRPOConfig, overrides=settings)
        with prompts_cut_to(prompt_tokens):
            train_grpo(cfg)
        rows = [r for r in read_metrics(Path(tmp) / "run" / "metrics.jsonl") if "time/step" in r][warmup:]
    peak, peak_gpu = peak_rss_gb(), peak_gpu_gb()

    def median(key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in rows)

    # The trainer's utilisation/<phase> (grpo.run.utilisation): the floors against this machine's limits, which it
    # measured at the start in the dtype the matmuls run in; Machine.measure returns that measurement (one a process).
    machine = Machine.measure(cfg.device, matmul_dtype(cfg))
    return {
        "implementation": "ours",
        "model": cfg.model, "P": cfg.prompts_per_step, "G": cfg.group_size, "T": cfg.max_new_tokens,
        "beta": cfg.beta, "mu": cfg.mu, "dtype": cfg.dtype, "mixed_precision": cfg.mixed_precision,
        "lora_r": cfg.lora_r, "generation": cfg.generation, "gradient_checkpointing": cfg.gradient_checkpointing,
        # tokens/prompt counts each group's prompt once with the shared prompt pass
        "prompt_tokens_mean": median("tokens/prompt") / cfg.prompts_per_step
        / (1 if cfg.share_prompt_pass else cfg.group_size),
        "steps_timed": len(rows),
        "seconds_per_step_each": [r["time/step"] for r in rows],
        "seconds_per_step": median("time/step"),
        "seconds_generate": median("time/generate"),
        "seconds_reward": median("time/reward"),
        "seconds_logprob": median("time/logprob"),
        "seconds_update": median("time/update"),
        "completion_tokens_per_second": median("tokens_per_second"),
        "peak_rss_gb": peak,
        "peak_gpu_gb": peak_gpu,
        "sampler_kl": median("sampler/kl"),             # the sampler's policy against the trainer's, per token
        "sampler_ratio_mean": median("sampler/ratio_mean"),
        "generate_fraction_of_roofline": median("utilisation/generate"),
        "logprob_fraction_of_matmul_peak": median("utilisation/logprob"),
        "update_fraction_of_matmul_peak": median("utilisation/update"),
        "matmul_peak_flops_per_second": machine.matmul_peak,
        "memory_bandwidth_bytes_per_second": machine.bandwidth,
    }


def main(argv: list[str]) -> int:
    from grpo.run.config import parse_overrides
    from grpo.run.errors import exit_code_of

    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return 0
    return exit_code_of(lambda: print(json.dumps(run(dict(parse_overrides(argv))))))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
