"""Empirical AUC and DeLong's nonparametric variance, covariance and tests.

References
----------
- DeLong, DeLong & Clarke-Pearson (1988), "Comparing the areas under two or more correlated
  receiver operating characteristic curves: a nonparametric approach", Biometrics 44:837.
- Sun & Xu (2014), "Fast implementation of DeLong's algorithm for comparing the areas under
  correlated receiver operating characteristic curves", IEEE SPL 21:1389 (the midrank trick
  used here: O(n log n) per score instead of O(m·n)).

With m positives X_i and n negatives Y_j, ψ(x, y) = 1[x > y] + ½·1[x = y]:
    AUC = (1/mn) Σ_i Σ_j ψ(X_i, Y_j)           (= Mann–Whitney U / mn, trapezoidal area)
    V10_i = (1/n) Σ_j ψ(X_i, Y_j),  V01_j = (1/m) Σ_i ψ(X_i, Y_j)   (structural components)
    Cov(AUC_r, AUC_s) = S10_rs / m + S01_rs / n,
where S10, S01 are the sample covariances (ddof = 1) of the components across positives and
negatives. Used by the ablation study (`probes.ablation`) and the reader-study statistics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["auc", "delong_placements", "delong_cov", "delong", "DeLongResult"]


def _truth(truth, n: int | None = None, name: str = "truth") -> np.ndarray:
    t = np.asarray(truth)
    if t.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {t.shape}")
    if n is not None and t.shape[0] != n:
        raise ValueError(f"{name} has {t.shape[0]} cases but the scores have {n}")
    if t.dtype == bool:
        t = t.astype(int)
    if not np.issubdtype(t.dtype, np.number) or np.isnan(t.astype(float)).any():
        raise ValueError(f"{name} must be numeric 0/1 without NaN")
    bad = sorted(set(np.unique(t).tolist()) - {0, 1})
    if bad:
        raise ValueError(f"{name} must be binary 0/1, found values {bad[:5]}")
    if t.sum() == 0 or t.sum() == t.size:
        raise ValueError(f"{name} has a single class ({int(t[0])} for all {t.size} cases); AUC is undefined")
    return t.astype(bool)


def _scores(scores, name: str = "scores") -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    if s.ndim == 1:
        s = s[None]
    if s.ndim != 2:
        raise ValueError(f"{name} must be (n,) or (k, n), got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError(f"{name} contains NaN or inf ({int((~np.isfinite(s)).sum())} values)")
    return s


def _midrank(x: np.ndarray) -> np.ndarray:
    """Midranks (1-based, ties get their average rank) along the last axis."""
    return stats.rankdata(x, method="average", axis=-1)


def delong_placements(truth, scores) -> tuple[np.ndarray, np.ndarray]:
    """Structural components V10 (k, m) per positive and V01 (k, n) per negative.

    V10_i = fraction of negatives scored below positive i (ties ½); V01_j = fraction of
    positives scored above negative j (ties ½). Computed with midranks (Sun & Xu 2014):
    V10_i = (R_i − R^X_i) / n, V01_j = 1 − (R_j − R^Y_j) / m, R the midrank in the pooled
    sample and R^X, R^Y the midranks within positives / negatives.
    """
    s = _scores(scores)
    t = _truth(truth, s.shape[1])
    x, y = s[:, t], s[:, ~t]
    m, n = x.shape[1], y.shape[1]
    pooled = _midrank(np.concatenate([x, y], axis=1))
    v10 = (pooled[:, :m] - _midrank(x)) / n
    v01 = 1.0 - (pooled[:, m:] - _midrank(y)) / m
    return v10, v01


def delong_cov(truth, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (k,) and DeLong covariance (k, k) of k scores on the same cases.

    Cov = S10 / m + S01 / n (sample covariances of the structural components, ddof = 1).
    """
    v10, v01 = delong_placements(truth, scores)
    m, n = v10.shape[1], v01.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"DeLong covariance needs ≥ 2 positives and ≥ 2 negatives, got {m} and {n}")
    aucs = v10.mean(axis=1)
    cov = np.atleast_2d(np.cov(v10, ddof=1)) / m + np.atleast_2d(np.cov(v01, ddof=1)) / n
    return aucs, cov


def auc(truth, scores) -> float:
    """Empirical (trapezoidal) AUC = Mann–Whitney U / (m·n), ties counted ½."""
    v10, _ = delong_placements(truth, scores)
    if v10.shape[0] != 1:
        raise ValueError(f"auc takes one score vector, got {v10.shape[0]}; use delong_cov for several")
    return float(v10.mean())


@dataclass(frozen=True)
class DeLongResult:
    """AUC(s) with DeLong variances; ``diff`` = auc_a − auc_b (or auc_a − 0.5 for one score).

    ``z = diff / se`` and ``p`` is two-sided; ``ci_low``/``ci_high`` is the Wald CI of ``diff``
    (of AUC_a itself for one score: then ``ci_*`` bound AUC_a, and z/p test AUC_a = 0.5).
    """

    auc_a: float
    auc_b: float
    var_a: float
    var_b: float
    cov: float
    diff: float
    se: float
    z: float
    p: float
    ci_low: float
    ci_high: float
    paired: bool
    n_pos: int
    n_neg: int
    alpha: float = 0.05

    def to_frame(self) -> pd.DataFrame:
        """One row with every field."""
        return pd.DataFrame([asdict(self)])

    def summary(self) -> str:
        """Human-readable summary in the style of pROC's ``roc.test``."""
        lvl = int(round(100 * (1 - self.alpha)))
        if np.isnan(self.auc_b):
            return (f"AUC = {self.auc_a:.4f} (DeLong SE {self.se:.4f}; {lvl}% CI {self.ci_low:.4f} to "
                    f"{self.ci_high:.4f}); vs 0.5: z = {self.z:.3f}, p = {self.p:.4g}; "
                    f"{self.n_pos} positives, {self.n_neg} negatives")
        kind = "paired (correlated)" if self.paired else "unpaired (independent)"
        return (f"DeLong test, {kind} ROC curves: AUC_a = {self.auc_a:.4f}, AUC_b = {self.auc_b:.4f}, "
                f"difference {self.diff:.4f} (SE {self.se:.4f}; {lvl}% CI {self.ci_low:.4f} to "
                f"{self.ci_high:.4f}), z = {self.z:.3f}, p = {self.p:.4g}")


def _wald(diff: float, se: float, alpha: float) -> tuple[float, float, float, float]:
    q = stats.norm.ppf(1 - alpha / 2)
    if se > 0:
        z = diff / se
        p = float(2 * stats.norm.sf(abs(z)))
    else:  # identical scores: no variance of the difference
        z, p = (0.0, 1.0) if diff == 0 else (np.copysign(np.inf, diff), 0.0)
    return z, p, diff - q * se, diff + q * se


def delong(truth, scores_a, scores_b=None, *, truth_b=None, alpha: float = 0.05) -> DeLongResult:
    """DeLong AUC inference: one AUC, two correlated AUCs, or two independent AUCs.

    - ``scores_b is None``: AUC_a with its DeLong SE, Wald CI of AUC_a, z/p for AUC_a = 0.5.
    - ``scores_b`` on the same cases (``truth_b is None``): paired test,
      Var(a − b) = Var a + Var b − 2 Cov(a, b) (DeLong et al. 1988).
    - ``truth_b`` given: scores_b are other cases; unpaired test, Var(a − b) = Var a + Var b.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    sa = _scores(scores_a, "scores_a")
    if sa.shape[0] != 1:
        raise ValueError(f"scores_a must be 1-D, got shape {np.shape(scores_a)}")
    t = _truth(truth, sa.shape[1])
    m, n = int(t.sum()), int((~t).sum())
    if scores_b is None:
        if truth_b is not None:
            raise ValueError("truth_b given without scores_b")
        (a,), cov = delong_cov(truth, sa)
        se = float(np.sqrt(cov[0, 0]))
        z, p, _, _ = _wald(a - 0.5, se, alpha)
        q = stats.norm.ppf(1 - alpha / 2)
        return DeLongResult(float(a), np.nan, float(cov[0, 0]), np.nan, np.nan, float(a - 0.5), se, z, p,
                            float(a - q * se), float(a + q * se), False, m, n, alpha)
    sb = _scores(scores_b, "scores_b")
    if sb.shape[0] != 1:
        raise ValueError(f"scores_b must be 1-D, got shape {np.shape(scores_b)}")
    if truth_b is None:
        if sb.shape[1] != sa.shape[1]:
            raise ValueError(f"paired test needs scores on the same cases: scores_a has {sa.shape[1]}, "
                             f"scores_b {sb.shape[1]} (pass truth_b for independent samples)")
        aucs, cov = delong_cov(truth, np.concatenate([sa, sb]))
        var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
        va, vb, c, paired = cov[0, 0], cov[1, 1], cov[0, 1], True
    else:
        _truth(truth_b, sb.shape[1], "truth_b")
        (a,), ca = delong_cov(truth, sa)
        (b,), cb = delong_cov(truth_b, sb)
        aucs = np.array([a, b])
        va, vb, c, paired = ca[0, 0], cb[0, 0], 0.0, False
        var = va + vb
    diff = float(aucs[0] - aucs[1])
    se = float(np.sqrt(max(var, 0.0)))
    z, p, lo, hi = _wald(diff, se, alpha)
    return DeLongResult(float(aucs[0]), float(aucs[1]), float(va), float(vb), float(c), diff, se, z, p,
                        float(lo), float(hi), paired, m, n, alpha)
