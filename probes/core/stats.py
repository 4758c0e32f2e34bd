"""Small statistics shared by instruments: bootstrap resampling indices and the Dice overlap."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["bootstrap_indices", "dice"]


def bootstrap_indices(n: int, n_boot: int, seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """``(n_boot, n)`` indices drawn with replacement: ``default_rng(seed).integers(0, n, (n_boot, n))``.

    Efron & Tibshirani (1993), the nonparametric bootstrap. Passing a ``Generator`` continues
    its stream (several groups resampled from one seeded generator).
    """
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot (number of resamples) must be an integer >= 1, got {n_boot!r}")
    if n < 1:
        raise ValueError(f"cannot resample {n} units: need at least one")
    return np.random.default_rng(seed).integers(0, n, (int(n_boot), int(n)))


def dice(a: Any, b: Any) -> np.ndarray:
    """Per-case Sørensen–Dice 2|A∩B| / (|A|+|B|) over the leading (case) axis; 1.0 when both are empty.

    ``a`` and ``b`` are boolean (or 0/1) arrays of the same shape ``(N, ...)``.
    """
    a, b = np.asarray(a).astype(bool), np.asarray(b).astype(bool)
    if a.shape != b.shape or a.ndim < 1:
        raise ValueError(f"dice: mask shapes differ or have no case axis: {a.shape} vs {b.shape}")
    p, t = a.reshape(len(a), -1), b.reshape(len(b), -1)
    inter, tot = (p & t).sum(1), p.sum(1) + t.sum(1)
    return np.where(tot == 0, 1.0, 2 * inter / np.maximum(tot, 1))
