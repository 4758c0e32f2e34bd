"""TP/TN/FP/FN evolution, decision changes, McNemar and Cochran's Q (audit.readers.outcomes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import cochrans_q, mcnemar

from audit.readers.outcomes import (cochran_q_correctness, decision_changes, mcnemar_correctness,
                                   outcome_counts, outcome_transitions)
from audit.readers.reads import ReadsError

TRUTH = {"c1": 1, "c2": 1, "c3": 0, "c4": 0}
AI = {"c1": 0.9, "c2": 0.2, "c3": 0.7, "c4": 0.1}  # AI right on c1, c4; wrong on c2, c3
DEC = {  # reader → phase → decisions on c1..c4
    "A": {"P1": [0, 1, 0, 1], "P2": [1, 0, 1, 1], "P3": [1, 0, 1, 0]},
    "B": {"P1": [1, 1, 0, 0], "P2": [1, 1, 0, 0], "P3": [1, 0, 0, 0]},
}


def _hand() -> pd.DataFrame:
    rows = []
    for rd, phases in DEC.items():
        for ph, ds in phases.items():
            for c, d in zip(TRUTH, ds):
                rows.append({"reader": rd, "case": c, "truth": TRUTH[c], "phase": ph, "decision": d,
                             "ai_prob": np.nan if ph == "P1" else AI[c]})  # AI not shown in P1
    return pd.DataFrame(rows)


def _random(seed: int = 5, n_cases: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n_cases)
    truth[:2] = [0, 1]
    rows = []
    for rd in ("r1", "r2", "r3"):
        for ph, acc in (("U", 0.7), ("AI", 0.8), ("XAI", 0.85)):
            ok = rng.random(n_cases) < acc
            for c in range(n_cases):
                rows.append({"reader": rd, "case": c, "truth": truth[c], "phase": ph,
                             "decision": int(truth[c] if ok[c] else 1 - truth[c])})
    return pd.DataFrame(rows)


def test_outcome_counts_by_hand():
    oc = outcome_counts(_hand()).table.set_index(["phase", "reader"])
    # A, P1: c1 FN, c2 TP, c3 TN, c4 FP;  A, P2: c1 TP, c2 FN, c3 FP, c4 FP
    assert oc.loc[("P1", "A"), ["tp", "tn", "fp", "fn", "n"]].tolist() == [1, 1, 1, 1, 4]
    assert oc.loc[("P2", "A"), ["tp", "tn", "fp", "fn"]].tolist() == [1, 0, 2, 1]
    assert oc.loc[("P2", "A"), "specificity"] == 0 and oc.loc[("P2", "A"), "ppv"] == pytest.approx(1 / 3)
    pooled = outcome_counts(_hand(), by=("phase",)).table.set_index("phase")
    # B, P3: c1 TP, c2 FN, c3 TN, c4 TN; A, P3: c1 TP, c2 FN, c3 FP, c4 TN
    assert pooled.loc["P3", ["tp", "tn", "fp", "fn"]].tolist() == [2, 3, 1, 2]
    assert pooled.loc["P3", "accuracy"] == pytest.approx(5 / 8)


def test_outcome_transitions_by_hand():
    t = outcome_transitions(_hand()).table
    a = t[(t.reader == "A") & (t.phase_from == "P1")].set_index(["outcome_from", "outcome_to"])["n"]
    assert len(a) == 16 and a.sum() == 4
    assert a[("FN", "TP")] == 1 and a[("TP", "FN")] == 1 and a[("TN", "FP")] == 1 and a[("FP", "FP")] == 1
    pooled = outcome_transitions(_hand(), pooled=True).table
    p = pooled[pooled.phase_from == "P2"].set_index(["outcome_from", "outcome_to"])["n"]
    # P2→P3: A c4 FP→TN; B c2 TP→FN; unchanged: A c1 TP, c2 FN, c3 FP; B c1 TP, c3 TN, c4 TN
    assert p[("FP", "TN")] == 1 and p[("TP", "FN")] == 1 and p[("TP", "TP")] == 2 and p.sum() == 8


def test_decision_changes_toward_ai_by_hand():
    d = decision_changes(_hand()).table.set_index(["reader", "phase_from", "ai_correct"])
    cols = ["n", "n_changed", "n_0to1", "n_1to0", "n_toward_ai", "n_away_from_ai", "n_to_correct", "n_to_wrong"]
    # A, P1→P2, AI right (c1, c4): c1 0→1 toward the AI, now correct; c4 unchanged
    assert d.loc[("A", "P1", True), cols].tolist() == [2, 1, 1, 0, 1, 0, 1, 0]
    # A, P1→P2, AI wrong (c2, c3): c2 1→0 and c3 0→1, both toward the AI, both now wrong
    assert d.loc[("A", "P1", False), cols].tolist() == [2, 2, 1, 1, 2, 0, 0, 2]
    # A, P2→P3: c4 1→0 toward the (right) AI
    assert d.loc[("A", "P2", True), cols].tolist() == [2, 1, 0, 1, 1, 0, 1, 0]
    # B, P2→P3: c2 1→0 toward the (wrong) AI
    assert d.loc[("B", "P2", False), cols].tolist() == [2, 1, 0, 1, 1, 0, 0, 1]
    assert d.loc[("B", "P1", True), "n_changed"] == 0 and np.isnan(d.loc[("B", "P1", True), "frac_toward_ai"])
    pooled = decision_changes(_hand(), pooled=True).table.set_index(["phase_from", "ai_correct"])
    assert pooled.loc[("P1", False), cols].tolist() == [4, 2, 1, 1, 2, 0, 0, 2]
    one = decision_changes(_hand(), phase_from="P1", phase_to="P3", pooled=True).table.set_index("ai_correct")
    # P1→P3, AI right (c1, c4): A c1 0→1, A c4 1→0 toward; AI wrong: A c2 1→0, A c3 0→1, B c2 1→0 toward
    assert one.loc[True, "n_toward_ai"] == 2 and one.loc[False, "n_toward_ai"] == 3


def test_mcnemar_by_hand_and_against_statsmodels_and_binomial():
    m = mcnemar_correctness(_hand(), phase_a="P1", phase_b="P2").table
    a = m[m.reader == "A"].iloc[0]
    # A correct in P1 on c2, c3 and in P2 on c1 only: a_only = 2 (c2, c3), b_only = 1 (c1), both wrong = 1 (c4)
    assert [a.both_correct, a.a_only_correct, a.b_only_correct, a.both_wrong] == [0, 2, 1, 1]
    assert a.p == pytest.approx(stats.binomtest(1, 3, 0.5).pvalue) and a.exact
    r = _random()
    m = mcnemar_correctness(r, phase_a="U", phase_b="XAI").table
    r["correct"] = (r["decision"] == r["truth"]).astype(int)
    w = r.pivot(index=["reader", "case"], columns="phase", values="correct")
    for _, row in m.iterrows():
        sub = w if row.scope == "pooled" else w.loc[row.reader]
        tab = pd.crosstab(sub["U"], sub["XAI"]).reindex(index=[1, 0], columns=[1, 0], fill_value=0).to_numpy()
        b, c = tab[0, 1], tab[1, 0]
        assert [row.a_only_correct, row.b_only_correct] == [b, c]
        ref = mcnemar(tab, exact=b + c < 25)
        assert row.p == pytest.approx(ref.pvalue) and row.statistic == pytest.approx(ref.statistic)
        if b + c < 25:
            assert row.p == pytest.approx(min(1.0, stats.binomtest(min(b, c), b + c, 0.5).pvalue))
        else:  # χ² with continuity correction, written out
            chi2 = (abs(b - c) - 1) ** 2 / (b + c)
            assert row.statistic == pytest.approx(chi2) and row.p == pytest.approx(stats.chi2.sf(chi2, 1))
    assert (m.scope == "pooled").sum() == 1 and not m[m.scope == "pooled"].exact.item()


def test_cochran_q_against_closed_form_and_statsmodels():
    r = _random()
    q = cochran_q_correctness(r).table
    r["correct"] = (r["decision"] == r["truth"]).astype(int)
    w = r.pivot(index=["reader", "case"], columns="phase", values="correct")[["U", "AI", "XAI"]]
    for _, row in q.iterrows():
        x = (w if row.scope == "pooled" else w.loc[row.reader]).to_numpy()
        k, cj, ri = x.shape[1], x.sum(axis=0), x.sum(axis=1)
        n = x.sum()
        closed = (k - 1) * (k * (cj ** 2).sum() - n ** 2) / (k * n - (ri ** 2).sum())
        assert row.statistic == pytest.approx(closed)
        assert row.statistic == pytest.approx(cochrans_q(x).statistic)
        assert row.p == pytest.approx(stats.chi2.sf(closed, k - 1)) and row.df == 2
        assert row["acc_XAI"] == pytest.approx(x[:, 2].mean())


@pytest.mark.parametrize("call, err, match", [
    (lambda: outcome_counts(_hand().drop(columns="decision")), ReadsError, r"lacks column\(s\) 'decision'"),
    (lambda: outcome_counts(_hand(), by=("case",)), ValueError, r"by must be a non-empty subset"),
    (lambda: decision_changes(_hand().drop(columns="ai_prob")), ReadsError, r"lacks the column 'ai_prob'"),
    (lambda: decision_changes(_hand().assign(ai_prob=np.where(_hand().case == "c2", np.nan, _hand().ai_prob))),
     ReadsError, r"no ai_prob in phase 'P2' nor 'P1', e.g. reader 'A', case 'c2'"),
    (lambda: decision_changes(_hand(), ai_threshold=1.5), ValueError, r"ai_threshold must lie in \(0, 1\)"),
    (lambda: mcnemar_correctness(_hand(), phase_a="P1", phase_b="P9"), ValueError, r"phase_to='P9' is not a phase"),
    (lambda: cochran_q_correctness(_hand(), phases=["P1", "P2"]), ValueError, r"≥ 3 phases"),
    (lambda: mcnemar_correctness(_hand()[_hand().phase == "P1"]), ReadsError, r"needs ≥ 2 phases"),
    (lambda: outcome_transitions(_hand().iloc[1:]), ReadsError, r"not read in every phase"),
])
def test_bad_input_names_the_problem(call, err, match):
    with pytest.raises(err, match=match):
        call()
