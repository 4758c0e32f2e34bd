"""Bad inputs for the shared vocabulary (``probes.core``): the validators and the small helpers.

The validators are the door every instrument uses, so their rows state what each one checks;
what a validator leaves to the instrument (a map that ranks nothing, an empty ROI, one class
only) is an ``ok`` here with the reason.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probes.core import (as_audit_model, as_case_ids, as_input, as_labels, as_maps, as_mask, as_masks, as_targets,
                         bootstrap_indices, check_alpha, check_choice, check_class_range, check_int,
                         class_probabilities, dice, output_probabilities, resize_mask, to_numpy)
from probes.core.errors import AuditInputError
from tests.fuzz.harness import KINDS, Bad, Row, params, run_case

INSTRUMENT = "the instrument's call, not the validator's"
_LEFT = {("maps", "all zero"): "ok", ("maps", "constant"): "ok"}
_LEFT_WHY = {("maps", "all zero"): f"whether a map ranks anything is {INSTRUMENT}",
             ("maps", "constant"): f"whether a map ranks anything is {INSTRUMENT}"}

INTS = [
    Bad("a bool", lambda v: True, "error"),
    Bad("a float", lambda v: 2.5, "error"),
    Bad("below the minimum", lambda v: 0, "error"),
    Bad("a string", lambda v: "3", "error"),
    Bad("a numpy int", lambda v: np.int64(v), "same"),
]
ALPHAS = [
    Bad("0", lambda a: 0, "error"),
    Bad("1", lambda a: 1.0, "error"),
    Bad("NaN", lambda a: float("nan"), "error"),
    Bad("a bool", lambda a: True, "error"),
    Bad("a string", lambda a: "0.05", "error"),
    Bad("a numpy float", lambda a: np.float64(a), "same"),
]
CHOICES = [
    Bad("not allowed", lambda v: "c", "error"),
    Bad("None", lambda v: None, "error"),
]
ARRAYS = [
    Bad("an object array", lambda a: np.array([object(), object()]), "error"),
    Bad("a list", lambda a: torch.as_tensor(a).tolist(), "same"),
    Bad("a tensor that requires grad", lambda a: torch.as_tensor(a).clone().requires_grad_(True), "same"),
    Bad("bfloat16", lambda a: torch.as_tensor(a).bfloat16(), "ok"),
]
X_LAYOUT = [b for b in KINDS["x"] if b.label in ("non-contiguous", "channels-last memory")]
LOGITS = [
    Bad("float64", lambda o: o.double(), "same"),
    Bad("a batch of one", lambda o: o[:1], "ok"),
]
OUTPUT_KINDS = [
    Bad("not an output kind", lambda o: "prob", "error"),
    Bad("probabilities", lambda o: "probabilities", "ok"),
    Bad("log_probabilities", lambda o: "log_probabilities", "ok"),
    Bad("a callable", lambda o: (lambda out: torch.softmax(out, 1)), "same"),
]
AUDIT_OUTPUTS = [
    Bad("not an output kind", lambda o: "prob", "error"),
    Bad("probabilities", lambda o: "probabilities", "ok"),
    Bad("a callable", lambda o: (lambda out: torch.softmax(out, 1)), "ok"),
]
N_BOOT = [
    Bad("zero", lambda n: 0, "error"),
    Bad("a float", lambda n: 2.5, "error"),
    Bad("a bool", lambda n: True, "error"),
    Bad("a numpy int", lambda n: np.int64(n), "same"),
    Bad("one resample", lambda n: 1, "ok"),
]

ROWS: list[Row] = [
    Row("probes.core.as_input", build=lambda k: {"model": k["model"], "x": k["x"]},
        call=lambda kw: as_input(kw["x"], "x", model=kw["model"]), args={"x": "x"}),
    Row("probes.core.as_targets", build=lambda k: {"target": k["target"]},
        call=lambda kw: as_targets(kw["target"], 4), args={"target": "target"},
        expect={("target", "-1"): "ok", ("target", "a class the model lacks"): "ok"},
        why={("target", "-1"): "the class range is check_class_range's (as_targets does not know the classes)",
             ("target", "a class the model lacks"): "the class range is check_class_range's"}),
    Row("probes.core.check_class_range", build=lambda k: {"target": k["target"]},
        call=lambda kw: check_class_range(as_targets(kw["target"], 4), 2), args={"target": "target"}),
    Row("probes.core.as_maps", build=lambda k: {"maps": k["maps"].clone(), "x_shape": tuple(k["x"].shape)},
        call=lambda kw: as_maps(kw["maps"], kw["x_shape"]), args={"maps": "maps"}, expect=_LEFT, why=_LEFT_WHY),
    Row("probes.core.as_mask", build=lambda k: {"mask": k["mask"].copy(), "ref": tuple(k["maps"].shape)},
        call=lambda kw: torch.as_tensor(as_mask(kw["mask"], kw["ref"], binary=True)), args={"mask": "mask"},
        expect={("mask", "empty"): "ok"}, why={("mask", "empty"): f"an empty ROI is {INSTRUMENT}"}),
    Row("probes.core.as_masks",
        build=lambda k: {"masks": {r: m.copy() for r, m in k["masks"].items()}, "ref": tuple(k["x"].shape)},
        call=lambda kw: as_masks(kw["masks"], kw["ref"], binary=True), args={"masks": "masks"},
        expect={("masks", "an empty ROI"): "ok"}, why={("masks", "an empty ROI"): f"an empty ROI is {INSTRUMENT}"}),
    Row("probes.core.as_labels", build=lambda k: {"labels": k["labels"].copy()},
        call=lambda kw: torch.as_tensor(as_labels(kw["labels"], 4)), args={"labels": "labels"},
        expect={("labels", "one class only"): "ok"},
        why={("labels", "one class only"): f"whether both classes are needed is {INSTRUMENT}"}),
    Row("probes.core.as_case_ids", build=lambda k: {"case_ids": list(k["case_ids"])},
        call=lambda kw: as_case_ids(kw["case_ids"], 4), args={"case_ids": "case_ids"}),
    Row("probes.core.check_int", build=lambda k: {"value": 3},
        call=lambda kw: check_int(kw["value"], "value"), args={"value": INTS}),
    Row("probes.core.check_alpha", build=lambda k: {"alpha": 0.05},
        call=lambda kw: check_alpha(kw["alpha"]), args={"alpha": ALPHAS}),
    Row("probes.core.check_choice", build=lambda k: {"value": "a"},
        call=lambda kw: check_choice(kw["value"], "value", ("a", "b")), args={"value": CHOICES}),
    Row("probes.core.to_numpy", build=lambda k: {"a": k["maps"].clone()},
        call=lambda kw: torch.as_tensor(to_numpy(kw["a"], "a")), args={"a": ARRAYS}),
    Row("probes.core.class_probabilities", build=lambda k: {"model": k["model"], "x": k["x"]},
        call=lambda kw: class_probabilities(as_audit_model(kw["model"]), kw["x"]),
        args={"x": "x", "model": [b for b in KINDS["model"] if b.label == "in training mode"]}),
    Row("probes.core.output_probabilities", build=lambda k: {"out": torch.randn(4, 2, generator=torch.Generator()
                                                                              .manual_seed(1)), "output": "logits"},
        call=lambda kw: output_probabilities(kw["out"], kw["output"]),
        args={"out": LOGITS, "output": OUTPUT_KINDS}),
    Row("probes.core.as_audit_model", build=lambda k: {"model": k["model"], "x": k["x"], "output": None},
        call=lambda kw: as_audit_model(kw["model"], kw["output"]),
        args={"output": AUDIT_OUTPUTS, "model": [b for b in KINDS["model"] if b.label == "not a module"]}),
    Row("probes.core.resize_mask", build=lambda k: {"mask": k["mask"].copy(), "spatial": (8, 8)},
        call=lambda kw: resize_mask(torch.as_tensor(kw["mask"]), kw["spatial"], mode="overlap"),
        args={"mask": "mask", "spatial": [Bad("four axes", lambda s: (2, 2, 2, 2), "error"),
                                          Bad("a zero size", lambda s: (0, 8), "error")]},
        expect={("mask", "empty"): "ok", ("mask", "wrong shape"): "ok"},
        why={("mask", "empty"): "an empty ROI resizes to an empty ROI; what that means is the caller's",
             ("mask", "wrong shape"): "any input resolution is resized to the requested one"}),
    Row("probes.core.dice", build=lambda k: {"a": k["mask"].copy(), "b": np.roll(k["mask"], 2, axis=-1)},
        call=lambda kw: dice(kw["a"], kw["b"]),
        args={"a": [Bad("empty", lambda m: np.zeros_like(m), "ok"),
                    Bad("0/1 integers", lambda m: m.astype(int), "same")] + [
                        b for b in KINDS["mask"] if b.label in ("values other than 0/1", "a NaN")],
              "b": [b for b in KINDS["mask"] if b.label == "wrong shape"]},
        why={("a", "empty"): "Dice of an empty mask with a non-empty one is 0 (1.0 when both are empty)"}),
    Row("probes.core.bootstrap_indices", build=lambda k: {"n_boot": 5},
        call=lambda kw: torch.as_tensor(bootstrap_indices(4, kw["n_boot"], seed=0)), args={"n_boot": N_BOOT}),
]

EXEMPT: dict[str, str] = {
    "probes.core.tidy": "formats an instrument's own result table; takes no user data",
    "probes.core.long_frame": "reshapes an instrument's own wide table; takes no user data",
    "probes.core.render_summary": "renders an instrument's own tables as text/HTML; takes no user data",
    "probes.core.model_state": "the context every model instrument runs in: its training-mode case is in every "
                               "model row",
    "probes.core.model_device": "reads the device of the model's first parameter; no case data",
    "probes.core.model_interface": "reads the model's declared interface attribute; no case data",
}


@pytest.mark.parametrize("row,arg,bad,expect", params(ROWS))
def test_bad_input(row, arg, bad, expect, kit):
    run_case(row, arg, bad, expect, kit)


def test_validators_name_the_argument_they_were_given():
    x = torch.zeros(2, 4, 8, 8)
    for call, name in [(lambda: as_input(x[0], "image", model=torch.nn.Conv2d(4, 1, 1)), "image"),
                       (lambda: as_targets(1.5, 2, name="klass"), "klass"),
                       (lambda: as_maps(torch.zeros(2, 8, 8), x.shape, name="heat"), "heat"),
                       (lambda: as_labels([0, 2], 2, name="truth"), "truth"),
                       (lambda: check_choice("z", "mode", ("a",)), "mode")]:
        with pytest.raises(AuditInputError) as e:
            call()
        assert e.value.name == name and name in str(e.value)
