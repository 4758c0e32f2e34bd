"""Reader-study results on the shared protocol (:mod:`probes.core.result`).

A reader-study instrument returns a frozen :class:`ReaderResult`. Its *native* tables — one row
per contrast, phase, reader, threshold ..., one column per quantity, laid out as the published
programs print them — are attributes of the result, and :meth:`ReaderResult.native_tables`
returns copies of them (what :func:`audit.readers.study.analyze_reads` writes as CSV).
``tables()`` gives each native table in the tidy long format (identifier columns, ``metric``,
``value``) and ``to_frame()`` the first of them.

How a native table becomes long is its :class:`Layout`: the identifier columns (those present
in the table are used), columns left out (settings repeated on every row), and optionally a
*named statistic* — a label column holding the statistic's name (``"F"``, ``"t"``, ``"z"``) next
to the column holding its value; in the long table that value's metric is the name.

Every long table has a ``reason`` column before ``metric``: why that value is NaN (``""`` where
it is defined). It comes from the native table's own ``reason`` column (one reason per row, for
values the data cannot define) or, for a value that is NaN by design, from the layout's
``undefined`` (column → reason).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd

from probes.core.result import Result, Summary, long_frame, render_summary

__all__ = ["Layout", "melt", "ReaderResult", "ReaderTable", "combine_summaries"]


@dataclass(frozen=True)
class Layout:
    """How one native table becomes long: ``ids`` (identifier columns, those present are used),
    ``named`` = (label column, value column) of a named statistic, ``drop`` (columns left out),
    ``undefined`` = column → why its NaN values are NaN by design."""

    ids: tuple[str, ...]
    named: tuple[str, str] | None = None
    drop: tuple[str, ...] = ()
    undefined: Mapping[str, str] = field(default_factory=dict)


def melt(table: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    """The tidy long copy of a native table: identifier columns, ``reason``, ``metric``, ``value``.

    Every column that is not an identifier, dropped, the row's ``reason`` or the label of a
    named statistic is a measurement (numbers or booleans); rows keep their order, and within a
    row the measurements keep the column order (:func:`probes.core.result.long_frame`). A NaN
    value's reason is its row's ``reason`` if the table has one, else ``layout.undefined`` of its
    column; a defined value's reason is ``""``.
    """
    ids = [c for c in layout.ids if c in table.columns]
    label = layout.named[0] if layout.named else None
    skip = set(ids) | set(layout.drop) | {label, "reason"}
    values = [c for c in table.columns if c not in skip]
    out = long_frame(table, ids, values)
    column = out["metric"].to_numpy()
    row = (np.repeat(table["reason"].fillna("").astype(str).to_numpy(), len(values)) if "reason" in table.columns
           else np.full(len(out), "", dtype=object))
    design = np.array([layout.undefined.get(c, "") for c in column], dtype=object)
    nan = out["value"].isna().to_numpy()
    out.insert(len(ids), "reason", np.where(nan, np.where(row != "", row, design), ""))
    if layout.named:
        names = np.repeat(table[label].astype(str).to_numpy(), len(values))
        hit = column == layout.named[1]
        out.loc[hit, "metric"] = names[hit]
    return out


class ReaderResult(Result):
    """Base of the reader-study results: native tables by attribute name, tidy views of them.

    Subclasses name their native tables and layouts in ``layouts`` (the first is ``to_frame()``
    and, wide, the table of the default summary).
    """

    layouts: ClassVar[Mapping[str, Layout]] = {}

    def _layouts(self) -> Mapping[str, Layout]:
        return self.layouts

    def native_tables(self) -> dict[str, pd.DataFrame]:
        """Copies of the native (wide) tables by name."""
        return {k: getattr(self, k).copy() for k in self._layouts()}

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every native table in the tidy long format, by name; the first is ``to_frame()``."""
        return {k: melt(getattr(self, k), lay) for k, lay in self._layouts().items()}

    def to_frame(self) -> pd.DataFrame:
        """The first native table in the tidy long format (identifier columns, metric, value)."""
        name, lay = next(iter(self._layouts().items()))
        return melt(getattr(self, name), lay)

    def _summary_tables(self) -> pd.DataFrame:
        return getattr(self, next(iter(self._layouts())))  # the first native table, wide


@dataclass(frozen=True, eq=False)
class ReaderTable(ReaderResult):
    """A reader-study result that is one native table (``table``), named ``"result"``.

    ``ids`` are its identifier columns (those present are used); the summary shows ``table``;
    ``undefined``: (column, why its NaN values are NaN by design) pairs.
    """

    table: pd.DataFrame
    ids: tuple[str, ...]
    title: str = "reader-study table"  # type: ignore[misc]  (an instance field shadowing the ClassVar)
    notes: tuple[str, ...] = ()
    undefined: tuple[tuple[str, str], ...] = ()

    def _layouts(self) -> Mapping[str, Layout]:
        return {"table": Layout(self.ids, undefined=dict(self.undefined))}

    def native_tables(self) -> dict[str, pd.DataFrame]:
        """``{"result": table}`` (a copy)."""
        return {"result": self.table.copy()}

    def tables(self) -> dict[str, pd.DataFrame]:
        """``{"result": to_frame()}``."""
        return {"result": self.to_frame()}

    def _notes(self) -> Sequence[str]:
        return self.notes

    def __len__(self) -> int:
        return len(self.table)


def combine_summaries(title: str, overview: pd.DataFrame, parts: Mapping[str, Summary],
                      notes: Sequence[str] = ()) -> Summary:
    """One :class:`Summary` from an overview table (through ``render_summary``) and the summaries
    of the parts, each under its name (text and HTML)."""
    head = render_summary(title, overview, notes)
    text = [str(head)] + [f"\n== {k}\n{v}" for k, v in parts.items()]
    markup = [head.html] + [f"<hr><p><b>{html.escape(k)}</b></p>{v.html}" for k, v in parts.items()]
    return Summary("\n".join(text), "\n".join(markup))
