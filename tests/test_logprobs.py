import pytest
import torch

from grpo.logprobs import auto_chunk_tokens, completion_logprobs, naive_logprobs, position_ids_from_mask


def _batch(vocab: int):
    generator = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(3, vocab, (3, 5), generator=generator)
    prompt_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])
    completion_ids = torch.randint(3, vocab, (3, 4), generator=generator)
    completion_mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    return prompt_ids, prompt_mask, completion_ids, completion_mask


def test_position_ids_skip_left_padding():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]


def test_automatic_chunk_holds_128_mb_of_float32_logits():
    # 2**27 bytes / (4 bytes * V)
    assert auto_chunk_tokens(262_144) == 128           # Gemma-3
    assert auto_chunk_tokens(49_152) == 682            # SmolLM2: 134217728 / 196608 = 682.67
    assert auto_chunk_tokens(151_936) == 220           # Qwen2.5: 134217728 / 607744 = 220.8
    assert auto_chunk_tokens(2**40) == 1               # never zero


@pytest.mark.parametrize("chunk_tokens", [0, 1, 3, 1024])
def test_chunked_logprobs_equal_naive_full_log_softmax(tiny, chunk_tokens):
    model, _ = tiny
    batch = _batch(model.config.vocab_size)
    with torch.no_grad():
        ours, entropy = completion_logprobs(model, *batch, temperature=0.7, chunk_tokens=chunk_tokens, with_entropy=True)
        naive = naive_logprobs(model, *batch, temperature=0.7)
    assert torch.allclose(ours, naive, atol=1e-5)
    assert (ours[batch[3] == 0] == 0).all()
    assert (entropy[batch[3] == 1] > 0).all()


def test_chunked_gradient_equals_naive_gradient(tiny):
    model, _ = tiny
    batch = _batch(model.config.vocab_size)
    params = [p for p in model.parameters()]
    ours, _ = completion_logprobs(model, *batch, temperature=0.9, chunk_tokens=2)
    ours_grads = torch.autograd.grad(ours.sum(), params)
    naive = naive_logprobs(model, *batch, temperature=0.9)
    naive_grads = torch.autograd.grad(naive.sum(), params)
    for a, b in zip(ours_grads, naive_grads):
        assert (a - b).norm() <= 1e-4 * b.norm() + 1e-8


def test_entropy_of_uniform_distribution_is_log_vocab():
    from grpo.logprobs import logprobs_from_hidden

    vocab, hidden = 50, 4
    head = torch.zeros(vocab, hidden)  # every logit 0: uniform
    _, entropy = logprobs_from_hidden(torch.randn(1, 2, hidden), head, torch.zeros(1, 2, dtype=torch.long),
                                      torch.ones(1, 2), with_entropy=True)
    assert torch.allclose(entropy, torch.full((1, 2), torch.log(torch.tensor(50.0)).item()))


def test_shared_prompt_pass_equals_the_full_pass(tiny):
    # rows 0-2 share prompt 0, rows 3-5 prompt 1; completions end at different places
    model, _ = tiny
    generator = torch.Generator().manual_seed(3)
    prompts = torch.randint(3, model.config.vocab_size, (2, 5), generator=generator)
    prompt_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    prompt_ids, prompt_mask = prompts.repeat_interleave(3, 0), prompt_mask.repeat_interleave(3, 0)
    completion_ids = torch.randint(3, model.config.vocab_size, (6, 4), generator=generator)
    completion_mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]] * 2)
    params = list(model.parameters())

    full, _ = completion_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature=0.8)
    full_grads = torch.autograd.grad(full.sum(), params)
    shared, _ = completion_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask,
                                    temperature=0.8, group_size=3)
    shared_grads = torch.autograd.grad(shared.sum(), params)
    assert torch.allclose(shared, full, atol=1e-5)
    for a, b in zip(shared_grads, full_grads):
        assert (a - b).norm() <= 1e-4 * b.norm() + 1e-8


def count_calls(module) -> list[int]:
    """Count calls of `module.forward`; the backward replay of a checkpointed layer calls it again
    (module hooks are not run during the replay, so a hook would not see it)."""
    calls = [0]
    forward = module.forward

    def counted(*args, **kwargs):
        calls[0] += 1
        return forward(*args, **kwargs)

    module.forward = counted
    return calls


@pytest.mark.parametrize("group_size", [1, 3])
def test_gradient_checkpointing_leaves_gradients_equal(fresh_tiny, group_size):
    # group_size 3: the shared prompt pass, whose cache each replayed layer must find as it was
    from grpo.logprobs import checkpoint_decoder_layers

    model, _ = fresh_tiny
    model.train()
    generator = torch.Generator().manual_seed(3)
    prompts = torch.randint(3, model.config.vocab_size, (2, 5), generator=generator)
    prompt_ids = prompts.repeat_interleave(3, 0)
    prompt_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]).repeat_interleave(3, 0)
    completion_ids = torch.randint(3, model.config.vocab_size, (6, 4), generator=generator)
    completion_mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]] * 2)
    weights = torch.randn(6, 4, generator=generator)  # a loss that weighs tokens differently, like advantages
    params = list(model.parameters())
    mlp_calls = count_calls(model.model.layers[0].mlp)

    def gradients():
        # chunk_tokens=5: the chunked, checkpointed LM head composes with the checkpointed body
        logprobs, _ = completion_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask,
                                          temperature=0.8, chunk_tokens=5, group_size=group_size)
        return logprobs, torch.autograd.grad((weights * logprobs).sum(), params)

    plain_logprobs, plain_grads = gradients()
    passes = mlp_calls[0]
    assert checkpoint_decoder_layers(model) == 2
    checkpointed_logprobs, checkpointed_grads = gradients()
    assert mlp_calls[0] == 3 * passes  # forward as before, then each pass replayed once in backward
    assert torch.equal(checkpointed_logprobs, plain_logprobs)
    for checkpointed, plain in zip(checkpointed_grads, plain_grads):
        assert (checkpointed - plain).norm() <= 1e-6 * plain.norm()
    # passes without gradients (reference, old log-probs) are not replayed
    mlp_calls[0] = 0
    with torch.no_grad():
        completion_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, group_size=group_size)
    assert mlp_calls[0] == passes


def test_gradient_checkpointing_needs_decoder_layers():
    from grpo.logprobs import checkpoint_decoder_layers
    from grpo.run.errors import ModelError

    with pytest.raises(ModelError, match="gradient_checkpointing: Linear has no decoder layers to checkpoint"):
        checkpoint_decoder_layers(torch.nn.Linear(2, 2))
