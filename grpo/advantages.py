"""Group-relative advantages: GRPO's replacement for a learned value function.

Rows are grouped contiguously: rows g*G ... g*G+G-1 are the G completions of
prompt g. Each completion is scored against its own siblings, so the baseline
is the group's mean reward and no critic is needed.
"""

from __future__ import annotations

import torch

SCALES = ("group", "batch", "none")


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    scale: str = "group",
    eps: float = 1e-4,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A_i = (r_i - mean_group(r)) / (std + eps).

    The standard deviation is the unbiased (n - 1) one, as in TRL, and is
    taken per group (scale="group", the original GRPO), over the whole batch
    (scale="batch", as in REINFORCE++ / Lite PPO), or not at all
    (scale="none", Dr. GRPO: A_i = r_i - mean_group(r)).

    A group whose rewards are all equal carries no learning signal: its
    centred rewards are exactly zero, so its advantages are zero whatever the
    scale.

    Args:
        rewards: [B] float, B = P * G, grouped contiguously.
        group_size: G.
        scale: "group" | "batch" | "none".
        eps: added to the standard deviation.
        valid: optional [B] bool; invalid rows (a failed reward) are left out
            of their group's mean and std and get advantage 0.

    Returns:
        advantages: [B] float.
        zero_std_groups: [P] bool, True where a group's valid rewards are all equal.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if valid is None:
        valid = torch.ones_like(rewards, dtype=torch.bool)
    rewards_grouped = torch.where(valid, rewards, 0.0).view(-1, group_size)      # [P, G]
    valid_grouped = valid.view(-1, group_size).to(rewards.dtype)                   # [P, G]
    count = valid_grouped.sum(dim=1, keepdim=True)                                  # [P, 1]
    group_mean = rewards_grouped.sum(dim=1, keepdim=True) / count.clamp(min=1)       # [P, 1]
    centred = (rewards_grouped - group_mean) * valid_grouped                        # [P, G]
    group_var = centred.pow(2).sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)
    group_std = group_var.sqrt()                                                    # [P, 1]
    zero_std_groups = (centred.abs().amax(dim=1) == 0)                              # [P]

    if scale == "group":
        advantages = centred / (group_std + eps)
    elif scale == "batch":
        flat_valid = valid_grouped.flatten().bool()
        batch_std = rewards[flat_valid].std() if flat_valid.sum() > 1 else rewards.new_tensor(0.0)
        advantages = centred / (batch_std + eps)
    else:
        advantages = centred
    # Exactly zero even with eps = 0, where 0 / 0 would give NaN.
    advantages = torch.where(zero_std_groups.unsqueeze(1), 0.0, advantages)
    return advantages.flatten(), zero_std_groups
