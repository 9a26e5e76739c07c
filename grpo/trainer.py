"""The GRPO training loop, top to bottom as the algorithm reads.

    for each step:
        1. take P prompts
        2. sample G completions for each              (rollout.sample_groups, or static_rollout)
        3. score every completion                     (the reward `train` is given)
           (dynamic sampling: drop groups without a spread, repeat 1-3 until P are kept)
        4. turn scores into group-relative advantages (advantages.group_advantages)
        5. log-probs of the sampling policy and of the reference (no grad)
        6. mu epochs of clipped policy-gradient updates on minibatches   (`policy_update`, loss.grpo_loss)
        7. log metrics   8. evaluate on dev   9. checkpoint

What GRPO shares with the SFT baseline (run folder, data, optimizer, resume,
save) is in `grpo.run.training_run`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from eval.dev_outputs import generate_dev_outputs
from grpo.advantages import group_advantages, normalize_then_sum
from grpo.config import GRPOConfig
from grpo.dynamic_sampling import ScoredBatch, fill_with_informative_groups
from grpo.logprobs import TokenLogprobs, checkpoint_decoder_layers, completion_logprobs
from grpo.loss import Normaliser, grpo_loss, kl_estimate, masked_mean, truncated_importance_weights
from grpo.overlong import soft_overlong_penalty
from grpo.rollout import Rollout, decode_completions
from grpo.run import distributed as dist
from grpo.run import lora, run_folder
from grpo.run.errors import ConfigError
from grpo.run.guards import NonFiniteGuard, TooManySkippedSteps, check_reward_failures, score_with_fallback
from grpo.run.metrics import MetricsLogger
from grpo.run.models import load_model
from grpo.run.training_run import (
    Checkpointer,
    ExampleSampler,
    PhaseTimer,
    PromptRoom,
    RunPlace,
    autocast,
    begin_logging,
    clip_and_step,
    data_digests,
    finish_run,
    is_due,
    load_resume_state,
    load_task_examples,
    make_optimizer,
    seed_each_rank,
    start_run,
    stop_if_terminated,
    trainable_parameters,
    warmup_cosine,
    write_eval_rows,
)
from grpo.run.utilisation import Roofline
from grpo.static_rollout import generation_weights_dtype, make_rollout_sampler


# --------------------------------------------------------------------------
# The policies: the reference, and the log-probs of a rollout under a policy
# --------------------------------------------------------------------------
class Reference:
    """The frozen policy the KL term pulls towards.

    With LoRA it is the same network with its adapters switched off, so no
    second copy of the weights is held; without LoRA it is a frozen deep copy
    of the starting model, sharded like the policy when `shard` is set (the
    copy is taken before the policy is sharded: FSDP modules cannot be copied).
    """

    def __init__(self, model, shard: bool = False):
        self.frozen_copy = None if lora.has_lora(model) else copy.deepcopy(model).eval().requires_grad_(False)
        if shard and self.frozen_copy is not None:
            dist.shard_model(self.frozen_copy)

    def logprobs(self, policy, rollout: Rollout, cfg: GRPOConfig) -> torch.Tensor:
        with torch.no_grad():
            if self.frozen_copy is not None:
                return rollout_logprobs(self.frozen_copy, rollout, cfg).logprobs
            with lora.lora_disabled(policy):
                return rollout_logprobs(policy, rollout, cfg).logprobs


def rollout_logprobs(model, rollout: Rollout, cfg: GRPOConfig, rows=None, with_entropy=False) -> TokenLogprobs:
    """Log-probs [b, Lc] (and entropy) of the rollout's completion tokens for the given rows.

    `rows` (default all) must hold whole groups in order, so that each
    group's shared prompt runs through the model once.
    """
    rows = torch.arange(rollout.completion_ids.shape[0]) if rows is None else rows
    with autocast(cfg):
        return completion_logprobs(
            model,
            rollout.prompt_ids[rows],
            rollout.prompt_mask[rows],
            rollout.completion_ids[rows],
            rollout.completion_mask[rows],
            temperature=cfg.temperature,
            chunk_tokens=cfg.logprob_chunk_tokens,
            with_entropy=with_entropy,
            group_size=cfg.group_size if cfg.share_prompt_pass else 1,
        )


def sampling_logprobs(model, rollout: Rollout, cfg: GRPOConfig) -> torch.Tensor | None:
    """Log-probs [B, Lc] of the policy that sampled the rollout, or None when the update needs none.

    With one optimizer step per rollout (mu = 1, one minibatch) the policy
    being updated *is* the sampling policy: the update pass's own log-probs,
    detached, serve (None here, no extra forward pass). With more, every
    step after the first sees a policy that has moved since sampling, so the
    ratio needs these (TRL's steps_per_generation > 1 computes them too).
    """
    if cfg.mu == 1 and cfg.minibatches == 1:
        return None
    model.eval()
    with torch.no_grad():
        return rollout_logprobs(model, rollout, cfg).logprobs


# --------------------------------------------------------------------------
# Steps 1-3: prompts, their completions and rewards
# --------------------------------------------------------------------------
def sample_and_score(run: GRPORun, timer: PhaseTimer) -> ScoredBatch:
    """Steps 1 to 3 of a GRPO step: this rank's P prompts, G completions of each, and their rewards."""
    cfg = run.cfg
    # 1. Take a batch of prompts (this rank's share of the global batch);
    #    each completion carries its prompt's example.
    global_batch = run.example_sampler.take(cfg.prompts_per_step * run.place.world_size)
    mine = global_batch[run.place.rank * cfg.prompts_per_step : (run.place.rank + 1) * cfg.prompts_per_step]
    batch_examples = [run.train_examples[i] for i in mine]
    examples = [e for e in batch_examples for _ in range(cfg.group_size)]

    # 2. Rollouts: G completions per prompt.
    with timer("generate"), autocast(cfg):
        run.model.eval()
        rollout = run.rollout_sampler(
            run.model, run.tokenizer, [e["prompt"] for e in batch_examples], group_size=cfg.group_size,
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
            generator=run.generator, ignore_eos=cfg.ignore_eos)
        completions = decode_completions(run.tokenizer, rollout)
    if run.roofline is not None:
        prompt_tokens = int(rollout.prompt_mask[:: cfg.group_size].sum())  # each distinct prompt is prefilled once
        rows, completion_length = rollout.completion_ids.shape
        timer.note_floor("generate", run.roofline.rollout_floor(prompt_tokens, rollout.prompt_ids.shape[1], rows,
                                                                 completion_length))

    # 3. Rewards; a sample whose reward fails is marked NaN, too many stop the run.
    with timer("reward"):
        prompts = [e["prompt"] for e in examples]
        reward_values, reward_components, reward_errors = score_with_fallback(run.reward_fn, prompts, completions,
                                                                              examples)
        # A reward that is not a weighted sum is its own single term, "reward" (`reward_term_weights`).
        term_values = {"reward": reward_values, **reward_components}
        if cfg.overlong_buffer:
            penalty = soft_overlong_penalty(rollout.completion_lengths.cpu().numpy(), cfg.max_new_tokens,
                                            cfg.overlong_buffer)
            reward_values = reward_values + run.term_weights["overlong"] * penalty
            reward_components = {**reward_components, "overlong": penalty}
            term_values["overlong"] = penalty
        check_reward_failures(reward_errors, completions, examples, cfg.max_reward_failures)
        rewards = torch.as_tensor(reward_values, dtype=torch.float32)

    scores = rewards
    if cfg.reward_normalization == "normalize_then_sum":
        missing = np.full(len(rewards), np.nan)  # a term whose every sample failed has no component
        terms = {name: torch.as_tensor(term_values.get(name, missing), dtype=torch.float32)
                 for name in run.term_weights}
        scores = normalize_then_sum(terms, run.term_weights, cfg.group_size, cfg.std_offset, torch.isfinite(rewards))
    return ScoredBatch(examples, rollout, completions, rewards, reward_components, reward_errors, scores)


def reward_term_weights(reward_fn, cfg: GRPOConfig) -> dict[str, float]:
    """Each reward term's name and weight: the weighted sum's terms, and the overlong penalty when on.

    A reward with a `weights` mapping (term name -> weight, as `rewards.WeightedSum`
    has) is read term by term; any other reward is one term, "reward", of
    weight 1, which normalize_then_sum cannot split, so it is refused there.
    """
    term_weights = getattr(reward_fn, "weights", None)
    if cfg.reward_normalization == "normalize_then_sum" and not isinstance(term_weights, dict):
        raise ConfigError("reward_normalization = normalize_then_sum normalises each term of the reward, but the "
                          f"reward given ({type(reward_fn).__name__}) has no `weights` mapping of its terms; "
                          "give it one (as rewards.WeightedSum has) or use sum_then_normalize")
    weights = dict(term_weights or {"reward": 1.0})
    if cfg.overlong_buffer:
        weights["overlong"] = float(cfg.reward_weights.get("overlong", 1.0))
    return weights


# --------------------------------------------------------------------------
# Step 4: group-relative advantages
# --------------------------------------------------------------------------
def global_group_advantages(scores: torch.Tensor, valid: torch.Tensor,
                            cfg: GRPOConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's advantages [b], computed over the rewards of every rank; zero-std flags [P * world] of all groups.

    Groups never cross ranks, so only scale_rewards = "batch" needs the other
    ranks' rewards (its std is the global batch's, as in TRL); gathering them
    whatever the scale keeps one path. scores [b] are the rewards or, under normalize_then_sum,
    the summed group-normalised terms; a sample whose reward failed (valid False) is left out of its group.
    """
    all_scores = dist.all_gather_rows(scores)
    all_valid = dist.all_gather_rows(valid.float()).bool()
    advantages, zero_std = group_advantages(all_scores, cfg.group_size, cfg.scale_rewards, cfg.std_offset, all_valid)
    rows = scores.shape[0]
    return advantages[dist.rank() * rows : (dist.rank() + 1) * rows], zero_std


# --------------------------------------------------------------------------
# Step 6: the policy update
# --------------------------------------------------------------------------
@dataclass
class UpdateStats:
    """What `policy_update` measured: one entry per optimizer step (mu * minibatches of them)."""

    loss: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)           # empty when beta = 0
    clip_low: list[float] = field(default_factory=list)
    clip_high: list[float] = field(default_factory=list)
    clip_region: list[float] = field(default_factory=list)
    clip_delta: list[float] = field(default_factory=list)   # empty without delta
    entropy: list[float] = field(default_factory=list)
    sampler_kl: list[float] = field(default_factory=list)       # the sampler against the trainer
    sampler_ratio: list[float] = field(default_factory=list)
    sampler_capped: list[float] = field(default_factory=list)   # empty without sampler_correction
    grad_norm: list[float] = field(default_factory=list)
    skipped: int = 0                                        # steps skipped as non-finite


def policy_update(model, optimizer, scheduler, rollout, loss_mask, advantages, old_logprobs, ref_logprobs, cfg,
                  guard: NonFiniteGuard | None = None) -> UpdateStats:
    """mu epochs over the batch, each split into `minibatches` optimizer steps.

    A minibatch is processed in micro-batches whose gradients accumulate. The
    loss normaliser is computed once per minibatch, over all ranks, and
    gradients are summed over ranks (by FSDP itself for a sharded model): the
    accumulated gradient equals the gradient of the whole global minibatch.

    A step whose loss or gradient norm is not finite is skipped (it would
    poison AdamW's moments for good) and counted by `guard`.
    """
    guard = guard or NonFiniteGuard(max_consecutive=10**9)
    batch = rollout.completion_ids.shape[0]
    num_groups = batch // cfg.group_size
    minibatch_size = batch // cfg.minibatches
    micro_size = cfg.micro_batch_size or minibatch_size
    stats = UpdateStats()
    model.train()
    for epoch in range(cfg.mu):
        # Shuffle whole groups, so every micro-batch keeps its groups intact.
        group_order = torch.randperm(num_groups) if cfg.minibatches > 1 else torch.arange(num_groups)
        order = (group_order.unsqueeze(1) * cfg.group_size + torch.arange(cfg.group_size)).flatten()
        for start in range(0, batch, minibatch_size):
            minibatch = order[start : start + minibatch_size]
            local = Normaliser.of(loss_mask[minibatch], cfg.max_new_tokens)
            norm = Normaliser(dist.all_reduce_sum(local.num_sequences), dist.all_reduce_sum(local.num_tokens),
                              cfg.max_new_tokens)
            optimizer.zero_grad(set_to_none=True)
            step_loss, step_stats = 0.0, TokenMeans()
            for micro_start in range(0, minibatch_size, micro_size):
                rows = minibatch[micro_start : micro_start + micro_size]
                logprobs, entropy = rollout_logprobs(model, rollout, cfg, rows, with_entropy=True)
                # One optimizer step per rollout: the sampling policy *is* the
                # current one, so its log-probs are these, detached (ratio 1, gradient of logp).
                old = old_logprobs[rows] if old_logprobs is not None else logprobs.detach()
                sampler_weights, sampler_stats = compare_sampler(old, rollout.sampler_logprobs[rows], loss_mask[rows],
                                                                 cfg)
                loss, micro_stats = grpo_loss(
                    logprobs, old, ref_logprobs[rows] if ref_logprobs is not None else None,
                    advantages[rows], loss_mask[rows], norm,
                    eps_low=cfg.eps_low, eps_high=cfg.eps_high, beta=cfg.beta, kl_estimator=cfg.kl_estimator,
                    aggregation=cfg.loss_aggregation, importance_level=cfg.importance_level, delta=cfg.delta,
                    sampler_weights=sampler_weights,
                )
                micro_stats.update(sampler_stats)
                loss.backward()
                step_loss += loss.item()
                # grpo_loss averages over the scored tokens, the entropy over every completion token.
                scored_tokens = float(loss_mask[rows].sum())
                for key, value in micro_stats.items():
                    step_stats.add(key, float(value), scored_tokens)
                step_stats.add("entropy", float(masked_mean(entropy, rollout.completion_mask[rows])),
                               float(rollout.completion_mask[rows].sum()))
            dist.all_reduce_gradients(trainable_parameters(model))
            step_loss = dist.all_reduce_sum(step_loss)
            grad_norm, skipped = clip_and_step(model, optimizer, scheduler, step_loss, cfg.max_grad_norm, guard)
            stats.skipped += int(skipped)
            stats.loss.append(step_loss)
            stats.grad_norm.append(grad_norm)
            for key, value in step_stats.means().items():
                getattr(stats, key).append(value)
    return stats


def compare_sampler(trainer_logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, loss_mask: torch.Tensor,
                    cfg: GRPOConfig) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """The sampler correction's weights (None when sampler_correction = "none") and how far the sampler was.

    trainer_logprobs [B, T] are the trainer's log-probs of the rollout under the
    weights it was sampled with; sampler_logprobs [B, T] the sampler's own.
    With l_it = trainer - sampler, over the scored tokens:
        sampler_kl     = mean(exp(l) - l - 1), the k3 estimate of KL(pi_sampler || pi_train)
        sampler_ratio  = mean(exp(l)), 1 when the two agree
        sampler_capped = share of tokens whose weight the cap cut (with the correction on)
    """
    stats = {"sampler_kl": masked_mean(kl_estimate(sampler_logprobs, trainer_logprobs.detach(), "k3"), loss_mask),
             "sampler_ratio": masked_mean(torch.exp(trainer_logprobs.detach() - sampler_logprobs), loss_mask)}
    if cfg.sampler_correction == "none":
        return None, stats
    weights = truncated_importance_weights(trainer_logprobs, sampler_logprobs, loss_mask, cfg.sampler_correction_cap,
                                           cfg.sampler_correction)
    stats["sampler_capped"] = masked_mean((weights >= cfg.sampler_correction_cap).float(), loss_mask)
    return weights, stats


class TokenMeans:
    """Means over every token of a minibatch (on every rank), combined from its micro-batches' own means.

        mean = sum_m n_m * mean_m / sum_m n_m      n_m: tokens under the statistic's mask in micro-batch m

    This is the minibatch's token mean whatever the split into micro-batches;
    weighing micro-batches by their rows instead would count a short
    completion's tokens as much as a long one's.
    """

    def __init__(self):
        self.weighted_sums: dict[str, float] = {}
        self.tokens: dict[str, float] = {}

    def add(self, key: str, mean: float, tokens: float) -> None:
        self.weighted_sums[key] = self.weighted_sums.get(key, 0.0) + tokens * mean
        self.tokens[key] = self.tokens.get(key, 0.0) + tokens

    def means(self) -> dict[str, float]:
        return {key: dist.all_reduce_sum(total) / max(dist.all_reduce_sum(self.tokens[key]), 1.0)
                for key, total in self.weighted_sums.items()}




# --------------------------------------------------------------------------
# Step 7: metrics
# --------------------------------------------------------------------------
def step_metrics(run: GRPORun, scored: ScoredBatch, advantages: torch.Tensor, zero_std: torch.Tensor,
                 update: UpdateStats, sampling_stats: dict, timer: PhaseTimer) -> dict:
    """One line of metrics.jsonl: the total reward over the global batch (each term's mean, rewards/<name>/*,
    and the advantages, over this rank's samples), the update's means, lengths, speed."""
    cfg, rollout = run.cfg, scored.rollout
    lengths = rollout.completion_lengths
    all_rewards = dist.all_gather_rows(scored.rewards).numpy()
    # tokens one policy forward pass reads: each group's prompt once (shared pass) or G times
    pass_tokens = float(rollout.prompt_mask.sum()) / (cfg.group_size if cfg.share_prompt_pass else 1)
    if run.roofline is not None:
        tokens = pass_tokens + float(lengths.sum())
        no_grad_passes = (run.reference is not None) + (not (cfg.mu == 1 and cfg.minibatches == 1))  # sampling_logprobs
        pass_floor, machine = run.roofline.cost.pass_floor, run.roofline.machine
        timer.note_floor("logprob", no_grad_passes * pass_floor(machine, tokens))
        timer.note_floor("update", cfg.mu * pass_floor(machine, tokens, backward=True, lora=bool(cfg.lora_r)))
    return {
        **summarise_rewards(all_rewards, scored.components),
        "advantages/mean": float(advantages.mean()),
        "advantages/std": float(advantages.std()),
        "advantages/abs_max": float(advantages.abs().max()),
        "frac_reward_zero_std": float(zero_std.float().mean()),
        "reward_failures": len(scored.errors),
        "loss": float(np.mean(update.loss)),
        "kl": float(np.mean(update.kl)) if update.kl else 0.0,
        "entropy": float(np.mean(update.entropy)),
        "clip_ratio/low_mean": float(np.mean(update.clip_low)),
        "clip_ratio/high_mean": float(np.mean(update.clip_high)),
        "clip_ratio/region_mean": float(np.mean(update.clip_region)),
        **({"clip_ratio/delta_mean": float(np.mean(update.clip_delta))} if cfg.delta else {}),
        "sampler/kl": float(np.mean(update.sampler_kl)),
        "sampler/ratio_mean": float(np.mean(update.sampler_ratio)),
        **({"sampler/capped_ratio": float(np.mean(update.sampler_capped))} if update.sampler_capped else {}),
        "completions/mean_length": float(lengths.mean()),
        "completions/max_length": float(lengths.max()),
        "completions/clipped_ratio": float(rollout.truncated.float().mean()),
        "completions/empty_ratio": float((lengths <= 1).float().mean()),
        "grad_norm": float(np.mean(update.grad_norm)),
        "skipped_updates": update.skipped,
        "skipped_updates_total": run.guard.total,
        "lr": run.scheduler.get_last_lr()[0],
        "epoch": run.example_sampler.epochs_done,
        **timer.seconds(),
        **timer.utilisation(),
        "tokens_per_second": float(lengths.sum()) * run.place.world_size / max(timer.total(), 1e-9),
        "tokens/prompt": pass_tokens,
        "tokens/completion": float(lengths.sum()),
        **sampling_stats,
    }


def summarise_rewards(values: np.ndarray, components: dict[str, np.ndarray], prefix: str = "") -> dict:
    """reward, reward_std and each component's mean (TRL's names: rewards/<name>/mean)."""
    out = {f"{prefix}reward": float(np.nanmean(values)), f"{prefix}reward_std": float(np.nanstd(values))}
    for name, component in components.items():
        out[f"{prefix}rewards/{name}/mean"] = float(np.nanmean(component))
        if not prefix:
            out[f"rewards/{name}/std"] = float(np.nanstd(component))
    return out


def completion_rows(scored: ScoredBatch, advantages: torch.Tensor, group_size: int, step: int) -> list[dict]:
    """One row per sampled completion for completions/step-N.jsonl (NaN written as null)."""
    def number(value):
        value = float(value)
        return value if math.isfinite(value) else None

    lengths, truncated = scored.rollout.completion_lengths.tolist(), scored.rollout.truncated.tolist()
    first_group = dist.rank() * (len(scored.examples) // group_size)
    return [{"step": step, "group": first_group + i // group_size, "id": example.get("id"),
             "prompt": example["prompt"], "target": example.get("target"), "completion": completion,
             "terms": {name: number(values[i]) for name, values in scored.components.items()},
             "reward": number(scored.rewards[i]), "advantage": number(advantages[i]),
             "length": int(lengths[i]), "truncated": bool(truncated[i])}
            for i, (example, completion) in enumerate(zip(scored.examples, scored.completions))]


def log_completions(logger: MetricsLogger, rows: list[dict], group_size: int, step: int) -> None:
    """All rows to completions/step-N.jsonl and TensorBoard; the first group's to the console."""
    terms = list(rows[0]["terms"]) if rows else []
    logger.log_samples(
        step, rows, table=[{**row["terms"], **row} for row in rows],
        columns=["group", "reward", "advantage", "length", "truncated", *terms, "target", "completion", "prompt"],
        console_columns=["reward", "advantage", "length", "truncated", *[t for t in terms if "/" not in t],
                         "completion"],
        console_rows=min(group_size, 8),
    )


# --------------------------------------------------------------------------
# Step 8: dev evaluation
# --------------------------------------------------------------------------
@torch.no_grad()
def evaluate(run: GRPORun, step: int) -> dict:
    """Greedy outputs on the dev examples, their rewards and hacking statistics; the outputs go to eval/step-N.jsonl.

    Besides the reward it logs what tells translating from reward hacking
    (`eval.hacking`): distinct outputs, the most frequent output's share, the
    share in the target script, the length ratio to the references, chrF and
    BLEU; and it prints a one-line warning when the outputs look like a hedge.
    Rank 0's work; a sharded model's other ranks join in its generation (each
    forward is a collective) and return {}.
    """
    cfg, examples = run.cfg, run.dev_examples
    dev = generate_dev_outputs(cfg, run.model, run.tokenizer, examples, run.logger, step)
    if dev is None:
        return {}
    values, components, errors = score_with_fallback(run.reward_fn, [e["prompt"] for e in examples], dev.outputs,
                                                     examples)
    check_reward_failures(errors, dev.outputs, examples, cfg.max_reward_failures)
    write_eval_rows(run.place.run_dir, step, [
        {"id": example["id"], "source": example["source"], "target": example["target"], **dev.row(i),
         "reward": float(values[i]), **{f"reward/{name}": float(component[i]) for name, component in components.items()}}
        for i, example in enumerate(examples)])
    return {**summarise_rewards(values, components, prefix="eval/"), **dev.metrics}


# --------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------
@dataclass
class GRPORun:
    """Everything a GRPO step works with, as `set_up` builds (or restores) it."""

    place: RunPlace                          # processes, run folder, checkpoint resumed from
    model: torch.nn.Module              # the policy pi_theta
    tokenizer: object
    reference: Reference | None         # pi_ref, None when beta = 0
    reward_fn: Callable                 # (prompts, completions, examples) -> .values [B], .components
    term_weights: dict[str, float]      # reward term -> weight (`reward_term_weights`)
    train_examples: list[dict]
    dev_examples: list[dict]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    example_sampler: ExampleSampler             # which prompts come next
    generator: torch.Generator          # the sampling generator, on the model's device
    rollout_sampler: object             # `rollout.sample_groups` or a static sampler (`generation`)
    guard: NonFiniteGuard
    checkpoints: Checkpointer
    logger: MetricsLogger
    start_step: int                     # 0, or the step of the checkpoint resumed from
    roofline: Roofline | None           # this machine's limits and the model's counts (log_utilisation_every)

    @property
    def cfg(self) -> GRPOConfig:
        return self.place.cfg

    @property
    def evaluates_here(self) -> bool:
        """Dev evaluation is rank 0's; with sharded weights every rank takes part in its generation."""
        return dist.is_main() or self.cfg.fsdp


def set_up(cfg: GRPOConfig, reward_fn: Callable) -> GRPORun:
    """Load the policy, reference and data, and build the optimizer; from a checkpoint when resuming."""
    place = start_run(cfg)
    cfg = place.cfg
    model, tokenizer = load_model(cfg.model, cfg.dtype, cfg.device, lora=cfg.lora)
    # Under bf16 autocast the static samplers decode with bf16 copies of the weights, cast once per rollout.
    weights_dtype = generation_weights_dtype(cfg.generation, cfg.mixed_precision)
    # Measured before sharding, on the whole model.
    roofline = Roofline.measure(model, cfg, weights_dtype is not None) if cfg.log_utilisation_every else None
    seed_each_rank(cfg, place.rank)
    reference = Reference(model, shard=cfg.fsdp) if cfg.beta > 0 else None
    if cfg.gradient_checkpointing:
        checkpoint_decoder_layers(model)
    state = load_resume_state(place, model)
    if cfg.fsdp:
        dist.shard_model(model)
    completion_key = max(("max_new_tokens", "eval_max_new_tokens"), key=lambda key: getattr(cfg, key))
    train_examples, dev_examples = load_task_examples(
        cfg, tokenizer, room=PromptRoom.of(model, completion_key, getattr(cfg, completion_key)))
    refuse_unreadable_targets(reward_fn, [e["target"] for e in train_examples], cfg.max_unread_target_chars)

    optimizer = make_optimizer(model, cfg)
    scheduler = warmup_cosine(optimizer, cfg.warmup_steps, cfg.max_steps * cfg.mu * cfg.minibatches,
                              cfg.min_lr_ratio)
    # On the model's device: the draws on a GPU need a GPU generator.
    generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed + place.rank)
    example_sampler = ExampleSampler(len(train_examples), cfg.seed)
    checkpoints = Checkpointer(place, model, tokenizer, optimizer, scheduler, example_sampler, generator,
                               data_files=data_digests(place.requested))
    start_step = checkpoints.restore(state)
    logger = begin_logging(place, cfg.max_steps, start_step, bar_keys=("reward", "kl", "eval/reward"))
    logger.message(f"run folder: {place.run_dir}  |  {len(train_examples)} train / {len(dev_examples)} dev examples"
                   + (f"  |  resumed at step {start_step}" if place.resume_from else "")
                   + (f"  |  {place.world_size} processes" if place.world_size > 1 else "")
                   + ("  |  FSDP-sharded weights" if cfg.fsdp else ""))
    return GRPORun(
        place=place, model=model, tokenizer=tokenizer, reference=reference, reward_fn=reward_fn,
        term_weights=reward_term_weights(reward_fn, cfg), train_examples=train_examples, dev_examples=dev_examples,
        optimizer=optimizer, scheduler=scheduler, example_sampler=example_sampler, generator=generator,
        rollout_sampler=make_rollout_sampler(cfg.generation, weights_dtype),
        guard=NonFiniteGuard(cfg.max_skipped_steps), checkpoints=checkpoints, logger=logger, start_step=start_step,
        roofline=roofline)


@run_folder.holds_run_dir
def train(cfg: GRPOConfig, reward_fn: Callable) -> Path:
    """Run GRPO as configured, scoring completions with `reward_fn`; returns the run folder.

    `reward_fn(prompts, completions, examples)` takes three aligned lists of B
    and returns an object with `values` [B] (NaN for a sample it could not
    score) and `components`, name -> [B], for the log (rewards.base.Reward is
    one). `python -m grpo` passes the paper's reward, built from the config
    (grpo.cli).
    """
    run = set_up(cfg, reward_fn)
    cfg, model, logger = run.cfg, run.model, run.logger
    if run.dev_examples and run.start_step == 0 and run.evaluates_here:
        logger.log(0, evaluate(run, 0), advance=False)

    for step in range(run.start_step + 1, cfg.max_steps + 1):
        timer = PhaseTimer()

        # 1-3. Prompts, their rollouts and rewards (`sample_and_score`). With dynamic sampling, groups
        #      whose rewards are all equal are dropped and more prompts sampled until the batch is full.
        scored, sampling_stats = sample_and_score(run, timer), {}
        if cfg.filter_zero_std_groups:
            scored, sampling_stats = fill_with_informative_groups(
                scored, lambda: sample_and_score(run, timer), num_groups=cfg.prompts_per_step,
                group_size=cfg.group_size, tolerance=cfg.zero_std_tolerance,
                max_extra_rounds=cfg.max_extra_sampling_rounds, pad_id=run.tokenizer.pad_token_id)
        rollout = scored.rollout

        # 4. Group-relative advantages over the global batch (a failed reward is left out of its group),
        #    from the rewards or, under normalize_then_sum, from the sum of group-normalised terms (GDPO).
        #    That sum is formed in step 3 (`sample_and_score`), because dynamic sampling, between the two,
        #    must judge a group's spread on the scores its advantages are computed from.
        valid = torch.isfinite(scored.rewards)
        advantages, zero_std = global_group_advantages(scored.scores, valid, cfg)
        # Rewards are computed on the CPU; the loss runs where the rollout lives.
        advantages, valid = advantages.to(rollout.completion_ids.device), valid.to(rollout.completion_ids.device)
        loss_mask = rollout.completion_mask * valid.unsqueeze(1)
        if cfg.mask_truncated:
            loss_mask = loss_mask * (~rollout.truncated).unsqueeze(1)

        # 5. Old and reference log-probs, no grad. The reference is the starting policy and is never
        #    refreshed: DeepSeekMath's Algorithm 1 resets it to the current policy at each outer
        #    iteration; here, like TRL by default, the KL term always pulls towards the start.
        with timer("logprob"):
            old_logprobs = sampling_logprobs(model, rollout, cfg)
            ref_logprobs = run.reference.logprobs(model, rollout, cfg) if run.reference is not None else None

        # 6. Policy updates; too many non-finite steps in a row stop the run
        #    with the last good weights checkpointed (skipped steps change nothing).
        with timer("update"):
            try:
                update = policy_update(model, run.optimizer, run.scheduler, rollout, loss_mask=loss_mask,
                                       advantages=advantages, old_logprobs=old_logprobs, ref_logprobs=ref_logprobs,
                                       cfg=cfg, guard=run.guard)
            except TooManySkippedSteps:
                run.checkpoints.save(step)
                logger.close()
                raise
            run.guard.note_step(step, update.skipped, len(update.loss))

        # 7. Metrics (the total reward over the global batch, its terms over this rank's), and now and then
        #    the utilisation line and the sampled completions.
        logger.log(step, step_metrics(run, scored, advantages, zero_std, update, sampling_stats, timer))
        if run.roofline is not None and (step == run.start_step + 1 or step % cfg.log_utilisation_every == 0):
            logger.message(run.roofline.line(step, timer.utilisation()))
        if cfg.log_completions_every and step % cfg.log_completions_every == 0:
            rows = dist.gather_lists(completion_rows(scored, advantages, cfg.group_size, step))
            log_completions(logger, rows, cfg.group_size, step)

        # 8. Dev evaluation (rank 0; the others wait at the next barrier, or join in a sharded model's generation).
        if run.dev_examples and is_due(step, cfg.eval_every, cfg.max_steps) and run.evaluates_here:
            logger.log(step, evaluate(run, step), advance=False)

        # 9. Checkpoint, and after a SIGTERM one in any case, then stop.
        saved = is_due(step, cfg.save_every, cfg.max_steps)
        if saved:
            run.checkpoints.save(step)
        stop_if_terminated(run.checkpoints, step, cfg.max_steps, saved)

    logger.close()
    finish_run(run.place.run_dir)
    return run.place.run_dir


def refuse_unreadable_targets(reward_fn, targets: list[str], max_unread: float) -> None:
    """Stop before training when a reward term cannot read most of the training targets.

    A term that can tell (the semantic reward's encoder: rewards.embedding) has a
    `refuse_unreadable(targets, max_unread)` method that raises.
    """
    for term in [reward_fn, *(term for _, term in getattr(reward_fn, "terms", []))]:
        if hasattr(term, "refuse_unreadable"):
            term.refuse_unreadable(targets, max_unread)
