"""The report's charts, each drawn from a run's tables (never from the model).

Every builder takes the :class:`~audit.report.tables.RunTables` and returns a matplotlib
``Figure`` (None when the run has no table for it). :func:`png_data` turns a figure into a
base64 PNG with no metadata, so the same tables give the same bytes (the report re-renders
byte for byte). Axes carry their labels and units; colours follow the ROI or method name.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.stats import mannwhitneyu

from audit.report.tables import RunTables

__all__ = [
    "MAP_TABLES",
    "ablation_histograms",
    "ablation_roc",
    "colour",
    "faithfulness_bars",
    "intensity_correlation",
    "localisation_curves",
    "patching_curves",
    "png_data",
    "probe_curves",
    "shapley_bars",
]

MAP_TABLES = ("gradcam.localisation", "lrp.localisation", "attribution.localisation")
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf")
DPI = 90


def colour(name: str, names: list[str]) -> str:
    """A stable colour for ``name`` within the sorted ``names``."""
    return _PALETTE[sorted(names).index(name) % len(_PALETTE)] if name in names else "#333333"


def finish(fig: Figure, ax, xlabel: str, ylabel: str, *, legend: str = "best", fontsize: float = 7,
           diagonal: bool = False) -> Figure:
    """Label a one-axes chart (``diagonal``: the chance line of a ROC plot), legend, grid, layout."""
    if diagonal:
        ax.plot([0, 1], [0, 1], ":", color="#999999", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=fontsize, loc=legend)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def png_data(fig: Figure) -> str:
    """The figure as a base64 PNG (``data:`` URI payload), without metadata: same figure, same bytes.
    The builders lay their figures out themselves (a tight bounding box would draw each twice)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _points_in_order(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["point"].astype(str)))


def _short(point: str) -> str:
    return point.removesuffix(".resid")


def localisation_curves(t: RunTables, alpha: float = 0.05) -> Figure | None:
    """IoU@p95 and relevance mass per ROI and layer (Grad-CAM), class 1 solid, class 0 dashed;
    ``*`` where the classes differ (Mann–Whitney U, uncorrected ``alpha``)."""
    df = t["gradcam.localisation"]
    labels = t.labels()
    if df.empty or labels.empty:
        return None
    df = df[(df["contrast"] == "all") & (df["reason"].fillna("") == "")]
    metrics = [m for m in ("iou@95", "relevance_mass") if m in set(df["metric"])]
    rois = sorted(r for r in set(df["roi"]) if r != "all")
    points = _points_in_order(df)
    if not metrics or not rois:
        return None
    fig = Figure(figsize=(11, 3.6))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    df = df.assign(label=df["case_id"].map(labels))
    x = np.arange(len(points))
    for ax, metric in zip(axes, metrics):
        d = df[df["metric"] == metric]
        for roi in rois:
            r = d[d["roi"] == roi]
            means = {}
            for cls, style in ((t.target, "-"), (1 - t.target, "--")):
                m = r[r["label"] == cls].groupby("point")["value"].mean().reindex(points)
                means[cls] = m.to_numpy()
                ax.plot(x, means[cls], style, color=colour(roi, rois), lw=1.5,
                        label=f"{roi}" if cls == t.target else None)
            for i, pt in enumerate(points):
                a = r[(r["point"] == pt) & (r["label"] == t.target)]["value"].dropna()
                b = r[(r["point"] == pt) & (r["label"] == 1 - t.target)]["value"].dropna()
                testable = len(a) >= 3 and len(b) >= 3 and a.nunique() + b.nunique() > 2
                if testable and mannwhitneyu(a, b).pvalue < alpha:
                    y = np.nanmax([means[t.target][i], means[1 - t.target][i]])
                    ax.annotate("*", (i, y), color=colour(roi, rois), ha="center", fontsize=12)
        ax.set_xticks(x, [_short(p) for p in points], rotation=45, ha="right", fontsize=7)
        ax.set_xlabel("layer (Grad-CAM hook point)")
        ax.set_ylabel({"iou@95": "IoU of the top-5% map with the ROI", "relevance_mass": "relevance mass (fraction)"
                       }.get(metric, metric))
        ax.set_title(f"{metric}: solid = class {t.class_name(t.target)!s}, dashed = {t.class_name(1 - t.target)!s}",
                     fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0, 0.88, 1))  # the legend goes to the right of the panels
    fig.legend(*axes[-1].get_legend_handles_labels(), fontsize=7, loc="center right", title="ROI", title_fontsize=7)
    return fig


def probe_curves(t: RunTables) -> Figure | None:
    """Linear-probe AUC and cross-entropy on the held-out split per layer, real task vs control task."""
    df = t["probes.probes"]
    if df.empty:
        return None
    df = df[df["split"] == "test"]
    points = _points_in_order(df)
    x = np.arange(len(points))
    fig = Figure(figsize=(10, 3.3))
    axes = fig.subplots(1, 2)
    for ax, metric, unit in ((axes[0], "auc", "AUC (held-out patients)"), (axes[1], "cross_entropy", "cross-entropy (nats)")):
        for task, style in (("real", "-o"), ("control", "--s")):
            v = df[(df["task"] == task) & (df["metric"] == metric)].groupby("point")["value"].mean().reindex(points)
            ax.plot(x, v.to_numpy(), style, ms=3, label=f"{task} task", color="#1f77b4" if task == "real" else "#999999")
        ax.set_xticks(x, [_short(p) for p in points], rotation=45, ha="right", fontsize=7)
        ax.set_xlabel("layer")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
    axes[0].axhline(0.5, color="k", lw=0.6, ls=":")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def patching_curves(t: RunTables) -> Figure | None:
    """Mean Δp of activation patching per layer with its 95% CI, both directions; whole-map patching
    and the ROI-masked patching of each ROI (controls: the complement and a random region)."""
    df = t["patching.effects"]
    if df.empty:
        return None
    points = _points_in_order(df)
    x = np.arange(len(points))
    directions = list(dict.fromkeys(df["direction"]))
    rois = sorted(set(df["roi"]) - {"full"})
    fig = Figure(figsize=(11, 3.4))
    axes = fig.subplots(1, len(directions), squeeze=False)[0]
    for ax, direction in zip(axes, directions):
        d = df[(df["direction"] == direction) & (df["control"] == "none")]
        for roi in ["full", *rois]:
            r = d[d["roi"] == roi].pivot_table(index="point", columns="metric", values="value").reindex(points)
            if "mean_delta" not in r:
                continue
            c = "#000000" if roi == "full" else colour(roi, rois)
            ax.plot(x, r["mean_delta"].to_numpy(), "-" if roi == "full" else "--", color=c, lw=1.8 if roi == "full" else 1,
                    label="whole map" if roi == "full" else roi)
            if roi == "full" and {"ci_low", "ci_high"} <= set(r):
                ax.fill_between(x, r["ci_low"].to_numpy(), r["ci_high"].to_numpy(), color=c, alpha=0.15)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xticks(x, [_short(p) for p in points], rotation=45, ha="right", fontsize=7)
        ax.set_xlabel("patched layer")
        ax.set_ylabel("mean Δp(target class)")
        ax.set_title(f"patching {direction}", fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0, 0.87, 1))
    fig.legend(*axes[-1].get_legend_handles_labels(), fontsize=7, loc="center right")
    return fig


def ablation_roc(t: RunTables) -> Figure | None:
    """ROC curve of each ablation condition (the unablated cohort in black)."""
    df = t["ablation.roc"]
    if df.empty:
        return None
    conds = list(dict.fromkeys(df["condition"]))
    auc = t["ablation.per_condition"].query("metric == 'auc'").set_index("condition")["value"]
    fig = Figure(figsize=(5.2, 4.4))
    ax = fig.subplots()
    others = [c for c in conds if c != "none"]
    for c in conds:
        r = df[df["condition"] == c].pivot_table(index="point", columns="metric", values="value").sort_index()
        a = auc.get(c, math.nan)
        ax.plot(r["fpr"], r["tpr"], color="#000000" if c == "none" else colour(c, others),
                lw=2 if c == "none" else 1, label=f"{'unablated' if c == 'none' else c} (AUC {a:.2f})")
    return finish(fig, ax, "false-positive rate", "true-positive rate", legend="lower right", fontsize=6.5,
                  diagonal=True)


def ablation_histograms(t: RunTables) -> Figure | None:
    """Histograms of p(target class) per ablation condition, by true class."""
    df = t["ablation.per_case"]
    if df.empty:
        return None
    df = df[df["metric"] == "prob"]
    conds = list(dict.fromkeys(df["condition"]))
    cols = min(4, len(conds))
    rows = math.ceil(len(conds) / cols)
    fig = Figure(figsize=(2.6 * cols, 1.9 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, squeeze=False)).ravel()
    bins = np.linspace(0, 1, 11)
    for ax, c in zip(axes, conds):
        d = df[df["condition"] == c]
        for cls, col in ((1 - t.target, "#1f77b4"), (t.target, "#d62728")):
            ax.hist(d[d["label"] == cls]["value"], bins=bins, alpha=0.6, color=col,
                    label=f"class {t.class_name(cls)}")
        ax.set_title("unablated" if c == "none" else c, fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes[len(conds):]:
        ax.set_visible(False)
    for ax in axes[(rows - 1) * cols:]:
        ax.set_xlabel("p(target class)", fontsize=7)
    for ax in axes[::cols]:
        ax.set_ylabel("cases", fontsize=7)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def shapley_bars(t: RunTables) -> Figure | None:
    """Cohort Shapley value of each contrast, per value function and fill of absent contrasts."""
    df = t["shapley.values"]
    if df.empty:
        return None
    df = df[(df["metric"] == "phi") & (df["case_id"] == "cohort")]
    if df.empty:
        return None
    groups = list(dict.fromkeys(zip(df["value_function"], df["absent"])))
    contrasts = list(dict.fromkeys(df["contrast"]))
    fig = Figure(figsize=(2.8 * len(groups) + 1, 3))
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (vf, absent) in zip(axes, groups):
        v = df[(df["value_function"] == vf) & (df["absent"] == absent)].set_index("contrast")["value"].reindex(contrasts)
        ax.bar(range(len(contrasts)), v.to_numpy(), color=[colour(c, contrasts) for c in contrasts])
        ax.set_xticks(range(len(contrasts)), contrasts, fontsize=8)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"{vf}, absent = {absent}", fontsize=8)
        ax.set_ylabel(f"Shapley value (Δ{vf})", fontsize=8)
        ax.set_xlabel("contrast", fontsize=8)
    fig.tight_layout()
    return fig


def _faith(t: RunTables) -> pd.DataFrame:
    parts = [t[n].assign(method=t[n]["method"]) for n in ("gradcam.faithfulness", "lrp.faithfulness",
                                                          "attribution.faithfulness") if not t[n].empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def faithfulness_bars(t: RunTables) -> Figure | None:
    """Per method: fidelity (ΔAUPC against random orderings), robustness (max-sensitivity, lower is
    better), sparsity (Gini) as mean ± sd over cases, and the median relevance mass per area in each ROI."""
    f = _faith(t)
    loc = pd.concat([t[n] for n in MAP_TABLES if not t[n].empty], ignore_index=True) if any(
        not t[n].empty for n in MAP_TABLES) else pd.DataFrame()
    if f.empty and loc.empty:
        return None
    fig = Figure(figsize=(12, 3.2))
    axes = fig.subplots(1, 4)
    methods = sorted(set(f["method"]) if not f.empty else set(loc["method"]))
    for ax, metric, label in ((axes[0], "delta_aupc", "ΔAUPC (random − method; higher = more faithful)"),
                              (axes[1], "max_sensitivity", "max-sensitivity (lower = more robust)"),
                              (axes[2], "sparsity_gini", "Gini sparsity (0–1)")):
        if f.empty:
            ax.set_visible(False)
            continue
        g = f[f["metric"] == metric].groupby("method")["value"]
        m, s = g.mean().reindex(methods), g.std().reindex(methods)
        ax.bar(range(len(methods)), m.to_numpy(), yerr=s.fillna(0).to_numpy(), color=[colour(k, methods) for k in methods],
               capsize=2)
        ax.set_xticks(range(len(methods)), methods, rotation=40, ha="right", fontsize=7)
        ax.set_ylabel(label, fontsize=7)
    ax = axes[3]
    if not loc.empty:
        # Grad-CAM at its last layer, the others over all contrasts
        last = _points_in_order(t["gradcam.localisation"])[-1:] if not t["gradcam.localisation"].empty else []
        d = loc[(loc["metric"] == "relevance_mass_per_area") & (loc["contrast"] == "all")
                & ((loc["method"] != "gradcam") | loc["point"].isin(last))]
        rois = sorted(set(d["roi"]) - {"all"})
        width = 0.8 / max(1, len(rois))
        for j, roi in enumerate(rois):
            m = d[d["roi"] == roi].groupby("method")["value"].median().reindex(methods)
            ax.bar(np.arange(len(methods)) + j * width - 0.4 + width / 2, m.to_numpy(), width, color=colour(roi, rois),
                   label=roi)
        ax.axhline(1, color="k", lw=0.5, ls=":")
        ax.set_xticks(range(len(methods)), methods, rotation=40, ha="right", fontsize=7)
        ax.set_ylabel("relevance mass / ROI area (1 = uniform)", fontsize=7)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def intensity_correlation(t: RunTables) -> Figure | None:
    """Spearman correlation of attribution with image intensity per case, per method (box plots)."""
    parts = []
    for n in MAP_TABLES:
        d = t[n]
        if d.empty:
            continue
        d = d[(d["metric"] == "intensity_spearman") & (d["roi"] == "all")]
        if n == "gradcam.localisation" and not d.empty:
            d = d[d["point"] == _points_in_order(d)[-1]]
        parts.append(d)
    d = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if d.empty:
        return None
    d = d.groupby(["method", "case_id"])["value"].mean().reset_index()
    methods = sorted(set(d["method"]))
    fig = Figure(figsize=(5, 3))
    ax = fig.subplots()
    ax.boxplot([d[d["method"] == m]["value"].dropna().to_numpy() for m in methods], tick_labels=methods)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("Spearman ρ (attribution, intensity)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7, rotation=30)
    fig.tight_layout()
    return fig
