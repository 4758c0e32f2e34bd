"""Point names and the activation cache returned by ``HookRegistry.run_with_cache``."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

from torch import Tensor

from probes.core.errors import AuditInputError, InputTypeError, OptionError

if TYPE_CHECKING:
    from probes.hooks.registry import HookRegistry

__all__ = ["PointSpec", "ActivationCache", "UnknownPointError", "join_point", "unknown_point", "as_points"]


@dataclass(frozen=True)
class PointSpec:
    """Where a point lives: the hooked module, the phase and, for anchors, its block.

    ``phase`` is ``"pre"`` (module input) or ``"fwd"`` (module output).  ``block_call`` is the
    call of the hooked module *within one block forward* that the anchor refers to (``None``
    for module points and for hooks on the block itself).  ``kind`` is ``"module"``, an
    anchor name, or ``"shortcut_identity"`` (s(x) = x with no module to hook).
    """

    name: str
    module: str
    phase: str
    kind: str = "module"
    block: str | None = None
    block_call: int | None = None


def join_point(prefix: str, attr: str) -> str:
    return f"{prefix}.{attr}" if prefix else attr


class UnknownPointError(AuditInputError, KeyError):
    """A point or block name the registry does not know (a ``KeyError`` too, as for a mapping)."""


def unknown_point(name: str, pool: Sequence[str], arg: str = "points") -> UnknownPointError:
    """The error for an unknown point/block ``name`` given as argument ``arg``, with close matches."""
    close = difflib.get_close_matches(name, pool, n=5, cutoff=0.5) if isinstance(name, str) else []
    hint = f"; close matches: {close}" if close else ""
    return UnknownPointError(arg, repr(name), "a known hook point",
                             message=f"{arg}: unknown hook point {name!r}{hint} ({len(pool)} points known)")


class ActivationCache(Mapping[str, Tensor]):
    """Captured activations (detached clones) by point name; ``grads`` holds d target / d point.

    ``calls`` records how many times each hooked module ran in the forward, so indexed points
    (``name#k``) can be told from single calls.
    """

    def __init__(self, acts: dict[str, Tensor], grads: dict[str, Tensor], calls: dict[str, int],
                 skipped: frozenset[str] = frozenset()):
        self._acts = acts
        self.grads = grads
        self.calls = calls
        self.skipped = skipped  # modules selected by None/predicate whose output is not a tensor

    def __getitem__(self, key: str) -> Tensor:
        if key not in self._acts:
            raise unknown_point(key, list(self._acts))
        return self._acts[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._acts)

    def __len__(self) -> int:
        return len(self._acts)

    def to_frame(self):
        """One row per cached point: point, shape, dtype, mean, std, has_grad."""
        import pandas as pd

        rows = [
            dict(point=k, shape=tuple(v.shape), dtype=str(v.dtype),
                 mean=float(v.float().mean()), std=float(v.float().std()) if v.numel() > 1 else 0.0,
                 has_grad=k in self.grads)
            for k, v in self._acts.items()
        ]
        return pd.DataFrame(rows, columns=["point", "shape", "dtype", "mean", "std", "has_grad"])


def as_points(reg: "HookRegistry", points: str | Sequence[str] | None, *,
              default_anchor: str | None = None) -> list[str]:
    """``points`` as a list of known point names, checked before any forward runs.

    A name or a sequence of names, non-empty and without duplicates; an unknown name raises
    ``KeyError`` with close matches (``HookRegistry.point_info``). ``None`` means
    ``[f"{block}.{default_anchor}" for block in reg.blocks]`` when ``default_anchor`` is given,
    and is refused otherwise.
    """
    if points is None:
        if default_anchor is None:
            raise ValueError("points is required: name at least one hook point")
        if not reg.blocks:
            raise ValueError(f"points=None means every block's '.{default_anchor}', but the registry found "
                             "no residual blocks; pass point names")
        return [f"{b}.{default_anchor}" for b in reg.blocks]
    pts = [points] if isinstance(points, str) else list(points)
    if not pts:
        raise OptionError("points", "[]", "at least one hook point name",
                          message="points is empty: name at least one hook point")
    if not all(isinstance(p, str) for p in pts):
        raise InputTypeError("points", repr(pts), "point names (str)")
    if len(set(pts)) != len(pts):
        raise OptionError("points", repr(pts), "distinct names",
                          message=f"points has duplicates: {sorted({p for p in pts if pts.count(p) > 1})}")
    for p in pts:
        reg.point_info(p, arg="points")  # KeyError with close matches for an unknown name
    return pts
