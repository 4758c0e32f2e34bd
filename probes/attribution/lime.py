"""LIME (Ribeiro et al., "Why should I trust you?", KDD 2016) for multi-contrast 2D/3D inputs.

This is the package's one LIME (``attribute(..., "lime")`` runs it too). It is
``lime.lime_image.LimeImageExplainer`` (lime 0.2) generalised to any number of contrasts and to
3D, with the model called in batches: with the same segments, seed, hide value and kernel width
on a 3-channel image it gives lime_image's weights (to float precision). Captum's ``Lime`` is
not used: its defaults differ from lime_image (50 samples, Lasso(α = 0.01), kernel width 1.0,
no unperturbed first sample) and its sampling stream is not lime_image's.

Features are segments (SLIC supervoxels on all contrasts, or given ``segments``), or with
``per_contrast`` (segment, contrast) pairs, which gives one map per contrast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from probes.attribution.features import as_segments
from probes.attribution.result import Attribution
from probes.attribution.scores import as_module, target_scores
from probes.core.errors import OptionError
from probes.core.model import Output, as_audit_model, model_state
from probes.core.validate import Target, as_input, as_targets, check_int

__all__ = ["lime_map"]


def lime_map(model: nn.Module, x: Tensor, target: Target, *, n_samples: int = 1000,
             segments: Tensor | np.ndarray | None = None, n_segments: int = 50, compactness: float = 1.0,
             per_contrast: bool = False, batch_size: int = 50, hide_value: float = 0.0,
             kernel_width: float = 0.25, seed: int = 0, output: Output = None,
             case_ids: Sequence[Any] | None = None, contrasts: Sequence[str] | None = None) -> Attribution:
    """LIME weights of the target score per feature, painted on the feature's voxels.

    Perturbation z ∈ {0,1}^F (z_0 = 1, the rest uniform from numpy ``RandomState(seed)``, the
    same stream as ``LimeImageExplainer(random_state=seed)``) keeps the features with z = 1
    and sets the others to ``hide_value``; the response is the target score (the logit, or
    log p for a probability model; ``probes.attribution.scores``); proximity
    π(z) = sqrt(exp(−d² / kernel_width²)) with d the cosine distance of z to the all-ones
    vector; the weights are the coefficients of the π-weighted ridge regression (α = 1) of
    ``lime.lime_base.LimeBase`` over all features.

    Args:
        model: a classifier; run under ``no_grad`` in eval mode, left as found.
        x: input (N, C, *spatial), channels first. Each case is explained separately.
        target: class index, or one per case.
        n_samples: perturbations per case (including the unperturbed one), ≥ 2.
        segments: integer labels (*spatial) shared by all cases (also (1, *spatial) or
            (1, 1, *spatial), as ``grid_feature_mask(x.shape, per_contrast=False)``), or
            (N, *spatial), (N, 1, *spatial); default SLIC (``features.slic_segments``).
        n_segments: SLIC's target number of segments.
        compactness: SLIC's colour/space balance, on contrasts scaled to [0, 1].
        per_contrast: features are (segment, contrast) pairs: each contrast's part of a
            segment is hidden on its own, giving one map per contrast.
        batch_size: perturbed inputs per model call.
        hide_value: value of hidden voxels.
        kernel_width: width of the exponential proximity kernel (lime_image's default 0.25).
        seed: seed of the perturbations (same seed → same map).
        output: ``None`` (the model's declared interface) or an override.
        case_ids, contrasts: ids of the cases, names of the input contrasts.

    Returns:
        :class:`Attribution` with maps (N, 1, *spatial), or (N, C, *spatial) with ``per_contrast``.
    """
    from lime.lime_base import LimeBase
    from sklearn.linear_model import Ridge

    model = as_module(model)
    x = as_input(x, "x", model=model).contiguous()  # one memory layout: the same numbers
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
        raise OptionError("n_samples", repr(n_samples), "an int >= 2",
                          message=f"n_samples must be an int >= 2 (the original plus perturbations); "
                                  f"got {n_samples!r}")
    check_int(batch_size, "batch_size")
    if segments is None:
        check_int(n_segments, "n_segments")
    n, c = x.shape[:2]
    t = as_targets(target, n, device=x.device)
    net = as_audit_model(model, output)
    segs = as_segments(segments, x, n_segments, compactness)

    def kernel(d: np.ndarray) -> np.ndarray:
        return np.sqrt(np.exp(-(d ** 2) / kernel_width ** 2))

    out_maps = []
    with model_state(net, warn="lime_map"):
        for i in range(n):
            seg = segs[i]
            s_count = int(seg.max()) + 1
            f_count = s_count * (c if per_contrast else 1)
            rng = np.random.RandomState(seed)
            rng.randint(0, high=1000)  # lime_image draws its segmentation seed first: same stream
            z = rng.randint(0, 2, n_samples * f_count).reshape(n_samples, f_count)
            z[0, :] = 1
            response = _responses(net, x[i], t[i], seg, z, per_contrast, batch_size, hide_value)
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
                out_maps.append(w.view(s_count, c)[seg].movedim(-1, 0))   # (C, *spatial)
            else:
                out_maps.append(w[seg][None])                              # (1, *spatial)
    options = dict(n_samples=n_samples, segments=segments, n_segments=n_segments, compactness=compactness,
                   per_contrast=per_contrast, batch_size=batch_size, hide_value=hide_value,
                   kernel_width=kernel_width, seed=seed)
    return Attribution.from_maps(torch.stack(out_maps), "lime", t, case_ids=case_ids, contrasts=contrasts,
                                 options=options)


def _responses(net: nn.Module, xi: Tensor, k: Tensor, seg: Tensor, z: np.ndarray,
               per_contrast: bool, batch_size: int, hide_value: float) -> np.ndarray:
    """Target score of every perturbed copy of ``xi`` (C, *spatial), ``batch_size`` at a time."""
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
            scores = net(torch.where(keep, xi[None], hide))
            out.append(target_scores(scores, k.expand(zb.shape[0]), "lime_map").double().cpu())
    return torch.cat(out).numpy()
