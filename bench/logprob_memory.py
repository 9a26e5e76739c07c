"""Peak memory of one log-prob pass, chunked against naive: `python -m bench.logprob_memory`.

The log-prob pass of a GRPO update reads B = P * G sequences of prompt +
T completion tokens. Written naively, it asks the model for all logits,
[B, Lp + T, V] floats, and takes a log-softmax over them; with Gemma-3's
262,144-token vocabulary that tensor alone is several GB, and autograd keeps
it (and the log-softmax output) for the backward pass. Our pass
(`grpo.logprobs.completion_logprobs`) runs the body once per group's prompt
and pushes only completion positions through the LM head, a chunk at a time,
recomputing each chunk in backward.

Each variant runs in a fresh process on the same batch (the first P MT
training prompts, G random completions of exactly T tokens each), forward
and backward as in the update (or forward only, as in the reference pass,
with `--no-grad`). Reported: the rise of the process's peak resident memory
above its resident memory just before the pass (Linux VmHWM, reset through
/proc/self/clear_refs), and the pass's wall time.

    python -m bench.logprob_memory                                   # gemma3-270m, P=2, G=8, T=64
    python -m bench.logprob_memory --model smollm2-135m --no-grad
    python -m bench.logprob_memory --gradient-checkpointing          # the decoder layers checkpointed too

Variants: `chunked` (our default: chunks of 128 MB of float32 logits,
128 positions for Gemma-3), `one-chunk` (our pass
with every completion position in one chunk: no prompt-position logits, but
the full completion logits at once), `naive` (the model's own forward with
all logits, then log_softmax and gather).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from bench.grpo_step import run_in_fresh_process
from grpo.logprobs import naive_logprobs

VARIANTS = ("naive", "one-chunk", "chunked")


def read_status_kb(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM), in kB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> None:
    """Set VmHWM (peak RSS) back to the current RSS (Linux: `echo 5 > /proc/self/clear_refs`)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def measure(variant: str, model_name: str, prompts: int, group_size: int, new_tokens: int, grad: bool,
            gradient_checkpointing: bool = False) -> dict:
    """Run one log-prob pass of `variant` in this process and return its peak memory and time."""
    from grpo.config import GRPOConfig
    from grpo.logprobs import auto_chunk_tokens, checkpoint_decoder_layers, completion_logprobs
    from grpo.run.config import load_config
    from grpo.run.models import load_model
    from grpo.run.training_run import load_task_examples

    torch.manual_seed(0)
    model, tokenizer = load_model(model_name)
    if gradient_checkpointing:
        checkpoint_decoder_layers(model)
    cfg = load_config(GRPOConfig, overrides={"model": model_name, "data": "data/mt/train.jsonl",
                                             "max_prompt_tokens": 128})
    examples = load_task_examples(cfg, tokenizer)[0][:prompts]
    encoded = tokenizer([e["prompt"] for e in examples], padding=True, padding_side="left", return_tensors="pt",
                        add_special_tokens=False)
    prompt_ids = encoded["input_ids"].repeat_interleave(group_size, dim=0)             # [B, Lp]
    prompt_mask = encoded["attention_mask"].repeat_interleave(group_size, dim=0)
    batch = prompts * group_size
    completion_ids = torch.randint(0, len(tokenizer), (batch, new_tokens))            # [B, T]
    completion_mask = torch.ones(batch, new_tokens)

    # Weights are memory-mapped: a small pass first pages them all in, so
    # that the measured rise is the pass's own memory, not the model's.
    with torch.no_grad():
        completion_logprobs(model, prompt_ids[:group_size], prompt_mask[:group_size], completion_ids[:group_size, :2],
                            completion_mask[:group_size, :2], group_size=group_size)
    if grad:
        model.train()
    for parameter in model.parameters():
        parameter.requires_grad_(grad)
    before_kb = read_status_kb("VmRSS")
    reset_peak_rss()
    start = time.perf_counter()
    with torch.set_grad_enabled(grad):
        if variant == "naive":
            logprobs = naive_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask)
        else:
            chunk_tokens = batch * new_tokens if variant == "one-chunk" else 0  # 0: automatic size
            logprobs = completion_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask,
                                           chunk_tokens=chunk_tokens, group_size=group_size)[0]
        if grad:
            (logprobs * completion_mask).sum().backward()
    seconds = time.perf_counter() - start
    peak_kb = read_status_kb("VmHWM")
    return {
        "variant": variant, "model": model_name, "P": prompts, "G": group_size, "T": new_tokens,
        "prompt_tokens": int(prompt_ids.shape[1]), "vocab": int(model.get_output_embeddings().weight.shape[0]),
        "chunk_tokens": auto_chunk_tokens(model.get_output_embeddings().weight.shape[0]) if variant == "chunked"
        else (batch * new_tokens if variant == "one-chunk" else None),
        "grad": grad, "gradient_checkpointing": gradient_checkpointing, "seconds": seconds,
        "peak_rise_gb": (peak_kb - before_kb) / 1e6,
        "logprob_sum": float(logprobs.detach().sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--prompts", type=int, default=2, help="P")
    parser.add_argument("--group-size", type=int, default=8, help="G")
    parser.add_argument("--new-tokens", type=int, default=64, help="T")
    parser.add_argument("--no-grad", action="store_true", help="forward only (the reference pass)")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="checkpoint the decoder layers (grpo.logprobs.checkpoint_decoder_layers)")
    parser.add_argument("--variant", choices=VARIANTS, help="run one variant in this process and print its JSON")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    if args.variant:
        print(json.dumps(measure(args.variant, args.model, args.prompts, args.group_size, args.new_tokens,
                                 not args.no_grad, args.gradient_checkpointing)))
        return

    results = []
    for variant in VARIANTS:
        options = ["--variant", variant, "--model", args.model, "--prompts", str(args.prompts),
                   "--group-size", str(args.group_size), "--new-tokens", str(args.new_tokens),
                   *(["--no-grad"] if args.no_grad else []),
                   *(["--gradient-checkpointing"] if args.gradient_checkpointing else [])]
        r = run_in_fresh_process("bench.logprob_memory", options, variant)
        results.append(r)
        print(f"{variant:>9}: peak +{r['peak_rise_gb']:.2f} GB, {r['seconds']:.1f} s, "
              f"sum of log-probs {r['logprob_sum']:.1f}", flush=True)
    naive = results[0]
    for r in results[1:]:
        print(f"{r['variant']} / naive peak memory: {r['peak_rise_gb'] / naive['peak_rise_gb']:.2f}x")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
