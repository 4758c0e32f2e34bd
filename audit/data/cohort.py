"""Cases and cohorts: medaudit's data model, its torch Dataset view and its NIfTI round trip.

Arrays: ``Case.image`` is float32 ``C×H×W`` (2-D) or ``C×D×H×W`` (3-D); masks are boolean with
the image's spatial shape. A Case holds private read-only copies, so an instrument that edits
an image in place fails loudly instead of corrupting the cohort for the next instrument.

NIfTI axis convention: medaudit spatial axes are ``(D, H, W)`` / ``(H, W)``; on disk the NIfTI
voxel axes ``(i, j, k)`` hold ``(H, W, D)`` (depth moves last), so ``nifti[i, j, k] ==
image[c, k, i, j]``, and a 2-D ``(H, W)`` image is a one-slice volume stored as ``H×W×1``. This
keeps ``k`` as the slice (stacking) axis, as in most acquisitions, and makes a 2-D case exactly
a one-slice 3-D case. ``meta["affine"]`` (4×4) maps NIfTI voxel ``(i, j, k)`` to world mm as in
nibabel; without one the identity is written, and on reading an identity affine is left out of
``meta`` so that cases without one round-trip unchanged. Headers store the affine as float32,
so only float32-representable affines round-trip exactly.
"""
from __future__ import annotations

import difflib
import numbers
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, default_collate

from probes.core.errors import AuditInputError, InputTypeError, OptionError, ShapeError

__all__ = ["Case", "Cohort", "CohortDataset", "EmptyMaskWarning", "ManifestError", "collate",
           "slices_from_volumes", "close_hint", "BAD_NAME", "COHORT_FORMAT"]

COHORT_FORMAT = "medaudit-cohort/1"
_FIXED = ("case_id", "patient_id", "label", "spatial_shape", "masks")
BAD_NAME = re.compile(r'[\\/:*?"<>|\x00-\x1f]')
Transform = Callable[[dict[str, Any]], dict[str, Any]]


class EmptyMaskWarning(UserWarning):
    """A case carries a ROI mask without any True voxel (often a wrong file or label value)."""


class ManifestError(AuditInputError):
    """A manifest CSV is malformed: missing column, empty required cell, unparsable value.

    ``name`` is the argument holding the manifest (``"csv_path"`` of ``read_manifest``,
    ``"manifest"`` of ``read_images``), ``got`` the column or cell at fault; the message names
    the file, the line and the column.
    """

    def __init__(self, message: str, got: Any = None, expected: str = "", *, name: str = "csv_path"):
        # the message names the file already; the argument is in ``name`` (no prefix)
        ValueError.__init__(self, message)
        self.name, self.got, self.expected = name, got, expected


def close_hint(name: str, options: Iterable[str]) -> str:
    """Suffix suggesting close matches, because typos in channel/column names are common."""
    hits = difflib.get_close_matches(str(name), [str(o) for o in options], n=3, cutoff=0.5)
    return f"; did you mean {', '.join(map(repr, hits))}?" if hits else ""


# ----------------------------------------------------------------------------------- Case
@dataclass(frozen=True, repr=False, eq=False)
class Case:
    """One imaging case: a multi-contrast image, its channel names, label, patient and ROI masks.

    ``image`` becomes a C-contiguous read-only float32 copy (``C×H×W`` or ``C×D×H×W``);
    ``patient_id`` defaults to ``case_id``; ``masks`` become read-only boolean copies (0/1
    numeric masks are accepted); ``meta`` is a shallow copy of free-form metadata (ground-truth
    mechanism, slice index, source files, ``"affine"``...). Equality is identity.
    """

    case_id: str
    image: np.ndarray
    channels: tuple[str, ...]
    label: int | None = None
    patient_id: str | None = None
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Frozen dataclass: validated copies replace the inputs once, here, and never again.
        def put(k: str, v: Any) -> None:
            object.__setattr__(self, k, v)

        cid = self.case_id
        if not isinstance(cid, str) or not cid:
            raise TypeError(f"case_id must be a non-empty str, got {cid!r} ({type(cid).__name__})")
        arr = np.asarray(self.image)
        if arr.dtype.kind not in "biuf" or arr.ndim not in (3, 4) or 0 in arr.shape:
            raise ValueError(f"case {cid!r}: image must be a real-valued C×H×W (2-D) or "
                             f"C×D×H×W (3-D) array, got shape {arr.shape} ({arr.ndim} dims), "
                             f"{arr.dtype}")
        chans = (self.channels,) if isinstance(self.channels, str) else tuple(self.channels)
        dup = sorted({ch for ch in chans if chans.count(ch) > 1})
        if dup or not all(isinstance(ch, str) and ch for ch in chans):
            raise ValueError(f"case {cid!r}: channel names must be distinct non-empty str, got "
                             f"{chans}" + (f" (duplicates {dup})" if dup else ""))
        if arr.shape[0] != len(chans):
            raise ValueError(f"case {cid!r}: image has {arr.shape[0]} channel(s) (shape "
                             f"{arr.shape}) but {len(chans)} channel name(s) were given: {chans}")
        with np.errstate(over="ignore"):  # overflow is reported below, with names, as Inf
            img = np.array(arr, dtype=np.float32, order="C", copy=True)
        finite = np.isfinite(img)
        if not finite.all():
            bad = (~finite).reshape(len(chans), -1).sum(axis=1)
            detail = ", ".join(f"{chans[i]!r} ({int(n)})" for i, n in enumerate(bad) if n)
            raise ValueError(f"case {cid!r}: image has {int(bad.sum())} non-finite voxel(s) "
                             f"(NaN/Inf) in channel(s) {detail}")
        img.flags.writeable = False
        pid = cid if self.patient_id is None else self.patient_id
        if not isinstance(pid, str) or not pid:
            raise TypeError(f"case {cid!r}: patient_id must be a non-empty str, got {pid!r}")
        for what, obj in (("masks", self.masks), ("meta", self.meta)):
            if not isinstance(obj, Mapping) or not all(isinstance(k, str) and k for k in obj):
                raise TypeError(f"case {cid!r}: {what} must be a mapping with non-empty str "
                                f"keys, got {type(obj).__name__}")
        put("image", img)
        put("channels", chans)
        put("label", _as_label(self.label, cid))
        put("patient_id", pid)
        put("masks", {k: _as_mask(k, m, img.shape[1:], cid) for k, m in self.masks.items()})
        put("meta", dict(self.meta))

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Unpickled arrays (e.g. in DataLoader workers) come back writable; keep them read-only.
        self.__dict__.update(state)
        for arr in (self.image, *self.masks.values()):
            arr.flags.writeable = False

    def __repr__(self) -> str:
        return (f"Case({self.case_id!r}, shape={self.image.shape}, channels={self.channels}, "
                f"label={self.label}, patient_id={self.patient_id!r}, masks={tuple(self.masks)})")

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Spatial shape ``(H, W)`` or ``(D, H, W)``."""
        return tuple(self.image.shape[1:])

    @property
    def ndim_spatial(self) -> int:
        """2 for a 2-D case, 3 for a 3-D case."""
        return self.image.ndim - 1

    def channel(self, name: str) -> np.ndarray:
        """The read-only spatial array of channel ``name``; KeyError suggests close names."""
        if name not in self.channels:
            raise KeyError(f"case {self.case_id!r} has no channel {name!r}; channels are "
                           f"{self.channels}{close_hint(name, self.channels)}")
        return self.image[self.channels.index(name)]

    def select_channels(self, names: Sequence[str]) -> Case:
        """A new Case holding only ``names``, in that order (masks, label and meta kept)."""
        names = (names,) if isinstance(names, str) else tuple(names)
        image = np.stack([self.channel(n) for n in names])  # channel() names unknown ones
        return Case(self.case_id, image, names, self.label, self.patient_id, self.masks, self.meta)

    def to_tensor(self) -> torch.Tensor:
        """The image as a new (writable) float32 tensor of shape ``C×spatial``."""
        return torch.tensor(self.image)


def _as_label(label: Any, cid: str) -> int | None:
    """Validate an integral class label (integral floats such as 1.0 are accepted)."""
    if label is None or isinstance(label, numbers.Integral):
        return None if label is None else int(label)
    if isinstance(label, numbers.Real) and float(label).is_integer():
        return int(label)
    raise ValueError(f"case {cid!r}: label must be an integer or None, got {label!r}")


def _as_mask(name: str, mask: Any, shape: tuple[int, ...], cid: str) -> np.ndarray:
    """Validate one ROI mask against the image's spatial shape; convert 0/1 masks to bool."""
    m = np.asarray(mask)
    if m.shape != shape:
        raise ValueError(f"case {cid!r}: mask {name!r} has shape {m.shape} but the image's "
                         f"spatial shape is {shape}")
    if m.dtype != bool:
        ok = (m == 0) | (m == 1) if m.dtype.kind in "biuf" else np.zeros(m.shape, bool)
        if not ok.all():
            vals = np.unique(m[~ok])[:5].tolist()
            raise ValueError(f"case {cid!r}: mask {name!r} ({m.dtype}) must hold only 0/1 to be "
                             f"read as boolean; found other values, e.g. {vals}")
    out = np.array(m, dtype=bool, order="C", copy=True)
    if not out.any():
        warnings.warn(f"case {cid!r}: mask {name!r} is empty (no True voxel)", EmptyMaskWarning,
                      stacklevel=5)
    out.flags.writeable = False
    return out


# --------------------------------------------------------------------------------- Cohort
class Cohort:
    """An ordered collection of Cases sharing channel names and spatial dimensionality.

    Cases are immutable, so subsets and splits share Case objects safely. ``meta`` holds
    cohort-level metadata (e.g. the ground truth of a synthetic cohort).
    """

    def __init__(self, cases: Iterable[Case] = (), meta: Mapping[str, Any] | None = None) -> None:
        self._cases: list[Case] = []
        self._index: dict[str, int] = {}
        self.meta: dict[str, Any] = dict(meta or {})
        for case in cases:
            self.append(case)

    def append(self, case: Case) -> None:
        """Add a case, checking its type, unique id, channel names and dimensionality."""
        if not isinstance(case, Case):
            raise TypeError(f"a Cohort holds Case objects, got {type(case).__name__}")
        if case.case_id in self._index:
            raise ValueError(f"duplicate case_id {case.case_id!r} in cohort")
        ref = self._cases[0] if self._cases else case
        if case.channels != ref.channels:
            raise ValueError(f"case {case.case_id!r} has channels {case.channels} but the "
                             f"cohort's are {ref.channels} (from case {ref.case_id!r})")
        if case.ndim_spatial != ref.ndim_spatial:
            raise ValueError(f"case {case.case_id!r} is {case.ndim_spatial}-D (image shape "
                             f"{case.image.shape}) but the cohort's cases are "
                             f"{ref.ndim_spatial}-D (e.g. {ref.case_id!r}, {ref.image.shape})")
        self._index[case.case_id] = len(self._cases)
        self._cases.append(case)

    def __len__(self) -> int:
        return len(self._cases)

    def __iter__(self) -> Iterator[Case]:
        return iter(self._cases)

    def __contains__(self, case_id: object) -> bool:
        return case_id in self._index

    def __getitem__(self, key: int | str | slice) -> Any:
        """A Case by position or case_id; a slice gives a sub-Cohort."""
        if isinstance(key, slice):
            return Cohort(self._cases[key], self.meta)
        if isinstance(key, str):
            if key not in self._index:
                raise KeyError(f"no case {key!r} in cohort of {len(self)}"
                               f"{close_hint(key, self._index)}")
            return self._cases[self._index[key]]
        if isinstance(key, (numbers.Integral, np.integer)) and not isinstance(key, bool):
            return self._cases[int(key)]
        raise TypeError(f"index a Cohort by int, case_id str or slice, got {type(key).__name__}")

    def __repr__(self) -> str:
        return (f"Cohort(n={len(self)}, patients={len(set(self.patient_ids))}, "
                f"channels={self.channels}, spatial_ndim={self.spatial_ndim})")

    @property
    def channels(self) -> tuple[str, ...]:
        """Channel names shared by all cases (``()`` for an empty cohort)."""
        return self._cases[0].channels if self._cases else ()

    @property
    def spatial_ndim(self) -> int | None:
        """2 or 3, or None for an empty cohort."""
        return self._cases[0].ndim_spatial if self._cases else None

    @property
    def spatial_shape(self) -> tuple[int, ...] | None:
        """The common spatial shape, or None if cases differ (then batch with batch_size=1)."""
        shapes = {c.spatial_shape for c in self._cases}
        return shapes.pop() if len(shapes) == 1 else None

    @property
    def case_ids(self) -> list[str]:
        """Case ids in order."""
        return [c.case_id for c in self._cases]

    @property
    def patient_ids(self) -> list[str]:
        """Patient id of each case, in case order (repeats when a patient has several cases)."""
        return [c.patient_id for c in self._cases]

    @property
    def labels(self) -> list[int | None]:
        """Label of each case, in case order."""
        return [c.label for c in self._cases]

    @property
    def manifest(self) -> pd.DataFrame:
        """One row per case: case_id, patient_id, label (Int64), spatial_shape, masks, then meta.

        A meta key equal to one of those five column names appears as ``meta_<key>``.
        """
        rows = [{"case_id": c.case_id, "patient_id": c.patient_id, "label": c.label,
                 "spatial_shape": c.spatial_shape, "masks": tuple(c.masks),
                 **{(f"meta_{k}" if k in _FIXED else k): v for k, v in c.meta.items()}}
                for c in self._cases]
        df = pd.DataFrame(rows, columns=None if rows else list(_FIXED))
        df["label"] = pd.array(self.labels, dtype="Int64")
        return df

    def subset(self, selector: Sequence[str] | Sequence[int] | Sequence[bool] | np.ndarray
               ) -> Cohort:
        """A sub-Cohort from case ids (in the given order), int positions, or a boolean mask."""
        if isinstance(selector, str):
            selector = [selector]
        items = np.asarray(selector).tolist() if isinstance(selector, (np.ndarray, pd.Series)) \
            else list(selector)
        if items and all(isinstance(s, (bool, np.bool_)) for s in items):
            if len(items) != len(self):
                raise ValueError(f"boolean selector has length {len(items)} but the cohort has "
                                 f"{len(self)} cases")
            return Cohort([c for c, keep in zip(self._cases, items) if keep], self.meta)
        if all(isinstance(s, str) for s in items):
            return Cohort([self[s] for s in items], self.meta)
        if all(isinstance(s, (numbers.Integral, np.integer)) for s in items):
            return Cohort([self._cases[int(i)] for i in items], self.meta)
        raise TypeError("subset takes case ids, int positions or a boolean mask, got "
                        f"{sorted({type(s).__name__ for s in items})}")

    def split_by_patient(self, fractions: Sequence[float] = (0.7, 0.15, 0.15),
                         seed: int = 0) -> tuple[Cohort, ...]:
        """Patient-grouped split (e.g. ``train, val, test``); no patient lands in two splits.

        Patients (sorted, then shuffled with ``seed``) are laid end to end by case count; each
        goes to the split whose cumulative-fraction interval holds the middle of its cases, so
        sizes track ``fractions`` in cases (slices), not patients. Deterministic for a seed and
        independent of case order. Warns when a split with a positive fraction gets no patient.
        """
        fr = np.asarray(fractions, dtype=float)
        if fr.ndim != 1 or fr.size == 0 or (fr < 0).any() or not np.isclose(fr.sum(), 1.0):
            raise ValueError(f"fractions must be non-negative and sum to 1, got {tuple(fractions)}")
        counts: dict[str, int] = {}
        for c in self._cases:
            counts[c.patient_id] = counts.get(c.patient_id, 0) + 1
        patients = sorted(counts)
        bounds = np.cumsum(fr)
        bounds[-1] = np.inf  # float round-off must not leave the last case unassigned
        assign: dict[str, int] = {}
        done = 0
        for i in np.random.default_rng(seed).permutation(len(patients)):
            mid = (done + counts[patients[i]] / 2) / len(self)
            assign[patients[i]] = int(np.searchsorted(bounds, mid, side="right"))
            done += counts[patients[i]]
        out = tuple(Cohort([c for c in self._cases if assign[c.patient_id] == k], self.meta)
                    for k in range(fr.size))
        empty = [k for k in range(fr.size) if fr[k] > 0 and not len(out[k])]
        if empty and self._cases:
            warnings.warn(f"split(s) {empty} of fractions {tuple(fractions)} received no patient: "
                          f"the cohort has only {len(patients)} patient(s)", stacklevel=2)
        return out

    def as_dataset(self, mask_names: Sequence[str] | None = None,
                   transform: Transform | None = None) -> CohortDataset:
        """A torch Dataset view of the current cases; see :class:`CohortDataset`.

        Every mask name any case carries is an item key (or those in ``mask_names``); a case
        without one of them gets an empty mask of its spatial shape, so batches always collate.
        """
        return CohortDataset(self, mask_names, transform)

    def stack(self, mask_names: Sequence[str] | None = None) -> dict[str, Any]:
        """Every case in one batch: ``{"image": (N, C, *spatial), "label": (N,), "case_id": [...],
        "patient_id": [...], "masks": {name: (N, *spatial) bool}}`` (``as_dataset`` + ``collate``)."""
        if not self._cases:
            raise ValueError("cannot stack an empty cohort")
        return collate([item for item in self.as_dataset(mask_names)])


# ---------------------------------------------------------------------------- torch view
class CohortDataset(Dataset):
    """Items ``{"image": float32 C×spatial, "label": int64 scalar (-1 if None), "case_id": str,
    "patient_id": str, "masks": {name: bool tensor}}``, fresh writable tensors on every call.

    ``mask_names=None`` takes every mask name any case carries (in order of first appearance);
    a list takes those names, ``()`` none. **A mask missing on a case is an empty mask**
    (all False, of that case's spatial shape), so every item has the same mask keys and batches
    with the default collate: right for masks whose absence means "not present", such as the
    synthetic cohort's ``marker``; check coverage first where absence means "not annotated"
    (``mask_coverage`` counts the cases that carry each name). A name that no case carries is an
    error (``KeyError`` with close matches). ``transform`` maps an item dict to an item dict
    (MONAI dictionary transforms fit). Cases of different spatial shapes batch only with
    ``batch_size=1``; :func:`collate` says so with the offending case ids instead of torch's
    bare stack error.
    """

    def __init__(self, cohort: Cohort, mask_names: Sequence[str] | None = None,
                 transform: Transform | None = None) -> None:
        self._cases = list(cohort)  # a snapshot: appending to the cohort must not shift indices
        carried = list(dict.fromkeys(m for c in self._cases for m in c.masks))
        if mask_names is None:
            mask_names = carried
        elif isinstance(mask_names, str):
            raise TypeError(f"mask_names must be a sequence of names, got the string {mask_names!r}")
        self.mask_names: tuple[str, ...] = tuple(mask_names)
        unknown = [m for m in self.mask_names if m not in carried]
        if unknown and self._cases:
            hints = "".join(close_hint(m, carried) for m in unknown)
            raise KeyError(f"no case carries mask(s) {unknown}; the cases carry {tuple(carried)}{hints}")
        self.mask_coverage: dict[str, int] = {m: sum(m in c.masks for c in self._cases) for m in self.mask_names}
        self.transform = transform

    def __len__(self) -> int:
        return len(self._cases)

    def __getitem__(self, i: int) -> dict[str, Any]:
        c = self._cases[i]
        masks = {m: torch.tensor(c.masks[m]) if m in c.masks else torch.zeros(c.spatial_shape, dtype=torch.bool)
                 for m in self.mask_names}
        item = {"image": c.to_tensor(),
                "label": torch.tensor(-1 if c.label is None else c.label, dtype=torch.long),
                "case_id": c.case_id, "patient_id": c.patient_id, "masks": masks}
        return self.transform(item) if self.transform is not None else item


def collate(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``default_collate`` for CohortDataset items, with a clear error for unequal shapes."""
    if not isinstance(batch, Sequence) or not batch or not all(
            isinstance(it, Mapping) and isinstance(it.get("image"), torch.Tensor) for it in batch):
        raise InputTypeError("batch", type(batch).__name__, "a non-empty sequence of CohortDataset items",
                             message="batch must be a non-empty sequence of CohortDataset items (mappings with an "
                                     f"'image' tensor), got {type(batch).__name__}")
    shapes = [tuple(it["image"].shape) for it in batch]
    if len(set(shapes)) > 1:
        detail = ", ".join(f"{it['case_id']!r} {s}" for it, s in list(zip(batch, shapes))[:8])
        raise ShapeError("batch", detail, "one image shape",
                         message=f"batch: cannot batch images of different shapes ({detail}); use "
                                 "batch_size=1 or resample/crop to one shape in the transform")
    return default_collate(list(batch))


# ------------------------------------------------------------------------------- slicing
SliceIndices = str | Sequence[int] | Callable[[Case], Iterable[int]] | None


def slices_from_volumes(cohort3d: Cohort, axis: int = 0, indices: SliceIndices = None, *,
                        min_mask_voxels: int | None = None, mask: str | None = None) -> Cohort:
    """2-D slices from a 3-D cohort, along spatial ``axis`` (0=D, 1=H, 2=W).

    ``indices``: None or ``"all"`` for every slice, ints used for every case, or a callable
    ``f(case) -> ints``. With ``mask`` (e.g. ``"gtv"``) only slices where that mask has at
    least ``min_mask_voxels`` (default 1) voxels are kept. New ids are ``<case_id>_z<idx>``
    (``_y``/``_x`` for axes 1/2) with the same patient_id, so splits stay patient-grouped;
    masks are sliced; meta gains ``source_case_id``, ``slice_axis`` and ``slice_index``, and a
    source ``"affine"`` becomes the slice's own (same world coordinates under this module's
    NIfTI convention). Empty sliced masks are normal off the lesion: no EmptyMaskWarning here.
    """
    if not isinstance(cohort3d, Cohort):
        raise InputTypeError("cohort3d", type(cohort3d).__name__, "a Cohort",
                             message=f"cohort3d must be a Cohort, got {type(cohort3d).__name__}")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise OptionError("axis", repr(axis), "an int in -3..2")
    if len(cohort3d) and cohort3d.spatial_ndim != 3:
        raise ShapeError("cohort3d", message=f"slices_from_volumes needs a 3-D cohort, got {cohort3d.spatial_ndim}-D "
                         f"(e.g. case {cohort3d[0].case_id!r}, shape {cohort3d[0].image.shape})")
    if not -3 <= axis <= 2:
        raise OptionError("axis", message=f"axis must be a spatial axis in -3..2 of (D, H, W), got {axis}")
    if min_mask_voxels is not None and mask is None:
        raise OptionError("mask", message="min_mask_voxels needs mask=<name> to say which mask to count")
    axis %= 3
    rest = tuple(a for a in range(3) if a != axis)
    out = Cohort(meta={**cohort3d.meta, "slice_axis": axis})
    for case in cohort3d:
        n = case.spatial_shape[axis]
        if indices is None or (isinstance(indices, str) and indices == "all"):
            wanted: Iterable[Any] = range(n)
        elif isinstance(indices, str):
            raise OptionError("indices", message=f"indices must be None, 'all', ints or a callable, got {indices!r}")
        else:
            wanted = indices(case) if callable(indices) else indices
        chosen = []
        for i in wanted:
            if not isinstance(i, (numbers.Integral, np.integer)) or not -n <= i < n:
                raise IndexError(f"case {case.case_id!r}: slice index {i!r} out of range for axis "
                                 f"{axis} of size {n} (spatial shape {case.spatial_shape})")
            chosen.append(int(i) % n)
        if mask is not None:
            if mask not in case.masks:
                raise KeyError(f"case {case.case_id!r} has no mask {mask!r}; it has "
                               f"{tuple(case.masks)}{close_hint(mask, case.masks)}")
            per_slice = case.masks[mask].sum(axis=rest)
            least = 1 if min_mask_voxels is None else min_mask_voxels
            chosen = [i for i in chosen if per_slice[i] >= least]
        for i in chosen:
            meta = {**case.meta, "source_case_id": case.case_id, "slice_axis": axis,
                    "slice_index": i}
            if "affine" in case.meta:
                meta["affine"] = np.asarray(case.meta["affine"], float) @ _slice_voxel_map(axis, i)
            masks = {k: np.take(m, i, axis=axis) for k, m in case.masks.items()}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", EmptyMaskWarning)
                out.append(Case(f"{case.case_id}_{'zyx'[axis]}{i}",
                                np.take(case.image, i, axis=axis + 1), case.channels, case.label,
                                case.patient_id, masks, meta))
    return out


def _slice_voxel_map(axis: int, index: int) -> np.ndarray:
    """4×4 map from a slice's NIfTI voxel (i, j, k) to its volume's NIfTI voxel.

    medaudit axis a of (D, H, W) is NIfTI axis (a + 2) % 3; the slice's (H', W') are the two
    remaining medaudit axes in order, and its k runs along the sliced axis from ``index``.
    """
    r0, r1 = [(a + 2) % 3 for a in range(3) if a != axis]
    k = (axis + 2) % 3
    m = np.zeros((4, 4))
    m[r0, 0] = m[r1, 1] = m[k, 2] = m[3, 3] = 1.0
    m[k, 3] = index
    return m

