"""Activation patching: pairs, both directions, ROI-masked grafts, effects with bootstrap CIs.

Truth test on the planted skull marker (``marker_model``: q1=1, q0=0, lesion shapes
uninformative, marker inside the ``skull`` mask; 33 pairs of test cases at p ≥ 0.9). Measured
x->x_base Δp(class 1) (class-1 donor into a class-0 case), mean over pairs, donor ROI:

=============  =====  =====  =====  =====  =====  =====  =====  =====
``.local``     l1.0   l1.1   l2.0   l2.1   l3.0   l3.1   l4.0   l4.1
=============  =====  =====  =====  =====  =====  =====  =====  =====
full           0.00   0.01   0.01   0.30   0.61   0.61   0.09   0.05
skull          0.00   0.01   0.01   0.08   0.27   0.26   0.09   0.05
gtv            0.00   0.00   0.00   0.01   0.14   0.10   0.04   0.03
=============  =====  =====  =====  =====  =====  =====  =====  =====

(x_base->x, full: −0.29 at layer3.0, −0.15 at layer3.1, −0.11 at layer2.1: the reverse graft is
the weaker one.)
Grafting the branch output ``.local`` moves p(1) by ≥ 0.3 at layer3.0/3.1, but that effect is
*not local*: f(x)'s two 3×3 convs spread the marker's evidence over neighbouring cells, and at
4×4 (layer3) a random ROI of the skull's size keeps 0.41 (skull 0.27, gtv 0.14, CIs overlap).
What is asserted for ``.local``: a ≥ 0.3 block exists, the reverse direction lowers p(1) there,
the forward effect is the larger, and skull keeps more than gtv (point estimates).

The residual stream localises the mechanism: ``layer1.1.resid`` (16×16), x->x_base: full 0.969;
skull 0.787 (CI 0.68–0.88); skull complement 0.34; random ROI of the skull's size 0.27 (CI
0.18–0.37); gtv 0.013 (CI 0.00–0.03). Asserted: skull CI low ≥ 0.5 × full, gtv CI high ≤
0.25 × full, random CI high < skull CI low.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import bootstrap
from skimage.measure import block_reduce

from probes import HookRegistry, ModelSnapshot
from probes.core import ModelInterface, resize_mask
from probes.core.errors import UndefinedValueWarning
from probes.hooks.registry import ANCHORS
from probes.internals.patching import PatchingResult, activation_patching, select_pairs

XB, BX = "x->x_base", "x_base->x"


# --------------------------------------------------------------------------- marker model
@pytest.fixture(scope="module")
def marker_pairs(marker_model):
    from audit.training import predict_proba

    test = marker_model.splits["test"]
    probs = predict_proba(marker_model.model, test)
    pairs = select_pairs(probs, np.asarray(test.labels), min_confidence=0.9)
    s, t = pairs["x"].to_numpy(), pairs["x_base"].to_numpy()
    x = torch.stack([torch.from_numpy(np.array(c.image)) for c in test])
    m = {k: np.stack([c.masks[k] for c in test]) for k in ("skull", "gtv")}
    rois = {k: (v[s], v[t]) for k, v in m.items()}
    return HookRegistry(marker_model.model), x[s], x[t], rois, pairs


def test_marker_local_patching_transfers_class_and_skull_beats_gtv(marker_pairs):
    reg, xs, xt, rois, pairs = marker_pairs
    assert len(pairs) >= 25  # 34 measured
    snap = ModelSnapshot.take(reg.model)
    res = activation_patching(reg, xs, 1, xt)  # every block's .local, both directions
    assert snap.diff(reg.model) == []
    df = res.table
    assert set(df["point"]) == {f"{b}.local" for b in reg.blocks} and set(df["roi"]) == {"full"}
    sm = res.effects().set_index(["point", "direction"])
    fwd = sm.xs(XB, level="direction")["mean_delta"]
    strong = [p for p in fwd.index if fwd[p] >= 0.3]
    assert strong, fwd.round(3).to_dict()
    for p in strong:  # reverse graft (class-0 donor into class-1 case) lowers p(1)
        assert sm.loc[(p, BX), "mean_delta"] < 0
    # asymmetry: the forward effect is larger than the reverse one
    assert max(fwd[p] for p in strong) > max(-sm.loc[(p, BX), "mean_delta"] for p in strong)
    first = strong[0]
    roi = activation_patching(reg, xs, 1, xt, first, masks=rois, controls=(), directions=(XB,))
    r = roi.effects().set_index("roi")
    assert r.loc["skull", "mean_delta"] > r.loc["gtv", "mean_delta"], r.round(3)
    # How far a masked `.local` graft spreads beyond its ROI is a property of the branch (its
    # later convolutions), measured 0.26-0.35 of the full effect for gtv over training seeds
    # 0/1/2; the ROI claim belongs to the residual stream (the next test).


def test_marker_residual_stream_skull_roi_keeps_the_effect_gtv_and_random_do_not(marker_pairs):
    reg, xs, xt, rois, _ = marker_pairs
    res = activation_patching(reg, xs, 1, xt, "layer1.1.resid", masks=rois, n_samples=3, directions=(XB,), seed=1)
    df = res.table
    sm = res.effects().set_index(["roi", "control"])
    full = sm.loc[("full", "none"), "mean_delta"]
    skull, gtv = sm.loc[("skull", "none")], sm.loc[("gtv", "none")]
    assert full >= 0.9
    assert skull["ci_low"] >= 0.5 * full, sm.round(3)
    assert gtv["ci_high"] <= 0.25 * full, sm.round(3)
    assert sm.loc[("skull", "random"), "ci_high"] < skull["ci_low"], sm.round(3)
    assert sm.loc[("skull", "complement"), "mean_delta"] < skull["mean_delta"]
    # random draws have exactly the ROI's number of positions, per pair
    cov = df.pivot_table(index="pair", columns=["roi", "control"], values="coverage", aggfunc="max")
    np.testing.assert_allclose(cov[("skull", "random")], cov[("skull", "none")])
    np.testing.assert_allclose(cov[("skull", "complement")], 1 - cov[("skull", "none")])


# ------------------------------------------------------------------ identities and loops
def test_self_patching_changes_nothing_at_every_point(resnet18):
    reg = HookRegistry(resnet18)
    x = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(2))
    anchors = [f"{b}.{a}" for b in reg.blocks for a in ANCHORS]
    modules = ["conv1", "bn1", "layer1.0.conv1", "layer2.0.downsample", "layer3.1.bn2", "layer4.1.act2", "global_pool"]
    snap = ModelSnapshot.take(resnet18)
    same = activation_patching(reg, x, 1, x, anchors + modules, directions=(XB,)).table
    assert len(same) == 2 * (len(anchors) + len(modules))
    assert same["delta"].abs().max() <= 1e-6
    # masked self-patching too (random ROI, its controls), at the anchors of three blocks
    roi = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(3)) > 0.7
    few = [p for p in anchors if p.split(".")[0] + "." + p.split(".")[1] in ("layer1.0", "layer2.0", "layer4.1")]
    masked = activation_patching(reg, x, 0, x, few, masks={"roi": roi}, n_samples=1,
                                 controls=("complement", "random")).table
    assert masked["delta"].abs().max() <= 1e-6
    assert snap.diff(resnet18) == []
    # ...while grafting another input at the same points does change the output (not vacuous)
    other = activation_patching(reg, x, 1, x.flip(0), anchors, directions=(XB,)).table
    moved = other.groupby("point")["delta"].apply(lambda d: d.abs().max())
    assert (moved > 1e-4).all(), moved[moved <= 1e-4]


def test_batched_equals_per_pair_loop_with_independent_masks(resnet18):
    reg = HookRegistry(resnet18)
    g = torch.Generator().manual_seed(4)
    xs, xt = torch.randn(3, 4, 40, 40, generator=g), torch.randn(3, 4, 40, 40, generator=g)
    rs = torch.zeros(3, 40, 40, dtype=torch.bool)
    rs[:, :, :3] = True  # a thin band: 3 px wide
    rt = torch.rand(3, 40, 40, generator=g) > 0.95
    points = ["layer1.0.local", "layer2.1.resid_pre", "layer3.0.shortcut", "layer4.1.local"]
    df = activation_patching(reg, xs, 1, xt, points, masks={"band": (rs, rt)}, roi_from="union",
                             controls=("full", "complement"), batch_size=4).table  # 6 rows: chunks of 4 + 2
    for i in range(3):
        for d, (donor, recip) in {XB: (xs[i:i + 1], xt[i:i + 1]), BX: (xt[i:i + 1], xs[i:i + 1])}.items():
            _, cache = reg.run_with_cache(donor, points=points)
            with torch.no_grad():
                p0 = torch.softmax(resnet18(recip).double(), 1)[0, 1]
            for p in points:
                act = cache[p]
                # independent resize: max-pool of the 0/1 union ROI over each cell = "any overlap"
                u = (rs[i] | rt[i]).float()[None, None]
                m = F.adaptive_max_pool2d(u, act.shape[2:]) > 0
                for control, mask in (("none", None), ("none", m), ("complement", ~m)):
                    with reg.patch({p: act}, mask=mask), torch.no_grad():
                        p1 = torch.softmax(resnet18(recip).double(), 1)[0, 1]
                    roi = "full" if mask is None else "band"
                    row = df[(df.pair == i) & (df.direction == d) & (df.point == p) & (df.roi == roi)
                             & (df.control == control)]
                    assert len(row) == 1
                    assert abs(row["p_before"].item() - p0.item()) <= 1e-6
                    assert abs(row["delta"].item() - (p1 - p0).item()) <= 1e-6
                    cov = 1.0 if mask is None else mask.double().mean().item()
                    assert row["coverage"].item() == pytest.approx(cov)


def test_3d_model_patching_with_a_3d_mask():
    from monai.networks.nets import resnet10

    torch.manual_seed(0)
    model = resnet10(spatial_dims=3, n_input_channels=4, num_classes=2).eval()
    reg = HookRegistry(model)
    assert len(reg.blocks) == 4
    g = torch.Generator().manual_seed(5)
    xs, xt = torch.randn(2, 4, 16, 16, 16, generator=g), torch.randn(2, 4, 16, 16, 16, generator=g)
    roi = torch.zeros(2, 1, 16, 16, 16, dtype=torch.bool)
    roi[:, :, 2:5, 3:9, 10:16] = True
    snap = ModelSnapshot.take(model)
    same = activation_patching(model, xs, 1, xs, masks={"roi": roi}, n_samples=1, directions=(XB,)).table
    assert same["delta"].abs().max() <= 1e-6
    df = activation_patching(reg, xs, 1, xt, masks={"roi": roi}, n_samples=1).table
    assert snap.diff(model) == []
    for point, grp in df[(df.roi == "roi") & (df.control == "none")].groupby("point"):
        with torch.no_grad():
            _, cache = reg.run_with_cache(xs[:1], points=[point])
        shape = cache[point].shape[2:]
        factors = tuple(16 // s for s in shape)
        want = block_reduce(roi[0, 0].numpy(), factors, np.max).mean()
        np.testing.assert_allclose(grp["coverage"], want)
    full = df[df.roi == "full"].set_index(["pair", "point", "direction"])["delta"]
    assert full.abs().max() > 1e-4  # grafting a different input moves p(1) somewhere


# ------------------------------------------------------------------ masks, pairs, summary
def test_overlap_resize_keeps_a_thin_ring_and_matches_block_max():
    """The ROI rule patching uses: resize_mask(mode="overlap") = "any overlap" at threshold 0."""
    ring = np.zeros((64, 64), bool)
    ring[5, 5:59] = ring[58, 5:59] = ring[5:59, 5] = ring[5:59, 58] = True  # 1-px square ring
    t = torch.from_numpy(ring)[None, None]
    for size in (16, 8, 4, 2):
        got = resize_mask(t, (size, size), mode="overlap")[0, 0].numpy()
        want = block_reduce(ring, (64 // size, 64 // size), np.max)  # any overlap
        np.testing.assert_array_equal(got, want)
        assert got.any()
    # at threshold 0.5 (majority of the cell) a 1-px ring vanishes: why the default is 0
    assert not resize_mask(t, (8, 8), mode="overlap", threshold=0.5).any()
    # non-divisible sizes: cell fraction = adaptive average pooling
    frac = F.adaptive_avg_pool2d(t.float(), (5, 7))
    np.testing.assert_array_equal(resize_mask(t, (5, 7), mode="overlap", threshold=0.2).numpy(), (frac > 0.2).numpy())


def test_roi_threshold_reaches_the_grafted_positions(resnet18):
    """coverage at roi_threshold=t equals the fraction of cells whose area fraction exceeds t."""
    reg = HookRegistry(resnet18)
    g = torch.Generator().manual_seed(6)
    xs, xt = torch.randn(2, 4, 32, 32, generator=g), torch.randn(2, 4, 32, 32, generator=g)
    roi = torch.zeros(2, 32, 32, dtype=torch.bool)
    roi[:, 3:13, 5:22] = True
    _, cache = reg.run_with_cache(xs, points=["layer1.0.local"])
    fm = cache["layer1.0.local"].shape[2:]
    frac = F.adaptive_avg_pool2d(roi.float()[:, None], fm)[:, 0]
    for th in (0.0, 0.5):
        t = activation_patching(reg, xs, 1, xt, "layer1.0.local", masks={"r": roi}, controls=(),
                                directions=(XB,), roi_threshold=th).table
        np.testing.assert_allclose(t["coverage"], (frac > th + 1e-7).double().mean((1, 2)).numpy())


def test_select_pairs_protocol():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(0.5 + (y - 0.5) * rng.uniform(-0.4, 1.0, 200), 0, 1)  # some misclassified
    pairs = select_pairs(p1, y, min_confidence=0.8)
    probs = np.stack([1 - p1, p1], 1)
    n_x = int(((y == 1) & (p1 >= 0.8)).sum())
    n_base = int(((y == 0) & (1 - p1 >= 0.8)).sum())
    assert len(pairs) == min(n_x, n_base) > 0
    assert list(pairs.columns) == ["pair", "x", "x_base", "p_x", "p_x_base"]
    assert (y[pairs["x"]] == 1).all() and (y[pairs["x_base"]] == 0).all()
    assert (probs[pairs["x"], 1] >= 0.8).all() and (probs[pairs["x_base"], 0] >= 0.8).all()
    assert pairs["p_x"].is_monotonic_decreasing and pairs["p_x_base"].is_monotonic_decreasing
    # the most confident eligible cases are the ones used
    assert pairs["p_x"].min() >= np.sort(p1[(y == 1)])[::-1][len(pairs) - 1]
    pd.testing.assert_frame_equal(pairs, select_pairs(probs, y, min_confidence=0.8))  # (N,K) == (N,)
    assert len(select_pairs(p1, y, min_confidence=0.8, n_pairs=5)) == 5
    swapped = select_pairs(p1, y, x_label=0, x_base_label=1, min_confidence=0.8)
    np.testing.assert_array_equal(swapped["x"], pairs["x_base"])
    with pytest.raises(ValueError, match="labels"):
        select_pairs(p1, y[:-1])
    with pytest.raises(ValueError, match="x_label"):
        select_pairs(p1, y, x_label=2)
    with pytest.raises(ValueError, match="min_confidence"):
        select_pairs(p1, y, min_confidence=0)
    with pytest.raises(ValueError, match="NaN"):
        select_pairs(np.r_[p1[:-1], np.nan], y)
    with pytest.warns(UserWarning, match="no pair"):
        assert len(select_pairs(p1, np.ones(200, int))) == 0


def _table(d, **cols):
    """A per-pair patching table with deltas ``d`` (one pair each) and defaults for the rest."""
    base = {"pair": np.arange(len(d)), "point": "p", "direction": XB, "roi": "full", "control": "none", "draw": 0,
            "coverage": 1.0, "p_before": 0.2, "p_after": 0.2 + d, "delta": d}
    return pd.DataFrame({**base, **cols})


def test_effects_bootstrap_matches_scipy_and_averages_random_draws():
    rng = np.random.default_rng(1)
    d = rng.normal(0.3, 0.2, 30)
    res = PatchingResult(_table(d), 1)
    sm = res.effects(n_boot=20000, seed=0).iloc[0]
    ref = bootstrap((d,), np.mean, n_resamples=20000, method="percentile", random_state=0).confidence_interval
    assert sm["mean_delta"] == pytest.approx(d.mean())
    assert sm["ci_low"] == pytest.approx(ref.low, abs=0.006) and sm["ci_high"] == pytest.approx(ref.high, abs=0.006)
    # the percentile interval of the resampled means, from probes.core.bootstrap_indices
    idx = np.random.default_rng(7).integers(0, 30, (500, 30))
    lo, hi = np.quantile(d[idx].mean(1), [0.05, 0.95])
    s90 = res.effects(n_boot=500, alpha=0.1, seed=7).iloc[0]
    assert (s90["ci_low"], s90["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)
    # three random draws per pair: the pair is the unit (n_pairs 30, mean of per-pair means)
    rnd = pd.concat([_table(d + k - 1, roi="skull", control="random", draw=k) for k in range(3)])
    s2 = PatchingResult(rnd, 1).effects(n_boot=200).iloc[0]
    assert s2["n_pairs"] == 30 and s2["mean_delta"] == pytest.approx(d.mean())
    with pytest.raises(ValueError, match="alpha"):
        res.effects(alpha=0.95 + 0.1)
    with pytest.raises(ValueError, match="n_boot"):
        res.effects(n_boot=0)


def test_result_protocol(resnet18):
    reg = HookRegistry(resnet18)
    g = torch.Generator().manual_seed(8)
    xs, xt = torch.randn(3, 4, 32, 32, generator=g), torch.randn(3, 4, 32, 32, generator=g)
    roi = torch.zeros(3, 32, 32, dtype=torch.bool)
    roi[:, 4:20, 4:20] = True
    res = activation_patching(reg, xs, 1, xt, ["layer2.0.local", "layer3.0.resid"], masks={"sq": roi}, n_samples=2)
    with pytest.raises(FrozenInstanceError):
        res.table = None
    long = res.to_frame()
    assert list(long.columns) == ["pair", "point", "direction", "roi", "control", "draw", "reason", "metric",
                                  "value"]
    assert len(long) == 4 * len(res.table) and set(long.metric) == {"coverage", "p_before", "p_after", "delta"}
    wide = long.pivot_table(index=["pair", "point", "direction", "roi", "control", "draw"], columns="metric",
                            values="value")
    t = res.table.set_index(["pair", "point", "direction", "roi", "control", "draw"]).sort_index()
    np.testing.assert_array_equal(wide.sort_index()["delta"].to_numpy(), t["delta"].to_numpy())
    long.loc[0, "value"] = 99.0  # a copy
    assert res.to_frame().loc[0, "value"] != 99.0
    tabs = res.tables()
    assert set(tabs) == {"patching", "effects"}
    eff = res.effects()
    assert len(tabs["effects"]) == len(eff) * 7 and list(tabs["effects"].columns[-2:]) == ["metric", "value"]
    text = res.summary()
    assert type(text).__name__ == "Summary" and "mean_delta" in text and "<table" in text._repr_html_()
    # one class per pair: each row reads its own pair's class
    per_pair = activation_patching(reg, xs, [1, 0, 1], xt, "layer2.0.local", directions=(XB,)).table
    p0 = activation_patching(reg, xs, 0, xt, "layer2.0.local", directions=(XB,)).table
    p1 = activation_patching(reg, xs, 1, xt, "layer2.0.local", directions=(XB,)).table
    np.testing.assert_array_equal(per_pair["p_after"], np.where([True, False, True], p1["p_after"], p0["p_after"]))


class _ChannelsLastSoftmax(torch.nn.Module):
    """The same network fed (N, H, W, C) and returning probabilities, as declared."""

    medaudit_interface = ModelInterface(input_layout="channels_last", output="probabilities")

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return torch.softmax(self.net(x.movedim(-1, 1)), dim=1)


def test_declared_interface_and_output_override(resnet18):
    """A channels-last probability model gives the numbers of the same network fed channels-first."""
    g = torch.Generator().manual_seed(9)
    xs, xt = torch.randn(3, 4, 32, 32, generator=g), torch.randn(3, 4, 32, 32, generator=g)
    roi = torch.zeros(3, 32, 32, dtype=torch.bool)
    roi[:, 2:9, :] = True
    ref = activation_patching(resnet18, xs, 1, xt, ["layer1.0.local", "layer3.1.resid"], masks={"r": roi}, n_samples=1)
    wrapped = _ChannelsLastSoftmax(resnet18).eval()
    snap = ModelSnapshot.take(wrapped)
    got = activation_patching(wrapped, xs, 1, xt, ["net.layer1.0.local", "net.layer3.1.resid"], masks={"r": roi},
                              n_samples=1)
    assert snap.diff(wrapped) == []
    np.testing.assert_allclose(got.table[["p_before", "p_after", "delta"]], ref.table[["p_before", "p_after", "delta"]],
                               atol=1e-6)
    np.testing.assert_array_equal(got.table["coverage"], ref.table["coverage"])
    # output= overrides the interface: a callable gives the probabilities itself
    snap = ModelSnapshot.take(resnet18)
    half = activation_patching(resnet18, xs, 1, xt, "layer1.0.local", directions=(XB,),
                               output=lambda out: torch.softmax(out.double() / 2, dim=1)).table
    assert snap.diff(resnet18) == []
    with torch.no_grad():
        want = torch.softmax(resnet18(xt).double() / 2, dim=1)[:, 1]
    np.testing.assert_allclose(half["p_before"], want.numpy(), atol=1e-12)


def test_bad_inputs_raise_clear_errors(resnet18):
    reg = HookRegistry(resnet18)
    x = torch.randn(2, 4, 32, 32)
    snap = ModelSnapshot.take(resnet18)
    with pytest.raises(ValueError, match="same shape"):
        activation_patching(reg, x, 1, x[:1])
    with pytest.raises(KeyError, match="layer9"):
        activation_patching(reg, x, 1, x, "layer9.0.local")
    with pytest.raises(ValueError, match=r"target \[2\] out of range"):
        activation_patching(reg, x, 2, x, "layer1.0.local")
    with pytest.raises(ValueError, match="integer class"):
        activation_patching(reg, x, 1.0, x, "layer1.0.local")
    with pytest.raises(ValueError, match=r"masks\['roi'\] shape \(2, 16, 16\)"):
        activation_patching(reg, x, 1, x, "layer1.0.local", masks={"roi": torch.ones(2, 16, 16)})
    with pytest.raises(ValueError, match="0/1"):
        activation_patching(reg, x, 1, x, "layer1.0.local", masks={"roi": torch.full((2, 32, 32), 0.5)})
    with pytest.raises(ValueError, match="mapping"):
        activation_patching(reg, x, 1, x, "layer1.0.local", masks=torch.ones(2, 32, 32))
    with pytest.raises(ValueError, match="'fc' has no spatial dims"):
        activation_patching(reg, x, 1, x, "fc", masks={"roi": torch.ones(2, 32, 32)})
    with pytest.raises(ValueError, match="roi_from"):
        activation_patching(reg, x, 1, x, "layer1.0.local", masks={"roi": torch.ones(2, 32, 32)}, roi_from="src")
    with pytest.raises(ValueError, match="roi_threshold"):
        activation_patching(reg, x, 1, x, "layer1.0.local", masks={"roi": torch.ones(2, 32, 32)}, roi_threshold=1)
    with pytest.raises(ValueError, match="directions"):
        activation_patching(reg, x, 1, x, "layer1.0.local", directions=("s->t",))
    with pytest.raises(ValueError, match="n_samples"):
        activation_patching(reg, x, 1, x, "layer1.0.local", masks={"roi": torch.ones(2, 32, 32)}, n_samples=0)
    with pytest.warns(UndefinedValueWarning, match="nothing grafted"):   # an empty ROI measures nothing
        e = activation_patching(reg, x, 1, x.flip(0), "layer1.0.local", masks={"roi": torch.zeros(2, 32, 32)},
                                controls=()).table
    assert e["delta"].isna().all() and (e["coverage"] == 0).all() and e["reason"].str.contains("empty").all()
    assert snap.diff(resnet18) == []
