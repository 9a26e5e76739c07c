"""The length guard for headline generation.

A headline that is a single character or a whole paragraph can still be
semantically close to the reference; the guard rewards staying inside a
plausible length window (or penalises leaving it, with a negative `outside`).
DAPO's overlong penalty, which counts tokens rather than characters, is
computed by the trainer (grpo.overlong).
"""

from __future__ import annotations

import numpy as np

from rewards.base import RewardOutput, check_batch, example_references
from rewards.errors import RewardError


class LengthGuardReward:
    """1.0 inside the character window, `outside` beyond it.

    values[i] = 1.0      if min_chars <= len(strip(completion_i)) <= max_chars
                outside  otherwise                                     [N]
    Length counts Unicode code points: one per Chinese character, while a
    Tibetan syllable counts each of its letters, vowel signs and its tsheg.
    """

    def __init__(
        self, min_chars: int, max_chars: int, name: str = "length", outside: float = 0.0
    ) -> None:
        if not 0 <= min_chars <= max_chars:
            raise RewardError(
                f"length guard needs 0 <= min_chars <= max_chars, got {min_chars} and {max_chars}"
            )
        self.min_chars = min_chars
        self.max_chars = max_chars
        self.name = name
        self.outside = float(outside)

    def __call__(
        self, prompts: list[str], completions: list[str], examples: list[dict]
    ) -> RewardOutput:
        check_batch(prompts, completions, examples)
        lengths = np.array([len(completion.strip()) for completion in completions])
        inside = (lengths >= self.min_chars) & (lengths <= self.max_chars)
        values = np.where(inside, 1.0, self.outside)
        return RewardOutput(values=values, components={self.name: values})


def visible_chars(text: str) -> int:
    """Characters of `text` that are not whitespace (one per Chinese character)."""
    return sum(1 for char in text if not char.isspace())


def length_ratio(text: str, references: list[str]) -> float:
    """Visible characters of `text` over the mean of its references': |text| / ((1/k) sum_j |ref_j|)."""
    return visible_chars(text) / max(float(np.mean([visible_chars(ref) for ref in references])), 1.0)


class LengthRatioPenalty:
    """A penalty for outputs much longer than their references: a guard against padding.

        ratio_i  = |completion_i| / ((1/k) sum_j |target_ij|)     (visible characters)
        values_i = -min(1, max(0, ratio_i - max_ratio))            [N], on [-1, 0]

    A translation rarely runs past 1.5 times its reference; a policy that
    repeats a good answer ("reference doubled" in docs/TRAINING.md's hacking
    table) keeps almost all of its semantic reward and would otherwise pay nothing.
    """

    def __init__(self, max_ratio: float = 1.5, name: str = "length_ratio") -> None:
        if not max_ratio > 0:
            raise RewardError(f"the length-ratio penalty needs max_ratio > 0, got {max_ratio}")
        self.max_ratio = float(max_ratio)
        self.name = name

    def __call__(
        self, prompts: list[str], completions: list[str], examples: list[dict]
    ) -> RewardOutput:
        check_batch(prompts, completions, examples)
        ratios = np.array([length_ratio(completion, example_references(e, self.name))
                           for completion, e in zip(completions, examples)])
        values = -np.clip(ratios - self.max_ratio, 0.0, 1.0)
        return RewardOutput(values=values, components={self.name: values})
