"""Checkpoints: atomic writes, the last K kept, everything needed to resume.

A checkpoint is a folder `<run_dir>/checkpoints/step-NNNNNN/` holding
* the model in `save_pretrained` format, or only the LoRA adapter in PEFT's
  layout, plus the tokenizer, so the folder loads with `load_model`;
* `trainer_state.pt`: step, optimizer, scheduler, RNG states, data position
  and anything else the trainer passes in `state`, as tensors and plain
  Python values only: it is read with `torch.load(weights_only=True)`, so a
  state file that would run code when unpickled is refused, not run;
* `manifest.json`: the size and SHA-256 of every other file, checked before
  a resume (`verify_checkpoint`), so that a file damaged after the save
  (truncated, emptied, overwritten in place) is caught instead of trained on.

It is written to a temporary folder, manifest last, fsynced, then renamed
into place: a run killed mid-write leaves the previous checkpoint or the new
one, never a torn one. A disk that fills up mid-write stops the run with a
`CheckpointError` saying so; the previous checkpoint is left as it was.

A sharded (FSDP) model is saved whole, in the same layout: every rank takes
part in gathering its weights and optimizer state (`full_weights`,
`optimizer_state`), and rank 0 writes them.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from grpo.run import distributed as dist
from grpo.run import lora
from grpo.run.errors import CheckpointError

STATE_FILE = "trainer_state.pt"
# The trainer state's "format": 2 since checkpoints always carry a manifest and hold only plain values.
# A checkpoint without one (format 1) predates manifests; a format-2 checkpoint without a manifest is damaged.
STATE_FORMAT = 2
MANIFEST_FILE = "manifest.json"
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
    """Every RNG state of this process, as tensors and plain values (what a weights-only load reads back)."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()  # an ndarray would need numpy's unpickler
    return {
        "python": random.getstate(),
        "numpy": numpy_state,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "generator": generator.get_state() if generator is not None else None,
    }


def set_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    """Put back what `rng_state` saved (numpy's state as a dict, or as the tuple older checkpoints hold)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"])


def save_checkpoint(run_dir, step: int, model, tokenizer, state: dict, keep: int = 2,
                    weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Write checkpoint `step` atomically, then delete all but the newest `keep` (`weights`: see save_model_folder).

    Raises CheckpointError when the disk fills up; the partial folder is removed and older checkpoints are untouched.
    """
    checkpoints = Path(run_dir) / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    final = checkpoints / f"step-{step:06d}"
    tmp = checkpoints / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_model_folder(model, tokenizer, tmp, weights)
        torch.save({**state, "step": step, "format": STATE_FORMAT}, tmp / STATE_FILE)
        write_manifest(tmp)
        _fsync_tree(tmp)
    except Exception as error:
        if not disk_full(error, checkpoints):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"disk full: checkpoint {final} could not be written ({_first_line(error)}); "
                              f"{what_is_left(run_dir)}") from None
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_tree(checkpoints)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


# Below this much free space a failed write counts as a full disk: torch.save reports one as
# "unexpected pos N vs M", with no errno to go by.
LOW_DISK_BYTES = 64 * 2**20


def disk_full(error: BaseException, folder: Path) -> bool:
    """Whether a failed write ran out of space: ENOSPC or EDQUOT anywhere in its chain, or (almost) no space left."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(cause):  # safetensors and others wrap the OS error in text
            return True
        cause = cause.__cause__ or cause.__context__
    return shutil.disk_usage(folder).free < LOW_DISK_BYTES


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


# --------------------------------------------------------------------------
# Integrity: a manifest of sizes and SHA-256 digests
# --------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sha256_of_files(paths: list[Path]) -> list[str]:
    """SHA-256 hex digests of files, hashed in parallel threads (hashlib releases the GIL while it hashes).

    A checkpoint is mostly two large files (weights, optimizer state), so this
    takes about as long as hashing the largest one alone.
    """
    with ThreadPoolExecutor(max_workers=max(1, min(len(paths), os.cpu_count() or 1))) as pool:
        return list(pool.map(file_sha256, paths))


def write_manifest(folder: Path) -> None:
    """manifest.json: {"files": {relative path: {"size": bytes, "sha256": hex digest}}} of every other file."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != MANIFEST_FILE)
    entries = {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": digest}
               for p, digest in zip(files, sha256_of_files(files))}
    (Path(folder) / MANIFEST_FILE).write_text(json.dumps({"files": entries}, indent=1) + "\n", encoding="utf-8")


def verify_checkpoint(folder: Path) -> bool:
    """Check every file against the manifest; CheckpointError naming the first file that differs.

    Sizes are compared first (a truncated or emptied file costs no hashing),
    then digests. Returns False for a checkpoint written before manifests
    existed (nothing to check it against), True when it verified. A
    checkpoint whose state says it was written with a manifest and has none
    is damaged.
    """
    folder = Path(folder)
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.exists():
        if not (folder / STATE_FILE).exists():
            raise CheckpointError(f"'{folder}' is not a checkpoint: it has neither {MANIFEST_FILE} nor {STATE_FILE}")
        if load_trainer_state(folder).get("format", 1) >= 2:
            raise CheckpointError(f"checkpoint {folder} is damaged: {MANIFEST_FILE} is missing (every checkpoint "
                                  "written since manifests exist has one)")
        return False
    try:
        files = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
        expected = {name: (int(entry["size"]), str(entry["sha256"])) for name, entry in files.items()}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"checkpoint {folder} is damaged: {MANIFEST_FILE} cannot be read "
                              f"({_first_line(error)})") from None
    for name, (size, _) in expected.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint {folder} is damaged: {name} is missing")
        if path.stat().st_size != size:
            raise CheckpointError(f"checkpoint {folder} is damaged: {name} has {path.stat().st_size} bytes, "
                                  f"{size} when it was written")
    names = list(expected)
    for name, actual in zip(names, sha256_of_files([folder / name for name in names])):
        if actual != expected[name][1]:
            raise CheckpointError(f"checkpoint {folder} is damaged: {name} has changed since it was written "
                                  "(its SHA-256 differs from the manifest)")
    return True


def list_checkpoints(run_dir) -> list[Path]:
    """Checkpoints of a run, oldest first: every step-N folder, since only whole ones are renamed into place.

    Temporary folders are ignored. Whether a checkpoint is still intact is `verify_checkpoint`'s question.
    """
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step-*") if p.is_dir())


def latest_checkpoint(run_dir) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


UNVERIFIED_NOTE = ("checkpoint {checkpoint} has no " + MANIFEST_FILE
                   + " (it predates checkpoint manifests), so it is used without verifying it")


def newest_intact_checkpoint(run_dir, advice: str = "start again with overwrite=true") -> Path | None:
    """The newest checkpoint of a run that verifies (`resume=auto`), printing each damaged one it passes over.

    None when the run has no checkpoint; CheckpointError, ending with `advice`, when it has some and none verifies.
    """
    damaged = []
    for checkpoint in reversed(list_checkpoints(run_dir)):
        try:
            verified = verify_checkpoint(checkpoint)
        except CheckpointError as error:
            print(f"{error}; passing over it")
            damaged.append(f"{checkpoint.name}: {str(error).split(': ', 1)[-1]}")
            continue
        if damaged:
            print(f"resuming from {checkpoint}, the newest checkpoint that verifies")
        if not verified:
            print(UNVERIFIED_NOTE.format(checkpoint=checkpoint))
        return checkpoint
    if damaged:
        raise CheckpointError(f"no checkpoint of '{run_dir}' verifies ({'; '.join(damaged)}); {advice}")
    return None


def what_is_left(run_dir, fix: str = "free space") -> str:
    """After a failed write: which checkpoint is intact, and how to go on once the user did `fix`."""
    previous = latest_checkpoint(run_dir) if Path(run_dir).is_dir() else None
    if previous is None:
        return f"no checkpoint had been written yet: {fix}, then start again with overwrite=true"
    return f"the previous checkpoint {previous} is intact: {fix}, then continue with resume=auto"


# Besides tensors and plain values, the one thing a trainer state may hold: numpy arrays, which checkpoints
# written before the RNG states were stored as lists carry (numpy's RNG key).
OLDER_STATE_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_trainer_state(checkpoint: Path) -> dict:
    """The trainer state of a checkpoint; CheckpointError naming the file if it is missing, unreadable or unsafe.

    Read weights-only: unpickling may build tensors and plain values (and the
    numpy arrays of OLDER_STATE_GLOBALS) and call nothing else. A resume
    folder can come from anywhere, and its manifest proves nothing, since
    whoever edits the state file can rewrite the manifest too.
    """
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {checkpoint} is damaged: {STATE_FILE} is missing")
    try:
        with torch.serialization.safe_globals(OLDER_STATE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        unsafe = _unsafe_globals(path)
        if not unsafe:
            raise CheckpointError(f"checkpoint {checkpoint} is damaged: {STATE_FILE} cannot be read "
                                  f"({_first_line(error)})") from None
        raise CheckpointError(f"checkpoint {checkpoint}: {STATE_FILE} refers to {', '.join(unsafe)}, which a "
                              "trainer state never holds; it was not loaded, since unpickling it could run code. "
                              "Resume only from checkpoints this program wrote") from None
    except Exception as error:  # torch reports a torn file as RuntimeError, EOFError, KeyError...
        raise CheckpointError(f"checkpoint {checkpoint} is damaged: {STATE_FILE} cannot be read "
                              f"({_first_line(error)})") from None


def _unsafe_globals(path: Path) -> list[str]:
    """The functions and classes a state file names beyond what a weights-only load allows (none when unreadable)."""
    try:
        allowed = {f"{g.__module__}.{g.__qualname__}" for g in OLDER_STATE_GLOBALS}
        return [name for name in torch.serialization.get_unsafe_globals_in_checkpoint(path) if name not in allowed]
    except Exception:  # noqa: BLE001 - a file too torn to list is reported as damaged
        return []


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

    try:
        trained = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=next(model.parameters()).dtype)
    except Exception as error:  # OSError for a missing file, SafetensorError or others for a torn one
        raise CheckpointError(f"checkpoint {checkpoint} is damaged: its model weights cannot be read "
                              f"({_first_line(error)})") from None
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
