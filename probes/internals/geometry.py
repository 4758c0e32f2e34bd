"""Latent geometry: how far ROI-pooled representations lie from the global one, per layer.

For a feature map ``a`` (``C × P`` positions) and a ROI mask ``m`` resized to the map by area
interpolation (adaptive average pooling, so ``w_p`` is the fraction of cell ``p`` inside the
ROI), the pooled vectors are

* global: ``g = (1/P) Σ_p a_p`` (global average pooling);
* ROI:    ``r = Σ_p w_p a_p / Σ_p w_p`` (area-weighted mean);

and the cosine distance is ``d(u, v) = 1 − u·v / (‖u‖ ‖v‖)``. Reported per case, point and
pair: ``(global, roi)`` for every ROI and ``(roi_a, roi_b)`` for every pair of ROIs. An empty
ROI on a case (``Σ w = 0``) or a zero vector gives NaN and a warning, never a number.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["resize_mask", "roi_pool", "cosine_distance", "pooled_cosine_distances",
           "roi_cosine_distances"]

GLOBAL = "global"


def resize_mask(mask: Tensor, spatial: Sequence[int]) -> Tensor:
    """Area interpolation of ``(N, *S)`` masks to ``(N, *spatial)`` weights in [0, 1].

    Uses adaptive average pooling (``F.adaptive_avg_pool{1,2,3}d``): each output cell is the
    mean of the input cells it covers, i.e. the fraction of the cell inside the ROI.
    """
    k = len(spatial)
    if mask.dim() != k + 1:
        raise ValueError(f"mask must be (N, *spatial) with {k} spatial dims, got {tuple(mask.shape)}")
    pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}.get(k)
    if pool is None:
        raise ValueError(f"only 1-3 spatial dims are supported, got {k}")
    m = mask[:, None].to(torch.float64)
    if tuple(m.shape[2:]) == tuple(spatial):
        return m[:, 0]
    return pool(m, tuple(int(s) for s in spatial))[:, 0]


def roi_pool(act: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted means ``Σ_p w_p a_p / Σ_p w_p`` → ``(N, C)`` and the weight sums ``(N,)``.

    ``act`` is ``(N, C, *spatial)``, ``weights`` ``(N, *spatial)`` (already at the map's size).
    Rows with ``Σ w = 0`` are NaN.
    """
    a = act.to(torch.float64).flatten(2)
    w = weights.to(torch.float64).flatten(1)
    tot = w.sum(1)
    num = torch.einsum("ncp,np->nc", a, w)
    with torch.no_grad():
        out = num / tot[:, None]
    out[tot <= 0] = float("nan")
    return out, tot


def cosine_distance(u: Tensor, v: Tensor) -> Tensor:
    """Row-wise ``1 − u·v / (‖u‖‖v‖)`` for ``(N, C)`` inputs; NaN when a norm is zero or NaN."""
    u, v = u.to(torch.float64), v.to(torch.float64)
    nu, nv = u.norm(dim=1), v.norm(dim=1)
    d = (1.0 - (u * v).sum(1) / (nu * nv)).clamp(0.0, 2.0)  # rounding can leave ±1e-16
    d[(nu == 0) | (nv == 0)] = float("nan")
    return d


def _as_masks(masks: Mapping[str, Any], n: int, k: int) -> dict[str, Tensor]:
    if not isinstance(masks, Mapping) or not masks:
        raise ValueError("masks must be a non-empty mapping name → (N, *spatial) mask")
    out = {}
    for name, m in masks.items():
        if name == GLOBAL:
            raise ValueError(f"a mask may not be named {GLOBAL!r} (reserved for the whole map)")
        t = torch.as_tensor(np.asarray(m) if not isinstance(m, Tensor) else m).detach().cpu()
        if t.dim() == k + 2 and t.shape[1] == 1:
            t = t[:, 0]
        if t.dim() != k + 1 or t.shape[0] != n:
            raise ValueError(f"mask {name!r} must be (N, *spatial) or (N, 1, *spatial) with N = {n} "
                             f"and {k} spatial dims, got shape {tuple(t.shape)}")
        t = t.to(torch.float64)
        if torch.isnan(t).any() or (t < 0).any() or (t > 1).any():
            raise ValueError(f"mask {name!r} must hold values in [0, 1] (boolean or soft), got "
                             f"min {float(t.min())}, max {float(t.max())}")
        out[str(name)] = t
    return out


def pooled_cosine_distances(acts: Mapping[str, Tensor], masks: Mapping[str, Any],
                            case_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Cosine distances between global and ROI-pooled vectors of given activations.

    Args:
        acts: point → ``(N, C, *spatial)`` feature maps (2-D or 3-D spatial).
        masks: ROI name → ``(N, *spatial)`` or ``(N, 1, *spatial)`` boolean/soft masks at any
            resolution (usually the input's); resized by area to each map.
        case_ids: one id per sample (default ``"0"``, ``"1"``...).

    Returns:
        Long frame: case_id, point, roi_a, roi_b, metric (``"cosine_distance"``), value,
        weight_a, weight_b (Σ w of each side on the map, in cells; P for ``global``).
        Pairs: (global, r) for each ROI r, then (r_i, r_j) for i < j in the given order.
    """
    if not acts:
        raise ValueError("acts is empty")
    first = next(iter(acts.values()))
    n = first.shape[0]
    ids = [str(i) for i in range(n)] if case_ids is None else [str(c) for c in case_ids]
    if len(ids) != n:
        raise ValueError(f"case_ids has {len(ids)} entries but the batch has {n}")
    k = first.dim() - 2
    mk = _as_masks(masks, n, k)
    rows, empty = [], []
    for point, a in acts.items():
        if a.dim() < 3 or a.shape[0] != n or a.dim() - 2 != k:
            raise ValueError(f"activation {point!r} must be (N={n}, C, *spatial) with {k} spatial "
                             f"dims, got {tuple(a.shape)}")
        spatial = tuple(a.shape[2:])
        P = float(np.prod(spatial))
        g = a.to(torch.float64).flatten(2).mean(-1)
        pooled = {GLOBAL: (g, torch.full((n,), P, dtype=torch.float64))}
        for name, m in mk.items():
            pooled[name] = roi_pool(a, resize_mask(m, spatial))
            for i in torch.nonzero(pooled[name][1] <= 0).flatten().tolist():
                empty.append((ids[i], point, name))
        names = list(mk)
        pairs = [(GLOBAL, r) for r in names] + list(itertools.combinations(names, 2))
        for ra, rb in pairs:
            (va, wa), (vb, wb) = pooled[ra], pooled[rb]
            d = cosine_distance(va, vb)
            for i in range(n):
                rows.append({"case_id": ids[i], "point": point, "roi_a": ra, "roi_b": rb,
                             "metric": "cosine_distance", "value": float(d[i]),
                             "weight_a": float(wa[i]), "weight_b": float(wb[i])})
    df = pd.DataFrame(rows)
    if empty:
        warnings.warn(f"{len(empty)} (case, point, ROI) combination(s) have an empty ROI on the "
                      f"feature map; their distances are NaN, e.g. {empty[:3]}", stacklevel=2)
    zero = int(df["value"].isna().sum())
    if zero and not empty:
        warnings.warn(f"{int(zero)} distance(s) are NaN because a pooled vector is zero "
                      "(e.g. an all-zero ReLU map)", stacklevel=2)
    return df


def roi_cosine_distances(reg, x: Tensor, masks: Mapping[str, Any], points: str | Sequence[str], *,
                         case_ids: Sequence[str] | None = None,
                         batch_size: int | None = None) -> pd.DataFrame:
    """Run the model on ``x`` and return :func:`pooled_cosine_distances` at ``points``.

    Args:
        reg: a ``probes.HookRegistry`` (model run under ``no_grad`` in its current mode).
        x: ``(N, C, *spatial)`` input. masks: ROI name → ``(N, *spatial)`` masks (e.g. brain,
            gtv, skull). points: hook points, e.g. ``[f"{b}.resid" for b in reg.blocks]``.
        batch_size: run in chunks of this many cases (default: all at once).
    """
    points = [points] if isinstance(points, str) else list(points)
    if not points:
        raise ValueError("points is empty: name at least one hook point")
    if not isinstance(x, Tensor) or x.dim() < 3:
        raise ValueError(f"x must be a tensor (N, C, *spatial), got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    n, k = x.shape[0], x.dim() - 2
    mk = _as_masks(masks, n, k)
    ids = [str(i) for i in range(n)] if case_ids is None else [str(c) for c in case_ids]
    if len(ids) != n:
        raise ValueError(f"case_ids has {len(ids)} entries but x has {n} cases")
    step = n if batch_size is None else int(batch_size)
    if step < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    device = next((p.device for p in reg.model.parameters()), torch.device("cpu"))
    frames = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for s in range(0, n, step):
            _, cache = reg.run_with_cache(x[s:s + step].to(device), points=points)
            frames.append(pooled_cosine_distances({p: cache[p].cpu() for p in points},
                                                  {r: m[s:s + step] for r, m in mk.items()},
                                                  ids[s:s + step]))
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=2)
    df = pd.concat(frames, ignore_index=True)
    order = {p: i for i, p in enumerate(points)}
    return df.sort_values(["point", "case_id"], key=lambda c: c.map(order) if c.name == "point" else
                          c.map({v: i for i, v in enumerate(ids)}), kind="stable").reset_index(drop=True)
