"""Linear probes: AUC profile on the lesion model, anti-leakage protocol, caching, 3D."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader

from probes import HookRegistry, ModelSnapshot
from probes.core.errors import UndefinedValueWarning
from probes.internals.linear import extract_features, fit_linear_probes, split_by_group

SPLIT = (0.5, 0.2, 0.3)


@pytest.fixture(scope="module")
def lesion_probe(lesion_model, tmp_path_factory):
    """600 slices unseen in training: the model's val+test cases plus 240 fresh patients."""
    from audit.data.cohort import Cohort, collate
    from audit.synthetic import make_cohort

    extra = make_cohort(lesion_model.cfg, n_cases=240, seed=lesion_model.cfg.seed + 100)
    cohort = Cohort([*lesion_model.splits["val"], *lesion_model.splits["test"], *extra])
    model = lesion_model.model
    reg = HookRegistry(model)
    points = ["act1"] + [f"{b}.resid" for b in reg.blocks]
    loader = DataLoader(cohort.as_dataset(mask_names=()), batch_size=100, collate_fn=collate)
    folder = tmp_path_factory.mktemp("features")
    snap = ModelSnapshot.take(model)
    fs = extract_features(model, loader, points, cache_dir=folder)
    changes = snap.diff(model)
    # second call: loaded from disk, the model must not run (counting hook on the root)
    calls = []
    h = model.register_forward_hook(lambda m, a, o: calls.append(1))
    try:
        fs2 = extract_features(reg, loader, points, cache_dir=folder)
    finally:
        h.remove()
    res = fit_linear_probes(fs, split=SPLIT, seed=0)
    return dict(fs=fs, fs2=fs2, calls=len(calls), changes=changes, res=res, points=points,
                cohort=cohort, folder=folder, reg=reg)


def test_features_streamed_cached_and_model_untouched(lesion_probe):
    fs, fs2, cohort = lesion_probe["fs"], lesion_probe["fs2"], lesion_probe["cohort"]
    assert lesion_probe["changes"] == []
    assert fs.n == len(cohort) == 600
    assert list(fs.case_ids) == cohort.case_ids and list(fs.groups) == cohort.patient_ids
    assert list(fs.labels) == cohort.labels
    assert fs["layer4.1.resid"].shape == (600, 128) and fs["layer1.0.resid"].shape == (600, 16)
    assert lesion_probe["calls"] == 0  # the cache was used, the model did not run
    for p in lesion_probe["points"]:
        np.testing.assert_array_equal(fs[p], fs2[p])
    assert list(fs2.case_ids) == list(fs.case_ids) and list(fs2.labels) == list(fs.labels)
    assert (lesion_probe["folder"] / "manifest.parquet").exists()
    # GAP against a direct computation on the first 3 cases
    x = torch.stack([c.to_tensor() for c in list(cohort)[:3]])
    _, cache = lesion_probe["reg"].run_with_cache(x, points=["layer2.0.resid"])
    np.testing.assert_allclose(fs["layer2.0.resid"][:3], cache["layer2.0.resid"].mean((2, 3)).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_probe_auc_profile_and_control(lesion_probe):
    """Shape on T1c is the only mechanism: near chance at the stem, ≥ 0.9 at the last block.

    Lesion irregularity is a local boundary texture, so the first residual block already
    separates much of it; only the stem is near chance. How much the AUC still rises after the
    first block depends on the training run, so it is not asserted here (the ground truth for
    "the decision forms late" is a relational mechanism, not this texture).

    Measured over training seeds 0/1/2 × 1 and 2 torch threads (15-epoch models, val AUC
    0.96–0.99; probe split seed 0): stem ``act1`` 0.52–0.70, ``layer1.0`` 0.80–0.91,
    ``layer4.1`` 0.94–0.98, last − stem 0.25–0.46, control |AUC − 0.5| ≤ 0.11, selectivity
    after the stem ≥ 0.38. Seed 0 with 2 threads (the suite's own run): stem 0.52, last 0.98.
    """
    res = lesion_probe["res"]
    w = res.wide().set_index(["point", "task"])
    real, ctrl = w.xs("real", level="task"), w.xs("control", level="task")
    print(res.summary())
    assert real.loc["act1", "test_auc"] < 0.7             # stem, before any block
    assert real.loc["layer4.1.resid", "test_auc"] >= 0.9   # the required bar at the last block
    assert real.loc["layer4.1.resid", "test_auc"] - real.loc["act1", "test_auc"] >= 0.25
    assert (ctrl["test_auc"] - 0.5).abs().max() <= 0.12    # shuffled labels stay at chance everywhere
    sel = res.selectivity().set_index("point")["selectivity"]
    assert (sel.drop("act1") > 0.25).all()
    t = res.table
    n = t[(t.metric == "n_patients") & (t.point == "act1") & (t.task == "real")].set_index("split")["value"]
    assert n.to_dict() == {"train": 300, "val": 120, "test": 180}


def test_probe_metrics_match_sklearn_refit(lesion_probe):
    """Independent refit with sklearn from the recorded assignment: C choice and test metrics."""
    fs, res = lesion_probe["fs"], lesion_probe["res"]
    a = res.assignment
    tr, va, te = ((a.split == s).to_numpy() for s in ("train", "val", "test"))
    y = a.label.to_numpy()
    point = "layer3.1.resid"
    X = fs[point].astype(np.float64)
    sc = StandardScaler().fit(X[tr])
    losses = {}
    limit = threadpool_limits(limits=1)  # tiny fits: BLAS threads only oversubscribe 2 cores
    for C in sorted(set(res.val_curve.C)):
        clf = LogisticRegression(C=C, max_iter=2000).fit(sc.transform(X[tr]), y[tr])
        losses[C] = log_loss(y[va], clf.predict_proba(sc.transform(X[va]))[:, 1])
    best = min(losses, key=losses.get)
    row = res.wide().set_index(["point", "task"]).loc[(point, "real")]
    assert row["C"] == best
    clf = LogisticRegression(C=best, max_iter=2000).fit(sc.transform(X[tr]), y[tr])
    p = clf.predict_proba(sc.transform(X[te]))[:, 1]
    assert row["test_auc"] == pytest.approx(roc_auc_score(y[te], p), abs=1e-6)
    assert row["test_cross_entropy"] == pytest.approx(log_loss(y[te], p), abs=1e-4)
    assert row["test_accuracy"] == pytest.approx(((p >= 0.5) == y[te]).mean(), abs=1e-9)
    limit.restore_original_limits()


def _toy(n_pat=60, per=2, d=5, seed=0):
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"p{i}" for i in range(n_pat)], per)
    y = np.repeat(np.arange(n_pat) % 2, per)
    X = rng.normal(size=(len(y), d)) + 0.8 * y[:, None]
    return X, y, groups


def test_test_split_never_used_for_fitting_or_choosing_C():
    """Scrambling test rows (features and labels) leaves C and train/val metrics unchanged."""
    X, y, g = _toy()
    r1 = fit_linear_probes({"p": X}, y, g, split=(0.5, 0.25, 0.25), Cs=[0.01, 0.1, 1, 10], seed=3)
    s = r1.assignment.split.to_numpy()
    assert r1.assignment.groupby("group").split.nunique().max() == 1  # patients never straddle
    X2, y2 = X.copy(), y.copy()
    te = s == "test"
    X2[te] = np.random.default_rng(9).normal(scale=100, size=X2[te].shape)
    y2[te] = 1 - y2[te]
    r2 = fit_linear_probes({"p": X2}, y2, g, split=s, Cs=[0.01, 0.1, 1, 10], seed=3)
    t1, t2 = r1.table.set_index(["task", "split", "metric"]).sort_index(), r2.table.set_index(["task", "split", "metric"]).sort_index()
    for task in ("real",):
        for sp in ("train", "val"):
            np.testing.assert_allclose(t1.loc[(task, sp)].value, t2.loc[(task, sp)].value)
    assert (t1.C == t2.C).all()
    assert t1.loc[("real", "test", "auc"), "value"] != t2.loc[("real", "test", "auc"), "value"]
    # and scrambling val changes nothing on train at a fixed C grid of one value
    X3 = X.copy()
    X3[s == "val"] = 0.0
    r3 = fit_linear_probes({"p": X3}, y, g, split=s, Cs=[1.0], seed=3)
    r4 = fit_linear_probes({"p": X}, y, g, split=s, Cs=[1.0], seed=3)
    a3 = r3.table.set_index(["task", "split", "metric"]).sort_index().loc[("real", "train")].value
    a4 = r4.table.set_index(["task", "split", "metric"]).sort_index().loc[("real", "train")].value
    np.testing.assert_allclose(a3, a4)


def test_leaky_split_raises():
    X, y, g = _toy(n_pat=20)
    s = np.array(["train"] * 20 + ["val"] * 10 + ["test"] * 10, object)
    s[1] = "test"  # patient p0: one slice in train, one in test
    with pytest.raises(ValueError, match="more than one split"):
        fit_linear_probes({"p": X}, y, g, split=s)
    with pytest.raises(ValueError, match="lacks"):
        split_by_group(g, {"p0": "train"})
    with pytest.raises(ValueError, match="split names"):
        split_by_group(g, ["fit"] * len(g))


def test_bad_input_errors():
    X, y, g = _toy(n_pat=20)
    with pytest.raises(ValueError, match="0/1"):
        fit_linear_probes({"p": X}, np.where(y == 1, 2, 0), g)
    with pytest.raises(ValueError, match=r"features\['p'\]"):
        fit_linear_probes({"a": X, "p": X[:-1]}, y, g)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_linear_probes({"p": bad}, y, g)
    one = {f"p{i}": ("test" if i in (0, 2) else "val" if i in (1, 4, 5) else "train") for i in range(20)}
    # a test split with one class cannot give an AUC: NaN with its reason, not an error
    with pytest.warns(UndefinedValueWarning, match="'test' has .* class"):
        res = fit_linear_probes({"p": X}, y, g, split=one, Cs=[1.0])
    t = res.to_frame()
    auc_test = t[(t.split == "test") & (t.metric == "auc")]
    assert auc_test.value.isna().all() and auc_test.reason.str.contains("'test' has").all()
    assert t[(t.split == "test") & (t.metric == "accuracy")].value.notna().all()


def test_3d_model_features_and_probes():
    from monai.networks.nets import resnet10

    from probes.internals.geometry import roi_cosine_distances

    torch.manual_seed(0)
    model = resnet10(spatial_dims=3, n_input_channels=4, num_classes=2).eval()
    reg = HookRegistry(model)
    assert reg.blocks, "MONAI ResNet blocks should be found"
    points = [f"{b}.resid" for b in reg.blocks]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 4, 16, 16, 16, generator=g)
    y = torch.arange(24) % 2
    x[y == 1, 1] += 0.5  # class 1 brighter on channel 1
    snap = ModelSnapshot.take(model)
    fs = extract_features(reg, [(x[:12], y[:12]), (x[12:], y[12:])], points)
    assert fs[points[-1]].shape[0] == 24 and list(fs.case_ids) == [str(i) for i in range(24)]
    res = fit_linear_probes(fs, split=(0.5, 0.25, 0.25), Cs=[0.1, 1.0])
    assert set(res.table.point) == set(points)
    masks = {"centre": torch.zeros(4, 16, 16, 16, dtype=torch.bool)}
    masks["centre"][:, 4:12, 4:12, 4:12] = True
    geo = roi_cosine_distances(reg, x[:4], masks, points).to_frame()
    assert len(geo) == 4 * len(points) and geo.value.between(0, 2).all()
    assert snap.diff(model) == []


def test_result_protocol():
    """FeatureSet and ProbeResult: tidy long copies (case_id str), several tables, Summary."""
    g = torch.Generator().manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU(), torch.nn.Conv2d(3, 2, 3)).eval()
    x = torch.randn(6, 2, 8, 8, generator=g)
    batch = {"image": x, "label": torch.tensor([0, 1, 0, 1, 0, 1]), "case_id": [f"c{i}" for i in range(6)],
             "patient_id": ["a", "a", "b", "c", "c", "d"]}
    fs = extract_features(model, [batch], ["0", "1"])
    long = fs.to_frame()
    assert list(long.columns) == ["case_id", "group", "label", "point", "channel", "metric", "value"]
    assert long.case_id.map(type).eq(str).all() and len(long) == 2 * 6 * 3
    row = long[(long.case_id == "c4") & (long.point == "1") & (long.channel == 2)]
    assert row.value.item() == pytest.approx(float(fs["1"][4, 2]))
    assert row.group.item() == "c" and row.label.item() == 0
    long.loc[0, "value"] = 99.0
    assert fs.to_frame().loc[0, "value"] != 99.0  # a copy
    assert list(fs.manifest().columns) == ["row", "case_id", "label", "group"]
    assert "6 cases from 4 groups" in fs.summary()

    X, y, grp = _toy(n_pat=40)
    res = fit_linear_probes({"p": X, "q": X[:, :2]}, y, grp, split=(0.5, 0.25, 0.25), Cs=[0.1, 1.0],
                            case_ids=[f"s{i}" for i in range(len(y))])
    frame = res.to_frame()
    assert list(frame.columns) == ["point", "task", "split", "C", "reason", "metric", "value"]
    pd.testing.assert_frame_equal(frame[["point", "task", "split", "metric", "value"]],
                                  res.table[["point", "task", "split", "metric", "value"]])
    tabs = res.tables()
    assert set(tabs) == {"probes", "assignment", "val_curve"}
    a = tabs["assignment"]
    assert list(a.columns) == ["case_id", "group", "split", "metric", "value"] and a.case_id.iloc[0] == "s0"
    assert set(a.metric) == {"label", "control_label"} and len(tabs["val_curve"]) == 2 * 2 * 2 * 3
    text = res.summary()
    assert type(text).__name__ == "Summary" and "selectivity" in text and "split sizes" in text
    sel = res.selectivity().set_index("point")["selectivity"]
    assert f"{sel['q']:.4g}" in text
