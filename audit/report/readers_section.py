"""The reader-study part of the report, drawn from the CSV tables ``audit readers`` writes.

:func:`reader_sections` turns such a folder into report sections (odds ratios, the MRMC table,
ROC per phase, calibration of the AI, decision curves, outcome evolution);
:func:`render_reader_report` writes them as a report of their own (``report.html`` in the folder).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from audit.report.html import RENDERED_MARK, Block, environment, figure_block, table_block
from audit.report.plots import colour, finish

__all__ = ["reader_sections", "render_reader_report"]


def _csv(folder: Path, name: str) -> pd.DataFrame:
    path = folder / f"{name}.csv"
    return pd.read_csv(path, keep_default_na=True) if path.is_file() else pd.DataFrame()


def _roc(folder: Path) -> Figure | None:
    avg = _csv(folder, "roc_average")
    if avg.empty:
        return None
    auc = _csv(folder, "roc_auc")
    phases = list(dict.fromkeys(avg["phase"].astype(str)))
    fig = Figure(figsize=(4.8, 4.2))
    ax = fig.subplots()
    for ph in phases:
        d = avg[avg["phase"].astype(str) == ph]
        a = auc[(auc.get("phase", pd.Series(dtype=str)).astype(str) == ph)]["auc"].mean() if not auc.empty else np.nan
        ax.plot(d["fpr"], d["tpr"], color=colour(ph, phases), label=f"{ph} (mean reader AUC {a:.2f})")
    return finish(fig, ax, "false-positive rate", "true-positive rate", legend="lower right", diagonal=True)


def _calibration(folder: Path) -> Figure | None:
    cur = _csv(folder, "calibration_ai_curve")
    if cur.empty:
        return None
    cur = cur[~cur["empty"].astype(bool)]
    fig = Figure(figsize=(4.2, 4))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ":", color="#999999", label="perfect calibration")
    ax.plot(cur["mean_prob"], cur["observed"], "o-", color="#d62728", label="AI")
    for _, r in cur.iterrows():
        ax.annotate(str(int(r["n"])), (r["mean_prob"], r["observed"]), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel("mean predicted probability (bin)")
    ax.set_ylabel("observed frequency of truth = 1")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _decision(folder: Path) -> Figure | None:
    rd, ai = _csv(folder, "decision_curve_readers"), _csv(folder, "decision_curve_ai")
    if rd.empty and ai.empty:
        return None
    fig = Figure(figsize=(5.4, 3.8))
    ax = fig.subplots()
    top = [float(ai["net_benefit"].max())] if not ai.empty else []
    if not rd.empty:
        top.append(float(rd["net_benefit"].max()))
        dec = rd[rd["model"] == "decision"]
        phases = list(dict.fromkeys(dec["phase"].astype(str)))
        for ph in phases:
            m = dec[dec["phase"].astype(str) == ph].groupby("threshold")["net_benefit"].mean()
            ax.plot(m.index, m.to_numpy(), color=colour(ph, phases), label=f"readers, {ph} (mean)")
        for ref, style in (("all", "--"), ("none", ":")):
            m = rd[rd["model"] == ref].groupby("threshold")["net_benefit"].mean()
            ax.plot(m.index, m.to_numpy(), style, color="#777777", label=f"treat {ref}")
    if not ai.empty:
        ax.plot(ai["threshold"], ai["net_benefit"], color="#000000", lw=1.5, label="AI probability")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.1, max(top) + 0.05)
    return finish(fig, ax, "threshold probability", "net benefit (true positives per patient)", fontsize=6.5)


def _outcomes(folder: Path) -> Figure | None:
    o = _csv(folder, "outcomes")
    if o.empty:
        return None
    phases = list(dict.fromkeys(o["phase"].astype(str)))
    g = o.groupby("phase", sort=False)[["tp", "tn", "fp", "fn"]].sum().reindex(phases)
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    bottom = np.zeros(len(phases))
    for k, col in zip(("tp", "tn", "fp", "fn"), ("#2ca02c", "#98df8a", "#ff9896", "#d62728")):
        ax.bar(range(len(phases)), g[k].to_numpy(), bottom=bottom, color=col, label=k.upper())
        bottom += g[k].to_numpy()
    ax.set_xticks(range(len(phases)), phases, fontsize=8)
    ax.set_xlabel("reading phase")
    ax.set_ylabel("reads")
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    fig.legend(*ax.get_legend_handles_labels(), fontsize=7, ncol=4, loc="upper center")
    return fig


def reader_sections(folder: Path) -> list[dict[str, Any]]:
    """Report sections from the tables of a reader-study folder (empty when it holds none)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such reader-study folder (written by `audit readers`)")
    blocks: list[Block] = []
    gee = _csv(folder, "gee_contrasts")
    if not gee.empty:
        cols = [c for c in ("contrast", "odds_ratio", "ci_low", "ci_high", "p", "converged") if c in gee]
        blocks += table_block(gee[cols], "Odds ratio of a correct read against the first phase (GEE, exchangeable "
                                    "correlation within reader; 95% CI).", "reader_or")
    mrmc = _csv(folder, "mrmc_or_differences")
    if not mrmc.empty:
        blocks += table_block(mrmc, "MRMC analysis (Obuchowski–Rockette): AUC differences between phases, random readers "
                               "and cases (RRRC) and fixed readers (FRRC).", "reader_mrmc")
    blocks += figure_block(_roc(folder), "ROC curve per phase, averaged over readers.", "ROC per reading phase", "reader_roc")
    blocks += figure_block(_calibration(folder), "Calibration of the AI's probability (cases per bin annotated).",
                      "calibration of the AI", "reader_calibration")
    blocks += figure_block(_decision(folder), "Decision curves: net benefit of the readers' calls per phase and of the "
                      "AI's probability, against treating all or none.", "decision curves", "reader_decision")
    blocks += figure_block(_outcomes(folder), "Outcome evolution: true/false positives and negatives per phase, all readers.",
                      "outcomes per phase", "reader_outcomes")
    boot = _csv(folder, "bootstrap_table")
    if not boot.empty:
        cols = [c for c in ("statistic", "phase", "kind", "baseline", "estimate", "ci_low", "ci_high") if c in boot]
        blocks += table_block(boot[cols].fillna(""), "Patient bootstrap of accuracy, sensitivity and specificity "
                                                "(readers fixed; percentile 95% CI).")
    if not blocks:
        return []
    return [{"id": "readers", "title": "Reader study: does the AI help clinicians?", "blocks": blocks}]


def render_reader_report(folder: str | Path, now: datetime | None = None) -> Path:
    """Write ``folder/report.html``: the reader-study sections as a self-contained report."""
    folder = Path(folder)
    sections = reader_sections(folder)
    stamp = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    html = environment().get_template("readers.html.j2").render(sections=sections, rendered=stamp, mark=RENDERED_MARK)
    target = folder / "report.html"
    tmp = target.with_name(".report.html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(target)
    return target
