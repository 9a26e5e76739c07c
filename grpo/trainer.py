"""The GRPO training loop, top to bottom as the algorithm reads.

    for each step:
        1. take P prompts
        2. sample G completions for each              (rollout.sample_groups, or static_rollout)
        3. score every completion                     (rewards)
           (dynamic sampling: drop groups without a spread, repeat 1-3 until P are kept)
        4. turn scores into group-relative advantages (advantages.group_advantages)
        5. log-probs of the sampling policy and of the reference (no grad)
        6. mu epochs of clipped policy-gradient updates on minibatches
        7. log metrics   8. evaluate on dev   9. checkpoint
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from grpo import checkpoint as ckpt
from grpo import distributed as dist
from grpo import lora
from grpo import run_folder
from grpo.advantages import group_advantages, normalize_then_sum
from grpo.config import GRPOConfig, save_config, to_dict
from grpo.data import keep_short_prompts, make_examples, read_jsonl, split_path
from grpo.dynamic_sampling import ScoredBatch, fill_with_informative_groups
from grpo.errors import CheckpointError, ConfigError, DataError
from grpo.guards import NonFiniteGuard, TooManySkippedSteps, check_reward_failures, score_with_fallback
from grpo.logprobs import checkpoint_decoder_layers, completion_logprobs
from grpo.loss import Normaliser, grpo_loss, masked_mean
from grpo.metrics import MetricsLogger
from grpo.models import load_model
from grpo.rollout import Rollout, decode_completions, greedy_completions
from grpo.static_rollout import make_sampler
from rewards.length import soft_overlong_penalty


# --------------------------------------------------------------------------
# Pieces shared with the SFT baseline
# --------------------------------------------------------------------------
def warmup_cosine(optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0):
    """LR multiplier: linear warmup to 1 over `warmup_steps`, then cosine down to `min_lr_ratio`.

        f(s) = (s + 1) / warmup                                   for s < warmup
        f(s) = m + (1 - m) * 0.5 * (1 + cos(pi * (s - warmup) / (total - warmup)))   after
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def autocast(cfg):
    """bfloat16 autocast for forward passes when mixed_precision = "bf16" (weights stay fp32)."""
    return torch.autocast(device_type=cfg.device.split(":")[0], dtype=torch.bfloat16,
                          enabled=cfg.mixed_precision == "bf16")


def trainable_parameters(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def clip_and_step(model, optimizer, scheduler, loss_value: float, max_grad_norm: float,
                  guard: NonFiniteGuard) -> tuple[float, bool]:
    """Clip the gradient's global norm, then step; a non-finite step is skipped and counted by `guard`.

    A NaN or inf would poison AdamW's moments for good, so such a step only
    advances the schedule; too many in a row raise TooManySkippedSteps.
    Returns (grad norm before clipping, skipped).
    """
    grad_norm = float(torch.nn.utils.clip_grad_norm_(
        trainable_parameters(model), max_grad_norm if max_grad_norm > 0 else float("inf")
    ))
    skipped = not guard.is_finite(loss_value, grad_norm)
    if skipped:
        optimizer.zero_grad(set_to_none=True)
    else:
        optimizer.step()
    scheduler.step()
    guard.record(skipped)
    return grad_norm, skipped


def make_optimizer(model, cfg):
    return torch.optim.AdamW(
        trainable_parameters(model), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay
    )


@dataclass
class PromptSampler:
    """Shuffled passes over the training examples; its position is part of the resume state."""

    num_examples: int
    seed: int
    epoch: int = 0
    index: int = 0
    order: list[int] = field(default_factory=list)

    def __post_init__(self):
        self.order = self._order(self.epoch)

    def _order(self, epoch: int) -> list[int]:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples).tolist()

    def take(self, count: int) -> list[int]:
        picked = []
        while len(picked) < count:
            if self.index == self.num_examples:
                self.epoch, self.index = self.epoch + 1, 0
                self.order = self._order(self.epoch)
            picked.append(self.order[self.index])
            self.index += 1
        return picked

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load(self, state: dict) -> None:
        self.epoch, self.index = state["epoch"], state["index"]
        self.order = self._order(self.epoch)


def resume_checkpoint(cfg, run_dir: Path) -> Path | None:
    """The verified checkpoint `resume` names: the run's newest intact one for "auto", a folder, or None."""
    if cfg.resume == "auto":
        return ckpt.newest_intact_checkpoint(run_dir)
    if not cfg.resume:
        return None
    try:
        if not ckpt.verify_checkpoint(Path(cfg.resume)):
            print(ckpt.UNVERIFIED_NOTE.format(checkpoint=cfg.resume))
    except CheckpointError as error:
        raise CheckpointError(f"{error}; resume from another checkpoint, or start again with overwrite=true") from None
    return Path(cfg.resume)


def prepare_run_dir(cfg) -> tuple[Path, Path | None]:
    """Claim the run folder for this run; refuse to clobber a finished or running one unless told.

    Returns the folder and the checkpoint to resume from (or None). Under
    torchrun rank 0 claims the folder and picks the checkpoint; the other
    ranks receive its choice.
    """
    run_dir = Path(cfg.out_dir)
    resume_from = _claim_run_dir(cfg, run_dir) if dist.is_main() else None
    return run_dir, dist.broadcast_from_main(resume_from)


def _claim_run_dir(cfg, run_dir: Path) -> Path | None:
    run_folder.lock(run_dir)
    resume_from = resume_checkpoint(cfg, run_dir)
    holds_run = (run_dir / "metrics.jsonl").exists() or (run_dir / "checkpoints").exists()
    if holds_run and resume_from is None:
        if cfg.resume == "auto" and not cfg.overwrite:
            raise ConfigError(f"out_dir '{run_dir}' holds a run without a checkpoint to resume from; "
                              "pass overwrite=true to start it again")
        if not cfg.overwrite:
            raise ConfigError(
                f"out_dir '{run_dir}' already holds a run. Pass resume=auto to continue it, "
                f"overwrite=true to replace it, or choose another out_dir."
            )
        # Replaced only once the new run has loaded everything it needs (run_folder.start).
        run_folder.replace_on_start(run_dir)
    return resume_from


def load_task_examples(cfg, tokenizer) -> tuple[list[dict], list[dict]]:
    """Train and dev examples of the configured task.

    With `max_prompt_tokens` set, examples with longer prompts are left out
    (and counted on stdout): truncating a source sentence would change the task.
    """
    train_file = split_path(cfg.data, "train")
    if train_file is None:
        raise DataError(f"no training data: '{cfg.data}' is neither a JSONL file nor a folder with train.jsonl")
    common = dict(task=cfg.task, source_lang=cfg.source_lang, target_lang=cfg.target_lang,
                  data_langs=cfg.data_langs, prompt_format=cfg.prompt_format)

    def load(path, limit):
        examples = keep_short_prompts(make_examples(read_jsonl(path), tokenizer, **common), tokenizer,
                                      cfg.max_prompt_tokens, path)
        if not examples:
            raise DataError(f"{path}: no examples left (max_prompt_tokens={cfg.max_prompt_tokens})")
        if 0 < limit < len(examples):
            # A seeded random subset: files are often sorted (by id, by source), so the first N would be biased.
            keep = sorted(np.random.default_rng(cfg.seed).choice(len(examples), size=limit, replace=False))
            examples = [examples[i] for i in keep]
        return examples

    train = load(train_file, cfg.limit)
    dev_file = split_path(cfg.data, "dev")
    dev = load(dev_file, cfg.dev_limit) if dev_file else []
    return train, dev


# --------------------------------------------------------------------------
# GRPO-specific pieces
# --------------------------------------------------------------------------
def build_reward_from_config(cfg: GRPOConfig):
    from rewards import build_reward

    return build_reward(
        # The overlong penalty reads token lengths, so the trainer adds it (`sample_and_score`).
        {term: weight for term, weight in cfg.reward_weights.items() if term != "overlong"},
        encoder=cfg.encoder,
        pooling=cfg.encoder_pooling,
        tau=cfg.tau,
        length_range=(cfg.length_min, cfg.length_max),
        length_outside=cfg.length_outside,
        custom=cfg.custom_reward or None,
        custom_rewards=dict(cfg.custom_rewards),
        encoder_device=dist.local_device(cfg.encoder_device),
    )


def reward_term_weights(reward_fn, cfg: GRPOConfig) -> dict[str, float]:
    """Each reward term's name and weight: the weighted sum's terms, and the overlong penalty when on.

    A reward that is not a weighted sum is one term, "reward", of weight 1.
    """
    weights = dict(getattr(reward_fn, "weights", None) or {"reward": 1.0})
    if cfg.overlong_buffer:
        weights["overlong"] = float(cfg.reward_weights.get("overlong", 1.0))
    return weights


def sample_and_score(model, tokenizer, reward_fn, train_examples, sampler, rollout_sampler, generator,
                     cfg: GRPOConfig, timer, term_weights: dict[str, float]) -> ScoredBatch:
    """Steps 1 to 3 of a GRPO step: this rank's P prompts, G completions of each, and their rewards."""
    rank, world_size = dist.rank(), dist.world_size()
    # 1. Take a batch of prompts (this rank's share of the global batch);
    #    each completion carries its prompt's example.
    global_batch = sampler.take(cfg.prompts_per_step * world_size)
    mine = global_batch[rank * cfg.prompts_per_step : (rank + 1) * cfg.prompts_per_step]
    batch_examples = [train_examples[i] for i in mine]
    examples = [e for e in batch_examples for _ in range(cfg.group_size)]

    # 2. Rollouts: G completions per prompt.
    with timer("generate"), autocast(cfg):
        model.eval()
        rollout = rollout_sampler(model, tokenizer, [e["prompt"] for e in batch_examples], cfg.group_size,
                                  cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.top_k, generator,
                                  ignore_eos=cfg.ignore_eos)
        completions = decode_completions(tokenizer, rollout)

    # 3. Rewards; a sample whose reward fails is marked NaN, too many stop the run.
    with timer("reward"):
        prompts = [e["prompt"] for e in examples]
        reward_values, reward_components, reward_errors = score_with_fallback(reward_fn, prompts, completions,
                                                                              examples)
        # A reward that is not a weighted sum is its own single term, "reward" (`reward_term_weights`).
        term_values = {"reward": reward_values, **reward_components}
        if cfg.overlong_buffer:
            penalty = soft_overlong_penalty(rollout.completion_lengths.cpu().numpy(), cfg.max_new_tokens,
                                            cfg.overlong_buffer)
            reward_values = reward_values + term_weights["overlong"] * penalty
            reward_components = {**reward_components, "overlong": penalty}
            term_values["overlong"] = penalty
        check_reward_failures(reward_errors, completions, examples, cfg.max_reward_failures)
        rewards = torch.as_tensor(reward_values, dtype=torch.float32)

    scores = rewards
    if cfg.reward_normalization == "normalize_then_sum":
        missing = np.full(len(rewards), np.nan)  # a term whose every sample failed has no component
        terms = {name: torch.as_tensor(term_values.get(name, missing), dtype=torch.float32) for name in term_weights}
        scores = normalize_then_sum(terms, term_weights, cfg.group_size, cfg.adv_eps, torch.isfinite(rewards))
    return ScoredBatch(examples, rollout, completions, rewards, reward_components, reward_errors, scores)


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
                return rollout_logprobs(self.frozen_copy, rollout, cfg)[0]
            with lora.lora_disabled(policy):
                return rollout_logprobs(policy, rollout, cfg)[0]


def rollout_logprobs(model, rollout: Rollout, cfg: GRPOConfig, rows=None, with_entropy=False):
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
        return rollout_logprobs(model, rollout, cfg)[0]


def policy_update(model, optimizer, scheduler, rollout, loss_mask, advantages, old_logprobs, ref_logprobs, cfg,
                  guard: NonFiniteGuard | None = None):
    """mu epochs over the batch, each split into `minibatches` optimizer steps.

    A minibatch is processed in micro-batches whose gradients accumulate. The
    loss normaliser is computed once per minibatch, over all ranks, and
    gradients are summed over ranks (by FSDP itself for a sharded model): the
    accumulated gradient equals the gradient of the whole global minibatch.

    A step whose loss or gradient norm is not finite is skipped (it would
    poison AdamW's moments for good) and counted by `guard`.

    Returns per-update statistics (lists, one entry per optimizer step).
    """
    guard = guard or NonFiniteGuard(max_consecutive=10**9)
    batch = rollout.completion_ids.shape[0]
    num_groups = batch // cfg.group_size
    minibatch_size = batch // cfg.minibatches
    micro_size = cfg.micro_batch_size or minibatch_size
    stats = {"loss": [], "kl": [], "clip_low": [], "clip_high": [], "clip_region": [], "clip_delta": [],
             "entropy": [], "grad_norm": [], "skipped": 0}
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
                loss, micro_stats = grpo_loss(
                    logprobs, old, ref_logprobs[rows] if ref_logprobs is not None else None,
                    advantages[rows], loss_mask[rows], norm,
                    eps_low=cfg.eps_low, eps_high=cfg.eps_high, beta=cfg.beta, kl_estimator=cfg.kl_estimator,
                    aggregation=cfg.loss_aggregation, importance_level=cfg.importance_level, delta=cfg.delta,
                )
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
            stats["skipped"] += int(skipped)
            stats["loss"].append(step_loss)
            stats["grad_norm"].append(grad_norm)
            for key, value in step_stats.means().items():
                stats[key].append(value)
    return stats


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
    advantages, zero_std = group_advantages(all_scores, cfg.group_size, cfg.scale_rewards, cfg.adv_eps, all_valid)
    rows = scores.shape[0]
    return advantages[dist.rank() * rows : (dist.rank() + 1) * rows], zero_std


def summarise_rewards(values: np.ndarray, components: dict[str, np.ndarray], prefix: str = "") -> dict:
    """reward, reward_std and each component's mean (TRL's names: rewards/<name>/mean)."""
    out = {f"{prefix}reward": float(np.nanmean(values)), f"{prefix}reward_std": float(np.nanstd(values))}
    for name, component in components.items():
        out[f"{prefix}rewards/{name}/mean"] = float(np.nanmean(component))
        if not prefix:
            out[f"rewards/{name}/std"] = float(np.nanstd(component))
    return out


@torch.no_grad()
def evaluate(model, tokenizer, reward_fn, examples, cfg, run_dir: Path, step: int, batch_size: int = 16) -> dict:
    """Greedy outputs on dev examples, their rewards, and the outputs saved to eval/step-N.jsonl.

    Rank 0's work; a sharded model's other ranks join in its generation (each
    forward is a collective) and return {}.
    """
    import json

    with autocast(cfg):
        completions = greedy_completions(model, tokenizer, [e["prompt"] for e in examples], cfg.eval_max_new_tokens,
                                         batch_size)
    if not dist.is_main():
        return {}
    values, components, errors = score_with_fallback(reward_fn, [e["prompt"] for e in examples], completions, examples)
    check_reward_failures(errors, completions, examples, cfg.max_reward_failures)
    out_dir = run_dir / "eval"
    out_dir.mkdir(exist_ok=True)
    with open(out_dir / f"step-{step:06d}.jsonl", "w", encoding="utf-8") as f:
        for i, (example, completion) in enumerate(zip(examples, completions)):
            row = {"id": example["id"], "source": example["source"], "target": example["target"],
                   "output": completion, "reward": float(values[i])}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    lengths = [len(c) for c in completions]
    return {**summarise_rewards(values, components, prefix="eval/"),
            "eval/mean_chars": float(np.mean(lengths))}


# --------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------
# The one resume rule, for every key of GRPO and SFT: a key in RESUME_MAY_CHANGE may differ from the
# checkpoint's config, takes effect, and is reported; any other difference refuses the resume.
# These keys change where, when and how long the run goes on, evaluates, saves and stops, or only how
# the same gradient is cut into pieces; every other key changes what is trained.
RESUME_LOCATION_KEYS = frozenset({"out_dir", "overwrite", "resume"})  # where it continues: not reported
RESUME_MAY_CHANGE = RESUME_LOCATION_KEYS | {
    "max_steps", "epochs",                                  # run length (the cosine schedule follows the new end)
    "eval_every", "save_every", "keep_checkpoints",         # cadence
    "dev_limit", "eval_max_new_tokens",                     # dev evaluation only
    "max_skipped_steps", "max_reward_failures", "max_unread_target_chars",  # when a failing run stops
    "threads",                                              # speed
    "report_to", "log_completions_every",                   # what is logged, not what is trained
    "micro_batch_size", "grad_accum_steps", "logprob_chunk_tokens", "share_prompt_pass",  # memory: same gradient
}


def check_resume_matches(cfg, saved_config: dict, checkpoint: Path) -> list[str]:
    """Refuse to continue a checkpoint under a config that changes what it was trained on.

    Prints (rank 0) and returns the allowed changes as "key: checkpoint X, now Y".
    A key missing from an older checkpoint's config had its default value then.
    """
    def default(f):
        return f.default_factory() if f.default is dataclasses.MISSING else f.default

    saved = {f.name: saved_config.get(f.name, default(f)) for f in dataclasses.fields(cfg)}
    changed = {key: f"{key}: checkpoint {saved[key]!r}, now {getattr(cfg, key)!r}"
               for key in saved if saved[key] != getattr(cfg, key)}
    refused = [text for key, text in changed.items() if key not in RESUME_MAY_CHANGE]
    if refused:
        allowed = sorted(RESUME_MAY_CHANGE - RESUME_LOCATION_KEYS)
        raise ConfigError(f"cannot resume from {checkpoint}: the config differs in " + "; ".join(refused)
                          + f". Only {', '.join(allowed)} may change on resume: use the run's own config.toml "
                          "with those changes, or start a new run")
    reported = [text for key, text in changed.items() if key not in RESUME_LOCATION_KEYS]
    if reported and dist.is_main():
        print("changed on resume: " + "; ".join(reported))
    return reported


@run_folder.holds_run_dir
def train(cfg: GRPOConfig) -> Path:
    """Run GRPO as configured; returns the run folder."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world_size = dist.init(cfg.device)
    if cfg.fsdp and world_size < 2:
        raise ConfigError("fsdp = true shards the weights over the processes of a torchrun launch; "
                          "start it with torchrun --nproc_per_node N (N >= 2), or leave fsdp off")
    requested = cfg  # what config.toml and checkpoints record: device "cuda", not this rank's "cuda:1"
    if dist.local_device(cfg.device) != cfg.device:
        cfg = dataclasses.replace(cfg, device=dist.local_device(cfg.device))
    torch.manual_seed(cfg.seed)  # the same on every rank until the model (and its LoRA init) is loaded
    np.random.seed(cfg.seed + rank)
    run_dir, resume_from = prepare_run_dir(cfg)

    model, tokenizer = load_model(cfg.model, cfg.dtype, cfg.device, lora=cfg.lora)
    torch.manual_seed(cfg.seed + rank)  # from here on each rank draws its own (dropout, minibatch order)
    reference = Reference(model, shard=cfg.fsdp) if cfg.beta > 0 else None
    if cfg.gradient_checkpointing:
        checkpoint_decoder_layers(model)
    state = ckpt.load_trainer_state(resume_from) if resume_from is not None else None
    if state is not None:
        check_resume_matches(requested, state["config"], resume_from)
        ckpt.load_policy_weights(model, resume_from)  # before sharding: every rank reads the whole weights
    if cfg.fsdp:
        dist.shard_model(model)
    reward_fn = build_reward_from_config(cfg)
    term_weights = reward_term_weights(reward_fn, cfg)
    train_examples, dev_examples = load_task_examples(cfg, tokenizer)
    refuse_unreadable_targets(reward_fn, [e["target"] for e in train_examples], cfg.max_unread_target_chars)

    updates_per_step = cfg.mu * cfg.minibatches
    optimizer = make_optimizer(model, cfg)
    scheduler = warmup_cosine(optimizer, cfg.warmup_steps, cfg.max_steps * updates_per_step, cfg.min_lr_ratio)
    # On the model's device: torch.multinomial on a GPU needs a GPU generator.
    generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed + rank)
    # Under bf16 autocast the static samplers decode with bf16 copies of the weights, cast once per rollout.
    rollout_sampler = make_sampler(cfg.generation, torch.bfloat16 if cfg.mixed_precision == "bf16" else None)
    sampler = PromptSampler(len(train_examples), cfg.seed)
    guard = NonFiniteGuard(cfg.max_skipped_steps)

    start_step = 0
    if state is not None:
        ckpt.load_optimizer_state(model, optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load(state["sampler"])
        ckpt.set_rng_state(state["rng"][rank], generator)
        start_step = state["step"]

    def save(step: int) -> None:
        # Every rank's RNG goes into the state, so that a resumed run samples what the original would have.
        rng = [None] * world_size
        if dist.is_distributed():
            torch.distributed.all_gather_object(rng, ckpt.rng_state(generator))
        else:
            rng = [ckpt.rng_state(generator)]
        weights, optimizer_state = ckpt.full_weights(model), ckpt.optimizer_state(model, optimizer)
        if dist.is_main():
            state = {"optimizer": optimizer_state, "scheduler": scheduler.state_dict(),
                     "sampler": sampler.state(), "rng": rng, "config": to_dict(requested),
                     "reward_identity": reward_identity(reward_fn)}
            ckpt.save_checkpoint(run_dir, step, model, tokenizer, state, keep=cfg.keep_checkpoints, weights=weights)
            run_folder.commit(run_dir)
        dist.barrier()

    # Dev evaluation is rank 0's; with sharded weights every rank takes part in its generation.
    evaluates_here = dist.is_main() or cfg.fsdp

    if dist.is_main():
        run_folder.start(run_dir)  # everything loaded: an old run being replaced moves aside only now
        save_config(requested, run_dir / "config.toml")
    logger = MetricsLogger(run_dir, cfg.max_steps, bar_keys=("reward", "kl", "eval/reward"), enabled=dist.is_main(),
                           initial_step=start_step, truncate_after=start_step if resume_from else None,
                           report_to=cfg.report_to)
    logger.message(f"run folder: {run_dir}  |  {len(train_examples)} train / {len(dev_examples)} dev examples"
                   + (f"  |  resumed at step {start_step}" if resume_from else "")
                   + (f"  |  {world_size} processes" if world_size > 1 else "")
                   + ("  |  FSDP-sharded weights" if cfg.fsdp else ""))
    if dev_examples and start_step == 0 and evaluates_here:
        logger.log(0, evaluate(model, tokenizer, reward_fn, dev_examples, cfg, run_dir, 0), advance=False)

    for step in range(start_step + 1, cfg.max_steps + 1):
        timer = PhaseTimer()

        # 1-3. Prompts, their rollouts and rewards (`sample_and_score`). With dynamic sampling, groups
        #      whose rewards are all equal are dropped and more prompts sampled until the batch is full.
        def sample():
            return sample_and_score(model, tokenizer, reward_fn, train_examples, sampler, rollout_sampler,
                                    generator, cfg, timer, term_weights)

        scored, sampling_stats = sample(), {}
        if cfg.filter_zero_std_groups:
            scored, sampling_stats = fill_with_informative_groups(
                scored, sample, cfg.prompts_per_step, cfg.group_size, cfg.zero_std_tolerance,
                cfg.max_extra_sampling_rounds, tokenizer.pad_token_id)
        rollout, rewards = scored.rollout, scored.rewards
        reward_components, reward_errors = scored.components, scored.errors

        # 4. Group-relative advantages over the global batch (a failed reward is left out of its group),
        #    from the rewards or, under normalize_then_sum, from the sum of group-normalised terms.
        valid = torch.isfinite(rewards)
        advantages, zero_std = global_group_advantages(scored.scores, valid, cfg)
        # Rewards are computed on the CPU; the loss runs where the rollout lives.
        advantages, valid = advantages.to(rollout.completion_ids.device), valid.to(rollout.completion_ids.device)
        loss_mask = rollout.completion_mask * valid.unsqueeze(1)
        if cfg.mask_truncated:
            loss_mask = loss_mask * (~rollout.truncated).unsqueeze(1)

        # 5. Old and reference log-probs, no grad.
        with timer("logprob"):
            old_logprobs = sampling_logprobs(model, rollout, cfg)
            ref_logprobs = reference.logprobs(model, rollout, cfg) if reference is not None else None

        # 6. Policy updates; too many non-finite steps in a row stop the run
        #    with the last good weights checkpointed (skipped steps change nothing).
        with timer("update"):
            try:
                update = policy_update(model, optimizer, scheduler, rollout, loss_mask, advantages,
                                       old_logprobs, ref_logprobs, cfg, guard)
            except TooManySkippedSteps:
                save(step)
                logger.close()
                raise

        # 7. Metrics (reward statistics over the global batch).
        lengths = rollout.completion_lengths
        all_rewards = dist.all_gather_rows(rewards).numpy()
        metrics = {
            **summarise_rewards(all_rewards, reward_components),
            "advantages/mean": float(advantages.mean()),
            "advantages/std": float(advantages.std()),
            "advantages/abs_max": float(advantages.abs().max()),
            "frac_reward_zero_std": float(zero_std.float().mean()),
            "reward_failures": len(reward_errors),
            "loss": float(np.mean(update["loss"])),
            "kl": float(np.mean(update["kl"])) if update["kl"] else 0.0,
            "entropy": float(np.mean(update["entropy"])),
            "clip_ratio/low_mean": float(np.mean(update["clip_low"])),
            "clip_ratio/high_mean": float(np.mean(update["clip_high"])),
            "clip_ratio/region_mean": float(np.mean(update["clip_region"])),
            **({"clip_ratio/delta_mean": float(np.mean(update["clip_delta"]))} if cfg.delta else {}),
            "completions/mean_length": float(lengths.mean()),
            "completions/max_length": float(lengths.max()),
            "completions/clipped_ratio": float(rollout.truncated.float().mean()),
            "completions/empty_ratio": float((lengths <= 1).float().mean()),
            "grad_norm": float(np.mean(update["grad_norm"])),
            "skipped_updates": update["skipped"],
            "skipped_updates_total": guard.total,
            "lr": scheduler.get_last_lr()[0],
            "epoch": sampler.epoch + sampler.index / len(train_examples),
            **timer.seconds(),
            "tokens_per_second": float(lengths.sum()) * world_size / max(timer.total(), 1e-9),
            # tokens one policy forward pass reads: each group's prompt once (shared pass) or G times
            "tokens/prompt": float(rollout.prompt_mask.sum()) / (cfg.group_size if cfg.share_prompt_pass else 1),
            "tokens/completion": float(lengths.sum()),
            **sampling_stats,
        }
        logger.log(step, metrics)
        if cfg.log_completions_every and step % cfg.log_completions_every == 0:
            rows = dist.gather_lists(completion_rows(scored, advantages, cfg.group_size, step))
            log_completions(logger, rows, cfg.group_size, step)

        # 8. Dev evaluation (rank 0; the others wait at the next barrier, or join in a sharded model's generation).
        if dev_examples and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.max_steps):
            if evaluates_here:
                logger.log(step, evaluate(model, tokenizer, reward_fn, dev_examples, cfg, run_dir, step),
                           advance=False)

        # 9. Checkpoint.
        if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.max_steps:
            save(step)

    logger.close()
    finish_run(run_dir)
    return run_dir


def finish_run(run_dir: Path) -> None:
    """Point `<run_dir>/final` at the last checkpoint and say where it is (rank 0)."""
    if dist.is_main():
        final = ckpt.link_final(run_dir, ckpt.latest_checkpoint(run_dir))
        print(f"done: {run_dir}  (final checkpoint: {final} -> {final.resolve().name})")


def refuse_unreadable_targets(reward_fn, targets: list[str], max_unread: float) -> None:
    """Stop before training when a reward encoder cannot read most of the training targets (see rewards.embedding)."""
    from rewards.embedding import EmbeddingCosineReward

    for _, term in getattr(reward_fn, "terms", []):
        if isinstance(term, EmbeddingCosineReward):
            term.refuse_unreadable(targets, max_unread)


def reward_identity(reward_fn) -> dict:
    """What the reward is made of: term names, weights and encoder identities (stored in checkpoints)."""
    terms = getattr(reward_fn, "terms", [])
    return {getattr(term, "name", type(term).__name__): {
        "weight": weight, "encoder": getattr(getattr(term, "encoder", None), "identity", None)}
        for weight, term in terms}


class PhaseTimer:
    """Wall-clock seconds per phase of a step, logged as time/<phase>."""

    def __init__(self):
        self.elapsed: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        yield
        self.elapsed[phase] = self.elapsed.get(phase, 0.0) + time.perf_counter() - start

    def seconds(self) -> dict[str, float]:
        return {f"time/{phase}": round(value, 4) for phase, value in self.elapsed.items()} | {
            "time/step": round(self.total(), 4)
        }

    def total(self) -> float:
        return sum(self.elapsed.values())
