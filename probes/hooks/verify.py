"""Self-checks of a ``HookRegistry`` on a real input: does every anchor hold what it claims?

Checks, one row per block (``point`` = block name) unless said otherwise:

- ``fired``          each of the five anchors fired exactly once in one forward.
- ``transparent``    (point ``*``) the output with capture hooks equals a plain forward.
- ``sum``            resid_sum == local + shortcut                         (max |Δ|)
- ``act``            resid == act(resid_sum), act applied by hand          (max |Δ|)
- ``identity_patch`` patching the block's five anchors with their own cached values leaves
                     the model output unchanged; point ``*``: every point of the model at once.
- ``grad_local``     ∂t/∂local == ∂t/∂resid_sum (∂(f+s)/∂f = I; fails if the gradient was
                     taken after timm's in-place add/activation rewrote the tensor).
- ``grad_act``       ∂t/∂resid_sum == J_act(resid_sum)ᵀ ∂t/∂resid, J by autograd on a copy.
- ``model_unchanged`` (point ``*``) weights, buffers, modes, requires_grad and hooks as found.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import pandas as pd
import torch
from torch import Tensor

from probes.core.errors import InputTypeError
from probes.core.model import ModelSnapshot, model_state
from probes.core.result import Result, long_frame

if TYPE_CHECKING:
    from probes.hooks.registry import HookRegistry

__all__ = ["verify_registry", "VerifyReport"]


def _err(a: Tensor, b: Tensor) -> float:
    if a.shape != b.shape:
        return math.inf
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def _apply_act(reg: "HookRegistry", block: str, z: Tensor, grad_out: Tensor | None = None):
    """act(z) by hand (``module.forward`` skips every hook); optionally the VJP with grad_out."""
    act_name = reg.block_of(block).act
    if act_name is None:  # no activation after the add (MONAI ResidualUnit)
        return z if grad_out is None else grad_out
    act = reg._modules[act_name]
    z = z.detach().clone().requires_grad_(grad_out is not None)
    with torch.set_grad_enabled(grad_out is not None):
        y = act.forward(z.clone())  # clone: an in-place activation must not touch the leaf z
        if grad_out is None:
            return y.detach()
        (g,) = torch.autograd.grad(y, z, grad_out)
        return g


@dataclass(frozen=True)
class VerifyReport(Result):
    """The registry's self-checks: ``table`` (check, point, max_abs_err, passed) and ``model_diff``.

    ``to_frame()``: check, point, metric ∈ {max_abs_err, passed (1/0)}, value.
    """

    table: pd.DataFrame
    model_diff: tuple[str, ...] = ()
    title: ClassVar[str] = "HookRegistry.verify"

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return bool(self.table["passed"].all())

    def to_frame(self) -> pd.DataFrame:
        return long_frame(self.table, ["check", "point"], ["max_abs_err", "passed"])

    def _summary_tables(self) -> pd.DataFrame:
        return (self.table.groupby("check", sort=False)
                .agg(n=("passed", "size"), passed=("passed", "sum"), max_abs_err=("max_abs_err", "max"))
                .reset_index())

    def _notes(self) -> tuple[str, ...]:
        failed = self.table[~self.table["passed"]]
        return tuple(f"FAILED {r.check} at {r.point}: max |err| {r.max_abs_err:.3g}" for r in failed.itertuples())


def verify_registry(reg: "HookRegistry", x: Tensor, atol: float = 1e-5, grad: bool = True) -> VerifyReport:
    """Run the checks above on input ``x``; returns a :class:`VerifyReport`.

    ``atol`` bounds every error (exact equality is expected: the model computes f + s with
    the same float ops the check repeats).  ``grad=True`` adds the gradient checks, with the
    target ``output.sum()``. ``x`` is checked at the door (``HookRegistry.forward``'s rules);
    the model runs in eval mode (one warning when it was in training mode) and is restored.
    """
    from probes.hooks.registry import HookRegistry  # the registry imports this module

    if not isinstance(reg, HookRegistry):
        raise InputTypeError("reg", type(reg).__name__, "a HookRegistry (HookRegistry(model))")
    model = reg.model
    x = reg._input(x)
    snapshot = ModelSnapshot.take(model)
    with model_state(model, warn="HookRegistry.verify"):
        rows = _checks(reg, x, atol, grad)
    diff = snapshot.diff(model)  # after the modes are restored: a switched mode is no change
    rows.append(dict(check="model_unchanged", point="*", max_abs_err=0.0 if not diff else math.inf,
                     passed=not diff))
    frame = pd.DataFrame(rows, columns=["check", "point", "max_abs_err", "passed"])
    return VerifyReport(frame, tuple(diff))


def _checks(reg: "HookRegistry", x: Tensor, atol: float, grad: bool) -> list[dict]:
    """Every check but ``model_unchanged``, as rows (check, point, max_abs_err, passed)."""
    rows: list[dict] = []

    def add(check: str, point: str, err: float) -> None:
        rows.append(dict(check=check, point=point, max_abs_err=err, passed=bool(err <= atol)))

    anchors = [p for b in reg.blocks for p in reg.anchors(b)]
    with torch.no_grad():
        plain = reg.forward(x)
    out, cache = reg.run_with_cache(x, points=anchors, grad=grad, target=lambda o: o.sum())
    add("transparent", "*", _err(out, plain.detach()))
    for b in reg.blocks:
        names = reg.anchors(b)
        missing = [n for n in names if n not in cache]
        add("fired", b, 0.0 if not missing else math.inf)
        if missing:
            continue
        pre, local, short, rsum, resid = (cache[n] for n in names)
        add("sum", b, _err(rsum, local + short))
        add("act", b, _err(resid, _apply_act(reg, b, rsum)))
        with reg.patch({n: cache[n] for n in names}):
            with torch.no_grad():
                patched = reg.forward(x)
        add("identity_patch", b, _err(patched, plain))
        if grad:
            g = cache.grads
            add("grad_local", b, _err(g[names[1]], g[names[3]]))
            add("grad_act", b, _err(g[names[3]], _apply_act(reg, b, rsum, g[names[4]])))
    # every point at once; modules that run several times come back as name#k
    _, full = reg.run_with_cache(x, points=None)
    with reg.patch(dict(full.items())):
        with torch.no_grad():
            patched = reg.forward(x)
    add("identity_patch", "*", _err(patched, plain))
    return rows
