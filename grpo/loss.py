"""The GRPO objective, one formula per function.

Notation (per completion i and completion token t):
    logp_it      log pi_theta(o_it | q, o_i<t)       [B, T]  (with grad)
    old_it       log pi_old(o_it | ...)              [B, T]  (policy that sampled)
    ref_it       log pi_ref(o_it | ...)              [B, T]  (frozen reference)
    A_i          group-relative advantage            [B]
    m_it         completion mask (1 = real token)    [B, T]

    L_it = -min(rho_it * A_i, clip(rho_it, 1 - eps_low, 1 + eps_high) * A_i) + beta * KL_it

and the per-token losses are aggregated into one scalar by `aggregate`. When
the sampler's weights are not the trainer's (bfloat16 copies, a compiled
graph), the surrogate term is also weighted by w_it, the truncated ratio of
the trainer's to the sampler's probability (`truncated_importance_weights`).

Gradient accumulation: every aggregation divides a *sum over rows* by a
normaliser that depends on the whole optimizer batch (number of sequences,
number of tokens). Passing that global normaliser to each micro-batch makes
the summed micro-batch gradients equal the one-big-batch gradient exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KL_ESTIMATORS = ("k1", "k2", "k3")
# Named for what they compute, as verl names them: GRPO's, DAPO's and Dr. GRPO's aggregation.
AGGREGATIONS = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")
IMPORTANCE_LEVELS = ("token", "sequence")
SAMPLER_CORRECTIONS = ("none", "token", "sequence")


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) from samples of pi_theta.

    With log_r = ref - logp (the log of pi_ref / pi_theta at the sampled token):
        k1 = -log_r                       unbiased, high variance, can be negative
        k2 = 0.5 * log_r**2               biased, low variance
        k3 = exp(log_r) - log_r - 1       unbiased, low variance, always >= 0 (Schulman)

    Shapes: [B, T] -> [B, T].
    """
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.pow(2)
    if estimator == "k3":
        return torch.exp(log_ratio) - log_ratio - 1.0
    raise ValueError(f"estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")


def importance_log_ratio(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, loss_mask: torch.Tensor, level: str = "token"
) -> torch.Tensor:
    """log rho, the log importance ratio of the current policy against the sampling one.

        token level (GRPO):    log rho_it = logp_it - old_it
        sequence level (GSPO): log rho_i  = (1/|o_i|) sum_t m_it (logp_it - old_it),
                               broadcast to every token of sequence i

    Shapes: [B, T] -> [B, T].
    """
    token_log_ratio = logprobs - old_logprobs
    if level == "token":
        return token_log_ratio
    if level == "sequence":
        lengths = loss_mask.sum(dim=1, keepdim=True).clamp(min=1.0)
        sequence_log_ratio = (token_log_ratio * loss_mask).sum(dim=1, keepdim=True) / lengths  # [B, 1]
        return sequence_log_ratio.expand_as(token_log_ratio)
    raise ValueError(f"level must be one of {IMPORTANCE_LEVELS}, got {level!r}")


def clipped_surrogate(
    log_ratio: torch.Tensor, advantages: torch.Tensor, eps_low: float, eps_high: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's pessimistic clipped objective, negated into a loss.

        rho = exp(log_ratio)
        loss_it = -min(rho_it * A_i, clip(rho_it, 1 - eps_low, 1 + eps_high) * A_i)

    When rho has left the trust region in the direction the advantage pushes
    (rho > 1 + eps_high with A > 0, or rho < 1 - eps_low with A < 0), the
    clipped term is the minimum and is constant in theta: that token gets no
    gradient.

    Shapes: log_ratio [B, T], advantages [B] -> loss [B, T], and the two
    [B, T] bool masks of tokens clipped at the low and the high side.
    """
    ratio = torch.exp(log_ratio)
    advantages = advantages.unsqueeze(1)                                     # [B, 1]
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages
    loss = -torch.min(unclipped, clipped)
    clipped_low = (ratio < 1.0 - eps_low) & (advantages < 0)
    clipped_high = (ratio > 1.0 + eps_high) & (advantages > 0)
    return loss, clipped_low, clipped_high


def two_sided_clip(
    per_token_loss: torch.Tensor, advantages: torch.Tensor, delta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cap the loss of tokens with a negative advantage at delta * |A| (dual clip, INTELLECT-2's `delta`).

        loss_it = min(loss_it, -delta * A_i)      where A_i < 0
        loss_it                                   where A_i >= 0

    For A < 0 the clipped surrogate's loss is max(rho, clip(rho)) * |A|, which
    grows without bound with rho; capping it means the ratio counts at most
    delta (> 1 + eps_high), and a capped token gets no gradient. TRL and
    INTELLECT-2 clamp rho at delta in the unclipped term, which is the same loss.

    Shapes: per_token_loss [B, T], advantages [B] -> loss [B, T], and the
    [B, T] bool mask of capped tokens.
    """
    cap = -delta * advantages.unsqueeze(1)                                   # [B, 1], > 0 where A < 0
    capped = (advantages.unsqueeze(1) < 0) & (per_token_loss > cap)
    return torch.where(capped, cap.expand_as(per_token_loss), per_token_loss), capped


@dataclass(frozen=True)
class Normaliser:
    """Batch-level denominators for `aggregate`, fixed for a whole optimizer step.

    num_sequences: sequences in the optimizer batch (all micro-batches, all ranks).
    num_tokens: completion tokens (mask sum) in that batch.
    max_new_tokens: the generation cap T_max (Dr. GRPO's constant).
    """

    num_sequences: float
    num_tokens: float
    max_new_tokens: int

    @staticmethod
    def of(loss_mask: torch.Tensor, max_new_tokens: int) -> "Normaliser":
        return Normaliser(float(loss_mask.shape[0]), float(loss_mask.sum()), max_new_tokens)


def aggregate(per_token_loss: torch.Tensor, loss_mask: torch.Tensor, mode: str, norm: Normaliser) -> torch.Tensor:
    """Reduce [B, T] per-token losses to the scalar that is differentiated.

        seq-mean-token-mean (GRPO):          (1/N) sum_i (1/|o_i|) sum_t m_it L_it
        token-mean (DAPO):                   (1 / sum_it m_it) sum_it m_it L_it
        seq-mean-token-sum-norm (Dr. GRPO):  (1 / (N * T_max)) sum_it m_it L_it

    N and the token count come from `norm`, i.e. from the whole optimizer
    batch, so a micro-batch returns its share of the batch loss and shares
    add up to the full-batch loss.
    """
    masked = per_token_loss * loss_mask
    if mode == "seq-mean-token-mean":
        lengths = loss_mask.sum(dim=1).clamp(min=1.0)
        return (masked.sum(dim=1) / lengths).sum() / norm.num_sequences
    if mode == "token-mean":
        return masked.sum() / max(norm.num_tokens, 1.0)
    if mode == "seq-mean-token-sum-norm":
        return masked.sum() / (norm.num_sequences * norm.max_new_tokens)
    raise ValueError(f"mode must be one of {AGGREGATIONS}, got {mode!r}")


def truncated_importance_weights(
    trainer_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, loss_mask: torch.Tensor, cap: float,
    level: str = "token",
) -> torch.Tensor:
    """Truncated importance sampling (TIS): how much more likely the trainer finds a token than the sampler did.

        token:     w_it = min(exp(old_it - s_it), C)
        sequence:  w_i  = min(exp(sum_t m_it (old_it - s_it)), C), broadcast to every token of sequence i

    with old the trainer's log-probs of the rollout under the weights it was
    sampled with (what the sampler should have computed), s the sampler's own
    (`rollout.sampled_token_logprobs`) and C the cap, which bounds the
    variance a rare token the sampler under-rated would bring. The sequence
    variant is the likelihood ratio of the whole completion. The weights
    multiply the surrogate term of the loss and carry no gradient; with equal
    log-probs they are 1. TRL and verl correct vLLM's samples this way.

    Shapes: [B, T], [B, T], [B, T] -> [B, T] (0 where masked).
    """
    log_ratio = (trainer_logprobs.detach() - sampler_logprobs) * loss_mask
    if level == "sequence":
        log_ratio = log_ratio.sum(dim=1, keepdim=True).expand_as(loss_mask)
    elif level != "token":
        raise ValueError(f"level must be token or sequence, got {level!r}")
    return torch.where(loss_mask.bool(), torch.exp(log_ratio).clamp(max=cap), 0.0)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(values * mask) / sum(mask), 0 for an empty mask. Shapes: [B, T] -> []."""
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    norm: Normaliser,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    aggregation: str = "seq-mean-token-mean",
    importance_level: str = "token",
    delta: float = 0.0,
    sampler_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The GRPO loss for one micro-batch.

        L_it = -w_it min(rho_it A_i, clip(rho_it, 1-eps_low, 1+eps_high) A_i) + beta * KL_it
        loss = aggregate(L, m)

    with w_it = 1 unless `sampler_weights` are given.

    With delta > 0 the surrogate of tokens with A < 0 is capped first (`two_sided_clip`).

    Args:
        logprobs: [B, T] current policy log-probs (with grad).
        old_logprobs: [B, T] sampling-policy log-probs. With one update per
            rollout (mu = 1 and one minibatch) pass `logprobs.detach()`: rho is then exactly 1
            but its gradient is grad(logp), so no second forward pass is needed.
        ref_logprobs: [B, T] reference log-probs, or None when beta == 0.
        advantages: [B].
        loss_mask: [B, T] float, 1 for a token that counts in the loss: a completion token (up to
            and including EOS) of a sample whose reward did not fail (and, with mask_truncated, that
            was not cut at max_new_tokens).
        norm: batch-level denominators (see `Normaliser`).
        sampler_weights: optional [B, T] w, the correction for a sampler whose weights are not the
            trainer's (`truncated_importance_weights`); None: w = 1.

    Returns:
        loss (scalar) and detached statistics averaged over this micro-batch's
        tokens: kl, clip_low, clip_high, clip_region, and clip_delta when delta > 0.
    """
    log_ratio = importance_log_ratio(logprobs, old_logprobs, loss_mask, importance_level)
    per_token_loss, clipped_low, clipped_high = clipped_surrogate(log_ratio, advantages, eps_low, eps_high)
    stats = {}
    if delta > 0.0:
        per_token_loss, capped = two_sided_clip(per_token_loss, advantages, delta)
        stats["clip_delta"] = masked_mean(capped.float(), loss_mask)
    if sampler_weights is not None:
        per_token_loss = per_token_loss * sampler_weights.detach()
    if beta > 0.0:
        if ref_logprobs is None:
            raise ValueError("beta > 0 needs ref_logprobs")
        kl = kl_estimate(logprobs, ref_logprobs, kl_estimator)
        per_token_loss = per_token_loss + beta * kl
        stats["kl"] = masked_mean(kl.detach(), loss_mask)
    loss = aggregate(per_token_loss, loss_mask, aggregation, norm)
    stats["clip_low"] = masked_mean(clipped_low.float(), loss_mask)
    stats["clip_high"] = masked_mean(clipped_high.float(), loss_mask)
    stats["clip_region"] = masked_mean((clipped_low | clipped_high).float(), loss_mask)
    return loss, stats
