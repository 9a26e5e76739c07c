"""Intervals and fits for the reproduction: bootstrap over test items, spread over seeds, R² of a law.

Every function takes plain arrays and returns plain floats, so a reader can
check each against a textbook formula.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_RESAMPLES = 2000
# Two-sided 97.5% quantiles of Student's t for 1..10 degrees of freedom (a 95% interval of a mean).
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def bootstrap_mean_ci(values, resamples: int = DEFAULT_RESAMPLES, level: float = 0.95,
                      seed: int = 0) -> tuple[float, float, float]:
    """The mean of `values` and its percentile-bootstrap interval over items.

        mean = (1/N) sum_i v_i;  interval = the (1-level)/2 and (1+level)/2 quantiles of the
        means of `resamples` samples of N items drawn with replacement.

    Pass differences d_i = a_i - b_i of paired scores (the same test items under
    two models) to get the interval of a gain. Returns (mean, low, high).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no values to bootstrap")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    return float(values.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def seed_mean_ci(values) -> tuple[float, float, float]:
    """Mean over seeds and its 95% Student-t interval: mean ± t_{0.975, n-1} * s / sqrt(n).

    s is the sample standard deviation (n - 1 in the denominator). Returns (mean, low, high);
    with one seed the interval is the point itself.
    """
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if values.size < 2:
        return mean, mean, mean
    half = T_975[min(values.size - 1, len(T_975)) - 1] * float(values.std(ddof=1)) / math.sqrt(values.size)
    return mean, mean - half, mean + half


def r_squared(x, y, degree: int = 1) -> float:
    """Coefficient of determination of the least-squares polynomial fit of y on x.

        R² = 1 - sum_i (y_i - f(x_i))² / sum_i (y_i - mean(y))²,   f = the degree-`degree` fit
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size <= degree + 1:
        raise ValueError(f"{x.size} points cannot test a degree-{degree} fit")
    if np.ptp(x) == 0:  # one x value: the best fit is the mean of y, which explains nothing
        return 0.0
    total = y - y.mean()
    if total @ total == 0:  # y does not vary: there is nothing to explain, R² is undefined
        return float("nan")
    residual = y - np.polyval(np.polyfit(x, y, degree), x)
    return float(1.0 - (residual @ residual) / (total @ total))


def upper_frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The Pareto-optimal points (higher x and higher y are better), sorted by x.

    A point is kept unless another has x >= its x and y >= its y, one of them strictly.
    """
    kept = [p for p in points
            if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points)]
    return sorted(set(kept))


def frontier_at(frontier: list[tuple[float, float]], x: float, lowest_x: float | None = None) -> float | None:
    """The frontier's y at `x` by linear interpolation between its points; None outside its x range.

    `lowest_x` (the smallest x of all the arm's points, dominated ones included) extends the
    range leftwards at the first point's y: a smaller x than that point's is reached with at
    least its y, since more x costs nothing there.
    """
    if not frontier:
        return None
    xs = [p[0] for p in frontier]
    start = xs[0] if lowest_x is None else min(lowest_x, xs[0])
    if x < start or x > xs[-1]:
        return None
    return float(np.interp(x, xs, [p[1] for p in frontier]))   # np.interp holds the end values flat
