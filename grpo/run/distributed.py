"""Data-parallel training on torch.distributed (gloo on CPU, nccl on GPU).

Launch with `torchrun --nproc_per_node N -m grpo ...`. Each rank
samples its own prompts and keeps all G completions of a prompt, so group
statistics never cross ranks. What must cross ranks is made explicit here:

* the loss normaliser (number of sequences and completion tokens of the
  global batch) is summed over ranks, so each rank's loss is its share of
  the global-batch loss;
* gradients are summed over ranks after backward, which then equals the
  single-process gradient on the global batch.

With `fsdp = true` the weights are sharded as well (`shard_model`): each rank
holds 1/N of every weight, gradient and optimizer moment, and a decoder
layer's weights are gathered only while it runs. The rules above still
hold: FSDP sums the gradients itself, during backward.

Without torchrun (WORLD_SIZE unset or 1) every helper is a no-op.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from grpo.run.errors import ConfigError


def init(device: str = "cpu") -> tuple[int, int]:
    """Join the process group torchrun describes; returns (rank, world_size)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        if device == "cuda" and "LOCAL_RANK" in os.environ:
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # FSDP and nccl use the current device
        # On GPUs the small CPU tensors (loss normaliser, stop flags, RNG states) still go over gloo.
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if device.startswith("cuda") else "gloo")
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
    """Sum every parameter's gradient over ranks (in place).

    A sharded parameter's gradient (a DTensor) is left alone: FSDP has
    already summed it over ranks in backward, by a reduce-scatter.
    """
    if not is_distributed():
        return
    for parameter in parameters:
        if parameter.grad is not None and not isinstance(parameter.grad, DTensor):
            dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)


def all_ranks(flag: bool) -> bool:
    """True on every rank when `flag` is true on every rank (a loop that must stop everywhere at once)."""
    if not is_distributed():
        return flag
    tensor = torch.tensor([int(flag)])
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return bool(tensor.item())


def all_gather_rows(values: torch.Tensor) -> torch.Tensor:
    """Concatenate a [n] tensor of equal length from every rank (for logging global statistics)."""
    if not is_distributed():
        return values
    gathered = [torch.empty_like(values) for _ in range(world_size())]
    dist.all_gather(gathered, values.contiguous())
    return torch.cat(gathered)


def gather_lists(items: list) -> list:
    """Concatenate a list of picklable objects from every rank, in rank order (for logging sample rows)."""
    if not is_distributed():
        return items
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


def broadcast_from_main(value):
    """Rank 0's `value` (any picklable object) on every rank."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def is_sharded(model) -> bool:
    """Whether `shard_model` has sharded this model: its every forward is then a collective."""
    return isinstance(model, FSDPModule)


def shard_model(model) -> None:
    """Shard the model's weights over all ranks with FSDP2: one unit per decoder layer, then the root.

    A decoder layer's weights are all-gathered just before its forward (and
    again in backward) and freed right after. The root unit holds the rest:
    embeddings, final norm and LM head. It keeps them gathered from its
    forward until backward has reduce-scattered their gradients, because the
    chunked log-prob pass (`grpo.logprobs`) reads the LM-head weight after
    `model.forward` has returned.

    Gradients are summed over ranks, not averaged: each rank's loss is
    already its share of the global-batch loss (the normaliser is summed over
    ranks first), exactly as for `all_reduce_gradients`.

    Every rank must then run the same sequence of forward passes. Build the
    optimizer right after this, before any forward: while the root's weights
    are gathered (from a forward to the end of the next backward),
    `model.parameters()` lists the gathered copies, not the shards.
    """
    body = model.base_model
    if not hasattr(body, "layers"):
        raise ConfigError(f"fsdp = true needs the decoder layers at model.base_model.layers; "
                          f"{type(body).__name__} has none")
    device = next(model.parameters()).device
    mesh = init_device_mesh(device.type, (world_size(),))
    for layer in body.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh, reshard_after_forward=False)
    for unit in (*body.layers, model):
        unit.set_gradient_divide_factor(1.0)
        unit.set_force_sum_reduction_for_comms(True)  # a plain sum: gloo has no pre-scaled one


def barrier() -> None:
    if is_distributed():
        dist.barrier()
