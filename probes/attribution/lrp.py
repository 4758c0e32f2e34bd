"""Layer-wise Relevance Propagation (LRP) that conserves relevance on timm residual networks.

Built on zennit 0.5.1 (Anders et al., "Software for dataset-wide XAI: from local explanations to
global insights with Zennit, CoRelAy, and ViRelAy", 2021; rules from Bach et al. 2015 and
Montavon et al., "Layer-wise relevance propagation: an overview", 2019). zennit alone is silently
wrong on timm models, so this module adds what is missing and checks the result:

- ``TimmResNetCanonizer`` / ``TimmByobNetCanonizer`` / ``MonaiResNetCanonizer`` route each
  block's skip add ``f(x) + s(x)`` through a zennit ``Sum`` module (zennit's ``ResNetCanonizer``
  only matches torchvision blocks: on a timm ResNet it matches nothing and relevance is counted
  once per path at every skip, Σ R ≈ 255 × the logit on resnet18). ``TimmSECanonizer`` makes
  squeeze-excitation gates pass relevance to the gated features only.
- ``MergeBatchNormAct`` merges every batch norm that follows a conv/linear (in module order) into
  it, *including* timm's fused ``BatchNormAct2d`` (which ``SequentialMergeBatchNorm`` skips
  because it is not a leaf). The fused activation stays as the BN's child and gets the ``Pass``
  rule like any activation. Choice: merging, not a rule for the BN, because a merged BN is part of
  the linear map the conv rule sees (the canonical LRP treatment); unmerged BNs get ``Pass``.
- Rules exclude biases (``zero_params=['bias']``), so conv/linear rules redistribute all incoming
  relevance to their inputs; depthwise convs get ``Epsilon`` (ZPlus on a one-channel receptive
  field with all-negative weights has a zero denominator and loses the relevance);
  ``SignFixedGamma`` is zennit's Gamma with the positive/negative denominator chosen from the
  bias-free output (zennit 0.5.1 chooses it from the output *with* bias, then divides by
  bias-free sums that can be ~0: Σ R off by 10²–10⁶).

Start relevance is zennit's convention: ``one_hot(target) × logits`` (the target logit itself).
Every LRP failure is silent, so :func:`lrp` checks, per sample, that Σ input relevance equals the
start (within ``tol``), that Σ|R| is finite, that the canonized model computes the same logits
as the original, and that every conv/linear/activation/norm/pool/sum module got a rule.

Composite names (``composite=``):
- ``"epsilon_plus"`` (default): ZPlus on convs, Epsilon on depthwise convs and linear layers,
  Pass on activations/BN, Norm on Sum/AvgPool. No Flat first layer: one map per input contrast.
- ``"epsilon_gamma_box"``: ZBox on the first conv (per-channel bounds ``low``/``high``, default
  the per-channel min/max of ``x``), ``SignFixedGamma(0.25)`` on other convs, Epsilon on linear.
- ``"epsilon"``: Epsilon everywhere, ε also in the Sum/AvgPool Norm rules (LRP-ε; with ε → 0 on
  bias-free ReLU nets it equals gradient × input). Not conservative on deep biased nets (Σ R
  off by 10×, NaN on resnet51q here): the check then raises, as it should.
- or any ``zennit.core.Composite`` (its own canonizers run after ours).
"""

from __future__ import annotations

import itertools
import types
from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn
from zennit.canonizers import Canonizer, MergeBatchNorm
from zennit.core import Composite
from zennit.layer import Sum
from zennit.rules import Epsilon, Gamma, NoMod, Norm, Pass, ZBox, ZPlus, zero_bias
from zennit.types import Activation, AvgPool, Convolution, ConvolutionStandard, MaxPool

__all__ = [
    "COMPOSITE_NAMES",
    "LRPConservationError",
    "LRPError",
    "LRPRuleError",
    "MergeBatchNormAct",
    "MonaiResNetCanonizer",
    "SignFixedGamma",
    "TimmByobNetCanonizer",
    "TimmResNetCanonizer",
    "TimmSECanonizer",
    "default_canonizers",
    "lrp",
    "lrp_conservation",
    "make_composite",
]

Target = int | Sequence[int] | torch.Tensor
COMPOSITE_NAMES = ("epsilon_plus", "epsilon_gamma_box", "epsilon")
_BN = nn.modules.batchnorm._BatchNorm


class LRPError(RuntimeError):
    """Base class of the loud failures raised instead of silently wrong relevance."""


class LRPConservationError(LRPError):
    """Σ input relevance differs from the start relevance (the target logit) beyond ``tol``."""


class LRPRuleError(LRPError):
    """A module that transforms relevance got no rule, or the canonizers changed the model."""


# ----------------------------------------------------------------------------------------------
# Canonizers: swap a block instance's ``forward`` for one whose skip add goes through ``Sum``.
# ----------------------------------------------------------------------------------------------
class _SumBlockCanonizer(Canonizer):
    """Temporarily give matching blocks a ``canonizer_sum`` (zennit ``Sum``) and a ``forward`` that
    computes ``act(Sum(stack([s(x), f(x)], -1)))`` — numerically identical to ``act(f(x) + s(x))``
    (a two-term sum is exact and commutative) but visible to zennit's Norm rule. ``remove``
    restores the instance exactly (a pre-existing instance-level ``forward`` is put back)."""

    adds_sum = True  # False: only ``forward`` is swapped

    def __init__(self) -> None:
        self.module: nn.Module | None = None
        self._old_forward = None
        self._had_forward = False

    def matches(self, module: nn.Module) -> bool:  # pragma: no cover - overridden
        return False

    @staticmethod
    def block_forward(blk: nn.Module, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def apply(self, root_module: nn.Module) -> list[Canonizer]:
        """Register a copy of this canonizer on every matching block; returns the instances."""
        targets = [m for m in root_module.modules() if self.matches(m)]
        instances: list[Canonizer] = []
        try:
            for m in targets:
                inst = self.copy()
                inst.register(m)
                instances.append(inst)
        except Exception:
            for inst in reversed(instances):
                inst.remove()
            raise
        return instances

    def register(self, module: nn.Module) -> None:
        """Attach ``canonizer_sum`` and the Sum-routed ``forward`` to this block instance."""
        if "canonizer_sum" in module._modules:
            raise LRPRuleError(f"{type(module).__name__} already has a canonizer_sum (canonized twice?)")
        self.module = module
        self._had_forward = "forward" in module.__dict__
        self._old_forward = module.__dict__.get("forward")
        if self.adds_sum:
            module.canonizer_sum = Sum()
        module.forward = types.MethodType(type(self).block_forward, module)

    def remove(self) -> None:
        """Delete the added ``Sum`` child and restore the block's original ``forward``."""
        m = self.module
        if m is None:
            return
        m._modules.pop("canonizer_sum", None)
        if self._had_forward:
            m.__dict__["forward"] = self._old_forward
        else:
            m.__dict__.pop("forward", None)
        self.module = None


def _skip_sum(block: nn.Module, shortcut: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    return block.canonizer_sum(torch.stack([shortcut, branch], dim=-1))


class TimmResNetCanonizer(_SumBlockCanonizer):
    """timm ``resnet.BasicBlock``/``Bottleneck`` (incl. ``se``, ``drop_block``, ``aa``,
    ``drop_path``): the in-place ``x += shortcut`` becomes a ``Sum`` before ``act2``/``act3``."""

    def matches(self, module: nn.Module) -> bool:
        from timm.models.resnet import BasicBlock, Bottleneck
        return isinstance(module, (BasicBlock, Bottleneck))

    @staticmethod
    def block_forward(blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        from timm.models.resnet import Bottleneck
        shortcut = x
        if isinstance(blk, Bottleneck):
            x = blk.act1(blk.bn1(blk.conv1(x)))
            x = blk.aa(blk.act2(blk.drop_block(blk.bn2(blk.conv2(x)))))
            x = blk.bn3(blk.conv3(x))
            last_act = blk.act3
        else:
            x = blk.aa(blk.act1(blk.drop_block(blk.bn1(blk.conv1(x)))))
            x = blk.bn2(blk.conv2(x))
            last_act = blk.act2
        if blk.se is not None:
            x = blk.se(x)
        if blk.drop_path is not None:
            x = blk.drop_path(x)
        if blk.downsample is not None:
            shortcut = blk.downsample(shortcut)
        return last_act(_skip_sum(blk, shortcut, x))


class _PassMul(torch.autograd.Function):
    """y = x · g in the forward; the backward hands the upper relevance to x unchanged (and none to
    g): LRP's treatment of a multiplicative gate as a constant per-channel weight (all of y's
    relevance goes to x; the gate branch gets none). Values are bit-identical to ``x * g``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x * g

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class TimmSECanonizer(_SumBlockCanonizer):
    """timm ``SEModule`` (seresnet*, resnet ``se``): the gate ``x * sigmoid(...)`` passes relevance
    to ``x`` unchanged and none into the squeeze branch (without this, relevance also flows into
    the gate and Σ R is ~6× the logit on seresnet18)."""

    adds_sum = False

    def matches(self, module: nn.Module) -> bool:
        from timm.layers.squeeze_excite import SEModule
        return isinstance(module, SEModule)

    @staticmethod
    def block_forward(blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        xd = x.detach()  # the squeeze branch gets no graph, hence no relevance and no hook calls
        x_se = xd.mean(tuple(range(2, x.ndim)), keepdim=True)
        if blk.add_maxpool:
            x_se = 0.5 * x_se + 0.5 * xd.amax(tuple(range(2, x.ndim)), keepdim=True)
        x_se = blk.fc2(blk.act(blk.bn(blk.fc1(x_se))))
        return _PassMul.apply(x, blk.gate(x_se))


def _byob_branches() -> dict[type, tuple[str, ...]]:
    from timm.models import byobnet as b
    # the residual branch, module by module, as in each block's forward (timm 1.0.x)
    return {
        b.BasicBlock: ("conv1_kxk", "attn", "conv2_kxk", "attn_last", "drop_path"),
        b.BottleneckBlock: ("conv1_1x1", "conv2_kxk", "conv2b_kxk", "attn", "conv3_1x1", "attn_last",
                            "drop_path"),
        b.DarkBlock: ("conv1_1x1", "attn", "conv2_kxk", "attn_last", "drop_path"),
        b.EdgeBlock: ("conv1_kxk", "attn", "conv2_1x1", "attn_last", "drop_path"),
        b.SelfAttnBlock: ("conv1_1x1", "conv2_kxk", "self_attn", "post_attn", "conv3_1x1", "drop_path"),
    }


class TimmByobNetCanonizer(_SumBlockCanonizer):
    """timm ByobNet blocks (``BasicBlock``, ``BottleneckBlock``, ``DarkBlock``, ``EdgeBlock``,
    ``SelfAttnBlock``; e.g. ``resnet51q``): ``x + self.shortcut(s)`` becomes a ``Sum`` before
    ``self.act``. Blocks whose ``shortcut`` is None have no skip and are left alone."""

    def matches(self, module: nn.Module) -> bool:
        return type(module) in _byob_branches() and getattr(module, "shortcut", None) is not None

    @staticmethod
    def block_forward(blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        for name in _byob_branches()[type(blk)]:
            x = getattr(blk, name)(x)
        return blk.act(_skip_sum(blk, blk.shortcut(shortcut), x))


class MonaiResNetCanonizer(_SumBlockCanonizer):
    """MONAI ``ResNetBlock``/``ResNetBottleneck`` (2D and 3D): ``out += residual`` becomes a Sum."""

    def matches(self, module: nn.Module) -> bool:
        try:
            from monai.networks.nets.resnet import ResNetBlock, ResNetBottleneck
        except ImportError:  # monai is optional for this probe
            return False
        return isinstance(module, (ResNetBlock, ResNetBottleneck))

    @staticmethod
    def block_forward(blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        residual = x
        out = blk.act(blk.bn1(blk.conv1(x)))
        out = blk.bn2(blk.conv2(out))
        if hasattr(blk, "conv3"):  # bottleneck
            out = blk.bn3(blk.conv3(blk.act(out)))
        if blk.downsample is not None:
            residual = blk.downsample(x)
        return blk.act(_skip_sum(blk, residual, out))


def _units(module: nn.Module):
    """Leaves in registration order, except that a batch norm (also timm's non-leaf
    ``BatchNormAct2d``) is one unit and its children are skipped."""
    if isinstance(module, _BN) or not module._modules:
        yield module
        return
    for child in module.children():
        yield from _units(child)


class MergeBatchNormAct(MergeBatchNorm):
    """Merge every batch norm that directly follows a conv/linear (module order) into it, incl.
    timm ``BatchNormAct2d`` and ``BatchNorm3d``; the merged BN computes the identity exactly
    (running_var = 1 − eps, unlike zennit's 1, which scales by 1/√(1+eps) per BN).
    ``remove`` restores every parameter and buffer bit-identically (zennit ``MergeBatchNorm``)."""

    def apply(self, root_module: nn.Module) -> list[Canonizer]:
        """Merge all (conv/linear, BN) neighbours; returns the registered instances."""
        instances: list[Canonizer] = []
        units = list(_units(root_module))
        try:
            for prev, cur in itertools.pairwise(units):
                if (isinstance(prev, (ConvolutionStandard, nn.Linear)) and isinstance(cur, _BN)
                        and cur.running_mean is not None and cur.weight is not None
                        and prev.weight.shape[0] == cur.num_features):
                    inst = self.copy()
                    inst.register((prev,), cur)
                    instances.append(inst)
        except Exception:
            for inst in reversed(instances):
                inst.remove()
            raise
        return instances

    @staticmethod
    def merge_batch_norm(modules, batch_norm) -> None:
        MergeBatchNorm.merge_batch_norm(modules, batch_norm)
        batch_norm.running_var.data = torch.full_like(batch_norm.running_var.data, 1.0 - batch_norm.eps)


def default_canonizers() -> list[Canonizer]:
    """The ``canonizers="auto"`` set: BN merge + Sum routing for timm ResNet, timm ByobNet,
    MONAI ResNet and torchvision ResNet blocks (zennit's own block canonizers)."""
    out: list[Canonizer] = [MergeBatchNormAct(), TimmResNetCanonizer(), TimmByobNetCanonizer(),
                            TimmSECanonizer(), MonaiResNetCanonizer()]
    try:
        from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer
        out += [ResNetBasicBlockCanonizer(), ResNetBottleneckCanonizer()]
    except ImportError:  # torchvision absent
        pass
    return out


# ----------------------------------------------------------------------------------------------
# Rules and composites
# ----------------------------------------------------------------------------------------------
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
        if _is_activation(m) or isinstance(m, _BN):
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


def _check_rules(model: nn.Module, before: dict[int, int]) -> None:
    """Every unit (leaf, or batch norm) that changes relevance must carry a rule."""
    missing = []
    names = {id(m): n for n, m in model.named_modules()}
    for m in _units(model):
        if _neutral(m):
            continue
        if len(m._forward_pre_hooks) <= before.get(id(m), 0):
            missing.append(f"{names.get(id(m), '?')} ({type(m).__name__})")
    if missing:
        raise LRPRuleError(f"no LRP rule for {len(missing)} module(s): {', '.join(missing[:10])}"
                           + (" ..." if len(missing) > 10 else "")
                           + "; pass a zennit Composite that maps them, or a canonizer that removes them")


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------
def _targets(target: Target, n: int, n_classes: int) -> torch.Tensor:
    if isinstance(target, bool):
        raise TypeError(f"target must be a class index or a length-{n} sequence of indices, got a bool")
    if isinstance(target, int):
        t = torch.full((n,), target, dtype=torch.long)
    else:
        t = torch.as_tensor(target)
        if t.is_floating_point() or t.ndim != 1 or t.shape[0] != n:
            raise ValueError(f"target must be an int or a length-{n} sequence of class indices, "
                             f"got shape {tuple(t.shape)} dtype {t.dtype}")
        t = t.long()
    if ((t < 0) | (t >= n_classes)).any():
        raise ValueError(f"target {t.tolist()} out of range for a model with {n_classes} outputs")
    return t


def _run(model: nn.Module, x: torch.Tensor, target: Target, composite, canonizers, epsilon: float,
         gamma: float, low, high, check_rules: bool):
    """Canonize, hook, forward, backward; returns (relevance, start per sample, targets)."""
    if not isinstance(x, torch.Tensor) or x.ndim < 3 or not x.is_floating_point():
        raise ValueError(f"x must be a float tensor (N, C, *spatial), got "
                         f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))}")
    conv = next((m for m in model.modules() if isinstance(m, ConvolutionStandard)), None)
    if conv is not None and x.ndim != len(conv.kernel_size) + 2:
        raise ValueError(f"x must be (N, C, *spatial) with {len(conv.kernel_size)} spatial dims for this model "
                         f"(its first conv is {type(conv).__name__}), got shape {tuple(x.shape)}")
    if isinstance(composite, str):
        if composite == "epsilon_gamma_box":
            dims = [0] + list(range(2, x.ndim))
            low = x.detach().amin(dim=dims, keepdim=True) if low is None else low
            high = x.detach().amax(dim=dims, keepdim=True) if high is None else high
        comp = make_composite(composite, epsilon=epsilon, gamma=gamma, low=low, high=high)
    elif isinstance(composite, Composite):
        comp = composite
    else:
        raise TypeError(f"composite must be one of {COMPOSITE_NAMES} or a zennit Composite, got {composite!r}")
    if canonizers == "auto":
        canonizers = default_canonizers()
    elif canonizers is None:
        canonizers = []
    elif isinstance(canonizers, str):
        raise ValueError(f"canonizers must be 'auto', None or a list of zennit Canonizers, got {canonizers!r}")

    modes = {m: m.training for m in model.modules()}
    applied: list[Canonizer] = []
    handles: list = []
    registered = False
    try:
        model.eval()  # LRP (and BN merging) is defined for the inference-time function
        with torch.no_grad():
            reference = model(x)
        if reference.ndim != 2:
            raise ValueError(f"model output must be (N, classes) logits, got {tuple(reference.shape)}")
        t = _targets(target, x.shape[0], reference.shape[1])
        for c in canonizers:
            applied += c.apply(model)
        before = _pre_hook_counts(model)
        comp.register(model)
        registered = True
        if check_rules:
            _check_rules(model, before)
        xr = x.detach().clone().requires_grad_(True)
        first = getattr(comp, "first_layer", None)
        seen: list[bool] = []
        if first is not None:  # ZBox bounds only make sense on the raw input
            handles.append(first.register_forward_pre_hook(
                lambda mod, inp: seen.append(inp[0].shape == xr.shape and torch.equal(inp[0], xr))))
        with torch.enable_grad():
            out = model(xr)
            if first is not None and seen != [True]:
                raise LRPRuleError(f"the first-layer (ZBox) rule sits on {type(first).__name__}, which did "
                                   "not receive the model input exactly once; use composite='epsilon_plus'")
            scale = reference.abs().max().clamp_min(1e-12)
            if not torch.allclose(out.detach(), reference, rtol=1e-4, atol=1e-4 * float(scale)):
                err = (out.detach() - reference).abs().max().item()
                raise LRPRuleError(f"canonized model computes different logits (max |Δ| = {err:.3g}): "
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
        for m, flag in modes.items():
            m.training = flag
    return rel.detach(), start.sum(dim=1), t


def _stats(rel: torch.Tensor, start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    flat = rel.flatten(1).double()
    s, a = flat.sum(1), flat.abs().sum(1)
    err = (s - start.double()).abs() / start.double().abs().clamp_min(1e-12)
    return s, a, err


def lrp(model: nn.Module, x: torch.Tensor, target: Target, *, composite: str | Composite = "epsilon_plus",
        canonizers: str | Sequence[Canonizer] | None = "auto", check: bool = True, tol: float = 0.05,
        epsilon: float = 1e-6, gamma: float = 0.25, low: torch.Tensor | float | None = None,
        high: torch.Tensor | float | None = None) -> torch.Tensor:
    """Input relevance R (N, C, *spatial), one map per input contrast, for logit ``target``.

    LRP (Bach et al. 2015) backpropagates R_start = one_hot(target) × logits (zennit's
    convention) with the rules of ``composite`` (module docstring) after ``canonizers``
    (``"auto"``: :func:`default_canonizers`; ``None``: none; or a list). With ``check=True``:
    raises :class:`LRPConservationError` when |Σ R − R_start| > tol·|R_start| for any sample or
    Σ|R| is not finite, and :class:`LRPRuleError` when a conv/linear/activation/norm/pool/Sum
    module has no rule or the canonized model's logits differ from the original's. The model is
    run in eval mode and left exactly as found (hooks, canonizers, modes), also on error.
    """
    rel, start, _ = _run(model, x, target, composite, canonizers, epsilon, gamma, low, high, check)
    if check:
        s, a, err = _stats(rel, start)
        bad = [i for i in range(len(s)) if not (torch.isfinite(a[i]) and err[i] <= tol)]
        if bad:
            detail = "; ".join(f"sample {i}: Σ input relevance {s[i].item():.6g} vs start {start[i].item():.6g} "
                               f"(rel. error {err[i].item():.3g}, Σ|R| {a[i].item():.6g})" for i in bad[:5])
            raise LRPConservationError(f"LRP does not conserve relevance (tol {tol}): {detail}")
    return rel


def lrp_conservation(model: nn.Module, x: torch.Tensor, target: Target, *,
                     composite: str | Composite = "epsilon_plus",
                     canonizers: str | Sequence[Canonizer] | None = "auto", epsilon: float = 1e-6,
                     gamma: float = 0.25, low=None, high=None) -> pd.DataFrame:
    """Conservation report, one row per sample: case_id, target, start (= target logit),
    sum_relevance Σ R, sum_abs_relevance Σ|R|, rel_error |Σ R − start| / |start|, composite.
    Never raises on non-conservation (it is the diagnostic); rule coverage is not enforced."""
    rel, start, t = _run(model, x, target, composite, canonizers, epsilon, gamma, low, high, False)
    s, a, err = _stats(rel, start)
    name = composite if isinstance(composite, str) else getattr(composite, "lrp_name", type(composite).__name__)
    return pd.DataFrame({
        "case_id": range(x.shape[0]), "target": t.tolist(), "start": start.double().tolist(),
        "sum_relevance": s.tolist(), "sum_abs_relevance": a.tolist(), "rel_error": err.tolist(),
        "composite": name,
    })
