"""Faithfulness of attribution maps: deletion/insertion curves, ΔAUPC, max-sensitivity, sparsity.

Maps are (N, C_map, *spatial) like the input x (N, C, *spatial): C_map = 1 ranks voxels (all
contrasts of a voxel are removed together); C_map = C ranks (contrast, voxel) features, so a
per-contrast map removes one contrast's voxel at a time. 2D and 3D share one code path.

The model instruments (:func:`deletion_curve`, :func:`delta_aupc`) take
``(model, x, target, maps)``; the probability read at ``target`` follows ``output``
(``probes.core.output_probabilities``): ``None`` reads the model as its declared interface
says (``probes.core.as_audit_model``), ``"logits"`` (softmax), ``"probabilities"``,
``"log_probabilities"`` or a callable such as ``torch.sigmoid``. The model runs under
``torch.no_grad()`` in eval mode (``probes.core.model_state``); its modes are restored after and
its weights and hooks are untouched.

:func:`max_sensitivity` and :func:`sparsity` are element-wise metrics returning tensors;
``probes.metrics.case_values`` gives their tidy rows.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from probes.core.model import Output, as_audit_model, class_probabilities, model_state
from probes.core.validate import (Target, as_case_ids, as_input, as_maps, as_targets, check_choice,
                                  check_class_range, check_int)
from probes.metrics.values import Column, WideTableResult

__all__ = ["MODES", "class_probability_fn", "DeletionCurve", "deletion_curve", "aupc", "DeltaAUPC", "delta_aupc",
           "max_sensitivity", "uniform_linf_perturbation", "sparsity"]

Mode = Literal["deletion", "insertion"]
MODES: tuple[str, ...] = ("deletion", "insertion")
Baseline = float | str | Tensor


# ----------------------------------------------------------------------------- helpers
def _baseline(x: Tensor, baseline: Baseline, blur_sigma: float) -> Tensor:
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


def class_probability_fn(model: nn.Module, output: Output = None, *,
                         dtype: torch.dtype | None = None) -> Callable[[Tensor], Tensor]:
    """``x ↦ (N, K)`` class probabilities of ``model`` for channels-first ``x``.

    ``output=None`` reads the model as its declared interface says (``probes.core.as_audit_model``:
    a probability model is read directly); ``"logits"``: softmax over dim 1; ``"probabilities"``,
    ``"log_probabilities"`` or a callable as in ``probes.core.output_probabilities``. Softmax and
    casts are computed in ``dtype`` when given.
    """
    net = as_audit_model(model, output)
    return lambda xb: class_probabilities(net, xb, dtype)


def _ranks(m: Tensor) -> Tensor:
    """Rank of each feature of each case (0 = most attributed); ties keep flat index order."""
    flat = m.reshape(m.shape[0], -1)
    order = torch.argsort(-flat, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1]).expand_as(order).contiguous())
    return ranks.reshape(m.shape)


@dataclass(frozen=True)
class _Perturbation:
    """Everything a curve needs but the feature ranking: the validated call of an instrument."""

    x: Tensor
    target: Tensor
    base: Tensor
    prob: Callable[[Tensor], Tensor]
    steps: int
    mode: str
    batch_size: int

    @property
    def fractions(self) -> np.ndarray:
        return np.arange(self.steps + 1) / self.steps

    def curves(self, ranks: Tensor) -> np.ndarray:
        """prob[case, step] for k_s = round(s/steps · F) features replaced; the model runs in batches."""
        x, n, steps = self.x, self.x.shape[0], self.steps
        ranks = ranks.to(x.device)
        n_feat = ranks[0].numel()
        ks = [int(round(s / steps * n_feat)) for s in range(steps + 1)]
        jobs = [(i, s) for i in range(n) for s in range(steps + 1)]
        out = np.empty((n, steps + 1))
        for j0 in range(0, len(jobs), self.batch_size):
            chunk = jobs[j0:j0 + self.batch_size]
            xs = []
            for i, s in chunk:
                sel = ranks[i] < ks[s]  # (1 or C, *spatial): broadcast over contrasts if 1
                src, dst = (self.base[i], x[i]) if self.mode == "deletion" else (x[i], self.base[i])
                xs.append(torch.where(sel, src, dst))
            p = self.prob(torch.stack(xs))
            if j0 == 0:
                check_class_range(self.target, p.shape[1])
            cases = self.target[torch.tensor([i for i, _ in chunk], device=self.target.device)]
            vals = p[torch.arange(len(chunk), device=p.device), cases.to(p.device)].double().cpu().numpy()
            for (i, s), v in zip(chunk, vals):
                out[i, s] = v
        return out

    def areas(self, ranks: Tensor) -> np.ndarray:
        """AUPC per case: trapezoid rule of the curve over fraction ∈ [0, 1]."""
        return np.trapezoid(self.curves(ranks), self.fractions, axis=1)


def _prepare(x: Tensor, target: Target, maps: Any, *, steps: int, mode: str, baseline: Baseline,
             batch_size: int, output: Output, blur_sigma: float, model: nn.Module) -> tuple[Tensor, _Perturbation]:
    """Validated maps (float64) and the perturbation set-up of a curve instrument."""
    x = as_input(x)
    t = as_targets(target, x.shape[0])
    m = as_maps(maps, x.shape)
    check_choice(mode, "mode", MODES)
    return m, _Perturbation(x, t, _baseline(x, baseline, blur_sigma), class_probability_fn(model, output),
                            check_int(steps, "steps"), mode, check_int(batch_size, "batch_size"))


# ----------------------------------------------------------------------------- curves
@dataclass(frozen=True, eq=False)
class DeletionCurve(WideTableResult):
    """A deletion (or insertion) curve per case (:func:`deletion_curve`).

    ``table`` (wide): case_id, method, mode, fraction, probability; ``to_frame()``: the same with
    metric ``"probability"`` and ``value``. ``probabilities`` is the ``(N, steps + 1)`` array and
    ``fractions`` the ``(steps + 1,)`` grid; :func:`aupc` integrates them.
    """

    @property
    def fractions(self) -> np.ndarray:
        """The fractions of features replaced, 0 … 1 (steps + 1 values)."""
        return np.asarray(pd.unique(self.table["fraction"]), dtype=np.float64)

    @property
    def probabilities(self) -> np.ndarray:
        """``(N, steps + 1)`` probability of the target class, case by case."""
        return self.column("probability").reshape(-1, len(self.fractions))


def deletion_curve(model: nn.Module, x: Tensor, target: Target, maps: Any, *, steps: int = 20,
                   mode: Mode = "deletion", baseline: Baseline = 0.0, batch_size: int = 32,
                   output: Output = None, blur_sigma: float = 5.0, case_ids: Sequence[Any] | None = None,
                   method: str = "") -> DeletionCurve:
    """Deletion (or insertion) curve: class probability as the most-attributed features go first.

    Samek et al. 2017 / Petsiuk et al. 2018 (RISE insertion/deletion). At fraction s/steps
    (s = 0..steps) the top round(s/steps · F) features (highest signed attribution; ties by flat
    index) are replaced by ``baseline`` (deletion) or, starting from the baseline, restored from
    ``x`` (insertion). Features are voxels (C_map = 1) or (contrast, voxel) pairs (C_map = C).
    ``baseline``: a number, a tensor broadcastable to x, ``"mean"`` (per-case, per-contrast mean)
    or ``"blur"`` (Gaussian, ``blur_sigma`` voxels). ``output`` maps the model's output to the
    probability read at ``target`` (see the module docstring). ``method`` labels the maps'
    attribution method in the table. Returns a :class:`DeletionCurve`.
    """
    m, pert = _prepare(x, target, maps, steps=steps, mode=mode, baseline=baseline, batch_size=batch_size,
                       output=output, blur_sigma=blur_sigma, model=model)
    with model_state(model, warn="deletion_curve"), torch.no_grad():
        curve = pert.curves(_ranks(m))
    n = curve.shape[0]
    table = pd.DataFrame({"case_id": np.repeat(as_case_ids(case_ids, n), pert.steps + 1), "method": method,
                          "mode": mode, "fraction": np.tile(pert.fractions, n), "probability": curve.reshape(-1)})
    return DeletionCurve(table=table, id_vars=("case_id", "method", "mode", "fraction"),
                         title=f"{mode.capitalize()} curve")


def aupc(curve: DeletionCurve) -> Tensor:
    """Area under the perturbation curve per case: trapezoid rule of probability over fraction ∈ [0, 1].

    Returns float64 ``(N,)`` in the order of ``curve.case_ids``.
    """
    if not isinstance(curve, DeletionCurve):
        raise TypeError(f"curve must be a DeletionCurve (from deletion_curve), got {type(curve).__name__}")
    return torch.from_numpy(np.trapezoid(curve.probabilities, curve.fractions, axis=1))


@dataclass(frozen=True, eq=False)
class DeltaAUPC(WideTableResult):
    """ΔAUPC per case (:func:`delta_aupc`).

    ``table`` (wide): case_id, method, mode, aupc, aupc_random_mean, aupc_random_std, delta_aupc;
    ``to_frame()``: case_id, method, mode, metric (one of those four), value. The properties
    give each column as an ``(N,)`` array.
    """

    aupc = Column("AUPC of the map's ordering, per case.")
    aupc_random_mean = Column("Mean AUPC over the random orderings, per case.")
    aupc_random_std = Column("Standard deviation (ddof = 1) of the random orderings' AUPC; NaN for one ordering.")
    delta_aupc = Column("ΔAUPC per case: positive when the map beats random orderings.")


def delta_aupc(model: nn.Module, x: Tensor, target: Target, maps: Any, *, n_samples: int = 10, seed: int = 0,
               steps: int = 20, mode: Mode = "deletion", baseline: Baseline = 0.0, batch_size: int = 32,
               output: Output = None, blur_sigma: float = 5.0, method: str = "",
               case_ids: Sequence[Any] | None = None) -> DeltaAUPC:
    """ΔAUPC (Jin et al., MedIA 2023, §4.3.1): the map's ordering against random orderings.

    deletion: ΔAUPC = mean AUPC(random) − AUPC(map); insertion: AUPC(map) − mean AUPC(random),
    so positive always means the map is more faithful than chance. ``n_samples`` random
    orderings of the same features (C_map as in ``maps``) from
    ``torch.Generator().manual_seed(seed)``; curves as :func:`deletion_curve`. Returns a
    :class:`DeltaAUPC` (aupc, aupc_random_mean, aupc_random_std (ddof = 1; NaN when
    n_samples = 1), delta_aupc per case).
    """
    check_int(n_samples, "n_samples")
    m, pert = _prepare(x, target, maps, steps=steps, mode=mode, baseline=baseline, batch_size=batch_size,
                       output=output, blur_sigma=blur_sigma, model=model)
    g = torch.Generator().manual_seed(seed)
    with model_state(model, warn="delta_aupc"), torch.no_grad():
        a_map = pert.areas(_ranks(m))
        a_rand = np.stack([pert.areas(_ranks(torch.rand(m.shape, generator=g, dtype=torch.float64)))
                           for _ in range(n_samples)], 1)
    r_mean = a_rand.mean(1)
    r_std = a_rand.std(1, ddof=1) if n_samples > 1 else np.full(len(r_mean), np.nan)
    delta = r_mean - a_map if mode == "deletion" else a_map - r_mean
    table = pd.DataFrame({"case_id": as_case_ids(case_ids, len(a_map)), "method": method, "mode": mode,
                          "aupc": a_map, "aupc_random_mean": r_mean, "aupc_random_std": r_std,
                          "delta_aupc": delta})
    return DeltaAUPC(table=table, id_vars=("case_id", "method", "mode"), title="ΔAUPC",
                     notes=(f"{n_samples} random ordering(s), seed {seed}; positive ΔAUPC: the map beats "
                            "random orderings",))


# ----------------------------------------------------------------------------- robustness
def uniform_linf_perturbation(seed: int = 0) -> Callable[[Tensor, float], Tensor]:
    """A seeded version of Captum's ``default_perturb_func``: x + U(−radius, radius) per element.

    The returned function draws from its own ``torch.Generator`` (float32 like Captum's
    ``torch.FloatTensor(...).uniform_``), so passing a fresh one to both this module and
    ``captum.metrics.sensitivity_max`` gives both the same noise.
    """
    g = torch.Generator().manual_seed(seed)

    def perturb(inputs: Tensor, perturb_radius: float = 0.02) -> Tensor:
        noise = torch.empty(inputs.shape, dtype=torch.float32).uniform_(-perturb_radius, perturb_radius,
                                                                         generator=g)
        return inputs + noise.to(inputs.device)

    return perturb


def max_sensitivity(explain_fn: Callable[..., Tensor], x: Tensor, *, radius: float = 0.02,
                    n_samples: int = 10, seed: int = 0, norm: str | float = "fro",
                    perturb_func: Callable | None = None, target: Target | None = None,
                    batch_size: int | None = None) -> Tensor:
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
    x = as_input(x)
    check_int(n_samples, "n_samples")
    n = x.shape[0]
    pf = perturb_func or uniform_linf_perturbation(seed)
    t = None if target is None else as_targets(target, n)

    def explain(inp: Tensor, tt: Tensor | None) -> Tensor:
        e = explain_fn(inp) if tt is None else explain_fn(inp, target=tt)
        return e.detach()

    e0 = explain(x, t)
    xs = torch.repeat_interleave(x, n_samples, dim=0)
    xp = pf(xs, radius) if len(inspect.signature(pf).parameters) > 1 else pf(xs)
    tp = None if t is None else torch.repeat_interleave(t, n_samples)
    bs = xp.shape[0] if batch_size is None else check_int(batch_size, "batch_size")
    ep = torch.cat([explain(xp[i:i + bs], None if tp is None else tp[i:i + bs])
                    for i in range(0, xp.shape[0], bs)])
    diff = (ep - e0.repeat_interleave(n_samples, dim=0)).reshape(ep.shape[0], -1)
    den = torch.norm(e0.reshape(n, -1), p=norm, dim=1, keepdim=True).repeat_interleave(n_samples, dim=0)
    den = torch.where(den == 0.0, torch.ones_like(den), den)
    sens = torch.norm(diff, p=norm, dim=1, keepdim=True) / den
    return sens.reshape(n, n_samples).max(dim=1).values


# ----------------------------------------------------------------------------- complexity
def sparsity(maps: Any, *, eps: float = 0.0, per_contrast: bool = False) -> Tensor:
    """Gini index of |a| (Chalasani et al. 2020), per case (or per case and contrast).

    G = Σ_i (2i − n − 1) v_(i) / (n Σ_i v_i) with v = |a| + eps sorted ascending (i = 1..n):
    0 for a uniform map, → 1 when one feature holds all relevance. Quantus ``Sparseness``
    (abs=True, normalise=False) adds eps = 1e-7; pass ``eps=1e-7`` to match it. Σ v = 0 → NaN
    with a warning. Returns float64 (N,) or, with ``per_contrast``, (N, C_map).
    """
    a = as_maps(maps)
    v = a.abs().reshape(a.shape[0], a.shape[1], -1) if per_contrast else a.abs().reshape(a.shape[0], -1)
    v = torch.sort(v + eps, dim=-1).values
    k = v.shape[-1]
    i = torch.arange(1, k + 1, dtype=torch.float64)
    tot = v.sum(-1)
    if (tot == 0).any():
        warnings.warn("all-zero map: Gini index undefined, NaN", UserWarning, stacklevel=2)
    g = ((2 * i - k - 1) * v).sum(-1) / (k * tot)
    return torch.where(tot == 0, torch.full_like(g, float("nan")), g)
