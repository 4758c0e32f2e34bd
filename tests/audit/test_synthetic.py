"""Synthetic cohort: masks, label mechanisms (rates and rendering), determinism,
counterfactuals, NIfTI round trip, 3-D variant, splits and the panel figure."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, stats

from audit.data import read_manifest
from audit.synthetic.generator import (
    CHANNELS,
    SyntheticConfig,
    draw_mechanisms,
    make_cohort,
    make_splits,
    template_anatomy,
    to_nifti,
)

CFG = SyntheticConfig(n_cases=24, size=64, p_t1c=0.9, p_flair=0.7, q1=0.8, q0=0.2, seed=3)


@pytest.fixture(scope="module")
def cohort():
    return make_cohort(CFG)


def _check_masks(case):
    m = case.masks
    assert set(m) >= {"brain", "skull", "gtv", "necrosis", "enhancement", "oedema"}
    assert np.array_equal(m["gtv"], m["necrosis"] | m["enhancement"] | m["oedema"])
    assert not (m["necrosis"] & m["enhancement"]).any()
    assert not ((m["necrosis"] | m["enhancement"]) & m["oedema"]).any()
    assert not (m["skull"] & m["brain"]).any()
    assert not (m["gtv"] & ~m["brain"]).any()
    assert m["necrosis"].any() and m["enhancement"].any() and m["skull"].any()
    assert ("marker" in m) == case.meta["marker"]
    if case.meta["marker"]:
        mk = m["marker"]
        assert mk.any() and not (mk & m["brain"]).any() and (mk & m["skull"]).any()
        assert not (mk & ~ndimage.binary_dilation(m["skull"], iterations=8)).any()


def test_dataloader_over_the_synthetic_cohort_with_markers_in_some_cases(cohort):
    """Markers sit in some cases only: as_dataset gives the others an empty marker mask."""
    import torch
    from torch.utils.data import DataLoader

    has = [c.case_id for c in cohort if "marker" in c.masks]
    assert 0 < len(has) < len(cohort)  # the configuration plants markers in some cases
    ds = cohort.as_dataset()
    assert "marker" in ds.mask_names and ds.mask_coverage["marker"] == len(has)
    seen = 0
    for batch in DataLoader(ds, batch_size=5):
        n = len(batch["case_id"])
        assert batch["image"].shape == (n, 4, 64, 64)
        for name in ds.mask_names:
            assert batch["masks"][name].shape == (n, 64, 64) and batch["masks"][name].dtype == torch.bool
        for i, cid in enumerate(batch["case_id"]):
            marker = batch["masks"]["marker"][i].numpy()
            expected = cohort[cid].masks.get("marker", np.zeros((64, 64), bool))
            assert np.array_equal(marker, expected) and marker.any() == (cid in has)
        seen += n
    assert seen == len(cohort)


def test_template_anatomy():
    a = template_anatomy(2)
    assert a.shape == (99, 117, 95) and a.affine.shape == (4, 4)
    assert template_anatomy(2) is a  # cached
    assert not (a.brain & a.skull).any() and not (a.skull & a.scalp).any()
    assert not (a.brain & a.scalp).any() and a.skull.sum() > 10000
    inside = a.gm + a.wm + a.csf
    assert np.allclose(inside[a.brain], 1, atol=1e-5)
    assert a.wm[a.brain].mean() > 0.2 and a.csf[a.brain].mean() > 0.05


def test_masks_and_meta(cohort):
    assert len(cohort) == 24 and cohort.channels == CHANNELS
    assert cohort.spatial_shape == (64, 64)
    assert len(set(cohort.patient_ids)) == 24
    assert cohort.meta["config_hash"] == CFG.config_hash()
    for case in cohort:
        assert case.image.dtype == np.float32
        _check_masks(case)
        assert case.meta["shape_t1c"] in ("round", "irregular")
        assert case.label == (case.meta["label_name"] == "irregular")


def test_mechanism_rates_match_config():
    n = 2000
    df = draw_mechanisms(CFG, n_cases=n)
    assert len(df) == n and df.label.mean() == 0.5

    def inside(k, m, p):
        ci = stats.binomtest(int(k), int(m), p).proportion_ci(0.99)
        return ci.low <= p <= ci.high

    assert inside(df.t1c_matches_label.sum(), n, CFG.p_t1c)
    assert inside(df.flair_matches_label.sum(), n, CFG.p_flair)
    assert inside((df.shape_t1t2 == df.label).sum(), n, 0.5)  # T1/T2 carry no label
    one, zero = df[df.label == 1], df[df.label == 0]
    assert inside(one.marker.sum(), len(one), CFG.q1)
    assert inside(zero.marker.sum(), len(zero), CFG.q0)
    neutral = draw_mechanisms(SyntheticConfig(shape_informative=False), n_cases=n)
    assert inside(neutral.t1c_matches_label.sum(), n, 0.5)
    assert inside(neutral.flair_matches_label.sum(), n, 0.5)
    assert not draw_mechanisms(SyntheticConfig(), n_cases=200).marker.any()  # q = None
    for cf, carrier, other in (("t1c_only", "t1c_matches_label", "flair_matches_label"),
                               ("flair_only", "flair_matches_label", "t1c_matches_label")):
        d = draw_mechanisms(CFG, n_cases=n, counterfactual=cf)
        assert d[carrier].all() and not d.marker.any()  # the one carrier of the label
        assert inside(d[other].sum(), n, 0.5)
        assert inside((d.shape_t1t2 == d.label).sum(), n, 0.5)
    assert not draw_mechanisms(CFG, n_cases=n, counterfactual="no_marker").marker.any()


def test_rendered_meta_matches_mechanism_draws(cohort):
    df = draw_mechanisms(CFG)
    for case, row in zip(cohort, df.itertuples()):
        assert case.meta["marker"] == row.marker
        assert case.meta["shape_t1c"] == ("round", "irregular")[row.shape_t1c]
        assert case.meta["shape_flair"] == ("round", "irregular")[row.shape_flair]


def _solidity(mask):
    from skimage.measure import regionprops

    props = regionprops(mask.astype(np.uint8))
    return props[0].solidity


def test_rendered_images_show_the_mechanisms():
    cfg = SyntheticConfig(n_cases=32, p_t1c=1.0, p_flair=0.5, q1=1.0, q0=1.0, seed=11)
    c = make_cohort(cfg)
    nm = make_cohort(cfg, counterfactual="no_marker")
    sol_core, sol_gtv = [], []
    for case, ref in zip(c, nm):
        m, img = case.masks, case.image
        normal = m["brain"] & ~ndimage.binary_dilation(m["gtv"], iterations=2)
        # enhancing rim bright on T1c, oedema bright on FLAIR, necrosis dark on T1c
        t1c, flair = img[1], img[3]
        assert t1c[m["enhancement"]].mean() > 1.25 * t1c[normal].mean()
        assert flair[m["oedema"]].mean() > 1.2 * flair[normal].mean()
        assert t1c[m["necrosis"]].mean() < t1c[m["enhancement"]].mean()
        # the marker lies inside the skull mask and raises the intensity there on every contrast
        mk = m["marker"]
        assert mk.any() and not (mk & ~m["skull"]).any()
        assert (img[:, mk].mean(axis=1) > ref.image[:, mk].mean(axis=1) + 0.3).all()
        sol_core.append((_solidity(m["necrosis"] | m["enhancement"]), case.meta["shape_t1c"]))
        sol_gtv.append((_solidity(m["gtv"]), case.meta["shape_flair"]))
    for pairs in (sol_core, sol_gtv):
        s = np.array([p[0] for p in pairs])
        irr = np.array([p[1] == "irregular" for p in pairs])
        assert irr.any() and (~irr).any()
        auc = stats.mannwhitneyu(s[~irr], s[irr]).statistic / (irr.sum() * (~irr).sum())
        assert auc > 0.9, (auc, pairs)


def test_deterministic(cohort):
    again = make_cohort(CFG)
    for a, b in zip(cohort, again):
        assert np.array_equal(a.image, b.image)
        assert all(np.array_equal(a.masks[k], b.masks[k]) for k in a.masks)
        assert a.masks.keys() == b.masks.keys()
    other = make_cohort(CFG, seed=4, n_cases=3)
    assert not np.array_equal(other[0].image, cohort[0].image)
    assert not np.array_equal(cohort[0].image, cohort[1].image)


def test_counterfactuals_change_only_what_they_should(cohort):
    nm = make_cohort(CFG, counterfactual="no_marker")
    t1c_only = make_cohort(CFG, counterfactual="t1c_only")
    fl_only = make_cohort(CFG, counterfactual="flair_only")
    n_marked = 0
    for a, b, t, f in zip(cohort, nm, t1c_only, fl_only):
        assert a.case_id == b.case_id == t.case_id == f.case_id
        assert "marker" not in b.masks and not b.meta["marker"]
        for k in a.masks:
            if k != "marker":
                assert np.array_equal(a.masks[k], b.masks[k])
        region = a.masks.get("marker", np.zeros(a.spatial_shape, bool))
        assert np.array_equal(a.image[:, ~region], b.image[:, ~region])
        n_marked += bool(region.any())
        if region.any():
            assert not np.array_equal(a.image[:, region], b.image[:, region])
        # t1c_only / flair_only against the marker-free normal case: T1 and T2 never change;
        # T1c and FLAIR change only near the tumour, and only where their shape was redrawn
        for cf, carrier, keep in ((t, 1, 3), (f, 3, 1)):
            assert "marker" not in cf.masks and not cf.meta["marker"]
            near = ndimage.binary_dilation(b.masks["gtv"] | cf.masks["gtv"], iterations=2)
            assert np.array_equal(b.image[[0, 2]], cf.image[[0, 2]])
            for ch in (carrier, keep):
                assert np.array_equal(b.image[ch][~near], cf.image[ch][~near])
        if t.meta["shape_t1c"] == b.meta["shape_t1c"]:
            assert np.array_equal(b.image[1], t.image[1])
            assert np.array_equal(b.masks["enhancement"], t.masks["enhancement"])
        if f.meta["shape_flair"] == b.meta["shape_flair"]:
            assert np.array_equal(b.image[3], f.image[3])
        _check_masks(t), _check_masks(f)
    assert n_marked > 0


def test_splits():
    cfg = SyntheticConfig(n_cases=20, size=32, q1=0.9, q0=0.1, seed=5)
    sp = make_splits(cfg)
    assert set(sp) == {"train", "val", "test", "test_t1c_only", "test_flair_only",
                       "test_no_marker"}
    assert [len(sp[k]) for k in ("train", "val", "test")] == [14, 3, 3]
    ids = [set(sp[k].case_ids) for k in ("train", "val", "test")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    for k in ("test_t1c_only", "test_flair_only", "test_no_marker"):
        assert sp[k].case_ids == sp["test"].case_ids
    whole = make_cohort(cfg)
    assert np.array_equal(whole[sp["test"].case_ids[0]].image, sp["test"][0].image)
    # only the counterfactual sets asked for (none: train/val/test alone)
    assert set(make_splits(cfg, counterfactuals=("flair_only",))) == {"train", "val", "test", "test_flair_only"}
    assert set(make_splits(cfg, counterfactuals=())) == {"train", "val", "test"}
    with pytest.raises(ValueError, match="unknown counterfactual"):
        make_splits(cfg, counterfactuals=("t2_only",))


def test_nifti_round_trip(tmp_path, cohort):
    small = cohort[:4]
    back = read_manifest(to_nifti(small, tmp_path / "nii"))
    assert back.case_ids == small.case_ids and back.labels == small.labels
    assert back.meta == small.meta
    for a, b in zip(small, back):
        assert np.array_equal(a.image, b.image)
        assert a.masks.keys() == b.masks.keys()
        assert all(np.array_equal(a.masks[k], b.masks[k]) for k in a.masks)
        assert np.array_equal(a.meta["affine"], b.meta["affine"])
        assert {k: v for k, v in a.meta.items() if k != "affine"} == \
            {k: v for k, v in b.meta.items() if k != "affine"}


def test_3d_variant(tmp_path):
    cfg = SyntheticConfig(n_cases=2, dim=3, q1=1.0, q0=1.0, seed=1)
    c = make_cohort(cfg)
    assert c.spatial_shape == (64, 64, 64) and c[0].image.shape == (4, 64, 64, 64)
    for case in c:
        _check_masks(case)
    small = make_cohort(SyntheticConfig(n_cases=1, dim=3, size=32, seed=2))
    assert small.spatial_shape == (32, 32, 32)
    from audit.figures import cohort_panel

    fig = cohort_panel(c, n=2, path=tmp_path / "p3.png")
    assert (tmp_path / "p3.png").stat().st_size > 1000 and len(fig.axes) >= 8


def test_config():
    a, b = SyntheticConfig(), SyntheticConfig(seed=1)
    assert a.config_hash() == SyntheticConfig().config_hash() != b.config_hash()
    assert len(a.config_hash()) == 12 and a.to_dict()["p_flair"] == 0.7
    assert a.shape == (128, 128) and SyntheticConfig(dim=3).shape == (64, 64, 64)
    for bad in ({"dim": 4}, {"p_t1c": 1.5}, {"q1": 0.5}, {"size": 8}, {"noise": -1}):
        with pytest.raises(ValueError):
            SyntheticConfig(**bad)
    with pytest.raises(ValueError, match="counterfactual"):
        make_cohort(SyntheticConfig(n_cases=1), counterfactual="nope")


def test_panel_2d(tmp_path, cohort):
    from audit.figures import cohort_panel

    fig = cohort_panel(cohort, n=4, path=tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000 and len(fig.axes) >= 16
