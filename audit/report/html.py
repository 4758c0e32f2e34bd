"""The HTML audit report: one self-contained file, rendered from a run's tables and findings.

:func:`render_report` reads ``out/`` (tables, manifest, stored maps; never the model), evaluates
the findings, and writes ``report.html`` with Jinja2 (autoescaped: case ids and class names
are text, never markup). Figures are PNGs embedded as ``data:`` URIs, so the page makes no
request; JavaScript only sorts tables; a print stylesheet lays it out on paper. The same tables
give the same bytes except the rendering time (:data:`RENDERED_MARK` surrounds it).

Sections are a table (:data:`SECTIONS`): each entry names its anchor, title, the tables it reads
and a builder returning blocks (a figure, a table or a paragraph); a section whose tables the run
lacks says so instead of disappearing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from audit.report import panels, plots
from audit.report.findings import FindingParams, Findings, evaluate_findings
from audit.report.tables import RunTables

__all__ = ["RENDERED_MARK", "SECTIONS", "Block", "Section", "build_sections", "environment", "render_report"]

RENDERED_MARK = ("<!--rendered-->", "<!--/rendered-->")


@dataclass
class Block:
    """A piece of a section: ``kind`` is ``figure`` (``png`` base64), ``table`` (``columns``,
    ``rows`` of strings) or ``text``; ``caption`` says what it shows and what it rests on."""

    kind: str
    caption: str = ""
    png: str = ""
    alt: str = ""
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    anchor: str = ""


@dataclass(frozen=True)
class Section:
    """A report section: ``build(tables, findings, params) -> blocks`` over the tables it ``reads``."""

    id: str
    title: str
    reads: tuple[str, ...]
    build: Callable[[RunTables, Findings, FindingParams], list[Block]]
    intro: str = ""


def fmt(v: Any, digits: int = 3) -> str:
    """A number for a table cell: ``—`` for missing/NaN, ``digits`` significant digits."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, (int,)) and not isinstance(v, bool):
        return str(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(f):
        return "—"
    return f"{f:.{digits}g}" if abs(f) >= 1e-3 or f == 0 else f"{f:.2e}"


def fmt_p(p: Any) -> str:
    """A p-value: ``< 1e-4`` below it, else 2 significant digits."""
    if p is None or (isinstance(p, float) and not math.isfinite(p)):
        return "—"
    return "< 1e-4" if p < 1e-4 else f"{p:.2g}"


def fmt_peq(p: Any) -> str:
    """``= 0.012`` or ``< 1e-4`` (for "p = …" in running text)."""
    s = fmt_p(p)
    return s if s.startswith("<") else f"= {s}"


def figure_block(fig: Any, caption: str, alt: str, anchor: str = "") -> list[Block]:
    """A figure block (PNG, :func:`audit.report.plots.png_data`), or none when ``fig`` is None."""
    if fig is None:
        return []
    return [Block("figure", caption=caption, png=plots.png_data(fig), alt=alt, anchor=anchor)]


def table_block(df: pd.DataFrame, caption: str, anchor: str = "", digits: int = 3) -> list[Block]:
    """A table block of ``df`` (numbers to ``digits`` significant digits), or none when it is empty."""
    if df.empty:
        return []
    rows = [[fmt(v, digits) if not isinstance(v, str) else v for v in r] for r in df.itertuples(index=False)]
    return [Block("table", caption=caption, columns=[str(c) for c in df.columns], rows=rows, anchor=anchor)]


# ----------------------------------------------------------------------------- sections
def _performance(t: RunTables, f: Findings, p: FindingParams) -> list[Block]:
    m = t["metrics.sets"]
    blocks = []
    if not m.empty:
        wide = m.pivot_table(index="set", columns="metric", values="value", sort=False).reset_index()
        blocks += table_block(wide, "Performance per set: the audited split and each counterfactual set "
                               "(AUC with its DeLong 95% CI).")
    v = t["verify.points"]
    if not v.empty:
        checks = v[v["metric"] == "passed"].groupby("check")["value"].agg(["count", "min"]).reset_index()
        checks.columns = ["check", "hook points", "all passed (1 = yes)"]
        blocks += table_block(checks, "Hook-registry self-check: the hooks are transparent, fire, and their "
                                 "activations and gradients match an independent forward.")
    return blocks


def _localisation(t: RunTables, f: Findings, p: FindingParams) -> list[Block]:
    return figure_block(plots.localisation_curves(t, p.alpha),
                   "Grad-CAM per layer: IoU of the top-5% map with each ROI and the relevance mass inside it, mean "
                   f"over cases per class; * marks layers where the classes differ (Mann–Whitney U, p < {p.alpha:g}, "
                   "uncorrected: for orientation; the findings carry the Holm-adjusted tests).",
                   "per-layer localisation curves per ROI and class", "localisation_curves")


def _saliency(t: RunTables, f: Findings, p: FindingParams) -> list[Block]:
    cases, channels = panels.shown_cases(t)
    maps = panels.shown_maps(t)
    if not cases:
        return [Block("text", caption="The run kept no maps (show_cases: 0).")]
    blocks = []
    names = t.class_names
    cells = t["gradcam.resolution"]
    per_point = cells.groupby("point", sort=False)["value"].min().astype(int).to_dict() if not cells.empty else {}
    fine = [pt for pt, n in per_point.items() if n > p.coarse_voxels]
    layer = fine[-1] if fine else None
    for c in cases:
        fig = panels.saliency_panel(c, channels, maps, names, p.target_rois, p.ignore_rois, gradcam=layer)
        where = panels.slice_note(c, p.target_rois)
        blocks += figure_block(fig, f"Case {c.case_id} ({c.outcome or 'no outcome'}): each contrast with the ROI outlines, "
                               "a per-contrast map over each contrast, and every method side by side (summed over "
                               f"contrasts; Grad-CAM at {layer or 'its deepest layer'}, the deepest layer fine enough "
                               "to localise). Red = positive relevance, blue = negative."
                               + (f" 3D volume: {where}." if where else ""),
                          f"saliency maps of case {c.case_id}", "saliency_panels" if not blocks else "")
    pick = next((c for c in cases if c.outcome == "TP"), cases[0])
    blocks += figure_block(panels.gradcam_strip(pick, maps, per_point, p.target_rois),
                      f"Grad-CAM of case {pick.case_id} at every layer, input side on the left; the number of cells "
                      "along the coarsest axis says how finely each layer can localise.",
                      "layer-wise Grad-CAM strip", "gradcam_strip")
    return blocks


def _faithfulness(t: RunTables, f: Findings, p: FindingParams) -> list[Block]:
    return (figure_block(plots.faithfulness_bars(t), "Per method: fidelity (ΔAUPC, deletion against random orderings), "
                    "robustness (max-sensitivity), sparsity (Gini) as mean ± sd over cases, and the median relevance per area in "
                    "each ROI (1 = as much as a uniform map).", "fidelity, robustness and sparsity per method", "faithfulness_bars")
            + figure_block(plots.intensity_correlation(t), "Correlation of attribution with image intensity per case "
                      "(Spearman ρ; Grad-CAM at its deepest layer). A map that follows brightness is a warning sign.",
                      "attribution–intensity correlation per method", "intensity_correlation"))


def _probes(t: RunTables, f: Findings, p: FindingParams) -> list[Block]:
    return figure_block(plots.probe_curves(t), "Linear probes per layer on held-out patients: AUC and cross-entropy of the "
                   "real task against a control task with shuffled labels (the gap is what the layer encodes).",
                   "probe AUC and loss per layer", "probe_curves")


def _patching(t: RunTables, f: Findings, p: FindingParams) -> list[Block]:
    return figure_block(plots.patching_curves(t), "Activation patching per layer: mean change of p(target) when a layer's "
                   "activations come from the paired case (both directions), whole map (with 95% CI) and each ROI "
                   "alone.", "patching effect per layer", "patching_curves")


def _geometry(t: RunTables, f: Findings, p: FindingParams) -> list[Block]:
    d = t["geometry.distances"]
    if d.empty:
        return []
    d = d[d["metric"] == "cosine_distance"]
    g = d.groupby(["point", "roi_a", "roi_b"], sort=False)["value"].mean().reset_index()
    g["pair"] = g["roi_a"] + " – " + g["roi_b"]
    wide = g.pivot_table(index="pair", columns="point", values="value", sort=False)
    wide.columns = [c.removesuffix(".resid") for c in wide.columns]
    return table_block(wide.reset_index(), "Mean cosine distance between the ROI-pooled activations per layer "
                                      "(0 = same direction).", "geometry_table")


def _ablation(t: RunTables, f: Findings, p: FindingParams) -> list[Block]:
    pc = t["ablation.per_condition"]
    blocks = figure_block(plots.ablation_roc(t), "ROC curve after removing each region or the brightest voxels.",
                     "ablation ROC curves", "ablation_roc")
    blocks += figure_block(plots.ablation_histograms(t), "p(target class) per condition by true class.",
                      "ablation probability histograms", "ablation_histograms")
    if not pc.empty:
        wide = pc.pivot_table(index="condition", columns="metric", values="value", sort=False)
        cols = [c for c in ("n", "auc", "delta_auc", "delta_ci_low", "delta_ci_high", "p") if c in wide]
        blocks += table_block(wide[cols].reset_index(), "AUC per ablation condition; ΔAUC against the unablated cohort "
                                                   "with its 95% CI and DeLong p (unadjusted; adjusted in the findings).")
    return blocks


def _shapley(t: RunTables, f: Findings, p: FindingParams) -> list[Block]:
    blocks = figure_block(plots.shapley_bars(t), "Cohort Shapley value of each contrast (exact over all coalitions): "
                     "how much of the metric each contrast contributes.", "Shapley values per contrast", "shapley_bars")
    v = t["shapley.values"]
    if not v.empty:
        r = v[(v["metric"] == "rank") & (v["case_id"] == "cohort")]
        wide = r.pivot_table(index=["value_function", "absent"], columns="contrast", values="value", sort=False)
        blocks += table_block(wide.reset_index(), "Contrast ranking (1 = most relied on).")
    fr = t["shapley.footrule"]
    if not fr.empty:
        blocks += table_block(fr.drop(columns=[c for c in ("reason",) if c in fr and (fr[c] == "").all()]),
                         "Footrule agreement of the model's ranking with the clinical ranking (1 = identical).")
    return blocks


def _truthfulness(t: RunTables, f: Findings, p: FindingParams) -> list[Block]:
    c = t["truthfulness.criteria"]
    blocks: list[Block] = []
    if not c.empty:
        c = c.assign(verdict=c["value"].map(lambda v: "pass" if v == 1 else ("fail" if v == 0 else "undefined")))
        wide = c.pivot_table(index="method", columns="criterion", values="verdict", aggfunc="first", sort=False)
        why = c[c["reason"].fillna("") != ""].groupby("method")["reason"].agg("; ".join)
        wide["why"] = why.reindex(wide.index).fillna("")
        blocks += table_block(wide.reset_index(), "Truthfulness criteria per method: G3 contrast-specific (maps follow the "
                                             "contrasts the model uses), G4 informative plausibility, G5 computable "
                                             "in clinical time.", "truthfulness_table")
    comp = [x for x in f.findings if x.rule in ("method_comparison", "method_fitness")]
    rows = [{"method / comparison": " ".join(str(v) for v in x.subject.values()), "evidence": e.label,
             "statistic": e.statistic, "effect": e.effect, "test": e.test, "p_adj": fmt_p(e.p_adj), "n": e.n}
            for x in comp for e in x.evidence]
    if rows:
        blocks += table_block(pd.DataFrame(rows), "Method comparison (Friedman test over cases, Nemenyi post-hoc) and "
                                             "each method's fitness evidence.", "method_comparison")
    return blocks


SECTIONS: list[Section] = [
    Section("performance", "Performance and hook check", ("metrics.sets", "verify.points"), _performance),
    Section("localisation", "Where the maps point, layer by layer", ("gradcam.localisation",), _localisation),
    Section("saliency", "Saliency maps of true/false negatives and positives",
            ("predictions.cases", "gradcam.resolution"), _saliency),
    Section("faithfulness", "Fidelity, robustness and sparsity of the explanations",
            ("gradcam.faithfulness", "lrp.faithfulness", "attribution.faithfulness"), _faithfulness),
    Section("probes", "Linear probes: what each layer encodes", ("probes.probes",), _probes),
    Section("patching", "Activation patching: where the decision forms", ("patching.effects",), _patching),
    Section("geometry", "Representation geometry", ("geometry.distances",), _geometry),
    Section("ablation", "Ablations: regions and the brightest voxels removed",
            ("ablation.per_condition", "ablation.roc"), _ablation),
    Section("shapley", "Contrast Shapley values and rankings", ("shapley.values",), _shapley),
    Section("truthfulness", "Truthfulness of the explanation methods", ("truthfulness.criteria",), _truthfulness),
]


def build_sections(t: RunTables, findings: Findings, params: FindingParams) -> list[dict[str, Any]]:
    """Every section with its blocks (a section whose tables are missing gets a sentence saying so)."""
    out = []
    for s in SECTIONS:
        present = [n for n in s.reads if t.has(n)]
        blocks = s.build(t, findings, params) if present else []
        if not blocks and not present:
            blocks = [Block("text", caption=f"Not in this run (needs {', '.join(s.reads)}).")]
        elif not blocks:  # the instrument ran and wrote empty tables: say why, from its warnings
            instruments = {n.split(".")[0] for n in present}
            notes = sorted({w for u in t.manifest.get("units", []) if u.get("instrument") in instruments
                            for w in u.get("warnings", [])})
            blocks = [Block("text", caption=f"The run's {', '.join(present)} hold no rows"
                            + (f": {'; '.join(notes)}" if notes else ".") )]
        out.append({"id": s.id, "title": s.title, "blocks": blocks})
    return out


def environment() -> Any:
    """The Jinja2 environment of the report templates (autoescape on, strict undefined)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("audit.report", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = fmt
    env.filters["p"] = fmt_p
    env.filters["peq"] = fmt_peq
    return env


def _provenance(t: RunTables) -> dict[str, Any]:
    m = t.manifest
    units = pd.DataFrame(m.get("units", []))
    seconds = (units.groupby("instrument", sort=False)["seconds"].sum().round(1).to_dict()
               if not units.empty and "seconds" in units else {})
    cfg = m.get("config", {})
    model = cfg.get("model", {})
    return {"model": model, "config_hash": m.get("config_hash", ""), "weights": m.get("weights_sha256", ""),
            "data_hash": m.get("data_hash", ""), "versions": m.get("versions", {}), "seed": m.get("seed"),
            "device": m.get("device", ""), "started": m.get("started", ""), "ended": m.get("ended", ""),
            "seconds": m.get("seconds"), "per_instrument": seconds, "failures": m.get("failures", []),
            "skipped": m.get("skipped", {}), "n_cases": m.get("n_cases"), "channels": m.get("channels", []),
            "rois": m.get("rois", []), "classes": t.class_names, "target": t.class_name(t.target),
            "task": m.get("task", ""), "cohort": cfg.get("cohort", {}).get("source", "")}


def render_report(out: str | Path, *, params: FindingParams | None = None, findings: Findings | None = None,
                  readers: str | Path | None = None, path: str | Path | None = None,
                  now: datetime | None = None) -> Path:
    """Write ``out/report.html`` (or ``path``) from the run in ``out``, and ``findings.json`` beside it.

    ``readers``: a folder written by ``audit readers`` (or the demo) whose tables become the
    reader-study section. ``now`` fixes the rendering time (default: the current UTC time).
    """
    from audit.report.readers_section import reader_sections

    t = RunTables(out)
    prm = params or FindingParams()
    found = findings or evaluate_findings(t, prm)
    found.to_json(t.out / "findings.json")
    sections = build_sections(t, found, prm)
    if readers is not None:
        sections += reader_sections(Path(readers))
    stamp = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    html = environment().get_template("report.html.j2").render(
        findings=found, sections=sections, prov=_provenance(t), rendered=stamp, mark=RENDERED_MARK,
        params=prm, n_flagged=len(found.flagged),
        by_severity={s: sum(1 for x in found.flagged if x.severity == s) for s in ("critical", "major", "minor", "info")})
    target = Path(path) if path is not None else t.out / "report.html"
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(target)
    return target
