"""Attribution maps: Grad-CAM for every layer from one forward+backward, and batched N-D LIME.

Maps are tensors shaped ``(N, C_map, *spatial)`` with the input's spatial size: ``C_map = 1``
for class-activation maps (Grad-CAM, LIME over shared supervoxels), ``C_map = C`` for maps
with one channel per input contrast (LIME with ``per_contrast=True``). The same code path
serves 2D (``(N, C, H, W)``) and 3D (``(N, C, D, H, W)``) inputs.

``target`` is a class index (int) or a length-N sequence/tensor of class indices; the scalar
explained is the model output (logit) of each sample's target class.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .hooks import HookRegistry

__all__ = ["layer_gradcam", "lime_map", "lrp", "lrp_conservation", "attribute", "METHODS"]

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


# -- LIME -------------------------------------------------------------------------------------
def _slic(image: Tensor, n_segments: int, compactness: float) -> np.ndarray:
    """SLIC supervoxels on one image (C, *spatial) → labels (*spatial) 0..S−1.

    Each channel is min-max scaled to [0, 1] first: SLIC's compactness is in intensity units,
    and MRI contrasts have arbitrary, unequal ranges. skimage's default compactness (10) is
    meant for 0-100 Lab colour: on [0, 1] channels it yields a plain grid that ignores edges
    (a bright 6³ cube in a 16³ volume was cut into 8 pieces; at 1.0 it is one segment).
    """
    from skimage.segmentation import slic

    arr = image.detach().float().cpu().numpy()
    lo = arr.reshape(arr.shape[0], -1).min(1).reshape((-1,) + (1,) * (arr.ndim - 1))
    hi = arr.reshape(arr.shape[0], -1).max(1).reshape((-1,) + (1,) * (arr.ndim - 1))
    arr = (arr - lo) / np.where(hi > lo, hi - lo, 1.0)
    return slic(np.moveaxis(arr, 0, -1), n_segments=n_segments, compactness=compactness,
                channel_axis=-1, start_label=0)


def _segments_for(segments: Tensor | np.ndarray | None, x: Tensor, n_segments: int,
                  compactness: float) -> list[Tensor]:
    """One long tensor (*spatial) of labels 0..S−1 per sample."""
    n, spatial = x.shape[0], tuple(x.shape[2:])
    if segments is None:
        raw = [torch.as_tensor(_slic(x[i], n_segments, compactness)) for i in range(n)]
    else:
        s = torch.as_tensor(segments)
        if s.dtype.is_floating_point or s.dtype == torch.bool:
            raise ValueError(f"segments must hold integer labels; got dtype {s.dtype}")
        k = len(spatial)
        if s.dim() == k + 2 and s.shape[1] == 1:
            s = s[:, 0]
        if s.dim() == k and tuple(s.shape) == spatial:
            raw = [s] * n
        elif s.dim() == k + 1 and tuple(s.shape) == (n,) + spatial:
            raw = list(s)
        else:
            raise ValueError(f"segments must have shape {spatial}, {(n,) + spatial} or "
                             f"{(n, 1) + spatial} (x is {tuple(x.shape)}); got {tuple(s.shape)}")
    # relabel to 0..S-1 so labels index the feature vector directly
    return [torch.unique(r.to(x.device).long(), return_inverse=True)[1] for r in raw]


def lime_map(model: nn.Module, x: Tensor, target: Target, *, n_samples: int = 1000,
             segments: Tensor | np.ndarray | None = None, n_segments: int = 50,
             per_contrast: bool = False, batch_size: int = 50, hide_value: float = 0.0,
             seed: int = 0, kernel_width: float = 0.25, compactness: float = 1.0) -> Tensor:
    """LIME (Ribeiro et al., KDD 2016) for multi-channel 2D/3D inputs, batched through the model.

    As ``lime.lime_image.LimeImageExplainer``, but on supervoxels of all contrasts: features are
    segments (SLIC on the channel-last image, each channel min-max scaled, or ``segments``);
    perturbation z ∈ {0,1}^F (z_0 = 1, the rest uniform from numpy ``RandomState(seed)``, the
    same stream as ``LimeImageExplainer(random_state=seed)``, so with the same segments, hide
    value and a 3-channel image both give the same weights) keeps
    the segments with z = 1 and sets the others to ``hide_value``; the response is the target
    logit; proximity π(z) = sqrt(exp(−d² / kernel_width²)) with d the cosine distance of z to
    the all-ones vector; the weights are the coefficients of the π-weighted ridge regression
    (alpha = 1) of ``lime.lime_base.LimeBase`` over all features.

    Args:
        model: classifier returning logits (N, classes); run under ``no_grad``, left as found.
        x: input (N, C, *spatial). Each sample is explained separately.
        target: class index, or one per sample.
        n_samples: perturbations per sample (including the unperturbed one), ≥ 2.
        segments: integer labels (*spatial), (N, *spatial) or (N, 1, *spatial); default SLIC.
        n_segments: SLIC's target number of segments.
        per_contrast: features are (segment, channel) pairs: each contrast's part of a segment
            is hidden on its own, giving one map per contrast.
        batch_size: perturbed inputs per model call.
        hide_value: value of hidden voxels.
        seed: seed of the perturbations (same seed → same map).
        kernel_width: width of the exponential proximity kernel (lime_image's default 0.25).
        compactness: SLIC's colour/space balance, on channels scaled to [0, 1].

    Returns:
        (N, 1, *spatial), or (N, C, *spatial) with ``per_contrast``: each feature's LIME weight
        painted on its voxels.
    """
    from lime.lime_base import LimeBase
    from sklearn.linear_model import Ridge

    _check_input(x)
    if not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(f"n_samples must be an int >= 2 (the original plus perturbations); got {n_samples!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    if segments is None and (not isinstance(n_segments, int) or n_segments < 1):
        raise ValueError(f"n_segments must be a positive int; got {n_segments!r}")
    n, c = x.shape[:2]
    t = _targets(target, n, x.device)
    segs = _segments_for(segments, x, n_segments, compactness)
    if model.training:
        warnings.warn("model is in training mode: LIME's forwards will use dropout and update "
                      "BatchNorm statistics; call model.eval() first", stacklevel=2)

    def kernel(d: np.ndarray) -> np.ndarray:
        return np.sqrt(np.exp(-(d ** 2) / kernel_width ** 2))

    out_maps = []
    for i in range(n):
        seg = segs[i]
        s_count = int(seg.max()) + 1
        f_count = s_count * (c if per_contrast else 1)
        rng = np.random.RandomState(seed)
        rng.randint(0, high=1000)  # lime_image draws its segmentation seed first: same stream
        z = rng.randint(0, 2, n_samples * f_count).reshape(n_samples, f_count)
        z[0, :] = 1
        response = _lime_responses(model, x[i], int(t[i]), seg, z, per_contrast, batch_size, hide_value)
        # cosine distance to the all-ones row (sklearn's pairwise cosine; 1 for an all-zero row)
        on = z.sum(1).astype(np.float64)
        d = 1.0 - np.divide(on, np.sqrt(on * f_count), out=np.zeros_like(on), where=on > 0)
        base = LimeBase(kernel, random_state=seed)
        _, coefs, _, _ = base.explain_instance_with_data(
            z.astype(np.float64), response[:, None], d, 0, f_count, feature_selection="none",
            model_regressor=Ridge(alpha=1, fit_intercept=True))
        w = np.zeros(f_count)
        for feature, weight in coefs:
            w[feature] = weight
        w = torch.as_tensor(w, dtype=torch.float32, device=x.device)
        if per_contrast:
            painted = w.view(s_count, c)[seg].movedim(-1, 0)   # (C, *spatial)
        else:
            painted = w[seg][None]                             # (1, *spatial)
        out_maps.append(painted)
    return torch.stack(out_maps)


def _lime_responses(model: nn.Module, xi: Tensor, k: int, seg: Tensor, z: np.ndarray,
                    per_contrast: bool, batch_size: int, hide_value: float) -> np.ndarray:
    """Target logit of every perturbed copy of ``xi`` (C, *spatial), ``batch_size`` at a time."""
    c = xi.shape[0]
    zt = torch.as_tensor(z, dtype=torch.bool, device=xi.device)
    hide = torch.tensor(hide_value, dtype=xi.dtype, device=xi.device)
    out = []
    with torch.no_grad():
        for start in range(0, zt.shape[0], batch_size):
            zb = zt[start:start + batch_size]
            if per_contrast:
                keep = zb.view(zb.shape[0], -1, c)[:, seg].movedim(-1, 1)   # (B, C, *spatial)
            else:
                keep = zb[:, seg][:, None]                                  # (B, 1, *spatial)
            logits = model(torch.where(keep, xi[None], hide))
            if not isinstance(logits, Tensor) or logits.dim() != 2 or not 0 <= k < logits.shape[1]:
                shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
                raise ValueError(f"model output must be logits (B, classes) with class {k}; got {shape}")
            out.append(logits[:, k].double().cpu())
    return torch.cat(out).numpy()


# The other attribution families live in their own modules; saliency is their one entry point.
from .attribution import METHODS, attribute  # noqa: E402,F401
from .lrp import lrp, lrp_conservation  # noqa: E402,F401
