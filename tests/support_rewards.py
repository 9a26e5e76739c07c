"""Rewards for tests that need a policy to learn something fast (importable by subprocess runs)."""

import math

import numpy as np

_tokenizer = None


def low_half_share(prompts, completions, examples):
    """Share of completion tokens whose id is in the lower half of the vocabulary.

    A random policy scores about 0.5 and can raise it within a few steps: a
    reward that shows learning happens, not language.
    """
    global _tokenizer
    if _tokenizer is None:
        from grpo.models import load_tokenizer

        _tokenizer = load_tokenizer("tiny-random-llama")
    values = []
    for text in completions:
        ids = _tokenizer(text, add_special_tokens=False).input_ids
        values.append(sum(i < len(_tokenizer) // 2 for i in ids) / max(len(ids), 1))
    return np.array(values, dtype=float)


def nan_for_long_completions(prompts, completions, examples):
    """Fails (NaN) for completions longer than 12 characters, else 1."""
    return np.array([math.nan if len(c) > 12 else 1.0 for c in completions])


def always_raises(prompts, completions, examples):
    raise RuntimeError("the reward service is down")


def raises_on_long_completions(prompts, completions, examples):
    if any(len(c) > 12 for c in completions):
        raise RuntimeError("cannot score a long completion")
    return np.ones(len(completions))
