"""Dorfman–Berbaum–Metz (DBM) MRMC analysis: ANOVA of jackknife AUC pseudovalues.

Pseudovalues Y_ijk = c·θ_ij − (c−1)·θ_ij(k) (θ_ij(k): AUC of reader j, test i without case k),
normalised so that their mean over cases equals θ_ij (Hillis 2005: Y_ijk + θ_ij − Ȳ_ij·).
A test × reader × case ANOVA of Y gives MS(T), MS(R), MS(C), MS(TR), MS(TC), MS(RC), MS(TRC).
- random readers/random cases: F = MS(T) / [MS(TR) + max(MS(TC) − MS(TRC), 0)],
  ddf_H = [MS(TR) + max(MS(TC) − MS(TRC), 0)]² / {MS(TR)² / [(t−1)(r−1)]};
  SE(θ̄_i − θ̄_i') = sqrt{2/(rc)·[MS(TR) + max(MS(TC) − MS(TRC), 0)]}.
- fixed readers: F = MS(T)/MS(TC) on (t−1, (t−1)(c−1)) df, SE = sqrt{2·MS(TC)/(rc)}.
- fixed cases: F = MS(T)/MS(TR) on (t−1, (t−1)(r−1)) df, SE = sqrt{2·MS(TR)/(rc)}.
Single-test CIs use the reader × case ANOVA of that test; per-reader differences the
test × case ANOVA of that reader. With jackknife covariance, DBM with normalised pseudovalues and
OR give identical F, ddf and p (Hillis, Obuchowski & Berbaum 2008, Acad Radiol 15:1481).

References: Dorfman, Berbaum & Metz (1992) Invest Radiol 27:723; Hillis (2007) Stat Med 26:596;
Hillis, Berbaum & Metz (2008) Acad Radiol 15:647. Output mirrors JAFROC 4.2.1's DBM report.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from audit.readers.mrmc import jackknife_aucs, prepare_mrmc
from audit.readers.mrmc_result import MRMCResult, error_ratio, mrmc_tables, pairwise_differences, wald_t
from audit.readers.reads import ReadColumns
from probes.core.validate import check_alpha

__all__ = ["pseudovalues", "anova_trc", "mrmc_dbm"]


def pseudovalues(labels: np.ndarray, scores: np.ndarray, normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (…,) and jackknife pseudovalues (…, c) of scores (…, c).

    Y_k = c·θ − (c−1)·θ_(k); with ``normalize`` each row is shifted so its mean is θ.
    """
    s = np.asarray(scores, float)
    c = s.shape[-1]
    a, loo = jackknife_aucs(labels, s)
    y = c * a[..., None] - (c - 1) * np.moveaxis(loo, 0, -1)
    if normalize:
        y = y + (a - y.mean(axis=-1))[..., None]
    return a, y


def anova_trc(y: np.ndarray) -> pd.DataFrame:
    """Three-way ANOVA without replication of y (t, r, c): source, df, ss, ms (with a TOTAL row).

    Main effects SS = (product of the other sizes)·Σ(level mean − grand mean)²; two-way
    interactions from the two-way cell means; TRC is the residual.
    """
    t, r, c = y.shape
    g = y.mean()
    mt, mr, mc = y.mean(axis=(1, 2)), y.mean(axis=(0, 2)), y.mean(axis=(0, 1))
    mtr, mtc, mrc = y.mean(axis=2), y.mean(axis=1), y.mean(axis=0)
    ss = {"T": r * c * ((mt - g) ** 2).sum(), "R": t * c * ((mr - g) ** 2).sum(),
          "C": t * r * ((mc - g) ** 2).sum(),
          "TR": c * ((mtr - mt[:, None] - mr[None, :] + g) ** 2).sum(),
          "TC": r * ((mtc - mt[:, None] - mc[None, :] + g) ** 2).sum(),
          "RC": t * ((mrc - mr[:, None] - mc[None, :] + g) ** 2).sum()}
    resid = (y - mtr[:, :, None] - mtc[:, None, :] - mrc[None, :, :] + mt[:, None, None]
             + mr[None, :, None] + mc[None, None, :] - g)
    ss["TRC"] = (resid ** 2).sum()
    total = float(((y - g) ** 2).sum())
    ss = {k: _clean(v, total) for k, v in ss.items()}
    df = {"T": t - 1, "R": r - 1, "C": c - 1, "TR": (t - 1) * (r - 1), "TC": (t - 1) * (c - 1),
          "RC": (r - 1) * (c - 1), "TRC": (t - 1) * (r - 1) * (c - 1)}
    rows = [{"source": k, "df": df[k], "ss": float(ss[k]), "ms": float(ss[k] / df[k]) if df[k] else np.nan}
            for k in ("T", "R", "C", "TR", "TC", "RC", "TRC")]
    rows.append({"source": "TOTAL", "df": t * r * c - 1, "ss": total, "ms": np.nan})
    return pd.DataFrame(rows)


def _clean(ss: float, total: float) -> float:
    """A sum of squares that is rounding noise (< 1e-12 of the total) is exactly 0."""
    return 0.0 if ss <= 1e-12 * total else float(ss)


def _two_way(y: np.ndarray, names: tuple[str, str]) -> dict[str, tuple[int, float]]:
    """Two-way ANOVA without replication of y (a, b): {source: (df, ss)} for A, B and A×B."""
    a, b = y.shape
    g = y.mean()
    ma, mb = y.mean(axis=1), y.mean(axis=0)
    total = float(((y - g) ** 2).sum())
    return {names[0]: (a - 1, _clean(b * float(((ma - g) ** 2).sum()), total)),
            names[1]: (b - 1, _clean(a * float(((mb - g) ** 2).sum()), total)),
            names[0] + names[1]: ((a - 1) * (b - 1),
                                  _clean(float(((y - ma[:, None] - mb[None, :] + g) ** 2).sum()), total))}


def mrmc_dbm(reads: pd.DataFrame, columns: ReadColumns = ReadColumns(), *,
             alpha: float = 0.05, normalize: bool = True) -> MRMCResult:
    """DBM pseudovalue ANOVA of empirical AUCs with Hillis (2007) ddf; same tables as ``mrmc_or``.

    ``reads`` as for :func:`audit.readers.mrmc.mrmc_or` (fully crossed reader × case × test ratings).
    Returns the T×R×C ANOVA (``anova``), per-test R×C and per-reader T×C ANOVAs (``anova_by``),
    DBM variance components and their OR equivalents, and the three analyses (RRRC, FRRC, RRFC)
    with global F tests, pairwise differences, single-test CIs and per-reader differences.
    Formulas in the module docstring.
    """
    check_alpha(alpha)
    data = prepare_mrmc(reads, columns)
    t, r, c = data.scores.shape
    tests, readers = data.tests, data.readers
    aucs, y = pseudovalues(data.truth, data.scores, normalize)
    anova = anova_trc(y)
    ms = dict(zip(anova.source, anova.ms))
    means = aucs.mean(axis=1)  # = mean pseudovalue per test when normalised

    v_r = (ms["R"] - ms["TR"] - ms["RC"] + ms["TRC"]) / (t * c)
    v_c = (ms["C"] - ms["TC"] - ms["RC"] + ms["TRC"]) / (t * r)
    v_tr = (ms["TR"] - ms["TRC"]) / c
    v_tc = (ms["TC"] - ms["TRC"]) / r
    v_rc = (ms["RC"] - ms["TRC"]) / t
    v_e = ms["TRC"]
    comps = [("DBM", "Var(R)", v_r), ("DBM", "Var(C)", v_c), ("DBM", "Var(T*R)", v_tr),
             ("DBM", "Var(T*C)", v_tc), ("DBM", "Var(R*C)", v_rc), ("DBM", "Var(T*R*C)+Var(Error)", v_e),
             # OR equivalents (Hillis, Berbaum & Metz 2008)
             ("OR", "var_R", v_r), ("OR", "var_TR", v_tr), ("OR", "cov1", (v_c + v_rc) / c),
             ("OR", "cov2", (v_c + v_tc) / c), ("OR", "cov3", v_c / c),
             ("OR", "var_error", (v_c + v_tc + v_rc + v_e) / c)]
    ve_or = comps[-1][2]
    components = pd.DataFrame([{"model": m, "component": k, "estimate": v,
                                "correlation": v / ve_or if k.startswith("cov") and ve_or > 0 else np.nan}
                               for m, k, v in comps])

    den1 = ms["TR"] + max(ms["TC"] - ms["TRC"], 0.0)
    ddf = den1 ** 2 / (ms["TR"] ** 2 / ((t - 1) * (r - 1))) if ms["TR"] > 0 else np.inf
    df_tc, df_tr = (t - 1) * (c - 1), (t - 1) * (r - 1)
    glob = []
    for an, den, d2 in (("RRRC", den1, ddf), ("FRRC", ms["TC"], df_tc), ("RRFC", ms["TR"], df_tr)):
        f = error_ratio(ms["T"], den, f"{an} F")
        glob.append({"analysis": an, "statistic": "F", "value": f, "df1": t - 1, "df2": d2,
                     "p": float(stats.f.sf(f, t - 1, d2)), "error_ms": den})
    diffs = (pairwise_differences("RRRC", means, tests, 2 * den1 / (r * c), ddf, alpha)
             + pairwise_differences("FRRC", means, tests, 2 * ms["TC"] / (r * c), df_tc, alpha)
             + pairwise_differences("RRFC", means, tests, 2 * ms["TR"] / (r * c), df_tr, alpha))

    by, single = [], []
    for i, name in enumerate(tests):
        two = _two_way(y[i], ("R", "C"))
        m_i = {k: ss / df for k, (df, ss) in two.items()}
        by += [{"by": "test", "level": name, "source": k, "df": df, "ss": ss, "ms": ss / df}
               for k, (df, ss) in two.items()]
        num = m_i["R"] + max(m_i["C"] - m_i["RC"], 0.0)
        df1 = num ** 2 / (m_i["R"] ** 2 / (r - 1)) if m_i["R"] > 0 else np.inf
        base = {"test": name, "auc": float(means[i]), "ms_R": m_i["R"], "ms_C": m_i["C"], "ms_RC": m_i["RC"]}
        for an, var, df in (("RRRC", num / (r * c), df1), ("FRRC", m_i["C"] / (r * c), c - 1),
                            ("RRFC", m_i["R"] / (r * c), r - 1)):
            w = wald_t(float(means[i]), float(np.sqrt(max(var, 0.0))), df, alpha)
            single.append({"analysis": an, **base, **{k: w[k] for k in ("se", "df", "ci_low", "ci_high")}})

    per_reader = []
    for j, name in enumerate(readers):
        two = _two_way(y[:, j, :], ("T", "C"))
        by += [{"by": "reader", "level": name, "source": k, "df": df, "ss": ss, "ms": ss / df}
               for k, (df, ss) in two.items()]
        ms_tc_j = two["TC"][1] / two["TC"][0]
        for a, b in combinations(range(t), 2):
            diff = float(aucs[a, j] - aucs[b, j])
            per_reader.append({"reader": name, "test_a": tests[a], "test_b": tests[b], "diff": diff,
                               **wald_t(diff, float(np.sqrt(2 * ms_tc_j / c)), df_tc, alpha),
                               "ms_TC": ms_tc_j})

    return mrmc_tables("DBM", "jackknife", alpha, data.truth, tests, readers, aucs, anova=anova,
                       anova_by=by, components=components, global_tests=glob, differences=diffs,
                       single_test=single, single_reader=per_reader)
