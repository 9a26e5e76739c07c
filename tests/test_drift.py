"""Drift: chunked per-token NLL and KL against a full-softmax computation."""

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from eval.drift import DriftResult, load_drift_texts, measure_drift, measure_task_kl, percentile_90, token_kl, token_nll
from grpo.run.errors import DataError, ModelError

TEXTS = [
    "人民日报一月一日发表新年献词。",
    "The committee met on Tuesday to discuss the budget for next year.",
    "短",
]


@pytest.fixture(scope="module")
def perturbed(tiny):
    """The tiny model with every weight moved by Gaussian noise (std 0.02): a 'tuned' model."""
    model, _ = tiny
    tuned = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in tuned.parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    return tuned.eval()


def naive_drift(base, tuned, tokenizer, text):
    """Full [T, V] log-softmax of each model on one text: NLL per token and KL(tuned || base)."""
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=True).input_ids
    with torch.no_grad():
        logp_base = torch.log_softmax(base(input_ids=ids).logits[0, :-1].float(), -1)
        logp_tuned = torch.log_softmax(tuned(input_ids=ids).logits[0, :-1].float(), -1)
    targets = ids[0, 1:]
    nll_base = -logp_base[torch.arange(len(targets)), targets]
    nll_tuned = -logp_tuned[torch.arange(len(targets)), targets]
    kl = (logp_tuned.exp() * (logp_tuned - logp_base)).sum(-1)
    return nll_base.numpy(), nll_tuned.numpy(), kl.numpy()


def test_token_nll_and_kl_on_hand_distributions():
    q = torch.tensor([[0.5, 0.5], [1.0, 0.0]]).clamp(min=1e-30).log()
    p = torch.tensor([[0.25, 0.75], [0.5, 0.5]]).log()
    # KL row 0: 0.5 log(0.5/0.25) + 0.5 log(0.5/0.75) = 0.5 log(4/3); row 1: log 2.
    assert token_kl(q, p).tolist() == pytest.approx([0.5 * math.log(4 / 3), math.log(2)], abs=1e-6)
    assert token_nll(p, torch.tensor([1, 0])).tolist() == pytest.approx([-math.log(0.75), math.log(2)])


def test_percentile_and_summary_by_hand():
    # p90 of 1..10: rank 0.9 * 9 = 8.1 -> 9 + 0.1 * (10 - 9) = 9.1.
    assert percentile_90(np.arange(1, 11)) == pytest.approx(9.1)
    result = DriftResult(
        nll_base=np.array([1.0, 2.0, 3.0, 4.0]),
        nll_tuned=np.array([1.5, 2.0, 4.0, 3.0]),
        kl=np.array([0.0, 0.1, 0.2, 0.3]),
        text_index=np.array([0, 0, 1, 1]),
    )
    summary = result.summary()
    # increases 0.5, 0, 1, -1: mean 0.125; sorted -1, 0, 0.5, 1: rank 2.7 -> 0.5 + 0.7 * 0.5 = 0.85.
    assert summary["nll_increase_mean"] == pytest.approx(0.125)
    assert summary["nll_increase_p90"] == pytest.approx(0.85)
    # KL 0..0.3: mean 0.15, rank 2.7 -> 0.2 + 0.7 * 0.1 = 0.27.
    assert summary["kl_mean"] == pytest.approx(0.15)
    assert summary["kl_p90"] == pytest.approx(0.27)
    assert (summary["tokens"], summary["texts"]) == (4, 2)
    assert summary["nll_base"] == pytest.approx(2.5)


@pytest.mark.parametrize("chunk_tokens", [3, 1024])
def test_chunked_drift_equals_full_softmax(tiny, perturbed, chunk_tokens):
    model, tokenizer = tiny
    result = measure_drift(model, perturbed, tokenizer, TEXTS, batch_size=2, chunk_tokens=chunk_tokens,
                           progress=False)
    expected = [naive_drift(model, perturbed, tokenizer, text) for text in TEXTS]
    nll_base, nll_tuned, kl = (np.concatenate(parts) for parts in zip(*expected))
    assert result.kl.shape == kl.shape
    np.testing.assert_allclose(result.nll_base, nll_base, atol=1e-4)
    np.testing.assert_allclose(result.nll_tuned, nll_tuned, atol=1e-4)
    np.testing.assert_allclose(result.kl, kl, atol=1e-5)
    counts = [len(part[0]) for part in expected]
    assert np.bincount(result.text_index).tolist() == counts
    assert result.summary()["kl_mean"] > 0


def test_identical_models_have_no_drift(tiny):
    model, tokenizer = tiny
    result = measure_drift(model, model, tokenizer, TEXTS, progress=False)
    assert (result.kl == 0).all()
    assert (result.nll_increase == 0).all()
    summary = result.summary()
    assert summary["kl_p90"] == 0 and summary["nll_increase_mean"] == 0


def test_truncation_to_max_tokens(tiny):
    model, tokenizer = tiny
    result = measure_drift(model, model, tokenizer, [TEXTS[1]], max_tokens=5, progress=False)
    assert result.kl.size == 4  # 5 tokens kept, the first has no context


def test_mismatched_vocabularies_and_empty_input_are_user_errors(tiny):
    model, tokenizer = tiny
    other = copy.deepcopy(model)
    other.resize_token_embeddings(model.config.vocab_size + 8)
    with pytest.raises(ModelError, match="same tokenizer"):
        measure_drift(model, other, tokenizer, TEXTS, progress=False)
    with pytest.raises(DataError, match="no drift texts"):
        measure_drift(model, model, tokenizer, [], progress=False)


def test_drift_texts_from_jsonl_or_cmrc_passages():
    fixtures = Path(__file__).parent / "fixtures" / "eval"
    texts = load_drift_texts(fixtures / "drift_texts.jsonl")
    assert len(texts) == 3 and texts[0].startswith("今年春天")
    assert load_drift_texts(fixtures / "drift_texts.jsonl", limit=2) == texts[:2]
    # The CMRC fixture has three questions over two distinct passages.
    passages = load_drift_texts(fixtures / "cmrc2018_tiny.json")
    assert len(passages) == 2 and passages[1].startswith("《红楼梦》")


def test_forward_kl_on_drift_texts_matches_full_softmax(tiny, perturbed):
    model, tokenizer = tiny
    result = measure_drift(model, perturbed, tokenizer, TEXTS[:2], batch_size=2, chunk_tokens=3, progress=False)
    expected = []
    for text in TEXTS[:2]:
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=True).input_ids
        with torch.no_grad():
            logp_base = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            logp_tuned = torch.log_softmax(perturbed(input_ids=ids).logits[0, :-1].float(), -1)
        expected.append((logp_base.exp() * (logp_base - logp_tuned)).sum(-1).numpy())
    np.testing.assert_allclose(result.kl_forward, np.concatenate(expected), atol=1e-5)
    assert result.summary()["kl_forward_mean"] == pytest.approx(float(np.concatenate(expected).mean()), abs=1e-6)


def test_task_kl_sums_both_directions_over_response_tokens_only(tiny, perturbed):
    """Against one full pass per (prompt, response): KL at the response positions, summed per response."""
    model, tokenizer = tiny
    prompts = ["Translate: cat ->", "A much longer prompt about the weather today ->"]
    responses = [tokenizer(text, add_special_tokens=False).input_ids for text in (" 猫 猫", " sunny and warm")]
    result = measure_task_kl(model, perturbed, tokenizer, prompts, responses, batch_size=2, chunk_tokens=2,
                             progress=False)
    forward, reverse = [], []
    for prompt, response in zip(prompts, responses):
        prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
        response_ids = response
        ids = torch.tensor([prompt_ids + response_ids])
        with torch.no_grad():
            logp_base = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
            logp_tuned = torch.log_softmax(perturbed(input_ids=ids).logits[0].float(), -1)
        scored = slice(len(prompt_ids) - 1, len(prompt_ids) + len(response_ids) - 1)  # positions predicting y
        forward.append(float((logp_base.exp() * (logp_base - logp_tuned)).sum(-1)[scored].sum()))
        reverse.append(float((logp_tuned.exp() * (logp_tuned - logp_base)).sum(-1)[scored].sum()))
    np.testing.assert_allclose(result.kl_per_text(forward=True), forward, rtol=1e-4)
    np.testing.assert_allclose(result.kl_per_text(forward=False), reverse, rtol=1e-4)
    assert forward[0] != pytest.approx(reverse[0])  # the two directions differ: the test can tell them apart


def test_task_kl_of_a_model_with_itself_is_zero_and_empty_responses_are_left_out(tiny):
    model, tokenizer = tiny
    result = measure_task_kl(model, model, tokenizer, ["a ->", "b ->"], [[], [5, 6]], progress=False)
    assert set(result.text_index.tolist()) == {1}
    assert (result.kl_forward == 0).all() and (result.kl == 0).all()
    with pytest.raises(DataError, match="every base response is empty"):
        measure_task_kl(model, model, tokenizer, ["a ->"], [[]], progress=False)
