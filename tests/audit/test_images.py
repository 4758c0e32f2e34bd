"""Tests for audit.data.images: 2-D image files as a Cohort, checked against Pillow/torchvision."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from audit.data.cohort import ManifestError
from audit.data.images import read_images
from probes.core.errors import AuditInputError, OptionError, ShapeError


def _rng(seed=0):
    return np.random.default_rng(seed)


def _write_csv(path: Path, rows: list[dict]) -> Path:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, cols)
        w.writeheader()
        w.writerows(rows)
    return path


def _save(path: Path, arr: np.ndarray, mode: str | None = None) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(path)
    return arr


@pytest.fixture
def tree(tmp_path):
    """Two classes of 8-bit grey PNGs (one nested), and the planted pixel arrays."""
    arrs = {}
    for cls, names in (("glioma", ["a", "sub/b"]), ("meningioma", ["c", "d", "e"])):
        for i, n in enumerate(names):
            arr = _rng(len(arrs)).integers(0, 256, (12, 10), dtype=np.uint8)
            arrs[f"{cls}/{n}"] = _save(tmp_path / "data" / cls / f"{n}.png", arr)
    return tmp_path / "data", arrs


# ------------------------------------------------------------------------------ decoding
def test_grey_png_values_exact(tree):
    root, arrs = tree
    cohort = read_images(folder=root)
    assert cohort.channels == ("gray",) and cohort.spatial_ndim == 2
    for case in cohort:
        np.testing.assert_array_equal(case.image[0], arrs[case.case_id].astype(np.float32))
        assert case.image.dtype == np.float32 and case.patient_id == case.case_id
        assert Path(case.meta["path"]).is_absolute() and Path(case.meta["path"]).is_file()
    assert cohort.meta == {"source": "images", "class_names": ["glioma", "meningioma"]}
    assert cohort.labels == [0, 0, 1, 1, 1]


def test_rgb_rgba_16bit_and_forced_modes(tmp_path):
    rgb = _rng(1).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    rgba = _rng(2).integers(0, 256, (9, 7, 4), dtype=np.uint8)
    g16 = _rng(3).integers(0, 65536, (9, 7), dtype=np.uint16)
    g16[0, 0] = 65535  # the full 16-bit range must survive
    _save(tmp_path / "rgb.png", rgb)
    _save(tmp_path / "rgba.png", rgba)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")  # really a 16-bit file
    man = _write_csv(tmp_path / "m.csv", [{"path": "rgb.png"}, {"path": "rgba.png"}])
    c = read_images(man)
    assert c.channels == ("R", "G", "B") and c.case_ids == ["rgb", "rgba"]
    np.testing.assert_array_equal(c["rgb"].image, np.moveaxis(rgb, -1, 0).astype(np.float32))
    np.testing.assert_array_equal(c["rgba"].image, np.moveaxis(rgba[..., :3], -1, 0).astype(np.float32))
    # forced grey = Pillow's own luma conversion of the RGB pixels
    grey = read_images(man, mode="L", channels=["lum"])
    expect = np.asarray(Image.fromarray(rgb).convert("L"), np.float32)
    np.testing.assert_array_equal(grey["rgb"].image[0], expect)
    # and that luma is ITU-R 601-2 within rounding (an independent closed form)
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    assert np.abs(grey["rgb"].image[0] - luma).max() <= 1.0
    m16 = _write_csv(tmp_path / "g.csv", [{"path": "g16.png"}])
    c16 = read_images(m16)
    np.testing.assert_array_equal(c16[0].image[0], g16.astype(np.float32))
    assert c16[0].image.max() == 65535
    forced = read_images(m16, mode="RGB")
    assert forced.channels == ("R", "G", "B")
    for k in range(3):
        np.testing.assert_array_equal(forced[0].image[k], g16.astype(np.float32))


def test_jpeg_matches_pillow_decode(tmp_path):
    y, x = np.mgrid[0:32, 0:40]
    arr = np.stack([(y * 7) % 256, (x * 5) % 256, (x + y) % 256], -1).astype(np.uint8)
    _save(tmp_path / "cls_a" / "p.jpg", arr)
    _save(tmp_path / "cls_b" / "q.jpeg", arr[::-1].copy())
    c = read_images(folder=tmp_path)
    ref = np.moveaxis(np.asarray(Image.open(tmp_path / "cls_a" / "p.jpg").convert("RGB")), -1, 0)
    np.testing.assert_array_equal(c["cls_a/p"].image, ref.astype(np.float32))
    assert not np.array_equal(c["cls_a/p"].image, np.moveaxis(arr, -1, 0))  # lossy: not the planted pixels


def test_differing_sizes_allowed(tmp_path):
    _save(tmp_path / "a" / "x.png", np.zeros((5, 6), np.uint8))
    _save(tmp_path / "b" / "y.png", np.ones((7, 3), np.uint8))
    c = read_images(folder=tmp_path)
    assert [case.spatial_shape for case in c] == [(5, 6), (7, 3)] and c.spatial_shape is None


# ------------------------------------------------------------------------------ layouts
def test_folder_matches_torchvision_imagefolder(tree):
    from torchvision.datasets import ImageFolder

    root, _ = tree
    (root / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    (root / "glioma" / "notes.txt").write_text("not an image")
    c = read_images(folder=root)
    ref = ImageFolder(str(root), is_valid_file=lambda p: ".ipynb" not in p and p.endswith(".png"),
                      allow_empty=True)
    assert ref.classes[1:] == c.meta["class_names"]  # torchvision counts the hidden folder as class 0
    assert [Path(p).resolve() for p, _ in ref.samples] == [Path(case.meta["path"]) for case in c]
    assert [t - 1 for _, t in ref.samples] == c.labels


def test_manifest_and_folder_give_the_same_cohort(tree):
    root, _ = tree
    by_folder = read_images(folder=root)
    rows = [{"path": f"{cid}.png", "label": cid.split("/")[0]} for cid in by_folder.case_ids]
    by_csv = read_images(_write_csv(root / "manifest.csv", rows))
    assert by_csv.case_ids == by_folder.case_ids and by_csv.labels == by_folder.labels
    assert by_csv.meta == by_folder.meta
    for a, b in zip(by_csv, by_folder):
        np.testing.assert_array_equal(a.image, b.image)
        assert a.meta == b.meta and a.patient_id == b.patient_id


def test_manifest_labels_patients_split_meta_and_masks(tmp_path):
    img = _save(tmp_path / "i1.png", _rng(4).integers(0, 256, (8, 8), dtype=np.uint8))
    _save(tmp_path / "i2.png", img)
    roi = np.zeros((8, 8), np.uint8)
    roi[2:5, 3:6] = 255
    _save(tmp_path / "m1.png", roi)
    man = _write_csv(tmp_path / "m.csv", [
        {"case_id": "c1", "path": "i1.png", "label": "tumour", "patient_id": "p1", "split": "test",
         "age": "61", "mask_gtv": "m1.png"},
        {"case_id": "c2", "path": str(tmp_path / "i2.png"), "label": "healthy", "patient_id": "",
         "split": "train", "age": "", "mask_gtv": ""}])
    c = read_images(man, class_names=["healthy", "tumour"])
    assert c.labels == [1, 0] and c.patient_ids == ["p1", "c2"]
    assert c["c1"].meta["split"] == "test" and c["c1"].meta["age"] == 61 and "age" not in c["c2"].meta
    np.testing.assert_array_equal(c["c1"].masks["gtv"], roi > 0)
    assert "gtv" not in c["c2"].masks
    # without class_names the names sort into class order
    assert read_images(man).meta["class_names"] == ["healthy", "tumour"]
    ints = _write_csv(tmp_path / "n.csv", [{"path": "i1.png", "label": "1"}, {"path": "i2.png", "label": "0"}])
    c2 = read_images(ints)
    assert c2.labels == [1, 0] and c2.meta["class_names"] is None


# ------------------------------------------------------------------------------ errors
def test_missing_file_names_line_case_and_path(tmp_path):
    man = _write_csv(tmp_path / "m.csv", [{"case_id": "x1", "path": "nope.png"}])
    with pytest.raises(ManifestError, match=r"line 2 \(case 'x1'\).*file not found.*nope\.png"):
        read_images(man)


def test_unknown_label_name(tmp_path):
    _save(tmp_path / "i.png", np.zeros((4, 4), np.uint8))
    man = _write_csv(tmp_path / "m.csv", [{"path": "i.png", "label": "gliomma"}])
    with pytest.raises(ManifestError, match=r"unknown label name 'gliomma'.*\['glioma', 'normal'\].*did you mean"):
        read_images(man, class_names=["glioma", "normal"])
    mixed = _write_csv(tmp_path / "x.csv", [{"path": "i.png", "label": "glioma"}, {"path": "i.png", "label": "1"}])
    with pytest.raises(ManifestError, match="mixes class names"):
        read_images(mixed)


def test_unreadable_and_non_binary_mask(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    man = _write_csv(tmp_path / "m.csv", [{"case_id": "b", "path": "bad.png"}])
    with pytest.raises(ManifestError, match=r"case 'b'.*cannot read image.*bad\.png"):
        read_images(man)
    _save(tmp_path / "i.png", np.zeros((4, 4), np.uint8))
    _save(tmp_path / "soft.png", np.array([[0, 128], [255, 0]] * 2, np.uint8).repeat(2, 1))
    man2 = _write_csv(tmp_path / "n.csv", [{"case_id": "s", "path": "i.png", "mask_gtv": "soft.png"}])
    with pytest.raises(ManifestError, match=r"mask 'gtv'.*must be binary.*3 values"):
        read_images(man2)


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AuditInputError, match="folder: .*holds images of 0 class"):
        read_images(folder=tmp_path / "empty")
    _save(tmp_path / "one" / "only" / "a.png", np.zeros((3, 3), np.uint8))
    with pytest.raises(AuditInputError, match=r"1 class\(es\) \['only'\]"):
        read_images(folder=tmp_path / "one")
    (tmp_path / "one" / "vacant").mkdir()
    with pytest.raises(AuditInputError, match="'vacant' holds no image"):
        read_images(folder=tmp_path / "one")
    with pytest.raises(AuditInputError, match="'vacant' .* is not a class"):
        read_images(folder=tmp_path / "one", class_names=["only", "other"])


def test_argument_errors(tmp_path, tree):
    root, _ = tree
    with pytest.raises(OptionError, match="exactly one of manifest"):
        read_images()
    with pytest.raises(OptionError, match="mode"):
        read_images(folder=root, mode="CMYK")
    with pytest.raises(ShapeError, match=r"channels: got 3 name\(s\).*1 channel"):
        read_images(folder=root, channels=["R", "G", "B"])
    _save(tmp_path / "mix" / "a" / "g.png", np.zeros((3, 3), np.uint8))
    _save(tmp_path / "mix" / "b" / "c.png", np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(AuditInputError, match="mixes grey and colour.*mode='L'"):
        read_images(folder=tmp_path / "mix")
    assert read_images(folder=tmp_path / "mix", mode="L").channels == ("gray",)


def test_bmp_tiff_bilevel_and_palette(tmp_path):
    rgb = _rng(5).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    _save(tmp_path / "a.bmp", rgb)
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(tmp_path / "p.png")
    c = read_images(_write_csv(tmp_path / "c.csv", [{"path": "a.bmp"}, {"path": "p.png"}]))
    np.testing.assert_array_equal(c["a"].image, np.moveaxis(rgb, -1, 0).astype(np.float32))
    # a palette image is its colours looked up in the palette
    expect = np.asarray(pal.convert("RGB"))
    np.testing.assert_array_equal(c["p"].image, np.moveaxis(expect, -1, 0).astype(np.float32))
    g16 = _rng(6).integers(0, 65536, (6, 5), dtype=np.uint16)
    Image.fromarray(g16).save(tmp_path / "t.tif")
    bits = _rng(7).random((6, 5)) > 0.5
    Image.fromarray(bits).save(tmp_path / "b.png")
    assert Image.open(tmp_path / "b.png").mode == "1"
    g = read_images(_write_csv(tmp_path / "g.csv", [{"path": "t.tif"}, {"path": "b.png"}]))
    np.testing.assert_array_equal(g["t"].image[0], g16.astype(np.float32))
    np.testing.assert_array_equal(g["b"].image[0], np.where(bits, 255.0, 0.0).astype(np.float32))


# ------------------------------------------------------------------------------ threads
def test_threads_read_the_same_cohort_and_raise_the_same_first_error(tree, tmp_path):
    root, _ = tree
    one, four = read_images(folder=root), read_images(folder=root, num_workers=4)
    assert four.case_ids == one.case_ids and four.labels == one.labels
    for a, b in zip(one, four):
        np.testing.assert_array_equal(a.image, b.image)
    # the first bad row in manifest order is the one named, even when a later one fails first
    _save(tmp_path / "ok.png", _rng(9).integers(0, 256, (8, 8), dtype=np.uint8))
    rows = [{"case_id": "c0", "path": "ok.png"}, {"case_id": "c1", "path": "gone1.png"},
            *({"case_id": f"c{i}", "path": "gone2.png"} for i in range(2, 20))]
    man = _write_csv(tmp_path / "bad.csv", rows)
    for workers in (0, 4):
        with pytest.raises(ManifestError, match=r"line 3 \(case 'c1'\).*gone1\.png"):
            read_images(man, num_workers=workers)
    with pytest.raises(OptionError, match="num_workers"):
        read_images(folder=root, num_workers=-1)


def test_nifti_threads_read_the_same_cohort(tmp_path):
    from audit.data.nifti import read_manifest, write_nifti
    from audit.synthetic import SyntheticConfig, make_cohort

    co = make_cohort(SyntheticConfig(n_cases=12, size=24, seed=2))
    man = write_nifti(co, tmp_path / "nii")
    one, three = read_manifest(man), read_manifest(man, num_workers=3)
    assert three.case_ids == one.case_ids and three.labels == one.labels and three.meta == one.meta
    for a, b in zip(one, three):
        np.testing.assert_array_equal(a.image, b.image)
        assert a.masks.keys() == b.masks.keys() and all(np.array_equal(a.masks[k], b.masks[k]) for k in a.masks)
