"""Data-parallel training on torch.distributed (gloo on CPU, nccl on GPU).

Launch with `torchrun --nproc_per_node N -m grpo.train ...`. Each rank
samples its own prompts and keeps all G completions of a prompt, so group
statistics never cross ranks. What must cross ranks is made explicit here:

* the loss normaliser (number of sequences and completion tokens of the
  global batch) is summed over ranks, so each rank's loss is its share of
  the global-batch loss;
* gradients are summed over ranks after backward, which then equals the
  single-process gradient on the global batch.

Without torchrun (WORLD_SIZE unset or 1) every helper is a no-op.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init(device: str = "cpu") -> tuple[int, int]:
    """Join the process group torchrun describes; returns (rank, world_size)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return rank(), world_size


def local_device(device: str) -> str:
    """`cuda` means this process's own GPU under torchrun (cuda:LOCAL_RANK)."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Only rank 0 writes logs and checkpoints."""
    return rank() == 0


def all_reduce_sum(value: float) -> float:
    """Sum a Python number over ranks."""
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item())


def all_reduce_gradients(parameters) -> None:
    """Sum every parameter's gradient over ranks (in place)."""
    if not is_distributed():
        return
    for parameter in parameters:
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)


def all_gather_rows(values: torch.Tensor) -> torch.Tensor:
    """Concatenate a [n] tensor of equal length from every rank (for logging global statistics)."""
    if not is_distributed():
        return values
    gathered = [torch.empty_like(values) for _ in range(world_size())]
    dist.all_gather(gathered, values.contiguous())
    return torch.cat(gathered)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()
