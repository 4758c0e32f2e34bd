"""Latent geometry: how far ROI-pooled representations lie from the global one, per layer.

For a feature map ``a`` (``C × P`` positions) and a ROI mask ``m`` resized to the map by area
(``probes.core.resize_mask(mode="area")``: adaptive average pooling, so ``w_p`` is the fraction
of cell ``p`` inside the ROI), the pooled vectors are

* global: ``g = (1/P) Σ_p a_p`` (global average pooling);
* ROI:    ``r = Σ_p w_p a_p / Σ_p w_p`` (area-weighted mean);

and the cosine distance is ``d(u, v) = 1 − u·v / (‖u‖ ‖v‖)``. Reported per case, point and
pair: ``(global, roi)`` for every ROI and ``(roi_a, roi_b)`` for every pair of ROIs. An empty
ROI on a case (``Σ w = 0``) or a zero vector gives NaN with its reason (the ``reason`` column)
and one ``UndefinedValueWarning`` per call, never a number.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from probes.core.errors import InputTypeError, LabelError, NonFiniteError, OptionError, ShapeError, warn_undefined
from probes.core.model import model_device, model_state
from probes.core.resize import resize_mask
from probes.core.result import Result, long_frame
from probes.core.validate import as_case_ids, as_input, check_finite, check_int, shape_of
from probes.hooks.points import as_points
from probes.hooks.registry import HookRegistry
from probes.internals._common import registry_of

__all__ = ["RoiDistances", "roi_pool", "cosine_distance", "pooled_cosine_distances", "roi_cosine_distances"]

GLOBAL = "global"
ID_COLUMNS = ["case_id", "point", "roi_a", "roi_b"]
EMPTY_ROI = "empty ROI on the feature map"
ZERO_VECTOR = "pooled vector is zero (e.g. an all-zero ReLU map)"
NON_FINITE = "the activation is not finite"


@dataclass(frozen=True, eq=False)
class RoiDistances(Result):
    """Cosine distances between pooled vectors, per case, point and ROI pair.

    ``table`` (wide, native): ``case_id`` (str), ``point``, ``roi_a``, ``roi_b``,
    ``cosine_distance``, ``weight_a``, ``weight_b`` (``Σ w`` of each side on the feature map, in
    cells; P for ``global``), ``reason`` (why the distance is NaN; ``""`` where defined).
    Pairs: ``(global, r)`` for each ROI r, then ``(r_i, r_j)`` for i < j in the given order;
    points in the given order, cases in input order.
    """

    table: pd.DataFrame
    title: ClassVar[str] = "ROI geometry: cosine distance between pooled representations"

    def to_frame(self) -> pd.DataFrame:
        """Tidy long copy: case_id, point, roi_a, roi_b, reason, ``metric`` ("cosine_distance"),
        ``value``."""
        t = self.table if "reason" in self.table else self.table.assign(reason="")
        return long_frame(t, ID_COLUMNS + ["reason"], ["cosine_distance"])

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


def _pool(act: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    a = act.to(torch.float64).flatten(2)
    w = weights.to(torch.float64).flatten(1)
    tot = w.sum(1)
    num = torch.einsum("ncp,np->nc", a, w)
    with torch.no_grad():
        out = num / tot[:, None]
    out[tot <= 0] = float("nan")
    return out, tot


def _check_act(act: Any, name: str) -> Tensor:
    if not isinstance(act, Tensor):
        raise InputTypeError(name, type(act).__name__, "a torch.Tensor (N, C, *spatial)",
                             message=f"{name} must be a torch.Tensor (N, C, *spatial), got {type(act).__name__}")
    if act.dim() < 3 or act.shape[0] == 0:
        raise ShapeError(name, f"shape {tuple(act.shape)}", "(N, C, *spatial) with N >= 1",
                         message=f"{name} must be (N, C, *spatial) with N >= 1, got shape {tuple(act.shape)}")
    check_finite(act, name)
    return act


def roi_pool(act: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted means ``Σ_p w_p a_p / Σ_p w_p`` → ``(N, C)`` and the weight sums ``(N,)``.

    ``act`` is ``(N, C, *spatial)``, ``weights`` ``(N, *spatial)`` (already at the map's size,
    finite and ≥ 0). Rows with ``Σ w = 0`` (an empty ROI) are NaN, with one
    ``UndefinedValueWarning``.
    """
    act = _check_act(act, "act")
    w = weights if isinstance(weights, Tensor) else torch.as_tensor(np.asarray(weights))
    if w.dtype == torch.bool:
        w = w.double()
    if tuple(w.shape) != (act.shape[0], *act.shape[2:]):
        raise ShapeError("weights", f"shape {tuple(w.shape)}", f"(N, *spatial) = {(act.shape[0], *act.shape[2:])}",
                         message=f"weights shape {tuple(w.shape)} does not match act shape {tuple(act.shape)}: "
                                 f"expected (N, *spatial) = {(act.shape[0], *act.shape[2:])}")
    check_finite(w, "weights")
    if bool((w < 0).any()):
        raise OptionError("weights", f"min {float(w.min())}", "weights >= 0")
    out, tot = _pool(act, w)
    warn_undefined("roi_pool", [EMPTY_ROI] * int((tot <= 0).sum()))
    return out, tot


def _cosine(u: Tensor, v: Tensor) -> Tensor:
    u, v = u.to(torch.float64), v.to(torch.float64)
    nu, nv = u.norm(dim=1), v.norm(dim=1)
    d = (1.0 - (u * v).sum(1) / (nu * nv)).clamp(0.0, 2.0)  # rounding can leave ±1e-16
    d[(nu == 0) | (nv == 0)] = float("nan")
    return d


def cosine_distance(u: Tensor, v: Tensor) -> Tensor:
    """Row-wise ``1 − u·v / (‖u‖‖v‖)`` for ``(N, C)`` inputs of one shape (finite values).

    A row where a vector is zero has no direction: NaN, with one ``UndefinedValueWarning``.
    """
    for name, t in (("u", u), ("v", v)):
        if not isinstance(t, Tensor):
            raise InputTypeError(name, type(t).__name__, "a torch.Tensor (N, C)",
                                 message=f"{name} must be a torch.Tensor (N, C), got {type(t).__name__}")
        if t.dim() != 2 or t.shape[0] == 0:
            raise ShapeError(name, f"shape {tuple(t.shape)}", "(N, C) with N >= 1")
        check_finite(t, name)
    if u.shape != v.shape:
        raise ShapeError("v", f"shape {tuple(v.shape)}", f"the shape of u {tuple(u.shape)}",
                         message=f"u {tuple(u.shape)} and v {tuple(v.shape)} must have the same shape (N, C)")
    d = _cosine(u, v)
    warn_undefined("cosine_distance", [ZERO_VECTOR] * int(torch.isnan(d).sum()))
    return d


def _soft_masks(masks: Mapping[str, Any], n: int, k: int, spatial: tuple[int, ...] | None = None) -> dict[str, Tensor]:
    """``{name: (n, *spatial) float64}``: boolean or soft masks in [0, 1]; at ``spatial`` when
    given (the input's size), else at any resolution."""
    if not isinstance(masks, Mapping) or not masks:
        raise InputTypeError("masks", type(masks).__name__, "a non-empty mapping roi name → (N, *spatial) mask",
                             message=f"masks must be a non-empty mapping roi name → (N, *spatial) mask, got "
                                     f"{type(masks).__name__}")
    out = {}
    for name, m in masks.items():
        key = f"masks[{name!r}]"
        if name == GLOBAL:
            raise OptionError("masks", repr(name), f"ROI names other than {GLOBAL!r}",
                              message=f"a mask may not be named {GLOBAL!r} (reserved for the whole map)")
        try:
            t = torch.as_tensor(np.asarray(m) if not isinstance(m, Tensor) else m).detach().cpu()
        except (TypeError, ValueError):
            raise InputTypeError(key, type(m).__name__, "an (N, *spatial) array or tensor") from None
        if t.dim() == k + 2 and t.shape[1] == 1:
            t = t[:, 0]
        if t.dim() != k + 1 or t.shape[0] != n or (spatial is not None and tuple(t.shape[1:]) != spatial):
            want = f"(N, *spatial) = {(n, *spatial)}" if spatial is not None else f"N = {n} and {k} spatial dims"
            raise ShapeError(key, f"shape {shape_of(t)}", want,
                             message=f"{key} must be (N, *spatial) or (N, 1, *spatial) with {want}"
                                     f"{' (the spatial shape of x)' if spatial is not None else ''}, got shape "
                                     f"{shape_of(t)}")
        if t.is_complex():
            raise InputTypeError(key, f"dtype {t.dtype}", "boolean or real values in [0, 1]")
        t = t.to(torch.float64)
        if torch.isnan(t).any():
            raise NonFiniteError(key, "NaN values", "values in [0, 1]", message=f"{key} contains NaN")
        if (t < 0).any() or (t > 1).any():
            raise LabelError(key, f"min {float(t.min())}, max {float(t.max())}", "values in [0, 1]",
                             message=f"{key} must hold values in [0, 1] (boolean or soft), got "
                                     f"min {float(t.min())}, max {float(t.max())}")
        out[str(name)] = t
    return out


def _distance_rows(acts: Mapping[str, Tensor], masks: dict[str, Tensor], ids: list[str]) -> pd.DataFrame:
    """The wide table of :class:`RoiDistances` for one batch (NaN distances with their reason)."""
    n, k = len(ids), next(iter(masks.values())).dim() - 1
    rows = []
    for point, a in acts.items():
        if a.dim() < 3 or a.shape[0] != n or a.dim() - 2 != k:
            raise ShapeError(f"acts[{point!r}]", f"shape {tuple(a.shape)}",
                             f"(N={n}, C, *spatial) with {k} spatial dims",
                             message=f"activation {point!r} must be (N={n}, C, *spatial) with {k} spatial "
                                     f"dims, got {tuple(a.shape)} (acts[{point!r}])")
        spatial = tuple(a.shape[2:])
        g = a.to(torch.float64).flatten(2).mean(-1)
        pooled = {GLOBAL: (g, torch.full((n,), float(np.prod(spatial)), dtype=torch.float64))}
        for name, m in masks.items():
            pooled[name] = _pool(a, resize_mask(m, spatial, mode="area"))
        pairs = [(GLOBAL, r) for r in masks] + list(itertools.combinations(masks, 2))
        for ra, rb in pairs:
            (va, wa), (vb, wb) = pooled[ra], pooled[rb]
            d = _cosine(va, vb)
            empty = (wa <= 0) | (wb <= 0)
            finite = torch.isfinite(va).all(1) & torch.isfinite(vb).all(1)
            why = [EMPTY_ROI if bool(empty[i]) else NON_FINITE if not bool(finite[i])
                   else ZERO_VECTOR if bool(torch.isnan(d[i])) else "" for i in range(n)]
            rows += [{"case_id": ids[i], "point": point, "roi_a": ra, "roi_b": rb,
                      "cosine_distance": float("nan") if why[i] else float(d[i]),
                      "weight_a": float(wa[i]), "weight_b": float(wb[i]), "reason": why[i]} for i in range(n)]
    return pd.DataFrame(rows)


def _warn_undefined(df: pd.DataFrame, instrument: str) -> None:
    warn_undefined(instrument, df.loc[df["cosine_distance"].isna(), "reason"], stacklevel=4)


def pooled_cosine_distances(acts: Mapping[str, Tensor], masks: Mapping[str, Any],
                            case_ids: Sequence[str] | None = None) -> RoiDistances:
    """Cosine distances between global and ROI-pooled vectors of given activations.

    Args:
        acts: point → ``(N, C, *spatial)`` feature maps (1-3 spatial dims, finite).
        masks: ROI name → ``(N, *spatial)`` or ``(N, 1, *spatial)`` boolean/soft masks at any
            resolution (usually the input's); resized by area to each map.
        case_ids: one id per case (default ``"0"``, ``"1"``...).

    Returns:
        :class:`RoiDistances` (formulas in the module docstring); an empty ROI or a zero pooled
        vector gives NaN with its reason and one ``UndefinedValueWarning``.
    """
    if not isinstance(acts, Mapping) or not acts:
        raise InputTypeError("acts", type(acts).__name__, "a non-empty mapping point → (N, C, *spatial)",
                             message=f"acts must be a non-empty mapping point → (N, C, *spatial) feature map, "
                                     f"got {type(acts).__name__ if not isinstance(acts, Mapping) else 'an empty one'}")
    acts = {str(p): _check_act(a, f"acts[{p!r}]") for p, a in acts.items()}
    first = next(iter(acts.values()))
    n = first.shape[0]
    if case_ids is not None and not isinstance(case_ids, (str, bytes)) and hasattr(case_ids, "__len__") \
            and len(case_ids) != n:
        raise ShapeError("case_ids", f"{len(case_ids)} entries", f"{n} (the cases of acts)",
                         message=f"case_ids has {len(case_ids)} entries but acts hold {n} cases")
    ids = as_case_ids(case_ids, n)
    df = _distance_rows(acts, _soft_masks(masks, len(ids), first.dim() - 2), ids)
    _warn_undefined(df, "pooled_cosine_distances")
    return RoiDistances(df)


def roi_cosine_distances(model: nn.Module | HookRegistry, x: Tensor, masks: Mapping[str, Any],
                         points: str | Sequence[str], *, case_ids: Sequence[str] | None = None,
                         batch_size: int | None = None) -> RoiDistances:
    """Run the model on ``x`` and return :func:`pooled_cosine_distances` at ``points``.

    Args:
        model: an ``nn.Module`` or a ``HookRegistry`` on it (run under ``no_grad`` in eval
            mode — a training-mode model is switched, with a warning, and restored — with its
            declared input layout).
        x: ``(N, C, *spatial)`` input, channels first (finite; cast to the model's dtype).
        masks: ROI name → ``(N, *spatial)`` masks at the spatial shape of ``x`` (e.g. brain,
            gtv, skull), boolean or soft.
        points: hook points, e.g. ``[f"{b}.resid" for b in reg.blocks]``.
        case_ids: one id per case (default ``"0"``, ``"1"``...).
        batch_size: run in chunks of this many cases (default: all at once).
    """
    reg = registry_of(model)
    points = as_points(reg, points)
    x = as_input(x, "x", model=reg.model)
    n = x.shape[0]
    mk = _soft_masks(masks, n, x.dim() - 2, tuple(x.shape[2:]))
    ids = as_case_ids(case_ids, n)
    step = n if batch_size is None else check_int(batch_size, "batch_size")
    device = model_device(reg.model)
    frames = []
    with model_state(reg.model, warn="roi_cosine_distances"):
        for s in range(0, n, step):
            _, cache = reg.run_with_cache(x[s:s + step].to(device), points=points)
            frames.append(_distance_rows({p: cache[p].cpu() for p in points},
                                         {r: m[s:s + step] for r, m in mk.items()}, ids[s:s + step]))
    df = pd.concat(frames, ignore_index=True)
    _warn_undefined(df, "roi_cosine_distances")
    order = {p: i for i, p in enumerate(points)}
    df = df.sort_values(["point", "case_id"], key=lambda c: c.map(order) if c.name == "point" else
                        c.map({v: i for i, v in enumerate(ids)}), kind="stable").reset_index(drop=True)
    return RoiDistances(df)
