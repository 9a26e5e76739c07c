"""What every training loop here shares: a run's processes, folder, data, optimizer, resume and save.

GRPO (`grpo.trainer`) and the SFT baseline (`baselines.sft`) differ in their
step and nothing else: both go through these functions, so they seed, claim
their run folder, resume and checkpoint in one way.

    place = start_run(cfg)                        ranks, seeds, run folder, checkpoint to resume from (a RunPlace)
    state = load_resume_state(place, model)       its trainer state, checked, and its weights
    checkpoints = Checkpointer(place, ...)        restores (`restore(state)`) and saves (`save(step)`)
    logger = begin_logging(place, ...)            config.toml, metrics.jsonl, the progress bar
    ... the loop ...
    finish_run(place.run_dir)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from grpo.run import checkpoint as ckpt
from grpo.run import distributed as dist
from grpo.run import run_folder
from grpo.run.config import current_name, save_config, to_dict
from grpo.run.data import keep_short_prompts, make_examples, read_jsonl, split_path
from grpo.run.errors import CheckpointError, ConfigError, DataError
from grpo.run.guards import NonFiniteGuard, NonFiniteWeights
from grpo.run.metrics import MetricsLogger


# --------------------------------------------------------------------------
# Processes, seeds and the run folder
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class RunPlace:
    """Where and as what this process trains."""

    cfg: object                 # the config with this rank's device ("cuda:1")
    requested: object           # the config as given: what config.toml and checkpoints record ("cuda")
    rank: int
    world_size: int
    run_dir: Path
    resume_from: Path | None    # the verified checkpoint to continue, or None for a new run


def start_run(cfg) -> RunPlace:
    """Threads, process group, seeds and the run folder: the first lines of every training loop.

    torch is seeded alike on every rank, so that the model and its LoRA
    initialisation are the same everywhere; numpy and Python's `random` (which
    a custom reward may use) per rank.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world_size = dist.init(cfg.device)
    cfg.check_world_size(world_size)
    requested = cfg
    if dist.local_device(cfg.device) != cfg.device:
        cfg = dataclasses.replace(cfg, device=dist.local_device(cfg.device))
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed + rank)
    random.seed(cfg.seed + rank)
    run_dir, resume_from = prepare_run_dir(cfg)
    return RunPlace(cfg, requested, rank, world_size, run_dir, resume_from)


def seed_each_rank(cfg, rank: int) -> None:
    """Give each rank its own torch stream (dropout masks, minibatch order), once the model is built.

    Called after the model and its LoRA adapters exist, whose initialisation
    must be the same on every rank (`start_run` seeds torch alike for that).
    """
    torch.manual_seed(cfg.seed + rank)


def resume_checkpoint(cfg, run_dir: Path) -> Path | None:
    """The verified checkpoint `resume` names: the run's newest intact one for "auto", a folder, or None."""
    if cfg.resume == "auto":
        # With overwrite=true already given, the way out is to leave resume=auto off.
        advice = ("to start the run again, run the same command without resume=auto (overwrite=true replaces the "
                  "run once the new one has a checkpoint)" if cfg.overwrite else "start again with overwrite=true")
        return ckpt.newest_intact_checkpoint(run_dir, advice)
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
    if "tensorboard" in cfg.report_to:
        run_folder.refuse_unwritable(run_dir / "tensorboard", "the TensorBoard folder")
    resume_from = resume_checkpoint(cfg, run_dir)
    holds_run = (run_dir / "metrics.jsonl").exists() or (run_dir / "checkpoints").exists()
    if cfg.resume == "auto" and not holds_run:
        print(f"resume=auto: no run to resume in '{run_dir}'; starting fresh")
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


def begin_logging(place: RunPlace, total_steps: int, start_step: int, bar_keys: tuple[str, ...]) -> MetricsLogger:
    """Everything is loaded: take over the run folder, write config.toml and open metrics.jsonl (rank 0 writes).

    A resumed run repeats the steps after its checkpoint: their old metric lines go.
    """
    if dist.is_main():
        run_folder.start(place.run_dir)  # an old run being replaced moves aside only now
        save_config(place.requested, place.run_dir / "config.toml")
    return MetricsLogger(place.run_dir, total_steps, bar_keys=bar_keys, enabled=dist.is_main(),
                         initial_step=start_step, truncate_after=start_step if place.resume_from else None,
                         report_to=place.cfg.report_to)


def finish_run(run_dir: Path) -> None:
    """Point `<run_dir>/final` at the last checkpoint and say where it is (rank 0)."""
    if dist.is_main():
        final = ckpt.link_final(run_dir, ckpt.latest_checkpoint(run_dir))
        print(f"done: {run_dir}  (final checkpoint: {final} -> {final.resolve().name})")


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class PromptRoom:
    """How many prompt tokens the model has positions for: its position limit less what is generated after them."""

    positions: int          # the model's max_position_embeddings
    completion_key: str     # the config key of the tokens after the prompt ("max_new_tokens")
    completion_tokens: int

    @property
    def tokens(self) -> int:
        return self.positions - self.completion_tokens

    @classmethod
    def of(cls, model, completion_key: str, completion_tokens: int) -> PromptRoom | None:
        """The model's room (None when its config names no position limit); ConfigError when none is left."""
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if not isinstance(positions, int) or positions <= 0:
            return None
        if completion_tokens >= positions:
            raise ConfigError(f"{completion_key} = {completion_tokens} leaves no room for a prompt: the model has "
                              f"{positions} positions (max_position_embeddings)")
        return cls(positions, completion_key, completion_tokens)


def refuse_prompts_beyond(room: PromptRoom, examples: list[dict], tokenizer, path: Path,
                          max_prompt_tokens: int = 0) -> None:
    """DataError naming the file and line of the first prompt longer than the model can take.

    Such a prompt fails mid-run (or asks for terabytes); `max_prompt_tokens`
    is the way to leave such examples out, and those it leaves out pass here. Only prompts with more UTF-8 bytes
    than the room are tokenized: a token covers at least one byte, and the few
    a tokenizer adds are allowed for.
    """
    spare = 16  # tokens a tokenizer may add that cover no byte (a dummy prefix)
    for index, example in enumerate(examples):
        if len(example["prompt"].encode("utf-8")) + spare <= room.tokens:
            continue
        tokens = len(tokenizer(example["prompt"], add_special_tokens=False).input_ids)
        if tokens > room.tokens and not 0 < max_prompt_tokens < tokens:
            raise DataError(f"{path}:{data_line(path, index)}: the prompt has {tokens} tokens; the model takes "
                            f"{room.tokens} ({room.positions} positions less {room.completion_key} = "
                            f"{room.completion_tokens}). Shorten that line, or set max_prompt_tokens = {room.tokens} "
                            "to leave such examples out")


def data_line(path: Path, index: int) -> int | str:
    """The line number of the `index`-th record of a JSONL file (blank lines hold none, as in read_jsonl)."""
    with open(path, encoding="utf-8-sig") as f:
        numbers = (number for number, line in enumerate(f, start=1) if line.strip())
        return next((number for i, number in enumerate(numbers) if i == index), "?")


def load_task_examples(cfg, tokenizer, room: PromptRoom | None = None) -> tuple[list[dict], list[dict]]:
    """Train and dev examples of the configured task.

    With `max_prompt_tokens` set, examples with longer prompts are left out
    (and counted on stdout): truncating a source sentence would change the task.
    A prompt the model has no positions for (`room`) stops the run here, naming its line.
    """
    train_file = split_path(cfg.data, "train")
    if train_file is None:
        raise DataError(f"no training data: '{cfg.data}' is neither a JSONL file nor a folder with train.jsonl")
    common = dict(task=cfg.task, source_lang=cfg.source_lang, target_lang=cfg.target_lang,
                  data_langs=cfg.data_langs, prompt_format=cfg.prompt_format)

    def load(path, limit):
        examples = make_examples(read_jsonl(path), tokenizer, **common)
        if room is not None:
            refuse_prompts_beyond(room, examples, tokenizer, path, cfg.max_prompt_tokens)
        examples = keep_short_prompts(examples, tokenizer, cfg.max_prompt_tokens, path)
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


@dataclass
class ExampleSampler:
    """Shuffled passes over the training examples (GRPO's prompts, SFT's pairs); its position is resume state."""

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

    @property
    def epochs_done(self) -> float:
        """Passes over the data so far, as a fraction (logged as `epoch`)."""
        return self.epoch + self.index / self.num_examples

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load(self, state: dict) -> None:
        self.epoch, self.index = state["epoch"], state["index"]
        self.order = self._order(self.epoch)


def write_eval_rows(run_dir: Path, step: int, rows: list[dict]) -> None:
    """One dev example a line in eval/step-N.jsonl."""
    out_dir = run_dir / "eval"
    out_dir.mkdir(exist_ok=True)
    with open(out_dir / f"step-{step:06d}.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------
# Optimizer, schedule and one optimizer step
# --------------------------------------------------------------------------
def trainable_parameters(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(model, cfg):
    return torch.optim.AdamW(
        trainable_parameters(model), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay
    )


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


def check_weights_finite(parameters: list[torch.nn.Parameter], lr: float) -> None:
    """NonFiniteWeights (on every rank) when an optimizer step left any weight inf or NaN: an lr far too large."""
    finite = bool(torch.stack([torch.isfinite(p).all() for p in parameters]).all()) if parameters else True
    if dist.all_reduce_sum(float(not finite)):
        raise NonFiniteWeights(f"an optimizer step left weights that are inf or NaN (lr = {lr:g}); nothing trained "
                               "from them can be used, and they are not saved. Start again with a lower lr")


def clip_and_step(model, optimizer, scheduler, loss_value: float, max_grad_norm: float,
                  guard: NonFiniteGuard) -> tuple[float, bool]:
    """Clip the gradient's global norm, then step; a non-finite step is skipped and counted by `guard`.

    A NaN or inf would poison AdamW's moments for good, so such a step only
    advances the schedule; too many in a row raise TooManySkippedSteps. A step
    that leaves a weight non-finite raises NonFiniteWeights.
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
        check_weights_finite(trainable_parameters(model), scheduler.get_last_lr()[0])
    scheduler.step()
    guard.record(skipped)
    return grad_norm, skipped


# --------------------------------------------------------------------------
# Resume and save
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
    A key missing from an older checkpoint's config had its default value then;
    a renamed key or value (config.RENAMED_KEYS, RENAMED_VALUES) is read under its current name.
    """
    def default(f):
        return f.default_factory() if f.default is dataclasses.MISSING else f.default

    saved_config = dict(current_name(key, value) for key, value in saved_config.items())

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


def data_digests(cfg) -> dict[str, dict]:
    """Path, size and SHA-256 of the task's train and dev files, as a checkpoint records them for its resume."""
    digests = {}
    for split in ("train", "dev"):
        path = split_path(cfg.data, split)
        if path is not None and path.is_file():
            stat = path.stat()
            digests[split] = {"path": str(path), "size": stat.st_size,
                              "sha256": _file_digest(str(path), stat.st_size, stat.st_mtime_ns)}
    return digests


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """A data file's SHA-256, hashed once per version of the file (a resume asks twice: to check and to record)."""
    return ckpt.file_sha256(Path(path))


def check_data_unchanged(cfg, recorded: dict | None, checkpoint: Path) -> None:
    """Refuse to continue a checkpoint on train or dev data whose content changed since it was written.

    The config check sees only the `data` string: a file edited in place would
    be trained on silently. A checkpoint from before data was recorded is not checked.
    """
    if recorded is None:
        return
    now = data_digests(cfg)
    for split in sorted(set(recorded) | set(now)):
        then, current = recorded.get(split), now.get(split)
        if then is not None and current is not None and then["sha256"] == current["sha256"]:
            continue
        path = (current or then)["path"]
        if current is None:
            how = "is gone"
        elif then is None:
            how = "is new"
        elif then["size"] != current["size"]:
            how = f"has {current['size']} bytes, {then['size']} when the checkpoint was written"
        else:
            how = "has other content than when the checkpoint was written (same size, another SHA-256)"
        raise ConfigError(f"cannot resume from {checkpoint}: the {split} data '{path}' {how}. Put the file back as "
                          "it was, or start a new run on the new data")


def load_resume_state(place: RunPlace, model) -> dict | None:
    """The checkpoint's trainer state, checked against this run's config, with its weights loaded into `model`.

    None for a new run. Call it before sharding the model: every rank reads the whole weights.
    """
    if place.resume_from is None:
        return None
    state = ckpt.load_trainer_state(place.resume_from)
    check_resume_matches(place.requested, state["config"], place.resume_from)
    check_data_unchanged(place.requested, state.get("data_files"), place.resume_from)
    ckpt.load_policy_weights(model, place.resume_from)
    return state


@dataclass
class Checkpointer:
    """Restores and saves all a run needs to continue as if never stopped.

    That is the weights, the optimizer's moments, the schedule, the sampler's
    position and every rank's RNG states (each rank draws its own samples).
    """

    place: RunPlace
    model: torch.nn.Module
    tokenizer: object
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    example_sampler: ExampleSampler
    generator: torch.Generator | None = None   # the sampling generator, when the loop draws from its own
    data_files: dict | None = None             # `data_digests` of the data the run loaded, for its resume

    def restore(self, state: dict | None) -> int:
        """Load `load_resume_state`'s state (None: a new run); returns the step to continue after.

        Each rank takes its own RNG states back. A rank the checkpoint holds none
        for (a run resumed on more processes than it was saved from) keeps the
        seeds it was given at start.
        """
        if state is None:
            return 0
        ckpt.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.example_sampler.load(state["sampler"])
        # Older SFT checkpoints hold one RNG state, shared by every rank.
        rng_per_rank = state["rng"] if isinstance(state["rng"], list) else [state["rng"]] * self.place.world_size
        if self.place.rank < len(rng_per_rank):
            ckpt.set_rng_state(rng_per_rank[self.place.rank], self.generator)
        return state["step"]

    def save(self, step: int) -> None:
        """Write checkpoint `step` (rank 0; every rank takes part in gathering its state)."""
        rng = [None] * self.place.world_size
        if dist.is_distributed():
            torch.distributed.all_gather_object(rng, ckpt.rng_state(self.generator))
        else:
            rng = [ckpt.rng_state(self.generator)]
        weights, optimizer_state = ckpt.full_weights(self.model), ckpt.optimizer_state(self.model, self.optimizer)
        if dist.is_main():
            state = {"optimizer": optimizer_state, "scheduler": self.scheduler.state_dict(),
                     "sampler": self.example_sampler.state(), "rng": rng, "config": to_dict(self.place.requested),
                     "data_files": self.data_files}
            ckpt.save_checkpoint(self.place.run_dir, step, self.model, self.tokenizer, state,
                                 keep=self.place.cfg.keep_checkpoints, weights=weights)
            run_folder.commit(self.place.run_dir)
        dist.barrier()


def stop_if_terminated(checkpoints: Checkpointer, step: int, last_step: int, saved: bool) -> None:
    """After a step: when SIGTERM came (on any rank), save this step unless it was just saved, and raise Terminated.

    Every rank calls this, so that all of them stop after the same step. After
    the last step there is nothing to stop: the run finishes as usual.
    """
    if step == last_step or not dist.all_reduce_sum(float(run_folder.sigterm_received())):
        return
    if not saved:
        checkpoints.save(step)
    raise run_folder.Terminated(f"stopped by SIGTERM after step {step}; continue from "
                                f"{ckpt.latest_checkpoint(checkpoints.place.run_dir)} with resume=auto")


def is_due(step: int, every: int, last_step: int) -> bool:
    """Whether a periodic action (dev evaluation, checkpoint) falls on `step`: every N steps and at the end."""
    return bool(every and step % every == 0) or step == last_step


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------
class PhaseTimer:
    """Wall-clock seconds per phase of a step, logged as time/<phase>, and, where a phase's floor on this machine
    is noted (`grpo.run.utilisation`), the share of it the phase achieved, logged as utilisation/<phase>."""

    def __init__(self):
        self.elapsed: dict[str, float] = {}
        self.floors: dict[str, float] = {}

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

    def note_floor(self, phase: str, seconds: float) -> None:
        """The seconds `phase` would have taken at the machine's limit (summed over the step)."""
        self.floors[phase] = self.floors.get(phase, 0.0) + seconds

    def utilisation(self) -> dict[str, float]:
        """floor / measured seconds of each phase with a floor: 1.0 is the machine's limit."""
        return {f"utilisation/{phase}": round(floor / max(self.elapsed.get(phase, 0.0), 1e-9), 4)
                for phase, floor in self.floors.items()}
