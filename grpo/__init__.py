"""GRPO written by hand: rollouts, group-relative advantages, the clipped loss.

Read loss.py, advantages.py, rollout.py, logprobs.py, then trainer.py (the loop);
run/ is the runtime that GRPO shares with SFT and the evaluations.
"""
