"""Layer-wise Relevance Propagation (LRP) that conserves relevance, and checks that it does.

Built on zennit 0.5.1 (Anders et al., "Software for dataset-wide XAI: from local explanations to
global insights with Zennit, CoRelAy, and ViRelAy", 2021; rules from Bach et al. 2015 and
Montavon et al., "Layer-wise relevance propagation: an overview", 2019), with the canonizers of
``probes.attribution.lrp_canonizers`` for timm and MONAI residual networks.

- Rules exclude biases (``zero_params=['bias']``), so conv/linear rules redistribute all incoming
  relevance to their inputs; depthwise convs get ``Epsilon`` (ZPlus on a one-channel receptive
  field with all-negative weights has a zero denominator and loses the relevance);
  ``SignFixedGamma`` is zennit's Gamma with the positive/negative denominator chosen from the
  bias-free output (zennit 0.5.1 chooses it from the output *with* bias, then divides by
  bias-free sums that can be ~0: Σ R off by 10²–10⁶ on timm's resnet51q).

Start relevance is zennit's convention: ``one_hot(target) × logits`` (the target logit itself).
Every LRP failure is silent, so :func:`lrp` checks, per case, that Σ input relevance equals the
start (within ``tol``), that Σ|R| is finite, that the canonized model computes the same logits
as the original, and that every conv/linear/activation/norm/pool/sum module got a rule.

The model's declared interface: channels-last input is moved for the model (relevance follows
the permutation exactly); LRP starts from a logit, so a probability output needs
``ModelInterface(score="logit")`` (its final softmax's input is explained); any other
probability or callable output is refused with ``UnsupportedModelError``, as is a model with a
module no rule covers (``LRPRuleError``).

Composite names (``composite=``):
- ``"epsilon_gamma_box"`` (default): ZBox on the first conv (per-channel bounds ``low``/``high``,
  default the per-channel min/max of ``x`` over the batch: pass them explicitly for maps that do
  not depend on which cases share a batch), ``SignFixedGamma(0.25)`` on other convs, Epsilon on
  linear layers. The default for audits because it is class-sensitive where ``epsilon_plus`` is
  not: on the planted skull-marker model its relevance mass in the marker's skull ROI is 0.22
  against 0.05 in the GTV (paired p = 2e-12), while ``epsilon_plus`` gives 0.14 against 0.10
  (the truth tests in ``tests/attribution/test_truth.py`` measure it on every training seed).
- ``"epsilon_plus"``: ZPlus on convs, Epsilon on depthwise convs and linear layers, Pass on
  activations/BN, Norm on Sum/AvgPool. No Flat first layer: one map per input contrast. Use it
  where the first conv does not see the raw input (the ZBox rule then refuses).
- ``"epsilon"``: Epsilon everywhere, ε also in the Sum/AvgPool Norm rules (LRP-ε; with ε → 0 on
  bias-free ReLU nets it equals gradient × input). Not conservative on deep biased nets (Σ R
  off by 10×, NaN on timm's resnet51q): the check then raises, as it should.
- or any ``zennit.core.Composite`` (its own canonizers run after ours).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd
import torch
from torch import nn
from zennit.canonizers import Canonizer
from zennit.core import Composite
from zennit.layer import Sum
from zennit.rules import Epsilon, Gamma, NoMod, Norm, Pass, ZBox, ZPlus, zero_bias
from zennit.types import Activation, AvgPool, Convolution, ConvolutionStandard, MaxPool

from probes.attribution.lrp_canonizers import (
    BATCH_NORM,
    LRPConservationError,
    LRPError,
    LRPRuleError,
    default_canonizers,
    relevance_units,
)
from probes.attribution.result import Attribution
from probes.attribution.scores import as_module, target_scores
from probes.core.model import AuditAdapter, Output, UnsupportedModelError, as_audit_model, model_state
from probes.core.result import Result, long_frame
from probes.core.validate import Target, as_case_ids, as_input, as_targets

__all__ = ["COMPOSITE_NAMES", "LRPConservation", "LRPConservationError", "LRPError", "LRPRuleError",
           "SignFixedGamma", "lrp", "lrp_conservation", "make_composite"]

COMPOSITE_NAMES = ("epsilon_plus", "epsilon_gamma_box", "epsilon")
Canonizers = str | Sequence[Canonizer] | None


class SignFixedGamma(Gamma):
    """Generalised LRP-γ (Montavon et al. 2019; Andéol et al. 2021) whose positive/negative case is
    chosen by the sign of the *bias-free* output z = Σ x·w, the same quantity its denominators
    z + γ·Σ(x⁺w⁺ + x⁻w⁻) (z > 0) and z + γ·Σ(x⁺w⁻ + x⁻w⁺) (z < 0) are built from, so a
    denominator never has the opposite sign / is never ~0. Biases are always excluded."""

    def __init__(self, gamma: float = 0.25, stabilizer: float = 1e-6, zero_params=None) -> None:
        super().__init__(gamma=gamma, stabilizer=stabilizer, zero_params=zero_bias(zero_params))
        mods = list(self.param_modifiers)
        mods[4] = NoMod(zero_params=zero_bias(zero_params))  # the output that selects the case
        self.param_modifiers = mods


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, ConvolutionStandard) and m.groups > 1 and m.groups == m.in_channels


def _is_activation(m: nn.Module) -> bool:
    return isinstance(m, (Activation, nn.Mish)) or type(m).__module__.startswith("timm.layers.activations")


def make_composite(name: str, *, epsilon: float = 1e-6, gamma: float = 0.25, stabilizer: float = 1e-6,
                   low: torch.Tensor | float | None = None, high: torch.Tensor | float | None = None) -> Composite:
    """Build one of :data:`COMPOSITE_NAMES` (see module docstring); biases excluded everywhere."""
    if name not in COMPOSITE_NAMES:
        raise ValueError(f"composite={name!r} is not one of {COMPOSITE_NAMES} or a zennit Composite")
    zp = ["bias"]
    if name == "epsilon_gamma_box" and (low is None or high is None):
        raise ValueError("composite='epsilon_gamma_box' needs low= and high= (per-channel input bounds)")
    if name == "epsilon":  # pure LRP-ε: the Sum/AvgPool Norm rules use the same ε
        stabilizer = epsilon
    eps_rule = Epsilon(epsilon=epsilon, zero_params=zp)
    conv_rule = {"epsilon_plus": ZPlus(stabilizer=stabilizer, zero_params=zp),
                 "epsilon_gamma_box": SignFixedGamma(gamma=gamma, stabilizer=stabilizer, zero_params=zp),
                 "epsilon": eps_rule}[name]
    dw_rule = conv_rule if name != "epsilon_plus" else eps_rule
    first_rule = ZBox(low=low, high=high, stabilizer=stabilizer, zero_params=zp) if name == "epsilon_gamma_box" else None

    def module_map(ctx: dict, mname: str, m: nn.Module):
        if _is_activation(m) or isinstance(m, BATCH_NORM):
            return Pass()
        if isinstance(m, (Sum, AvgPool)):
            return Norm(stabilizer=stabilizer)
        if isinstance(m, Convolution):
            if first_rule is not None and not ctx.get("first"):
                ctx["first"] = mname
                comp.first_layer = m  # checked in _run: it must receive the model input itself
                return first_rule
            return dw_rule if _is_depthwise(m) else conv_rule
        if isinstance(m, nn.Linear):
            return eps_rule
        return None

    comp = Composite(module_map=module_map)
    comp.lrp_name, comp.first_layer = name, None
    return comp


# modules through which plain autograd is the LRP rule (identity, or winner-take-all for max pool)
_NEUTRAL = (nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.dropout._DropoutNd, MaxPool)


def _neutral(m: nn.Module) -> bool:
    if isinstance(m, _NEUTRAL):
        return True
    return type(m).__name__ in ("DropPath", "DropBlock2d") and type(m).__module__.startswith("timm.")


def _pre_hook_counts(model: nn.Module) -> dict[int, int]:
    return {id(m): len(m._forward_pre_hooks) for m in model.modules()}


def _check_rules(model: nn.Module, before: dict[int, int], bypassed: set[int]) -> None:
    """Every unit (leaf, or batch norm) that changes relevance must carry a rule; ``bypassed``
    units (ids) are those whose input is the network's output (their output is not used)."""
    missing = []
    names = {id(m): n for n, m in model.named_modules()}
    for m in relevance_units(model):
        if _neutral(m) or id(m) in bypassed:
            continue
        if len(m._forward_pre_hooks) <= before.get(id(m), 0):
            missing.append(f"{names.get(id(m), '?')} ({type(m).__name__})")
    if missing:
        raise LRPRuleError(f"lrp: no LRP rule for {len(missing)} module(s): {', '.join(missing[:10])}"
                           + (" ..." if len(missing) > 10 else "")
                           + "; pass a zennit Composite that maps them, or a canonizer that removes them")


def _network(model: nn.Module, output: Output) -> nn.Module:
    """The model as LRP runs it: the declared interface applied, or UnsupportedModelError."""
    net = as_audit_model(model, output)
    if isinstance(net, AuditAdapter):
        i = net.interface
        if net.output_fn is not None or i.output == "log_probabilities" or (
                i.output == "probabilities" and i.score != "logit"):
            what = "a callable output" if net.output_fn is not None else f"output={i.output!r}"
            raise UnsupportedModelError(
                f"lrp: LRP starts from the target logit, and this model is read with {what}; load a model whose "
                "final softmax is a module with score='logit' (ModelInterface) to explain the softmax input")
    return net


def _reference(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, set[int]]:
    """The output for ``x`` (no grad), and the ids of the units whose input is that output: a
    final softmax that ``ModelInterface(score="logit")`` bypasses gets no relevance and needs no rule."""
    inputs: dict[int, object] = {}  # the input objects themselves: ids of freed tensors are reused
    handles = [m.register_forward_hook(lambda mod, args, out: inputs.__setitem__(id(mod), args[0] if args else None))
               for m in relevance_units(net)]
    try:
        with torch.no_grad():
            reference = net(x)
    finally:
        for h in handles:
            h.remove()
    return reference, {m for m, a in inputs.items() if a is reference}


def _composite(composite: str | Composite, x: torch.Tensor, epsilon: float, gamma: float, low, high) -> Composite:
    if isinstance(composite, str):
        if composite == "epsilon_gamma_box":
            dims = [0] + list(range(2, x.ndim))
            low = x.detach().amin(dim=dims, keepdim=True) if low is None else low
            high = x.detach().amax(dim=dims, keepdim=True) if high is None else high
        return make_composite(composite, epsilon=epsilon, gamma=gamma, low=low, high=high)
    if isinstance(composite, Composite):
        return composite
    raise TypeError(f"composite must be one of {COMPOSITE_NAMES} or a zennit Composite, got {composite!r}")


def _canonizer_list(canonizers: Canonizers) -> list[Canonizer]:
    if isinstance(canonizers, str) and canonizers == "auto":
        return default_canonizers()
    if canonizers is None:
        return []
    if isinstance(canonizers, str):
        raise ValueError(f"canonizers must be 'auto', None or a list of zennit Canonizers, got {canonizers!r}")
    return list(canonizers)


def _run(model: nn.Module, x: torch.Tensor, target: Target, composite, canonizers: Canonizers, epsilon: float,
         gamma: float, low, high, check_rules: bool, output: Output):
    """Canonize, hook, forward, backward; returns (relevance, start per case, targets)."""
    model = as_module(model)
    x = as_input(x, "x", model=model).contiguous()  # one memory layout: the same numbers
    net = _network(model, output)
    conv = next((m for m in net.modules() if isinstance(m, ConvolutionStandard)), None)
    if conv is not None and x.ndim != len(conv.kernel_size) + 2:
        raise ValueError(f"x must be (N, C, *spatial) with {len(conv.kernel_size)} spatial dims for this model "
                         f"(its first conv is {type(conv).__name__}), got shape {tuple(x.shape)}")
    comp = _composite(composite, x, epsilon, gamma, low, high)
    cans = _canonizer_list(canonizers)
    t = as_targets(target, x.shape[0], device=x.device)
    applied: list[Canonizer] = []
    handles: list = []
    registered = False
    # LRP (and BN merging) is defined for the inference-time function: eval mode, restored after
    with model_state(net, warn="lrp"):
        try:
            reference, bypassed = _reference(net, x)
            target_scores(reference, t, "lrp")
            for c in cans:
                applied += c.apply(net)
            before = _pre_hook_counts(net)
            comp.register(net)
            registered = True
            if check_rules:
                _check_rules(net, before, bypassed)
            xr = x.detach().clone().requires_grad_(True)
            first = getattr(comp, "first_layer", None)
            seen: list[bool] = []
            if first is not None:  # ZBox bounds only make sense on the raw input
                handles.append(first.register_forward_pre_hook(
                    lambda mod, inp: seen.append(inp[0].shape == xr.shape and torch.equal(inp[0], xr))))
            with torch.enable_grad():
                out = net(xr)
                if first is not None and seen != [True]:
                    raise LRPRuleError(f"lrp: the first-layer (ZBox) rule sits on {type(first).__name__}, which "
                                       "did not receive the model input exactly once; use composite='epsilon_plus'")
                scale = reference.abs().max().clamp_min(1e-12)
                if not torch.allclose(out.detach(), reference, rtol=1e-4, atol=1e-4 * float(scale)):
                    err = (out.detach() - reference).abs().max().item()
                    raise LRPRuleError(f"lrp: the canonized model computes different logits (max |Δ| = {err:.3g}): "
                                       "a canonizer does not match this block's forward")
                onehot = torch.zeros_like(out)
                onehot[torch.arange(out.shape[0]), t] = 1.0
                start = (onehot * out).detach()  # zennit's convention: one_hot(target) × logits
                (rel,) = torch.autograd.grad(out, xr, grad_outputs=start)
        finally:
            for h in handles:
                h.remove()
            if registered:
                comp.remove()
            for c in reversed(applied):
                c.remove()
    return rel.detach(), start.sum(dim=1), t


def _stats(rel: torch.Tensor, start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    flat = rel.flatten(1).double()
    s, a = flat.sum(1), flat.abs().sum(1)
    err = (s - start.double()).abs() / start.double().abs().clamp_min(1e-12)
    return s, a, err


def _composite_name(composite: str | Composite) -> str:
    return composite if isinstance(composite, str) else getattr(composite, "lrp_name", type(composite).__name__)


def lrp(model: nn.Module, x: torch.Tensor, target: Target, *, composite: str | Composite = "epsilon_gamma_box",
        canonizers: Canonizers = "auto", check: bool = True, tol: float = 0.05, epsilon: float = 1e-6,
        gamma: float = 0.25, low: torch.Tensor | float | None = None, high: torch.Tensor | float | None = None,
        output: Output = None, case_ids: Sequence[Any] | None = None,
        contrasts: Sequence[str] | None = None) -> Attribution:
    """Input relevance R (N, C, *spatial), one map per input contrast, for the target logit.

    LRP (Bach et al. 2015) backpropagates R_start = one_hot(target) × logits (zennit's
    convention) with the rules of ``composite`` (module docstring) after ``canonizers``
    (``"auto"``: ``default_canonizers()``; ``None``: none; or a list). With ``check=True``:
    raises :class:`LRPConservationError` when |Σ R − R_start| > tol·|R_start| for any case or
    Σ|R| is not finite, and :class:`LRPRuleError` when a conv/linear/activation/norm/pool/Sum
    module has no rule or the canonized model's logits differ from the original's. The model is
    run in eval mode and left exactly as found (hooks, canonizers, modes), also on error.
    ``output``: ``None`` (the declared interface) or an override (module docstring).

    Returns:
        :class:`Attribution` (method ``"lrp"``), maps in ``x``'s dtype.
    """
    rel, start, t = _run(model, x, target, composite, canonizers, epsilon, gamma, low, high, check, output)
    if check:
        s, a, err = _stats(rel, start)
        bad = [i for i in range(len(s)) if not (torch.isfinite(a[i]) and err[i] <= tol)]
        if bad:
            detail = "; ".join(f"case {i}: Σ input relevance {s[i].item():.6g} vs start {start[i].item():.6g} "
                               f"(rel. error {err[i].item():.3g}, Σ|R| {a[i].item():.6g})" for i in bad[:5])
            raise LRPConservationError(f"lrp: relevance is not conserved (tol {tol}): {detail}")
    options = dict(composite=_composite_name(composite), check=check, tol=tol, epsilon=epsilon, gamma=gamma)
    return Attribution.from_maps(rel, "lrp", t, case_ids=case_ids, contrasts=contrasts, options=options)


MEASURES = ("start", "sum_relevance", "sum_abs_relevance", "rel_error")


@dataclass(frozen=True, eq=False)
class LRPConservation(Result):
    """Relevance conservation per case (:func:`lrp_conservation`).

    ``table`` (wide, one row per case): case_id, target, start (the target logit), sum_relevance
    Σ R, sum_abs_relevance Σ|R|, rel_error |Σ R − start| / |start|, composite. ``to_frame()``:
    case_id, composite, target, metric ∈ {start, sum_relevance, sum_abs_relevance, rel_error}, value.
    """

    table: pd.DataFrame
    title: ClassVar[str] = "LRP relevance conservation"

    def to_frame(self) -> pd.DataFrame:
        """Tidy copy: case_id, composite, target, metric, value."""
        return long_frame(self.table, ("case_id", "composite", "target"), MEASURES)

    def _summary_tables(self) -> pd.DataFrame:
        return self.table

    def _notes(self) -> Sequence[str]:
        return ("start = the target logit (zennit's convention); rel_error = |Σ R − start| / |start|",)

    def __len__(self) -> int:
        return len(self.table)


def lrp_conservation(model: nn.Module, x: torch.Tensor, target: Target, *,
                     composite: str | Composite = "epsilon_gamma_box", canonizers: Canonizers = "auto",
                     epsilon: float = 1e-6, gamma: float = 0.25, low: torch.Tensor | float | None = None,
                     high: torch.Tensor | float | None = None, output: Output = None,
                     case_ids: Sequence[Any] | None = None) -> LRPConservation:
    """Conservation report of :func:`lrp`, one row per case (see :class:`LRPConservation`).

    Never raises on non-conservation (it is the diagnostic); rule coverage is not enforced.
    """
    rel, start, t = _run(model, x, target, composite, canonizers, epsilon, gamma, low, high, False, output)
    s, a, err = _stats(rel, start)
    table = pd.DataFrame({
        "case_id": as_case_ids(case_ids, x.shape[0]), "target": t.tolist(), "start": start.double().tolist(),
        "sum_relevance": s.tolist(), "sum_abs_relevance": a.tolist(), "rel_error": err.tolist(),
        "composite": _composite_name(composite),
    })
    return LRPConservation(table=table)
