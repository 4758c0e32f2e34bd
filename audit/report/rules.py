"""The finding rules (registered in ``audit.report.findings.RULES``): shortcut region, intensity
heuristic, where the decision forms, proof-of-presence, contrast reliance, explanation
method fitness, map resolution and (``audit.report.rules_strategy``) class-dependent strategy.
Each reads only the run's tables; see each rule's ``doc``."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from audit.report.findings import Evidence, Finding, FindingParams, Rule, register
from audit.report.stats import bootstrap_ci, wilcoxon_p
from audit.report.tables import RunTables

MAP_TABLES = ("gradcam.localisation", "lrp.localisation", "attribution.localisation")


def _fmt_p(p: float | None) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return f"{p:.2g}" if p >= 1e-4 else "< 1e-4"


def p_eq(p: float | None) -> str:
    """``= 0.012`` or ``< 1e-4``, for "p_adj …" in a sentence."""
    s = _fmt_p(p)
    return s if s.startswith("<") else f"= {s}"


def _cells(t: RunTables) -> dict[str, int]:
    """Grad-CAM's cells along the shortest axis of each layer's map (``gradcam.resolution``)."""
    res = t["gradcam.resolution"]
    return {} if res.empty else res.groupby("point", sort=False)["value"].min().astype(int).to_dict()


def fine_points(t: RunTables, p: FindingParams, points: list[str]) -> list[str]:
    """The Grad-CAM layers of ``points`` fine enough to localise (more than ``coarse_voxels``
    cells per axis; every layer when the run has no resolution table), in their order; the
    deepest layer alone when none is fine enough."""
    cells = _cells(t)
    fine = [q for q in points if cells.get(q, p.coarse_voxels + 1) > p.coarse_voxels]
    return fine or points[-1:]


def _gradcam_point(t: RunTables, p: FindingParams, points: list[str]) -> str:
    """The deepest Grad-CAM layer fine enough to localise (``fine_points``)."""
    return fine_points(t, p, points)[-1]


def _per_case_maps(t: RunTables, metric: str, roi: str, p: FindingParams | None = None) -> dict[str, pd.Series]:
    """``{method: value per case}`` of a localisation metric at one ROI, averaged over the map's
    contrasts; Grad-CAM at its deepest layer that can localise (``_gradcam_point``)."""
    out: dict[str, pd.Series] = {}
    for name in MAP_TABLES:
        df = t[name]
        if df.empty:
            continue
        df = df[(df["metric"] == metric) & (df["roi"] == roi)]
        if name.startswith("gradcam") and len(df):
            df = df[df["point"] == _gradcam_point(t, p or FindingParams(), list(df["point"].unique()))]
        for method, g in df.groupby("method", sort=True):
            out[str(method)] = g.groupby("case_id")["value"].mean()
    return out


def _ablation(t: RunTables, condition: str) -> dict[str, float] | None:
    df = t["ablation.per_condition"]
    if df.empty or condition not in set(df["condition"]):
        return None
    return df[df["condition"] == condition].set_index("metric")["value"].to_dict()


def _ablation_line(t: RunTables, condition: str, what: str) -> Evidence | None:
    a = _ablation(t, condition)
    if a is None or not math.isfinite(a.get("delta_auc", math.nan)):
        return None
    return Evidence(f"removing {what} (ablation {condition!r})", "delta_auc", a["delta_auc"],
                    a.get("delta_ci_low", math.nan), a.get("delta_ci_high", math.nan), "DeLong (paired AUCs)",
                    a.get("p", math.nan), int(a.get("n", 0)), ("ablation.per_condition", "ablation.roc"), "ablation_roc")


# ------------------------------------------------------------------------ shortcut region
def _candidates(t: RunTables, p: FindingParams) -> list[str]:
    rois = [str(r) for r in t.manifest.get("rois", [])]
    return [r for r in rois if r not in p.target_rois and r not in p.ignore_rois]


def _reference(t: RunTables, p: FindingParams) -> str | None:
    rois = [str(r) for r in t.manifest.get("rois", [])]
    return next((r for r in p.target_rois if r in rois), None)


def _shift_line(t: RunTables, p: FindingParams, condition: str, what: str) -> Evidence | None:
    """Mean change of p(target) in the explained class's cases when ``condition`` removes a region
    (paired per case against the unablated cohort: bootstrap CI, Wilcoxon signed-rank), from
    ``ablation.per_case``. The AUC can stay put while the model's confidence rests on the region."""
    df = t["ablation.per_case"]
    if df.empty:
        return None
    df = df[(df["metric"] == "prob") & (df["label"] == t.target)]
    wide = df.pivot_table(index="case_id", columns="condition", values="value")
    if condition not in wide or "none" not in wide:
        return None
    d = (wide[condition] - wide["none"]).dropna().to_numpy()
    if len(d) < 2:
        return None
    lo, hi = bootstrap_ci(d, lambda v: float(np.mean(v)), n_boot=p.n_boot, seed=p.seed)
    return Evidence(f"removing {what}: change of p({t.class_name(t.target)}) in its cases (ablation {condition!r})",
                    "mean_prob_shift", float(d.mean()), lo, hi, "Wilcoxon signed-rank (paired, per case)",
                    wilcoxon_p(d), len(d), ("ablation.per_case",), "ablation_histograms")


def _collect_shortcut(t: RunTables, p: FindingParams) -> list[Finding]:
    ref, target = _reference(t, p), t.target
    labels = t.labels()
    cases = set(labels[labels == target].index)
    out = []
    for roi in _candidates(t, p):
        f = Finding("shortcut_region", {"class": t.class_name(target), "roi": roi})
        for line in (_ablation_line(t, f"no {roi}", f"the {roi}"), _shift_line(t, p, f"no {roi}", f"the {roi}")):
            if line is not None:
                f.evidence.append(line)
        if ref is not None:
            region, target_maps = _per_case_maps(t, "relevance_mass_per_area", roi, p), \
                _per_case_maps(t, "relevance_mass_per_area", ref, p)
            for method in sorted(set(region) & set(target_maps)):
                pair = pd.concat([region[method], target_maps[method]], axis=1, join="inner").dropna()
                pair = pair[pair.index.isin(cases)].to_numpy()
                if len(pair) < 2:
                    continue

                def ratio(v: np.ndarray) -> float:
                    den = np.median(v[:, 1])
                    return float(np.median(v[:, 0]) / den) if den > 0 else math.nan

                lo, hi = bootstrap_ci(pair, ratio, n_boot=p.n_boot, seed=p.seed)
                f.evidence.append(Evidence(
                    f"relevance per area, {roi} vs {ref} ({method}), class {t.class_name(target)}",
                    "ratio_of_medians", ratio(pair), lo, hi, "Wilcoxon signed-rank, one-sided (region > target)",
                    wilcoxon_p(pair[:, 0] - pair[:, 1], "greater"), len(pair),
                    tuple(n for n in MAP_TABLES if not t[n].empty), "localisation_curves"))
        if f.evidence:
            out.append(f)
    return out


def _judge_shortcut(f: Finding, t: RunTables, p: FindingParams) -> None:
    roi, cls = f.subject["roi"], f.subject["class"]
    abl = next((e for e in f.evidence if e.statistic == "delta_auc"), None)
    shift = next((e for e in f.evidence if e.statistic == "mean_prob_shift"), None)
    maps = [e for e in f.evidence if e.statistic == "ratio_of_medians"]
    drop = abl is not None and abl.significant(p.alpha) and abl.effect <= -p.min_auc_drop
    # the AUC may survive the removal (another cue ranks the cases) while the class's confidence falls
    lean = shift is not None and shift.significant(p.alpha) and shift.effect <= -p.min_prob_shift
    enriched = [e for e in maps if e.significant(p.alpha) and e.effect >= p.min_enrichment]
    f.flagged = bool((drop or lean) and enriched)
    lead = abl if drop or (abl is not None and not lean) else shift
    if lead is not None:
        f.headline = f.evidence.index(lead)
    if f.flagged:
        f.severity = "critical" if drop and abl.effect <= -p.critical_auc_drop else "major"
        best = max(enriched, key=lambda e: e.effect)
        if drop:
            why = (f"removing it changes AUC by {abl.effect:+.2f} (95% CI {abl.ci_low:+.2f} to {abl.ci_high:+.2f}, "
                   f"DeLong p_adj {p_eq(abl.p_adj)})")
        else:
            why = (f"removing it lowers p({cls}) in its cases by {-shift.effect:.2f} on average (95% CI "
                   f"{-shift.ci_high:.2f} to {-shift.ci_low:.2f}, Wilcoxon p_adj {p_eq(shift.p_adj)}) although "
                   f"the AUC holds ({'no ablation AUC' if abl is None else f'{abl.effect:+.2f}'})")
        f.sentence = (f"Decisions for class {cls!r} rest on the {roi}, outside the clinical target: {why}, and "
                      f"relevance per area there is {best.effect:.1f}× that of the target "
                      f"({best.label.split('(')[-1].split(')')[0]}, p_adj {p_eq(best.p_adj)}).")
    else:
        d = "no ablation" if abl is None else f"AUC change {abl.effect:+.2f}, p_adj {p_eq(abl.p_adj)}"
        if shift is not None:
            d += f"; p({cls}) change {shift.effect:+.2f}, p_adj {p_eq(shift.p_adj)}"
        k = f"{len(enriched)} of {len(maps)} map methods enriched"
        f.sentence = f"No shortcut through the {roi} for class {cls!r} ({d}; {k})."


register(Rule("shortcut_region", _collect_shortcut, _judge_shortcut,
              doc="a region outside the clinical target whose removal drops AUC (DeLong) and where relevance per "
                  "area exceeds the target's (Wilcoxon signed-rank per case)"))


# ------------------------------------------------------------------------ intensity heuristic
def _collect_intensity(t: RunTables, p: FindingParams) -> list[Finding]:
    f = Finding("intensity_heuristic", {"region": "image"})
    df = t["ablation.per_condition"]
    conds = sorted({c for c in df.get("condition", pd.Series(dtype=str)) if str(c).startswith("no top")})
    for c in conds:
        line = _ablation_line(t, c, f"the brightest {c[len('no top'):]} of voxels")
        if line is not None:
            f.evidence.append(line)
    # the anatomy that holds the clinical target (the target's regions, and the brain around them)
    rois = [str(r) for r in t.manifest.get("rois", [])]
    for roi in [r for r in (*p.target_rois, *p.ignore_rois) if r in rois]:
        line = _ablation_line(t, f"no {roi}", f"the {roi}")
        if line is not None:
            line.statistic = "delta_auc_anatomy"
            f.evidence.append(line)
    for method, rho in _per_case_maps(t, "intensity_spearman", "all", p).items():
        v = rho.dropna().to_numpy()
        if len(v) < 2:
            continue
        lo, hi = bootstrap_ci(v, lambda a: float(np.mean(a)), n_boot=p.n_boot, seed=p.seed)
        f.evidence.append(Evidence(f"attribution–intensity Spearman ρ ({method})", "mean_rho", float(v.mean()), lo, hi,
                                   "Wilcoxon signed-rank against 0", wilcoxon_p(v), len(v),
                                   tuple(n for n in MAP_TABLES if not t[n].empty), "intensity_correlation"))
    return [f] if f.evidence else []


def _judge_intensity(f: Finding, t: RunTables, p: FindingParams) -> None:
    drops = [e for e in f.evidence if e.statistic == "delta_auc"]
    rhos = [e for e in f.evidence if e.statistic == "mean_rho"]
    anatomy = [e for e in f.evidence if e.statistic == "delta_auc_anatomy"]
    target = min(anatomy, key=lambda e: e.effect) if anatomy else None
    # bright voxels that are the clinical target (an enhancing lesion) are no heuristic: the drop
    # must exceed what removing the target's anatomy itself costs
    floor = min(target.effect, 0.0) if target is not None else 0.0
    collapse = [e for e in drops if e.significant(p.alpha) and e.effect <= -p.critical_auc_drop
                and e.effect < floor - p.anatomy_margin]
    high = [e for e in rhos if e.significant(p.alpha) and e.effect >= p.high_rho]
    f.flagged = bool(collapse)
    if drops:
        lead = min(drops, key=lambda e: e.effect)
        f.headline = f.evidence.index(lead)
    if f.flagged:
        lead = min(collapse, key=lambda e: e.effect)
        f.severity = "critical" if high else "major"
        corr = (f"; attribution follows intensity (mean ρ up to {max(e.effect for e in high):.2f})" if high else
                "; attribution does not follow intensity overall (ρ ≤ "
                f"{max((e.effect for e in rhos), default=math.nan):.2f}), so the bright voxels that matter are few")
        f.sentence = (f"The model leans on image intensity: {lead.label.split(' (')[0]} changes AUC by "
                      f"{lead.effect:+.2f} (95% CI {lead.ci_low:+.2f} to {lead.ci_high:+.2f}, DeLong p_adj "
                      f"{p_eq(lead.p_adj)}){corr}.")
    else:
        worst = min((e.effect for e in drops), default=math.nan)
        tgt = "" if target is None else f" (removing the {target.label.split(' (')[0][len('removing the '):]} " \
            f"itself: {target.effect:+.2f})"
        f.sentence = (f"No intensity heuristic: removing the brightest voxels changes AUC by at most {worst:+.2f}"
                      f"{tgt}; {len(high)} of {len(rhos)} map methods follow intensity.")


register(Rule("intensity_heuristic", _collect_intensity, _judge_intensity,
              doc="removing the brightest k% of voxels collapses AUC (DeLong); attribution–intensity correlation"))


# ------------------------------------------------------------------------ where the decision forms
def _collect_forms(t: RunTables, p: FindingParams) -> list[Finding]:
    probes, eff = t["probes.probes"], t["patching.effects"]
    f = Finding("decision_forms", {"class": t.class_name(t.target)})
    if not probes.empty:
        auc = probes[(probes["task"] == "real") & (probes["split"] == "test") & (probes["metric"] == "auc")]
        for point, g in auc.groupby("point", sort=False):
            f.evidence.append(Evidence(f"probe AUC at {point}", "probe_auc", float(g["value"].iloc[-1]), n=0,
                                       tables=("probes.probes",), figure="probe_curves"))
    if not eff.empty:
        full = eff[(eff["roi"] == "full") & (eff["control"] == "none")]
        for (point, direction), g in full.groupby(["point", "direction"], sort=False):
            v = g.set_index("metric")["value"]
            f.evidence.append(Evidence(f"patching {direction} at {point}", "mean_delta_p", float(v.get("mean_delta")),
                                       float(v.get("ci_low", math.nan)), float(v.get("ci_high", math.nan)),
                                       n=int(v.get("n_pairs", 0)), tables=("patching.effects",),
                                       figure="patching_curves"))
    return [f] if f.evidence else []


def _judge_forms(f: Finding, t: RunTables, p: FindingParams) -> None:
    # an undefined AUC (a held-out split with one class) or effect says nothing about where
    probes = [e for e in f.evidence if e.statistic == "probe_auc" and math.isfinite(e.effect)]
    patch = [e for e in f.evidence if e.statistic == "mean_delta_p" and math.isfinite(e.effect)]
    if not probes and not patch:
        f.flagged, f.severity = False, "info"
        f.sentence = "Where the decision forms: undefined in this run (no probe AUC or patching effect is defined)."
        return
    parts = []
    if probes:
        top = max(e.effect for e in probes)
        first = next(e for e in probes if e.effect >= 0.9 * top)
        f.headline = f.evidence.index(first)
        parts.append(f"linear probes read the class from {first.label.split(' at ')[-1]} on (AUC "
                     f"{first.effect:.2f}; at most {top:.2f})")
    if patch:
        peak = max(patch, key=lambda e: abs(e.effect))
        parts.append(f"patching moves p most at {peak.label.split(' at ')[-1]} (mean Δp {peak.effect:+.2f})")
    f.flagged, f.severity = True, "info"
    f.sentence = "Where the decision forms: " + "; ".join(parts) + "."


register(Rule("decision_forms", _collect_forms, _judge_forms,
              doc="the block where probe AUC rises and where the patching effect peaks (descriptive)"))


# ------------------------------------------------------------------------ proof-of-presence
INJECT, REMOVE = "x->x_base", "x_base->x"  # x: a case of the explained class, x_base: one of another


def _collect_presence(t: RunTables, p: FindingParams) -> list[Finding]:
    pp = t["patching.patching"]
    f = Finding("proof_of_presence", {"class": t.class_name(t.target)})
    if pp.empty:
        return []
    d = pp[(pp["roi"] == "full") & (pp["control"] == "none") & (pp["metric"] == "delta")]
    for point, g in d.groupby("point", sort=False):
        w = g.pivot_table(index="pair", columns="direction", values="value", aggfunc="mean")
        if INJECT not in w or REMOVE not in w:
            continue
        v = np.abs(w[[INJECT, REMOVE]].dropna().to_numpy())
        if len(v) < 2:
            continue

        def gap(a: np.ndarray) -> float:
            return float(a[:, 0].mean() - a[:, 1].mean())

        lo, hi = bootstrap_ci(v, gap, n_boot=p.n_boot, seed=p.seed)
        e = Evidence(f"|Δp| injecting vs removing class-{t.class_name(t.target)} activations at {point}",
                     "mean_abs_delta_gap", gap(v), lo, hi, "Wilcoxon signed-rank, paired (two-sided)",
                     wilcoxon_p(v[:, 0] - v[:, 1]), len(v), ("patching.patching", "patching.effects"),
                     "patching_curves")
        f.evidence.append(e)
    return [f] if f.evidence else []


def _judge_presence(f: Finding, t: RunTables, p: FindingParams) -> None:
    sig = [e for e in f.evidence if e.significant(p.alpha) and e.effect > 0]
    best = max(sig or f.evidence, key=lambda e: e.effect)
    f.headline = f.evidence.index(best)
    f.flagged = bool(sig)
    f.severity = "info"
    where = best.label.split(" at ")[-1]
    if f.flagged:
        f.sentence = (f"Proof-of-presence: injecting class-{f.subject['class']} activations at {where} moves p more "
                      f"than removing them (mean |Δp| gap {best.effect:+.2f}, 95% CI {best.ci_low:+.2f} to "
                      f"{best.ci_high:+.2f}, p_adj {p_eq(best.p_adj)}): the model looks for evidence of "
                      f"class {f.subject['class']!r} rather than of its absence.")
    else:
        f.sentence = (f"Injecting and removing class-{f.subject['class']} activations move p alike (largest gap "
                      f"{best.effect:+.2f} at {where}, p_adj {p_eq(best.p_adj)}).")


register(Rule("proof_of_presence", _collect_presence, _judge_presence,
              doc="patching class-1 activations into other cases moves p more than the reverse (paired Wilcoxon "
                  "per block)"))


# ------------------------------------------------------------------------ contrast reliance
def _collect_contrasts(t: RunTables, p: FindingParams) -> list[Finding]:
    v = t["shapley.values"]
    if v.empty:
        return []
    phi = v[(v["metric"] == "phi") & (v["case_id"] == "cohort")]
    combos = sorted(set(zip(phi["value_function"], phi["absent"])))
    # the headline value function: AUC (classifier) or Dice (segmenter), marginal fill when run
    pref = sorted(combos, key=lambda c: (c[0] not in ("auc", "dice"), c[1] != "marginal"))[0]
    f = Finding("contrast_reliance", {"value_function": str(pref[0]), "absent": str(pref[1])})
    fr = t["shapley.footrule"]
    for vf, absent in [pref, *[c for c in combos if c != pref]]:
        g = phi[(phi["value_function"] == vf) & (phi["absent"] == absent)]
        for _, r in g.iterrows():
            f.evidence.append(Evidence(f"Shapley value of {r['contrast']} ({vf}, {absent} fill)", "phi",
                                       float(r["value"]), tables=("shapley.values", "shapley.coalitions"),
                                       figure="shapley_bars"))
        row = fr[(fr["value_function"] == vf) & (fr["absent"] == absent)] if not fr.empty else fr
        if len(row):
            f.evidence.append(Evidence(f"footrule agreement with the clinical ranking {row['reference'].iloc[0]} "
                                       f"({vf}, {absent} fill)", "footrule_agreement", float(row["value"].iloc[0]),
                                       tables=("shapley.footrule",), figure="shapley_bars"))
    return [f]


def _judge_contrasts(f: Finding, t: RunTables, p: FindingParams) -> None:
    head = f"({f.subject['value_function']}, {f.subject['absent']} fill)"
    phis = [e for e in f.evidence if e.statistic == "phi" and math.isfinite(e.effect) and e.label.endswith(head)]
    foot = next((e for e in f.evidence if e.statistic == "footrule_agreement" and e.label.endswith(head)), None)
    if not phis:
        f.sentence = "Contrast Shapley values are undefined."
        return
    top = max(phis, key=lambda e: e.effect)
    f.headline = f.evidence.index(top)
    name = top.label.split("Shapley value of ")[1].split(" (")[0]
    share = top.effect / max(sum(max(e.effect, 0) for e in phis), 1e-12)
    f.flagged, f.severity = True, "info"
    f.sentence = (f"Contrast reliance ({f.subject['value_function']}, {f.subject['absent']} fill): the model leans "
                  f"most on {name} (φ = {top.effect:.3f}, {share:.0%} of the positive contributions)")
    if foot is not None and math.isfinite(foot.effect):
        f.sentence += f"; agreement with the clinical ranking {foot.effect:.2f} (1 = same order)"
        if foot.effect < 0.5:
            f.severity = "major"
            f.sentence += ", so the model weighs the contrasts unlike the clinic"
    f.sentence += "."


register(Rule("contrast_reliance", _collect_contrasts, _judge_contrasts,
              doc="the contrast with the largest Shapley value, and footrule agreement with the clinical ranking"))


# ------------------------------------------------------------------------ method fitness
def _collect_methods(t: RunTables, p: FindingParams) -> list[Finding]:
    crit, per_case = t["truthfulness.criteria"], t["truthfulness.per_case"]
    out = []
    if not crit.empty:
        for method, g in crit.groupby("method", sort=True):
            f = Finding("method_fitness", {"method": str(method)})
            for _, r in g.iterrows():
                f.evidence.append(Evidence(f"{r['criterion']} ({method})", "passes", float(r["value"]),
                                           tables=("truthfulness.criteria", "truthfulness.metrics"),
                                           figure="truthfulness_table"))
            out.append(f)
    if not per_case.empty:
        d = per_case[per_case["metric"] == "delta_aupc"].pivot_table(index="case_id", columns="method",
                                                                     values="value").dropna()
        if d.shape[1] >= 3 and d.shape[0] >= 3:
            from scipy.stats import friedmanchisquare

            stat, pv = friedmanchisquare(*[d[c].to_numpy() for c in d.columns])
            f = Finding("method_comparison", {"metric": "delta_aupc"})
            f.evidence.append(Evidence(f"Friedman test over {', '.join(d.columns)} (per-case ΔAUPC)",
                                       "friedman_chi2", float(stat), test="Friedman", p=float(pv), n=len(d),
                                       tables=("truthfulness.per_case",), figure="method_comparison"))
            ranks = d.rank(axis=1, ascending=False).mean()
            for m in d.columns:
                f.evidence.append(Evidence(f"mean rank of {m} (1 = most faithful)", "mean_rank", float(ranks[m]),
                                           n=len(d), tables=("truthfulness.per_case",), figure="method_comparison"))
            import scikit_posthocs as sp

            nem = sp.posthoc_nemenyi_friedman(d.to_numpy())
            cols = list(d.columns)
            for i in range(len(cols)):
                for j in range(i + 1, len(cols)):
                    f.evidence.append(Evidence(f"Nemenyi post-hoc {cols[i]} vs {cols[j]}", "nemenyi_p",
                                               float(nem.iloc[i, j]), test="Nemenyi (Friedman ranks)", n=len(d),
                                               tables=("truthfulness.per_case",), figure="method_comparison"))
            out.append(f)
    return out


def _judge_methods(f: Finding, t: RunTables, p: FindingParams) -> None:
    if f.rule == "method_comparison":
        fr = f.evidence[0]
        ranks = sorted((e for e in f.evidence if e.statistic == "mean_rank"), key=lambda e: e.effect)
        best = ranks[0].label.split("mean rank of ")[1].split(" (")[0]
        f.flagged = fr.significant(p.alpha)
        f.severity = "info"
        f.sentence = (f"Attribution methods {'differ' if f.flagged else 'do not differ'} in faithfulness on this "
                      f"model (Friedman χ² = {fr.effect:.1f}, p_adj {p_eq(fr.p_adj)}, n = {fr.n}); most faithful: "
                      f"{best} (mean rank {ranks[0].effect:.2f}).")
        return
    failed = [e.label.split(" (")[0] for e in f.evidence if e.effect == 0.0]
    passed = [e.label.split(" (")[0] for e in f.evidence if e.effect == 1.0]
    undefined = [e.label.split(" (")[0] for e in f.evidence if not math.isfinite(e.effect)]
    m = f.subject["method"]
    f.flagged = bool(failed)
    f.severity = "minor" if failed else "info"
    if failed:
        f.sentence = (f"Do not rely on {m} maps for this model: they fail {', '.join(failed)} "
                      f"(Jin et al. truthfulness criteria)" + (f"; pass {', '.join(passed)}" if passed else "") + ".")
    else:
        f.sentence = (f"{m} maps pass {', '.join(passed) or 'no criterion'}"
                      + (f" ({', '.join(undefined)} undefined)" if undefined else "") + ".")


register(Rule("method_fitness", _collect_methods, _judge_methods,
              doc="per method, Jin et al.'s G3/G4 pass or fail; methods compared with a Friedman test and a "
                  "Nemenyi post-hoc on per-case ΔAUPC"))


# ------------------------------------------------------------------------ map resolution caveat
def _collect_resolution(t: RunTables, p: FindingParams) -> list[Finding]:
    cells, loc = _cells(t), t["gradcam.localisation"]
    if not cells or loc.empty:
        return []
    # a ROI's area share = relevance mass / relevance mass per area (both per case)
    m = loc[loc["metric"].isin(["relevance_mass", "relevance_mass_per_area"])]
    m = m[m["point"] == m["point"].iloc[0]].pivot_table(index=["case_id", "roi"], columns="metric", values="value")
    area = (m["relevance_mass"] / m["relevance_mass_per_area"]).groupby("roi").median()
    ndim = int(t["gradcam.resolution"].groupby("point")["axis"].nunique().max())
    f = Finding("map_resolution", {"method": "gradcam"})
    for point, c in cells.items():
        cell_share = float(c) ** -ndim
        f.evidence.append(Evidence(f"{point}: {c} cells per axis (one cell = {cell_share:.1%} of the image)",
                                   "cells", float(c), tables=("gradcam.resolution",), figure="localisation_curves"))
    for roi, share in area.dropna().items():
        f.evidence.append(Evidence(f"median area of the {roi} ({share:.2%} of the image)", "roi_area_share",
                                   float(share), tables=("gradcam.localisation",)))
    return [f]


def _judge_resolution(f: Finding, t: RunTables, p: FindingParams) -> None:
    layers = [e for e in f.evidence if e.statistic == "cells"]
    coarse = [e.label.split(":")[0] for e in layers if e.effect <= p.coarse_voxels]
    f.flagged, f.severity = bool(coarse), "info"
    if coarse:
        f.headline = f.evidence.index(next(e for e in layers if e.effect <= p.coarse_voxels))
        cells = int(min(e.effect for e in layers))
        f.sentence = (f"Map resolution caveat: Grad-CAM maps of {', '.join(coarse)} have at most "
                      f"{p.coarse_voxels} cells per axis (down to {cells}); they cannot localise a region, so their "
                      "localisation numbers are not evidence (the findings use the deepest finer layer).")
    else:
        f.sentence = "Every Grad-CAM layer has more than " f"{p.coarse_voxels} cells per axis."


register(Rule("map_resolution", _collect_resolution, _judge_resolution,
              doc="a layer whose map has at most coarse_voxels cells per axis is uninformative, not evidence"))


import audit.report.rules_strategy  # noqa: F401  (registers class_dependent_strategy)
