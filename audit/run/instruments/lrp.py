"""LRP (``probes.attribution.lrp``) with the audit default ``epsilon_gamma_box``: the ZBox bounds
are the per-channel minimum and maximum over *all* audited cases, so a case's map does not depend
on which cases share its unit. Conservation is checked per case; localisation and faithfulness
as for every map."""

from __future__ import annotations

from typing import Literal

import torch

from audit.run.context import Context
from audit.run.instruments._maps import MapParams, faithfulness, localisation, shown
from audit.run.plugin import Instrument, Unit, batches, register
from probes.attribution import lrp


class LRPParams(MapParams):
    """``composite``: a name of ``probes.attribution.lrp.COMPOSITE_NAMES``; ``tol``: conservation tolerance."""

    composite: Literal["epsilon_gamma_box", "epsilon_plus", "epsilon"] = "epsilon_gamma_box"
    tol: float = 0.05


def _plan(ctx: Context, p: LRPParams) -> list[Unit]:
    return batches(ctx.n, ctx.cfg.batch_size, q=p.q)


def _bounds(ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    x = ctx.x()
    dims = [0] + list(range(2, x.ndim))
    return x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)


def _run(ctx: Context, p: LRPParams, unit: Unit) -> dict[str, object]:
    a, b = unit.spec["start"], unit.spec["stop"]
    low, high = _bounds(ctx)

    def explain(x, target=None):
        return lrp(ctx.model, x, ctx.target if target is None else target, composite=p.composite, tol=p.tol,
                   low=low, high=high).maps

    res = lrp(ctx.model, ctx.x(a, b), ctx.target, composite=p.composite, tol=p.tol, low=low, high=high,
              case_ids=ctx.case_ids(a, b), contrasts=list(ctx.channels))
    out: dict[str, object] = {"localisation": localisation(ctx, unit, res.maps, "lrp")}
    if p.faithfulness:
        faith = faithfulness(ctx, unit, p, res.maps, "lrp", explain)
        if faith is not None:
            out["faithfulness"] = faith
    keep = shown(ctx, unit, p, res.maps)
    if keep is not None:
        out["maps"] = keep
    return out


register(Instrument("lrp", LRPParams, _plan, _run, tables=("localisation", "faithfulness"),
                    needs=frozenset({"classifier", "lrp_rules"}),
                    doc="LRP (epsilon_gamma_box), one map per contrast, localisation and faithfulness"))
