"""Interpretable features of perturbation methods: grid patches and SLIC supervoxels, 2D and 3D.

A feature mask labels every input element with the feature it belongs to; perturbation
methods switch whole features on and off. Masks are integer tensors ``(1 or N, 1 or C,
*spatial)``: with ``per_contrast`` every (contrast, region) pair is its own feature, so a
method gives one map per input contrast.

SLIC (Achanta et al., "SLIC superpixels compared to state-of-the-art superpixel methods", IEEE
TPAMI 2012; ``skimage.segmentation.slic``) runs on the channel-last image with each contrast
min-max scaled to [0, 1] per case: its ``compactness`` is in intensity units and MRI contrasts
have arbitrary, unequal ranges. skimage's default compactness (10) is meant for 0-100 Lab
colour: on [0, 1] channels it yields a plain grid that ignores edges (a bright 6³ cube in a
16³ volume was cut into 8 pieces; at 1.0 it is one segment).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from probes.core.errors import InputTypeError, OptionError, ShapeError
from probes.core.validate import as_input, check_int

__all__ = ["as_segments", "grid_feature_mask", "slic_feature_mask", "slic_segments"]


def grid_feature_mask(shape: Sequence[int], grid: int | Sequence[int] | None = None,
                      per_contrast: bool = True) -> Tensor:
    """Regular grid of patches as a feature mask shaped ``(1, C or 1, *spatial)``.

    ``shape`` is the input's ``(N, C, *spatial)``; ``grid`` the number of patches per spatial
    axis (``None``: 4 in 1D/2D, 3 in 3D), at most the axis size (every patch non-empty). With ``per_contrast`` every (contrast, patch) pair is
    its own feature (label = contrast · n_patches + patch).
    """
    shape = _as_shape(shape)
    spatial = tuple(shape[2:])
    if grid is None:
        grid = 4 if len(spatial) <= 2 else 3
    g = (grid,) * len(spatial) if _is_int(grid) else tuple(grid) if isinstance(grid, (tuple, list)) else None
    if g is None or len(g) != len(spatial) or not all(_is_int(v) and 1 <= v <= s for v, s in zip(g, spatial)):
        raise OptionError("grid", repr(grid), f"a positive int or one int per spatial axis of {spatial}, "
                          "each at most the axis size",
                          message=f"grid={grid!r} must be a positive int or one int per spatial axis "
                                  f"of input shape {tuple(shape)} (at most the axis size)")
    idx = [torch.clamp(torch.arange(s) * gi // s, max=gi - 1) for s, gi in zip(spatial, g)]
    patch = torch.zeros(spatial, dtype=torch.long)
    for ax, (i, gi) in enumerate(zip(idx, g)):
        view = [1] * len(spatial)
        view[ax] = -1
        patch = patch * gi + i.view(view)
    n_patch = int(np.prod(g))
    if not per_contrast:
        return patch[None, None].contiguous()
    c = shape[1]
    return (torch.arange(c).view(1, c, *[1] * len(spatial)) * n_patch + patch[None, None]).contiguous()


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _as_shape(shape: object) -> tuple[int, ...]:
    """An input shape ``(N, C, *spatial)`` with 1-3 spatial axes and positive sizes."""
    if isinstance(shape, (torch.Size, tuple, list)) and all(_is_int(s) for s in shape):
        if 3 <= len(shape) <= 5 and min(shape) >= 1:
            return tuple(int(s) for s in shape)
        raise ShapeError("shape", repr(tuple(shape)), "(N, C, *spatial) with 1-3 spatial axes, sizes >= 1")
    raise InputTypeError("shape", type(shape).__name__, "a sequence of ints (N, C, *spatial), e.g. x.shape")


def slic_segments(image: Tensor, n_segments: int, compactness: float) -> Tensor:
    """SLIC supervoxels of one image ``(C, *spatial)`` → long labels ``(*spatial)``, 0..S−1.

    Each contrast is min-max scaled to [0, 1] first (module docstring); labels are made
    consecutive from 0 in order of their first SLIC label.
    """
    from skimage.segmentation import slic

    arr = image.detach().float().cpu().numpy()
    lo = arr.reshape(arr.shape[0], -1).min(1).reshape((-1,) + (1,) * (arr.ndim - 1))
    hi = arr.reshape(arr.shape[0], -1).max(1).reshape((-1,) + (1,) * (arr.ndim - 1))
    arr = (arr - lo) / np.where(hi > lo, hi - lo, 1.0)
    seg = slic(np.moveaxis(arr, 0, -1), n_segments=n_segments, compactness=compactness,
               channel_axis=-1, start_label=0)
    return torch.unique(torch.as_tensor(seg).long(), return_inverse=True)[1]


def slic_feature_mask(x: Tensor, n_segments: int = 50, compactness: float = 0.1,
                      per_contrast: bool = True) -> Tensor:
    """SLIC supervoxels per case (:func:`slic_segments`) as a ``(N, C or 1, *spatial)`` mask.

    With ``per_contrast`` each (contrast, segment) pair is a feature (label = contrast · S + segment).
    ``x`` must be 2D or 3D images ``(N, C, H, W)`` / ``(N, C, D, H, W)``, finite.
    """
    x = as_input(x, "x")
    if x.dim() not in (4, 5):
        raise ShapeError("x", f"shape {tuple(x.shape)}", "(N, C, H, W) or (N, C, D, H, W): SLIC needs 2 or 3 "
                         "spatial axes")
    check_int(n_segments, "n_segments")
    if isinstance(compactness, bool) or not isinstance(compactness, (int, float)) or not compactness > 0:
        raise OptionError("compactness", repr(compactness), "a number > 0")
    masks = []
    c = x.shape[1]
    for xi in x:
        seg = slic_segments(xi, n_segments, compactness)
        k = int(seg.max()) + 1
        masks.append(torch.stack([seg + ch * k for ch in range(c)]) if per_contrast else seg[None])
    return torch.stack(masks).contiguous()


def as_segments(segments: Tensor | np.ndarray | None, x: Tensor, n_segments: int,
                compactness: float) -> list[Tensor]:
    """One long tensor ``(*spatial)`` of labels 0..S−1 per case of ``x`` (N, C, *spatial).

    ``segments``: integer labels ``(*spatial)`` (or ``(1, *spatial)``, ``(1, 1, *spatial)``)
    shared by all cases, ``(N, *spatial)`` or ``(N, 1, *spatial)``; ``None``: SLIC per case
    (:func:`slic_segments`).
    """
    n, spatial = x.shape[0], tuple(x.shape[2:])
    if segments is None:
        return [slic_segments(x[i], n_segments, compactness).to(x.device) for i in range(n)]
    s = torch.as_tensor(segments)
    if s.dtype.is_floating_point or s.dtype == torch.bool:
        raise ValueError(f"segments must hold integer labels; got dtype {s.dtype}")
    k = len(spatial)
    if s.dim() == k + 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.dim() == k + 1 and s.shape[0] == 1:
        s = s[0]
    if s.dim() == k and tuple(s.shape) == spatial:
        raw = [s] * n
    elif s.dim() == k + 1 and tuple(s.shape) == (n,) + spatial:
        raw = list(s)
    else:
        raise ValueError(f"segments must have shape {spatial}, {(n,) + spatial} or "
                         f"{(n, 1) + spatial} (x is {tuple(x.shape)}); got {tuple(s.shape)}")
    # relabel to 0..S-1 so labels index the feature vector directly
    return [torch.unique(r.to(x.device).long(), return_inverse=True)[1] for r in raw]
