"""What the attribution instruments share: localisation, faithfulness and the maps kept for the report.

Localisation per case × point × ROI × contrast (``probes.metrics.localization_table``: IoU and
hit rate at the 95th percentile, relevance mass, intensity–attribution correlation) plus
``relevance_mass_per_area`` = relevance mass / (ROI voxels / all voxels): 1 where the map is
uniform, > 1 where relevance concentrates in the ROI (Arras et al. 2022 report mass and area).
Faithfulness per case: ΔAUPC against random deletion orders (``delta_aupc``; the random
orders of a case range are drawn once and shared by every method, ``random_aupc``), max-sensitivity
(``max_sensitivity``) and the Gini sparsity (``sparsity``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from audit.run.context import Context
from audit.run.plugin import Params, Unit, frame
from probes.metrics import delta_aupc, localization_table, max_sensitivity, random_aupc, sparsity


class MapParams(Params):
    """Shared options: ``q`` percentile of the IoU/hit-rate masks; ``faithfulness`` on/off, on the
    first ``faith_cases`` audited cases (deletion curves cost a forward per step and order);
    ``aupc_samples``/``aupc_steps`` random orders and deletion steps of ΔAUPC; ``robust_cases``
    and ``robust_samples``: max-sensitivity on the first cases of each unit only (each sample
    is a full explanation), radius ``robust_radius``; ``show_cases``: maps kept for the cases the
    report shows (one per outcome, then the first cases), as ``maps_dtype`` (float16 by default)."""

    q: float = 95.0
    faithfulness: bool = True
    faith_cases: int = 16
    aupc_samples: int = 3
    aupc_steps: int = 10
    robust_cases: int = 2
    robust_samples: int = 3
    robust_radius: float = 0.02
    show_cases: int = 4
    maps_dtype: Literal["float16", "float32"] = "float16"


def localisation(ctx: Context, unit: Unit, maps: torch.Tensor, method: str, point: str = "") -> pd.DataFrame:
    """Localisation rows of one method (and hook point) on the unit's cases, with mass per area."""
    a, b = unit.spec["start"], unit.spec["stop"]
    masks = ctx.masks(a, b)
    res = localization_table(maps.detach(), masks, ctx.x(a, b), case_ids=ctx.case_ids(a, b), method=method,
                             contrasts=list(ctx.channels), q=unit.spec.get("q", 95.0), point=point)
    df = res.to_frame()
    mass = df[df.metric == "relevance_mass"].copy()
    if len(mass):
        area = {r: m.reshape(len(m), -1).mean(1) for r, m in masks.items()}
        pos = {cid: i for i, cid in enumerate(ctx.case_ids(a, b))}
        frac = np.array([area[r][pos[c]] if r in area else np.nan for r, c in zip(mass.roi, mass.case_id)])
        mass["value"] = np.where(frac > 0, mass["value"].to_numpy() / np.where(frac > 0, frac, 1), np.nan)
        mass["metric"] = "relevance_mass_per_area"
        mass.loc[~(frac > 0), "reason"] = "empty ROI"
        df = pd.concat([df, mass], ignore_index=True)
    return frame(df)


def faithfulness(ctx: Context, unit: Unit, p: MapParams, maps: torch.Tensor, method: str,
                 explain: Callable[..., torch.Tensor] | None, point: str = "") -> pd.DataFrame | None:
    """ΔAUPC, sparsity and (on the first ``robust_cases``) max-sensitivity per case, long format,
    for the unit's cases among the first ``faith_cases`` (None when it has none of them)."""
    a, b = unit.spec["start"], min(unit.spec["stop"], p.faith_cases)
    if b <= a:
        return None
    maps = maps[: b - a]
    x, ids, seed = ctx.x(a, b), ctx.case_ids(a, b), ctx.unit_seed("faithfulness", method, unit.key)
    target = ctx.target
    # the random orderings do not depend on the map: one draw per case range and map channels,
    # shared by every method (which also pairs the methods' ΔAUPC on the same random reference)
    orders = ctx.unit_seed("random_orders", a, b)
    key = ("random_aupc", a, b, maps.shape[1], p.aupc_samples, p.aupc_steps, orders)
    if key not in ctx.memo:
        ctx.memo[key] = random_aupc(ctx.model, x, target, map_channels=maps.shape[1], n_samples=p.aupc_samples,
                                    steps=p.aupc_steps, seed=orders, batch_size=p.rows(ctx))
    d = delta_aupc(ctx.model, x, target, maps.detach(), n_samples=p.aupc_samples, steps=p.aupc_steps,
                   seed=orders, method=method, case_ids=ids, batch_size=p.rows(ctx),
                   random_areas=ctx.memo[key]).to_frame()
    rows: list[dict[str, Any]] = []
    for cid, g in zip(ids, sparsity(maps.detach()).tolist()):
        rows.append({"case_id": cid, "method": method, "metric": "sparsity_gini", "value": float(g)})
    k = min(p.robust_cases, len(ids))
    if explain is not None and k > 0:
        sens = max_sensitivity(explain, x[:k], radius=p.robust_radius, n_samples=p.robust_samples, seed=seed,
                               target=target, model=ctx.model, batch_size=p.rows(ctx))
        rows += [{"case_id": cid, "method": method, "metric": "max_sensitivity", "value": float(v)}
                 for cid, v in zip(ids[:k], sens.tolist())]
    out = pd.concat([d.assign(method=method) if "method" not in d else d, pd.DataFrame(rows)], ignore_index=True)
    out["point"] = point
    if "reason" in out:
        out["reason"] = out["reason"].fillna("")
    return frame(out)


def shown(ctx: Context, unit: Unit, p: MapParams, maps: torch.Tensor) -> tuple[np.ndarray, np.ndarray] | None:
    """The unit's maps of the cases the report shows (:meth:`Context.show_index` of ``show_cases``)
    with their case indices; None when the unit has none of them."""
    a, b = unit.spec["start"], unit.spec["stop"]
    idx = np.array([i for i in ctx.show_index(p.show_cases) if a <= i < b], dtype=np.int64)
    if not len(idx):
        return None
    return maps[torch.as_tensor(idx - a)].detach().float().cpu().numpy().astype(p.maps_dtype), idx


def keep_shown(out: dict[str, object], name: str, ctx: Context, unit: Unit, p: MapParams, maps: torch.Tensor) -> None:
    """Put the shown maps into a unit's output as ``name`` and their case indices as ``name_cases``."""
    kept = shown(ctx, unit, p, maps)
    if kept is not None:
        out[name], out[f"{name}_cases"] = kept
