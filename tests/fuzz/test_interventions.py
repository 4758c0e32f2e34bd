"""Bad inputs for ``probes.interventions``: ablation specs and studies, contrast Shapley values,
rankings and their agreement.

Every row starts from a valid call on the kit (``tests/fuzz/conftest.py``); the explicit tests
below reproduce the problems this layer fixes (NaN and float64 inputs, wrong channels, targets
out of range, labels that are not 0/1, labels of one class, training-mode models).
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import pytest

from probes.core.errors import ClassIndexError, LabelError, NonFiniteError, ShapeError
from probes.core.model import ModelSnapshot
from probes.interventions import (ContrastShapley, ablate, ablation_mask, ablation_study, baseline_disagreement,
                                  coalition_masks, contrast_ranking, contrast_shapley, exact_shapley, footrule_max,
                                  normalized_spearman_footrule, parse_spec, ranking_variance, shapley_from_values)
from tests.fuzz.harness import Bad, Row, params, run_case, undefined_warnings

NAMES = ("T1", "T1c", "T2", "FLAIR")


def _result(phi: Any, absent: str = "zero", contrasts: tuple[str, ...] = NAMES, reason: str = "") -> ContrastShapley:
    """A cohort-level ContrastShapley with the given φ (what baseline_disagreement reads)."""
    phi = np.asarray(phi, float)
    m = phi.shape[-1]
    return ContrastShapley(phi=phi, values=np.zeros(2 ** m), contrasts=contrasts, case_ids=("0",), metric="prob",
                           absent=absent, per_case=False, n_samples=1, phi_samples=phi[None],
                           efficiency_error=0.0, reason=reason)


SPEC_BAD = [
    Bad("an unknown ROI", lambda s: "no bone", "error"),
    Bad("not the grammar", lambda s: "remove the skull", "error"),
    Bad("not a string", lambda s: 5, "error"),
    Bad("an unknown fill", lambda s: "no skull fill=mean", "error"),
    Bad("top 0%", lambda s: "no top0%", "error"),
    Bad("upper case and spaces", lambda s: "  NO GTV+SKULL ", "ok"),
]
SPECS_BAD = [
    Bad("an unknown ROI", lambda s: ["no bone"], "error"),
    Bad("one spec, not a list", lambda s: "no gtv", "error"),
]
N_PLAYERS_BAD = [
    Bad("0", lambda n: 0, "error"),
    Bad("13 (too many coalitions)", lambda n: 13, "error"),
    Bad("a float", lambda n: 2.5, "error"),
    Bad("a bool", lambda n: True, "error"),
    Bad("a string", lambda n: "4", "error"),
]
VALUE_FN_BAD = [
    Bad("not callable", lambda f: 3.0, "error"),
    Bad("returns NaN", lambda f: (lambda m: float("nan") if m.all() else float(m.sum())), "error"),
    Bad("changes shape", lambda f: (lambda m: np.zeros(int(m.sum()) + 1)), "error"),
    Bad("returns a string", lambda f: (lambda m: "v"), "error"),
]
VALUES_BAD = [
    Bad("a NaN", lambda v: np.r_[np.nan, v[1:]], "error"),
    Bad("6 rows (not 2^M)", lambda v: v[:6], "error"),
    Bad("a scalar", lambda v: 1.0, "error"),
    Bad("a list", lambda v: list(v), "same"),
]
PHI_BAD = [
    Bad("a NaN", lambda p: np.r_[np.nan, p[1:]], "error"),
    Bad("no contrasts", lambda p: p[:0], "error"),
    Bad("all equal", lambda p: np.zeros_like(p), "ok"),
    Bad("a list", lambda p: list(p), "same"),
]
RANKING_BAD = [
    Bad("dense ties (1, 2, 2, 3)", lambda r: (1, 2, 2, 3), "error"),
    Bad("rank 0", lambda r: (0, 1, 2, 3), "error"),
    Bad("rank above M", lambda r: (1, 2, 3, 5), "error"),
    Bad("a NaN", lambda r: (1.0, float("nan"), 3.0, 4.0), "error"),
    Bad("three contrasts", lambda r: (1, 2, 3), "error"),
]
REFERENCE_BAD = RANKING_BAD[:4] + [Bad("eight contrasts", lambda r: tuple(range(1, 9)), "error")]
FOLDS_BAD = [
    Bad("one fold", lambda r: r[:1], "error"),
    Bad("not rankings", lambda r: r * 2, "error"),
    Bad("one dimension", lambda r: r[0], "error"),
]
CONTRASTS_BAD = [
    Bad("a name twice", lambda c: ["T1", "T1", "T2", "FLAIR"], "error"),
    Bad("one name too few", lambda c: list(c)[:-1], "error"),
]
RESULT_A_BAD = [
    Bad("not a result", lambda a: np.zeros(4), "error"),
    Bad("undefined φ (NaN)", lambda a: _result(np.full(4, np.nan), reason="labels hold one class only"), "nan"),
]
RESULT_B_BAD = [
    Bad("other contrasts", lambda b: _result(b.phi, "mean", ("a", "b", "c", "d")), "error"),
    Bad("three contrasts", lambda b: _result(b.phi[:3], "mean", NAMES[:3]), "error"),
]

ROWS: list[Row] = [
    Row("probes.interventions.parse_spec", build=lambda k: {"spec": "no gtv+skull"},
        call=lambda kw: parse_spec(**kw), args={"spec": SPEC_BAD}),
    Row("probes.interventions.ablation_mask",
        build=lambda k: {"x": k["x"].clone(), "masks": dict(k["masks"]), "spec": "no gtv"},
        call=lambda kw: ablation_mask(**kw), args={"x": "x", "masks": "masks", "spec": SPEC_BAD[:3]},
        expect={("x", "one channel too few"): "ok", ("masks", "an empty ROI"): "ok"},
        why={("x", "one channel too few"): "no model: any number of contrasts is valid",
             ("masks", "an empty ROI"): "an empty ROI removes nothing: an all-False mask, not a number"}),
    Row("probes.interventions.ablate",
        build=lambda k: {"x": k["x"].clone(), "masks": dict(k["masks"]), "spec": "no gtv", "fill": "blur"},
        call=lambda kw: ablate(**kw), args={"x": "x", "masks": "masks", "spec": SPEC_BAD[:3]},
        expect={("x", "one channel too few"): "ok", ("masks", "an empty ROI"): "ok"},
        why={("x", "one channel too few"): "no model: any number of contrasts is valid",
             ("masks", "an empty ROI"): "an empty ROI removes nothing: the image is returned unchanged"}),
    Row("probes.interventions.ablation_study",
        build=lambda k: {"model": k["model"], "x": k["x"], "target": k["target"], "specs": ["no gtv"],
                         "labels": k["labels"].copy(), "masks": dict(k["masks"]), "batch_size": 8},
        call=lambda kw: ablation_study(**kw),
        args={"model": "model", "x": "x", "target": "target", "labels": "labels", "masks": "masks",
              "specs": SPECS_BAD},
        why={("labels", "one class only"): "AUC and DeLong need both classes: NaN with the reason",
             ("masks", "an empty ROI"): "'no gtv' removes nothing: its DeLong test against 'none' is NaN"}),
    Row("probes.interventions.coalition_masks", build=lambda k: {"n_players": 4},
        call=lambda kw: coalition_masks(**kw), args={"n_players": N_PLAYERS_BAD}),
    Row("probes.interventions.exact_shapley",
        build=lambda k: {"value_fn": lambda m: float(m @ np.arange(1.0, 4.0)) + float(m.all()), "n_players": 3},
        call=lambda kw: exact_shapley(**kw), args={"value_fn": VALUE_FN_BAD, "n_players": N_PLAYERS_BAD}),
    Row("probes.interventions.shapley_from_values", build=lambda k: {"values": np.arange(8.0) ** 2},
        call=lambda kw: shapley_from_values(**kw), args={"values": VALUES_BAD}),
    Row("probes.interventions.contrast_shapley",
        build=lambda k: {"model": k["model"], "x": k["x"], "target": k["target"], "metric": "prob",
                         "contrasts": list(k["channel_names"])},
        call=lambda kw: contrast_shapley(**kw), args={"model": "model", "x": "x", "target": "target"}),
    Row("probes.interventions.contrast_shapley",
        build=lambda k: {"model": k["model"], "x": k["x"], "target": None, "metric": "auc",
                         "labels": k["labels"].copy()},
        call=lambda kw: contrast_shapley(**kw), args={"labels": "labels"},
        why={("labels", "one class only"): "an AUC needs both classes: every φ NaN with the reason"}),
    Row("probes.interventions.baseline_disagreement",
        build=lambda k: {"a": _result([0.1, 0.4, 0.05, 0.2]), "b": _result([0.3, 0.1, 0.05, 0.2], "mean"),
                         "reference": (3, 1, 3, 2)},
        call=lambda kw: baseline_disagreement(**kw),
        args={"a": RESULT_A_BAD, "b": RESULT_B_BAD, "reference": RANKING_BAD},
        why={("a", "undefined φ (NaN)"): "an undefined φ has no rank: agreements NaN with the reason"}),
    Row("probes.interventions.contrast_ranking", build=lambda k: {"phi": np.array([0.1, 0.4, 0.05, 0.2])},
        call=lambda kw: contrast_ranking(**kw), args={"phi": PHI_BAD},
        why={("phi", "all equal"): "every contrast tied at rank 1 is a ranking"}),
    Row("probes.interventions.footrule_max", build=lambda k: {"reference": (3, 1, 3, 2)},
        call=lambda kw: footrule_max(**kw), args={"reference": REFERENCE_BAD}),
    Row("probes.interventions.normalized_spearman_footrule",
        build=lambda k: {"ranking": (1, 2, 3, 4), "reference": (3, 1, 3, 2)},
        call=lambda kw: normalized_spearman_footrule(**kw), args={"ranking": RANKING_BAD, "reference": RANKING_BAD}),
    Row("probes.interventions.ranking_variance",
        build=lambda k: {"rankings_across_folds": np.array([[1, 2, 3, 4], [2, 1, 4, 3], [1, 2, 4, 3]]),
                         "contrasts": list(k["channel_names"])},
        call=lambda kw: ranking_variance(**kw),
        args={"rankings_across_folds": FOLDS_BAD, "contrasts": CONTRASTS_BAD}),
]

EXEMPT: dict[str, str] = {}


@pytest.mark.parametrize("row,arg,bad,expect", params(ROWS))
def test_bad_input(row, arg, bad, expect, kit):
    run_case(row, arg, bad, expect, kit)


# ------------------------------------------------------------------ the problems, explicitly
def test_contrast_shapley_refuses_nan_and_takes_float64(kit):
    x = kit["x"].clone()
    x[1, 2, 3, 4] = float("nan")
    with pytest.raises(NonFiniteError, match="x"):
        contrast_shapley(kit["model"], x, 1)
    ref = contrast_shapley(kit["model"], kit["x"], 1, per_case=True)
    got = contrast_shapley(kit["model"], kit["x"].double(), 1, per_case=True)
    np.testing.assert_allclose(got.phi, ref.phi, rtol=1e-6, atol=1e-9)


def test_contrast_shapley_wrong_channels_and_target_out_of_range(kit):
    with pytest.raises(ShapeError, match="x"):
        contrast_shapley(kit["model"], kit["x"][:, :3], 1)
    with pytest.raises(ClassIndexError, match="target"):
        contrast_shapley(kit["model"], kit["x"], 2)


def test_ablation_study_labels_must_be_binary(kit):
    with pytest.raises(LabelError, match="labels"):
        ablation_study(kit["model"], kit["x"], 1, ["no gtv"], labels=[0, 2, 0, 2], masks=kit["masks"])


def test_ablation_study_one_class_is_nan_with_a_reason_and_one_warning(kit):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        st = ablation_study(kit["model"], kit["x"], 1, ["no gtv"], labels=[1, 1, 1, 1], masks=kit["masks"])
    assert len(undefined_warnings(caught)) == 1
    df = st.to_frame()
    for metric in ("auc", "ci_low", "ci_high", "delta_auc", "z", "p", "mean_prob_0"):
        part = df[df.metric == metric]
        assert part.value.isna().all() and part.reason.str.contains("one class").all(), metric
    assert df[df.metric == "mean_prob_1"].value.notna().all()
    assert df[df.value.notna()].reason.eq("").all()


@pytest.mark.parametrize("instrument", ["ablation_study", "contrast_shapley"])
def test_training_mode_model_runs_in_eval_mode_and_is_restored(kit, instrument):
    calls = {
        "ablation_study": lambda m: ablation_study(m, kit["x"], 1, ["no gtv"], labels=kit["labels"],
                                                   masks=kit["masks"]),
        "contrast_shapley": lambda m: contrast_shapley(m, kit["x"], 1, per_case=True),
    }
    ref = calls[instrument](kit["model"]).to_frame()
    trained = copy.deepcopy(kit["model"]).train()
    snap = ModelSnapshot.take(trained)
    with pytest.warns(UserWarning, match="training mode"):
        got = calls[instrument](trained).to_frame()
    assert snap.diff(trained) == [] and all(m.training for m in trained.modules())
    np.testing.assert_allclose(got.value.to_numpy(float), ref.value.to_numpy(float), rtol=1e-5, atol=1e-7,
                               equal_nan=True)


def test_rankings_must_be_competition_rankings():
    assert normalized_spearman_footrule(contrast_ranking([1.0, 1.0, 0.0, 0.5]), (3, 1, 3, 2)) <= 1.0
    with pytest.raises(ValueError, match="competition ranks"):
        footrule_max((1, 2, 2, 3))
    with pytest.raises(ValueError, match="competition ranks"):
        normalized_spearman_footrule((2, 2, 2, 2), (3, 1, 3, 2))
