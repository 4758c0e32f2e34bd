"""LRP (``probes.attribution.lrp``) with the audit default ``epsilon_gamma_box``: the ZBox bounds
are the per-channel minimum and maximum over *all* audited cases, so a case's map does not depend
on which cases share its unit. Conservation is measured per case and reported (a ``conservation``
table: relative error and whether it is within ``tol``), not raised; localisation and
faithfulness as for every map."""

from __future__ import annotations

from typing import Literal

import pandas as pd
import torch

from audit.run.context import Context
from audit.run.instruments._maps import MapParams, faithfulness, keep_shown, localisation
from audit.run.plugin import Instrument, Unit, batches, frame, register
from probes.attribution import lrp


class LRPParams(MapParams):
    """``composite``: a name of ``probes.attribution.lrp.COMPOSITE_NAMES``; ``tol``: the relative
    conservation error up to which a case counts as conserved."""

    composite: Literal["epsilon_gamma_box", "epsilon_plus", "epsilon"] = "epsilon_gamma_box"
    tol: float = 0.05


def _plan(ctx: Context, p: LRPParams) -> list[Unit]:
    return batches(ctx.n, ctx.cfg.batch_size, q=p.q)


def _bounds(ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    x = ctx.x()
    dims = [0] + list(range(2, x.ndim))
    return x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)


def conservation(ctx: Context, x: torch.Tensor, maps: torch.Tensor, ids: list[str], tol: float) -> pd.DataFrame:
    """Per case: the start relevance (the target logit, zennit's convention), Σ R, the relative
    error |Σ R − start| / |start| and whether it is within ``tol`` (1/0). A map that does not
    conserve relevance is kept and flagged: the report says which cases, the audit goes on."""
    from probes.core.model import as_audit_model, model_state

    with model_state(ctx.model, warn="lrp"), torch.no_grad():
        start = as_audit_model(ctx.model)(x)[:, ctx.target].double()
    total = maps.flatten(1).double().sum(1)
    err = (total - start).abs() / start.abs().clamp_min(1e-12)
    rows = []
    for i, cid in enumerate(ids):
        for metric, v in (("start", start[i]), ("sum_relevance", total[i]), ("rel_error", err[i]),
                          ("conserved", float(err[i] <= tol))):
            rows.append({"case_id": cid, "metric": metric, "value": float(v)})
    return frame(rows)


def _run(ctx: Context, p: LRPParams, unit: Unit) -> dict[str, object]:
    a, b = unit.spec["start"], unit.spec["stop"]
    low, high = _bounds(ctx)

    def explain(x, target=None):
        return lrp(ctx.model, x, ctx.target if target is None else target, composite=p.composite,
                   low=low, high=high, check=False).maps

    x = ctx.x(a, b)
    res = lrp(ctx.model, x, ctx.target, composite=p.composite, low=low, high=high, check=False,
              case_ids=ctx.case_ids(a, b), contrasts=list(ctx.channels))
    out: dict[str, object] = {"localisation": localisation(ctx, unit, res.maps, "lrp"),
                              "conservation": conservation(ctx, x, res.maps, ctx.case_ids(a, b), p.tol)}
    if p.faithfulness:
        faith = faithfulness(ctx, unit, p, res.maps, "lrp", explain)
        if faith is not None:
            out["faithfulness"] = faith
    keep_shown(out, "maps", ctx, unit, p, res.maps)
    return out


register(Instrument("lrp", LRPParams, _plan, _run, tables=("localisation", "faithfulness", "conservation"),
                    needs=frozenset({"classifier", "lrp_rules"}),
                    doc="LRP (epsilon_gamma_box), one map per contrast, localisation and faithfulness"))
