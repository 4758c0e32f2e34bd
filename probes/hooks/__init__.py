"""Named hook points on any ``nn.Module``: capture, gradients and patching that always clean up."""

from probes.hooks.adapters import ADAPTERS, BlockAdapter, find_adapter, register_adapter
from probes.hooks.points import ActivationCache, PointSpec
from probes.hooks.registry import ANCHORS, HookRegistry, as_registry
from probes.hooks.verify import VerifyReport, verify_registry

__all__ = ["HookRegistry", "ActivationCache", "ANCHORS", "PointSpec", "BlockAdapter", "register_adapter",
           "find_adapter", "ADAPTERS", "as_registry", "VerifyReport", "verify_registry"]
