"""One result protocol for every instrument (after statsmodels' results and their ``summary()``).

Every instrument returns a frozen :class:`Result`:

* ``to_frame()`` — a tidy **copy** in one long format: identifier columns first (``case_id``
  as ``str`` wherever there are cases; then e.g. ``point``, ``method``, ``roi``, ``contrast``),
  then, where some value can be undefined, ``reason`` (why that value is NaN; ``""`` where it
  is defined), then ``metric`` (what was measured) and ``value`` (float). One row per
  measurement, so tables of different instruments concatenate and pivot alike.
* ``tables()`` — ``{name: tidy frame}`` for results with several tables (the first is
  ``to_frame()``).
* ``summary()`` — a :class:`Summary`: a ``str`` that prints as an aligned text table and renders
  as HTML in a notebook; ``_repr_html_`` makes the result itself show in a notebook cell.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["Summary", "render_summary", "tidy", "long_frame", "Result", "TableResult"]

ID_FIRST = ("case_id",)


class Summary(str):
    """Summary text of a result; ``print()`` shows aligned tables, notebooks show HTML."""

    html: str

    def __new__(cls, text: str, html_text: str | None = None) -> "Summary":
        obj = super().__new__(cls, text)
        obj.html = html_text if html_text is not None else f"<pre>{html.escape(text)}</pre>"
        return obj

    def __repr__(self) -> str:  # a console shows the table, not a quoted string
        return str(self)

    def _repr_html_(self) -> str:
        return self.html


def render_summary(title: str, tables: Mapping[str, pd.DataFrame] | pd.DataFrame,
                   notes: Sequence[str] = ()) -> Summary:
    """The one summary renderer: a title, each table (text and HTML), then notes."""
    if isinstance(tables, pd.DataFrame):
        tables = {"": tables}
    text = [title, "=" * len(title)]
    parts = [f"<h4>{html.escape(title)}</h4>"]
    for name, df in tables.items():
        if name:
            text.append(f"\n{name}")
            parts.append(f"<p><b>{html.escape(name)}</b></p>")
        with pd.option_context("display.max_rows", 200, "display.max_columns", 50, "display.width", 200,
                               "display.float_format", "{:.4g}".format):
            text.append(df.to_string(index=False) if len(df) else "(empty)")
            parts.append(df.to_html(index=False, border=0, na_rep="NaN", escape=True,
                                    float_format="{:.4g}".format))
    if notes:
        text.append("")
        text.extend(notes)
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    return Summary("\n".join(text), "\n".join(parts))


def tidy(df: pd.DataFrame) -> pd.DataFrame:
    """A copy in the long format: ``case_id`` as str and first, ``metric`` and ``value`` last.

    Raises ``ValueError`` when ``metric`` or ``value`` is missing (a wide table must be melted
    with :func:`long_frame` first).
    """
    out = df.copy()
    missing = [c for c in ("metric", "value") if c not in out.columns]
    if missing:
        raise ValueError(f"a tidy result frame needs columns 'metric' and 'value'; missing {missing} "
                         f"in {list(out.columns)}")
    if "case_id" in out.columns:
        out["case_id"] = out["case_id"].astype(str)
    ids = [c for c in out.columns if c not in ("metric", "value", "reason")]
    ids = [c for c in ID_FIRST if c in ids] + [c for c in ids if c not in ID_FIRST]
    if "reason" in out.columns:  # why a value is NaN ("" where it is defined)
        out["reason"] = out["reason"].fillna("").astype(str)
        ids.append("reason")
    out = out[ids + ["metric", "value"]]
    out["value"] = out["value"].astype(float)
    return out.reset_index(drop=True)


def long_frame(df: pd.DataFrame, id_vars: Sequence[str], value_vars: Sequence[str] | None = None) -> pd.DataFrame:
    """Melt a wide table (one column per measurement) into the tidy long format.

    Rows keep their order; within a row the measurements follow ``value_vars``.
    """
    id_vars = list(id_vars)
    value_vars = [c for c in df.columns if c not in id_vars] if value_vars is None else list(value_vars)
    n = len(df)
    parts = {c: np.repeat(df[c].to_numpy(), len(value_vars)) for c in id_vars}
    parts["metric"] = np.tile(np.asarray(value_vars, dtype=object), n)
    vals = df[value_vars].to_numpy(dtype=float) if value_vars else np.empty((n, 0))
    parts["value"] = vals.reshape(-1)
    return tidy(pd.DataFrame(parts, columns=id_vars + ["metric", "value"]))


class Result:
    """Base of every instrument's result (see the module docstring for the protocol)."""

    title: ClassVar[str] = "result"

    def to_frame(self) -> pd.DataFrame:
        """Tidy long copy: id columns, ``metric``, ``value``."""
        raise NotImplementedError

    def tables(self) -> dict[str, pd.DataFrame]:
        """All tables of the result, each tidy; the first is ``to_frame()``."""
        return {"result": self.to_frame()}

    def _summary_tables(self) -> Mapping[str, pd.DataFrame] | pd.DataFrame:
        return self.to_frame()

    def _notes(self) -> Sequence[str]:
        return ()

    def summary(self) -> Summary:
        """A :class:`Summary` (prints as text, renders as HTML)."""
        return render_summary(self.title, self._summary_tables(), self._notes())

    def _repr_html_(self) -> str:
        return self.summary()._repr_html_()


@dataclass(frozen=True)
class TableResult(Result):
    """A result that is one tidy table (with a title and notes for its summary)."""

    table: pd.DataFrame
    title: str = "result"  # type: ignore[misc]  (an instance field shadowing the ClassVar)
    notes: tuple[str, ...] = field(default=())

    def to_frame(self) -> pd.DataFrame:
        return tidy(self.table)

    def _notes(self) -> Sequence[str]:
        return self.notes

    def __len__(self) -> int:
        return len(self.table)
