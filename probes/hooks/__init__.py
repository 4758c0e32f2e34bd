"""Named hook points on any ``nn.Module``: capture, gradients and patching that always clean up."""

from probes.hooks.adapters import ADAPTERS, BlockAdapter, find_adapter, register_adapter
from probes.hooks.points import ActivationCache, PointSpec
from probes.hooks.registry import ANCHORS, HookRegistry

__all__ = ["HookRegistry", "ActivationCache", "ANCHORS", "PointSpec", "BlockAdapter", "register_adapter",
           "find_adapter", "ADAPTERS"]
