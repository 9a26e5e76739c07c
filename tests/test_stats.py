"""Intervals and fits of the reproduction, against hand computation."""

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
