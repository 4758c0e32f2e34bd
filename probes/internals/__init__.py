"""Inside the model: linear probes, activation patching, latent ROI geometry.

* ``extract_features(model, loader, points)`` — global-average-pooled activations per point
  (:class:`FeatureSet`).
* ``fit_linear_probes(features, labels, groups)`` — patient-grouped L2 logistic probes with a
  control task (:class:`ProbeResult`); ``split_by_group(groups, split)`` makes the split.
* ``select_pairs(probs, labels)`` — confident, correctly classified ``(x, x_base)`` pairs.
* ``activation_patching(model, x, target, x_base, points)`` — Δp(target) when activations are
  grafted between the cases of each pair, ROI-masked with controls (:class:`PatchingResult`).
* ``roi_cosine_distances(model, x, masks, points)`` — cosine distances between global and
  ROI-pooled representations (:class:`RoiDistances`); ``pooled_cosine_distances(acts, masks)``
  on given activations.
"""

from probes.internals.geometry import (RoiDistances, cosine_distance, pooled_cosine_distances, roi_cosine_distances,
                                       roi_pool)
from probes.internals.linear import FeatureSet, ProbeResult, extract_features, fit_linear_probes, gap
from probes.internals.patching import PatchingResult, activation_patching, select_pairs
from probes.internals.splits import split_by_group

__all__ = ["extract_features", "fit_linear_probes", "split_by_group", "gap", "FeatureSet", "ProbeResult",
           "select_pairs", "activation_patching", "PatchingResult", "roi_cosine_distances",
           "pooled_cosine_distances", "roi_pool", "cosine_distance", "RoiDistances"]
