"""Attribution maps: Grad-CAM at every layer, LRP (zennit), LIME, and the Captum family."""

from probes.attribution.gradcam import layer_gradcam
from probes.attribution.lime import lime_map
from probes.attribution.lrp import lrp, lrp_conservation
from probes.attribution.methods import METHODS, MethodInfo, attribute, grid_feature_mask, slic_feature_mask

__all__ = ["layer_gradcam", "lime_map", "lrp", "lrp_conservation", "attribute", "METHODS", "MethodInfo",
           "grid_feature_mask", "slic_feature_mask"]
