"""The class-dependent strategy rule (registered in ``audit.report.findings.RULES`` when
``audit.report.rules`` is imported): do the two classes rest on different regions?

Per Grad-CAM layer fine enough to localise (``rules.fine_points``: more than ``coarse_voxels``
cells per axis) and per region (ROI) other than ``ignore_rois``, the relevance mass per area of
the explained class's cases is compared with that of the other cases (difference of medians,
stratified bootstrap CI), and each class's *top region* (the highest median relevance per area)
is named. The top regions, which alone enter the verdict, are tested (Mann–Whitney U,
two-sided); the other regions' lines are descriptive, so that they do not widen the run's Holm
family. A region is compared when at least 2 cases of each class have it (the marker of a
cohort whose class 0 never carries one is not). A layer splits the classes when the top regions
differ, each class's relevance concentrates in its top region (median relevance per area at
least ``min_enrichment`` times the image's, 1 being a uniform map), **and** one of the two
differs significantly between the classes in the direction of the split (p_adj < alpha): the
explained class has more relevance in its own top region, or the other class more in its top
region. Every layer is a line of evidence about one mechanism, so the rule writes one finding
(subject: the classes and the map method), headed by the deepest layer that splits the classes.

Grad-CAM explains the run's target class in every case, so "class 0 rests on B" reads: in the
cases of class 0, the evidence the model weighs for the target class lies in B. Where the model
finds none (a lesion model's round cases), the little relevance left spreads over the image,
and its top region is noise: hence the concentration condition.
"""

from __future__ import annotations

import ast
import math

import numpy as np
import pandas as pd

from audit.report.findings import Evidence, Finding, FindingParams, Rule, register
from audit.report.rules import fine_points, p_eq
from audit.report.stats import bootstrap_ci2, mannwhitney_p
from audit.report.tables import RunTables

TOP = "top_roi_relevance_per_area"  # descriptive line: a class's top region at a layer
DIFF = "median_difference"          # test line: a region's relevance per area, class − other cases


def _mass_per_area(t: RunTables) -> pd.DataFrame:
    """Grad-CAM relevance mass per area, one row per point × case, one column per ROI (contrast
    ``all`` when the table has it, else the mean over contrasts); points in the table's order."""
    loc = t["gradcam.localisation"]
    if loc.empty:
        return pd.DataFrame()
    df = loc[loc["metric"] == "relevance_mass_per_area"]
    if "contrast" in df and (df["contrast"] == "all").any():
        df = df[df["contrast"] == "all"]
    points = list(df["point"].unique())
    w = df.pivot_table(index=["point", "case_id"], columns="roi", values="value", aggfunc="mean")
    return w.reindex(points, level=0)


def _collect_strategy(t: RunTables, p: FindingParams) -> list[Finding]:
    w, labels = _mass_per_area(t), t.labels()
    if w.empty or labels.nunique() < 2:
        return []
    target = t.target
    pos_name = t.class_name(target)
    others = sorted(int(k) for k in labels.unique() if int(k) != target)
    neg_name = t.class_name(others[0]) if len(others) == 1 else f"not {pos_name}"
    order = [str(r) for r in t.manifest.get("rois", [])]
    rois = [r for r in w.columns if r not in p.ignore_rois and r != "all"]
    rois.sort(key=lambda r: (order.index(r) if r in order else len(order), r))
    points = fine_points(t, p, list(w.index.get_level_values(0).unique()))
    tables = tuple(n for n in ("gradcam.localisation", "gradcam.resolution", "predictions.cases") if t.has(n))
    f = Finding("class_dependent_strategy", {"classes": f"{pos_name} vs {neg_name}", "method": "gradcam"})
    for point in points:
        g = w.loc[point]
        y = labels.reindex(g.index)
        pos, neg = g[y == target], g[y.notna() & (y != target)]
        medians = {name: cls[rois].median() for name, cls in ((pos_name, pos), (neg_name, neg))}
        tops = set()
        for name, cls in ((pos_name, pos), (neg_name, neg)):
            # a region most of the class's cases lack (a marker in 2 of 16) is no strategy of the class
            have = [r for r in rois if cls[r].notna().sum() >= max(2, len(cls) / 2)]
            if have:
                top = max(have, key=lambda r: medians[name][r])
                tops.add(top)
                f.evidence.append(Evidence(f"{point}: class {name!r} rests most on the {top}", TOP,
                                           float(medians[name][top]), n=int(cls[top].notna().sum()), tables=tables,
                                           figure="localisation_curves"))
        for roi in rois:
            a, b = pos[roi].dropna().to_numpy(), neg[roi].dropna().to_numpy()
            if len(a) < 2 or len(b) < 2:
                continue
            lo, hi = bootstrap_ci2(a, b, lambda A, B: np.median(A, axis=1) - np.median(B, axis=1),
                                   n_boot=p.n_boot, seed=p.seed)
            # only the top regions enter the verdict, so only they are tested (the Holm family is the run's)
            tested = roi in tops
            f.evidence.append(Evidence(
                f"{point}: relevance per area in the {roi}, class {pos_name!r} − class {neg_name!r} (medians "
                f"{np.median(a):.2f} vs {np.median(b):.2f}; Grad-CAM of class {pos_name!r})", DIFF,
                float(np.median(a) - np.median(b)), lo, hi, "Mann–Whitney U, two-sided" if tested else "",
                mannwhitney_p(a, b) if tested else None, len(a) + len(b), tables, "localisation_curves"))
    return [f] if any(e.statistic == DIFF for e in f.evidence) else []


def _layers(f: Finding) -> dict[str, dict]:
    """Per layer (in the evidence's order): each class's top region and the test line of every region."""
    out: dict[str, dict] = {}
    for e in f.evidence:
        point, rest = e.label.split(": ", 1)
        d = out.setdefault(point, {"top": {}, "test": {}})
        if e.statistic == TOP:
            name, roi = rest[len("class "):].split(" rests most on the ", 1)
            d["top"][ast.literal_eval(name)] = (roi, e)
        elif e.statistic == DIFF:
            d["test"][rest.split("relevance per area in the ")[1].split(", class ")[0]] = e
    return out


def _p_key(p: float | None) -> float:
    return 2.0 if p is None or math.isnan(p) else p


def _layers_n(n: int) -> str:
    return f"{n} layer" if n == 1 else f"{n} layers"


def _judge_strategy(f: Finding, t: RunTables, p: FindingParams) -> None:
    pos, neg = f.subject["classes"].split(" vs ", 1)
    layers, split, diffuse, weak = _layers(f), [], [], []
    for point, d in layers.items():
        if pos not in d["top"] or neg not in d["top"]:
            continue
        (a, ea), (b, eb) = d["top"][pos], d["top"][neg]
        if a == b:
            continue
        # a class rests on a region only where its relevance concentrates (per area ≥ min_enrichment × the
        # image's): Grad-CAM explains the target class, whose evidence is faint and diffuse in the other cases
        if min(ea.effect, eb.effect) < p.min_enrichment:
            diffuse.append(point)
            continue
        # the split's direction: the class has more relevance in its own top region than the other
        backing = [e for roi, sign in ((a, 1), (b, -1)) if (e := d["test"].get(roi)) is not None
                   and e.significant(p.alpha) and sign * e.effect > 0]
        if backing:
            split.append((point, a, b, min(backing, key=lambda e: e.p_adj)))
        else:
            weak.append(point)
    tests = [e for e in f.evidence if e.statistic == DIFF]
    f.flagged = bool(split)
    tested = [q for q, d in layers.items() if d["test"]]
    if f.flagged:
        point, a, b, lead = split[-1]  # the deepest layer that splits the classes
        f.headline = f.evidence.index(lead)
        outside = [r for r in (a, b) if r not in p.target_rois]
        f.severity = "major" if outside else "minor"
        roi = lead.label.split("relevance per area in the ")[1].split(", class ")[0]
        f.sentence = (f"Class {pos!r} rests on the {a}, class {neg!r} on the {b} at {point} (relevance per area in "
                      f"the {roi}: median difference {pos!r} − {neg!r} {lead.effect:+.2f}, 95% CI {lead.ci_low:+.2f} "
                      f"to {lead.ci_high:+.2f}, Mann–Whitney p_adj {p_eq(lead.p_adj)}, n = {lead.n}); "
                      f"the classes split at {len(split)} of {_layers_n(len(tested))} tested "
                      f"({', '.join(s[0] for s in split)})"
                      + (f"; the {' and the '.join(outside)} lies outside the clinical target" if outside else "")
                      + ".")
        return
    f.severity = "info"
    deepest = layers[tested[-1]]
    tops = {name: deepest["top"][name][0] for name in (pos, neg) if name in deepest["top"]}
    # the headline: the deepest layer's test of a top region (the most significant one)
    lead = min((deepest["test"][r] for r in dict.fromkeys(tops.values()) if r in deepest["test"]),
               key=lambda e: _p_key(e.p), default=None) or min(deepest["test"].values(), key=lambda e: _p_key(e.p))
    f.headline = f.evidence.index(lead)
    if not diffuse and not weak:
        same = f"both classes rest most on the same region at every layer tested ({_layers_n(len(tested))})"
    else:
        why = []
        if diffuse:
            why.append(f"at {len(diffuse)} of them one class's relevance concentrates in no region (its top region "
                       f"holds less than {p.min_enrichment:g}× the image's relevance per area)")
        if weak:
            why.append(f"at {len(weak)} without a significant class difference in the direction of the split")
        same = f"the top regions differ at {len(diffuse) + len(weak)} of {_layers_n(len(tested))}: " + " and ".join(why)
    per = {name: f"{deepest['top'][name][1].effect:.2f}×" for name in tops}
    where = "; ".join(f"class {name!r} rests most on the {roi} ({per[name]} the image's relevance per area)"
                      for name, roi in tops.items())
    if len(set(tops.values())) == 1 and len(tops) == 2:
        where = f"both classes rest most on the {next(iter(tops.values()))} ({per[pos]} and {per[neg]})"
    untested = [r for r in dict.fromkeys(tops.values()) if r not in deepest["test"]]
    if untested:
        where += f" (the {' and the '.join(untested)}: too few cases of one class to compare)"
    roi = lead.label.split("relevance per area in the ")[1].split(", class ")[0]
    best = min((e.p_adj for e in tests if e.p_adj is not None and not math.isnan(e.p_adj)), default=math.nan)
    n_tests = sum(e.p is not None for e in tests)
    f.sentence = (f"No class-dependent strategy between {pos!r} and {neg!r}: {same}. "
                  f"At {tested[-1]} {where}; relevance per area in the {roi}: median difference {pos!r} − {neg!r} "
                  f"{lead.effect:+.2f}, 95% CI {lead.ci_low:+.2f} to {lead.ci_high:+.2f}, Mann–Whitney p_adj "
                  f"{p_eq(lead.p_adj)}; smallest p_adj of the {n_tests} test{'s' if n_tests != 1 else ''} {p_eq(best)}.")


register(Rule("class_dependent_strategy", _collect_strategy, _judge_strategy,
              doc="per Grad-CAM layer fine enough to localise, each class's top region (highest median relevance "
                  "per area) and, per region, the class difference of relevance per area (Mann–Whitney U for the "
                  "top regions); flagged when the top regions differ, relevance concentrates in each, and one "
                  "differs significantly between the classes in the direction of the split"))
