"""A guard against degenerate repetition: this project's addition, not the paper's reward.

With R = 1.5 R_sim + 1.0 R_lang alone, a small model can collect most of the
reward by repeating one Han character ("英英英英…"): R_lang pays for any
Han text and the cosine of such junk to a Chinese reference is not zero. The
guard takes away reward in proportion to how repetitive the output is:

    values[i] = -(1 - distinct_n(c_i) / total_n(c_i))       in [-1, 0]

over the character n-grams of completion c_i (whitespace removed); an
output with fewer than n + 1 characters has nothing to repeat and scores 0.
"拼萨拼萨拼萨" has 5 bigrams of which 2 are distinct: -0.6. A real
translation such as "波斯尼亚和黑塞哥维那" scores 0.
"""

from __future__ import annotations

import numpy as np

from rewards.base import RewardOutput, check_batch
from rewards.errors import RewardError


def repeated_ngram_share(text: str, n: int) -> float:
    """1 - (# distinct character n-grams) / (# n-grams), whitespace removed; 0 below n + 1 characters."""
    chars = "".join(text.split())
    if len(chars) <= n:
        return 0.0
    grams = [chars[i : i + n] for i in range(len(chars) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


class RepetitionPenalty:
    """-(share of repeated character n-grams) per completion: [N] values in [-1, 0]."""

    def __init__(self, n: int = 2, name: str = "repetition") -> None:
        if n < 1:
            raise RewardError(f"repetition penalty needs n >= 1, got {n}")
        self.n = n
        self.name = name

    def __call__(self, prompts: list[str], completions: list[str], examples: list[dict]) -> RewardOutput:
        check_batch(prompts, completions, examples)
        values = -np.array([repeated_ngram_share(completion, self.n) for completion in completions])
        return RewardOutput(values=values, components={self.name: values})
