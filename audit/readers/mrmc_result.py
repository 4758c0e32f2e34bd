"""The result of an MRMC analysis (Obuchowski–Rockette or Dorfman–Berbaum–Metz) and its Wald rows.

Both analyses (:func:`audit.readers.mrmc.mrmc_or`, :func:`audit.readers.dbm.mrmc_dbm`) end in
the same tables: per analysis (RRRC random readers and cases, FRRC fixed readers, RRFC fixed
cases) a global test, pairwise differences of test means and single-test intervals, built here
from an estimate, its standard error and its degrees of freedom:

    statistic = estimate / SE, two-sided p from Student t(df) (the normal when df = ∞),
    CI = estimate ± q_{1−α/2}·SE.

The text report follows the Iowa OR-DBM MRMC 2.51 / JAFROC 4.2.1 output (same quantities, same
digits).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from itertools import combinations
from typing import ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from audit.readers.result import Layout, ReaderResult
from probes.core.result import Summary, render_summary

__all__ = ["MRMCResult", "mrmc_tables", "wald_t", "pairwise_differences", "error_ratio"]

ANALYSES = {"RRRC": "Random readers and random cases", "FRRC": "Fixed readers and random cases",
            "RRFC": "Random readers and fixed cases"}


def wald_t(est: float, se: float, df: float, alpha: float) -> dict:
    """SE, df, stat ("t"/"z"), value = est/SE, two-sided p and CI est ± q·SE with Student t(df)
    (the normal when df is inf). SE ≤ 0 gives a RuntimeWarning and a NaN (est = 0) or ±inf statistic."""
    dist = stats.norm if np.isinf(df) else stats.t(df)
    q = float(dist.ppf(1 - alpha / 2))
    if not se > 0:
        warnings.warn(f"standard error is {se!r} (e.g. identical ratings in every test): the test statistic "
                      "is undefined (NaN) or infinite", RuntimeWarning, stacklevel=3)
    stat = est / se if se > 0 else (np.nan if est == 0 else np.copysign(np.inf, est))
    p = float(2 * dist.sf(abs(stat))) if np.isfinite(stat) else (0.0 if np.isinf(stat) else np.nan)
    return {"se": se, "df": df, "stat": "z" if np.isinf(df) else "t", "value": stat, "p": p,
            "ci_low": est - q * se, "ci_high": est + q * se}


def pairwise_differences(analysis: str, means: np.ndarray, tests: tuple, var_diff: float, df: float,
                         alpha: float) -> list[dict]:
    """Rows θ̄_a − θ̄_b for every pair of tests (a before b), with the common variance ``var_diff``
    (negative values clipped to 0) and :func:`wald_t` inference."""
    rows = []
    for a, b in combinations(range(len(tests)), 2):
        diff = float(means[a] - means[b])
        rows.append({"analysis": analysis, "test_a": tests[a], "test_b": tests[b], "diff": diff,
                     **wald_t(diff, float(np.sqrt(max(var_diff, 0.0))), df, alpha)})
    return rows


def error_ratio(num: float, den: float, what: str) -> float:
    """num/den for an F or χ² statistic; a RuntimeWarning (naming ``what``) and NaN/inf when the
    error term ``den`` is not > 0 (e.g. identical ratings in every test)."""
    if den > 0:
        return float(num / den)
    warnings.warn(f"{what}: error term is {float(den)!r} (≤ 0, e.g. identical ratings in every test); "
                  "the statistic is undefined", RuntimeWarning, stacklevel=3)
    return float("nan") if num == 0 or den < 0 else float("inf")


@dataclass(frozen=True, eq=False)
class MRMCResult(ReaderResult):
    """An MRMC analysis (``analysis`` "OR" or "DBM").

    Native tables (attributes): ``differences`` (analysis, test_a, test_b, diff, se, df, stat,
    value, p, ci_low, ci_high), ``global_tests`` (analysis, statistic, value, df1, df2, p,
    error_ms), ``single_test`` (analysis, test, auc, se, df, ci_low, ci_high and the inputs),
    ``single_reader`` (reader, test_a, test_b, diff, se, df, stat, value, p, ci_low, ci_high …),
    ``aucs`` (test, reader, auc), ``test_means`` (test, auc), ``anova`` (source, df, ss, ms),
    ``anova_by`` (by = "test"/"reader", level, source, df, ss, ms: per-test / per-reader
    ANOVAs), ``components`` (model, component, estimate, correlation). Analyses: ``RRRC``
    random readers & cases, ``FRRC`` fixed readers, ``RRFC`` fixed cases.

    ``tables()`` gives each of them long (the statistic's value under its name: metric "F",
    "X2", "t" or "z"); ``to_frame()`` is ``differences``; ``report()`` the text laid out like
    the OR-DBM MRMC 2.51 output.
    """

    analysis: str
    covariance: str
    alpha: float
    n_pos: int
    n_neg: int
    tests: tuple
    readers: tuple
    aucs: pd.DataFrame
    test_means: pd.DataFrame
    anova: pd.DataFrame
    anova_by: pd.DataFrame
    components: pd.DataFrame
    global_tests: pd.DataFrame
    differences: pd.DataFrame
    single_test: pd.DataFrame
    single_reader: pd.DataFrame

    title: ClassVar[str] = "MRMC analysis"
    layouts: ClassVar[Mapping[str, Layout]] = {
        "differences": Layout(("analysis", "test_a", "test_b"), named=("stat", "value")),
        "global_tests": Layout(("analysis",), named=("statistic", "value")),
        "single_test": Layout(("analysis", "test")),
        "single_reader": Layout(("reader", "test_a", "test_b"), named=("stat", "value")),
        "aucs": Layout(("test", "reader")),
        "test_means": Layout(("test",)),
        "anova": Layout(("source",), undefined={"ms": "no mean square for the total (or a term with 0 df)"}),
        "anova_by": Layout(("by", "level", "source")),
        "components": Layout(("model", "component"), undefined={
            "correlation": "a correlation is given for the OR covariances cov1–cov3 only"}),
    }

    def summary(self) -> Summary:
        """AUCs, global tests, differences and single-test CIs, with one line per analysis."""
        lvl = f"{100 * (1 - self.alpha):g}"
        title = (f"{self.analysis} MRMC analysis of empirical AUCs ({self.covariance} covariance): "
                 f"{len(self.tests)} tests, {len(self.readers)} readers, {self.n_pos + self.n_neg} cases "
                 f"({self.n_neg} normal, {self.n_pos} abnormal)")
        aucs = self.aucs.pivot(index="reader", columns="test", values="auc").reindex(list(self.readers))
        aucs.columns = [f"AUC {t}" for t in aucs.columns]
        cols = ["analysis", "test_a", "test_b", "diff", "se", "df", "p", "ci_low", "ci_high"]
        tables = {"AUC per reader": aucs.reset_index(),
                  "global tests": self.global_tests,
                  f"differences of test means ({lvl}% CI)": self.differences[cols],
                  f"single tests ({lvl}% CI)": self.single_test[["analysis", "test", "auc", "se", "df", "ci_low",
                                                                 "ci_high"]]}
        notes = [f"{ANALYSES[an]} ({an}): {_global_line(self, an)}" for an in ANALYSES]
        return render_summary(title, tables, notes)

    def report(self) -> str:
        """Plain-text report laid out like the OR-DBM MRMC 2.51 output (same quantities, same digits)."""
        return _render(self)


def _f(v: float, nd: int = 8) -> str:
    return "inf" if np.isinf(v) else f"{v:.{nd}f}"


def _df(v: float) -> str:
    return "" if np.isinf(v) else (f"{int(v)}" if float(v).is_integer() else f"{v:.2f}")


def _global_line(res: MRMCResult, analysis: str) -> str:
    """``F = 4.46 (df 1, 15.26), p = 0.0517; error term 0.00...`` for one analysis."""
    g = res.global_tests[res.global_tests.analysis == analysis].iloc[0]
    return (f"{g.statistic} = {g.value:.{5 if np.isinf(g.df2) else 2}f} "
            f"(df {_df(g.df1)}{'' if np.isinf(g.df2) else ', ' + _df(g.df2)}), p = {g.p:.4f}; "
            f"error term {g.error_ms:.8f}")


def _render(res: MRMCResult) -> str:
    """Text layout after the OR-DBM MRMC 2.51 / JAFROC output (same quantities, same digits)."""
    lvl = int(round(100 * (1 - res.alpha)))
    out = [f"{res.analysis} MRMC analysis of empirical (trapezoidal) AUCs, covariance: {res.covariance}",
           f"{len(res.tests)} tests, {len(res.readers)} readers, {res.n_pos + res.n_neg} cases "
           f"({res.n_neg} normal, {res.n_pos} abnormal)", "", "TEST x READER AUC ESTIMATES"]
    tab = res.aucs.pivot(index="reader", columns="test", values="auc").reindex(list(res.readers))
    out.append(f"{'reader':>10}" + "".join(f"{str(t):>14}" for t in res.tests))
    for rd, row in tab.iterrows():
        out.append(f"{str(rd):>10}" + "".join(f"{row[t]:>14.8f}" for t in res.tests))
    out += ["", "TEST AUC MEANS"] + [f"{str(t):>10}  {a:.8f}" for t, a in zip(res.test_means.test, res.test_means.auc)]
    out += ["", "ANOVA", f"{'source':>8} {'SS':>16} {'df':>8} {'MS':>16}"]
    for _, a in res.anova.iterrows():
        out.append(f"{a.source:>8} {_f(a.get('ss', np.nan)):>16} {_df(a.df):>8} {_f(a.ms):>16}")
    out += ["", "Per-test / per-reader ANOVAs (mean squares)"]
    for _, a in res.anova_by.iterrows():
        out.append(f"{a.by:>7} {str(a.level):>6} {a.source:>6} {_df(a.df):>6} {_f(a.ms):>14}")
    out += ["", "VARIANCE COMPONENTS"]
    for _, v in res.components.iterrows():
        corr = "" if np.isnan(v.correlation) else f"{v.correlation:>14.8f}"
        out.append(f"{v.model:>4} {v.component:>24} {v.estimate:>14.8f}{corr}")
    for k, an in enumerate(ANALYSES, 1):
        out += ["", f"Analysis {k}: {ANALYSES[an]}", f"  a) {_global_line(res, an)}",
                f"  b) differences: {'test':>12} {'diff':>9} {'SE':>8} {'df':>7} {'stat':>6} {'p':>7}  {lvl}% CI"]
        for _, d in res.differences[res.differences.analysis == an].iterrows():
            out.append(f"{'':>17}{str(d.test_a) + ' - ' + str(d.test_b):>12} {d['diff']:>9.5f} {d.se:>8.5f} "
                       f"{_df(d.df):>7} {d.value:>6.2f} {d.p:>7.4f}  ({d.ci_low:.5f}, {d.ci_high:.5f})")
        out.append(f"  c) single tests: {'test':>10} {'AUC':>11} {'SE':>11} {'df':>7}  {lvl}% CI")
        for _, s in res.single_test[res.single_test.analysis == an].iterrows():
            out.append(f"{'':>18}{str(s.test):>10} {s.auc:>11.8f} {s.se:>11.8f} {_df(s.df):>7}  "
                       f"({s.ci_low:.8f}, {s.ci_high:.8f})")
        if an == "FRRC" and len(res.single_reader):
            out.append(f"  d) single readers: {'reader':>8} {'test':>10} {'diff':>9} {'SE':>8} {'df':>5} "
                       f"{'stat':>6} {'p':>7}  {lvl}% CI")
            for _, d in res.single_reader.iterrows():
                out.append(f"{'':>20}{str(d.reader):>8} {str(d.test_a) + ' - ' + str(d.test_b):>10} "
                           f"{d['diff']:>9.5f} {d.se:>8.5f} {_df(d.df):>5} {d.value:>6.2f} {d.p:>7.4f}  "
                           f"({d.ci_low:.5f}, {d.ci_high:.5f})")
    return "\n".join(out)


def mrmc_tables(analysis: str, covariance: str, alpha: float, labels: np.ndarray, tests: tuple, readers: tuple,
                aucs: np.ndarray, **tables: pd.DataFrame | Sequence[dict]) -> MRMCResult:
    """An :class:`MRMCResult` from the (t, r) AUCs and the row lists of the other tables."""
    t, r = aucs.shape
    frames = {k: v if isinstance(v, pd.DataFrame) else pd.DataFrame(v) for k, v in tables.items()}
    return MRMCResult(
        analysis=analysis, covariance=covariance, alpha=alpha, n_pos=int(labels.sum()), n_neg=int((~labels).sum()),
        tests=tests, readers=readers,
        aucs=pd.DataFrame([{"test": tests[i], "reader": readers[j], "auc": float(aucs[i, j])}
                           for i in range(t) for j in range(r)]),
        test_means=pd.DataFrame({"test": list(tests), "auc": aucs.mean(axis=1)}), **frames)
