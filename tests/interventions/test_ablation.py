"""Anatomical and intensity ablations (probes.interventions.ablation) and the marker-model ROC collapse."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from probes.core.model import ModelSnapshot
from probes.interventions.ablation import AblationSpec, ablate, ablation_mask, ablation_study, parse_spec
from probes.metrics.roc import delong


def _data(spatial=(8, 9), n=2, c=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(1.0, 0.5, (n, c, *spatial)).astype(np.float32)
    masks = {"brain": rng.random((n, *spatial)) < 0.6, "skull": rng.random((n, *spatial)) < 0.2,
             "gtv": rng.random((n, 1, *spatial)) < 0.1}
    return x, masks


# ------------------------------------------------------------------------------ ROI removal
@pytest.mark.parametrize("spatial", [(8, 9), (5, 6, 7)])
def test_roi_union_zero_fill_exact_and_outside_untouched(spatial):
    x, masks = _data(spatial)
    xt = torch.from_numpy(x.copy())
    out = ablate(xt, masks, "no gtv+skull")
    assert isinstance(out, torch.Tensor) and out.dtype == xt.dtype and out.shape == xt.shape
    assert torch.equal(xt, torch.from_numpy(x))                     # input not modified
    r = (masks["gtv"][:, 0] | masks["skull"])[:, None]
    r = np.broadcast_to(r, x.shape)
    assert (out.numpy()[r] == 0).all() and r.any()
    assert np.array_equal(out.numpy()[~r], x[~r])


def test_brain_mean_fill_is_per_case_per_contrast_mean():
    x, masks = _data()
    out = ablate(x, masks, "no skull fill=brain_mean")
    for i, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        want = x[i, c][masks["brain"][i]].astype(np.float64).mean()
        np.testing.assert_allclose(out[i, c][masks["skull"][i]], want, rtol=1e-6)
        np.testing.assert_array_equal(out[i, c][~masks["skull"][i]], x[i, c][~masks["skull"][i]])


@pytest.mark.parametrize("spatial", [(11, 12), (6, 7, 8)])
def test_blur_fill_is_normalised_convolution(spatial):
    """Fill = Σ w(d)·x·keep / Σ w(d)·keep with a Gaussian truncated at 4σ, by brute force."""
    x, masks = _data(spatial, n=1, c=2, seed=3)
    sigma = 1.2
    out = ablate(x, masks, AblationSpec(rois=("skull",), fill="blur", sigma=sigma))
    keep = ~masks["skull"][0]
    rad = int(4 * sigma + 0.5)
    for idx in zip(*np.nonzero(masks["skull"][0])):
        num = np.zeros(2)
        den = 0.0
        for off in itertools.product(range(-rad, rad + 1), repeat=len(spatial)):
            j = tuple(a + b for a, b in zip(idx, off))
            if all(0 <= a < s for a, s in zip(j, spatial)) and keep[j]:
                w = math.exp(-0.5 * sum(o * o for o in off) / sigma ** 2)
                num += w * x[0][(slice(None), *j)]
                den += w
        np.testing.assert_allclose(out[0][(slice(None), *idx)], num / den, rtol=1e-5)
    assert np.array_equal(out[0][:, keep], x[0][:, keep])


def test_blur_fill_reproduces_a_constant_image():
    x = np.full((1, 2, 10, 10), 3.5)
    m = {"gtv": np.zeros((1, 10, 10), bool)}
    m["gtv"][0, 2:8, 3:9] = True
    np.testing.assert_allclose(ablate(x, m, "no gtv fill=blur"), x, rtol=1e-12)


def test_missing_known_roi_is_empty_and_unknown_is_error():
    x, masks = _data()
    assert np.array_equal(ablate(x, masks, "no marker"), x)          # marker absent: nothing removed
    with pytest.raises(ValueError, match=r"'skul'.*valid ROIs.*skull"):
        ablate(x, masks, "no gtv+skul")
    with pytest.raises(ValueError, match="fill"):
        ablate(x, masks, "no skull fill=mean")
    with pytest.raises(ValueError, match=r"masks\['skull'\] shape \(2, 8\)"):
        ablate(x, {"skull": masks["skull"][:, :, 0]}, "no skull")
    with pytest.raises(ValueError, match="brain"):
        ablate(x, {"skull": masks["skull"]}, "no skull fill=brain_mean")
    with pytest.raises(ValueError, match="x must be"):
        ablate(x[0, 0], masks, "no skull")
    bad = x.copy()
    bad[0, 1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        ablate(bad, masks, "no skull")


def test_extracranial_is_complement_of_brain():
    x, masks = _data()
    r = ablation_mask(x, masks, "no extracranial")
    assert np.array_equal(r[:, 0], ~masks["brain"])


def test_spec_names_round_trip():
    for s in ["none", "no skull", "no gtv+skull", "no top5%", "no top2.5% per-contrast",
              "no skull fill=blur"]:
        assert parse_spec(s).name == s
    assert parse_spec("No Top5% Joint").name == "no top5%"
    with pytest.raises(ValueError, match="'perc'"):
        parse_spec("no top5% perc")


# ---------------------------------------------------------------------------- intensities
@pytest.mark.parametrize("spatial,k", [((8, 9), 5.0), ((5, 6, 7), 10.0), ((8, 9), 50.0)])
def test_top_k_joint_removes_exactly_ceil_brightest_voxels(spatial, k):
    x, masks = _data(spatial)
    v = int(np.prod(spatial))
    q = math.ceil(k * v / 100)
    r = ablation_mask(x, masks, f"no top{k:g}%")
    assert r.shape == (x.shape[0], 1, *spatial)
    mean = x.mean(axis=1)
    for i in range(x.shape[0]):
        assert r[i, 0].sum() == q
        assert mean[i][r[i, 0]].min() >= mean[i][~r[i, 0]].max()   # the brightest ones
    out = ablate(x, masks, f"no top{k:g}%")
    assert (out[np.broadcast_to(r, x.shape)] == 0).all()


def test_top_k_per_contrast_ranks_each_contrast():
    x, masks = _data((8, 9))
    q = math.ceil(5 * 72 / 100)                                       # 3.6 -> 4 voxels
    r = ablation_mask(x, masks, "no top5% per-contrast")
    assert r.shape == x.shape
    for i, c in itertools.product(range(2), range(4)):
        assert r[i, c].sum() == q
        assert x[i, c][r[i, c]].min() >= x[i, c][~r[i, c]].max()
    assert not all(np.array_equal(r[0, 0], r[0, c]) for c in range(1, 4))   # contrasts differ
    out = ablate(x, masks, "no top5% per-contrast")
    assert np.array_equal(out[~r], x[~r]) and (out[r] == 0).all()


# ------------------------------------------------------------------------------ the study
@pytest.fixture(scope="module")
def marker_study(marker_model):
    test = marker_model.splits["test"]
    snap = ModelSnapshot.take(marker_model.model)
    st = ablation_study(marker_model.model, test, 1,
                        ["no skull", "no extracranial", "no top5%", "no gtv", "no gtv+skull"],
                        batch_size=32)
    assert snap.diff(marker_model.model) == []
    return st, test


def test_marker_model_roc_collapses_without_skull_or_brightest(marker_study):
    st, _ = marker_study
    pc = st.per_condition.set_index("condition")
    print("\n" + st.summary())
    assert pc.loc["none", "auc"] >= 0.95
    # the skull (where the marker is planted), skull stripping (everything outside the brain) and
    # the 5% brightest voxels each carry the marker; Andres et al.'s collapse must show for each
    for cond in ("no skull", "no extracranial", "no top5%"):
        assert pc.loc[cond, "auc"] <= 0.65, cond
        assert pc.loc[cond, "p"] < 0.05 and pc.loc[cond, "delta_ci_high"] < 0, cond
    # the lesion is uninformative here: removing the GTV does not lower the AUC significantly
    assert pc.loc["no gtv", "p"] > 0.05 or pc.loc["no gtv", "delta_ci_low"] <= 0 <= pc.loc["no gtv", "delta_ci_high"]
    # the marker lives in positive cases only: removing it lowers class-1 probabilities
    assert pc.loc["no top5%", "shift_1"] < -0.3 and pc.loc["no top5%", "shift_p_1"] < 0.05


def test_study_numbers_match_sklearn_and_delong(marker_study, marker_model):
    st, test = marker_study
    y = np.array(test.labels)
    for cond, g in st.per_case.groupby("condition", sort=False):
        row = st.per_condition.set_index("condition").loc[cond]
        assert list(g["case_id"]) == test.case_ids and np.array_equal(g["label"], y)
        assert row["auc"] == pytest.approx(roc_auc_score(y, g["prob"]), abs=1e-12)
        ref = delong(y, g["prob"].to_numpy())
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((ref.ci_low, ref.ci_high), abs=1e-12)
        roc = st.roc[st.roc["condition"] == cond]
        assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(row["auc"], abs=1e-12)
    # unablated probabilities are the model's own softmax output
    x = torch.stack([torch.from_numpy(np.array(c.image)) for c in test])
    with torch.no_grad():
        p = torch.softmax(marker_model.model.eval()(x), 1)[:, 1].double().numpy()
    base = st.per_case[st.per_case["condition"] == "none"]["prob"].to_numpy()
    np.testing.assert_allclose(base, p, atol=1e-6)


def test_study_tensor_input_and_errors(resnet18):
    x, masks = _data((32, 32), n=6)
    y = np.array([0, 1] * 3)
    snap = ModelSnapshot.take(resnet18)
    st = ablation_study(resnet18, torch.from_numpy(x), 1, ["no skull"], labels=y, masks=masks, batch_size=4)
    assert snap.diff(resnet18) == []
    assert list(st.per_condition["condition"]) == ["none", "no skull"]
    assert len(st.per_case) == 12 and "AUC" in st.summary()
    with pytest.raises(ValueError, match="labels"):
        ablation_study(resnet18, torch.from_numpy(x), 1, ["no skull"], labels=y[:5], masks=masks)
    with pytest.raises(ValueError, match=r"masks\['skull'\] shape \(5, 32, 32\)"):
        ablation_study(resnet18, torch.from_numpy(x), 1, ["no skull"], labels=y,
                       masks={**masks, "skull": masks["skull"][:5]})
    with pytest.raises(ValueError, match="'bone'"):
        ablation_study(resnet18, torch.from_numpy(x), 1, ["no bone"], labels=y, masks=masks)
    with pytest.raises(TypeError, match="specs"):                 # specs in the place of target
        ablation_study(resnet18, torch.from_numpy(x), ["no skull"], labels=y, masks=masks)
    with pytest.raises(TypeError, match=r"target \(the third argument\).*specs come fourth"):
        ablation_study(resnet18, torch.from_numpy(x), "no gtv", ["no skull"], labels=y, masks=masks)


def test_study_result_follows_the_result_protocol(marker_study):
    from probes.core.result import Summary

    st, test = marker_study
    df = st.to_frame()
    assert list(df.columns) == ["condition", "reason", "metric", "value"] and df is not st.to_frame()
    wide = df.pivot(index="condition", columns="metric", values="value").loc[st.per_condition["condition"]]
    for col in ("auc", "ci_low", "delta_auc", "p", "shift_1", "n"):
        np.testing.assert_array_equal(wide[col].to_numpy(), st.per_condition[col].to_numpy(dtype=float))
    tables = st.tables()
    assert list(tables) == ["per_condition", "per_case", "roc"]
    pc = tables["per_case"]
    assert list(pc.columns) == ["case_id", "condition", "label", "metric", "value"]
    assert pc.case_id.map(type).eq(str).all() and list(pc[pc.condition == "none"].case_id) == test.case_ids
    np.testing.assert_array_equal(pc.value, st.per_case["prob"])
    roc = tables["roc"]
    for cond, g in roc.groupby("condition", sort=False):
        curve = g.pivot(index="point", columns="metric", values="value")
        assert np.trapezoid(curve["tpr"], curve["fpr"]) == pytest.approx(wide.loc[cond, "auc"], abs=1e-12)
    text = st.summary()
    assert isinstance(text, Summary) and "AUC" in text and "no gtv+skull" in text
    assert "<table" in st._repr_html_()
