"""Private model copies for the attribution methods that hook activation modules.

Captum's DeepLift, GuidedBackprop, Deconvolution and GuidedGradCam put hooks on activation
modules. In-place activations (timm's ``ReLU(inplace=True)``) make the hooked input and output
the same tensor, and a module called twice in one forward (MONAI's ``ResNetBlock.act``) makes
DeepLift keep only the last call's input. These methods therefore run on a
``copy.deepcopy(model)`` in eval mode whose ``inplace`` flags are off and whose reused
activation modules are split into one copy per call; the caller's model is never touched.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor, nn

__all__ = ["activation_types", "warn_unhooked", "working_copy"]


class _PerCall(nn.Module):
    """Routes the k-th call within one forward to its own copy of a reused module."""

    def __init__(self, module: nn.Module, n: int):
        super().__init__()
        self.copies = nn.ModuleList(copy.deepcopy(module) for _ in range(n))
        self.calls = 0

    def forward(self, *args, **kwargs):
        m = self.copies[self.calls % len(self.copies)]
        self.calls += 1
        return m(*args, **kwargs)


def activation_types() -> tuple[type, ...]:
    """The non-linearities Captum's DeepLift has rules for, plus common modern activations."""
    from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR
    return tuple(SUPPORTED_NON_LINEAR) + (nn.SiLU, nn.GELU, nn.Mish, nn.Hardswish, nn.ReLU6)


def _split_reused(model: nn.Module, x: Tensor) -> None:
    """Count calls per activation module in one forward; wrap the reused ones in ``_PerCall``."""
    acts = [m for m in model.modules() if isinstance(m, activation_types())]
    counts: dict[int, int] = {}
    handles = [m.register_forward_pre_hook(
        lambda mod, a: counts.__setitem__(id(mod), counts.get(id(mod), 0) + 1)) for m in acts]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    wrappers = {id(m): _PerCall(m, counts[id(m)]) for m in acts if counts.get(id(m), 0) > 1}
    if not wrappers:
        return
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if child is not None and id(child) in wrappers:
                parent._modules[name] = wrappers[id(child)]

    def reset(mod, args):
        for w in wrappers.values():
            w.calls = 0
    model.register_forward_pre_hook(reset)


def working_copy(model: nn.Module, x: Tensor, split_reused: bool) -> nn.Module:
    """An eval-mode deep copy with every ``inplace`` flag off; with ``split_reused``, reused
    activation modules get one copy per call (module docstring). One no-grad forward of
    ``x[:1]`` runs on the copy, so lazy set-up (an adapter's softmax search) happens unhooked."""
    work = copy.deepcopy(model).eval()
    for m in work.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False
    if split_reused:
        _split_reused(work, x)
    else:
        with torch.no_grad():
            work(x[:1])
    return work


def warn_unhooked(model: nn.Module, method: str, rule: str, hooked: tuple[type, ...]) -> None:
    """Warn when activations the method's ``rule`` ignores are present (they pass plain gradients)."""
    others: dict[str, int] = {}
    for m in model.modules():
        if isinstance(m, activation_types()) and not isinstance(m, hooked) and not isinstance(
                m, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.Softmax)):
            others[type(m).__name__] = others.get(type(m).__name__, 0) + 1
    if others:
        names = ", ".join(f"{k} x{v}" for k, v in sorted(others.items()))
        warnings.warn(f"{method}: Captum applies {rule} only at {', '.join(t.__name__ for t in hooked)} "
                      f"modules; this model's {names} pass plain gradients, so the map degrades "
                      "toward a plain gradient map", UserWarning, stacklevel=4)
