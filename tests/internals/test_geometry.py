"""ROI cosine distances: against a direct numpy computation, known answers, errors, real model."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import numpy as np
import pytest
import torch
from torch import nn

from probes import HookRegistry, ModelSnapshot
from probes.core import resize_mask
from probes.internals.geometry import RoiDistances, pooled_cosine_distances, roi_cosine_distances


def _cos_dist(u, v):
    return 1.0 - float(u @ v) / (np.linalg.norm(u) * np.linalg.norm(v))


def test_matches_numpy_on_hand_made_map():
    rng = np.random.default_rng(0)
    act = rng.normal(size=(2, 3, 4, 4))                   # feature map at 4×4
    m_a = np.zeros((2, 8, 8), bool)
    m_a[:, 1:5, 2:7] = True                               # input-resolution masks (8×8)
    m_b = np.zeros((2, 8, 8), bool)
    m_b[0, 6:, 6:] = True
    m_b[1, :3, :] = True
    res = pooled_cosine_distances({"p": torch.tensor(act)}, {"a": m_a, "b": m_b}, ["c0", "c1"])
    df, wt = res.table, res.weights()
    assert len(df) == 2 * 3  # (global,a), (global,b), (a,b) per case
    for i, cid in enumerate(["c0", "c1"]):
        # area resize 8→4: each map cell is the mean over its 2×2 input block
        w = {k: m[i].reshape(4, 2, 4, 2).mean((1, 3)) for k, m in (("a", m_a), ("b", m_b))}
        vec = {"global": act[i].reshape(3, -1).mean(1)}
        for k in w:
            vec[k] = (act[i] * w[k]).reshape(3, -1).sum(1) / w[k].sum()
        for ra, rb in (("global", "a"), ("global", "b"), ("a", "b")):
            got = df[(df.case_id == cid) & (df.roi_a == ra) & (df.roi_b == rb)]
            assert got.cosine_distance.item() == pytest.approx(_cos_dist(vec[ra], vec[rb]), abs=1e-12)
        assert got.weight_a.item() == pytest.approx(w["a"].sum())
        for k in w:
            assert wt[(wt.case_id == cid) & (wt.roi == k)].value.item() == pytest.approx(w[k].sum())
        assert wt[(wt.case_id == cid) & (wt.roi == "global")].value.item() == 16


def test_area_resize_is_area_interpolation_3d():
    """The ROI weights geometry uses: resize_mask(mode="area")."""
    m = torch.zeros(1, 6, 6, 6)
    m[0, :3, :2, :] = 1
    w = resize_mask(m, (3, 3, 3), mode="area")
    ref = m[0].numpy().reshape(3, 2, 3, 2, 3, 2).mean((1, 3, 5))
    np.testing.assert_allclose(w[0].numpy(), ref)
    # non-divisible sizes: torch's area interpolation is the reference
    w2 = resize_mask(m, (4, 5, 4), mode="area")
    ref2 = torch.nn.functional.interpolate(m[:, None].double(), size=(4, 5, 4), mode="area")[:, 0]
    torch.testing.assert_close(w2, ref2)


def test_constant_feature_map_gives_zero_distance():
    """A 1×1 conv with zero weights and bias (1, 2, 3): every position holds the same vector."""
    conv = nn.Conv2d(4, 3, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
    model = nn.Sequential(conv, nn.Conv2d(3, 2, 1)).eval()
    x = torch.randn(3, 4, 16, 16)
    masks = {"left": torch.zeros(3, 16, 16, dtype=torch.bool), "top": torch.zeros(3, 16, 16)}
    masks["left"][:, :, :5] = True
    masks["top"][:, :3, :] = 1.0
    snap = ModelSnapshot.take(model)
    df = roi_cosine_distances(model, x, masks, ["0"], batch_size=2).to_frame()
    assert snap.diff(model) == []
    assert len(df) == 3 * 3
    np.testing.assert_allclose(df.value, 0.0, atol=1e-12)
    # opposite vectors in two ROIs: distance 2 between them
    act = torch.ones(1, 2, 4, 4)
    act[:, :, :, 2:] = -1
    a = torch.zeros(1, 4, 4)
    a[:, :, :2] = 1
    b = 1 - a
    with pytest.warns(UserWarning, match="pooled vector is zero"):  # the global mean is 0
        d = pooled_cosine_distances({"p": act}, {"a": a, "b": b}).to_frame()
    assert d[d.roi_a == "global"].value.isna().all()
    assert d[(d.roi_a == "a") & (d.roi_b == "b")].value.item() == pytest.approx(2.0)


def test_empty_roi_gives_nan_with_warning():
    act = torch.randn(2, 3, 4, 4)
    m = torch.zeros(2, 8, 8, dtype=torch.bool)
    m[0, :4, :4] = True  # case 1 has an empty ROI
    with pytest.warns(UserWarning, match="empty ROI"):
        df = pooled_cosine_distances({"p": act}, {"gtv": m}).to_frame()
    assert np.isfinite(df[df.case_id == "0"].value).all()
    assert df[df.case_id == "1"].value.isna().all()


def test_bad_masks_raise_with_names():
    reg = HookRegistry(nn.Sequential(nn.Conv2d(4, 3, 1)).eval())
    x = torch.randn(2, 4, 8, 8)
    with pytest.raises(ValueError, match=r"masks\['gtv'\] must be"):
        roi_cosine_distances(reg, x, {"gtv": torch.ones(3, 8, 8)}, ["0"])
    with pytest.raises(ValueError, match=r"masks\['gtv'\] must hold values in"):
        roi_cosine_distances(reg, x, {"gtv": torch.full((2, 8, 8), 2.0)}, ["0"])
    with pytest.raises(ValueError, match="reserved"):
        roi_cosine_distances(reg, x, {"global": torch.ones(2, 8, 8)}, ["0"])
    with pytest.raises(KeyError, match="unknown hook point"):
        roi_cosine_distances(reg, x, {"gtv": torch.ones(2, 8, 8)}, ["nope"])
    with pytest.raises(ValueError, match="case_ids"):
        roi_cosine_distances(reg, x, {"gtv": torch.ones(2, 8, 8)}, ["0"], case_ids=["a"])
    with pytest.raises(ValueError, match="batch_size"):
        roi_cosine_distances(reg, x, {"gtv": torch.ones(2, 8, 8)}, ["0"], batch_size=0)


def test_lesion_model_brain_tumour_skull(lesion_model):
    """Runs on the trained model with the synthetic ROIs; every pair and point is present."""
    cases = list(lesion_model.splits["test"])[:6]
    x = torch.stack([c.to_tensor() for c in cases])
    masks = {k: np.stack([c.masks[k] for c in cases]) for k in ("brain", "gtv", "skull")}
    reg = HookRegistry(lesion_model.model)
    points = [f"{b}.resid" for b in reg.blocks]
    df = roi_cosine_distances(reg, x, masks, points, case_ids=[c.case_id for c in cases]).to_frame()
    assert len(df) == 6 * len(points) * 6  # 3 global pairs + 3 ROI pairs
    assert df.value.notna().all() and df.value.between(0, 2).all()
    # the brain covers most of the image: it is closer to the global vector than the tumour is
    piv = df[df.roi_a == "global"].pivot_table(index=["case_id", "point"], columns="roi_b", values="value")
    assert (piv["brain"] <= piv["gtv"]).mean() > 0.8


class _ChannelsLast(nn.Module):
    """The same network fed (N, H, W, C), as its declared interface says."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        from probes.core import ModelInterface

        self.medaudit_interface = ModelInterface(input_layout="channels_last")

    def forward(self, x):
        return self.net(x.movedim(-1, 1))


def test_result_protocol_and_declared_input_layout(resnet18):
    """Tidy long copy with str case ids, a Summary, and a channels-last model read through its interface."""
    x = torch.randn(3, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    masks = {"top": torch.zeros(3, 32, 32, dtype=torch.bool)}
    masks["top"][:, :10] = True
    points = ["layer1.0.resid", "layer3.1.resid"]
    res = roi_cosine_distances(resnet18, x, masks, points, case_ids=[10, 11, 12])
    assert isinstance(res, RoiDistances)
    long = res.to_frame()
    assert list(long.columns) == ["case_id", "point", "roi_a", "roi_b", "reason", "metric", "value"]
    assert long.case_id.map(type).eq(str).all() and list(long.case_id[:3]) == ["10", "11", "12"]
    assert set(res.tables()) == {"distances", "weights"}
    text = res.summary()
    assert type(text).__name__ == "Summary" and "layer3.1.resid" in text
    summ = res.table.groupby(["point", "roi_a", "roi_b"], sort=False)["cosine_distance"].mean()
    assert "n_cases" in text and f"{summ.iloc[0]:.4g}" in text
    with pytest.raises(FrozenInstanceError):
        res.table = None
    wrapped = _ChannelsLast(resnet18).eval()
    got = roi_cosine_distances(wrapped, x, masks, [f"net.{p}" for p in points], case_ids=[10, 11, 12])
    np.testing.assert_allclose(got.table.cosine_distance, res.table.cosine_distance, rtol=1e-6, atol=1e-12)
