"""Metrics per set (the audited split and each counterfactual set), from the predictions table.

Classifiers: n, accuracy (argmax = label), the AUC of the positive class (Mann–Whitney,
``probes.metrics.auc``) with its DeLong 95% Wald interval clipped to [0, 1] (``probes.metrics.delong``), sensitivity
and specificity of the argmax decision for the positive class. Segmenters: n and the mean
Dice with a 95% percentile bootstrap interval over cases (2,000 resamples, seeded).
A metric that is undefined on a set (one class only) is NaN with its reason.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from audit.run.context import Context
from audit.run.plugin import Instrument, Params, Unit, register
from probes.core.stats import bootstrap_indices


class MetricsParams(Params):
    """``alpha``: intervals are 1 − alpha; ``n_boot``: bootstrap resamples of a segmenter's mean Dice."""

    alpha: float = 0.05
    n_boot: int = 2000


def _plan(ctx: Context, p: MetricsParams) -> list[Unit]:
    return [Unit("all sets")]


def _classifier_rows(name: str, g: pd.DataFrame, target: int, alpha: float) -> list[dict]:
    from probes.metrics import delong

    wide = g.pivot_table(index="case_id", columns="metric", values="value", sort=False)
    label = g.drop_duplicates("case_id").set_index("case_id").loc[wide.index, "label"].to_numpy()
    keep = label >= 0
    label, predicted, score = label[keep], wide["predicted"].to_numpy()[keep], wide["p_target"].to_numpy()[keep]
    y, pred = (label == target).astype(int), predicted == target
    rows = [("n", float(keep.sum()), ""), ("accuracy", float((predicted == label).mean()), "")]
    if y.min() == y.max():
        rows += [(m, np.nan, "one class only in this set") for m in ("auc", "auc_ci_low", "auc_ci_high")]
    else:  # DeLong's Wald interval, clipped to [0, 1]
        d = delong(y, score, alpha=alpha).to_frame().set_index("metric").value
        rows += [("auc", float(d["auc_a"]), ""), ("auc_ci_low", max(float(d["ci_low"]), 0.0), ""),
                 ("auc_ci_high", min(float(d["ci_high"]), 1.0), "")]
    pos, neg = y == 1, y == 0
    rows.append(("sensitivity", float(pred[pos].mean()) if pos.any() else np.nan, "" if pos.any() else "no positive case"))
    rows.append(("specificity", float((~pred[neg]).mean()) if neg.any() else np.nan, "" if neg.any() else "no negative case"))
    return [{"set": name, "reason": r, "metric": m, "value": v} for m, v, r in rows]


def _segmenter_rows(name: str, g: pd.DataFrame, p: MetricsParams, seed: int) -> list[dict]:
    rows = []
    for metric, d in g.groupby("metric", sort=False):
        v = d.value.to_numpy(float)
        idx = bootstrap_indices(len(v), p.n_boot, seed=seed)
        boot = v[idx].mean(1)
        lo, hi = np.quantile(boot, [p.alpha / 2, 1 - p.alpha / 2])
        rows += [{"set": name, "reason": "", "metric": k, "value": float(x)}
                 for k, x in (("n", len(v)), (f"mean_{metric}", v.mean()), (f"mean_{metric}_ci_low", lo),
                              (f"mean_{metric}_ci_high", hi))]
    return rows


def _run(ctx: Context, p: MetricsParams, unit: Unit) -> dict[str, pd.DataFrame]:
    cases = ctx.results("predictions")["cases"]
    rows: list[dict] = []
    for name, g in cases.groupby("set", sort=False):
        rows += (_segmenter_rows(name, g, p, ctx.unit_seed("metrics", name)) if ctx.task == "segmentation"
                 else _classifier_rows(name, g, ctx.target, p.alpha))
    return {"sets": pd.DataFrame(rows)}


register(Instrument("metrics", MetricsParams, _plan, _run, tables=("sets",), after=("predictions",),
                    doc="accuracy, AUC with its DeLong interval, sensitivity and specificity per set (Dice for "
                        "segmenters)"))
