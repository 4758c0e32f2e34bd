"""The hook registry's self-check on the first audited cases (``HookRegistry.verify``): every
point fires, patching a point with its own activation leaves the output unchanged, and
gradients reach every point."""

from __future__ import annotations

import pandas as pd

from audit.run.context import Context
from audit.run.plugin import Instrument, Params, Unit, frame, register
from probes.hooks.registry import HookRegistry


class VerifyParams(Params):
    """``n_cases``: how many audited cases the check runs on (at most the run's ``batch_size``: one
    forward); ``atol``: tolerance of the identity patch."""

    n_cases: int = 4
    atol: float = 1e-5


def _plan(ctx: Context, p: VerifyParams) -> list[Unit]:
    n = min(p.n_cases, ctx.n, p.rows(ctx))
    return [Unit(f"cases[0:{n}]", {"start": 0, "stop": n})]


def _run(ctx: Context, p: VerifyParams, unit: Unit) -> dict[str, pd.DataFrame]:
    report = HookRegistry(ctx.model).verify(ctx.x(unit.spec["start"], unit.spec["stop"]), atol=p.atol)
    return {"points": frame(report.to_frame())}


register(Instrument("verify", VerifyParams, _plan, _run, tables=("points",), needs=frozenset({"hooks"}),
                    doc="hook registry self-check: every point fires, identity patches, gradients"))
