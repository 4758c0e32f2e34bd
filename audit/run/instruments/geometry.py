"""Latent ROI geometry (``probes.internals.roi_cosine_distances``): per case and block, the
cosine distances between the globally pooled representation and the ROI-pooled ones (and
between ROIs), at every block's ``.resid`` point.

Per case batch (``cfg.batch_size`` cases a unit); the units concatenate to one call over all
cases. Tables: ``distances`` (case_id, point, roi_a, roi_b, reason, metric
``cosine_distance``, value) and ``weights`` (ROI sizes on each feature map).
"""

from __future__ import annotations

import pandas as pd

from audit.run.context import Context
from audit.run.plugin import Instrument, Params, Unit, batches, frame, register
from probes.internals import roi_cosine_distances


class GeometryParams(Params):
    """``rois``: the ROIs pooled (None: every ROI of the run); ``points``: hook points (None:
    every block's ``.resid``). Deterministic; one forward per case batch."""

    rois: list[str] | None = None
    points: list[str] | None = None


def checked_rois(ctx: Context, rois: list[str] | None, instrument: str) -> tuple[str, ...]:
    """``rois`` (None: every ROI of the run), each a ROI of the run.

    Raises:
        ValueError: a ROI the run does not have (naming the key).
    """
    if rois is None:
        return ctx.rois
    bad = [r for r in rois if r not in ctx.rois]
    if bad:
        raise ValueError(f"instruments.{instrument}.rois: {bad[0]!r} is not a ROI of the run "
                         f"({', '.join(ctx.rois) or 'none'})")
    return tuple(rois)


def _plan(ctx: Context, p: GeometryParams) -> list[Unit]:
    return batches(ctx.n, ctx.cfg.batch_size)


def _run(ctx: Context, p: GeometryParams, unit: Unit) -> dict[str, pd.DataFrame]:
    a, b = unit.spec["start"], unit.spec["stop"]
    rois = checked_rois(ctx, p.rois, "geometry")
    res = roi_cosine_distances(ctx.model, ctx.x(a, b), ctx.masks(a, b, rois=rois),
                               list(p.points) if p.points is not None else list(ctx.points), case_ids=ctx.case_ids(a, b))
    return {k: frame(v) for k, v in res.tables().items()}


register(Instrument(
    "geometry", GeometryParams, _plan, _run, tables=("distances", "weights"), needs=frozenset({"masks", "hooks"}),
    doc="cosine distances between global and ROI-pooled representations per case and block"))
