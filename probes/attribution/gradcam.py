"""Grad-CAM (Selvaraju et al., ICCV 2017) at every hook point from one forward and one backward.

Maps are ``(N, 1, *spatial)`` at the input's spatial size; the same code path serves 2D
(``(N, C, H, W)``) and 3D (``(N, C, D, H, W)``) inputs. ``model`` is an ``nn.Module`` or a
``probes.hooks.HookRegistry`` on it; the model's declared interface (channels-last input,
probability output) is honoured through the registry, which feeds the model in its own layout
and explains logit-like scores (``probes.attribution.scores``). A point must carry a
channels-first activation ``(N, K, *spatial)``: a point of a channels-last model that still
carries the model's own ``(N, *spatial, C)`` layout is refused (``UnsupportedModelError``).

``normalize="minmax"`` follows pytorch-grad-cam 1.5 (``base_cam.py``,
``utils/image.py::scale_cam_image``) step by step and equals its ``GradCAM`` with one target
layer in 2D; ``normalize="gradcam"`` also resizes 3D maps as it does (``scipy.ndimage.zoom``,
cubic spline).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probes.attribution.result import LayerAttribution
from probes.attribution.scores import target_scores
from probes.core.errors import ShapeError
from probes.core.model import Output, UnsupportedModelError, model_interface, model_state
from probes.core.validate import Target, as_case_ids, as_input, as_targets, check_choice
from probes.hooks.points import as_points
from probes.hooks.registry import HookRegistry, as_registry

__all__ = ["NORMALIZATIONS", "default_point", "layer_gradcam"]

NORMALIZATIONS = (None, "minmax", "gradcam")
_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _resize(maps: Tensor, size: Sequence[int]) -> Tensor:
    """Linear/bilinear/trilinear resize, ``align_corners=False`` (= cv2 INTER_LINEAR upsampling)."""
    if tuple(maps.shape[2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=tuple(size), mode=_MODES[len(size)], align_corners=False)


def _minmax(maps: Tensor, eps: float = 1e-7) -> Tensor:
    """Per-image min-max: (m − min) / (1e-7 + max(m − min)), as grad-cam's ``scale_cam_image``."""
    flat = maps.flatten(1)
    flat = flat - flat.min(dim=1, keepdim=True).values
    flat = flat / (eps + flat.max(dim=1, keepdim=True).values)
    return flat.view_as(maps)


def _zoom_like_gradcam(maps: Tensor, size: Sequence[int]) -> Tensor:
    """pytorch-grad-cam's 3D resize: ``scipy.ndimage.zoom(img, target/shape)`` per image."""
    from scipy.ndimage import zoom

    arr = maps.detach().cpu().numpy().astype(np.float32)
    out = [zoom(img[0], [t_s / i_s for i_s, t_s in zip(img.shape[1:], size)]) for img in arr]
    return torch.from_numpy(np.float32(out))[:, None].to(maps.device)


def default_point(reg: HookRegistry) -> str:
    """The last residual block's output (``<block>.resid``), else the last convolution's output."""
    if reg.blocks:
        return f"{reg.blocks[-1]}.resid"
    convs = [n for n, m in reg.model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    if not convs:
        raise ValueError("no residual block or convolution found in the model: pass a point")
    return convs[-1]


def layer_gradcam(model: nn.Module | HookRegistry, x: Tensor, target: Target,
                  points: Sequence[str] | str | None = None, *, normalize: str | None = None,
                  output: Output = None, case_ids: Sequence[Any] | None = None) -> LayerAttribution:
    """Grad-CAM at every requested point from ONE forward and ONE backward.

    For a point with activation A (N, K, *s) and gradient G = ∂y/∂A of y = Σ_n s_n[target_n]
    (s: the model's logit-like scores): w_nk = mean_s G_nk, map_n = ReLU(Σ_k w_nk A_nk),
    resized to the input's spatial size (bilinear in 2D, trilinear in 3D,
    ``align_corners=False``). Each case's map depends only on its own score (cases do not
    interact in eval mode). The model runs in eval mode (a warning if it was in training
    mode) and is left as found.

    Args:
        model: an ``nn.Module`` or a ``HookRegistry`` on it.
        x: input (N, C, *spatial), channels first.
        target: class index, or one per case.
        points: point names with a spatial activation (N, K, *s); default every block's
            ``.resid`` (``[f"{b}.resid" for b in reg.blocks]``).
        normalize: ``None`` keeps the raw ReLU'd maps (their scale is the score's: doubling
            the logit doubles the map). ``"minmax"``: pytorch-grad-cam's order — ReLU, per-image
            min-max *at the feature resolution* ((m − min) / (1e-7 + max)), resize, ReLU,
            min-max again (its ``aggregate_multi_layers``); in effect a min-max of the
            upsampled map. ``"gradcam"``: ``"minmax"``, except that 3D maps are resized as
            pytorch-grad-cam does in 3D (``scipy.ndimage.zoom``, cubic spline on a
            corner-aligned grid, overshoot clipped by the ReLU), computed on the CPU.
        output: ``None`` (the model's declared interface) or an override (``"logits"``,
            ``"probabilities"``, ``"log_probabilities"``, a callable giving probabilities).
        case_ids: one id per case (default ``"0"``, ``"1"``, ...).

    Returns:
        :class:`LayerAttribution`: ``result[point]`` is the (N, 1, *spatial) float32 map, in
        ``points`` order.

    Raises:
        KeyError: an unknown point (before anything runs). ValueError: a bad ``target``,
        ``normalize`` or a point whose activation is not spatial. UnsupportedModelError: a
        point that carries a channels-last model's own input layout.
    """
    check_choice(normalize, "normalize", NORMALIZATIONS)
    reg = as_registry(model, output)
    x = as_input(x, "x", model=reg.model).contiguous()  # one memory layout: the same numbers
    points = as_points(reg, points, default_anchor="resid")
    n = x.shape[0]
    t = as_targets(target, n, device=x.device)
    ids = as_case_ids(case_ids, n)
    raw_layout = None
    if model_interface(reg.model).input_layout == "channels_last":
        raw_layout = (n, *x.shape[2:], x.shape[1])

    def objective(out: Tensor) -> Tensor:
        return target_scores(out, t, "layer_gradcam").sum()

    with model_state(reg.model, warn="layer_gradcam"):
        _, cache = reg.run_with_cache(x, points=points, grad=True, target=objective)
    spatial = tuple(x.shape[2:])
    maps: dict[str, Tensor] = {}
    for p in points:
        a, g = cache[p].float(), cache.grads[p].float()
        if raw_layout is not None and tuple(a.shape) == raw_layout and raw_layout != tuple(x.shape):
            raise UnsupportedModelError(
                f"layer_gradcam: point {p!r} carries the model's channels-last input layout {raw_layout}; "
                "Grad-CAM needs a channels-first activation (N, K, *spatial): choose a point after the "
                "model's own transpose to channels first")
        if a.dim() != x.dim():
            raise ShapeError("points", f"activation shape {tuple(a.shape)} at {p!r}", "(N, K, *spatial)",
                             message=f"points: point {p!r} has activation shape {tuple(a.shape)}: Grad-CAM needs "
                             f"(N, K, *spatial) with {x.dim() - 2} spatial dims like x {tuple(x.shape)}")
        dims = tuple(range(2, a.dim()))
        w = g.mean(dim=dims, keepdim=True)              # α_k: global-average-pooled gradients
        cam = (w * a).sum(dim=1, keepdim=True).clamp_min(0)
        if normalize is None:
            maps[p] = _resize(cam, spatial)
            continue
        # grad-cam's order (base_cam.py): min-max at feature resolution, resize, then
        # aggregate_multi_layers ReLUs and min-maxes again: the upsampled map does not reach
        # the old extremes (align_corners=False samples between feature centres).
        cam = _minmax(cam)
        cam = _zoom_like_gradcam(cam, spatial) if normalize == "gradcam" and len(spatial) == 3 \
            else _resize(cam, spatial)
        maps[p] = _minmax(cam.clamp_min(0))
    return LayerAttribution(point_maps=maps, method="gradcam", target=t.cpu(), case_ids=tuple(ids),
                            options={"normalize": normalize},
                            feature_shapes={p: tuple(int(v) for v in cache[p].shape[2:]) for p in points})
