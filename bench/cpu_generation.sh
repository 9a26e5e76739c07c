#!/usr/bin/env bash
# Every CPU measurement of docs/PERFORMANCE.md's "Generation" and "Gradient
# checkpointing" sections, one after the other, on a machine with nothing else
# running (two torch jobs on 2 cores slow each other far more than 2x):
#
#   gen_fp32        bench.generation: eager, static, compiled samplers, fp32 (SmolLM2, P=2, G=8, T=32)
#   vs_trl          bench.vs_trl --rounds 2: the TRL ratio in the default mode (was 2.13x)
#   vs_trl_p16/64/128   the same with prompts cut to about 16, 64 and 128 tokens
#   gc_off, gc_on   bench.grpo_step, SmolLM2 full fine-tuning, without and with gradient checkpointing
#   gemma_gc_off, gemma_gc_on   the same for Gemma-3-270M (262k vocabulary), T=64
#   step_static     bench.grpo_step generation=static: the static sampler inside the whole step
#   gen_bf16, gen_bf16_cast     bench.generation under bf16 autocast, with and without bf16 generation weights
#   gen_bf16_static_on/off      the static sampler alone under bf16, 10 rollouts each, with and without them
#   gen_fp32_p64    eager vs static with prompts of 64 tokens, which fill their bucket exactly (no padding)
#   gemma_pass_gc_off, gemma_pass_gc_on   one Gemma-3-270M update pass alone (bench.logprob_memory), without and with it
#   gen_roofline    eager and static samplers against their roofline, with --profile (where a rollout's time goes)
#   gen_top_p       the eager sampler at the MT preset's sampling (temperature 0.5, top-p 0.9)
#   step_correction_none/token/sequence   bench.grpo_step with each sampler_correction: the cost of the correction
#   step_bf16_static    bench.grpo_step, bf16 autocast with the static sampler's bf16 weight copies: sampler/kl
#
#   bash bench/cpu_generation.sh OUT_DIR [PART ...]
#
# With PART names only those parts run. Each part's results go to
# OUT_DIR/PART.json (the benchmark's --out file, or the last JSON line it
# printed), its output to OUT_DIR/PART.log, and OUT_DIR/parts.txt
# records each part's exit status and wall time. A part that parts.txt records
# as finished (exit 0) is skipped, so an interrupted run continues with the
# same command.
set -uo pipefail
out=${1:?usage: bench/cpu_generation.sh OUT_DIR [PART ...]}
shift
wanted=" $* "
py=${PYTHON:-python}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

part() {
    local name=$1
    shift
    # A part counts as done once parts.txt records its clean exit: a benchmark
    # writes its JSON round by round, so an interrupted part leaves a partial one.
    if [[ "$wanted" != "  " && "$wanted" != *" $name "* ]] || grep -q "^$name: exit 0 " "$out/parts.txt" 2>/dev/null; then
        return
    fi
    rm -f "$out/$name.json"
    local began=$SECONDS
    "$@" >"$out/$name.log" 2>&1
    local status=$?
    if [ ! -s "$out/$name.json" ]; then
        grep '^{' "$out/$name.log" | tail -n 1 >"$out/$name.json"
        [ -s "$out/$name.json" ] || rm -f "$out/$name.json"
    fi
    echo "$name: exit $status after $((SECONDS - began)) s" | tee -a "$out/parts.txt"
}

"$py" -c "import os, torch, transformers; print('cpus:', os.cpu_count(), '| torch', torch.__version__, '| transformers', transformers.__version__)" | tee "$out/machine.txt"
part gen_fp32 "$py" -m bench.generation --out "$out/gen_fp32.json"
part vs_trl "$py" -m bench.vs_trl --rounds 2 --out "$out/vs_trl.json"
part vs_trl_p16 "$py" -m bench.vs_trl --rounds 2 --prompt-tokens 16 --out "$out/vs_trl_p16.json"
part vs_trl_p64 "$py" -m bench.vs_trl --rounds 2 --prompt-tokens 64 --out "$out/vs_trl_p64.json"
part vs_trl_p128 "$py" -m bench.vs_trl --rounds 2 --prompt-tokens 128 --out "$out/vs_trl_p128.json"
part gc_off "$py" -m bench.grpo_step gradient_checkpointing=false
part gc_on "$py" -m bench.grpo_step gradient_checkpointing=true
part gemma_gc_off "$py" -m bench.grpo_step model=gemma3-270m max_new_tokens=64 steps=3 warmup=1 gradient_checkpointing=false
part gemma_gc_on "$py" -m bench.grpo_step model=gemma3-270m max_new_tokens=64 steps=3 warmup=1 gradient_checkpointing=true
part step_static "$py" -m bench.grpo_step generation=static
part gen_bf16 "$py" -m bench.generation mixed_precision=bf16 --out "$out/gen_bf16.json"
part gen_bf16_cast "$py" -m bench.generation mixed_precision=bf16 --modes static,compiled --generation-weights off --out "$out/gen_bf16_cast.json"
part gen_bf16_static_on "$py" -m bench.generation mixed_precision=bf16 --modes static --rollouts 10 --out "$out/gen_bf16_static_on.json"
part gen_bf16_static_off "$py" -m bench.generation mixed_precision=bf16 --modes static --rollouts 10 --generation-weights off --out "$out/gen_bf16_static_off.json"
part gen_fp32_p64 "$py" -m bench.generation prompt_tokens=64 --modes eager,static --out "$out/gen_fp32_p64.json"
part gemma_pass_gc_off "$py" -m bench.logprob_memory --variant chunked
part gemma_pass_gc_on "$py" -m bench.logprob_memory --variant chunked --gradient-checkpointing
part gen_roofline "$py" -m bench.generation --modes eager,static --profile --out "$out/gen_roofline.json"
part gen_top_p "$py" -m bench.generation --modes eager temperature=0.5 top_p=0.9 --out "$out/gen_top_p.json"
part step_correction_none "$py" -m bench.grpo_step sampler_correction=none
part step_correction_token "$py" -m bench.grpo_step sampler_correction=token
part step_correction_sequence "$py" -m bench.grpo_step sampler_correction=sequence
part step_bf16_static "$py" -m bench.grpo_step mixed_precision=bf16 generation=static
