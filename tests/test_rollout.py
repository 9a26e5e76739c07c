import math

import pytest
import torch

from grpo.rollout import (
    completion_mask_after_eos,
    draw_tokens,
    exponential_noise,
    filter_logits,
    nucleus_among_top,
    nucleus_by_sort,
    sample_groups,
)


def test_mask_keeps_tokens_up_to_and_including_first_eos():
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 9, 9, 9]])
    mask, truncated = completion_mask_after_eos(ids, torch.tensor([2]))
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert truncated.tolist() == [False, True, False]


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    kept = torch.isfinite(filter_logits(logits, top_k=2))
    assert kept.tolist() == [[False, True, True, False]]


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.tensor([[math.log(p) for p in (0.15, 0.5, 0.05, 0.3)]])
    # sorted: 0.5, 0.3, 0.15, 0.05; mass before each: 0, 0.5, 0.8, 0.95
    assert torch.isfinite(filter_logits(logits, top_p=0.7)).tolist() == [[False, True, False, True]]
    assert torch.isfinite(filter_logits(logits, top_p=0.5)).tolist() == [[False, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=1.0)).all()


def test_the_nucleus_among_the_top_tokens_is_the_one_the_full_sort_finds():
    generator = torch.Generator().manual_seed(0)
    # SmolLM2's vocabulary. Rows 0-7 peaked (their nucleus lies in the top 256), rows 8-15 nearly flat
    # (it needs thousands of tokens, and those rows are sorted).
    logits = torch.randn(16, 49152, generator=generator) * torch.tensor([20.0] * 8 + [0.1] * 8).unsqueeze(1)
    for top_p in (0.5, 0.9, 0.99):
        sorted_nucleus = nucleus_by_sort(logits, top_p)
        kept = torch.isfinite(sorted_nucleus).sum(dim=1)
        assert kept[:8].max() <= 256 < kept[8:].min()
        assert torch.equal(nucleus_among_top(logits, top_p, 256), sorted_nucleus)
        assert torch.equal(filter_logits(logits, top_p=top_p), sorted_nucleus)
    assert torch.equal(nucleus_among_top(logits[:8], 0.9, 256), nucleus_by_sort(logits[:8], 0.9))  # none sorted


def test_the_draw_is_the_largest_weight_over_noise_and_a_zero_weight_never_wins():
    weights = torch.tensor([[0.0, 0.2, 0.8]]).expand(3, 3)
    noise = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.1, 1.0], [1e-30, 1.0, 1.0]])  # ratios: .8 last; 2 > .8; 0/1e-30
    assert draw_tokens(weights, noise).tolist() == [2, 1, 2]


def test_draws_follow_the_unnormalised_weights():
    weights = torch.tensor([[0.0, 1.0, 0.0, 3.0, 4.0]]).expand(20000, 5)  # probabilities 0, 1/8, 0, 3/8, 1/2
    noise = exponential_noise(20000, 5, "cpu", torch.Generator().manual_seed(0))
    assert abs(noise.mean().item() - 1) < 0.01 and abs((noise > 1).float().mean().item() - math.exp(-1)) < 0.005
    frequencies = torch.bincount(draw_tokens(weights, noise), minlength=5) / 20000
    expected = torch.tensor([0.0, 1 / 8, 0.0, 3 / 8, 1 / 2])
    assert ((frequencies - expected).abs() <= 4 * (expected * (1 - expected) / 20000).sqrt()).all(), frequencies


def test_the_growing_cache_layer_holds_what_concatenation_would():
    from transformers.cache_utils import DynamicLayer

    from grpo.rollout import GrowingLayer

    generator = torch.Generator().manual_seed(0)
    ours, theirs = GrowingLayer(capacity=7), DynamicLayer()
    prompt = [torch.randn(2, 3, 4, 5, generator=generator) for _ in range(2)]  # [rows, heads, positions, dim]
    for layer in (ours, theirs):
        layer.update(*prompt)
        layer.batch_repeat_interleave(2)
    for _ in range(3):
        step = [torch.randn(4, 3, 1, 5, generator=generator) for _ in range(2)]
        keys, values = ours.update(*step)
        expected_keys, expected_values = theirs.update(*step)
        assert torch.equal(keys, expected_keys) and torch.equal(values, expected_values)
    assert ours.get_seq_length() == 7
    with pytest.raises(ValueError, match="holds 7 positions; position 8"):
        ours.update(*step)


def _prompts(tokenizer):
    return [tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                          add_generation_prompt=True)
            for text in ("Translate: hello", "A much longer prompt, so the batch needs left padding here.")]


def test_rollout_shapes_groups_and_masks(tiny):
    model, tokenizer = tiny
    rollout = sample_groups(model, tokenizer, _prompts(tokenizer), group_size=3, max_new_tokens=6,
                            temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert rollout.prompt_ids.shape[0] == 6 and rollout.completion_ids.shape == (6, rollout.completion_mask.shape[1])
    # rows of a group share their prompt
    assert torch.equal(rollout.prompt_ids[0], rollout.prompt_ids[2])
    assert not torch.equal(rollout.prompt_ids[0], rollout.prompt_ids[3])
    # padding after the first EOS
    assert (rollout.completion_ids[rollout.completion_mask == 0] == tokenizer.pad_token_id).all()


def test_rollout_is_reproducible_from_a_seed(tiny):
    model, tokenizer = tiny
    runs = [sample_groups(model, tokenizer, _prompts(tokenizer), 4, 8, temperature=1.0, top_p=0.9,
                          generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(runs[0].completion_ids, runs[1].completion_ids)
    other = sample_groups(model, tokenizer, _prompts(tokenizer), 4, 8, temperature=1.0,
                          generator=torch.Generator().manual_seed(8))
    assert not torch.equal(runs[0].completion_ids, other.completion_ids)


def test_left_padded_batch_decodes_like_each_prompt_alone(tiny):
    # Greedy decoding with the shared prefill and KV cache must not depend on
    # the padding a prompt receives from its batch-mates.
    model, tokenizer = tiny
    prompts = _prompts(tokenizer)
    together = sample_groups(model, tokenizer, prompts, 1, 8, temperature=0.0, ignore_eos=True)
    for row, prompt in enumerate(prompts):
        alone = sample_groups(model, tokenizer, [prompt], 1, 8, temperature=0.0, ignore_eos=True)
        assert torch.equal(together.completion_ids[row], alone.completion_ids[0])


def test_sampled_tokens_follow_the_scored_distribution(tiny):
    # The generation loop (KV cache) and the scoring pass (one full forward)
    # must see the same distribution: the greedy token is the argmax of the scored logits.
    from grpo.logprobs import completion_logprobs

    model, tokenizer = tiny
    rollout = sample_groups(model, tokenizer, _prompts(tokenizer), 1, 5, temperature=0.0, ignore_eos=True)
    with torch.no_grad():
        logprobs, _ = completion_logprobs(model, rollout.prompt_ids, rollout.prompt_mask,
                                          rollout.completion_ids, rollout.completion_mask)
        input_ids = torch.cat([rollout.prompt_ids, rollout.completion_ids], 1)
        mask = torch.cat([rollout.prompt_mask, rollout.completion_mask.long()], 1)
        from grpo.logprobs import position_ids_from_mask
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    predicted = logits[:, rollout.prompt_ids.shape[1] - 1 : -1].argmax(-1)
    assert torch.equal(predicted, rollout.completion_ids)
    assert (logprobs <= 0).all()


@pytest.mark.parametrize("generation", ["eager", "static"])
def test_rows_g_times_G_to_g_times_G_plus_G_minus_1_are_prompt_g(tiny, generation):
    # Every group statistic (advantages, the shared prompt pass, dynamic sampling) reads rows
    # g*G ... g*G+G-1 as prompt g's completions. Greedy decoding makes each row's completion
    # that of its prompt alone, so a row holding another prompt, or another prompt's tokens, shows.
    from grpo.static_rollout import make_rollout_sampler

    model, tokenizer = tiny
    sample = make_rollout_sampler(generation)
    prompts = _prompts(tokenizer)
    group_size = 3
    rollout = sample(model, tokenizer, prompts, group_size, 6, temperature=0.0, ignore_eos=True)
    for prompt_index, prompt in enumerate(prompts):
        prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
        alone = sample(model, tokenizer, [prompt], 1, 6, temperature=0.0, ignore_eos=True)
        for row in range(prompt_index * group_size, (prompt_index + 1) * group_size):
            assert rollout.prompt_ids[row][rollout.prompt_mask[row].bool()].tolist() == prompt_ids, row
            assert torch.equal(rollout.completion_ids[row], alone.completion_ids[0]), row


@pytest.mark.parametrize("generation", ["eager", "static"])
def test_the_sampler_log_probs_are_the_trainers_under_top_p(tiny, generation):
    # The sampler records log softmax(z / T) over the whole vocabulary, the distribution the
    # trainer scores, not the top-p nucleus it drew from: with the same weights the ratio of the
    # two is 1, where the nucleus's renormalised log-probs would put it near top_p on average.
    from grpo.logprobs import completion_logprobs
    from grpo.static_rollout import make_rollout_sampler

    model, tokenizer = tiny
    temperature, top_p = 0.7, 0.5
    rollout = make_rollout_sampler(generation)(model, tokenizer, _prompts(tokenizer), 4, 6, temperature=temperature,
                                               top_p=top_p, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        trainer, _ = completion_logprobs(model, rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids,
                                         rollout.completion_mask, temperature=temperature)
    mask = rollout.completion_mask
    assert torch.equal(rollout.sampler_logprobs * mask, rollout.sampler_logprobs)  # 0 where masked
    torch.testing.assert_close(rollout.sampler_logprobs, trainer, atol=2e-5, rtol=0)
    ratio = float((torch.exp(trainer - rollout.sampler_logprobs) * mask).sum() / mask.sum())
    assert ratio == pytest.approx(1.0, abs=1e-5)
    # what a nucleus-renormalised log-prob would have given instead: every kept token looks likelier
    nucleus_mass = float((torch.exp(rollout.sampler_logprobs) * mask).sum() / mask.sum())
    assert nucleus_mass < 1.0


def test_a_greedy_rollout_records_log_prob_zero(tiny):
    model, tokenizer = tiny
    rollout = sample_groups(model, tokenizer, _prompts(tokenizer), 1, 4, temperature=0.0)
    assert torch.equal(rollout.sampler_logprobs, torch.zeros_like(rollout.sampler_logprobs))
