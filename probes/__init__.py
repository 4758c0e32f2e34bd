"""Instruments that look inside a model or at its explanations (pure functions over tensors)."""

from probes.hooks.adapters import BlockAdapter, register_adapter
from probes.hooks.registry import ActivationCache, HookRegistry
from probes.core.model import ModelSnapshot

__all__ = ["HookRegistry", "ActivationCache", "BlockAdapter", "register_adapter", "ModelSnapshot"]
