"""Multi-reader multi-case (MRMC) ROC analysis: Obuchowski–Rockette with Hillis's df.

Design: every reader reads every case under every test (modality/phase) — fully crossed.
θ_ij is the empirical (trapezoidal, Wilcoxon) AUC of reader j under test i (t tests, r readers,
c cases). The Obuchowski–Rockette (OR) model θ_ij = μ + τ_i + R_j + (τR)_ij + ε_ij has errors
that are correlated because all AUCs use the same cases; their covariance is summarised by
    Var(ε) (mean of the t·r error variances), Cov1 (same reader, different tests),
    Cov2 (different readers, same test), Cov3 (different readers and tests),
each estimated from a case-level covariance matrix of the AUCs: ``"jackknife"`` (leave one
case out; (c−1)/c·Σ(θ_(k)−θ̄)(θ_(k)−θ̄)ᵀ, the OR-DBM MRMC program's default), ``"delong"``
(DeLong et al. 1988, :func:`probes.metrics.roc.delong_cov`) or ``"unbiased"`` (the U-statistic
unbiased estimator, Gallas 2006 / Bandos et al.; see :func:`unbiased_cov`).

With MS(T), MS(R), MS(T*R) the mean squares of the t×r table of AUCs:
- random readers/random cases (Hillis 2007):  F = MS(T) / [MS(T*R) + r·max(Cov2−Cov3, 0)],
  ddf_H = [MS(T*R) + r·max(Cov2−Cov3,0)]² / {MS(T*R)² / [(t−1)(r−1)]};
  SE(θ̄_i − θ̄_i') = sqrt{2/r·[MS(T*R) + r·max(Cov2−Cov3,0)]}.
- fixed readers/random cases: X² = (t−1)·MS(T) / [Var(ε) − Cov1 + (r−1)·max(Cov2−Cov3,0)],
  χ²(t−1); SE = sqrt{2/r·[Var(ε) − Cov1 + (r−1)·max(Cov2−Cov3,0)]}, z-based.
- random readers/fixed cases: F = MS(T)/MS(T*R) on (t−1, (t−1)(r−1)) df (a paired t-test of
  the AUCs for two tests).
Variance components: σ²_TR = MS(T*R) − Var(ε) + Cov1 + Cov2 − Cov3,
σ²_R = [MS(R) − σ²_TR − Var(ε) − (t−1)Cov1 + Cov2 + (t−1)Cov3] / t.

References: Obuchowski & Rockette (1995) Commun Stat Simul Comput 24:285; Hillis et al. (2005)
Stat Med 24:1579; Hillis (2007) Stat Med 26:596; Hillis, Berbaum & Metz (2008) Acad Radiol
15:647; Gallas (2006) Acad Radiol 13:353. Output mirrors the Iowa OR-DBM MRMC 2.51 program
(:class:`audit.readers.mrmc_result.MRMCResult`). The DBM pseudovalue ANOVA is
:mod:`audit.readers.dbm`.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from audit.readers.mrmc_result import MRMCResult, error_ratio, mrmc_tables, pairwise_differences, wald_t
from audit.readers.reads import ReadColumns, ReadsError, validate_reads
from probes.core.validate import check_alpha, check_choice
from probes.metrics.roc import delong_cov, delong_placements

__all__ = ["MRMCData", "prepare_mrmc", "jackknife_aucs", "jackknife_cov", "ESTIMATORS", "auc_covariance",
           "unbiased_cov", "mrmc_or", "anova_tr"]

Covariance = Literal["jackknife", "delong", "unbiased"]


@dataclass(frozen=True)
class MRMCData:
    """Fully crossed ratings: ``scores`` (t, r, c), ``truth`` (c,) bool, and the level labels."""

    scores: np.ndarray
    truth: np.ndarray
    tests: tuple
    readers: tuple
    cases: tuple


def prepare_mrmc(reads: pd.DataFrame, columns: ReadColumns = ReadColumns()) -> MRMCData:
    """Validate tidy reads (one row per reader × case × test) and reshape to a (t, r, c) array.

    Uses :func:`audit.readers.reads.validate_reads` (reader, case, truth, phase, score needed; paired)
    and then checks the fully crossed design: every reader read every case under every test.
    """
    d = validate_reads(reads, columns, need=("reader", "case", "truth", "phase", "score"), paired=True)
    tests = tuple(_py(v) for v in d["phase"].cat.categories)
    readers = tuple(pd.unique(d["reader"]))
    cases = tuple(pd.unique(d["case"]))
    if len(tests) < 2:
        raise ReadsError(f"MRMC analysis compares tests: column {columns.phase!r} (phase) has only "
                         f"{len(tests)} level(s) {list(tests)}; at least 2 are needed", columns.phase, list(tests),
                         "at least 2 phases")
    if len(readers) < 2:
        raise ReadsError(f"MRMC analysis needs at least 2 readers in column {columns.reader!r}, got {list(readers)}",
                         columns.reader, list(readers), "at least 2 readers")
    per_reader = d.groupby("reader", sort=False)["case"].nunique()
    short = per_reader[per_reader < len(cases)]
    if len(short):
        r = short.index[0]
        missing = sorted(set(cases) - set(d.loc[d["reader"] == r, "case"]), key=str)
        raise ReadsError(
            f"the MRMC design must be fully crossed (every reader reads every case in every test): "
            f"{len(short)} reader(s) did not read all {len(cases)} cases, e.g. reader {_py(r)!r} misses "
            f"{len(missing)} case(s) such as {[_py(m) for m in missing[:5]]}")
    t_i = {v: i for i, v in enumerate(tests)}
    r_i = {v: i for i, v in enumerate(readers)}
    c_i = {v: i for i, v in enumerate(cases)}
    scores = np.full((len(tests), len(readers), len(cases)), np.nan)
    scores[d["phase"].map(t_i).to_numpy(int), d["reader"].map(r_i).to_numpy(int),
           d["case"].map(c_i).to_numpy(int)] = d["score"].to_numpy(float)
    truth = d.drop_duplicates("case").set_index("case")["truth"].reindex(list(cases)).to_numpy().astype(bool)
    m, n = int(truth.sum()), int((~truth).sum())
    if m < 2 or n < 2:
        raise ReadsError(f"MRMC analysis needs ≥ 2 diseased and ≥ 2 non-diseased cases, got {m} and {n}")
    return MRMCData(scores, truth, tests, tuple(_py(r) for r in readers), tuple(_py(c) for c in cases))


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


def jackknife_aucs(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical AUCs (…,) and leave-one-case-out AUCs (c, …) of scores (…, c), in closed form.

    With m positives and n negatives, dropping positive i gives (m·A − V10_i)/(m − 1) and
    dropping negative j gives (n·A − V01_j)/(n − 1), V10/V01 the DeLong structural components.
    """
    s = np.asarray(scores, float)
    lead = s.shape[:-1]
    v10, v01 = delong_placements(labels, s.reshape(-1, s.shape[-1]))
    m, n = v10.shape[1], v01.shape[1]
    a = v10.mean(axis=1)
    t = np.asarray(labels, bool)
    loo = np.empty((s.shape[-1], a.size))
    loo[t] = ((m * a[:, None] - v10) / (m - 1)).T
    loo[~t] = ((n * a[:, None] - v01) / (n - 1)).T
    return a.reshape(lead), loo.reshape((s.shape[-1],) + lead)


def unbiased_cov(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (k,) and the unbiased U-statistic covariance (k, k) of k empirical AUCs.

    Cov_ab = Â_a·Â_b − [1 / (m(m−1)n(n−1))] Σ_{i≠i'} Σ_{j≠j'} ψ_a(X_i, Y_j) ψ_b(X_i', Y_j')
    (ψ = 1[x > y] + ½·1[x = y]); the double sum is expanded as all − same positive −
    same negative + same pair. Unbiased for Cov(Â_a, Â_b) (Gallas 2006; Bandos, Rockette &
    Gur 2005); may be negative for small samples.
    """
    s = np.atleast_2d(np.asarray(scores, float))
    t = np.asarray(labels, bool)
    x, y = s[:, t], s[:, ~t]
    m, n = x.shape[1], y.shape[1]
    psi = (x[:, :, None] > y[:, None, :]) + 0.5 * (x[:, :, None] == y[:, None, :])  # (k, m, n)
    a = psi.mean(axis=(1, 2))
    row, col = psi.sum(axis=2), psi.sum(axis=1)  # (k, m), (k, n)
    total = np.outer(a, a) * (m * n) ** 2
    same_pos = row @ row.T
    same_neg = col @ col.T
    same_pair = np.einsum("aij,bij->ab", psi, psi)
    cross = (total - same_pos - same_neg + same_pair) / (m * (m - 1) * n * (n - 1))
    return a, np.outer(a, a) - cross


def jackknife_cov(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (k,) and the jackknife covariance (k, k) of k empirical AUCs over c cases:
    (c−1)/c · Σ_k (θ_(k) − θ̄_(·))(θ_(k) − θ̄_(·))ᵀ (the OR-DBM MRMC program's default)."""
    c = np.shape(scores)[-1]
    a, loo = jackknife_aucs(labels, scores)
    dev = loo - loo.mean(axis=0)
    return a, (c - 1) / c * dev.T @ dev


# covariance name → estimator (truth (c,), scores (k, c)) → (AUCs (k,), covariance (k, k))
ESTIMATORS = {"jackknife": jackknife_cov, "delong": delong_cov, "unbiased": unbiased_cov}


def auc_covariance(data: MRMCData, covariance: Covariance = "jackknife") -> tuple[np.ndarray, np.ndarray]:
    """AUCs (t, r) and their covariance (t, r, t, r) over cases by the estimator named in :data:`ESTIMATORS`."""
    check_choice(covariance, "covariance", tuple(ESTIMATORS))
    t, r, c = data.scores.shape
    a, cov = ESTIMATORS[covariance](data.truth, data.scores.reshape(t * r, c))
    return a.reshape(t, r), cov.reshape(t, r, t, r)


def anova_tr(aucs: np.ndarray) -> dict[str, float]:
    """Two-way (test × reader, one observation per cell) ANOVA sums of squares and mean squares.

    MS(T) = r Σ_i (θ̄_i· − θ̄)²/(t−1), MS(R) = t Σ_j (θ̄_·j − θ̄)²/(r−1),
    MS(T*R) = Σ_ij (θ_ij − θ̄_i· − θ̄_·j + θ̄)² / [(t−1)(r−1)].
    """
    t, r = aucs.shape
    g = aucs.mean()
    ti, rj = aucs.mean(axis=1), aucs.mean(axis=0)
    ss_t = r * ((ti - g) ** 2).sum()
    ss_r = t * ((rj - g) ** 2).sum()
    ss_tr = ((aucs - ti[:, None] - rj[None, :] + g) ** 2).sum()
    df = {"T": t - 1, "R": r - 1, "T*R": (t - 1) * (r - 1)}
    return {"ss_T": ss_t, "ss_R": ss_r, "ss_T*R": ss_tr, "df_T": df["T"], "df_R": df["R"],
            "df_T*R": df["T*R"], "ms_T": ss_t / df["T"], "ms_R": ss_r / df["R"], "ms_T*R": ss_tr / df["T*R"]}


def _or_covs(cov: np.ndarray) -> dict[str, float]:
    """Var(ε), Cov1, Cov2, Cov3 as averages over the (t, r, t, r) covariance array."""
    t, r = cov.shape[:2]
    same_t = np.eye(t, dtype=bool)[:, None, :, None]
    same_r = np.eye(r, dtype=bool)[None, :, None, :]
    full = np.ones(cov.shape, bool)
    pick = {"var_error": same_t & same_r & full, "cov1": ~same_t & same_r & full,
            "cov2": same_t & ~same_r & full, "cov3": ~same_t & ~same_r & full}
    return {k: float(cov[v].mean()) for k, v in pick.items()}


def mrmc_or(reads: pd.DataFrame, columns: ReadColumns = ReadColumns(), *,
            covariance: Covariance = "jackknife", alpha: float = 0.05) -> MRMCResult:
    """Obuchowski–Rockette MRMC analysis of empirical AUCs with Hillis (2007) denominator df.

    ``reads``: one row per read with reader, case, truth (0/1), phase (the test/modality) and
    score (rating, higher = more likely diseased); column names via ``columns``. The design
    must be fully crossed. Returns random-reader/random-case (F with ddf_H, using
    max(Cov2 − Cov3, 0)), fixed-reader (χ²/z) and fixed-case (F/t) analyses: global test,
    pairwise test differences with SE/CI/p, single-test CIs, per-reader differences, AUCs,
    the T×R ANOVA and the OR variance components (with the DBM equivalents, Hillis et al. 2008).
    Formulas in the module docstring.
    """
    check_alpha(alpha)
    check_choice(covariance, "covariance", tuple(ESTIMATORS))
    data = prepare_mrmc(reads, columns)
    aucs, cov = auc_covariance(data, covariance)
    t, r, c = data.scores.shape
    tests, readers = data.tests, data.readers
    an = anova_tr(aucs)
    ms_t, ms_r, ms_tr = an["ms_T"], an["ms_R"], an["ms_T*R"]
    cv = _or_covs(cov)
    ve, c1, c2, c3 = cv["var_error"], cv["cov1"], cv["cov2"], cv["cov3"]
    var_tr = ms_tr - ve + c1 + c2 - c3
    var_r = (ms_r - var_tr - ve - (t - 1) * c1 + c2 + (t - 1) * c3) / t
    means = aucs.mean(axis=1)

    # DBM equivalents of the OR components (Hillis, Berbaum & Metz 2008): σ²_C = c·Cov3,
    # σ²_TC = c(Cov2 − Cov3), σ²_RC = c(Cov1 − Cov3), σ²_TRC + σ²_ε = c(Var(ε) − Cov1 − Cov2 + Cov3).
    dbm = {"Var(R)": var_r, "Var(C)": c * c3,
           "Var(T*R)": var_tr, "Var(T*C)": c * (c2 - c3), "Var(R*C)": c * (c1 - c3),
           "Var(T*R*C)+Var(Error)": c * (ve - c1 - c2 + c3)}
    comp_rows = [{"model": "OR", "component": k, "estimate": v,
                  "correlation": (v / ve if k.startswith("cov") and ve > 0 else np.nan)}
                 for k, v in (("var_R", var_r), ("var_TR", var_tr), ("cov1", c1), ("cov2", c2),
                              ("cov3", c3), ("var_error", ve))]
    comp_rows += [{"model": "DBM", "component": k, "estimate": v, "correlation": np.nan} for k, v in dbm.items()]

    # Random readers, random cases.
    den1 = ms_tr + r * max(c2 - c3, 0.0)
    ddf = den1 ** 2 / (ms_tr ** 2 / ((t - 1) * (r - 1))) if ms_tr > 0 else np.inf
    # Fixed readers, random cases.
    den2 = ve - c1 + (r - 1) * max(c2 - c3, 0.0)
    x2 = error_ratio((t - 1) * ms_t, den2, "fixed-reader X2")
    f1, f3 = error_ratio(ms_t, den1, "random-reader F"), error_ratio(ms_t, ms_tr, "fixed-case F")
    globals_ = [
        {"analysis": "RRRC", "statistic": "F", "value": f1, "df1": t - 1, "df2": ddf,
         "p": float(stats.f.sf(f1, t - 1, ddf)), "error_ms": den1},
        {"analysis": "FRRC", "statistic": "X2", "value": x2, "df1": t - 1, "df2": np.inf,
         "p": float(stats.chi2.sf(x2, t - 1)), "error_ms": den2},
        {"analysis": "RRFC", "statistic": "F", "value": f3, "df1": t - 1,
         "df2": (t - 1) * (r - 1), "p": float(stats.f.sf(f3, t - 1, (t - 1) * (r - 1))),
         "error_ms": ms_tr},
    ]
    diffs = (pairwise_differences("RRRC", means, tests, 2 / r * den1, ddf, alpha)
             + pairwise_differences("FRRC", means, tests, 2 / r * den2, np.inf, alpha)
             + pairwise_differences("RRFC", means, tests, 2 / r * ms_tr, (t - 1) * (r - 1), alpha))

    single = []
    for i, name in enumerate(tests):
        sub = cov[i, :, i, :]
        ve_i = float(np.diag(sub).mean())
        c2_i = float(sub[~np.eye(r, dtype=bool)].mean())
        ms_r_i = float(((aucs[i] - means[i]) ** 2).sum() / (r - 1))
        d1 = ms_r_i + r * max(c2_i, 0.0)
        df1 = d1 ** 2 / (ms_r_i ** 2 / (r - 1)) if ms_r_i > 0 else np.inf
        base = {"test": name, "auc": float(means[i]), "ms_R": ms_r_i, "var_error": ve_i, "cov2": c2_i}
        for analysis, var, df in (("RRRC", d1 / r, df1),
                                  ("FRRC", (ve_i + (r - 1) * max(c2_i, 0.0)) / r, np.inf),
                                  ("RRFC", ms_r_i / r, r - 1)):
            w = wald_t(float(means[i]), float(np.sqrt(max(var, 0.0))), df, alpha)
            single.append({"analysis": analysis, **base, **{k: w[k] for k in ("se", "df", "ci_low", "ci_high")}})

    per_reader = []
    for j, name in enumerate(readers):
        sub = cov[:, j, :, j]
        ve_j = float(np.diag(sub).mean())
        c1_j = float(sub[~np.eye(t, dtype=bool)].mean())
        for a, b in combinations(range(t), 2):
            diff = float(aucs[a, j] - aucs[b, j])
            var = sub[a, a] + sub[b, b] - 2 * sub[a, b]  # = 2·(Var(ε)_j − Cov1_j) when t = 2
            per_reader.append({"reader": name, "test_a": tests[a], "test_b": tests[b], "diff": diff,
                               **wald_t(diff, float(np.sqrt(max(var, 0.0))), np.inf, alpha),
                               "var_error": ve_j, "cov1": c1_j})

    anova = pd.DataFrame([{"source": s, "df": an[f"df_{s}"], "ss": an[f"ss_{s}"], "ms": an[f"ms_{s}"]}
                          for s in ("T", "R", "T*R")])
    anova_by = [{"by": "test", "level": s["test"], "source": "R", "df": r - 1, "ss": s["ms_R"] * (r - 1),
                 "ms": s["ms_R"]} for s in single if s["analysis"] == "RRRC"]
    return mrmc_tables("OR", covariance, alpha, data.truth, tests, readers, aucs, anova=anova, anova_by=anova_by,
                       components=comp_rows, global_tests=globals_, differences=diffs, single_test=single,
                       single_reader=per_reader)
