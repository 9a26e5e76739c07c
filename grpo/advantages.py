"""Group-relative advantages: GRPO's replacement for a learned value function.

Rows are grouped contiguously: rows g*G ... g*G+G-1 are the G completions of
prompt g. Each completion is scored against its own siblings, so the baseline
is the group's mean reward and no critic is needed.
"""

from __future__ import annotations

import torch

SCALES = ("group", "batch", "none")


def centred_group_rewards(rewards: torch.Tensor, group_size: int,
                          valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each reward minus its group's mean, and the group's spread, over the valid rows only.

        mean_g = sum_i v_gi r_gi / n_g
        std_g  = sqrt( sum_i v_gi (r_gi - mean_g)^2 / max(n_g - 1, 1) )

    with v_gi = 1 for a valid row and n_g = sum_i v_gi: the unbiased (n - 1)
    standard deviation, as in TRL; a group with fewer than two valid rows has
    std 0, and an invalid row is centred to 0.

    Shapes: rewards, valid [B] (B = P * G, grouped contiguously) -> centred [P, G], group_std [P].
    """
    valid_grouped = valid.view(-1, group_size).to(rewards.dtype)                   # [P, G]
    rewards_grouped = torch.where(valid, rewards, 0.0).view(-1, group_size)        # [P, G]
    count = valid_grouped.sum(dim=1, keepdim=True)                                  # [P, 1]
    group_mean = rewards_grouped.sum(dim=1, keepdim=True) / count.clamp(min=1)       # [P, 1]
    centred = (rewards_grouped - group_mean) * valid_grouped                        # [P, G]
    group_std = (centred.pow(2).sum(dim=1) / (count.squeeze(1) - 1).clamp(min=1)).sqrt()  # [P]
    return centred, group_std


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    scale: str = "group",
    std_offset: float = 1e-4,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A_i = (r_i - mean_group(r)) / (std + std_offset).

    The mean and the unbiased (n - 1) standard deviation are
    `centred_group_rewards`'; the standard deviation is taken per group (scale="group", the original GRPO), over the whole batch
    (scale="batch", as in REINFORCE++ / Lite PPO), or not at all
    (scale="none", Dr. GRPO: A_i = r_i - mean_group(r)).

    A group whose rewards are all equal carries no learning signal: its
    centred rewards are exactly zero, so its advantages are zero whatever the
    scale.

    Args:
        rewards: [B] float, B = P * G, grouped contiguously.
        group_size: G.
        scale: "group" | "batch" | "none".
        std_offset: added to the standard deviation, so that a group of nearly equal rewards
            does not blow its small differences up into advantages of size 1.
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
    centred, group_std = centred_group_rewards(rewards, group_size, valid)          # [P, G], [P]
    zero_std_groups = (centred.abs().amax(dim=1) == 0)                              # [P]

    if scale == "group":
        advantages = centred / (group_std.unsqueeze(1) + std_offset)
    elif scale == "batch":
        batch_std = rewards[valid].std() if valid.sum() > 1 else rewards.new_tensor(0.0)
        advantages = centred / (batch_std + std_offset)
    else:
        advantages = centred
    # Exactly zero even with std_offset = 0, where 0 / 0 would give NaN.
    advantages = torch.where(zero_std_groups.unsqueeze(1), 0.0, advantages)
    return advantages.flatten(), zero_std_groups


def normalize_then_sum(
    term_rewards: dict[str, torch.Tensor],
    weights: dict[str, float],
    group_size: int,
    std_offset: float = 1e-4,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """GDPO: normalise each reward term within its group, then take the weighted sum.

        r~_i = sum_k w_k * (r_ik - mean_g(r_k)) / (std_g(r_k) + std_offset)

    with the mean and (n - 1) std of term k over the valid rows of i's group g,
    i.e. each term passed through `group_advantages` with scale="group". A
    term that is constant within a group adds 0 there, so a term that has
    saturated (R_lang at 1 for every sibling) no longer dilutes the others,
    and each term's weight sets its share of the signal, not its raw scale.
    The result feeds `group_advantages` like a reward (GDPO then normalises
    over the batch: scale="batch").

    Args:
        term_rewards: name -> [B] values of each term, B = P * G grouped contiguously.
        weights: name -> w_k, for every name in term_rewards.
        valid: optional [B] bool; invalid rows get 0 and stay out of the statistics.

    Returns: [B] float.
    """
    total = None
    for name, values in term_rewards.items():
        normalised, _ = group_advantages(values, group_size, "group", std_offset, valid)
        total = weights[name] * normalised if total is None else total + weights[name] * normalised
    return total
