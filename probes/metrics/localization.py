"""Localisation metrics: how attribution maps sit against ROI masks (2D and 3D alike).

Shapes (numpy arrays or torch tensors are accepted; the vocabulary of ``probes.core``):
``maps``  (N, C_map, *spatial) — C_map = 1 for class-activation maps, = C for per-contrast maps;
``mask``  one ROI (N, *spatial) or (N, 1, *spatial), boolean (non-zero = inside the ROI);
``masks`` named ROIs ``{roi name: mask}``;
``x``     the image (N, C, *spatial).
Every element-wise metric returns a float64 ``torch.Tensor`` of shape (N, C_map): one value per
case and per map channel (``probes.metrics.case_values`` gives their tidy rows).
:func:`localization_table` collects them all in a :class:`LocalizationTable` result.

Undefined values are NaN with a warning, never a silent 0 and never a crash:
an empty ROI gives ``EmptyROIWarning``; a constant map (no top region can be told apart) or a map
with zero total relevance gives ``UndefinedMetricWarning``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata

from probes.core.result import TableResult
from probes.core.validate import as_case_ids, as_maps, as_mask, as_masks, check_choice, to_numpy
from probes.metrics.values import case_means, contrast_names

__all__ = [
    "EmptyROIWarning", "UndefinedMetricWarning", "binarize_at_percentile", "iou_at_percentile",
    "relevance_mass", "hit_rate", "intensity_correlation", "feature_portion", "msfi",
    "normalise_importance", "LocalizationTable", "localization_table", "CORRELATIONS",
]

Correlation = Literal["pearson", "spearman"]
CORRELATIONS: tuple[str, ...] = ("pearson", "spearman")


class EmptyROIWarning(UserWarning):
    """An ROI mask has no voxel for some case: the metric is NaN for that case."""


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for some case/channel (constant map, zero relevance): NaN."""


# ----------------------------------------------------------------------------- helpers
def _maps(maps: Any) -> np.ndarray:
    return as_maps(maps).numpy()


def _flat_mask(mask: Any, a: np.ndarray) -> np.ndarray:
    """One ROI against maps ``a`` as (N, 1, V) bool, V = number of voxels."""
    return as_mask(mask, a.shape).reshape(a.shape[0], 1, -1)


def _empty_rows(s: np.ndarray, name: str = "mask") -> np.ndarray:
    """Boolean (N,) of cases whose ROI is empty; warns once if any."""
    empty = ~s.reshape(s.shape[0], -1).any(axis=1)
    if empty.any():
        warnings.warn(f"{name}: empty ROI for case(s) {np.flatnonzero(empty).tolist()}; metric is NaN",
                      EmptyROIWarning, stacklevel=4)
    return empty


def _out(v: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64))


def _ratio(num: np.ndarray, den: np.ndarray, what: str) -> np.ndarray:
    bad = den == 0
    if bad.any():
        warnings.warn(f"{what} is 0 for (case, map channel) {list(zip(*np.nonzero(bad)))}; metric is NaN",
                      UndefinedMetricWarning, stacklevel=3)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(bad, np.nan, num / np.where(bad, 1.0, den))


# ----------------------------------------------------------------------------- percentile maps
def binarize_at_percentile(maps: Any, q: float = 95) -> torch.Tensor:
    """Top region of each (case, map channel) map: voxels with ``a >= np.percentile(a, q)``.

    The threshold is numpy's linear-interpolation percentile over that map's voxels. Ties at the
    threshold are *included*, so the region can hold more than (100 − q)% of the voxels; a
    constant map ties everywhere (the region would be the whole image) — callers treat it as
    undefined (see ``iou_at_percentile``). Returns a bool tensor shaped like ``maps``.
    """
    a = _maps(maps)
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    flat = a.reshape(a.shape[0], a.shape[1], -1)
    thr = np.percentile(flat, q, axis=-1, keepdims=True)
    return torch.from_numpy((flat >= thr).reshape(a.shape))


def _top_region_ratio(maps: Any, mask: Any, q: float,
                      ratio: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> torch.Tensor:
    """``ratio(top, roi)`` per (case, map channel) of the top region B against the ROI M.

    Empty ROI or constant map (every voxel ties at the threshold) → NaN with a warning.
    """
    a = _maps(maps)
    s = _flat_mask(mask, a)
    empty = _empty_rows(s)
    top = binarize_at_percentile(a, q).numpy().reshape(a.shape[0], a.shape[1], -1)
    flat = a.reshape(a.shape[0], a.shape[1], -1)
    const = flat.max(axis=-1) == flat.min(axis=-1)
    if const.any():
        warnings.warn(f"constant map for (case, map channel) {list(zip(*np.nonzero(const)))}: every voxel "
                      "ties at the percentile threshold; metric is NaN", UndefinedMetricWarning, stacklevel=3)
    v = ratio(top, s)
    v[const] = np.nan
    v[empty] = np.nan
    return _out(v)


def iou_at_percentile(maps: Any, mask: Any, q: float = 95) -> torch.Tensor:
    """IoU of the map's top region (``binarize_at_percentile(maps, q)``) with the ROI.

    IoU = |B ∩ M| / |B ∪ M| per case and map channel (as ``monai.metrics.compute_iou`` on the
    binarised map). Empty ROI → NaN + ``EmptyROIWarning``; constant map → NaN +
    ``UndefinedMetricWarning`` (all voxels tie at the threshold).
    """
    return _top_region_ratio(maps, mask, q, lambda b, m: (b & m).sum(-1) / np.maximum((b | m).sum(-1), 1))


def hit_rate(maps: Any, mask: Any, q: float = 95) -> torch.Tensor:
    """Share of the map's top region (voxels ≥ its q-th percentile) that lies inside the ROI.

    hit = |B ∩ M| / |B| per case and map channel; ties at the threshold belong to B. Empty ROI →
    NaN + ``EmptyROIWarning``; constant map → NaN + ``UndefinedMetricWarning``.
    """
    return _top_region_ratio(maps, mask, q, lambda b, m: (b & m).sum(-1) / np.maximum(b.sum(-1), 1))


# ----------------------------------------------------------------------------- relevance mass
def relevance_mass(maps: Any, mask: Any, *, positive_only: bool = False) -> torch.Tensor:
    """Relevance mass accuracy (Arras et al. 2022; Quantus ``RelevanceMassAccuracy``).

    signed (default): Σ_{ROI} a / Σ a — equal to Quantus with ``abs=False, normalise=False``;
    ``positive_only=True``: Σ_{ROI} max(a, 0) / Σ max(a, 0) (Jin et al.'s feature portion).
    The signed ratio can leave [0, 1] when the map has both signs. Denominator 0 → NaN +
    ``UndefinedMetricWarning``; empty ROI → NaN + ``EmptyROIWarning``.
    """
    a = _maps(maps)
    s = _flat_mask(mask, a)
    empty = _empty_rows(s)
    flat = a.reshape(a.shape[0], a.shape[1], -1)
    if positive_only:
        flat = np.maximum(flat, 0.0)
    v = _ratio((flat * s).sum(-1), flat.sum(-1), "Σ relevance" + (" (positive part)" if positive_only else ""))
    v[empty] = np.nan
    return _out(v)


# ----------------------------------------------------------------------------- intensity
def _image(x: Any) -> np.ndarray:
    v = to_numpy(x, "x")
    if v.ndim < 3:
        raise ValueError(f"x must be the image (N, C, *spatial) with >= 1 spatial dim, got shape {v.shape}")
    return v.astype(np.float64, copy=False)


def intensity_correlation(maps: Any, x: Any, mask: Any = None, *,
                          correlation: Correlation = "pearson") -> torch.Tensor:
    """Correlation of attribution with image intensity (does attention follow brightness?).

    Andres et al.-style check: per case and contrast, Pearson's r (``correlation="pearson"``) or
    Spearman's ρ (``"spearman"``: Pearson on average ranks, as ``scipy.stats.spearmanr``) between
    voxel values of the map and of the image ``x``, over the whole image or only the voxels of
    ``mask`` ((N, *spatial)). A per-contrast map (C_map = C) is paired contrast by contrast
    with the image; a single map (C_map = 1) is correlated with every image contrast, giving
    (N, C). Empty mask → NaN + ``EmptyROIWarning``; constant map or image within the mask →
    NaN + ``UndefinedMetricWarning``.
    """
    check_choice(correlation, "correlation", CORRELATIONS)
    img = _image(x)
    a = as_maps(maps, img.shape).numpy()
    n, c = img.shape[:2]
    keep = (np.ones((n, a[0, 0].size), dtype=bool) if mask is None
            else as_mask(mask, img.shape, "mask", "x").reshape(n, -1))
    a = np.broadcast_to(a, img.shape).reshape(n, c, -1)
    img = img.reshape(n, c, -1)
    empty = _empty_rows(keep)
    out = np.full((n, c), np.nan)
    bad = []
    for i in range(n):
        if empty[i]:
            continue
        ai, xi = a[i][:, keep[i]], img[i][:, keep[i]]
        if correlation == "spearman":
            ai, xi = rankdata(ai, axis=-1), rankdata(xi, axis=-1)  # average ranks for ties
        ai = ai - ai.mean(-1, keepdims=True)
        xi = xi - xi.mean(-1, keepdims=True)
        den = np.sqrt((ai * ai).sum(-1) * (xi * xi).sum(-1))
        for j in range(c):
            if den[j] == 0:
                bad.append((i, j))
            else:
                out[i, j] = float(np.clip((ai[j] * xi[j]).sum() / den[j], -1.0, 1.0))
    if bad:
        warnings.warn(f"constant map or image in the mask for (case, contrast) {bad}; correlation is NaN",
                      UndefinedMetricWarning, stacklevel=2)
    return _out(out)


# ----------------------------------------------------------------------------- FP and MSFI
def _contrast_masks(mask: Any, a: np.ndarray) -> np.ndarray:
    """ROI → (N, C, *spatial) bool: one ROI shared by all contrasts, or one per contrast (N, C, *spatial)."""
    s = to_numpy(mask, "mask")
    if s.ndim == a.ndim and s.shape[1] == a.shape[1] and s.shape[1] != 1:
        if s.shape != a.shape:
            raise ValueError(f"mask shape {tuple(s.shape)} does not match maps shape {tuple(a.shape)}")
        return s.astype(bool)
    return np.broadcast_to(as_mask(mask, a.shape)[:, None], a.shape)


def feature_portion(maps: Any, mask: Any) -> torch.Tensor:
    """Feature portion FP_m (Jin et al., MedIA 2023, Eq. 2): Σ_{ROI_m} a_m⁺ / Σ a_m⁺.

    ``maps`` (N, M, *spatial), one map per contrast m; ``mask`` one feature ROI shared by all
    contrasts (N, *spatial) / (N, 1, *spatial), or one per contrast (N, M, *spatial).
    a⁺ = max(a, 0). Returns (N, M). Empty ROI of a contrast → NaN + ``EmptyROIWarning``;
    Σ a_m⁺ = 0 → NaN + ``UndefinedMetricWarning``.
    """
    a = _maps(maps)
    s = _contrast_masks(mask, a).reshape(a.shape[0], a.shape[1], -1)
    pos = np.maximum(a.reshape(a.shape[0], a.shape[1], -1), 0.0)
    empty = ~s.any(-1)
    if empty.any():
        warnings.warn(f"mask: empty ROI for (case, contrast) {list(zip(*np.nonzero(empty)))}; FP is NaN",
                      EmptyROIWarning, stacklevel=2)
    v = _ratio((pos * s).sum(-1), pos.sum(-1), "Σ positive attribution")
    v[empty] = np.nan
    return _out(v)


def normalise_importance(importance: Any) -> torch.Tensor:
    """Jin et al.'s weights: importance (e.g. contrast Shapley values) clipped at 0, divided by its max.

    Shape (M,) or (N, M); the max is taken over the contrasts (last axis), so weights lie in
    [0, 1] with the most important contrast at 1. Negative importances (a contrast that hurts)
    are clipped to 0 with a warning. All-zero importance → NaN weights + ``UndefinedMetricWarning``.
    """
    w = to_numpy(importance, "importance").astype(np.float64)
    if w.ndim not in (1, 2):
        raise ValueError(f"importance must be (M,) or (N, M), got shape {w.shape}")
    if (w < 0).any():
        warnings.warn("negative contrast importance clipped to 0", UserWarning, stacklevel=2)
        w = np.maximum(w, 0.0)
    mx = w.max(axis=-1, keepdims=True)
    if (mx == 0).any():
        warnings.warn("all contrast importances are 0: weights (and MSFI) are NaN",
                      UndefinedMetricWarning, stacklevel=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _out(np.where(mx == 0, np.nan, w / np.where(mx == 0, 1.0, mx)))


def msfi(maps: Any, mask: Any, importance: Any) -> torch.Tensor:
    """Modality-specific feature importance (Jin et al., MedIA 2023, Eqs. 2–4), one value per case.

    MSFI = Σ_m w_m · FP_m / Σ_m w_m over contrasts m, FP_m = Σ_{ROI_m} a_m⁺ / Σ a_m⁺
    (``feature_portion(maps, mask)``), w = ``normalise_importance(importance)`` (clip at 0,
    divide by the max — Jin's normalisation to [0, 1]; MSFI itself is invariant to that positive
    rescaling). A contrast with weight 0 does not enter, even if its FP is NaN (e.g. no feature
    ROI for it); a NaN FP with weight > 0 makes that case's MSFI NaN. Returns (N,) float64.
    """
    fp = feature_portion(maps, mask).numpy()
    w = normalise_importance(importance).numpy()
    if w.shape[-1] != fp.shape[1]:
        raise ValueError(f"importance shape {w.shape} does not match the {fp.shape[1]} contrasts of maps")
    w = np.broadcast_to(w, fp.shape)
    num = np.where(w > 0, w * np.nan_to_num(fp, nan=0.0), 0.0).sum(-1)
    nan_used = (np.isnan(fp) & (w > 0)).any(-1) | np.isnan(w).any(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = num / w.sum(-1)
    v[nan_used] = np.nan
    return _out(v)


# ----------------------------------------------------------------------------- table
@dataclass(frozen=True, eq=False)
class LocalizationTable(TableResult):
    """Every localisation metric for every ROI (:func:`localization_table`).

    ``table`` (already long): case_id, method, point, contrast, roi, metric, value;
    ``to_frame()`` is a tidy copy of it; ``summary()`` shows the mean over cases per
    (method, point, contrast, roi, metric).
    """

    def _summary_tables(self) -> pd.DataFrame:
        return case_means(self.to_frame())


def _map_metrics(q: float) -> dict[str, Callable[[np.ndarray, np.ndarray], torch.Tensor]]:
    """Metric name → function of (maps, mask), in table order."""
    return {f"iou@{q:g}": lambda a, m: iou_at_percentile(a, m, q),
            f"hit_rate@{q:g}": lambda a, m: hit_rate(a, m, q),
            "relevance_mass": lambda a, m: relevance_mass(a, m),
            "relevance_mass_pos": lambda a, m: relevance_mass(a, m, positive_only=True)}


def localization_table(maps: Any, masks: Mapping[str, Any], x: Any = None, *,
                       case_ids: Sequence[Any] | None = None, method: str = "",
                       contrasts: Sequence[str] | None = None, q: float = 95,
                       point: str = "") -> LocalizationTable:
    """Every localisation metric for every ROI of ``masks``, as a :class:`LocalizationTable`.

    Rows: case_id (str), method, point (the hook point a layer-wise map such as Grad-CAM was
    taken at; empty for input attributions), contrast, roi, metric, value. Metrics per ROI:
    ``iou@q``, ``hit_rate@q``, ``relevance_mass``, ``relevance_mass_pos``; with the image ``x``,
    also ``intensity_pearson`` / ``intensity_spearman`` within the ROI, and the same over the
    whole image under roi ``"all"``.

    ``contrast`` names the input contrast a value belongs to (``contrasts``, default ``"0"``,
    ``"1"``, ...; C = ``x.shape[1]``, else ``len(contrasts)``, else the map's channels). A
    single-channel map (C_map = 1, e.g. Grad-CAM) against C > 1 contrasts covers them all: its
    map-only metrics have contrast ``"all"``, its intensity correlations one row per contrast.
    ``masks`` may be empty (then only the whole-image correlations are computed).
    """
    a = _maps(maps)
    n = a.shape[0]
    ids = as_case_ids(case_ids, n)
    img = None if x is None else _image(x)
    if img is not None:
        a = as_maps(a, img.shape).numpy()
    n_contrasts = img.shape[1] if img is not None else (len(contrasts) if contrasts is not None else a.shape[1])
    names = contrast_names(contrasts, n_contrasts)
    if a.shape[1] not in (1, n_contrasts):
        raise ValueError(f"maps has {a.shape[1]} channels; expected 1 or one per contrast ({n_contrasts}: "
                         f"{names})")
    rois = as_masks(masks, a.shape, ref_name="maps") if masks else {}
    rows: list[pd.DataFrame] = []

    def add(v: torch.Tensor, roi: str, metric: str) -> None:
        v = v.numpy()
        labels = names if v.shape[1] == n_contrasts else ["all"]
        rows.append(pd.DataFrame({
            "case_id": np.repeat(ids, v.shape[1]), "method": method, "point": point,
            "contrast": labels * n, "roi": roi, "metric": metric, "value": v.reshape(-1)}))

    for roi, m in rois.items():
        for metric, fn in _map_metrics(q).items():
            add(fn(a, m), roi, metric)
        if img is not None:
            for how in CORRELATIONS:
                add(intensity_correlation(a, img, m, correlation=how), roi, f"intensity_{how}")
    if img is not None:
        for how in CORRELATIONS:
            add(intensity_correlation(a, img, None, correlation=how), "all", f"intensity_{how}")
    columns = ["case_id", "method", "point", "contrast", "roi", "metric", "value"]
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=columns)
    table["case_id"] = table["case_id"].astype(str)
    table["value"] = table["value"].astype(float)
    return LocalizationTable(table=table[columns], title="Localisation metrics")
