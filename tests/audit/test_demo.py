"""`audit demo` end to end on a small configuration; the full-size demo is `benchmarks/bench_demo.py`.

The small demo (500 slices at 64², 15 epochs; about 40 s on 2 idle cores) runs every step of
the full one. Its model learns the planted marker first: measured with seeds 0/1/2, test
accuracy 0.72/0.81/0.84 (AUC 0.81/0.86/0.87), and 0.48/0.51/0.60 once every marker is removed.
The full-size demo's accuracy (≥ 0.9) and wall time are measured by the benchmark.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from rich.console import Console

from audit.demo import run_demo
from tests.audit.conftest import SMALL


@pytest.mark.timeout(1200)  # the shared small demo may be built here
def test_small_demo_learns_the_marker_and_reuses_its_checkpoint(small_demo, monkeypatch):
    monkeypatch.setenv("MEDAUDIT_CACHE", str(small_demo.cache))
    tmp_path, files = small_demo.out.parent, small_demo.files
    for name in ("metrics", "hooks_verify", "cohort_manifest", "model_card", "synthetic_panel", "predictions",
                 "reader_summary"):
        assert files[name].exists() and files[name].stat().st_size > 0, name
    # the reader study: the simulated AI effect (true OR 1.6 / 1.8) is estimated by the GEE
    gee = pd.read_csv(tmp_path / "out" / "readers" / "gee_contrasts.csv")
    assert ((gee["ci_low"] < gee["odds_ratio"]) & (gee["odds_ratio"] < gee["ci_high"])).all()
    assert (gee.loc[gee["baseline"] == "MRI", "odds_ratio"] > 1).all()
    metrics = pd.read_csv(files["metrics"]).set_index("split")
    assert metrics.loc["test", "accuracy"] >= 0.65 and metrics.loc["test", "auc"] >= 0.75
    # the shortcut: removing every marker costs accuracy (planted in 90% of class 1, 10% of class 0)
    assert metrics.loc["test", "accuracy"] - metrics.loc["test_no_marker", "accuracy"] >= 0.1
    assert pd.read_csv(files["hooks_verify"]).passed.all()
    card = json.loads(files["model_card"].read_text())
    assert card["cohort"]["config"]["q1"] == 0.9 and card["channels"] == ["T1", "T1c", "T2", "FLAIR"]
    assert card["classes"] == ["round", "irregular"]
    # predictions.csv reproduces the card's test accuracy
    pred = pd.read_csv(files["predictions"]).query("split == 'test'")
    assert ((pred.p1 > 0.5).astype(int) == pred.label).mean() == pytest.approx(metrics.loc["test", "accuracy"])
    # the output folder is a model folder: the card's arch with its arguments loads the weights
    from typer.testing import CliRunner

    from audit.cli import app
    from audit.models import load_model
    from audit.training import load_trained

    model, loaded_card = load_trained(tmp_path / "out")  # checks the weights' SHA-256 against the card
    assert loaded_card == card and files["checkpoint"] == tmp_path / "out" / card["checkpoint"]
    same = load_model(files["checkpoint"], card["arch"], **card["arch_kwargs"]).state_dict()
    assert all(torch.equal(v, same[k]) for k, v in model.state_dict().items())
    verified = CliRunner().invoke(app, ["verify", str(tmp_path / "out")])
    assert verified.exit_code == 0, verified.output
    # the demo ends with the default audit of its model: every default instrument ran, none failed
    manifest = json.loads(files["audit_manifest"].read_text())
    assert manifest["failures"] == [] and manifest["skipped"] == {} and manifest["n_cases"] == 12
    assert all(manifest["model_unchanged"].values())
    audit_pred = pd.read_parquet(tmp_path / "out" / "audit" / "tables" / "predictions.cases.parquet")
    p1 = audit_pred.query("set == 'audit' and metric == 'p_irregular'").set_index("case_id").value
    assert p1.to_dict() == pytest.approx(pred.set_index("case_id").p1.loc[p1.index].to_dict(), abs=1e-6)
    assert set(audit_pred.set) == {"audit", "t1c_only", "no_marker"}
    # ... and writes its findings, every rule run (12 cases: the numbers, not their verdicts, are checked)
    from audit.report.findings import RULES

    found = json.loads((tmp_path / "out" / "audit" / "findings.json").read_text())
    assert found["rules_run"] == list(RULES) and found["n_tests"] > 0
    assert {f["rule"] for f in found["findings"]} >= {"shortcut_region", "intensity_heuristic", "decision_forms"}
    # ... and its report (checked in a browser by tests/audit/test_report.py)
    assert files["report"] == tmp_path / "out" / "audit" / "report.html" and files["report"].is_file()
    assert f"audit report: {files['report'].resolve()}" in " ".join(small_demo.log.read_text().split())
    # a second run with the same config reuses the cached checkpoint
    from dataclasses import replace

    with open(small_demo.log, "a") as fh:
        run_demo(tmp_path / "out2", replace(SMALL, audit_cases=0), console=Console(file=fh, width=120))
    assert "(cached)" in small_demo.log.read_text()
