"""Localisation metrics: how an attribution map sits against ROI masks (2D and 3D alike).

Shapes (numpy arrays or torch tensors are accepted):
``map``   (N, C_map, *spatial) — C_map = 1 for class-activation maps, = C for per-contrast maps;
``mask``  (N, *spatial) or (N, 1, *spatial), boolean (non-zero = inside the ROI);
``image`` (N, C, *spatial).
Every metric returns a float64 ``torch.Tensor`` of shape (N, C_map): one value per case and per
map channel. ``localization_table`` collects them in tidy long format.

Undefined values are NaN with a warning, never a silent 0 and never a crash:
an empty ROI gives ``EmptyROIWarning``; a constant map (no top region can be told apart) or a map
with zero total relevance gives ``UndefinedMetricWarning``.
"""

from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

__all__ = [
    "EmptyROIWarning", "UndefinedMetricWarning", "binarize_at_percentile", "iou_at_percentile",
    "relevance_mass", "hit_rate", "intensity_correlation", "feature_portion", "msfi",
    "normalise_importance", "localization_table",
]


class EmptyROIWarning(UserWarning):
    """An ROI mask has no voxel for some case: the metric is NaN for that case."""


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for some case/channel (constant map, zero relevance): NaN."""


# ----------------------------------------------------------------------------- input checks
def _np(a, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu()
        a = a.numpy() if a.dtype != torch.bfloat16 else a.float().numpy()
    a = np.asarray(a)
    if a.dtype == object:
        raise TypeError(f"{name} must be a numeric array or tensor, got dtype object")
    return a


def _maps(m, name: str = "map") -> np.ndarray:
    a = _np(m, name)
    if a.ndim < 3:
        raise ValueError(f"{name} must be (N, C_map, *spatial) with >= 1 spatial dim, got shape {a.shape}")
    return a.astype(np.float64, copy=False)


def _mask(mask, ref_shape: tuple, name: str = "mask", ref_name: str = "map") -> np.ndarray:
    """Masks → (N, *spatial) bool, checked against ``ref_shape`` = (N, C, *spatial)."""
    s = _np(mask, name)
    n, spatial = ref_shape[0], tuple(ref_shape[2:])
    if s.ndim == len(spatial) + 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.shape != (n, *spatial):
        raise ValueError(f"{name} shape {tuple(s.shape)} does not match {ref_name} shape "
                         f"{tuple(ref_shape)}: expected (N, *spatial) = {(n, *spatial)} or (N, 1, *spatial)")
    return s.astype(bool)


def _empty_rows(s: np.ndarray, name: str = "mask") -> np.ndarray:
    """Boolean (N,) of cases whose ROI is empty; warns once if any."""
    empty = ~s.reshape(s.shape[0], -1).any(axis=1)
    if empty.any():
        warnings.warn(f"{name}: empty ROI for case(s) {np.flatnonzero(empty).tolist()}; metric is NaN",
                      EmptyROIWarning, stacklevel=3)
    return empty


def _out(v: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64))


def _ratio(num: np.ndarray, den: np.ndarray, what: str) -> np.ndarray:
    bad = den == 0
    if bad.any():
        warnings.warn(f"{what} is 0 for (case, channel) {list(zip(*np.nonzero(bad)))}; metric is NaN",
                      UndefinedMetricWarning, stacklevel=3)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(bad, np.nan, num / np.where(bad, 1.0, den))


# ----------------------------------------------------------------------------- percentile maps
def binarize_at_percentile(map, q: float = 95) -> torch.Tensor:
    """Top region of each (case, channel) map: voxels with ``a >= np.percentile(a, q)``.

    The threshold is numpy's linear-interpolation percentile over that map's voxels. Ties at the
    threshold are *included*, so the region can hold more than (100 − q)% of the voxels; a
    constant map ties everywhere (the region would be the whole image) — callers treat it as
    undefined (see ``iou_at_percentile``). Returns a bool tensor shaped like ``map``.
    """
    a = _maps(map)
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    flat = a.reshape(a.shape[0], a.shape[1], -1)
    thr = np.percentile(flat, q, axis=-1, keepdims=True)
    return torch.from_numpy((flat >= thr).reshape(a.shape))


def _top_and_constant(a: np.ndarray, q: float) -> tuple[np.ndarray, np.ndarray]:
    top = binarize_at_percentile(a, q).numpy().reshape(a.shape[0], a.shape[1], -1)
    flat = a.reshape(a.shape[0], a.shape[1], -1)
    const = flat.max(axis=-1) == flat.min(axis=-1)
    if const.any():
        warnings.warn(f"constant map for (case, channel) {list(zip(*np.nonzero(const)))}: every voxel "
                      "ties at the percentile threshold; metric is NaN", UndefinedMetricWarning, stacklevel=3)
    return top, const


def iou_at_percentile(map, mask, q: float = 95) -> torch.Tensor:
    """IoU of the map's top region (``binarize_at_percentile(map, q)``) with the ROI.

    IoU = |B ∩ M| / |B ∪ M| per case and map channel (as ``monai.metrics.compute_iou`` on the
    binarised map). Empty ROI → NaN + ``EmptyROIWarning``; constant map → NaN +
    ``UndefinedMetricWarning`` (all voxels tie at the threshold).
    """
    a = _maps(map)
    s = _mask(mask, a.shape).reshape(a.shape[0], 1, -1)
    empty = _empty_rows(s)
    top, const = _top_and_constant(a, q)
    inter = (top & s).sum(-1)
    union = (top | s).sum(-1)
    v = inter / np.maximum(union, 1)
    v[const] = np.nan
    v[empty] = np.nan
    return _out(v)


def hit_rate(map, mask, q: float = 95) -> torch.Tensor:
    """Share of the map's top region (voxels ≥ its q-th percentile) that lies inside the ROI.

    hit = |B ∩ M| / |B| per case and map channel; ties at the threshold belong to B. Empty ROI →
    NaN + ``EmptyROIWarning``; constant map → NaN + ``UndefinedMetricWarning``.
    """
    a = _maps(map)
    s = _mask(mask, a.shape).reshape(a.shape[0], 1, -1)
    empty = _empty_rows(s)
    top, const = _top_and_constant(a, q)
    v = (top & s).sum(-1) / np.maximum(top.sum(-1), 1)
    v[const] = np.nan
    v[empty] = np.nan
    return _out(v)


# ----------------------------------------------------------------------------- relevance mass
def relevance_mass(map, mask, positive_only: bool = False) -> torch.Tensor:
    """Relevance mass accuracy (Arras et al. 2022; Quantus ``RelevanceMassAccuracy``).

    signed (default): Σ_{ROI} a / Σ a — equal to Quantus with ``abs=False, normalise=False``;
    ``positive_only=True``: Σ_{ROI} max(a, 0) / Σ max(a, 0) (Jin et al.'s feature portion).
    The signed ratio can leave [0, 1] when the map has both signs. Denominator 0 → NaN +
    ``UndefinedMetricWarning``; empty ROI → NaN + ``EmptyROIWarning``.
    """
    a = _maps(map)
    s = _mask(mask, a.shape).reshape(a.shape[0], 1, -1)
    empty = _empty_rows(s)
    flat = a.reshape(a.shape[0], a.shape[1], -1)
    if positive_only:
        flat = np.maximum(flat, 0.0)
    v = _ratio((flat * s).sum(-1), flat.sum(-1), "Σ relevance" + (" (positive part)" if positive_only else ""))
    v[empty] = np.nan
    return _out(v)


# ----------------------------------------------------------------------------- intensity
def _rank_rows(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, axis=-1)  # average ranks for ties, as scipy.stats.spearmanr


def intensity_correlation(image, map, region=None, method: str = "pearson") -> torch.Tensor:
    """Correlation of attribution with image intensity (does attention follow brightness?).

    Andres et al.-style check: per case and map channel, Pearson's r (or Spearman's ρ: Pearson on
    average ranks, as ``scipy.stats.spearmanr``) between voxel values of the map and of the image,
    over the whole image or only the voxels of ``region`` ((N, *spatial) mask).
    A per-contrast map (C_map = C) is paired channel by channel with the image; a single map
    (C_map = 1) is correlated with every image channel, giving (N, C). Empty region → NaN +
    ``EmptyROIWarning``; constant map or image within the region → NaN + ``UndefinedMetricWarning``.
    """
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    a = _maps(map)
    x = _maps(image, "image")
    if x.shape[0] != a.shape[0] or x.shape[2:] != a.shape[2:]:
        raise ValueError(f"image shape {tuple(x.shape)} does not match map shape {tuple(a.shape)}")
    if a.shape[1] not in (1, x.shape[1]):
        raise ValueError(f"map has {a.shape[1]} channels; expected 1 or the image's {x.shape[1]} "
                         f"(image shape {tuple(x.shape)}, map shape {tuple(a.shape)})")
    n, c = x.shape[:2]
    a = np.broadcast_to(a, x.shape).reshape(n, c, -1)
    x = x.reshape(n, c, -1)
    if region is None:
        keep = np.ones((n, a.shape[-1]), dtype=bool)
    else:
        keep = _mask(region, (n, c, *_maps(image, "image").shape[2:]), "region", "image").reshape(n, -1)
    empty = _empty_rows(keep, "region")
    out = np.full((n, c), np.nan)
    bad = []
    for i in range(n):
        if empty[i]:
            continue
        ai, xi = a[i][:, keep[i]], x[i][:, keep[i]]
        if method == "spearman":
            ai, xi = _rank_rows(ai), _rank_rows(xi)
        ai = ai - ai.mean(-1, keepdims=True)
        xi = xi - xi.mean(-1, keepdims=True)
        den = np.sqrt((ai * ai).sum(-1) * (xi * xi).sum(-1))
        for j in range(c):
            if den[j] == 0:
                bad.append((i, j))
            else:
                out[i, j] = float(np.clip((ai[j] * xi[j]).sum() / den[j], -1.0, 1.0))
    if bad:
        warnings.warn(f"constant map or image in the region for (case, channel) {bad}; correlation is NaN",
                      UndefinedMetricWarning, stacklevel=2)
    return _out(out)


# ----------------------------------------------------------------------------- FP and MSFI
def _modality_masks(masks, a: np.ndarray) -> np.ndarray:
    """Masks → (N, C, *spatial) bool: one shared ROI, or one ROI per modality (N, C, *spatial)."""
    s = _np(masks, "masks")
    if s.ndim == a.ndim and s.shape[1] == a.shape[1] and s.shape[1] != 1:
        if s.shape != a.shape:
            raise ValueError(f"masks shape {tuple(s.shape)} does not match maps shape {tuple(a.shape)}")
        return s.astype(bool)
    return np.broadcast_to(_mask(masks, a.shape, "masks", "maps")[:, None], a.shape)


def feature_portion(maps_per_contrast, masks) -> torch.Tensor:
    """Feature portion FP_m (Jin et al., MedIA 2023, Eq. 2): Σ_{ROI_m} a_m⁺ / Σ a_m⁺.

    ``maps_per_contrast`` (N, M, *spatial), one map per modality m; ``masks`` one shared feature
    ROI (N, *spatial) / (N, 1, *spatial), or one per modality (N, M, *spatial). a⁺ = max(a, 0).
    Returns (N, M). Empty ROI of a modality → NaN + ``EmptyROIWarning``; Σ a_m⁺ = 0 → NaN +
    ``UndefinedMetricWarning``.
    """
    a = _maps(maps_per_contrast, "maps_per_contrast")
    s = _modality_masks(masks, a).reshape(a.shape[0], a.shape[1], -1)
    pos = np.maximum(a.reshape(a.shape[0], a.shape[1], -1), 0.0)
    empty = ~s.any(-1)
    if empty.any():
        warnings.warn(f"masks: empty ROI for (case, modality) {list(zip(*np.nonzero(empty)))}; FP is NaN",
                      EmptyROIWarning, stacklevel=2)
    v = _ratio((pos * s).sum(-1), pos.sum(-1), "Σ positive attribution")
    v[empty] = np.nan
    return _out(v)


def normalise_importance(modality_importance) -> torch.Tensor:
    """Jin et al.'s weights: importance (e.g. modality Shapley values) clipped at 0, divided by its max.

    Shape (M,) or (N, M); the max is taken over the modalities (last axis), so weights lie in
    [0, 1] with the most important modality at 1. Negative importances (a modality that hurts)
    are clipped to 0 with a warning. All-zero importance → NaN weights + ``UndefinedMetricWarning``.
    """
    w = _np(modality_importance, "modality_importance").astype(np.float64)
    if w.ndim not in (1, 2):
        raise ValueError(f"modality_importance must be (M,) or (N, M), got shape {w.shape}")
    if (w < 0).any():
        warnings.warn("negative modality importance clipped to 0", UserWarning, stacklevel=2)
        w = np.maximum(w, 0.0)
    mx = w.max(axis=-1, keepdims=True)
    if (mx == 0).any():
        warnings.warn("all modality importances are 0: weights (and MSFI) are NaN",
                      UndefinedMetricWarning, stacklevel=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _out(np.where(mx == 0, np.nan, w / np.where(mx == 0, 1.0, mx)))


def msfi(maps_per_contrast, masks, modality_importance) -> torch.Tensor:
    """Modality-specific feature importance (Jin et al., MedIA 2023, Eqs. 2–4), one value per case.

    MSFI = Σ_m w_m · FP_m / Σ_m w_m, FP_m = Σ_{ROI_m} a_m⁺ / Σ a_m⁺ (``feature_portion``),
    w = ``normalise_importance(modality_importance)`` (clip at 0, divide by the max — Jin's
    normalisation to [0, 1]; MSFI itself is invariant to that positive rescaling). A modality with
    weight 0 does not enter, even if its FP is NaN (e.g. no feature ROI for it); a NaN FP with
    weight > 0 makes that case's MSFI NaN. Returns (N,) float64.
    """
    fp = feature_portion(maps_per_contrast, masks).numpy()
    w = normalise_importance(modality_importance).numpy()
    if w.shape[-1] != fp.shape[1]:
        raise ValueError(f"modality_importance shape {w.shape} does not match the {fp.shape[1]} "
                         f"modalities of maps_per_contrast")
    w = np.broadcast_to(w, fp.shape)
    num = np.where(w > 0, w * np.nan_to_num(fp, nan=0.0), 0.0).sum(-1)
    nan_used = (np.isnan(fp) & (w > 0)).any(-1) | np.isnan(w).any(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = num / w.sum(-1)
    v[nan_used] = np.nan
    return _out(v)


# ----------------------------------------------------------------------------- table
def localization_table(maps, masks: Mapping[str, object], image=None, *, case_ids: Sequence | None = None,
                       method: str = "", channels: Sequence[str] | None = None, q: float = 95,
                       point: str = "") -> pd.DataFrame:
    """Every localisation metric for every ROI in tidy long format.

    Columns: case_id, method, point, channel, roi, metric, value (``point``: the hook point a
    layer-wise map such as Grad-CAM was taken at; empty for input attributions). Metrics per ROI: ``iou@q``,
    ``hit_rate@q``, ``relevance_mass``, ``relevance_mass_pos``; with ``image``, also
    ``intensity_pearson`` / ``intensity_spearman`` within the ROI (channel = image channel when
    the map has one channel), and the same over the whole image under roi ``"all"``.
    """
    a = _maps(maps, "maps")
    n = a.shape[0]
    case_ids = list(range(n)) if case_ids is None else list(case_ids)
    if len(case_ids) != n:
        raise ValueError(f"case_ids has {len(case_ids)} entries for {n} cases (maps shape {tuple(a.shape)})")

    def names(k: int) -> list:
        if channels is None:
            return list(range(k))
        if len(channels) != k:
            raise ValueError(f"channels has {len(channels)} names for {k} channels")
        return list(channels)

    rows: list[pd.DataFrame] = []

    def add(v: torch.Tensor, roi: str, metric: str) -> None:
        v = v.numpy()
        # a single-channel map against a C-channel image gives one value per image channel
        ch = names(v.shape[1]) if v.shape[1] == a.shape[1] else list(range(v.shape[1]))
        rows.append(pd.DataFrame({
            "case_id": np.repeat(case_ids, v.shape[1]), "method": method, "point": point,
            "channel": ch * n, "roi": roi, "metric": metric, "value": v.reshape(-1)}))

    for roi, m in masks.items():
        add(iou_at_percentile(a, m, q), roi, f"iou@{q:g}")
        add(hit_rate(a, m, q), roi, f"hit_rate@{q:g}")
        add(relevance_mass(a, m), roi, "relevance_mass")
        add(relevance_mass(a, m, positive_only=True), roi, "relevance_mass_pos")
        if image is not None:
            for how in ("pearson", "spearman"):
                add(intensity_correlation(image, a, m, how), roi, f"intensity_{how}")
    if image is not None:
        for how in ("pearson", "spearman"):
            add(intensity_correlation(image, a, None, how), "all", f"intensity_{how}")
    if not rows:
        return pd.DataFrame(columns=["case_id", "method", "point", "channel", "roi", "metric", "value"])
    return pd.concat(rows, ignore_index=True)
