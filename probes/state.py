"""A snapshot of everything an audit must leave as found: weights, buffers, modes, hooks.

``ModelSnapshot.take(model)`` before, ``snapshot.diff(model)`` after: an empty list means the
model is unchanged (every parameter and buffer bit-identical, each module's ``training``
flag, each parameter's ``requires_grad`` and ``.grad`` presence, and hook counts).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ModelSnapshot"]


def _hook_count(m: nn.Module) -> int:
    return (len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
            + len(getattr(m, "_backward_pre_hooks", {})))


@dataclass(frozen=True)
class ModelSnapshot:
    """Copies of the state a probe must not change (see module docstring)."""

    tensors: dict[str, torch.Tensor]
    training: dict[str, bool]
    requires_grad: dict[str, bool]
    has_grad: dict[str, bool]
    hooks: dict[str, int]

    @classmethod
    def take(cls, model: nn.Module) -> "ModelSnapshot":
        """Copy parameters and buffers (``state_dict(keep_vars=False)`` clones) and flags."""
        tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return cls(
            tensors=tensors,
            training={n: m.training for n, m in model.named_modules()},
            requires_grad={n: p.requires_grad for n, p in model.named_parameters()},
            has_grad={n: p.grad is not None for n, p in model.named_parameters()},
            hooks={n: _hook_count(m) for n, m in model.named_modules()},
        )

    def diff(self, model: nn.Module) -> list[str]:
        """Human-readable differences between this snapshot and ``model`` now (empty: none)."""
        now = ModelSnapshot.take(model)
        out: list[str] = []
        for k, v in self.tensors.items():
            w = now.tensors.get(k)
            if w is None or w.shape != v.shape or not torch.equal(w, v):
                out.append(f"tensor {k!r} changed")
        for field in ("training", "requires_grad", "has_grad", "hooks"):
            a, b = getattr(self, field), getattr(now, field)
            for k in a.keys() | b.keys():
                if a.get(k) != b.get(k):
                    out.append(f"{field} of {k!r}: {a.get(k)} -> {b.get(k)}")
        return out
