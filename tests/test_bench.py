"""Benchmark helpers that decide what is measured."""

import pytest

from bench.grpo_step import cut_prompts


@pytest.mark.parametrize("prompt_tokens", [16, 64, 128])
def test_prompts_cut_to_a_length_keep_their_end_and_about_that_many_tokens(tiny, prompt_tokens):
    from pathlib import Path

    from grpo.run.data import make_examples, read_jsonl

    _, tokenizer = tiny
    records = read_jsonl(Path(__file__).resolve().parents[1] / "data" / "mt" / "train.jsonl")
    examples = make_examples(records, tokenizer)
    cut = cut_prompts(examples, tokenizer, prompt_tokens)
    long_enough = [e for e in examples if len(tokenizer(e["prompt"], add_special_tokens=False).input_ids)
                   >= prompt_tokens]
    assert len(cut) == len(long_enough) > 0
    for original, shortened in zip(long_enough, cut):
        lengths = len(tokenizer(shortened["prompt"], add_special_tokens=False).input_ids)
        assert abs(lengths - prompt_tokens) <= 2
        assert original["prompt"].endswith(shortened["prompt"][-20:])
        assert shortened["prompt"].endswith("<|im_start|>assistant\n")
        assert shortened["target"] == original["target"]
