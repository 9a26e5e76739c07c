#!/usr/bin/env bash
# The rollout samplers and the paper's 4B LoRA recipe on one GPU, random-weight
# models (timing does not depend on the weight values), bf16 autocast, the MT
# prompts, T=256 forced new tokens, our full GRPO step (bench.grpo_step):
#
#   a1  Qwen2.5-0.5B shape, P=2, G=8, generation=compiled      (the settings of bench/gpu_vs_trl.sh)
#   b1  Qwen3-4B shape, bf16 base + LoRA r64 alpha 128 on attention and MLP, P=4, G=8, generation=compiled
#       (generation=static if a1 failed, so that the recipe is measured all the same)
#   a2  a1 with generation=static
#   b2  b1 with gradient_checkpointing=true
#   a3  TRL's step at a1's settings (bench.vs_trl --impl trl)
#   a4  a1 with generation=eager
#
#   bash bench/gpu_generation.sh OUT_DIR [TOKENIZER_DIR]
#
# Each part reports s/step, its phases (time/generate / T is the decode time
# per token, including the prefill), peak GPU memory and the update's MFU.
# The parts run in this order, each under a time limit, and no part runs past
# BUDGET seconds from the start (default 450): the script keeps within 8
# minutes and writes what it measured to OUT_DIR (part.json, part.log, and
# parts.txt with each part's fate). Needs the bench extra (TRL) for a3.
# TOKENIZER_DIR defaults to the cached builtin SmolLM2 folder of `make install`.
set -uo pipefail
out=${1:?usage: bench/gpu_generation.sh OUT_DIR [TOKENIZER_DIR]}
tokenizer=${2:-$HOME/.cache/semantic-grpo/models/smollm2-135m}
budget=${BUDGET:-450}
small=${TMPDIR:-/tmp}/qwen2.5-0.5b-random
large=${TMPDIR:-/tmp}/qwen3-4b-random-bf16
py=${PYTHON:-python}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
start=$SECONDS

# part NAME LIMIT COMMAND...: run COMMAND under min(LIMIT, time left); a JSON last line of its output goes
# into NAME.json. Sets `status` (124: cut by its limit; 255: not run).
part() {
    local name=$1 limit=$2
    shift 2
    local left=$((budget - (SECONDS - start)))
    status=255
    if ((left < 20)); then
        echo "$name: not run (budget spent)" | tee -a "$out/parts.txt"
        return
    fi
    ((limit > left)) && limit=$left
    local began=$SECONDS
    timeout "$limit" "$@" >"$out/$name.stdout" 2>"$out/$name.log"
    status=$?
    if tail -n 1 "$out/$name.stdout" | grep -q '^{'; then
        tail -n 1 "$out/$name.stdout" >"$out/$name.json"
    fi
    echo "$name: exit $status after $((SECONDS - began)) s (limit $limit s)" | tee -a "$out/parts.txt"
}

"$py" -c "import torch, transformers; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| transformers', transformers.__version__)" | tee "$out/machine.txt"
[ -d "$small" ] || part build_small 60 "$py" -m bench.random_model --arch qwen2.5-0.5b --tokenizer "$tokenizer" --out "$small"

common=(device=cuda mixed_precision=bf16 max_new_tokens=256 threads=8)
recipe=(model="$large" dtype=bfloat16 lora_r=64 lora_alpha=128.0 prompts_per_step=4 group_size=8 generation=compiled)

part a1_compiled 200 "$py" -m bench.grpo_step model="$small" "${common[@]}" generation=compiled steps=3 warmup=1
((status == 0)) || recipe+=(generation=static)  # the later key wins
[ -d "$large" ] || part build_large 90 "$py" -m bench.random_model --arch qwen3-4b --dtype bfloat16 --device cuda \
    --tokenizer "$tokenizer" --out "$large"
part b1_recipe_4b 200 "$py" -m bench.grpo_step "${recipe[@]}" "${common[@]}" gradient_checkpointing=false steps=2 warmup=1
part a2_static 60 "$py" -m bench.grpo_step model="$small" "${common[@]}" generation=static steps=2 warmup=1
part b2_recipe_4b_checkpointed 150 "$py" -m bench.grpo_step "${recipe[@]}" "${common[@]}" gradient_checkpointing=true \
    steps=2 warmup=1
part a3_trl 60 "$py" -m bench.vs_trl --impl trl model="$small" "${common[@]}" steps=3 warmup=1
part a4_eager 60 "$py" -m bench.grpo_step model="$small" "${common[@]}" generation=eager steps=2 warmup=1

"$py" - "$out" <<'EOF' | tee "$out/summary.txt"
import json, sys
from pathlib import Path
for path in sorted(Path(sys.argv[1]).glob("*.json")):
    try:
        r = json.loads(path.read_text())
    except ValueError:
        print(f"{path.stem}: no result"); continue
    line = f"{path.stem}: {r['seconds_per_step']:.2f} s/step, peak GPU {r.get('peak_gpu_gb') or 0:.1f} GB"
    if "seconds_generate" in r:
        line += (f", generate {r['seconds_generate']:.2f} s ({1000 * r['seconds_generate'] / r['T']:.1f} ms/token), "
                 f"logprob {r['seconds_logprob']:.2f} s, update {r['seconds_update']:.2f} s "
                 f"(MFU {r['update_fraction_of_matmul_peak']:.2f})")
    print(line)
EOF
echo "total: $((SECONDS - start)) s"
