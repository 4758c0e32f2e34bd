"""The audit-run plug-ins of the probes instruments: probes, patching, geometry, ablation,
shapley, truthfulness.

For each: its tables' columns and ids; its numbers equal a direct call of the probes function
on the same inputs (the wrapper adds no error); per-case units concatenate to one big call;
a recomputed unit gives identical tables; skipped with a reason where its needs are not met;
the model is left as found (``ModelSnapshot``). A small synthetic cohort (9 test cases, 48²,
4 contrasts) and a random-init ResNet-18 (seed 0) keep each test within seconds.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

import audit.run.instruments.ablation as ablation_mod
import audit.run.instruments.geometry as geometry_mod
import audit.run.instruments.patching as patching_mod
import audit.run.instruments.probes as probes_mod
import audit.run.instruments.shapley as shapley_mod
import audit.run.instruments.truthfulness as truth_mod
from audit.data.cohort import Cohort
from audit.run.config import ConfigError, parse_config
from audit.run.context import Context, build_context
from audit.run.plugin import INSTRUMENTS
from probes.attribution import attribute
from probes.core.model import ModelSnapshot, as_audit_model, class_probabilities
from probes.core.result import long_frame
from probes.internals import (
    activation_patching,
    extract_features,
    fit_linear_probes,
    roi_cosine_distances,
    select_pairs,
)
from probes.internals.patching import EFFECT_KEYS, EFFECT_VALUES
from probes.interventions.ablation import ablation_study
from probes.interventions.shapley import contrast_shapley
from probes.interventions.shapley_rank import contrast_ranking, normalized_spearman_footrule
from probes.metrics.truthfulness import Thresholds, evaluate_methods

pytestmark = pytest.mark.filterwarnings("ignore")

COHORT = {"source": "synthetic", "synthetic": {"n_cases": 60, "size": 48, "seed": 3}, "max_cases": 12}
RESNET = {"arch": "resnet18", "arch_kwargs": {"channels": [8, 16, 32, 64]}, "num_classes": 2, "in_chans": 4}
UNET = {"arch": "monai:UNet", "task": "segmentation",
        "arch_kwargs": {"spatial_dims": 2, "in_channels": 4, "out_channels": 2, "channels": [8, 16], "strides": [2]}}
SIX = ("probes", "patching", "geometry", "ablation", "shapley", "truthfulness")


def config(tmp_path=None, model=RESNET, **over):
    data = {"cohort": {**COHORT, **over.pop("cohort", {})}, "model": model, "device": "cpu",
            "out": str(tmp_path or "unused-out"), **over}
    return parse_config(data)


@pytest.fixture(scope="module")
def ctx() -> Context:
    return build_context(config())


@pytest.fixture(scope="module")
def seg_ctx() -> Context:
    return build_context(config(model=UNET))


@pytest.fixture(scope="module")
def bare_ctx(ctx) -> Context:
    """The classifier's context without ROI masks (cohort.rois: [])."""
    c = build_context(config(cohort={"rois": []}))
    assert c.rois == () and c.has_labels
    return c


def run_all(ctx: Context, name: str, params) -> dict[str, pd.DataFrame]:
    """Every unit of an instrument, tables concatenated in plan order (as the runner does),
    with the model checked unchanged."""
    inst = INSTRUMENTS[name]
    snap = ModelSnapshot.take(ctx.model)
    parts: dict[str, list] = {}
    for unit in inst.plan(ctx, params):
        torch.manual_seed(ctx.unit_seed(name, unit.key))
        for k, v in inst.run(ctx, params, unit).items():
            parts.setdefault(k, []).append(v)
    assert snap.diff(ctx.model) == [], f"{name} changed the model"
    return {k: pd.concat(v, ignore_index=True) for k, v in parts.items()}


def one(ctx: Context, name: str, params, i: int = 0) -> dict[str, pd.DataFrame]:
    inst = INSTRUMENTS[name]
    unit = inst.plan(ctx, params)[i]
    return dict(inst.run(ctx, params, unit))


def with_batch(ctx: Context, size: int) -> Context:
    return dataclasses.replace(ctx, cfg=ctx.cfg.model_copy(update={"batch_size": size}))


def assert_same(a: pd.DataFrame, b: pd.DataFrame, **kw) -> None:
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False, **kw)


# ------------------------------------------------------------------------------ registry
def test_registered_with_tables_needs_and_params():
    for name in SIX:
        inst = INSTRUMENTS[name]
        assert inst.doc and inst.tables and inst.params.__doc__
        inst.params()  # defaults validate
    assert INSTRUMENTS["probes"].needs == {"labels", "two_classes", "hooks", "classifier"}
    assert INSTRUMENTS["patching"].needs == {"labels", "two_classes", "hooks", "classifier"}
    assert INSTRUMENTS["geometry"].needs == {"masks", "hooks"}
    assert INSTRUMENTS["ablation"].needs == {"labels", "two_classes", "classifier"}
    assert INSTRUMENTS["truthfulness"].needs == {"labels", "masks", "classifier"}
    assert INSTRUMENTS["truthfulness"].after == ("shapley",)
    assert list(INSTRUMENTS).index("shapley") < list(INSTRUMENTS).index("truthfulness")
    # parameters go through the config, unknown keys are errors naming the key
    cfg = config(instruments={"shapley": {"n_samples": 2, "clinical_ranking": ["T1c", "FLAIR", "T1=T2"]},
                              "patching": {"n_pairs": 3}})
    assert cfg.instrument_params()["shapley"].n_samples == 2
    with pytest.raises(ConfigError, match="instruments.probes.nope"):
        config(instruments={"probes": {"nope": 1}})
    with pytest.raises(ConfigError, match="instruments.shapley.absent"):
        config(instruments={"shapley": {"absent": ["ones"]}})
    with pytest.raises(ConfigError, match="unknown attribution method 'gradcma'"):
        config(instruments={"truthfulness": {"methods": ["gradcma"]}})
    with pytest.raises(ConfigError, match="instruments.probes.select"):
        config(instruments={"probes": {"select": "f1"}})


def test_skipped_with_reasons(ctx, seg_ctx, bare_ctx):
    for name in ("probes", "patching", "ablation", "truthfulness"):
        assert "applies to classifiers" in INSTRUMENTS[name].skip_reason(seg_ctx)
    # a segmenter has ROIs; geometry runs wherever the context found hook points
    assert INSTRUMENTS["geometry"].skip_reason(seg_ctx) == (None if seg_ctx.points else
                                                            "no hook points found in the model")
    assert INSTRUMENTS["geometry"].skip_reason(dataclasses.replace(seg_ctx, points=())) == \
        "no hook points found in the model"
    assert INSTRUMENTS["shapley"].skip_reason(seg_ctx) is None  # Dice with the masks
    for name in SIX:
        assert INSTRUMENTS[name].skip_reason(ctx) is None
    # no ROI masks: geometry and truthfulness skip; ablation keeps its intensity conditions
    assert "no ROI masks" in INSTRUMENTS["geometry"].skip_reason(bare_ctx)
    assert "no ROI masks" in INSTRUMENTS["truthfulness"].skip_reason(bare_ctx)
    assert INSTRUMENTS["ablation"].skip_reason(bare_ctx) is None
    # a segmenter without masks, a classifier without labels-of-two-classes
    seg_bare = dataclasses.replace(seg_ctx, rois=())
    assert "no ROI masks" in INSTRUMENTS["shapley"].skip_reason(seg_bare)
    one_class = dataclasses.replace(ctx, cohort=Cohort([ctx.cohort[0], ctx.cohort[2]], ctx.cohort.meta))
    assert set(one_class.labels()) == {1}
    assert "needs both classes" in INSTRUMENTS["probes"].skip_reason(one_class)
    assert "needs both classes" in INSTRUMENTS["ablation"].skip_reason(one_class)


# ------------------------------------------------------------------------------- probes
def test_probes_equal_direct_call(ctx):
    p = probes_mod.ProbeParams()
    assert [u.key for u in INSTRUMENTS["probes"].plan(ctx, p)] == ["cases[0:9]"]
    points = probes_mod.probe_points(ctx, p)
    assert points == ["act1", *ctx.points]  # the stem's activation, then every block
    out = run_all(ctx, "probes", p)
    assert set(out) == {"probes", "assignment", "val_curve"}
    assert list(out["probes"].columns) == ["point", "task", "split", "C", "reason", "metric", "value"]
    assert list(out["assignment"].columns) == ["case_id", "group", "split", "metric", "value"]
    assert list(dict.fromkeys(out["probes"]["point"])) == points
    assert set(out["probes"]["task"]) == {"real", "control"}
    assert set(out["assignment"]["case_id"]) == set(ctx.case_ids())
    # direct call: one loader batch, binary labels (label == target), same seed
    fs = extract_features(ctx.model, [{"image": ctx.x(), "label": torch.tensor((ctx.labels() == ctx.target) * 1),
                                       "case_id": ctx.case_ids(), "patient_id": ctx.groups()}], points)
    ref = fit_linear_probes(fs, control=True, seed=ctx.unit_seed("probes", "cases[0:9]")).tables()
    for k in out:
        assert_same(out[k], ref[k])
    assert_same(one(ctx, "probes", p)["probes"], out["probes"])  # recomputed: identical
    # explicit points, no stem
    small = one(ctx, "probes", probes_mod.ProbeParams(points=[ctx.points[-1]], control=False))["probes"]
    assert set(small["point"]) == {ctx.points[-1]} and set(small["task"]) == {"real"}


# ------------------------------------------------------------------------------ patching
def test_patching_equal_direct_call(ctx):
    rois = ["gtv", "skull"]
    p = patching_mod.PatchingParams(min_confidence=0.5, rois=rois, n_samples=2, n_boot=200)  # a random-init model is unsure
    out = run_all(ctx, "patching", p)
    assert set(out) == {"patching", "effects", "pairs"}
    assert list(out["patching"].columns) == patching_mod.PATCH_COLUMNS
    assert list(out["effects"].columns) == [*EFFECT_KEYS, "metric", "value"]
    assert list(out["pairs"].columns) == ["case_id", "base_case_id", "pair", "metric", "value"]
    # direct: pairs from the model's probabilities, one ROI pair per pair, every ROI with its controls
    probs = class_probabilities(as_audit_model(ctx.model), ctx.x(), torch.float64).detach().numpy()
    pairs = select_pairs(probs, ctx.labels(), x_label=1, x_base_label=0, min_confidence=0.5, n_pairs=16)
    assert len(pairs) >= 1
    xs, bs = pairs["x"].to_numpy(), pairs["x_base"].to_numpy()
    m = ctx.masks()
    seed = ctx.unit_seed("patching", "cases[0:9]")
    res = activation_patching(ctx.model, ctx.x()[xs], 1, ctx.x()[bs], list(ctx.points),
                              masks={r: (m[r][xs], m[r][bs]) for r in rois}, n_samples=2, seed=seed)
    got = out["patching"]
    assert_same(got.drop(columns=["case_id", "base_case_id"]), res.to_frame())
    ids = np.array(ctx.case_ids())
    assert_same(got[got.metric == "delta"].drop_duplicates("pair")[["case_id", "base_case_id"]],
                pd.DataFrame({"case_id": ids[xs], "base_case_id": ids[bs]}))
    assert set(got["roi"]) == {"full", *rois}  # "full" = unmasked (probes' name)
    assert set(got["control"]) == {"none", "complement", "random"}
    assert set(got["direction"]) == {"x->x_base", "x_base->x"} and list(dict.fromkeys(got["point"])) == list(ctx.points)
    assert_same(out["effects"], long_frame(res.effects(n_boot=200, seed=seed), EFFECT_KEYS, EFFECT_VALUES))
    assert out["pairs"][out["pairs"].metric == "p_x"]["value"].tolist() == pairs["p_x"].tolist()
    assert_same(one(ctx, "patching", p)["patching"], got)  # recomputed: identical
    # unmasked only
    plain = one(ctx, "patching", patching_mod.PatchingParams(min_confidence=0.5, masked=False, n_boot=50))["patching"]
    assert set(plain["roi"]) == {"full"} and set(plain["control"]) == {"none"}
    with pytest.raises(ValueError, match="instruments.patching.rois: 'tumour'"):
        one(ctx, "patching", patching_mod.PatchingParams(min_confidence=0.5, rois=["tumour"]))
    # no qualifying pair: empty tables with their columns
    empty = one(ctx, "patching", patching_mod.PatchingParams(min_confidence=1.0))
    assert all(v.empty for v in empty.values())
    assert list(empty["patching"].columns) == patching_mod.PATCH_COLUMNS
    assert all(v["value"].dtype.kind == "f" for v in empty.values())


# ------------------------------------------------------------------------------ geometry
def test_geometry_units_concatenate_to_one_call(ctx, seg_ctx):
    small = with_batch(ctx, 4)
    p = geometry_mod.GeometryParams()
    assert [u.key for u in INSTRUMENTS["geometry"].plan(small, p)] == ["cases[0:4]", "cases[4:8]", "cases[8:9]"]
    out = run_all(small, "geometry", p)
    assert list(out["distances"].columns) == ["case_id", "point", "roi_a", "roi_b", "reason", "metric", "value"]
    assert list(out["weights"].columns) == ["case_id", "point", "roi", "metric", "value"]
    ref = roi_cosine_distances(ctx.model, ctx.x(), ctx.masks(), list(ctx.points), case_ids=ctx.case_ids()).tables()
    order = {p: i for i, p in enumerate(ctx.points)}
    for k in ("distances", "weights"):
        got = out[k].sort_values("point", key=lambda c: c.map(order), kind="stable")
        assert_same(got, ref[k], rtol=1e-5, atol=1e-7)  # batch of 4 vs 9: float32 convolution sums
    assert set(out["distances"]["case_id"]) == set(ctx.case_ids())
    assert {"global", *ctx.rois} <= set(out["distances"]["roi_a"]) | set(out["distances"]["roi_b"])
    d = out["distances"]
    assert_same(one(small, "geometry", p, 1)["distances"], d[d.case_id.isin(ctx.case_ids(4, 8))])  # recomputed
    sub = one(small, "geometry", geometry_mod.GeometryParams(rois=["gtv"], points=[ctx.points[0]]))["distances"]
    assert set(sub["point"]) == {ctx.points[0]} and set(sub["roi_a"]) | set(sub["roi_b"]) == {"global", "gtv"}
    with pytest.raises(ValueError, match="instruments.geometry.rois: 'tumour' is not a ROI"):
        one(small, "geometry", geometry_mod.GeometryParams(rois=["tumour"]))
    if seg_ctx.points:  # a segmenter's hook points (the context finds them for a MONAI UNet)
        seg = run_all(seg_ctx, "geometry", p)["distances"]
        assert set(seg["point"]) == set(seg_ctx.points) and set(seg["case_id"]) == set(seg_ctx.case_ids())


# ------------------------------------------------------------------------------ ablation
def test_ablation_equal_direct_call(ctx, bare_ctx):
    p = ablation_mod.AblationParams()
    specs = ablation_mod.specs(ctx, p)
    assert specs == [*(f"no {r}" for r in ctx.rois), "no extracranial", "no top1%", "no top5%"]
    out = run_all(ctx, "ablation", p)
    assert set(out) == {"per_condition", "per_case", "roc"}
    assert list(out["per_condition"].columns) == ["condition", "reason", "metric", "value"]
    assert list(out["per_case"].columns) == ["case_id", "condition", "label", "metric", "value"]
    assert list(dict.fromkeys(out["per_condition"]["condition"])) == ["none", *specs]
    ref = ablation_study(ctx.model, ctx.x(), 1, specs, labels=ctx.labels(), masks=ctx.masks(),
                         case_ids=ctx.case_ids()).tables()
    for k in out:
        assert_same(out[k], ref[k])
    assert_same(one(ctx, "ablation", p)["per_condition"], out["per_condition"])  # recomputed: identical
    # no masks: the ROI specs are skipped, the intensity ones kept
    assert ablation_mod.specs(bare_ctx, p) == ["no top1%", "no top5%"]
    assert ablation_mod.specs(ctx, ablation_mod.AblationParams(rois=["extracranial"], extracranial=False,
                                                               top_percents=())) == ["no extracranial"]
    with pytest.raises(ValueError, match="instruments.ablation.rois: 'gtv' is not a ROI"):
        ablation_mod.specs(bare_ctx, ablation_mod.AblationParams(rois=["gtv"]))
    bare = run_all(bare_ctx, "ablation", ablation_mod.AblationParams(top_percents=[5], fill="blur"))
    assert list(dict.fromkeys(bare["per_condition"]["condition"])) == ["none", "no top5% fill=blur"]


# ------------------------------------------------------------------------------- shapley
def test_shapley_equal_direct_call_with_footrule(ctx):
    p = shapley_mod.ShapleyParams(n_samples=2, clinical_ranking=["T1c", "flair", "T1 = T2"])
    units = INSTRUMENTS["shapley"].plan(ctx, p)
    assert [u.key for u in units] == ["auc/zero", "auc/marginal", "accuracy/zero", "accuracy/marginal"]
    out = run_all(ctx, "shapley", p)
    assert set(out) == {"values", "coalitions", "alignment", "footrule"}
    assert list(out["values"].columns) == ["case_id", "contrast", "absent", "value_function", "reason", "metric",
                                           "value"]
    assert list(out["footrule"].columns) == ["case_id", "absent", "value_function", "reference", "reason", "metric",
                                             "value"]
    assert set(out["alignment"]["absent"]) == {"marginal"}
    ref_rank = np.array([3, 1, 3, 2])  # T1, T1c, T2, FLAIR
    assert (shapley_mod.reference_ranking(p.clinical_ranking, ctx.channels) == ref_rank).all()
    y = ctx.labels()
    for u in units:
        metric, absent = u.spec["metric"], u.spec["absent"]
        res = contrast_shapley(ctx.model, ctx.x(), 1 if metric == "auc" else None, metric, absent=absent, labels=y,
                               masks=ctx.masks(), contrasts=ctx.channels, case_ids=ctx.case_ids(), n_samples=2,
                               seed=ctx.unit_seed("shapley", u.key))
        got = out["values"][(out["values"].value_function == metric) & (out["values"].absent == absent)]
        assert_same(got, res.to_frame())
        agree = normalized_spearman_footrule(contrast_ranking(res.phi), ref_rank)
        row = out["footrule"][(out["footrule"].value_function == metric) & (out["footrule"].absent == absent)]
        assert row["value"].tolist() == [pytest.approx(agree, abs=0)]
        coal = out["coalitions"][(out["coalitions"].value_function == metric) & (out["coalitions"].absent == absent)]
        assert_same(coal.drop(columns=["absent", "value_function"]), res.tables()["coalitions"])
    assert_same(one(ctx, "shapley", p, 1)["values"], out["values"].iloc[8:16])  # recomputed marginal: identical
    # no clinical ranking: no footrule table; a bad ranking names the contrast
    assert "footrule" not in one(ctx, "shapley", shapley_mod.ShapleyParams(metrics=["auc"], absent=["zero"]))
    for bad, word in ((["T1c", "FLAIR", "T1"], "not ranked"), (["T1c", "PD", "T1=T2", "FLAIR"], "'PD'"),
                      (["T1c", "T1c", "T1=T2", "FLAIR"], "named twice")):
        with pytest.raises(ValueError, match=word):
            shapley_mod.reference_ranking(bad, ctx.channels)


def test_shapley_segmenter_dice(seg_ctx):
    p = shapley_mod.ShapleyParams(n_samples=2)
    assert [u.key for u in INSTRUMENTS["shapley"].plan(seg_ctx, p)] == ["dice/zero", "dice/marginal"]
    out = run_all(seg_ctx, "shapley", p)
    for absent in ("zero", "marginal"):
        res = contrast_shapley(seg_ctx.model, seg_ctx.x(), None, "dice", absent=absent, masks=seg_ctx.masks(),
                               truth_roi="gtv", contrasts=seg_ctx.channels, case_ids=seg_ctx.case_ids(), n_samples=2,
                               seed=seg_ctx.unit_seed("shapley", f"dice/{absent}"))
        assert_same(out["values"][out["values"].absent == absent], res.to_frame())
    with pytest.raises(ValueError, match="truth_roi"):
        one(seg_ctx, "shapley", shapley_mod.ShapleyParams(truth_roi="tumour"))


# -------------------------------------------------------------------------- truthfulness
def test_truthfulness_reads_shapley_and_equals_direct_call(ctx):
    sp = shapley_mod.ShapleyParams(metrics=["auc"], absent=["zero"])
    values = run_all(ctx, "shapley", sp)["values"]
    c = dataclasses.replace(ctx, finished={"shapley": {"values": values}})
    p = truth_mod.TruthfulnessParams(methods=["input_x_gradient", "gradcam"], n_samples=3, steps=5)
    assert [u.key for u in INSTRUMENTS["truthfulness"].plan(c, p)] == ["input_x_gradient", "gradcam"]
    out = run_all(c, "truthfulness", p)
    assert set(out) == {"metrics", "criteria", "per_case", "plausibility", "timing"}
    assert list(out["metrics"].columns) == ["method", "criterion", "stat", "reason", "metric", "value"]
    assert list(out["criteria"].columns) == ["method", "criterion", "reason", "metric", "value"]
    assert list(out["per_case"].columns) == ["case_id", "method", "reason", "metric", "value"]
    assert set(out["per_case"]["metric"]) == {"tau_b", "aupc", "aupc_random_mean", "aupc_random_std", "delta_aupc",
                                              "msfi"}
    assert list(dict.fromkeys(out["criteria"]["method"])) == ["input_x_gradient", "gradcam"]
    phi = values[values.metric == "phi"].set_index("contrast")["value"].reindex(list(ctx.channels)).to_numpy()
    assert (truth_mod.shapley_vector(values, ctx.channels, "auc", "zero") == phi).all()
    timed = ("seconds_per_map",)
    for meth in ("input_x_gradient", "gradcam"):
        seed = ctx.unit_seed("truthfulness", meth)
        rep = evaluate_methods(ctx.model, ctx.x(), None, labels=ctx.labels(),
                               methods={meth: lambda x, t, m=meth, s=seed: attribute(ctx.model, x, t, m, seed=s).maps},
                               mask=ctx.masks()["gtv"], shapley=phi, thresholds=Thresholds(), case_ids=ctx.case_ids(),
                               n_samples=3, steps=5, seed=seed).tables()
        for k in ("metrics", "per_case", "plausibility", "criteria"):
            got = out[k][out[k]["method"] == meth]
            want = rep[k][rep[k]["method"] == meth]
            if k == "metrics":  # G5 is a wall-clock time: in the timing table only
                assert not got.metric.isin(timed).any()
                want = want[~want.metric.isin(timed)]
            if k == "criteria":
                assert (got.criterion != "G5").all()
                want = want[want.criterion != "G5"]
            assert_same(got, want)
        timing = out["timing"][out["timing"]["method"] == meth]
        assert set(timing.criterion) == {"G5"} and set(timing.table) == {"metrics", "criteria"}
    again = one(c, "truthfulness", p, 1)["per_case"]
    assert_same(again, out["per_case"][out["per_case"].method == "gradcam"])  # recomputed: identical
    # the Shapley values it needs are not there
    with pytest.raises(ValueError, match="no cohort φ of value function 'accuracy'"):
        truth_mod.shapley_vector(values, ctx.channels, "accuracy", "zero")
    with pytest.raises(ValueError, match="not a ROI"):
        truth_mod.feature_roi(ctx, truth_mod.TruthfulnessParams(roi="tumour"))
    # the first n_cases cases only
    few = one(c, "truthfulness", truth_mod.TruthfulnessParams(n_cases=5, methods=["input_x_gradient"], n_samples=2,
                                                               steps=4))["per_case"]
    assert set(few["case_id"]) == set(ctx.case_ids(0, 5))


# ------------------------------------------------------------------------------ the runner
def test_runner_stores_the_tables_and_leaves_the_model(ctx, tmp_path):
    from audit.run.runner import run_audit
    from audit.run.store import Store

    cfg = config(tmp_path, instruments={
        "shapley": {"metrics": ["auc"], "absent": ["zero"], "clinical_ranking": ["T1c", "FLAIR", "T1=T2"]},
        "truthfulness": {"methods": ["input_x_gradient"], "n_samples": 2, "steps": 4},
        "patching": {"min_confidence": 0.5, "n_samples": 1, "n_boot": 50, "masked": False},
        "ablation": {"top_percents": [5], "rois": ["gtv"]}, "probes": {"points": [ctx.points[-1]]},
        "geometry": {"rois": ["gtv"]}})
    c = dataclasses.replace(ctx, cfg=cfg, finished={})
    summary = run_audit(cfg, only=list(SIX), ctx=c)
    assert summary.ok, summary.failed
    assert not summary.skipped and not summary.reused
    assert {u.split("/")[0] for u in summary.computed} == set(SIX)
    again = run_audit(cfg, only=list(SIX), ctx=dataclasses.replace(c, finished={}))  # resumed: every unit reused
    assert not again.computed and sorted(again.reused) == sorted(summary.computed)
    tables = Store(tmp_path).tables()
    for name in SIX:
        for t in INSTRUMENTS[name].tables:
            if (name, t) in (("shapley", "alignment"),):  # marginal fill only
                continue
            assert f"{name}.{t}" in tables, f"{name}.{t}"
    man = Store(tmp_path).read_manifest()
    assert all(man["model_unchanged"][n] for n in SIX)
    assert tables["shapley.footrule"]["metric"].tolist() == ["footrule_agreement"]
    assert set(tables["truthfulness.criteria"]["criterion"]) == {"G3", "G4"}
    assert set(tables["truthfulness.timing"]["criterion"]) == {"G5"}
