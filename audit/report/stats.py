"""The tests and intervals the findings use: paired and one-sample Wilcoxon signed-rank tests
(``scipy.stats.wilcoxon``) with percentile-bootstrap 95% CIs of their effect sizes (Efron &
Tibshirani 1993), seeded so that a rerun gives the same numbers."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["bootstrap_ci", "wilcoxon_p"]


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
