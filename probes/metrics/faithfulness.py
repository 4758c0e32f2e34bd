"""Faithfulness of attribution maps: deletion/insertion curves, ΔAUPC, max-sensitivity, sparsity.

Maps are (N, C_map, *spatial) like the input x (N, C, *spatial): C_map = 1 ranks voxels (all
contrasts of a voxel are removed together); C_map = C ranks (contrast, voxel) features, so a
per-contrast map removes one contrast's voxel at a time. 2D and 3D share one code path.
The model is only called under ``torch.no_grad()``; its mode, weights and hooks are untouched.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

__all__ = ["deletion_curve", "aupc", "delta_aupc", "max_sensitivity", "uniform_linf_perturbation",
           "sparsity", "to_table"]

Target = int | Sequence[int] | torch.Tensor


# ----------------------------------------------------------------------------- helpers
def _targets(target: Target, n: int) -> torch.Tensor:
    t = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"target has {t.numel()} entries for a batch of {n} (x.shape[0])")
    return t


def _check(x: torch.Tensor, maps) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() < 3:
        raise ValueError(f"x must be a tensor (N, C, *spatial), got {getattr(x, 'shape', type(x))}")
    m = torch.as_tensor(maps).detach().to(torch.float64)
    if m.dim() != x.dim() or m.shape[0] != x.shape[0] or m.shape[2:] != x.shape[2:] \
            or m.shape[1] not in (1, x.shape[1]):
        raise ValueError(f"maps shape {tuple(m.shape)} does not fit x shape {tuple(x.shape)}: "
                         f"expected (N, 1 or C, *spatial)")
    return m


def _baseline(x: torch.Tensor, baseline, blur_sigma: float) -> torch.Tensor:
    if isinstance(baseline, str):
        if baseline == "mean":  # per case and contrast: the image's own mean intensity
            return x.mean(dim=tuple(range(2, x.dim())), keepdim=True).expand_as(x)
        if baseline == "blur":  # Gaussian blur over the spatial axes only (not across contrasts)
            from scipy.ndimage import gaussian_filter

            sig = (0, 0) + (blur_sigma,) * (x.dim() - 2)
            b = gaussian_filter(x.detach().cpu().double().numpy(), sigma=sig, mode="nearest")
            return torch.from_numpy(b).to(x.dtype).to(x.device)
        raise ValueError(f"baseline must be a number, a tensor, 'mean' or 'blur', got {baseline!r}")
    b = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    try:
        return b.expand_as(x)
    except RuntimeError:
        raise ValueError(f"baseline shape {tuple(b.shape)} does not broadcast to x shape {tuple(x.shape)}") from None


_PROB = {
    "softmax": lambda o: torch.softmax(o, dim=1),
    "sigmoid": torch.sigmoid,
    "identity": lambda o: o,
}


def _ranks(m: torch.Tensor) -> torch.Tensor:
    """Rank of each feature of each case (0 = most attributed); ties keep flat index order."""
    flat = m.reshape(m.shape[0], -1)
    order = torch.argsort(-flat, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1]).expand_as(order).contiguous())
    return ranks.reshape(m.shape)


def _curves(model: nn.Module, x: torch.Tensor, ranks: torch.Tensor, t: torch.Tensor, steps: int,
            mode: str, base: torch.Tensor, batch_size: int, prob: Callable) -> np.ndarray:
    """prob[case, step] for k_s = round(s/steps · F) features replaced; the model runs in batches."""
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    n = x.shape[0]
    n_feat = ranks[0].numel()
    ks = [int(round(s / steps * n_feat)) for s in range(steps + 1)]
    jobs = [(i, s) for i in range(n) for s in range(steps + 1)]
    out = np.empty((n, steps + 1))
    with torch.no_grad():
        for j0 in range(0, len(jobs), batch_size):
            chunk = jobs[j0:j0 + batch_size]
            xs = []
            for i, s in chunk:
                sel = ranks[i] < ks[s]  # (1 or C, *spatial): broadcast over contrasts if 1
                src, dst = (base[i], x[i]) if mode == "deletion" else (x[i], base[i])
                xs.append(torch.where(sel, src, dst))
            p = prob(model(torch.stack(xs)))
            idx = torch.tensor([i for i, _ in chunk])
            vals = p[torch.arange(len(chunk)), t[idx]].double().cpu().numpy()
            for (i, s), v in zip(chunk, vals):
                out[i, s] = v
    return out


# ----------------------------------------------------------------------------- curves
def _prepare(x, maps, target, output: str, baseline, blur_sigma: float):
    """Validated (maps, targets, baseline tensor, probability function) for the curve functions."""
    m = _check(x, maps)
    t = _targets(target, x.shape[0])
    if output not in _PROB:
        raise ValueError(f"output must be one of {sorted(_PROB)}, got {output!r}")
    return m, t, _baseline(x, baseline, blur_sigma), _PROB[output]


def deletion_curve(model: nn.Module, x: torch.Tensor, maps, target: Target, *, steps: int = 20,
                   mode: str = "deletion", baseline: float | str | torch.Tensor = 0.0,
                   batch_size: int = 32, output: str = "softmax", blur_sigma: float = 5.0,
                   case_ids: Sequence | None = None) -> pd.DataFrame:
    """Deletion (or insertion) curve: class probability as the most-attributed features go first.

    Samek et al. 2017 / Petsiuk et al. 2018 (RISE insertion/deletion). At fraction s/steps
    (s = 0..steps) the top round(s/steps · F) features (highest signed attribution; ties by flat
    index) are replaced by ``baseline`` (deletion) or, starting from the baseline, restored from
    ``x`` (insertion). Features are voxels (C_map = 1) or (contrast, voxel) pairs (C_map = C).
    ``baseline``: a number, a tensor broadcastable to x, ``"mean"`` (per-case, per-contrast mean)
    or ``"blur"`` (Gaussian, ``blur_sigma`` voxels). ``output`` maps the model's output to the
    probability read at ``target``: ``"softmax"`` (logits), ``"sigmoid"`` or ``"identity"``.
    Returns a DataFrame: case_id, fraction, prob.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    m, t, base, prob = _prepare(x, maps, target, output, baseline, blur_sigma)
    curve = _curves(model, x, _ranks(m), t, steps, mode, base, batch_size, prob)
    return _curve_frame(curve, steps, case_ids)


def _curve_frame(curve: np.ndarray, steps: int, case_ids) -> pd.DataFrame:
    n = curve.shape[0]
    case_ids = list(range(n)) if case_ids is None else list(case_ids)
    if len(case_ids) != n:
        raise ValueError(f"case_ids has {len(case_ids)} entries for {n} cases")
    return pd.DataFrame({"case_id": np.repeat(case_ids, steps + 1),
                         "fraction": np.tile(np.arange(steps + 1) / steps, n),
                         "prob": curve.reshape(-1)})


def aupc(curve: pd.DataFrame) -> pd.Series:
    """Area under the perturbation curve per case: trapezoid rule of prob over fraction ∈ [0, 1]."""
    def area(g: pd.DataFrame) -> float:
        g = g.sort_values("fraction")
        return float(np.trapezoid(g["prob"].to_numpy(), g["fraction"].to_numpy()))

    return curve.groupby("case_id", sort=False)[["fraction", "prob"]].apply(area).rename("aupc")


def delta_aupc(model: nn.Module, x: torch.Tensor, maps, target: Target, *, n_random: int = 10,
               seed: int = 0, steps: int = 20, mode: str = "deletion",
               baseline: float | str | torch.Tensor = 0.0, batch_size: int = 32,
               output: str = "softmax", blur_sigma: float = 5.0, method: str = "",
               case_ids: Sequence | None = None) -> pd.DataFrame:
    """ΔAUPC (Jin et al., MedIA 2023, §4.3.1): the map's ordering against random orderings.

    deletion: ΔAUPC = mean AUPC(random) − AUPC(map); insertion: AUPC(map) − mean AUPC(random),
    so positive always means the map is more faithful than chance. ``n_random`` random orderings
    of the same features (C_map as in ``maps``) from ``torch.Generator().manual_seed(seed)``.
    Returns tidy rows: case_id, method, metric ∈ {aupc, aupc_random_mean, aupc_random_std
    (ddof=1; NaN when n_random = 1), delta_aupc}, value.
    """
    if n_random < 1:
        raise ValueError(f"n_random must be >= 1, got {n_random}")
    m, t, base, prob = _prepare(x, maps, target, output, baseline, blur_sigma)
    grid = np.arange(steps + 1) / steps

    def area(curve: np.ndarray) -> np.ndarray:
        return np.trapezoid(curve, grid, axis=1)

    a_map = area(_curves(model, x, _ranks(m), t, steps, mode, base, batch_size, prob))
    g = torch.Generator().manual_seed(seed)
    a_rand = np.stack([area(_curves(model, x, _ranks(torch.rand(m.shape, generator=g, dtype=torch.float64)),
                                    t, steps, mode, base, batch_size, prob)) for _ in range(n_random)], 1)
    r_mean = a_rand.mean(1)
    r_std = a_rand.std(1, ddof=1) if n_random > 1 else np.full(len(r_mean), np.nan)
    delta = r_mean - a_map if mode == "deletion" else a_map - r_mean
    n = x.shape[0]
    case_ids = list(range(n)) if case_ids is None else list(case_ids)
    rows = []
    for name, v in (("aupc", a_map), ("aupc_random_mean", r_mean), ("aupc_random_std", r_std),
                    ("delta_aupc", delta)):
        rows.append(pd.DataFrame({"case_id": case_ids, "method": method, "metric": name, "value": v}))
    return pd.concat(rows, ignore_index=True)


# ----------------------------------------------------------------------------- robustness
def uniform_linf_perturbation(seed: int = 0) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """A seeded version of Captum's ``default_perturb_func``: x + U(−radius, radius) per element.

    The returned function draws from its own ``torch.Generator`` (float32 like Captum's
    ``torch.FloatTensor(...).uniform_``), so passing a fresh one to both this module and
    ``captum.metrics.sensitivity_max`` gives both the same noise.
    """
    g = torch.Generator().manual_seed(seed)

    def perturb(inputs: torch.Tensor, perturb_radius: float = 0.02) -> torch.Tensor:
        noise = torch.empty(inputs.shape, dtype=torch.float32).uniform_(-perturb_radius, perturb_radius,
                                                                         generator=g)
        return inputs + noise.to(inputs.device)

    return perturb


def max_sensitivity(explain_fn: Callable[..., torch.Tensor], x: torch.Tensor, *, radius: float = 0.02,
                    n_samples: int = 10, seed: int = 0, norm: str | float = "fro",
                    perturb_func: Callable | None = None, target: Target | None = None,
                    batch_size: int | None = None) -> torch.Tensor:
    """Max-sensitivity (Yeh et al. 2019), computed exactly as ``captum.metrics.sensitivity_max``.

    SENS_max(x) = max_{j ≤ n_samples} ‖e(x + δ_j) − e(x)‖ / ‖e(x)‖ with δ_j ~ U(−r, r)^d (L∞ ball),
    norms over the flattened explanation (``torch.norm(p=norm, dim=1)``, Captum's ``norm_ord``);
    ‖e(x)‖ = 0 is replaced by 1, as in Captum. The perturbed batch is
    ``x.repeat_interleave(n_samples, 0)`` perturbed by one call of ``perturb_func(batch, radius)``
    (default ``uniform_linf_perturbation(seed)``) — the same call Captum makes with
    ``max_examples_per_batch=None``, so the same ``perturb_func`` gives the same values.
    ``explain_fn(x)`` or ``explain_fn(x, target=...)`` returns a tensor with x's batch size;
    ``batch_size`` splits only the explanation calls (the noise is drawn once). Returns (N,).
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    n = x.shape[0]
    pf = perturb_func or uniform_linf_perturbation(seed)
    t = None if target is None else _targets(target, n)

    def explain(inp: torch.Tensor, tt: torch.Tensor | None) -> torch.Tensor:
        e = explain_fn(inp) if tt is None else explain_fn(inp, target=tt)
        return e.detach()

    e0 = explain(x, t)
    xs = torch.repeat_interleave(x, n_samples, dim=0)
    xp = pf(xs, radius) if len(inspect.signature(pf).parameters) > 1 else pf(xs)
    tp = None if t is None else torch.repeat_interleave(t, n_samples)
    bs = xp.shape[0] if batch_size is None else batch_size
    ep = torch.cat([explain(xp[i:i + bs], None if tp is None else tp[i:i + bs])
                    for i in range(0, xp.shape[0], bs)])
    diff = (ep - e0.repeat_interleave(n_samples, dim=0)).reshape(ep.shape[0], -1)
    den = torch.norm(e0.reshape(n, -1), p=norm, dim=1, keepdim=True).repeat_interleave(n_samples, dim=0)
    den = torch.where(den == 0.0, torch.ones_like(den), den)
    sens = torch.norm(diff, p=norm, dim=1, keepdim=True) / den
    return sens.reshape(n, n_samples).max(dim=1).values


# ----------------------------------------------------------------------------- complexity
def sparsity(maps, *, eps: float = 0.0, per_channel: bool = False) -> torch.Tensor:
    """Gini index of |a| (Chalasani et al. 2020), per case (or per case and channel).

    G = Σ_i (2i − n − 1) v_(i) / (n Σ_i v_i) with v = |a| + eps sorted ascending (i = 1..n):
    0 for a uniform map, → 1 when one feature holds all relevance. Quantus ``Sparseness``
    (abs=True, normalise=False) adds eps = 1e-7; pass ``eps=1e-7`` to match it. Σ v = 0 → NaN
    with a warning. Returns float64 (N,) or (N, C_map).
    """
    a = torch.as_tensor(maps).detach().to(torch.float64)
    if a.dim() < 2:
        raise ValueError(f"maps must be (N, C_map, *spatial), got shape {tuple(a.shape)}")
    v = a.abs().reshape(a.shape[0], a.shape[1], -1) if per_channel else a.abs().reshape(a.shape[0], -1)
    v = torch.sort(v + eps, dim=-1).values
    k = v.shape[-1]
    i = torch.arange(1, k + 1, dtype=torch.float64)
    tot = v.sum(-1)
    if (tot == 0).any():
        warnings.warn("all-zero map: Gini index undefined, NaN", UserWarning, stacklevel=2)
    g = ((2 * i - k - 1) * v).sum(-1) / (k * tot)
    return torch.where(tot == 0, torch.full_like(g, float("nan")), g)


def to_table(values, metric: str, *, method: str = "", case_ids: Sequence | None = None,
             channels: Sequence | None = None) -> pd.DataFrame:
    """Tidy rows (case_id, method, [channel,] metric, value) from an (N,) or (N, C) result."""
    v = torch.as_tensor(values).detach().double().cpu().numpy()
    n = v.shape[0]
    case_ids = list(range(n)) if case_ids is None else list(case_ids)
    if len(case_ids) != n:
        raise ValueError(f"case_ids has {len(case_ids)} entries for {n} cases")
    if v.ndim == 1:
        return pd.DataFrame({"case_id": case_ids, "method": method, "metric": metric, "value": v})
    ch = list(range(v.shape[1])) if channels is None else list(channels)
    return pd.DataFrame({"case_id": np.repeat(case_ids, v.shape[1]), "method": method,
                         "channel": ch * n, "metric": metric, "value": v.reshape(-1)})
