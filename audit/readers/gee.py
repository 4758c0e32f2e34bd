"""GEE odds ratios for AI assistance in a reader study (correct read ~ phase + reader, by patient).

Model (Liang & Zeger 1986; a population-averaged logistic model): for read k of case i,

    logit P(correct_ik = 1) = β0 + Σ_p β_p·1[phase_ik = p] + Σ_r γ_r·1[reader_ik = r],

estimated by generalised estimating equations with the reads of one case (patient) as a
cluster and an exchangeable (common within-case correlation ρ) or independence working
correlation. exp(β_p − β_q) is the odds ratio of a correct read in phase p vs phase q,
*marginal over cases* and conditional on reader (not the case-conditional OR of a mixed model).
Standard errors: ``cov_type="robust"`` (sandwich), ``"naive"`` (model-based) or
``"bias_reduced"`` (Mancl & DeRouen 2001, for few clusters, roughly < 50 patients).
Inference is Wald/z-based: CI = exp(L·β̂ ± z_{1−α/2}·√(L·V·Lᵀ)) for each contrast L.

Fitting is done by ``statsmodels.genmod.generalized_estimating_equations.GEE``; this module adds
the reads schema, all pairwise phase contrasts, and a convergence check: a fit whose score norm
did not fall below ``ctol`` within ``maxiter`` iterations raises :class:`GEEConvergenceError`
(``on_nonconvergence="raise"``) or is returned with ``converged=False`` and a
:class:`GEEConvergenceWarning` (``"flag"``) — never a silent number.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, ClassVar, Literal, Mapping

import numpy as np
import pandas as pd
import statsmodels.api as sm
from numpy.typing import ArrayLike
from scipy import stats

from audit.readers.reads import ReadColumns, ReadsError, validate_reads
from audit.readers.result import Layout, ReaderResult
from probes.core.errors import LabelError, NonFiniteError, ShapeError
from probes.core.result import Result, Summary, long_frame, render_summary
from probes.core.validate import check_alpha, check_choice, check_int

__all__ = ["GEEConvergenceError", "GEEConvergenceWarning", "GEEFit", "GEEAssistance", "fit_gee",
           "gee_assistance"]

Correlation = Literal["exchangeable", "independence"]
CovType = Literal["robust", "naive", "bias_reduced"]


class GEEConvergenceError(RuntimeError):
    """The GEE iterations did not converge (or produced no usable covariance)."""


class GEEConvergenceWarning(UserWarning):
    """A non-converged GEE fit was returned because ``on_nonconvergence="flag"`` was asked for."""


@dataclass(frozen=True, eq=False)
class GEEFit(Result):
    """A checked GEE fit: coefficients, their covariance (per ``cov_type``) and convergence.

    ``score_norm`` is ‖U(β̂; α̂)‖₂ at the returned estimates (converged needs < ``ctol``); ``dep_param``
    the estimated exchangeable correlation ρ (0 for independence); ``messages`` the warnings
    statsmodels raised during the fit; ``result`` the statsmodels ``GEEResults``.
    """

    params: pd.Series
    cov: pd.DataFrame
    bse: pd.Series
    converged: bool
    n_iter: int
    score_norm: float
    ctol: float
    dep_param: float
    correlation: str
    cov_type: str
    n_obs: int
    n_groups: int
    messages: tuple[str, ...] = ()
    result: Any = field(default=None, repr=False)

    title: ClassVar[str] = "GEE fit (binomial, logit)"

    def coefficients(self, alpha: float = 0.05) -> pd.DataFrame:
        """One row per coefficient: term, coef, se, z, p, ci_low, ci_high (Wald, z-based, level 1 − alpha)."""
        check_alpha(alpha)
        z = self.params / self.bse
        q = stats.norm.ppf(1 - alpha / 2)
        return pd.DataFrame({"term": self.params.index, "coef": self.params.values, "se": self.bse.values,
                             "z": z.values, "p": 2 * stats.norm.sf(np.abs(z.values)),
                             "ci_low": (self.params - q * self.bse).values,
                             "ci_high": (self.params + q * self.bse).values})

    def to_frame(self, alpha: float = 0.05) -> pd.DataFrame:
        """:meth:`coefficients` long: term, metric (coef, se, z, p, ci_low, ci_high), value."""
        return long_frame(self.coefficients(alpha), ["term"])

    def _summary_tables(self) -> pd.DataFrame:
        return self.coefficients()

    def _notes(self) -> tuple[str, ...]:
        return (f"working correlation {self.correlation} (rho = {self.dep_param:.3f}), covariance {self.cov_type}; "
                f"{self.n_obs} observations in {self.n_groups} clusters",
                ("converged" if self.converged else "NOT CONVERGED — estimates unreliable")
                + f" ({self.n_iter} iterations, score norm {self.score_norm:.2g}, ctol {self.ctol:g})")


def _final_score_norm(model: Any, fallback: float) -> float:
    """‖U(β̂; α̂)‖₂: the estimating equations at the returned β̂ *and* the final working correlation.

    statsmodels' ``converged`` flag uses the score before the last update and can be True after
    a single iteration whose working correlation was updated afterwards (``maxiter=1``); this
    re-evaluates the score at the returned estimates (via the model's own score routine).
    """
    try:
        _, score = model._update_mean_params()
    except (AttributeError, TypeError, ValueError, np.linalg.LinAlgError):  # private API changed
        return fallback
    return float(np.sqrt(np.sum(np.asarray(score) ** 2))) if score is not None else np.inf


def fit_gee(endog: ArrayLike, exog: ArrayLike | pd.DataFrame, groups: ArrayLike, *,
            correlation: Correlation = "exchangeable", cov_type: CovType = "robust", maxiter: int = 60,
            ctol: float = 1e-6, on_nonconvergence: Literal["raise", "flag"] = "raise") -> GEEFit:
    """Fit a binomial (logit) GEE with ``statsmodels`` ``GEE`` and check its convergence.

    ``endog`` (n,), ``exog`` (n, k) design matrix (a DataFrame keeps its column names),
    ``groups`` (n,) cluster labels.
    Converged means statsmodels' rule (‖U‖₂ < ``ctol`` after at least one update of the working
    correlation) *and* ‖U(β̂; α̂)‖₂ < ``ctol`` re-evaluated at the returned estimates with the
    final working correlation, with finite coefficients and SEs; otherwise :class:`GEEConvergenceError` or, with
    ``on_nonconvergence="flag"``, a :class:`GEEConvergenceWarning` and ``converged=False``.
    """
    check_choice(correlation, "correlation", ("exchangeable", "independence"))
    check_choice(cov_type, "cov_type", ("robust", "naive", "bias_reduced"))
    check_choice(on_nonconvergence, "on_nonconvergence", ("raise", "flag"))
    check_int(maxiter, "maxiter", 1)
    x = exog if isinstance(exog, pd.DataFrame) else pd.DataFrame(
        np.asarray(exog, dtype=float), columns=[f"x{k}" for k in range(np.shape(exog)[1])]
        if np.ndim(exog) == 2 else None)
    y = np.asarray(endog, dtype=float)
    g = np.asarray(groups)
    if x.ndim != 2 or y.ndim != 1 or g.ndim != 1 or not (len(y) == len(x) == len(g)):
        raise ShapeError("endog", message=f"endog (n,), exog (n, k) and groups (n,) must agree: got shapes {y.shape}, "
                         f"{np.shape(exog)}, {g.shape}")
    if not (np.isfinite(y).all() and np.isfinite(x.to_numpy(dtype=float)).all()):
        raise NonFiniteError("endog", message="endog and exog must be finite (no NaN/inf)")
    if not np.isin(y, (0.0, 1.0)).all():
        raise LabelError("endog",
            message=f"binomial endog must be 0/1, found values {sorted(set(np.unique(y)) - {0.0, 1.0})[:5]}")
    rank = np.linalg.matrix_rank(x.to_numpy(dtype=float))
    if rank < x.shape[1]:
        raise ShapeError("exog", message=f"exog has rank {rank} < {x.shape[1]} columns {list(x.columns)}: a term is "
                         "constant or collinear with others")
    cs = sm.cov_struct.Exchangeable() if correlation == "exchangeable" else sm.cov_struct.Independence()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = sm.GEE(y, x, groups=g, family=sm.families.Binomial(), cov_struct=cs)
        res = model.fit(maxiter=int(maxiter), ctol=ctol, cov_type=cov_type)
    messages = tuple(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    if res is None:
        raise GEEConvergenceError(f"statsmodels GEE could not estimate the model ({'; '.join(messages)})")
    if cov_type == "bias_reduced" and res.cov_robust_bc is None:
        raise GEEConvergenceError("the bias-reduced (Mancl–DeRouen) covariance could not be computed: a "
                                  "cluster's I − H is singular; use cov_type='robust'")
    cov = pd.DataFrame(np.asarray(res.cov_params()), index=x.columns, columns=x.columns)
    bse = pd.Series(np.sqrt(np.clip(np.diag(cov.to_numpy()), 0, None)), index=x.columns)
    n_iter = len(res.fit_history["params"])
    score_norm = _final_score_norm(model, float(res.score_norm))
    converged = (bool(res.converged) and score_norm < ctol and bool(np.isfinite(res.params).all())
                 and bool(np.isfinite(bse).all()))
    dep = res.cov_struct.dep_params
    dep = 0.0 if dep is None else float(np.ravel(dep)[0]) if np.size(dep) == 1 else np.nan
    out = GEEFit(pd.Series(np.asarray(res.params), index=x.columns), cov, bse, converged, n_iter,
                 score_norm, float(ctol), dep,
                 correlation, cov_type, int(len(y)), int(len(np.unique(g))), messages, res)
    if not converged:
        msg = (f"GEE ({correlation}, {cov_type}) did not converge: score norm {score_norm:.3g} (ctol "
               f"{ctol:g}) after {n_iter} iteration(s) (maxiter={maxiter})"
               + (f"; statsmodels said: {'; '.join(messages)}" if messages else ""))
        if on_nonconvergence == "raise":
            raise GEEConvergenceError(msg + ". Raise maxiter, try correlation='independence', or pass "
                                      "on_nonconvergence='flag' to inspect the fit.")
        warnings.warn(msg + "; the estimates are flagged converged=False.", GEEConvergenceWarning, stacklevel=2)
    return out


@dataclass(frozen=True, eq=False)
class GEEAssistance(ReaderResult):
    """Odds ratios of a correct read between phases (population-averaged GEE).

    Native tables: ``contrasts``, one row per pair of phases (phase vs baseline, later vs
    earlier): contrast, phase, baseline, log_or, se, z, p, odds_ratio, ci_low, ci_high (CI of
    the OR), converged; ``accuracy``: observed phase, n_reads, n_correct, accuracy.
    ``to_frame()``: contrast, phase, baseline, metric, value. ``wald_*``: joint Wald χ² test of
    no phase effect (all β_p = 0). ``fit``: the checked :class:`GEEFit` (every coefficient).
    """

    contrasts: pd.DataFrame
    accuracy: pd.DataFrame
    wald_chi2: float
    wald_df: int
    wald_p: float
    fit: GEEFit
    correlation: str
    cov_type: str
    reader_effect: bool
    alpha: float
    n_reads: int
    n_cases: int
    n_readers: int

    title: ClassVar[str] = "GEE odds ratios of a correct read"
    layouts: ClassVar[Mapping[str, Layout]] = {
        "contrasts": Layout(("contrast", "phase", "baseline"), drop=("converged",)),
        "accuracy": Layout(("phase",))}

    @property
    def converged(self) -> bool:
        """Whether the GEE iterations converged."""
        return self.fit.converged

    def summary(self) -> Summary:
        """Model, convergence, per-phase accuracy, ORs with CIs and p, the joint Wald test."""
        lvl = f"{100 * (1 - self.alpha):g}"
        f = self.fit
        terms = "phase + reader" if self.reader_effect else "phase"
        notes = [f"GEE (binomial, logit) of correct read ~ {terms}; clusters = cases (patients)",
                 f"working correlation: {self.correlation}"
                 + (f" (rho = {f.dep_param:.3f})" if self.correlation == "exchangeable" else "")
                 + f"; covariance: {self.cov_type}",
                 f"{self.n_reads} reads, {self.n_cases} cases, {self.n_readers} readers; "
                 + ("converged" if f.converged else "NOT CONVERGED — estimates unreliable")
                 + f" ({f.n_iter} iterations, score norm {f.score_norm:.2g})"]
        if self.cov_type == "robust" and self.n_cases < 50:
            notes.append(f"only {self.n_cases} clusters; consider cov_type='bias_reduced' (Mancl–DeRouen)")
        notes += [f"joint Wald test of no phase effect: chi2 = {self.wald_chi2:.3f} on {self.wald_df} df, "
                  f"p = {self.wald_p:.4g}",
                  "ORs are population-averaged over cases and conditional on reader (readers fixed)."]
        ors = self.contrasts[["contrast", "odds_ratio", "ci_low", "ci_high", "z", "p"]].rename(
            columns={"odds_ratio": "OR", "ci_low": f"OR {lvl}% CI low", "ci_high": f"OR {lvl}% CI high"})
        return render_summary(self.title, {"accuracy per phase": self.accuracy, "odds ratios": ors}, notes)


def _design(r: pd.DataFrame, reader_effect: bool) -> tuple[pd.DataFrame, list[str]]:
    """Treatment-coded design: Intercept, phase[<level>] (first level = baseline), reader[<level>]."""
    cols = {"Intercept": np.ones(len(r))}
    phase_cols = []
    for lv in r["phase"].cat.categories[1:]:
        name = f"phase[{lv}]"
        cols[name] = (r["phase"] == lv).to_numpy(dtype=float)
        phase_cols.append(name)
    if reader_effect:
        levels = (list(r["reader"].cat.categories) if isinstance(r["reader"].dtype, pd.CategoricalDtype)
                  else sorted(pd.unique(r["reader"]), key=lambda v: (str(type(v)), v)))
        for lv in levels[1:]:
            cols[f"reader[{lv}]"] = (r["reader"] == lv).to_numpy(dtype=float)
    return pd.DataFrame(cols, index=r.index), phase_cols


def _separation(r: pd.DataFrame, by: str, what: str) -> None:
    codes, levels = pd.factorize(r[by], sort=False)
    n = np.bincount(codes, minlength=len(levels))
    k = np.bincount(codes, weights=r["correct"].to_numpy(dtype=float), minlength=len(levels))
    bad = np.flatnonzero((n > 0) & ((k == 0) | (k == n)))
    if len(bad):
        j = bad[0]
        kind = "correct" if k[j] == n[j] else "wrong"
        lv = levels[j].item() if isinstance(levels[j], np.generic) else levels[j]
        raise ReadsError(f"{what} {lv!r} has every one of its {int(n[j])} reads {kind}: its odds are "
                         "infinite and the GEE odds ratios do not exist (quasi-complete separation)"
                         + (" — drop the reader or pass reader_effect=False" if by == "reader" else ""))


def gee_assistance(reads: pd.DataFrame, columns: ReadColumns = ReadColumns(), *, correct: str | None = None,
                   correlation: Correlation = "exchangeable", cov_type: CovType = "robust",
                   reader_effect: bool = True, reference: Any = None, alpha: float = 0.05,
                   paired: bool = True, maxiter: int = 60, ctol: float = 1e-6,
                   on_nonconvergence: Literal["raise", "flag"] = "raise") -> GEEAssistance:
    """Binomial GEE of read correctness on phase (and reader), clustered by case; ORs per phase pair.

    ``reads`` one row per read (schema: :func:`audit.readers.reads.validate_reads`; column names via
    ``columns``). Correctness is ``decision == truth`` unless ``correct`` names a 0/1 column.
    ``reference``: the baseline phase (default the first phase). Odds ratios are given for every
    pair of phases (later vs earlier, baseline first), with Wald CIs exp(Lβ̂ ± z·SE) and
    two-sided z-test p-values, plus a joint Wald χ² test of no phase effect. See the module
    docstring for the model, the working correlations and ``cov_type``. Raises
    :class:`audit.readers.reads.ReadsError` for bad input (named) and :class:`GEEConvergenceError` for a
    non-converged fit unless ``on_nonconvergence="flag"``.
    """
    check_alpha(alpha)
    need = ("reader", "case", "truth", "phase") + (() if correct is not None else ("decision",))
    r = validate_reads(reads, columns, need=need, paired=paired)
    if correct is not None:
        if correct not in reads.columns:
            raise ReadsError(f"reads lacks the correctness column {correct!r} (correct); available columns: "
                             f"{list(reads.columns)}")
        cv = reads[correct].reset_index(drop=True)
        if cv.isna().any() or not np.isin(pd.to_numeric(cv, errors="coerce"), (0, 1)).all():
            raise ReadsError(f"column {correct!r} (correct) must be binary 0/1 without missing values, found "
                             f"values {sorted(map(str, pd.unique(cv)))[:6]}")
        r["correct"] = pd.to_numeric(cv).astype(int).to_numpy()
    else:
        if r["decision"].isna().any():
            raise ReadsError(f"column {columns.decision!r} (decision) has missing values")
        r["correct"] = (r["decision"] == r["truth"]).astype(int)
    r["phase"] = r["phase"].cat.remove_unused_categories()  # a declared phase without reads
    phases = list(r["phase"].cat.categories)
    if len(phases) < 2:
        raise ReadsError(f"phase (column {columns.phase!r}) has a single level {phases}; nothing to compare")
    if reference is not None:
        if reference not in phases:
            raise ReadsError(f"reference {reference!r} is not a phase; phases are {phases}")
        phases = [reference] + [p for p in phases if p != reference]
        r["phase"] = r["phase"].cat.reorder_categories(phases)
    _separation(r, "phase", "phase")
    if reader_effect:
        _separation(r, "reader", "reader")
    x, phase_cols = _design(r, reader_effect)
    fit = fit_gee(r["correct"], x, pd.factorize(r["case"])[0],
                  correlation=correlation, cov_type=cov_type, maxiter=maxiter, ctol=ctol,
                  on_nonconvergence=on_nonconvergence)

    # all pairwise contrasts β_b − β_a (β of the baseline phase ≡ 0), via statsmodels' t_test
    pos = {p: (x.columns.get_loc(c) if c else None) for p, c in zip(phases, [None] + phase_cols)}
    pairs = list(combinations(range(len(phases)), 2))
    L = np.zeros((len(pairs), x.shape[1]))
    for k, (a, b) in enumerate(pairs):
        L[k, pos[phases[b]]] += 1.0
        if pos[phases[a]] is not None:
            L[k, pos[phases[a]]] -= 1.0
    tt = fit.result.t_test(L)
    est = np.atleast_1d(np.asarray(tt.effect, dtype=float))
    se = np.atleast_1d(np.asarray(tt.sd, dtype=float)).ravel()
    q = stats.norm.ppf(1 - alpha / 2)
    z = est / se
    contrasts = pd.DataFrame({
        "contrast": [f"{phases[b]} vs {phases[a]}" for a, b in pairs],
        "phase": [phases[b] for _, b in pairs], "baseline": [phases[a] for a, _ in pairs],
        "log_or": est, "se": se, "z": z, "p": 2 * stats.norm.sf(np.abs(z)),
        "odds_ratio": np.exp(est), "ci_low": np.exp(est - q * se), "ci_high": np.exp(est + q * se),
        "converged": fit.converged})
    idx = [x.columns.get_loc(c) for c in phase_cols]
    b = fit.params.to_numpy()[idx]
    v = fit.cov.to_numpy()[np.ix_(idx, idx)]
    chi2 = float(b @ np.linalg.solve(v, b))
    pc = r["phase"].cat.codes.to_numpy()
    n_ph = np.bincount(pc, minlength=len(phases))
    k_ph = np.bincount(pc, weights=r["correct"].to_numpy(dtype=float), minlength=len(phases)).astype(int)
    acc = pd.DataFrame({"phase": phases, "n_reads": n_ph, "n_correct": k_ph, "accuracy": k_ph / n_ph})
    return GEEAssistance(contrasts, acc, chi2, len(idx), float(stats.chi2.sf(chi2, len(idx))), fit,
                         correlation, cov_type, bool(reader_effect), float(alpha), int(len(r)),
                         int(r["case"].nunique()), int(r["reader"].nunique()))
