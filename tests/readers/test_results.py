"""Every reader-study result follows probes.core.Result: frozen, tidy copies, native tables, summaries;
and the package index lists the reader-study API with no private names crossing modules."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import audit.readers
from audit.readers import (ReaderStudyResult, analyze_reads, calibration_fit, decision_curve, example_reads,
                           simulate_reads)
from audit.readers.study import __all__ as study_all
from probes.core.result import Result, Summary


@pytest.fixture(scope="module")
def study() -> ReaderStudyResult:
    return analyze_reads(example_reads(), n_boot=40, seed=3)


def _results(study: ReaderStudyResult) -> dict[str, Result]:
    rng = np.random.default_rng(0)
    p = rng.uniform(size=60)
    y = rng.binomial(1, p)
    extra = {"calibration_fit": calibration_fit(y, p), "decision_curve": decision_curve(y, p, [0.1, 0.5]),
             "gee_fit": study.results["gee"].fit, "study": study}
    return {**study.results, **extra}


def test_analyze_reads_ran_every_instrument(study):
    assert not study.failed and not study.skipped
    assert {"gee", "bootstrap", "mrmc_or", "mrmc_dbm", "roc", "calibration_ai", "decision_curve_ai",
            "outcomes", "cochran_q"} <= set(study.done)


def test_every_result_is_a_frozen_result_with_a_tidy_copy_and_a_summary(study):
    for name, res in _results(study).items():
        assert isinstance(res, Result), name
        field = dataclasses.fields(res)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(res, field, None)
        df = res.to_frame()
        assert isinstance(df, pd.DataFrame) and len(df), name
        assert list(df.columns[-2:]) == ["metric", "value"] and df["value"].dtype == float, name
        assert "case_id" not in df.columns or df["case_id"].map(lambda v: isinstance(v, str)).all(), name
        df.iloc[0, -1] = -123.0  # a copy: the result does not change
        assert res.to_frame().iloc[0, -1] != -123.0, name
        tables = res.tables()
        assert tables and all({"metric", "value"} <= set(t.columns) for t in tables.values()), name
        s = res.summary()
        assert isinstance(s, Summary) and str(s).strip() and "<table" in s._repr_html_(), name


def test_tidy_tables_hold_the_native_values(study):
    """Each long table, read back row by row, gives the numbers of its native (wide) table."""
    for name, res in study.results.items():
        native, long = res.native_tables(), res.tables()
        assert list(native) == list(long), name
        for key, wide in native.items():
            tidy = long[key]
            k = len(tidy) // len(wide)
            assert k * len(wide) == len(tidy) and k > 0, (name, key)
            ids = [c for c in tidy.columns[:-2] if c != "reason"]
            assert set(ids) <= set(wide.columns), (name, key)
            values = tidy["value"].to_numpy().reshape(len(wide), k)
            metrics = tidy["metric"].to_numpy().reshape(len(wide), k)
            for j in range(k):
                col = metrics[0, j] if metrics[0, j] in wide.columns else "value"  # a named statistic
                assert col in wide.columns and col not in ids, (name, key, metrics[0, j])
                np.testing.assert_array_equal(values[:, j], wide[col].to_numpy(dtype=float), err_msg=f"{name} {key}")
            for c in ids:
                got = tidy[c].to_numpy()[::k]
                assert [str(v) for v in got] == [str(v) for v in wide[c].to_numpy()], (name, key, c)


def test_study_tables_and_frame_use_the_csv_names(study, tmp_path):
    tables = study.tables()
    assert {"gee_contrasts", "bootstrap_table", "mrmc_or_differences", "roc_auc", "outcomes"} <= set(tables)
    frame = study.to_frame()
    assert frame.columns[0] == "table" and list(frame.columns[-2:]) == ["metric", "value"]
    assert len(frame) == sum(len(t) for t in tables.values())
    out = analyze_reads(simulate_reads(20, 2, ("A", "B"), seed=1), out=tmp_path, n_boot=20)
    written = {p.stem for p in out.files}
    assert written == {k for name, res in out.results.items() for k in
                       ([name] if list(res.native_tables()) == ["result"] else
                        [f"{name}_{t}" for t in res.native_tables()])}
    gee = pd.read_csv(tmp_path / "gee_contrasts.csv")  # CSVs keep the native (wide) layout
    np.testing.assert_allclose(gee["odds_ratio"], out.results["gee"].contrasts["odds_ratio"])
    assert "readers treated as fixed" in (tmp_path / "summary.txt").read_text()


def test_index_lists_the_api_and_study_reexports_nothing():
    for name in audit.readers.__all__:
        assert hasattr(audit.readers, name), name
    assert sorted(study_all) == ["ReaderStudyResult", "analyze_reads"]
    assert len(Path(audit.readers.__file__).read_text().splitlines()) <= 60  # one screen


def test_no_private_name_is_imported_across_modules():
    for path in Path(audit.readers.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__all__"]
                assert not private, f"{path.name} imports {private} from {node.module}"
