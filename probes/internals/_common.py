"""What every hook-based instrument of ``probes.internals`` checks first: the model argument."""

from __future__ import annotations

from torch import nn

from probes.core.errors import InputTypeError
from probes.core.model import Output
from probes.hooks.registry import HookRegistry, as_registry


def registry_of(model: nn.Module | HookRegistry, output: Output = None, name: str = "model") -> HookRegistry:
    """``model`` as a :class:`HookRegistry`; anything but a module or a registry is an
    :class:`~probes.core.errors.InputTypeError` naming ``name``."""
    if not isinstance(model, (nn.Module, HookRegistry)):
        raise InputTypeError(name, type(model).__name__, "an nn.Module or a HookRegistry",
                             message=f"{name} must be an nn.Module or a HookRegistry, got {type(model).__name__}")
    return as_registry(model, output)
