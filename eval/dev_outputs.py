"""Greedy dev outputs and their reward-hacking statistics: what every dev evaluation of GRPO and SFT logs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eval.hacking import hacking_warning, length_ratios, output_statistics
from grpo.rollout import EVAL_BATCH_SIZE, greedy_completions
from grpo.run import distributed as dist
from grpo.run.metrics import MetricsLogger
from grpo.run.training_run import autocast
from rewards.base import example_references


@dataclass
class DevOutputs:
    """Greedy dev outputs and what they say about reward hacking (`eval.hacking`), for GRPO's and SFT's evaluation."""

    outputs: list[str]                  # [n] one greedy output per dev example
    references: list[list[str]]         # [n] each example's references
    length_ratios: list[float]          # [n] output / reference characters
    metrics: dict[str, float]           # eval/distinct_ratio, eval/top_share, ... for metrics.jsonl

    def row(self, i: int) -> dict:
        """The fields of eval/step-N.jsonl that belong to example i's output."""
        return {"targets": self.references[i], "output": self.outputs[i], "length_ratio": self.length_ratios[i]}


def generate_dev_outputs(run_cfg, model, tokenizer, examples: list[dict], logger: MetricsLogger, step: int,
                         batch_size: int = EVAL_BATCH_SIZE) -> DevOutputs | None:
    """Greedy outputs for the dev examples, their hacking statistics, and a one-line warning for a hedge.

    Every rank takes part in the generation (a sharded model's forward is a
    collective); only rank 0 gets the result, the others None.
    """
    with autocast(run_cfg):
        outputs = greedy_completions(model, tokenizer, [e["prompt"] for e in examples],
                                     run_cfg.eval_max_new_tokens, batch_size)
    if not dist.is_main():
        return None
    references = [example_references(e, "dev evaluation") for e in examples]
    stats = output_statistics(outputs, references, run_cfg.target_lang)
    warning = hacking_warning(stats, outputs)
    if warning:
        logger.message(f"step {step}: {warning}")
    return DevOutputs(outputs, references, length_ratios(outputs, references),
                      {**{f"eval/{name}": value for name, value in stats.items()},
                       "eval/mean_chars": float(np.mean([len(output) for output in outputs]))})
