"""Command line: `python -m grpo [PRESET.toml] [key=value ...]` trains GRPO with the paper's reward.

    python -m grpo configs/mt.toml
    python -m grpo configs/mt.toml model=gemma3-270m max_steps=50 out_dir=runs/gemma
    python -m grpo --help        # every key with its default

This is where the engine (`grpo.trainer.train`) and the paper's reward
(`rewards.build_reward`) are put together: the trainer takes any reward
object, and this module passes it the one the config describes (`grpo.config.build_reward_from_config`).
"""

from __future__ import annotations

from grpo.config import GRPOConfig, build_reward_from_config
from grpo.run.command import run_command


def train_grpo(cfg: GRPOConfig):
    """GRPO as configured, with the reward the config describes; returns the run folder."""
    from grpo.trainer import train

    return train(cfg, build_reward_from_config(cfg))


def main(argv: list[str] | None = None, run=train_grpo) -> int:
    """`python -m grpo`: `run` (GRPO with the configured reward) the config the command line gives."""
    return run_command(argv, GRPOConfig, run, __doc__)
