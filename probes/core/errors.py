"""One error type per kind of bad input, and one warning for a number that cannot be trusted.

Every instrument checks its inputs at the door and raises one of these, with the argument's
name, what was given (value, shape or dtype) and what was expected. All are ``ValueError``s
(``InputTypeError`` is also a ``TypeError``), so callers may catch them broadly.

A number that cannot be trusted (a map that ranks nothing, an empty ROI, a model output that
is not finite, a comparison without a common reader set) is returned as NaN with its reason in
the result's ``reason`` column, and one :class:`UndefinedValueWarning` is raised per call.
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any, Iterable

__all__ = ["AuditInputError", "InputTypeError", "ShapeError", "NonFiniteError", "ClassIndexError", "LabelError",
           "OptionError", "UndefinedValueWarning", "input_error", "warn_undefined"]


class AuditInputError(ValueError):
    """A bad argument: ``name`` (the argument), ``got`` (value/shape/dtype), ``expected``."""

    def __init__(self, name: str, got: Any = None, expected: str = "", detail: str = "", *,
                 message: str | None = None):
        self.name, self.got, self.expected = name, got, expected
        if message is None:
            message = f"{name}: got {got}; expected {expected}" + (f" ({detail})" if detail else "")
        elif name not in message:
            message = f"{name}: {message}"
        super().__init__(message)


class InputTypeError(AuditInputError, TypeError):
    """The argument has the wrong container type or dtype (a list for a tensor, bool for float)."""


class ShapeError(AuditInputError):
    """Wrong rank, missing batch axis, mismatched spatial shapes or channel count."""


class NonFiniteError(AuditInputError):
    """NaN or Inf where finite values are required (images, maps, masks, labels)."""


class ClassIndexError(AuditInputError):
    """A class index outside the model's classes, or not an integer."""


class LabelError(AuditInputError):
    """True classes that are not what the instrument needs (0/1 where binary, one per case)."""


class OptionError(AuditInputError):
    """An option value out of its range or not one of the allowed choices."""


def input_error(kind: type[AuditInputError], name: str, got: Any, expected: str, detail: str = "") -> AuditInputError:
    """Build an error of ``kind`` (raise the return value): ``name: got ...; expected ...``."""
    return kind(name, got, expected, detail)


class UndefinedValueWarning(UserWarning):
    """Some numbers of a result are NaN because they cannot be computed; the result's ``reason``
    column says why for each one."""


def warn_undefined(instrument: str, reasons: Iterable[str], stacklevel: int = 3) -> None:
    """One warning for a call whose result holds NaN values, counting each reason."""
    counts = Counter(r for r in reasons if r)
    if counts:
        text = "; ".join(f"{reason} ({n}×)" for reason, n in counts.most_common())
        warnings.warn(f"{instrument}: NaN where the value is undefined — {text}", UndefinedValueWarning,
                      stacklevel=stacklevel)
