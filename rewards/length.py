"""Length terms: a guard for headline generation, and DAPO's soft overlong penalty.

A headline that is a single character or a whole paragraph can still be
semantically close to the reference; the guard rewards staying inside a
plausible length window (or penalises leaving it, with a negative `outside`).
The overlong penalty counts tokens, not characters: the trainer applies it to
the sampled token lengths.
"""

from __future__ import annotations

import numpy as np

from grpo.errors import RewardError
from rewards.base import RewardOutput, check_batch


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


def soft_overlong_penalty(lengths: np.ndarray, max_tokens: int, buffer: int) -> np.ndarray:
    """DAPO's soft overlong penalty: linear over the last `buffer` tokens before the cap.

        R_overlong(L) = 0                                   if L <= L_max - L_buf
                        ((L_max - L_buf) - L) / L_buf       if L_max - L_buf < L <= L_max
                        -1                                  if L > L_max

    with L a completion's length in tokens (EOS included), L_max = max_tokens
    and L_buf = buffer. A completion cut at the cap gets -1.

    lengths: [N] -> [N] float64 in [-1, 0].
    """
    if not 0 < buffer <= max_tokens:
        raise RewardError(f"the overlong buffer must be in [1, max_tokens = {max_tokens}], got {buffer}")
    lengths = np.asarray(lengths, dtype=np.float64)
    start = max_tokens - buffer
    return np.where(lengths > max_tokens, -1.0, np.minimum(0.0, (start - lengths) / buffer))
