"""How well the donors of a marginal fill line up with their recipients.

Marginal (interventional) Shapley fills a case's absent contrasts with another case's. That
input is in distribution only when both heads sit in the same place — as in a cohort
registered to an atlas. Alignment = the median over (draw, case) of the Dice overlap
2|A∩B| / (|A|+|B|) between the recipient's and its donor's head: the ``brain`` mask when one is
given, else an image foreground (the channel-mean image above 10 % of its 1st–99th percentile
range, a cheap proxy that also works on z-scored images).

Measured on the synthetic cohort (40 cases, 2D, 4 draws): brain-mask Dice 0.90 for random
poses against 0.986 atlas-posed (jitter 1); the foreground proxy gives 0.92 against 0.99.
Below :data:`ALIGNMENT_MIN_DICE` a :class:`MisalignedDonorsWarning` says that the marginal φ
include a fill out of distribution, so that a report can attach the caveat.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from probes.core.stats import dice

__all__ = ["ALIGNMENT_MIN_DICE", "MisalignedDonorsWarning", "donor_alignment", "foreground"]

#: below this median donor–recipient Dice the marginal fill is flagged (between 0.90–0.92
#: measured for random poses and 0.986–0.99 for atlas-posed heads)
ALIGNMENT_MIN_DICE = 0.95


class MisalignedDonorsWarning(UserWarning):
    """Donor heads do not line up with their recipients: marginal fill is out of distribution."""


def foreground(x: torch.Tensor) -> np.ndarray:
    """``(N, *spatial)`` bool: the channel-mean image above lo + 0.1 (hi − lo), lo/hi its 1st/99th percentiles."""
    m = x.detach().double().mean(1).cpu().numpy()
    flat = m.reshape(len(m), -1)
    lo, hi = np.percentile(flat, 1, axis=1), np.percentile(flat, 99, axis=1)
    thr = (lo + 0.1 * (hi - lo)).reshape((-1,) + (1,) * (m.ndim - 1))
    return m > thr


def donor_alignment(x: torch.Tensor, derangements: np.ndarray, brain: Any = None) -> tuple[float, str]:
    """Median Dice of recipient vs donor head over every (draw, case), and what was compared.

    ``derangements`` (D, N): donor of case i in draw d. ``brain`` (N, *spatial) bool, or None
    for the image foreground (:func:`foreground`). Returns ``(median Dice, "brain mask" |
    "image foreground")``.
    """
    head, source = (np.asarray(brain, bool), "brain mask") if brain is not None else (foreground(x), "image foreground")
    d = np.concatenate([dice(head, head[np.asarray(p)]) for p in derangements])
    return float(np.median(d)), source


def warn_if_misaligned(alignment: float, source: str, stacklevel: int = 3) -> None:
    """One :class:`MisalignedDonorsWarning` when ``alignment`` < :data:`ALIGNMENT_MIN_DICE`."""
    if alignment < ALIGNMENT_MIN_DICE:
        warnings.warn(f"contrast_shapley(absent='marginal'): donors and recipients are poorly aligned (median "
                      f"{source} Dice {alignment:.3f} < {ALIGNMENT_MIN_DICE}); the filled inputs are out of "
                      "distribution and the marginal φ include that. Register the cohort to an atlas first.",
                      MisalignedDonorsWarning, stacklevel=stacklevel)
