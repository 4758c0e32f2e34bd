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
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping, Sequence, Union

import torch
from torch import Tensor, nn

from probes.core.errors import InputTypeError, LabelError, ShapeError
from probes.core.model import AuditAdapter, Output, as_audit_model, class_probabilities, model_state
from probes.core.validate import as_input, check_finite, to_numpy
from probes.hooks.adapters import BlockAdapter, find_adapter
from probes.hooks.points import ActivationCache, PointSpec, join_point, unknown_point
from probes.hooks.session import PatchValue, Session, Slot

if TYPE_CHECKING:
    from probes.hooks.verify import VerifyReport

__all__ = ["HookRegistry", "ActivationCache", "ANCHORS", "PointSpec", "as_registry"]

ANCHORS = ("resid_pre", "local", "shortcut", "resid_sum", "resid")
Points = Union[None, str, Sequence[str], Callable[[str], bool]]
_INDEXED = re.compile(r"^(?P<base>.+)#(?P<k>\d+)$")


@dataclass
class _Block:
    name: str
    adapter: BlockAdapter
    branch: str
    shortcut: str | None  # None: identity skip without a module
    act: str | None


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
        if not isinstance(model, nn.Module):
            raise InputTypeError("model", type(model).__name__, "an nn.Module")
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
        """Logit-like scores for channels-first ``x`` (the model's declared interface applied).

        The model runs in eval mode (a warning when it was in training mode), restored after.
        """
        x = self._input(x)
        with model_state(self.model, warn="HookRegistry.forward"):
            return self.net(x)

    __call__ = forward

    def probabilities(self, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """Class probabilities ``(N, K)`` for channels-first ``x`` (softmax of logits, or as declared)."""
        x = self._input(x)
        with model_state(self.model, warn="HookRegistry.probabilities"):
            return class_probabilities(self.net, x, dtype)

    def _input(self, x: Tensor, name: str = "x") -> Tensor:
        """``x`` checked at the door: an image batch (N, C, *spatial) by ``as_input`` (dtype cast to
        the model's, channels against its first convolution, finite); a (N, F) or (N,) tensor of a
        non-image model only for being finite and non-empty."""
        if isinstance(x, Tensor) and x.dim() in (1, 2) and x.is_floating_point():
            if x.shape[0] == 0:
                raise ShapeError(name, f"shape {tuple(x.shape)}", "N >= 1 cases")
            check_finite(x, name)
            return x
        # one memory layout: channels-last storage would run other kernels and change the last bits
        return as_input(x, name, model=self.model).contiguous()

    # -- lookup ---------------------------------------------------------------------------
    def _spec(self, name: str) -> PointSpec:
        if name not in self._specs:
            raise unknown_point(name, self.points)
        return self._specs[name]

    def point_info(self, name: str, *, arg: str = "name") -> PointSpec:
        """Where point ``name`` (optionally ``#k``) is hooked: module, phase, kind, block.

        An unknown name raises ``UnknownPointError`` (a ``KeyError``) naming ``arg``.
        """
        _check_name(name, arg)
        m = _INDEXED.match(name)
        base = m["base"] if m and m["base"] in self._specs else name
        if base not in self._specs:
            raise unknown_point(name, self.points, arg)
        return self._specs[base]

    def block_of(self, name: str, *, arg: str = "name") -> _Block:
        """The block record (adapter, branch/shortcut/act module names) of block ``name``."""
        _check_name(name, arg)
        if name not in self._blocks:
            raise unknown_point(name, self.blocks, arg)
        return self._blocks[name]

    def anchors(self, block: str) -> list[str]:
        """The five anchor names of ``block``."""
        self.block_of(block, arg="block")
        return [join_point(block, a) for a in ANCHORS]

    def _resolve_points(self, points: Points) -> list[Slot]:
        """Validate every name before any hook exists (unknown → KeyError with close matches)."""
        if points is None:
            return [Slot(self._specs[p], None, False) for p in self.points]
        if callable(points) and not isinstance(points, str):
            return [Slot(self._specs[p], None, False) for p in self.points if points(p)]
        if isinstance(points, str):
            points = [points]
        if not isinstance(points, Iterable) or isinstance(points, Mapping):
            raise InputTypeError("points", type(points).__name__, "None, a name, a list of names or a predicate")
        return [self._slot(p, explicit=True) for p in points]

    def _slot(self, name: str, explicit: bool, value: PatchValue | None = None, arg: str = "points") -> Slot:
        _check_name(name, arg)
        if name in self._specs:
            return Slot(self._specs[name], None, explicit, value)
        m = _INDEXED.match(name)
        if m is None or m["base"] not in self._specs:
            raise unknown_point(name, self.points, arg)
        return Slot(self._specs[m["base"]], int(m["k"]), explicit, value)

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
        x = self._input(x)
        slots = self._resolve_points(points)
        if grad:
            for s in list(slots):
                if s.spec.kind == "shortcut_identity":  # its gradient is resid_sum's
                    slots.append(Slot(self._spec(join_point(s.spec.block, "resid_sum")), s.index, False, hidden=True))
        # eval mode: a training-mode forward would update BatchNorm statistics and capture dropout
        with model_state(self.model, warn="HookRegistry.run_with_cache"):
            if isinstance(self.net, AuditAdapter):
                self.net.prepare(x)  # its one-time probe forward must not fire the capture hooks
            session = Session(self, "capture", slots, grad=grad)
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

    def _collect(self, session: Session, grad: bool) -> ActivationCache:
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
        if not isinstance(patches, Mapping):
            raise InputTypeError("patches", type(patches).__name__, "a mapping {point: tensor | fn}")
        slots = [self._slot(p, explicit=True, value=v, arg="patches") for p, v in patches.items()]
        for s in slots:
            if not (callable(s.value) or isinstance(s.value, Tensor)):
                raise InputTypeError(f"patches[{s.spec.name!r}]", type(s.value).__name__, "a tensor or a callable",
                                     message=f"patch for {s.spec.name!r} (patches[{s.spec.name!r}]) must be a "
                                             f"tensor or a callable, got {type(s.value).__name__}")
            if isinstance(s.value, Tensor):
                check_finite(s.value, f"patches[{s.spec.name!r}]")
        session = Session(self, "patch", slots, mask=_as_mask(mask))
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
    m = mask.detach() if isinstance(mask, Tensor) else torch.as_tensor(to_numpy(mask, "mask"))
    if m.dtype != torch.bool:
        check_finite(m, "mask")
        uniq = torch.unique(m)
        if not bool(((uniq == 0) | (uniq == 1)).all()):
            raise LabelError("mask", uniq[:5].tolist(), "boolean or 0/1",
                             message=f"mask must be boolean (or 0/1); got dtype {m.dtype} with values "
                                     f"{uniq[:5].tolist()}")
        m = m.bool()
    if m.dim() < 1:
        raise ShapeError("mask", f"shape {tuple(m.shape)}", "spatial dimensions")
    return m  # interpreted per activation in Session._masked


def _check_name(name: object, arg: str) -> None:
    if not isinstance(name, str):
        raise InputTypeError(arg, type(name).__name__, "a point name (str)")


def as_registry(model: "nn.Module | HookRegistry", output: Output = None) -> HookRegistry:
    """``model`` as a :class:`HookRegistry`: a registry is reused (rebuilt only to apply an
    ``output`` override), a module gets a new one. Every hook-based instrument starts here."""
    if isinstance(model, HookRegistry):
        return model if output is None else HookRegistry(model.model, model.adapters, output=output)
    if not isinstance(model, nn.Module):
        raise InputTypeError("model", type(model).__name__, "an nn.Module or a HookRegistry",
                             message=f"model must be an nn.Module or a HookRegistry, got {type(model).__name__}")
    return HookRegistry(model, output=output)
