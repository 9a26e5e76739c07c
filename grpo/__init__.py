"""GRPO written by hand: rollouts, group-relative advantages, the clipped loss."""
