"""Dynamic sampling (DAPO): train on groups whose rewards differ.

A group whose G rewards are all equal has zero advantages: it costs a full
forward and backward pass, teaches nothing, and still counts in the loss
normaliser, which shrinks the informative groups' share. With
`filter_zero_std_groups` such groups (and, with `zero_std_tolerance`, groups
whose rewards barely differ) are dropped and more prompts are sampled until
the batch holds P groups with a spread of rewards, for at most
`max_extra_sampling_rounds` extra rounds. A batch still short after them is
filled with the dropped groups of largest spread, so a step keeps its shape
(P x G rows) and its cost.

A step's sampled groups travel as a `ScoredBatch`: rows g*G ... g*G+G-1 are
group g, as everywhere in the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from grpo.advantages import centred_group_rewards
from grpo.rollout import Rollout
from grpo.run import distributed as dist


@dataclass
class ScoredBatch:
    """Sampled groups and their rewards: what steps 1-3 of a GRPO step produce (B = P * G rows)."""

    examples: list[dict]                # [B] each completion's example (its prompt's, repeated G times)
    rollout: Rollout
    completions: list[str]              # [B] decoded
    rewards: torch.Tensor               # [B] float32 total reward, NaN where the reward failed
    components: dict[str, np.ndarray]   # name -> [B] reward terms and their parts, for the log
    errors: dict[int, str]              # row -> why its reward failed
    scores: torch.Tensor                # [B] what advantages are computed from: `rewards`, or under
                                        #     normalize_then_sum the sum of group-normalised terms


def concat_rollouts(rollouts: list[Rollout], pad_id: int) -> Rollout:
    """Stack rollouts row-wise: prompts left-padded and completions right-padded to the longest."""
    prompt_len = max(r.prompt_ids.shape[1] for r in rollouts)
    completion_len = max(r.completion_ids.shape[1] for r in rollouts)

    def left(t, value):
        return F.pad(t, (prompt_len - t.shape[1], 0), value=value)

    def right(t, value):
        return F.pad(t, (0, completion_len - t.shape[1]), value=value)

    return Rollout(
        prompt_ids=torch.cat([left(r.prompt_ids, pad_id) for r in rollouts]),
        prompt_mask=torch.cat([left(r.prompt_mask, 0) for r in rollouts]),
        completion_ids=torch.cat([right(r.completion_ids, pad_id) for r in rollouts]),
        completion_mask=torch.cat([right(r.completion_mask, 0.0) for r in rollouts]),
        truncated=torch.cat([r.truncated for r in rollouts]),
        sampler_logprobs=torch.cat([right(r.sampler_logprobs, 0.0) for r in rollouts]),
    )


def select_groups(parts: list[tuple[ScoredBatch, int]], group_size: int, pad_id: int) -> ScoredBatch:
    """One batch made of the given (batch, group index) pairs, in that order."""
    pieces = []
    for batch, group in parts:
        rows = range(group * group_size, (group + 1) * group_size)
        pieces.append((batch, rows, torch.as_tensor(list(rows))))
    names = {name for batch, _, _ in pieces for name in batch.components}
    errors = {}
    for offset, (batch, rows, _) in enumerate(pieces):
        errors.update({offset * group_size + j: batch.errors[i] for j, i in enumerate(rows) if i in batch.errors})
    return ScoredBatch(
        examples=[batch.examples[i] for batch, rows, _ in pieces for i in rows],
        rollout=concat_rollouts([Rollout(**{f.name: getattr(batch.rollout, f.name)[index] for f in fields(Rollout)})
                                 for batch, _, index in pieces], pad_id),
        completions=[batch.completions[i] for batch, rows, _ in pieces for i in rows],
        rewards=torch.cat([batch.rewards[index] for batch, _, index in pieces]),
        # A term missing from one round (every sample of it failed) is NaN there.
        components={name: np.concatenate([batch.components.get(name, np.full(group_size, np.nan))[list(rows)]
                                          for batch, rows, _ in pieces]) for name in names},
        errors=errors,
        scores=torch.cat([batch.scores[index] for batch, _, index in pieces]),
    )


def fill_with_informative_groups(first: ScoredBatch, sample_more: Callable[[], ScoredBatch], num_groups: int,
                                 group_size: int, tolerance: float, max_extra_rounds: int,
                                 pad_id: int) -> tuple[ScoredBatch, dict]:
    """Keep the groups whose score spread exceeds `tolerance`, sampling more rounds until `num_groups` are kept.

    A group is kept when its std (`centred_group_rewards`) > tolerance. Kept groups are taken
    in the order they were sampled; a batch still short after
    `max_extra_rounds` extra rounds is completed with the dropped groups of
    largest spread. Under torchrun every rank samples the same number of
    rounds (the prompt sampler and a sharded model's generation must stay in
    step), until every rank is full.

    Returns the batch of `num_groups` groups and its log entries:
    dynamic_sampling/rounds (1 = no extra round), dynamic_sampling/frac_dropped
    (dropped groups over sampled groups, all ranks), and
    dynamic_sampling/filled_with_dropped (dropped groups used to complete the batch, all ranks).
    """
    kept, dropped = [], []
    batch, rounds = first, 0
    while True:
        rounds += 1
        _, spread = centred_group_rewards(batch.scores, group_size, torch.isfinite(batch.rewards))
        for group, std in enumerate(spread.tolist()):
            (kept if std > tolerance else dropped).append((batch, group, std))
        if dist.all_ranks(len(kept) >= num_groups) or rounds > max_extra_rounds:
            break
        batch = sample_more()
    # sorted() is stable: among equal spreads the earlier-sampled group comes first.
    filler = sorted(dropped, key=lambda entry: -entry[2])[: max(0, num_groups - len(kept))]
    chosen = [(batch, group) for batch, group, _ in kept[:num_groups] + filler]
    sampled = dist.all_reduce_sum(float(len(kept) + len(dropped)))
    stats = {"dynamic_sampling/rounds": rounds,
             "dynamic_sampling/frac_dropped": dist.all_reduce_sum(float(len(dropped))) / sampled,
             "dynamic_sampling/filled_with_dropped": int(dist.all_reduce_sum(float(len(filler))))}
    return select_groups(chosen, group_size, pad_id), stats
