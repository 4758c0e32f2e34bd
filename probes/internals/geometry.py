"""Latent geometry: how far ROI-pooled representations lie from the global one, per layer.

For a feature map ``a`` (``C × P`` positions) and a ROI mask ``m`` resized to the map by area
(``probes.core.resize_mask(mode="area")``: adaptive average pooling, so ``w_p`` is the fraction
of cell ``p`` inside the ROI), the pooled vectors are

* global: ``g = (1/P) Σ_p a_p`` (global average pooling);
* ROI:    ``r = Σ_p w_p a_p / Σ_p w_p`` (area-weighted mean);

and the cosine distance is ``d(u, v) = 1 − u·v / (‖u‖ ‖v‖)``. Reported per case, point and
pair: ``(global, roi)`` for every ROI and ``(roi_a, roi_b)`` for every pair of ROIs. An empty
ROI on a case (``Σ w = 0``) or a zero vector gives NaN and a warning, never a number.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from probes.core.resize import resize_mask
from probes.core.result import Result, long_frame
from probes.core.validate import as_case_ids, as_input, check_int, shape_of
from probes.hooks.registry import HookRegistry, as_registry
from probes.core.model import model_device
from probes.hooks.points import as_points

__all__ = ["RoiDistances", "roi_pool", "cosine_distance", "pooled_cosine_distances", "roi_cosine_distances"]

GLOBAL = "global"
ID_COLUMNS = ["case_id", "point", "roi_a", "roi_b"]


@dataclass(frozen=True, eq=False)
class RoiDistances(Result):
    """Cosine distances between pooled vectors, per case, point and ROI pair.

    ``table`` (wide, native): ``case_id`` (str), ``point``, ``roi_a``, ``roi_b``,
    ``cosine_distance``, ``weight_a``, ``weight_b`` (``Σ w`` of each side on the feature map, in
    cells; P for ``global``). Pairs: ``(global, r)`` for each ROI r, then ``(r_i, r_j)`` for
    i < j in the given order; points in the given order, cases in input order.
    """

    table: pd.DataFrame
    title: ClassVar[str] = "ROI geometry: cosine distance between pooled representations"

    def to_frame(self) -> pd.DataFrame:
        """Tidy long copy: case_id, point, roi_a, roi_b, ``metric`` ("cosine_distance"), ``value``."""
        return long_frame(self.table, ID_COLUMNS, ["cosine_distance"])

    def weights(self) -> pd.DataFrame:
        """Tidy long ROI sizes on each map: case_id, point, roi, ``metric`` ("roi_weight"), ``value``."""
        t = self.table
        cols = ["case_id", "point", "roi", "roi_weight"]
        sides = [t[["case_id", "point", f"roi_{s}", f"weight_{s}"]].set_axis(cols, axis=1) for s in "ab"]
        w = pd.concat(sides).sort_index(kind="stable").drop_duplicates(cols[:3])  # table order, side a first
        order = [pd.factorize(w[c])[0] for c in ("point", "case_id")]
        w = w.iloc[np.lexsort(order[::-1])]  # points, then cases, in order of appearance
        return long_frame(w, cols[:3], ["roi_weight"])

    def tables(self) -> dict[str, pd.DataFrame]:
        """``distances`` (:meth:`to_frame`) and ``weights`` (:meth:`weights`)."""
        return {"distances": self.to_frame(), "weights": self.weights()}

    def _summary_tables(self) -> pd.DataFrame:
        g = self.table.groupby(["point", "roi_a", "roi_b"], sort=False)["cosine_distance"]
        return pd.DataFrame({"n_cases": g.count(), "mean": g.mean(), "sd": g.std(), "min": g.min(),
                             "max": g.max()}).reset_index()

    def _notes(self) -> Sequence[str]:
        return (("d(u, v) = 1 − u·v / (‖u‖‖v‖) between global-average and ROI-weighted pooled vectors; "
                 "n_cases counts finite distances (an empty ROI or a zero vector gives NaN)"),)


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


def _soft_masks(masks: Mapping[str, Any], n: int, k: int) -> dict[str, Tensor]:
    """``{name: (n, *spatial) float64}``: boolean or soft masks in [0, 1], any resolution."""
    if not isinstance(masks, Mapping) or not masks:
        raise ValueError(f"masks must be a non-empty mapping roi name → (N, *spatial) mask, got "
                         f"{type(masks).__name__}")
    out = {}
    for name, m in masks.items():
        if name == GLOBAL:
            raise ValueError(f"a mask may not be named {GLOBAL!r} (reserved for the whole map)")
        t = torch.as_tensor(np.asarray(m) if not isinstance(m, Tensor) else m).detach().cpu()
        if t.dim() == k + 2 and t.shape[1] == 1:
            t = t[:, 0]
        if t.dim() != k + 1 or t.shape[0] != n:
            raise ValueError(f"masks[{name!r}] must be (N, *spatial) or (N, 1, *spatial) with N = {n} "
                             f"and {k} spatial dims, got shape {shape_of(t)}")
        t = t.to(torch.float64)
        if torch.isnan(t).any() or (t < 0).any() or (t > 1).any():
            raise ValueError(f"masks[{name!r}] must hold values in [0, 1] (boolean or soft), got "
                             f"min {float(t.min())}, max {float(t.max())}")
        out[str(name)] = t
    return out


def _distance_rows(acts: Mapping[str, Tensor], masks: dict[str, Tensor], ids: list[str]) -> tuple[pd.DataFrame, list]:
    """The wide table of :class:`RoiDistances` for one batch, and the (case, point, roi) found empty."""
    n, k = len(ids), next(iter(masks.values())).dim() - 1
    rows, empty = [], []
    for point, a in acts.items():
        if a.dim() < 3 or a.shape[0] != n or a.dim() - 2 != k:
            raise ValueError(f"activation {point!r} must be (N={n}, C, *spatial) with {k} spatial "
                             f"dims, got {tuple(a.shape)}")
        spatial = tuple(a.shape[2:])
        g = a.to(torch.float64).flatten(2).mean(-1)
        pooled = {GLOBAL: (g, torch.full((n,), float(np.prod(spatial)), dtype=torch.float64))}
        for name, m in masks.items():
            pooled[name] = roi_pool(a, resize_mask(m, spatial, mode="area"))
            empty += [(ids[i], point, name) for i in torch.nonzero(pooled[name][1] <= 0).flatten().tolist()]
        pairs = [(GLOBAL, r) for r in masks] + list(itertools.combinations(masks, 2))
        for ra, rb in pairs:
            (va, wa), (vb, wb) = pooled[ra], pooled[rb]
            d = cosine_distance(va, vb)
            rows += [{"case_id": ids[i], "point": point, "roi_a": ra, "roi_b": rb, "cosine_distance": float(d[i]),
                      "weight_a": float(wa[i]), "weight_b": float(wb[i])} for i in range(n)]
    return pd.DataFrame(rows), empty


def _warn_undefined(df: pd.DataFrame, empty: list, stacklevel: int) -> None:
    if empty:
        warnings.warn(f"{len(empty)} (case, point, ROI) combination(s) have an empty ROI on the "
                      f"feature map; their distances are NaN, e.g. {empty[:3]}", stacklevel=stacklevel + 1)
    zero = int(df["cosine_distance"].isna().sum())
    if zero and not empty:
        warnings.warn(f"{zero} distance(s) are NaN because a pooled vector is zero "
                      "(e.g. an all-zero ReLU map)", stacklevel=stacklevel + 1)


def pooled_cosine_distances(acts: Mapping[str, Tensor], masks: Mapping[str, Any],
                            case_ids: Sequence[str] | None = None) -> RoiDistances:
    """Cosine distances between global and ROI-pooled vectors of given activations.

    Args:
        acts: point → ``(N, C, *spatial)`` feature maps (1-3 spatial dims).
        masks: ROI name → ``(N, *spatial)`` or ``(N, 1, *spatial)`` boolean/soft masks at any
            resolution (usually the input's); resized by area to each map.
        case_ids: one id per case (default ``"0"``, ``"1"``...).

    Returns:
        :class:`RoiDistances` (formulas in the module docstring).
    """
    if not acts:
        raise ValueError("acts is empty")
    first = next(iter(acts.values()))
    ids = as_case_ids(case_ids, first.shape[0])
    df, empty = _distance_rows(acts, _soft_masks(masks, len(ids), first.dim() - 2), ids)
    _warn_undefined(df, empty, stacklevel=2)
    return RoiDistances(df)


def roi_cosine_distances(model: nn.Module | HookRegistry, x: Tensor, masks: Mapping[str, Any],
                         points: str | Sequence[str], *, case_ids: Sequence[str] | None = None,
                         batch_size: int | None = None) -> RoiDistances:
    """Run the model on ``x`` and return :func:`pooled_cosine_distances` at ``points``.

    Args:
        model: an ``nn.Module`` or a ``HookRegistry`` on it (run under ``no_grad`` in its
            current mode, with its declared input layout).
        x: ``(N, C, *spatial)`` input, channels first.
        masks: ROI name → ``(N, *spatial)`` masks (e.g. brain, gtv, skull), boolean or soft.
        points: hook points, e.g. ``[f"{b}.resid" for b in reg.blocks]``.
        case_ids: one id per case (default ``"0"``, ``"1"``...).
        batch_size: run in chunks of this many cases (default: all at once).
    """
    reg = as_registry(model)
    points = as_points(reg, points)
    x = as_input(x)
    n = x.shape[0]
    mk = _soft_masks(masks, n, x.dim() - 2)
    ids = as_case_ids(case_ids, n)
    step = n if batch_size is None else check_int(batch_size, "batch_size")
    device = model_device(reg.model)
    frames, empty = [], []
    for s in range(0, n, step):
        _, cache = reg.run_with_cache(x[s:s + step].to(device), points=points)
        df, e = _distance_rows({p: cache[p].cpu() for p in points}, {r: m[s:s + step] for r, m in mk.items()},
                               ids[s:s + step])
        frames.append(df)
        empty += e
    df = pd.concat(frames, ignore_index=True)
    _warn_undefined(df, empty, stacklevel=2)
    order = {p: i for i, p in enumerate(points)}
    df = df.sort_values(["point", "case_id"], key=lambda c: c.map(order) if c.name == "point" else
                        c.map({v: i for i, v in enumerate(ids)}), kind="stable").reset_index(drop=True)
    return RoiDistances(df)
