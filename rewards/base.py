"""The reward interface and the weighted sum that combines rewards.

A reward scores a batch of completions. The trainer calls it with three
aligned lists of length N: the prompts, the sampled completions and the
per-example records (a prompt's record is repeated once per completion of its
group). Every reward returns one float64 value per completion plus named
per-completion components that end up in the metrics log.

A NaN value means "this sample could not be scored"; it propagates through
`WeightedSum` so the trainer can see and handle the failure instead of
silently training on a made-up number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from rewards.errors import RewardError


@dataclass
class RewardOutput:
    """Rewards for a batch of N completions.

    values: [N] float64, one reward per completion (NaN marks a failed sample).
    components: name -> [N] float64, extra per-completion numbers for the log.
    """

    values: np.ndarray
    components: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.values.ndim != 1:
            raise ValueError(f"reward values must be 1-D [N], got shape {self.values.shape}")
        for key, component in list(self.components.items()):
            component = np.asarray(component, dtype=np.float64)
            if component.shape != self.values.shape:
                raise ValueError(
                    f"reward component {key!r} has shape {component.shape}, "
                    f"values have shape {self.values.shape}"
                )
            self.components[key] = component


class Reward(Protocol):
    """Anything with a `name` that maps a batch of completions to rewards.

    What the GRPO trainer reads beside the call: a reward made of terms (as
    `WeightedSum` is) has `weights`, a dict of term name -> weight, which
    reward_normalization = normalize_then_sum needs, and `terms`, a list of
    (weight, reward) whose members may have `refuse_unreadable(targets,
    max_unread)` (the semantic reward's encoder check before training).
    """

    name: str

    def __call__(
        self, prompts: list[str], completions: list[str], examples: list[dict]
    ) -> RewardOutput: ...


def check_batch(prompts: list[str], completions: list[str], examples: list[dict]) -> int:
    """Return the batch size N after checking the three lists are aligned."""
    n = len(completions)
    if len(prompts) != n or len(examples) != n:
        raise ValueError(
            f"misaligned reward batch: {len(prompts)} prompts, {n} completions, "
            f"{len(examples)} examples"
        )
    return n


def example_field(example: dict, key: str, reward_name: str) -> Any:
    """`example[key]`, or a RewardError saying which reward needs the field."""
    if key not in example:
        raise RewardError(
            f"reward {reward_name!r} needs the field {key!r} in every example; "
            f"this example has only {sorted(example)}"
        )
    return example[key]


def example_references(example: dict, reward_name: str) -> list[str]:
    """The reference translations of an example: `example["targets"]` when the data gives
    several, else `[example["target"]]`.

    A source can have several correct translations (Tatoeba gives up to a
    dozen); a reward that knew only one would punish the others.
    """
    given = example.get("targets")
    if given is None:
        return [str(example_field(example, "target", reward_name))]
    if isinstance(given, str) or not given or not all(isinstance(t, str) and t.strip() for t in given):
        raise RewardError(f"reward {reward_name!r}: example['targets'] must be a non-empty list of non-empty "
                          f"strings, got {given!r}")
    return list(given)


class WeightedSum:
    """A reward that is the weighted sum of other rewards, optionally gated by one of them.

    values[i] = sum_k w_k * r_k[i]                              (all [N]; NaN in any term gives NaN)

    With `gate` naming a term g whose values are 0 or 1 (the language check),
    the other terms count only where the gate is open:

    values[i] = g[i] * sum_{k != g} w_k * r_k[i]  +  w_g * g[i]

    An additive language bonus can be outweighed: an untranslated copy of the
    source keeps most of a cross-lingual encoder's similarity. Gated, it
    earns nothing.

    components = every term's own components, plus each term's values under
    the term's name, so the log shows what each part contributed.
    """

    def __init__(self, terms: list[tuple[float, Reward]], name: str = "total", gate: str | None = None) -> None:
        if not terms:
            raise RewardError("a weighted reward needs at least one term")
        names = [reward.name for _, reward in terms]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise RewardError(f"reward names must be unique within a sum; repeated: {duplicates}")
        for weight, reward in terms:
            if not np.isfinite(weight):
                raise RewardError(f"weight of reward {reward.name!r} must be finite, got {weight}")
        if gate is not None and gate not in names:
            raise RewardError(f"the gate {gate!r} is not one of the reward's terms {names}")
        self.terms = [(float(weight), reward) for weight, reward in terms]
        self.name = name
        self.gate = gate

    @property
    def weights(self) -> dict[str, float]:
        """Term name -> weight."""
        return {reward.name: weight for weight, reward in self.terms}

    def __call__(
        self, prompts: list[str], completions: list[str], examples: list[dict]
    ) -> RewardOutput:
        n = check_batch(prompts, completions, examples)
        gated = np.zeros(n, dtype=np.float64)      # sum over the terms the gate multiplies
        gate_term = np.zeros(n, dtype=np.float64)  # w_g * g, or 0 without a gate
        gate_values = np.ones(n, dtype=np.float64)
        components: dict[str, np.ndarray] = {}
        for weight, reward in self.terms:
            output = reward(prompts, completions, examples)
            if not isinstance(output, RewardOutput) or output.values.shape != (n,):
                raise RewardError(
                    f"reward {reward.name!r} must return a RewardOutput with {n} values"
                )
            term_components = {**output.components, reward.name: output.values}
            clashes = sorted(set(term_components) & set(components))
            if clashes:
                raise RewardError(
                    f"reward {reward.name!r} logs components {clashes} that another term "
                    "already logs; give the rewards distinct names"
                )
            components.update(term_components)
            if reward.name == self.gate:
                gate_values, gate_term = output.values, weight * output.values
            else:
                gated += weight * output.values
        return RewardOutput(values=gate_values * gated + gate_term, components=components)
