"""Findings over an audit run's tables.

Planted tables (a run folder written by hand) check each rule's statistics against scipy and
statsmodels and its verdict against the planted truth; trained models check the truth end to
end: the marker model's findings name the planted marker as a shortcut of class 1 and the
intensity heuristic, the lesion model's (no marker) name neither.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import friedmanchisquare, wilcoxon
from statsmodels.stats.multitest import multipletests
from typer.testing import CliRunner

from audit.cli import app
from audit.report import RunTables, evaluate_findings
from audit.report.findings import RULES, Finding

pytestmark = pytest.mark.filterwarnings("ignore")
ROIS = ["brain", "gtv", "marker", "skull"]


def _write(out, tables: dict[str, pd.DataFrame], rois=ROIS) -> None:
    (out / "tables").mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        df.to_parquet(out / "tables" / f"{name}.parquet")
    (out / "manifest.json").write_text(json.dumps({"target": 1, "class_names": ["round", "irregular"],
                                                   "rois": rois, "task": "classification"}))


def _ablation(rows: dict[str, tuple[float, float]], n: int = 40) -> pd.DataFrame:
    """per_condition rows: condition → (ΔAUC, DeLong p), CI ± 0.1."""
    out = []
    for cond, (d, p) in rows.items():
        for metric, v in {"delta_auc": d, "delta_ci_low": d - 0.1, "delta_ci_high": d + 0.1, "p": p, "n": n}.items():
            out.append({"condition": cond, "reason": "", "metric": metric, "value": float(v)})
    return pd.DataFrame(out)


def _planted(rng: np.random.Generator, n: int = 40) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Class-1 cases put 3× the target's relevance per area on the marker, none on the skull."""
    ids = [f"c{i:02d}" for i in range(n)]
    labels = np.array([i % 2 for i in range(n)])
    pred = pd.DataFrame([{"set": "audit", "case_id": c, "label": int(y), "metric": "predicted", "value": float(y)}
                         for c, y in zip(ids, labels)])
    gtv = rng.uniform(1.0, 2.0, n)
    per_roi = {"gtv": gtv, "marker": np.where(labels == 1, 3.0 * gtv + rng.normal(0, 0.1, n), 0.2),
               "skull": gtv * rng.uniform(0.5, 1.1, n), "brain": np.ones(n)}
    loc = []
    for roi, vals in per_roi.items():
        for c, v in zip(ids, vals):
            loc.append({"case_id": c, "method": "gradcam", "point": "layer4.1.resid", "contrast": "all", "roi": roi,
                        "reason": "", "metric": "relevance_mass_per_area", "value": float(v)})
    for c, r in zip(ids, rng.normal(0.05, 0.05, n)):
        loc.append({"case_id": c, "method": "gradcam", "point": "layer4.1.resid", "contrast": "all", "roi": "all",
                    "reason": "", "metric": "intensity_spearman", "value": float(r)})
    abl = _ablation({"none": (0.0, 1.0), "no marker": (-0.4, 1e-6), "no skull": (-0.01, 0.8), "no gtv": (-0.02, 0.7),
                     "no brain": (-0.1, 0.05), "no top1%": (-0.35, 1e-5)})
    return {"predictions.cases": pred, "gradcam.localisation": pd.DataFrame(loc), "ablation.per_condition": abl}, \
        pd.DataFrame(per_roi, index=ids).assign(label=labels)


def test_planted_shortcut_is_flagged_the_null_region_is_tested_and_clean(tmp_path):
    tables, truth = _planted(np.random.default_rng(0))
    _write(tmp_path, tables)
    found = evaluate_findings(tmp_path)
    by = {(f.rule, f.subject.get("roi")): f for f in found.findings}
    marker, skull = by[("shortcut_region", "marker")], by[("shortcut_region", "skull")]
    assert marker.flagged and marker.severity == "critical" and "marker" in marker.sentence
    assert not skull.flagged and skull in found.not_flagged and "No shortcut" in skull.sentence
    # regions containing the target (brain) and the target itself are no shortcut candidates
    assert ("shortcut_region", "brain") not in by and ("shortcut_region", "gtv") not in by
    # the enrichment line: Wilcoxon signed-rank of region − target over the class-1 cases (scipy)
    c1 = truth[truth.label == 1]
    line = next(e for e in marker.evidence if e.statistic == "ratio_of_medians")
    assert line.n == len(c1)
    assert line.p == pytest.approx(wilcoxon(c1.marker - c1.gtv, alternative="greater").pvalue)
    assert line.effect == pytest.approx(np.median(c1.marker) / np.median(c1.gtv))
    assert line.ci_low < line.effect < line.ci_high
    # planted marker = the brightest voxels, and removing the target costs nothing: intensity flagged
    inten = next(f for f in found.findings if f.rule == "intensity_heuristic")
    assert inten.flagged and inten.lead.effect == pytest.approx(-0.35)


def test_holm_over_every_test_and_json_holds_every_number(tmp_path):
    tables, _ = _planted(np.random.default_rng(1))
    _write(tmp_path, tables)
    found = evaluate_findings(tmp_path)
    path = found.to_json(tmp_path / "findings.json")
    doc = json.loads(path.read_text())  # strict JSON: no NaN
    assert doc["schema_version"] == 1 and doc["adjustment"] == "holm" and set(doc["rules_run"]) == set(RULES)
    lines = [e for f in doc["findings"] for e in f["evidence"] if e["p"] is not None]
    assert len(lines) == doc["n_tests"] > 5
    expect = multipletests([e["p"] for e in lines], method="holm")[1]
    np.testing.assert_allclose([e["p_adj"] for e in lines], expect)
    marker = next(f for f in doc["findings"] if f["subject"].get("roi") == "marker")
    for key in ("id", "rule", "severity", "subject", "sentence", "effect", "ci_low", "ci_high", "test", "p",
                "p_adj", "n", "tables"):
        assert marker[key] is not None, key
    assert marker["effect"] == pytest.approx(-0.4) and marker["p_adj"] >= marker["p"]
    # ids: a fingerprint of rule + subject, the same on a rerun, distinct between findings
    again = evaluate_findings(tmp_path)
    assert [f.id for f in again.findings] == [f.id for f in found.findings]
    assert len({f.id for f in found.findings}) == len(found.findings)
    assert Finding("shortcut_region", {"roi": "marker", "class": "irregular"}).id == marker["id"]


def test_a_bright_target_is_no_intensity_heuristic(tmp_path):
    tables, _ = _planted(np.random.default_rng(2))
    # the brightest voxels are the enhancing lesion: removing the target costs as much
    tables["ablation.per_condition"] = _ablation({"none": (0.0, 1.0), "no gtv": (-0.45, 1e-6),
                                                   "no top1%": (-0.3, 1e-5), "no top5%": (-0.4, 1e-6)})
    _write(tmp_path, tables)
    inten = next(f for f in evaluate_findings(tmp_path).findings if f.rule == "intensity_heuristic")
    assert not inten.flagged and "removing the gtv itself: -0.45" in inten.sentence


def test_method_comparison_friedman_and_method_fitness(tmp_path):
    rng = np.random.default_rng(3)
    ids = [f"c{i}" for i in range(12)]
    d = {"gradcam": rng.normal(0.0, 0.02, 12), "lrp": rng.normal(0.10, 0.02, 12), "ixg": rng.normal(0.2, 0.02, 12)}
    per_case = pd.DataFrame([{"case_id": c, "method": m, "reason": "", "metric": "delta_aupc", "value": float(v)}
                             for m, vals in d.items() for c, v in zip(ids, vals)])
    crit = pd.DataFrame([{"method": m, "criterion": g, "reason": "", "metric": "passes", "value": v}
                         for m, g, v in [("gradcam", "G3", 0.0), ("gradcam", "G4", 1.0), ("lrp", "G3", 1.0),
                                         ("lrp", "G4", 1.0), ("ixg", "G3", 1.0), ("ixg", "G4", math.nan)]])
    _write(tmp_path, {"truthfulness.per_case": per_case, "truthfulness.criteria": crit})
    found = evaluate_findings(tmp_path, rules=["method_fitness"])
    comp = next(f for f in found.findings if f.rule == "method_comparison")
    cols = sorted(d)  # the pivot orders methods by name
    assert comp.evidence[0].effect == pytest.approx(friedmanchisquare(*[d[c] for c in cols]).statistic)
    ranks = {e.label.split("mean rank of ")[1].split(" (")[0]: e.effect for e in comp.evidence
             if e.statistic == "mean_rank"}
    assert ranks == {"ixg": 1.0, "lrp": 2.0, "gradcam": 3.0}  # planted order, no overlap
    assert comp.flagged and "most faithful: ixg" in comp.sentence
    fit = {f.subject["method"]: f for f in found.findings if f.rule == "method_fitness"}
    assert fit["gradcam"].flagged and "fail G3" in fit["gradcam"].sentence
    assert not fit["lrp"].flagged and not fit["ixg"].flagged and "G4 undefined" in fit["ixg"].sentence


def test_cli_report_writes_findings_json_without_the_model(tmp_path):
    tables, _ = _planted(np.random.default_rng(4))
    _write(tmp_path / "run", tables)
    res = CliRunner().invoke(app, ["report", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "critical" in res.output and (tmp_path / "run" / "findings.json").is_file()
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert bad.exit_code == 2 and "manifest.json" in bad.output
    assert RunTables(tmp_path / "run")["no.such"].empty


# ---------------------------------------------------------------- truth on trained models
AUDIT = {"instruments": {"gradcam": {"faithfulness": False}, "lrp": {"faithfulness": False},
                         "attribution": False, "probes": False, "patching": False, "geometry": False,
                         "shapley": False, "truthfulness": False, "verify": False}}


def _audit(trained, tmp_path, cases: int):
    from audit.models import save_state_dict
    from audit.run import parse_config, run_audit
    from audit.run.context import build_context

    ckpt = save_state_dict(trained.model, tmp_path / "model.safetensors")
    cfg = parse_config({"model": {"path": str(ckpt), "arch": "resnet18", "arch_kwargs": {"channels": [16, 32, 64, 128]},
                                  "num_classes": 2, "in_chans": 4, "class_names": ["round", "irregular"]},
                        "cohort": {"source": "synthetic", "synthetic": trained.cfg.to_dict(), "max_cases": cases},
                        "out": str(tmp_path / "out"), "device": "cpu", **AUDIT})
    summary = run_audit(cfg, ctx=build_context(cfg, trained.splits))
    assert summary.ok, summary.failed
    return evaluate_findings(summary.out)


def test_marker_model_findings_name_the_marker_and_the_intensity_heuristic(marker_model, tmp_path):
    found = _audit(marker_model, tmp_path, 32)
    short = [f for f in found.flagged if f.rule == "shortcut_region"]
    assert {f.subject["roi"] for f in short} & {"marker", "skull"}, found.summary()
    assert all(f.subject["class"] == "irregular" for f in short)
    lead = short[0].lead
    assert lead.p_adj < 0.05 and lead.effect <= -0.2 and lead.ci_high < 0  # ΔAUC of removing it, DeLong
    assert any(f.rule == "intensity_heuristic" for f in found.flagged), found.summary()


def test_lesion_model_without_marker_raises_neither_finding(lesion_model, tmp_path):
    found = _audit(lesion_model, tmp_path, 32)
    flagged = {f.rule for f in found.flagged}
    assert "shortcut_region" not in flagged and "intensity_heuristic" not in flagged, found.summary()
    # both were tested: they are listed as tested and not flagged, with their numbers
    clean = {f.rule for f in found.not_flagged}
    assert {"shortcut_region", "intensity_heuristic"} <= clean


def test_coarse_layers_are_a_caveat_not_evidence(tmp_path):
    tables, _ = _planted(np.random.default_rng(5))
    loc = tables["gradcam.localisation"]
    # a second, deeper layer of 2 × 2 cells whose (upsampled) map puts nothing on the marker
    deep = loc.assign(point="layer4.1.resid", value=np.where(loc.roi == "marker", 0.0, loc.value))
    mass = loc[loc.metric == "relevance_mass_per_area"].assign(metric="relevance_mass")
    mass["value"] = mass["value"] * mass.roi.map({"gtv": 0.02, "marker": 0.005, "skull": 0.2, "brain": 0.5})
    tables["gradcam.localisation"] = pd.concat([loc.assign(point="layer2.1.resid"), deep, mass.assign(
        point="layer2.1.resid")], ignore_index=True)
    tables["gradcam.resolution"] = pd.DataFrame([{"point": p, "axis": str(a), "metric": "cells", "value": v}
                                                 for p, v in (("layer2.1.resid", 8.0), ("layer4.1.resid", 2.0))
                                                 for a in range(2)])
    _write(tmp_path, tables)
    found = evaluate_findings(tmp_path)
    res = next(f for f in found.findings if f.rule == "map_resolution")
    assert res.flagged and "layer4.1.resid" in res.sentence and "layer2.1.resid" not in res.sentence
    share = {e.label.split("area of the ")[1].split(" (")[0]: e.effect for e in res.evidence
             if e.statistic == "roi_area_share"}
    assert share == pytest.approx({"gtv": 0.02, "marker": 0.005, "skull": 0.2, "brain": 0.5})
    # the shortcut's Grad-CAM evidence comes from the finer layer (the coarse one would hide it)
    marker = next(f for f in found.findings if f.subject.get("roi") == "marker")
    assert marker.flagged


def test_the_schema_doc_names_every_field_and_rule():
    from dataclasses import fields
    from pathlib import Path

    from audit.report.findings import Evidence, Findings

    doc = (Path(__file__).resolve().parents[2] / "docs" / "findings.md").read_text()
    keys = set(Findings([], 0.05, 0, []).to_dict()) | set(Finding("r", {}).to_dict()) | {f.name for f in fields(Evidence)}
    missing = [k for k in keys if f'"{k}"' not in doc]
    assert not missing, missing
    for rule in [*RULES, "method_comparison"]:
        assert f"`{rule}`" in doc, rule
