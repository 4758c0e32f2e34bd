"""Clustered patient bootstrap: equal to a plain loop over resampled patients (sklearn's
roc_auc_score and direct counts, same index matrix) and to scipy.stats.bootstrap (percentile
and BCa, same generator); one-class resamples counted and excluded; bad input named."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from audit.readers.bootstrap import NOTE, OneClassResampleWarning, bca_interval, cluster_bootstrap
from audit.readers.simulate import example_reads, simulate_reads
from audit.readers.reads import ReadsError
from probes.core.stats import bootstrap_indices


@pytest.fixture(scope="module")
def reads() -> pd.DataFrame:
    return example_reads()


def _loop_reference(reads: pd.DataFrame, patients: tuple, idx: np.ndarray, pooled: bool) -> dict:
    """Per resample: concatenate every read of each drawn patient, then sklearn / direct counts."""
    rows_of = {p: np.flatnonzero(reads["case"].to_numpy() == p) for p in patients}
    truth, dec, score = (reads[c].to_numpy() for c in ("truth", "decision", "score"))
    phase, reader = reads["phase"].astype(str).to_numpy(), reads["reader"].to_numpy()
    phases = [str(p) for p in reads["phase"].cat.categories]
    out: dict = {}
    for b in range(idx.shape[0]):
        rows = np.concatenate([rows_of[patients[i]] for i in idx[b]])
        for ph in phases:
            sel = rows[phase[rows] == ph]
            t, d, s, r = truth[sel], dec[sel], score[sel], reader[sel]
            vals = {"accuracy": (d == t).sum() / len(t), "sensitivity": (d[t == 1] == 1).sum() / (t == 1).sum(),
                    "specificity": (d[t == 0] == 0).sum() / (t == 0).sum()}
            if pooled:
                vals["auc"] = roc_auc_score(t, s)
            else:
                vals["auc"] = np.mean([roc_auc_score(t[r == k], s[r == k]) for k in np.unique(r)])
            for k, v in vals.items():
                out.setdefault((k, ph), []).append(v)
    for k in list(out):
        out[k] = np.asarray(out[k])
    for s in ("accuracy", "sensitivity", "specificity", "auc"):
        for a, b in combinations(phases, 2):
            out[(s, f"{b} − {a}")] = out[(s, b)] - out[(s, a)]
    return out


@pytest.mark.parametrize("auc", ["reader_mean", "pooled"])
def test_equals_plain_loop_with_sklearn(reads, auc):
    res = cluster_bootstrap(reads, n_boot=60, seed=11, auc=auc)
    ref = _loop_reference(reads, res.patients, res.indices, pooled=auc == "pooled")
    tab = res.table
    assert len(tab) == 4 * (3 + 3) and len(ref) == len(tab)
    for k, row in tab.iterrows():
        np.testing.assert_allclose(res.replicates[:, k], ref[(row["statistic"], row["phase"])], rtol=0, atol=1e-12)
    # the estimate is the statistic on the original data (identity resample)
    one = _loop_reference(reads, res.patients, np.arange(len(res.patients))[None], pooled=auc == "pooled")
    for _, row in tab.iterrows():
        assert row["estimate"] == pytest.approx(one[(row["statistic"], row["phase"])][0], abs=1e-12)
    # the index matrix is numpy's seeded draw, as documented
    np.testing.assert_array_equal(res.indices, np.random.default_rng(11).integers(0, 37, (60, 37)))
    np.testing.assert_array_equal(res.indices, bootstrap_indices(37, 60, 11))
    assert (tab["note"] == NOTE).all() and "readers treated as fixed" in res.summary()
    se = np.std(res.replicates, axis=0, ddof=1)
    np.testing.assert_allclose(tab["se"], se, rtol=1e-12)


@pytest.mark.parametrize("interval", ["percentile", "bca"])
def test_matches_scipy_bootstrap(reads, interval):
    """Same generator → same patient draws as scipy.stats.bootstrap(paired=True); equal CIs."""
    res = cluster_bootstrap(reads, statistic="accuracy", n_boot=400, seed=7, interval=interval)
    d = reads.assign(c=(reads["decision"] == reads["truth"]).astype(float))
    phases = list(reads["phase"].cat.categories)
    per = d.pivot_table(index="case", columns="phase", values="c", aggfunc=["sum", "count"], observed=True)
    per = per.loc[list(res.patients)]
    data = [per[("sum", p)].to_numpy() for p in phases] + [per[("count", p)].to_numpy() for p in phases]
    t = len(phases)

    for k, row in res.table.iterrows():
        if row["kind"] == "phase":
            j = phases.index(row["phase"])

            def stat(*x, axis=-1, j=j):
                return x[j].sum(axis) / x[t + j].sum(axis)
        else:
            b, a = (phases.index(s) for s in row["phase"].split(" − "))

            def stat(*x, axis=-1, a=a, b=b):
                return x[b].sum(axis) / x[t + b].sum(axis) - x[a].sum(axis) / x[t + a].sum(axis)
        ref = stats.bootstrap(data, stat, n_resamples=400, paired=True, vectorized=True,
                              method="BCa" if interval == "bca" else "percentile", rng=np.random.default_rng(7))
        np.testing.assert_allclose(res.replicates[:, k], ref.bootstrap_distribution, atol=1e-12)
        np.testing.assert_allclose([row["ci_low"], row["ci_high"]], ref.confidence_interval, atol=1e-12)
        assert row["se"] == pytest.approx(ref.standard_error, abs=1e-12)


def test_bca_closed_form_on_a_skewed_sample():
    """bca_interval against scipy on a one-sample mean (independent jackknife from scipy)."""
    x = np.random.default_rng(0).exponential(size=30)
    ref = stats.bootstrap((x,), np.mean, n_resamples=2000, method="BCa", rng=np.random.default_rng(1))
    jack = (x.sum() - x) / (x.size - 1)
    lo, hi, z0, a = bca_interval(ref.bootstrap_distribution, x.mean(), jack, 0.05)
    np.testing.assert_allclose([lo, hi], ref.confidence_interval, atol=1e-12)
    # acceleration of the mean has the closed form skewness/6·n^-1/2 (Efron & Tibshirani 14.15)
    m3, m2 = ((x - x.mean()) ** 3).sum(), ((x - x.mean()) ** 2).sum()
    assert a == pytest.approx(m3 / (6 * m2 ** 1.5), rel=1e-12) and a > 0


def test_one_class_resamples_are_counted_and_excluded():
    d = simulate_reads(8, 2, ("MRI", "MRI+AI"), prevalence=0.125, seed=3)  # 1 positive patient of 8
    with pytest.warns(OneClassResampleWarning, match=r"resamples had a single truth class"):
        res = cluster_bootstrap(d, n_boot=300, seed=5)
    pos = sorted(set(d.loc[d["truth"] == 1, "case"]))
    assert len(pos) == 1
    p = res.patients.index(pos[0])
    no_pos = ~(res.indices == p).any(axis=1)  # resamples that drew the positive patient zero times
    tab = res.table.set_index(["statistic", "phase"])
    k_auc = res.table.index[(res.table["statistic"] == "auc") & (res.table["phase"] == "MRI")][0]
    np.testing.assert_array_equal(np.isnan(res.replicates[:, k_auc]), no_pos)
    for s in ("sensitivity", "auc"):
        for ph in ("MRI", "MRI+AI", "MRI+AI − MRI"):
            assert tab.loc[(s, ph), "n_excluded"] == no_pos.sum() > 0
            assert tab.loc[(s, ph), "n_valid"] == 300 - no_pos.sum()
    for s in ("accuracy", "specificity"):  # defined in every resample (7 negative patients)
        assert (tab.loc[s, "n_excluded"] == 0).all()
    valid = res.replicates[~no_pos, k_auc]
    assert tab.loc[("auc", "MRI"), "ci_low"] == pytest.approx(np.percentile(valid, 2.5))
    assert "one-class resamples excluded" in res.summary()


@pytest.mark.parametrize("edit, kw, match", [
    (lambda d: d[~((d["case"] == "P005") & (d["phase"] != "MRI"))], {}, r"case 'P005' was read only in \['MRI'\]"),
    (lambda d: d[~((d["reader"] == "R2") & (d["truth"] == 0))], {}, r"reader\(s\) \['R2'\] saw only one truth class"),
    (lambda d: d.drop(columns="score"), {"statistic": "auc"}, r"lacks column\(s\) 'score' \(score\)"),
    (lambda d: d.assign(truth=d["truth"].astype(str).replace("1", "yes")), {},
     r"'truth' \(truth\) must be binary 0/1, found values \['0', 'yes'\]"),
    (lambda d: d, {"statistic": "kappa"}, r"statistic must be among .* got \['kappa'\]"),
    (lambda d: d, {"interval": "basic"}, r"interval='basic' is not one of 'percentile', 'bca'"),
    (lambda d: d, {"n_boot": 1}, r"n_boot must be an int >= 2, got 1"),
    (lambda d: d, {"alpha": 1.5}, r"alpha must be in \(0, 1\), got 1.5"),
])
def test_bad_input_names_the_problem(reads, edit, kw, match):
    with pytest.raises(ValueError, match=match):  # ReadsError is a ValueError
        cluster_bootstrap(edit(reads), **kw)


def test_default_statistics_follow_the_columns(reads):
    only_scores = reads.drop(columns="decision")
    res = cluster_bootstrap(only_scores, n_boot=20, differences=False)
    assert list(res.table["statistic"].unique()) == ["auc"] and len(res.table) == 3
    with pytest.raises(ReadsError, match="neither a decision column 'decision' nor a score column 'score'"):
        cluster_bootstrap(reads.drop(columns=["decision", "score"]), n_boot=20)


def test_tidy_frame_is_the_table_long_and_a_statistic_name_is_not_the_columns(reads):
    res = cluster_bootstrap(reads, statistic=["auc"], n_boot=30, seed=2)
    long = res.to_frame()
    assert list(long.columns) == ["statistic", "phase", "kind", "baseline", "reason", "metric", "value"]
    assert list(dict.fromkeys(long["metric"])) == ["estimate", "se", "ci_low", "ci_high", "n_valid", "n_excluded"]
    wide = long.pivot_table(index="phase", columns="metric", values="value", sort=False)
    np.testing.assert_allclose(wide["estimate"], res.table.set_index("phase").loc[wide.index, "estimate"])
    assert (res.table["interval"] == "percentile").all() and res.n_boot == 30
    long.loc[0, "value"] = -1.0  # a copy: the result is unchanged
    assert res.to_frame().loc[0, "value"] != -1.0
    with pytest.raises(TypeError, match=r"columns must be a ReadColumns .* got str 'auc'"):
        cluster_bootstrap(reads, "auc")  # the statistic is a keyword; the second argument is columns
