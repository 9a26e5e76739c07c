"""Write a randomly initialised model of a known architecture, for timing: `python -m bench.random_model`.

Step time and memory depend on the architecture (width, depth, heads,
vocabulary), not on the weight values, so a GPU benchmark can run on a
Qwen2.5-0.5B-shaped model built from its config, with no download:

    python -m bench.random_model --arch qwen2.5-0.5b --tokenizer TOKENIZER_DIR --out /tmp/qwen2.5-0.5b-random

The folder holds the model and the given tokenizer; `model=/tmp/...` then
loads it like any checkpoint. A tokenizer smaller than the model's
vocabulary is fine for timing: ids past its end decode to nothing.
"""

from __future__ import annotations

import argparse

import torch

# Published configs (config.json of each hub repository), architecture fields only.
ARCHITECTURES = {
    "qwen2.5-0.5b": {
        "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
        "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
        "max_position_embeddings": 32768, "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    },
}


def build(arch: str, tokenizer_dir: str, out: str, seed: int = 0) -> int:
    """Save a random `arch` model with the tokenizer of `tokenizer_dir` into `out`; returns its parameter count."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    fields = dict(ARCHITECTURES[arch])
    config = AutoConfig.for_model(fields.pop("model_type"), **fields, bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="qwen2.5-0.5b", choices=sorted(ARCHITECTURES))
    parser.add_argument("--tokenizer", required=True, help="a folder with a tokenizer (e.g. a cached builtin model)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    params = build(args.arch, args.tokenizer, args.out, args.seed)
    print(f"{args.arch}: {params / 1e6:.1f}M parameters, random weights, saved to {args.out}")


if __name__ == "__main__":
    main()
