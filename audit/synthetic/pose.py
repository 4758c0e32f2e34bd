"""Where each synthetic head sits in its image: a random pose, or the atlas pose with a small
residual jitter (what registration to a template leaves), and the affine of the output grid.

Both poses draw the same random numbers in the same order, so a case differs between the two
only in where its head sits; the atlas pose scales each draw down to its jitter range.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from audit.data.template import template_anatomy

__all__ = ["Pose", "RES", "HEAD_CENTRE", "FOV_VOX", "pose_transform", "output_affine", "ATLAS_SLICE_Z"]

Pose = Literal["random", "atlas"]
RES = 2                       # template resolution (mm) used by the generator
HEAD_CENTRE = (49.0, 58.5, 47.0)  # template voxel at the centre of the field of view
FOV_VOX = 110.0               # template voxels across the output field of view
#: template z index (MNI z = +16 mm, through the lateral ventricles and basal ganglia) of every
#: 2D slice of an atlas-posed cohort: registered slices share one axial level
ATLAS_SLICE_Z = 44

# random pose: rotation ±10° (2D) / ±6° per axis (3D), scale ±8 %, shift ±4 % of the field of view
_ROT_DEG = {2: 10.0, 3: 6.0}
_SCALE, _SHIFT = 0.08, 0.04


def pose_transform(rng: np.random.Generator, dim: int, size: int, pose: Pose = "random",
                   jitter: float = 1.0) -> tuple[np.ndarray, np.ndarray, dict]:
    """Output index p → template voxel ``M @ p + off`` (template x, y[, z]), and its meta.

    ``pose="random"``: rotation, scale and shift drawn uniformly in the ranges above.
    ``pose="atlas"``: the same draws mapped to rotation ±``jitter`` degrees, shift ±``jitter``
    mm and scale ±``jitter`` % — the head in template space up to that residual.
    """
    k = FOV_VOX / size
    co = (size - 1) / 2.0
    scale = rng.uniform(1 - _SCALE, 1 + _SCALE)
    shift = rng.uniform(-_SHIFT, _SHIFT, dim) * size
    angs = rng.uniform(-_ROT_DEG[dim], _ROT_DEG[dim], 1 if dim == 2 else 3)
    if pose == "atlas":
        # the same uniforms, shrunk: rotation ±jitter°, scale ±jitter %, shift ±jitter mm
        scale = 1.0 + (scale - 1.0) * (jitter / 100.0) / _SCALE
        mm_per_px = k * RES
        shift = shift / (_SHIFT * size) * (jitter / mm_per_px)
        angs = angs * jitter / _ROT_DEG[dim]
    if dim == 2:
        th = np.deg2rad(angs[0])
        rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        m0 = np.array([[0.0, -1.0], [-1.0, 0.0]])       # (row, col) → (−y, −x)
        meta = {"rotation_deg": float(angs[0])}
        ct = np.array(HEAD_CENTRE[:2])
    else:
        rad = np.deg2rad(angs)
        rot = np.eye(3)
        for i, a in enumerate(rad):
            ax1, ax2 = [(1, 2), (0, 2), (0, 1)][i]
            r = np.eye(3)
            r[ax1, ax1] = r[ax2, ax2] = np.cos(a)
            r[ax1, ax2], r[ax2, ax1] = -np.sin(a), np.sin(a)
            rot = rot @ r
        m0 = np.array([[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])  # (d,h,w)→(x,y,z)
        meta = {f"rotation_{n}_deg": float(a) for n, a in zip("dhw", angs)}
        ct = np.array(HEAD_CENTRE)
    mat = k / scale * m0 @ rot
    off = ct - mat @ np.full(dim, co) - k * m0 @ shift
    meta.update({"pose": pose, "scale": float(scale), **{f"shift_{i}": float(s) for i, s in enumerate(shift)}})
    return mat, off, meta


def output_affine(dim: int, size: int, z_slice: float | None) -> np.ndarray:
    """NIfTI voxel (i, j, k) = (H, W, D) → MNI mm of the unposed output grid (float32-exact)."""
    a = template_anatomy(RES).affine
    k = FOV_VOX / size
    co = (size - 1) / 2.0
    ct = np.array(HEAD_CENTRE)
    vox = np.zeros((4, 4))
    vox[3, 3] = 1
    # template voxel = ct + k * (x: −(w−co), y: −(h−co), z: d−co)
    vox[0, 1] = -k
    vox[1, 0] = -k
    vox[0, 3] = ct[0] + k * co
    vox[1, 3] = ct[1] + k * co
    if dim == 3:
        vox[2, 2] = k
        vox[2, 3] = ct[2] - k * co
    else:
        vox[2, 2] = 1.0
        vox[2, 3] = z_slice
    return (a @ vox).astype(np.float32).astype(float)
