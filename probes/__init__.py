"""Instruments that look inside a model or at its explanations (pure functions over tensors)."""

from .adapters import BlockAdapter, register_adapter
from .hooks import ActivationCache, HookRegistry
from .state import ModelSnapshot

__all__ = ["HookRegistry", "ActivationCache", "BlockAdapter", "register_adapter", "ModelSnapshot"]
