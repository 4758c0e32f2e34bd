"""What the intervention instruments read: a cohort stacked into arrays, and the output kind.

* :func:`stack_cases` — a cohort-like collection of cases (``audit.data.Cohort``, a list of
  ``Case``, or any iterable of objects with ``.image``, ``.masks`` and ``.label``) as one
  channels-first array with its labels, ROI masks, case ids and contrast names.
* :func:`declares_probabilities` — whether a model prepared by ``probes.core.as_audit_model``
  reads its output as probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor, nn

from probes.core.errors import InputTypeError, ShapeError
from probes.core.model import AuditAdapter

__all__ = ["StackedCases", "is_case_collection", "stack_cases", "declares_probabilities"]

_CASE_FIELDS = ("image", "masks", "label")


@dataclass(frozen=True, eq=False)
class StackedCases:
    """A cohort as arrays.

    ``x``: ``(N, C, *spatial)`` float32; ``labels``: one label per case (``None`` where a case
    has none); ``masks``: ``{roi: (N, *spatial) bool}`` over every ROI name any case carries,
    empty where a case lacks it; ``complete``: the ROI names every case carries; ``case_ids``:
    str; ``contrasts``: the channel names, or ``None`` when the cases do not name them.
    """

    x: np.ndarray
    labels: tuple[int | None, ...]
    masks: dict[str, np.ndarray]
    complete: frozenset[str]
    case_ids: list[str]
    contrasts: tuple[str, ...] | None

    @property
    def all_labelled(self) -> bool:
        """True when every case has a label."""
        return all(label is not None for label in self.labels)


def is_case_collection(x: Any) -> bool:
    """True for anything that is not a tensor or an array (it is then read as a cohort of cases)."""
    return not isinstance(x, (Tensor, np.ndarray))


def stack_cases(cohort: Any, name: str = "x") -> StackedCases:
    """Stack a cohort-like iterable of cases exposing ``image``, ``masks``, ``label`` (and
    ``case_id``, ``channels`` when present) into arrays; see :class:`StackedCases`.

    All images must share one shape (resample first otherwise); case ids default to the case's
    position.
    """
    try:
        cases = list(cohort)
    except TypeError:
        cases = []
    if not cases or not all(hasattr(c, f) for c in cases for f in _CASE_FIELDS):
        raise InputTypeError(name, type(cohort).__name__, "a tensor/array or a cohort of cases",
                             message=f"{name} must be a tensor/array (N, C, *spatial) or a non-empty iterable of "
                                     f"cases with .image, .masks, .label (e.g. audit.data.Cohort), got "
                                     f"{type(cohort).__name__}")
    shapes = {np.shape(c.image) for c in cases}
    if len(shapes) != 1:
        raise ShapeError(name, sorted(shapes), "one image shape for every case",
                         message=f"cases of {name} have different image shapes {sorted(shapes)}; resample first")
    x = np.stack([np.asarray(c.image, np.float32) for c in cases])
    spatial = x.shape[2:]
    names = dict.fromkeys(k for c in cases for k in c.masks)
    masks = {k: np.stack([np.asarray(c.masks[k], bool) if k in c.masks else np.zeros(spatial, bool)
                          for c in cases]) for k in names}
    complete = frozenset(k for k in names if all(k in c.masks for c in cases))
    channels = getattr(cohort, "channels", None) or getattr(cases[0], "channels", None)
    contrasts = tuple(channels) if channels else None
    ids = [str(getattr(c, "case_id", i)) for i, c in enumerate(cases)]
    return StackedCases(x, tuple(c.label for c in cases), masks, complete, ids, contrasts)


def declares_probabilities(net: nn.Module) -> bool:
    """True when ``net`` (from ``as_audit_model``) reads its model's output as probabilities."""
    return isinstance(net, AuditAdapter) and (net.output_fn is not None or net.interface.output != "logits")


