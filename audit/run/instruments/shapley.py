"""Exact contrast Shapley values (``probes.interventions.contrast_shapley``): how much each
input contrast (channel) contributes to the model's performance on the audited cohort.

Classifiers: value functions ``"auc"`` (AUC of P(class ``ctx.target``) against
``label == ctx.target``) and ``"accuracy"`` (arg-max = label); segmenters: ``"dice"`` of the
predicted foreground (arg-max > 0) against the ROI ``truth_roi``. Each with the absent-contrast
fills ``"zero"`` and ``"marginal"`` (contrasts taken from other cases, ``n_samples`` seeded
derangements). One unit per value function × fill (each a cohort-level value).

Tables: ``values`` (case_id ``"cohort"``, contrast, absent, value_function, reason, metric
φ / rank, value), ``coalitions`` (the value of every coalition), ``alignment`` (marginal fill:
median donor–recipient head Dice) and, when ``clinical_ranking`` is set, ``footrule``: the
normalised Spearman footrule agreement (1 = same ranking, 0 = most discordant) of the Shapley
ranking with the clinical one (NaN with the reason when φ is undefined).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from audit.run.context import Context
from audit.run.plugin import Instrument, Params, Unit, frame, register
from probes.interventions.shapley import contrast_shapley
from probes.interventions.shapley_rank import normalized_spearman_footrule

CLASSIFIER_METRICS = ("auc", "accuracy")
SEGMENTER_METRICS = ("dice",)


class ShapleyParams(Params):
    """Contrast Shapley settings (defaults: 2^C coalitions per case; marginal fill with 8 draws).

    ``metrics``: value functions (None: auc and accuracy for a classifier, dice for a
    segmenter); ``absent``: fills of an absent contrast (zero, mean, marginal);
    ``n_samples``: marginal draws; ``truth_roi``: the mask a segmenter's Dice is scored
    against; ``clinical_ranking``: the clinical importance of the contrasts, most important
    first, tied contrasts joined by ``=`` (BraTS: ``["T1c", "FLAIR", "T1=T2"]``); every
    contrast of the cohort named once (case-insensitive); None: no footrule table.
    """

    metrics: list[Literal["auc", "accuracy", "dice"]] | None = None
    absent: tuple[Literal["zero", "mean", "marginal"], ...] = ("zero", "marginal")
    n_samples: int = 4
    truth_roi: str = "gtv"
    clinical_ranking: list[str] | None = None


def reference_ranking(ranking: list[str], channels: tuple[str, ...]) -> np.ndarray:
    """Competition ranks (1 = most important, ties share the minimum rank) of ``channels`` from
    a clinical ranking such as ``["T1c", "FLAIR", "T1=T2"]``.

    Raises:
        ValueError: a contrast missing, unknown or named twice.
    """
    lower = {c.lower(): i for i, c in enumerate(channels)}
    ranks = np.zeros(len(channels), np.int64)
    pos = 1
    for entry in ranking:
        group = [t.strip() for t in entry.split("=") if t.strip()]
        for name in group:
            j = lower.get(name.lower())
            if j is None:
                raise ValueError(f"instruments.shapley.clinical_ranking: {name!r} is not a contrast of the cohort "
                                 f"{list(channels)}")
            if ranks[j]:
                raise ValueError(f"instruments.shapley.clinical_ranking: {name!r} is named twice")
            ranks[j] = pos
        pos += len(group)
    missing = [c for c, r in zip(channels, ranks) if not r]
    if missing:
        raise ValueError(f"instruments.shapley.clinical_ranking: contrast(s) {missing} are not ranked; name every "
                         f"contrast of {list(channels)} once")
    return ranks


def metrics(ctx: Context, p: ShapleyParams) -> list[str]:
    """The value functions of the run (``p.metrics`` or the task's defaults)."""
    return list(p.metrics) if p.metrics is not None else list(
        SEGMENTER_METRICS if ctx.task == "segmentation" else CLASSIFIER_METRICS)


def call(ctx: Context, p: ShapleyParams, metric: str, absent: str, seed: int):
    """The ``contrast_shapley`` call of one unit (labels, target and masks as the module docstring says)."""
    if metric == "dice":
        target, labels = None, None
    elif metric == "auc":
        target, labels = ctx.target, (ctx.labels() == ctx.target).astype(np.int64)
    else:
        target, labels = None, ctx.labels()
    return contrast_shapley(ctx.model, ctx.x(), target, metric, absent=absent, labels=labels,
                            masks=ctx.masks() if ctx.rois else None, truth_roi=p.truth_roi,
                            contrasts=ctx.channels, case_ids=ctx.case_ids(), n_samples=p.n_samples, seed=seed,
                            batch_size=p.rows(ctx))


def _plan(ctx: Context, p: ShapleyParams) -> list[Unit]:
    return [Unit(f"{m}/{a}", {"metric": m, "absent": a}) for m in metrics(ctx, p) for a in p.absent]


def _run(ctx: Context, p: ShapleyParams, unit: Unit) -> dict[str, pd.DataFrame]:
    metric, absent = unit.spec["metric"], unit.spec["absent"]
    ref = reference_ranking(p.clinical_ranking, ctx.channels) if p.clinical_ranking is not None else None
    if metric == "dice" and p.truth_roi not in ctx.rois:
        raise ValueError(f"instruments.shapley.truth_roi: {p.truth_roi!r} is not a ROI of the run "
                         f"({', '.join(ctx.rois) or 'none'})")
    res = call(ctx, p, metric, absent, ctx.unit_seed("shapley", unit.key))
    tabs = res.tables()
    ids = {"absent": absent, "value_function": res.metric}
    out = {"values": frame(res.to_frame()),
           "coalitions": frame(tabs["coalitions"].assign(**ids)[["case_id", "coalition", "absent", "value_function",
                                                                  "metric", "value"]])}
    if "alignment" in tabs:
        out["alignment"] = frame(tabs["alignment"].assign(**ids)[["absent", "value_function", "source",
                                                                  "threshold", "metric", "value"]])
    if ref is not None:
        rank = res.ranking()
        ok = bool(np.isfinite(rank).all())
        value = normalized_spearman_footrule(rank.astype(np.int64), ref) if ok else float("nan")
        out["footrule"] = frame([{"case_id": "cohort", **ids,
                                  "reference": " > ".join(p.clinical_ranking),
                                  "reason": "" if ok else f"no ranking: {res.reason or 'undefined Shapley values'}",
                                  "metric": "footrule_agreement", "value": float(value)}])
    return out


class _ShapleyInstrument(Instrument):
    """Needs labels for a classifier, masks for a segmenter (one ``needs`` set cannot say "or")."""

    def skip_reason(self, ctx: Context) -> str | None:
        from audit.run.plugin import NEEDS

        need = "masks" if ctx.task == "segmentation" else "labels"
        return NEEDS[need](ctx)


register(_ShapleyInstrument(
    "shapley", ShapleyParams, _plan, _run, tables=("values", "coalitions", "alignment", "footrule"),
    doc="exact contrast Shapley values of AUC/accuracy (classifier) or Dice (segmenter), zero and marginal fill, "
        "footrule agreement with a clinical ranking"))
