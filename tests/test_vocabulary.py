"""One vocabulary and one result protocol across every public instrument.

* Signatures: walking every public function of ``probes`` and ``audit.readers``, a concept has
  one keyword name (``target``, never ``target_class``; ``maps``, never ``map``; ``n_samples``,
  never ``n_random``/``n_draws``; ``alpha``, never ``ci``; ``contrasts``, never
  ``channel_names``/``modalities``; ...), model instruments lead with ``(model, x, target)``,
  and ``method`` only ever names an attribution method.
* Results: every public function that returns a ``probes.core.Result`` has a row in ``CALLS``
  (a new instrument without one fails the test) and is run on a small model or reads table:
  its result is frozen, ``to_frame()`` is a tidy copy (``metric``, ``value`` last; ``case_id``
  of str where there are cases), ``tables()`` are tidy, ``summary()`` is a ``Summary`` that
  prints as text and renders as HTML, and the result shows itself in a notebook.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import typing
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from probes.core.result import Result, Summary
from probes.hooks.registry import HookRegistry
from tests.helpers import timm_model

# a synonym → the vocabulary's word for the concept (docs/design.md)
SYNONYMS = {
    "map": "maps", "maps_per_contrast": "maps", "attributions": "maps", "saliency": "maps",
    "region": "mask", "roi": "mask", "rois": "masks", "target_masks": "masks",
    "target_class": "target", "class_idx": "target", "target_label": "target",
    "prob_fn": "output", "output_fn": "output",
    "n_random": "n_samples", "n_draws": "n_samples", "nt_samples": "n_samples", "n_perturbations": "n_samples",
    "n_resamples": "n_boot", "n_bootstrap": "n_boot",
    "ci": "alpha", "conf_level": "alpha", "confidence": "alpha",
    "channel_names": "contrasts", "channels": "contrasts", "modalities": "contrasts", "modality": "contrast",
    "per_channel": "per_contrast", "per_modality": "per_contrast", "modality_importance": "importance",
    "random_state": "seed", "rng": "seed",
    "image": "x", "inputs": "x", "sources": "x", "targets": "x_base", "data": "x",
    "truth": "labels", "y_true": "labels",
    "ids": "case_ids", "case_id": "case_ids",
}
# functions whose parameters are the inner workings of another concept, with the reason
SIGNATURE_EXCEPTIONS = {
    "slic_segments": "one image (C, *spatial), not a batch x",
    "check_truth": "validates the reads table's truth column by that column's name",
    "auc_covariance": "data is a prepared MRMCData, not an input",
    "weighted_statistics": "data is a prepared PatientData, not an input",
}


def _modules():
    for pkg in ("probes", "audit.readers"):
        root = importlib.import_module(pkg)
        yield root
        for info in pkgutil.walk_packages(root.__path__, pkg + "."):
            yield importlib.import_module(info.name)


def _public_functions():
    seen = {}
    for mod in _modules():
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.isfunction(obj) and obj.__module__ == mod.__name__:
                seen[f"{mod.__name__}.{name}"] = obj
    return seen


FUNCTIONS = _public_functions()


def test_the_walk_sees_the_instruments():
    names = {k.rsplit(".", 1)[1] for k in FUNCTIONS}
    assert {"attribute", "layer_gradcam", "activation_patching", "contrast_shapley", "delta_aupc",
            "mrmc_or", "cluster_bootstrap"} <= names
    assert len(FUNCTIONS) > 120


@pytest.mark.parametrize("qualname", sorted(FUNCTIONS))
def test_one_name_per_concept(qualname):
    fn = FUNCTIONS[qualname]
    short = qualname.rsplit(".", 1)[1]
    params = list(inspect.signature(fn).parameters)
    if short not in SIGNATURE_EXCEPTIONS:
        wrong = {p: SYNONYMS[p] for p in params if p in SYNONYMS}
        assert not wrong, f"{qualname}: rename {wrong} (docs/design.md vocabulary)"
    if params[:1] == ["model"] and ("x" in params or "loader" in params):
        assert params[1] in ("x", "loader"), f"{qualname}: model instruments take (model, x, ...): {params}"
        if "target" in params:
            assert params.index("target") == 2, f"{qualname}: target must be the third argument: {params}"
    if "method" in params:
        default = inspect.signature(fn).parameters["method"].default
        assert default in ("", inspect.Parameter.empty) and (default == "" or short in ("attribute", "warn_unhooked", "row_options")), \
            f"{qualname}: 'method' names an attribution method only (default {default!r})"


# ------------------------------------------------------------------------------ results
def _returns_result(fn) -> bool:
    try:
        hints = typing.get_type_hints(fn, localns={"HookRegistry": HookRegistry})
    except NameError:
        return False
    r = hints.get("return")
    return inspect.isclass(r) and issubclass(r, Result)


# result builders shared by instruments, checked through the instruments that call them
BUILDERS = {"audit.readers.mrmc_result.mrmc_tables": "builds the result of mrmc_or and mrmc_dbm"}
RESULT_FUNCTIONS = sorted(k for k, f in FUNCTIONS.items() if _returns_result(f) and k not in BUILDERS)


@pytest.fixture(scope="module")
def kit():
    """A small model, inputs, masks, maps and a reads table shared by every call."""
    from audit.readers import example_reads

    model = timm_model("resnet18")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, 32, 32, generator=g)
    gtv = np.zeros((6, 32, 32), bool)
    gtv[:, 8:20, 10:22] = True
    skull = np.zeros((6, 32, 32), bool)
    skull[:, :3] = True
    labels = np.array([0, 1, 0, 1, 0, 1])
    reads = example_reads()
    return dict(model=model, x=x, masks={"gtv": gtv, "skull": skull}, labels=labels, reads=reads,
                maps=torch.rand(6, 1, 32, 32, generator=g), ids=[f"case-{i}" for i in range(6)])


def _calls(k):
    """qualified function name → call on the kit; one row per result-returning public function."""
    from audit.readers import (analyze_reads, calibration_fit, cluster_bootstrap, cochran_q_correctness,
                               decision_changes, decision_curve, fit_gee, gee_assistance, mcnemar_correctness,
                               mrmc_dbm, mrmc_or, outcome_counts, outcome_transitions, reader_roc, reads_calibration,
                               reads_decision_curve)
    from probes.attribution import attribute, layer_gradcam, lime_map, lrp, lrp_conservation
    from probes.hooks.verify import verify_registry
    from probes.internals import (activation_patching, extract_features, fit_linear_probes, pooled_cosine_distances,
                                  roi_cosine_distances)
    from probes.interventions import ablation_study, baseline_disagreement, contrast_shapley, ranking_variance
    from probes.metrics import (case_values, contrast_importance_correlation, deletion_curve, delong, delta_aupc,
                                evaluate_methods, localization_table, plausibility_tests)

    m, x, masks, y, ids, maps = k["model"], k["x"], k["masks"], k["labels"], k["ids"], k["maps"]
    reads = k["reads"]
    point = "layer4.1.resid"
    loader = [{"image": x[:3], "label": torch.as_tensor(y[:3]), "case_id": ids[:3], "patient_id": ids[:3]},
              {"image": x[3:], "label": torch.as_tensor(y[3:]), "case_id": ids[3:], "patient_id": ids[3:]}]
    rng = np.random.default_rng(0)
    feats = {"p": rng.normal(size=(40, 3)) + np.repeat([[0.0], [1.0]], 20, 0)}
    p1 = torch.softmax(m(x), 1)[:, 1].detach().numpy()
    shap = lambda: contrast_shapley(m, x, None, "prob", labels=y, per_case=True, case_ids=ids)  # noqa: E731
    return {
        "probes.attribution.gradcam.layer_gradcam": lambda: layer_gradcam(m, x, 1, case_ids=ids),
        "probes.attribution.lime.lime_map": lambda: lime_map(m, x[:2], 1, n_samples=10, n_segments=4,
                                                             case_ids=ids[:2]),
        "probes.attribution.lrp.lrp": lambda: lrp(m, x, 1, case_ids=ids),
        "probes.attribution.lrp.lrp_conservation": lambda: lrp_conservation(m, x, 1, case_ids=ids),
        "probes.attribution.methods.attribute": lambda: attribute(m, x, 1, "gradient", case_ids=ids),
        "probes.hooks.verify.verify_registry": lambda: verify_registry(HookRegistry(m), x[:2]),
        "probes.internals.geometry.pooled_cosine_distances": lambda: pooled_cosine_distances(
            HookRegistry(m).run_with_cache(x, points=[point])[1], masks, ids),
        "probes.internals.geometry.roi_cosine_distances": lambda: roi_cosine_distances(m, x, masks, [point],
                                                                                       case_ids=ids),
        "probes.internals.linear.extract_features": lambda: extract_features(m, loader, [point]),
        "probes.internals.linear.fit_linear_probes": lambda: fit_linear_probes(
            feats, np.repeat([0, 1], 20), np.arange(40), control=False),
        "probes.internals.patching.activation_patching": lambda: activation_patching(
            m, x[:3], 1, x[3:], [point], masks={"gtv": masks["gtv"][:3]}, n_samples=1),
        "probes.interventions.ablation.ablation_study": lambda: ablation_study(
            m, x, 1, ["none", "no gtv"], labels=y, masks=masks, case_ids=ids),
        "probes.interventions.shapley.contrast_shapley": shap,
        "probes.interventions.shapley_rank.ranking_variance": lambda: ranking_variance(
            np.stack([[[1, 2, 3, 4]] * 6, [[2, 1, 3, 4]] * 6]), case_ids=ids),
        "probes.interventions.shapley_rank.baseline_disagreement": lambda: baseline_disagreement(shap(), shap()),
        "probes.metrics.faithfulness.deletion_curve": lambda: deletion_curve(m, x, 1, maps, steps=4, case_ids=ids),
        "probes.metrics.faithfulness.delta_aupc": lambda: delta_aupc(m, x, 1, maps, n_samples=2, steps=4,
                                                                     case_ids=ids),
        "probes.metrics.localization.localization_table": lambda: localization_table(maps, masks, x, case_ids=ids),
        "probes.metrics.roc.delong": lambda: delong(y, p1),
        "probes.metrics.truthfulness.contrast_importance_correlation": lambda: contrast_importance_correlation(
            torch.rand(6, 4, 32, 32), rng.normal(size=(6, 4)), case_ids=ids),
        "probes.metrics.truthfulness.plausibility_tests": lambda: plausibility_tests(
            rng.random(12), rng.random(12), np.tile([True, False], 6), np.tile([0, 1, 1], 4)),
        "probes.metrics.truthfulness.evaluate_methods": lambda: evaluate_methods(
            m, x, labels=y, mask=masks["gtv"], shapley=np.array([0.4, 0.3, 0.2, 0.1]), n_samples=2, steps=4,
            warmup=False, case_ids=ids, methods={"gradient": lambda xx, t: attribute(m, xx, t, "gradient").maps}),
        "probes.metrics.values.case_values": lambda: case_values(torch.rand(6), "score", case_ids=ids),
        "audit.readers.bootstrap.cluster_bootstrap": lambda: cluster_bootstrap(reads, n_boot=20),
        "audit.readers.calibration.calibration_fit": lambda: calibration_fit(y, np.clip(p1, 0.01, 0.99)),
        "audit.readers.calibration.reads_calibration": lambda: reads_calibration(reads),
        "audit.readers.dbm.mrmc_dbm": lambda: mrmc_dbm(reads),
        "audit.readers.decision.decision_curve": lambda: decision_curve(y, {"model": p1}),
        "audit.readers.decision.reads_decision_curve": lambda: reads_decision_curve(reads),
        "audit.readers.gee.fit_gee": lambda: fit_gee(rng.integers(0, 2, 60), np.c_[np.ones(60), rng.normal(size=60)],
                                                     np.repeat(np.arange(15), 4)),
        "audit.readers.gee.gee_assistance": lambda: gee_assistance(reads),
        "audit.readers.mrmc.mrmc_or": lambda: mrmc_or(reads),
        "audit.readers.outcomes.outcome_counts": lambda: outcome_counts(reads),
        "audit.readers.outcomes.outcome_transitions": lambda: outcome_transitions(reads),
        "audit.readers.outcomes.decision_changes": lambda: decision_changes(reads),
        "audit.readers.outcomes.mcnemar_correctness": lambda: mcnemar_correctness(reads),
        "audit.readers.outcomes.cochran_q_correctness": lambda: cochran_q_correctness(reads),
        "audit.readers.roc.reader_roc": lambda: reader_roc(reads),
        "audit.readers.study.analyze_reads": lambda: analyze_reads(reads, n_boot=20),
    }


def test_every_result_returning_function_has_a_call():
    import ast

    src = inspect.getsource(_calls)
    keys = {n.value for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and n.value.count(".") >= 2 and n.value.split(".")[0] in ("probes", "audit")}
    missing = sorted(set(RESULT_FUNCTIONS) - keys - set(BUILDERS))
    assert not missing, f"add a row to CALLS in tests/test_vocabulary.py for: {missing}"


def _check_tidy(frame: pd.DataFrame, where: str) -> None:
    assert isinstance(frame, pd.DataFrame), where
    assert list(frame.columns[-2:]) == ["metric", "value"], f"{where}: columns {list(frame.columns)}"
    assert frame["value"].dtype.kind == "f", f"{where}: value dtype {frame['value'].dtype}"
    if "case_id" in frame.columns:
        assert frame.columns[0] == "case_id", where
        assert all(isinstance(c, str) for c in frame["case_id"]), f"{where}: case_id must be str"


@pytest.mark.parametrize("qualname", RESULT_FUNCTIONS)
def test_result_protocol(kit, qualname):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = _calls(kit)[qualname]()
    assert isinstance(res, Result), qualname
    # frozen
    field = next(iter(f.name for f in dataclasses.fields(res))) if dataclasses.is_dataclass(res) else "x"
    with pytest.raises((dataclasses.FrozenInstanceError, AttributeError)):
        setattr(res, field, None)
    # a tidy copy
    frame = res.to_frame()
    _check_tidy(frame, qualname)
    assert len(frame) > 0, qualname
    frame.loc[frame.index[0], "value"] = 12345.678
    again = res.to_frame()
    assert again["value"].iloc[0] != 12345.678 or frame.shape != again.shape, f"{qualname}: to_frame must copy"
    if "case_id" in frame.columns and qualname.startswith("probes.") and "case_ids" in inspect.signature(
            FUNCTIONS[qualname]).parameters:
        assert set(again["case_id"]) <= set(kit["ids"]) | {"cohort"}, f"{qualname}: case ids not carried"
    for name, table in res.tables().items():
        _check_tidy(table, f"{qualname}.tables()[{name!r}]")
    # prints well, shows in a notebook
    s = res.summary()
    assert isinstance(s, Summary) and isinstance(s, str) and len(s) > 0
    assert repr(s) == str(s)
    html = res._repr_html_()
    assert isinstance(html, str) and ("<table" in html or "<pre" in html), qualname


def test_no_private_name_crosses_a_module_and_probes_never_imports_audit():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    bad = []
    for path in [*root.joinpath("probes").rglob("*.py"), *root.joinpath("audit").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("probes", "audit"):
                bad += [f"{path.relative_to(root)}: {node.module}.{a.name}" for a in node.names
                        if a.name.startswith("_") and a.name != "__all__"]
                if path.parts[len(root.parts)] == "probes" and node.module.startswith("audit"):
                    bad.append(f"{path.relative_to(root)} imports {node.module}")
    assert not bad, bad


def test_no_import_cycles_between_modules():
    """Module-level imports of probes and audit form a DAG (function-level and TYPE_CHECKING ones aside)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    graph: dict[str, set[str]] = {}
    for path in [*root.joinpath("probes").rglob("*.py"), *root.joinpath("audit").rglob("*.py")]:
        rel = path.relative_to(root).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        deps = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:  # module level only
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("probes", "audit"):
                deps.add(node.module)
        graph[name] = deps
    edges = {m: {d for d in ds if d in graph} for m, ds in graph.items()}
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in edges[m]:
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in edges:
        if m not in state:
            visit(m, [m])
    assert len(graph) > 40 and not cycles, cycles
