"""Intervals and fits of the reproduction, against hand computation."""

import math

import numpy as np
import pytest

from eval.stats import bootstrap_mean_ci, frontier_at, r_squared, seed_mean_ci, upper_frontier


def test_bootstrap_of_a_constant_is_the_constant_and_covers_a_known_mean():
    assert bootstrap_mean_ci([2.0] * 10) == (2.0, 2.0, 2.0)
    # Bernoulli(0.5) items, N = 400: the interval is about mean ± 1.96 * 0.5 / 20 = ± 0.049.
    values = np.array([0.0, 1.0] * 200)
    mean, low, high = bootstrap_mean_ci(values, resamples=4000)
    assert mean == 0.5
    assert high - low == pytest.approx(2 * 1.96 * 0.5 / 20, rel=0.1)
    with pytest.raises(ValueError):
        bootstrap_mean_ci([])


def test_seed_interval_by_hand():
    # mean 2, s = 1, n = 3: half width 4.303 / sqrt(3) = 2.4843
    mean, low, high = seed_mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and high - mean == pytest.approx(4.303 / 3 ** 0.5) and mean - low == pytest.approx(high - mean)
    assert seed_mean_ci([5.0]) == (5.0, 5.0, 5.0)


def test_r_squared_by_hand():
    # A line fits y = 2x exactly: R² = 1.
    assert r_squared([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    x, y = [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]
    # slope = cov/var = (sum (x-2.5)(y-2.5)) / sum (x-2.5)² = (2.25 + -0.25 + -0.25 + 2.25) / 5 = 0.8
    # intercept = 2.5 - 0.8 * 2.5 = 0.5; fitted 1.3, 2.1, 2.9, 3.7; SSE = 0.09 + 0.81 + 0.81 + 0.09 = 1.8; SST = 5
    assert r_squared(x, y) == pytest.approx(1 - 1.8 / 5)
    with pytest.raises(ValueError):
        r_squared([1, 2], [1, 2])
    # Nothing varies in y: R² is undefined, not a number that looks like a fit.
    assert np.isnan(r_squared([1, 2, 3], [5, 5, 5]))


def test_upper_frontier_and_interpolation():
    points = [(0.1, 5.0), (0.2, 4.0), (0.15, 3.0), (0.3, 1.0), (0.3, 0.5)]
    frontier = upper_frontier(points)
    assert frontier == [(0.1, 5.0), (0.2, 4.0), (0.3, 1.0)]   # (0.15, 3) and (0.3, 0.5) are dominated
    assert frontier_at(frontier, 0.25) == pytest.approx(2.5)
    assert frontier_at(frontier, 0.05) is None and frontier_at(frontier, 0.35) is None
    # Down to the arm's lowest gain the first point's capability is reachable: held flat.
    assert frontier_at(frontier, 0.05, lowest_x=0.02) == 5.0 and frontier_at(frontier, 0.01, lowest_x=0.02) is None
    assert frontier_at([], 0.1) is None and frontier_at([], 0.1, lowest_x=0.0) is None


def test_student_t_p_values_match_the_table():
    from eval.stats import student_t_two_sided_p

    # the 97.5% quantiles of Student's t (T_975) leave 5% in the two tails
    assert student_t_two_sided_p(2.228, 10) == pytest.approx(0.05, abs=1e-4)
    assert student_t_two_sided_p(12.706, 1) == pytest.approx(0.05, abs=1e-4)
    # t = 1 with 1 df: P(|T| >= 1) = 1 - 2 atan(1) / pi = 0.5 (the Cauchy distribution)
    assert student_t_two_sided_p(1.0, 1) == pytest.approx(0.5, abs=1e-12)
    assert student_t_two_sided_p(0.0, 5) == pytest.approx(1.0)


def test_welch_test_by_hand():
    from eval.stats import welch_t_test

    # s_a² / n_a = 1/3, s_b² / n_b = (5/3)/4 = 5/12; se = sqrt(3/4); t = -3.5 / se
    result = welch_t_test([1, 2, 3], [4, 5, 6, 7])
    assert result["diff"] == pytest.approx(-3.5)
    assert result["t"] == pytest.approx(-3.5 / math.sqrt(0.75))
    # df = (3/4)² / ((1/3)² / 2 + (5/12)² / 3) = 0.5625 / (1/18 + 25/432)
    assert result["df"] == pytest.approx(0.5625 / (1 / 18 + 25 / 432))
    assert 0.005 < result["p"] < 0.02


def test_sign_flip_test_separates_a_shift_from_noise():
    from eval.stats import paired_sign_flip_p

    # only the all-equal sign patterns (2 of 2^12) are as extreme as the data
    assert paired_sign_flip_p([1.0] * 12) < 0.01
    assert paired_sign_flip_p([1.0, -1.0] * 10) == pytest.approx(1.0)          # mean 0: every flip is as extreme


def test_items_and_seeds_bootstrap_carries_seed_noise():
    from eval.stats import bootstrap_mean_ci, items_and_seeds_bootstrap_ci

    rng = np.random.default_rng(1)
    items = rng.normal(size=200)
    # three seeds that differ by a constant shift: item resampling alone cannot see it
    scores = np.stack([items - 1.0, items, items + 1.0])
    mean, low, high = items_and_seeds_bootstrap_ci(scores)
    _, item_low, item_high = bootstrap_mean_ci(scores.mean(axis=0))
    assert mean == pytest.approx(items.mean())
    assert (high - low) > 3 * (item_high - item_low)


def test_adjusted_r_squared_and_its_interval():
    from eval.stats import adjusted_r_squared, r_squared_ci

    # 1 - (1 - 0.5) * 9 / 7
    assert adjusted_r_squared(0.5, 10, 2) == pytest.approx(1 - 0.5 * 9 / 7)
    x = np.arange(20.0)
    r2, low, high = r_squared_ci(x, 2 * x + 1)
    assert (r2, low, high) == pytest.approx((1.0, 1.0, 1.0))
    noisy = 2 * x + np.random.default_rng(0).normal(scale=5, size=20)
    r2, low, high = r_squared_ci(x, noisy)
    assert low < r2 < high
