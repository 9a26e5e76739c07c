"""Fault guards: a run survives a flaky reward and a non-finite step, within limits.

A reward that raises, or returns NaN, for one sample must not end a
many-hour run; a reward that fails for a large share of a batch is broken
and must stop it, with the inputs that broke it in the message. Likewise one
non-finite loss is skipped, while many in a row stop the run.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from grpo.run.errors import UserError

FLOAT32_MAX = float(np.finfo(np.float32).max)


class RewardFailure(UserError):
    """Too many samples of a step could not be scored."""


class TooManySkippedSteps(UserError):
    """The optimizer skipped this many consecutive non-finite steps."""


class NonFiniteWeights(UserError):
    """An optimizer step left a weight inf or NaN: nothing after it can be trained or saved."""


def score_with_fallback(reward_fn, prompts: list[str], completions: list[str], examples: list[dict]):
    """Score a batch; if the batch call raises, score sample by sample.

    A sample whose reward raises or is not finite gets NaN in `values` (the
    advantage code leaves NaN rows out of their group's statistics and gives
    them advantage 0). Returns (values [N] float64 with NaN for failures,
    components, errors: {index: message}).
    """
    errors: dict[int, str] = {}
    try:
        scored = reward_fn(prompts, completions, examples)
        values, components = np.asarray(scored.values, dtype=np.float64).copy(), dict(scored.components)
    except Exception as batch_error:  # noqa: BLE001 - a reward is user code; any failure is isolated below
        warnings.warn(f"reward failed on the whole batch ({type(batch_error).__name__}: {batch_error}); "
                      "scoring sample by sample")
        values = np.full(len(completions), np.nan)
        per_sample_components: dict[str, list[float]] = {}
        for i in range(len(completions)):
            try:
                one = reward_fn(prompts[i : i + 1], completions[i : i + 1], examples[i : i + 1])
                values[i] = float(one.values[0])
                for name, component in one.components.items():
                    per_sample_components.setdefault(name, [np.nan] * len(completions))[i] = float(component[0])
            except Exception as error:  # noqa: BLE001
                errors[i] = f"{type(error).__name__}: {error}"
        components = {name: np.asarray(v) for name, v in per_sample_components.items()}
    for i in np.flatnonzero(~np.isfinite(values)):
        errors.setdefault(int(i), f"non-finite reward {values[i]}")
        values[i] = np.nan
    # The trainer works in float32: a larger reward would become inf there and be dropped without a count.
    for i in np.flatnonzero(np.abs(values) > FLOAT32_MAX):
        errors[int(i)] = f"reward {values[i]:.3g} is beyond float32 (|r| > {FLOAT32_MAX:.3g})"
        values[i] = np.nan
    return values, components, errors


def check_reward_failures(errors: dict[int, str], completions: list[str], examples: list[dict],
                          max_fraction: float) -> None:
    """Raise RewardFailure, showing the offending inputs, if too many samples failed."""
    if len(errors) <= max_fraction * len(completions):
        return
    shown = "\n".join(
        f"  sample {i}: {message}\n    target: {examples[i].get('target', '')[:80]!r}\n"
        f"    completion: {completions[i][:80]!r}"
        for i, message in list(errors.items())[:5]
    )
    raise RewardFailure(
        f"{len(errors)} of {len(completions)} samples could not be scored (more than "
        f"max_reward_failures = {max_fraction:.0%}); the first ones:\n{shown}"
    )


class NonFiniteGuard:
    """Counts consecutive optimizer steps skipped for a non-finite loss or gradient norm."""

    def __init__(self, max_consecutive: int):
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.total = 0
        self.warned = False

    def is_finite(self, loss: float, grad_norm: float) -> bool:
        return math.isfinite(loss) and math.isfinite(grad_norm)

    def record(self, skipped: bool) -> None:
        """Update the counters; raise TooManySkippedSteps past the limit."""
        if not skipped:
            self.consecutive = 0
            return
        self.consecutive += 1
        self.total += 1
        if self.consecutive >= self.max_consecutive:
            raise TooManySkippedSteps(
                f"{self.consecutive} consecutive optimizer steps had a non-finite loss or gradient norm "
                f"(max_skipped_steps = {self.max_consecutive}); the last good state is in the final checkpoint. "
                "Lower lr, check the reward for extreme values, or use bfloat16 instead of float16."
            )

    def note_step(self, step: int, skipped: int, optimizer_steps: int) -> None:
        """Warn once when every optimizer step of a training step was skipped: its weights did not move at all.

        A run shorter than max_skipped_steps would otherwise end with exit 0 and no word.
        """
        if self.warned or skipped < optimizer_steps:
            return
        self.warned = True
        warnings.warn(f"step {step}: every optimizer step was skipped for a non-finite loss or gradient norm, so the "
                      f"weights did not change; the run stops after max_skipped_steps = {self.max_consecutive} in a "
                      "row. Lower lr, or check the reward for extreme values")

