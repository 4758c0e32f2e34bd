"""ROC curves of a reader study: empirical points per reader × phase and the reader-averaged curve.

Empirical ROC points per reader × phase (``sklearn.metrics.roc_curve``, all thresholds kept) and
a reader-averaged curve by *vertical averaging* (Fawcett 2006, §7.1): each reader's empirical
curve is read as a function TPR_r(f) of the false-positive rate (linear between successive
points; at an FPR where the curve jumps vertically the value is the top of the jump, and
``side="left"`` rows give the bottom), and the average is TPR(f) = (1/R) Σ_r TPR_r(f) on a
common FPR grid (the union of every reader's FPRs, so the averaged polyline is exact). Its area
equals the mean of the readers' empirical AUCs. Per-reader AUCs carry DeLong SEs
(:func:`probes.metrics.roc.delong`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from audit.readers.reads import ReadColumns, check_both_classes, check_scores, check_truth, validate_reads
from audit.readers.result import Layout, ReaderResult
from probes.core.errors import OptionError, ShapeError, warn_undefined
from probes.core.validate import check_alpha, check_choice
from probes.metrics.roc import delong

__all__ = ["roc_points", "vertical_average", "reader_roc", "ReaderROC"]


def roc_points(labels: Any, scores: Any) -> pd.DataFrame:
    """Empirical ROC points (threshold, fpr, tpr), every threshold kept (sklearn ``roc_curve``).

    A case is called positive when score ≥ threshold; the first row is (inf, 0, 0).
    """
    t = check_truth(labels, "labels")
    s = check_scores(scores, t.size, "scores", unit=False)
    check_both_classes(t, "an ROC curve")
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
        raise ShapeError("curves", message="vertical_average needs at least one curve")
    for k, c in enumerate(curves):
        if not {"fpr", "tpr"} <= set(c.columns):
            raise ShapeError("curves", message=f"curve {k} lacks fpr/tpr columns (has {list(c.columns)})")
    if grid is None:
        grid = np.unique(np.concatenate([np.asarray(c["fpr"], float) for c in curves]))
    grid = np.asarray(grid, float)
    if grid.ndim != 1 or not np.isfinite(grid).all() or ((grid < 0) | (grid > 1)).any():
        raise OptionError("grid", message=f"grid must be 1-D FPRs in [0, 1], got shape {grid.shape}")
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


@dataclass(frozen=True, eq=False)
class ReaderROC(ReaderResult):
    """ROC curves of a reader study.

    Native tables: ``auc``: phase, reader, curve, reason, n_pos, n_neg, auc, se, ci_low, ci_high (DeLong
    SE and Wald CI per reader; the row with ``reader = None``/``curve = "average"`` (n_pos/n_neg
    counting distinct cases) is the mean reader AUC, which equals the area under the vertically
    averaged curve — its fixed-reader uncertainty belongs to the MRMC analysis and is left NaN
    here); ``points``: phase, reader, threshold, fpr, tpr (empirical, per reader × phase);
    ``average``: phase, fpr, tpr, side, n_curves (vertical average over readers per phase).
    ``to_frame()`` is ``auc`` long (phase, reader, curve, metric, value).
    """

    auc: pd.DataFrame
    points: pd.DataFrame
    average: pd.DataFrame
    alpha: float = 0.05

    title: ClassVar[str] = "ROC curves per reader and phase"
    layouts: ClassVar[Mapping[str, Layout]] = {
        "auc": Layout(("phase", "reader", "curve"), undefined=dict.fromkeys(
            ("se", "ci_low", "ci_high"), "the reader-averaged AUC's uncertainty is the MRMC analysis' (mrmc_or)")),
        "points": Layout(("phase", "reader", "threshold")),
        "average": Layout(("phase", "fpr", "side"))}

    def _notes(self) -> tuple[str, ...]:
        return (f"auc: empirical AUC per reader with its DeLong SE and {100 * (1 - self.alpha):g}% Wald CI; "
                "curve 'average': the mean reader AUC (area under the vertically averaged curve).",)


def reader_roc(reads: pd.DataFrame, columns: ReadColumns = ReadColumns(), *, score: str = "score",
               alpha: float = 0.05) -> ReaderROC:
    """Empirical ROC per reader × phase and the reader-averaged curve per phase.

    ``score`` names the standard field used as the rating: "score" (default), "decision"
    (a binary call: a single operating point) or "ai_prob". A reader who saw a single truth
    class in a phase has no curve there: that AUC and the phase's average are NaN with a
    ``reason`` and one :class:`probes.core.errors.UndefinedValueWarning`.
    """
    check_choice(score, "score", ("score", "decision", "ai_prob"))
    check_alpha(alpha)
    r = validate_reads(reads, columns, need=("reader", "case", "truth", "phase", score), paired=False)
    pts, avg, aucs = [], [], []
    for ph, g in r.groupby("phase", observed=True, sort=True):
        curves = []
        for rd, gr in g.groupby("reader", sort=True):
            if gr["truth"].nunique() < 2:  # a reader who saw one class in this phase has no curve
                aucs.append({"phase": ph, "reader": rd, "curve": "reader", "reason": "the reader saw a single truth "
                             "class in this phase", "n_pos": int(gr["truth"].sum()),
                             "n_neg": int((1 - gr["truth"]).sum()), "auc": np.nan, "se": np.nan, "ci_low": np.nan,
                             "ci_high": np.nan})
                continue
            p = roc_points(gr["truth"].to_numpy(), gr[score].to_numpy())
            p.insert(0, "reader", rd)
            p.insert(0, "phase", ph)
            pts.append(p)
            curves.append(p)
            d = delong(gr["truth"].to_numpy(), gr[score].to_numpy(), alpha=alpha)
            aucs.append({"phase": ph, "reader": rd, "curve": "reader", "n_pos": d.n_pos, "n_neg": d.n_neg,
                         "auc": d.auc_a, "se": d.se, "ci_low": d.ci_low, "ci_high": d.ci_high})
        if curves:
            a = vertical_average(curves)
            a.insert(0, "phase", ph)
            avg.append(a)
        # the mean over readers is the reader-averaged AUC only when every reader has one
        mean_auc = float(np.mean([x["auc"] for x in aucs if x["phase"] == ph]))
        gc = g.drop_duplicates("case")
        aucs.append({"phase": ph, "reader": None, "curve": "average",
                     "reason": "" if np.isfinite(mean_auc) else "a reader saw a single truth class in this phase",
                     "n_pos": int(gc["truth"].sum()), "n_neg": int((1 - gc["truth"]).sum()), "auc": mean_auc,
                     "se": np.nan, "ci_low": np.nan, "ci_high": np.nan})
    cat = r["phase"].dtype
    out = []
    auc_table = pd.DataFrame(aucs)
    auc_table.insert(3, "reason", auc_table.pop("reason").fillna(""))
    empty = pd.DataFrame(columns=["phase"])
    for df in (auc_table, pd.concat(pts, ignore_index=True) if pts else empty,
               pd.concat(avg, ignore_index=True) if avg else empty.copy()):
        df["phase"] = df["phase"].astype(cat)
        out.append(df)
    warn_undefined("reader_roc", auc_table["reason"])
    return ReaderROC(*out, alpha=float(alpha))
