"""Supervised fine-tuning: the strong-SFT baseline and the paper's cold-start stage.

The model learns to write each example's target after its prompt. The
completion is the target's tokens followed by the tokenizer's EOS token (for
chat models the end-of-turn token, which is where generation stops). The loss
is the mean negative log-likelihood of the completion tokens of one optimizer
batch; prompt and padding tokens are not scored:

    L(theta) = -(1 / N) * sum_{b, t} m[b, t] * log pi_theta(y[b, t] | x_b, y[b, <t])

with m[b, t] = 1 on completion tokens and N = sum m over the whole batch.

Everything around the loss is GRPO's: the prompts, AdamW with warmup + cosine,
the run folder (config.toml, metrics.jsonl, eval/, checkpoints/), checkpoints
that load with `load_model` and resume with `resume=auto`, all through the same
functions (`grpo.run.training_run`), and the chunked log-prob pass
(`completion_logprobs`, temperature 1). A run's last checkpoint is also reachable as `<out_dir>/final`,
so the next stage names it without knowing the step count:

    python -m baselines.sft configs/cold_start_mt.toml
    python -m grpo configs/mt.toml model=runs/cold-start-mt/final

Under torchrun it runs data-parallel as GRPO does (gloo on CPU, nccl on GPU):

    torchrun --nproc_per_node 2 -m baselines.sft configs/sft_mt.toml
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from eval.dev_outputs import generate_dev_outputs
from grpo.logprobs import completion_logprobs
from grpo.run import distributed as dist
from grpo.run import run_folder
from grpo.run.command import run_command
from grpo.run.config import RunConfig, check, option
from grpo.run.errors import ConfigError
from grpo.run.guards import NonFiniteGuard, TooManySkippedSteps
from grpo.run.metrics import MetricsLogger
from grpo.run.models import load_model
from grpo.run.training_run import (
    Checkpointer,
    ExampleSampler,
    PromptRoom,
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


@dataclasses.dataclass
class SFTConfig(RunConfig):
    """SFT hyperparameters on top of the shared run, model, LoRA, data and optimizer fields."""

    out_dir: str = option("runs/sft-mt", "run folder: resolved config, metrics.jsonl, eval/, checkpoints/, final")
    lr: float = option(2e-5, "peak learning rate (AdamW); the paper's cold start uses 2e-5")
    batch_size: int = option(32, "examples per optimizer step (the paper's cold start uses 32)")
    micro_batch_size: int = option(0, "rows per forward/backward of each process (gradient accumulation: less "
                                      "memory, same gradient); 0 = its whole share of the batch")
    grad_accum_steps: int = option(0, "the former spelling: micro-batches per step, read as micro_batch_size = "
                                      "batch_size / grad_accum_steps until 2027-03-01 (0 = not given)")
    epochs: int = option(0, "passes over the training data; > 0 sets the step count to "
                            "ceil(epochs * train examples / batch_size) in place of max_steps")
    max_target_tokens: int = option(256, "completion cap in tokens (target + EOS); longer targets are cut and lose EOS")

    def validate(self) -> None:
        super().validate()
        check(self.batch_size >= 1, "batch_size", "be >= 1", self.batch_size)
        check(self.grad_accum_steps >= 0 and (self.grad_accum_steps == 0 or self.batch_size % self.grad_accum_steps == 0),
              "grad_accum_steps", f"be >= 0 and divide batch_size = {self.batch_size}", self.grad_accum_steps)
        if self.grad_accum_steps:
            micro_batch_size = self.batch_size // self.grad_accum_steps
            print(f"note: grad_accum_steps = {self.grad_accum_steps} is now micro_batch_size = {micro_batch_size}; "
                  "the old key will stop loading on 2027-03-01", file=sys.stderr)
            self.micro_batch_size, self.grad_accum_steps = micro_batch_size, 0
        check(self.micro_batch_size >= 0 and (self.micro_batch_size == 0 or self.batch_size % self.micro_batch_size == 0),
              "micro_batch_size", f"be >= 0 and divide batch_size = {self.batch_size}", self.micro_batch_size)
        check(self.epochs >= 0, "epochs", "be >= 0", self.epochs)
        check(self.max_target_tokens >= 1, "max_target_tokens", "be >= 1", self.max_target_tokens)

    def check_world_size(self, world_size: int) -> None:
        share = self.batch_size // world_size
        if self.batch_size % world_size or (self.micro_batch_size and share % self.micro_batch_size):
            raise ConfigError(f"batch_size = {self.batch_size} must split into {world_size} processes' equal shares, "
                              f"each a multiple of micro_batch_size = {self.micro_batch_size}")


def total_steps(cfg: SFTConfig, num_train_examples: int) -> int:
    """Optimizer steps of the run: ceil(epochs * N / batch_size) when epochs > 0, else max_steps."""
    if cfg.epochs > 0:
        return math.ceil(cfg.epochs * num_train_examples / cfg.batch_size)
    return cfg.max_steps


# --------------------------------------------------------------------------
# Examples as token ids, and batches of them
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TokenizedExample:
    """One training or dev example as token ids (tokenized once, before training)."""

    prompt_ids: list[int]       # the prompt exactly as generation sees it
    completion_ids: list[int]   # target tokens, then EOS unless the target was cut
    truncated: bool             # the target was longer than max_target_tokens - 1

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)


def tokenize_example(tokenizer, example: dict, max_target_tokens: int) -> TokenizedExample:
    """Prompt and completion ids of one example.

    The prompt is encoded as `sample_groups` encodes it (its special tokens are
    already in the text), so SFT trains the very token sequence generation
    produces. A target cut at `max_target_tokens` keeps no EOS: the model must
    not learn to stop in the middle of a text.
    """
    prompt_ids = tokenizer(example["prompt"], add_special_tokens=False).input_ids
    target_ids = tokenizer(example["target"], add_special_tokens=False).input_ids
    completion_ids = target_ids + [tokenizer.eos_token_id]
    truncated = len(completion_ids) > max_target_tokens
    return TokenizedExample(prompt_ids, completion_ids[:max_target_tokens], truncated)


@dataclasses.dataclass
class SFTBatch:
    """A micro-batch in a rollout's layout, ready for `completion_logprobs`."""

    prompt_ids: torch.Tensor        # [B, Lp] left-padded
    prompt_mask: torch.Tensor       # [B, Lp] 1 for real prompt tokens
    completion_ids: torch.Tensor    # [B, Lc] right-padded
    completion_mask: torch.Tensor   # [B, Lc] float, 1 for completion tokens (the scored ones)


def collate(examples: list[TokenizedExample], pad_id: int, device: str = "cpu") -> SFTBatch:
    """Pad prompts on the left and completions on the right, as a rollout's tensors are laid out.

    Left-padded prompts end in the same column, so the completion starts at
    column Lp for every row, which is what `completion_logprobs` expects.
    """
    prompt_len = max(len(e.prompt_ids) for e in examples)
    completion_len = max(len(e.completion_ids) for e in examples)
    batch = len(examples)
    prompt_ids = torch.full((batch, prompt_len), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((batch, prompt_len), dtype=torch.long)
    completion_ids = torch.full((batch, completion_len), pad_id, dtype=torch.long)
    completion_mask = torch.zeros((batch, completion_len), dtype=torch.float32)
    for row, example in enumerate(examples):
        p, c = len(example.prompt_ids), len(example.completion_ids)
        prompt_ids[row, prompt_len - p :] = torch.tensor(example.prompt_ids)
        prompt_mask[row, prompt_len - p :] = 1
        completion_ids[row, :c] = torch.tensor(example.completion_ids)
        completion_mask[row, :c] = 1.0
    return SFTBatch(prompt_ids.to(device), prompt_mask.to(device), completion_ids.to(device),
                    completion_mask.to(device))


def micro_batches(examples: list[TokenizedExample], size: int) -> list[list[TokenizedExample]]:
    """Split a batch into micro-batches of `size` rows (0: one micro-batch) of similar lengths.

    Sorting by length first means each micro-batch pads to about its own
    longest example instead of the batch's. The loss is a sum over the batch
    (with one shared normaliser), so the order does not change the gradient.
    """
    ordered = sorted(examples, key=lambda e: e.num_tokens)
    size = size or len(ordered)
    return [ordered[start : start + size] for start in range(0, len(ordered), size)]


# --------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------
def completion_token_logprobs(model, batch: SFTBatch, cfg: SFTConfig) -> torch.Tensor:
    """log pi(y[b, t] | x_b, y[b, <t]) for every completion token, [B, Lc] float32 (0 off the mask).

    Temperature 1: the model's own distribution, not a sampling one. Under
    mixed_precision = "bf16" the forward runs under bfloat16 autocast, as GRPO's does.
    """
    with autocast(cfg):
        return completion_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                                   batch.completion_mask, temperature=1.0,
                                   chunk_tokens=cfg.logprob_chunk_tokens).logprobs


def sft_loss(logprobs: torch.Tensor, completion_mask: torch.Tensor, total_tokens: float) -> torch.Tensor:
    """L = -(1 / N) * sum_{b, t} m[b, t] * logprobs[b, t]  (a scalar).

    logprobs, completion_mask: [B, Lc] for one micro-batch. N = total_tokens is
    the number of completion tokens in the whole optimizer batch, not in this
    micro-batch, so that summing the micro-batches' gradients gives exactly the
    gradient of the batch's mean token NLL.
    """
    return -(logprobs * completion_mask).sum() / total_tokens


def accumulate_gradients(model, batch: list[TokenizedExample], cfg: SFTConfig, pad_id: int,
                         total_tokens: int | None = None) -> float:
    """Backward pass of one optimizer batch in micro-batches of `micro_batch_size` rows; returns its loss L.

    Gradients are added to the parameters' .grad; the caller zeroes and steps.
    Under torchrun `batch` is this rank's share and `total_tokens` counts the
    completion tokens of the whole global batch, so that the ranks' losses
    (and gradients) sum to those of the global batch.
    """
    total_tokens = total_tokens or sum(len(e.completion_ids) for e in batch)
    loss_value = 0.0
    for micro in micro_batches(batch, cfg.micro_batch_size):
        tensors = collate(micro, pad_id, cfg.device)
        loss = sft_loss(completion_token_logprobs(model, tensors, cfg),
                        tensors.completion_mask, total_tokens)
        loss.backward()
        loss_value += loss.item()
    return loss_value


# --------------------------------------------------------------------------
# Dev loss
# --------------------------------------------------------------------------
@torch.no_grad()
def dev_loss(model, dev: list[TokenizedExample], cfg: SFTConfig, pad_id: int) -> np.ndarray:
    """Summed completion-token NLL of each dev example, [n]: nll_i = -sum_t log pi(y[i, t] | ...)."""
    model.eval()
    nll = np.zeros(len(dev))
    # Length-sorted chunks pad little; results are written back in dev order.
    order = sorted(range(len(dev)), key=lambda i: dev[i].num_tokens)
    chunk = cfg.micro_batch_size or cfg.batch_size
    for start in range(0, len(order), chunk):
        rows = order[start : start + chunk]
        tensors = collate([dev[i] for i in rows], pad_id, cfg.device)
        logprobs = completion_token_logprobs(model, tensors, cfg)
        nll[rows] = (-(logprobs * tensors.completion_mask).sum(dim=1)).cpu().numpy()
    return nll


def evaluate(model, tokenizer, dev: list[TokenizedExample], dev_examples: list[dict], cfg: SFTConfig, pad_id: int,
             run_dir: Path, step: int, logger: MetricsLogger) -> dict:
    """The dev loss and, with eval_max_new_tokens > 0, greedy dev outputs and their hacking statistics.

        eval/loss = sum_i nll_i / sum_i n_i,   n_i: example i's completion tokens

    Per-example losses (and outputs) go to eval/step-N.jsonl. The outputs are
    measured as GRPO's are (`eval.dev_outputs.generate_dev_outputs`), so that an
    SFT checkpoint that hedges is seen as one.
    """
    nll = dev_loss(model, dev, cfg, pad_id)
    tokens = np.array([len(e.completion_ids) for e in dev])
    outputs = (generate_dev_outputs(cfg, model, tokenizer, dev_examples, logger, step)
               if cfg.eval_max_new_tokens else None)
    write_eval_rows(run_dir, step, [
        {"id": example["id"], "source": example["source"], "target": example["target"],
         "loss": float(nll[i] / tokens[i]), "tokens": int(tokens[i]), **(outputs.row(i) if outputs else {})}
        for i, example in enumerate(dev_examples)])
    return {"eval/loss": float(nll.sum() / tokens.sum()), **(outputs.metrics if outputs else {})}


# --------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------
@run_folder.holds_run_dir
def train_sft(cfg: SFTConfig) -> Path:
    """Run SFT as configured; returns the run folder.

    Under `torchrun --nproc_per_node N` each rank takes every N-th example of
    the global batch; gradients and the loss are summed over ranks before the
    step, and only rank 0 logs, evaluates and checkpoints.
    """
    place = start_run(cfg)
    cfg = place.cfg
    model, tokenizer = load_model(cfg.model, cfg.dtype, cfg.device, lora=cfg.lora)
    seed_each_rank(cfg, place.rank)
    state = load_resume_state(place, model)
    train_examples, dev_examples = load_task_examples(
        cfg, tokenizer, room=PromptRoom.of(model, "max_target_tokens", cfg.max_target_tokens))
    train = [tokenize_example(tokenizer, e, cfg.max_target_tokens) for e in train_examples]
    dev = [tokenize_example(tokenizer, e, cfg.max_target_tokens) for e in dev_examples]
    pad_id = tokenizer.pad_token_id
    steps = total_steps(cfg, len(train))

    optimizer = make_optimizer(model, cfg)
    scheduler = warmup_cosine(optimizer, cfg.warmup_steps, steps, cfg.min_lr_ratio)
    example_sampler = ExampleSampler(len(train), cfg.seed)
    guard = NonFiniteGuard(cfg.max_skipped_steps)
    checkpoints = Checkpointer(place, model, tokenizer, optimizer, scheduler, example_sampler,
                               data_files=data_digests(place.requested))
    start_step = checkpoints.restore(state)

    logger = begin_logging(place, steps, start_step, bar_keys=("loss", "eval/loss"))
    truncated = sum(e.truncated for e in train)
    logger.message(f"run folder: {place.run_dir}  |  {len(train)} train / {len(dev)} dev examples  |  "
                   f"{steps} steps of {cfg.batch_size}"
                   + (f"  |  {truncated} targets cut at max_target_tokens={cfg.max_target_tokens}" if truncated else "")
                   + (f"  |  {place.world_size} processes" if place.world_size > 1 else ""))
    if dev and start_step == 0 and dist.is_main():
        logger.log(0, evaluate(model, tokenizer, dev, dev_examples, cfg, pad_id, place.run_dir, 0, logger), advance=False)

    for step in range(start_step + 1, steps + 1):
        started = time.perf_counter()
        model.train()
        batch = [train[i] for i in example_sampler.take(cfg.batch_size)]     # the global batch, the same on every rank
        optimizer.zero_grad(set_to_none=True)
        loss = accumulate_gradients(model, batch[place.rank::place.world_size], cfg, pad_id,
                                    total_tokens=sum(len(e.completion_ids) for e in batch))
        dist.all_reduce_gradients(trainable_parameters(model))
        loss = dist.all_reduce_sum(loss)
        try:
            grad_norm, skipped = clip_and_step(model, optimizer, scheduler, loss, cfg.max_grad_norm, guard)
        except TooManySkippedSteps:
            checkpoints.save(step)  # skipped steps changed nothing: these are the last good weights
            logger.close()
            raise
        guard.note_step(step, int(skipped), 1)
        seconds = time.perf_counter() - started
        logger.log(step, {
            "loss": loss,
            "grad_norm": grad_norm,
            "skipped_updates": int(skipped),
            "skipped_updates_total": guard.total,
            "lr": scheduler.get_last_lr()[0],
            "epoch": example_sampler.epochs_done,
            "completion_tokens": sum(len(e.completion_ids) for e in batch),
            "time/step": round(seconds, 4),
            # prompt and completion tokens through the model, padding not counted
            "tokens_per_second": sum(e.num_tokens for e in batch) / max(seconds, 1e-9),
        })

        if dev and is_due(step, cfg.eval_every, steps) and dist.is_main():
            logger.log(step, evaluate(model, tokenizer, dev, dev_examples, cfg, pad_id, place.run_dir, step, logger),
                       advance=False)

        saved = is_due(step, cfg.save_every, steps)
        if saved:
            checkpoints.save(step)
        stop_if_terminated(checkpoints, step, steps, saved)

    logger.close()
    finish_run(place.run_dir)
    return place.run_dir


def main(argv: list[str] | None = None) -> int:
    """`python -m baselines.sft [PRESET.toml] [key=value ...]`; `--help` lists every key."""
    return run_command(argv, SFTConfig, train_sft, __doc__)


if __name__ == "__main__":
    sys.exit(main())
