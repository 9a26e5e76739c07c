"""The static-cache sampler against the eager one (grpo/rollout.py), which it must reproduce."""

import math

import pytest
import torch

import grpo.rollout as rollout_module
import grpo.static_rollout as static_module
from grpo.rollout import sample_groups
from grpo.run.errors import ModelError
from grpo.static_rollout import (
    GenerationWeights,
    StaticSampler,
    generation_weights_dtype,
    make_rollout_sampler,
    prompt_bucket,
)

TEXTS = ("Translate: hello", "A much longer prompt, so the batch needs left padding here.", "x")


def chat_prompts(tokenizer, texts=TEXTS):
    return [tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                          add_generation_prompt=True) for text in texts]


def sharpened_tiny_model():
    """The tiny random Llama with weights drawn 15x wider: its random init (std 0.02) makes
    nearly flat logits, so every greedy completion repeats one token; these vary."""
    from grpo.run.models import load_model

    model, tokenizer = load_model("tiny-random-llama")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 0.3, generator=generator)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def sharp():
    """(model, tokenizer, prompts) where two tokens the greedy completions meet early are made EOS ids,
    so rows end at different steps (and one never does)."""
    model, tokenizer = sharpened_tiny_model()
    prompts = chat_prompts(tokenizer)
    free = sample_groups(model, tokenizer, prompts, 1, 12, temperature=0.0, ignore_eos=True).completion_ids
    model.generation_config.eos_token_id = [int(free[0, 2]), int(free[1, 5])]
    return model, tokenizer, prompts


def assert_same_rollout(ours, eager):
    for field in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "truncated"):
        assert torch.equal(getattr(ours, field), getattr(eager, field)), field


def test_prompt_bucket_rounds_up_to_a_power_of_two():
    assert [prompt_bucket(n) for n in (1, 16, 17, 32, 33, 100, 128, 129)] == [16, 16, 32, 32, 64, 128, 128, 256]


def test_greedy_rollout_equals_eager_with_its_masks_and_truncated_flags(sharp):
    model, tokenizer, prompts = sharp
    eager = sample_groups(model, tokenizer, prompts, 2, 12, temperature=0.0)
    # the EOS choice must give rows that end at different steps and one that never ends
    lengths = eager.completion_lengths.tolist()
    assert len(set(lengths)) >= 3 and eager.truncated.any() and not eager.truncated.all(), lengths
    assert_same_rollout(StaticSampler()(model, tokenizer, prompts, 2, 12, temperature=0.0), eager)
    # a check interval longer than the longest completion: the extra steps are trimmed away
    assert_same_rollout(StaticSampler(check_every=64)(model, tokenizer, prompts, 2, 12, temperature=0.0), eager)


def test_rollout_that_ends_before_the_first_check_is_as_wide_as_eager(sharp):
    model, tokenizer, prompts = sharp
    eager = sample_groups(model, tokenizer, prompts[:1], 2, 12, temperature=0.0)
    assert eager.completion_ids.shape[1] == 3  # row 0's EOS at index 2 ends the rollout
    assert_same_rollout(StaticSampler()(model, tokenizer, prompts[:1], 2, 12, temperature=0.0), eager)


def test_smollm2_greedy_completions_equal_eager():
    # A real model: EOS where the model puts it (after 8 and 15 tokens here; one answer runs past 16),
    # prompts of different lengths.
    from grpo.run.models import load_model

    model, tokenizer = load_model("smollm2-135m")
    prompts = chat_prompts(tokenizer, ("What is the capital of France? Answer in one word.", "Say hello.",
                                       "Translate to French: thank you"))
    eager = sample_groups(model.eval(), tokenizer, prompts, 1, 16, temperature=0.0)
    assert eager.truncated.tolist() == [False, True, False]
    assert_same_rollout(StaticSampler()(model, tokenizer, prompts, 1, 16, temperature=0.0), eager)


@pytest.mark.parametrize("settings", [dict(temperature=1.0), dict(temperature=0.7, top_p=0.9, top_k=50)])
def test_sampled_rollout_equals_eager_under_the_same_seed(sharp, settings):
    model, tokenizer, prompts = sharp
    eager = sample_groups(model, tokenizer, prompts, 4, 10, generator=torch.Generator().manual_seed(3), **settings)
    ours = StaticSampler()(model, tokenizer, prompts, 4, 10, generator=torch.Generator().manual_seed(3), **settings)
    assert not torch.equal(eager.completion_ids[0], eager.completion_ids[1])  # sampled, not greedy
    assert_same_rollout(ours, eager)


def test_forced_length_rollout_equals_eager(sharp):
    model, tokenizer, prompts = sharp
    eager = sample_groups(model, tokenizer, prompts, 2, 9, generator=torch.Generator().manual_seed(1),
                          ignore_eos=True)
    ours = StaticSampler()(model, tokenizer, prompts, 2, 9, generator=torch.Generator().manual_seed(1),
                           ignore_eos=True)
    assert ours.completion_ids.shape == (6, 9)
    assert_same_rollout(ours, eager)


def test_decode_logits_agree_with_eager_to_1e_5_and_prefill_logits_bitwise(sharp, monkeypatch):
    # Not bitwise in decode: the static step's attention sums over all Lb + T slots (the unused ones masked),
    # and the bucket adds left padding to the prefill; without that padding the prefill is the eager one.
    model, tokenizer, prompts = sharp
    seen = {"eager": [], "static": []}
    eager_draw, static_draw = rollout_module.next_tokens, static_module.next_tokens

    def recording(name, draw):
        def record(logits, *args):
            seen[name].append(logits.float())
            return draw(logits, *args)
        return record

    monkeypatch.setattr(rollout_module, "next_tokens", recording("eager", eager_draw))
    monkeypatch.setattr(static_module, "next_tokens", recording("static", static_draw))
    monkeypatch.setattr(static_module, "prompt_bucket", lambda length: length)
    sample_groups(model, tokenizer, prompts, 2, 8, generator=torch.Generator().manual_seed(0), ignore_eos=True)
    StaticSampler()(model, tokenizer, prompts, 2, 8, generator=torch.Generator().manual_seed(0), ignore_eos=True)
    assert len(seen["eager"]) == len(seen["static"]) == 8
    assert torch.equal(seen["static"][0], seen["eager"][0])
    for static_logits, eager_logits in zip(seen["static"][1:], seen["eager"][1:]):
        assert (static_logits - eager_logits).abs().max() < 1e-5 * eager_logits.abs().max()


def test_generation_weights_are_bf16_copies_that_change_no_logit_under_autocast(fresh_tiny):
    model, _ = fresh_tiny
    input_ids = torch.randint(3, 1000, (2, 7), generator=torch.Generator().manual_seed(0))
    weights = GenerationWeights(torch.bfloat16)
    originals = {name: parameter for name, parameter in model.named_parameters()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast_per_matmul = model(input_ids=input_ids).logits
        with weights.swapped_in(model):
            assert model.model.layers[0].mlp.down_proj.weight.dtype == torch.bfloat16
            assert model.lm_head.weight.dtype == torch.bfloat16
            assert model.model.embed_tokens.weight.dtype == torch.float32  # the tied embedding keeps its own
            cast_once = model(input_ids=input_ids).logits
    assert torch.equal(cast_once, cast_per_matmul)
    assert {name: parameter for name, parameter in model.named_parameters()} == originals
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())
    # outside bf16 autocast nothing is swapped (bf16 weights against fp32 inputs would not run)
    with weights.swapped_in(model):
        assert model.lm_head.weight.dtype == torch.float32


def test_static_sampler_with_bf16_generation_weights_equals_eager_autocast(sharp):
    # Greedy: in bf16 the static step's logits differ from eager's by a rounding step (0.0625 at logits
    # of 8 to 16; its attention sums over more slots), which can change a sampled token at any seed.
    model, tokenizer, prompts = sharp
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager = sample_groups(model, tokenizer, prompts, 2, 8, temperature=0.0)
        ours = StaticSampler(weights_dtype=torch.bfloat16)(model, tokenizer, prompts, 2, 8, temperature=0.0)
    assert_same_rollout(ours, eager)


def test_make_rollout_sampler_maps_each_generation_mode():
    assert make_rollout_sampler("eager") is sample_groups
    static, compiled = make_rollout_sampler("static"), make_rollout_sampler("compiled", torch.bfloat16)
    assert isinstance(static, StaticSampler) and not static.compile and static.weights is None
    assert isinstance(compiled, StaticSampler) and compiled.compile and compiled.weights.dtype == torch.bfloat16


def test_only_the_static_samplers_under_bf16_autocast_decode_with_weight_copies():
    assert generation_weights_dtype("static", "bf16") == torch.bfloat16
    assert generation_weights_dtype("compiled", "bf16") == torch.bfloat16
    assert generation_weights_dtype("eager", "bf16") is None
    assert generation_weights_dtype("static", "no") is None


def test_sliding_window_models_are_refused_with_a_clear_error(tiny):
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    _, tokenizer = tiny
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=4,
                              layer_types=["sliding_attention", "full_attention"],
                              pad_token_id=tokenizer.pad_token_id)
    model = AutoModelForCausalLM.from_config(config).eval()
    with pytest.raises(ModelError, match=r"needs full attention in every layer, but this model's cache has "
                                         r"StaticSlidingWindowLayer layers \(sliding-window attention, as in "
                                         r"Gemma-3\); set generation = eager"):
        StaticSampler()(model, tokenizer, chat_prompts(tokenizer)[:1], 2, 4)


def chi_square_p_value(counts_a: dict, counts_b: dict) -> float:
    """p-value of Pearson's chi-square test that two samples of categories come from one distribution.

    Categories seen fewer than 5 times in both samples together are pooled into one.
    """
    categories = set(counts_a) | set(counts_b)
    rare = {c for c in categories if counts_a.get(c, 0) + counts_b.get(c, 0) < 5}
    table = [[counts_a.get(c, 0), counts_b.get(c, 0)] for c in sorted(categories - rare)]
    table.append([sum(counts_a.get(c, 0) for c in rare), sum(counts_b.get(c, 0) for c in rare)])
    table = torch.tensor([row for row in table if sum(row) > 0], dtype=torch.float64)
    expected = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / table.sum()
    statistic = ((table - expected) ** 2 / expected).sum()
    degrees = table.shape[0] - 1
    return float(torch.special.gammaincc(torch.tensor(degrees / 2, dtype=torch.float64), statistic / 2))


def test_chi_square_p_value_matches_a_hand_computed_case():
    # table [[10, 20], [20, 10]]: expected 15 everywhere, statistic 4 * 25 / 15 = 6.667, 1 degree of freedom
    p = chi_square_p_value({"x": 10, "y": 20}, {"x": 20, "y": 10})
    assert p == pytest.approx(math.erfc(math.sqrt(6.6667 / 2)), rel=1e-3)  # chi2(1) tail = erfc(sqrt(s/2))


# --------------------------------------------------------------------------
# The compiled decode step. Last in this file: its fixture keeps a copy of the
# logits the 16-row samplers of this module draw from, while the module runs.
# --------------------------------------------------------------------------
COMPILED = dict(temperature=1.0, top_k=4)  # one graph for the sampling tests; top-k keeps the categories few


@pytest.fixture(scope="module")
def compiled(sharp):
    """(sampler, last logits): one compiled StaticSampler for the module, so each graph compiles once.

    The logits are copied into one tensor, written in place: a growing list
    would be a new guard for torch.compile at every step.
    """
    model, _, _ = sharp
    last_logits = torch.zeros(16, model.config.vocab_size)
    draw = static_module.next_tokens

    def record(logits, *args):
        if logits.shape == last_logits.shape:
            last_logits.copy_(logits.float())
        return draw(logits, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(static_module, "next_tokens", record)
        yield StaticSampler(compile=True), last_logits


def compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


@pytest.mark.compile
def test_compiled_greedy_rollout_equals_eager(sharp, compiled):
    model, tokenizer, prompts = sharp
    sampler, _ = compiled
    eager = sample_groups(model, tokenizer, prompts, 2, 12, temperature=0.0)
    graphs = compiled_graphs()
    assert_same_rollout(sampler(model, tokenizer, prompts, 2, 12, temperature=0.0), eager)
    assert compiled_graphs() == graphs + 1  # compiled once, not once a step (nor fallen back to eager)


@pytest.mark.compile
def test_compiled_logprobs_agree_with_the_scoring_pass(sharp, compiled):
    # The importance ratio at mu = 1 compares the sampler's distribution with the scoring pass's:
    # compiled kernels may round differently, within 2e-5 in log-probability here.
    from grpo.logprobs import completion_logprobs

    model, tokenizer, prompts = sharp
    sampler, last_logits = compiled
    rollout = sampler(model, tokenizer, prompts[:2], 8, 2, generator=torch.Generator().manual_seed(0),
                      ignore_eos=True, **COMPILED)
    # two tokens a row: the first from the prefill's logits, the second from the compiled step's
    step_logprobs = torch.log_softmax(last_logits / COMPILED["temperature"], dim=-1)
    sampled = step_logprobs.gather(1, rollout.completion_ids[:, 1:2]).squeeze(1)
    with torch.no_grad():
        scored, _ = completion_logprobs(model, rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids,
                                        rollout.completion_mask, temperature=COMPILED["temperature"])
    assert (sampled - scored[:, 1]).abs().max() < 2e-5


def token_counts(sampler, model, tokenizer, prompts, seeds, **settings) -> dict:
    """How often each (prompt, first token, second token) was drawn, over one rollout per seed."""
    counts = {}
    for seed in seeds:
        rollout = sampler(model, tokenizer, prompts, 8, 2, generator=torch.Generator().manual_seed(seed),
                          ignore_eos=True, **settings)
        for row, (first, second) in enumerate(rollout.completion_ids.tolist()):
            key = (row // 8, first, second)
            counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.mark.compile
def test_compiled_token_frequencies_match_eager_over_many_draws(sharp, compiled):
    # 400 draws each, from different seeds; a sampler at another temperature must be told apart.
    model, tokenizer, prompts = sharp
    sampler, _ = compiled
    graphs = compiled_graphs()
    compiled_counts = token_counts(sampler, model, tokenizer, prompts[:2], range(25), **COMPILED)
    assert compiled_graphs() <= graphs + 1
    eager_counts = token_counts(sample_groups, model, tokenizer, prompts[:2], range(100, 125), **COMPILED)
    other_counts = token_counts(sample_groups, model, tokenizer, prompts[:2], range(200, 225),
                               **{**COMPILED, "temperature": 0.25})
    assert len(eager_counts) >= 8  # enough categories for the test to mean something
    assert chi_square_p_value(compiled_counts, eager_counts) > 1e-3
    assert chi_square_p_value(other_counts, eager_counts) < 1e-3
