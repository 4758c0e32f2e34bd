"""Atlas ROIs (audit.data.atlas): registration accuracy on cases with known masks, QC, cohort use.

Ground truth comes from two sources: the synthetic cohort (audit.synthetic, masks known by
construction) and a template warped here by a random affine plus a smooth displacement, with
the true masks warped alongside, onto a rotated 64³ grid of 3 mm voxels and a T1 contrast
that differs from the registration template's.
"""
from __future__ import annotations

import warnings

import ants  # noqa: E402,F401  (a dependency: its absence must fail, not skip)
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from audit.data import atlas as A
from audit.data.cohort import Case, Cohort
from probes.core.stats import dice


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of one mask pair (probes.core.stats.dice is per case over the leading axis)."""
    return float(dice(np.asarray(a)[None], np.asarray(b)[None])[0])


def _rotation(rng: np.random.Generator, deg: float) -> np.ndarray:
    a = np.deg2rad(rng.uniform(-deg, deg, 3))
    (cx, cy, cz), (sx, sy, sz) = np.cos(a), np.sin(a)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def warped_template_case(seed: int = 0, shape: tuple[int, int, int] = (64, 64, 64),
                         spacing: float = 3.0) -> Case:
    """The template anatomy moved by a random affine + smooth warp onto a rotated 3 mm grid.

    Masks ``brain_true``/``skull_true`` are the template masks warped by the same map. The
    T1 contrast (GM 0.5, WM 0.85, bright scalp and diploë, Gaussian noise) differs from the
    one the registration template synthesises.
    """
    rng = np.random.default_rng(seed)
    t = A.default_template(2)
    img = np.where(t.brain, 0.5 * t.gm + 0.85 * t.wm + 0.15 * t.csf, 0).astype(np.float32)
    img[(t.csf > 0) & ~t.brain] = 0.12
    img[t.skull], img[t.diploe], img[t.scalp] = 0.04, 0.5, 0.9
    d, h, w = shape
    centre = t.affine[:3, :3] @ np.array(ndi.center_of_mass(t.brain)) + t.affine[:3, 3]
    lin = _rotation(rng, 8) * spacing
    aff = np.eye(4)
    aff[:3, :3] = lin
    aff[:3, 3] = centre + rng.normal(0, 5, 3) - lin @ (np.array([h, w, d]) - 1) / 2
    vox = np.indices((h, w, d)).reshape(3, -1).astype(float)  # NIfTI (i, j, k) = (H, W, D)
    world = aff[:3, :3] @ vox + aff[:3, 3:4]
    anat = _rotation(rng, 8) @ np.diag(1 + rng.uniform(-0.08, 0.08, 3))
    world = anat @ (world - centre[:, None]) + centre[:, None]
    disp = np.stack([ndi.zoom(c, (h / 6, w / 6, d / 6), order=3)
                     for c in rng.normal(0, 1, (3, 6, 6, 6))])
    world = world + (disp / np.abs(disp).max() * 4.0).reshape(3, -1)  # up to 4 mm
    tv = np.linalg.inv(t.affine)[:3] @ np.vstack([world, np.ones(world.shape[1])])

    def sample(a: np.ndarray, order: int) -> np.ndarray:
        out = ndi.map_coordinates(np.asarray(a, np.float32), tv, order=order, mode="constant")
        return np.moveaxis(out.reshape(h, w, d), -1, 0)  # → medaudit (D, H, W)

    image = sample(img, 1) + rng.normal(0, 0.03, shape).astype(np.float32)
    masks = {"brain_true": sample(t.brain, 1) > 0.5, "skull_true": sample(t.skull, 1) > 0.5}
    return Case(f"warped{seed}", image[None], ("T1",), masks=masks, meta={"affine": aff})


@pytest.fixture(scope="module")
def case() -> Case:
    return warped_template_case(0)


@pytest.fixture(scope="module")
def result(case: Case) -> A.AtlasResult:
    return A.atlas_rois(case, seed=0)


# ------------------------------------------------------------------------- accuracy
def test_synthetic_cohort_brain_dice() -> None:
    """The key requirement: on the synthetic cohort, warped brain vs true brain Dice ≥ 0.9."""
    from audit.synthetic import SyntheticConfig, make_cohort

    cohort = make_cohort(SyntheticConfig(dim=3, n_cases=2, seed=3))
    assert len(cohort) == 2
    channel = "T1" if "T1" in cohort.channels else cohort.channels[0]
    for c in cohort:
        res = A.atlas_rois(c, channel=channel, seed=0)
        assert res.masks["brain"].shape == c.spatial_shape
        d_brain = _dice(res.masks["brain"], c.masks["brain"])
        assert d_brain >= 0.9, (c.case_id, d_brain, res.qc)
        if "skull" in c.masks:
            assert _dice(res.masks["skull"], c.masks["skull"]) >= 0.6, c.case_id
        assert not res.qc["flagged"], (c.case_id, res.qc)


def test_warped_template_brain_dice(case: Case, result: A.AtlasResult) -> None:
    assert set(result.masks) == {"brain", "skull"}
    for m in result.masks.values():
        assert m.shape == case.spatial_shape and m.dtype == bool
    assert _dice(result.masks["brain"], case.masks["brain_true"]) >= 0.9
    assert _dice(result.masks["skull"], case.masks["skull_true"]) >= 0.75
    assert not result.qc["flagged"] and result.qc["dice_vs_intensity_mask"] >= 0.85
    assert result.qc["seconds"] < 30
    row = result.to_frame()
    assert len(row) == 1 and row.loc[0, "case_id"] == case.case_id
    assert {"dice_vs_intensity_mask", "flagged", "n_voxels_brain"} <= set(row.columns)


def test_without_affine_uses_spacing(case: Case) -> None:
    """No meta affine: axis-aligned (H,W,D)=(x,y,z) voxels of ``spacing`` mm still work."""
    bare = Case("bare", case.image, case.channels, masks=case.masks)
    res = A.atlas_rois(bare, spacing=3.0, reg_iterations=(30, 10, 0))
    assert res.masks["brain"].shape == case.spatial_shape
    assert _dice(res.masks["brain"], case.masks["brain_true"]) >= 0.9


def test_deformable_only_from_centre_of_mass(case: Case) -> None:
    res = A.atlas_rois(case, aff_first=False, reg_iterations=(40, 20, 0))
    assert _dice(res.masks["brain"], case.masks["brain_true"]) >= 0.9


# ------------------------------------------------------------------------------ QC
def test_qc_flags_a_shuffled_image(case: Case) -> None:
    rng = np.random.default_rng(1)
    shuffled = rng.permutation(case.image.ravel()).reshape(case.image.shape)
    bad = Case("shuffled", shuffled, case.channels, meta=case.meta)
    res = A.atlas_rois(bad, reg_iterations=(20, 0, 0))
    assert res.qc["flagged"] and res.qc["flag_low_dice"]
    assert res.qc["dice_vs_intensity_mask"] < 0.85


def test_qc_threshold_is_a_parameter(case: Case, result: A.AtlasResult) -> None:
    qc = A._qc(result.masks["brain"], result.head_mask, result.intensity_mask, 0.999)
    assert qc["flagged"] and qc["qc_threshold"] == 0.999
    with pytest.raises(ValueError, match="qc_threshold"):
        A.atlas_rois(case, qc_threshold=1.5)


def test_intensity_mask_and_dice() -> None:
    img = np.zeros((20, 20, 20), np.float32)
    img[4:16, 4:16, 4:16] = 1.0
    img[8:12, 8:12, 8:12] = 0.0  # a hole, filled
    img[0, 0, 0] = 1.0  # a speck, dropped (not the largest component)
    m = A.intensity_mask(img)
    truth = np.zeros(img.shape, bool)
    truth[4:16, 4:16, 4:16] = True
    assert _dice(m, truth) == 1.0
    assert _dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    assert not A.intensity_mask(np.ones((5, 5, 5))).any()
    with pytest.raises(ValueError, match="shapes differ"):
        _dice(np.zeros(3, bool), np.zeros(4, bool))


def test_qc_figure(case: Case, result: A.AtlasResult, tmp_path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = tmp_path / "qc.png"
    fig = A.qc_figure(case, result, path)
    try:
        assert path.stat().st_size > 1000
        assert len(fig.axes) == 3
        assert f"{result.qc['dice_vs_intensity_mask']:.3f}" in fig._suptitle.get_text()
        assert [ax.get_title().split(":")[0] for ax in fig.axes] == \
               ["axial", "sagittal", "coronal"]  # (D, H, W) of a near-RAS affine
    finally:
        plt.close(fig)


# --------------------------------------------------------------------- axis handling
def test_ants_image_follows_the_nifti_convention() -> None:
    """Voxel (d, h, w) of a medaudit array sits at affine @ (h, w, d), in ITK's LPS."""
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(5, 6, 7)).astype(np.float32)
    aff = np.eye(4)
    aff[:3, :3] = _rotation(rng, 30) @ np.diag([1.5, 2.0, 3.0])
    aff[:3, 3] = [10.0, -20.0, 5.0]
    img = A._to_ants(arr, aff)
    np.testing.assert_array_equal(np.moveaxis(img.numpy(), -1, 0), arr)
    d, h, w = 4, 2, 3
    ras = aff @ [h, w, d, 1]
    lps = img.origin + img.direction @ (np.array(img.spacing) * [h, w, d])
    np.testing.assert_allclose(lps, ras[:3] * [-1, -1, 1], atol=1e-4)


# ---------------------------------------------------------------------- cohort & errors
def test_add_atlas_rois_keeps_masks_and_records_failures(case: Case) -> None:
    sentinel = np.zeros(case.spatial_shape, bool)
    sentinel[:2] = True
    good = Case("good", case.image, case.channels, masks={"brain": sentinel}, meta=case.meta)
    flat = Case("flat", np.ones_like(case.image), case.channels, meta=case.meta)
    cohort = Cohort([good, flat], meta={"name": "test"})
    kw = {"reg_iterations": (20, 10, 0)}
    out, qc = A.add_atlas_rois(cohort, **kw)
    assert isinstance(qc, pd.DataFrame) and list(qc["case_id"]) == ["good", "flat"]
    assert out.case_ids == ["good", "flat"] and out.meta == {"name": "test"}
    assert np.array_equal(out["good"].masks["brain"], sentinel)  # not overwritten
    assert out["good"].masks["skull"].shape == case.spatial_shape
    assert qc.loc[0, "kept_existing"] == "brain" and not qc.loc[0, "error"]
    assert bool(qc.loc[1, "flagged"]) and "flat" in qc.loc[1, "error"]
    assert "constant" in qc.loc[1, "error"]
    assert out["flat"].masks == {}
    assert np.array_equal(cohort["good"].masks["brain"], sentinel)  # input untouched
    with pytest.raises(ValueError, match="'flat'"):
        A.add_atlas_rois(cohort.subset(["flat"]), raise_errors=True, **kw)
    out2, qc2 = A.add_atlas_rois(cohort.subset(["good"]), overwrite=True, **kw)
    assert _dice(out2["good"].masks["brain"], case.masks["brain_true"]) >= 0.85
    assert qc2.loc[0, "kept_existing"] == ""


def test_errors_name_case_channel_and_shape(case: Case) -> None:
    with pytest.raises(KeyError, match="warped0.*'T2'"):
        A.atlas_rois(case, channel="T2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flat2d = Case("slice7", np.ones((1, 32, 32), np.float32), ("T1",))
    with pytest.raises(ValueError, match=r"'slice7'.*\(32, 32\)"):
        A.atlas_rois(flat2d)
    with pytest.raises(ValueError, match="no ROI.*'wm_mask'"):
        A.atlas_rois(case, rois=("brain", "wm_mask"))
    with pytest.raises(ValueError, match="template_t1"):
        A.atlas_rois(case, template_t1="skull")
    with pytest.raises(TypeError, match="Cohort"):
        A.add_atlas_rois([case])
