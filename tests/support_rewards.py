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
        from grpo.run.models import load_tokenizer

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


def _target_is_even(example):
    return len(example["target"]) % 2 == 0


def constant_for_even_targets(prompts, completions, examples):
    """1.0 for every completion of a prompt whose target has an even length (a constant group), else
    low_half_share (which varies between siblings): a reward that leaves some groups without signal."""
    varying = low_half_share(prompts, completions, examples)
    return np.array([1.0 if _target_is_even(e) else v for e, v in zip(examples, varying)])


def nearly_constant_for_even_targets(prompts, completions, examples):
    """Like constant_for_even_targets, but the even-target groups vary a little: 1 + 0.001 * characters."""
    varying = low_half_share(prompts, completions, examples)
    return np.array([1.0 + 0.001 * len(c) if _target_is_even(e) else v
                     for c, e, v in zip(completions, examples, varying)])


def always_one(prompts, completions, examples):
    return np.ones(len(completions))


def ascii_share(prompts, completions, examples):
    """Share of a completion's characters that are ASCII (0 for an empty one)."""
    return np.array([sum(ch.isascii() for ch in c) / len(c) if c else 0.0 for c in completions])
