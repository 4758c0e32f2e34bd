"""Canonizers that make zennit's LRP conserve relevance on timm and MONAI residual networks.

zennit 0.5.1 (Anders et al. 2021) only knows torchvision's residual blocks: on a timm ResNet its
``ResNetCanonizer`` matches nothing, so relevance is counted once per path at every skip (Σ R ≈
255 × the logit on resnet18). The canonizers here make the structure LRP needs explicit:

- ``TimmResNetCanonizer`` / ``TimmByobNetCanonizer`` / ``MonaiResNetCanonizer`` route each
  block's skip add ``f(x) + s(x)`` through a zennit ``Sum`` module, so the Norm rule splits the
  relevance between the two paths. ``TimmSECanonizer`` makes squeeze-excitation gates pass
  relevance to the gated features only.
- ``MergeBatchNormAct`` merges every batch norm that follows a conv/linear (in module order)
  into it, *including* timm's fused ``BatchNormAct2d`` (which zennit's
  ``SequentialMergeBatchNorm`` skips because it is not a leaf). A merged BN is part of the
  linear map the conv rule sees (the canonical LRP treatment); unmerged BNs get ``Pass``.

Every canonizer is removed after use and restores the model bit-identically.
"""

from __future__ import annotations

import itertools
import types
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from zennit.canonizers import Canonizer, MergeBatchNorm
from zennit.layer import Sum
from zennit.types import ConvolutionStandard

from probes.core.model import UnsupportedModelError

__all__ = [
    "BATCH_NORM",
    "LRPConservationError",
    "LRPError",
    "LRPRuleError",
    "MergeBatchNormAct",
    "MonaiResNetCanonizer",
    "TimmByobNetCanonizer",
    "TimmResNetCanonizer",
    "TimmSECanonizer",
    "default_canonizers",
    "register_copies",
    "relevance_units",
]

BATCH_NORM = nn.modules.batchnorm._BatchNorm


class LRPError(RuntimeError):
    """Base class of the loud failures raised instead of silently wrong relevance."""


class LRPConservationError(LRPError):
    """Σ input relevance differs from the start relevance (the target logit) beyond ``tol``."""


class LRPRuleError(LRPError, UnsupportedModelError):
    """A module that transforms relevance got no rule, or the canonizers changed the model:
    LRP cannot run on this model as it is (also an ``UnsupportedModelError``)."""


def register_copies(canonizer: Canonizer, registrations: Sequence[tuple]) -> list[Canonizer]:
    """Register one copy of ``canonizer`` per argument tuple of ``registrations``; returns the
    registered copies. On an error, the copies already registered are removed first."""
    instances: list[Canonizer] = []
    try:
        for args in registrations:
            inst = canonizer.copy()
            inst.register(*args)
            instances.append(inst)
    except Exception:
        for inst in reversed(instances):
            inst.remove()
        raise
    return instances


# Block canonizers: swap a block instance's ``forward`` for one whose skip add goes through ``Sum``.
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
        return register_copies(self, [(m,) for m in root_module.modules() if self.matches(m)])

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


def relevance_units(module: nn.Module) -> Iterator[nn.Module]:
    """Leaves in registration order, except that a batch norm (also timm's non-leaf
    ``BatchNormAct2d``) is one unit and its children are skipped."""
    if isinstance(module, BATCH_NORM) or not module._modules:
        yield module
        return
    for child in module.children():
        yield from relevance_units(child)


class MergeBatchNormAct(MergeBatchNorm):
    """Merge every batch norm that directly follows a conv/linear (module order) into it, incl.
    timm ``BatchNormAct2d`` and ``BatchNorm3d``; the merged BN computes the identity exactly
    (running_var = 1 − eps, unlike zennit's 1, which scales by 1/√(1+eps) per BN).
    ``remove`` restores every parameter and buffer bit-identically (zennit ``MergeBatchNorm``)."""

    def apply(self, root_module: nn.Module) -> list[Canonizer]:
        """Merge all (conv/linear, BN) neighbours; returns the registered instances."""
        pairs = [((prev,), cur) for prev, cur in itertools.pairwise(relevance_units(root_module))
                 if isinstance(prev, (ConvolutionStandard, nn.Linear)) and isinstance(cur, BATCH_NORM)
                 and cur.running_mean is not None and cur.weight is not None
                 and prev.weight.shape[0] == cur.num_features]
        return register_copies(self, pairs)

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
