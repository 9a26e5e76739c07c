#!/usr/bin/env bash
# Our GRPO step against TRL's on one GPU: a Qwen2.5-0.5B-shaped model with
# random weights (timing does not depend on the weight values), P=2 prompts
# x G=8 completions, T=256 forced new tokens, bf16 autocast on both sides.
#
#   bash bench/gpu_vs_trl.sh OUT_DIR [TOKENIZER_DIR] [ROUNDS] [key=value ...]
#
# Needs the bench extra (TRL). TOKENIZER_DIR defaults to the cached builtin
# SmolLM2 folder that `make install` creates.
set -euo pipefail
out=${1:?usage: bench/gpu_vs_trl.sh OUT_DIR [TOKENIZER_DIR] [ROUNDS]}
tokenizer=${2:-$HOME/.cache/semantic-grpo/models/smollm2-135m}
rounds=${3:-2}
model=${TMPDIR:-/tmp}/qwen2.5-0.5b-random
mkdir -p "$out"
# PYTHON: the interpreter to use (default: python)
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
"${PYTHON:-python}" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)" | tee "$out/machine.txt"
[ -d "$model" ] || "${PYTHON:-python}" -m bench.random_model --arch qwen2.5-0.5b --tokenizer "$tokenizer" --out "$model"
"${PYTHON:-python}" -m bench.vs_trl --rounds "$rounds" --dtype bfloat16 --out "$out/bench_vs_trl_gpu_bf16.json" \
    model="$model" device=cuda max_new_tokens=256 steps=6 warmup=1 threads=8 "${@:4}"
