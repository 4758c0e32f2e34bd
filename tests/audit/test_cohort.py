"""Tests for audit.data: Case/Cohort validation, torch view, NIfTI round trip, slicing."""
from __future__ import annotations

import csv
import dataclasses
import json
import pickle
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from audit.data import (
    Case,
    Cohort,
    EmptyMaskWarning,
    ManifestError,
    collate,
    read_manifest,
    slices_from_volumes,
    write_nifti,
)

CH = ("T1", "T1c", "T2", "FLAIR")


def _img(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def case2d(cid="c1", pid=None, label=1, seed=0, hw=(6, 5), meta=None):
    m = np.zeros(hw, bool)
    m[1:3, 2:4] = True
    return Case(cid, _img((4, *hw), seed), CH, label, pid, {"gtv": m}, meta or {})


def case3d(cid="v1", pid=None, label=0, seed=0, dhw=(4, 5, 3), meta=None):
    img = _img((2, *dhw), seed)
    gtv = np.zeros(dhw, bool)
    gtv[1, 1:4, 0:2] = True  # 6 voxels on slice 1
    gtv[2, 2, 1] = True      # 1 voxel on slice 2
    brain = np.ones(dhw, bool)
    return Case(cid, img, ("T1", "FLAIR"), label, pid, {"gtv": gtv, "brain": brain}, meta or {})


# --------------------------------------------------------------------------------- Case
def test_case_converts_and_protects_arrays():
    src = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4)
    c = Case("a", src, ["T1", "T2"], label=np.int64(1), masks={"roi": np.eye(3, 4, dtype=int)})
    assert c.image.dtype == np.float32 and c.channels == ("T1", "T2") and c.label == 1
    assert type(c.label) is int and c.patient_id == "a"
    assert c.masks["roi"].dtype == bool and c.masks["roi"].sum() == 3
    assert c.spatial_shape == (3, 4) and c.ndim_spatial == 2
    src[0, 0, 0] = 99  # the case holds its own copy
    assert c.image[0, 0, 0] == 0
    with pytest.raises(ValueError, match="read-only"):
        c.image[0, 0, 0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.label = 3
    assert Case("b", _img((1, 2, 2, 2)), "T1").ndim_spatial == 3
    copy = pickle.loads(pickle.dumps(c))  # as sent to DataLoader workers
    assert np.array_equal(copy.image, c.image) and not copy.image.flags.writeable
    assert not copy.masks["roi"].flags.writeable


def test_case_image_ndim_error_names_case_and_shape():
    with pytest.raises(ValueError, match=r"case 'bad'.*\(5, 5\).*2 dims"):
        Case("bad", np.zeros((5, 5)), ("T1",))
    with pytest.raises(ValueError, match=r"case 'bad'.*\(1, 2, 2, 2, 2\)"):
        Case("bad", np.zeros((1, 2, 2, 2, 2)), ("T1",))


def test_case_nonfinite_names_channels_and_counts():
    img = np.zeros((4, 3, 3), np.float32)
    img[2, 0, 0] = np.nan
    img[2, 1, 1] = np.inf
    img[3, 2, 2] = -np.inf
    with pytest.raises(ValueError, match=r"case 'x'.* 3 non-finite.*'T2' \(2\), 'FLAIR' \(1\)"):
        Case("x", img, CH)
    with pytest.raises(ValueError, match=r"case 'y'.*1 non-finite.*'T1' \(1\)"):
        Case("y", np.array([[[1e39, 0.0]]]), ("T1",))  # float32 overflow is caught too


def test_case_channel_count_and_duplicates():
    with pytest.raises(ValueError, match=r"case 'x'.*3 channel\(s\) \(shape \(3, 4, 4\)\).*"
                                         r"2 channel name\(s\).*\('T1', 'T2'\)"):
        Case("x", np.zeros((3, 4, 4)), ("T1", "T2"))
    with pytest.raises(ValueError, match=r"case 'x'.*distinct.*duplicates \['T1'\]"):
        Case("x", np.zeros((2, 4, 4)), ("T1", "T1"))


def test_case_mask_validation():
    img = np.zeros((1, 4, 4))
    with pytest.raises(ValueError, match=r"case 'x'.*mask 'gtv'.*\(4, 5\).*\(4, 4\)"):
        Case("x", img, ("T1",), masks={"gtv": np.ones((4, 5), bool)})
    bad = np.ones((4, 4))
    bad[0, 0] = 2
    with pytest.raises(ValueError, match=r"case 'x'.*mask 'gtv'.*0/1.*\[2"):
        Case("x", img, ("T1",), masks={"gtv": bad})
    with pytest.warns(EmptyMaskWarning, match=r"case 'x'.*mask 'gtv'.*empty"):
        Case("x", img, ("T1",), masks={"gtv": np.zeros((4, 4), np.uint8)})


def test_case_label_and_id_validation():
    with pytest.raises(ValueError, match=r"case 'x'.*label.*1.5"):
        Case("x", np.zeros((1, 2, 2)), ("T1",), label=1.5)
    assert Case("x", np.zeros((1, 2, 2)), ("T1",), label=2.0).label == 2
    with pytest.raises(TypeError, match="case_id"):
        Case(7, np.zeros((1, 2, 2)), ("T1",))


def test_case_helpers():
    c = case2d()
    assert np.array_equal(c.channel("T2"), c.image[2])
    with pytest.raises(KeyError, match=r"no channel 'FLAIRR'.*did you mean 'FLAIR'"):
        c.channel("FLAIRR")
    s = c.select_channels(["FLAIR", "T1"])
    assert s.channels == ("FLAIR", "T1")
    assert np.array_equal(s.image, c.image[[3, 0]]) and "gtv" in s.masks
    with pytest.raises(KeyError, match="T3"):
        c.select_channels(["T3"])
    t = c.to_tensor()
    assert t.dtype == torch.float32 and tuple(t.shape) == (4, 6, 5)
    t += 1  # a writable copy, the case is untouched
    assert np.array_equal(c.image, case2d().image)
    assert _same_case(c, case2d()) and not _same_case(c, case2d(seed=1))


# ------------------------------------------------------------------------------- Cohort
def test_cohort_validation_names_offending_case():
    co = Cohort([case2d("a"), case2d("b")])
    odd = Case("c", np.zeros((2, 6, 5)), ("T1", "T2"))
    with pytest.raises(ValueError,
                       match=r"case 'c'.*\('T1', 'T2'\).*\('T1', 'T1c', 'T2', 'FLAIR'\)"):
        co.append(odd)
    with pytest.raises(ValueError, match=r"case 'v'.*3-D.*\(4, 2, 6, 5\).*2-D"):
        Cohort([case2d("a"), Case("v", np.zeros((4, 2, 6, 5)), CH)])
    with pytest.raises(ValueError, match="duplicate case_id 'a'"):
        co.append(case2d("a"))
    with pytest.raises(TypeError, match="Case"):
        co.append("a")


def test_cohort_access_and_manifest():
    co = Cohort([case2d("a", "p1", 1, meta={"site": "X", "age": 50}),
                 case2d("b", "p1", None), case2d("c", "p2", 0, hw=(6, 6))], meta={"k": 1})
    assert len(co) == 3 and co[1].case_id == "b" and co["c"].case_id == "c" and co[-1] is co["c"]
    assert [c.case_id for c in co] == co.case_ids == ["a", "b", "c"]
    assert co.labels == [1, None, 0] and co.patient_ids == ["p1", "p1", "p2"]
    assert co.channels == CH and co.spatial_ndim == 2 and co.spatial_shape is None
    with pytest.raises(KeyError, match="no case 'd'"):
        co["d"]
    m = co.manifest
    assert list(m.columns[:5]) == ["case_id", "patient_id", "label", "spatial_shape", "masks"]
    assert m["label"].dtype == "Int64" and m["label"].isna().tolist() == [False, True, False]
    assert m.loc[2, "spatial_shape"] == (6, 6) and m.loc[0, "masks"] == ("gtv",)
    assert m.loc[0, "site"] == "X" and pd.isna(m.loc[1, "age"])
    assert co[0:2].case_ids == ["a", "b"] and co[0:2].meta == {"k": 1}


def test_cohort_subset():
    co = Cohort([case2d(c) for c in "abcd"])
    assert co.subset(["c", "a"]).case_ids == ["c", "a"]
    assert co.subset(np.array([True, False, True, False])).case_ids == ["a", "c"]
    assert co.subset([3, 0]).case_ids == ["d", "a"]
    assert co.subset(pd.Series([False] * 4)).case_ids == []
    with pytest.raises(ValueError, match="length 3.*4 cases"):
        co.subset([True, False, True])
    with pytest.raises(KeyError, match="'z'"):
        co.subset(["z"])


def test_split_by_patient_disjoint_deterministic():
    cases = [case2d(f"p{p}_s{s}", f"p{p}", p % 2) for p in range(20) for s in range(1 + p % 3)]
    co = Cohort(cases)
    splits = co.split_by_patient((0.6, 0.2, 0.2), seed=3)
    pats = [set(s.patient_ids) for s in splits]
    assert not (pats[0] & pats[1] or pats[0] & pats[2] or pats[1] & pats[2])
    assert sorted(c for s in splits for c in s.case_ids) == sorted(co.case_ids)
    assert all(len(s) > 0 for s in splits)
    assert abs(len(splits[0]) / len(co) - 0.6) < 0.1
    again = co.split_by_patient((0.6, 0.2, 0.2), seed=3)
    assert [s.case_ids for s in again] == [s.case_ids for s in splits]
    shuffled = Cohort(cases[::-1]).split_by_patient((0.6, 0.2, 0.2), seed=3)
    assert [set(s.case_ids) for s in shuffled] == [set(s.case_ids) for s in splits]
    other = co.split_by_patient((0.6, 0.2, 0.2), seed=4)
    assert [s.case_ids for s in other] != [s.case_ids for s in splits]
    with pytest.raises(ValueError, match="sum to 1"):
        co.split_by_patient((0.5, 0.2))
    with pytest.warns(UserWarning, match="no patient"):
        Cohort([case2d("a")]).split_by_patient((0.5, 0.5))


def test_dataset_and_dataloader_batches():
    co = Cohort([case2d(c, label=None if c == "b" else 1) for c in "abc"])
    ds = co.as_dataset()
    item = ds[1]
    assert item["label"].dtype == torch.long and item["label"].item() == -1
    assert item["masks"]["gtv"].dtype == torch.bool and item["case_id"] == "b"
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 4, 6, 5) and batch["image"].dtype == torch.float32
    assert batch["label"].tolist() == [1, -1, 1] and batch["label"].dtype == torch.int64
    assert batch["masks"]["gtv"].shape == (3, 6, 5) and batch["masks"]["gtv"].dtype == torch.bool
    assert batch["case_id"] == ["a", "b", "c"] and batch["patient_id"] == ["a", "b", "c"]
    assert torch.equal(batch["image"][2], torch.from_numpy(co[2].image.copy()))
    # transform sees the item dict; 3-D cohorts batch the same way
    ds3 = Cohort([case3d("u"), case3d("v")]).as_dataset(
        mask_names=["gtv"], transform=lambda d: {**d, "image": d["image"] * 0})
    b3 = next(iter(DataLoader(ds3, batch_size=2, collate_fn=collate)))
    assert b3["image"].shape == (2, 2, 4, 5, 3) and float(b3["image"].abs().sum()) == 0
    assert list(b3["masks"]) == ["gtv"]


def test_dataset_mask_sets_and_shape_errors():
    nomask = Case("z", _img((4, 6, 5)), CH)
    co = Cohort([case2d("a"), nomask])
    # a mask missing on a case (other cases carry it) is an empty mask of the case's shape
    ds = co.as_dataset()
    assert ds.mask_names == ("gtv",) and ds.mask_coverage == {"gtv": 1}
    assert ds[1]["masks"]["gtv"].shape == (6, 5) and ds[1]["masks"]["gtv"].dtype == torch.bool
    assert not ds[1]["masks"]["gtv"].any() and torch.equal(ds[0]["masks"]["gtv"], torch.tensor(co[0].masks["gtv"]))
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["masks"]["gtv"].shape == (2, 6, 5) and batch["masks"]["gtv"].sum() == co[0].masks["gtv"].sum()
    assert list(co.as_dataset(mask_names=["gtv"])[1]["masks"]) == ["gtv"]
    # a name no case carries is still an error, with close matches
    with pytest.raises(KeyError, match=r"no case carries mask\(s\) \['gtvv'\].*did you mean 'gtv'"):
        co.as_dataset(mask_names=["gtvv"])
    with pytest.raises(TypeError, match="sequence of names"):
        co.as_dataset(mask_names="gtv")
    assert list(co.as_dataset(mask_names=())[1]["masks"]) == []
    mixed = Cohort([case2d("a"), case2d("b", hw=(7, 5))]).as_dataset()
    with pytest.raises(ValueError,
                       match=r"different shapes.*'a' \(4, 6, 5\).*'b' \(4, 7, 5\).*batch_size=1"):
        next(iter(DataLoader(mixed, batch_size=2, collate_fn=collate)))
    assert len(list(DataLoader(mixed, batch_size=1))) == 2


# -------------------------------------------------------------------------------- NIfTI
def _same_meta(a, b) -> bool:
    """Deep equality for meta dicts that may hold arrays (the affine)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.asarray(a).shape == np.asarray(b).shape and np.array_equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_meta(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _same_case(x: Case, y: Case) -> bool:
    return (x.case_id == y.case_id and x.patient_id == y.patient_id and x.label == y.label
            and x.channels == y.channels and x.image.dtype == y.image.dtype == np.float32
            and x.image.shape == y.image.shape and x.image.tobytes() == y.image.tobytes()
            and list(x.masks) == list(y.masks)
            and all(np.array_equal(m, y.masks[k]) for k, m in x.masks.items())
            and _same_meta(x.meta, y.meta))


def _assert_same_cohort(a: Cohort, b: Cohort):
    assert a.case_ids == b.case_ids and a.meta == b.meta
    for x, y in zip(a, b):
        assert _same_case(x, y), (x, y, x.meta, y.meta)


def _cohort2d():
    aff = np.diag([0.5, 2.0, 3.0, 1.0])
    aff[:3, 3] = [-90.0, 12.5, 7.0]
    return Cohort([case2d("a", "p1", 1, seed=1, meta={"site": "X", "age": 50, "w": 0.1,
                                                       "flag": True, "code": "007"}),
                   case2d("b", "p1", None, seed=2, meta={"site": "Y", "w": -0.0,
                                                         "affine": aff}),
                   Case("c", _img((4, 6, 5), 3), CH, 0, "p2")],
                  meta={"mechanism": "planted", "gt": {"T2": 0.5}, "classes": [0, 1]})


def test_nifti_round_trip_2d(tmp_path):
    co = _cohort2d()
    path = write_nifti(co, tmp_path / "out")
    assert path == tmp_path / "out" / "manifest.csv"
    back = read_manifest(path)
    _assert_same_cohort(co, back)
    assert back["b"].meta["affine"].tolist() == co["b"].meta["affine"].tolist()
    assert "affine" not in back["a"].meta and "gtv" not in back["c"].masks
    assert type(back["a"].meta["code"]) is str and back["a"].meta["flag"] is True
    # independent nibabel read under the documented convention: 2-D (H, W) is stored H×W×1
    raw = nib.load(tmp_path / "out" / "a_T1c.nii.gz")
    assert raw.shape == (6, 5, 1) and raw.get_data_dtype() == np.float32
    assert np.array_equal(np.asarray(raw.dataobj), co["a"].image[1][:, :, None])
    m = nib.load(tmp_path / "out" / "a_mask-gtv.nii.gz")
    assert m.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(m.dataobj)[:, :, 0], co["a"].masks["gtv"])
    assert np.allclose(nib.load(tmp_path / "out" / "b_FLAIR.nii.gz").affine, co["b"].meta["affine"])
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_nifti(co, tmp_path / "out")
    write_nifti(co, tmp_path / "out", overwrite=True)


def test_nifti_round_trip_3d(tmp_path):
    co = Cohort([case3d("v1", "p1", 0, 1, meta={"n": 3}), case3d("v2", "p2", 1, 2),
                 Case("v3", _img((2, 1, 5, 3)), ("T1", "FLAIR"))], meta={"source": "unit"})
    back = read_manifest(write_nifti(co, tmp_path))
    _assert_same_cohort(co, back)
    assert back["v3"].spatial_shape == (1, 5, 3)  # one-slice 3-D is not mistaken for 2-D
    raw = np.asarray(nib.load(tmp_path / "v1_FLAIR.nii.gz").dataobj)
    img = co["v1"].image[1]  # (D, H, W) = (4, 5, 3)
    assert raw.shape == (5, 3, 4)  # (i, j, k) = (H, W, D)
    assert raw[2, 1, 3] == img[3, 2, 1]
    assert np.array_equal(raw, np.transpose(img, (1, 2, 0)))
    rows = list(csv.DictReader((tmp_path / "manifest.csv").read_text().splitlines()))
    assert list(rows[0]) == ["case_id", "patient_id", "label", "image_T1", "image_FLAIR",
                             "mask_gtv", "mask_brain", "n"]
    assert rows[0]["image_T1"] == "v1_T1.nii.gz" and rows[2]["mask_gtv"] == ""
    side = json.loads((tmp_path / "cohort_meta.json").read_text())
    assert side["cohort_meta"] == {"source": "unit"} and side["spatial_ndim"] == 3


def test_manifest_absolute_and_relative_paths(tmp_path):
    co = _cohort2d()
    write_nifti(co, tmp_path / "data")
    df = pd.read_csv(tmp_path / "data" / "manifest.csv", dtype=str, keep_default_na=False)
    for col in [c for c in df.columns if c.startswith(("image_", "mask_"))]:
        df[col] = [str((tmp_path / "data" / v).resolve()) if v else "" for v in df[col]]
    (tmp_path / "elsewhere").mkdir()
    df.to_csv(tmp_path / "elsewhere" / "abs.csv", index=False)
    back = read_manifest(tmp_path / "elsewhere" / "abs.csv")  # no sidecar: types inferred
    assert back.case_ids == co.case_ids and back.meta == {}
    for x, y in zip(co, back):
        assert x.image.tobytes() == y.image.tobytes() and list(x.masks) == list(y.masks)
    assert back["a"].meta["code"] == 7 and back["a"].meta["w"] == 0.1  # inferred int, float
    # hand-written manifest: relative paths into a sub-folder, custom columns, no patient column
    (tmp_path / "hand" / "img").mkdir(parents=True)
    for f in ["c_T1.nii.gz", "c_T2.nii.gz"]:
        (tmp_path / "hand" / "img" / f).write_bytes((tmp_path / "data" / f).read_bytes())
    pd.DataFrame({"ID": ["c"], "y": ["1"], "t1": ["img/c_T1.nii.gz"], "t2": ["img/c_T2.nii.gz"],
                  "score": ["2.5"]}).to_csv(tmp_path / "hand" / "m.csv", index=False)
    hand = read_manifest(tmp_path / "hand" / "m.csv", ["1", "2"], case_id_col="ID",
                         patient_id_col=None, label_col="y", image_prefix="t")
    assert hand.channels == ("1", "2") and hand[0].label == 1 and hand[0].patient_id == "c"
    assert hand[0].meta["score"] == 2.5 and hand[0].ndim_spatial == 2
    assert np.array_equal(hand[0].image, co["c"].image[[0, 2]])


def test_manifest_errors(tmp_path):
    co = _cohort2d()
    path = write_nifti(co, tmp_path)
    with pytest.raises(ManifestError, match=r"no column 'image_T3'.*available columns.*image_T1"):
        read_manifest(path, channels=["T3"])
    with pytest.raises(ManifestError, match=r"no column 'mask_tumor'.*available"):
        read_manifest(path, mask_names=["tumor"])
    with pytest.raises(ManifestError, match=r"no column 'subject'.*available columns.*'case_id'"):
        read_manifest(path, case_id_col="subject")
    with pytest.raises(ManifestError, match=r"no column 'pid'.*patient_id_col=None"):
        read_manifest(path, patient_id_col="pid")
    (tmp_path / "b_T2.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"line 3 \(case 'b'\).*'image_T2'.*b_T2\.nii\.gz"):
        read_manifest(path)
    write_nifti(co, tmp_path, overwrite=True)
    nib.save(nib.Nifti1Image(np.zeros((6, 4, 1), np.float32), np.eye(4)), tmp_path / "c_T2.nii.gz")
    with pytest.raises(ValueError, match=r"case 'c'.*c_T1\.nii\.gz has \(6, 5, 1\).*"
                                         r"c_T2\.nii\.gz has \(6, 4, 1\)"):
        read_manifest(path)
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        read_manifest(tmp_path / "nope.csv")


def test_write_nifti_refuses_unsafe_names_and_meta(tmp_path):
    with pytest.raises(ValueError, match=r"case_id 'a/b'.*file name"):
        write_nifti(Cohort([case2d("a/b")]), tmp_path / "x")
    with pytest.raises(ValueError, match=r"case 'a'.*meta key 'label'"):
        write_nifti(Cohort([case2d("a", meta={"label": 3})]), tmp_path / "y")
    with pytest.warns(UserWarning, match=r"non-scalar meta key\(s\) \['arr'\]"):
        write_nifti(Cohort([case2d("a", meta={"arr": np.zeros(3)})]), tmp_path / "z")
    with pytest.raises(TypeError, match=r"cohort meta key\(s\) \['obj'\]"):
        write_nifti(Cohort([case2d("a")], meta={"obj": object()}), tmp_path / "w")


# ------------------------------------------------------------------------------ slicing
def test_slices_axis0_content_and_ids():
    co = Cohort([case3d("v1", "p1", 1, 1), case3d("v2", "p2", 0, 2)], meta={"k": "v"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmptyMaskWarning)  # empty slices of gtv are silent
        sl = slices_from_volumes(co, axis=0)
    assert sl.spatial_ndim == 2 and len(sl) == 8 and sl.meta == {"k": "v", "slice_axis": 0}
    assert sl.case_ids[:4] == ["v1_z0", "v1_z1", "v1_z2", "v1_z3"]
    for s in sl:
        src = co[s.meta["source_case_id"]]
        i = s.meta["slice_index"]
        assert s.patient_id == src.patient_id and s.label == src.label
        assert np.array_equal(s.image, src.image[:, i]) and s.channels == src.channels
        assert np.array_equal(s.masks["gtv"], src.masks["gtv"][i])
    # patient grouping survives slicing
    tr, te = sl.split_by_patient((0.5, 0.5), seed=0)
    assert not set(tr.patient_ids) & set(te.patient_ids) and len(tr) == len(te) == 4


@pytest.mark.parametrize("axis", [1, 2, -1])
def test_slices_other_axes(axis):
    v = case3d()
    sl = slices_from_volumes(Cohort([v]), axis=axis, indices=[0, -1])
    a = axis % 3
    letter = "zyx"[a]
    n = v.spatial_shape[a]
    assert sl.case_ids == [f"v1_{letter}0", f"v1_{letter}{n - 1}"]
    idx = [slice(None)] * 4
    idx[a + 1] = n - 1
    assert np.array_equal(sl[1].image, v.image[tuple(idx)])
    assert np.array_equal(sl[1].masks["brain"], v.masks["brain"][tuple(idx[1:])])


def test_slices_mask_filter_and_callable():
    co = Cohort([case3d("v1"), case3d("v2")])
    kept = slices_from_volumes(co, mask="gtv")
    assert kept.case_ids == ["v1_z1", "v1_z2", "v2_z1", "v2_z2"]
    big = slices_from_volumes(co, mask="gtv", min_mask_voxels=2)
    counts = co["v1"].masks["gtv"].sum(axis=(1, 2))
    assert big.case_ids == [f"v{k}_z{i}" for k in (1, 2) for i in np.flatnonzero(counts >= 2)]
    best = slices_from_volumes(co, indices=lambda c: [int(c.masks["gtv"].sum((1, 2)).argmax())])
    assert best.case_ids == ["v1_z1", "v2_z1"]
    with pytest.raises(IndexError, match=r"case 'v1'.*index 4.*axis 0 of size 4"):
        slices_from_volumes(co, indices=[4])
    with pytest.raises(ValueError, match="mask=<name>"):
        slices_from_volumes(co, min_mask_voxels=3)
    with pytest.raises(KeyError, match=r"case 'v1' has no mask 'gtvv'.*did you mean 'gtv'"):
        slices_from_volumes(co, mask="gtvv")
    with pytest.raises(ValueError, match=r"3-D cohort.*2-D.*'a'"):
        slices_from_volumes(Cohort([case2d("a")]))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_affine_keeps_world_coordinates(axis, tmp_path):
    aff = np.array([[0, 0, 2.0, -10], [0, 1.5, 0, 4], [-1, 0, 0, 7], [0, 0, 0, 1]])
    v = case3d(meta={"affine": aff})
    s = slices_from_volumes(Cohort([v]), axis=axis, indices=[2])[0]
    rest = [a for a in range(3) if a != axis]
    for p, q in [(0, 0), (1, 2), (3, 1)]:
        if p >= s.spatial_shape[0] or q >= s.spatial_shape[1]:
            continue
        vol = [0, 0, 0]
        vol[axis], vol[rest[0]], vol[rest[1]] = 2, p, q  # medaudit (d, h, w)
        d, h, w = vol
        world_vol = aff @ [h, w, d, 1]  # NIfTI (i, j, k) = (H, W, D)
        world_slice = s.meta["affine"] @ [p, q, 0, 1]  # slice stored as (H', W', 1)
        assert np.allclose(world_vol, world_slice)
    # and the sliced cohort round-trips through NIfTI with its affine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyMaskWarning)  # gtv misses some slices
        back = read_manifest(write_nifti(Cohort([s]), tmp_path))
    _assert_same_cohort(Cohort([s]), back)


def test_manifest_dimensionality_affines_and_bad_cells(tmp_path):
    one = Cohort([Case("v", _img((2, 1, 5, 3)), ("T1", "FLAIR"), 1)])
    path = write_nifti(one, tmp_path)
    (tmp_path / "cohort_meta.json").unlink()  # without the sidecar H×W×1 is ambiguous
    assert read_manifest(path).spatial_ndim == 2
    three = read_manifest(path, spatial_ndim=3)
    assert three[0].spatial_shape == (1, 5, 3)
    assert three[0].image.tobytes() == one[0].image.tobytes()
    original = (tmp_path / "v_T1.nii.gz").read_bytes()
    nib.save(nib.Nifti1Image(np.asarray(nib.load(tmp_path / "v_T1.nii.gz").dataobj),
                             np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "v_T1.nii.gz")
    with pytest.warns(UserWarning, match=r"case 'v': affine of .*v_FLAIR\.nii\.gz.*differs"):
        read_manifest(path)
    (tmp_path / "v_T1.nii.gz").write_bytes(original)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[0, "label"] = "abc"
    df.to_csv(path, index=False)
    with pytest.raises(ManifestError, match=r"line 2 \(case 'v'\): label 'abc'"):
        read_manifest(path)
    with pytest.raises(ValueError, match=r"case 'v'.*label.*2.5"):
        df.loc[0, "label"] = "2.5"
        df.to_csv(path, index=False)
        read_manifest(path)


def test_write_nifti_refuses_colliding_file_names(tmp_path):
    co = Cohort([case2d("A"), case2d("a")])
    assert "a" in co and "b" not in co
    with pytest.raises(ValueError,
                       match=r"case 'a'.*'a_T1\.nii\.gz' collides with 'A_T1\.nii\.gz'"):
        write_nifti(co, tmp_path)
