"""`audit run` end to end: NIfTI cohort + trained checkpoint, 3D MONAI classifier, channels-last ONNX
on PNG files, MONAI U-Net segmenter; resume after SIGKILL; determinism; failure isolation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from audit.run import parse_config, run_audit
from audit.run.context import build_context
from audit.run.plugin import INSTRUMENTS, Instrument, Params, Unit, registry
from probes.core.model import ModelSnapshot

TINY = {"arch": "resnet18", "arch_kwargs": {"channels": [8, 16, 32, 64]}, "num_classes": 2, "in_chans": 4}
QUICK = {"attribution": {"methods": ["input_x_gradient", "lime"], "sampled_cases": 2,
                         "options": {"lime": {"n_samples": 40}}}}


def _tables(out) -> dict[str, pd.DataFrame]:
    return {p.name: pd.read_parquet(p) for p in sorted((out / "tables").glob("*.parquet"))}


def _manifest(out) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _check_run(summary, out, expect_skipped=()):
    m = _manifest(out)
    assert summary.ok, [(f["instrument"], f["error"]) for f in summary.failed]
    assert m["failures"] == [] and m["ended"] is not None
    assert all(m["model_unchanged"].values()) and m["model_unchanged"]
    for name in expect_skipped:
        assert name in m["skipped"] and m["skipped"][name], name
    assert {u["status"] for u in m["units"]} <= {"computed", "reused"}
    return m


# ------------------------------------------------------------ (b) NIfTI cohort + trained checkpoint
@pytest.fixture(scope="module")
def nifti_run(tmp_path_factory):
    from audit.synthetic import SyntheticConfig, make_splits, to_nifti
    from audit.training import TrainConfig, train_or_load

    root = tmp_path_factory.mktemp("nifti")
    splits = make_splits(SyntheticConfig(n_cases=60, size=32, seed=4))
    tc = TrainConfig(arch_kwargs={"channels": (8, 16, 32, 64)}, epochs=1, batch_size=16)
    res = train_or_load(splits, tc, root / "model")
    manifest = to_nifti(splits["test"], root / "cohort")
    cfg = parse_config({"model": {"path": str(root / "model" / res.card["checkpoint"]), **TINY},
                        "cohort": {"source": "manifest", "manifest": str(manifest), "split": None, "max_cases": 6},
                        "instruments": QUICK, "out": str(root / "out"), "batch_size": 3})
    return cfg, run_audit(cfg), splits["test"], res.model


def test_nifti_cohort_with_a_trained_checkpoint(nifti_run):
    from audit.training import predict_proba

    cfg, summary, cohort, model = nifti_run
    m = _check_run(summary, cfg.out)
    assert m["weights_sha256"] and len(m["config_hash"]) == 16 and m["versions"]["torch"] == torch.__version__
    assert m["n_cases"] == 6 and m["channels"] == ["T1", "T1c", "T2", "FLAIR"]
    t = _tables(cfg.out)
    pred = t["predictions.cases.parquet"].query("metric == 'p_irregular'").set_index("case_id").value
    direct = predict_proba(model, cohort[:6])[:, 1]  # the trainer's own prediction path
    np.testing.assert_allclose(pred.loc[[c.case_id for c in cohort[:6]]].to_numpy(), direct, atol=1e-6)
    sets = t["metrics.sets.parquet"].set_index("metric").value
    from sklearn.metrics import roc_auc_score

    labels = np.array([c.label for c in cohort[:6]])
    if labels.min() != labels.max():
        assert sets["auc"] == pytest.approx(roc_auc_score(labels, direct), abs=1e-9)
    assert sets["accuracy"] == pytest.approx(((direct > 0.5) == labels).mean()) and sets["n"] == 6
    loc = t["gradcam.localisation.parquet"]
    assert set(loc.roi) >= {"gtv", "skull", "brain"} and loc.case_id.nunique() == 6
    assert {"iou@95", "relevance_mass", "relevance_mass_per_area", "hit_rate@95", "intensity_pearson"} <= set(loc.metric)
    # mass per area = mass / (ROI voxels / all voxels), from the masks themselves
    row = loc.query("metric == 'relevance_mass' and roi == 'gtv' and reason == ''").iloc[0]
    per = loc.query("metric == 'relevance_mass_per_area' and roi == 'gtv' and case_id == @row.case_id "
                    "and point == @row.point").value.iloc[0]
    gtv = next(c for c in cohort if c.case_id == row.case_id).masks["gtv"]
    assert per == pytest.approx(row.value / gtv.mean(), rel=1e-6)
    maps = np.load(cfg.out / "maps" / "gradcam" / "maps.npz")["maps"]
    assert maps.dtype == np.float16 and maps.shape == (4, loc.point.nunique(), 1, 32, 32)  # show_cases=4
    # LRP conservation is a finding per case: start = the target logit, flagged against tol 0.05
    cons = t["lrp.conservation.parquet"].pivot(index="case_id", columns="metric", values="value")
    with torch.no_grad():
        logits = model(torch.stack([torch.tensor(c.image) for c in cohort[:6]]))[:, 1].double().numpy()
    np.testing.assert_allclose(cons.loc[[c.case_id for c in cohort[:6]], "start"], logits, rtol=1e-5)
    err = (cons.sum_relevance - cons.start).abs() / cons.start.abs()
    np.testing.assert_allclose(cons.rel_error, err, rtol=1e-9)
    assert (cons.conserved == (err <= 0.05)).all()
    faith = t["attribution.faithfulness.parquet"]
    assert {"delta_aupc", "sparsity_gini", "max_sensitivity"} <= set(faith.metric)
    # LIME ran on the two sampled cases only, the gradient method on all six
    loc_a = t["attribution.localisation.parquet"]
    assert loc_a.groupby("method").case_id.nunique().to_dict() == {"input_x_gradient": 6, "lime": 2}


def test_same_config_same_tables_and_a_changed_parameter_recomputes_only_its_units(nifti_run, tmp_path):
    cfg, _, _, _ = nifti_run
    first = _tables(cfg.out)
    again = run_audit(cfg.model_copy(update={"out": tmp_path / "again"}))
    second = _tables(tmp_path / "again")
    assert first.keys() == second.keys() and again.ok
    for k in first:
        if k != "truthfulness.timing.parquet":  # G5 is a wall-clock time, apart by design
            pd.testing.assert_frame_equal(first[k], second[k], check_exact=True, obj=k)
    rerun = run_audit(cfg)  # resume: everything reused
    assert rerun.computed == [] and len(rerun.reused) == len(_manifest(cfg.out)["units"])
    changed = parse_config({**cfg.model_dump(mode="json"), "instruments": {**QUICK, "gradcam": {"q": 90}}})
    res = run_audit(changed)
    assert res.computed and {u.split("/")[0] for u in res.computed} == {"gradcam"}
    assert not any(u.startswith("gradcam/") for u in res.reused)
    assert "iou@90" in set(_tables(cfg.out)["gradcam.localisation.parquet"].metric)
    # --only brings along the instruments whose tables it reads (truthfulness reads shapley)
    only = run_audit(cfg, only=["truthfulness"])
    assert only.ok and not only.computed and {u.split("/")[0] for u in only.reused} == {"shapley", "truthfulness"}


def _plant_failing_instrument(monkeypatch) -> None:
    """Register, for this test only, an instrument "boom" whose one unit raises."""
    def boom(ctx, p, unit):
        raise RuntimeError("planted failure")

    registry()
    monkeypatch.setitem(INSTRUMENTS, "boom", Instrument("boom", Params, lambda c, p: [Unit("all")], boom, ("x",)))


def test_a_failing_instrument_is_isolated_and_recorded(nifti_run, tmp_path, monkeypatch):
    cfg, _, _, _ = nifti_run
    _plant_failing_instrument(monkeypatch)
    res = run_audit(cfg.model_copy(update={"out": tmp_path / "o"}), only=["predictions", "boom"])
    assert [f["instrument"] for f in res.failed] == ["boom"] and "planted failure" in res.failed[0]["traceback"]
    assert (tmp_path / "o" / "tables" / "predictions.cases.parquet").exists()
    assert _manifest(tmp_path / "o")["failures"][0]["error"] == "RuntimeError: planted failure"


# ------------------------------------------------------------ resume after SIGKILL
OFF = ("lrp", "probes", "patching", "geometry", "ablation", "shapley", "truthfulness")  # many small units, quickly


def test_sigkill_then_resume_recomputes_only_the_missing_units(tmp_path):
    cfg = {"model": TINY, "cohort": {"source": "synthetic", "synthetic": {"n_cases": 40, "size": 32, "seed": 2},
                                     "max_cases": 12},
           "instruments": {"attribution": {"methods": ["input_x_gradient", "integrated_gradients"], "faith_cases": 4,
                                           "options": {"integrated_gradients": {"n_steps": 8}}},
                           "gradcam": {"faith_cases": 4}, **{k: False for k in OFF}},
           "out": "out", "batch_size": 2}
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "audit.cli", "run", str(path)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    units = tmp_path / "out" / "units"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(units.glob("*/[!.]*"))) < 8:
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    done = len(list(units.glob("*/[!.]*")))
    total_planned = None
    res = run_audit(parse_config(cfg, base=tmp_path))
    m = _manifest(tmp_path / "out")
    total_planned = len(m["units"])
    assert len(res.reused) == done and len(res.computed) == total_planned - done > 0, (done, total_planned)
    assert not list(units.glob("*/.tmp-*"))  # half-written units were cleaned
    clean = run_audit(parse_config({**cfg, "out": "clean"}, base=tmp_path))
    assert clean.ok and len(clean.computed) == total_planned
    a, b = _tables(tmp_path / "out"), _tables(tmp_path / "clean")
    assert a.keys() == b.keys()
    for k in a:
        if k != "truthfulness.timing.parquet":
            pd.testing.assert_frame_equal(a[k], b[k], check_exact=True, obj=k)


# ------------------------------------------------------------ (c) 3D MONAI classifier
def test_3d_monai_classifier(tmp_path):
    cfg = parse_config({
        "model": {"arch": "monai:resnet10", "in_chans": 4, "num_classes": 2, "input_layout": "NCDHW",
                  "arch_kwargs": {"spatial_dims": 3}},
        "cohort": {"source": "synthetic", "synthetic": {"n_cases": 16, "dim": 3, "size": 24, "seed": 5}, "split": "train",
                   "max_cases": 4},
        "instruments": {"attribution": {"methods": ["input_x_gradient"]}, "shapley": {"absent": ["zero"]},
                        "truthfulness": {"n_samples": 2, "steps": 5}},
        "out": str(tmp_path / "o"), "batch_size": 2})
    ctx = build_context(cfg)
    rows: list[int] = []
    # memory stays that of the model at the run's batch: no forward of any instrument sees more
    # inputs (deletion steps, coalitions, patched pairs and perturbed copies are chunked)
    snap = ModelSnapshot.take(ctx.model)
    handle = ctx.model.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    try:
        res = run_audit(cfg, ctx=ctx)
    finally:
        handle.remove()
    _check_run(res, cfg.out)
    assert snap.diff(ctx.model) == []
    assert len(rows) > 100 and max(rows) == 2, (len(rows), max(rows))
    loc = _tables(cfg.out)["gradcam.localisation.parquet"]
    assert loc.point.nunique() == len(ctx.points) >= 4 and loc.case_id.nunique() == 4
    maps = np.load(cfg.out / "maps" / "lrp" / "maps.npz")["maps"]
    assert maps.shape == (4, 4, 24, 24, 24)
    # the report draws each 3D case as the axial slice through the centre of its target ROI, and says which
    from audit.report import RunTables
    from audit.report.html import render_report
    from audit.report.panels import shown_cases

    html = render_report(cfg.out).read_text(encoding="utf-8")
    for case in shown_cases(RunTables(cfg.out))[0]:
        k = round(float(np.argwhere(case.masks["gtv"])[:, 0].mean()))
        assert f"axial slice {k} of 24 (first array axis) through the centre of gtv" in html


# ------------------------------------------------------------ (d) channels-last ONNX with softmax, on PNG files
def test_onnx_nhwc_softmax_on_png_files_gradcam_equals_torch(tmp_path):
    from PIL import Image

    from probes.attribution import layer_gradcam
    from tests.helpers import NHWCNet, export_nhwc_softmax

    path, net = export_nhwc_softmax(tmp_path / "model.onnx")
    rng = np.random.default_rng(0)
    for k, cls in enumerate(["healthy", "tumour"] * 3):
        (tmp_path / "img" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "img" / cls / f"{k}.png")
    cfg = parse_config({
        "model": {"path": str(path), "input_layout": "NHWC", "output": "probabilities"},
        "cohort": {"source": "images", "folder": str(tmp_path / "img"), "split": None},
        "preprocess": {"normalize": "minmax"},
        "instruments": {"gradcam": {"maps_dtype": "float32", "show_cases": 6}, "lrp": False,
                        "attribution": {"methods": ["input_x_gradient"]}},
        "out": str(tmp_path / "o"), "batch_size": 4})
    ctx = build_context(cfg)
    res = run_audit(cfg, ctx=ctx)
    m = _check_run(res, cfg.out)
    assert "lrp" not in m["skipped"]  # switched off, not skipped
    maps = np.load(cfg.out / "maps" / "gradcam" / "maps.npz")["maps"]  # (cases, points, 1, H, W)
    ref = NHWCNet(channels_last=False, head="log_softmax").eval()
    ref.load_state_dict(net.state_dict())
    x = ctx.x()
    assert x.shape == (6, 3, 16, 16)
    want = layer_gradcam(ref, x, 1, ["conv1", "conv2"])
    for j, point in enumerate(["conv1", "conv2"]):
        np.testing.assert_allclose(maps[:, j], want[point].numpy(), atol=1e-4)
    assert ctx.class_names == ("healthy", "tumour", "2", "3") or ctx.class_names[:2] == ("healthy", "tumour")


# ------------------------------------------------------------ (e) MONAI U-Net segmenter
def test_unet_segmenter_skips_classifier_instruments_with_reasons(tmp_path):
    cfg = parse_config({
        "model": {"arch": "monai:UNet", "task": "segmentation", "in_chans": 4, "num_classes": 2,
                  "arch_kwargs": {"spatial_dims": 2, "channels": [8, 16], "strides": [2]}},
        "cohort": {"source": "synthetic", "synthetic": {"n_cases": 16, "size": 32, "seed": 6}, "split": "train",
                   "max_cases": 4},
        "instruments": {"attribution": {"methods": ["input_x_gradient", "integrated_gradients"]}},
        "out": str(tmp_path / "o"), "batch_size": 2})
    res = run_audit(cfg)
    m = _check_run(res, cfg.out, expect_skipped=("gradcam", "lrp"))
    assert "segmenter" in m["skipped"]["gradcam"] or "classifier" in m["skipped"]["gradcam"]
    t = _tables(cfg.out)
    assert set(t["predictions.cases.parquet"].metric) == {"dice_gtv"}
    sets = t["metrics.sets.parquet"].set_index("metric").value
    dice = t["predictions.cases.parquet"].value.to_numpy()
    assert sets["mean_dice_gtv"] == pytest.approx(dice.mean()) and sets["mean_dice_gtv_ci_low"] <= dice.mean()
    loc = t["attribution.localisation.parquet"]
    assert set(loc.method) == {"input_x_gradient", "integrated_gradients"} and loc.case_id.nunique() == 4


def test_cli_exit_code_says_that_something_failed(nifti_run, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from audit.cli import app

    cfg, _, _, _ = nifti_run
    _plant_failing_instrument(monkeypatch)
    path = tmp_path / "audit.yaml"
    data = cfg.model_dump(mode="json")
    data.update(out=str(tmp_path / "o"), instruments={"attribution": False, "lrp": False, "gradcam": False})
    path.write_text(yaml.safe_dump(data))
    res = CliRunner().invoke(app, ["run", str(path), "--only", "predictions", "--only", "boom"])
    assert res.exit_code == 1, res.output
    assert "failed boom all: RuntimeError: planted failure" in " ".join(res.output.split())
    ok = CliRunner().invoke(app, ["run", str(path), "--only", "predictions"])
    assert ok.exit_code == 0, ok.output
    assert {u["status"] for u in _manifest(tmp_path / "o")["units"]} == {"reused"}  # resumed, not recomputed
