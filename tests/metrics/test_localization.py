"""Localisation metrics against Quantus, MONAI, scipy and closed forms (2D and 3D)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from probes.core.result import Summary
from probes.metrics.localization import (EmptyROIWarning, LocalizationTable, UndefinedMetricWarning,
                                         binarize_at_percentile, feature_portion, hit_rate, intensity_correlation,
                                         iou_at_percentile, localization_table, msfi, relevance_mass)


def _data(spatial=(16, 16), n=2, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, c, *spatial, generator=g, dtype=torch.float64) + 0.3
    m = torch.zeros(n, *spatial, dtype=torch.bool)
    sl = tuple(slice(2, 9) for _ in spatial)
    m[(slice(None),) + sl] = True
    x = torch.rand(n, c, *spatial, generator=g, dtype=torch.float64)
    return a, m, x


def test_relevance_mass_equals_quantus_per_contrast():
    import quantus

    a, m, x = _data()
    ours = relevance_mass(a, m).numpy()
    metric = quantus.RelevanceMassAccuracy(abs=False, normalise=False, disable_warnings=True)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 16, 2)).double()
    for ch in range(a.shape[1]):
        q = metric(model=model, x_batch=x[:, ch:ch + 1].numpy(), y_batch=np.zeros(2, dtype=int),
                   a_batch=a[:, ch:ch + 1].numpy().copy(), s_batch=m[:, None].numpy().astype(float),
                   channel_first=True)
        np.testing.assert_allclose(ours[:, ch], np.asarray(q, dtype=float), atol=1e-6)


def test_iou_equals_monai_on_binarised_maps():
    from monai.metrics import compute_iou

    a, m, _ = _data()
    top = binarize_at_percentile(a, 90).double()
    ref = compute_iou(top, m[:, None].double().expand_as(top), include_background=True)
    np.testing.assert_allclose(iou_at_percentile(a, m, q=90).numpy(), ref.numpy(), atol=1e-12)


def test_closed_forms_indicator_map():
    # 10x10 image, ROI = 5 voxels; map = ROI indicator → relevance mass 1; at q = 95 the
    # threshold is 1 (95% of voxels are 0, the top 5 are 1) so B = ROI: IoU = hit = 1.
    m = torch.zeros(1, 10, 10, dtype=torch.bool)
    m[0, 0, :5] = True
    a = m[:, None].double()
    assert relevance_mass(a, m).item() == pytest.approx(1.0)
    assert iou_at_percentile(a, m, q=95).item() == pytest.approx(1.0)
    assert hit_rate(a, m, q=95).item() == pytest.approx(1.0)
    # A ramp map 0..99: q=90 → threshold np.percentile = 89.1 → B = {90..99} (10 voxels).
    ramp = torch.arange(100, dtype=torch.float64).reshape(1, 1, 10, 10)
    roi = torch.zeros(1, 10, 10, dtype=torch.bool)
    roi.view(1, -1)[0, 95:] = True  # 5 voxels, all inside B
    roi.view(1, -1)[0, :3] = True   # 3 more outside B
    assert iou_at_percentile(ramp, roi, q=90).item() == pytest.approx(5 / 13)
    assert hit_rate(ramp, roi, q=90).item() == pytest.approx(5 / 10)
    # positive-only variant by hand
    s = torch.tensor([[[[2.0, -1.0], [1.0, -4.0]]]])
    r = torch.tensor([[[True, False], [False, True]]])
    assert relevance_mass(s, r).item() == pytest.approx((2 - 4) / (2 - 1 + 1 - 4))
    assert relevance_mass(s, r, positive_only=True).item() == pytest.approx(2 / 3)


@pytest.mark.parametrize("how", ["pearson", "spearman"])
def test_intensity_correlation_vs_scipy(how):
    a, m, x = _data()
    ours = intensity_correlation(a, x, m, correlation=how).numpy()
    f = stats.pearsonr if how == "pearson" else stats.spearmanr
    for i in range(2):
        for c in range(4):
            ref = f(a[i, c][m[i]].numpy(), x[i, c][m[i]].numpy())[0]
            assert ours[i, c] == pytest.approx(ref, abs=1e-10)
    # single-channel map against every contrast, whole image
    one = intensity_correlation(a[:, :1], x, None, correlation=how).numpy()
    assert one.shape == (2, 4)
    assert one[1, 2] == pytest.approx(f(a[1, 0].ravel().numpy(), x[1, 2].ravel().numpy())[0], abs=1e-10)


def test_empty_roi_nan_and_warning_everywhere():
    a, m, x = _data()
    m[1] = False
    for fn in (lambda: iou_at_percentile(a, m), lambda: hit_rate(a, m), lambda: relevance_mass(a, m),
               lambda: intensity_correlation(a, x, m), lambda: feature_portion(a, m)):
        with pytest.warns(EmptyROIWarning):
            v = fn().numpy()
        assert np.isnan(v[1]).all() and np.isfinite(v[0]).all()


def test_constant_map_and_shape_errors():
    a, m, _ = _data()
    a[0, 1] = 3.0
    with pytest.warns(UndefinedMetricWarning):
        v = iou_at_percentile(a, m).numpy()
    assert np.isnan(v[0, 1]) and np.isfinite(v[1]).all()
    with pytest.raises(ValueError, match=r"\(2, 15, 16\).*\(2, 4, 16, 16\)"):
        relevance_mass(a, m[:, :15])


def test_feature_portion_and_msfi_by_hand():
    a = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    a[0, 0, 0, 0], a[0, 0, 3, 3], a[0, 0, 1, 1] = 3.0, 1.0, -5.0  # FP_0 = 3 / 4 inside ROI
    a[0, 1, 3, 3] = 2.0                                           # FP_1 = 0
    roi = torch.zeros(1, 4, 4, dtype=torch.bool)
    roi[0, :2, :2] = True
    np.testing.assert_allclose(feature_portion(a, roi).numpy(), [[0.75, 0.0]])
    # Shapley importances (0.6, 0.2) → w = (1, 1/3): MSFI = (0.75 + 0) / (4/3)
    assert msfi(a, roi, [0.6, 0.2]).item() == pytest.approx(0.75 / (4 / 3))
    with pytest.warns(UserWarning, match="negative"):
        assert msfi(a, roi, [0.6, -0.2]).item() == pytest.approx(0.75)


def test_3d_and_table():
    a, m, x = _data(spatial=(8, 8, 8), n=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for v in (iou_at_percentile(a, m), hit_rate(a, m), relevance_mass(a, m, positive_only=True),
                  intensity_correlation(a, x, m, correlation="spearman"), feature_portion(a, m)):
            assert v.shape == (1, 4) and torch.isfinite(v).all()
        assert msfi(a, m, [1.0, 0.5, 0.2, 0.0]).shape == (1,)
        res = localization_table(a, {"lesion": m}, x, case_ids=["c0"], method="ig",
                                 contrasts=["t1", "t1c", "t2", "flair"])
    assert isinstance(res, LocalizationTable)
    df = res.to_frame()
    assert list(df.columns) == ["case_id", "method", "point", "contrast", "roi", "reason", "metric", "value"]
    row = df[(df.metric == "relevance_mass") & (df.contrast == "t2")]
    assert row.value.item() == pytest.approx(relevance_mass(a, m)[0, 2].item())


def test_table_rows_case_ids_contrasts_and_summary():
    a, m, x = _data(n=2, c=3)
    skull = ~m
    one = a[:, :1]  # a single map for all contrasts (Grad-CAM-like)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = localization_table(one, {"lesion": m, "skull": skull}, x, contrasts=["t1", "t2", "flair"],
                                 method="gradcam", point="layer3", q=90)
    df = res.to_frame()
    assert df.case_id.tolist()[0] == "0" and set(df.case_id) == {"0", "1"}  # str, not int
    assert df.case_id.map(type).eq(str).all()
    # map-only metrics of a single-channel map cover every contrast: contrast "all"
    iou = df[(df.metric == "iou@90") & (df.roi == "skull")]
    assert iou.contrast.tolist() == ["all", "all"]
    np.testing.assert_allclose(iou.value, iou_at_percentile(one, skull, q=90).numpy()[:, 0])
    # intensity correlations of that map: one row per image contrast, named
    ic = df[(df.metric == "intensity_spearman") & (df.roi == "all") & (df.case_id == "1")]
    assert ic.contrast.tolist() == ["t1", "t2", "flair"]
    np.testing.assert_allclose(ic.value, intensity_correlation(one, x, correlation="spearman").numpy()[1])
    assert set(df.point) == {"layer3"} and set(df.method) == {"gradcam"}
    # without contrast names: "0", "1", ... for per-contrast maps
    plain = localization_table(a, {"lesion": m}).to_frame()
    assert sorted(set(plain.contrast)) == ["0", "1", "2"] and len(plain) == 2 * 3 * 4
    # the summary is the mean over cases per (method, point, contrast, roi, metric)
    s = res.summary()
    assert isinstance(s, Summary) and "Localisation metrics" in s and "<table" in s._repr_html_()
    mean_iou = iou.value.mean()
    assert f"{mean_iou:.4g}" in s
    # to_frame is a copy
    df.loc[0, "value"] = -99.0
    assert res.to_frame().value.iloc[0] != -99.0


def test_table_refuses_mismatched_contrasts_and_masks():
    a, m, x = _data(n=2, c=4)
    with pytest.raises(ValueError, match="contrasts has 3 names for 4 contrasts"):
        localization_table(a, {"lesion": m}, x, contrasts=["t1", "t2", "flair"])
    with pytest.raises(ValueError, match=r"masks\['lesion'\] shape \(2, 15, 16\)"):
        localization_table(a, {"lesion": m[:, :15]})
    with pytest.raises(ValueError, match="case_ids has 3 entries for 2 cases"):
        localization_table(a, {"lesion": m}, case_ids=["a", "b", "c"])
    with pytest.raises(ValueError, match="correlation='kendall' is not one of"):
        intensity_correlation(a, x, m, correlation="kendall")


def test_msfi_with_one_roi_per_contrast():
    a = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    a[0, 0, 0, 0], a[0, 0, 3, 3] = 3.0, 1.0    # contrast 0: 3 of 4 inside its ROI (top-left)
    a[0, 1, 3, 3], a[0, 1, 0, 0] = 2.0, 2.0    # contrast 1: 2 of 4 inside its ROI (bottom-right)
    roi = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    roi[0, 0, :2, :2] = True
    roi[0, 1, 2:, 2:] = True
    np.testing.assert_allclose(feature_portion(a, roi).numpy(), [[0.75, 0.5]])
    # weights (1, 0.5): MSFI = (0.75 + 0.5·0.5) / 1.5
    assert msfi(a, roi, [2.0, 1.0]).item() == pytest.approx((0.75 + 0.25) / 1.5)
    with pytest.raises(ValueError, match=r"importance shape \(3,\) does not match the 2 contrasts"):
        msfi(a, roi, [1.0, 1.0, 1.0])


def test_msfi_counts_a_weighted_contrast_without_positive_attribution_as_zero():
    """Closed form: FP = (0.4, 0 (no positive attribution), 0.5), w = (1, 0.5, 0.25) → 0.525 / 1.75 = 0.3.

    The contrast the explanation fails to show contributes 0 and keeps its weight in the
    denominator (not NaN), and the warning names it.
    """
    a = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]],        # T1: FP = (1 + 3) / 10
                       [[-1.0, -1.0], [-1.0, -1.0]],    # T1c: no positive attribution
                       [[0.0, 0.0], [5.0, 5.0]]]])      # T2: FP = 5 / 10
    roi = torch.tensor([[[1, 0], [1, 0]]], dtype=torch.bool)
    with pytest.warns(UserWarning, match=r"no positive attribution.*T1c \(1 case"):
        v = msfi(a, roi, [2.0, 1.0, 0.5], contrasts=["T1", "T1c", "T2"])
    assert v.item() == pytest.approx((1 * 0.4 + 0.5 * 0.0 + 0.25 * 0.5) / 1.75) == pytest.approx(0.3)
    # the same contrast with weight 0 does not enter at all
    assert msfi(a, roi, [2.0, 0.0, 0.5]).item() == pytest.approx((0.4 + 0.25 * 0.5) / 1.25)
    # an empty ROI on a weighted contrast is still undefined
    with pytest.warns(UserWarning):
        assert torch.isnan(msfi(a, torch.zeros_like(roi), [2.0, 1.0, 0.5])).all()
