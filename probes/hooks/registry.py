"""Named hook points on any ``nn.Module``: capture, gradients and patching that always clean up.

``HookRegistry(model)`` names a point for every submodule (its module path, e.g.
``layer1.0.conv1``) and, for every residual block an adapter recognises (see
``probes.adapters``), five anchors:

=====================  =================================================================
``<block>.resid_pre``  the block input x
``<block>.local``      f(x): the residual branch output, before the skip add
``<block>.shortcut``   s(x): the projection output, or x for an identity skip
``<block>.resid_sum``  f(x) + s(x), before the block's final activation
``<block>.resid``      the block output act(f(x) + s(x))
=====================  =================================================================

A module that runs more than once in one forward has one point per call, ``name#0``,
``name#1``...; asking for the plain name of such a module raises instead of merging calls.

Design (after TransformerLens' ``hook_points.py``): hooks live only inside a context — a
``run_with_cache`` call or a ``patch`` block — and are removed on exit, on success or error;
only this registry's own handles are removed.  Every capture is a clone, taken when the hook
fires, because timm blocks add the skip *in place* into the branch output (see
``docs/peers.md``).  Gradients come from tensor hooks registered as the forward runs:
PyTorch gives such a hook the gradient w.r.t. the value *before* any later in-place change.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence, Union

import torch
from torch import Tensor, nn

from probes.core.model import AuditAdapter, Output, as_audit_model, class_probabilities
from probes.core.resize import resize_mask
from probes.hooks.adapters import BlockAdapter, find_adapter
from probes.hooks.points import ActivationCache, PointSpec, join_point, unknown_point

if TYPE_CHECKING:
    from probes.hooks.verify import VerifyReport

__all__ = ["HookRegistry", "ActivationCache", "ANCHORS", "PointSpec", "as_registry"]

ANCHORS = ("resid_pre", "local", "shortcut", "resid_sum", "resid")
PatchValue = Union[Tensor, Callable[[Tensor], Tensor]]
Points = Union[None, str, Sequence[str], Callable[[str], bool]]
_INDEXED = re.compile(r"^(?P<base>.+)#(?P<k>\d+)$")


@dataclass
class _Block:
    name: str
    adapter: BlockAdapter
    branch: str
    shortcut: str | None  # None: identity skip without a module
    act: str | None


@dataclass
class _Slot:
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
class _Session:
    """The hooks of one run_with_cache call or one patch block, and their per-forward state."""

    registry: "HookRegistry"
    mode: str  # "capture" | "patch"
    slots: list[_Slot]
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
        sites: dict[tuple[str, str], list[_Slot]] = {}
        blocks: set[str] = set()
        identity_patched: set[str] = set()
        for slot in self.slots:
            if slot.spec.block is not None:
                blocks.add(slot.spec.block)
            if slot.spec.kind == "shortcut_identity" and self.mode == "patch":
                # An identity skip has no module: the patch adds (s' - s) where f + s is formed.
                sum_spec = self.registry._spec(join_point(slot.spec.block, "resid_sum"))
                slot = _Slot(sum_spec, slot.index, slot.explicit, slot.value, hidden=True,
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

    def _count_of(self, slot: _Slot) -> int:
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

    def _matches(self, slot: _Slot, global_call: int, local_calls: dict) -> int | None:
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

    def _fire(self, mod: str, phase: str, slots: list[_Slot], value: Tensor) -> Tensor | None:
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

    def _watch_grad(self, slot: _Slot, call: int, tensor: Tensor) -> None:
        if not tensor.requires_grad:
            return
        key = (slot.spec.name, call)

        def store(g: Tensor) -> None:
            self.grads[key] = g.detach().clone()
        tensor.register_hook(store)

    # -- hooks ------------------------------------------------------------------------------
    def _pre_hook(self, mod: str, slots: list[_Slot]):
        def hook(module, args):
            new = self._fire(mod, "pre", slots, args[0] if args else None)
            return None if new is None else (new, *args[1:])
        return hook

    def _fwd_hook(self, mod: str, slots: list[_Slot]):
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
    def _apply_patch(self, slot: _Slot, act: Tensor) -> Tensor:
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
                raise TypeError(f"patch function for {spec.name!r} returned {type(new).__name__}, not a tensor")
        else:
            new = value
        if new.shape != act.shape:
            if new.dim() == act.dim() and new.shape[0] == 1 and new.shape[1:] == act.shape[1:]:
                new = new.expand_as(act)
            else:
                raise ValueError(f"patch value for {spec.name!r} has shape {tuple(new.shape)} but the "
                                 f"activation there has shape {tuple(act.shape)}")
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
            raise ValueError(f"mask of shape {tuple(m.shape)} does not fit point {spec.name!r} with "
                             f"activation shape {tuple(old.shape)} ({k} spatial dims)")
        m = m.reshape((-1, 1) + tuple(m.shape[m.dim() - k:]))
        if m.shape[0] not in (1, old.shape[0]):
            raise ValueError(f"mask batch {m.shape[0]} does not match batch {old.shape[0]} at "
                             f"point {spec.name!r}")
        key = (spatial, old.device)
        if key not in self._mask_cache:
            self._mask_cache[key] = resize_mask(m, spatial, mode="nearest").to(old.device)
        return torch.where(self._mask_cache[key], new, old)


class HookRegistry:
    """Named hook points for every module of ``model`` plus five anchors per residual block.

    Args:
        model: any ``nn.Module`` (timm, torchvision, MONAI, onnx2torch ``GraphModule``...).
            Its declared interface (``model.medaudit_interface``: input layout, output kind) is
            honoured: ``forward(x)`` takes channels-first ``x`` and returns logit-like scores
            (``probes.core.as_audit_model``), while points keep the model's own module names.
        adapters: extra ``{block class or qualified name: BlockAdapter}`` for this registry
            only (see ``probes.hooks.register_adapter`` for a global registration).
        output: override of the declared output kind (``"logits"``, ``"probabilities"``,
            ``"log_probabilities"`` or a callable returning probabilities).

    Attributes:
        model: the hooked model (an ``AuditAdapter`` given here is unwrapped).
        net: what the registry runs: ``model`` itself, or an ``AuditAdapter`` around it.
        points: every point name, in module order (anchors follow their block).
        blocks: names of the residual blocks found.
    """

    def __init__(self, model: nn.Module, adapters: Mapping[type | str, BlockAdapter] | None = None, *,
                 output: Output = None):
        self.net = as_audit_model(model, output)
        self.model = model.model if isinstance(model, AuditAdapter) else model
        self.adapters = dict(adapters or {})
        model = self.model
        extra = {(k if isinstance(k, str) else f"{k.__module__}.{k.__qualname__}"): v
                 for k, v in (adapters or {}).items()}
        self._modules: dict[str, nn.Module] = dict(model.named_modules())
        self._specs: dict[str, PointSpec] = {}
        self._blocks: dict[str, _Block] = {}
        for name, module in self._modules.items():
            if name:
                self._add(PointSpec(name, name, "fwd"))
            adapter = find_adapter(module, extra)
            if adapter is not None and adapter.is_residual(module):
                self._add_block(name, module, adapter)
        self.points: list[str] = list(self._specs)
        self.blocks: list[str] = list(self._blocks)

    def _add(self, spec: PointSpec) -> None:
        prev = self._specs.get(spec.name)
        if prev is not None and (prev.module, prev.phase) == (spec.module, spec.phase) and "module" in (
                prev.kind, spec.kind):
            # timm ByobNet names its projection module `shortcut`: module point and anchor are
            # the same tensor, so the name keeps the anchor's meaning (it knows its block).
            if spec.kind != "module":
                self._specs[spec.name] = spec
            return
        if prev is not None:
            raise ValueError(f"hook point {spec.name!r} is defined twice (a module named like an anchor?)")
        self._specs[spec.name] = spec

    def _add_block(self, name: str, module: nn.Module, adapter: BlockAdapter) -> None:
        branch = join_point(name, adapter.branch_module(module))
        proj = getattr(module, adapter.shortcut, None)
        shortcut = join_point(name, adapter.shortcut) if proj is not None else None
        act = join_point(name, adapter.act) if adapter.act is not None else None
        for mod in (branch, shortcut, act):
            if mod is not None and mod not in self._modules:
                raise ValueError(f"adapter {adapter.name!r}: {mod!r} is not a module of block {name!r}")
        self._blocks[name] = _Block(name, adapter, branch, shortcut, act)
        a = lambda anchor: join_point(name, anchor)  # noqa: E731
        self._add(PointSpec(a("resid_pre"), name, "pre", "resid_pre", name))
        self._add(PointSpec(a("local"), branch, "fwd", "local", name, 0))
        if shortcut is not None:
            self._add(PointSpec(a("shortcut"), shortcut, "fwd", "shortcut", name, 0))
        else:
            self._add(PointSpec(a("shortcut"), name, "pre", "shortcut_identity", name))
        if act is not None:
            self._add(PointSpec(a("resid_sum"), act, "pre", "resid_sum", name, adapter.act_call))
        else:
            self._add(PointSpec(a("resid_sum"), name, "fwd", "resid_sum", name))
        self._add(PointSpec(a("resid"), name, "fwd", "resid", name))

    def forward(self, x: Tensor) -> Tensor:
        """Logit-like scores for channels-first ``x`` (the model's declared interface applied)."""
        return self.net(x)

    __call__ = forward

    def probabilities(self, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """Class probabilities ``(N, K)`` for channels-first ``x`` (softmax of logits, or as declared)."""
        return class_probabilities(self.net, x, dtype)

    # -- lookup ---------------------------------------------------------------------------
    def _spec(self, name: str) -> PointSpec:
        if name not in self._specs:
            raise unknown_point(name, self.points)
        return self._specs[name]

    def point_info(self, name: str) -> PointSpec:
        """Where point ``name`` (optionally ``#k``) is hooked: module, phase, kind, block."""
        m = _INDEXED.match(name)
        return self._spec(m["base"] if m and m["base"] in self._specs else name)

    def block_of(self, name: str) -> _Block:
        """The block record (adapter, branch/shortcut/act module names) of block ``name``."""
        if name not in self._blocks:
            raise unknown_point(name, self.blocks)
        return self._blocks[name]

    def anchors(self, block: str) -> list[str]:
        """The five anchor names of ``block``."""
        self.block_of(block)
        return [join_point(block, a) for a in ANCHORS]

    def _resolve_points(self, points: Points) -> list[_Slot]:
        """Validate every name before any hook exists (unknown → KeyError with close matches)."""
        if points is None:
            return [_Slot(self._specs[p], None, False) for p in self.points]
        if callable(points) and not isinstance(points, str):
            return [_Slot(self._specs[p], None, False) for p in self.points if points(p)]
        if isinstance(points, str):
            points = [points]
        return [self._slot(p, explicit=True) for p in points]

    def _slot(self, name: str, explicit: bool, value: PatchValue | None = None) -> _Slot:
        if name in self._specs:
            return _Slot(self._specs[name], None, explicit, value)
        m = _INDEXED.match(name)
        if m is None or m["base"] not in self._specs:
            raise unknown_point(name, self.points)
        return _Slot(self._specs[m["base"]], int(m["k"]), explicit, value)

    def hook_counts(self) -> dict[str, int]:
        """Number of forward/pre/backward hooks on every module (for checking clean-up)."""
        return {n: len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                + len(getattr(m, "_backward_pre_hooks", {})) for n, m in self._modules.items()}

    # -- capture ----------------------------------------------------------------------------
    def run_with_cache(self, x: Tensor, points: Points = None, *, grad: bool = False,
                       target: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, ActivationCache]:
        """Run ``model(x)`` and return ``(output, cache)`` holding clones of the requested points.

        Args:
            x: model input, ``(N, C, H, W)`` or ``(N, C, D, H, W)``.
            points: ``None`` (all points), a name, a list of names (``name#k`` selects the k-th
                call of a module that runs several times), or a predicate on names.
            grad: also fill ``cache.grads[point]`` = ∂ target(output) / ∂ point, for all
                points from a single ``torch.autograd.grad`` call (parameter ``.grad`` is not
                touched). For an identity skip, ∂/∂ shortcut is ∂/∂ resid_sum (the edge's own
                gradient), while ∂/∂ resid_pre is the total gradient of the block input.
            target: maps the output to a scalar, e.g. ``lambda out: out[:, 1].sum()``.

        A module that runs several times is stored as ``name#0``, ``name#1``... when selected by
        ``None``/predicate; asked for by its plain name it raises ``RuntimeError``.
        """
        slots = self._resolve_points(points)
        if grad:
            for s in list(slots):
                if s.spec.kind == "shortcut_identity":  # its gradient is resid_sum's
                    slots.append(_Slot(self._spec(join_point(s.spec.block, "resid_sum")), s.index, False, hidden=True))
        _warn_training(self.model)
        if isinstance(self.net, AuditAdapter):
            self.net.prepare(x)  # its one-time probe forward must not fire the capture hooks
        session = _Session(self, "capture", slots, grad=grad)
        session.install()
        try:
            if grad:
                x_in = x.detach().clone().requires_grad_(True)
                with torch.enable_grad():
                    out = self.net(x_in)
                    scalar = _scalar_target(out, target)
                    torch.autograd.grad(scalar, [x_in], allow_unused=True)
                out = _detach(out)
            else:
                with torch.no_grad():
                    out = self.net(x)
        finally:
            session.remove()
        return out, self._collect(session, grad)

    def _collect(self, session: _Session, grad: bool) -> ActivationCache:
        counts: Counter = Counter()
        for (name, call) in session.acts:
            counts[name] = max(counts[name], call + 1)
        acts: dict[str, Tensor] = {}
        grads: dict[str, Tensor] = {}
        for (name, call), (slot, t) in session.acts.items():
            if slot.hidden and not any(s.spec.name == name and not s.hidden for s in session.slots):
                continue
            if slot.index is None and counts[name] > 1:
                if slot.explicit:
                    raise RuntimeError(
                        f"point {name!r} ran {counts[name]} times in one forward; ask for "
                        f"{', '.join(f'{name}#{k}' for k in range(counts[name]))} instead")
                key = f"{name}#{call}"
            else:
                key = name if slot.index is None else f"{name}#{call}"
            acts[key] = t
            if grad:
                g = session.grads.get((name, call))
                if slot.spec.kind == "shortcut_identity":
                    g = session.grads.get((join_point(slot.spec.block, "resid_sum"), call))
                # a point the target does not depend on has a zero gradient
                grads[key] = g if g is not None else torch.zeros_like(t)
        for slot in session.slots:
            if slot.explicit and not slot.hidden:
                want = slot.spec.name if slot.index is None else f"{slot.spec.name}#{slot.index}"
                if want not in acts:
                    raise RuntimeError(f"point {want!r} did not run in this forward "
                                       f"(module {slot.spec.module!r})")
        calls = {m: c for (m, phase), c in session.calls.items() if phase != "enter"}
        return ActivationCache(acts, grads, calls, frozenset(session.skipped))

    # -- patching ---------------------------------------------------------------------------
    @contextmanager
    def patch(self, patches: Mapping[str, PatchValue], mask: Tensor | None = None) -> Iterator["HookRegistry"]:
        """Within the block, forwards of the model use ``patches`` in place of activations.

        Args:
            patches: ``{point: tensor | fn}``; a tensor replaces the activation (same shape, or
                batch 1 broadcast), ``fn(activation) -> tensor`` edits it. Patching an identity
                ``.shortcut`` adds (s' − s) to f(x)+s(x).
            mask: optional spatial boolean map, ``(*spatial)``, ``(N, *spatial)`` or
                ``(N, 1, *spatial)`` at any resolution; it is resized (nearest) to each feature
                map and only positions inside it are replaced: ``where(mask, new, old)``.

        Unknown names raise ``KeyError`` before any hook is registered; hooks are removed on
        exit, also when the body raises.
        """
        slots = [self._slot(p, explicit=True, value=v) for p, v in patches.items()]
        for s in slots:
            if not (callable(s.value) or isinstance(s.value, Tensor)):
                raise TypeError(f"patch for {s.spec.name!r} must be a tensor or a callable, "
                                f"got {type(s.value).__name__}")
        session = _Session(self, "patch", slots, mask=_as_mask(mask))
        session.install()
        try:
            yield self
        finally:
            session.remove()

    def verify(self, x: Tensor, atol: float = 1e-5, grad: bool = True) -> "VerifyReport":
        """Self-checks per block (a ``VerifyReport``); see ``probes.hooks.verify.verify_registry``."""
        from probes.hooks.verify import verify_registry

        return verify_registry(self, x, atol=atol, grad=grad)


def _scalar_target(out: Tensor, target: Callable[[Tensor], Tensor] | None) -> Tensor:
    value = target(out) if target is not None else out  # target may index tuple/dict outputs
    if not isinstance(value, Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"grad=True needs target(output) to be a scalar tensor; got {shape} "
                         "(e.g. target=lambda out: out[:, 1].sum())")
    return value.reshape(())


def _detach(out):
    """Detach a tensor or a (nested) tuple/list/dict of tensors (multi-output models)."""
    from torch.utils._pytree import tree_map

    return tree_map(lambda t: t.detach() if isinstance(t, Tensor) else t, out)


def _as_mask(mask) -> Tensor | None:
    if mask is None:
        return None
    m = torch.as_tensor(mask)
    if m.dtype != torch.bool:
        uniq = torch.unique(m)
        if not bool(((uniq == 0) | (uniq == 1)).all()):
            raise ValueError(f"mask must be boolean (or 0/1); got dtype {m.dtype} with values {uniq[:5].tolist()}")
        m = m.bool()
    if m.dim() < 1:
        raise ValueError(f"mask must have spatial dimensions, got shape {tuple(m.shape)}")
    return m  # interpreted per activation in _Session._masked


def _warn_training(model: nn.Module) -> None:
    if model.training:
        warnings.warn("model is in training mode: dropout is active and BatchNorm running statistics "
                      "will update during this forward; call model.eval() to audit the deployed model",
                      stacklevel=3)


def as_registry(model: "nn.Module | HookRegistry", output: Output = None) -> HookRegistry:
    """``model`` as a :class:`HookRegistry`: a registry is reused (rebuilt only to apply an
    ``output`` override), a module gets a new one. Every hook-based instrument starts here."""
    if isinstance(model, HookRegistry):
        return model if output is None else HookRegistry(model.model, model.adapters, output=output)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module or a HookRegistry, got {type(model).__name__}")
    return HookRegistry(model, output=output)
