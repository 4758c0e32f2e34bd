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
from scipy.stats import friedmanchisquare, mannwhitneyu, wilcoxon
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


def test_a_shortcut_the_auc_survives_is_flagged_by_the_fall_of_p(tmp_path):
    """The demo's case: another cue still ranks the cases (no AUC drop), but removing the marker
    lowers p(class 1) in class-1 cases; with the marker enriched in the maps that is reliance."""
    rng = np.random.default_rng(3)
    tables, truth = _planted(rng)
    tables["ablation.per_condition"] = _ablation({"none": (0.0, 1.0), "no marker": (0.0, 1.0),
                                                  "no skull": (0.0, 1.0), "no gtv": (-0.02, 0.7)})
    ids, labels = truth.index, truth.label.to_numpy()
    base = np.where(labels == 1, rng.uniform(0.85, 0.99, len(ids)), rng.uniform(0.01, 0.2, len(ids)))
    drop = {"none": 0.0, "no marker": 0.3, "no skull": 0.0, "no gtv": 0.05}
    per_case = [{"case_id": c, "condition": cond, "label": int(y), "metric": "prob",
                 "value": float(b - (d + rng.normal(0, 0.05)) * (y == 1) * (cond != "none"))}
                for cond, d in drop.items() for c, y, b in zip(ids, labels, base)]
    tables["ablation.per_case"] = pd.DataFrame(per_case)
    _write(tmp_path, tables)
    found = evaluate_findings(tmp_path, rules=["shortcut_region"])
    by = {f.subject["roi"]: f for f in found.findings}
    marker, skull = by["marker"], by["skull"]
    assert marker.flagged and marker.severity == "major" and "although the AUC holds" in marker.sentence
    lead = marker.lead
    assert lead.statistic == "mean_prob_shift" and lead.n == int((labels == 1).sum())
    pc = tables["ablation.per_case"].query("label == 1").pivot(index="case_id", columns="condition", values="value")
    d = pc["no marker"] - pc["none"]
    assert lead.effect == pytest.approx(d.mean()) and lead.ci_low < lead.effect < lead.ci_high < 0
    assert lead.p == pytest.approx(wilcoxon(d).pvalue)
    assert not skull.flagged  # no fall of p there (and no AUC drop)


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


def _strategy(rng: np.random.Generator, mode: str, n: int = 40) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Grad-CAM relevance per area at a fine layer (8 cells per axis) and a coarse one (2 cells).
    At the fine layer, ``mode`` "split": class 1 rests on the marker, class 0 on the gtv; "same":
    both classes rest on the gtv; "diffuse": class 1 rests on the marker, class 0's relevance
    concentrates nowhere (≤ 1.3× the image's per area everywhere, its top region the skull). The
    coarse layer (no evidence) shows no split, except in "same", where it puts class 1 on the skull."""
    ids = [f"c{i:02d}" for i in range(n)]
    labels = np.array([i % 2 for i in range(n)])
    pred = pd.DataFrame([{"set": "audit", "case_id": c, "label": int(y), "metric": "predicted", "value": float(y)}
                         for c, y in zip(ids, labels)])
    one = labels == 1
    fine = {"gtv": rng.uniform(2.0, 3.0, n), "marker": rng.uniform(0.5, 1.5, n), "skull": rng.uniform(0.5, 1.5, n),
            "brain": np.full(n, 5.0)}  # the brain is ignored (it holds the target), whatever it holds
    if mode in ("split", "diffuse"):
        fine["marker"] = np.where(one, rng.uniform(4.0, 5.0, n), fine["marker"])
    if mode == "diffuse":
        for roi, (lo, hi) in {"gtv": (0.6, 1.0), "marker": (0.5, 1.0), "skull": (1.0, 1.3)}.items():
            fine[roi] = np.where(one, fine[roi], rng.uniform(lo, hi, n))
    coarse = {"gtv": rng.uniform(2.0, 3.0, n), "marker": rng.uniform(0.5, 1.5, n),
              "skull": np.where(one & (mode == "same"), 4.0, 1.0) + rng.uniform(0, 0.5, n), "brain": np.full(n, 5.0)}
    loc = [{"case_id": c, "method": "gradcam", "point": point, "contrast": "all", "roi": roi, "reason": "",
            "metric": "relevance_mass_per_area", "value": float(v)}
           for point, per_roi in (("layer3.1.resid", fine), ("layer4.1.resid", coarse))
           for roi, vals in per_roi.items() for c, v in zip(ids, vals)]
    res = pd.DataFrame([{"point": q, "axis": str(a), "metric": "cells", "value": v}
                        for q, v in (("layer3.1.resid", 8.0), ("layer4.1.resid", 2.0)) for a in range(2)])
    return {"predictions.cases": pred, "gradcam.localisation": pd.DataFrame(loc), "gradcam.resolution": res}, \
        pd.DataFrame(fine, index=ids).assign(label=labels)


def test_class_dependent_strategy_names_both_regions_and_the_null_is_clean(tmp_path):
    tables, truth = _strategy(np.random.default_rng(6), "split")
    _write(tmp_path / "split", tables)
    found = evaluate_findings(tmp_path / "split", rules=["class_dependent_strategy"])
    (f,) = found.findings
    assert f.subject == {"classes": "irregular vs round", "method": "gradcam"}
    assert f.flagged and f.severity == "major"  # the marker lies outside the clinical target
    assert f.sentence.startswith("Class 'irregular' rests on the marker, class 'round' on the gtv at layer3.1.resid")
    # coarse layers (≤ 3 cells per axis) are no evidence; the ignored brain is not compared
    assert all(e.label.startswith("layer3.1.resid: ") for e in f.evidence)
    assert not any("brain" in e.label for e in f.evidence)
    # the headline: the marker's class difference, recomputed with scipy; Holm over the rule's tests
    c1, c0 = truth[truth.label == 1], truth[truth.label == 0]
    lead = f.lead
    assert "in the marker" in lead.label and lead.n == len(truth)
    assert lead.p == pytest.approx(mannwhitneyu(c1.marker, c0.marker, alternative="two-sided").pvalue)
    assert lead.effect == pytest.approx(np.median(c1.marker) - np.median(c0.marker))
    assert lead.ci_low < lead.effect < lead.ci_high and lead.ci_low > 0
    # only the two top regions are tested (they alone enter the verdict); the skull's line is descriptive
    tests = [e for e in f.evidence if e.p is not None]
    assert [e.label.split(" in the ")[1].split(",")[0] for e in tests] == ["gtv", "marker"]
    skull = next(e for e in f.evidence if "in the skull" in e.label)
    assert skull.p is None and skull.effect == pytest.approx(np.median(c1.skull) - np.median(c0.skull))
    np.testing.assert_allclose([e.p_adj for e in tests], multipletests([e.p for e in tests], method="holm")[1])
    assert lead.p_adj < 0.05 and f"p_adj {'< 1e-4' if lead.p_adj < 1e-4 else f'= {lead.p_adj:.2g}'}" in f.sentence
    # the null: both classes rest on the gtv at the fine layer (the coarse layer's split is no evidence)
    tables, truth = _strategy(np.random.default_rng(7), "same")
    _write(tmp_path / "null", tables)
    (g,) = evaluate_findings(tmp_path / "null", rules=["class_dependent_strategy"]).findings
    assert not g.flagged and g.severity == "info", g.sentence
    assert g.sentence.startswith("No class-dependent strategy") and "both classes rest most on the gtv" in g.sentence
    tops = {e.label for e in g.evidence if e.statistic == "top_roi_relevance_per_area"}
    assert tops == {"layer3.1.resid: class 'irregular' rests most on the gtv",
                    "layer3.1.resid: class 'round' rests most on the gtv"}
    c1, c0 = truth[truth.label == 1], truth[truth.label == 0]
    assert g.lead.p == pytest.approx(mannwhitneyu(c1.gtv, c0.gtv, alternative="two-sided").pvalue)
    # class 0's relevance concentrates nowhere (as where the model finds no class-1 evidence): its top
    # region is noise, however significant the marker's class difference
    _write(tmp_path / "diffuse", _strategy(np.random.default_rng(8), "diffuse")[0])
    (h,) = evaluate_findings(tmp_path / "diffuse", rules=["class_dependent_strategy"]).findings
    assert not h.flagged and "concentrates in no region" in h.sentence, h.sentence
    assert "class 'round' rests most on the skull" in h.sentence and h.lead.p_adj < 0.05


# ---------------------------------------------------------------- truth on trained models
AUDIT = {"instruments": {"gradcam": {"faithfulness": False}, "lrp": {"faithfulness": False},
                         "attribution": False, "probes": False, "patching": False, "geometry": False,
                         "shapley": False, "truthfulness": False, "verify": False}}


def _audit(trained, tmp_path, cases: int, audit: dict | None = None):
    from audit.models import save_state_dict
    from audit.run import parse_config, run_audit
    from audit.run.context import build_context

    ckpt = save_state_dict(trained.model, tmp_path / "model.safetensors")
    kw = {k: list(v) if isinstance(v, tuple) else v for k, v in trained.arch_kwargs.items()}
    cfg = parse_config({"model": {"path": str(ckpt), "arch": "resnet18", "arch_kwargs": kw,
                                  "num_classes": 2, "in_chans": 4, "class_names": ["round", "irregular"]},
                        "cohort": {"source": "synthetic", "synthetic": trained.cfg.to_dict(), "max_cases": cases},
                        "out": str(tmp_path / "out"), "device": "cpu", **(audit or AUDIT)})
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


# the instruments the contrast finding needs: predictions (labels), metrics, shapley (AUC, marginal fill)
FLAIR_AUDIT = {"instruments": {**{k: False for k in ("verify", "gradcam", "lrp", "attribution", "probes", "patching",
                                                     "geometry", "ablation", "truthfulness")},
                               "shapley": {"metrics": ["auc"], "absent": ["marginal"],
                                           "clinical_ranking": ["T1c", "FLAIR", "T1=T2"]}}}


def test_flair_only_cohort_contrast_finding_names_flair(flair_model, tmp_path):
    """Only FLAIR carries the label (the T1c shape is a fair coin, no marker): the contrast
    finding names FLAIR as the contrast the model leans on most, and so do the Shapley values."""
    assert flair_model.card["metrics"]["val"]["auc"] >= 0.85  # the model learnt the FLAIR shape
    found = _audit(flair_model, tmp_path, 32, FLAIR_AUDIT)
    f = next(f for f in found.flagged if f.rule == "contrast_reliance")
    assert f.subject == {"value_function": "auc", "absent": "marginal"}
    lead = f.lead
    assert lead.statistic == "phi" and lead.label == "Shapley value of FLAIR (auc, marginal fill)", found.summary()
    assert f"leans most on FLAIR (φ = {lead.effect:.3f}" in f.sentence
    # the Shapley values themselves: FLAIR's is the largest, and the finding carries it
    v = RunTables(tmp_path / "out")["shapley.values"]
    phi = v[(v.metric == "phi") & (v.case_id == "cohort")].set_index("contrast")["value"]
    assert set(phi.index) == {"T1", "T1c", "T2", "FLAIR"} and phi.idxmax() == "FLAIR", phi.to_dict()
    assert lead.effect == pytest.approx(phi["FLAIR"]) and phi["FLAIR"] > 0.1


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
