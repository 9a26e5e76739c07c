"""DAPO's soft overlong penalty: the one reward term the trainer computes itself.

It reads completion lengths in tokens, which only the trainer has (a reward
sees decoded text), so `trainer.sample_and_score` adds it to the reward it is
given, under the weight `reward_weights.overlong`.
"""

from __future__ import annotations

import numpy as np

from grpo.run.errors import ConfigError


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
        raise ConfigError(f"the overlong buffer must be in [1, max_tokens = {max_tokens}], got {buffer}")
    lengths = np.asarray(lengths, dtype=np.float64)
    start = max_tokens - buffer
    return np.where(lengths > max_tokens, -1.0, np.minimum(0.0, (start - lengths) / buffer))
