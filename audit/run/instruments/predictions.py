"""Predictions per case on the audited split and each counterfactual set, with metrics per set.

Classifiers: the probability of every class, the predicted class and the label per case.
Segmenters: per case the Dice of the predicted foreground (argmax ≠ 0) with the ROI ``roi``.
The ``metrics`` instrument (``metrics.py``) summarises these tables per set.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from audit.run.context import Context
from audit.run.plugin import Instrument, Params, Unit, batches, frame, register
from probes.core.model import as_audit_model, class_probabilities, model_state
from probes.core.stats import dice


class PredictionParams(Params):
    """``roi``: the mask a segmenter's foreground is compared with."""

    roi: str = "gtv"


def _plan(ctx: Context, p: PredictionParams) -> list[Unit]:
    units = batches(ctx.n, ctx.cfg.batch_size, "audit", set="audit")
    for name in ctx.extra:
        units += batches(len(ctx.extra[name]), ctx.cfg.batch_size, name, set=name)
    return units


def _run(ctx: Context, p: PredictionParams, unit: Unit) -> dict[str, pd.DataFrame]:
    s = unit.spec
    cohort = None if s["set"] == "audit" else s["set"]
    x = ctx.x(s["start"], s["stop"], cohort)
    ids, y = ctx.case_ids(s["start"], s["stop"], cohort), ctx.labels(s["start"], s["stop"], cohort)
    rows: list[dict[str, Any]] = []
    if ctx.task == "segmentation":
        net = as_audit_model(ctx.model)
        with model_state(ctx.model, warn="predictions"), torch.no_grad():
            pred = net(x).argmax(1).numpy() != 0
        truth = np.stack([c.masks.get(p.roi, np.zeros(pred.shape[1:], bool)) for c in ctx.cases(s["start"], s["stop"], cohort)])
        for cid, d in zip(ids, dice(pred, truth)):
            rows.append({"set": s["set"], "case_id": cid, "metric": f"dice_{p.roi}", "value": float(d)})
        return {"cases": frame(rows)}
    with torch.no_grad():
        prob = class_probabilities(as_audit_model(ctx.model), x).double().numpy()
    for i, cid in enumerate(ids):
        base = {"set": s["set"], "case_id": cid, "label": int(y[i])}
        for k in range(prob.shape[1]):
            rows.append({**base, "metric": f"p_{ctx.class_names[k] if k < len(ctx.class_names) else k}",
                         "value": float(prob[i, k])})
        rows.append({**base, "metric": "predicted", "value": float(prob[i].argmax())})
        rows.append({**base, "metric": "p_target", "value": float(prob[i, ctx.target])})
    return {"cases": frame(rows)}


register(Instrument(
    "predictions", PredictionParams, _plan, _run, tables=("cases",),
    doc="class probabilities per case on the audited split and each counterfactual set (Dice for segmenters)"))
