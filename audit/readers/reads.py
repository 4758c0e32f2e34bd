"""The reader-study input: one row per read, validated once, with errors that say what is wrong.

A *read* is one reader's decision on one case (patient) in one phase (test, modality, or
reading condition such as "MRI", "MRI+AI", "MRI+AI+XAI"). Columns (names configurable via
:class:`ReadColumns`): reader, case, truth (0/1), phase, and optionally decision (0/1), score
(a confidence rating or probability, higher = more likely positive) and ai_prob (the AI's
probability shown to the reader).

The array-level functions (ROC points, calibration, decision curves) take the same fields as
arrays, one value per case: :func:`check_truth` and :func:`check_scores` check them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np
import pandas as pd

from probes.core.errors import AuditInputError, InputTypeError, LabelError, NonFiniteError, OptionError, ShapeError

__all__ = ["ReadsError", "ReadColumns", "check_columns", "validate_reads", "STANDARD", "case_groups", "check_truth",
           "check_scores", "check_both_classes", "single_class", "check_frame"]

STANDARD = ("reader", "case", "truth", "phase", "decision", "score", "ai_prob")


class ReadsError(AuditInputError):
    """The reads table cannot be analysed as given (the message says which column/case/reader).

    ``name`` is the user's column at fault (``"reads"`` when the problem is the table as a
    whole), ``got`` the offending values; the message always mentions ``reads`` (the argument).
    """

    def __init__(self, message: str, column: str | None = None, got: Any = None, expected: str = ""):
        if "reads" not in message:  # the argument is named even when the message names only a column
            message = f"reads: {message}"
        super().__init__(column or "reads", got, expected, message=message)


@dataclass(frozen=True)
class ReadColumns:
    """Column names in the user's table for each standard field."""

    reader: str = "reader"
    case: str = "case"
    truth: str = "truth"
    phase: str = "phase"
    decision: str = "decision"
    score: str = "score"
    ai_prob: str = "ai_prob"

    def mapping(self) -> dict[str, str]:
        """User column name → standard name."""
        return {getattr(self, f.name): f.name for f in fields(self)}


def check_columns(columns: Any) -> ReadColumns:
    """``columns`` if it is a :class:`ReadColumns`, else TypeError (e.g. a statistic passed positionally)."""
    if not isinstance(columns, ReadColumns):
        raise InputTypeError("columns", type(columns).__name__, "a ReadColumns",
                             message=f"columns must be a ReadColumns (the column names of the reads table), got "
                                     f"{type(columns).__name__} {columns!r}")
    return columns


def _binary(s: pd.Series, name: str, user: str) -> pd.Series:
    vals = pd.unique(s)
    try:
        num = pd.to_numeric(s, errors="raise")
    except (ValueError, TypeError):
        raise ReadsError(f"column {user!r} ({name}) must be binary 0/1, found values "
                         f"{sorted(map(str, vals))[:6]}", user, sorted(map(str, vals))[:6], "0/1") from None
    bad = sorted(set(np.unique(num).tolist()) - {0, 1})
    if bad:
        raise ReadsError(f"column {user!r} ({name}) must be binary 0/1, found values {bad[:6]}", user, bad[:6], "0/1")
    return num.astype(int)


def check_frame(reads: Any) -> pd.DataFrame:
    """``reads`` if it is a pandas DataFrame, else :class:`ReadsError`."""
    if not isinstance(reads, pd.DataFrame):
        raise ReadsError(f"reads must be a pandas DataFrame, got {type(reads).__name__}", None,
                         type(reads).__name__, "a pandas DataFrame")
    return reads


def validate_reads(reads: pd.DataFrame, columns: ReadColumns = ReadColumns(), *,
                   need: Sequence[str] = ("reader", "case", "truth", "phase"),
                   paired: bool = True) -> pd.DataFrame:
    """Check a reads table and return a copy with standard column names.

    Returned columns: the standard names of every present field (reader, case, truth, phase,
    decision, score, ai_prob) in that order, ``truth``/``decision`` as int 0/1, ``phase`` as
    an ordered categorical (its existing order if categorical, else order of first appearance).

    Raises :class:`ReadsError` (a :class:`probes.core.errors.AuditInputError` whose ``name`` is
    the user's column at fault and ``got`` the offending values) for: a table that is not a
    DataFrame or has no rows, a missing needed column (the available ones are listed),
    NaN in a needed column, inf in score/ai_prob, ai_prob outside [0, 1], non-binary truth or
    decision, truth that differs between reads of one case, duplicate (reader, case, phase)
    rows, a reader who saw only one truth class, and, with ``paired=True``, a (reader, case)
    not read in every phase.
    """
    check_frame(reads)
    check_columns(columns)
    unknown = sorted(set(need) - set(STANDARD))
    if unknown:
        raise OptionError("need", unknown, f"standard fields {list(STANDARD)}",
                          message=f"need lists unknown fields {unknown}; standard fields are {list(STANDARD)}")
    users = {f: getattr(columns, f) for f in STANDARD}
    missing = [f"{users[f]!r} ({f})" for f in need if users[f] not in reads.columns]
    if missing:
        first = next(users[f] for f in need if users[f] not in reads.columns)
        raise ReadsError(f"reads lacks column(s) {', '.join(missing)}; available columns: {list(reads.columns)}",
                         first, list(reads.columns), "the column present")
    present = [f for f in STANDARD if users[f] in reads.columns]
    out = reads[[users[f] for f in present]].copy()
    out.columns = present
    if out.empty:
        raise ReadsError("reads has no rows", None, "0 rows", "at least one read")
    for f in present:
        n_nan = int(out[f].isna().sum())
        if n_nan and f in need:
            rows = out.index[out[f].isna()].tolist()[:5]
            raise ReadsError(f"column {users[f]!r} ({f}) has {n_nan} missing value(s), e.g. at rows {rows}",
                             users[f], f"{n_nan} missing", "a value in every row")
    out["truth"] = _binary(out["truth"], "truth", users["truth"]) if "truth" in out else None
    if "decision" in out and out["decision"].notna().all():
        out["decision"] = _binary(out["decision"], "decision", users["decision"])
    for f in ("score", "ai_prob"):
        if f in out:
            try:
                out[f] = pd.to_numeric(out[f], errors="raise").astype(float)
            except (ValueError, TypeError):
                raise ReadsError(f"column {users[f]!r} ({f}) must be numeric", users[f], "non-numeric values",
                                 "numbers") from None
            if not np.isfinite(out[f].dropna()).all():
                raise ReadsError(f"column {users[f]!r} ({f}) holds inf values", users[f], "inf", "finite numbers")
    if "ai_prob" in out and ((out["ai_prob"] < 0) | (out["ai_prob"] > 1)).any():
        bad = out.loc[(out["ai_prob"] < 0) | (out["ai_prob"] > 1), "ai_prob"].head(3).tolist()
        raise ReadsError(f"column {users['ai_prob']!r} (ai_prob) must lie in [0, 1], found values {bad}",
                         users["ai_prob"], bad, "probabilities in [0, 1]")
    if "phase" in out:
        ph = out["phase"]
        # a categorical keeps its order but not its unused levels (a subset of phases is a study too)
        cats = (list(ph.cat.remove_unused_categories().cat.categories) if isinstance(ph.dtype, pd.CategoricalDtype)
                else list(pd.unique(ph)))
        out["phase"] = pd.Categorical(ph.astype(object), categories=cats, ordered=True)
    _check_structure(out, users, paired)
    return out.reset_index(drop=True)


def _check_structure(out: pd.DataFrame, users: dict[str, str], paired: bool) -> None:
    if {"case", "truth"} <= set(out):
        n_truth = out.groupby("case", observed=True)["truth"].nunique()
        bad = n_truth[n_truth > 1].index.tolist()  # tolist() gives Python scalars (clean reprs)
        if bad:
            raise ReadsError(f"truth differs between reads of case(s) {bad[:5]} (column {users['truth']!r}); "
                             "the truth of a case must be the same for every reader and phase", users["truth"],
                             bad[:5], "one truth per case")
    keys = [k for k in ("reader", "case", "phase") if k in out]
    if len(keys) == 3:
        dup = out.duplicated(keys, keep=False)
        if dup.any():
            ex = out.loc[dup, keys].head(3).to_dict("records")
            raise ReadsError(f"reads has {int(dup.sum())} duplicate (reader, case, phase) rows, e.g. {ex}",
                             None, ex, "one read per reader, case and phase")
    if {"reader", "truth"} <= set(out):
        classes = out.groupby("reader", observed=True)["truth"].nunique()
        one = classes[classes < 2].index.tolist()
        if one:
            raise ReadsError(f"reader(s) {one[:5]} saw only one truth class; sensitivity, specificity and "
                             f"AUC need both diseased and non-diseased cases (column {users['truth']!r})",
                             users["truth"], one[:5], "both truth classes for every reader")
    if paired and len(keys) == 3:
        phases = list(out["phase"].cat.categories)
        seen = out.groupby(["reader", "case"], observed=True)["phase"].nunique()
        short = seen[seen < len(phases)]
        if len(short):
            r, c = (v.item() if isinstance(v, np.generic) else v for v in short.index[0])
            got = sorted(map(str, out.loc[(out["reader"] == r) & (out["case"] == c), "phase"]))
            raise ReadsError(f"{len(short)} (reader, case) pair(s) not read in every phase {phases}: e.g. reader "
                             f"{r!r}, case {c!r} was read only in {got} (pass paired=False for an unpaired design)",
                             users["phase"], got, f"every phase {phases}")


def case_groups(reads: pd.DataFrame, columns: ReadColumns, field: str, by: Sequence[str] | None
                ) -> tuple[tuple[str, ...], list[tuple[dict, pd.DataFrame]]]:
    """Validated reads of the probability ``field`` in groups of ``by``, one row per case in each.

    ``by`` ⊆ ("phase", "reader"); by default no grouping for ai_prob (the AI's probability is
    one value per case) and ("phase", "reader") for a reader's field. Returns ``by`` and a list
    of (group labels, group reads). Raises :class:`ReadsError` for values outside [0, 1] and
    for a case whose reads disagree within a group.
    """
    by = (() if field == "ai_prob" else ("phase", "reader")) if by is None else tuple(by)
    bad = [b for b in by if b not in ("phase", "reader")]
    if bad:
        raise OptionError("by", bad, "'phase' and/or 'reader'",
            message=f"by may hold 'phase' and/or 'reader', got {bad}")
    r = validate_reads(reads, columns, need=("reader", "case", "truth", "phase", field), paired=False)
    if ((r[field] < 0) | (r[field] > 1)).any():
        bad = r.loc[(r[field] < 0) | (r[field] > 1), field].head(3).tolist()
        raise ReadsError(f"column {getattr(columns, field)!r} ({field}) must hold probabilities in [0, 1], found "
                         f"values {bad}", getattr(columns, field), bad, "probabilities in [0, 1]")
    keys = [*by, "case"]
    spread = r.groupby(keys, observed=True)[field].agg(lambda s: s.max() - s.min())
    differ = spread[spread > 0]
    if len(differ):
        raise ReadsError(f"{field} differs between reads of {len(differ)} case(s) within groups "
                         f"{list(by) or 'all'}, e.g. {differ.index[0]!r}; pass a finer by, e.g. by=('phase', 'reader')",
                         getattr(columns, field), differ.index[0], "one value per case within a group")
    r = r.drop_duplicates(keys)
    groups = r.groupby(list(by), observed=True, sort=True) if by else [((), r)]
    return by, [(dict(zip(by, k if isinstance(k, tuple) else (k,))), g) for k, g in groups]


def check_truth(truth: Any, name: str = "truth") -> np.ndarray:
    """The true class of each case as an int array (n,) of 0/1 (1-D, non-empty, numeric, no NaN)."""
    if isinstance(truth, (str, bytes)) or truth is None:
        raise InputTypeError(name, type(truth).__name__, "0/1 per case",
                             message=f"{name} must be an array of 0/1 per case, got {type(truth).__name__}")
    t = np.asarray(truth)
    if t.ndim != 1:
        raise ShapeError(name, f"shape {t.shape}", "1-D (one per case)",
            message=f"{name} must be 1-D, got shape {t.shape}")
    if t.size == 0:
        raise ShapeError(name, "0 entries", "at least one case", message=f"{name} is empty")
    if t.dtype == bool:
        t = t.astype(int)
    if not np.issubdtype(t.dtype, np.number):
        raise LabelError(name, f"dtype {t.dtype}", "0/1",
                         message=f"{name} must be numeric 0/1 without NaN, got dtype {t.dtype}")
    if np.isnan(t.astype(float)).any():
        raise NonFiniteError(name, "NaN", "0/1", message=f"{name} must be numeric 0/1 without NaN, got NaN values")
    bad = sorted(set(np.unique(t).tolist()) - {0, 1})
    if bad:
        raise LabelError(name, bad[:5], "0/1", message=f"{name} must be binary 0/1, found values {bad[:5]}")
    return t.astype(int)


def check_scores(scores: Any, n: int, name: str = "prob", *, unit: bool = True, ref: str = "labels") -> np.ndarray:
    """One finite float per case, (n,); with ``unit`` probabilities in [0, 1]."""
    if isinstance(scores, (str, bytes)) or scores is None:
        raise InputTypeError(name, type(scores).__name__, "one number per case",
                             message=f"{name} must be numeric, got {type(scores).__name__}")
    try:
        p = np.asarray(scores, dtype=float)
    except (TypeError, ValueError):
        raise InputTypeError(name, "non-numeric values", "numbers", message=f"{name} must be numeric") from None
    if p.ndim != 1:
        raise ShapeError(name, f"shape {p.shape}", "1-D (one per case)",
            message=f"{name} must be 1-D, got shape {p.shape}")
    if p.shape[0] != n:
        raise ShapeError(name, f"{p.shape[0]} values", f"{n} (one per case)",
                         message=f"{name} has {p.shape[0]} values but {ref} has {n}")
    if not np.isfinite(p).all():
        raise NonFiniteError(name, f"{int((~np.isfinite(p)).sum())} NaN/inf", "finite values",
                             message=f"{name} contains NaN or inf ({int((~np.isfinite(p)).sum())} values)")
    if unit and ((p < 0) | (p > 1)).any():
        lo, hi = float(p.min()), float(p.max())
        raise LabelError(name, f"range [{lo:g}, {hi:g}]", "probabilities in [0, 1]",
                         message=f"{name} must be probabilities in [0, 1], got range [{lo:g}, {hi:g}]")
    return p


def single_class(labels: np.ndarray) -> str:
    """Why a two-class quantity is undefined on ``labels`` (checked 0/1): "" when both classes occur."""
    if labels.size and labels.min() == labels.max():
        return f"labels has a single class ({int(labels[0])} for all {labels.size} cases)"
    return ""


def check_both_classes(labels: np.ndarray, what: str) -> None:
    """:class:`LabelError` when ``labels`` (checked 0/1) holds a single class: ``what`` needs both."""
    if labels.min() == labels.max():
        raise LabelError("labels", f"a single class ({int(labels[0])})", "both classes 0 and 1",
                         message=f"labels has a single class ({int(labels[0])} for all {labels.size} cases); "
                                 f"{what} needs both")
