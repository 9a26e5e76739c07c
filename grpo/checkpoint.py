"""Checkpoints: atomic writes, the last K kept, everything needed to resume.

A checkpoint is a folder `<run_dir>/checkpoints/step-NNNNNN/` holding
* the model in `save_pretrained` format, or only the LoRA adapter in PEFT's
  layout, plus the tokenizer, so the folder loads with `load_model`;
* `trainer_state.pt`: step, optimizer, scheduler, RNG states, data position
  and anything else the trainer passes in `state`.

It is written to a temporary folder, fsynced, then renamed into place: a run
killed mid-write leaves the previous checkpoint or the new one, never a torn one.

A sharded (FSDP) model is saved whole, in the same layout: every rank takes
part in gathering its weights and optimizer state (`full_weights`,
`optimizer_state`), and rank 0 writes them.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from grpo import distributed as dist
from grpo import lora

STATE_FILE = "trainer_state.pt"
FINAL_LINK = "final"


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Whole tensors, gathered from the shards of every rank onto rank 0's CPU.
GATHERED = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_weights(model) -> dict[str, torch.Tensor] | None:
    """A sharded model's whole state dict on rank 0 (empty elsewhere); None for an unsharded model.

    Every rank must call this: the gather is a collective.
    """
    return get_model_state_dict(model, options=GATHERED) if dist.is_sharded(model) else None


def optimizer_state(model, optimizer) -> dict:
    """The optimizer state to checkpoint; every rank must call this.

    `optimizer.state_dict()`, or for a sharded model the whole state gathered
    on rank 0 and keyed by parameter name, so that it loads at any world size.
    """
    if dist.is_sharded(model):
        return get_optimizer_state_dict(model, optimizer, options=GATHERED)
    return optimizer.state_dict()


def load_optimizer_state(model, optimizer, state: dict) -> None:
    """Load what `optimizer_state` saved; a sharded model keeps its own shard of each moment."""
    if dist.is_sharded(model):
        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(state)


def save_model_folder(model, tokenizer, folder: Path, weights: dict[str, torch.Tensor] | None = None) -> None:
    """The model (or only its LoRA adapter) and the tokenizer, loadable by `load_model`.

    `weights`: the model's whole state dict when its own parameters are shards (`full_weights`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    if lora.has_lora(model):
        lora.save_adapter(model, folder, base_model_name_or_path=model.name_or_path, weights=weights)
    else:
        model.save_pretrained(folder, state_dict=weights)
    tokenizer.save_pretrained(folder)


def rng_state(generator: torch.Generator | None = None) -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "generator": generator.get_state() if generator is not None else None,
    }


def set_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"])


def save_checkpoint(run_dir, step: int, model, tokenizer, state: dict, keep: int = 2,
                    weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Write checkpoint `step` atomically, then delete all but the newest `keep` (`weights`: see save_model_folder)."""
    checkpoints = Path(run_dir) / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    final = checkpoints / f"step-{step:06d}"
    tmp = checkpoints / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_model_folder(model, tokenizer, tmp, weights)
    torch.save({**state, "step": step}, tmp / STATE_FILE)
    _fsync_tree(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_tree(checkpoints)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders are ignored)."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step-*") if (p / STATE_FILE).exists())


def latest_checkpoint(run_dir) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_trainer_state(checkpoint: Path) -> dict:
    # Our own file, holding optimizer state and RNG tuples: not weights-only.
    return torch.load(Path(checkpoint) / STATE_FILE, map_location="cpu", weights_only=False)


def load_policy_weights(model, checkpoint: Path) -> None:
    """Copy a checkpoint's trained weights into an already-built policy.

    The policy is rebuilt from the run's starting model first, so that the
    reference (the starting weights, or the adapter-disabled base) is exactly
    what it was before the interruption. With FSDP this comes before
    sharding: every rank reads the whole checkpoint and keeps its shard.
    """
    checkpoint = Path(checkpoint)
    if lora.has_lora(model):
        lora.load_adapter_weights(model, checkpoint)
        return
    from transformers import AutoModelForCausalLM

    trained = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=next(model.parameters()).dtype)
    model.load_state_dict(trained.state_dict())


def link_final(run_dir, checkpoint: Path) -> Path:
    """Point `<run_dir>/final` at `checkpoint`: a stable name for the run's result.

    A relative symlink, replaced atomically, so the run folder can be moved.
    """
    run_dir = Path(run_dir)
    link = run_dir / FINAL_LINK
    tmp = run_dir / f".{FINAL_LINK}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(os.path.relpath(checkpoint, run_dir))
    os.replace(tmp, link)
    return link
