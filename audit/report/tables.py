"""Read access to a finished audit run: its tables (``tables/<instrument>.<table>.parquet``) and
its ``manifest.json``. The findings and the report read nothing else."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["RunTables"]


class RunTables:
    """The tables and manifest of the audit run in ``out``.

    ``t["gradcam.localisation"]`` is that table (an empty frame when the run has none, so a
    rule over an instrument that did not run finds nothing rather than failing); ``has(name)``
    says whether the run wrote it.
    """

    def __init__(self, out: str | Path):
        self.out = Path(out)
        if not (self.out / "manifest.json").is_file():
            raise FileNotFoundError(f"{self.out}: no manifest.json; is this the out folder of an audit run?")
        self._cache: dict[str, pd.DataFrame] = {}

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """The run's ``manifest.json``."""
        return json.loads((self.out / "manifest.json").read_text(encoding="utf-8"))

    def has(self, name: str) -> bool:
        """Whether the run wrote table ``name`` (``<instrument>.<table>``)."""
        return (self.out / "tables" / f"{name}.parquet").is_file()

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in self._cache:
            path = self.out / "tables" / f"{name}.parquet"
            self._cache[name] = pd.read_parquet(path) if path.is_file() else pd.DataFrame()
        return self._cache[name]

    @property
    def names(self) -> list[str]:
        """Every table of the run."""
        return sorted(p.name[: -len(".parquet")] for p in (self.out / "tables").glob("*.parquet"))

    @property
    def target(self) -> int:
        """The class the attributions explain (the run's positive class)."""
        return int(self.manifest.get("target", 1))

    @property
    def class_names(self) -> list[str]:
        """Class names in class order."""
        return [str(c) for c in self.manifest.get("class_names") or []]

    def class_name(self, k: int) -> str:
        """Name of class ``k`` (its index when the run has no names)."""
        names = self.class_names
        return names[k] if 0 <= k < len(names) else str(k)

    def labels(self) -> pd.Series:
        """Label per audited case id (from the ``predictions`` table)."""
        pred = self["predictions.cases"]
        if pred.empty:
            return pd.Series(dtype="int64")
        rows = pred[(pred["set"] == "audit")].drop_duplicates("case_id")
        return rows.set_index("case_id")["label"]
