"""Activation patching (issue 6, part 2): pairs, both directions, ROI-masked grafts, summary.

Truth test on the planted skull marker (``marker_model``: q1=1, q0=0, lesion shapes
uninformative, marker inside the ``skull`` mask; 33 pairs of test cases at p ≥ 0.9). Measured
s->t Δp(class 1), mean over pairs, donor ROI (generator v2, 2026-11-23):

=============  =====  =====  =====  =====  =====  =====  =====  =====
``.local``     l1.0   l1.1   l2.0   l2.1   l3.0   l3.1   l4.0   l4.1
=============  =====  =====  =====  =====  =====  =====  =====  =====
full           0.00   0.01   0.01   0.30   0.61   0.61   0.09   0.05
skull          0.00   0.01   0.01   0.08   0.27   0.26   0.09   0.05
gtv            0.00   0.00   0.00   0.01   0.14   0.10   0.04   0.03
=============  =====  =====  =====  =====  =====  =====  =====  =====

(t->s, full: −0.29 at layer3.0, −0.15 at layer3.1, −0.11 at layer2.1 — the seed's asymmetry.)
Grafting the branch output ``.local`` moves p(1) by ≥ 0.3 at layer3.0/3.1, but that effect is
*not local*: f(x)'s two 3×3 convs spread the marker's evidence over neighbouring cells, and at
4×4 (layer3) a random ROI of the skull's size keeps 0.41 (skull 0.27, gtv 0.14, CIs overlap).
What is asserted for ``.local``: a ≥ 0.3 block exists, the reverse direction lowers p(1) there,
the forward effect is the larger, and skull keeps more than gtv (point estimates).

The residual stream localises the mechanism: ``layer1.1.resid`` (16×16), s->t: full 0.969;
skull 0.787 (CI 0.68–0.88); skull complement 0.34; random ROI of the skull's size 0.27 (CI
0.18–0.37); gtv 0.013 (CI 0.00–0.03). Asserted: skull CI low ≥ 0.5 × full, gtv CI high ≤
0.25 × full, random CI high < skull CI low.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import bootstrap
from skimage.measure import block_reduce

from probes import HookRegistry, ModelSnapshot
from probes.hooks.registry import ANCHORS
from probes.internals.patching import activation_patching, resize_roi, select_pairs, summarize_patching


# --------------------------------------------------------------------------- marker model
@pytest.fixture(scope="module")
def marker_pairs(marker_model):
    from audit.training import predict_proba

    test = marker_model.splits["test"]
    probs = predict_proba(marker_model.model, test)
    pairs = select_pairs(probs, np.asarray(test.labels), min_confidence=0.9)
    s, t = pairs["source"].to_numpy(), pairs["target"].to_numpy()
    x = torch.stack([torch.from_numpy(np.array(c.image)) for c in test])
    m = {k: np.stack([c.masks[k] for c in test]) for k in ("skull", "gtv")}
    rois = {k: (v[s], v[t]) for k, v in m.items()}
    return HookRegistry(marker_model.model), x[s], x[t], rois, pairs


def test_marker_local_patching_transfers_class_and_skull_beats_gtv(marker_pairs):
    reg, xs, xt, rois, pairs = marker_pairs
    assert len(pairs) >= 25  # 34 measured
    snap = ModelSnapshot.take(reg.model)
    df = activation_patching(reg, xs, xt, target_class=1)  # every block's .local, both directions
    assert snap.diff(reg.model) == []
    assert set(df["point"]) == {f"{b}.local" for b in reg.blocks} and set(df["roi"]) == {"full"}
    sm = summarize_patching(df).set_index(["point", "direction"])
    fwd = sm.xs("s->t", level="direction")["mean_delta"]
    strong = [p for p in fwd.index if fwd[p] >= 0.3]
    assert strong, fwd.round(3).to_dict()
    for p in strong:  # reverse graft (class-0 donor into class-1 case) lowers p(1)
        assert sm.loc[(p, "t->s"), "mean_delta"] < 0
    # seed-style asymmetry: the forward effect is larger than the reverse one
    assert max(fwd[p] for p in strong) > max(-sm.loc[(p, "t->s"), "mean_delta"] for p in strong)
    first = strong[0]
    roi = activation_patching(reg, xs, xt, first, target_class=1, mask=rois, controls=(), directions=("s->t",))
    r = summarize_patching(roi).set_index("roi")
    assert r.loc["skull", "mean_delta"] > r.loc["gtv", "mean_delta"], r.round(3)
    assert r.loc["gtv", "mean_delta"] < 0.25 * fwd[first]


def test_marker_residual_stream_skull_roi_keeps_the_effect_gtv_and_random_do_not(marker_pairs):
    reg, xs, xt, rois, _ = marker_pairs
    df = activation_patching(reg, xs, xt, "layer1.1.resid", target_class=1, mask=rois, n_random=3,
                             directions=("s->t",), seed=1)
    sm = summarize_patching(df).set_index(["roi", "control"])
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
    same = activation_patching(reg, x, x, anchors + modules, target_class=1, directions=("s->t",))
    assert len(same) == 2 * (len(anchors) + len(modules))
    assert same["delta"].abs().max() <= 1e-6
    # masked self-patching too (random ROI, its controls), at the anchors of three blocks
    roi = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(3)) > 0.7
    few = [p for p in anchors if p.split(".")[0] + "." + p.split(".")[1] in ("layer1.0", "layer2.0", "layer4.1")]
    masked = activation_patching(reg, x, x, few, target_class=0, mask=roi, n_random=1,
                                 controls=("complement", "random"))
    assert masked["delta"].abs().max() <= 1e-6
    assert snap.diff(resnet18) == []
    # ...while grafting another input at the same points does change the output (not vacuous)
    other = activation_patching(reg, x, x.flip(0), anchors, target_class=1, directions=("s->t",))
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
    df = activation_patching(reg, xs, xt, points, target_class=1, mask={"band": (rs, rt)}, roi_from="union",
                             controls=("full", "complement"), batch_size=4)  # 6 rows: chunks of 4 + 2
    for i in range(3):
        for d, (donor, recip) in {"s->t": (xs[i:i + 1], xt[i:i + 1]), "t->s": (xt[i:i + 1], xs[i:i + 1])}.items():
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
    same = activation_patching(reg, xs, xs, target_class=1, mask=roi, n_random=1, directions=("s->t",))
    assert same["delta"].abs().max() <= 1e-6
    df = activation_patching(reg, xs, xt, target_class=1, mask=roi, n_random=1)
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
def test_resize_roi_keeps_a_thin_ring_and_matches_block_max():
    ring = np.zeros((64, 64), bool)
    ring[5, 5:59] = ring[58, 5:59] = ring[5:59, 5] = ring[5:59, 58] = True  # 1-px square ring
    t = torch.from_numpy(ring)[None, None]
    for size in (16, 8, 4, 2):
        got = resize_roi(t, (size, size))[0, 0].numpy()
        want = block_reduce(ring, (64 // size, 64 // size), np.max)  # any overlap
        np.testing.assert_array_equal(got, want)
        assert got.any()
    # at threshold 0.5 (majority of the cell) a 1-px ring vanishes: why the default is 0
    assert not resize_roi(t, (8, 8), threshold=0.5).any()
    # non-divisible sizes: cell fraction = adaptive average pooling
    frac = F.adaptive_avg_pool2d(t.float(), (5, 7))
    np.testing.assert_array_equal(resize_roi(t, (5, 7), 0.2).numpy(), (frac > 0.2).numpy())


def test_select_pairs_protocol():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(0.5 + (y - 0.5) * rng.uniform(-0.4, 1.0, 200), 0, 1)  # some misclassified
    pairs = select_pairs(p1, y, min_confidence=0.8)
    probs = np.stack([1 - p1, p1], 1)
    n_src = int(((y == 1) & (p1 >= 0.8)).sum())
    n_tgt = int(((y == 0) & (1 - p1 >= 0.8)).sum())
    assert len(pairs) == min(n_src, n_tgt) > 0
    assert (y[pairs["source"]] == 1).all() and (y[pairs["target"]] == 0).all()
    assert (probs[pairs["source"], 1] >= 0.8).all() and (probs[pairs["target"], 0] >= 0.8).all()
    assert pairs["p_source"].is_monotonic_decreasing and pairs["p_target"].is_monotonic_decreasing
    # the most confident eligible cases are the ones used
    assert pairs["p_source"].min() >= np.sort(p1[(y == 1)])[::-1][len(pairs) - 1]
    pd.testing.assert_frame_equal(pairs, select_pairs(probs, y, min_confidence=0.8))  # (N,K) == (N,)
    assert len(select_pairs(p1, y, min_confidence=0.8, n_pairs=5)) == 5
    with pytest.raises(ValueError, match="labels"):
        select_pairs(p1, y[:-1])
    with pytest.raises(ValueError, match="source_label"):
        select_pairs(p1, y, source_label=2)
    with pytest.raises(ValueError, match="min_confidence"):
        select_pairs(p1, y, min_confidence=0)
    with pytest.raises(ValueError, match="NaN"):
        select_pairs(np.r_[p1[:-1], np.nan], y)
    with pytest.warns(UserWarning, match="no pair"):
        assert len(select_pairs(p1, np.ones(200, int))) == 0


def test_summary_bootstrap_matches_scipy_and_averages_random_draws():
    rng = np.random.default_rng(1)
    d = rng.normal(0.3, 0.2, 30)
    df = pd.DataFrame({"pair": np.arange(30), "point": "p", "direction": "s->t", "delta": d})
    sm = summarize_patching(df, n_boot=20000, seed=0).iloc[0]
    ref = bootstrap((d,), np.mean, n_resamples=20000, method="percentile", random_state=0).confidence_interval
    assert sm["mean_delta"] == pytest.approx(d.mean())
    assert sm["ci_low"] == pytest.approx(ref.low, abs=0.006) and sm["ci_high"] == pytest.approx(ref.high, abs=0.006)
    # three random draws per pair: the pair is the unit (n_pairs 30, mean of per-pair means)
    rnd = pd.concat([df.assign(roi="skull", control="random", draw=k, delta=d + k - 1) for k in range(3)])
    s2 = summarize_patching(rnd, n_boot=200).iloc[0]
    assert s2["n_pairs"] == 30 and s2["mean_delta"] == pytest.approx(d.mean())
    with pytest.raises(ValueError, match="columns"):
        summarize_patching(df.drop(columns="delta"))


def test_bad_inputs_raise_clear_errors(resnet18):
    reg = HookRegistry(resnet18)
    x = torch.randn(2, 4, 32, 32)
    snap = ModelSnapshot.take(resnet18)
    with pytest.raises(ValueError, match="same shape"):
        activation_patching(reg, x, x[:1], target_class=1)
    with pytest.raises(KeyError, match="layer9"):
        activation_patching(reg, x, x, "layer9.0.local", target_class=1)
    with pytest.raises(ValueError, match="target_class=2"):
        activation_patching(reg, x, x, "layer1.0.local", target_class=2)
    with pytest.raises(ValueError, match=r"mask 'roi' has shape \(2, 16, 16\)"):
        activation_patching(reg, x, x, "layer1.0.local", target_class=1, mask=torch.ones(2, 16, 16))
    with pytest.raises(ValueError, match="0/1"):
        activation_patching(reg, x, x, "layer1.0.local", target_class=1, mask=torch.full((2, 32, 32), 0.5))
    with pytest.raises(ValueError, match="'fc' has no spatial dims"):
        activation_patching(reg, x, x, "fc", target_class=1, mask=torch.ones(2, 32, 32))
    with pytest.raises(ValueError, match="roi_from"):
        activation_patching(reg, x, x, "layer1.0.local", target_class=1, mask=torch.ones(2, 32, 32), roi_from="src")
    with pytest.raises(ValueError, match="directions"):
        activation_patching(reg, x, x, "layer1.0.local", target_class=1, directions=("1->0",))
    with pytest.warns(UserWarning, match="empty for pair"):
        e = activation_patching(reg, x, x.flip(0), "layer1.0.local", target_class=1,
                                mask=torch.zeros(2, 32, 32), controls=())
    assert (e["delta"] == 0).all() and (e["coverage"] == 0).all()
    assert snap.diff(resnet18) == []
