"""Time our GRPO step: `python -m bench.grpo_step [key=value ...]`.

Runs the real trainer (`grpo.trainer.train`) for a fixed number of steps on
the MT prompts with fixed-length completions, then reports from its metrics:
the median seconds per step and per phase, completion tokens/s, the peak
resident memory of the process, and the update phase's achieved FLOP/s as a
fraction of a matmul peak measured in the same process.

    python -m bench.grpo_step                      # SmolLM2-135M, P=2, G=8, T=32, beta=0.04, mu=1, fp32
    python -m bench.grpo_step dtype=bfloat16 steps=6
    python -m bench.grpo_step model=gemma3-270m max_new_tokens=64

Options are GRPOConfig keys plus `steps` (default 5) and `warmup` (steps
left out of the medians, default 1). Prints one JSON object last.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
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
    "loss_aggregation": "token",
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


def matmul_peak_flops(dtype: torch.dtype = torch.float32, device: str = "cpu", repeats: int = 10) -> float:
    """Best achieved FLOP/s of a square matmul (2 n^3 flops) on this device, now.

    n = 1024 on a CPU, 8192 on a GPU (a small product would not fill it).
    """
    size = 8192 if device.startswith("cuda") else 1024
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)

    def synchronize():
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    a @ b
    best = float("inf")
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        a @ b
        synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def count_parameters(model_name: str) -> int:
    from grpo.models import load_model

    model, _ = load_model(model_name)
    return sum(p.numel() for p in model.parameters())


def run(overrides: dict) -> dict:
    """Train for `steps` steps and summarise the timings of the steps after `warmup`."""
    from grpo.config import GRPOConfig, load_config
    from grpo.errors import ConfigError
    from grpo.metrics import read_metrics
    from grpo.trainer import train

    steps, warmup = overrides.pop("steps", 5), overrides.pop("warmup", 1)
    for key, value, least in (("steps", steps, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"bench option '{key}' takes an integer >= {least}; got {value!r}")
    settings = {**BENCH_DEFAULTS, **overrides, "max_steps": steps, "eval_every": 0, "save_every": 0}
    with tempfile.TemporaryDirectory() as tmp:
        settings.update(out_dir=str(Path(tmp) / "run"), overwrite=True)
        cfg = load_config(GRPOConfig, overrides=settings)
        train(cfg)
        rows = [r for r in read_metrics(Path(tmp) / "run" / "metrics.jsonl") if "time/step" in r][warmup:]
    peak, peak_gpu = peak_rss_gb(), peak_gpu_gb()

    def median(key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in rows)

    # The update's matmuls run in bf16 under autocast, else in the weights' dtype.
    bf16 = cfg.mixed_precision == "bf16" or cfg.dtype == "bfloat16"
    dtype = torch.bfloat16 if bf16 else torch.float32
    params = count_parameters(cfg.model)
    # fwd + bwd ~ 6 * params * tokens read by the update's policy pass
    update_flops = 6 * params * (median("tokens/prompt") + median("tokens/completion")) * cfg.mu
    update_seconds = median("time/update")
    peak_flops = matmul_peak_flops(dtype, cfg.device)
    return {
        "implementation": "ours",
        "model": cfg.model, "P": cfg.prompts_per_step, "G": cfg.group_size, "T": cfg.max_new_tokens,
        "beta": cfg.beta, "mu": cfg.mu, "dtype": cfg.dtype, "mixed_precision": cfg.mixed_precision,
        "steps_timed": len(rows),
        "seconds_per_step": median("time/step"),
        "seconds_generate": median("time/generate"),
        "seconds_reward": median("time/reward"),
        "seconds_logprob": median("time/logprob"),
        "seconds_update": update_seconds,
        "completion_tokens_per_second": median("tokens_per_second"),
        "peak_rss_gb": peak,
        "peak_gpu_gb": peak_gpu,
        "update_flops_per_second": update_flops / max(update_seconds, 1e-9),
        "matmul_peak_flops_per_second": peak_flops,
        "update_fraction_of_matmul_peak": update_flops / max(update_seconds, 1e-9) / peak_flops,
    }


def main(argv: list[str]) -> int:
    from grpo.config import parse_overrides
    from grpo.errors import UserError

    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return 0
    try:
        result = run(dict(parse_overrides(argv)))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
