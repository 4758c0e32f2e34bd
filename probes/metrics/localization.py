"""Localisation metrics: how attribution maps sit against ROI masks (2D and 3D alike).

Shapes (numpy arrays or torch tensors are accepted; the vocabulary of ``probes.core``):
``maps``  (N, C_map, *spatial) — C_map = 1 for class-activation maps, = C for per-contrast maps;
``mask``  one ROI (N, *spatial) or (N, 1, *spatial), boolean (non-zero = inside the ROI);
``masks`` named ROIs ``{roi name: mask}``;
``x``     the image (N, C, *spatial).
Every element-wise metric returns a float64 ``torch.Tensor`` of shape (N, C_map): one value per
case and per map channel (``probes.metrics.case_values`` gives their tidy rows).
:func:`localization_table` collects them all in a :class:`LocalizationTable` result.

Undefined values are NaN with a reason, never a silent 0 and never a crash: a map that ranks
nothing (all values equal, e.g. all zero), an empty ROI, zero total relevance. Each call warns
once (``EmptyROIWarning`` when every reason is an empty ROI, else ``UndefinedMetricWarning``;
both are ``probes.core.errors.UndefinedValueWarning``); :func:`localization_table` puts the
reason of each NaN in its ``reason`` column. Maps, images and masks with NaN/Inf, masks with
values other than 0/1 and shapes that do not fit are refused (``probes.core.errors``), naming
the argument.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata

from probes.core.errors import InputTypeError, OptionError, ShapeError, UndefinedValueWarning
from probes.core.result import TableResult
from probes.core.validate import as_case_ids, as_input, as_maps, as_mask, check_choice, check_finite, to_numpy
from probes.metrics.values import case_means, contrast_names, numeric, warn_reasons

__all__ = [
    "EmptyROIWarning", "UndefinedMetricWarning", "binarize_at_percentile", "iou_at_percentile",
    "relevance_mass", "hit_rate", "intensity_correlation", "feature_portion", "msfi",
    "normalise_importance", "LocalizationTable", "localization_table", "CORRELATIONS", "RANKS_NOTHING",
    "EMPTY_ROI",
]

Correlation = Literal["pearson", "spearman"]
CORRELATIONS: tuple[str, ...] = ("pearson", "spearman")
RANKS_NOTHING = "map ranks nothing (all its values are equal)"
EMPTY_ROI = "empty ROI"


class EmptyROIWarning(UndefinedValueWarning):
    """An ROI mask has no voxel for some case: the metric is NaN for that case."""


class UndefinedMetricWarning(UndefinedValueWarning):
    """A metric is undefined for some case/channel (a map that ranks nothing, zero relevance): NaN."""


# ----------------------------------------------------------------------------- helpers
class _Why:
    """Why each value of an (N, C) result is undefined ("" where defined); the first reason wins."""

    def __init__(self, shape: tuple[int, ...]):
        self.r = np.full(shape, "", dtype=object)

    def mark(self, where: np.ndarray, text: str) -> None:
        where = np.broadcast_to(np.asarray(where, dtype=bool).reshape(
            np.shape(where) + (1,) * (self.r.ndim - np.ndim(where))), self.r.shape)
        self.r[where & (self.r == "")] = text

    def mark_case(self, i: int, where: np.ndarray, text: str) -> None:
        """Mark the channels ``where`` of case ``i``."""
        row = self.r[i]
        row[np.asarray(where, dtype=bool) & (row == "")] = text

    def apply(self, v: np.ndarray) -> np.ndarray:
        v = np.array(v, dtype=np.float64)
        v[self.r != ""] = np.nan
        return v


def _warn(instrument: str, reasons: np.ndarray | Sequence[str], stacklevel: int = 4) -> None:
    """One warning per call: ``EmptyROIWarning`` if every reason is an empty ROI."""
    rs = [r for r in np.asarray(reasons, dtype=object).reshape(-1) if r]
    cat = EmptyROIWarning if rs and all(r == EMPTY_ROI for r in rs) else UndefinedMetricWarning
    warn_reasons(instrument, rs, cat, stacklevel=stacklevel)


def _public(instrument: str, v: np.ndarray, why: _Why) -> torch.Tensor:
    """An element-wise metric's result: NaN where undefined, with one warning."""
    _warn(instrument, why.r, stacklevel=4)
    return _out(why.apply(v))


def _maps(maps: Any, x_shape: Sequence[int] | None = None, name: str = "maps") -> np.ndarray:
    """Validated maps (N, C_map, *spatial) as float64 numpy: NaN/Inf refused."""
    m = as_maps(maps, x_shape, name=name)
    check_finite(m, name)
    return m.numpy()


def _no_channel_axis(a_shape: Sequence[int], mask: Any, ref_name: str) -> None:
    """ShapeError naming the maps when they look like (N, *spatial): the mask's spatial shape
    equals everything after the maps' batch axis, so the channel axis is missing."""
    s = tuple(np.shape(to_numpy(mask, "mask")))
    if len(s) < 2 or s[0] != a_shape[0]:
        return
    spatial = s[2:] if len(s) == len(a_shape) + 1 and s[1] == 1 else s[1:]
    if tuple(a_shape[1:]) == tuple(spatial):
        raise ShapeError(ref_name, f"shape {tuple(a_shape)}", f"(N, C_map, *spatial) with spatial {spatial}",
                         message=f"{ref_name} shape {tuple(a_shape)} has no channel axis: the mask is (N, *spatial) "
                                 f"= {s}, so {ref_name} must be (N, 1 or C, *{spatial})")


def _roi(mask: Any, a_shape: Sequence[int], name: str = "mask", ref_name: str = "maps") -> np.ndarray:
    """One 0/1 ROI (N, *spatial) against ``a_shape``; a map without channel axis is named as such."""
    try:
        return as_mask(mask, a_shape, name, ref_name, binary=True)
    except ShapeError:
        _no_channel_axis(a_shape, mask, ref_name)
        raise


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], a.shape[1], -1)


def _ranks_nothing(a: np.ndarray, why: _Why) -> None:
    flat = _flat(a)
    why.mark(flat.max(axis=-1) == flat.min(axis=-1), RANKS_NOTHING)


def _out(v: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64))


def _ratio(num: np.ndarray, den: np.ndarray, why: _Why, what: str) -> np.ndarray:
    bad = den == 0
    why.mark(bad, what)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(bad, np.nan, num / np.where(bad, 1.0, den))


def _check_q(q: Any) -> float:
    if isinstance(q, bool) or not isinstance(q, (int, float, np.integer, np.floating)) or not 0 <= q <= 100:
        raise OptionError("q", repr(q), "a number in [0, 100]", message=f"q must be in [0, 100], got {q!r}")
    return float(q)


# ----------------------------------------------------------------------------- percentile maps
def _top(a: np.ndarray, q: float) -> np.ndarray:
    flat = _flat(a)
    return flat >= np.percentile(flat, q, axis=-1, keepdims=True)


def binarize_at_percentile(maps: Any, q: float = 95) -> torch.Tensor:
    """Top region of each (case, map channel) map: voxels with ``a >= np.percentile(a, q)``.

    The threshold is numpy's linear-interpolation percentile over that map's voxels. Ties at the
    threshold are *included*, so the region can hold more than (100 − q)% of the voxels; a map
    that ranks nothing (all values equal) ties everywhere, so its region is the whole map: that
    is returned with an ``UndefinedMetricWarning`` (the metrics built on the region,
    ``iou_at_percentile`` and ``hit_rate``, are NaN there). Returns a bool tensor shaped like ``maps``.
    """
    a = _maps(maps)
    q = _check_q(q)
    why = _Why(a.shape[:2])
    _ranks_nothing(a, why)
    _warn("binarize_at_percentile", np.where(why.r != "", RANKS_NOTHING + ": the top region is the whole map", ""),
          stacklevel=3)
    return torch.from_numpy(_top(a, q).reshape(a.shape))


def _top_region(a: np.ndarray, s: np.ndarray, q: float, kind: str,
                top: np.ndarray | None = None) -> tuple[np.ndarray, _Why]:
    """IoU (``kind="iou"``) or hit rate of the top region B against the ROI M, with reasons
    (``top``: B when already computed, ``_top(a, q)``)."""
    why = _Why(a.shape[:2])
    why.mark(~s.reshape(s.shape[0], -1).any(axis=1), EMPTY_ROI)
    _ranks_nothing(a, why)
    b, m = (_top(a, q) if top is None else top), s.reshape(s.shape[0], 1, -1)
    den = (b | m).sum(-1) if kind == "iou" else b.sum(-1)
    return (b & m).sum(-1) / np.maximum(den, 1), why


def iou_at_percentile(maps: Any, mask: Any, q: float = 95) -> torch.Tensor:
    """IoU of the map's top region (``binarize_at_percentile(maps, q)``) with the ROI.

    IoU = |B ∩ M| / |B ∪ M| per case and map channel (as ``monai.metrics.compute_iou`` on the
    binarised map). Empty ROI → NaN + ``EmptyROIWarning``; a map that ranks nothing → NaN +
    ``UndefinedMetricWarning`` (all voxels tie at the threshold).
    """
    a = _maps(maps)
    v, why = _top_region(a, _roi(mask, a.shape), _check_q(q), "iou")
    return _public("iou_at_percentile", v, why)


def hit_rate(maps: Any, mask: Any, q: float = 95) -> torch.Tensor:
    """Share of the map's top region (voxels ≥ its q-th percentile) that lies inside the ROI.

    hit = |B ∩ M| / |B| per case and map channel; ties at the threshold belong to B. Empty ROI →
    NaN + ``EmptyROIWarning``; a map that ranks nothing → NaN + ``UndefinedMetricWarning``.
    """
    a = _maps(maps)
    v, why = _top_region(a, _roi(mask, a.shape), _check_q(q), "hit")
    return _public("hit_rate", v, why)


# ----------------------------------------------------------------------------- relevance mass
def _relevance_mass(a: np.ndarray, s: np.ndarray, positive_only: bool) -> tuple[np.ndarray, _Why]:
    why = _Why(a.shape[:2])
    why.mark(~s.reshape(s.shape[0], -1).any(axis=1), EMPTY_ROI)
    _ranks_nothing(a, why)
    flat = np.maximum(_flat(a), 0.0) if positive_only else _flat(a)
    m = s.reshape(s.shape[0], 1, -1)
    v = _ratio((flat * m).sum(-1), flat.sum(-1), why,
               "no positive relevance" if positive_only else "total relevance is 0")
    return v, why


def relevance_mass(maps: Any, mask: Any, *, positive_only: bool = False) -> torch.Tensor:
    """Relevance mass accuracy (Arras et al. 2022; Quantus ``RelevanceMassAccuracy``).

    signed (default): Σ_{ROI} a / Σ a — equal to Quantus with ``abs=False, normalise=False``;
    ``positive_only=True``: Σ_{ROI} max(a, 0) / Σ max(a, 0) (Jin et al.'s feature portion).
    The signed ratio can leave [0, 1] when the map has both signs. Denominator 0 or a map that
    ranks nothing (its ratio would only be the ROI's share of the image) → NaN +
    ``UndefinedMetricWarning``; empty ROI → NaN + ``EmptyROIWarning``.
    """
    a = _maps(maps)
    v, why = _relevance_mass(a, _roi(mask, a.shape), positive_only)
    return _public("relevance_mass", v, why)


# ----------------------------------------------------------------------------- intensity
def _image(x: Any) -> np.ndarray:
    return as_input(x, "x").detach().cpu().double().numpy()


def _intensity(a: np.ndarray, img: np.ndarray, keep: np.ndarray | None,
               correlation: str) -> tuple[np.ndarray, _Why]:
    """Correlation (N, C) of maps ``a`` (broadcast to the image's contrasts) with ``img``.

    Vectorised over cases and contrasts: the voxels outside ``keep`` are set to +inf before
    ranking (they rank above every voxel inside, so the average ranks inside equal those of the
    ROI's voxels alone), and the moments are sums over ``keep``.
    """
    n, c = img.shape[:2]
    keep = np.ones((n, a[0, 0].size), dtype=bool) if keep is None else keep.reshape(n, -1)
    a = a.reshape(n, a.shape[1], -1)  # one map channel is ranked once, then paired with every contrast
    img = img.reshape(n, c, -1)
    k = keep[:, None, :]
    has = keep.any(axis=1)
    why = _Why((n, c))
    why.mark(~has, EMPTY_ROI)

    def constant(v: np.ndarray) -> np.ndarray:
        return has[:, None] & (np.where(k, v, -np.inf).max(-1) == np.where(k, v, np.inf).min(-1))

    why.mark(constant(a), RANKS_NOTHING + " in the ROI")
    why.mark(constant(img), "image constant in the ROI")
    if correlation == "spearman":
        # average ranks for ties, as scipy.stats.spearmanr
        a, img = rankdata(np.where(k, a, np.inf), axis=-1), rankdata(np.where(k, img, np.inf), axis=-1)
    a = np.broadcast_to(a, img.shape)
    cnt = np.maximum(keep.sum(1), 1)[:, None, None]
    ac = np.where(k, a - (np.where(k, a, 0.0).sum(-1, keepdims=True) / cnt), 0.0)
    xc = np.where(k, img - (np.where(k, img, 0.0).sum(-1, keepdims=True) / cnt), 0.0)
    den = np.sqrt((ac * ac).sum(-1) * (xc * xc).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.clip((ac * xc).sum(-1) / den, -1.0, 1.0)
    out[~has] = np.nan
    return out, why


def intensity_correlation(maps: Any, x: Any, mask: Any = None, *,
                          correlation: Correlation = "pearson") -> torch.Tensor:
    """Correlation of attribution with image intensity (does attention follow brightness?).

    Andres et al.-style check: per case and contrast, Pearson's r (``correlation="pearson"``) or
    Spearman's ρ (``"spearman"``: Pearson on average ranks, as ``scipy.stats.spearmanr``) between
    voxel values of the map and of the image ``x``, over the whole image or only the voxels of
    ``mask`` ((N, *spatial)). A per-contrast map (C_map = C) is paired contrast by contrast
    with the image; a single map (C_map = 1) is correlated with every image contrast, giving
    (N, C). Empty mask → NaN + ``EmptyROIWarning``; map or image constant within the mask →
    NaN + ``UndefinedMetricWarning``.
    """
    check_choice(correlation, "correlation", CORRELATIONS)
    img = _image(x)
    a = _maps(maps, img.shape)
    keep = None if mask is None else _roi(mask, img.shape, "mask", "x")
    v, why = _intensity(a, img, keep, correlation)
    return _public("intensity_correlation", v, why)


# ----------------------------------------------------------------------------- FP and MSFI
def _contrast_masks(mask: Any, a: np.ndarray) -> np.ndarray:
    """ROI → (N, C, *spatial) bool: one ROI shared by all contrasts, or one per contrast (N, C, *spatial)."""
    s = to_numpy(mask, "mask")
    if s.ndim == a.ndim and s.shape[1] == a.shape[1] and s.shape[1] != 1:
        if s.shape != a.shape:
            raise ShapeError("mask", f"shape {tuple(s.shape)}", f"{tuple(a.shape)} (one ROI per contrast)",
                             message=f"mask shape {tuple(s.shape)} does not match maps shape {tuple(a.shape)}")
        return as_mask(s.reshape(-1, *s.shape[2:]), (s.shape[0] * s.shape[1], 1, *s.shape[2:]),
                       binary=True).reshape(s.shape)
    return np.broadcast_to(_roi(mask, a.shape)[:, None], a.shape)


def _fp(a: np.ndarray, mask: Any) -> tuple[np.ndarray, _Why]:
    s = _flat(_contrast_masks(mask, a))
    why = _Why(a.shape[:2])
    why.mark(~s.any(-1), EMPTY_ROI)
    _ranks_nothing(a, why)
    pos = np.maximum(_flat(a), 0.0)
    return _ratio((pos * s).sum(-1), pos.sum(-1), why, "no positive attribution"), why


def feature_portion(maps: Any, mask: Any) -> torch.Tensor:
    """Feature portion FP_m (Jin et al., MedIA 2023, Eq. 2): Σ_{ROI_m} a_m⁺ / Σ a_m⁺.

    ``maps`` (N, M, *spatial), one map per contrast m; ``mask`` one feature ROI shared by all
    contrasts (N, *spatial) / (N, 1, *spatial), or one per contrast (N, M, *spatial).
    a⁺ = max(a, 0). Returns (N, M). Empty ROI of a contrast → NaN + ``EmptyROIWarning``;
    Σ a_m⁺ = 0 or a map that ranks nothing → NaN + ``UndefinedMetricWarning``.
    """
    a = _maps(maps)
    v, why = _fp(a, mask)
    return _public("feature_portion", v, why)


def _weights(importance: Any) -> tuple[np.ndarray, np.ndarray]:
    """Jin's weights and, per row, why they are undefined ("" where defined)."""
    w = numeric(importance, "importance")
    if w.ndim not in (1, 2) or w.shape[-1] == 0:
        raise ShapeError("importance", f"shape {w.shape}", "(M,) or (N, M)",
                         message=f"importance must be (M,) or (N, M), got shape {w.shape}")
    if (w < 0).any():
        warnings.warn("negative contrast importance clipped to 0", UserWarning, stacklevel=3)
        w = np.maximum(w, 0.0)
    mx = w.max(axis=-1, keepdims=True)
    why = np.where(mx[..., 0] == 0, "every contrast importance is <= 0", "")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mx == 0, np.nan, w / np.where(mx == 0, 1.0, mx)), np.atleast_1d(why)


def normalise_importance(importance: Any) -> torch.Tensor:
    """Jin et al.'s weights: importance (e.g. contrast Shapley values) clipped at 0, divided by its max.

    Shape (M,) or (N, M); the max is taken over the contrasts (last axis), so weights lie in
    [0, 1] with the most important contrast at 1. Negative importances (a contrast that hurts)
    are clipped to 0 with a warning. All importances ≤ 0 → NaN weights + ``UndefinedMetricWarning``.
    """
    w, why = _weights(importance)
    _warn("normalise_importance", why, stacklevel=3)
    return _out(w)


def msfi(maps: Any, mask: Any, importance: Any, *, contrasts: Sequence[str] | None = None) -> torch.Tensor:
    """Modality-specific feature importance (Jin et al., MedIA 2023, Eqs. 2–4), one value per case.

    MSFI = Σ_m w_m · FP_m / Σ_m w_m over contrasts m, FP_m = Σ_{ROI_m} a_m⁺ / Σ a_m⁺
    (``feature_portion(maps, mask)``), w = ``normalise_importance(importance)`` (clip at 0,
    divide by the max — Jin's normalisation to [0, 1]; MSFI itself is invariant to that positive
    rescaling). A contrast with weight 0 does not enter, even if its FP is NaN (e.g. no feature
    ROI for it).

    A weighted contrast whose map has **no positive attribution** (Σ a_m⁺ = 0) counts as
    FP_m = 0 — the explanation failed to show a contrast the model needs — and its weight stays
    in the denominator; one warning names the contrast (``contrasts``: the names, default
    ``"contrast <m>"``). Any other undefined FP of a weighted contrast (an empty ROI, a positive
    map that ranks nothing) makes that case's MSFI NaN (one warning says why). Returns (N,)
    float64.
    """
    a = _maps(maps)
    w, w_why = _weights(importance)
    if w.shape[-1] != a.shape[1] or (w.ndim == 2 and w.shape[0] != a.shape[0]):
        raise ShapeError("importance", f"shape {w.shape}", f"({a.shape[1]},) or ({a.shape[0]}, {a.shape[1]})",
                         message=f"importance shape {w.shape} does not match the {a.shape[1]} contrasts of maps "
                                 f"{tuple(a.shape)} (maps are (N, C, *spatial), one map per contrast)")
    names = [f"contrast {m}" for m in range(a.shape[1])] if contrasts is None else [str(c) for c in contrasts]
    if len(names) != a.shape[1]:
        raise ShapeError("contrasts", f"{len(names)} names", f"{a.shape[1]} (one per map channel)")
    fp, fp_why = _fp(a, mask)
    w = np.broadcast_to(w, fp.shape)
    fpv = fp_why.apply(fp)
    empty = ~_flat(_contrast_masks(mask, a)).any(-1)
    # no positive attribution on a weighted contrast (with a non-empty ROI): FP = 0, not NaN
    unshown = (np.maximum(_flat(a), 0.0).sum(-1) == 0) & ~empty & (w > 0)
    fpv[unshown] = 0.0
    why = np.full(a.shape[0], "", dtype=object)
    for i in range(a.shape[0]):
        used = [r for r, wi, u in zip(fp_why.r[i], w[i], unshown[i]) if r and wi > 0 and not u]
        why[i] = (w_why[i] if w_why.size > 1 else w_why[0]) or (f"FP undefined for a weighted contrast: {used[0]}"
                                                                if used else "")
    num = np.where(w > 0, w * np.nan_to_num(fpv, nan=0.0), 0.0).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = num / w.sum(-1)
    v[why != ""] = np.nan
    if unshown.any():
        counts = ", ".join(f"{names[m]} ({int(unshown[:, m].sum())} case(s))" for m in np.flatnonzero(unshown.any(0)))
        warnings.warn(f"msfi: no positive attribution on a weighted contrast — {counts}; counted as FP = 0 with "
                      "its weight kept in the denominator (the explanation does not show a contrast the model "
                      "relies on)", UserWarning, stacklevel=2)
    _warn("msfi", why, stacklevel=3)
    return _out(v)


# ----------------------------------------------------------------------------- table
@dataclass(frozen=True, eq=False)
class LocalizationTable(TableResult):
    """Every localisation metric for every ROI (:func:`localization_table`).

    ``table`` (already long): case_id, method, point, contrast, roi, reason, metric, value;
    ``to_frame()`` is a tidy copy of it; ``summary()`` shows the mean over cases per
    (method, point, contrast, roi, metric).
    """

    def _summary_tables(self) -> pd.DataFrame:
        return case_means(self.to_frame())


def _map_metrics(q: float, top: np.ndarray | None = None
                 ) -> dict[str, Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, _Why]]]:
    """Metric name → function of (maps, ROI) giving (values, reasons), in table order (``top``:
    the maps' top region, shared by every ROI)."""
    return {f"iou@{q:g}": lambda a, m: _top_region(a, m, q, "iou", top),
            f"hit_rate@{q:g}": lambda a, m: _top_region(a, m, q, "hit", top),
            "relevance_mass": lambda a, m: _relevance_mass(a, m, False),
            "relevance_mass_pos": lambda a, m: _relevance_mass(a, m, True)}


def _rois(masks: Any, a_shape: Sequence[int]) -> dict[str, np.ndarray]:
    """``{roi: (N, *spatial) bool}``, each 0/1 and fitting the maps (a map without channel axis is named)."""
    if not isinstance(masks, Mapping):
        raise InputTypeError("masks", type(masks).__name__, "a mapping roi name → (N, *spatial) mask",
                             message=f"masks must be a mapping roi name → (N, *spatial) mask, got "
                                     f"{type(masks).__name__}")
    return {str(k): _roi(v, a_shape, f"masks[{k!r}]") for k, v in masks.items()}


def localization_table(maps: Any, masks: Mapping[str, Any], x: Any = None, *,
                       case_ids: Sequence[Any] | None = None, method: str = "",
                       contrasts: Sequence[str] | None = None, q: float = 95,
                       point: str = "") -> LocalizationTable:
    """Every localisation metric for every ROI of ``masks``, as a :class:`LocalizationTable`.

    Rows: case_id (str), method, point (the hook point a layer-wise map such as Grad-CAM was
    taken at; empty for input attributions), contrast, roi, reason (why the value is NaN; ""
    where defined), metric, value. Metrics per ROI: ``iou@q``, ``hit_rate@q``,
    ``relevance_mass``, ``relevance_mass_pos``; with the image ``x``, also
    ``intensity_pearson`` / ``intensity_spearman`` within the ROI, and the same over the whole
    image under roi ``"all"``. One warning per call when some value is NaN.

    ``contrast`` names the input contrast a value belongs to (``contrasts``, default ``"0"``,
    ``"1"``, ...; C = ``x.shape[1]``, else ``len(contrasts)``, else the map's channels). A
    single-channel map (C_map = 1, e.g. Grad-CAM) against C > 1 contrasts covers them all: its
    map-only metrics have contrast ``"all"``, its intensity correlations one row per contrast.
    ``masks`` may be empty (then only the whole-image correlations are computed).
    """
    img = None if x is None else _image(x)
    a = _maps(maps, None if img is None else img.shape)
    q = _check_q(q)
    n = a.shape[0]
    ids = as_case_ids(case_ids, n)
    n_contrasts = img.shape[1] if img is not None else (len(contrasts) if contrasts is not None else a.shape[1])
    names = contrast_names(contrasts, n_contrasts)
    if a.shape[1] not in (1, n_contrasts):
        raise ShapeError("maps", f"{a.shape[1]} channels", f"1 or one per contrast ({n_contrasts})",
                         message=f"maps has {a.shape[1]} channels; expected 1 or one per contrast ({n_contrasts}: "
                                 f"{names})")
    rois = _rois(masks, a.shape)
    columns = ["case_id", "method", "point", "contrast", "roi", "reason", "metric", "value"]
    parts: dict[str, list[np.ndarray]] = {k: [] for k in columns}
    ids_arr = np.asarray([str(i) for i in ids], dtype=object)

    def add(res: tuple[np.ndarray, _Why], roi: str, metric: str) -> None:
        v, why = res
        labels = np.asarray(names if v.shape[1] == n_contrasts else ["all"], dtype=object)
        size = v.size
        parts["case_id"].append(np.repeat(ids_arr, v.shape[1]))
        parts["contrast"].append(np.tile(labels, n))
        parts["reason"].append(why.r.reshape(-1).astype(object))
        parts["value"].append(why.apply(v).reshape(-1))
        for col, val in (("method", method), ("point", point), ("roi", roi), ("metric", metric)):
            parts[col].append(np.full(size, val, dtype=object))

    top = _top(a, q)
    for roi, m in rois.items():
        for metric, fn in _map_metrics(q, top).items():
            add(fn(a, m), roi, metric)
        if img is not None:
            for how in CORRELATIONS:
                add(_intensity(a, img, m, how), roi, f"intensity_{how}")
    if img is not None:
        for how in CORRELATIONS:
            add(_intensity(a, img, None, how), "all", f"intensity_{how}")
    if parts["value"]:
        table = pd.DataFrame({k: np.concatenate(v) for k, v in parts.items()})
    else:
        table = pd.DataFrame(columns=columns)
    table["case_id"] = table["case_id"].astype(str)
    table["value"] = table["value"].astype(float)
    _warn("localization_table", table["reason"].to_numpy(), stacklevel=3)
    return LocalizationTable(table=table[columns], title="Localisation metrics")
