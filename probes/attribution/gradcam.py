"""Attribution maps: Grad-CAM for every layer from one forward+backward, and batched N-D LIME.

Maps are tensors shaped ``(N, C_map, *spatial)`` with the input's spatial size: ``C_map = 1``
for class-activation maps (Grad-CAM, LIME over shared supervoxels), ``C_map = C`` for maps
with one channel per input contrast (LIME with ``per_contrast=True``). The same code path
serves 2D (``(N, C, H, W)``) and 3D (``(N, C, D, H, W)``) inputs.

``target`` is a class index (int) or a length-N sequence/tensor of class indices; the scalar
explained is the model output (logit) of each sample's target class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from probes.hooks.registry import HookRegistry

__all__ = ["layer_gradcam"]

Target = Union[int, Sequence[int], Tensor]  # noqa: UP007 (a runtime alias)
_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


# -- shared helpers -------------------------------------------------------------------------
def _check_input(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() not in (3, 4, 5):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor (N, C, *spatial) with 1-3 spatial dims; got {shape}")


def _targets(target: Target, n: int, device: torch.device) -> Tensor:
    """``target`` as a long tensor of shape (N,), or a ValueError naming its shape."""
    t = torch.as_tensor(target, device=device) if not isinstance(target, Tensor) else target.to(device)
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"target must hold integer class indices; got dtype {t.dtype}")
    if t.dim() == 0:
        t = t.expand(n)
    if t.dim() != 1 or t.shape[0] != n:
        raise ValueError(f"target must be an int or a length-{n} sequence of class indices "
                         f"(one per sample of x); got shape {tuple(t.shape)}")
    return t.long()


def _check_logits(out: Tensor, t: Tensor) -> None:
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != t.shape[0]:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"model output must be logits of shape (N={t.shape[0]}, classes); got {shape}")
    bad = (t < 0) | (t >= out.shape[1])
    if bool(bad.any()):
        raise ValueError(f"target {t.tolist()} out of range for {out.shape[1]} output classes")


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


# -- Grad-CAM ---------------------------------------------------------------------------------
def layer_gradcam(reg: HookRegistry, x: Tensor, target: Target, points: Sequence[str] | str | None = None,
                  *, normalize: str | None = None) -> dict[str, Tensor]:
    """Grad-CAM (Selvaraju et al., ICCV 2017) at every requested point from ONE forward+backward.

    For a point with activation A (N, K, *s) and gradient G = ∂y/∂A of
    y = Σ_n logit_n[target_n]:  w_nk = mean_s G_nk,  map_n = ReLU(Σ_k w_nk A_nk),  resized to the
    input's spatial size (bilinear in 2D, trilinear in 3D, ``align_corners=False``).
    Each sample's map depends only on its own logit (samples do not interact in eval mode).

    Args:
        reg: a ``HookRegistry`` on the model (the model should be in eval mode).
        x: input (N, C, *spatial).
        target: class index, or one per sample.
        points: point names with a spatial activation (N, K, *s); default every block's
            ``.resid`` (``[f"{b}.resid" for b in reg.blocks]``).
        normalize: ``None`` keeps the raw ReLU'd maps (their scale is the logit's: doubling the
            logit doubles the map). ``"minmax"`` follows pytorch-grad-cam (``base_cam.py``,
            ``utils/image.py::scale_cam_image``) step by step: ReLU, per-image min-max *at the
            feature resolution* ((m − min) / (1e-7 + max)), resize, ReLU, min-max again (its
            ``aggregate_multi_layers``) — equal to ``GradCAM`` with one target layer in 2D (its
            cv2 INTER_LINEAR is bilinear with ``align_corners=False``); in effect a min-max of
            the upsampled map. ``"gradcam"`` is ``"minmax"`` except that 3D maps are resized as
            pytorch-grad-cam does in 3D: ``scipy.ndimage.zoom`` with its default cubic spline
            (corner-aligned grid, overshoot clipped by the ReLU), computed on the CPU.

    Returns:
        ``{point: map}`` with maps (N, 1, *spatial), float32, in ``points`` order.

    Raises:
        KeyError: an unknown point (before anything runs). ValueError: a bad ``target``,
        ``normalize`` or a point whose activation is not spatial.
    """
    if normalize not in (None, "minmax", "gradcam"):
        raise ValueError(f"normalize must be None, 'minmax' or 'gradcam'; got {normalize!r}")
    _check_input(x)
    if points is None:
        points = [f"{b}.resid" for b in reg.blocks]
        if not points:
            raise ValueError("the model has no residual blocks: pass points=[...] explicitly")
    elif isinstance(points, str):
        points = [points]
    points = list(points)
    for p in points:
        reg.point_info(p)  # KeyError with close matches before any hook is installed
    t = _targets(target, x.shape[0], x.device)

    def objective(out: Tensor) -> Tensor:
        _check_logits(out, t)
        return out.gather(1, t[:, None]).sum()

    _, cache = reg.run_with_cache(x, points=points, grad=True, target=objective)
    spatial = tuple(x.shape[2:])
    maps: dict[str, Tensor] = {}
    for p in points:
        a, g = cache[p].float(), cache.grads[p].float()
        if a.dim() != x.dim():
            raise ValueError(f"point {p!r} has activation shape {tuple(a.shape)}: Grad-CAM needs "
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
    return maps


def _zoom_like_gradcam(maps: Tensor, size: Sequence[int]) -> Tensor:
    """pytorch-grad-cam's 3D resize: ``scipy.ndimage.zoom(img, target/shape)`` per image."""
    from scipy.ndimage import zoom

    arr = maps.detach().cpu().numpy().astype(np.float32)
    out = [zoom(img[0], [t_s / i_s for i_s, t_s in zip(img.shape[1:], size)]) for img in arr]
    return torch.from_numpy(np.float32(out))[:, None].to(maps.device)
