"""Reader-study curves: ROC per phase and reader, calibration, and decision curves.

Every function takes either plain arrays (``truth`` 0/1 and a score/probability per case) or a
tidy reads table (one row per reader × case × phase, checked by
:func:`audit.reads.validate_reads`) and returns tidy DataFrames.

ROC
    Empirical ROC points per reader × phase (``sklearn.metrics.roc_curve``, all thresholds
    kept) and a reader-averaged curve by *vertical averaging* (Fawcett 2006, §7.1): each
    reader's empirical curve is read as a function TPR_r(f) of the false-positive rate (linear
    between successive points; at an FPR where the curve jumps vertically the value is the top
    of the jump, and ``side="left"`` rows give the bottom), and the average is
    TPR(f) = (1/R) Σ_r TPR_r(f) on a common FPR grid (the union of every reader's FPRs, so the
    averaged polyline is exact). Its area equals the mean of the readers' empirical AUCs.
Calibration
    Reliability curve on fixed bins (sklearn's binning: bin b holds e_b < p ≤ e_{b+1}, the first
    bin also p = 0; empty bins are kept with n = 0, NaN rates and ``empty=True``), Brier score
    (1/N) Σ (p − y)², ECE = Σ_b (n_b / N) |ȳ_b − p̄_b| over the same bins, and logistic
    recalibration (Cox 1958; Van Calster et al. 2016): slope β and intercept α from
    logit P(y=1) = α + β·logit(p), calibration-in-the-large from logit P(y=1) = a + offset
    logit(p) (statsmodels GLM, binomial). Perfect calibration: β = 1, a = 0.
Decision curves
    Net benefit (Vickers & Elkin 2006) at threshold probability p_t:
    NB = TP/n − FP/n · p_t/(1 − p_t) − harm; treat-all NB = π − (1 − π)·p_t/(1 − p_t);
    treat-none NB = 0. A case is test-positive when p ≥ p_t and p > 0 (R ``dcurves``
    convention: a probability of exactly 0 is never treated, 1 always). Net interventions
    avoided (per patient) = (NB − NB_all) / (p_t/(1 − p_t)). Bands: percentile intervals over a
    seeded bootstrap that resamples patients (cases), or over resample indices you pass.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats
from sklearn.metrics import roc_curve

from audit.readers.reads import ReadColumns, ReadsError, validate_reads
from probes.metrics.roc import delong

__all__ = [
    "roc_points", "vertical_average", "reader_roc", "ReaderROC",
    "reliability_curve", "brier_score", "expected_calibration_error", "calibration_fit",
    "CalibrationFit", "reads_calibration", "ReadsCalibration",
    "net_benefit", "decision_curve", "reads_decision_curve", "bootstrap_indices",
]


# ----------------------------------------------------------------------------- input checks
def _truth(truth, name: str = "truth") -> np.ndarray:
    t = np.asarray(truth)
    if t.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {t.shape}")
    if t.size == 0:
        raise ValueError(f"{name} is empty")
    if t.dtype == bool:
        t = t.astype(int)
    if not np.issubdtype(t.dtype, np.number) or np.isnan(t.astype(float)).any():
        raise ValueError(f"{name} must be numeric 0/1 without NaN, got dtype {t.dtype}")
    bad = sorted(set(np.unique(t).tolist()) - {0, 1})
    if bad:
        raise ValueError(f"{name} must be binary 0/1, found values {bad[:5]}")
    return t.astype(int)


def _prob(prob, n: int, name: str = "prob", *, unit: bool = True) -> np.ndarray:
    try:
        p = np.asarray(prob, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric") from None
    if p.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {p.shape}")
    if p.shape[0] != n:
        raise ValueError(f"{name} has {p.shape[0]} values but truth has {n}")
    if not np.isfinite(p).all():
        raise ValueError(f"{name} contains NaN or inf ({int((~np.isfinite(p)).sum())} values)")
    if unit and ((p < 0) | (p > 1)).any():
        lo, hi = float(p.min()), float(p.max())
        raise ValueError(f"{name} must be probabilities in [0, 1], got range [{lo:g}, {hi:g}]")
    return p


def _both_classes(t: np.ndarray, what: str) -> None:
    if t.min() == t.max():
        raise ValueError(f"truth has a single class ({int(t[0])} for all {t.size} cases); {what} needs both")


# ----------------------------------------------------------------------------------- ROC
def roc_points(truth, scores) -> pd.DataFrame:
    """Empirical ROC points (threshold, fpr, tpr), every threshold kept (sklearn ``roc_curve``).

    A case is called positive when score ≥ threshold; the first row is (inf, 0, 0).
    """
    t = _truth(truth)
    s = _prob(scores, t.size, "scores", unit=False)
    _both_classes(t, "an ROC curve")
    fpr, tpr, thr = roc_curve(t, s, drop_intermediate=False)
    return pd.DataFrame({"threshold": thr, "fpr": fpr, "tpr": tpr})


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, grid: np.ndarray, side: str) -> np.ndarray:
    """TPR of one empirical curve at each grid FPR (top of a vertical jump; its bottom if side='left')."""
    u, inv = np.unique(fpr, return_inverse=True)
    top = np.full(u.size, -np.inf)
    bot = np.full(u.size, np.inf)
    np.maximum.at(top, inv, tpr)
    np.minimum.at(bot, inv, tpr)
    i = np.clip(np.searchsorted(u, grid, side="right") - 1, 0, u.size - 1)
    exact = u[i] == grid
    j = np.minimum(i + 1, u.size - 1)
    span = np.where(j > i, u[j] - u[i], 1.0)
    w = np.where(j > i, (grid - u[i]) / span, 0.0)
    out = top[i] + w * (bot[j] - top[i])
    if side == "left":
        # left limit: at an exact FPR the bottom of the jump; between points the same line
        out = np.where(exact, bot[i], out)
    else:
        out = np.where(exact, top[i], out)
    return out


def vertical_average(curves: Sequence[pd.DataFrame], grid: np.ndarray | None = None) -> pd.DataFrame:
    """Vertically averaged ROC curve (Fawcett 2006): TPR(f) = mean_r TPR_r(f) on a common grid.

    ``curves`` are frames with ``fpr``/``tpr`` columns (e.g. from :func:`roc_points`). ``grid``
    defaults to the union of all curves' FPRs, which makes the averaged polyline exact; at each
    grid FPR two rows are given where the average jumps (``side`` = "left" then "right").
    Returns columns fpr, tpr, side, n_curves. Trapezoidal area = mean of the curves' AUCs.
    """
    if len(curves) == 0:
        raise ValueError("vertical_average needs at least one curve")
    for k, c in enumerate(curves):
        if not {"fpr", "tpr"} <= set(c.columns):
            raise ValueError(f"curve {k} lacks fpr/tpr columns (has {list(c.columns)})")
    if grid is None:
        grid = np.unique(np.concatenate([np.asarray(c["fpr"], float) for c in curves]))
    grid = np.asarray(grid, float)
    if grid.ndim != 1 or ((grid < 0) | (grid > 1)).any():
        raise ValueError(f"grid must be 1-D FPRs in [0, 1], got shape {grid.shape}")
    grid = np.unique(grid)
    left = np.mean([_tpr_at(np.asarray(c["fpr"], float), np.asarray(c["tpr"], float), grid, "left")
                    for c in curves], axis=0)
    right = np.mean([_tpr_at(np.asarray(c["fpr"], float), np.asarray(c["tpr"], float), grid, "right")
                     for c in curves], axis=0)
    rows = []
    for f, lo, hi in zip(grid, left, right):
        if not np.isclose(lo, hi, rtol=0, atol=1e-15):
            rows.append((f, lo, "left"))
        rows.append((f, hi, "right"))
    out = pd.DataFrame(rows, columns=["fpr", "tpr", "side"])
    out["n_curves"] = len(curves)
    return out


@dataclass(frozen=True)
class ReaderROC:
    """ROC curves of a reader study.

    ``points``: phase, reader, threshold, fpr, tpr (empirical, per reader × phase);
    ``average``: phase, fpr, tpr, side, n_curves (vertical average over readers per phase);
    ``auc``: phase, reader, curve, n_pos, n_neg, auc, se, ci_low, ci_high (DeLong SE and Wald CI
    per reader; the row with ``reader = None``/``curve = "average"`` (n_pos/n_neg counting
    distinct cases) is the mean reader AUC, which
    equals the area under the vertically averaged curve — its fixed-reader uncertainty belongs
    to the MRMC analysis and is left NaN here).
    """

    points: pd.DataFrame
    average: pd.DataFrame
    auc: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        """The AUC table (one row per reader × phase plus the averaged curve per phase)."""
        return self.auc.copy()


def reader_roc(reads: pd.DataFrame, columns: ReadColumns = ReadColumns(), *, score: str = "score",
               alpha: float = 0.05) -> ReaderROC:
    """Empirical ROC per reader × phase and the reader-averaged curve per phase.

    ``score`` names the standard field used as the rating: "score" (default), "decision"
    (a binary call: a single operating point) or "ai_prob".
    """
    if score not in ("score", "decision", "ai_prob"):
        raise ValueError(f"score must be 'score', 'decision' or 'ai_prob', got {score!r}")
    r = validate_reads(reads, columns, need=("reader", "case", "truth", "phase", score), paired=False)
    pts, avg, aucs = [], [], []
    for ph, g in r.groupby("phase", observed=True, sort=True):
        curves = []
        for rd, gr in g.groupby("reader", sort=True):
            p = roc_points(gr["truth"].to_numpy(), gr[score].to_numpy())
            p.insert(0, "reader", rd)
            p.insert(0, "phase", ph)
            pts.append(p)
            curves.append(p)
            d = delong(gr["truth"].to_numpy(), gr[score].to_numpy(), alpha=alpha)
            aucs.append({"phase": ph, "reader": rd, "curve": "reader", "n_pos": d.n_pos, "n_neg": d.n_neg,
                         "auc": d.auc_a, "se": d.se, "ci_low": d.ci_low, "ci_high": d.ci_high})
        a = vertical_average(curves)
        a.insert(0, "phase", ph)
        avg.append(a)
        mean_auc = float(np.mean([x["auc"] for x in aucs if x["phase"] == ph]))
        gc = g.drop_duplicates("case")
        aucs.append({"phase": ph, "reader": None, "curve": "average", "n_pos": int(gc["truth"].sum()),
                     "n_neg": int((1 - gc["truth"]).sum()), "auc": mean_auc, "se": np.nan,
                     "ci_low": np.nan, "ci_high": np.nan})
    cat = r["phase"].dtype
    out = []
    for df in (pd.concat(pts, ignore_index=True), pd.concat(avg, ignore_index=True), pd.DataFrame(aucs)):
        df["phase"] = df["phase"].astype(cat)
        out.append(df)
    return ReaderROC(*out)


# --------------------------------------------------------------------------- calibration
def _bin_edges(p: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    if strategy == "quantile":
        return np.percentile(p, np.linspace(0, 100, n_bins + 1))
    raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")


def reliability_curve(truth, prob, *, n_bins: int = 10, strategy: str = "uniform") -> pd.DataFrame:
    """Reliability (calibration) curve on fixed bins, empty bins kept.

    Bin b holds e_b < p ≤ e_{b+1} (the first bin also p = e_0), as in sklearn
    ``calibration_curve``; uniform edges are linspace(0, 1, n_bins + 1), quantile edges are
    percentiles of ``prob``. Columns: bin, lower, upper, n, mean_prob (p̄_b), observed (ȳ_b),
    empty (n = 0: mean_prob and observed are NaN). Non-empty rows equal sklearn's output.
    """
    t = _truth(truth)
    p = _prob(prob, t.size)
    edges = _bin_edges(p, n_bins, strategy)
    ids = np.searchsorted(edges[1:-1], p)
    n = np.bincount(ids, minlength=n_bins)
    sp = np.bincount(ids, weights=p, minlength=n_bins)
    sy = np.bincount(ids, weights=t, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mp = np.where(n > 0, sp / np.maximum(n, 1), np.nan)
        ob = np.where(n > 0, sy / np.maximum(n, 1), np.nan)
    return pd.DataFrame({"bin": np.arange(n_bins), "lower": edges[:-1], "upper": edges[1:], "n": n,
                         "mean_prob": mp, "observed": ob, "empty": n == 0})


def brier_score(truth, prob) -> float:
    """Brier score (1/N) Σ (p_i − y_i)² (= sklearn ``brier_score_loss``)."""
    t = _truth(truth)
    p = _prob(prob, t.size)
    return float(np.mean((p - t) ** 2))


def expected_calibration_error(truth, prob, *, n_bins: int = 10, strategy: str = "uniform") -> float:
    """ECE = Σ_b (n_b / N) |ȳ_b − p̄_b| over the bins of :func:`reliability_curve` (empty bins add 0)."""
    c = reliability_curve(truth, prob, n_bins=n_bins, strategy=strategy)
    c = c[~c["empty"]]
    return float((c["n"] / c["n"].sum() * (c["observed"] - c["mean_prob"]).abs()).sum())


@dataclass(frozen=True)
class CalibrationFit:
    """Logistic recalibration of probabilities p against outcomes y.

    ``slope``/``intercept``: β and α of logit P(y=1) = α + β·logit(p);
    ``citl``: calibration-in-the-large a of logit P(y=1) = a + offset(logit p).
    Perfect calibration: slope 1, citl 0 (and intercept 0). SEs are GLM (Fisher) SEs, CIs Wald.
    """

    n: int
    n_clipped: int
    slope: float
    slope_se: float
    slope_ci_low: float
    slope_ci_high: float
    intercept: float
    intercept_se: float
    citl: float
    citl_se: float
    citl_ci_low: float
    citl_ci_high: float
    alpha: float = 0.05

    def to_frame(self) -> pd.DataFrame:
        """Long format: metric, estimate, se, ci_low, ci_high."""
        return pd.DataFrame([
            ("slope", self.slope, self.slope_se, self.slope_ci_low, self.slope_ci_high),
            ("intercept", self.intercept, self.intercept_se, np.nan, np.nan),
            ("citl", self.citl, self.citl_se, self.citl_ci_low, self.citl_ci_high),
        ], columns=["metric", "estimate", "se", "ci_low", "ci_high"])

    def summary(self) -> str:
        """One line: slope and calibration-in-the-large with CIs."""
        lvl = int(round(100 * (1 - self.alpha)))
        return (f"calibration slope {self.slope:.3f} ({lvl}% CI {self.slope_ci_low:.3f} to "
                f"{self.slope_ci_high:.3f}), intercept-in-the-large {self.citl:.3f} ({lvl}% CI "
                f"{self.citl_ci_low:.3f} to {self.citl_ci_high:.3f}); n = {self.n}"
                + (f", {self.n_clipped} probabilities of 0/1 clipped" if self.n_clipped else ""))


def calibration_fit(truth, prob, *, eps: float = 1e-6, alpha: float = 0.05) -> CalibrationFit:
    """Calibration slope, intercept and intercept-in-the-large by logistic recalibration.

    Fits (statsmodels GLM, binomial, logit link) y ~ 1 + logit(p) for slope β and intercept α,
    and y ~ 1 with offset logit(p) for calibration-in-the-large (Van Calster et al. 2016,
    J Clin Epidemiol 74:167). Probabilities of exactly 0 or 1 are clipped to [eps, 1 − eps]
    with a warning (their logit is infinite).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    if not 0 < eps < 0.5:
        raise ValueError(f"eps must lie in (0, 0.5), got {eps!r}")
    t = _truth(truth)
    p = _prob(prob, t.size)
    _both_classes(t, "a calibration fit")
    n_clip = int(((p <= 0) | (p >= 1)).sum())
    if n_clip:
        warnings.warn(f"{n_clip} probabilities are exactly 0 or 1; clipped to [{eps:g}, {1 - eps:g}] "
                      "for the logit", RuntimeWarning, stacklevel=2)
        p = np.clip(p, eps, 1 - eps)
    lp = np.log(p / (1 - p))
    if np.ptp(lp) == 0:
        raise ValueError("prob is constant; the calibration slope is undefined")
    fam = sm.families.Binomial()
    q = float(stats.norm.ppf(1 - alpha / 2))
    pos, neg = lp[t == 1], lp[t == 0]
    if pos.min() > neg.max() or neg.min() > pos.max():
        warnings.warn("prob separates the outcomes perfectly: the calibration slope and intercept are not "
                      "identifiable (set to NaN)", RuntimeWarning, stacklevel=2)
        b = bse = a1 = a1se = np.nan
    else:
        m1 = sm.GLM(t, sm.add_constant(lp), family=fam).fit()
        b, bse, a1, a1se = (float(m1.params[1]), float(m1.bse[1]), float(m1.params[0]), float(m1.bse[0]))
    m0 = sm.GLM(t, np.ones((t.size, 1)), family=fam, offset=lp).fit()
    a, ase = float(m0.params[0]), float(m0.bse[0])
    return CalibrationFit(int(t.size), n_clip, b, bse, b - q * bse, b + q * bse, a1, a1se,
                          a, ase, a - q * ase, a + q * ase, alpha)


@dataclass(frozen=True)
class ReadsCalibration:
    """Calibration of a probability column of a reads table.

    ``curve``: group columns + the :func:`reliability_curve` columns; ``metrics``: group
    columns + n, brier, ece, slope, slope_se, intercept, citl, citl_se, n_clipped.
    """

    curve: pd.DataFrame
    metrics: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        """The metrics table."""
        return self.metrics.copy()


def _per_case(r: pd.DataFrame, column: str, by: Sequence[str]) -> pd.DataFrame:
    """One row per (by…, case): checks that ``column`` is the same on every read of a case."""
    keys = [*by, "case"]
    spread = r.groupby(keys, observed=True)[column].agg(lambda s: s.max() - s.min())
    bad = spread[spread > 0]
    if len(bad):
        raise ReadsError(f"{column} differs between reads of {len(bad)} case(s) within groups {list(by) or 'all'}"
                         f", e.g. {bad.index[0]!r}; pass a finer by, e.g. by=('phase', 'reader')")
    return r.drop_duplicates(keys)


def reads_calibration(reads: pd.DataFrame, columns: ReadColumns = ReadColumns(), *, prob: str = "ai_prob",
                      by: Sequence[str] | None = None, n_bins: int = 10, strategy: str = "uniform",
                      eps: float = 1e-6) -> ReadsCalibration:
    """Reliability curve, Brier, ECE and logistic recalibration of a probability column.

    ``prob`` is "ai_prob" (default) or "score" (when readers give probabilities). ``by``
    defaults to no grouping for ai_prob (one value per case: reads repeating a case are
    collapsed, and must agree) and to ("phase", "reader") for score.
    """
    if prob not in ("ai_prob", "score"):
        raise ValueError(f"prob must be 'ai_prob' or 'score', got {prob!r}")
    by = (() if prob == "ai_prob" else ("phase", "reader")) if by is None else tuple(by)
    bad = [b for b in by if b not in ("phase", "reader")]
    if bad:
        raise ValueError(f"by may hold 'phase' and/or 'reader', got {bad}")
    r = validate_reads(reads, columns, need=("reader", "case", "truth", "phase", prob), paired=False)
    if ((r[prob] < 0) | (r[prob] > 1)).any():
        raise ReadsError(f"column {getattr(columns, prob)!r} ({prob}) must hold probabilities in [0, 1]")
    r = _per_case(r, prob, by)
    curves, mets = [], []
    groups = r.groupby(list(by), observed=True, sort=True) if by else [((), r)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        lab = dict(zip(by, key))
        t, p = g["truth"].to_numpy(), g[prob].to_numpy()
        c = reliability_curve(t, p, n_bins=n_bins, strategy=strategy)
        for k, v in reversed(lab.items()):
            c.insert(0, k, v)
        curves.append(c)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            fit = calibration_fit(t, p, eps=eps)
        for w in caught:
            warnings.warn(f"{prob}, group {lab or 'all'}: {w.message}", RuntimeWarning, stacklevel=2)
        cal = c[~c["empty"]]
        ece = float((cal["n"] / cal["n"].sum() * (cal["observed"] - cal["mean_prob"]).abs()).sum())
        mets.append({**lab, "n": fit.n, "brier": float(np.mean((p - t) ** 2)), "ece": ece,
                     "slope": fit.slope, "slope_se": fit.slope_se, "intercept": fit.intercept,
                     "citl": fit.citl, "citl_se": fit.citl_se, "n_clipped": fit.n_clipped})
    return ReadsCalibration(pd.concat(curves, ignore_index=True), pd.DataFrame(mets))


# ------------------------------------------------------------------------ decision curves
def _thresholds(thresholds) -> np.ndarray:
    th = np.atleast_1d(np.asarray(thresholds, dtype=float))
    if th.ndim != 1 or th.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence, got shape {th.shape}")
    if not np.isfinite(th).all() or ((th < 0) | (th >= 1)).any():
        raise ValueError(f"thresholds must lie in [0, 1) (net benefit divides by 1 − p_t), got range "
                         f"[{np.nanmin(th):g}, {np.nanmax(th):g}]")
    return th


def bootstrap_indices(n: int, n_boot: int, seed: int | None = 0) -> np.ndarray:
    """(n_boot, n) patient indices drawn with replacement (``numpy.random.default_rng(seed)``)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be ≥ 1, got {n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _weights(resample, n: int) -> np.ndarray:
    idx = np.asarray(resample)
    if idx.ndim != 2 or idx.shape[1] != n or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"resample must be an integer array (n_boot, {n}) of case indices, got "
                         f"shape {idx.shape} dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"resample indices must lie in [0, {n - 1}], got range [{idx.min()}, {idx.max()}]")
    b = idx.shape[0]
    flat = (np.arange(b)[:, None] * n + idx).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(float)


def _consequences(t: np.ndarray, p: np.ndarray, th: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """Weighted rates for weight rows w (k, n): pos_rate (k,), test_pos, tp, fp rates (k, T)."""
    pos = (p[None, :] >= th[:, None]) & (p[None, :] > 0)  # (T, n)
    tot = w.sum(axis=1)
    tp = w @ (pos & (t == 1)[None, :]).T.astype(float) / tot[:, None]
    fp = w @ (pos & (t == 0)[None, :]).T.astype(float) / tot[:, None]
    prev = (w @ t.astype(float)) / tot
    return prev, tp + fp, tp, fp


def net_benefit(truth, prob, thresholds, *, harm: float = 0.0) -> pd.DataFrame:
    """Net benefit of treating when prob ≥ p_t (Vickers & Elkin 2006).

    NB(p_t) = TP/n − FP/n · p_t/(1 − p_t) − harm, a case positive when p ≥ p_t and p > 0.
    Columns: threshold, n, pos_rate, test_pos_rate, tp_rate, fp_rate, harm, net_benefit.
    """
    return decision_curve(truth, {"model": prob}, thresholds, harm=harm, strategies=False).drop(
        columns=["model", "net_intervention_avoided"])


def decision_curve(truth, probs, thresholds=np.arange(0.0, 1.0, 0.01), *,
                   harm: float | Mapping[str, float] = 0.0, strategies: bool = True,
                   n_boot: int = 0, seed: int | None = 0, resample=None,
                   alpha: float = 0.05) -> pd.DataFrame:
    """Decision curves of one or more risk scores with treat-all / treat-none references.

    ``probs``: an array (named "model") or a mapping name → array, each on the cases of
    ``truth``. ``harm``: a number for every model or a mapping name → harm (treat all/none get
    no harm, as in R ``dcurves``). Rows per model ("all", "none" too when ``strategies``) ×
    threshold with columns model, threshold, n, pos_rate, test_pos_rate, tp_rate, fp_rate,
    harm, net_benefit, net_intervention_avoided = (NB − NB_all)/(p_t/(1 − p_t)) (NaN at p_t = 0).
    With ``n_boot`` > 0 (seeded patient bootstrap) or ``resample`` (B, n) case indices, adds
    nb_se (bootstrap SD) and nb_low/nb_high (percentile interval at level 1 − alpha).
    """
    t = _truth(truth)
    th = _thresholds(thresholds)
    if not isinstance(probs, Mapping):
        probs = {"model": probs}
    if len(probs) == 0:
        raise ValueError("probs is empty")
    reserved = {"all", "none"} & set(map(str, probs))
    if reserved and strategies:
        raise ValueError(f"model names {sorted(reserved)} are reserved for the treat-all/none strategies")
    ps = {str(k): _prob(v, t.size, f"probs[{k!r}]") for k, v in probs.items()}
    if isinstance(harm, Mapping):
        unknown = sorted(set(map(str, harm)) - set(ps))
        if unknown:
            raise ValueError(f"harm names unknown model(s) {unknown}; models are {list(ps)}")
        harms = {k: float(harm.get(k, 0.0)) for k in ps}
    else:
        harms = dict.fromkeys(ps, float(harm))
    if not np.isfinite(list(harms.values())).all():
        raise ValueError(f"harm must be finite, got {harms}")
    if resample is not None and n_boot:
        raise ValueError("give either n_boot or resample, not both")
    w = None
    if resample is not None:
        w = _weights(resample, t.size)
    elif n_boot:
        w = _weights(bootstrap_indices(t.size, n_boot, seed), t.size)
    return _curve(t, ps, harms, th, w, alpha, strategies)


def _curve(t: np.ndarray, ps: dict[str, np.ndarray], harms: dict[str, float], th: np.ndarray,
           w: np.ndarray | None, alpha: float, strategies: bool) -> pd.DataFrame:
    """Decision-curve rows for checked inputs; ``w`` (B, n) bootstrap case weights or None."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    if strategies:
        ps = {**ps, "all": np.ones(t.size), "none": np.zeros(t.size)}
        harms = {**harms, "all": 0.0, "none": 0.0}
    if w is not None:
        w = w[w.sum(axis=1) > 0]
        if w.shape[0] < 2:
            raise ValueError(f"the bootstrap needs ≥ 2 non-empty replicates, got {w.shape[0]}")
    odds = th / (1 - th)
    one = np.ones((1, t.size))
    _, _, tpa, fpa = _consequences(t, np.ones(t.size), th, one)
    nb_all = tpa[0] - fpa[0] * odds
    rows = []
    for name, p in ps.items():
        prev, tpos, tp, fp = _consequences(t, p, th, one)
        nb = tp[0] - fp[0] * odds - harms[name]
        with np.errstate(divide="ignore", invalid="ignore"):
            nia = np.where(odds > 0, (nb - nb_all) / np.where(odds > 0, odds, 1.0), np.nan)
        df = pd.DataFrame({"model": name, "threshold": th, "n": t.size, "pos_rate": prev[0],
                           "test_pos_rate": tpos[0], "tp_rate": tp[0], "fp_rate": fp[0],
                           "harm": harms[name], "net_benefit": nb, "net_intervention_avoided": nia})
        if w is not None:
            _, _, btp, bfp = _consequences(t, p, th, w)
            bnb = btp - bfp * odds - harms[name]
            df["nb_se"] = bnb.std(axis=0, ddof=1)
            df["nb_low"] = np.quantile(bnb, alpha / 2, axis=0)
            df["nb_high"] = np.quantile(bnb, 1 - alpha / 2, axis=0)
        rows.append(df)
    return pd.concat(rows, ignore_index=True)


def reads_decision_curve(reads: pd.DataFrame, columns: ReadColumns = ReadColumns(), *,
                         prob: str = "ai_prob", by: Sequence[str] | None = None,
                         thresholds=np.arange(0.0, 1.0, 0.01), harm: float = 0.0, n_boot: int = 0,
                         seed: int | None = 0, alpha: float = 0.05) -> pd.DataFrame:
    """Decision curves from a reads table, with bands from one shared patient bootstrap.

    ``prob``: "ai_prob" (the AI, one value per case; default ``by=()``), "decision" (each
    reader's binary call as a test; default ``by=("phase", "reader")``) or "score" (if readers
    give probabilities). Each bootstrap replicate resamples *cases* once (seeded) and applies
    the same draw to every group, so the bands of different phases/readers come from the same
    patients. Returns group columns + the :func:`decision_curve` columns (model = ``prob``,
    "all", "none").
    """
    if prob not in ("ai_prob", "decision", "score"):
        raise ValueError(f"prob must be 'ai_prob', 'decision' or 'score', got {prob!r}")
    by = (() if prob == "ai_prob" else ("phase", "reader")) if by is None else tuple(by)
    bad = [b for b in by if b not in ("phase", "reader")]
    if bad:
        raise ValueError(f"by may hold 'phase' and/or 'reader', got {bad}")
    th = _thresholds(thresholds)
    if not np.isfinite(harm):
        raise ValueError(f"harm must be finite, got {harm!r}")
    r = validate_reads(reads, columns, need=("reader", "case", "truth", "phase", prob), paired=False)
    if ((r[prob] < 0) | (r[prob] > 1)).any():
        raise ReadsError(f"column {getattr(columns, prob)!r} ({prob}) must lie in [0, 1] for a decision curve")
    r = _per_case(r, prob, by)
    cases = pd.Index(pd.unique(r["case"]))
    wall = _weights(bootstrap_indices(len(cases), n_boot, seed), len(cases)) if n_boot else None
    out = []
    groups = r.groupby(list(by), observed=True, sort=True) if by else [((), r)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        w = None if wall is None else wall[:, cases.get_indexer(g["case"])]
        d = _curve(g["truth"].to_numpy(), {prob: g[prob].to_numpy(float)}, {prob: float(harm)}, th, w,
                   alpha, True)
        for k, v in reversed(list(zip(by, key))):
            d.insert(0, k, v)
        out.append(d)
    return pd.concat(out, ignore_index=True)
