"""GEE for AI assistance and the simulated reader study.

References: statsmodels' own GEE (a direct ``smf.gee`` call on the same reads), the R ``gee``
package's estimates on statsmodels' test data ``gee_logistic_1.csv`` (values printed in
statsmodels/genmod/tests/test_gee.py::TestGEE::test_logistic, obtained there with
``gee(Y ~ X1 + X2 + X3, id = Id, family = binomial, corstr = ...)``), and the simulation's
known marginal odds ratio (coverage over 200 simulated studies).
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy import special, stats

from audit.readers.gee import GEEConvergenceError, GEEConvergenceWarning, fit_gee, gee_assistance
from audit.readers.simulate import example_reads, simulate_reads, write_example_reads
from audit.readers.reads import ReadColumns, ReadsError

from tests.helpers import READERSTUDY_DATA as DATA

# R gee 4.13 on gee_logistic_1.csv, from statsmodels' test_gee.py (independence, exchangeable)
R_GEE_COEF = {"independence": [0.0167272965285882, 1.13038654425893, -1.86896345082962, 1.09397608331333],
              "exchangeable": [0.0178982283915449, 1.13118798191788, -1.86133518416017, 1.08944256230299]}
R_GEE_ROBUST_SE = {"independence": [0.127291720283049, 0.166725808326067, 0.192430061340865, 0.173141068839597],
                   "exchangeable": [0.127045031730155, 0.165470678232842, 0.192052750030501, 0.173174779369249]}


@pytest.fixture(scope="module")
def reads() -> pd.DataFrame:
    return example_reads()


@pytest.mark.parametrize("correlation", ["independence", "exchangeable"])
def test_fit_gee_matches_r_gee_on_statsmodels_data(correlation):
    z = pd.read_csv(DATA / "statsmodels_gee_logistic_1.csv", header=None, names=["Id", "Y", "X1", "X2", "X3"])
    x = pd.DataFrame({"const": 1.0, "X1": z["X1"], "X2": z["X2"], "X3": z["X3"]})
    fit = fit_gee(z["Y"], x, z["Id"], correlation=correlation, cov_type="robust")
    assert fit.converged and fit.n_groups == 100 and fit.n_obs == len(z)
    np.testing.assert_allclose(fit.params.to_numpy(), R_GEE_COEF[correlation], atol=1e-6)
    np.testing.assert_allclose(fit.bse.to_numpy(), R_GEE_ROBUST_SE[correlation], atol=1e-6)
    tab = fit.coefficients()
    np.testing.assert_allclose(tab["p"], 2 * stats.norm.sf(np.abs(tab["coef"] / tab["se"])))
    long = fit.to_frame().set_index(["term", "metric"])["value"]
    np.testing.assert_allclose(long.xs("coef", level="metric").to_numpy(), R_GEE_COEF[correlation], atol=1e-6)


@pytest.mark.parametrize("correlation, cov_type", [("exchangeable", "robust"), ("exchangeable", "bias_reduced"),
                                                   ("independence", "robust"), ("independence", "naive")])
def test_gee_assistance_equals_direct_statsmodels_call(reads, correlation, cov_type):
    res = gee_assistance(reads, correlation=correlation, cov_type=cov_type)
    d = reads.assign(correct=(reads["decision"] == reads["truth"]).astype(int))
    cs = sm.cov_struct.Exchangeable() if correlation == "exchangeable" else sm.cov_struct.Independence()
    direct = smf.gee("correct ~ C(phase) + C(reader)", groups="case", data=d, family=sm.families.Binomial(),
                     cov_struct=cs).fit(cov_type=cov_type)
    names = list(direct.params.index)
    p2, p3 = names.index("C(phase)[T.MRI+AI]"), names.index("C(phase)[T.MRI+AI+XAI]")
    L = np.zeros((3, len(names)))
    L[0, p2] = L[1, p3] = L[2, p3] = 1.0
    L[2, p2] = -1.0
    tt = direct.t_test(L)
    c = res.contrasts
    assert list(c["contrast"]) == ["MRI+AI vs MRI", "MRI+AI+XAI vs MRI", "MRI+AI+XAI vs MRI+AI"]
    np.testing.assert_allclose(c["log_or"], np.ravel(tt.effect), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(c["se"], np.ravel(tt.sd), rtol=1e-7)
    np.testing.assert_allclose(c["p"], np.ravel(tt.pvalue), rtol=1e-6, atol=1e-12)
    ci = np.exp(tt.conf_int(alpha=0.05))
    np.testing.assert_allclose(c[["ci_low", "ci_high"]].to_numpy(), ci, rtol=1e-7)
    # phase-vs-MRI rows are the plain coefficients: OR = exp(coef), CI = exp(conf_int())
    np.testing.assert_allclose(c["odds_ratio"][:2], np.exp(direct.params.iloc[[p2, p3]]), rtol=1e-7)
    np.testing.assert_allclose(c[["ci_low", "ci_high"]].to_numpy()[:2],
                               np.exp(direct.conf_int().iloc[[p2, p3]].to_numpy()), rtol=1e-7)
    wald = direct.wald_test(L[:2], scalar=True)
    assert res.wald_chi2 == pytest.approx(float(wald.statistic), rel=1e-7)
    assert res.wald_p == pytest.approx(float(wald.pvalue), rel=1e-6)
    assert res.converged and bool(direct.converged)
    if correlation == "exchangeable":
        assert res.fit.dep_param == pytest.approx(float(direct.cov_struct.dep_params), rel=1e-7)
    # the reads table is not modified, and the observed accuracy table counts the reads
    assert "correct" not in reads.columns
    acc = d.groupby("phase", observed=True)["correct"].mean().to_numpy()
    np.testing.assert_allclose(res.accuracy["accuracy"], acc)
    assert res.cov_type == cov_type and "OR" in res.summary()
    long = res.to_frame()
    assert list(long.columns) == ["contrast", "phase", "baseline", "reason", "metric", "value"]
    np.testing.assert_allclose(long.loc[long.metric == "odds_ratio", "value"], c["odds_ratio"])


def test_reference_phase_and_given_correctness_column(reads):
    base = gee_assistance(reads)
    ref = gee_assistance(reads, reference="MRI+AI")
    row = ref.contrasts.set_index("contrast").loc["MRI vs MRI+AI"]
    assert row["log_or"] == pytest.approx(-base.contrasts["log_or"][0], abs=1e-9)
    assert row["se"] == pytest.approx(base.contrasts["se"][0], rel=1e-7)
    given = reads.assign(ok=(reads["decision"] == reads["truth"]).astype(int)).drop(columns="decision")
    same = gee_assistance(given, correct="ok")
    np.testing.assert_allclose(same.contrasts["log_or"], base.contrasts["log_or"], atol=1e-12)


def test_non_convergence_is_an_error_or_a_flag(reads):
    # statsmodels itself says converged=True here (its score is taken before the working
    # correlation is updated); the re-evaluated score at the returned estimates is not ~0.
    with pytest.raises(GEEConvergenceError, match=r"did not converge: score norm .* after 1 iteration"):
        gee_assistance(reads, maxiter=1)
    with pytest.warns(GEEConvergenceWarning, match="flagged converged=False"):
        res = gee_assistance(reads, maxiter=1, on_nonconvergence="flag")
    assert not res.converged and not res.contrasts["converged"].any()
    assert res.fit.score_norm > 1e-3 and "NOT CONVERGED" in res.summary()
    ok = gee_assistance(reads)
    assert ok.fit.score_norm < 1e-6 and ok.fit.n_iter > 1


@pytest.mark.parametrize("edit, match", [
    (lambda d: d[~((d["case"] == "P005") & (d["phase"] != "MRI"))], r"case 'P005' was read only in \['MRI'\]"),
    (lambda d: d[~((d["reader"] == "R2") & (d["truth"] == 1))], r"reader\(s\) \['R2'\] saw only one truth class"),
    (lambda d: d.drop(columns="decision"), r"lacks column\(s\) 'decision' \(decision\)"),
    (lambda d: d.assign(truth=d["truth"].replace(1, 2)), r"'truth' \(truth\) must be binary 0/1, found values \[2\]"),
    (lambda d: d.assign(decision=np.where(d["phase"] == "MRI+AI", d["truth"], d["decision"])),
     r"phase 'MRI\+AI' has every one of its 148 reads correct"),
    (lambda d: d.assign(decision=np.where(d["reader"] == "R3", 1 - d["truth"], d["decision"])),
     r"reader 'R3' has every one of its 111 reads wrong"),
])
def test_bad_input_names_the_problem(reads, edit, match):
    with pytest.raises(ReadsError, match=match):
        gee_assistance(edit(reads))


def test_bad_arguments_are_named(reads):
    with pytest.raises(ReadsError, match=r"reference 'CT' is not a phase; phases are \['MRI'"):
        gee_assistance(reads, reference="CT")
    with pytest.raises(ValueError, match=r"correlation='ar1' is not one of 'exchangeable', 'independence'"):
        gee_assistance(reads, correlation="ar1")
    with pytest.raises(ValueError, match=r"cov_type='hc3' is not one of 'robust', 'naive', 'bias_reduced'"):
        gee_assistance(reads, cov_type="hc3")
    with pytest.raises(ReadsError, match=r"lacks the correctness column 'ok'"):
        gee_assistance(reads, correct="ok")
    with pytest.raises(ReadsError, match=r"lacks column\(s\) 'Arzt' \(reader\); available columns"):
        gee_assistance(reads, ReadColumns(reader="Arzt"))


def test_gee_recovers_the_known_marginal_odds_ratio():
    """95% CIs cover the true population-averaged OR in ≥ 90% of 200 simulated studies."""
    true_or, hits, est = 2.0, [], []
    for s in range(200):
        d = simulate_reads(40, 3, ("MRI", "MRI+AI"), odds_ratio=true_or, seed=1000 + s)
        c = gee_assistance(d).contrasts.iloc[0]
        hits.append(c["ci_low"] <= true_or <= c["ci_high"])
        est.append(c["log_or"])
    assert np.mean(hits) >= 0.90
    est = np.asarray(est)  # and is unbiased for log OR (Monte Carlo error 4 SE)
    assert abs(est.mean() - np.log(true_or)) < 4 * est.std(ddof=1) / np.sqrt(est.size)


def test_simulation_marginal_accuracy_is_the_logistic_model():
    """P(correct | reader, phase) = expit(logit(base) + a_r + log OR_p) exactly (large sample)."""
    d = simulate_reads(6000, 3, ("A", "B", "C"), odds_ratio=(1.5, 3.0), base_accuracy=0.7, seed=5)
    a = np.array(list(d.attrs["reader_effects"].values()))
    p = special.expit(special.logit(0.7) + a[:, None] + np.log([1.0, 1.5, 3.0])[None])
    obs = (d.assign(c=d["decision"] == d["truth"]).groupby(["reader", "phase"], observed=True)["c"].mean()
           .unstack().to_numpy())
    assert np.all(np.abs(obs - p) < 4 * np.sqrt(p * (1 - p) / 6000))
    # the reader-pooled marginal OR differs (non-collapsibility) and is what attrs report
    pooled = p.mean(axis=0)
    want = np.exp(special.logit(pooled[1:]) - special.logit(pooled[0]))
    np.testing.assert_allclose(list(d.attrs["true_or_pooled"].values()), want, rtol=1e-12)
    assert set(np.unique(d["decision"])) == {0, 1} and d["score"].between(0, 100).all()
    assert ((d["score"] > 50) <= (d["decision"] == 1)).all()  # a confidence above 50 % is a positive call


def test_example_reads_file_is_deterministic(tmp_path):
    a = write_example_reads(tmp_path / "a.csv")
    write_example_reads(tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert len(a) == 444 and a.groupby("case").size().eq(12).all() and a["reader"].nunique() == 4
    back = pd.read_csv(tmp_path / "a.csv")
    assert list(back.columns) == ["reader", "case", "truth", "phase", "decision", "score", "ai_prob"]
    res = gee_assistance(back)  # the file itself is a valid study; phases keep their order of appearance
    assert list(res.contrasts["phase"][:2]) == ["MRI+AI", "MRI+AI+XAI"]
    with pytest.raises(ValueError, match=r"path must end in \.csv"):
        write_example_reads(tmp_path / "a.txt")
