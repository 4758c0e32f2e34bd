"""Clinical-XAI truthfulness suite (Jin et al. 2023, G3/G4/G5): probes/metrics/truthfulness.py.

Statistics are checked against scipy and closed forms; the orchestrator runs once (module
fixture) on a small subset of the lesion model's test split, with a brute-force per-case
contrast Shapley vector computed here (2^4 channel subsets, absent contrast = 0).
"""

from __future__ import annotations

import itertools
import math
import time
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from probes.attribution.methods import attribute
from probes.hooks.registry import HookRegistry
from probes.attribution.gradcam import layer_gradcam
from probes.core.model import ModelSnapshot
from probes.core.result import Summary
from probes.core.validate import as_maps
from probes.metrics.faithfulness import delta_aupc
from probes.metrics.truthfulness import (IDENTICAL_MAP, ContrastCorrelation, PlausibilityTests, Thresholds,
                                         TruthfulnessReport, contrast_importance_correlation, evaluate_methods,
                                         map_contrast_importance, mean_with_ci, plausibility_tests)


# ----------------------------------------------------------------------------- G3: τ-b
def test_tau_b_equals_closed_form_and_scipy():
    mi = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 2.0, 3.0], [4.0, 3.0, 2.0, 1.0]])
    shap = np.array([[1.0, 2.0, 4.0, 3.0], [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    # random signed maps: τ-b equals scipy's on Σ max(a, 0) per channel
    maps = np.random.default_rng(0).normal(size=(3, 4, 6, 6))
    pos_sum = np.where(maps > 0, maps, 0).reshape(3, 4, -1).sum(-1)
    np.testing.assert_allclose(map_contrast_importance(maps), pos_sum)
    out = contrast_importance_correlation(maps, shap, method="m")
    assert isinstance(out, ContrastCorrelation)
    for i in range(3):
        ref = stats.kendalltau(pos_sum[i], shap[i], variant="b")
        assert out.tau_b[i] == pytest.approx(ref.statistic, abs=1e-12)
        assert out.p_value[i] == pytest.approx(ref.pvalue, abs=1e-12)
    # closed forms: 5 concordant / 1 discordant pair → 4/6; one tie in x, 5 concordant → 5/√(6·5)
    expect = [4 / 6, 5 / math.sqrt(30), 1.0]
    # a hand-made map with exactly the ``mi`` sums gives the closed forms
    exact = np.zeros((3, 4, 2, 2))
    exact[:, :, 0, 0] = mi
    exact[:, :, 1, 1] = -3.0
    hand = contrast_importance_correlation(exact, shap)
    np.testing.assert_allclose(hand.tau_b, expect, atol=1e-12)
    assert hand.reason == ("", "", "") and hand.case_ids == ("0", "1", "2")
    f = hand.to_frame()
    assert list(f.columns) == ["case_id", "method", "reason", "metric", "value"]
    assert f.case_id.tolist()[:2] == ["0", "0"] and f.metric.tolist()[:2] == ["tau_b", "p_value"]
    np.testing.assert_allclose(f[f.metric == "tau_b"].value, expect, atol=1e-12)
    # a cohort vector is used for every case
    cohort = contrast_importance_correlation(exact, shap[0])
    np.testing.assert_allclose(cohort.tau_b, [stats.kendalltau(m, shap[0]).statistic for m in mi])


def test_tau_b_nan_with_reason_for_identical_or_constant_maps():
    rng = np.random.default_rng(1)
    one = rng.random((2, 1, 5, 5))
    shap = np.array([0.4, 0.1, 0.3, 0.2])
    with pytest.warns(UserWarning, match=IDENTICAL_MAP):
        out = contrast_importance_correlation(one, shap)  # a one-channel map (Grad-CAM)
    assert np.isnan(out.tau_b).all() and out.reason == (IDENTICAL_MAP, IDENTICAL_MAP)
    same = np.repeat(one, 4, axis=1)  # broadcast to the contrasts
    varied = rng.random((1, 4, 5, 5))
    with pytest.warns(UserWarning, match="1 of 3 cases"):
        out = contrast_importance_correlation(np.concatenate([same[:1], varied, varied]), shap)
    assert list(out.reason) == [IDENTICAL_MAP, "", ""] and np.isfinite(out.tau_b[1:]).all()
    with pytest.warns(UserWarning, match="constant contrast importance"):
        out = contrast_importance_correlation(varied, np.ones(4))
    assert np.isnan(out.tau_b[0])


def test_tau_b_bad_input_names_the_argument():
    maps = np.random.default_rng(0).random((2, 4, 3, 3))
    with pytest.raises(ValueError, match=r"shapley shape \(3,\)"):
        contrast_importance_correlation(maps, np.ones(3))
    with pytest.raises(ValueError, match="maps must be"):
        contrast_importance_correlation(np.ones((2, 4)), np.ones(4))
    with pytest.raises(ValueError, match="case_ids"):
        contrast_importance_correlation(maps, np.arange(4.0), case_ids=["a"])


def test_mean_with_ci_is_the_student_t_interval():
    v = np.array([0.1, 0.4, -0.2, 0.3, 0.5, np.nan])
    out = mean_with_ci(v, null=0.05, alpha=0.1)
    w = v[:-1]
    m, se = w.mean(), w.std(ddof=1) / math.sqrt(5)
    q = stats.t.ppf(0.95, 4)
    assert out["value"] == pytest.approx(m) and out["n"] == 5
    assert out["ci_low"] == pytest.approx(m - q * se) and out["ci_high"] == pytest.approx(m + q * se)
    assert out["p_value"] == pytest.approx(stats.t.sf((m - 0.05) / se, 4))
    assert np.isnan(mean_with_ci([0.3])["p_value"]) and "need >= 2" in mean_with_ci([0.3])["reason"]


# ----------------------------------------------------------------------------- G4
def test_plausibility_tests_equal_scipy_per_group():
    rng = np.random.default_rng(3)
    n = 40
    pred = rng.integers(0, 2, n)
    correct = rng.random(n) < 0.7
    ms = rng.random(n) + 0.3 * correct
    prob = 0.5 + 0.5 * rng.random(n)
    ms[5] = np.nan
    res = plausibility_tests(ms, prob, correct, pred, method="m")
    assert isinstance(res, PlausibilityTests)
    out = res.table
    assert set(out.group) == {"all", "predicted=0", "predicted=1"} and len(res) == 6
    for group, sel in (("all", np.ones(n, bool)), ("predicted=0", pred == 0), ("predicted=1", pred == 1)):
        sel = sel & ~np.isnan(ms)
        g = out[out.group == group].set_index("test")
        rho = stats.spearmanr(ms[sel], prob[sel])
        assert g.loc["spearman_msfi_prob", "statistic"] == pytest.approx(rho.statistic)
        assert g.loc["spearman_msfi_prob", "p_value"] == pytest.approx(rho.pvalue)
        c = correct[sel]
        u = stats.mannwhitneyu(ms[sel][c], ms[sel][~c], alternative="greater")
        mw = g.loc["mannwhitney_correct_gt_wrong"]
        assert mw.statistic == pytest.approx(u.statistic) and mw.p_value == pytest.approx(u.pvalue)
        assert mw.effect == pytest.approx(u.statistic / (c.sum() * (~c).sum()))
        assert (mw.n_correct, mw.n_wrong) == (c.sum(), (~c).sum())
    assert "1 case(s) with NaN MSFI dropped" in out.reason.iloc[0]
    # long rows: method, group, test, reason, metric, value
    f = res.to_frame()
    assert list(f.columns) == ["method", "group", "test", "reason", "metric", "value"] and len(f) == 6 * 6
    mw = res.row("all", "mannwhitney_correct_gt_wrong")
    assert f[(f.group == "all") & (f.test == mw.test) & (f.metric == "p_value")].value.item() == mw.p_value


def test_plausibility_without_wrong_predictions_is_nan_with_reason():
    ms = np.linspace(0.1, 0.9, 6)
    out = plausibility_tests(ms, np.linspace(0.6, 0.99, 6), np.ones(6, bool), np.zeros(6, int)).table
    mw = out[out.test == "mannwhitney_correct_gt_wrong"]
    assert mw.p_value.isna().all() and mw.reason.str.contains("0 wrong").all()
    sp = out[(out.test == "spearman_msfi_prob") & (out.group == "all")].iloc[0]
    assert sp.statistic == pytest.approx(1.0)  # both increasing
    with pytest.raises(ValueError, match="probability has shape"):
        plausibility_tests(ms, np.ones(5), np.ones(6, bool), np.zeros(6, int))
    with pytest.raises(ValueError, match="correct must be boolean"):
        plausibility_tests(ms, np.ones(6), np.full(6, 2), np.zeros(6, int))


# ----------------------------------------------------------------------------- lesion model, end to end
N_CASES, STEPS, N_RANDOM = 16, 10, 4


def _shapley_per_case(model, x, target) -> np.ndarray:
    """Exact per-case Shapley values of the 4 contrasts: v(S) = p(target | contrasts ∉ S set to 0)."""
    c = x.shape[1]
    v = {}
    with torch.no_grad():
        for s in itertools.product((0, 1), repeat=c):
            keep = torch.tensor(s, dtype=x.dtype).view(1, c, *([1] * (x.dim() - 2)))
            p = torch.softmax(model(x * keep), 1)
            v[s] = p.gather(1, target[:, None])[:, 0].double().numpy()
    phi = np.zeros((x.shape[0], c))
    for j in range(c):
        for s in v:
            if s[j]:
                continue
            k = sum(s)
            w = math.factorial(k) * math.factorial(c - k - 1) / math.factorial(c)
            phi[:, j] += w * (v[s[:j] + (1,) + s[j + 1:]] - v[s])
    return phi


@pytest.fixture(scope="module")
def lesion_eval(lesion_model):
    model = lesion_model.model
    cases = list(lesion_model.splits["test"])[:N_CASES]
    x = torch.stack([torch.tensor(c.image) for c in cases])
    y = np.array([c.label for c in cases])
    gtv = torch.tensor(np.stack([c.masks["gtv"] for c in cases]), dtype=x.dtype)
    feat = gtv > 0  # MSFI feature ROI: the lesion, shared by all contrasts (weighted by Shapley)
    with torch.no_grad():
        pred = model(x).argmax(1)
    shap = _shapley_per_case(model, x, pred)

    def true_map(xb, t):  # the mechanism: lesion on the T1c channel, zeros elsewhere
        m = torch.zeros_like(xb)  # xb is x or its first case (the untimed warm-up)
        m[:, 1] = gtv[:xb.shape[0]]
        return m

    def random_map(xb, t):
        return torch.rand(xb.shape, generator=torch.Generator().manual_seed(123))

    reg = HookRegistry(model)
    methods = {
        "true_mechanism": true_map,
        "random": random_map,
        "gradient": lambda xb, t: attribute(model, xb, t, "gradient"),
        "gradcam": lambda xb, t: layer_gradcam(reg, xb, t, points=["layer3.1.resid"])["layer3.1.resid"],
    }
    snap = ModelSnapshot.take(model)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = evaluate_methods(model, x, labels=y, methods=methods, mask=feat, shapley=shap, n_samples=N_RANDOM,
                               steps=STEPS, seed=0, baseline="blur", case_ids=[c.case_id for c in cases])
    print(f"evaluate_methods: {time.perf_counter() - t0:.1f} s")
    return rep, snap.diff(model), shap, pred.numpy(), y, (model, x)


def test_orchestrator_table_one_row_per_method_and_criterion(lesion_eval):
    rep, diff, shap, pred, y, (model, x) = lesion_eval
    assert diff == []  # the model is left exactly as found
    names = ["true_mechanism", "random", "gradient", "gradcam"]
    crit = rep.criteria
    assert len(crit) == 4 * 3 and sorted(crit.groupby(["method", "criterion"]).size().index) == \
        sorted(itertools.product(names, ["G3", "G4", "G5"]))
    # Grad-CAM is one map for all contrasts: τ undefined, G3 fails with that reason
    g = crit.set_index(["method", "criterion"])
    assert not g.loc[("gradcam", "G3"), "passes"] and IDENTICAL_MAP in g.loc[("gradcam", "G3"), "reason"]
    tau = rep.per_case[(rep.per_case.method == "gradcam") & (rep.per_case.metric == "tau_b")]
    assert tau.value.isna().all() and (tau.reason == IDENTICAL_MAP).all()
    # per-case τ of the gradient map equals scipy's on the map's positive sums
    grad_tau = rep.per_case[(rep.per_case.method == "gradient") & (rep.per_case.metric == "tau_b")].value
    g_map = as_maps(attribute(model, x, torch.as_tensor(pred), "gradient")).numpy()
    pos = np.clip(g_map, 0, None).reshape(N_CASES, 4, -1).sum(-1)
    ref = [stats.kendalltau(pos[i], shap[i], variant="b").statistic for i in range(N_CASES)]
    np.testing.assert_allclose(grad_tau.to_numpy(), ref, atol=1e-9)
    # G4 numbers equal the plausibility table, which equals scipy (tested above)
    ms = rep.per_case[(rep.per_case.method == "gradient") & (rep.per_case.metric == "msfi")].value.to_numpy()
    correct = pred == y
    ok = ~np.isnan(ms)
    if (~correct[ok]).sum() >= 2:
        u = stats.mannwhitneyu(ms[ok & correct], ms[ok & ~correct], alternative="greater")
        m = rep.metrics.set_index(["method", "metric"]).loc[("gradient", "mannwhitney_effect")]
        assert m.p_value == pytest.approx(u.pvalue)
    # G5: a positive time per map for every method
    secs = rep.metrics[rep.metrics.metric == "seconds_per_map"]
    assert (secs.value > 0).all() and len(secs) == 4
    s = rep.summary()
    assert isinstance(s, Summary) and "G3" in s and "true_mechanism" in s and "PASS" in s
    print(s)


def test_true_mechanism_beats_random_baseline_and_random_map_is_near_zero(lesion_eval):
    rep = lesion_eval[0]
    pc = rep.per_case

    def vals(method, metric):
        return pc[(pc.method == method) & (pc.metric == metric)].value.to_numpy()

    d_true, d_rand = vals("true_mechanism", "delta_aupc"), vals("random", "delta_aupc")
    sd = vals("random", "aupc_random_std")
    # a random map is one more random ordering: its ΔAUPC has sd ≈ σ·√(1 + 1/n_random) per case,
    # so the cohort mean has SE ≈ √(mean σ²·(1 + 1/n_random) / N); allow 3 SE.
    se = math.sqrt(np.mean(sd ** 2) * (1 + 1 / N_RANDOM) / N_CASES)
    print(f"ΔAUPC true {d_true.mean():.4f} (min {d_true.min():.4f}), random map {d_rand.mean():.4f}, SE {se:.4f}")
    assert abs(d_rand.mean()) < 3 * se
    # Measured (16 cases, blur baseline): true 0.032 vs SE 0.0038 (8.5 SE); random map -0.002.
    # The ceiling is low: blurring the T1c lesion alone already drops p to the all-blurred floor
    # (0.85 → 0.56), and random deletion of 10% of the features already removes much of the shape.
    assert d_true.mean() > 5 * se  # a wide margin over the random baseline's own spread
    m = rep.metrics.set_index(["method", "metric"])
    assert m.loc[("true_mechanism", "delta_aupc_mean"), "passes"]
    assert not m.loc[("random", "delta_aupc_mean"), "passes"]


def test_report_follows_the_result_protocol(lesion_eval, lesion_model):
    rep = lesion_eval[0]
    assert isinstance(rep, TruthfulnessReport)
    f = rep.to_frame()
    assert list(f.columns) == ["method", "criterion", "stat", "reason", "metric", "value"]
    assert f.value.dtype == np.float64
    # one row per method × metric × stat that applies (a NaN always has its reason); the
    # estimates are the metrics table's values
    assert len(f) <= len(rep.metrics) * 7 and (f.value.notna() | (f.reason != "")).all()
    t = f[(f.method == "gradient") & (f.metric == "seconds_per_map")]
    assert t.stat.tolist() == ["value", "n", "threshold", "passes"]  # no CI for a time
    est = f[f.stat == "value"].set_index(["method", "metric"]).value
    wide = rep.metrics.set_index(["method", "metric"]).value
    np.testing.assert_array_equal(est.loc[wide.index].to_numpy(), wide.to_numpy())
    passes = f[(f.stat == "passes") & (f.metric == "seconds_per_map")].value
    assert set(passes) <= {0.0, 1.0}
    tables = rep.tables()
    assert list(tables) == ["metrics", "criteria", "per_case", "plausibility"]
    crit = tables["criteria"]
    assert list(crit.columns) == ["method", "criterion", "reason", "metric", "value"] and len(crit) == 12
    g3 = crit.set_index(["method", "criterion"]).value
    assert g3[("gradcam", "G3")] == 0.0
    # per-case rows carry the cases' own ids, as str
    ids = [str(c.case_id) for c in list(lesion_model.splits["test"])[:N_CASES]]
    per = tables["per_case"]
    assert list(per.columns) == ["case_id", "method", "reason", "metric", "value"]
    assert per[(per.method == "gradient") & (per.metric == "msfi")].case_id.tolist() == ids
    assert list(tables["plausibility"].columns) == ["method", "group", "test", "reason", "metric", "value"]
    assert "<table" in rep._repr_html_()


def test_explicit_target_is_explained_and_deleted(lesion_model):
    model = lesion_model.model
    cases = list(lesion_model.splits["test"])[:4]
    x = torch.stack([torch.tensor(c.image) for c in cases])
    with torch.no_grad():
        pred = model(x).argmax(1)
    seen = []

    def explain(xb, t):
        seen.append(t.clone())
        m = torch.zeros_like(xb)
        m[:, 1] = xb[:, 1]
        return m

    kw = dict(labels=[c.label for c in cases], methods={"t1c": explain}, mask=np.ones((4, 96, 96), bool),
              shapley=np.array([0.1, 0.4, 0.2, 0.3]), steps=2, n_samples=2, warmup=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = 1 - pred
        rep = evaluate_methods(model, x, other, **kw)
        assert torch.equal(seen[-1], other)
        ref = delta_aupc(model, x, other, explain(x, other), steps=2, n_samples=2)
        got = rep.per_case[(rep.per_case.method == "t1c") & (rep.per_case.metric == "delta_aupc")].value
        np.testing.assert_allclose(got.to_numpy(), ref.delta_aupc, rtol=0, atol=0)
        evaluate_methods(model, x, **kw)  # default: the predicted class
        assert torch.equal(seen[-1], pred)


def test_orchestrator_bad_input(lesion_model):
    model = lesion_model.model
    x = torch.stack([torch.tensor(c.image) for c in list(lesion_model.splits["test"])[:2]])
    ok = {"g": lambda xb, t: torch.ones(xb.shape[0], 2, *xb.shape[2:])}
    mask = np.zeros((2, 96, 96))
    with pytest.raises(ValueError, match="shapley shape"):
        evaluate_methods(model, x, labels=[0, 1], methods=ok, mask=mask, shapley=np.ones(3))
    with pytest.raises(ValueError, match="labels has 3 entries for 2 cases"):
        evaluate_methods(model, x, labels=[0, 1, 1], methods=ok, mask=mask, shapley=np.ones(4))
    with pytest.raises(ValueError, match=r"maps of method 'g' shape \(2, 2, 96, 96\) does not fit x shape"):
        evaluate_methods(model, x, labels=[0, 1], methods=ok, mask=mask, shapley=np.ones(4), steps=1, n_samples=1)
    with pytest.raises(TypeError):
        evaluate_methods(model, x, [0, 1], mask, np.ones(4), ok)  # only target may be positional
    with pytest.raises(ValueError, match=r"importance shape \(3,\)"):
        evaluate_methods(model, x, labels=[0, 1], methods=ok, mask=mask, shapley=np.ones(4), importance=np.ones(3))
    with pytest.raises(ValueError, match="alpha"):
        Thresholds(alpha=1.5)
