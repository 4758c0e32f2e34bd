"""Linear probes per block (``probes.internals.fit_linear_probes``) on global-average-pooled
activations (``extract_features``): can the positive class be read linearly at each block?

One unit over the whole audited split (a probe is fit on a patient-grouped train/val/test
split of all cases). Labels are binarised as ``label == ctx.target`` (positive class vs the
rest); patients come from ``ctx.groups``. A control task (labels permuted per patient within
each split) is fit beside every point, so selectivity = real − control test AUC.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from audit.run.context import Context
from audit.run.plugin import Instrument, Params, Unit, frame, register
from probes.hooks.registry import HookRegistry
from probes.internals import extract_features, fit_linear_probes

_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.ELU, nn.PReLU, nn.Mish, nn.Hardswish, nn.ReLU6)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class ProbeParams(Params):
    """Linear-probe settings (defaults fit a laptop: one pass over the audited cases, 13 Cs).

    ``split``: fractions of patients in train/val/test (seeded, stratified by label);
    ``select``: validation metric choosing C ("cross_entropy", "auc", "accuracy");
    ``control``: fit the permuted-label control task too; ``stem``: also probe the stem (the
    last activation, else the first convolution, before the first block), when one is found;
    ``points``: hook points to probe instead of the stem + every block's ``.resid``;
    ``max_iter``: iterations of each logistic regression.
    """

    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    select: Literal["cross_entropy", "auc", "accuracy"] = "cross_entropy"
    control: bool = True
    stem: bool = True
    points: list[str] | None = None
    max_iter: int = 2000


def stem_point(model: nn.Module) -> str | None:
    """The stem's output point: among the hook points before the first block, the last
    activation module, else the first convolution; None when there is none."""
    reg = HookRegistry(model)
    if not reg.blocks or reg.blocks[0] not in reg.points:
        return None
    first = reg.points.index(reg.blocks[0])
    before = reg.points[:first]
    mods = dict(model.named_modules())
    acts = [p for p in before if isinstance(mods.get(p), _ACTIVATIONS)]
    if acts:
        return acts[-1]
    convs = [p for p in before if isinstance(mods.get(p), _CONVS)]
    return convs[0] if convs else None


def probe_points(ctx: Context, p: ProbeParams) -> list[str]:
    """The points probed: ``p.points``, else the stem (when found and asked) + ``ctx.points``."""
    if p.points is not None:
        return list(p.points)
    stem = stem_point(ctx.model) if p.stem else None
    return ([stem] if stem else []) + list(ctx.points)


def loader(ctx: Context) -> list[dict]:
    """Dict batches (image, label ∈ {0, 1} = label == target, case_id, patient_id) of the audited cases."""
    out = []
    for a in range(0, ctx.n, ctx.cfg.batch_size):
        b = min(a + ctx.cfg.batch_size, ctx.n)
        out.append({"image": ctx.x(a, b), "label": torch.from_numpy((ctx.labels(a, b) == ctx.target).astype(np.int64)),
                    "case_id": ctx.case_ids(a, b), "patient_id": ctx.groups(a, b)})
    return out


def _plan(ctx: Context, p: ProbeParams) -> list[Unit]:
    return [Unit(f"cases[0:{ctx.n}]", {"start": 0, "stop": ctx.n})]


def _run(ctx: Context, p: ProbeParams, unit: Unit) -> dict[str, pd.DataFrame]:
    feats = extract_features(ctx.model, loader(ctx), probe_points(ctx, p))
    res = fit_linear_probes(feats, split=p.split, select=p.select, control=p.control,
                            seed=ctx.unit_seed("probes", unit.key), max_iter=p.max_iter)
    return {k: frame(v) for k, v in res.tables().items()}


register(Instrument(
    "probes", ProbeParams, _plan, _run, tables=("probes", "assignment", "val_curve"),
    needs=frozenset({"labels", "two_classes", "hooks", "classifier"}),
    doc="linear probes (patient-grouped split, control task) on pooled activations of the stem and every block"))
