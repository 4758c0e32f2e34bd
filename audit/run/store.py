"""The result store of an audit run: one folder per unit, written atomically, and a manifest.

Layout under ``out/``::

    manifest.json                       config, hashes, versions, units, failures, skips
    units/<instrument>/<digest>/        one finished unit: <table>.parquet + unit.json
    tables/<instrument>.<table>.parquet every unit's table of an instrument, concatenated
    maps/<instrument>/<name>.npz        maps of the cases the report shows (float16 unless asked),
    maps/<instrument>/<name>_cases.npz  with those cases' indices in the audited cohort
    maps/cases/inputs.npz               the shown cases' images, ids, labels and ROI masks
    findings.json, report.html          written from the tables (audit.report)

A unit folder is first written as ``.tmp-…`` beside its final place and then renamed: a run
killed mid-unit leaves no half-written unit, only a temporary folder that the next run removes.
The digest covers everything the unit's numbers depend on (instrument, parameters, unit, model
weights and interface, data, seed), so a rerun reuses exactly the units whose inputs are unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Store", "atomic_write_parquet", "atomic_write_text"]


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` as Parquet (pyarrow) through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        _parquet_safe(df).to_parquet(tmp, index=False, engine="pyarrow")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns of mixed types become str (Parquet columns have one type)."""
    out = df.reset_index(drop=True).copy()
    for col in out.columns:
        if out[col].dtype == object:
            kinds = {type(v) for v in out[col] if v is not None and not (isinstance(v, float) and np.isnan(v))}
            if len(kinds) > 1 or (kinds and not kinds <= {str}):
                out[col] = out[col].map(lambda v: v if isinstance(v, str) else ("" if v is None else str(v)))
    return out


class Store:
    """Read and write the units and tables of one run folder."""

    def __init__(self, out: str | Path):
        self.out = Path(out)

    def unit_dir(self, instrument: str, digest: str) -> Path:
        """Final folder of a unit."""
        return self.out / "units" / instrument / digest

    def has(self, instrument: str, digest: str) -> bool:
        """Whether the unit is finished (its folder exists: it was renamed into place)."""
        return (self.unit_dir(instrument, digest) / "unit.json").is_file()

    def write_unit(self, instrument: str, digest: str, tables: Mapping[str, pd.DataFrame | np.ndarray],
                   info: Mapping[str, Any]) -> None:
        """Write a unit's tables (and arrays: maps as float16 ``.npz``) and ``unit.json`` into a
        temporary folder, then rename it into place."""
        final = self.unit_dir(instrument, digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{digest}-", dir=final.parent))
        try:
            for name, df in tables.items():
                if isinstance(df, np.ndarray):
                    np.savez_compressed(tmp / f"{name}.npz", maps=df)
                else:
                    _parquet_safe(df).to_parquet(tmp / f"{name}.parquet", index=False, engine="pyarrow")
            (tmp / "unit.json").write_text(json.dumps(dict(info), indent=1, default=str))
            if final.exists():  # an identical unit finished meanwhile (same digest: same numbers)
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def read_unit(self, instrument: str, digest: str) -> dict[str, pd.DataFrame | np.ndarray]:
        """A finished unit's tables (and arrays) by name."""
        d = self.unit_dir(instrument, digest)
        out: dict[str, pd.DataFrame | np.ndarray] = {p.stem: pd.read_parquet(p) for p in sorted(d.glob("*.parquet"))}
        for p in sorted(d.glob("*.npz")):
            with np.load(p) as z:
                out[p.stem] = z["maps"]
        return out

    def clean_temporaries(self) -> int:
        """Remove half-written units left by a killed run; returns how many."""
        n = 0
        for tmp in (self.out / "units").glob("*/.tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)
            n += 1
        return n

    def write_table(self, instrument: str, name: str, df: pd.DataFrame) -> Path:
        """The assembled table ``tables/<instrument>.<name>.parquet``."""
        path = self.out / "tables" / f"{instrument}.{name}.parquet"
        atomic_write_parquet(df, path)
        return path

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every assembled table, keyed ``<instrument>.<name>``."""
        return {p.name.removesuffix(".parquet"): pd.read_parquet(p)
                for p in sorted((self.out / "tables").glob("*.parquet"))}

    def write_maps(self, instrument: str, name: str, arrays: Mapping[str, np.ndarray]) -> Path:
        """Maps in a compressed ``.npz``, in the dtype the instrument chose (written atomically)."""
        path = self.out / "maps" / instrument / f"{name}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent, suffix=".npz")
        os.close(fd)
        try:
            np.savez_compressed(tmp, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def write_manifest(self, manifest: Mapping[str, Any]) -> Path:
        """``manifest.json``, atomically."""
        path = self.out / "manifest.json"
        atomic_write_text(path, json.dumps(dict(manifest), indent=1, default=str))
        return path

    def read_manifest(self) -> dict[str, Any]:
        """The run's manifest (empty when there is none)."""
        path = self.out / "manifest.json"
        return json.loads(path.read_text()) if path.is_file() else {}
