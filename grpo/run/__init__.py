"""The runtime that GRPO, SFT and the evaluations share: models and LoRA, data and prompts, the run folder,
checkpoints, metrics, guards and the distributed setup. Nothing here imports GRPO's loop."""
