import math

import pytest
import torch

from grpo.loss import (
    Normaliser,
    aggregate,
    clipped_surrogate,
    grpo_loss,
    importance_log_ratio,
    kl_estimate,
    truncated_importance_weights,
)

LOG_HALF, LOG_QUARTER = math.log(0.5), math.log(0.25)


@pytest.mark.parametrize(
    "estimator, expected",
    [
        # log_r = log(0.25) - log(0.5) = log(0.5) = -0.693147
        ("k1", 0.693147),                      # -log_r
        ("k2", 0.5 * 0.693147**2),             # 0.240227
        ("k3", 0.5 + 0.693147 - 1.0),          # r - log_r - 1 = 0.193147
    ],
)
def test_kl_estimators_by_hand(estimator, expected):
    value = kl_estimate(torch.tensor([[LOG_HALF]]), torch.tensor([[LOG_QUARTER]]), estimator)
    assert value.item() == pytest.approx(expected, abs=1e-5)


def test_kl_estimators_vanish_when_policies_agree():
    logp = torch.tensor([[-1.3, -0.2]])
    for estimator in ("k1", "k2", "k3"):
        assert torch.allclose(kl_estimate(logp, logp.clone(), estimator), torch.zeros(1, 2))


def test_k3_is_unbiased_for_the_true_kl():
    # Sampling from p, mean of k3 approaches KL(p || q).
    p = torch.tensor([0.7, 0.2, 0.1])
    q = torch.tensor([0.4, 0.4, 0.2])
    samples = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    k3 = kl_estimate(p.log()[samples], q.log()[samples], "k3")
    true_kl = float((p * (p / q).log()).sum())
    assert float(k3.mean()) == pytest.approx(true_kl, rel=0.02)


LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])


def test_sequence_aggregation_by_hand():
    # (6/3 + 4/1) / 2 = 3
    assert aggregate(LOSS, MASK, "seq-mean-token-mean", Normaliser.of(MASK, 4)).item() == pytest.approx(3.0)


def test_token_aggregation_by_hand():
    # (1 + 2 + 3 + 4) / 4 = 2.5
    assert aggregate(LOSS, MASK, "token-mean", Normaliser.of(MASK, 4)).item() == pytest.approx(2.5)


def test_dr_grpo_aggregation_by_hand():
    # 10 / (2 sequences * 4 max tokens) = 1.25
    assert aggregate(LOSS, MASK, "seq-mean-token-sum-norm", Normaliser.of(MASK, 4)).item() == pytest.approx(1.25)


def test_sequence_level_ratio_is_the_mean_token_log_ratio():
    logp = torch.tensor([[-1.0, -2.0, -3.0]])
    old = torch.tensor([[-1.5, -2.0, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    log_ratio = importance_log_ratio(logp, old, mask, "sequence")
    assert torch.allclose(log_ratio, torch.full((1, 3), 0.25))  # (0.5 + 0) / 2


def test_clipped_token_in_advantage_direction_gets_no_gradient():
    # rows: (ratio 1.5, A > 0) clipped; (ratio 0.5, A < 0) clipped;
    #       (ratio 1.5, A < 0) not clipped; (ratio 1.1, A > 0) inside the range.
    old = torch.zeros(4, 1)
    logp = torch.tensor([[math.log(1.5)], [math.log(0.5)], [math.log(1.5)], [math.log(1.1)]], requires_grad=True)
    advantages = torch.tensor([1.0, -1.0, -1.0, 1.0])
    loss, low, high = clipped_surrogate(logp - old, advantages, eps_low=0.2, eps_high=0.2)
    loss.sum().backward()
    grad = logp.grad.squeeze(1)
    assert grad[0] == 0 and grad[1] == 0
    # d/dlogp of -(ratio * A) = -ratio * A
    assert grad[2].item() == pytest.approx(1.5)
    assert grad[3].item() == pytest.approx(-1.1)
    assert high.squeeze(1).tolist() == [True, False, False, False]
    assert low.squeeze(1).tolist() == [False, True, False, False]
    # clipped values: -min(1.5, 1.2) = -1.2 ; -min(-0.5, -0.8) = 0.8 ; -min(-1.5, -1.2) = 1.5
    assert loss.squeeze(1).tolist() == pytest.approx([-1.2, 0.8, 1.5, -1.1])


def test_mu1_ratio_is_one_with_policy_gradient():
    # old = logp.detach(): loss value is -A, gradient is -A * mask / |o| (sequence mode)
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    mask = torch.ones(1, 2)
    loss, stats = grpo_loss(logp, logp.detach(), None, torch.tensor([2.0]), mask, Normaliser.of(mask, 2))
    loss.backward()
    assert loss.item() == pytest.approx(-2.0)
    assert logp.grad.tolist() == [[-1.0, -1.0]]
    assert stats["clip_region"].item() == 0.0


def _random_batch(seed: int, rows: int = 8, time: int = 6):
    generator = torch.Generator().manual_seed(seed)
    logp = (-torch.rand(rows, time, generator=generator) * 3).requires_grad_(True)
    old = (logp.detach() + 0.3 * torch.randn(rows, time, generator=generator))
    ref = logp.detach() + 0.3 * torch.randn(rows, time, generator=generator)
    advantages = torch.randn(rows, generator=generator)
    lengths = torch.randint(1, time + 1, (rows,), generator=generator)
    mask = (torch.arange(time).unsqueeze(0) < lengths.unsqueeze(1)).float()
    return logp, old, ref, advantages, mask


@pytest.mark.parametrize("aggregation", ["seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_gradient_accumulation_matches_one_big_batch(aggregation, level):
    logp, old, ref, advantages, mask = _random_batch(seed=1)
    settings = dict(beta=0.1, aggregation=aggregation, importance_level=level, eps_low=0.2, eps_high=0.28)
    norm = Normaliser.of(mask, max_new_tokens=6)

    full_loss, _ = grpo_loss(logp, old, ref, advantages, mask, norm, **settings)
    (full_grad,) = torch.autograd.grad(full_loss, logp)

    accumulated_grad = torch.zeros_like(logp)
    accumulated_loss = 0.0
    for rows in (slice(0, 3), slice(3, 5), slice(5, 8)):  # uneven micro-batches
        micro_loss, _ = grpo_loss(logp[rows], old[rows], ref[rows], advantages[rows], mask[rows], norm, **settings)
        accumulated_grad += torch.autograd.grad(micro_loss, logp)[0]
        accumulated_loss += micro_loss.item()

    assert accumulated_loss == pytest.approx(full_loss.item(), abs=1e-6)
    assert torch.allclose(accumulated_grad, full_grad, atol=1e-7)


def test_micro_batch_local_normaliser_would_differ():
    # The guard against the known bug: normalising each micro-batch by its own
    # token count does NOT reproduce the full-batch token-mode gradient.
    logp, old, ref, advantages, mask = _random_batch(seed=2)
    full_loss, _ = grpo_loss(logp, old, ref, advantages, mask, Normaliser.of(mask, 6), aggregation="token-mean")
    (full_grad,) = torch.autograd.grad(full_loss, logp)
    local_grad = torch.zeros_like(logp)
    for rows in (slice(0, 2), slice(2, 8)):
        loss, _ = grpo_loss(logp[rows], old[rows], ref[rows], advantages[rows], mask[rows],
                            Normaliser.of(mask[rows], 6), aggregation="token-mean")
        local_grad += torch.autograd.grad(loss, logp)[0] / 2
    assert not torch.allclose(local_grad, full_grad, atol=1e-6)


def test_kl_term_adds_beta_times_k3():
    logp = torch.tensor([[LOG_HALF]], requires_grad=True)
    ref = torch.tensor([[LOG_QUARTER]])
    mask = torch.ones(1, 1)
    loss, stats = grpo_loss(logp, logp.detach(), ref, torch.tensor([0.0]), mask, Normaliser.of(mask, 1), beta=0.5)
    assert stats["kl"].item() == pytest.approx(0.193147, abs=1e-5)
    assert loss.item() == pytest.approx(0.5 * 0.193147, abs=1e-5)


def test_two_sided_clip_caps_negative_advantage_tokens_by_hand():
    # rows: (rho 5, A -1) capped: surrogate loss 5 -> delta * |A| = 3, no gradient;
    #       (rho 2, A -1) below delta: loss 2, gradient d(-rho A)/dlogp = rho |A| = 2;
    #       (rho 5, A +1) positive advantage: -min(5, 1.2) = -1.2, untouched (already clipped, no gradient);
    #       (rho 0.5, A -2) clipped low: -min(-1, 0.8 * -2) = 1.6 < cap 6, untouched, no gradient.
    from grpo.loss import two_sided_clip

    logp = torch.tensor([[math.log(5.0)], [math.log(2.0)], [math.log(5.0)], [math.log(0.5)]], requires_grad=True)
    advantages = torch.tensor([-1.0, -1.0, 1.0, -2.0])
    surrogate, _, _ = clipped_surrogate(logp, advantages, eps_low=0.2, eps_high=0.2)
    assert surrogate.squeeze(1).tolist() == pytest.approx([5.0, 2.0, -1.2, 1.6])
    loss, capped = two_sided_clip(surrogate, advantages, delta=3.0)
    assert loss.squeeze(1).tolist() == pytest.approx([3.0, 2.0, -1.2, 1.6])
    assert capped.squeeze(1).tolist() == [True, False, False, False]
    loss.sum().backward()
    assert logp.grad.squeeze(1).tolist() == pytest.approx([0.0, 2.0, 0.0, 0.0])


def test_grpo_loss_applies_delta_only_when_set():
    logp = torch.tensor([[math.log(5.0), math.log(2.0)]])
    mask = torch.ones(1, 2)
    args = (logp, torch.zeros(1, 2), None, torch.tensor([-1.0]), mask, Normaliser.of(mask, 2))
    plain, plain_stats = grpo_loss(*args, aggregation="token-mean")
    capped, capped_stats = grpo_loss(*args, aggregation="token-mean", delta=3.0)
    assert plain.item() == pytest.approx((5.0 + 2.0) / 2)
    assert capped.item() == pytest.approx((3.0 + 2.0) / 2)
    assert "clip_delta" not in plain_stats and capped_stats["clip_delta"].item() == pytest.approx(0.5)


def test_truncated_importance_weights_by_hand():
    # log(pi_train / pi_sampler) per token: [0.5, -0.2, 1.0 (masked)] and [0.9, 0.0, 0.0 (masked)]
    trainer = torch.tensor([[-1.0, -2.2, -0.5], [-0.1, -3.0, -1.0]])
    sampler = torch.tensor([[-1.5, -2.0, -1.5], [-1.0, -3.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    token = truncated_importance_weights(trainer, sampler, mask, cap=2.0, level="token")
    # exp(0.5) = 1.6487, exp(-0.2) = 0.8187, exp(0.9) = 2.4596 -> capped at 2
    torch.testing.assert_close(token, torch.tensor([[1.64872, 0.81873, 0.0], [2.0, 1.0, 0.0]]), atol=1e-5, rtol=0)
    sequence = truncated_importance_weights(trainer, sampler, mask, cap=2.0, level="sequence")
    # sequence 1: exp(0.5 - 0.2) = 1.34986 on its scored tokens; sequence 2: exp(0.9) capped at 2
    torch.testing.assert_close(sequence, torch.tensor([[1.34986, 1.34986, 0.0], [2.0, 2.0, 0.0]]), atol=1e-5,
                               rtol=0)
    # a log-ratio too large for exp stays capped, and masked positions stay 0 (no inf * 0 = nan)
    huge = truncated_importance_weights(trainer + 500.0, sampler, mask, cap=2.0, level="sequence")
    assert huge.tolist() == [[2.0, 2.0, 0.0], [2.0, 2.0, 0.0]]


def test_sampler_weights_scale_the_surrogate_and_not_the_kl():
    # mu = 1 (ratio 1): L_it = -w_it * A_i + beta * k3_it, token-mean over the 3 scored tokens
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -1.5]], requires_grad=True)
    ref = torch.tensor([[-1.2, -2.0], [-0.5, -1.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    advantages = torch.tensor([1.0, -2.0])
    weights = torch.tensor([[1.5, 0.5], [2.0, 0.0]])
    loss, _ = grpo_loss(logp, logp.detach(), ref, advantages, mask, Normaliser.of(mask, 2), beta=0.1,
                        aggregation="token-mean", sampler_weights=weights)
    k3 = lambda log_r: math.exp(log_r) - log_r - 1  # noqa: E731
    expected = (-1.5 * 1.0 + 0.1 * k3(-0.2)) + (-0.5 * 1.0 + 0.1 * k3(0.0)) + (-2.0 * -2.0 + 0.1 * k3(0.0))
    assert loss.item() == pytest.approx(expected / 3, abs=1e-6)
    loss.backward()
    # d/dlogp of -w A rho = -w A (rho = 1); of beta k3 = beta (1 - exp(ref - logp))
    assert logp.grad[0, 0].item() == pytest.approx((-1.5 + 0.1 * (1 - math.exp(-0.2))) / 3, abs=1e-6)
    assert logp.grad[1, 0].item() == pytest.approx(4.0 / 3, abs=1e-6)
