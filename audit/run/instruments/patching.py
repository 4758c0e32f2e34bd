"""Activation patching between confidently classified pairs (``probes.internals``), both directions.

Pairs come from :func:`probes.internals.select_pairs` on the model's own probabilities: the
k-th most confident correct case of the positive class (``x``, class ``ctx.target``) with the
k-th most confident correct case of the base class (``x_base``). At every block's ``.resid``
point the donor's activation is grafted into the recipient in both directions
(``"x->x_base"``, ``"x_base->x"``); ``delta`` = Δp(target) of the recipient. When the cohort
has ROI masks, ROI-masked patching with its controls runs too (``roi`` = the ROI name,
``control`` ∈ none/complement/random), each pair using the donor's ROI by default; unmasked
patching is the rows with ``roi == "full"`` (probes' own name for it).

One unit over the audited split: pairs are chosen among all cases and the effects are
bootstrapped over pairs.

Tables: ``patching`` (per pair, long, with ``case_id`` (x) and ``base_case_id`` (x_base)),
``effects`` (mean Δp per point, direction, ROI and control with a bootstrap CI over pairs) and
``pairs`` (case ids of each pair with p_x, p_x_base). No qualifying pair: empty tables.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch

from audit.run.context import Context
from audit.run.plugin import Instrument, Params, Unit, frame, register
from probes.core.model import as_audit_model, class_probabilities
from probes.core.result import long_frame
from probes.internals import activation_patching, select_pairs
from probes.internals.patching import EFFECT_KEYS, EFFECT_VALUES, ID_COLUMNS

PATCH_COLUMNS = ["case_id", "base_case_id", *ID_COLUMNS, "reason", "metric", "value"]


class PatchingParams(Params):
    """Patching settings (defaults: at most 16 pairs, 5 random-ROI draws, 2000 bootstrap resamples).

    ``n_pairs``: at most this many pairs (None: every qualifying pair); ``min_confidence``:
    probability of its true class a case needs to enter a pair; ``base_class``: the class of
    ``x_base`` (None: the other class of a binary model, else class 0, or 1 when the target
    is 0); ``masked``: also run ROI-masked patching with controls when the cohort has ROIs;
    ``rois``: which ROIs (None: every ROI of the run); ``n_samples``: random-ROI draws;
    ``roi_threshold``: fraction of a feature-map cell the ROI must exceed to count as inside;
    ``roi_from``: which case's ROI restricts a graft (donor, recipient, union); ``n_boot``:
    bootstrap resamples of the effects.
    """

    n_pairs: int | None = 16
    min_confidence: float = 0.9
    base_class: int | None = None
    masked: bool = True
    rois: list[str] | None = None
    n_samples: int = 5
    roi_threshold: float = 0.0
    roi_from: Literal["donor", "recipient", "union"] = "donor"
    n_boot: int = 2000


def probabilities(ctx: Context) -> np.ndarray:
    """(N, K) float64 class probabilities of the audited cases, in batches of ``cfg.batch_size``."""
    net = as_audit_model(ctx.model)
    parts = []
    with torch.no_grad():
        for a in range(0, ctx.n, ctx.cfg.batch_size):
            parts.append(class_probabilities(net, ctx.x(a, a + ctx.cfg.batch_size), torch.float64).cpu().numpy())
    return np.concatenate(parts)


def base_class(ctx: Context, p: PatchingParams, k: int) -> int:
    """The class of ``x_base`` (see :class:`PatchingParams`)."""
    if p.base_class is not None:
        return p.base_class
    if k == 2:
        return 1 - ctx.target
    return 0 if ctx.target != 0 else 1


def pair_masks(ctx: Context, p: PatchingParams, xs: np.ndarray, bs: np.ndarray) -> dict | None:
    """``{roi: (ROI of x, ROI of x_base)}`` for the pairs, or None (unmasked only)."""
    rois = tuple(p.rois) if p.rois is not None else ctx.rois
    bad = [r for r in rois if r not in ctx.rois]
    if bad:
        raise ValueError(f"instruments.patching.rois: {bad[0]!r} is not a ROI of the run "
                         f"({', '.join(ctx.rois) or 'none'})")
    if not p.masked or not rois:
        return None
    m = ctx.masks(rois=rois)
    return {r: (m[r][xs], m[r][bs]) for r in rois}


def _plan(ctx: Context, p: PatchingParams) -> list[Unit]:
    return [Unit(f"cases[0:{ctx.n}]", {"start": 0, "stop": ctx.n})]


def _empty() -> dict[str, pd.DataFrame]:
    """The tables of a run without a qualifying pair: no rows, the columns (``value`` float)."""
    def empty(cols: list[str]) -> pd.DataFrame:
        return pd.DataFrame({c: pd.Series(dtype=float if c == "value" else object) for c in cols})
    return {"patching": empty(PATCH_COLUMNS), "effects": empty([*EFFECT_KEYS, "metric", "value"]),
            "pairs": empty(["case_id", "base_case_id", "pair", "metric", "value"])}


def _run(ctx: Context, p: PatchingParams, unit: Unit) -> dict[str, pd.DataFrame]:
    seed = ctx.unit_seed("patching", unit.key)
    probs = probabilities(ctx)
    pairs = select_pairs(probs, ctx.labels(), x_label=ctx.target, x_base_label=base_class(ctx, p, probs.shape[1]),
                         min_confidence=p.min_confidence, n_pairs=p.n_pairs)
    if pairs.empty:
        return _empty()
    xs, bs = pairs["x"].to_numpy(), pairs["x_base"].to_numpy()
    x = ctx.x()
    masks = pair_masks(ctx, p, xs, bs)
    res = activation_patching(ctx.model, x[xs], ctx.target, x[bs], list(ctx.points), masks=masks,
                              roi_from=p.roi_from, controls=("full", "complement", "random") if masks else ("full",),
                              n_samples=p.n_samples, roi_threshold=p.roi_threshold, batch_size=p.rows(ctx), seed=seed)
    ids = np.asarray(ctx.case_ids(), dtype=object)
    pid = {"case_id": dict(zip(pairs["pair"], ids[xs])), "base_case_id": dict(zip(pairs["pair"], ids[bs]))}
    patch = res.to_frame()
    patch.insert(0, "base_case_id", patch["pair"].map(pid["base_case_id"]))
    patch.insert(0, "case_id", patch["pair"].map(pid["case_id"]))
    effects = long_frame(res.effects(n_boot=p.n_boot, seed=seed), EFFECT_KEYS, EFFECT_VALUES)
    pr = pairs.assign(case_id=ids[xs], base_case_id=ids[bs])
    return {"patching": frame(patch), "effects": frame(effects),
            "pairs": frame(long_frame(pr, ["case_id", "base_case_id", "pair"], ["p_x", "p_x_base"]))}


register(Instrument(
    "patching", PatchingParams, _plan, _run, tables=("patching", "effects", "pairs"),
    needs=frozenset({"labels", "two_classes", "hooks", "classifier"}),
    doc="activation patching between confident pairs at every block, both directions, ROI-masked with controls"))
