"""Template anatomy for the synthetic cohort: MNI152 (nilearn, offline) plus synthetic head layers.

The nilearn MNI152 T1 template is skull-stripped, so the layers outside the brain are synthesised
as distance shells of the brain mask (distances in mm, measured outwards from the mask):

    0 – 3 mm   CSF (subarachnoid space)          → part of ``csf``
    3 – 10 mm  skull (cortical tables + diploë)  → ``skull``
    10 – 17 mm scalp (subcutaneous fat, skin)    → ``scalp``

Inside the brain, ``gm`` and ``wm`` are the template's probability maps (renormalised so that
gm + wm ≤ 1) and ``csf`` is the remainder ``1 − gm − wm`` (ventricles, sulci). All arrays are in
the template's voxel order ``(x, y, z)`` (RAS+, x → right, y → anterior, z → superior) and
``affine`` maps voxel indices to MNI mm, as in nibabel.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["SHELLS_MM", "TemplateAnatomy", "template_anatomy"]

#: outer distance (mm) from the brain mask of the CSF, skull and scalp shells
SHELLS_MM = {"csf": 3.0, "skull": 10.0, "scalp": 17.0}


@dataclass(frozen=True, eq=False)
class TemplateAnatomy:
    """Template-space anatomy (read-only arrays, shape of the MNI152 grid, voxel order x, y, z).

    ``t1``: the MNI152 T1 template in [0, 1] (skull-stripped); ``brain``, ``skull``, ``scalp``:
    boolean masks (mutually disjoint); ``gm``, ``wm``, ``csf``: float32 tissue fractions
    (gm + wm + csf = 1 inside the brain; csf is also 1 on the 0–3 mm shell outside it);
    ``diploe``: boolean, the middle of the skull shell (marrow, bright on T1); ``affine``:
    4×4 voxel → MNI mm; ``resolution``: voxel size in mm.
    """

    t1: np.ndarray
    brain: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    skull: np.ndarray
    scalp: np.ndarray
    diploe: np.ndarray
    affine: np.ndarray
    resolution: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.brain.shape)


def _ro(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=2)
def template_anatomy(resolution: int = 2) -> TemplateAnatomy:
    """MNI152 anatomy from nilearn (offline) with synthetic CSF/skull/scalp shells; cached.

    ``resolution`` is 1 or 2 (mm); 2 mm gives 99×117×95 arrays. See the module docstring for
    the layers. Arrays are read-only and shared between calls.
    """
    if resolution not in (1, 2):
        raise ValueError(f"resolution must be 1 or 2 (mm), got {resolution!r}")
    import warnings

    from nilearn import datasets

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t1_img = datasets.load_mni152_template(resolution=resolution)
        brain = np.asarray(datasets.load_mni152_brain_mask(resolution=resolution).dataobj) > 0
        gm = np.asarray(datasets.load_mni152_gm_template(resolution=resolution).get_fdata(),
                        dtype=np.float32)
        wm = np.asarray(datasets.load_mni152_wm_template(resolution=resolution).get_fdata(),
                        dtype=np.float32)
    t1 = np.clip(np.asarray(t1_img.get_fdata(), dtype=np.float32), 0, 1)
    gm = np.clip(gm, 0, 1) * brain
    wm = np.clip(wm, 0, 1) * brain
    tot = gm + wm
    over = tot > 1
    gm[over] /= tot[over]
    wm[over] /= tot[over]
    # distance (mm) from the brain mask, outside it
    dist = ndimage.distance_transform_edt(~brain, sampling=float(resolution))
    csf_shell = (dist > 0) & (dist <= SHELLS_MM["csf"])
    skull = (dist > SHELLS_MM["csf"]) & (dist <= SHELLS_MM["skull"])
    scalp = (dist > SHELLS_MM["skull"]) & (dist <= SHELLS_MM["scalp"])
    mid = 0.5 * (SHELLS_MM["csf"] + SHELLS_MM["skull"])
    diploe = skull & (np.abs(dist - mid) <= 1.6)
    csf = np.where(brain, np.clip(1.0 - gm - wm, 0, 1), csf_shell.astype(np.float32))
    return TemplateAnatomy(
        t1=_ro(t1 * brain), brain=_ro(brain), gm=_ro(gm.astype(np.float32)),
        wm=_ro(wm.astype(np.float32)), csf=_ro(csf.astype(np.float32)), skull=_ro(skull),
        scalp=_ro(scalp), diploe=_ro(diploe),
        affine=_ro(np.asarray(t1_img.affine, dtype=float)), resolution=int(resolution))
