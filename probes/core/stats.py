"""Small statistics shared by instruments: bootstrap resampling indices and the Dice overlap."""

from __future__ import annotations

from typing import Any

import numpy as np

from probes.core.errors import LabelError, NonFiniteError, OptionError, ShapeError

__all__ = ["bootstrap_indices", "dice"]


def bootstrap_indices(n: int, n_boot: int, seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """``(n_boot, n)`` indices drawn with replacement: ``default_rng(seed).integers(0, n, (n_boot, n))``.

    Efron & Tibshirani (1993), the nonparametric bootstrap. Passing a ``Generator`` continues
    its stream (several groups resampled from one seeded generator).
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer, float)) or int(n_boot) != n_boot \
            or n_boot < 1:
        raise OptionError("n_boot", repr(n_boot), "an integer >= 1",
                          message=f"n_boot (number of resamples) must be an integer >= 1, got {n_boot!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise OptionError("n", repr(n), "an integer >= 1", message=f"n: cannot resample {n!r} units: need at least one")
    return np.random.default_rng(seed).integers(0, n, (int(n_boot), int(n)))


def dice(a: Any, b: Any) -> np.ndarray:
    """Per-case Sørensen–Dice 2|A∩B| / (|A|+|B|) over the leading (case) axis; 1.0 when both are empty.

    ``a`` and ``b`` are boolean (or 0/1) arrays of the same shape ``(N, ...)``.
    """
    a, b = _binary(a, "a"), _binary(b, "b")
    if a.shape != b.shape or a.ndim < 1:
        raise ShapeError("b", f"shape {b.shape}", f"the shape of a {a.shape}, with a case axis",
                         message=f"dice: mask shapes differ or have no case axis: a {a.shape} vs b {b.shape}")
    p, t = a.reshape(len(a), -1), b.reshape(len(b), -1)
    inter, tot = (p & t).sum(1), p.sum(1) + t.sum(1)
    return np.where(tot == 0, 1.0, 2 * inter / np.maximum(tot, 1))


def _binary(m: Any, name: str) -> np.ndarray:
    """A mask as bool, refusing NaN/Inf and values other than 0/1 (a label map is not a mask)."""
    m = np.asarray(m.detach().cpu() if hasattr(m, "detach") else m)
    if m.dtype == bool:
        return m
    if m.dtype.kind == "f" and not np.isfinite(m).all():
        raise NonFiniteError(name, "NaN/Inf", "0/1 values", message=f"{name} contains NaN/Inf")
    if m.dtype.kind not in "biuf" or not np.isin(m, (0, 1)).all():
        raise LabelError(name, np.unique(m)[:5].tolist() if m.dtype.kind in "biuf" else f"dtype {m.dtype}",
                         "a boolean or 0/1 mask")
    return m.astype(bool)
