"""Clinical-XAI truthfulness (Jin et al. 2023: G3, G4, G5) of attribution maps
(``probes.metrics.evaluate_methods``), one unit per attribution method.

Each method's maps (``probes.attribution.attribute``) explain the model's predicted class. G3
correlates the maps' contrast importance with the contrast Shapley values — read from the
``shapley`` instrument's ``values`` table (``after=("shapley",)``: value function
``shapley_metric``, fill ``shapley_absent``, cohort φ) — and tests deletion (ΔAUPC) against
random deletion; G4 tests whether MSFI against the ROI ``roi`` is higher for correct than for
wrong predictions; G5 times the maps. G5 (``seconds_per_map`` and whether it passes) is a
wall-clock time, the one number that differs when a unit is recomputed: it is in the ``timing``
table, apart from the others.

Tables: ``metrics`` (method, criterion, reason, stat, metric, value), ``criteria`` (method,
criterion, reason, metric ``passes``, value 1/0/NaN), ``per_case`` (case_id, method, metric
tau_b / aupc / aupc_random_mean / aupc_random_std / delta_aupc / msfi, value, reason) and
``plausibility`` (every G4 test).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator

from audit.run.context import Context
from audit.run.plugin import Instrument, Params, Unit, frame, register
from probes.attribution import attribute, row_options
from probes.metrics.truthfulness import Thresholds, evaluate_methods


class TruthfulnessParams(Params):
    """Truthfulness settings (defaults, sized for a laptop: 3 methods on the first 16 audited cases,
    3 random deletion orders of 10 steps).

    ``n_cases``: the first this many audited cases (None: every audited case, at most
    ``cohort.max_cases``; G4 needs at least 2 correct and 2 wrong predictions among them);
    ``methods``: attribution methods (``probes.attribution.METHODS`` names); ``roi``: the MSFI
    feature mask (None: ``gtv`` when the run has it, else its first ROI); ``shapley_metric`` and
    ``shapley_absent``: which Shapley values of the ``shapley`` instrument G3 uses (that unit
    must be enabled there); ``n_samples``, ``steps``: random deletion orders and deletion steps
    of ΔAUPC; thresholds: ``tau_min``, ``delta_aupc_min``, ``alpha``, ``max_seconds_per_map``
    (``probes.metrics.Thresholds``).
    """

    n_cases: int | None = Field(16, ge=2)
    methods: tuple[str, ...] = ("gradcam", "input_x_gradient", "lrp")
    roi: str | None = None
    shapley_metric: Literal["auc", "accuracy"] = "auc"
    shapley_absent: Literal["zero", "mean", "marginal"] = "zero"
    n_samples: int = 3
    steps: int = 10
    tau_min: float = 0.0
    delta_aupc_min: float = 0.0
    alpha: float = 0.05
    max_seconds_per_map: float = 10.0

    @field_validator("methods")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from probes.attribution import METHODS

        bad = [m for m in v if m not in METHODS]
        if bad:
            raise ValueError(f"unknown attribution method {bad[0]!r}; known: {', '.join(METHODS)}")
        if len(set(v)) != len(v):
            raise ValueError(f"a method is listed twice: {list(v)}")
        return v


def feature_roi(ctx: Context, p: TruthfulnessParams) -> str:
    """The MSFI ROI (``p.roi``, else gtv, else the run's first ROI)."""
    if p.roi is not None:
        if p.roi not in ctx.rois:
            raise ValueError(f"instruments.truthfulness.roi: {p.roi!r} is not a ROI of the run ({', '.join(ctx.rois)})")
        return p.roi
    return "gtv" if "gtv" in ctx.rois else ctx.rois[0]


def shapley_vector(values: pd.DataFrame, channels: tuple[str, ...], metric: str, absent: str) -> np.ndarray:
    """Cohort φ (C,) in channel order from the ``shapley`` instrument's ``values`` table.

    Raises:
        ValueError: those values were not computed, or are undefined (NaN).
    """
    sel = values[(values["value_function"] == metric) & (values["absent"] == absent) & (values["metric"] == "phi")
                 & (values["case_id"] == "cohort")]
    if sel.empty:
        have = sorted(set(zip(values["value_function"], values["absent"])))
        raise ValueError(f"instruments.truthfulness: the shapley instrument has no cohort φ of value function "
                         f"{metric!r} with absent={absent!r} (it has {have}); set shapley_metric/shapley_absent "
                         "or enable them in instruments.shapley")
    phi = sel.set_index("contrast")["value"].reindex(list(channels)).to_numpy(np.float64)
    if not np.isfinite(phi).all():
        why = "; ".join(sorted({r for r in sel["reason"] if r})) or "undefined"
        raise ValueError(f"instruments.truthfulness: the Shapley values ({metric}, {absent}) are undefined: {why}")
    return phi


def explain_fn(ctx: Context, method: str, seed: int, rows: int):
    """``explain_fn(x, target) -> maps`` of one attribution method (seeded), ``rows`` cases per
    call and its perturbations chunked to ``rows`` model inputs (``row_options``)."""
    # LRP's conservation is the lrp instrument's finding (its conservation table), not a failure here
    base = {"check": False} if method == "lrp" else {}

    def fn(x, target):
        t = torch.as_tensor(target).reshape(-1).expand(x.shape[0]) if target is not None else None
        parts = []
        for a in range(0, x.shape[0], rows):
            xa = x[a:a + rows]
            opts = {**row_options(method, rows, xa.shape[0]), **base}
            parts.append(attribute(ctx.model, xa, None if t is None else t[a:a + rows], method, seed=seed,
                                   **opts).maps)
        return torch.cat(parts)
    return fn


def _plan(ctx: Context, p: TruthfulnessParams) -> list[Unit]:
    from audit.run.plugin import NEEDS

    n = ctx.n if p.n_cases is None else min(p.n_cases, ctx.n)
    units = []
    for m in p.methods:
        spec = {"method": m, "start": 0, "stop": n}
        reason = NEEDS["lrp_rules"](ctx) if m == "lrp" else None
        units.append(Unit(m, {**spec, "skip": reason} if reason else spec))
    return units


def _run(ctx: Context, p: TruthfulnessParams, unit: Unit) -> dict[str, pd.DataFrame]:
    method = unit.spec["method"]
    seed = ctx.unit_seed("truthfulness", unit.key)
    phi = shapley_vector(ctx.results("shapley")["values"], ctx.channels, p.shapley_metric, p.shapley_absent)
    th = Thresholds(tau_min=p.tau_min, delta_aupc_min=p.delta_aupc_min, alpha=p.alpha,
                    max_seconds_per_map=p.max_seconds_per_map)
    n = ctx.n if p.n_cases is None else min(p.n_cases, ctx.n)
    rep = evaluate_methods(ctx.model, ctx.x(0, n), None, labels=ctx.labels(0, n),
                           methods={method: explain_fn(ctx, method, seed, p.rows(ctx))}, mask=ctx.masks(0, n)[feature_roi(ctx, p)],
                           shapley=phi, thresholds=th, case_ids=ctx.case_ids(0, n), n_samples=p.n_samples,
                           steps=p.steps, batch_size=p.rows(ctx), seed=seed)
    tabs = rep.tables()
    # the model's own predictions (method "") are the predictions instrument's business
    tabs["per_case"] = tabs["per_case"][tabs["per_case"]["method"] == method].reset_index(drop=True)
    # G5 is a wall-clock time: it goes to its own table, so that every other table is identical
    # when a unit is recomputed (the run's determinism covers every table but ``timing``)
    timed = {k: v["criterion"] == "G5" for k, v in tabs.items() if "criterion" in v}
    tabs["timing"] = pd.concat([tabs[k][m].assign(table=k) for k, m in timed.items()], ignore_index=True)
    for k, m in timed.items():
        tabs[k] = tabs[k][~m].reset_index(drop=True)
    return {k: frame(v) for k, v in tabs.items()}


register(Instrument(
    "truthfulness", TruthfulnessParams, _plan, _run, tables=("metrics", "criteria", "per_case", "plausibility", "timing"),
    needs=frozenset({"labels", "masks", "classifier"}), after=("shapley",),
    doc="Jin et al. G3/G4/G5 of attribution methods (τ-b with contrast Shapley, ΔAUPC, MSFI tests, time per map)"))
