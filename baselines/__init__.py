"""Baselines that share the GRPO loader, data, logger and checkpoints: supervised fine-tuning."""
