"""Synthetic multi-contrast brain-MRI cohort with known ground truth.

Anatomy comes from the MNI152 template shipped in nilearn (:func:`template_anatomy`, with
synthetic CSF/skull/scalp shells); every case is a randomly posed head with a tumour whose
*shape* is the label, plus optional planted shortcuts. Everything a model could learn is set by
:class:`SyntheticConfig` and recorded per case in ``Case.meta`` and per cohort in
``Cohort.meta``.

Labels: ``0 = round`` (near-ellipsoid tumour), ``1 = irregular`` (lobulated: radius modulated by
low-frequency waves on the sphere plus spiky lobes). Channels, in order: ``T1, T1c, T2, FLAIR``.

Relative tissue intensities (before per-case scaling, bias field and noise; WM on T1 = 1):

=============  =====  =====  =====  =====
tissue          T1     T1c    T2    FLAIR
=============  =====  =====  =====  =====
white matter    1.00   1.00   0.45   0.70
grey matter     0.70   0.72   0.65   0.85
CSF             0.20   0.20   1.40   0.10
skull (bone)    0.05   0.05   0.05   0.05
diploë          0.80   0.80   0.60   0.50
scalp (fat)     1.30   1.30   1.00   0.90
necrosis        0.25   0.25   1.25   0.55
enhancing rim   0.65   1.70   0.90   0.95
oedema          0.55   0.55   1.15   1.35
marker          1.60   1.70   1.60   1.60
landmark        1.50   1.60   1.50   1.50
=============  =====  =====  =====  =====

Tumour geometry per contrast (how label information is routed). Each case draws three tumour
geometries with the same centre and size: ``G_t1c`` with shape ``shape_t1c``, ``G_flair`` with
``shape_flair`` and ``G_t1t2`` with ``shape_t1t2`` (a fair coin, independent of the label).

* T1c shows the necrotic core and the enhancing rim of ``G_t1c`` (oedema from ``G_t1t2``);
* FLAIR shows the oedema outline of ``G_flair`` (core from ``G_t1t2``);
* T1 and T2 show all compartments of ``G_t1t2``: they carry no label information.

The ROI masks follow the label-carrying geometries: ``necrosis``, ``enhancement`` from
``G_t1c``, ``oedema`` = oedema region of ``G_flair`` minus the T1c core, ``gtv`` their union (all
clipped to the brain). Mechanisms: ``shape_t1c`` equals the label's shape with probability
``p_t1c`` (else the other shape), ``shape_flair`` with ``p_flair``; ``shape_informative=False``
makes both fair coins. The shortcut "surgical site" marker (a bright defect in the skull bone,
visible on every contrast, inside the ``skull`` mask) is present with probability ``q1`` in
class 1 and ``q0`` in class 0; only the cases that carry it have a ``marker`` mask
(``Cohort.as_dataset`` gives the others an empty one).

Counterfactual sets (same seed → same cases, same noise) — the ground truth of what a model
relies on: ``"t1c_only"``: the T1c shape *is* the label (whatever ``p_t1c``), the FLAIR shape
is a fair coin and there is no marker, so T1c is the only carrier of the label;
``"flair_only"``: the same with the roles of T1c and FLAIR swapped; ``"no_marker"``: every
marker removed, nothing else changed (images differ only inside the normal set's marker mask).

Relational mechanism (``mechanism="relational"``): the label is a relation between two distant
structures that no early receptive field covers. Every case has a small bright ``landmark``
(radius 6 mm, visible on every contrast, its own ROI mask) in the posterior brain of one
hemisphere (MNI y ≤ −50 mm); the lesion's centre lies in the anterior brain (y ≥ 10 mm); both
lie ≥ 15 mm from the midline, and where each lies does not depend on the other. Label 1
("same side") when lesion and landmark lie in the same hemisphere, label 0 ("opposite sides")
otherwise. The lesion's side is a fair coin and the landmark's follows from it and the label,
so each alone is uninformative (50/50); tumour shapes are fair coins. ``Case.meta`` records
``lesion_hemisphere`` and ``landmark_hemisphere`` (MNI x < 0: left).

Pose (``pose``): ``"random"`` (the default, below) or ``"atlas"``: every head in template space
up to a residual ``jitter`` (rotation ±jitter°, shift ±jitter mm, scale ±jitter %), as
registration to an atlas leaves it; a 2D atlas-posed cohort shows one axial level (MNI
z = +16 mm), with every lesion centred in it.

Noise: Rician, i.e. ``sqrt((s + σ n1)² + (σ n2)²)`` with ``σ = noise`` relative to WM on T1.
Per case: random rigid+scale pose (2D: in-plane rotation ±10°, 3D: ±6° per axis; scale
0.92–1.08; shift ±4 % of the field of view), a smooth multiplicative bias field per contrast
(exp of a random quadratic polynomial), and an intensity scale 0.9–1.1 per contrast.

2D cases are axial slices through the tumour centre (template slice + in-plane pose, tumour
rendered analytically at output resolution); 3D cases are the whole head resampled to
``size³``. Output axes: 2D ``(H, W)`` = (posterior←anterior, left←right, radiological view:
row 0 anterior, column 0 patient right); 3D ``(D, H, W)`` with D inferior → superior.
``meta["affine"]`` maps NIfTI voxels to MNI mm for the *unposed* head grid.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from audit.data.cohort import Case, Cohort, EmptyMaskWarning
from audit.data.nifti import write_nifti
from audit.data.template import TemplateAnatomy, template_anatomy
from audit.synthetic.pose import (ATLAS_SLICE_Z, FOV_VOX, HEAD_CENTRE, RES, Pose, output_affine,
                                  pose_transform)

__all__ = ["CHANNELS", "COUNTERFACTUALS", "LABEL_NAMES", "MECHANISMS", "RELATIONAL_LABEL_NAMES", "TISSUE_INTENSITIES",
           "SyntheticConfig", "TemplateAnatomy", "draw_mechanisms", "make_cohort",
           "make_splits", "template_anatomy", "to_nifti"]

GENERATOR = "medaudit.synthetic/2"  # 2: the marker lies in the skull (bone) only
CHANNELS = ("T1", "T1c", "T2", "FLAIR")
LABEL_NAMES = ("round", "irregular")  # label 0, label 1
RELATIONAL_LABEL_NAMES = ("opposite sides", "same side")  # mechanism="relational"
COUNTERFACTUALS = ("t1c_only", "flair_only", "no_marker")
TISSUE_INTENSITIES: dict[str, tuple[float, float, float, float]] = {
    "wm": (1.00, 1.00, 0.45, 0.70),
    "gm": (0.70, 0.72, 0.65, 0.85),
    "csf": (0.20, 0.20, 1.40, 0.10),
    "skull": (0.05, 0.05, 0.05, 0.05),
    "diploe": (0.80, 0.80, 0.60, 0.50),
    "scalp": (1.30, 1.30, 1.00, 0.90),
    "necrosis": (0.25, 0.25, 1.25, 0.55),
    "enhancement": (0.65, 1.70, 0.90, 0.95),
    "oedema": (0.55, 0.55, 1.15, 1.35),
    "marker": (1.60, 1.70, 1.60, 1.60),
    "landmark": (1.50, 1.60, 1.50, 1.50),
}
_RES, _HEAD_CENTRE, _FOV_VOX = RES, HEAD_CENTRE, FOV_VOX
MECHANISMS = ("shape", "relational")
# relational mechanism: lesion centres in the anterior brain, landmarks in the posterior brain, both
# clear of the midline, so that where each lies does not depend on the other (nor on the label)
_SIDE_MM = 15.0              # lesion and landmark lie ≥ this far from the midline (MNI |x|)
_LESION_Y_MM = 10.0          # lesion centre at MNI y ≥ this (anterior)
_LANDMARK_Y_MM = -50.0       # landmark centre at MNI y ≤ this (posterior)
_LANDMARK_MM = 6.0           # landmark radius
_BRAIN, _SKULL, _SCALP = 1, 2, 4  # bits of the template label volume
_NW, _NL = 8, 5              # waves and lobes of a tumour shape


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class SyntheticConfig:
    """Configuration of a synthetic cohort (see the module docstring for the mechanisms)."""

    n_cases: int = 600
    dim: int = 2                    # 2 or 3
    size: int | None = None         # default 128 (2D) / 64 (3D); output is size×size(×size)
    p_t1c: float = 1.0
    p_flair: float = 0.7
    shape_informative: bool = True
    q1: float | None = None         # marker probability in class 1; None = no shortcut
    q0: float | None = None
    noise: float = 0.03             # Rician noise σ relative to WM intensity on T1 (= 1)
    seed: int = 0
    pose: Pose = "random"           # "atlas": every head in template space, up to `jitter`
    jitter: float = 1.0             # atlas pose: residual rotation (°), shift (mm), scale (%)
    mechanism: str = "shape"        # "relational": the label is where the lesion lies vs a landmark

    def __post_init__(self) -> None:
        if self.dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {self.dim!r}")
        if self.size is not None and (int(self.size) != self.size or self.size < 16):
            raise ValueError(f"size must be an integer ≥ 16 or None, got {self.size!r}")
        if int(self.n_cases) != self.n_cases or self.n_cases < 1:
            raise ValueError(f"n_cases must be a positive integer, got {self.n_cases!r}")
        for k in ("p_t1c", "p_flair"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ValueError(f"{k} must lie in [0, 1], got {getattr(self, k)!r}")
        if (self.q1 is None) != (self.q0 is None):
            raise ValueError(f"q1 and q0 must both be None (no shortcut) or both set, got "
                             f"q1={self.q1!r}, q0={self.q0!r}")
        for k in ("q1", "q0"):
            v = getattr(self, k)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"{k} must lie in [0, 1] or be None, got {v!r}")
        if not self.noise >= 0:
            raise ValueError(f"noise must be ≥ 0, got {self.noise!r}")
        if self.pose not in ("random", "atlas"):
            raise ValueError(f"pose must be 'random' or 'atlas', got {self.pose!r}")
        if not 0 <= self.jitter <= 10:
            raise ValueError(f"jitter must lie in [0, 10] (degrees, mm, %), got {self.jitter!r}")
        if self.mechanism not in MECHANISMS:
            raise ValueError(f"mechanism must be one of {MECHANISMS}, got {self.mechanism!r}")

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial output shape."""
        s = self.size or (128 if self.dim == 2 else 64)
        return (s,) * self.dim

    def to_dict(self) -> dict[str, Any]:
        """Every field, by name."""
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """Stable 12-hex-digit hash of all fields and the generator version.

        The pose and mechanism fields enter only when they differ from their defaults, so that
        a configuration that does not use them keeps its hash (and its cached models).
        """
        fields = {k: v for k, v in self.to_dict().items()
                  if k not in _HASH_IF_SET or v != _HASH_IF_SET[k]}
        text = json.dumps({"generator": GENERATOR, **fields}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


_HASH_IF_SET = {"pose": "random", "jitter": 1.0, "mechanism": "shape"}


# --------------------------------------------------------------------- template volumes
@functools.lru_cache(maxsize=1)
def _volumes() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Base contrasts (4, X, Y, Z) float32, label bits (X, Y, Z) uint8, lesion-centre candidates
    (voxel indices sorted by depth in the brain, descending) and their depth in mm."""
    a = template_anatomy(_RES)
    t = {k: np.asarray(v, np.float32) for k, v in TISSUE_INTENSITIES.items()}
    col = {k: v[:, None, None, None] for k, v in t.items()}
    brain_img = a.wm[None] * col["wm"] + a.gm[None] * col["gm"] + a.csf[None] * col["csf"]
    bone = a.skull & ~a.diploe
    layers = (bone[None] * t["skull"][:, None, None, None]
              + a.diploe[None] * t["diploe"][:, None, None, None]
              + a.scalp[None] * t["scalp"][:, None, None, None])
    layers = np.stack([ndimage.gaussian_filter(ch, 0.6) for ch in layers])
    base = np.where(a.brain[None], brain_img, layers + (~a.brain)[None] * brain_img)
    bits = (a.brain * _BRAIN | a.skull * _SKULL | a.scalp * _SCALP).astype(np.uint8)
    depth = ndimage.distance_transform_edt(a.brain, sampling=float(_RES))
    zmin = round((-8 - a.affine[2, 3]) / _RES)   # cerebrum: MNI z ≥ −8 mm
    zmax = round((52 - a.affine[2, 3]) / _RES)   # …and ≤ 52 mm
    depth[:, :, :zmin] = 0
    depth[:, :, zmax + 1:] = 0
    cand = np.argwhere(depth > 10)
    d = depth[tuple(cand.T)]
    order = np.argsort(-d, kind="stable")
    return base.astype(np.float32), bits, cand[order], d[order]


# -------------------------------------------------------------------------- mechanisms
def _coin(u: float) -> int:
    return int(u < 0.5)


def _mechanism(cfg: SyntheticConfig, y: int, u: np.ndarray, counterfactual: str | None
               ) -> dict[str, Any]:
    """Shapes, marker and (relational mechanism) hemispheres from the case's first uniforms ``u``
    (6 values; 7 with ``mechanism="relational"``)."""
    relational = cfg.mechanism == "relational"
    if relational:
        # the label is the relation: each hemisphere alone is a fair coin, and shapes carry nothing
        s_t1c, s_flair = _coin(u[2]), _coin(u[3])
    elif cfg.shape_informative:
        s_t1c = y if u[0] < cfg.p_t1c else 1 - y
        s_flair = y if u[1] < cfg.p_flair else 1 - y
    else:
        s_t1c, s_flair = _coin(u[2]), _coin(u[3])
    # counterfactual sets: exactly one carrier of the label is left (markers removed too)
    if counterfactual == "flair_only":
        s_t1c, s_flair = _coin(u[2]), y
    elif counterfactual == "t1c_only":
        s_t1c, s_flair = y, _coin(u[3])
    s_t1t2 = _coin(u[4])
    q = None if cfg.q1 is None else (cfg.q1 if y == 1 else cfg.q0)
    marker_drawn = bool(q is not None and u[5] < q)
    out = {"shape_t1c": s_t1c, "shape_flair": s_flair, "shape_t1t2": s_t1t2,
           "marker_drawn": marker_drawn,
           "marker": marker_drawn and counterfactual is None}
    if relational:
        lesion_left = bool(u[6] < 0.5)
        out.update(lesion_left=lesion_left, landmark_left=lesion_left if y == 1 else not lesion_left)
    return out


def _label_names(cfg: SyntheticConfig) -> tuple[str, str]:
    return RELATIONAL_LABEL_NAMES if cfg.mechanism == "relational" else LABEL_NAMES


def _n_uniforms(cfg: SyntheticConfig) -> int:
    return 7 if cfg.mechanism == "relational" else 6


def _case_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)]))


def _label(index: int) -> int:
    return index % 2  # balanced classes; ids carry no information beyond that


def draw_mechanisms(cfg: SyntheticConfig, *, counterfactual: str | None = None,
                    n_cases: int | None = None, seed: int | None = None) -> pd.DataFrame:
    """The label mechanisms alone (no rendering), exactly as :func:`make_cohort` draws them.

    One row per case: index, label, shape_t1c, shape_flair, shape_t1t2 (0 round, 1 irregular),
    t1c_matches_label, flair_matches_label, marker; with ``mechanism="relational"`` also
    lesion_left and landmark_left. Cheap: ~10 µs per case.
    """
    _check_cf(counterfactual)
    n = cfg.n_cases if n_cases is None else int(n_cases)
    s = cfg.seed if seed is None else int(seed)
    rows = []
    for i in range(n):
        y = _label(i)
        m = _mechanism(cfg, y, _case_rng(s, i).random(_n_uniforms(cfg)), counterfactual)
        row = {"index": i, "label": y, "shape_t1c": m["shape_t1c"],
               "shape_flair": m["shape_flair"], "shape_t1t2": m["shape_t1t2"],
               "t1c_matches_label": m["shape_t1c"] == y,
               "flair_matches_label": m["shape_flair"] == y, "marker": m["marker"]}
        if "lesion_left" in m:
            row.update(lesion_left=m["lesion_left"], landmark_left=m["landmark_left"])
        rows.append(row)
    return pd.DataFrame(rows)


def _check_cf(counterfactual: str | None) -> None:
    if counterfactual is not None and counterfactual not in COUNTERFACTUALS:
        raise ValueError(f"counterfactual must be None or one of {COUNTERFACTUALS}, got "
                         f"{counterfactual!r}")


# ----------------------------------------------------------------------------- shapes
def _draw_geometry(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Shape parameters; the same number of draws whatever the shape turns out to be."""
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    wdir = rng.standard_normal((_NW, 3))
    ldir = rng.standard_normal((_NL, 3))
    return {"axes": np.clip(rng.standard_normal(3), -2, 2), "rot": q,
            "wdir": wdir / np.linalg.norm(wdir, axis=1, keepdims=True),
            "womega": rng.uniform(2.5, 5.5, _NW), "wphase": rng.uniform(0, 2 * np.pi, _NW),
            "wamp": rng.uniform(0.5, 1.0, _NW),
            "ldir": ldir / np.linalg.norm(ldir, axis=1, keepdims=True),
            "lamp": rng.uniform(0.5, 1.0, _NL)}


def _radius(g: dict[str, np.ndarray], irregular: int, u: np.ndarray) -> np.ndarray:
    """Relative radius r(u) of a shape along unit directions ``u`` (n×3)."""
    ax = 1.0 + (0.12 if irregular else 0.07) * g["axes"]
    ell = 1.0 / np.sqrt((((u @ g["rot"]) / ax) ** 2).sum(axis=1))
    if not irregular:
        f = (0.015 * g["wamp"] * np.cos((u @ g["wdir"].T) * g["womega"] + g["wphase"])
             ).sum(axis=1)
        return ell * (1.0 + f)
    cos = u @ g["wdir"].T
    f = (0.12 * g["wamp"] * np.cos(cos * g["womega"] * 1.6 + g["wphase"])).sum(axis=1)
    lobes = (0.55 * g["lamp"] * np.exp(14.0 * (u @ g["ldir"].T - 1.0))).sum(axis=1)
    return ell * np.clip(0.85 + f + lobes, 0.45, 2.0)


# ----------------------------------------------------------------------------- render
def _soft(r: np.ndarray, rho: np.ndarray, w: float) -> np.ndarray:
    return np.clip((r - rho) / w + 0.5, 0.0, 1.0)


@functools.lru_cache(maxsize=8)
def _candidates(one_slice: bool, lesion_left: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lesion-centre candidates (sorted by depth, descending) and their depth for this cohort.

    An atlas-posed 2D cohort shows one axial level (``ATLAS_SLICE_Z``), so its lesions lie in
    that slice; the relational mechanism puts the lesion clearly in one hemisphere
    (≥ ``_SIDE_MM`` from the midline) and in the anterior brain.
    """
    _, _, cand, depth = _volumes()
    keep = np.ones(len(cand), bool)
    if one_slice:
        keep &= cand[:, 2] == ATLAS_SLICE_Z
    if lesion_left is not None:
        aff = template_anatomy(_RES).affine
        x_mm, y_mm = cand[:, 0] * _RES + aff[0, 3], cand[:, 1] * _RES + aff[1, 3]
        keep &= ((x_mm <= -_SIDE_MM) if lesion_left else (x_mm >= _SIDE_MM)) & (y_mm >= _LESION_Y_MM)
    return cand[keep], depth[keep]


def _landmark(brain: np.ndarray, tc3: np.ndarray, left: bool, u: float) -> tuple[np.ndarray, dict[str, float]]:
    """A small bright landmark in the posterior brain of one hemisphere.

    Its centre is an output voxel ≥ 2 voxels inside the brain, ≥ ``_SIDE_MM`` from the midline
    on the chosen side and at MNI y ≤ ``_LANDMARK_Y_MM``, picked by ``u``: where it lies depends
    on its side only, never on the lesion. Returns the flat mask and its centre in MNI mm.
    """
    inner = ndimage.binary_erosion(brain, iterations=2).reshape(-1)
    aff = template_anatomy(_RES).affine
    x_mm, y_mm = tc3[0] * _RES + aff[0, 3], tc3[1] * _RES + aff[1, 3]
    ok = inner & ((x_mm <= -_SIDE_MM) if left else (x_mm >= _SIDE_MM))
    post = ok & (y_mm <= _LANDMARK_Y_MM)
    idx = np.flatnonzero(post if post.any() else ok)  # a head posed so that no posterior brain shows
    c = tc3[:, idx[min(int(u * idx.size), idx.size - 1)]]
    dist = np.sqrt((((tc3 - c[:, None]) * _RES) ** 2).sum(axis=0))
    mm = aff @ np.r_[c, 1.0]
    return (dist < _LANDMARK_MM) & brain.reshape(-1), {
        "landmark_x_mm": float(mm[0]), "landmark_y_mm": float(mm[1]), "landmark_z_mm": float(mm[2])}


def _render(cfg: SyntheticConfig, index: int, seed: int, counterfactual: str | None
            ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    base, bits, cand, depth = _volumes()
    dim, shape = cfg.dim, cfg.shape
    size = shape[0]
    rng = _case_rng(seed, index)
    y = _label(index)
    mech = _mechanism(cfg, y, rng.random(_n_uniforms(cfg)), counterfactual)
    geo = {k: _draw_geometry(rng) for k in ("t1c", "flair", "t1t2")}
    r_core = rng.uniform(12.0, 20.0)                   # mm
    f_nec = rng.uniform(0.35, 0.65)
    f_oed = rng.uniform(1.5, 2.1)
    # centre: a cerebral voxel at least ~the nominal oedema radius deep inside the brain
    cand, depth = _candidates(cfg.pose == "atlas" and dim == 2, mech.get("lesion_left"))
    need = min(f_oed * r_core * 0.95, depth[0])
    n_ok = max(1, int(np.searchsorted(-depth, -need, side="right")))
    centre = cand[min(int(rng.random() * n_ok), n_ok - 1)].astype(float)
    mat, off, pose_meta = pose_transform(rng, dim, size, cfg.pose, cfg.jitter)
    u_marker, r_marker = rng.random(), rng.uniform(9.0, 14.0)
    bias = rng.normal(0.0, 0.10, (4, 5 if dim == 2 else 9))
    gain = rng.uniform(0.9, 1.1, 4)
    noise = rng.standard_normal((2, 4, *shape), dtype=np.float32)

    # template coordinates of every output voxel
    grid = np.indices(shape, dtype=np.float64).reshape(dim, -1)
    tc = mat @ grid + off[:, None]                      # (dim, n) template voxel coordinates
    if dim == 2:
        zc = int(centre[2])
        src, bsrc = base[:, :, :, zc], bits[:, :, zc]
        tc3 = np.vstack([tc, np.full((1, tc.shape[1]), float(zc))])
    else:
        src, bsrc, tc3 = base, bits, tc
    img = np.stack([ndimage.map_coordinates(src[c], tc, order=1, cval=0.0, prefilter=False)
                    for c in range(4)]).astype(np.float32)
    lab = ndimage.map_coordinates(bsrc, tc, order=0, cval=0, prefilter=False)
    brain = (lab & _BRAIN) > 0
    skull = (lab & _SKULL) > 0

    # tumour, analytically at output resolution (mm around the centre)
    d = (tc3 - centre[:, None]).T * _RES
    rho = np.sqrt((d ** 2).sum(axis=1))
    px = _RES * _FOV_VOX / size / pose_meta["scale"]        # output voxel size (mm)
    near = np.flatnonzero((rho < r_core * f_oed * 2.3) & brain)
    u = d[near] / np.maximum(rho[near], 1e-6)[:, None]
    rn = rho[near]
    r = {k: r_core * _radius(geo[k], mech[f"shape_{k}"], u) for k in geo}
    n = rho.size
    alpha = {}
    for key, rr, fac in (("core_c", r["t1c"], 1.0), ("nec_c", r["t1c"], f_nec),
                         ("oed_f", r["flair"], f_oed), ("core_n", r["t1t2"], 1.0),
                         ("nec_n", r["t1t2"], f_nec), ("oed_n", r["t1t2"], f_oed)):
        a = np.zeros(n, np.float32)
        a[near] = _soft(rr * fac, rn, px)
        alpha[key] = a
    t = {k: np.asarray(v, np.float32) for k, v in TISSUE_INTENSITIES.items()}
    routes = {0: ("oed_n", "core_n", "nec_n"), 1: ("oed_n", "core_c", "nec_c"),
              2: ("oed_n", "core_n", "nec_n"), 3: ("oed_f", "core_n", "nec_n")}
    for c, (ko, kc, kn) in routes.items():
        v = img[c]
        v += alpha[ko] * (t["oedema"][c] - v)
        v += alpha[kc] * (t["enhancement"][c] - v)
        v += alpha[kn] * (t["necrosis"][c] - v)
    core = alpha["core_c"] >= 0.5
    necrosis = alpha["nec_c"] >= 0.5
    oedema = (alpha["oed_f"] >= 0.5) & ~core

    # marker: a bright surgical-site defect in the skull, centred on a skull voxel. It stays inside
    # the `skull` mask so that the planted mechanism is exactly one labelled ROI ("no skull" removes it)
    sk = np.flatnonzero(skull)
    mc = tc3[:, sk[min(int(u_marker * sk.size), sk.size - 1)]] if sk.size else tc3[:, 0]
    dm = np.sqrt((((tc3 - mc[:, None]) * _RES) ** 2).sum(axis=0))
    marker = (dm < r_marker) & skull
    if mech["marker"]:
        am = np.where(marker, _soft(r_marker, dm, px) * 0.5 + 0.5, 0.0).astype(np.float32)
        img += am * (t["marker"][:, None] - img)

    if "landmark_left" in mech:  # drawn after everything else: the shape mechanism's stream is unchanged
        landmark, lm_meta = _landmark(brain.reshape(shape), tc3, mech["landmark_left"], rng.random())
        alm = np.where(landmark, 1.0, 0.0).astype(np.float32)
        img += alm * (t["landmark"][:, None] - img)
    # bias field, gain and Rician noise
    g = (grid - (size - 1) / 2.0) / (size / 2.0)
    terms = [g[i] for i in range(dim)] + [g[i] * g[j] for i in range(dim) for j in range(i, dim)]
    field = np.exp(bias @ np.stack(terms)).astype(np.float32)
    img *= field * gain[:, None].astype(np.float32)
    img = img.reshape(4, *shape)
    s = np.float32(cfg.noise)
    img = np.sqrt((img + s * noise[0]) ** 2 + (s * noise[1]) ** 2)

    masks = {"brain": brain, "skull": skull, "gtv": core | oedema, "necrosis": necrosis,
             "enhancement": core & ~necrosis, "oedema": oedema}
    if mech["marker"]:
        masks["marker"] = marker
    if "landmark_left" in mech:
        masks["landmark"] = landmark
    masks = {k: v.reshape(shape) for k, v in masks.items()}
    cmm = template_anatomy(_RES).affine @ np.r_[centre, 1.0]
    meta = {"index": index, "seed": seed, "label_name": _label_names(cfg)[y],
            "shape_t1c": LABEL_NAMES[mech["shape_t1c"]],
            "shape_flair": LABEL_NAMES[mech["shape_flair"]],
            "shape_t1t2": LABEL_NAMES[mech["shape_t1t2"]],
            "t1c_matches_label": mech["shape_t1c"] == y,
            "flair_matches_label": mech["shape_flair"] == y,
            "marker": mech["marker"], "counterfactual": counterfactual or "none",
            "lesion_x_mm": float(cmm[0]), "lesion_y_mm": float(cmm[1]),
            "lesion_z_mm": float(cmm[2]), "lesion_radius_mm": float(r_core),
            "necrosis_fraction": float(f_nec), "oedema_factor": float(f_oed),
            "marker_radius_mm": float(r_marker), **pose_meta,
            "affine": output_affine(dim, size, float(centre[2]) if dim == 2 else None)}
    if "landmark_left" in mech:
        meta.update(mechanism="relational", lesion_hemisphere="left" if mech["lesion_left"] else "right",
                    landmark_hemisphere="left" if mech["landmark_left"] else "right", **lm_meta)
    if dim == 2:
        meta["slice_z"] = int(centre[2])
    return img.astype(np.float32), masks, meta


# -------------------------------------------------------------------------------- API
def _cohort_meta(cfg: SyntheticConfig, counterfactual: str | None, seed: int) -> dict[str, Any]:
    return {"generator": GENERATOR, "config": cfg.to_dict(), "config_hash": cfg.config_hash(),
            "seed": seed, "counterfactual": counterfactual or "none",
            "channels": list(CHANNELS), "label_names": dict(zip("01", _label_names(cfg))),
            "pose": cfg.pose, "jitter": cfg.jitter, "mechanism": cfg.mechanism,
            "tissue_intensities": {k: list(v) for k, v in TISSUE_INTENSITIES.items()},
            "contrast_geometry": {"T1": "t1t2", "T1c": "t1c (core, rim); t1t2 (oedema)",
                                  "T2": "t1t2", "FLAIR": "flair (oedema); t1t2 (core)"},
            "mechanisms": {"p_t1c": cfg.p_t1c, "p_flair": cfg.p_flair,
                           "shape_informative": cfg.shape_informative,
                           "q1": cfg.q1, "q0": cfg.q0}}


def _generate(cfg: SyntheticConfig, indices: range, seed: int,
              counterfactual: str | None) -> Cohort:
    _check_cf(counterfactual)
    cases = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyMaskWarning)
        for i in indices:
            img, masks, meta = _render(cfg, i, seed, counterfactual)
            cid = f"syn{seed}-{i:05d}"
            cases.append(Case(cid, img, CHANNELS, _label(i), cid, masks, meta))
    return Cohort(cases, _cohort_meta(cfg, counterfactual, seed))


def make_cohort(cfg: SyntheticConfig, *, counterfactual: str | None = None,
                n_cases: int | None = None, seed: int | None = None) -> Cohort:
    """Generate a cohort (deterministic for config + seed); ``n_cases``/``seed`` override cfg.

    Case ``i`` depends only on (seed, i, config, counterfactual), so a counterfactual cohort
    pairs case by case (same ids) with the normal one.
    """
    n = cfg.n_cases if n_cases is None else int(n_cases)
    return _generate(cfg, range(n), cfg.seed if seed is None else int(seed), counterfactual)


def make_splits(cfg: SyntheticConfig, fractions=(0.7, 0.15, 0.15),
                counterfactuals: tuple[str, ...] = COUNTERFACTUALS) -> dict[str, Cohort]:
    """train/val/test by case index, plus the counterfactual test sets (``test_<name>``, default all
    three) on the test cases."""
    fr = np.asarray(fractions, float)
    if fr.shape != (3,) or (fr < 0).any() or not np.isclose(fr.sum(), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got "
                         f"{tuple(fractions)}")
    n = cfg.n_cases
    n_tr, n_va = round(fr[0] * n), round(fr[1] * n)
    n_va = min(n_va, n - n_tr)
    parts = {"train": range(n_tr), "val": range(n_tr, n_tr + n_va),
             "test": range(n_tr + n_va, n)}
    out = {k: _generate(cfg, r, cfg.seed, None) for k, r in parts.items()}
    bad = [cf for cf in counterfactuals if cf not in COUNTERFACTUALS]
    if bad:
        raise ValueError(f"unknown counterfactual {bad[0]!r}; known: {', '.join(COUNTERFACTUALS)}")
    for cf in counterfactuals:
        out[f"test_{cf}"] = _generate(cfg, parts["test"], cfg.seed, cf)
    return out


def to_nifti(cohort: Cohort, folder: str | Path, *, overwrite: bool = False) -> Path:
    """Write a (synthetic) cohort with :func:`audit.nifti.write_nifti`; returns the manifest."""
    return write_nifti(cohort, folder, overwrite=overwrite)
