"""One policy update on a fixed global batch, run by 1 process or by each of N torchrun processes.

    python tests/dist_worker.py OUT.pt AGGREGATION [lora]
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_worker.py OUT.pt AGGREGATION [fsdp] [lora]

Every process builds the same global rollout from the same seed and keeps
its own share of the groups; rank 0 saves the updated weights (whole, also
when `fsdp` shards them) and the gradient norm of the update. With `fsdp`
the rollout is sampled with the sharded model too. `lora` trains adapters
on q_proj and v_proj instead of all weights.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_worker.py OUT.pt advantages

Each process scores its own groups of GLOBAL_REWARDS; rank 0 saves the
advantages of every row as the trainer computes them (scale_rewards = "batch").
"""

import sys

import torch

from grpo import trainer
from grpo.config import GRPOConfig
from grpo.rollout import Rollout, sample_groups
from grpo.run import checkpoint as ckpt
from grpo.run import distributed as dist
from grpo.run.config import load_config
from grpo.run.models import load_model
from grpo.run.training_run import trainable_parameters

PROMPTS, GROUP = 4, 4
# Below every case's gradient norm, so clipping acts and needs the global norm; the SGD step
# then moves the weights by a vector of norm LR * MAX_GRAD_NORM = 1.
MAX_GRAD_NORM = 0.05
LR = 1 / MAX_GRAD_NORM
LORA = {"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def check_ranks_stop_sampling_together(model, tokenizer) -> None:
    """Rank 0's completions all end at their first token, the others' run to the cap.

    With sharded weights every forward is a collective, so rank 0 must keep
    stepping (padding) until every rank is done, or the ranks' all-gathers
    would no longer pair up.
    """
    saved = model.generation_config.eos_token_id
    if dist.rank() == 0:
        model.generation_config.eos_token_id = list(range(len(tokenizer)))  # every token ends a completion
    rollout = sample_groups(model, tokenizer, ["a prompt"], 2, 5, generator=torch.Generator().manual_seed(0))
    model.generation_config.eos_token_id = saved
    expected = 1 if dist.rank() == 0 else 5
    assert rollout.completion_lengths.tolist() == [expected, expected], rollout.completion_lengths


# Rank 0's two groups spread little, rank 1's a lot: each rank's own std is far from the batch's. One reward failed.
GLOBAL_REWARDS = torch.tensor([0.50, 0.52, 0.48, 0.50, 0.49, 0.51, 0.50, float("nan"),
                               0.0, 1.0, 0.2, 0.9, 1.0, 0.0, 0.1, 0.8])


def advantages_main(out_path: str) -> None:
    rank, world = dist.init("cpu")
    rows = slice(rank * PROMPTS * GROUP // world, (rank + 1) * PROMPTS * GROUP // world)
    cfg = load_config(GRPOConfig, overrides={"prompts_per_step": PROMPTS // world, "group_size": GROUP,
                                                 "scale_rewards": "batch"})
    rewards = GLOBAL_REWARDS[rows]
    advantages, zero_std = trainer.global_group_advantages(rewards, torch.isfinite(rewards), cfg)
    every_row = dist.all_gather_rows(advantages)
    if dist.is_main():
        torch.save({"advantages": every_row, "zero_std": zero_std}, out_path)
    shutdown()


def main(out_path: str, aggregation: str, fsdp: bool, lora: bool) -> None:
    rank, world = dist.init("cpu")
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the same LoRA initialisation in every process
    model, tokenizer = load_model("tiny-random-llama", lora=LORA if lora else None)
    if fsdp:
        dist.shard_model(model)
    # Built before any forward: with FSDP it must hold the shards, not the root's gathered weights.
    optimizer = torch.optim.SGD(trainable_parameters(model), lr=LR)
    if fsdp:
        check_ranks_stop_sampling_together(model, tokenizer)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
               for text in ("one", "two words", "three words here", "and a fourth, longer prompt")]
    rollout = sample_groups(model, tokenizer, prompts, GROUP, 6, temperature=1.0,
                            generator=torch.Generator().manual_seed(0))
    advantages = torch.randn(PROMPTS * GROUP, generator=torch.Generator().manual_seed(1))
    # Uneven scored lengths, 1 to 6 tokens, shorter in rank 0's rows: token and sequence aggregation
    # then differ, and the token normaliser must count the tokens of both ranks.
    lengths = 1 + torch.arange(PROMPTS * GROUP) * 6 // (PROMPTS * GROUP)
    loss_mask = rollout.completion_mask * (torch.arange(rollout.completion_ids.shape[1]) < lengths.unsqueeze(1))

    rows = slice(rank * PROMPTS * GROUP // world, (rank + 1) * PROMPTS * GROUP // world)
    local = Rollout(rollout.prompt_ids[rows], rollout.prompt_mask[rows], rollout.completion_ids[rows],
                    rollout.completion_mask[rows], rollout.truncated[rows], rollout.sampler_logprobs[rows])
    cfg = load_config(GRPOConfig, overrides={"prompts_per_step": PROMPTS // world, "group_size": GROUP,
                                                 "max_new_tokens": 6, "loss_aggregation": aggregation, "beta": 0.0,
                                                 "max_grad_norm": MAX_GRAD_NORM, "fsdp": fsdp})
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    torch.manual_seed(0)
    stats = trainer.policy_update(model, optimizer, scheduler, local, loss_mask[rows], advantages[rows],
                                  None, None, cfg)
    weights = ckpt.full_weights(model) if fsdp else model.state_dict()
    if dist.is_main():
        torch.save({"weights": weights, "grad_norm": stats.grad_norm}, out_path)
    shutdown()


def shutdown() -> None:
    if dist.is_distributed():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    if sys.argv[2] == "advantages":
        advantages_main(sys.argv[1])
    else:
        main(sys.argv[1], sys.argv[2], fsdp="fsdp" in sys.argv[3:], lora="lora" in sys.argv[3:])
