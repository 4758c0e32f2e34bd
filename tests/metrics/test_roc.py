"""DeLong AUC inference against the U-statistic written out and pROC's published output."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from probes.core.result import Summary
from probes.metrics.roc import DeLongResult, auc, delong, delong_cov, delong_placements

from tests.helpers import READERSTUDY_DATA as DATA


def _psi(x, y):
    return (x > y) + 0.5 * (x == y)


def _delong_bruteforce(truth, scores):
    """DeLong et al. (1988) eqs. written out with explicit pairs (O(k·m·n))."""
    x, y = scores[:, truth == 1], scores[:, truth == 0]
    m, n = x.shape[1], y.shape[1]
    psi = _psi(x[:, :, None], y[:, None, :])            # (k, m, n)
    v10, v01 = psi.mean(2), psi.mean(1)
    a = psi.mean((1, 2))
    s10 = (v10 - a[:, None]) @ (v10 - a[:, None]).T / (m - 1)
    s01 = (v01 - a[:, None]) @ (v01 - a[:, None]).T / (n - 1)
    return a, s10 / m + s01 / n


def test_matches_bruteforce_u_statistic_with_ties():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 60)
    scores = np.stack([np.round(rng.normal(truth * 0.8, 1), 1),  # rounding makes ties
                       rng.integers(1, 6, 60).astype(float) + truth,
                       rng.normal(size=60)])
    a, cov = delong_cov(truth, scores)
    a_ref, cov_ref = _delong_bruteforce(truth, scores)
    np.testing.assert_allclose(a, a_ref, atol=1e-12)
    np.testing.assert_allclose(cov, cov_ref, atol=1e-12)
    for k in range(3):
        assert auc(truth, scores[k]) == pytest.approx(roc_auc_score(truth, scores[k]), abs=1e-12)
    v10, v01 = delong_placements(truth, scores[0])
    assert v10.shape == (1, truth.sum()) and v01.shape == (1, (truth == 0).sum())


def test_reproduces_pROC_on_aSAH():
    """pROC documentation (Robin et al. 2011, ``?roc.test`` / ``?ci.auc``) on the aSAH data:
    roc.test(roc(outcome, s100b), roc(outcome, wfns)) → Z = -2.209, p-value = 0.02718,
    AUCs 0.7313686 and 0.8236789; ci.auc(outcome, s100b) → 95% CI 0.6301–0.8326 (DeLong)."""
    d = pd.read_csv(DATA / "aSAH_pROC.csv")
    t = (d["outcome"] == "Poor").astype(int).to_numpy()
    r = delong(t, d["s100b"], d["wfns"])
    assert r.paired
    assert (round(r.auc_a, 7), round(r.auc_b, 7)) == (0.7313686, 0.8236789)
    assert round(r.z, 3) == -2.209 and round(r.p, 5) == 0.02718
    one = delong(t, d["s100b"])
    assert (round(one.ci_low, 4), round(one.ci_high, 4)) == (0.6301, 0.8326)


def test_unpaired_variance_is_the_sum_and_paired_uses_covariance():
    rng = np.random.default_rng(1)
    t = np.r_[np.ones(30), np.zeros(40)].astype(int)
    a = rng.normal(t, 1.0)
    b = a + rng.normal(0, 0.3, t.size)                   # strongly correlated with a
    paired = delong(t, a, b)
    unpaired = delong(t, a, b, labels_b=t)
    assert unpaired.se == pytest.approx(np.sqrt(paired.var_a + paired.var_b))
    assert paired.se == pytest.approx(np.sqrt(paired.var_a + paired.var_b - 2 * paired.cov))
    assert paired.cov > 0 and paired.se < unpaired.se    # pairing removes shared case variance
    same = delong(t, a, a)
    assert same.diff == 0 and same.p == 1.0
    assert isinstance(paired.summary(), Summary) and "paired" in paired.summary()
    assert "unpaired" in unpaired.summary() and unpaired.test == "unpaired"


def test_result_is_tidy():
    d = pd.read_csv(DATA / "aSAH_pROC.csv")
    t = (d["outcome"] == "Poor").astype(int).to_numpy()
    r = delong(t, d["s100b"], d["wfns"], alpha=0.1)
    assert isinstance(r, DeLongResult)
    f = r.to_frame()
    assert list(f.columns) == ["test", "reason", "metric", "value"] and set(f.test) == {"paired"}
    v = f.set_index("metric").value
    assert (v["auc_a"], v["z"], v["p"], v["ci_low"], v["n_pos"], v["alpha"]) == (r.auc_a, r.z, r.p, r.ci_low, 41, 0.1)
    one = delong(t, d["s100b"])
    assert one.test == "auc" and "AUC = 0.7314" in one.summary() and "0.6301" in one.summary()
    assert "<table" in one._repr_html_()


@pytest.mark.parametrize("labels, scores, match", [
    ([0, 1, 2, 1], [1, 2, 3, 4], r"labels must be 0/1, got values \[0, 1, 2\]"),
    ([0, 1, 0], [1, 2, 3, 4], "labels has 3 entries for 4 cases"),
    ([0, 1, 0, 1], [1, np.nan, 3, 4], "NaN"),
    ([[0, 1], [0, 1]], [1, 2, 3, 4], "labels must be 1-D"),
])
def test_bad_input_is_named(labels, scores, match):
    with pytest.raises(ValueError, match=match):
        delong(labels, scores)
