"""The hook session behind ``HookRegistry``: the hooks of one capture or one patch block.

A session installs forward (pre-)hooks for its slots, counts module and block calls so that
indexed points (``name#k``) and anchors find their call, clones captures when the hook fires,
watches gradients with tensor hooks, applies patches (optionally under a spatial mask) and
removes every handle it registered.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Union

import torch
from torch import Tensor

from probes.core.errors import InputTypeError, ShapeError
from probes.core.resize import resize_mask
from probes.hooks.points import PointSpec, join_point

if TYPE_CHECKING:
    from probes.hooks.registry import HookRegistry

__all__ = ["PatchValue", "Session", "Slot"]

PatchValue = Union[Tensor, Callable[[Tensor], Tensor]]

@dataclass
class Slot:
    """One request (capture or patch) attached to a hook site."""

    spec: PointSpec
    index: int | None  # requested call index (block call for anchors); None = the only call
    explicit: bool
    value: PatchValue | None = None
    hidden: bool = False  # a helper slot: captured for a gradient, or an identity-skip delta
    record_as: str | None = None  # the user's point a helper slot works for

    @property
    def order(self) -> int:
        """Order at a shared site: identity-skip delta, then resid_sum, then resid."""
        return {"resid_sum": 1, "resid": 2}.get(self.spec.kind, 1) - (1 if self.record_as else 0)


@dataclass
class Session:
    """The hooks of one run_with_cache call or one patch block, and their per-forward state."""

    registry: "HookRegistry"
    mode: str  # "capture" | "patch"
    slots: list[Slot]
    grad: bool = False
    mask: Tensor | None = None
    handles: list = field(default_factory=list)
    acts: dict = field(default_factory=dict)
    grads: dict = field(default_factory=dict)
    calls: Counter = field(default_factory=Counter)
    block_local: dict = field(default_factory=dict)
    block_index: dict = field(default_factory=dict)
    block_input: dict = field(default_factory=dict)
    applied: set = field(default_factory=set)
    skipped: set = field(default_factory=set)
    _mask_cache: dict = field(default_factory=dict)

    # -- set-up and tear-down -------------------------------------------------------------
    def install(self) -> None:
        sites: dict[tuple[str, str], list[Slot]] = {}
        blocks: set[str] = set()
        identity_patched: set[str] = set()
        for slot in self.slots:
            if slot.spec.block is not None:
                blocks.add(slot.spec.block)
            if slot.spec.kind == "shortcut_identity" and self.mode == "patch":
                # An identity skip has no module: the patch adds (s' - s) where f + s is formed.
                sum_spec = self.registry._spec(join_point(slot.spec.block, "resid_sum"))
                slot = Slot(sum_spec, slot.index, slot.explicit, slot.value, hidden=True,
                             record_as=slot.spec.name)
                identity_patched.add(sum_spec.block)
            sites.setdefault((slot.spec.module, slot.spec.phase), []).append(slot)
        modules = self.registry._modules
        try:
            for block in sorted(blocks):
                self.handles.append(modules[block].register_forward_pre_hook(self._block_enter(block)))
            for (mod, phase), slots in sites.items():
                slots = sorted(slots, key=lambda s: s.order)
                if phase == "pre":
                    self.handles.append(modules[mod].register_forward_pre_hook(self._pre_hook(mod, slots)))
                else:
                    self.handles.append(modules[mod].register_forward_hook(self._fwd_hook(mod, slots)))
            for block in sorted(identity_patched):
                # registered last, so it sees the block input after any resid_pre patch
                self.handles.append(modules[block].register_forward_pre_hook(self._block_input(block)))
            if self.mode == "patch":
                root = self.registry.model
                self.handles.append(root.register_forward_pre_hook(lambda m, a: self.reset()))
                self.handles.append(root.register_forward_hook(lambda m, a, o: self.check_applied()))
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def reset(self) -> None:
        self.calls.clear()
        self.block_local.clear()
        self.block_index.clear()
        self.block_input.clear()
        self.applied.clear()

    def check_applied(self) -> None:
        """Every explicitly indexed patch must have fired: never a silently skipped patch."""
        fired = {name for name, _ in self.applied}
        for slot in self.slots:
            if slot.index is None and slot.spec.name not in fired:
                raise RuntimeError(f"patch point {slot.spec.name!r} did not run in this forward "
                                   f"(module {slot.spec.module!r} was never called)")
            if slot.index is not None and (slot.spec.name, slot.index) not in self.applied:
                raise RuntimeError(
                    f"patch point {slot.spec.name}#{slot.index} did not run in this forward "
                    f"(module {slot.spec.module!r} ran {self._count_of(slot)} time(s))")

    def _count_of(self, slot: Slot) -> int:
        mod = slot.spec.block if slot.spec.block is not None else slot.spec.module
        return self.calls[(mod, "pre")] or self.calls[(mod, "fwd")]

    # -- call bookkeeping -----------------------------------------------------------------
    def _block_enter(self, block: str):
        def hook(module, args):
            self.block_index[block] = self.calls[(block, "enter")]
            self.calls[(block, "enter")] += 1
            self.block_local[block] = Counter()
            return None
        return hook

    def _block_input(self, block: str):
        def hook(module, args):
            self.block_input[block] = args[0]
            return None
        return hook

    def _matches(self, slot: Slot, global_call: int, local_calls: dict) -> int | None:
        """The call index this firing has for ``slot``, or None when the slot does not apply."""
        spec = slot.spec
        if spec.block is not None:
            if spec.block_call is not None and local_calls.get(spec.block) != spec.block_call:
                return None
            call = self.block_index.get(spec.block, 0)
        else:
            call = global_call
        if slot.index is not None:
            return call if call == slot.index else None
        if call > 0 and self.mode == "patch":
            base = spec.block if spec.block is not None else spec.module
            raise RuntimeError(
                f"module {base!r} ran more than once in one forward, so {spec.name!r} is "
                f"ambiguous: patch '{spec.name}#0', '{spec.name}#1', ... instead")
        return call

    def _fire(self, mod: str, phase: str, slots: list[Slot], value: Tensor) -> Tensor | None:
        global_call = self.calls[(mod, phase)]
        self.calls[(mod, phase)] += 1
        local_calls = {}
        for slot in slots:
            b = slot.spec.block
            if b is not None and b not in local_calls and slot.spec.block_call is not None:
                counter = self.block_local.setdefault(b, Counter())
                local_calls[b] = counter[(mod, phase)]
        for b in local_calls:
            self.block_local[b][(mod, phase)] += 1
        if not isinstance(value, Tensor):
            names = [s.spec.name for s in slots if s.explicit]
            if names:
                raise TypeError(f"hook point(s) {names} on module {mod!r} carry a {type(value).__name__}, "
                                "not a tensor; only tensor inputs/outputs can be captured or patched")
            self.skipped.add(mod)  # selected by None/predicate: skip, and say so in cache.skipped
            return None
        out, changed, clone = value, False, None
        for slot in slots:
            call = self._matches(slot, global_call, local_calls)
            if call is None:
                continue
            if self.mode == "capture":
                if clone is None:
                    clone = value.detach().clone()
                self.acts[(slot.spec.name, call)] = (slot, clone)
                if self.grad:
                    self._watch_grad(slot, call, value)
            else:
                out = self._apply_patch(slot, out)
                changed = True
                self.applied.add((slot.record_as or slot.spec.name, call))
        return out if changed else None

    def _watch_grad(self, slot: Slot, call: int, tensor: Tensor) -> None:
        if not tensor.requires_grad:
            return
        key = (slot.spec.name, call)

        def store(g: Tensor) -> None:
            self.grads[key] = g.detach().clone()
        tensor.register_hook(store)

    # -- hooks ------------------------------------------------------------------------------
    def _pre_hook(self, mod: str, slots: list[Slot]):
        def hook(module, args):
            new = self._fire(mod, "pre", slots, args[0] if args else None)
            return None if new is None else (new, *args[1:])
        return hook

    def _fwd_hook(self, mod: str, slots: list[Slot]):
        pass_through = any(s.spec.kind in ("shortcut", "shortcut_identity") for s in slots)

        def hook(module, args, output):
            # nn.Identity returns its input object: a gradient hook on it would see every
            # consumer of x, not just this edge. A fresh tensor isolates the edge.
            if self.grad and pass_through and args and output is args[0]:
                output = output.clone()
                new = self._fire(mod, "fwd", slots, output)
                return output if new is None else new
            return self._fire(mod, "fwd", slots, output)
        return hook

    # -- patching -------------------------------------------------------------------------
    def _apply_patch(self, slot: Slot, act: Tensor) -> Tensor:
        spec = slot.spec
        if slot.record_as is not None:
            # identity skip: s(x) is the block input; add (s' - s) to f + s.
            s = self.block_input[spec.block]
            delta = self._resolve(spec, slot.value, s) - s
            return act + self._masked(spec, delta, torch.zeros_like(delta))
        new = self._resolve(spec, slot.value, act)
        return self._masked(spec, new, act)

    def _resolve(self, spec: PointSpec, value: PatchValue, act: Tensor) -> Tensor:
        if callable(value) and not isinstance(value, Tensor):
            new = value(act)
            if not isinstance(new, Tensor):
                raise InputTypeError(f"patches[{spec.name!r}]", type(new).__name__, "a tensor",
                                     message=f"patches[{spec.name!r}]: the patch function returned "
                                             f"{type(new).__name__}, not a tensor")
        else:
            new = value
        if new.shape != act.shape:
            if new.dim() == act.dim() and new.shape[0] == 1 and new.shape[1:] == act.shape[1:]:
                new = new.expand_as(act)
            else:
                raise ShapeError(f"patches[{spec.name!r}]", f"shape {tuple(new.shape)}",
                                 f"the activation's shape {tuple(act.shape)} (or batch 1)",
                                 message=f"patches[{spec.name!r}]: patch value has shape {tuple(new.shape)} but "
                                         f"the activation there has shape {tuple(act.shape)}")
        # A fresh tensor: a later in-place op (timm's `x += shortcut`) must not write into it.
        return new.to(device=act.device, dtype=act.dtype).clone()

    def _masked(self, spec: PointSpec, new: Tensor, old: Tensor) -> Tensor:
        if self.mask is None:
            return new
        spatial = tuple(old.shape[2:])
        k = len(spatial)
        m = self.mask
        # read the mask against this activation: (*spatial), (N, *spatial) or (N, 1, *spatial)
        if k == 0 or m.dim() not in (k, k + 1, k + 2) or (m.dim() == k + 2 and m.shape[1] != 1):
            raise ShapeError("mask", f"shape {tuple(m.shape)}", "(*spatial), (N, *spatial) or (N, 1, *spatial)",
                             message=f"mask of shape {tuple(m.shape)} does not fit point {spec.name!r} with "
                                     f"activation shape {tuple(old.shape)} ({k} spatial dims)")
        m = m.reshape((-1, 1) + tuple(m.shape[m.dim() - k:]))
        if m.shape[0] not in (1, old.shape[0]):
            raise ShapeError("mask", f"batch {m.shape[0]}", f"batch 1 or {old.shape[0]}",
                             message=f"mask batch {m.shape[0]} does not match batch {old.shape[0]} at "
                                     f"point {spec.name!r}")
        key = (spatial, old.device)
        if key not in self._mask_cache:
            self._mask_cache[key] = resize_mask(m, spatial, mode="nearest").to(old.device)
        return torch.where(self._mask_cache[key], new, old)
