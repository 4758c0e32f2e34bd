"""Contrast rankings from Shapley values, normalised Spearman footrule agreement with a (tied)
reference ranking, and ranking variance across folds — see :mod:`probes.shapley`.

Ranks: 1 = most important; ties within ``tol`` share the minimum rank (competition ranking,
1-2-3-3, the form of the BraTS clinical reference T1c=1, FLAIR=2, T1/T2=3). Footrule
F = Σ|r_i − s_i| (Spearman 1906; Diaconis & Graham 1977), normalised by the largest F any
competition ranking reaches against the reference: agreement 1 − F/F_max (1 identical, 0 most
discordant).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
import pandas as pd

__all__ = ["contrast_ranking", "normalized_spearman_footrule", "footrule_max", "RankingVariance",
           "ranking_variance"]


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
    p = np.asarray(phi, dtype=np.float64)
    if p.ndim == 0 or p.shape[-1] == 0:
        raise ValueError(f"phi must have a last axis of contrasts, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("phi contains NaN or inf; cannot rank")
    if not tol >= 0:
        raise ValueError(f"tol must be ≥ 0, got {tol!r}")
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
        raise ValueError(f"reference must be one ranking of 1..7 contrasts, got shape {ref.shape}")
    return _footrule_max(tuple(int(r) for r in ref))


def _as_ranking(r: Any, name: str) -> np.ndarray:
    a = np.asarray(r.to_numpy() if isinstance(r, (pd.Series, pd.DataFrame)) else r)
    if a.ndim == 0 or a.dtype.kind not in "iuf" or not np.isfinite(a).all() \
            or (a != np.round(a)).any() or (a < 1).any() or (a > a.shape[-1]).any():
        raise ValueError(f"{name} must hold integer ranks in 1..M along the last axis, got "
                         f"{np.asarray(a).tolist() if np.size(a) < 20 else a.shape}")
    return a.astype(np.int64)


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
        raise ValueError(f"kind must be 'agreement' or 'distance', got {kind!r}")
    if isinstance(reference, pd.Series) and isinstance(ranking, (pd.Series, pd.DataFrame)):
        labels = ranking.index if isinstance(ranking, pd.Series) else ranking.columns
        missing = sorted(set(labels) ^ set(reference.index))
        if missing:
            raise ValueError(f"ranking and reference name different contrasts: {missing}")
        reference = reference.reindex(labels)
        ranking = ranking.to_numpy()
    r, s = _as_ranking(ranking, "ranking"), _as_ranking(reference, "reference")
    if s.ndim != 1 or r.shape[-1] != s.size:
        raise ValueError(f"ranking has shape {r.shape} but reference has shape {s.shape}: the last "
                         f"axes must both list the same {s.size} contrasts")
    fmax = footrule_max(s)
    f = np.abs(r - s).sum(-1) / fmax if fmax else np.zeros(r.shape[:-1])
    out = f if kind == "distance" else 1.0 - f
    return float(out) if np.ndim(out) == 0 else out


@dataclass(frozen=True)
class RankingVariance:
    """Spread of contrast rankings across folds (or draws).

    ``per_contrast`` (..., M): sample variance (ddof=1) of each contrast's rank over the F
    rankings; ``per_case`` (...): its mean over contrasts (the scalar the Dice correlation uses);
    ``mean_rank`` (..., M).
    """

    per_contrast: np.ndarray
    per_case: np.ndarray
    mean_rank: np.ndarray
    contrasts: tuple[str, ...]
    n_folds: int

    def to_frame(self) -> pd.DataFrame:
        """Long table: case (row index, or "cohort"), contrast, mean_rank, rank_variance."""
        pc = np.atleast_2d(self.per_contrast)
        mr = np.atleast_2d(self.mean_rank)
        cases = ["cohort"] if self.per_contrast.ndim == 1 else list(range(pc.shape[0]))
        rows = [{"case": c, "contrast": ch, "mean_rank": mr[i, j], "rank_variance": pc[i, j]}
                for i, c in enumerate(cases) for j, ch in enumerate(self.contrasts)]
        return pd.DataFrame(rows)


def ranking_variance(rankings_across_folds: Any, contrasts: Sequence[str] | None = None
                     ) -> RankingVariance:
    """Variance of each contrast's rank across F folds: input (F, M) or (F, N, M) ranks.

    Var_j = Σ_f (r_fj − r̄_j)² / (F − 1); per case the mean of Var_j over the M contrasts.
    """
    r = _as_ranking(rankings_across_folds, "rankings_across_folds").astype(np.float64)
    if r.ndim not in (2, 3) or r.shape[0] < 2:
        raise ValueError(f"rankings_across_folds must be (F, M) or (F, N, M) with F ≥ 2 folds, "
                         f"got shape {r.shape}")
    m = r.shape[-1]
    names = tuple(contrasts) if contrasts is not None else tuple(f"c{j}" for j in range(m))
    if len(names) != m:
        raise ValueError(f"contrasts has {len(names)} names for {m} ranked contrasts")
    var = r.var(axis=0, ddof=1)
    return RankingVariance(var, var.mean(-1), r.mean(axis=0), names, int(r.shape[0]))
