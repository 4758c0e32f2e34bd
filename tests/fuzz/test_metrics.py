"""Bad inputs for ``probes.metrics``: localisation, faithfulness, truthfulness, ROC and case values.

Map metrics run on the kit's maps and masks; model instruments (``deletion_curve``,
``delta_aupc``, ``evaluate_methods``, ...) on the kit's ResNet-18 with few steps and samples so
the module stays fast. Arguments that are not of a kit kind (scores, importances, seeds, curves)
get their own bad-input lists here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from probes.metrics import (DeletionCurve, auc, aupc, binarize_at_percentile, case_values, class_probability_fn,
                            contrast_importance_correlation, deletion_curve, delong, delong_cov, delong_placements,
                            delta_aupc, evaluate_methods, random_aupc, feature_portion, hit_rate, intensity_correlation,
                            iou_at_percentile, localization_table, map_contrast_importance, max_sensitivity,
                            mean_with_ci, msfi, normalise_importance, plausibility_tests, relevance_mass, sparsity,
                            time_per_map, uniform_linf_perturbation)
from tests.fuzz.harness import Bad, Row, params, run_case

SHAPLEY = [0.4, 0.3, 0.2, 0.1]


def _nan(v: Any) -> Any:
    a = np.array(v, dtype=np.float64)
    a.reshape(-1)[0] = np.nan
    return a


def _inf(v: Any) -> Any:
    a = np.array(v, dtype=np.float64)
    a.reshape(-1)[0] = np.inf
    return a


def _explain(model: Any):
    """A cheap gradient map |∂ logit_target / ∂x| of ``model`` (resolved at call time)."""
    def fn(xb: torch.Tensor, target: Any) -> torch.Tensor:
        xb = xb.detach().clone().requires_grad_(True)
        out = model(xb)
        t = torch.as_tensor(target).reshape(-1).expand(xb.shape[0])
        (g,) = torch.autograd.grad(out.gather(1, t[:, None]).sum(), xb)
        return g.abs()
    return fn


def _contrast_maps(k: dict) -> torch.Tensor:
    """Per-contrast maps (N, C, *spatial) that differ between contrasts."""
    return k["x_base"].abs().clone()


# --------------------------------------------------------------------------- custom bad inputs
SCORES = [Bad("a NaN", _nan, "error"), Bad("an Inf", _inf, "error"),
          Bad("wrong length", lambda s: np.asarray(s)[:-1], "error"),
          Bad("strings", lambda s: np.asarray(s).astype(str), "error")]
IMPORTANCE = [Bad("a NaN", _nan, "error"), Bad("an Inf", _inf, "error"),
              Bad("all zero", lambda w: np.zeros_like(np.asarray(w, dtype=float)), "nan"),
              Bad("wrong length", lambda w: np.asarray(w)[:-1], "error"),
              Bad("3-D", lambda w: np.asarray(w)[None, None], "error"),
              Bad("one negative", lambda w: np.r_[np.asarray(w)[:-1], -1.0], "ok")]
SHAPLEY_BAD = [Bad("a NaN", _nan, "error"), Bad("wrong length", lambda w: np.asarray(w)[:-1], "error"),
               Bad("constant", lambda w: np.ones_like(np.asarray(w, dtype=float)), "nan"),
               Bad("strings", lambda w: np.asarray(w).astype(str), "error")]
Q = [Bad("101", lambda q: 101, "error"), Bad("NaN", lambda q: float("nan"), "error"),
     Bad("a string", lambda q: "95", "error"), Bad("0", lambda q: 0, "ok")]
SEED = [Bad("-1", lambda s: -1, "error"), Bad("a float", lambda s: 1.5, "error"),
        Bad("a string", lambda s: "0", "error"), Bad("a numpy int", lambda s: np.int64(s), "same")]
VALUES = [Bad("a NaN", _nan, "ok"), Bad("an Inf", _inf, "error"),
          Bad("all NaN", lambda v: np.full(np.shape(v), np.nan), "nan"),
          Bad("one value", lambda v: np.asarray(v)[:1], "nan"),
          Bad("no spread", lambda v: np.ones(np.shape(v)), "nan"),
          Bad("strings", lambda v: np.asarray(v).astype(str), "error")]
CASE_VALUES = [Bad("a NaN", _nan, "ok"), Bad("an Inf", _inf, "error"),
               Bad("3-D", lambda v: np.asarray(v)[:, None, None], "error"),
               Bad("strings", lambda v: np.asarray(v).astype(str), "error"),
               Bad("empty", lambda v: np.asarray(v)[:0], "error")]
METRIC = [Bad("empty", lambda m: "", "error"), Bad("not a str", lambda m: 3, "error")]
PROBABILITY = [Bad("a NaN", _nan, "error"), Bad("above 1", lambda p: np.asarray(p) + 1, "error"),
               Bad("wrong length", lambda p: np.asarray(p)[:-1], "error")]
CORRECT = [Bad("values 0/2", lambda c: np.asarray(c).astype(int) * 2, "error"),
           Bad("all correct", lambda c: np.ones(np.shape(c), bool), "nan"),
           Bad("wrong length", lambda c: np.asarray(c)[:-1], "error")]
PREDICTED = [Bad("a float", lambda p: np.asarray(p) + 0.5, "error"),
             Bad("a NaN", _nan, "error"), Bad("strings", lambda p: np.asarray(p).astype(str), "error")]
MSFI = [Bad("a NaN", _nan, "ok"), Bad("an Inf", _inf, "error"),
        Bad("wrong length", lambda m: np.asarray(m)[:-1], "error")]


def _curve(k: dict) -> DeletionCurve:
    fr = np.linspace(0, 1, 3)
    t = pd.DataFrame({"case_id": np.repeat(["a", "b"], 3), "method": "", "mode": "deletion",
                      "fraction": np.tile(fr, 2), "reason": "", "probability": [0.9, 0.5, 0.1, 0.8, 0.6, 0.2]})
    return DeletionCurve(table=t, id_vars=("case_id", "method", "mode", "fraction", "reason"))


def _nan_curve(c: DeletionCurve) -> DeletionCurve:
    t = c.table.copy()
    first = t["case_id"] == t["case_id"].iloc[0]
    t.loc[first, "probability"] = np.nan
    t.loc[first, "reason"] = "map ranks nothing (all its values are equal)"
    return DeletionCurve(table=t, id_vars=c.id_vars)


CURVE = [Bad("a DataFrame, not a DeletionCurve", lambda c: c.table, "error"),
         Bad("a curve of a map that ranks nothing", _nan_curve, "nan")]


def _frame_without_time(rep: Any) -> pd.DataFrame:
    """The report's numbers without the wall-clock rows (they differ from run to run)."""
    f = rep.to_frame()
    return f[f["metric"] != "seconds_per_map"].reset_index(drop=True)


def _stats(d: dict) -> pd.DataFrame:
    """``mean_with_ci``'s dict as a tidy frame (reason on the NaN rows)."""
    keys = ["value", "ci_low", "ci_high", "p_value", "n"]
    v = np.array([float(d[k]) for k in keys])
    return pd.DataFrame({"reason": np.where(np.isnan(v), d["reason"], ""), "metric": keys, "value": v})


NO_REF = "takes no image or mask to fit: any spatial shape is a valid map"
DEFINED = "a sum of positive attribution, defined for any finite map (τ-b makes a constant importance NaN)"
REGION = "returns a boolean region (no NaN possible): all voxels tie, so the region is the whole map, with a warning"

ROWS: list[Row] = [
    # ---------------------------------------------------------------- localisation
    Row("probes.metrics.iou_at_percentile", build=lambda k: {"maps": k["maps"], "mask": k["mask"], "q": 90},
        call=lambda kw: iou_at_percentile(**kw), args={"maps": "maps", "mask": "mask", "q": Q}),
    Row("probes.metrics.hit_rate", build=lambda k: {"maps": k["maps"], "mask": k["mask"]},
        call=lambda kw: hit_rate(**kw), args={"maps": "maps", "mask": "mask"}),
    Row("probes.metrics.relevance_mass", build=lambda k: {"maps": k["maps"], "mask": k["mask"]},
        call=lambda kw: relevance_mass(**kw), args={"maps": "maps", "mask": "mask"},
        why={("maps", "constant"): "ranks nothing: the ratio would only be the ROI's share of the image"}),
    Row("probes.metrics.binarize_at_percentile", build=lambda k: {"maps": k["maps"], "q": 90},
        call=lambda kw: binarize_at_percentile(**kw), args={"maps": "maps", "q": Q},
        expect={("maps", "all zero"): "ok", ("maps", "constant"): "ok", ("maps", "no channel axis"): "ok",
                ("maps", "wrong spatial shape"): "ok"},
        why={("maps", "all zero"): REGION, ("maps", "constant"): REGION,
             ("maps", "no channel axis"): "no image or mask to fit: (N, H, W) is read as N maps of H channels",
             ("maps", "wrong spatial shape"): NO_REF}),
    Row("probes.metrics.intensity_correlation",
        build=lambda k: {"maps": _contrast_maps(k), "x": k["x"], "mask": k["mask"]},
        call=lambda kw: intensity_correlation(**kw), args={"maps": "maps", "x": "x", "mask": "mask"},
        why={("x", "one channel too few"): "per-contrast maps no longer fit x (no model to ask)"}),
    Row("probes.metrics.feature_portion",
        build=lambda k: {"maps": _contrast_maps(k), "mask": np.asarray(k["mask"])[:, None].copy()},
        call=lambda kw: feature_portion(**kw), args={"maps": "maps", "mask": "mask"}),
    Row("probes.metrics.msfi", build=lambda k: {"maps": _contrast_maps(k), "mask": k["mask"], "importance": SHAPLEY},
        call=lambda kw: msfi(**kw), args={"maps": "maps", "mask": "mask", "importance": IMPORTANCE},
        expect={("maps", "all zero"): "ok"},
        why={("maps", "all zero"): "no positive attribution counts as FP = 0 with its weight kept (the "
                                   "explanation fails to show the contrast); a warning names the contrast"}),
    Row("probes.metrics.normalise_importance", build=lambda k: {"importance": SHAPLEY},
        call=lambda kw: normalise_importance(**kw),
        args={"importance": [b for b in IMPORTANCE if b.label != "wrong length"]}),
    Row("probes.metrics.localization_table",
        build=lambda k: {"maps": _contrast_maps(k), "masks": dict(k["masks"]), "x": k["x"],
                         "case_ids": list(k["case_ids"]), "contrasts": list(k["channel_names"])},
        call=lambda kw: localization_table(**kw),
        args={"maps": "maps", "masks": "masks", "x": "x", "case_ids": "case_ids"},
        why={("x", "one channel too few"): "per-contrast maps no longer fit x (no model to ask)"}),
    # ---------------------------------------------------------------- faithfulness
    Row("probes.metrics.class_probability_fn", build=lambda k: {"model": k["model"], "x": k["x"]},
        call=lambda kw: class_probability_fn(kw["model"])(kw["x"]), args={"model": "model", "x": "x"}),
    Row("probes.metrics.deletion_curve",
        build=lambda k: {"model": k["model"], "x": k["x"], "target": k["target"], "maps": k["maps"], "steps": 2},
        call=lambda kw: deletion_curve(**kw), args={"model": "model", "x": "x", "target": "target", "maps": "maps"}),
    Row("probes.metrics.delta_aupc",
        build=lambda k: {"model": k["model"], "x": k["x"], "target": k["target"], "maps": k["maps"], "steps": 2,
                         "n_samples": 2},
        call=lambda kw: delta_aupc(**kw), args={"model": "model", "x": "x", "target": "target", "maps": "maps"}),
    Row("probes.metrics.random_aupc",
        build=lambda k: {"model": k["model"], "x": k["x"], "target": k["target"], "steps": 2, "n_samples": 2},
        call=lambda kw: random_aupc(**kw), args={"model": "model", "x": "x", "target": "target"}),
    Row("probes.metrics.aupc", build=lambda k: {"curve": _curve(k)}, call=lambda kw: aupc(**kw),
        args={"curve": CURVE}),
    Row("probes.metrics.max_sensitivity",
        build=lambda k: {"model": k["model"], "x": k["x"], "target": k["target"], "n_samples": 2},
        call=lambda kw: max_sensitivity(_explain(kw["model"]), **kw),
        args={"model": "model", "x": "x", "target": "target"}),
    Row("probes.metrics.sparsity", build=lambda k: {"maps": k["maps"]}, call=lambda kw: sparsity(**kw),
        args={"maps": "maps"},
        expect={("maps", "constant"): "ok", ("maps", "no channel axis"): "same", ("maps", "wrong spatial shape"): "ok"},
        why={("maps", "constant"): "a uniform map has Gini index 0 by definition (the least sparse map)",
             ("maps", "no channel axis"): "channels and voxels are pooled (per_contrast=False): same numbers",
             ("maps", "wrong spatial shape"): NO_REF}),
    Row("probes.metrics.uniform_linf_perturbation", build=lambda k: {"seed": 0},
        call=lambda kw: uniform_linf_perturbation(**kw)(torch.zeros(2, 3), 0.1), args={"seed": SEED}),
    # ---------------------------------------------------------------- truthfulness
    Row("probes.metrics.map_contrast_importance", build=lambda k: {"maps": _contrast_maps(k)},
        call=lambda kw: map_contrast_importance(**kw), args={"maps": "maps"},
        expect={("maps", "all zero"): "ok", ("maps", "constant"): "ok", ("maps", "no channel axis"): "ok",
                ("maps", "wrong spatial shape"): "ok"},
        why={("maps", "all zero"): DEFINED, ("maps", "constant"): DEFINED,
             ("maps", "no channel axis"): "no image or Shapley values to fit: (N, H, W) is read as N maps of H "
                                          "channels",
             ("maps", "wrong spatial shape"): NO_REF}),
    Row("probes.metrics.contrast_importance_correlation",
        build=lambda k: {"maps": _contrast_maps(k), "shapley": SHAPLEY},
        call=lambda kw: contrast_importance_correlation(**kw), args={"maps": "maps", "shapley": SHAPLEY_BAD},
        expect={("maps", "wrong spatial shape"): "ok"}, why={("maps", "wrong spatial shape"): NO_REF}),
    Row("probes.metrics.mean_with_ci", build=lambda k: {"values": np.array([0.1, 0.4, 0.3, 0.2])},
        call=lambda kw: _stats(mean_with_ci(**kw)), args={"values": VALUES},
        why={("values", "a NaN"): "NaN marks an undefined case; it is left out of the mean"}),
    Row("probes.metrics.plausibility_tests",
        build=lambda k: {"msfi_values": np.array([0.9, 0.2, 0.7, 0.4, 0.8, 0.3]),
                         "probability": np.array([0.9, 0.6, 0.8, 0.7, 0.95, 0.55]),
                         "correct": np.array([True, False, True, False, True, False]),
                         "predicted": np.array([0, 1, 0, 1, 1, 0])},
        call=lambda kw: plausibility_tests(**kw),
        args={"msfi_values": MSFI, "probability": PROBABILITY, "correct": CORRECT, "predicted": PREDICTED},
        why={("msfi_values", "a NaN"): "a case with NaN MSFI is dropped and counted in the reason"}),
    Row("probes.metrics.time_per_map",
        build=lambda k: {"model": k["model"], "x": k["x"], "target": k["target"], "warmup": False},
        call=lambda kw: time_per_map(_explain(kw["model"]), **kw)[0],
        args={"model": "model", "x": "x", "target": "target"}),
    Row("probes.metrics.evaluate_methods",
        build=lambda k: {"model": k["model"], "x": k["x"], "target": k["target"], "labels": k["labels"],
                         "mask": k["mask"], "shapley": SHAPLEY, "n_samples": 2, "steps": 2, "warmup": False},
        call=lambda kw: _frame_without_time(evaluate_methods(methods={"grad": _explain(kw["model"])}, **kw)),
        args={"model": "model", "x": "x", "target": "target", "labels": "labels", "mask": "mask"}),
    # ---------------------------------------------------------------- ROC
    Row("probes.metrics.auc", build=lambda k: {"labels": k["labels"], "scores": k["scores"]},
        call=lambda kw: auc(**kw), args={"labels": "labels", "scores": SCORES}),
    Row("probes.metrics.delong", build=lambda k: {"labels": k["labels"], "scores_a": k["scores"],
                                                   "scores_b": np.array([0.3, 0.6, 0.1, 0.8])},
        call=lambda kw: delong(**kw), args={"labels": "labels", "scores_a": SCORES, "scores_b": SCORES}),
    Row("probes.metrics.delong_cov", build=lambda k: {"labels": k["labels"], "scores": k["scores"]},
        call=lambda kw: delong_cov(**kw), args={"labels": "labels", "scores": SCORES}),
    Row("probes.metrics.delong_placements", build=lambda k: {"labels": k["labels"], "scores": k["scores"]},
        call=lambda kw: delong_placements(**kw), args={"labels": "labels", "scores": SCORES}),
    # ---------------------------------------------------------------- tidy rows
    Row("probes.metrics.case_values",
        build=lambda k: {"values": np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6], [0.7, 0.8]]), "metric": "iou",
                         "case_ids": list(k["case_ids"])},
        call=lambda kw: case_values(**kw), args={"values": CASE_VALUES, "case_ids": "case_ids", "metric": METRIC},
        why={("values", "a NaN"): "NaN is an undefined value its metric already warned about; it is kept"}),
]

EXEMPT: dict[str, str] = {}


@pytest.mark.parametrize("row,arg,bad,expect", params(ROWS))
def test_bad_input(row, arg, bad, expect, kit):
    run_case(row, arg, bad, expect, kit)
