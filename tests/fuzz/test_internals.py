"""Bad inputs for ``probes.internals``: features, linear probes, patching, ROI geometry.

Every row starts from a valid call on the kit (``tests/fuzz/conftest.py``); the explicit tests
below reproduce the problems this layer fixes (NaN inputs, float64 inputs, wrong channels,
out-of-range targets, empty ROIs, splits too small to test, training-mode models).
"""

from __future__ import annotations

import copy
import warnings
from functools import lru_cache
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from probes.core.errors import ClassIndexError, NonFiniteError, ShapeError, UndefinedValueWarning
from probes.core.model import ModelSnapshot
from probes.core.resize import resize_mask
from probes.hooks.registry import HookRegistry
from probes.internals import (activation_patching, cosine_distance, extract_features, fit_linear_probes, gap,
                              pooled_cosine_distances, roi_cosine_distances, roi_pool, select_pairs,
                              split_by_group)
from tests.fuzz.harness import Bad, Row, params, run_case, undefined_warnings

# ------------------------------------------------------------------ small data of our own
N_PROBE, N_GROUPS = 24, 12
GROUPS = np.repeat([f"p{i}" for i in range(N_GROUPS)], 2)  # two slices per patient
LABELS = np.repeat(np.arange(N_GROUPS) % 2, 2)           # one label per patient


@lru_cache(maxsize=1)
def _probe_features() -> np.ndarray:
    """Pooled features of a tiny CNN on 24 images whose class shifts the mean intensity."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N_PROBE, 2, 12, 12, generator=g) + torch.from_numpy(LABELS).float()[:, None, None, None]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 6, 3), nn.ReLU()).eval()
    with torch.no_grad():
        return gap(net(x)).numpy().astype(np.float64)


@lru_cache(maxsize=1)
def _kit_acts() -> torch.Tensor:
    """The kit model's activation at the kit point (4, 64, 8, 8)."""
    from tests.fuzz.conftest import make_kit

    k = make_kit()
    _, cache = HookRegistry(k["model"]).run_with_cache(k["x"], points=[k["point"]])
    return cache[k["point"]]


def _one_class_test_split(split: Any) -> np.ndarray:
    """Per-sample split names whose test split holds class 0 only (a split too small to test)."""
    names = np.array(["train"] * N_PROBE, object)
    zero = np.flatnonzero(LABELS == 0)
    one = np.flatnonzero(LABELS == 1)
    names[zero[:4]] = "test"   # patients p0, p2: class 0 only
    names[zero[4:6]] = "val"
    names[one[:2]] = "val"
    return names


FEATURES_BAD = [
    Bad("a NaN", lambda f: {p: np.where(np.arange(a.size).reshape(a.shape) == 0, np.nan, a) for p, a in f.items()},
        "error"),
    Bad("one row too few", lambda f: {p: a[:-1] for p, a in f.items()}, "error"),
    Bad("1-D arrays", lambda f: {p: a[:, 0] for p, a in f.items()}, "error"),
    Bad("not a mapping", lambda f: list(f.values()), "error"),
]
GROUPS_BAD = [
    Bad("wrong length", lambda g: g[:-1], "error"),
    Bad("a string", lambda g: "p0", "error"),
]
PROBE_SPLIT_BAD = [
    Bad("a test split of one class", _one_class_test_split, "nan"),
    Bad("fractions not summing to 1", lambda s: (0.5, 0.5, 0.5), "error"),
    Bad("an unknown split name", lambda s: ["fit"] * N_PROBE, "error"),
]
SPLIT_BAD = [
    Bad("fractions not summing to 1", lambda s: (0.5, 0.5, 0.5), "error"),
    Bad("an unknown split name", lambda s: ["fit"] * N_PROBE, "error"),
    Bad("a mapping missing groups", lambda s: {"p0": "train"}, "error"),
    Bad("a patient in two splits", lambda s: ["train", "test"] * N_GROUPS, "error"),
]
SPLIT_GROUPS_BAD = [
    Bad("empty", lambda g: [], "error"),
    Bad("a string", lambda g: "p0", "error"),
]
ACT_BAD = [
    Bad("a NaN", lambda a: torch.where(torch.arange(a.numel()).reshape(a.shape) == 0, float("nan"), a), "error"),
    Bad("a list, not a tensor", lambda a: a.tolist(), "error"),
    Bad("one dimension only", lambda a: a.flatten(), "error"),
    Bad("float64", lambda a: a.double(), "same"),
]
PROBS_BAD = [
    Bad("a NaN", lambda p: np.where(np.arange(p.size).reshape(p.shape) == 0, np.nan, p), "error"),
    Bad("values above 1", lambda p: p * 2, "error"),
    Bad("three dimensions", lambda p: p[None], "error"),
    Bad("a string", lambda p: "probs", "error"),
    Bad("P(class 1) only", lambda p: p[:, 1], "same"),
]
ACTS_BAD = [
    Bad("a NaN", lambda d: {p: torch.where(torch.arange(a.numel()).reshape(a.shape) == 0, float("nan"), a)
                            for p, a in d.items()}, "error"),
    Bad("not a mapping", lambda d: list(d.values()), "error"),
    Bad("empty", lambda d: {}, "error"),
    Bad("one case fewer than the masks", lambda d: {p: a[:-1] for p, a in d.items()}, "error"),
]
WEIGHTS_BAD = [
    Bad("all zero (an empty ROI)", lambda w: torch.zeros_like(w), "nan"),
    Bad("wrong shape", lambda w: w[..., :-1], "error"),
    Bad("negative", lambda w: -w, "error"),
    Bad("a NaN", lambda w: torch.where(torch.arange(w.numel()).reshape(w.shape) == 0, float("nan"), w), "error"),
]
VEC_BAD = [
    Bad("a zero row", lambda u: torch.cat([torch.zeros_like(u[:1]), u[1:]]), "nan"),
    Bad("a NaN", lambda u: torch.where(torch.arange(u.numel()).reshape(u.shape) == 0, float("nan"), u), "error"),
    Bad("one column fewer", lambda u: u[:, :-1], "error"),
    Bad("a list, not a tensor", lambda u: u.tolist(), "error"),
]


def _weights(k: dict) -> torch.Tensor:
    return resize_mask(torch.from_numpy(k["mask"]), tuple(_kit_acts().shape[2:]), mode="area")


ROWS: list[Row] = [
    Row("probes.internals.extract_features",
        build=lambda k: {"model": k["model"], "loader": k["x"], "points": [k["point"]]},
        call=lambda kw: extract_features(**kw), args={"loader": "x", "model": "model"}),
    Row("probes.internals.fit_linear_probes",
        build=lambda k: {"features": {"gap": _probe_features().copy()}, "labels": LABELS.copy(),
                         "groups": GROUPS.copy(), "split": (0.5, 0.25, 0.25), "Cs": [1.0]},
        call=lambda kw: fit_linear_probes(**kw),
        args={"labels": "labels", "features": FEATURES_BAD, "groups": GROUPS_BAD, "split": PROBE_SPLIT_BAD},
        why={("labels", "one class only"): "no probe can be fit on one class: every metric NaN with the reason",
             ("split", "a test split of one class"): "the test AUC needs both classes: NaN with the reason"}),
    Row("probes.internals.split_by_group",
        build=lambda k: {"groups": list(GROUPS), "split": (0.5, 0.25, 0.25), "labels": LABELS.copy()},
        call=lambda kw: split_by_group(**kw),
        args={"groups": SPLIT_GROUPS_BAD, "split": SPLIT_BAD, "labels": "labels"},
        expect={("labels", "values 0/2"): "ok", ("labels", "one class only"): "ok"},
        why={("labels", "values 0/2"): "labels only stratify the shuffle: any integer classes",
             ("labels", "one class only"): "one stratum: a plain seeded shuffle of the patients"}),
    Row("probes.internals.gap", build=lambda k: {"act": k["x"].clone()}, call=lambda kw: gap(**kw),
        args={"act": ACT_BAD}),
    Row("probes.internals.select_pairs",
        build=lambda k: {"probs": np.stack([1 - k["scores"], k["scores"]], 1), "labels": k["labels"].copy(),
                         "min_confidence": 0.5},
        call=lambda kw: select_pairs(**kw), args={"probs": PROBS_BAD, "labels": "labels"},
        expect={("labels", "one class only"): "ok"},
        why={("labels", "one class only"): "returns row indices, not a measurement: no pair qualifies, an "
                                            "empty table and a warning"}),
    Row("probes.internals.activation_patching",
        build=lambda k: {"model": k["model"], "x": k["x"], "target": k["target"], "x_base": k["x_base"],
                         "points": [k["point"]], "masks": {"gtv": k["mask"]}, "controls": ("full", "complement"),
                         "batch_size": 16},
        call=lambda kw: activation_patching(**kw),
        args={"model": "model", "x": "x", "x_base": "x", "target": "target", "masks": "masks"},
        why={("masks", "an empty ROI"): "nothing is grafted: p_after and delta NaN with the reason"}),
    Row("probes.internals.roi_cosine_distances",
        build=lambda k: {"model": k["model"], "x": k["x"], "masks": dict(k["masks"]), "points": [k["point"]],
                         "case_ids": list(k["case_ids"])},
        call=lambda kw: roi_cosine_distances(**kw),
        args={"model": "model", "x": "x", "masks": "masks", "case_ids": "case_ids"}),
    Row("probes.internals.pooled_cosine_distances",
        build=lambda k: {"acts": {"p": _kit_acts().clone()}, "masks": dict(k["masks"]),
                         "case_ids": list(k["case_ids"])},
        call=lambda kw: pooled_cosine_distances(**kw),
        args={"acts": ACTS_BAD, "masks": "masks", "case_ids": "case_ids"},
        expect={("masks", "wrong shape"): "ok"},
        why={("masks", "wrong shape"): "without an input, masks may come at any resolution: each is resized "
                                       "by area to the feature map"}),
    Row("probes.internals.roi_pool",
        build=lambda k: {"act": _kit_acts().clone(), "weights": _weights(k)},
        call=lambda kw: roi_pool(**kw), args={"act": ACT_BAD[:3], "weights": WEIGHTS_BAD}),
    Row("probes.internals.cosine_distance",
        build=lambda k: {"u": _kit_acts().flatten(2).mean(-1), "v": _kit_acts()[..., :4, :4].flatten(2).mean(-1)},
        call=lambda kw: cosine_distance(**kw), args={"u": VEC_BAD, "v": VEC_BAD}),
]

EXEMPT: dict[str, str] = {}


@pytest.mark.parametrize("row,arg,bad,expect", params(ROWS))
def test_bad_input(row, arg, bad, expect, kit):
    run_case(row, arg, bad, expect, kit)


# ------------------------------------------------------------------ the problems, explicitly
@pytest.mark.parametrize("arg", ["x", "x_base"])
def test_patching_refuses_a_nan_voxel_naming_the_input(kit, arg):
    kw = {"x": kit["x"], "x_base": kit["x_base"]}
    kw[arg] = kw[arg].clone()
    kw[arg][0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=arg):
        activation_patching(kit["model"], target=1, points=[kit["point"]], **kw)


def test_patching_float64_input_gives_the_float32_numbers(kit):
    ref = activation_patching(kit["model"], kit["x"], 1, kit["x_base"], [kit["point"]]).table
    got = activation_patching(kit["model"], kit["x"].double(), 1, kit["x_base"].double(), [kit["point"]]).table
    np.testing.assert_allclose(got["delta"], ref["delta"], rtol=1e-6, atol=1e-9)


def test_patching_wrong_channels_and_target_out_of_range(kit):
    with pytest.raises(ShapeError, match="x"):
        activation_patching(kit["model"], kit["x"][:, :3], 1, kit["x_base"][:, :3], [kit["point"]])
    with pytest.raises(ClassIndexError, match="target"):
        activation_patching(kit["model"], kit["x"], 2, kit["x_base"], [kit["point"]])


def test_empty_roi_is_nan_with_a_reason_and_one_warning(kit):
    masks = {"gtv": np.zeros_like(kit["mask"]), "skull": kit["masks"]["skull"]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = roi_cosine_distances(kit["model"], kit["x"], masks, [kit["point"]]).to_frame()
    assert len(undefined_warnings(caught)) == 1 and "empty ROI" in str(undefined_warnings(caught)[0].message)
    gtv = df[(df.roi_a == "gtv") | (df.roi_b == "gtv")]
    assert gtv.value.isna().all() and (gtv.reason == "empty ROI on the feature map").all()
    rest = df[(df.roi_a != "gtv") & (df.roi_b != "gtv")]
    assert rest.value.notna().all() and (rest.reason == "").all()


def test_split_too_small_to_test_is_nan_with_a_reason(kit):
    split = _one_class_test_split(None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fit_linear_probes({"gap": _probe_features()}, LABELS, GROUPS, split=split, Cs=[1.0])
    assert len(undefined_warnings(caught)) == 1
    df = res.to_frame()
    bad = df[(df.split == "test") & (df.metric == "auc")]
    assert bad.value.isna().all() and bad.reason.str.contains("'test' has 4 sample").all()
    assert df[df.value.notna()].reason.eq("").all()
    assert df[(df.split == "test") & (df.metric == "accuracy")].value.notna().all()


def test_one_class_in_train_fits_no_probe(kit):
    with pytest.warns(UndefinedValueWarning, match="no probe could be fit"):
        res = fit_linear_probes({"gap": _probe_features()}, np.ones(N_PROBE, int), GROUPS, Cs=[1.0])
    df = res.to_frame()
    assert df[df.metric.isin(["auc", "accuracy", "cross_entropy"])].value.isna().all()
    assert res.table["C"].isna().all() and (df[df.metric == "n_samples"].value > 0).any()


@pytest.mark.parametrize("instrument", ["extract_features", "activation_patching", "roi_cosine_distances"])
def test_training_mode_model_runs_in_eval_mode_and_is_restored(kit, instrument):
    """A train-mode model used to warn and still update its BatchNorm running statistics."""
    calls = {
        "extract_features": lambda m: extract_features(m, kit["x"], [kit["point"]]),
        "activation_patching": lambda m: activation_patching(m, kit["x"], 1, kit["x_base"], [kit["point"]]),
        "roi_cosine_distances": lambda m: roi_cosine_distances(m, kit["x"], kit["masks"], [kit["point"]]),
    }
    ref = calls[instrument](kit["model"]).to_frame()
    trained = copy.deepcopy(kit["model"]).train()
    snap = ModelSnapshot.take(trained)
    with pytest.warns(UserWarning, match="training mode"):
        got = calls[instrument](trained).to_frame()
    assert snap.diff(trained) == []            # BatchNorm running stats, flags, hooks: untouched
    assert all(m.training for m in trained.modules())
    np.testing.assert_allclose(got.value.to_numpy(float), ref.value.to_numpy(float), rtol=1e-5, atol=1e-7)
