"""ROC per phase/reader, calibration and decision curves (audit.readers.roc, .calibration, .decision)."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.special import expit, logit
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, roc_auc_score, roc_curve

from audit.readers.calibration import (brier_score, calibration_fit, expected_calibration_error, reads_calibration,
                                       reliability_curve)
from audit.readers.decision import decision_curve, net_benefit, reads_decision_curve
from audit.readers.roc import reader_roc, roc_points, vertical_average
from audit.readers.reads import ReadsError
from probes.core.errors import UndefinedValueWarning
from probes.core.stats import bootstrap_indices

from tests.helpers import READERSTUDY_DATA as DATA


@pytest.fixture(scope="module")
def cancer() -> pd.DataFrame:
    return pd.read_csv(DATA / "dcurves_df_cancer_dx.csv")


def _reads(seed: int = 0, n_cases: int = 40) -> pd.DataFrame:
    """3 readers × n cases × 2 phases, 5-point ratings (ties), AI probability per case."""
    rng = np.random.default_rng(seed)
    truth = np.r_[np.ones(n_cases // 2, int), np.zeros(n_cases - n_cases // 2, int)]
    ai = expit(1.5 * (2 * truth - 1) + rng.normal(0, 1.2, n_cases))
    rows = []
    for ph, sep in (("MRI", 0.8), ("MRI+AI", 1.4)):
        for rd in ("r1", "r2", "r3"):
            latent = sep * truth + rng.normal(0, 1, n_cases)
            score = np.digitize(latent, [-0.5, 0.2, 0.8, 1.5]) + 1
            for c in range(n_cases):
                rows.append({"reader": rd, "case": f"c{c}", "truth": truth[c], "phase": ph,
                             "score": float(score[c]), "decision": int(score[c] >= 3), "ai_prob": ai[c]})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------- decision curves
def test_net_benefit_equals_hand_computed_closed_form():
    truth = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    prob = np.array([0.9, 0.6, 0.3, 0.0, 0.7, 0.4, 0.25, 0.1, 0.05, 0.0])
    nb = net_benefit(truth, prob, [0.0, 0.2, 0.5], harm=0.0)
    # p_t = 0: positives are p > 0 (a 0 is never treated): TP = 3, FP = 5 → NB = 0.3 − 0.5·0 = 0.3
    # p_t = 0.2: p ≥ 0.2 → TP = 3 (0.9, 0.6, 0.3), FP = 3 (0.7, 0.4, 0.25): NB = 0.3 − 0.3·0.25 = 0.225
    # p_t = 0.5: TP = 2 (0.9, 0.6), FP = 1 (0.7): NB = 0.2 − 0.1·1 = 0.1
    np.testing.assert_allclose(nb["net_benefit"], [0.3, 0.225, 0.1], atol=1e-15)
    np.testing.assert_allclose(nb["tp_rate"], [0.3, 0.3, 0.2])
    np.testing.assert_allclose(nb["fp_rate"], [0.5, 0.3, 0.1])
    np.testing.assert_allclose(nb["test_pos_rate"], [0.8, 0.6, 0.3])
    harmed = net_benefit(truth, prob, [0.2], harm=0.05)
    assert harmed["net_benefit"].iloc[0] == pytest.approx(0.225 - 0.05, abs=1e-15)
    dc = decision_curve(truth, prob, [0.2, 0.5]).table.set_index(["model", "threshold"])["net_benefit"]
    # treat all: prevalence 0.4 → 0.4 − 0.6·p_t/(1 − p_t); treat none: 0
    assert dc[("all", 0.2)] == pytest.approx(0.4 - 0.6 * 0.25)
    assert dc[("all", 0.5)] == pytest.approx(0.4 - 0.6)
    assert dc[("none", 0.2)] == 0 and dc[("none", 0.5)] == 0


def test_matches_r_dcurves_famhistory(cancer):
    ref = pd.read_csv(DATA / "dcurves_r_dca_famhistory.csv")
    th = ref["threshold"].drop_duplicates().to_numpy()  # R's seq(0, 0.99, 0.01), its own doubles
    out = decision_curve(cancer["cancer"], {"famhistory": cancer["famhistory"]}, th).table
    m = out.merge(ref, left_on=["model", "threshold"], right_on=["variable", "threshold"], suffixes=("", "_r"))
    assert len(m) == len(ref) == 300
    for col in ("n", "pos_rate", "tp_rate", "fp_rate", "harm", "net_benefit"):
        np.testing.assert_allclose(m[col], m[f"{col}_r"], rtol=1e-12, atol=1e-14, err_msg=col)


def test_matches_r_dcurves_marker_with_harm(cancer):
    ref = pd.read_csv(DATA / "dcurves_r_case3_marker_harm.csv")
    th = ref["threshold"].drop_duplicates().to_numpy()
    # dcurves' as_probability = "marker": glm(cancer ~ marker, binomial) fitted probabilities
    x = sm.add_constant(cancer["marker"].to_numpy())
    risk = sm.GLM(cancer["cancer"].to_numpy(), x, family=sm.families.Binomial()).fit().predict(x)
    out = decision_curve(cancer["cancer"], {"marker": risk}, th, harm={"marker": 0.0333}).table
    m = out.merge(ref, left_on=["model", "threshold"], right_on=["variable", "threshold"], suffixes=("", "_r"))
    assert len(m) == len(ref) == 108
    for col in ("tp_rate", "fp_rate", "harm", "net_benefit"):
        np.testing.assert_allclose(m[col], m[f"{col}_r"], rtol=1e-9, atol=1e-12, err_msg=col)
    ok = np.isfinite(m["net_intervention_avoided_r"])  # R gives -Inf / NA at p_t = 0, we give NaN
    assert (m.loc[~ok, "threshold"] == 0).all() and m.loc[~ok, "net_intervention_avoided"].isna().all()
    np.testing.assert_allclose(m.loc[ok, "net_intervention_avoided"], m.loc[ok, "net_intervention_avoided_r"],
                               rtol=1e-9, atol=1e-12)


def test_bootstrap_bands_resample_patients(cancer):
    y, p = cancer["cancer"].to_numpy(), cancer["cancerpredmarker"].to_numpy()
    th = np.array([0.05, 0.1, 0.2])
    # resampling every patient exactly once gives zero-width bands at the point estimate
    ident = np.tile(np.arange(y.size), (3, 1))
    d = decision_curve(y, p, th, resample=ident).table
    np.testing.assert_allclose(d["nb_low"], d["net_benefit"], atol=1e-15)
    np.testing.assert_allclose(d["nb_high"], d["net_benefit"], atol=1e-15)
    # seeded bootstrap: SD of NB ≈ plug-in SE of a mean of per-patient utilities
    # u_i = y_i·T_i − (1 − y_i)·T_i·p_t/(1 − p_t)  (T_i = treated), SE = sd(u)/√n
    b = decision_curve(y, p, th, n_boot=2000, seed=7).table
    again = decision_curve(y, p, th, n_boot=2000, seed=7).table
    pd.testing.assert_frame_equal(b, again)
    # the bands come from probes.core.stats.bootstrap_indices(n, n_boot, seed)
    same = decision_curve(y, p, th, resample=bootstrap_indices(y.size, 2000, 7)).table
    pd.testing.assert_frame_equal(b, same)
    mod = b[b["model"] == "model"].reset_index(drop=True)
    for i, t in enumerate(th):
        treat = (p >= t).astype(float)
        u = y * treat - (1 - y) * treat * t / (1 - t)
        se = u.std(ddof=0) / np.sqrt(y.size)
        assert mod.loc[i, "nb_se"] == pytest.approx(se, rel=0.08)
        assert mod.loc[i, "nb_low"] < mod.loc[i, "net_benefit"] < mod.loc[i, "nb_high"]
    none = b[b["model"] == "none"]
    assert (none[["nb_low", "nb_high", "nb_se"]].to_numpy() == 0).all()


def test_reads_decision_curve_groups_share_one_patient_bootstrap():
    r = _reads()
    # reader r2 in phase MRI+AI gets exactly the calls reader r1 made in phase MRI
    src = r[(r.reader == "r1") & (r.phase == "MRI")].set_index("case")["decision"]
    m = (r.reader == "r2") & (r.phase == "MRI+AI")
    r.loc[m, "decision"] = r.loc[m, "case"].map(src).to_numpy()
    out = reads_decision_curve(r, prob="decision", thresholds=[0.1, 0.3], n_boot=300, seed=3).table
    a = out[(out.reader == "r1") & (out.phase == "MRI")].reset_index(drop=True)
    b = out[(out.reader == "r2") & (out.phase == "MRI+AI")].reset_index(drop=True)
    cols = ["net_benefit", "nb_low", "nb_high", "nb_se"]
    pd.testing.assert_frame_equal(a[cols], b[cols])  # same cases drawn for every group
    g = r[(r.reader == "r3") & (r.phase == "MRI")]
    direct = decision_curve(g["truth"], {"decision": g["decision"]}, [0.1, 0.3]).table
    got = out[(out.reader == "r3") & (out.phase == "MRI")]
    np.testing.assert_allclose(got["net_benefit"], direct["net_benefit"])
    ai = reads_decision_curve(r, thresholds=[0.2]).table  # AI: one value per case
    assert (ai["n"] == r["case"].nunique()).all()


# ----------------------------------------------------------------------------- calibration
def test_reliability_curve_keeps_empty_bins_and_matches_sklearn():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 0.45, 300)
    y = rng.binomial(1, p)
    c = reliability_curve(y, p, n_bins=10)
    assert len(c) == 10 and c["n"].sum() == 300
    assert c["empty"].tolist() == [False] * 5 + [True] * 5
    assert c.loc[c["empty"], ["mean_prob", "observed"]].isna().all().all()
    assert (c.loc[c["empty"], "n"] == 0).all()
    obs, pred = calibration_curve(y, p, n_bins=10)
    np.testing.assert_allclose(c.loc[~c["empty"], "observed"], obs)
    np.testing.assert_allclose(c.loc[~c["empty"], "mean_prob"], pred)
    cq = reliability_curve(y, p, n_bins=4, strategy="quantile")
    obs, pred = calibration_curve(y, p, n_bins=4, strategy="quantile")
    np.testing.assert_allclose(cq["observed"], obs)


def test_brier_and_ece():
    y = np.array([0, 1, 1, 0, 1, 0])
    p = np.array([0.1, 0.2, 0.8, 0.9, 0.75, 0.15])
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p))
    # 2 bins: [0, .5] holds p .1, .2, .15 (y 0, 1, 0): |1/3 − .15| = .18333…;
    # (.5, 1] holds .8, .9, .75 (y 1, 0, 1): |2/3 − .81666…| = .15; ECE = ½·.18333 + ½·.15
    ece = 0.5 * abs(1 / 3 - 0.15) + 0.5 * abs(2 / 3 - 2.45 / 3)
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx(ece)


def test_calibration_slope_of_perfectly_calibrated_probabilities_is_one():
    rng = np.random.default_rng(11)
    p = expit(rng.normal(-0.3, 1.5, 4000))
    y = rng.binomial(1, p)
    f = calibration_fit(y, p)
    assert abs(f.slope - 1) < 3 * f.slope_se
    assert abs(f.citl) < 3 * f.citl_se and abs(f.intercept) < 3 * f.intercept_se
    over = calibration_fit(y, expit(2 * logit(p)))  # overconfident by a factor 2 → slope ½
    assert abs(over.slope - 0.5) < 3 * over.slope_se
    low = calibration_fit(y, expit(logit(p) - 1))  # predictions 1 logit too low → CITL +1
    assert abs(low.citl - 1) < 3 * low.citl_se and abs(low.slope - 1) < 3 * low.slope_se
    long = f.to_frame().set_index("metric")["value"]
    assert (long["slope"], long["citl"], long["n"]) == (f.slope, f.citl, 4000) and "slope" in f.summary()


def test_calibration_clips_zero_one_with_warning():
    y = np.array([0, 0, 1, 1, 0, 1, 1, 0])
    p = np.array([0.0, 0.3, 0.6, 1.0, 0.2, 0.7, 0.4, 0.5])
    with pytest.warns(RuntimeWarning, match="2 probabilities are exactly 0 or 1"):
        f = calibration_fit(y, p)
    assert f.n_clipped == 2 and np.isfinite(f.slope)


def test_calibration_slope_nan_with_warning_when_separated():
    y = np.array([0, 0, 0, 1, 1, 1])
    with pytest.warns(UndefinedValueWarning, match="separates the outcomes perfectly"):
        f = calibration_fit(y, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert np.isnan(f.slope) and np.isnan(f.intercept) and np.isfinite(f.citl)
    df = f.to_frame().set_index("metric")
    assert "separates" in df.loc["slope", "reason"] and df.loc["citl", "reason"] == ""


def test_calibration_of_a_single_class_is_nan_with_its_reason():
    with pytest.warns(UndefinedValueWarning, match="single class") as rec:
        f = calibration_fit([1, 1, 1], [0.2, 0.5, 0.9])
    assert len([w for w in rec if issubclass(w.category, UndefinedValueWarning)]) == 1
    assert np.isnan([f.slope, f.intercept, f.citl]).all() and f.n == 3
    df = f.to_frame()
    assert (df.loc[df["value"].isna(), "reason"].str.contains("single class")).all()


def test_reads_calibration_ai_per_case():
    r = _reads()
    cal = reads_calibration(r, n_bins=5)
    per_case = r.drop_duplicates("case")
    m = cal.metrics.iloc[0]
    assert m["n"] == 40
    assert m["brier"] == pytest.approx(brier_score_loss(per_case["truth"], per_case["ai_prob"]))
    assert m["ece"] == pytest.approx(expected_calibration_error(per_case["truth"], per_case["ai_prob"], n_bins=5))
    assert len(cal.curve) == 5


# ------------------------------------------------------------------------------------- ROC
def test_reader_roc_points_auc_and_vertical_average():
    r = _reads()
    roc = reader_roc(r)
    for (ph, rd), g in r.groupby(["phase", "reader"]):
        fpr, tpr, _ = roc_curve(g["truth"], g["score"], drop_intermediate=False)
        pts = roc.points[(roc.points.phase == ph) & (roc.points.reader == rd)]
        np.testing.assert_allclose(pts["fpr"], fpr)
        np.testing.assert_allclose(pts["tpr"], tpr)
        a = roc.auc[(roc.auc.phase == ph) & (roc.auc.reader == rd)]["auc"].item()
        assert a == pytest.approx(roc_auc_score(g["truth"], g["score"]))
    for ph, av in roc.average.groupby("phase", observed=True):
        mean_auc = roc.auc[(roc.auc.phase == ph) & (roc.auc.curve == "reader")]["auc"].mean()
        assert np.trapezoid(av["tpr"], av["fpr"]) == pytest.approx(mean_auc, abs=1e-12)
        avg = roc.auc[(roc.auc.phase == ph) & (roc.auc.curve == "average")]
        assert avg["auc"].item() == pytest.approx(mean_auc)
        assert (avg["n_pos"].item(), avg["n_neg"].item()) == (20, 20)  # distinct cases, not reads


def test_vertical_average_by_hand():
    # curve 1 jumps to 0.5 at fpr 0, runs flat to fpr 0.5, jumps to 1; curve 2 is the diagonal
    c1 = pd.DataFrame({"fpr": [0, 0, 0.5, 0.5, 1], "tpr": [0, 0.5, 0.5, 1, 1]})
    c2 = pd.DataFrame({"fpr": [0, 1], "tpr": [0, 1]})
    av = vertical_average([c1, c2], grid=[0, 0.25, 0.5, 1])
    right = av[av.side == "right"].set_index("fpr")["tpr"]
    # f = 0.25: (0.5 + 0.25)/2; f = 0.5: top of c1's jump (1) and 0.5 → 0.75; f = 0: (0.5 + 0)/2
    assert right[0.25] == pytest.approx(0.375) and right[0.5] == pytest.approx(0.75) and right[0] == 0.25
    left = av[av.side == "left"].set_index("fpr")["tpr"]
    assert left[0.5] == pytest.approx(0.5) and left[0] == 0.0
    full = vertical_average([c1, c2])
    assert np.trapezoid(full["tpr"], full["fpr"]) == pytest.approx((0.75 + 0.5) / 2)


# ------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, match", [
    (lambda: net_benefit([0, 1, 1], [0.2, 0.5, 0.9], [0.1, 1.0]), r"thresholds must lie in \[0, 1\)"),
    (lambda: net_benefit([0, 1, 1], [0.2, 1.5, 0.9], [0.1]), r"must be probabilities in \[0, 1\].*1\.5"),
    (lambda: net_benefit([0, 1], [0.2, 0.5, 0.9], [0.1]), "has 3 values but labels has 2"),
    (lambda: net_benefit([0, 2, 1], [0.2, 0.5, 0.9], [0.1]), r"binary 0/1, found values \[2\]"),
    (lambda: net_benefit([0, 1, 1], [0.2, np.nan, 0.9], [0.1]), "NaN or inf"),
    (lambda: decision_curve([0, 1, 1], {"m": [0.2, 0.5, 0.9]}, [0.1], harm={"x": 0.1}), r"unknown model\(s\) \['x'\]"),
    (lambda: decision_curve([0, 1, 1], {"all": [0.2, 0.5, 0.9]}, [0.1]), "reserved"),
    (lambda: decision_curve([0, 1, 1], [0.2, 0.5, 0.9], [0.1], resample=np.zeros((4, 2), int)),
     r"resample must be an integer array \(n_boot, 3\).*shape \(4, 2\)"),
    (lambda: reliability_curve([0, 1], [0.2, 0.5], n_bins=0), "n_bins must be an int >= 1, got 0"),
    (lambda: reliability_curve([0, 1], [0.2, 0.5], strategy="kmeans"), "strategy='kmeans' is not one of"),
    (lambda: roc_points([[0, 1]], [0.2, 0.5]), r"labels must be 1-D, got shape \(1, 2\)"),
])
def test_bad_array_input_names_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_reads_input_names_the_problem():
    r = _reads()
    with pytest.raises(ReadsError, match=r"lacks column\(s\) 'score' \(score\)"):
        reader_roc(r.drop(columns="score"))
    bad = r.copy()
    bad.loc[0, "ai_prob"] = 0.99 if bad.loc[0, "ai_prob"] != 0.99 else 0.5
    with pytest.raises(ReadsError, match="ai_prob differs between reads of 1 case"):
        reads_calibration(bad)
    with pytest.raises(ValueError, match="by may hold 'phase' and/or 'reader', got \\['case'\\]"):
        reads_decision_curve(r, by=("case",))
    with pytest.raises(ValueError, match="prob='decision' is not one of 'ai_prob', 'score'"):
        reads_calibration(r, prob="decision")
