"""Write a randomly initialised model of a known architecture, for timing: `python -m bench.random_model`.

Step time and memory depend on the architecture (width, depth, heads,
vocabulary), not on the weight values, so a GPU benchmark can run on a
Qwen2.5-0.5B-shaped model built from its config, with no download:

    python -m bench.random_model --arch qwen2.5-0.5b --tokenizer TOKENIZER_DIR --out /tmp/qwen2.5-0.5b-random
    python -m bench.random_model --arch qwen3-4b --dtype bfloat16 --device cuda --tokenizer TOKENIZER_DIR --out /tmp/q4b

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
    # The paper's recipe model, Qwen3-4B (4.0B parameters): 36 layers, q/k norms, 128-wide heads.
    "qwen3-4b": {
        "model_type": "qwen3", "vocab_size": 151936, "hidden_size": 2560, "intermediate_size": 9728,
        "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
        "max_position_embeddings": 40960, "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    },
}


def build(arch: str, tokenizer_dir: str, out: str, seed: int = 0, dtype: str = "float32", device: str = "cpu") -> int:
    """Save a random `arch` model with the tokenizer of `tokenizer_dir` into `out`; returns its parameter count.

    `dtype` is the saved weights' dtype (a bfloat16 4B model is 8 GB on disk);
    `device` is where the random weights are drawn (a GPU draws 4B in a second).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from grpo.run.models import DTYPES

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    fields = dict(ARCHITECTURES[arch])
    config = AutoConfig.for_model(fields.pop("model_type"), **fields, bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype])
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="qwen2.5-0.5b", choices=sorted(ARCHITECTURES))
    parser.add_argument("--tokenizer", required=True, help="a folder with a tokenizer (e.g. a cached builtin model)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--device", default="cpu", help="where the random weights are drawn")
    args = parser.parse_args()
    params = build(args.arch, args.tokenizer, args.out, args.seed, args.dtype, args.device)
    print(f"{args.arch}: {params / 1e6:.1f}M parameters, random {args.dtype} weights, saved to {args.out}")


if __name__ == "__main__":
    main()
