"""Attribution maps: one entry point over the method table, Grad-CAM at every layer, LIME, LRP.

* ``attribute(model, x, target, method, **options)`` — every method of ``METHODS`` (the Captum
  family, ``"gradcam"``, ``"lime"``, ``"lrp"``) → :class:`Attribution`.
* ``layer_gradcam(model, x, target, points)`` — Grad-CAM at many hook points from one
  forward and one backward → :class:`LayerAttribution` (``result[point]`` is the map tensor).
* ``lime_map``, ``lrp``, ``lrp_conservation`` — the methods with their own options.
* ``grid_feature_mask``, ``slic_feature_mask`` — the features of the perturbation methods.
"""

from probes.attribution.features import grid_feature_mask, slic_feature_mask
from probes.attribution.gradcam import layer_gradcam
from probes.attribution.lime import lime_map
from probes.attribution.lrp import LRPConservation, lrp, lrp_conservation
from probes.attribution.methods import METHODS, MethodInfo, attribute, row_options
from probes.attribution.result import Attribution, LayerAttribution

__all__ = [
           "METHODS",
           "Attribution",
           "LRPConservation",
           "LayerAttribution",
           "MethodInfo",
           "attribute",
           "grid_feature_mask",
           "layer_gradcam",
           "lime_map",
           "lrp",
           "lrp_conservation",
           "row_options",
           "slic_feature_mask",
]
