"""Tidy rows for the metrics' results: a wide-table result and per-case metric values.

* :class:`WideTableResult` — a result kept as one wide table (identifier columns, then one
  column per measurement); ``to_frame()`` melts it into the long format of
  :mod:`probes.core.result` and ``summary()`` shows the mean over cases.
* :func:`case_values` — the tidy rows of an element-wise metric (an ``(N,)`` or ``(N, C)``
  array such as ``sparsity(maps)`` or ``iou_at_percentile(maps, mask)``), as a
  :class:`CaseValues` result.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from probes.core.errors import InputTypeError, OptionError, ShapeError, UndefinedValueWarning
from probes.core.result import Result, long_frame
from probes.core.validate import as_case_ids, check_finite, to_numpy

__all__ = ["WideTableResult", "Column", "CaseValues", "case_values", "case_means", "contrast_names",
           "warn_reasons", "numeric"]

# Columns that describe a row without identifying a measurement: never grouped on in summaries.
_ANNOTATIONS = ("case_id", "reason")


def warn_reasons(instrument: str, reasons: Iterable[str], category: type[Warning] = UndefinedValueWarning,
                 stacklevel: int = 3) -> None:
    """One warning (``category``, an :class:`UndefinedValueWarning`) for a call with undefined values.

    The message has the form of ``probes.core.errors.warn_undefined``: each distinct reason with
    its count. Nothing is raised when every reason is empty.
    """
    counts = Counter(r for r in reasons if r)
    if counts:
        text = "; ".join(f"{reason} ({n}×)" for reason, n in counts.most_common())
        warnings.warn(f"{instrument}: NaN where the value is undefined — {text}", category, stacklevel=stacklevel)


def numeric(a: Any, name: str, *, finite: bool = True, allow_nan: bool = False) -> np.ndarray:
    """``a`` as a float64 numpy array: strings/objects refused (:class:`InputTypeError`); NaN/Inf
    refused (:class:`NonFiniteError`) when ``finite`` — NaN alone is let through with ``allow_nan``."""
    v = to_numpy(a, name)
    if v.dtype.kind not in "biuf":
        raise InputTypeError(name, f"dtype {v.dtype}", "numbers",
                             message=f"{name} must hold numbers, got dtype {v.dtype}")
    v = v.astype(np.float64)
    if finite:
        check_finite(v[~np.isnan(v)] if allow_nan else v, name)
    return v


def contrast_names(contrasts: Sequence[Any] | None, c: int, name: str = "contrasts") -> list[str]:
    """``c`` contrast names as str: ``contrasts`` checked for length, or ``"0"``, ``"1"``, ... ."""
    if contrasts is None:
        return [str(i) for i in range(c)]
    names = [str(s) for s in contrasts]
    if len(names) != c:
        raise ValueError(f"{name} has {len(names)} names for {c} contrasts")
    return names


def case_means(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and count of ``value`` over cases, per group of the other identifier columns.

    ``frame`` is tidy (id columns, ``metric``, ``value``). Returns the groups (in order of first
    appearance) with ``n`` (non-NaN cases), ``mean`` and ``std`` (ddof = 1; NaN for one case).
    """
    keys = [c for c in frame.columns if c not in (*_ANNOTATIONS, "value")]
    g = frame.groupby(keys, sort=False, dropna=False)["value"]
    return pd.DataFrame({"n": g.count(), "mean": g.mean(), "std": g.std(ddof=1)}).reset_index()


class Column:
    """A read-only attribute of a :class:`WideTableResult`: the measurement column of its name.

    ``aupc = Column("AUPC of the map's ordering")`` in a result class makes ``result.aupc`` the
    float64 array ``result.column("aupc")``.
    """

    def __init__(self, doc: str):
        self.__doc__ = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: "WideTableResult | None", owner: type | None = None) -> Any:
        return self if obj is None else obj.column(self.name)


@dataclass(frozen=True, eq=False)
class WideTableResult(Result):
    """A result stored as one wide table: ``id_vars`` columns, then one column per measurement.

    ``table`` is the native wide table (kept for reading); ``to_frame()`` is its long form
    (``long_frame(table, id_vars)``: id columns, ``metric`` = the measurement's column name,
    ``value``); ``summary()`` shows :func:`case_means` when the table has cases, else the table.
    """

    table: pd.DataFrame
    id_vars: tuple[str, ...]
    title: str = "result"  # type: ignore[misc]  (an instance field shadowing the ClassVar)
    notes: tuple[str, ...] = field(default=())

    def to_frame(self) -> pd.DataFrame:
        """Long copy: the id columns, ``metric``, ``value``.

        With a ``reason`` column (why a case's values are undefined) the reason is kept only on
        the rows whose value is NaN: ``""`` where the value is defined.
        """
        out = long_frame(self.table, self.id_vars)
        if "reason" in out.columns:
            out.loc[out["value"].notna(), "reason"] = ""
        return out

    def column(self, name: str) -> np.ndarray:
        """One measurement column of ``table`` as a float64 array (one entry per row)."""
        return self.table[name].to_numpy(dtype=np.float64)

    @property
    def case_ids(self) -> tuple[str, ...]:
        """The case ids in order of first appearance (empty when the table has no cases)."""
        if "case_id" not in self.table.columns:
            return ()
        return tuple(str(c) for c in pd.unique(self.table["case_id"]))

    def _summary_tables(self) -> pd.DataFrame:
        if "case_id" in self.id_vars:
            return case_means(self.to_frame())
        return self.table

    def _notes(self) -> Sequence[str]:
        if "case_id" in self.id_vars:
            return (f"mean, std (ddof = 1) and n over {len(self.case_ids)} case(s); NaN values left out",
                    *self.notes)
        return self.notes

    def __len__(self) -> int:
        return len(self.table)


@dataclass(frozen=True, eq=False)
class CaseValues(WideTableResult):
    """Per-case values of one element-wise metric (:func:`case_values`).

    ``table``: case_id, method, [contrast,] and one column named after the metric.
    ``values`` gives them back as ``(N,)`` or ``(N, C)``.
    """

    metric: str = "value"

    @property
    def values(self) -> np.ndarray:
        """The values as ``(N,)``, or ``(N, C)`` when there is a contrast column."""
        v = self.column(self.metric)
        if "contrast" in self.table.columns:
            return v.reshape(-1, len(pd.unique(self.table["contrast"])))
        return v


def case_values(values: Any, metric: str, *, case_ids: Sequence[Any] | None = None, method: str = "",
                contrasts: Sequence[str] | None = None) -> CaseValues:
    """Tidy rows of an element-wise metric: ``(N,)`` → case_id, method, metric, value; ``(N, C)`` →
    case_id, method, contrast, metric, value (contrast names default to ``"0"``, ``"1"``, ...).

    ``case_ids`` are stored as str (default ``"0"``, ``"1"``, ...). Values are read as float64;
    NaN (an undefined value, which the metric warned about) is kept, Inf is refused.
    """
    v = numeric(values, "values", allow_nan=True)
    if v.ndim not in (1, 2) or v.shape[0] == 0:
        raise ShapeError("values", f"shape {v.shape}", "(N,) or (N, C) with N >= 1",
                         message=f"values must be (N,) or (N, C) with N >= 1, got shape {v.shape}")
    n = v.shape[0]
    ids = as_case_ids(case_ids, n)
    if not isinstance(metric, str) or not metric:
        raise OptionError("metric", repr(metric), "a non-empty str",
                          message=f"metric must be a non-empty str naming the values, got {metric!r}")
    if v.ndim == 1:
        table = pd.DataFrame({"case_id": ids, "method": method, metric: v})
        id_vars: tuple[str, ...] = ("case_id", "method")
    else:
        c = v.shape[1]
        names = contrast_names(contrasts, c)
        table = pd.DataFrame({"case_id": np.repeat(ids, c), "method": method, "contrast": names * n,
                              metric: v.reshape(-1)})
        id_vars = ("case_id", "method", "contrast")
    return CaseValues(table=table, id_vars=id_vars, title=metric, metric=metric)
