"""The tests and intervals the findings use: paired and one-sample Wilcoxon signed-rank tests
(``scipy.stats.wilcoxon``), the two-sample Mann–Whitney U test (``scipy.stats.mannwhitneyu``)
and percentile-bootstrap 95% CIs of their effect sizes (Efron & Tibshirani 1993; two samples
resampled each within itself), seeded so that a rerun gives the same numbers."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["bootstrap_ci", "bootstrap_ci2", "mannwhitney_p", "wilcoxon_p"]


def bootstrap_ci(values: np.ndarray, stat: Callable[[np.ndarray], float], *, n_boot: int = 2000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap CI of ``stat`` over the rows of ``values`` (cases resampled with
    replacement, ``n_boot`` times, ``numpy.random.default_rng(seed)``); NaN for fewer than 2 rows."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(v), size=(n_boot, len(v)))
    boots = np.array([stat(v[i]) for i in idx])
    boots = boots[np.isfinite(boots)]
    if len(boots) == 0:
        return math.nan, math.nan
    a = (1 - level) / 2
    return float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))


def wilcoxon_p(d: np.ndarray, alternative: str = "two-sided") -> float:
    """p of the Wilcoxon signed-rank test of ``d`` (paired differences, or values against 0);
    NaN when fewer than 5 non-zero differences (too few for any p below 0.05 one-sided)."""
    from scipy.stats import wilcoxon

    d = np.asarray(d, dtype=float)
    d = d[np.isfinite(d)]
    if (d != 0).sum() < 5:
        return math.nan
    return float(wilcoxon(d, alternative=alternative).pvalue)


def bootstrap_ci2(a: np.ndarray, b: np.ndarray, stat: Callable[[np.ndarray, np.ndarray], np.ndarray], *,
                  n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap CI of a two-sample ``stat``: each sample resampled with replacement
    within itself (stratified, so both groups keep their sizes), ``n_boot`` times,
    ``numpy.random.default_rng(seed)``. ``stat(A, B)`` is vectorised: it gets the resamples as
    rows, ``A`` of shape (n_boot, len(a)) and ``B`` (n_boot, len(b)), and returns one value per
    row. NaN when a sample has fewer than 2 values."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    boots = np.asarray(stat(a[rng.integers(0, len(a), size=(n_boot, len(a)))],
                            b[rng.integers(0, len(b), size=(n_boot, len(b)))]), dtype=float)
    boots = boots[np.isfinite(boots)]
    if len(boots) == 0:
        return math.nan, math.nan
    q = (1 - level) / 2
    return float(np.quantile(boots, q)), float(np.quantile(boots, 1 - q))


def mannwhitney_p(a: np.ndarray, b: np.ndarray, alternative: str = "two-sided") -> float:
    """p of the Mann–Whitney U test of ``a`` against ``b`` (``scipy.stats.mannwhitneyu``, its
    default method: exact for small samples without ties); NaN when the samples are too small
    for any two-sided p below 0.05 (2 / C(n_a + n_b, n_a) ≥ 0.05) or every value is the same."""
    from scipy.stats import mannwhitneyu

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0 or 2 / math.comb(len(a) + len(b), len(a)) >= 0.05:
        return math.nan
    if np.ptp(np.concatenate([a, b])) == 0:
        return math.nan
    return float(mannwhitneyu(a, b, alternative=alternative).pvalue)
