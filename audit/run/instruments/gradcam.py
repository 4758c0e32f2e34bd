"""All-layer Grad-CAM: one forward+backward gives a map at every block's residual output
(``probes.attribution.layer_gradcam``); localisation per case × layer × ROI, faithfulness of
the deepest layer's map, and each layer's ``resolution`` (the activation's cells per axis:
a 2×2 map cannot localise a small region, whatever its upsampled numbers say)."""

from __future__ import annotations

import pandas as pd
import torch

from audit.run.context import Context
from audit.run.instruments._maps import MapParams, faithfulness, keep_shown, localisation
from audit.run.plugin import Instrument, Unit, batches, frame, register
from probes.attribution import layer_gradcam


class GradcamParams(MapParams):
    """``points``: hook points (default every block's ``.resid``); faithfulness uses the last."""

    points: list[str] | None = None


def _plan(ctx: Context, p: GradcamParams) -> list[Unit]:
    return batches(ctx.n, ctx.cfg.batch_size, q=p.q)


def _run(ctx: Context, p: GradcamParams, unit: Unit) -> dict[str, object]:
    a, b = unit.spec["start"], unit.spec["stop"]
    points = list(p.points or ctx.points)
    cams = layer_gradcam(ctx.model, ctx.x(a, b), ctx.target, points=points, case_ids=ctx.case_ids(a, b))
    out: dict[str, object] = {"localisation": pd.concat(
        [localisation(ctx, unit, cams[pt], "gradcam", pt) for pt in points], ignore_index=True)}
    if unit.spec["start"] == 0:  # the same for every case: written once
        out["resolution"] = frame([{"point": pt, "axis": str(i), "metric": "cells", "value": float(v)}
                                   for pt in points for i, v in enumerate(cams.feature_shapes[pt])])
    last = points[-1]
    if p.faithfulness:
        def explain(x, target=None):
            return layer_gradcam(ctx.model, x, target, points=[last])[last]
        faith = faithfulness(ctx, unit, p, cams[last], "gradcam", explain, last)
        if faith is not None:
            out["faithfulness"] = faith
    if ctx.show_index(p.show_cases):  # (cases, points, 1, *spatial), points in the resolution table's order
        keep_shown(out, "maps", ctx, unit, p, torch.stack([cams[pt] for pt in points], dim=1))
    return out


register(Instrument("gradcam", GradcamParams, _plan, _run, tables=("localisation", "faithfulness", "resolution"),
                    needs=frozenset({"classifier", "hooks"}),
                    doc="Grad-CAM at every block, localisation per layer, faithfulness of the last"))
