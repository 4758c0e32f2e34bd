"""Bad inputs for the attribution instruments (``probes.attribution``), and the issue's examples.

Small settings keep the module fast: 4 integration steps, an occlusion window of half an axis,
LIME with 8 samples on a 2 × 2 grid of segments, SLIC with 4 segments.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from probes.attribution import (attribute, grid_feature_mask, layer_gradcam, lime_map, lrp, lrp_conservation,
                                row_options, slic_feature_mask)
from probes.core.errors import ClassIndexError, NonFiniteError, ShapeError
from probes.core.model import ModelSnapshot
from tests.fuzz.harness import Bad, Row, params, run_case
from tests.fuzz.test_core import INTS

METHOD_NAMES = [Bad("unknown", lambda m: "gradcam++", "error"), Bad("not a str", lambda m: 3, "error"),
                Bad("capitalised", lambda m: "Occlusion", "same")]
GRID = 2  # LIME segments: a 2 × 2 grid, no SLIC (fast and deterministic)


def _lime(kw: dict) -> torch.Tensor:
    x = kw["x"]
    shape = getattr(x, "shape", (1, 1, 32, 32))
    segments = grid_feature_mask((1, 1, *tuple(shape)[-2:]), GRID, per_contrast=False)
    return lime_map(kw["model"], x, kw["target"], n_samples=8, segments=segments, batch_size=8).maps


def _attribute(kw: dict) -> tuple[torch.Tensor, ...]:
    """Three methods of the one entry point: a gradient, a path integral and a perturbation."""
    m, x, t = kw["model"], kw["x"], kw["target"]
    return (attribute(m, x, t, "gradient").maps,
            attribute(m, x, t, "integrated_gradients", n_steps=4).maps,
            attribute(m, x, t, "occlusion", window=0.5).maps)


def _model_kw(k: dict) -> dict:
    return {"model": k["model"], "x": k["x"], "target": k["target"]}


POINTS = [
    Bad("an unknown point", lambda p: ["layer9.resid"], "error"),
    Bad("a point without spatial axes", lambda p: ["fc"], "error"),
    Bad("an empty list", lambda p: [], "error"),
    Bad("a duplicate", lambda p: list(p) * 2, "error"),
    Bad("an int", lambda p: [3], "error"),
    Bad("one name as a str", lambda p: p[0], "same"),
]
SHAPES = [
    Bad("no spatial axis", lambda s: tuple(s)[:2], "error"),
    Bad("a tensor, not a shape", lambda s: torch.zeros(tuple(s)), "error"),
    Bad("torch.Size", lambda s: torch.Size(s), "same"),
    Bad("a zero size", lambda s: (*tuple(s)[:-1], 0), "error"),
]
GRIDS = [
    Bad("zero", lambda g: 0, "error"),
    Bad("a float", lambda g: 2.5, "error"),
    Bad("a bool", lambda g: True, "error"),
    Bad("one value per axis missing", lambda g: (2,), "error"),
    Bad("more patches than voxels", lambda g: 64, "error"),
    Bad("one int per axis", lambda g: (g, g), "same"),
]
N_SEGMENTS = [
    Bad("zero", lambda n: 0, "error"),
    Bad("a bool", lambda n: True, "error"),
    Bad("a float", lambda n: 4.0, "error"),
]

ROWS: list[Row] = [
    Row("probes.attribution.attribute", build=_model_kw, call=_attribute,
        args={"x": "x", "target": "target", "model": "model"}),
    Row("probes.attribution.layer_gradcam",
        build=lambda k: {**_model_kw(k), "points": ["layer1.0.resid", "layer4.1.resid"]},
        call=lambda kw: layer_gradcam(kw["model"], kw["x"], kw["target"], kw["points"]),
        args={"x": "x", "target": "target", "model": "model", "points": POINTS},
        expect={("points", "one name as a str"): "ok"},
        why={("points", "one name as a str"): "one point's maps (not both): a valid call of its own"}),
    Row("probes.attribution.lime_map", build=_model_kw, call=_lime,
        args={"x": "x", "target": "target", "model": "model"}),
    Row("probes.attribution.lrp", build=_model_kw, call=lambda kw: lrp(kw["model"], kw["x"], kw["target"]).maps,
        args={"x": "x", "target": "target", "model": "model"}),
    Row("probes.attribution.lrp_conservation", build=_model_kw,
        call=lambda kw: lrp_conservation(kw["model"], kw["x"], kw["target"]),
        args={"x": "x", "target": "target", "model": "model"}),
    Row("probes.attribution.grid_feature_mask", build=lambda k: {"shape": tuple(k["x"].shape), "grid": 4},
        call=lambda kw: grid_feature_mask(kw["shape"], kw["grid"]), args={"shape": SHAPES, "grid": GRIDS}),
    Row("probes.attribution.slic_feature_mask", build=lambda k: {"x": k["x"], "n_segments": 4},
        call=lambda kw: slic_feature_mask(kw["x"], kw["n_segments"]),
        args={"x": "x", "n_segments": N_SEGMENTS},
        expect={("x", "one channel too few"): "ok"},
        why={("x", "one channel too few"): "no model to check channels against: one mask per contrast of x"}),
    Row("probes.attribution.row_options", build=lambda k: {"method": "occlusion", "rows": 16, "n_cases": 4},
        call=lambda kw: torch.tensor([row_options(**kw)["batch_size"]]), args={"method": METHOD_NAMES, "rows": INTS, "n_cases": INTS}),
]

EXEMPT: dict[str, str] = {}


@pytest.mark.parametrize("row,arg,bad,expect", params(ROWS))
def test_bad_input(row, arg, bad, expect, kit):
    run_case(row, arg, bad, expect, kit)


# ------------------------------------------------------------------ the examples
def test_all_nan_input_is_refused_not_explained(kit):
    x_all_nan = torch.full_like(kit["x"], float("nan"))
    with pytest.raises(NonFiniteError, match="x"):
        attribute(kit["model"], x_all_nan, 1, "gradient")
    with pytest.raises(NonFiniteError, match="x"):
        layer_gradcam(kit["model"], x_all_nan, 1, ["layer1.0.resid"])


def test_float64_input_gives_the_float32_numbers(kit):
    m, x = kit["model"], kit["x"]
    for method, options in (("gradient", {}), ("integrated_gradients", {"n_steps": 4})):
        a = attribute(m, x.double(), 1, method, **options).maps
        b = attribute(m, x, 1, method, **options).maps
        assert a.dtype == torch.float32 and torch.equal(a, b), method
    g64 = layer_gradcam(m, x.double(), 1, ["layer1.0.resid"])["layer1.0.resid"]
    assert torch.allclose(g64, layer_gradcam(m, x, 1, ["layer1.0.resid"])["layer1.0.resid"])


@pytest.mark.parametrize("bad,err", [(lambda x: x[0], ShapeError), (lambda x: x[:, :-1], ShapeError)],
                         ids=["missing batch axis", "wrong channel count"])
def test_wrong_shape_names_x(kit, bad, err):
    for fn in (lambda xx: attribute(kit["model"], xx, 1, "gradient"),
               lambda xx: layer_gradcam(kit["model"], xx, 1, ["layer1.0.resid"]),
               lambda xx: lrp(kit["model"], xx, 1)):
        with pytest.raises(err) as e:
            fn(bad(kit["x"]))
        assert e.value.name == "x" and "channels" in str(e.value)


@pytest.mark.parametrize("target", [-1, 2, 99, 1.5, True], ids=["-1", "2", "99", "float", "bool"])
def test_class_out_of_range_names_target(kit, target):
    for method in ("gradient", "integrated_gradients", "occlusion", "gradcam", "lrp"):
        with pytest.raises(ClassIndexError) as e:
            attribute(kit["model"], kit["x"], target, method)
        assert e.value.name == "target", method


@pytest.mark.parametrize("name", ["layer_gradcam", "lime_map", "attribute", "lrp"])
def test_training_mode_model_gives_eval_numbers_and_is_unchanged(kit, name):
    fns = {"layer_gradcam": lambda m: layer_gradcam(m, kit["x"], 1, ["layer1.0.resid"])["layer1.0.resid"],
           "lime_map": lambda m: _lime({"model": m, "x": kit["x"], "target": 1}),
           "attribute": lambda m: attribute(m, kit["x"], 1, "gradient").maps,
           "lrp": lambda m: lrp(m, kit["x"], 1).maps}
    trained = copy.deepcopy(kit["model"]).train()
    snap = ModelSnapshot.take(trained)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = fns[name](trained)
    assert any("training mode" in str(w.message) for w in caught)
    assert snap.diff(trained) == []  # BatchNorm running statistics included
    assert trained.training
    assert torch.allclose(got, fns[name](kit["model"]), rtol=1e-5, atol=1e-6)


def test_kit_input_left_as_found(kit):
    x = kit["x"].clone()
    attribute(kit["model"], kit["x"], 1, "gradient")
    assert torch.equal(kit["x"], x) and np.array_equal(kit["mask"], kit["masks"]["gtv"])
