"""Contrast rankings from Shapley values, normalised Spearman footrule agreement with a (tied)
reference ranking, ranking variance across folds, and the disagreement of two absent-contrast
baselines — for :mod:`probes.interventions.shapley`.

Ranks: 1 = most important; ties within ``tol`` share the minimum rank (competition ranking,
1-2-3-3, the form of the BraTS clinical reference T1c=1, FLAIR=2, T1/T2=3). Footrule
F = Σ|r_i − s_i| (Spearman 1906; Diaconis & Graham 1977), normalised by the largest F any
competition ranking reaches against the reference: agreement 1 − F/F_max (1 identical, 0 most
discordant).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Sequence

import numpy as np
import pandas as pd

from probes.core.errors import InputTypeError, NonFiniteError, OptionError, ShapeError, warn_undefined
from probes.core.result import Result, long_frame, tidy
from probes.core.validate import as_case_ids

__all__ = ["contrast_ranking", "normalized_spearman_footrule", "footrule_max", "RankingVariance",
           "ranking_variance", "BaselineDisagreement", "baseline_disagreement", "contrast_frame",
           "ranking_or_nan"]


# ----------------------------------------------------------------------- rankings
def contrast_ranking(phi: Any, *, tol: float = 1e-9) -> Any:
    """Ranks of contrasts by φ along the last axis: 1 = most important (largest φ).

    Ties: values are sorted in decreasing order and a new tie group starts whenever the gap to
    the previous value exceeds ``tol`` (so groups chain); a tie group shares the *minimum* rank
    ("competition" ranking, e.g. 1, 2, 3, 3). Accepts (M,) or (..., M) arrays, or a pandas
    Series / DataFrame with contrasts as index / columns (returned with the same labels).
    """
    if isinstance(phi, pd.Series):
        return pd.Series(contrast_ranking(phi.to_numpy(float), tol=tol), index=phi.index)
    if isinstance(phi, pd.DataFrame):
        return pd.DataFrame(contrast_ranking(phi.to_numpy(float), tol=tol), index=phi.index,
                            columns=phi.columns)
    try:
        p = np.asarray(phi, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputTypeError("phi", type(phi).__name__, "a numeric (..., M) array") from None
    if p.ndim == 0 or p.shape[-1] == 0:
        raise ShapeError("phi", f"shape {p.shape}", "a last axis of M >= 1 contrasts",
                         message=f"phi must have a last axis of contrasts, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise NonFiniteError("phi", f"{int((~np.isfinite(p)).sum())} NaN/Inf", "finite values",
                             message="phi contains NaN or inf; cannot rank")
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating)) or not tol >= 0:
        raise OptionError("tol", repr(tol), "a number >= 0", message=f"tol must be ≥ 0, got {tol!r}")
    flat = p.reshape(-1, p.shape[-1])
    out = np.empty(flat.shape, dtype=np.int64)
    for row, vals in enumerate(flat):
        order = np.argsort(-vals, kind="stable")
        rank, prev = 1, None
        for pos, j in enumerate(order):
            if prev is None or prev - vals[j] > tol:
                rank = pos + 1
            out[row, j] = rank
            prev = vals[j]
    return out.reshape(p.shape)


def ranking_or_nan(phi: Any, *, tol: float = 1e-9) -> np.ndarray:
    """:func:`contrast_ranking` of every row of finite φ; NaN (a float array) for rows with an
    undefined φ (so an undefined Shapley value never gets a rank)."""
    p = np.asarray(phi, dtype=np.float64)
    ok = np.isfinite(p).all(-1)
    if ok.all():
        return contrast_ranking(p, tol=tol)
    out = np.full(p.shape, np.nan)
    if ok.any():
        out[ok] = contrast_ranking(p[ok], tol=tol)
    return out


def _competition(levels: np.ndarray) -> np.ndarray:
    """Competition ranks of rows of integer levels (0 = best): 1 + #{k: level_k < level_j}."""
    return 1 + (levels[..., None, :] < levels[..., :, None]).sum(-1)


@lru_cache(maxsize=64)
def _footrule_max(reference: tuple[int, ...]) -> int:
    m = len(reference)
    levels = np.indices((m,) * m).reshape(m, -1).T          # every weak order of m items
    ranks = _competition(levels)
    return int(np.abs(ranks - np.asarray(reference)[None]).sum(1).max())


def footrule_max(reference: Sequence[int]) -> int:
    """Largest Spearman footrule Σ|r_i − s_i| over every competition ranking r of M items
    (strict or tied, as :func:`contrast_ranking` produces) against the ranking ``reference``.

    Brute force over all M^M level assignments (every weak order), M ≤ 7. For the BraTS
    reference (T1, T1c, T2, FLAIR) = (3, 1, 3, 2) it is 8, reached by r = (1, 4, 1, 3).
    """
    ref = _as_ranking(reference, "reference")
    if ref.ndim != 1 or not 1 <= ref.size <= 7:
        raise ShapeError("reference", f"shape {ref.shape}", "one ranking of 1..7 contrasts",
                         message=f"reference must be one ranking of 1..7 contrasts, got shape {ref.shape}")
    return _footrule_max(tuple(int(r) for r in ref))


def _as_ranking(r: Any, name: str) -> np.ndarray:
    """Rankings along the last axis: integers 1..M forming competition ranks (a tie group of k
    items at rank r is followed by rank r + k, as :func:`contrast_ranking` produces)."""
    try:
        a = np.asarray(r.to_numpy() if isinstance(r, (pd.Series, pd.DataFrame)) else r)
    except (TypeError, ValueError):
        raise InputTypeError(name, type(r).__name__, "integer ranks 1..M") from None
    shown = np.asarray(a).tolist() if np.size(a) < 20 else a.shape
    if a.ndim == 0 or a.shape[-1] == 0 or a.dtype.kind not in "iuf":
        raise OptionError(name, shown, "integer ranks in 1..M along the last axis",
                          message=f"{name} must hold integer ranks in 1..M along the last axis, got {shown}")
    if not np.isfinite(a).all():
        raise NonFiniteError(name, shown, "integer ranks in 1..M",
                             message=f"{name} must hold integer ranks in 1..M along the last axis, got NaN/Inf: "
                                     f"{shown}")
    if (a != np.round(a)).any() or (a < 1).any() or (a > a.shape[-1]).any():
        raise OptionError(name, shown, "integer ranks in 1..M along the last axis",
                          message=f"{name} must hold integer ranks in 1..M along the last axis, got {shown}")
    a = a.astype(np.int64)
    if not (_competition(a - 1) == a).all():
        raise OptionError(name, shown, "competition ranks (ties share the minimum rank, e.g. 1, 2, 2, 4)",
                          message=f"{name} must hold competition ranks along the last axis (ties share the "
                                  f"minimum rank and the next rank skips, e.g. 1, 2, 2, 4), got {shown}")
    return a


def normalized_spearman_footrule(ranking: Any, reference: Any, *,
                                 kind: str = "agreement") -> Any:
    """Normalised Spearman footrule between a ranking and a reference ranking.

    F = Σ_i |r_i − s_i| over contrasts (last axis); F_max = :func:`footrule_max` (reference's
    tie structure). ``kind="agreement"`` (default) returns 1 − F/F_max: **1 = identical rankings,
    0 = the most discordant ranking attainable**; ``kind="distance"`` returns F/F_max (0 =
    identical). ``ranking`` may be (M,) or (..., M) (a float or an array is returned); a pandas
    Series/DataFrame is aligned on contrast labels with a Series reference.
    """
    if kind not in ("agreement", "distance"):
        raise OptionError("kind", repr(kind), "'agreement' or 'distance'",
                          message=f"kind must be 'agreement' or 'distance', got {kind!r}")
    if isinstance(reference, pd.Series) and isinstance(ranking, (pd.Series, pd.DataFrame)):
        labels = ranking.index if isinstance(ranking, pd.Series) else ranking.columns
        missing = sorted(set(labels) ^ set(reference.index))
        if missing:
            raise OptionError("ranking", missing, "the contrasts of reference",
                              message=f"ranking and reference name different contrasts: {missing}")
        reference = reference.reindex(labels)
        ranking = ranking.to_numpy()
    r, s = _as_ranking(ranking, "ranking"), _as_ranking(reference, "reference")
    if s.ndim != 1 or r.shape[-1] != s.size:
        raise ShapeError("ranking", f"shape {r.shape}", f"a last axis of {s.size} contrasts (reference)",
                         message=f"ranking has shape {r.shape} but reference has shape {s.shape}: the last "
                                 f"axes must both list the same {s.size} contrasts")
    fmax = footrule_max(s)
    f = np.abs(r - s).sum(-1) / fmax if fmax else np.zeros(r.shape[:-1])
    out = f if kind == "distance" else 1.0 - f
    return float(out) if np.ndim(out) == 0 else out


def contrast_frame(case_ids: Sequence[str], contrasts: Sequence[str], measures: dict[str, np.ndarray],
                   **constant_ids: str) -> pd.DataFrame:
    """Long table case_id, contrast, *constant_ids, metric, value from (n_cases, M) arrays.

    ``measures`` maps a metric name to its (n_cases, M) array (rows follow ``case_ids``, columns
    ``contrasts``); ``constant_ids`` are id columns with one value for every row.
    """
    n, m = len(case_ids), len(contrasts)
    ids = {"case_id": np.repeat(list(case_ids), m), "contrast": np.tile(list(contrasts), n), **constant_ids}
    parts = [pd.DataFrame({**ids, "metric": name, "value": np.asarray(arr, float).reshape(-1)})
             for name, arr in measures.items()]
    return tidy(pd.concat(parts, ignore_index=True))


@dataclass(frozen=True, eq=False)
class RankingVariance(Result):
    """Spread of contrast rankings across folds (or draws).

    ``per_contrast`` (..., M): sample variance (ddof=1) of each contrast's rank over the F
    rankings; ``per_case`` (...): its mean over contrasts (the scalar the Dice correlation uses);
    ``mean_rank`` (..., M); ``case_ids``: one per case (``("cohort",)`` for (F, M) input).

    ``to_frame()``: case_id, contrast, metric ∈ {``mean_rank``, ``rank_variance``}, value;
    ``tables()`` adds ``per_case``: case_id, metric ``mean_rank_variance``, value.
    """

    per_contrast: np.ndarray
    per_case: np.ndarray
    mean_rank: np.ndarray
    contrasts: tuple[str, ...]
    n_folds: int
    case_ids: tuple[str, ...] = ("cohort",)
    title: ClassVar[str] = "Ranking variance across folds"

    def to_frame(self) -> pd.DataFrame:
        """Long table: case_id, contrast, metric (mean_rank, rank_variance), value."""
        return contrast_frame(self.case_ids, self.contrasts,
                                   {"mean_rank": np.atleast_2d(self.mean_rank),
                                    "rank_variance": np.atleast_2d(self.per_contrast)})

    def tables(self) -> dict[str, pd.DataFrame]:
        """``per_contrast`` (= ``to_frame()``) and ``per_case`` (mean variance over contrasts)."""
        per_case = pd.DataFrame({"case_id": list(self.case_ids), "metric": "mean_rank_variance",
                                 "value": np.atleast_1d(self.per_case).astype(float)})
        return {"per_contrast": self.to_frame(), "per_case": tidy(per_case)}

    def _summary_tables(self) -> pd.DataFrame:
        axis = tuple(range(self.per_contrast.ndim - 1))
        return pd.DataFrame({"contrast": self.contrasts, "mean_rank": self.mean_rank.mean(axis=axis),
                             "rank_variance": self.per_contrast.mean(axis=axis)})

    def _notes(self) -> Sequence[str]:
        scope = "cohort ranking" if self.per_contrast.ndim == 1 else f"mean over {len(self.case_ids)} cases"
        return (f"{self.n_folds} folds; sample variance (ddof=1) of each contrast's rank; {scope}",)


def ranking_variance(rankings_across_folds: Any, contrasts: Sequence[str] | None = None, *,
                     case_ids: Sequence[Any] | None = None) -> RankingVariance:
    """Variance of each contrast's rank across F folds: input (F, M) or (F, N, M) ranks.

    Var_j = Σ_f (r_fj − r̄_j)² / (F − 1); per case the mean of Var_j over the M contrasts.
    ``case_ids`` names the N cases of (F, N, M) input (default ``"0"``, ``"1"``, ...).
    """
    r = _as_ranking(rankings_across_folds, "rankings_across_folds").astype(np.float64)
    if r.ndim not in (2, 3) or r.shape[0] < 2:
        raise ShapeError("rankings_across_folds", f"shape {r.shape}", "(F, M) or (F, N, M) with F ≥ 2",
                         message=f"rankings_across_folds must be (F, M) or (F, N, M) with F ≥ 2 folds, "
                                 f"got shape {r.shape}")
    m = r.shape[-1]
    names = tuple(contrasts) if contrasts is not None else tuple(f"c{j}" for j in range(m))
    if len(names) != m or len(set(names)) != m:
        raise OptionError("contrasts", names, f"{m} distinct names",
                          message=f"contrasts has {len(names)} names ({len(set(names))} distinct) for {m} "
                                  "ranked contrasts")
    if r.ndim == 2:
        if case_ids is not None:
            raise OptionError("case_ids", "given", "None for (F, M) cohort rankings",
                              message="case_ids names the cases of (F, N, M) rankings; these are (F, M) cohort "
                                      "rankings")
        ids: tuple[str, ...] = ("cohort",)
    else:
        ids = tuple(as_case_ids(case_ids, r.shape[1]))
    var = r.var(axis=0, ddof=1)
    return RankingVariance(var, var.mean(-1), r.mean(axis=0), names, int(r.shape[0]), ids)


# ----------------------------------------------------------------- baseline disagreement
@dataclass(frozen=True, eq=False)
class BaselineDisagreement(Result):
    """Rankings of two contrast Shapley results side by side (:func:`baseline_disagreement`).

    ``table`` (wide, for reading): case_id, the two rank vectors (tuples), ``agree``,
    ``footrule_agreement``, with a reference each one's agreement with it, and ``reason`` (why a
    case's agreements are NaN; ``""`` where defined). ``to_frame()``: case_id, reason, metric
    (``agree`` as 0/1, ``footrule_agreement``, ``<rank>_vs_reference``), value;
    ``tables()`` adds ``ranks``: case_id, contrast, metric (the two rank names), value.
    """

    table: pd.DataFrame
    ranks: pd.DataFrame
    title: ClassVar[str] = "Ranking disagreement between two absent-contrast baselines"

    def to_frame(self) -> pd.DataFrame:
        """Agreement per case, long: case_id, metric, value."""
        numeric = [c for c in self.table.columns
                   if c == "agree" or c == "footrule_agreement" or c.endswith("_vs_reference")]
        t = self.table if "reason" in self.table else self.table.assign(reason="")
        df = long_frame(t, ["case_id", "reason"], numeric)
        df.loc[df["value"].notna(), "reason"] = ""
        return df

    def tables(self) -> dict[str, pd.DataFrame]:
        """``agreement`` (= ``to_frame()``) and ``ranks``."""
        return {"agreement": self.to_frame(), "ranks": tidy(self.ranks)}

    def _summary_tables(self) -> pd.DataFrame:
        return self.table


def baseline_disagreement(a: Any, b: Any, reference: Sequence[int] | None = None) -> BaselineDisagreement:
    """Side-by-side rankings of two contrast Shapley results (e.g. absent="zero" vs "marginal").

    ``a`` and ``b`` are ``ContrastShapley`` results over the same contrasts (and cases). One row
    per case (or one "cohort" row): rank vectors of both, ``agree`` (identical rankings), their
    footrule agreement 1 − F/F_max (b as reference), and with ``reference`` (e.g. the clinical
    (3, 1, 3, 2) for T1, T1c, T2, FLAIR) each one's agreement with it. A case whose φ is
    undefined in either result (NaN) has NaN agreements, with the reason in ``reason``, and one
    ``UndefinedValueWarning`` is raised.
    """
    for name, r in (("a", a), ("b", b)):
        if not all(hasattr(r, f) for f in ("contrasts", "per_case", "case_ids", "absent", "ranking")):
            raise InputTypeError(name, type(r).__name__, "a ContrastShapley result",
                                 message=f"{name} must be a ContrastShapley result (contrast_shapley), got "
                                         f"{type(r).__name__}")
    if a.contrasts != b.contrasts or a.per_case != b.per_case or \
            (a.per_case and a.case_ids != b.case_ids):
        raise OptionError("b", "another set of contrasts or cases", "the contrasts and cases of a",
                          message=f"results are not comparable: contrasts {a.contrasts} vs {b.contrasts}, "
                                  f"per_case {a.per_case} vs {b.per_case} (and per-case ids must match) (a, b)")
    ref = None if reference is None else _as_ranking(reference, "reference")
    if ref is not None and (ref.ndim != 1 or ref.size != len(a.contrasts)):
        raise ShapeError("reference", f"shape {ref.shape}", f"one ranking of the {len(a.contrasts)} contrasts",
                         message=f"reference must rank the {len(a.contrasts)} contrasts {a.contrasts}, got "
                                 f"shape {ref.shape}")
    ra, rb = np.atleast_2d(a.ranking()), np.atleast_2d(b.ranking())
    ok = np.isfinite(ra).all(1) & np.isfinite(rb).all(1)
    cases = list(a.case_ids) if a.per_case else ["cohort"]
    na, nb = (f"rank_{a.absent}", f"rank_{b.absent}") if a.absent != b.absent else ("rank_a", "rank_b")
    nan = float("nan")
    given = "".join(f": {r.reason}" for r in (a, b) if getattr(r, "reason", ""))

    def why_nan(i: int) -> str:
        which = ", ".join(n for n, r in (("a", ra[i]), ("b", rb[i])) if not np.isfinite(r).all())
        return f"undefined Shapley values (NaN φ) in {which}{given}"

    why = ["" if ok[i] else why_nan(i) for i in range(len(cases))]
    df = pd.DataFrame({"case_id": cases,
                       na: [tuple(r) for r in ra.tolist()], nb: [tuple(r) for r in rb.tolist()],
                       "agree": [float((p == q).all()) if k else nan for p, q, k in zip(ra, rb, ok)],
                       "footrule_agreement": [normalized_spearman_footrule(p.astype(np.int64), q.astype(np.int64))
                                              if k else nan for p, q, k in zip(ra, rb, ok)]})
    if ref is not None:
        for col, r in ((f"{na}_vs_reference", ra), (f"{nb}_vs_reference", rb)):
            df[col] = [normalized_spearman_footrule(v.astype(np.int64), ref) if np.isfinite(v).all() else nan
                       for v in r]
    df["reason"] = why
    warn_undefined("baseline_disagreement", [w for w in why if w])
    return BaselineDisagreement(df, contrast_frame(cases, a.contrasts, {na: ra, nb: rb}))
