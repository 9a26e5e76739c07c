"""Derive the semantic threshold tau from the cold-start model.

The paper sets tau to "the minimal semantic adequacy level of the cold-start
model" without a number. We measure it: the cold-start model writes greedy
outputs for the dev set, the reward encoder scores each against its target
(the raw cosine s that R_sim thresholds), and a low percentile of those
cosines is tau. Outputs below it earn no semantic reward, so GRPO rewards
only what improves on the cold start's weakest outputs.

    python -m grpo.tau --model runs/cold-start-mt/final --config configs/mt.toml
    python -m grpo.tau --model runs/cold-start-mt/final --config configs/mt.toml \
        --percentile 10 --out runs/cold-start-mt/grpo.toml [key=value ...]

It prints `tau=<value>`, an override for `python -m grpo`. With --out it
also writes a complete preset: the --config preset with `model` set to the
cold-start checkpoint and `tau` to the derived value, so that

    python -m grpo runs/cold-start-mt/grpo.toml

runs GRPO from the cold start with its own threshold.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

from grpo.config import GRPOConfig
from grpo.rollout import greedy_completions
from grpo.run.config import load_config, save_config
from grpo.run.errors import DataError, exit_code_of
from grpo.run.models import load_model
from grpo.run.training_run import load_task_examples
from rewards.embedding import EmbeddingCosineReward, build_encoder, percentile_tau

DEFAULT_PERCENTILE = 10.0


def dev_cosines(outputs: list[str], examples: list[dict], cfg: GRPOConfig) -> np.ndarray:
    """The reward encoder's raw cosine between each output and its target, [n].

    The cosine comes from the semantic reward itself (tau = 0), so it is the
    very s that training thresholds, empty outputs included (they score 0).
    """
    reward = EmbeddingCosineReward(build_encoder(cfg.encoder, pooling=cfg.encoder_pooling, device=cfg.device),
                                   tau=0.0)
    scored = reward([e["prompt"] for e in examples], outputs, examples)
    return scored.components[f"{reward.name}/cosine"]


def derive_tau(checkpoint: str, cfg: GRPOConfig, percentile: float) -> tuple[float, np.ndarray, list[str]]:
    """(tau, dev cosines [n], greedy outputs) of the model at `checkpoint` on cfg's dev set."""
    model, tokenizer = load_model(checkpoint, cfg.dtype, cfg.device)
    _, dev_examples = load_task_examples(cfg, tokenizer)
    if not dev_examples:
        raise DataError(f"deriving tau needs a dev split: '{cfg.data}' has no dev.jsonl")
    outputs = greedy_completions(model, tokenizer, [e["prompt"] for e in dev_examples], cfg.eval_max_new_tokens)
    cosines = dev_cosines(outputs, dev_examples, cfg)
    return percentile_tau(cosines, percentile), cosines, outputs


def write_preset(cfg: GRPOConfig, checkpoint: str, tau: float, percentile: float, num_dev: int, path: Path) -> None:
    """The config as a complete preset that starts from `checkpoint` with the derived tau.

    A checkpoint folder is written as its resolved path (relative to the
    working directory, as runs are), so the preset keeps naming the very
    checkpoint tau was measured on even after `<run>/final` moves on.
    """
    if Path(checkpoint).is_dir():
        checkpoint = os.path.relpath(Path(checkpoint).resolve())
    derived = dataclasses.replace(cfg, model=checkpoint, tau=tau)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_config(derived, path)
    header = (f"# tau: the {percentile:g}th percentile of the reward encoder's cosine between the greedy outputs\n"
              f"# of {checkpoint} and the targets of {num_dev} dev examples (python -m grpo.tau).\n")
    path.write_text(header + path.read_text(encoding="utf-8"), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grpo.tau", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the cold-start checkpoint (model or adapter folder)")
    parser.add_argument("--config", required=True, help="the GRPO preset whose data, encoder and prompts to use")
    parser.add_argument("--percentile", type=float, default=DEFAULT_PERCENTILE,
                        help=f"low percentile of the dev cosines taken as tau (default {DEFAULT_PERCENTILE:g})")
    parser.add_argument("--out", type=Path, default=None, help="write a preset with model and tau set here")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the preset (e.g. dev_limit=0)")
    args = parser.parse_args(argv)
    return exit_code_of(lambda: derive_and_write(args))


def derive_and_write(args) -> None:
    """`python -m grpo.tau`: derive tau, print it, and write the preset when --out is given."""
    cfg = load_config(GRPOConfig, args.config, args.overrides)
    tau, cosines, _ = derive_tau(args.model, cfg, args.percentile)
    tau = round(tau, 4)
    print(f"dev cosines of {args.model} over {len(cosines)} examples: mean {np.nanmean(cosines):.4f}, "
          f"min {np.nanmin(cosines):.4f}, {args.percentile:g}th percentile {tau:.4f}")
    if args.out is not None:
        write_preset(cfg, args.model, tau, args.percentile, len(cosines), args.out)
        print(f"wrote {args.out}")
    print(f"tau={tau}")


if __name__ == "__main__":
    sys.exit(main())
