"""medaudit's instruments: look inside a model, at its explanations, and at what it needs.

Every instrument takes ``(model, x, target, ...)`` (or ``maps`` first for map metrics) and
returns a result with ``to_frame()`` (tidy), ``summary()`` and ``_repr_html_`` (docs/design.md).

==============  ==============================================================================
hooks           HookRegistry (run_with_cache, patch, verify), ActivationCache, BlockAdapter,
                register_adapter
attribution     attribute (every method in METHODS), layer_gradcam, lime_map, lrp,
                lrp_conservation, Attribution, LayerAttribution
metrics         localization_table, iou_at_percentile, hit_rate, relevance_mass,
                intensity_correlation, msfi, deletion_curve, aupc, delta_aupc, max_sensitivity,
                sparsity, evaluate_methods, auc, delong
internals       extract_features, fit_linear_probes, select_pairs, activation_patching,
                roi_cosine_distances
interventions   ablate, ablation_study, contrast_shapley, exact_shapley, contrast_ranking,
                normalized_spearman_footrule, ranking_variance, baseline_disagreement
core            ModelSnapshot, model_state, ModelInterface, as_audit_model, Result, Summary;
                errors: AuditInputError (ShapeError, NonFiniteError, ClassIndexError, LabelError,
                InputTypeError, OptionError), UndefinedValueWarning
==============  ==============================================================================

Names load on first use, so ``from probes import HookRegistry`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_INDEX = {
    "probes.hooks": ["HookRegistry", "ActivationCache", "BlockAdapter", "register_adapter", "ANCHORS"],
    "probes.attribution": ["attribute", "METHODS", "layer_gradcam", "lime_map", "lrp", "lrp_conservation",
                           "Attribution", "LayerAttribution", "grid_feature_mask", "slic_feature_mask"],
    "probes.metrics": ["localization_table", "iou_at_percentile", "hit_rate", "relevance_mass",
                       "intensity_correlation", "feature_portion", "msfi", "deletion_curve", "aupc", "delta_aupc",
                       "max_sensitivity", "sparsity", "evaluate_methods", "auc", "delong", "case_values"],
    "probes.internals": ["extract_features", "fit_linear_probes", "split_by_group", "select_pairs",
                         "activation_patching", "roi_cosine_distances", "pooled_cosine_distances"],
    "probes.interventions": ["ablate", "ablation_study", "contrast_shapley", "exact_shapley", "contrast_ranking",
                             "normalized_spearman_footrule", "ranking_variance", "baseline_disagreement"],
    "probes.core": ["ModelSnapshot", "model_state", "ModelInterface", "as_audit_model", "UnsupportedModelError",
                    "Result", "Summary", "AuditInputError", "ShapeError", "NonFiniteError", "ClassIndexError",
                    "LabelError", "InputTypeError", "OptionError", "UndefinedValueWarning"],
}
_WHERE = {name: module for module, names in _INDEX.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'probes' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
