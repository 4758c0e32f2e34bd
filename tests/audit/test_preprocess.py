"""Tests for audit.run.preprocess: closed forms and independent resamplers (Pillow, skimage, scipy)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage.transform import resize as sk_resize

from audit.data.cohort import Case, Cohort, EmptyMaskWarning
from audit.run.config import PreprocessSpec, SliceSpec
from audit.run.preprocess import ConstantChannelWarning, crop_or_pad, normalize_channel, preprocess, resize_case
from audit.synthetic import SyntheticConfig, make_cohort
from probes.core.errors import InputTypeError, OptionError, ShapeError


def _smooth(h, w, c=2):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([np.sin(x / 7.0 + k) + np.cos(y / 5.0 - k) + 3 for k in range(c)]).astype(np.float32)


def _cohort2d(n=3, hw=(40, 50), brain=True):
    cases = []
    for i in range(n):
        img = _smooth(*hw) * (i + 1) + np.random.default_rng(i).normal(size=(2, *hw)).astype(np.float32)
        masks = {}
        if brain:
            b = np.zeros(hw, bool)
            b[5:30, 10:40] = True
            masks["brain"] = b
        roi = np.zeros(hw, bool)
        roi[10:20, 20:30] = True
        masks["gtv"] = roi
        cases.append(Case(f"c{i}", img, ("T1", "FLAIR"), i % 2, f"p{i}", masks, {"site": "A"}))
    return Cohort(cases, {"origin": "test"})


@pytest.fixture(scope="module")
def synth3d():
    return make_cohort(SyntheticConfig(n_cases=4, dim=3, size=32))


# ------------------------------------------------------------------------------ no-op
def test_empty_spec_returns_same_object():
    c = _cohort2d()
    assert preprocess(c, PreprocessSpec()) is c


# ------------------------------------------------------------------------------ intensity
def test_zscore_brain_mean0_std1_inside_brain():
    c = _cohort2d()
    out = preprocess(c, PreprocessSpec(normalize="zscore_brain"))
    for a, b in zip(c, out):
        brain = a.masks["brain"]
        for k in range(2):
            inside = b.image[k][brain].astype(np.float64)
            assert abs(inside.mean()) < 1e-5 and abs(inside.std() - 1) < 1e-5
            # one affine map for every voxel: the outside follows the same formula
            m, s = a.image[k][brain].astype(np.float64).mean(), a.image[k][brain].astype(np.float64).std()
            np.testing.assert_allclose(b.image[k], (a.image[k] - m) / s, rtol=1e-5, atol=1e-5)
        assert b.meta["preprocess"]["region"] == "brain" and b.meta["site"] == "A"
        assert (b.case_id, b.label, b.patient_id) == (a.case_id, a.label, a.patient_id)
        np.testing.assert_array_equal(b.masks["gtv"], a.masks["gtv"])
    assert out.meta == c.meta


def test_zscore_brain_without_mask_uses_nonzero_voxels():
    img = np.zeros((1, 6, 6), np.float32)
    img[0, 1:4, 1:4] = np.arange(9).reshape(3, 3) + 1  # values 1..9 on a zero background
    out = preprocess(Cohort([Case("a", img, ("T2",))]), PreprocessSpec(normalize="zscore_brain"))[0]
    vals = np.arange(1, 10, dtype=np.float64)
    np.testing.assert_allclose(out.image[0, 1:4, 1:4].ravel(), (vals - 5) / vals.std(), rtol=1e-6)
    np.testing.assert_allclose(out.image[0, 0, 0], -5 / vals.std(), rtol=1e-6)
    assert out.meta["preprocess"]["region"] == "nonzero"


def test_zscore_and_minmax_closed_forms():
    x = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    z = preprocess(Cohort([Case("a", x, ("T1",))]), PreprocessSpec(normalize="zscore"))[0].image
    np.testing.assert_allclose(z, (x - 5.5) / np.sqrt((144 - 1) / 12), rtol=1e-6)  # var of 0..n-1 = (n²-1)/12
    mm = preprocess(Cohort([Case("a", x, ("T1",))]), PreprocessSpec(normalize="minmax"))[0].image
    np.testing.assert_allclose(mm, x / 11, rtol=1e-6)
    assert mm.min() == 0 and mm.max() == 1


def test_constant_channel_is_centred_and_warned():
    img = np.stack([np.full((4, 4), 7.0), np.arange(16.0).reshape(4, 4)]).astype(np.float32)
    with pytest.warns(ConstantChannelWarning, match=r"a/T1"):
        out = preprocess(Cohort([Case("a", img, ("T1", "T2"))]), PreprocessSpec(normalize="zscore"))[0]
    assert (out.image[0] == 0).all() and abs(out.image[1].std() - 1) < 1e-6
    y, st = normalize_channel(np.full((3, 3), 2.0), "minmax")
    assert st["constant"] and (y == 0).all()


def test_percentile_clip_matches_numpy():
    c = _cohort2d(hw=(20, 25))
    out = preprocess(c, PreprocessSpec(clip_percentiles=(2.0, 97.5)))
    for a, b in zip(c, out):
        for k, ch in enumerate(a.channels):
            x = a.image[k].astype(np.float64)
            lo, hi = np.percentile(x, 2.0), np.percentile(x, 97.5)
            np.testing.assert_array_equal(b.image[k], np.clip(x, lo, hi).astype(np.float32))
            assert b.meta["preprocess"]["clip"][ch] == [lo, hi]
            assert (b.image[k] <= a.image[k].max()).all() and (b.image[k] < a.image[k].max()).any()


# ------------------------------------------------------------------------------ geometry
def test_resize_down_matches_pillow_and_up_matches_skimage():
    img = _smooth(40, 50)
    down, _ = resize_case(img, {}, (25, 30))
    for k in range(2):  # torch's antialiased bilinear is Pillow's BILINEAR filter
        ref = np.asarray(Image.fromarray(img[k], "F").resize((30, 25), Image.BILINEAR))
        np.testing.assert_allclose(down[k], ref, atol=1e-5)
    up, _ = resize_case(img, {}, (70, 90))
    for k in range(2):
        ref = sk_resize(img[k].astype(np.float64), (70, 90), order=1, mode="edge", anti_aliasing=False)
        np.testing.assert_allclose(up[k], ref, atol=1e-5)


def test_resize_3d_matches_scipy_zoom():
    vol = ndimage.gaussian_filter(np.random.default_rng(0).normal(size=(6, 7, 8)), 2).astype(np.float32)[None]
    out, _ = resize_case(vol, {}, (12, 14, 16))
    ref = ndimage.zoom(vol[0].astype(np.float64), 2, order=1, grid_mode=True, mode="nearest")
    np.testing.assert_allclose(out[0], ref, atol=1e-6)


def test_resize_constant_image():
    img = np.full((1, 17, 23), 3.7, np.float32)
    for size in ((40, 50), (8, 9), (17, 10)):  # up, down (antialiased), mixed
        out, _ = resize_case(img, {}, size)
        assert out.shape == (1, *size) and (out == np.float32(3.7)).all()
    vol, _ = resize_case(np.full((2, 7, 9, 11), -1.3, np.float32), {}, (5, 12, 13))
    assert (vol == np.float32(-1.3)).all()


def test_mask_follows_image_geometry():
    c = _cohort2d(n=1, hw=(40, 50))
    out = preprocess(c, PreprocessSpec(resize=[80, 100]))[0]  # ×2: ROI rows 10:20 → 20:40, cols 20:30 → 40:60
    expect = np.zeros((80, 100), bool)
    expect[20:40, 40:60] = True
    np.testing.assert_array_equal(out.masks["gtv"], expect)
    assert out.meta["preprocess"]["resize"] == [[40, 50], [80, 100]]
    # a non-integer factor: the nearest source pixel to each output centre, as skimage's order-0 resize
    mask = np.random.default_rng(0).random((30, 30)) > 0.5  # every pixel tests the grid (plain "nearest" fails)
    _, m = resize_case(np.zeros((1, 30, 30), np.float32), {"r": mask}, (20, 20))
    ref = sk_resize(mask.astype(float), (20, 20), order=0, anti_aliasing=False, mode="edge") > 0.5
    np.testing.assert_array_equal(m["r"], ref)


def test_crop_and_pad_shapes_and_content():
    x = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    cropped = crop_or_pad(x, (3, 3))
    np.testing.assert_array_equal(cropped, x[:, 1:4, 1:4])
    padded = crop_or_pad(x, (8, 9))
    assert padded.shape == (2, 8, 9)
    np.testing.assert_array_equal(padded[:, 1:6, 1:7], x)
    assert padded.sum() == x.sum()  # everything else is 0
    np.testing.assert_array_equal(crop_or_pad(padded, (5, 6)), x)  # pad then crop back = identity
    mixed = crop_or_pad(x, (7, 4))  # pad rows, crop columns
    np.testing.assert_array_equal(mixed[:, 1:6], x[:, :, 1:5])
    c = _cohort2d(n=1, hw=(40, 50))
    out = preprocess(c, PreprocessSpec(crop=[20, 60]))[0]  # rows 10:30 kept, columns padded by 5
    assert out.spatial_shape == (20, 60)
    np.testing.assert_array_equal(out.masks["gtv"], crop_or_pad(c[0].masks["gtv"], (20, 60), False))
    assert out.masks["gtv"].sum() == 100 and out.masks["gtv"][0:10, 25:35].all()


def test_vanishing_mask_warns():
    img = np.zeros((1, 10, 10), np.float32)
    dot = np.zeros((10, 10), bool)
    dot[0, 0] = True
    with pytest.warns(EmptyMaskWarning, match="a/dot"):
        preprocess(Cohort([Case("a", img, ("T1",), masks={"dot": dot})]), PreprocessSpec(crop=[4, 4]))


# ------------------------------------------------------------------------------ slicing
def test_slice_middle_int_and_max_roi(synth3d):
    d = synth3d[0].spatial_shape[0]
    mid = preprocess(synth3d, PreprocessSpec(slice=SliceSpec(axis=0, index="middle")))
    assert len(mid) == 4 and mid.spatial_ndim == 2
    for a, b in zip(synth3d, mid):
        np.testing.assert_array_equal(b.image, a.image[:, d // 2])
        np.testing.assert_array_equal(b.masks["gtv"], a.masks["gtv"][d // 2])
        assert b.meta["preprocess"]["slice"] == {"axis": 0, "index": d // 2, "rule": "middle"}
    ax = preprocess(synth3d, PreprocessSpec(slice=SliceSpec(axis=2, index=5)))
    np.testing.assert_array_equal(ax[1].image, synth3d[1].image[:, :, :, 5])
    best = preprocess(synth3d, PreprocessSpec(slice=SliceSpec(axis=1, index="max_roi", roi="gtv")))
    for a, b in zip(synth3d, best):
        counts = [int(a.masks["gtv"][:, j].sum()) for j in range(a.spatial_shape[1])]
        assert b.masks["gtv"].sum() == max(counts) > 0
        assert b.meta["slice_index"] == counts.index(max(counts))


def test_slice_then_normalize_resize_crop(synth3d):
    spec = PreprocessSpec(slice=SliceSpec(index="max_roi"), clip_percentiles=(1, 99), normalize="zscore_brain",
                          resize=[64, 64], crop=[48, 48])
    out = preprocess(synth3d, spec)
    assert out.spatial_shape == (48, 48) and out.channels == synth3d.channels
    rec = out[0].meta["preprocess"]
    assert set(rec) == {"slice", "clip", "region", "normalize", "shift_scale", "resize", "crop"}
    assert rec["resize"] == [[32, 32], [64, 64]] and rec["crop"] == [[64, 64], [48, 48]]
    assert out.meta["slice_axis"] == 0 and all(k in out.meta for k in synth3d.meta)


# ------------------------------------------------------------------------------ errors
def test_errors_name_the_key_value_and_shape(synth3d):
    c2 = _cohort2d()
    with pytest.raises(ShapeError, match=r"preprocess\.resize: \[64, 64, 64\] has 3 sizes.*2-D.*\(40, 50\)"):
        preprocess(c2, PreprocessSpec(resize=[64, 64, 64]))
    with pytest.raises(ShapeError, match=r"preprocess\.crop: \[8\]"):
        preprocess(c2, PreprocessSpec(crop=[8]))
    with pytest.raises(ShapeError, match=r"preprocess\.resize.*after slicing"):
        preprocess(synth3d, PreprocessSpec(slice=SliceSpec(), resize=[8, 8, 8]))
    with pytest.raises(ShapeError, match=r"preprocess\.slice: .*2-D.*'c0'"):
        preprocess(c2, PreprocessSpec(slice=SliceSpec()))
    with pytest.raises(OptionError, match=r"preprocess\.resize"):
        preprocess(c2, PreprocessSpec(resize=[0, 8]))
    with pytest.raises(OptionError, match=r"preprocess\.slice\.index: 99 .*size 32"):
        preprocess(synth3d, PreprocessSpec(slice=SliceSpec(index=99)))
    with pytest.raises(OptionError, match=r"case '.*' has no mask 'gvt'.*did you mean 'gtv'"):
        preprocess(synth3d, PreprocessSpec(slice=SliceSpec(index="max_roi", roi="gvt")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyMaskWarning)
        empty = Cohort([Case("v", np.ones((1, 4, 4, 4), np.float32), ("T1",), masks={"gtv": np.zeros((4, 4, 4))})])
        with pytest.raises(OptionError, match=r"case 'v' has an empty 'gtv' mask"):
            preprocess(empty, PreprocessSpec(slice=SliceSpec(index="max_roi")))
    with pytest.raises(InputTypeError, match="cohort"):
        preprocess([c2[0]], PreprocessSpec(normalize="zscore"))
    with pytest.raises(InputTypeError, match="spec"):
        preprocess(c2, {"normalize": "zscore"})
