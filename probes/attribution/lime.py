"""LIME (Ribeiro et al., KDD 2016) for multi-contrast 2D/3D inputs, batched through the model."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor, nn

from probes.attribution.gradcam import Target, _check_input, _targets  # noqa  (temporary)

__all__ = ["lime_map"]


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
