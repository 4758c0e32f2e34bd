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
its weights and hooks are untouched; a model in training mode gives the numbers of eval mode
(with a warning). A map that ranks nothing (all its values equal, e.g. all zero) gives NaN with
the reason in the result's ``reason`` column and one ``UndefinedValueWarning``; NaN/Inf in
``x`` or ``maps`` is refused (``probes.core.errors``).

:func:`max_sensitivity` and :func:`sparsity` are element-wise metrics returning tensors;
``probes.metrics.case_values`` gives their tidy rows.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from probes.core.errors import InputTypeError, OptionError, ShapeError
from probes.core.model import Output, as_audit_model, class_probabilities, model_state
from probes.core.validate import (Target, as_case_ids, as_input, as_maps, as_targets, check_choice, check_class_range,
                                  check_finite, check_int, to_numpy)
from probes.metrics.values import Column, WideTableResult, warn_reasons

__all__ = ["MODES", "class_probability_fn", "DeletionCurve", "deletion_curve", "aupc", "DeltaAUPC", "delta_aupc",
           "random_aupc", "max_sensitivity", "uniform_linf_perturbation", "sparsity"]

Mode = Literal["deletion", "insertion"]
MODES: tuple[str, ...] = ("deletion", "insertion")
Baseline = float | str | Tensor
RANKS_NOTHING = "map ranks nothing (all its values are equal)"
NOT_FINITE = "model output is not finite"


def _check_model(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise InputTypeError("model", type(model).__name__, "a torch.nn.Module",
                             message=f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def _flat_maps(maps: Any, x_shape: Sequence[int] | None) -> Tensor:
    """Validated float64 maps: shape against x, NaN/Inf refused."""
    m = as_maps(maps, x_shape)
    check_finite(m, "maps")
    return m


def _ranks_nothing(m: Tensor) -> np.ndarray:
    """(N,) True where every feature of the case's map has the same value."""
    flat = m.reshape(m.shape[0], -1)
    return (flat.amax(1) == flat.amin(1)).numpy()


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
    casts are computed in ``dtype`` when given. Each call checks ``x`` (``as_input``: channels
    against the model, cast to its dtype, NaN/Inf refused) and runs the model in eval mode
    (``probes.core.model_state``: a training-mode model is switched for the call, with a
    warning, and restored).
    """
    net = as_audit_model(_check_model(model), output)

    def prob(xb: Tensor) -> Tensor:
        xb = as_input(xb, "x", model=model)
        with model_state(model, warn="class_probability_fn"):
            return class_probabilities(net, xb, dtype)

    return prob


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
    x = as_input(x, "x", model=_check_model(model))
    t = as_targets(target, x.shape[0])
    m = _flat_maps(maps, x.shape)
    check_choice(mode, "mode", MODES)
    return m, _Perturbation(x, t, _baseline(x, baseline, blur_sigma), class_probability_fn(model, output),
                            check_int(steps, "steps"), mode, check_int(batch_size, "batch_size"))


# ----------------------------------------------------------------------------- curves
@dataclass(frozen=True, eq=False)
class DeletionCurve(WideTableResult):
    """A deletion (or insertion) curve per case (:func:`deletion_curve`).

    ``table`` (wide): case_id, method, mode, fraction, reason (why a case's curve is NaN, ""
    where defined), probability; ``to_frame()``: the same with metric ``"probability"`` and
    ``value``. ``probabilities`` is the ``(N, steps + 1)`` array and
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
    ids = as_case_ids(case_ids, x.shape[0])
    with model_state(model, warn="deletion_curve"), torch.no_grad():
        curve = pert.curves(_ranks(m))
    n = curve.shape[0]
    reason = np.where(_ranks_nothing(m), RANKS_NOTHING, np.where(np.isfinite(curve).all(1), "", NOT_FINITE))
    curve[reason != ""] = np.nan
    warn_reasons("deletion_curve", reason)
    table = pd.DataFrame({"case_id": np.repeat(ids, pert.steps + 1), "method": method,
                          "mode": mode, "fraction": np.tile(pert.fractions, n),
                          "reason": np.repeat(reason, pert.steps + 1), "probability": curve.reshape(-1)})
    return DeletionCurve(table=table, id_vars=("case_id", "method", "mode", "fraction", "reason"),
                         title=f"{mode.capitalize()} curve")


def aupc(curve: DeletionCurve) -> Tensor:
    """Area under the perturbation curve per case: trapezoid rule of probability over fraction ∈ [0, 1].

    Returns float64 ``(N,)`` in the order of ``curve.case_ids``; NaN (with one warning) for a
    case whose curve is undefined (its ``reason``).
    """
    if not isinstance(curve, DeletionCurve):
        raise InputTypeError("curve", type(curve).__name__, "a DeletionCurve (from deletion_curve)",
                             message=f"curve must be a DeletionCurve (from deletion_curve), got {type(curve).__name__}")
    area = np.trapezoid(curve.probabilities, curve.fractions, axis=1)
    if np.isnan(area).any():
        t = curve.table
        why = t["reason"].to_numpy() if "reason" in t.columns else np.full(len(t), "")
        per_case = why.reshape(len(area), -1)[:, 0]
        warn_reasons("aupc", [r or "curve holds NaN" for r, a in zip(per_case, area) if np.isnan(a)])
    return torch.from_numpy(area)


@dataclass(frozen=True, eq=False)
class DeltaAUPC(WideTableResult):
    """ΔAUPC per case (:func:`delta_aupc`).

    ``table`` (wide): case_id, method, mode, reason (why a value of the case is NaN), aupc,
    aupc_random_mean, aupc_random_std, delta_aupc; ``to_frame()``: case_id, method, mode, reason
    ("" where the value is defined), metric (one of those four), value. The properties
    give each column as an ``(N,)`` array.
    """

    aupc = Column("AUPC of the map's ordering, per case.")
    aupc_random_mean = Column("Mean AUPC over the random orderings, per case.")
    aupc_random_std = Column("Standard deviation (ddof = 1) of the random orderings' AUPC; NaN for one ordering.")
    delta_aupc = Column("ΔAUPC per case: positive when the map beats random orderings.")


def delta_aupc(model: nn.Module, x: Tensor, target: Target, maps: Any, *, n_samples: int = 10, seed: int = 0,
               steps: int = 20, mode: Mode = "deletion", baseline: Baseline = 0.0, batch_size: int = 32,
               output: Output = None, blur_sigma: float = 5.0, method: str = "",
               case_ids: Sequence[Any] | None = None, random_areas: Any = None) -> DeltaAUPC:
    """ΔAUPC (Jin et al., MedIA 2023, §4.3.1): the map's ordering against random orderings.

    deletion: ΔAUPC = mean AUPC(random) − AUPC(map); insertion: AUPC(map) − mean AUPC(random),
    so positive always means the map is more faithful than chance. ``n_samples`` random
    orderings of the same features (C_map as in ``maps``) from
    ``torch.Generator().manual_seed(seed)``; curves as :func:`deletion_curve`. Returns a
    :class:`DeltaAUPC` (aupc, aupc_random_mean, aupc_random_std (ddof = 1; NaN when
    n_samples = 1), delta_aupc per case). A map that ranks nothing gives NaN aupc and
    delta_aupc for that case (its reason says so; one warning per call). ``random_areas``: the
    random orderings' AUPCs (N, n_samples) from :func:`random_aupc` with the same arguments and
    map channels (they do not depend on the map), computed once for several methods; None:
    computed here.
    """
    check_int(n_samples, "n_samples")
    m, pert = _prepare(x, target, maps, steps=steps, mode=mode, baseline=baseline, batch_size=batch_size,
                       output=output, blur_sigma=blur_sigma, model=model)
    ids = as_case_ids(case_ids, pert.x.shape[0])
    seed = check_int(seed, "seed", minimum=0)
    if random_areas is not None:
        a_rand = to_numpy(random_areas, "random_areas").astype(np.float64)
        if a_rand.shape != (pert.x.shape[0], n_samples):
            raise ShapeError("random_areas", f"shape {a_rand.shape}", f"({pert.x.shape[0]}, n_samples={n_samples})")
    with model_state(model, warn="delta_aupc"), torch.no_grad():
        a_map = pert.areas(_ranks(m))
        if random_areas is None:
            a_rand = _random_areas(pert, m.shape, n_samples, seed)
    r_mean = a_rand.mean(1)
    r_std = a_rand.std(1, ddof=1) if n_samples > 1 else np.full(len(r_mean), np.nan)
    delta = r_mean - a_map if mode == "deletion" else a_map - r_mean
    finite = np.isfinite(a_map) & np.isfinite(a_rand).all(1)
    reason = np.where(_ranks_nothing(m), RANKS_NOTHING, np.where(finite, "", NOT_FINITE))
    a_map[reason != ""] = np.nan
    delta[reason != ""] = np.nan
    r_mean[~np.isfinite(a_rand).all(1)] = np.nan
    if n_samples == 1:  # no spread from one ordering
        reason = np.where(reason == "", "1 random ordering: no standard deviation", reason)
    warn_reasons("delta_aupc", reason)
    table = pd.DataFrame({"case_id": ids, "method": method, "mode": mode, "reason": reason,
                          "aupc": a_map, "aupc_random_mean": r_mean, "aupc_random_std": r_std,
                          "delta_aupc": delta})
    return DeltaAUPC(table=table, id_vars=("case_id", "method", "mode", "reason"), title="ΔAUPC",
                     notes=(f"{n_samples} random ordering(s), seed {seed}; positive ΔAUPC: the map beats "
                            "random orderings",))


def _random_areas(pert: _Perturbation, shape: Sequence[int], n_samples: int, seed: int) -> np.ndarray:
    """(N, n_samples) AUPCs of random orderings drawn from ``torch.Generator().manual_seed(seed)``."""
    g = torch.Generator().manual_seed(seed)
    return np.stack([pert.areas(_ranks(torch.rand(tuple(shape), generator=g, dtype=torch.float64)))
                     for _ in range(n_samples)], 1)


def random_aupc(model: nn.Module, x: Tensor, target: Target, *, map_channels: int = 1, n_samples: int = 10,
                seed: int = 0, steps: int = 20, mode: Mode = "deletion", baseline: Baseline = 0.0,
                batch_size: int = 32, output: Output = None, blur_sigma: float = 5.0) -> Tensor:
    """AUPCs of ``n_samples`` random orderings per case, float64 ``(N, n_samples)``: the random
    reference of :func:`delta_aupc` for maps with ``map_channels`` channels (1, or one per
    contrast), exactly the orderings it draws with the same arguments. It does not depend on
    the map, so one computation serves every method's ``delta_aupc(..., random_areas=...)``.
    """
    x = as_input(x, "x", model=_check_model(model))
    c = check_int(map_channels, "map_channels")
    if c not in (1, x.shape[1]):
        raise OptionError("map_channels", repr(map_channels), f"1 or the contrasts of x ({x.shape[1]})")
    shape = (x.shape[0], c, *x.shape[2:])
    _, pert = _prepare(x, target, torch.zeros(shape, dtype=torch.float64), steps=steps, mode=mode,
                       baseline=baseline, batch_size=batch_size, output=output, blur_sigma=blur_sigma, model=model)
    with model_state(model, warn="random_aupc"), torch.no_grad():
        areas = _random_areas(pert, shape, check_int(n_samples, "n_samples"), check_int(seed, "seed", minimum=0))
    return torch.from_numpy(areas)


# ----------------------------------------------------------------------------- robustness
def uniform_linf_perturbation(seed: int = 0) -> Callable[[Tensor, float], Tensor]:
    """A seeded version of Captum's ``default_perturb_func``: x + U(−radius, radius) per element.

    The returned function draws from its own ``torch.Generator`` (float32 like Captum's
    ``torch.FloatTensor(...).uniform_``), so passing a fresh one to both this module and
    ``captum.metrics.sensitivity_max`` gives both the same noise.
    """
    g = torch.Generator().manual_seed(check_int(seed, "seed", minimum=0))

    def perturb(inputs: Tensor, perturb_radius: float = 0.02) -> Tensor:
        noise = torch.empty(inputs.shape, dtype=torch.float32).uniform_(-perturb_radius, perturb_radius,
                                                                         generator=g)
        return inputs + noise.to(inputs.device)

    return perturb


def max_sensitivity(explain_fn: Callable[..., Tensor], x: Tensor, *, radius: float = 0.02,
                    n_samples: int = 10, seed: int = 0, norm: str | float = "fro",
                    perturb_func: Callable | None = None, target: Target | None = None,
                    batch_size: int | None = None, model: nn.Module | None = None) -> Tensor:
    """Max-sensitivity (Yeh et al. 2019), computed exactly as ``captum.metrics.sensitivity_max``.

    SENS_max(x) = max_{j ≤ n_samples} ‖e(x + δ_j) − e(x)‖ / ‖e(x)‖ with δ_j ~ U(−r, r)^d (L∞ ball),
    norms over the flattened explanation (``torch.norm(p=norm, dim=1)``, Captum's ``norm_ord``);
    ‖e(x)‖ = 0 is replaced by 1, as in Captum. The perturbed batch is
    ``x.repeat_interleave(n_samples, 0)`` perturbed by one call of ``perturb_func(batch, radius)``
    (default ``uniform_linf_perturbation(seed)``) — the same call Captum makes with
    ``max_examples_per_batch=None``, so the same ``perturb_func`` gives the same values.
    ``explain_fn(x)`` or ``explain_fn(x, target=...)`` returns a tensor with x's batch size;
    ``batch_size`` splits only the explanation calls (the noise is drawn once). ``model``, the
    model ``explain_fn`` explains, is optional: with it, ``x`` is checked against its channels
    and cast to its dtype, ``target`` against its classes, and the explanations run with the
    model in eval mode (``probes.core.model_state``). NaN/Inf in ``x`` is refused; a
    non-finite explanation gives NaN with one ``UndefinedValueWarning``. Returns (N,).
    """
    x = as_input(x, "x", model=None if model is None else _check_model(model))
    check_int(n_samples, "n_samples")
    n = x.shape[0]
    pf = perturb_func or uniform_linf_perturbation(seed)
    t = None if target is None else as_targets(target, n)
    bs = None if batch_size is None else check_int(batch_size, "batch_size")

    def explain(inp: Tensor, tt: Tensor | None) -> Tensor:
        e = explain_fn(inp) if tt is None else explain_fn(inp, target=tt)
        if not isinstance(e, Tensor) or e.dim() == 0 or e.shape[0] != inp.shape[0]:
            raise ShapeError("explain_fn", f"output shape {getattr(e, 'shape', type(e).__name__)}",
                             f"a tensor with batch size {inp.shape[0]}")
        return e.detach()

    with model_state(model, warn="max_sensitivity") if model is not None else contextlib.nullcontext():
        if model is not None and t is not None:
            with torch.no_grad():
                check_class_range(t, class_probability_fn(model)(x[:1]).shape[1])
        e0 = explain(x, t)
        xs = torch.repeat_interleave(x, n_samples, dim=0)
        xp = pf(xs, radius) if len(inspect.signature(pf).parameters) > 1 else pf(xs)
        tp = None if t is None else torch.repeat_interleave(t, n_samples)
        step = xp.shape[0] if bs is None else bs
        ep = torch.cat([explain(xp[i:i + step], None if tp is None else tp[i:i + step])
                        for i in range(0, xp.shape[0], step)])
    diff = (ep - e0.repeat_interleave(n_samples, dim=0)).reshape(ep.shape[0], -1)
    den = torch.norm(e0.reshape(n, -1), p=norm, dim=1, keepdim=True).repeat_interleave(n_samples, dim=0)
    den = torch.where(den == 0.0, torch.ones_like(den), den)
    sens = torch.norm(diff, p=norm, dim=1, keepdim=True) / den
    out = sens.reshape(n, n_samples).max(dim=1).values
    warn_reasons("max_sensitivity", ["explanation is not finite"] * int((~torch.isfinite(out)).sum()))
    return out


# ----------------------------------------------------------------------------- complexity
def sparsity(maps: Any, *, eps: float = 0.0, per_contrast: bool = False) -> Tensor:
    """Gini index of |a| (Chalasani et al. 2020), per case (or per case and contrast).

    G = Σ_i (2i − n − 1) v_(i) / (n Σ_i v_i) with v = |a| + eps sorted ascending (i = 1..n):
    0 for a uniform map, → 1 when one feature holds all relevance. Quantus ``Sparseness``
    (abs=True, normalise=False) adds eps = 1e-7; pass ``eps=1e-7`` to match it. An all-zero map
    (Σ v = 0) → NaN with one ``UndefinedValueWarning``; NaN/Inf in ``maps`` is refused. Returns
    float64 (N,) or, with ``per_contrast``, (N, C_map).
    """
    a = _flat_maps(maps, None)
    v = a.abs().reshape(a.shape[0], a.shape[1], -1) if per_contrast else a.abs().reshape(a.shape[0], -1)
    v = torch.sort(v + eps, dim=-1).values
    k = v.shape[-1]
    i = torch.arange(1, k + 1, dtype=torch.float64)
    tot = v.sum(-1)
    warn_reasons("sparsity", ["all-zero map: Gini index undefined"] * int((tot == 0).sum()))
    g = ((2 * i - k - 1) * v).sum(-1) / (k * tot)
    return torch.where(tot == 0, torch.full_like(g, float("nan")), g)
