#!/bin/bash
# One lever at a time, same settings as bench.vs_trl (fp32), 4 steps each, first left out.
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
for variant in "" "share_prompt_pass=false" "logprob_chunk_tokens=100000" "mixed_precision=bf16" "threads=1" "beta=0" "lora_r=16 lora_alpha=32.0"; do
  echo "=== ${variant:-baseline}"
  .venv/bin/python -m bench.grpo_step steps=4 $variant 2>/dev/null | tail -1
done
