"""What the checkpoint manifest costs: `python -m bench.checkpoint_manifest [MODEL ...]`.

Saves a full-weights checkpoint (model, tokenizer, AdamW state after one
step) with `grpo.run.checkpoint.save_checkpoint` and reports the seconds of the
whole save, of writing its manifest (hashing every file with SHA-256) within
it, and of verifying it as a resume does. Prints one JSON object per model.

    python -m bench.checkpoint_manifest                        # tiny-random-llama and smollm2-135m
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from grpo.run import checkpoint as ckpt
from grpo.run.models import load_model


def measure(model_name: str) -> dict:
    model, tokenizer = load_model(model_name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    model(input_ids=torch.tensor([[1, 2, 3]])).logits.sum().backward()
    optimizer.step()  # AdamW's two moments now exist: the trainer state is the size of a real one

    manifest_seconds = []
    write_manifest = ckpt.write_manifest

    def timed_write_manifest(folder):
        start = time.perf_counter()
        write_manifest(folder)
        manifest_seconds.append(time.perf_counter() - start)

    ckpt.write_manifest = timed_write_manifest
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            folder = ckpt.save_checkpoint(tmp, 1, model, tokenizer, {"optimizer": optimizer.state_dict()})
            save_seconds = time.perf_counter() - start
            start = time.perf_counter()
            ckpt.verify_checkpoint(folder)
            verify_seconds = time.perf_counter() - start
            size = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
    finally:
        ckpt.write_manifest = write_manifest
    return {"model": model_name, "checkpoint_mb": round(size / 1e6, 1), "save_seconds": round(save_seconds, 3),
            "manifest_seconds": round(manifest_seconds[0], 3),
            "manifest_share_of_save": round(manifest_seconds[0] / save_seconds, 3),
            "verify_seconds": round(verify_seconds, 3)}


if __name__ == "__main__":
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    for name in sys.argv[1:] or ["tiny-random-llama", "smollm2-135m"]:
        print(json.dumps(measure(name)))
