"""The ``preprocess`` section of an audit run: slice, clip, normalise, resize, crop (in that order).

Every step works per case and, for intensities, per channel; masks follow the geometry. Choices
made here, each recorded in ``case.meta["preprocess"]``:

* slice ``"max_roi"`` takes the first slice with the most ROI voxels; a case whose ROI mask is
  missing or empty is an error, since falling back to another rule would make the slice choice
  depend on the label (tumour cases at the tumour, controls elsewhere).
* ``zscore_brain`` estimates mean and std over the ``"brain"`` mask, else over the channel's
  non-zero voxels, and applies the same affine map to every voxel (nothing outside the region
  is overwritten; nnU-Net, by contrast, sets the outside to 0).
* A channel with no spread (std 0, or max = min) is only shifted (to 0) and a
  :class:`ConstantChannelWarning` names it: a blank slice or missing contrast must not stop a run.
* Resizing uses ``torch.nn.functional.interpolate`` (bilinear/trilinear, ``align_corners=False``,
  antialiased when a 2-D image shrinks, as Pillow does); masks use ``"nearest-exact"``, the
  nearest source pixel to each output pixel's centre on that same grid (PyTorch's plain
  ``"nearest"`` is shifted by half a pixel). A thin ROI can vanish when shrinking strongly; a
  mask that was non-empty and becomes empty raises an ``EmptyMaskWarning``.
* Crop/pad is centred: ``start = (size - target) // 2`` (the odd pixel goes to the end), padding
  with 0 (images) and False (masks), so padding then cropping back is the identity.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from audit.data.cohort import Case, Cohort, EmptyMaskWarning, close_hint, slices_from_volumes
from audit.run.config import PreprocessSpec
from probes.core.errors import InputTypeError, OptionError, ShapeError

__all__ = ["ConstantChannelWarning", "crop_or_pad", "normalize_channel", "preprocess", "resize_case"]


class ConstantChannelWarning(UserWarning):
    """A channel has no spread (std 0 or max = min), so it was only shifted, not scaled."""


def normalize_channel(x: np.ndarray, method: str, region: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Normalise one channel; returns the float32 result and ``{"shift", "scale", "constant"}``.

    ``y = (x - shift) / scale`` with ``zscore``: shift = mean, scale = population std (ddof 0)
    over ``region`` (a boolean mask; default all voxels); ``minmax``: shift = min, scale =
    max - min over all voxels, giving [0, 1]. With no spread, scale is 1 and ``constant`` True;
    an empty region gives shift 0. Statistics are computed in float64.
    """
    if method not in ("zscore", "minmax"):
        raise OptionError("method", repr(method), "'zscore' or 'minmax'")
    x64 = np.asarray(x, dtype=np.float64)
    vals = x64[region] if region is not None else x64.ravel()
    if vals.size == 0:
        shift, scale = 0.0, 0.0
    elif method == "zscore":
        shift, scale = float(vals.mean()), float(vals.std())
    else:
        shift, scale = float(vals.min()), float(vals.max() - vals.min())
    constant = not scale > 0
    scale = 1.0 if constant else scale
    return ((x64 - shift) / scale).astype(np.float32), {"shift": shift, "scale": scale, "constant": constant}


def crop_or_pad(arr: np.ndarray, target: Sequence[int], fill: Any = 0) -> np.ndarray:
    """Centre-crop or pad the trailing ``len(target)`` axes of ``arr`` to ``target``.

    Per axis of size n: crop keeps ``[(n - t) // 2, (n - t) // 2 + t)``; pad puts
    ``(t - n) // 2`` values of ``fill`` before and the rest after.
    """
    k = len(target)
    if arr.ndim < k:
        raise ShapeError("arr", f"shape {arr.shape}", f"at least {k} dims", message=f"arr: shape {arr.shape} has "
                         f"fewer than the {k} axes of target {tuple(target)}")
    out = arr
    for ax, t in zip(range(arr.ndim - k, arr.ndim), target):
        n = out.shape[ax]
        if t < n:
            out = np.take(out, range((n - t) // 2, (n - t) // 2 + t), axis=ax)
        elif t > n:
            width = [(0, 0)] * out.ndim
            width[ax] = ((t - n) // 2, t - n - (t - n) // 2)
            out = np.pad(out, width, constant_values=fill)
    return np.ascontiguousarray(out)


def resize_case(image: np.ndarray, masks: dict[str, np.ndarray], size: Sequence[int]
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Resize a ``C×spatial`` image (bi/trilinear, ``align_corners=False``, antialias when a 2-D
    image shrinks) and its masks (``nearest-exact``: source index ``floor((i + 0.5) * n / t)``).

    Constant images come back exactly constant (the per-channel minimum is subtracted before and
    added after interpolating).
    """
    size = tuple(int(s) for s in size)
    k = len(size)
    if image.ndim != k + 1:
        raise ShapeError("size", size, f"{image.ndim - 1} sizes", message=f"size: {size} has {k} sizes but the "
                         f"image {image.shape} has {image.ndim - 1} spatial dims")
    if tuple(image.shape[1:]) == size:
        return image, dict(masks)
    shrink = any(t < n for t, n in zip(size, image.shape[1:]))
    # Interpolation weights do not sum to exactly 1 in float32: taking out each channel's minimum
    # first keeps constant images and flat (minimum-valued) backgrounds exact.
    low = image.reshape(len(image), -1).min(axis=1).reshape(-1, *[1] * k).astype(np.float32)
    x = torch.from_numpy(np.array(image - low, dtype=np.float32))[None]
    y = F.interpolate(x, size=size, mode="bilinear" if k == 2 else "trilinear", align_corners=False,
                      antialias=bool(shrink and k == 2))  # torch antialiases 2-D (bi)linear only
    y = y[0].numpy() + low
    out = {}
    for name, m in masks.items():
        mt = torch.from_numpy(np.array(m, dtype=np.float32))[None, None]
        out[name] = (F.interpolate(mt, size=size, mode="nearest-exact")[0, 0] > 0.5).numpy()
    return y, out


def _check(cohort: Cohort, spec: PreprocessSpec) -> None:
    """Validate the spec against the cohort before any work, naming config keys."""
    if not isinstance(cohort, Cohort):
        raise InputTypeError("cohort", type(cohort).__name__, "a Cohort")
    if not isinstance(spec, PreprocessSpec):
        raise InputTypeError("spec", type(spec).__name__, "an audit.run.config.PreprocessSpec")
    if not len(cohort):
        return
    nd, shape = cohort.spatial_ndim, cohort.spatial_shape or cohort[0].spatial_shape
    if spec.slice is not None:
        if nd != 3:
            raise ShapeError("preprocess.slice", f"a {nd}-D cohort (e.g. {cohort[0].case_id!r}, image shape "
                             f"{cohort[0].image.shape})", "a 3-D cohort", message="preprocess.slice: slicing needs "
                             f"a 3-D cohort, but the cohort is {nd}-D (e.g. case {cohort[0].case_id!r}, image shape "
                             f"{cohort[0].image.shape}); remove the slice section for 2-D images")
        nd, shape = 2, tuple(s for a, s in enumerate(shape) if a != spec.slice.axis)
    for key in ("resize", "crop"):
        val = getattr(spec, key)
        if val is None:
            continue
        if len(val) != nd:
            raise ShapeError(f"preprocess.{key}", f"{list(val)} ({len(val)} sizes)", f"{nd} sizes",
                             message=f"preprocess.{key}: {list(val)} has {len(val)} sizes but the cohort's images "
                                     f"are {nd}-D (spatial shape {shape}" + (" after slicing)" if spec.slice else ")"))
        if any(v < 1 for v in val):
            raise OptionError(f"preprocess.{key}", list(val), "positive sizes")


def _slice(cohort: Cohort, spec: Any) -> Cohort:
    """One 2-D slice per volume with :func:`slices_from_volumes` (index int, middle, max_roi)."""
    axis, index, roi = spec.axis, spec.index, spec.roi
    rest = tuple(a for a in range(3) if a != axis)

    def pick(case: Case) -> list[int]:
        n = case.spatial_shape[axis]
        if index == "middle":
            return [n // 2]
        if index == "max_roi":
            if roi not in case.masks:
                raise OptionError("preprocess.slice.roi", repr(roi), "a mask every case carries",
                                  message=f"preprocess.slice.roi: case {case.case_id!r} has no mask {roi!r} to choose "
                                          f"its slice (it has {tuple(case.masks)}){close_hint(roi, case.masks)}")
            per_slice = case.masks[roi].sum(axis=rest)
            if not per_slice.any():
                raise OptionError("preprocess.slice.roi", repr(roi), "a non-empty mask",
                                  message=f"preprocess.slice.roi: case {case.case_id!r} has an empty {roi!r} mask, so "
                                          "no slice holds the ROI; use index 'middle' or an int for such cohorts")
            return [int(np.argmax(per_slice))]  # the first of equal maxima
        if not -n <= index < n:
            raise OptionError("preprocess.slice.index", index, f"an index in {-n}..{n - 1}",
                              message=f"preprocess.slice.index: {index} is out of range for axis {axis} of size {n} "
                                      f"(case {case.case_id!r}, spatial shape {case.spatial_shape})")
        return [index % n]

    return slices_from_volumes(cohort, axis=axis, indices=pick)


def preprocess(cohort: Cohort, spec: PreprocessSpec) -> Cohort:
    """Apply ``spec`` (slice, clip, normalise, resize, crop, in that order) to every case.

    Clip: per case and channel, to ``[P_low, P_high]`` of that channel's voxels
    (``numpy.percentile``, linear interpolation). Normalise: ``zscore`` (mean/std of the
    channel), ``zscore_brain`` (over the ``"brain"`` mask, else the non-zero voxels), ``minmax``
    (to [0, 1]); see :func:`normalize_channel` and the module docstring for the choices made.
    Returns a new Cohort of new Cases (same ids, labels, patients; meta plus ``"preprocess"``,
    a short record of what was done), with the cohort's meta; a spec with nothing to do
    returns ``cohort`` itself.

    Raises:
        ShapeError: resize/crop sizes that do not match the cohort's dimensionality, or slice on
            a 2-D cohort, naming the config key, the value and the cohort's shape.
        OptionError: a slice index out of range, or a max_roi case without (or with an empty) ROI.
    """
    _check(cohort, spec)
    if spec.slice is None and spec.clip_percentiles is None and spec.normalize == "none" \
            and spec.resize is None and spec.crop is None:
        return cohort
    if spec.slice is not None and len(cohort):
        cohort = _slice(cohort, spec.slice)
    constant: list[str] = []
    vanished: list[str] = []
    cases = []
    for case in cohort:
        rec: dict[str, Any] = {}
        if spec.slice is not None:
            rec["slice"] = {"axis": spec.slice.axis, "index": case.meta["slice_index"], "rule": spec.slice.index}
        image = np.array(case.image, dtype=np.float32)
        if spec.clip_percentiles is not None:
            bounds = np.percentile(image.reshape(len(image), -1).astype(np.float64), spec.clip_percentiles, axis=1)
            per_channel = (-1, *[1] * (image.ndim - 1))
            image = np.clip(image, bounds[0].reshape(per_channel), bounds[1].reshape(per_channel)).astype(np.float32)
            rec["clip"] = {ch: [float(lo), float(hi)] for ch, lo, hi in zip(case.channels, *bounds)}
        if spec.normalize != "none":
            method = "minmax" if spec.normalize == "minmax" else "zscore"
            region, rec["region"] = None, "all"
            if spec.normalize == "zscore_brain":
                rec["region"] = "brain" if "brain" in case.masks else "nonzero"
            stats = {}
            for c, ch in enumerate(case.channels):
                if spec.normalize == "zscore_brain":
                    region = case.masks["brain"] if "brain" in case.masks else image[c] != 0
                image[c], st = normalize_channel(image[c], method, region)
                stats[ch] = [st["shift"], st["scale"]]
                if st["constant"]:
                    constant.append(f"{case.case_id}/{ch}")
            rec["normalize"], rec["shift_scale"] = spec.normalize, stats
        masks = dict(case.masks)
        if spec.resize is not None:
            rec["resize"] = [list(case.spatial_shape), list(spec.resize)]
            image, masks = resize_case(image, masks, spec.resize)
        if spec.crop is not None:
            rec["crop"] = [list(image.shape[1:]), list(spec.crop)]
            image = crop_or_pad(image, spec.crop, 0.0)
            masks = {k: crop_or_pad(m, spec.crop, False) for k, m in masks.items()}
        vanished += [f"{case.case_id}/{k}" for k, m in masks.items() if case.masks[k].any() and not m.any()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EmptyMaskWarning)  # masks empty before are reported elsewhere
            cases.append(Case(case.case_id, image, case.channels, case.label, case.patient_id, masks,
                              {**case.meta, "preprocess": rec}))
    if constant:
        warnings.warn(f"preprocess.normalize={spec.normalize!r}: {len(constant)} channel(s) have no spread and "
                      f"were only shifted, e.g. {constant[:5]}", ConstantChannelWarning, stacklevel=2)
    if vanished:
        warnings.warn(f"preprocess: {len(vanished)} non-empty mask(s) became empty after resize/crop, e.g. "
                      f"{vanished[:5]}", EmptyMaskWarning, stacklevel=2)
    return Cohort(cases, cohort.meta)

