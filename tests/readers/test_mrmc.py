"""Obuchowski–Rockette and DBM MRMC analyses against published program output.

References (files in tests/data/readerstudy/, see its README.md):
- ``vandyke_ORDBM-MRMC-2.51_trapezoidal_jackknife_output.txt``: the Iowa OR-DBM MRMC 2.51
  program on Van Dyke et al. (1993); every number it prints is parsed from the file and
  compared at its printed precision (half a unit in the last printed digit).
- ``vandyke_JAFROC-4.2.1_DBM_output.txt``: JAFROC 4.2.1's DBM pseudovalue ANOVA on the same
  data. JAFROC computes in single precision (its AUCs differ from the exact Wilcoxon values in
  the 8th decimal, e.g. 0.85877615 vs 0.85877617 above), which the ×c pseudovalues amplify,
  so there the tolerance is printed precision or 1e-5 relative, whichever is larger.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.anova import AnovaRM

from audit.readers.mrmc import jackknife_aucs, mrmc_or, unbiased_cov
from audit.readers.dbm import mrmc_dbm
from audit.readers.reads import ReadColumns, ReadsError
from probes.metrics.roc import auc, delong

from tests.helpers import READERSTUDY_DATA as DATA
COLS = ReadColumns(phase="modality", score="rating")
N = r"(-?\d+\.\d+|-?\d+)"  # one printed number


def _check(ours: float, printed: str, rtol: float = 0.0, what: str = "") -> None:
    """|ours − printed| ≤ half a unit in the printed last digit (or rtol·|printed|)."""
    dec = len(printed.split(".")[1]) if "." in printed else 0
    tol = max(0.5 * 10.0 ** -dec * (1 + 1e-9), rtol * abs(float(printed)))
    assert abs(ours - float(printed)) <= tol, f"{what}: ours {ours!r} vs printed {printed}"


def _rows(text: str, pattern: str) -> list[tuple[str, ...]]:
    found = re.findall(pattern, text, flags=re.M)
    assert found, f"pattern not found in published output: {pattern}"
    return [f if isinstance(f, tuple) else (f,) for f in found]


def _sections(text: str, marker: str) -> list[str]:
    return re.split(marker, text)


@pytest.fixture(scope="module")
def vandyke() -> pd.DataFrame:
    return pd.read_csv(DATA / "vandyke_1993_mrmc.csv")


@pytest.fixture(scope="module")
def franken() -> pd.DataFrame:
    return pd.read_csv(DATA / "franken_1992_mrmc.csv")


@pytest.fixture(scope="module")
def or_fit(vandyke):
    return mrmc_or(vandyke, COLS)


@pytest.fixture(scope="module")
def dbm_fit(vandyke):
    return mrmc_dbm(vandyke, COLS)


def _sel(df: pd.DataFrame, **kw) -> pd.Series:
    m = np.ones(len(df), bool)
    for k, v in kw.items():
        m &= (df[k] == v).to_numpy()
    assert m.sum() == 1, kw
    return df[m].iloc[0]


def test_or_reproduces_ordbm_mrmc_251_output(or_fit):
    text = (DATA / "vandyke_ORDBM-MRMC-2.51_trapezoidal_jackknife_output.txt").read_text()
    head, a1, a2, a3 = _sections(text, r"\*{5}\s+Analysis \d \(OR Analysis\)")
    res = or_fit
    (t, r, c, neg, pos), = _rows(head, rf"^ {N} treatments, {N} readers, {N} cases \({N} normal, {N} abnormal\)")
    assert (len(res.tests), len(res.readers), res.n_neg + res.n_pos, res.n_neg, res.n_pos) == tuple(
        map(int, (t, r, c, neg, pos)))
    aucs = res.aucs.set_index(["reader", "test"])["auc"]
    est = head.split("TREATMENT x READER AUC ESTIMATES")[1].split("TREATMENT AUC MEANS")[0]
    got = _rows(est, rf"^\s+(\d)\s+{N}\s+{N}\s*$")
    assert len(got) == 5
    for rd, x1, x2 in got:
        _check(aucs[(int(rd), 1)], x1, what=f"AUC r{rd} t1")
        _check(aucs[(int(rd), 2)], x2, what=f"AUC r{rd} t2")
    means = head.split("TREATMENT AUC MEANS")[1].split("MEAN DIFFERENCES")[0]
    for tst, m in _rows(means, rf"^\s+([12])\s+{N}\s*$"):
        _check(_sel(res.test_means, test=int(tst)).auc, m, what="mean")
    (d,), = _rows(head, rf"1 - 2\s+{N}\s*$")
    _check(res.test_means.auc[0] - res.test_means.auc[1], d, what="mean difference")
    tr = head.split("TREATMENT X READER ANOVA")[1].split("READER ANOVAs")[0]
    for src, ss, df, ms in _rows(tr, rf"^\s+(T|R|T\*R)\s+{N}\s+{N}\s+{N}\s*$"):
        row = _sel(res.anova, source=src)
        _check(row.ss, ss, what=f"SS {src}"), _check(row.df, df), _check(row.ms, ms, what=f"MS {src}")
    (df, m1, m2), = _rows(head.split("READER ANOVAs")[1], rf"^\s+R\s+{N}\s+{N}\s+{N}\s*$")
    by = res.anova_by[res.anova_by.by == "test"].set_index("level")
    _check(by.df[1], df), _check(by.ms[1], m1, what="MS(R) t1"), _check(by.ms[2], m2, what="MS(R) t2")
    comp = res.components.set_index(["model", "component"])
    or_names = {"Var(R)": "var_R", "Var(T*R)": "var_TR", "COV1": "cov1", "COV2": "cov2", "COV3": "cov3",
                "Var(Error)": "var_error"}
    or_part = head.split("OR Component")[1].split("DBM Component")[0]
    for name, key in or_names.items():
        (vals,) = [ln.split()[1:] for ln in or_part.splitlines() if ln.strip().startswith(name)]
        _check(comp.estimate[("OR", key)], vals[0], what=name)
        if len(vals) > 1:
            _check(comp.correlation[("OR", key)], vals[1], what=f"corr {name}")
    dbm_part = head.split("DBM Component")[1]
    for name in ("Var(R)", "Var(C)", "Var(T*R)", "Var(T*C)", "Var(R*C)"):
        (v,), = _rows(dbm_part, rf"^\s+{re.escape(name)}\s+{N}\s*$")
        _check(comp.estimate[("DBM", name)], v, what=f"DBM {name}")
    (v,), = _rows(dbm_part, rf"Var\(T\*R\*C\) \+ Var\(Error\)\s+{N}")
    _check(comp.estimate[("DBM", "Var(T*R*C)+Var(Error)")], v)

    # Analysis 1: random readers and random cases.
    g = _sel(res.global_tests, analysis="RRRC")
    (df1, ms_t, f, p), = _rows(a1, rf"^ Treatment\s+{N}\s+{N}\s+{N}\s+{N}\s*$")
    _check(g.df1, df1), _check(res.anova.ms[0], ms_t), _check(g.value, f, what="F"), _check(g.p, p, what="p")
    (ddf, err), = _rows(a1, rf"^ Error term\s+{N}\s+{N}\s*$")
    _check(g.df2, ddf, what="ddf_H"), _check(g.error_ms, err, what="error term")
    _check_diff(res, "RRRC", _rows(a1, rf"1 - 2\s+{N}\s+{N}\s+{N}\s+{N}\s+{N}\s+\({N} ,\s+{N}\)"),
                ("diff", "se", "df", "value", "p", "ci_low", "ci_high"))
    single = _rows(a1, rf"^\s+([12])\s+{N}\s+{N}\s+{N}\s+\({N} , {N}\)\s+{N}\s*$")
    _check_single(res, "RRRC", single, ("auc", "se", "df", "ci_low", "ci_high", "cov2"))

    # Analysis 2: fixed readers, random cases.
    g = _sel(res.global_tests, analysis="FRRC")
    (x2, df1, p), = _rows(a2, rf"^\s+{N}\s+{N}\s+{N}\s*$\n\s*\n Conclusion")
    _check(g.value, x2, what="X2"), _check(g.df1, df1), _check(g.p, p)
    _check_diff(res, "FRRC", _rows(a2, rf"^\s+1 - 2\s+{N}\s+{N}\s+{N}\s+{N}\s+\({N} ,\s+{N}\)"),
                ("diff", "se", "value", "p", "ci_low", "ci_high"))
    c_part = a2.split("c) Single treatment")[1].split("d) Single-reader")[0]
    _check_single(res, "FRRC", _rows(c_part, rf"^\s+([12])\s+{N}\s+{N}\s+\({N} , {N}\)\s*$"),
                  ("auc", "se", "ci_low", "ci_high"))
    _check_single(res, "FRRC", _rows(c_part, rf"^\s+([12])\s+{N}\s+{N}\s*$"), ("var_error", "cov2"))
    d_part = a2.split("d) Single-reader")[1]
    per = _rows(d_part, rf"^\s+(\d)\s+1 - 2\s+{N}\s+{N}\s+{N}\s+{N}\s+\({N} ,\s+{N}\)")
    var = _rows(d_part, rf"^\s+(\d)\s+{N}\s+{N}\s*$")
    assert len(per) == len(var) == 5
    for row in per:
        ours = _sel(res.single_reader, reader=int(row[0]))
        for k, v in zip(("diff", "se", "value", "p", "ci_low", "ci_high"), row[1:]):
            _check(ours[k], v, what=f"reader {row[0]} {k}")
    for rd, ve, c1 in var:
        ours = _sel(res.single_reader, reader=int(rd))
        _check(ours.var_error, ve), _check(ours.cov1, c1, what=f"cov1 reader {rd}")

    # Analysis 3: random readers, fixed cases.
    g = _sel(res.global_tests, analysis="RRFC")
    (df1, _, f, p), = _rows(a3, rf"^ Treatment\s+{N}\s+{N}\s+{N}\s+{N}\s*$")
    _check(g.df1, df1), _check(g.value, f), _check(g.p, p)
    (df2, ms_tr), = _rows(a3, rf"^ T\*R\s+{N}\s+{N}\s*$")
    _check(g.df2, df2), _check(g.error_ms, ms_tr)
    _check_diff(res, "RRFC", _rows(a3, rf"1 - 2\s+{N}\s+{N}\s+{N}\s+{N}\s+{N}\s+\({N} ,\s+{N}\)"),
                ("diff", "se", "df", "value", "p", "ci_low", "ci_high"))
    _check_single(res, "RRFC", _rows(a3, rf"^\s+([12])\s+{N}\s+{N}\s+{N}\s+{N}\s+\({N} , {N}\)\s*$"),
                  ("auc", "ms_R", "se", "df", "ci_low", "ci_high"))
    assert "F = 4.46 (df 1, 15.26), p = 0.0517" in res.summary()
    assert "F = 4.46 (df 1, 15.26), p = 0.0517" in res.report()


def _check_diff(res, analysis, rows, keys, rtol=0.0, a=1, b=2):
    (row,) = rows
    ours = _sel(res.differences, analysis=analysis, test_a=a, test_b=b)
    for k, v in zip(keys, row):
        _check(ours[k], v, rtol, what=f"{analysis} {k}")


def _check_single(res, analysis, rows, keys, rtol=0.0, shift=0):
    assert len(rows) == 2
    for row in rows:
        ours = _sel(res.single_test, analysis=analysis, test=int(row[0]) + shift)
        for k, v in zip(keys, row[1:]):
            _check(ours[k], v, rtol, what=f"{analysis} test {row[0]} {k}")


def test_dbm_reproduces_jafroc_421_output(dbm_fit):
    text = (DATA / "vandyke_JAFROC-4.2.1_DBM_output.txt").read_text(errors="replace")
    head, a1, a2, a3 = _sections(text, r"\*{5}\s+Analysis \d: ")
    res, rt = dbm_fit, 1e-5
    aucs = res.aucs.set_index(["reader", "test"])["auc"]
    est = head.split("Estimates")[1].split("TREATMENT MEANS")[0]
    got = _rows(est, rf"^(\d)\s+{N}\s+{N}\s*$")
    assert len(got) == 5
    for rd, x1, x2 in got:  # JAFROC numbers readers and tests from 0
        _check(aucs[(int(rd) + 1, 1)], x1, rt), _check(aucs[(int(rd) + 1, 2)], x2, rt)
    means = head.split("TREATMENT MEANS")[1].split("TREATMENT MEAN DIFFERENCES")[0]
    for tst, m in _rows(means, rf"^([01])\s+{N}\s*$"):
        _check(_sel(res.test_means, test=int(tst) + 1).auc, m, rt)
    (d,), = _rows(head, rf"^0\s+- 1\s+{N}\s*$")
    _check(res.test_means.auc[0] - res.test_means.auc[1], d, rt)
    for what, v in _rows(head, rf"Number of (Readers|Treatments|Normal Cases|Abnormal Cases)\s+:\s+{N}"):
        ours = {"Readers": len(res.readers), "Treatments": len(res.tests), "Normal Cases": res.n_neg,
                "Abnormal Cases": res.n_pos}[what]
        assert ours == int(v), what
    anova = head.split("TREATMENT X READER X CASE ANOVA")[1].split("READER X CASE ANOVAs")[0]
    got = _rows(anova, rf"^\s+(T|R|C|TR|TC|RC|TRC|TOTAL)\s+{N}\s+{N}(?:\s+{N})?\s*$")
    assert len(got) == 8
    for src, ss, df, ms in got:
        row = _sel(res.anova, source=src)
        _check(row.ss, ss, rt, what=f"SS {src}"), _check(row.df, df)
        if ms:
            _check(row.ms, ms, rt, what=f"MS {src}")
    rc = head.split("READER X CASE ANOVAs")[1].split("Variance components")[0]
    by = res.anova_by[res.anova_by.by == "test"].set_index(["level", "source"])
    for src, df, m0, m1 in _rows(rc, rf"^\s+(R|C|RC)\s+{N}\s+{N}\s+{N}\s*$"):
        _check(by.df[(1, src)], df), _check(by.ms[(1, src)], m0, rt), _check(by.ms[(2, src)], m1, rt)
    comp = res.components.set_index(["model", "component"]).estimate
    vc = head.split("DBM Variance Component Estimates")[1]
    for name in ("Var(R)", "Var(C)", "Var(T*R)", "Var(T*C)", "Var(R*C)"):
        (v,), = _rows(vc, rf"^\s+{re.escape(name)}\s+{N}\s*$")
        _check(comp[("DBM", name)], v, rt, what=name)
    (v,), = _rows(vc, rf"Var\(T\*R\*C\) \+ Var\(Error\)\s+{N}")
    _check(comp[("DBM", "Var(T*R*C)+Var(Error)")], v, rt)
    for name, key in (("Reader", "var_R"), ("Treatment\\*Reader", "var_TR"), ("COV1", "cov1"),
                      ("COV2", "cov2"), ("COV3", "cov3"), ("ERROR", "var_error")):
        (v,), = _rows(vc, rf"^\s+{name}\s+{N}\s*$")
        _check(comp[("OR", key)], v, rt, what=key)

    diff_pat = rf"^0\s+- 1\s+{N}\s+{N}\s+{N}\s+{N}\s+{N}\s+{N} ,\s+{N}"
    single_pat = rf"^\s+(\d)\s+{N}\s+{N}\s+{N}\s+\({N} , {N}\)\s*$"
    keys = ("diff", "se", "df", "value", "p", "ci_low", "ci_high")
    for an, part in (("RRRC", a1), ("FRRC", a2), ("RRFC", a3)):
        g = _sel(res.global_tests, analysis=an)
        (df1, ms_t, f, p), = _rows(part, rf"^ Treatment\s+{N}\s+{N}\s+{N}\s+{N}\s*$")
        _check(g.df1, df1), _check(res.anova.ms[0], ms_t, rt), _check(g.value, f), _check(g.p, p, what=an)
        (df2, err), = _rows(part, rf"^ Error\s+{N}\s+{N}\s*$")
        _check(g.df2, df2), _check(g.error_ms, err, rt, what=f"{an} error term")
        _check_diff(res, an, _rows(part, diff_pat), keys)
        _check_single(res, an, _rows(part, single_pat), ("auc", "se", "df", "ci_low", "ci_high"), rt, shift=1)

    # Analysis 2 (d): per-reader treatment x case ANOVAs and CIs.
    tc = a2.split("TREATMENT X CASE ANOVAs for each reader")[1]
    ss_part, ms_part = tc.split("Mean Squares")
    rdr = res.anova_by[res.anova_by.by == "reader"].set_index(["level", "source"])
    for part, col in ((ss_part, "ss"), (ms_part.split("d) Treatment")[0], "ms")):
        for src, df, *vals in _rows(part, rf"^\s+(T|C|TC)\s+{N}" + rf"\s+{N}" * 5 + r"\s*$"):
            for j, v in enumerate(vals, 1):
                _check(rdr.df[(j, src)], df), _check(rdr[col][(j, src)], v, rt, what=f"{col} {src} r{j}")
    per = _rows(a2, rf"^(\d)\s+0\s+-1\s+{N}\s+{N}\s+{N}\s+{N}\s+{N}\s+{N} ,\s+{N}")
    assert len(per) == 5
    for row in per:
        ours = _sel(res.single_reader, reader=int(row[0]) + 1)
        for k, v in zip(keys, row[1:]):
            _check(ours[k], v, what=f"reader {row[0]} {k}")


def test_or_jackknife_equals_dbm_normalized_pseudovalues(franken):
    """Hillis, Obuchowski & Berbaum (2008): identical results (Franken data) except where the
    OR fixed-reader error term applies max(Cov2 − Cov3, 0) and DBM's MS(TC) does not."""
    o, d = mrmc_or(franken, COLS), mrmc_dbm(franken, COLS)
    c = franken.case.nunique()
    for an in ("RRRC", "RRFC"):
        go, gd = _sel(o.global_tests, analysis=an), _sel(d.global_tests, analysis=an)
        assert (go.value, go.df2, go.p) == pytest.approx((gd.value, gd.df2, gd.p), rel=1e-9)
        assert go.error_ms == pytest.approx(gd.error_ms / c, rel=1e-9)
        do, dd = (_sel(x.differences, analysis=an) for x in (o, d))
        assert (do["diff"], do.se, do.ci_low) == pytest.approx((dd["diff"], dd.se, dd.ci_low), rel=1e-9)
        so = o.single_test[o.single_test.analysis == an].se.to_numpy()
        sd = d.single_test[d.single_test.analysis == an].se.to_numpy()
        np.testing.assert_allclose(so, sd, rtol=1e-9)
    co = o.components.set_index(["model", "component"]).estimate
    cd = d.components.set_index(["model", "component"]).estimate
    np.testing.assert_allclose(co.to_numpy(), cd.reindex(co.index).to_numpy(), rtol=1e-9)
    # Franken has Cov2 < Cov3: the OR fixed-reader error drops the (r − 1)(Cov2 − Cov3) term.
    r = franken.reader.nunique()
    ve, c1, c2, c3 = (co[("OR", k)] for k in ("var_error", "cov1", "cov2", "cov3"))
    assert c2 < c3
    assert _sel(o.global_tests, analysis="FRRC").error_ms == pytest.approx(ve - c1, rel=1e-12)
    ms_tc = _sel(d.global_tests, analysis="FRRC").error_ms
    assert ms_tc / c == pytest.approx(ve - c1 + (r - 1) * (c2 - c3), rel=1e-9)


def test_swapping_tests_flips_differences_and_f_is_t_squared(vandyke):
    cols = ReadColumns(phase="modality_name", score="rating")
    fwd = mrmc_or(vandyke, cols, covariance="delong")
    rev_reads = vandyke.assign(modality_name=pd.Categorical(vandyke.modality_name, ["SE_MRI", "CINE_MRI"]))
    rev = mrmc_or(rev_reads, cols, covariance="delong")
    for an in ("RRRC", "FRRC", "RRFC"):
        a, b = _sel(fwd.differences, analysis=an), _sel(rev.differences, analysis=an)
        assert (a.test_a, b.test_a) == ("CINE_MRI", "SE_MRI")
        assert a["diff"] == pytest.approx(-b["diff"]) and a.se == pytest.approx(b.se)
        assert (a.ci_low, a.ci_high) == pytest.approx((-b.ci_high, -b.ci_low))
        assert a.p == pytest.approx(b.p)
        g = _sel(fwd.global_tests, analysis=an)
        assert g.value == pytest.approx(a.value ** 2, rel=1e-10)  # two tests: F (or X2) = t² (or z²)
        assert g.p == pytest.approx(a.p, rel=1e-8)


def test_fixed_cases_is_repeated_measures_anova_of_aucs(franken):
    """RRFC = test × reader repeated-measures ANOVA of the AUCs (statsmodels AnovaRM); 3 tests."""
    extra = franken[franken.modality == 1].assign(
        modality=3, rating=lambda d: d.rating + np.random.default_rng(1).integers(-1, 2, len(d)))
    reads = pd.concat([franken, extra])
    res = mrmc_or(reads, COLS)
    ref = AnovaRM(res.aucs, depvar="auc", subject="reader", within=["test"]).fit().anova_table
    g = _sel(res.global_tests, analysis="RRFC")
    assert (g.value, g.df1, g.df2, g.p) == pytest.approx(
        tuple(ref.loc["test", ["F Value", "Num DF", "Den DF", "Pr > F"]]), rel=1e-9)
    assert len(res.differences) == 3 * 3  # 3 pairs × 3 analyses
    pair = _sel(res.differences, analysis="RRFC", test_a=1, test_b=3)
    w = res.aucs.pivot(index="reader", columns="test", values="auc")
    assert pair["diff"] == pytest.approx((w[1] - w[3]).mean())
    two = _sel(mrmc_or(franken, COLS).differences, analysis="RRFC")  # 2 tests: the paired t-test
    ref = stats.ttest_rel(w[1], w[2])
    assert (two.value, two.p, two.df) == pytest.approx((ref.statistic, ref.pvalue, ref.df), rel=1e-9)


def test_jackknife_closed_form_matches_refitting(franken):
    d = franken[(franken.reader == 1) & (franken.modality == 1)].sort_values("case")
    truth, s = d.truth.to_numpy(), d.rating.to_numpy()
    a, loo = jackknife_aucs(truth, s[None])
    assert a[0] == pytest.approx(auc(truth, s))
    ref = [auc(np.delete(truth, k), np.delete(s, k)) for k in range(len(s))]
    np.testing.assert_allclose(loo[:, 0], ref, rtol=1e-12)


def test_unbiased_covariance_is_the_u_statistic_written_out():
    rng = np.random.default_rng(3)
    truth = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0])
    scores = rng.integers(1, 4, (2, 9)).astype(float) + truth  # ties on purpose
    a, cov = unbiased_cov(truth, scores)
    x, y = scores[:, truth == 1], scores[:, truth == 0]
    m, n = x.shape[1], y.shape[1]
    psi = lambda k, i, j: float(x[k, i] > y[k, j]) + 0.5 * float(x[k, i] == y[k, j])  # noqa: E731
    for ka, kb in itertools.product(range(2), repeat=2):
        cross = [psi(ka, i, j) * psi(kb, i2, j2) for i, i2 in itertools.permutations(range(m), 2)
                 for j, j2 in itertools.permutations(range(n), 2)]
        # E[Â_a Â_b] estimated by Â_a Â_b; A_a A_b estimated without bias by disjoint pairs.
        assert cov[ka, kb] == pytest.approx(a[ka] * a[kb] - np.mean(cross), abs=1e-12)


def test_delong_covariance_per_reader_matches_delong_test(vandyke):
    res = mrmc_or(vandyke, COLS, covariance="delong")
    for rd in (1, 5):
        d = vandyke[vandyke.reader == rd].pivot(index="case", columns="modality", values="rating")
        truth = vandyke.drop_duplicates("case").set_index("case").truth.reindex(d.index)
        ref = delong(truth.to_numpy(), d[1].to_numpy(), d[2].to_numpy())
        ours = _sel(res.single_reader, reader=rd)
        assert (ours["diff"], ours.se, ours.p) == pytest.approx((ref.diff, ref.se, ref.p), rel=1e-9)


def test_input_left_unchanged_and_bad_options(vandyke):
    before = vandyke.copy()
    mrmc_or(vandyke, COLS, covariance="unbiased")
    pd.testing.assert_frame_equal(vandyke, before)
    with pytest.raises(ValueError, match="covariance='bootstrap' is not one of 'jackknife', 'delong', 'unbiased'"):
        mrmc_or(vandyke, COLS, covariance="bootstrap")
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\), got 5"):
        mrmc_dbm(vandyke, COLS, alpha=5)


def _small(vandyke):
    return vandyke[vandyke.case.isin([1, 2, 3, 4, 20, 70, 71, 72, 73])].copy()


@pytest.mark.parametrize("edit, match", [
    (lambda d: d[~((d.case == 3) & (d.modality == 2))], r"case 3 was read only in \['1'\]"),
    (lambda d: d[~((d.reader == 2) & (d.truth == 1))], r"reader\(s\) \[2\] saw only one truth class"),
    (lambda d: d.drop(columns="rating"), r"lacks column\(s\) 'rating' \(score\)"),
    (lambda d: d.assign(truth=d.truth * 2), r"'truth' \(truth\) must be binary 0/1, found values \[2\]"),
    (lambda d: d[~((d.reader == 4) & (d.case == 20))], r"fully crossed.*reader 4 misses 1 case\(s\) such as \[20\]"),
    (lambda d: d[d.modality == 1], r"'modality' \(phase\) has only 1 level"),
    (lambda d: d[d.reader == 1], r"at least 2 readers"),
])
def test_bad_input_names_the_problem(vandyke, edit, match):
    reads = _small(vandyke)
    assert reads.groupby("truth").case.nunique().tolist() == [5, 4]
    for fn in (mrmc_or, mrmc_dbm):
        with pytest.raises(ReadsError, match=match):
            fn(edit(reads), COLS)


def test_partially_paired_kundel_is_refused_clearly():
    kundel = pd.read_csv(DATA / "kundel_1997_mrmc.csv")
    with pytest.raises(ReadsError, match=r"not read in every phase .*case 1 was read only in \['1'\]"):
        mrmc_or(kundel, COLS)


def test_identical_tests_give_nan_with_a_warning_not_a_spurious_p(vandyke):
    reads = _small(vandyke)
    first = reads[reads.modality == 1].set_index(["reader", "case"]).rating
    reads["rating"] = first.reindex(pd.MultiIndex.from_frame(reads[["reader", "case"]])).to_numpy()
    for fn in (mrmc_or, mrmc_dbm):
        with pytest.warns(RuntimeWarning) as rec:
            res = fn(reads, COLS)
        msgs = {str(w.message).split(":")[0] for w in rec}
        assert {"standard error is 0.0 (e.g. identical ratings in every test)"} < msgs
        assert sum("error term is 0.0" in str(w.message) for w in rec) == 3  # one per analysis
        assert res.global_tests.value.isna().all() and res.global_tests.p.isna().all()
        assert (res.differences["diff"] == 0).all()


def test_tables_are_the_native_tables_long_with_the_statistic_named(or_fit):
    tables = or_fit.tables()
    assert list(tables) == list(or_fit.native_tables()) and list(tables)[0] == "differences"
    pd.testing.assert_frame_equal(tables["differences"], or_fit.to_frame())
    g = tables["global_tests"].set_index(["analysis", "metric"])["value"]
    # the statistic's value carries its name (F, X2), next to df1, df2, p and the error term
    assert g[("RRRC", "F")] == _sel(or_fit.global_tests, analysis="RRRC").value
    assert g[("FRRC", "X2")] == _sel(or_fit.global_tests, analysis="FRRC").value
    assert set(g.loc["RRFC"].index) == {"F", "df1", "df2", "p", "error_ms"}
    d = tables["differences"]
    assert list(d.columns) == ["analysis", "test_a", "test_b", "reason", "metric", "value"]
    assert set(d.loc[d.analysis == "FRRC", "metric"]) == {"diff", "se", "df", "z", "p", "ci_low", "ci_high"}
    assert set(d.loc[d.analysis == "RRRC", "metric"]) == {"diff", "se", "df", "t", "p", "ci_low", "ci_high"}
    s = or_fit.summary()
    assert "RRRC" in s._repr_html_() and "<table" in s._repr_html_()
