"""One policy update on a fixed global batch, run by 1 process or by each of N torchrun processes.

    python tests/dist_worker.py OUT.pt AGGREGATION
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_worker.py OUT.pt AGGREGATION

Every process builds the same global rollout from the same seed and keeps
its own share of the groups; rank 0 saves the updated weights.
"""

import sys

import torch

from grpo import distributed as dist
from grpo import trainer
from grpo.config import GRPOConfig, load_config
from grpo.models import load_model
from grpo.rollout import Rollout, sample_groups

PROMPTS, GROUP = 4, 4


def main(out_path: str, aggregation: str) -> None:
    rank, world = dist.init("cpu")
    torch.set_num_threads(1)
    model, tokenizer = load_model("tiny-random-llama")
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
               for text in ("one", "two words", "three words here", "and a fourth, longer prompt")]
    rollout = sample_groups(model, tokenizer, prompts, GROUP, 6, temperature=1.0,
                            generator=torch.Generator().manual_seed(0))
    advantages = torch.randn(PROMPTS * GROUP, generator=torch.Generator().manual_seed(1))

    rows = slice(rank * PROMPTS * GROUP // world, (rank + 1) * PROMPTS * GROUP // world)
    local = Rollout(rollout.prompt_ids[rows], rollout.prompt_mask[rows], rollout.completion_ids[rows],
                    rollout.completion_mask[rows], rollout.truncated[rows])
    cfg = load_config(GRPOConfig, overrides=dict(prompts_per_step=PROMPTS // world, group_size=GROUP,
                                                 max_new_tokens=6, loss_aggregation=aggregation, beta=0.0,
                                                 max_grad_norm=1.0))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    torch.manual_seed(0)
    trainer.policy_update(model, optimizer, scheduler, local, local.completion_mask, advantages[rows],
                          None, None, cfg)
    if dist.is_main():
        torch.save(model.state_dict(), out_path)
    dist.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
