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


# --------------------------------------------------------------------------
# Tests of a difference, and fits with their uncertainty
# --------------------------------------------------------------------------
def regularized_incomplete_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b) = B(x; a, b) / B(a, b), by Lentz's continued fraction (Numerical Recipes' betacf).

    The fraction converges fast for x < (a + 1) / (a + b + 2); otherwise the symmetry
    I_x(a, b) = 1 - I_{1-x}(b, a) is used.
    """
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must lie in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - regularized_incomplete_beta(1.0 - x, b, a)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * fraction / a


def student_t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom: I_{df / (df + t²)}(df / 2, 1 / 2)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    return regularized_incomplete_beta(df / (df + t * t), df / 2.0, 0.5)


def welch_t_test(a, b) -> dict[str, float]:
    """Welch's test of mean(a) - mean(b) for two independent samples (seeds of two arms).

        diff = mean(a) - mean(b),   se = sqrt(s_a² / n_a + s_b² / n_b),   t = diff / se
        df = se⁴ / ((s_a² / n_a)² / (n_a - 1) + (s_b² / n_b)² / (n_b - 1))     (Welch-Satterthwaite)

    Returns {"diff", "t", "df", "p"} (p two-sided). Needs at least two values on each side.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        raise ValueError(f"Welch's test needs two or more values per sample, got {a.size} and {b.size}")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    diff = float(a.mean() - b.mean())
    if va + vb == 0:
        return {"diff": diff, "t": math.copysign(math.inf, diff) if diff else 0.0, "df": float("nan"),
                "p": 0.0 if diff else 1.0}
    se = math.sqrt(float(va + vb))
    df = float((va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1)))
    t = diff / se
    return {"diff": diff, "t": t, "df": df, "p": student_t_two_sided_p(t, df)}


def paired_sign_flip_p(differences, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> float:
    """Two-sided p of a paired difference by random sign flips (a permutation test of mean d = 0).

        p = (1 + #{r : |mean(s_r * d)| >= |mean(d)|}) / (1 + resamples),   s_r: random signs in {-1, +1}^N

    Under the null hypothesis each item's difference is as likely to have either sign.
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0:
        raise ValueError("no differences to test")
    rng = np.random.default_rng(seed)
    signs = rng.choice((-1.0, 1.0), size=(resamples, d.size))
    extreme = np.abs((signs * d).mean(axis=1)) >= abs(d.mean()) - 1e-12
    return float((1 + extreme.sum()) / (1 + resamples))


def items_and_seeds_bootstrap_ci(scores, statistic=None, resamples: int = DEFAULT_RESAMPLES, level: float = 0.95,
                                 seed: int = 0) -> tuple[float, float, float]:
    """A statistic of a [seeds, items] score matrix and its interval, resampling seeds AND items.

    Each resample draws S seeds with replacement and N items with replacement
    (the same items for every seed drawn, since every seed is scored on the same
    items), then applies `statistic` to the [S, N] resampled matrix (default:
    its grand mean). Seed noise and item noise both enter the interval.
    Returns (statistic of the data, low, high).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or 0 in scores.shape:
        raise ValueError(f"need a [seeds, items] matrix, got shape {scores.shape}")
    statistic = statistic or (lambda matrix: float(matrix.mean()))
    rng = np.random.default_rng(seed)
    seeds, items = scores.shape
    values = [statistic(scores[rng.integers(0, seeds, seeds)][:, rng.integers(0, items, items)])
              for _ in range(resamples)]
    tail = (1.0 - level) / 2.0
    return statistic(scores), float(np.quantile(values, tail)), float(np.quantile(values, 1.0 - tail))


def adjusted_r_squared(r2: float, points: int, degree: int) -> float:
    """R² penalised for the fit's predictors: 1 - (1 - R²) (n - 1) / (n - p - 1), p = degree."""
    if points - degree - 1 <= 0:
        raise ValueError(f"{points} points leave no degrees of freedom for a degree-{degree} fit")
    return 1.0 - (1.0 - r2) * (points - 1) / (points - degree - 1)


def r_squared_ci(x, y, degree: int = 1, resamples: int = DEFAULT_RESAMPLES, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """R² of the degree-`degree` fit and its percentile-bootstrap interval over the (x, y) points.

    Resamples whose R² is undefined (y constant) are left out of the interval.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        pick = rng.integers(0, x.size, x.size)
        if np.unique(x[pick]).size > degree:
            values.append(r_squared(x[pick], y[pick], degree))
    values = np.asarray(values)
    values = values[np.isfinite(values)]
    tail = (1.0 - level) / 2.0
    return r_squared(x, y, degree), float(np.quantile(values, tail)), float(np.quantile(values, 1.0 - tail))
