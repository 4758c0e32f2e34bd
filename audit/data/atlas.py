"""Atlas ROIs for real cohorts: warp MNI152 brain and skull masks onto each case.

Real cohorts often carry a tumour mask but no ``brain`` or ``skull`` ROI. :func:`atlas_rois`
registers a template T1 to one channel of a case with ANTs (antspyx; Avants et al. 2008,
"Symmetric diffeomorphic image registration with cross-correlation", Med Image Anal 12:26-41;
rigid → affine → SyN with Mattes mutual information by default) and warps the template's
``brain`` and ``skull`` masks into the case's exact ``(D, H, W)`` grid. Masks are warped with
linear interpolation of their 0/1 values and thresholded at 0.5 (less blocky than nearest
neighbour). :func:`add_atlas_rois` does it case by case over a cohort, and :func:`qc_figure`
draws the outlines for a visual check.

Template: ``audit.data.template.template_anatomy(resolution=2)`` — the nilearn MNI152 template
plus a synthesised skull and scalp around its brain mask — so that the synthetic cohort and
the atlas agree on what "skull" means. **Skull-stripping pitfall**: nilearn's MNI152 T1 is
skull-stripped, while real and synthetic T1s show skull and scalp; registering a with-skull
case to a brain-only template lets the optimiser stretch the brain over the scalp. We
therefore register a *with-skull* template T1 synthesised here from the template's layers
(``template_t1="head"``: the MNI152 T1 inside the brain, ``HEAD_T1`` intensities for CSF,
skull, diploë and scalp; Mattes MI makes the exact values unimportant). For a skull-stripped
case pass ``template_t1="brain"`` (the skull-stripped T1) instead. Template arrays are in
NIfTI voxel order ``(x, y, z)`` with their affine, as ``template_anatomy`` returns them.

Axes: medaudit spatial axes are ``(D, H, W)``; ``case.meta["affine"]`` (4×4, nibabel, RAS)
maps NIfTI voxel ``(i, j, k) = (H, W, D)`` to world mm (see ``audit.data.cohort``). Images are handed
to ANTs in NIfTI order with the affine turned into ITK's LPS origin/spacing/direction, so
the physical space is the scanner's. Without an affine the case gets axis-aligned RAS axes
with ``spacing`` mm voxels (scalar or per ``(D, H, W)`` axis; default 1 mm); registration
then starts from centre-of-mass alignment, so only the orientation convention matters:
as for nibabel's identity affine, ``H`` runs along x (right), ``W`` along y (anterior) and
``D`` along z (superior). A case stored in another orientation needs its affine.

QC: the warped masks cannot be checked against truth on real data, so each case gets the
Dice (``probes.core.stats.dice``) between the warped head (brain ∪ skull ∪ scalp) or brain mask and an intensity
foreground mask of the channel (Otsu threshold, largest connected component, holes filled;
Otsu 1979, IEEE Trans SMC 9:62-66) — whichever of the two the foreground matches better
(the brain when the dark skull separates it from the scalp, else the whole head). A Dice below
``qc_threshold`` flags the case.
"""
from __future__ import annotations

import functools
import os
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from audit.data.cohort import Case, Cohort
from audit.data.template import template_anatomy
from probes.core.errors import AuditInputError, InputTypeError, NonFiniteError, OptionError, ShapeError
from probes.core.stats import dice
from probes.core.validate import check_finite, to_numpy

__all__ = [
    "AtlasResult",
    "add_atlas_rois",
    "atlas_rois",
    "default_template",
    "intensity_mask",
    "qc_figure",
]

_LPS = np.diag([-1.0, -1.0, 1.0])  # nibabel RAS world → ITK LPS world


# ------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class AtlasResult:
    """Warped atlas ROIs for one case.

    ``masks``: bool arrays with the case's spatial shape (``"brain"``, ``"skull"``, plus any
    other template ROI asked for). ``qc``: registration-quality numbers and flags
    (``dice_vs_intensity_mask``, ``dice_brain_vs_intensity``, ``dice_head_vs_intensity``,
    ``qc_reference``, ``qc_threshold``, ``flag_low_dice``, ``flagged``, ``seconds``, ``error``).
    ``intensity_mask``: the QC foreground mask. ``transforms``: ANTs transform files (forward,
    template → case) when ``keep_transforms`` was asked for, else empty.
    """

    case_id: str
    channel: str
    masks: dict[str, np.ndarray]
    qc: dict[str, Any]
    intensity_mask: np.ndarray | None = None
    transforms: tuple[str, ...] = ()
    head_mask: np.ndarray | None = field(default=None, repr=False)

    def to_frame(self) -> pd.DataFrame:
        """One tidy row: case_id, channel, the qc numbers and flags, voxel counts per ROI."""
        row: dict[str, Any] = {"case_id": self.case_id, "channel": self.channel, **self.qc}
        for name, m in self.masks.items():
            row[f"n_voxels_{name}"] = int(m.sum())
        return pd.DataFrame([row])


# ----------------------------------------------------------------------------- template
@functools.lru_cache(maxsize=4)
def default_template(resolution: int = 2) -> Any:
    """``audit.data.template.template_anatomy(resolution)`` (cached): the with-skull template."""
    return template_anatomy(resolution=resolution)


#: T1-like intensities of the synthesised head layers (template brain T1 lies in [0, 1])
HEAD_T1 = {"csf": 0.08, "skull": 0.05, "diploe": 0.45, "scalp": 0.75}


def _template_arrays(template: Any, rois: Sequence[str], template_t1: str | np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """(t1, affine, {roi: float mask}, head mask) from a template_anatomy-like object.

    Template arrays are in NIfTI voxel order ``(x, y, z)`` with ``affine`` voxel → mm, as
    returned by ``template_anatomy``. ``template_t1``: ``"head"`` synthesises a with-skull T1
    (the skull-stripped template T1 inside the brain, ``HEAD_T1`` intensities on the CSF,
    skull, diploë and scalp layers); ``"brain"`` keeps the skull-stripped T1; an array (same
    shape) is used as given.
    """
    get = template.get if isinstance(template, Mapping) else lambda k: getattr(template, k, None)
    t1, affine, brain = get("t1"), get("affine"), get("brain")
    if t1 is None or affine is None or brain is None:
        raise InputTypeError("template", message=f"template {type(template).__name__} needs t1, brain and affine "
                         "(as returned by audit.data.template.template_anatomy)")
    t1 = np.asarray(t1, np.float32)
    affine = np.asarray(affine, float)
    if t1.ndim != 3 or affine.shape != (4, 4):
        raise ShapeError("template", message=f"template t1 must be 3-D (got shape {t1.shape}) with a 4×4 affine "
                         f"(got {affine.shape})")
    layer = {}
    for name in ("brain", "csf", "skull", "diploe", "scalp", *rois):
        m = get(name)
        if m is None:
            continue
        m = np.asarray(m)
        if m.shape != t1.shape:
            raise ShapeError("template", message=f"template layer {name!r} has shape {m.shape}, t1 has {t1.shape}")
        layer[name] = m
    missing = [r for r in rois if r not in layer]
    if missing:
        raise OptionError("rois", message=f"template has no ROI {missing}; it has {sorted(layer)}")
    masks = {name: (layer[name] > 0.5).astype(np.float32) for name in rois}
    inside = layer["brain"] > 0.5
    head = inside.copy()
    for name in ("skull", "scalp"):
        if name in layer:
            head |= layer[name] > 0.5
    head = ndi.binary_fill_holes(head)
    if isinstance(template_t1, str) and template_t1 == "head":
        if "skull" not in layer and "scalp" not in layer:
            raise OptionError("template_t1", message="template_t1='head' needs template skull/scalp layers; pass "
                             "template_t1='brain' for a skull-stripped template")
        img = np.where(inside, t1, 0.0).astype(np.float32)
        shell = head & ~inside  # outside the brain: CSF, then skull (diploë), then scalp
        img[shell] = HEAD_T1["csf"]
        for name in ("skull", "diploe", "scalp"):
            if name in layer:
                img[(layer[name] > 0.5) & ~inside] = HEAD_T1[name]
        t1 = img
    elif isinstance(template_t1, str) and template_t1 == "brain":
        t1 = np.where(inside, t1, 0).astype(np.float32)
    elif isinstance(template_t1, str):
        raise OptionError("template_t1",
                          message=f"template_t1 must be 'head', 'brain' or an array, got {template_t1!r}")
    else:
        t1 = np.asarray(template_t1, np.float32)
        if t1.shape != inside.shape:
            raise ShapeError("template_t1", message=f"template_t1 array has shape {t1.shape}, template grid is "
                             f"{inside.shape}")
    return t1, affine, masks, head


# ------------------------------------------------------------------------------- geometry
def _case_affine(case: Case, spacing: float | Sequence[float] | None) -> np.ndarray:
    """NIfTI (i,j,k)=(H,W,D) → RAS mm affine of a 3-D case (meta affine, else from spacing)."""
    aff = case.meta.get("affine")
    if aff is not None:
        aff = np.asarray(aff, float)
        if aff.shape != (4, 4) or not np.isfinite(aff).all():
            raise NonFiniteError("case", message=f"case {case.case_id!r}: meta['affine'] must be a finite 4×4 array,"
                             f" got shape {aff.shape}")
        return aff
    sp = np.broadcast_to(np.asarray(1.0 if spacing is None else spacing, float), (3,))
    if (sp <= 0).any():
        raise OptionError("spacing", message=f"case {case.case_id!r}: spacing must be positive, got {tuple(sp)}")
    d, h, w = sp  # spacing is given per medaudit (D, H, W) axis; NIfTI order is (H, W, D)
    return np.diag([h, w, d, 1.0])


def _to_ants(arr: np.ndarray, affine: np.ndarray, *, dhw: bool = True) -> Any:
    """An ants image of a (D,H,W) array (``dhw``) or a NIfTI-ordered one, in LPS mm space."""
    import ants

    nif = np.moveaxis(arr, 0, -1) if dhw else arr
    lin = _LPS @ affine[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    if (spacing == 0).any():
        raise ValueError(f"affine has a zero-length voxel axis: {affine.tolist()}")
    return ants.from_numpy(np.ascontiguousarray(nif, dtype=np.float32),
                           origin=tuple(float(v) for v in _LPS @ affine[:3, 3]),
                           spacing=tuple(float(v) for v in spacing),
                           direction=lin / spacing)


# ------------------------------------------------------------------------------- QC masks
def _otsu(x: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (maximum between-class variance) of the values in ``x``."""
    hist, edges = np.histogram(x, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)[:-1].astype(float)
    w1 = hist.sum() - w0
    m0 = np.cumsum(hist * centres)[:-1] / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)[:-1]) / np.maximum(w1, 1)
    return float(edges[1:-1][np.argmax(w0 * w1 * (m0 - m1) ** 2)])


def intensity_mask(img: np.ndarray) -> np.ndarray:
    """Foreground of an image: Otsu threshold, largest 6-connected component, holes filled.

    On a T1 with skull this is the head (scalp is bright, the skull inside it is filled); on
    a skull-stripped image it is the brain. A constant image gives an empty mask; NaN/Inf
    voxels raise :class:`probes.core.errors.NonFiniteError`.
    """
    img = to_numpy(img, "img")
    if img.dtype.kind not in "biuf" or img.ndim == 0:
        raise InputTypeError("img", f"dtype {img.dtype}, shape {img.shape}", "a numeric image array")
    check_finite(img, "img")
    img = img.astype(np.float32)
    if not np.ptp(img) > 0:
        return np.zeros(img.shape, bool)
    fg = img > _otsu(img)
    lab, n = ndi.label(fg)
    if n == 0:
        return fg
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    fg = lab == np.argmax(sizes)
    fg = ndi.binary_closing(fg, iterations=2) | fg  # bridge thin dark gaps (e.g. the skull)
    return ndi.binary_fill_holes(fg)


# --------------------------------------------------------------------------- registration
def atlas_rois(case: Case, *, channel: str = "T1", template: Any = None,
               rois: Sequence[str] = ("brain", "skull"), template_t1: str | np.ndarray = "head",
               type_of_transform: str = "SyN", aff_first: bool = True,
               aff_metric: str = "mattes", aff_iterations: Sequence[int] = (200, 100, 50),
               aff_shrink_factors: Sequence[int] = (4, 2, 1),
               aff_smoothing_sigmas: Sequence[float] = (2, 1, 0), syn_metric: str = "mattes",
               reg_iterations: Sequence[int] = (40, 20, 0), grad_step: float = 0.2,
               flow_sigma: float = 3, total_sigma: float = 0, seed: int | None = 0,
               threads: int | None = None, spacing: float | Sequence[float] | None = None,
               qc_threshold: float = 0.85, keep_transforms: str | Path | None = None
               ) -> AtlasResult:
    """Warp template ROIs onto one 3-D case by registering the template T1 to ``channel``.

    The template T1 (moving) is registered to the case channel (fixed) with
    ``ants.registration``: with ``aff_first`` the rigid and affine stages (``aff_*``
    parameters, Mattes MI by default) run before the deformable one (``type_of_transform``
    ``"SyN"`` → ants ``"SyN"``, i.e. rigid+affine+SyN; without ``aff_first`` → ``"SyNOnly"``
    from centre-of-mass alignment; any other ants type, e.g. ``"Affine"``, is passed as is).
    ``reg_iterations`` are the SyN iterations per level (coarse → fine; the default
    ``(40, 20, 0)`` skips the full-resolution level, a few seconds at 64³). ``seed`` fixes
    ANTs' random metric sampling; ``threads`` sets ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``
    for the call (None leaves it as is; ITK may read it only once per process). Runs are
    not bit-identical even with a seed (masks differ in ~0.2% of voxels between runs). The template's
    ROIs (``rois``) are warped with linear interpolation and thresholded at 0.5, so masks
    come back in the case's exact ``(D, H, W)`` grid. QC: see the module docstring.
    ``keep_transforms``: a folder to keep the forward transform files in (else temporary).
    Raises ValueError/KeyError naming the case, channel and shape on unusable input.
    """
    import ants

    if not isinstance(case, Case):
        raise InputTypeError("case", message=f"atlas_rois needs a Case, got {type(case).__name__}")
    if case.ndim_spatial != 3:
        raise ShapeError("case", message=f"case {case.case_id!r}: atlas registration needs a 3-D case, got "
                         f"spatial shape {case.spatial_shape}; register the volumes before "
                         "slicing them (audit.data.slices_from_volumes keeps masks)")
    img = case.channel(channel)  # KeyError with close names
    if min(img.shape) < 8:
        raise ShapeError("case", message=f"case {case.case_id!r}: channel {channel!r} has spatial shape "
                         f"{img.shape}; at least 8 voxels per axis are needed")
    if not np.ptp(img) > 0:
        raise AuditInputError("case", message=f"case {case.case_id!r}: channel {channel!r} is constant "
                         f"(value {float(img.flat[0])}), nothing to register")
    if not 0 <= qc_threshold <= 1:
        raise OptionError("qc_threshold", message=f"qc_threshold must lie in [0, 1], got {qc_threshold}")
    tmpl = default_template(2) if template is None else template
    t1, t_aff, t_masks, t_head = _template_arrays(tmpl, rois, template_t1)

    fixed = _to_ants(img, _case_affine(case, spacing))
    moving = _to_ants(t1, t_aff, dhw=False)
    ttype = type_of_transform
    if ttype == "SyN" and not aff_first:
        ttype = "SyNOnly"
    kw = {"type_of_transform": ttype, "aff_metric": aff_metric, "syn_metric": syn_metric,
              "aff_iterations": tuple(aff_iterations), "aff_shrink_factors": tuple(aff_shrink_factors),
              "aff_smoothing_sigmas": tuple(aff_smoothing_sigmas),
              "reg_iterations": tuple(reg_iterations), "grad_step": grad_step, "flow_sigma": flow_sigma,
              "total_sigma": total_sigma}
    if ttype == "SyNOnly":
        kw["initial_transform"] = None
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medaudit_atlas_") as tmp, _ants_env(seed, threads):
        out = Path(keep_transforms) if keep_transforms is not None else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        prefix = str(out / f"{_safe(case.case_id)}_")
        if ttype == "SyNOnly":  # deformable only: start from centre-of-mass alignment
            shift = _com_mm(moving) - _com_mm(fixed)  # fixed → moving points, as ITK wants
            init = ants.create_ants_transform(transform_type="AffineTransform", dimension=3,
                                              translation=tuple(float(v) for v in shift))
            tx = prefix + "com.mat"
            ants.write_transform(init, tx)
            kw["initial_transform"] = tx
        reg = ants.registration(fixed, moving, outprefix=prefix, verbose=False, **kw)
        fwd = list(reg["fwdtransforms"])

        def warp(arr: np.ndarray) -> np.ndarray:
            w = ants.apply_transforms(fixed, _to_ants(arr, t_aff, dhw=False), fwd,
                                      interpolator="linear")
            return np.moveaxis(w.numpy(), -1, 0) > 0.5

        masks = {name: warp(m) for name, m in t_masks.items()}
        head = warp(t_head.astype(np.float32))
        if "brain" in masks:
            head |= masks["brain"]
        transforms = tuple(fwd) if keep_transforms is not None else ()
    secs = time.perf_counter() - t0
    for name, m in masks.items():
        if m.shape != case.spatial_shape:  # would be a bug in the axis handling
            raise RuntimeError(f"case {case.case_id!r}: warped {name!r} has shape {m.shape}, "
                               f"case grid is {case.spatial_shape}")
    fg = intensity_mask(img)
    qc = _qc(masks.get("brain"), head, fg, qc_threshold)
    qc["seconds"] = round(secs, 3)
    return AtlasResult(case.case_id, channel, masks, qc, fg, transforms, head)


def _com_mm(img: Any) -> np.ndarray:
    """Intensity centre of mass of an ants image, in its physical (LPS mm) space."""
    arr = np.clip(img.numpy(), 0, None)
    com = np.array(ndi.center_of_mass(arr)) if arr.sum() > 0 else (np.array(arr.shape) - 1) / 2
    return np.asarray(img.origin) + np.asarray(img.direction) @ (np.asarray(img.spacing) * com)


def _qc(brain: np.ndarray | None, head: np.ndarray, fg: np.ndarray, thr: float
        ) -> dict[str, Any]:
    d_brain = float(dice(brain[None], fg[None])[0]) if brain is not None else float("nan")
    d_head = float(dice(head[None], fg[None])[0])
    use_head = not d_brain >= d_head  # NaN-safe
    best = d_head if use_head else d_brain
    low = not best >= thr
    empty = brain is not None and not brain.any()
    return {"dice_vs_intensity_mask": best, "dice_brain_vs_intensity": d_brain,
            "dice_head_vs_intensity": d_head, "qc_reference": "head" if use_head else "brain",
            "qc_threshold": thr, "flag_low_dice": low, "flag_empty_brain": bool(empty),
            "flagged": bool(low or empty), "error": ""}


class _ants_env:
    """Temporarily set ANTs' random seed and ITK's thread count; restore them on exit."""

    def __init__(self, seed: int | None, threads: int | None) -> None:
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise OptionError("threads", message=f"threads must be a positive int or None, got {threads!r}")
        self.seed, self.threads = seed, threads

    def __enter__(self) -> None:
        import ants.config as cfg

        self.old = (cfg._random_seed, os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"))
        cfg._random_seed = self.seed
        if self.threads is not None:
            os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(self.threads)

    def __exit__(self, *exc: object) -> None:
        import ants.config as cfg

        cfg._random_seed = self.old[0]
        if self.threads is not None:
            if self.old[1] is None:
                os.environ.pop("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", None)
            else:
                os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = self.old[1]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "case"


# --------------------------------------------------------------------------------- cohort
def add_atlas_rois(cohort: Cohort, *, channel: str = "T1", overwrite: bool = False,
                   raise_errors: bool = False, **kwargs: Any) -> tuple[Cohort, pd.DataFrame]:
    """Add atlas ROIs to every case; return (new Cohort, QC table with one row per case).

    Each case is registered on its own (:func:`atlas_rois`, ``kwargs`` passed through). The
    new Cases keep image, label, patient, meta and every existing mask; an atlas ROI whose
    name a case already has is left as it was unless ``overwrite`` (the QC row then says
    ``kept_existing``). A case whose registration fails keeps its masks unchanged and gets
    a flagged QC row with the error (``error`` column) instead of stopping the cohort;
    ``raise_errors=True`` re-raises instead. A flagged (poor-QC) result is still added:
    filter on the table's ``flagged`` column to drop those masks.
    """
    if not isinstance(cohort, Cohort):
        raise InputTypeError("cohort", message=f"add_atlas_rois needs a Cohort, got {type(cohort).__name__}")
    template = kwargs.pop("template", None)
    if template is None:
        template = default_template(2)
    cases, rows = [], []
    for case in cohort:
        try:
            res = atlas_rois(case, channel=channel, template=template, **kwargs)
        except Exception as err:
            if raise_errors:
                raise
            rows.append({"case_id": case.case_id, "channel": channel, "flagged": True,
                         "error": f"{type(err).__name__}: {err}",
                         "traceback": traceback.format_exc(limit=3)})
            cases.append(case)
            continue
        masks = dict(case.masks)
        kept = [k for k in res.masks if k in masks and not overwrite]
        masks.update({k: v for k, v in res.masks.items() if overwrite or k not in masks})
        cases.append(Case(case.case_id, case.image, case.channels, case.label,
                          case.patient_id, masks, case.meta))
        row = res.to_frame().iloc[0].to_dict()
        row["kept_existing"] = ",".join(kept)
        rows.append(row)
    qc = pd.DataFrame(rows)
    if len(qc):
        qc["flagged"] = qc["flagged"].astype(bool)
        qc["error"] = qc["error"].fillna("")
    return Cohort(cases, meta=cohort.meta), qc


# ------------------------------------------------------------------------------ QC figure
def qc_figure(case: Case, result: AtlasResult, path: str | Path | None = None,
              *, slices: Sequence[int] | None = None,
              spacing: float | Sequence[float] | None = None) -> Any:
    """Three orthogonal slices of the registered channel with the ROI outlines.

    Outlines: warped ``brain`` (red), ``skull`` (yellow), other warped ROIs (cyan) and the
    intensity QC mask (dashed green). Slices go through the warped brain's centre of mass
    unless ``slices`` gives ``(d, h, w)`` indices; panels are named (axial/coronal/sagittal)
    from the case affine (see the module docstring; ``spacing`` as in :func:`atlas_rois`). The
    title holds the QC Dice and flag.
    Saved to ``path`` when given; returns the matplotlib Figure (close it when done).
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if result.case_id != case.case_id:
        raise OptionError("result", message=f"qc_figure: result is for case {result.case_id!r}, not "
                         f"{case.case_id!r}")
    img = case.channel(result.channel)
    for name, m in result.masks.items():
        if m.shape != img.shape:
            raise ShapeError("result", message=f"case {case.case_id!r}: mask {name!r} has shape {m.shape}, "
                             f"channel {result.channel!r} has {img.shape}")
    if slices is None:
        ref = result.masks.get("brain")
        ref = ref if ref is not None and ref.any() else np.ones(img.shape, bool)
        slices = [round(c) for c in ndi.center_of_mass(ref)]
    colours = {"brain": "red", "skull": "yellow"}
    lo, hi = np.percentile(img, [1, 99.5])
    # world axis (0 x, 1 y, 2 z) that each (D, H, W) axis mostly runs along
    lin = _case_affine(case, spacing)[:3, :3][:, [2, 0, 1]]
    world = np.argmax(np.abs(lin), axis=0)
    plane = {0: "sagittal", 1: "coronal", 2: "axial"}
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for ax, axis in zip(axes, range(3)):
        idx = int(np.clip(slices[axis], 0, img.shape[axis] - 1))
        rest = [a for a in range(3) if a != axis]
        flip = world[rest[0]] < world[rest[1]]  # put the more superior/anterior axis upwards

        def take(a: np.ndarray, idx: int = idx, axis: int = axis, flip: bool = flip
                 ) -> np.ndarray:
            sl = np.take(a, idx, axis=axis)
            return sl.T if flip else sl

        ax.imshow(take(img), cmap="gray", vmin=lo, vmax=hi, origin="lower")
        for roi, m in result.masks.items():
            if take(m).any():
                ax.contour(take(m), levels=[0.5], colors=colours.get(roi, "cyan"),
                           linewidths=1.0)
        if result.intensity_mask is not None and take(result.intensity_mask).any():
            ax.contour(take(result.intensity_mask), levels=[0.5], colors="lime",
                       linewidths=0.8, linestyles="dashed")
        ax.set_title(f"{plane[int(world[axis])]}: {'DHW'[axis]} = {idx}", fontsize=9)
        ax.set_axis_off()
    qc = result.qc
    flag = "FLAGGED" if qc.get("flagged") else "ok"
    fig.suptitle(f"{case.case_id} [{result.channel}]: Dice vs intensity mask "
                 f"({qc.get('qc_reference', '?')}) = {qc.get('dice_vs_intensity_mask', np.nan):.3f}"
                 f" — {flag}   (red brain, yellow skull, dashed green intensity mask)",
                 fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=90)
    return fig
