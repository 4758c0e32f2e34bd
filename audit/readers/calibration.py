"""Calibration of probabilities in a reader study: reliability curve, Brier score, ECE, recalibration.

Reliability curve on fixed bins (sklearn's binning: bin b holds e_b < p ≤ e_{b+1}, the first bin
also p = 0; empty bins are kept with n = 0, NaN rates and ``empty=True``), Brier score
(1/N) Σ (p − y)², ECE = Σ_b (n_b / N) |ȳ_b − p̄_b| over the same bins, and logistic
recalibration (Cox 1958; Van Calster et al. 2016): slope β and intercept α from
logit P(y=1) = α + β·logit(p), calibration-in-the-large from logit P(y=1) = a + offset logit(p)
(statsmodels GLM, binomial). Perfect calibration: β = 1, a = 0.

The array-level functions take ``labels`` (0/1 per case) and ``prob``; :func:`reads_calibration`
takes a reads table (:func:`audit.readers.reads.validate_reads`).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

from audit.readers.reads import ReadColumns, case_groups, check_scores, check_truth, single_class
from audit.readers.result import Layout, ReaderResult
from probes.core.errors import OptionError, warn_undefined
from probes.core.result import Result, Summary, long_frame, render_summary
from probes.core.validate import check_alpha, check_choice, check_int

__all__ = ["BIN_EDGES", "reliability_curve", "brier_score", "expected_calibration_error", "calibration_fit",
           "CalibrationFit", "reads_calibration", "ReadsCalibration"]

# binning strategy → bin edges (n_bins + 1) for probabilities p
BIN_EDGES: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "uniform": lambda p, n_bins: np.linspace(0.0, 1.0, n_bins + 1),
    "quantile": lambda p, n_bins: np.percentile(p, np.linspace(0, 100, n_bins + 1)),
}


def reliability_curve(labels: Any, prob: Any, *, n_bins: int = 10, strategy: str = "uniform") -> pd.DataFrame:
    """Reliability (calibration) curve on fixed bins, empty bins kept.

    Bin b holds e_b < p ≤ e_{b+1} (the first bin also p = e_0), as in sklearn
    ``calibration_curve``; uniform edges are linspace(0, 1, n_bins + 1), quantile edges are
    percentiles of ``prob``. Columns: bin, lower, upper, n, mean_prob (p̄_b), observed (ȳ_b),
    empty (n = 0: mean_prob and observed are NaN). Non-empty rows equal sklearn's output.
    """
    check_int(n_bins, "n_bins", 1)
    check_choice(strategy, "strategy", tuple(BIN_EDGES))
    t = check_truth(labels, "labels")
    p = check_scores(prob, t.size)
    edges = BIN_EDGES[strategy](p, n_bins)
    ids = np.searchsorted(edges[1:-1], p)
    n = np.bincount(ids, minlength=n_bins)
    sp = np.bincount(ids, weights=p, minlength=n_bins)
    sy = np.bincount(ids, weights=t, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mp = np.where(n > 0, sp / np.maximum(n, 1), np.nan)
        ob = np.where(n > 0, sy / np.maximum(n, 1), np.nan)
    return pd.DataFrame({"bin": np.arange(n_bins), "lower": edges[:-1], "upper": edges[1:], "n": n,
                         "mean_prob": mp, "observed": ob, "empty": n == 0})


def brier_score(labels: Any, prob: Any) -> float:
    """Brier score (1/N) Σ (p_i − y_i)² (= sklearn ``brier_score_loss``)."""
    t = check_truth(labels, "labels")
    p = check_scores(prob, t.size)
    return float(np.mean((p - t) ** 2))


def expected_calibration_error(labels: Any, prob: Any, *, n_bins: int = 10, strategy: str = "uniform") -> float:
    """ECE = Σ_b (n_b / N) |ȳ_b − p̄_b| over the bins of :func:`reliability_curve` (empty bins add 0)."""
    return _ece(reliability_curve(labels, prob, n_bins=n_bins, strategy=strategy))


def _ece(curve: pd.DataFrame) -> float:
    c = curve[~curve["empty"]]
    return float((c["n"] / c["n"].sum() * (c["observed"] - c["mean_prob"]).abs()).sum())


@dataclass(frozen=True)
class CalibrationFit(Result):
    """Logistic recalibration of probabilities p against outcomes y.

    ``slope``/``intercept``: β and α of logit P(y=1) = α + β·logit(p);
    ``citl``: calibration-in-the-large a of logit P(y=1) = a + offset(logit p).
    Perfect calibration: slope 1, citl 0 (and intercept 0). SEs are GLM (Fisher) SEs, CIs Wald.
    ``to_frame()``: reason (why a value is NaN, "" where defined), metric (n, n_clipped, slope,
    slope_se, ..., citl_ci_high), value.
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
    reason: str = ""  # why the NaN estimates are undefined ("" when all are defined)

    title: ClassVar[str] = "Calibration (logistic recalibration)"

    def to_frame(self) -> pd.DataFrame:
        """Every estimate long: reason, metric (the field name), value."""
        fields = {k: v for k, v in asdict(self).items() if k not in ("alpha", "reason")}
        out = long_frame(pd.DataFrame([fields]), [])
        out.insert(0, "reason", np.where(out["value"].isna(), self.reason, ""))
        return out

    def summary(self) -> Summary:
        """Slope, intercept and calibration-in-the-large with SEs and CIs."""
        lvl = f"{100 * (1 - self.alpha):g}"
        rows = pd.DataFrame([("slope", self.slope, self.slope_se, self.slope_ci_low, self.slope_ci_high),
                             ("intercept", self.intercept, self.intercept_se, np.nan, np.nan),
                             ("calibration-in-the-large", self.citl, self.citl_se, self.citl_ci_low,
                              self.citl_ci_high)],
                            columns=["parameter", "estimate", "se", f"{lvl}% CI low", f"{lvl}% CI high"])
        notes = [f"n = {self.n}" + (f", {self.n_clipped} probabilities of 0/1 clipped" if self.n_clipped else ""),
                 "perfect calibration: slope 1 and calibration-in-the-large 0"]
        if self.reason:
            notes.append(f"NaN: {self.reason}")
        return render_summary(self.title, rows, notes)


def calibration_fit(labels: Any, prob: Any, *, eps: float = 1e-6, alpha: float = 0.05) -> CalibrationFit:
    """Calibration slope, intercept and intercept-in-the-large by logistic recalibration.

    Fits (statsmodels GLM, binomial, logit link) y ~ 1 + logit(p) for slope β and intercept α,
    and y ~ 1 with offset logit(p) for calibration-in-the-large (Van Calster et al. 2016,
    J Clin Epidemiol 74:167). Probabilities of exactly 0 or 1 are clipped to [eps, 1 − eps]
    with a warning (their logit is infinite). Estimates that the data cannot identify are NaN
    with the reason in ``reason`` and one :class:`probes.core.errors.UndefinedValueWarning`:
    all of them when ``labels`` holds a single class; slope and intercept when ``prob`` is
    constant or separates the outcomes perfectly.
    """
    check_alpha(alpha)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 0.5:
        raise OptionError("eps", repr(eps), "a number in (0, 0.5)", message=f"eps must lie in (0, 0.5), got {eps!r}")
    t = check_truth(labels, "labels")
    p = check_scores(prob, t.size)
    fit = _fit(t, p, eps, alpha, stacklevel=3)
    warn_undefined("calibration_fit", [fit.reason])
    return fit


def _fit(t: np.ndarray, p: np.ndarray, eps: float, alpha: float, stacklevel: int = 2) -> CalibrationFit:
    """:func:`calibration_fit` on checked arrays, without the undefined-value warning."""
    n_clip = int(((p <= 0) | (p >= 1)).sum())
    if n_clip:
        warnings.warn(f"{n_clip} probabilities are exactly 0 or 1; clipped to [{eps:g}, {1 - eps:g}] "
                      "for the logit", RuntimeWarning, stacklevel=stacklevel)
        p = np.clip(p, eps, 1 - eps)
    nan = np.nan
    reason = single_class(t)
    if reason:  # every logistic fit diverges: nothing is identifiable
        return CalibrationFit(int(t.size), n_clip, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, alpha,
                              reason + "; calibration needs both classes")
    lp = np.log(p / (1 - p))
    fam = sm.families.Binomial()
    q = float(stats.norm.ppf(1 - alpha / 2))
    pos, neg = lp[t == 1], lp[t == 0]
    if np.ptp(lp) == 0:
        reason = "prob is constant: the calibration slope and intercept are undefined"
    elif pos.min() > neg.max() or neg.min() > pos.max():
        reason = "prob separates the outcomes perfectly: the calibration slope and intercept are not identifiable"
    if reason:
        b = bse = a1 = a1se = nan
    else:
        m1 = sm.GLM(t, sm.add_constant(lp), family=fam).fit()
        b, bse, a1, a1se = (float(m1.params[1]), float(m1.bse[1]), float(m1.params[0]), float(m1.bse[0]))
    m0 = sm.GLM(t, np.ones((t.size, 1)), family=fam, offset=lp).fit()
    a, ase = float(m0.params[0]), float(m0.bse[0])
    return CalibrationFit(int(t.size), n_clip, b, bse, b - q * bse, b + q * bse, a1, a1se,
                          a, ase, a - q * ase, a + q * ase, alpha, reason)


@dataclass(frozen=True, eq=False)
class ReadsCalibration(ReaderResult):
    """Calibration of a probability column of a reads table.

    Native tables: ``metrics``: group columns + reason (why the group's NaN estimates are
    undefined, "" when none is), n, brier, ece, slope, slope_se, intercept, citl, citl_se,
    n_clipped; ``curve``: group columns + the :func:`reliability_curve` columns.
    ``to_frame()`` is ``metrics`` long (group columns, metric, value).
    """

    metrics: pd.DataFrame
    curve: pd.DataFrame
    prob: str = "ai_prob"

    title: ClassVar[str] = "Calibration of probabilities"
    layouts: ClassVar[Mapping[str, Layout]] = {
        "metrics": Layout(("phase", "reader")),
        "curve": Layout(("phase", "reader", "bin"), drop=("empty",),
                        undefined={"mean_prob": "empty bin", "observed": "empty bin"})}

    def _notes(self) -> tuple[str, ...]:
        return (f"calibration of {self.prob}: Brier score, ECE over the reliability bins, logistic "
                "recalibration slope (1 = calibrated) and calibration-in-the-large (citl, 0 = calibrated)",)


def reads_calibration(reads: pd.DataFrame, columns: ReadColumns = ReadColumns(), *, prob: str = "ai_prob",
                      by: Sequence[str] | None = None, n_bins: int = 10, strategy: str = "uniform",
                      eps: float = 1e-6) -> ReadsCalibration:
    """Reliability curve, Brier, ECE and logistic recalibration of a probability column.

    ``prob`` is "ai_prob" (default) or "score" (when readers give probabilities). ``by``
    defaults to no grouping for ai_prob (one value per case: reads repeating a case are
    collapsed, and must agree) and to ("phase", "reader") for score. A group whose recalibration
    is undefined (one truth class, a constant or perfectly separating probability) has NaN
    estimates with the reason in ``metrics["reason"]``; one
    :class:`probes.core.errors.UndefinedValueWarning` covers the call.
    """
    check_choice(prob, "prob", ("ai_prob", "score"))
    _, groups = case_groups(reads, columns, prob, by)
    curves, mets, reasons = [], [], []
    for lab, g in groups:
        t, p = g["truth"].to_numpy(), g[prob].to_numpy()
        c = reliability_curve(t, p, n_bins=n_bins, strategy=strategy)
        for k, v in reversed(lab.items()):
            c.insert(0, k, v)
        curves.append(c)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            fit = _fit(t, p, eps, 0.05)
        for w in caught:
            warnings.warn(f"{prob}, group {lab or 'all'}: {w.message}", RuntimeWarning, stacklevel=2)
        if fit.reason:
            reasons.append(fit.reason)
        mets.append({**lab, "reason": fit.reason, "n": fit.n, "brier": float(np.mean((p - t) ** 2)),
                     "ece": _ece(c), "slope": fit.slope, "slope_se": fit.slope_se, "intercept": fit.intercept,
                     "citl": fit.citl, "citl_se": fit.citl_se, "n_clipped": fit.n_clipped})
    warn_undefined("reads_calibration", reasons)
    return ReadsCalibration(pd.DataFrame(mets), pd.concat(curves, ignore_index=True), prob)
