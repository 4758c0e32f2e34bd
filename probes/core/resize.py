"""One ROI resizer: a mask at image resolution read at a feature map's resolution."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from probes.core.errors import LabelError, NonFiniteError, OptionError, ShapeError

__all__ = ["resize_mask", "ResizeMode"]

ResizeMode = Literal["area", "overlap", "nearest"]


def resize_mask(mask: Tensor, spatial: Sequence[int], *, mode: ResizeMode = "area",
                threshold: float = 0.0) -> Tensor:
    """Resize ROI masks ``(N, *S)`` or ``(N, 1, *S)`` to ``spatial``, keeping that layout.

    Modes:

    * ``"area"`` — float64 weights in [0, 1]: the fraction of each output cell the ROI covers
      (adaptive average pooling, ``F.interpolate(mode="area")``). Used to pool a feature map
      over an ROI (a weighted mean).
    * ``"overlap"`` — bool: ``area fraction > threshold`` (``threshold`` in [0, 1)); 0 keeps
      every cell the ROI touches, so a thin skull ring survives downsampling.
    * ``"nearest"`` — bool: nearest-neighbour sampling of the mask (``F.interpolate(mode=
      "nearest") > 0.5``); the grid of PyTorch's nearest mode (floor of the scaled index).
    """
    k = len(spatial)
    if k not in (1, 2, 3) or any(int(s) != s or s < 1 for s in spatial):
        raise OptionError("spatial", tuple(spatial), "1-3 positive sizes",
                          message=f"spatial: only 1-3 positive spatial sizes are supported, got {tuple(spatial)}")
    if not isinstance(mask, Tensor):
        mask = torch.as_tensor(mask)
    if mask.dim() == k + 2 and mask.shape[1] == 1:
        m, squeeze = mask, False
    elif mask.dim() == k + 1:
        m, squeeze = mask[:, None], True
    else:
        raise ShapeError("mask", f"shape {tuple(mask.shape)}", f"(N, *spatial) or (N, 1, *spatial) with {k} spatial dims",
                         message=f"mask must be (N, *spatial) or (N, 1, *spatial) with {k} spatial dims, "
                                 f"got shape {tuple(mask.shape)}")
    if m.dtype != torch.bool:
        if m.is_floating_point() and not bool(torch.isfinite(m).all()):
            raise NonFiniteError("mask", "NaN/Inf", "ROI weights in [0, 1]", message="mask contains NaN/Inf")
        if bool(((m < 0) | (m > 1)).any()):
            raise LabelError("mask", f"values in [{float(m.min())}, {float(m.max())}]", "0/1 (or weights in [0, 1])")
    size = tuple(int(s) for s in spatial)
    if mode == "nearest":
        out = F.interpolate(m.float(), size=size, mode="nearest") > 0.5
    elif mode in ("area", "overlap"):
        frac = m.to(torch.float64)
        if tuple(frac.shape[2:]) != size:
            frac = F.interpolate(frac, size=size, mode="area")
        if mode == "area":
            out = frac
        else:
            if not 0 <= threshold < 1:
                raise OptionError("threshold", threshold, "[0, 1)", message=f"threshold must be in [0, 1), got {threshold}")
            out = frac > threshold + 1e-7  # float rounding: an untouched cell can be ~1e-9 off 0
    else:
        raise OptionError("mode", repr(mode), "'area', 'overlap' or 'nearest'",
                          message=f"mode={mode!r} is not one of 'area', 'overlap', 'nearest'")
    return out[:, 0] if squeeze else out
