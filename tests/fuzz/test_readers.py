"""Bad inputs for the reader-study entry points (``audit.readers``): reads tables and case arrays.

A reads table (one row per reader × case × phase) is checked at the door: a missing column,
NaN where a value is needed, truth that is not 0/1, an AI probability outside [0, 1], duplicate
reads, an empty table or one case only raise a ``ReadsError`` (an ``AuditInputError``) naming
the column. A comparison the reads cannot support — two phases read by different reader sets,
a reader or phase without both truth classes — is NaN with its reason and one
``UndefinedValueWarning``. The valid table is :func:`audit.readers.example_reads` (4 readers ×
37 cases × 3 phases), built once and copied per call.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from audit.readers import (ReadsError, analyze_reads, brier_score, calibration_fit, cluster_bootstrap,
                           cochran_q_correctness, decision_changes, decision_curve, delong,
                           expected_calibration_error, fit_gee, gee_assistance, mcnemar_correctness, mrmc_dbm,
                           mrmc_or, net_benefit, outcome_counts, outcome_transitions, reader_roc, reads_calibration,
                           reads_decision_curve, reliability_curve, roc_points, simulate_reads, validate_reads,
                           vertical_average, write_example_reads)
from audit.readers.simulate import example_reads
from probes.core.errors import AuditInputError, UndefinedValueWarning
from tests.fuzz.harness import KINDS, Bad, Row, params, run_case


@lru_cache(maxsize=1)
def _example() -> pd.DataFrame:
    return example_reads()


def _reads() -> pd.DataFrame:
    return _example().copy()


def _nan_at_first(col: str):
    return lambda r: r.assign(**{col: r[col].where(r.index != r.index[0])})


def _without_r1_in(phase: str):
    return lambda r: r[~((r["reader"] == "R1") & (r["phase"] == phase))]


UNPAIRED = "a phase read by a different reader set"
READS = [
    Bad("a missing column (truth)", lambda r: r.drop(columns="truth"), "error"),
    Bad("NaN scores", _nan_at_first("score"), "error"),
    Bad("ai_prob outside [0, 1]", lambda r: r.assign(ai_prob=r["ai_prob"].where(r.index != r.index[0], 1.5)),
        "error"),
    Bad("truth not 0/1", lambda r: r.assign(truth=r["truth"] * 2), "error"),
    Bad("truth differing within a case", lambda r: r.assign(truth=r["truth"].where(r.index != r.index[0],
                                                                                     1 - r["truth"])), "error"),
    Bad("duplicate reader×case×phase rows", lambda r: pd.concat([r, r.head(1)], ignore_index=True), "error"),
    Bad("an empty table", lambda r: r.iloc[:0], "error"),
    Bad("one case only", lambda r: r[r["case"] == r["case"].iloc[0]], "error"),
    Bad(UNPAIRED, _without_r1_in("MRI+AI"), "error"),
    Bad("not a DataFrame", lambda r: r.to_dict("list"), "error"),
    Bad("columns in another order", lambda r: r[list(r.columns)[::-1]], "same"),
]
SCORE_UNUSED = "the score column is not used here (NaN there is left for the instruments that need it)"
UNPAIRED_OK = "an unpaired design is allowed here: each phase is summarised on its own reads"
AI_PER_CASE = "the AI's probability is one value per case; every case is still read in every phase"


def _unused_score(**more: str) -> tuple[dict, dict]:
    expect = {("reads", "NaN scores"): "same", **{("reads", k): v for k, v in more.items()}}
    why = {("reads", "NaN scores"): SCORE_UNUSED}
    return expect, why


# the array-level instruments: labels 0/1 and a probability per case (not separable, so that a
# calibration slope exists)
LABELS = np.array([0, 1, 0, 1, 1, 0, 1, 0])
PROB = np.array([0.2, 0.7, 0.6, 0.4, 0.9, 0.3, 0.55, 0.35])
PROBS = [
    Bad("a NaN", lambda p: np.where(np.arange(len(p)) == 0, np.nan, p), "error"),
    Bad("outside [0, 1]", lambda p: np.where(np.arange(len(p)) == 0, 1.5, p), "error"),
    Bad("wrong length", lambda p: np.asarray(p)[:-1], "error"),
    Bad("a list", lambda p: list(np.asarray(p)), "same"),
    Bad("a string", lambda p: "0.5", "error"),
]
SCORES = [b for b in PROBS if b.label != "outside [0, 1]"] + [
    Bad("outside [0, 1]", lambda p: np.asarray(p) * 100, "ok")]
THRESHOLDS = [
    Bad("1.0", lambda t: [0.1, 1.0], "error"),
    Bad("a NaN", lambda t: [0.1, np.nan], "error"),
    Bad("empty", lambda t: [], "error"),
]
ONE_CLASS_OK = "defined for a single class (the rates of the class present)"


def _arrays(**extra):
    return lambda k: {"labels": LABELS.copy(), "prob": PROB.copy(), **extra}


def _gee_arrays(k) -> dict:
    r = _example()
    y = (r["decision"] == r["truth"]).astype(float).to_numpy()
    x = pd.get_dummies(r["phase"], drop_first=True, dtype=float)
    x.insert(0, "const", 1.0)
    return {"endog": y, "exog": x, "groups": r["case"].to_numpy()}


GEE_ENDOG = [
    Bad("values 0/2", lambda y: y * 2, "error"),
    Bad("a NaN", lambda y: np.where(np.arange(len(y)) == 0, np.nan, y), "error"),
    Bad("wrong length", lambda y: y[:-1], "error"),
]


def _curves(k) -> dict:
    return {"curves": [roc_points(LABELS, PROB), roc_points(LABELS, PROB[::-1].copy())], "grid": None}


ROWS: list[Row] = [
    Row("audit.readers.validate_reads", build=lambda k: {"reads": _reads()},
        call=lambda kw: validate_reads(kw["reads"]), args={"reads": READS},
        expect={("reads", "NaN scores"): "ok"}, why={("reads", "NaN scores"): SCORE_UNUSED}),
    Row("audit.readers.analyze_reads", build=lambda k: {"reads": _reads()},
        call=lambda kw: analyze_reads(kw["reads"], n_boot=10, seed=0), args={"reads": READS},
        expect={("reads", UNPAIRED): "nan"},
        why={("reads", UNPAIRED): "differences of phases read by different reader sets are NaN with the reason"}),
    Row("audit.readers.gee_assistance", build=lambda k: {"reads": _reads()},
        call=lambda kw: gee_assistance(kw["reads"]), args={"reads": READS},
        expect=_unused_score()[0], why=_unused_score()[1]),
    Row("audit.readers.fit_gee", build=_gee_arrays, call=lambda kw: fit_gee(**kw).to_frame(),
        args={"endog": GEE_ENDOG, "groups": [Bad("wrong length", lambda g: g[:-1], "error")]}),
    Row("audit.readers.cluster_bootstrap", build=lambda k: {"reads": _reads()},
        call=lambda kw: cluster_bootstrap(kw["reads"], n_boot=20, seed=0), args={"reads": READS}),
    Row("audit.readers.mrmc_or", build=lambda k: {"reads": _reads()},
        call=lambda kw: mrmc_or(kw["reads"]), args={"reads": READS}),
    Row("audit.readers.mrmc_dbm", build=lambda k: {"reads": _reads()},
        call=lambda kw: mrmc_dbm(kw["reads"]), args={"reads": READS}),
    Row("audit.readers.reader_roc", build=lambda k: {"reads": _reads()},
        call=lambda kw: reader_roc(kw["reads"]), args={"reads": READS},
        expect={("reads", UNPAIRED): "ok"}, why={("reads", UNPAIRED): UNPAIRED_OK}),
    Row("audit.readers.reads_calibration", build=lambda k: {"reads": _reads()},
        call=lambda kw: reads_calibration(kw["reads"]), args={"reads": READS},
        expect=_unused_score(**{UNPAIRED: "same"})[0],
        why={**_unused_score()[1], ("reads", UNPAIRED): AI_PER_CASE}),
    Row("audit.readers.reads_decision_curve", build=lambda k: {"reads": _reads()},
        call=lambda kw: reads_decision_curve(kw["reads"]), args={"reads": READS},
        expect=_unused_score(**{UNPAIRED: "same"})[0],
        why={**_unused_score()[1], ("reads", UNPAIRED): AI_PER_CASE}),
    Row("audit.readers.outcome_counts", build=lambda k: {"reads": _reads()},
        call=lambda kw: outcome_counts(kw["reads"]), args={"reads": READS},
        expect=_unused_score(**{UNPAIRED: "ok"})[0], why={**_unused_score()[1], ("reads", UNPAIRED): UNPAIRED_OK}),
    Row("audit.readers.outcome_transitions", build=lambda k: {"reads": _reads()},
        call=lambda kw: outcome_transitions(kw["reads"]), args={"reads": READS},
        expect=_unused_score()[0], why=_unused_score()[1]),
    Row("audit.readers.decision_changes", build=lambda k: {"reads": _reads()},
        call=lambda kw: decision_changes(kw["reads"]), args={"reads": READS},
        expect=_unused_score()[0], why=_unused_score()[1]),
    Row("audit.readers.mcnemar_correctness", build=lambda k: {"reads": _reads()},
        call=lambda kw: mcnemar_correctness(kw["reads"]), args={"reads": READS},
        expect=_unused_score()[0], why=_unused_score()[1]),
    Row("audit.readers.cochran_q_correctness", build=lambda k: {"reads": _reads()},
        call=lambda kw: cochran_q_correctness(kw["reads"]), args={"reads": READS},
        expect=_unused_score()[0], why=_unused_score()[1]),
    Row("audit.readers.roc_points", build=lambda k: {"labels": LABELS.copy(), "scores": PROB.copy()},
        call=lambda kw: roc_points(kw["labels"], kw["scores"]), args={"labels": "labels", "scores": SCORES},
        expect={("labels", "one class only"): "error"},
        why={("labels", "one class only"): "an ROC curve needs both classes: there is no curve to return as NaN",
             ("scores", "outside [0, 1]"): "scores are ratings of any scale; only their order counts"}),
    Row("audit.readers.delong", build=lambda k: {"labels": LABELS.copy(), "scores": PROB.copy()},
        call=lambda kw: delong(kw["labels"], kw["scores"]), args={"labels": "labels"}),
    Row("audit.readers.vertical_average", build=_curves, call=lambda kw: vertical_average(kw["curves"], kw["grid"]),
        args={"curves": [Bad("empty", lambda c: [], "error"),
                         Bad("a curve without fpr", lambda c: [c[0].drop(columns="fpr")], "error")],
              "grid": [Bad("outside [0, 1]", lambda g: [0.0, 1.5], "error"),
                       Bad("a NaN", lambda g: [0.0, np.nan], "error")]}),
    Row("audit.readers.brier_score", build=_arrays(), call=lambda kw: brier_score(kw["labels"], kw["prob"]),
        args={"labels": "labels", "prob": PROBS}, expect={("labels", "one class only"): "ok"},
        why={("labels", "one class only"): ONE_CLASS_OK}),
    Row("audit.readers.expected_calibration_error", build=_arrays(),
        call=lambda kw: expected_calibration_error(kw["labels"], kw["prob"], n_bins=4),
        args={"labels": "labels", "prob": PROBS}, expect={("labels", "one class only"): "ok"},
        why={("labels", "one class only"): ONE_CLASS_OK}),
    Row("audit.readers.reliability_curve", build=_arrays(),
        call=lambda kw: reliability_curve(kw["labels"], kw["prob"], n_bins=4)[["n", "mean_prob", "observed"]],
        args={"labels": "labels", "prob": PROBS}, expect={("labels", "one class only"): "ok"},
        why={("labels", "one class only"): ONE_CLASS_OK}),
    Row("audit.readers.calibration_fit", build=_arrays(), call=lambda kw: calibration_fit(kw["labels"], kw["prob"]),
        args={"labels": "labels", "prob": PROBS}),
    Row("audit.readers.net_benefit", build=_arrays(thresholds=[0.1, 0.5]),
        call=lambda kw: net_benefit(kw["labels"], kw["prob"], kw["thresholds"]).drop(columns="threshold"),
        args={"labels": "labels", "prob": PROBS, "thresholds": THRESHOLDS},
        expect={("labels", "one class only"): "ok"}, why={("labels", "one class only"): ONE_CLASS_OK}),
    Row("audit.readers.decision_curve", build=lambda k: {"labels": LABELS.copy(), "probs": PROB.copy(),
                                                         "thresholds": [0.1, 0.5]},
        call=lambda kw: decision_curve(kw["labels"], kw["probs"], kw["thresholds"]),
        args={"labels": "labels", "probs": PROBS, "thresholds": THRESHOLDS},
        expect={("labels", "one class only"): "ok"}, why={("labels", "one class only"): ONE_CLASS_OK}),
    Row("audit.readers.simulate_reads", build=lambda k: {"n_cases": 10, "n_readers": 2, "odds_ratio": 1.5},
        call=lambda kw: simulate_reads(kw["n_cases"], kw["n_readers"], odds_ratio=kw["odds_ratio"])[
            ["truth", "decision", "score", "ai_prob"]],
        args={"n_cases": [Bad("1", lambda n: 1, "error"), Bad("a bool", lambda n: True, "error"),
                          Bad("a float", lambda n: 10.0, "error"), Bad("a numpy int", lambda n: np.int64(n), "same")],
              "odds_ratio": [Bad("negative", lambda o: -1.0, "error"), Bad("a NaN", lambda o: float("nan"), "error"),
                             Bad("one per later phase", lambda o: [o, o], "same")]}),
    Row("audit.readers.write_example_reads", build=lambda k: {"path": _tmp_csv()},
        call=lambda kw: write_example_reads(kw["path"]).drop(columns="phase"),
        args={"path": [Bad("not .csv", lambda p: p.with_suffix(".txt"), "error"),
                       Bad("a str", lambda p: str(p), "same")]}),
]
EXEMPT: dict[str, str] = {
    "audit.readers.example_reads": "takes no arguments: the package's fixed example study",
}

_TMP: list = []


@pytest.fixture(scope="module", autouse=True)
def _workdir(tmp_path_factory):
    _TMP[:] = [tmp_path_factory.mktemp("fuzz_readers")]
    yield
    _TMP.clear()


def _tmp_csv():
    return _TMP[0] / "example_reads.csv"


@pytest.mark.parametrize("row,arg,bad,expect", params(ROWS))
def test_bad_input(row, arg, bad, expect, kit):
    run_case(row, arg, bad, expect, kit)


# ----------------------------------------------------------------------- the examples
def _undefined(caught) -> list:
    return [w for w in caught if issubclass(w.category, UndefinedValueWarning)]


def test_bootstrap_of_phases_read_by_different_reader_sets_is_nan_with_its_reason():
    reads = _without_r1_in("MRI+AI")(_reads())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = cluster_bootstrap(reads, statistic="auc", n_boot=20, seed=0, paired=False)
    assert len(_undefined(caught)) == 1 and "different reader sets" in str(_undefined(caught)[0].message)
    t = res.table.set_index("phase")
    for ph in ("MRI+AI − MRI", "MRI+AI+XAI − MRI+AI"):
        assert np.isnan(t.loc[ph, ["estimate", "se", "ci_low", "ci_high"]].astype(float)).all(), ph
        assert "phases read by different reader sets" in t.loc[ph, "reason"] and "'R1'" in t.loc[ph, "reason"]
    # the same four readers read MRI and MRI+AI+XAI: that difference stands
    assert np.isfinite(t.loc["MRI+AI+XAI − MRI", "estimate"]) and t.loc["MRI+AI+XAI − MRI", "reason"] == ""
    tidy = res.to_frame()
    nan = tidy["value"].isna()
    assert nan.any() and tidy.loc[nan, "reason"].str.contains("different reader sets").all()
    assert (tidy.loc[~nan, "reason"] == "").all()


def test_analyze_reads_warns_once_and_writes_the_reason_beside_the_nan_delta_auc(tmp_path):
    reads = _without_r1_in("MRI+AI")(_reads())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = analyze_reads(reads, out=tmp_path, n_boot=10, seed=0)
    assert len(_undefined(caught)) == 1 and "bootstrap" in str(_undefined(caught)[0].message)
    frame = study.to_frame()
    boot = frame[(frame["table"] == "bootstrap_table") & (frame["statistic"] == "auc")
                 & (frame["phase"] == "MRI+AI − MRI") & (frame["metric"] == "estimate")]
    assert len(boot) == 1 and np.isnan(boot["value"].iloc[0])
    assert "phases read by different reader sets" in boot["reason"].iloc[0]
    assert frame.loc[frame["value"].isna(), "reason"].str.len().gt(0).all()
    csv = pd.read_csv(tmp_path / "bootstrap_table.csv", keep_default_na=False)
    assert csv["reason"].str.contains("different reader sets").any()


def _one_class_split() -> pd.DataFrame:
    """R1 reads only the diseased cases in phase MRI+AI (both classes overall)."""
    r = _reads()
    return r[~((r["reader"] == "R1") & (r["phase"] == "MRI+AI") & (r["truth"] == 0))]


def test_a_split_with_one_class_is_nan_with_its_reason():
    r = _one_class_split()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        counts = outcome_counts(r).table.set_index(["phase", "reader"])
    assert len(_undefined(caught)) == 1
    row = counts.loc[("MRI+AI", "R1")]
    assert np.isnan(row["specificity"]) and "no non-diseased reads" in row["reason"]
    assert np.isfinite(row["sensitivity"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        roc = reader_roc(r).auc.set_index(["phase", "curve", "reader"], drop=False)
    assert len(_undefined(caught)) == 1
    one = roc[(roc["phase"] == "MRI+AI") & (roc["reader"] == "R1")].iloc[0]
    assert np.isnan(one["auc"]) and "single truth class" in one["reason"]
    avg = roc[(roc["phase"] == "MRI+AI") & (roc["curve"] == "average")].iloc[0]
    assert np.isnan(avg["auc"]) and avg["reason"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        boot = cluster_bootstrap(r, statistic="auc", n_boot=20, paired=False).table.set_index("phase")
    assert len(_undefined(caught)) == 1
    assert np.isnan(boot.loc["MRI+AI", "estimate"]) and "both truth classes" in boot.loc["MRI+AI", "reason"]
    assert np.isfinite(boot.loc["MRI", "estimate"])


def test_one_reader_cannot_give_a_random_reader_analysis_and_the_error_names_the_column():
    r = _reads()
    r = r[r["reader"] == "R1"]
    with pytest.raises(ReadsError, match="at least 2 readers") as info:
        mrmc_or(r)
    assert isinstance(info.value, AuditInputError) and info.value.name == "reader"


def test_reads_errors_name_the_column_and_the_value():
    r = _reads().rename(columns={"truth": "Dx"})
    from audit.readers import ReadColumns
    with pytest.raises(ReadsError, match=r"'Dx' \(truth\) must be binary 0/1, found values \[2\]") as info:
        validate_reads(r.assign(Dx=r["Dx"] * 2), ReadColumns(truth="Dx"))
    err = info.value
    assert isinstance(err, AuditInputError) and isinstance(err, ValueError)
    assert err.name == "Dx" and err.got == [2] and "reads" in str(err)
    with pytest.raises(ReadsError) as info:
        validate_reads(_reads().drop(columns="phase"))
    assert info.value.name == "phase" and "available columns" in str(info.value)
    with pytest.raises(ReadsError) as info:
        validate_reads(_nan_at_first("reader")(_reads()))
    assert info.value.name == "reader" and "1 missing value" in str(info.value)
    with pytest.raises(ReadsError) as info:
        reads_calibration(_reads().assign(ai_prob=lambda d: d["ai_prob"] * 10))
    assert info.value.name == "ai_prob" and info.value.got


def test_the_kits_labels_kind_fits_the_array_rows():
    """The labels of the array rows are the harness' kind (a NaN, 0/2, one class, wrong length)."""
    assert {b.label for b in KINDS["labels"]} >= {"one class only", "a NaN", "values 0/2", "wrong length"}
