"""Metrics of maps and models: localisation, faithfulness, truthfulness, ROC/DeLong.

Map metrics lead with ``maps``; model instruments with ``(model, x, target, ...)``.

* localisation (``localization``): ``iou_at_percentile``, ``hit_rate``, ``relevance_mass``,
  ``intensity_correlation``, ``feature_portion``, ``msfi`` — element-wise tensors;
  ``localization_table(maps, masks, x)`` → :class:`LocalizationTable`.
* faithfulness (``faithfulness``): ``deletion_curve`` → :class:`DeletionCurve` (``aupc`` on it),
  ``delta_aupc`` → :class:`DeltaAUPC`; ``max_sensitivity``, ``sparsity`` — element-wise tensors.
* truthfulness (``truthfulness``): ``evaluate_methods`` → :class:`TruthfulnessReport`
  (Jin et al. 2023 G3/G4/G5) and its parts.
* ROC (``roc``): ``auc``, ``delong_cov``, ``delong_placements``; ``delong`` → :class:`DeLongResult`.
* ``case_values(values, metric)`` → :class:`CaseValues`: tidy rows of any element-wise metric.
"""

from probes.metrics.faithfulness import (DeletionCurve, DeltaAUPC, aupc, class_probability_fn, delta_aupc,
                                         deletion_curve, max_sensitivity, random_aupc, sparsity,
                                         uniform_linf_perturbation)
from probes.metrics.localization import (EmptyROIWarning, LocalizationTable, UndefinedMetricWarning,
                                         binarize_at_percentile, feature_portion, hit_rate, intensity_correlation,
                                         iou_at_percentile, localization_table, msfi, normalise_importance,
                                         relevance_mass)
from probes.metrics.roc import DeLongResult, auc, delong, delong_cov, delong_placements
from probes.metrics.truthfulness import (ContrastCorrelation, PlausibilityTests, Thresholds, TruthfulnessReport,
                                         contrast_importance_correlation, evaluate_methods, map_contrast_importance,
                                         mean_with_ci, plausibility_tests, time_per_map)
from probes.metrics.values import CaseValues, WideTableResult, case_values

__all__ = ["DeletionCurve", "DeltaAUPC", "aupc", "class_probability_fn", "delta_aupc", "deletion_curve",
           "max_sensitivity", "random_aupc", "sparsity", "uniform_linf_perturbation", "EmptyROIWarning", "LocalizationTable",
           "UndefinedMetricWarning", "binarize_at_percentile", "feature_portion", "hit_rate",
           "intensity_correlation", "iou_at_percentile", "localization_table", "msfi", "normalise_importance",
           "relevance_mass", "DeLongResult", "auc", "delong", "delong_cov", "delong_placements",
           "ContrastCorrelation", "PlausibilityTests", "Thresholds", "TruthfulnessReport",
           "contrast_importance_correlation", "evaluate_methods", "map_contrast_importance", "mean_with_ci",
           "plausibility_tests", "time_per_map", "CaseValues", "WideTableResult", "case_values"]
