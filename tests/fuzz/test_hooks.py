"""Bad inputs for the hook registry (``probes.hooks``), and the training-mode examples of the issue.

Rows build a fresh ``HookRegistry`` on the kit's model inside the call, so the ``model`` argument
is the ``nn.Module`` (a training-mode copy of it, or not a module at all).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from probes.core.errors import InputTypeError, NonFiniteError, ShapeError
from probes.core.model import ModelSnapshot
from probes.hooks import HookRegistry, as_registry, verify_registry
from tests.fuzz.harness import Bad, Row, params, run_case

POINT = "layer1.0.resid"


def _cache(kw: dict) -> tuple[torch.Tensor, ...]:
    out, cache = as_registry(kw["model"]).run_with_cache(kw["x"], points=kw["points"])
    return (out, *cache.values())


def _patched(kw: dict) -> torch.Tensor:
    reg = as_registry(kw["model"])
    with reg.patch(kw["patches"], mask=kw["mask"]):
        return reg.forward(kw["x"])


def _model_x(k: dict) -> dict:
    return {"model": k["model"], "x": k["x"]}


POINTS = [
    Bad("an unknown point", lambda p: ["layer9.resid"], "error"),
    Bad("an int", lambda p: [3], "error"),
    Bad("a number, not a list", lambda p: 3, "error"),
    Bad("one name as a str", lambda p: p[0], "same"),
    Bad("an indexed name", lambda p: [f"{p[0]}#0"], "ok"),
]
PATCHES = [
    Bad("an unknown point", lambda p: {"layer9.resid": 0.0}, "error"),
    Bad("a tensor of the wrong shape", lambda p: {POINT: torch.zeros(2, 3)}, "error"),
    Bad("a NaN tensor", lambda p: {POINT: torch.full((1, 64, 8, 8), float("nan"))}, "error"),
    Bad("a number, not a tensor or function", lambda p: {POINT: 3}, "error"),
    Bad("a list, not a mapping", lambda p: list(p.values()), "error"),
]
NAMES = [
    Bad("an unknown name", lambda n: "layer9.resid", "error"),
    Bad("an int", lambda n: 3, "error"),
    Bad("None", lambda n: None, "error"),
]
BLOCKS = [*NAMES, Bad("a point, not a block", lambda n: f"{n}.resid", "error")]
REGS = [
    Bad("the module, not a registry", lambda r: r.model, "error"),
    Bad("a string", lambda r: "resnet18", "error"),
]
MODEL_ONLY = [Bad("not a module", lambda m: "resnet18", "error"),
              Bad("a registry", lambda m: HookRegistry(m), "ok")]

ROWS: list[Row] = [
    Row("probes.hooks.HookRegistry.run_with_cache", build=lambda k: {**_model_x(k), "points": [POINT]},
        call=_cache, args={"x": "x", "model": "model", "points": POINTS}),
    Row("probes.hooks.HookRegistry.patch",
        build=lambda k: {**_model_x(k), "patches": {POINT: lambda a: a * 0.5}, "mask": k["mask"].copy()},
        call=_patched, args={"x": "x", "model": "model", "mask": "mask", "patches": PATCHES},
        expect={("mask", "empty"): "ok", ("mask", "wrong shape"): "ok"},
        why={("mask", "empty"): "an empty mask patches nothing: the plain output",
             ("mask", "wrong shape"): "the mask is resized (nearest) to each activation: any spatial size fits"}),
    Row("probes.hooks.HookRegistry.verify", build=lambda k: {"model": k["model"], "x": k["x"][:2]},
        call=lambda kw: as_registry(kw["model"]).verify(kw["x"]), args={"x": "x", "model": "model"}),
    Row("probes.hooks.verify_registry", build=lambda k: {"model": k["model"], "reg": HookRegistry(k["model"]),
                                                        "x": k["x"][:1]},
        call=lambda kw: verify_registry(kw["reg"], kw["x"], grad=False), args={"reg": REGS}),
    Row("probes.hooks.HookRegistry.forward", build=_model_x,
        call=lambda kw: as_registry(kw["model"]).forward(kw["x"]), args={"x": "x", "model": "model"}),
    Row("probes.hooks.HookRegistry.probabilities", build=_model_x,
        call=lambda kw: as_registry(kw["model"]).probabilities(kw["x"]), args={"x": "x", "model": "model"}),
    Row("probes.hooks.HookRegistry.point_info", build=lambda k: {"model": k["model"], "name": POINT},
        call=lambda kw: as_registry(kw["model"]).point_info(kw["name"]),
        args={"name": [*NAMES, Bad("an indexed name", lambda n: f"{n}#0", "ok")]}),
    Row("probes.hooks.HookRegistry.block_of", build=lambda k: {"model": k["model"], "name": "layer1.0"},
        call=lambda kw: as_registry(kw["model"]).block_of(kw["name"]), args={"name": BLOCKS}),
    Row("probes.hooks.HookRegistry.anchors", build=lambda k: {"model": k["model"], "block": "layer1.0"},
        call=lambda kw: as_registry(kw["model"]).anchors(kw["block"]), args={"block": BLOCKS}),
    Row("probes.hooks.as_registry", build=lambda k: {"model": k["model"]},
        call=lambda kw: float(len(as_registry(kw["model"]).points)), args={"model": MODEL_ONLY}),
]

EXEMPT: dict[str, str] = {
    "probes.hooks.HookRegistry.hook_counts": "takes no argument: counts the hooks on the registry's modules",
    "probes.hooks.register_adapter": "declares how to find a block class's anchors (package configuration, "
                                     "no case data); a malformed adapter fails when a registry is built",
    "probes.hooks.find_adapter": "looks a module's class up in the adapter table (no case data)",
}


@pytest.mark.parametrize("row,arg,bad,expect", params(ROWS))
def test_bad_input(row, arg, bad, expect, kit):
    run_case(row, arg, bad, expect, kit)


# ------------------------------------------------------------------ the issue's examples
@pytest.mark.parametrize("name", ["run_with_cache", "verify", "forward", "probabilities", "patch"])
def test_training_mode_model_gives_eval_numbers_and_is_unchanged(kit, name):
    x = kit["x"][:2]

    def run(model: torch.nn.Module) -> torch.Tensor:
        reg = HookRegistry(model)
        if name == "run_with_cache":
            out, cache = reg.run_with_cache(x, points=[POINT], grad=True, target=lambda o: o[:, 1].sum())
            return torch.cat([out.reshape(-1), cache[POINT].reshape(-1), cache.grads[POINT].reshape(-1)])
        if name == "verify":
            return torch.as_tensor(reg.verify(x).table["max_abs_err"].to_numpy())
        if name == "patch":
            with reg.patch({POINT: lambda a: a * 0.5}):
                return reg.forward(x)
        return getattr(reg, name)(x)

    trained = copy.deepcopy(kit["model"]).train()
    snap = ModelSnapshot.take(trained)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = run(trained)
    messages = [str(w.message) for w in caught if "training mode" in str(w.message)]
    assert len(messages) == 1, messages  # one warning per call
    assert snap.diff(trained) == [], snap.diff(trained)[:3]  # BatchNorm running statistics included
    assert torch.allclose(got, run(kit["model"]), rtol=1e-5, atol=1e-6)


def test_verify_reports_a_training_mode_model_as_unchanged(kit):
    trained = copy.deepcopy(kit["model"]).train()
    with pytest.warns(UserWarning, match="training mode"):
        report = HookRegistry(trained).verify(kit["x"][:1], grad=False)
    assert report.passed and report.model_diff == ()


def test_bad_x_names_x(kit):
    reg = HookRegistry(kit["model"])
    for bad, err in [(kit["x"][0], ShapeError), (kit["x"][:, :-1], ShapeError),
                     (torch.full_like(kit["x"], float("nan")), NonFiniteError), (kit["x"].tolist(), InputTypeError)]:
        with pytest.raises(err) as e:
            reg.run_with_cache(bad, points=[POINT])
        assert e.value.name == "x"
    out64, c64 = reg.run_with_cache(kit["x"].double(), points=[POINT])
    out32, c32 = reg.run_with_cache(kit["x"], points=[POINT])
    assert out64.dtype == torch.float32 and torch.equal(out64, out32) and torch.equal(c64[POINT], c32[POINT])


def test_unknown_point_is_still_a_key_error(kit):
    reg = HookRegistry(kit["model"])
    with pytest.raises(KeyError, match="layer1.0.resid"):
        reg.run_with_cache(kit["x"], points=["layer1.0.rsid"])
    assert sum(reg.hook_counts().values()) == 0
