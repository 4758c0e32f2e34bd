"""Anatomical and intensity ablations (``probes.interventions.ablation_study``) with DeLong
tests against the unablated model.

Conditions: ``"none"`` (always first), ``"no <roi>"`` for each ROI of the run (skipped when
the cohort has no masks), ``"no extracranial"`` (= not ``brain``) when a brain mask exists,
and ``"no top<k>%"`` (the k % brightest voxels of the whole image) for each ``top_percents``;
each filled with ``fill``. The score is P(class ``ctx.target``); labels are binarised as
``label == ctx.target``. One unit: AUCs and DeLong tests are cohort statistics.

Tables: ``per_condition`` (condition, reason, metric: n, auc, se, ci_low, ci_high, delta_auc,
delta_ci_low, delta_ci_high, z, p, mean_prob_k, shift_k, shift_p_k), ``per_case`` (case_id,
condition, label, metric ``prob``) and ``roc`` (condition, point, metric fpr/tpr/threshold).
"""

from __future__ import annotations

from typing import Literal

import pandas as pd

from audit.run.context import Context
from audit.run.plugin import Instrument, Params, Unit, frame, register
from probes.interventions.ablation import ablation_study


class AblationParams(Params):
    """Ablation settings (defaults: every ROI, extracranial, top 1 % and top 5 %, zero fill).

    ``rois``: ROIs to remove one at a time (None: every ROI of the run); ``extracranial``:
    also remove everything outside ``brain`` (when a brain mask exists); ``top_percents``:
    intensity ablations, per-case top-k % brightest voxels; ``per_contrast``: rank and remove
    voxels per contrast instead of jointly; ``fill``: what removed voxels become (zero,
    brain_mean, blur); ``extra_specs``: more spec strings (``probes.interventions.parse_spec``
    grammar, e.g. ``"no gtv+skull"``); ``alpha``: level of the DeLong intervals;

    """

    rois: list[str] | None = None
    extracranial: bool = True
    top_percents: tuple[float, ...] = (1.0, 5.0)
    per_contrast: bool = False
    fill: Literal["zero", "brain_mean", "blur"] = "zero"
    extra_specs: tuple[str, ...] = ()
    alpha: float = 0.05


def specs(ctx: Context, p: AblationParams) -> list[str]:
    """The spec strings of the run (module docstring); ROI specs only when the cohort has ROIs.

    Raises:
        ValueError: ``rois`` names a ROI the run does not have.
    """
    derived = ("extracranial",) if "brain" in ctx.rois else ()
    bad = [r for r in (p.rois or ()) if r not in (*ctx.rois, *derived)]
    if bad:
        raise ValueError(f"instruments.ablation.rois: {bad[0]!r} is not a ROI of the run "
                         f"({', '.join((*ctx.rois, *derived)) or 'none'})")
    rois = list(p.rois) if p.rois is not None else list(ctx.rois)
    out = [f"no {r}" for r in rois]
    if p.extracranial and "brain" in ctx.rois and "extracranial" not in rois:
        out.append("no extracranial")
    out += [f"no top{k:g}%" + (" per-contrast" if p.per_contrast else "") for k in p.top_percents]
    return out + list(p.extra_specs)


def _plan(ctx: Context, p: AblationParams) -> list[Unit]:
    return [Unit(f"cases[0:{ctx.n}]", {"start": 0, "stop": ctx.n})]


def _run(ctx: Context, p: AblationParams, unit: Unit) -> dict[str, pd.DataFrame]:
    res = ablation_study(ctx.model, ctx.x(), ctx.target, specs(ctx, p),
                         labels=(ctx.labels() == ctx.target).astype(int), masks=ctx.masks() if ctx.rois else {},
                         case_ids=ctx.case_ids(), fill=p.fill, batch_size=p.rows(ctx), alpha=p.alpha)
    return {k: frame(v) for k, v in res.tables().items()}


register(Instrument(
    "ablation", AblationParams, _plan, _run, tables=("per_condition", "per_case", "roc"),
    needs=frozenset({"labels", "two_classes", "classifier"}),
    doc="ROI and brightest-voxel ablations: AUC with DeLong CI and the paired DeLong test vs unablated"))
