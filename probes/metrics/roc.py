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
negatives. Used by the ablation study (``probes.interventions.ablation``), the linear probes and
the reader-study statistics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from probes.core.errors import ShapeError
from probes.core.result import Result, tidy
from probes.core.validate import as_labels, check_alpha
from probes.metrics.values import numeric, warn_reasons

__all__ = ["auc", "delong_placements", "delong_cov", "delong", "DeLongResult"]


def _binary_labels(labels: Any, n: int, name: str = "labels",
                   scores_name: str = "scores") -> tuple[np.ndarray, str]:
    """1-D 0/1 labels of ``n`` cases as bool, and why an AUC is undefined ("" when both classes occur)."""
    if np.ndim(labels) != 1:
        raise ShapeError(name, f"shape {np.shape(labels)}", "(n,)",
                         message=f"{name} must be 1-D, got shape {np.shape(labels)}")
    if np.shape(labels)[0] != n:
        raise ShapeError(name, f"{np.shape(labels)[0]} entries", f"{n} (one per score of {scores_name})",
                         message=f"{name} has {np.shape(labels)[0]} entries for {n} cases ({scores_name} has {n})")
    y = as_labels(labels, n, name)
    if y.min() == y.max():
        return y.astype(bool), f"{name} has a single class ({int(y[0])} for all {y.size} cases)"
    return y.astype(bool), ""


def _scores(scores: Any, name: str = "scores") -> np.ndarray:
    s = numeric(scores, name)
    if s.ndim == 1:
        s = s[None]
    if s.ndim != 2 or s.shape[1] == 0:
        raise ShapeError(name, f"shape {s.shape}", "(n,) or (k, n) with n >= 1",
                         message=f"{name} must be (n,) or (k, n), got shape {s.shape}")
    return s


def _midrank(x: np.ndarray) -> np.ndarray:
    """Midranks (1-based, ties get their average rank) along the last axis."""
    return stats.rankdata(x, method="average", axis=-1)


def _placements(t: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """V10 (k, m) and V01 (k, n); NaN where the other class is absent."""
    x, y = s[:, t], s[:, ~t]
    m, n = x.shape[1], y.shape[1]
    if m == 0 or n == 0:
        return np.full(x.shape, np.nan), np.full(y.shape, np.nan)
    pooled = _midrank(np.concatenate([x, y], axis=1))
    v10 = (pooled[:, :m] - _midrank(x)) / n
    v01 = 1.0 - (pooled[:, m:] - _midrank(y)) / m
    return v10, v01


def _cov(t: np.ndarray, s: np.ndarray, why: str) -> tuple[np.ndarray, np.ndarray, str]:
    """AUCs (k,), DeLong covariance (k, k) and why they are NaN ("" when defined)."""
    v10, v01 = _placements(t, s)
    m, n = v10.shape[1], v01.shape[1]
    k = s.shape[0]
    if why:
        return np.full(k, np.nan), np.full((k, k), np.nan), why
    aucs = v10.mean(axis=1)
    if m < 2 or n < 2:
        return aucs, np.full((k, k), np.nan), f"{m} positive(s) and {n} negative(s); DeLong needs >= 2 of each"
    cov = np.atleast_2d(np.cov(v10, ddof=1)) / m + np.atleast_2d(np.cov(v01, ddof=1)) / n
    return aucs, cov, ""


def delong_placements(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Structural components V10 (k, m) per positive and V01 (k, n) per negative.

    V10_i = fraction of negatives scored below positive i (ties ½); V01_j = fraction of
    positives scored above negative j (ties ½). Computed with midranks (Sun & Xu 2014):
    V10_i = (R_i − R^X_i) / n, V01_j = 1 − (R_j − R^Y_j) / m, R the midrank in the pooled
    sample and R^X, R^Y the midranks within positives / negatives. ``labels``: 0/1 per case;
    ``scores``: (n_cases,) or (k, n_cases). With one class only, the components of the cases
    present are NaN (one ``UndefinedValueWarning``).
    """
    s = _scores(scores)
    t, why = _binary_labels(labels, s.shape[1])
    warn_reasons("delong_placements", [why])
    return _placements(t, s)


def delong_cov(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (k,) and DeLong covariance (k, k) of k scores on the same cases.

    Cov = S10 / m + S01 / n (sample covariances of the structural components, ddof = 1).
    One class only → NaN AUCs and covariance; fewer than 2 positives or 2 negatives → NaN
    covariance (one ``UndefinedValueWarning`` says why).
    """
    s = _scores(scores)
    t, why = _binary_labels(labels, s.shape[1])
    aucs, cov, why = _cov(t, s, why)
    warn_reasons("delong_cov", [why])
    return aucs, cov


def auc(labels: Any, scores: Any) -> float:
    """Empirical (trapezoidal) AUC = Mann–Whitney U / (m·n), ties counted ½.

    One class only → NaN with one ``UndefinedValueWarning``.
    """
    s = _scores(scores)
    if s.shape[0] != 1:
        raise ShapeError("scores", f"{s.shape[0]} score vectors", "one (n,) vector",
                         message=f"auc takes one score vector, got {s.shape[0]}; use delong_cov for several")
    t, why = _binary_labels(labels, s.shape[1])
    warn_reasons("auc", [why])
    return float("nan") if why else float(_placements(t, s)[0].mean())


@dataclass(frozen=True)
class DeLongResult(Result):
    """AUC(s) with DeLong variances; ``diff`` = auc_a − auc_b (or auc_a − 0.5 for one score).

    ``z = diff / se`` and ``p`` is two-sided; ``ci_low``/``ci_high`` is the Wald CI of ``diff``
    (of AUC_a itself for one score: then ``ci_*`` bound AUC_a, and z/p test AUC_a = 0.5).
    ``to_frame()``: test (``"auc"`` for one score, ``"paired"`` or ``"unpaired"``), reason (why
    a value is NaN; "" where defined), metric (every numeric field: auc_a, auc_b, var_a, var_b,
    cov, diff, se, z, p, ci_low, ci_high, n_pos, n_neg, alpha; the one-score test leaves out
    auc_b, var_b and cov, which do not apply), value. ``reason`` says why values are NaN (one
    class only, fewer than 2 cases of a class).
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
    reason: str = ""
    kind: str = ""  # "auc", "paired" or "unpaired"; "" derives it from auc_b and paired

    @property
    def title(self) -> str:  # type: ignore[override]
        """The summary's heading: which test this is."""
        return {"auc": "AUC with DeLong interval", "paired": "DeLong test, paired (correlated) ROC curves",
                "unpaired": "DeLong test, unpaired (independent) ROC curves"}[self.test]

    @property
    def test(self) -> str:
        """``"auc"`` (one score against 0.5), ``"paired"`` or ``"unpaired"``."""
        if self.kind:
            return self.kind
        if np.isnan(self.auc_b):
            return "auc"
        return "paired" if self.paired else "unpaired"

    def to_frame(self) -> pd.DataFrame:
        """Long copy: test, metric (every numeric field), value."""
        skip = ("paired", "reason", "kind") + (("auc_b", "var_b", "cov") if self.test == "auc" else ())
        fields = {k: v for k, v in asdict(self).items() if k not in skip}
        values = np.asarray(list(fields.values()), dtype=np.float64)
        return tidy(pd.DataFrame({"test": self.test, "reason": np.where(np.isnan(values), self.reason, ""),
                                  "metric": list(fields), "value": values}))

    def _summary_tables(self) -> pd.DataFrame:
        keys = ("auc_a", "se", "ci_low", "ci_high", "z", "p") if self.test == "auc" else \
            ("auc_a", "auc_b", "diff", "se", "ci_low", "ci_high", "z", "p")
        return pd.DataFrame({k: [getattr(self, k)] for k in keys})

    def _notes(self) -> Sequence[str]:
        """One sentence in the style of pROC's ``roc.test``."""
        lvl = int(round(100 * (1 - self.alpha)))
        if self.test == "auc":
            return (f"AUC = {self.auc_a:.4f} (DeLong SE {self.se:.4f}; {lvl}% CI {self.ci_low:.4f} to "
                    f"{self.ci_high:.4f}); vs 0.5: z = {self.z:.3f}, p = {self.p:.4g}; "
                    f"{self.n_pos} positives, {self.n_neg} negatives",)
        kind = "paired (correlated)" if self.paired else "unpaired (independent)"
        return (f"DeLong test, {kind} ROC curves: AUC_a = {self.auc_a:.4f}, AUC_b = {self.auc_b:.4f}, "
                f"difference {self.diff:.4f} (SE {self.se:.4f}; {lvl}% CI {self.ci_low:.4f} to "
                f"{self.ci_high:.4f}), z = {self.z:.3f}, p = {self.p:.4g}",)


def _wald(diff: float, se: float, alpha: float) -> tuple[float, float, float, float]:
    q = stats.norm.ppf(1 - alpha / 2)
    if np.isnan(se) or np.isnan(diff):
        return np.nan, np.nan, np.nan, np.nan
    if se > 0:
        z = diff / se
        p = float(2 * stats.norm.sf(abs(z)))
    else:  # identical scores: no variance of the difference
        z, p = (0.0, 1.0) if diff == 0 else (np.copysign(np.inf, diff), 0.0)
    return z, p, diff - q * se, diff + q * se


def delong(labels: Any, scores_a: Any, scores_b: Any = None, *, labels_b: Any = None,
           alpha: float = 0.05) -> DeLongResult:
    """DeLong AUC inference: one AUC, two correlated AUCs, or two independent AUCs.

    - ``scores_b is None``: AUC_a with its DeLong SE, Wald CI of AUC_a, z/p for AUC_a = 0.5.
    - ``scores_b`` on the same cases (``labels_b is None``): paired test,
      Var(a − b) = Var a + Var b − 2 Cov(a, b) (DeLong et al. 1988).
    - ``labels_b`` given: scores_b are other cases; unpaired test, Var(a − b) = Var a + Var b.

    ``labels`` are the true classes (0/1) of the cases of ``scores_a``; intervals are
    ``1 − alpha``.
    """
    check_alpha(alpha)
    sa = _scores(scores_a, "scores_a")
    if sa.shape[0] != 1:
        raise ShapeError("scores_a", f"shape {np.shape(scores_a)}", "(n,)",
                         message=f"scores_a must be 1-D, got shape {np.shape(scores_a)}")
    t, why = _binary_labels(labels, sa.shape[1], scores_name="scores_a")
    m, n = int(t.sum()), int((~t).sum())
    if scores_b is None:
        if labels_b is not None:
            raise ShapeError("labels_b", "labels_b without scores_b", "scores_b for the cases of labels_b",
                             message="labels_b given without scores_b")
        (a,), cov, why = _cov(t, sa, why)
        se = float(np.sqrt(cov[0, 0]))
        z, p, _, _ = _wald(a - 0.5, se, alpha)
        q = stats.norm.ppf(1 - alpha / 2)
        warn_reasons("delong", [why])
        return DeLongResult(float(a), np.nan, float(cov[0, 0]), np.nan, np.nan, float(a - 0.5), se, z, p,
                            float(a - q * se), float(a + q * se), False, m, n, alpha, why, "auc")
    sb = _scores(scores_b, "scores_b")
    if sb.shape[0] != 1:
        raise ShapeError("scores_b", f"shape {np.shape(scores_b)}", "(n,)",
                         message=f"scores_b must be 1-D, got shape {np.shape(scores_b)}")
    if labels_b is None:
        if sb.shape[1] != sa.shape[1]:
            raise ShapeError("scores_b", f"{sb.shape[1]} cases", f"{sa.shape[1]} (the cases of scores_a)",
                             message=f"paired test needs scores on the same cases: scores_a has {sa.shape[1]}, "
                                     f"scores_b {sb.shape[1]} (pass labels_b for independent samples)")
        aucs, cov, why = _cov(t, np.concatenate([sa, sb]), why)
        var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
        va, vb, c, paired = cov[0, 0], cov[1, 1], cov[0, 1], True
    else:
        tb, why_b = _binary_labels(labels_b, sb.shape[1], "labels_b", "scores_b")
        (a,), ca, why = _cov(t, sa, why)
        (b,), cb, why_b = _cov(tb, sb, why_b)
        why = "; ".join(w for w in (why, why_b) if w)
        aucs = np.array([a, b])
        va, vb, c, paired = ca[0, 0], cb[0, 0], 0.0, False
        var = va + vb
    diff = float(aucs[0] - aucs[1])
    se = float(np.sqrt(max(var, 0.0))) if np.isfinite(var) else np.nan
    z, p, lo, hi = _wald(diff, se, alpha)
    warn_reasons("delong", [why])
    return DeLongResult(float(aucs[0]), float(aucs[1]), float(va), float(vb), float(c), diff, se, z, p,
                        float(lo), float(hi), paired, m, n, alpha, why, "paired" if paired else "unpaired")
