"""Patient-grouped train/val/test splits for the linear probes (no patient in two splits)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

import numpy as np
import pandas as pd

from probes.core.errors import InputTypeError, OptionError, ShapeError
from probes.core.validate import as_labels

__all__ = ["SPLITS", "SplitSpec", "split_by_group"]

SPLITS = ("train", "val", "test")
SplitSpec = Union[Sequence[float], Mapping[Any, str], Sequence[str], np.ndarray]


def split_by_group(groups: Sequence[Any], split: SplitSpec = (0.6, 0.2, 0.2), *,
                   labels: Sequence[Any] | None = None, seed: int = 0) -> np.ndarray:
    """Per-sample split names ("train"/"val"/"test"), with every group in exactly one split.

    ``split`` is (a) three fractions of *groups* — a seeded shuffle of the patients, stratified
    by the patient's label when ``labels`` are given and constant within each patient, then
    cumulative rounding per stratum; (b) a mapping group → split name covering every group; or
    (c) per-sample split names. A group found in two splits raises
    :class:`~probes.core.errors.OptionError` (a ``ValueError``) naming ``split``; ``labels``
    (integer classes, one per sample) only stratify the shuffle.
    """
    if isinstance(groups, (str, bytes, Mapping)) or not isinstance(groups, (Sequence, np.ndarray, pd.Series)):
        raise InputTypeError("groups", type(groups).__name__, "one group (patient) id per sample",
                             message=f"groups must be a sequence of one group id per sample, got "
                                     f"{type(groups).__name__}")
    g = np.asarray([str(v) for v in groups], object)
    n = len(g)
    if n == 0:
        raise ShapeError("groups", "0 entries", "one group id per sample", message="groups is empty")
    if labels is not None:
        labels = as_labels(labels, n, binary=False)
    if isinstance(split, Mapping):
        keys = {str(k): v for k, v in split.items()}
        missing = sorted(set(g) - set(keys))
        if missing:
            raise OptionError("split", f"a mapping without {len(missing)} group(s)", "every group mapped",
                              message=f"split mapping lacks {len(missing)} group(s), e.g. {missing[:5]}")
        out = np.array([keys[v] for v in g], object)
    else:
        arr = np.asarray(split, dtype=object)
        if arr.ndim == 1 and arr.shape[0] == 3 and all(isinstance(v, (float, int, np.number))
                                                       and not isinstance(v, bool) for v in arr):
            out = _fraction_split(g, np.asarray(arr, float), labels, seed)
        elif arr.ndim == 1 and arr.shape[0] == n:
            out = np.array([str(v) for v in arr], object)
        else:
            raise OptionError("split", f"shape {arr.shape}", "3 fractions, a mapping or per-sample names",
                              message=f"split must be 3 fractions, a group→split mapping or {n} per-sample "
                                      f"split names; got shape {arr.shape}")
    bad = sorted(set(out) - set(SPLITS))
    if bad:
        raise OptionError("split", bad[:5], f"names among {SPLITS}",
                          message=f"split names must be {SPLITS}; got {bad[:5]}")
    frame = pd.DataFrame({"g": g, "s": out})
    per = frame.groupby("g")["s"].nunique()
    leak = per[per > 1].index.tolist()
    if leak:
        where = frame[frame.g.isin(leak[:3])].groupby("g")["s"].unique().to_dict()
        raise OptionError("split", f"{len(leak)} group(s) in two splits", "every group in one split",
                          message=f"{len(leak)} group(s) (patients) appear in more than one split, which "
                                  f"leaks patients between train/val/test: {where}")
    return out


def _fraction_split(g: np.ndarray, fr: np.ndarray, labels, seed: int) -> np.ndarray:
    if (fr < 0).any() or not np.isclose(fr.sum(), 1.0) or (fr[1:] == 0).any() or fr[0] == 0:
        raise OptionError("split", tuple(fr), "three positive fractions summing to 1",
                          message=f"split fractions must be three positive numbers summing to 1, got {tuple(fr)}")
    uniq = np.array(sorted(set(g)), object)
    strata = {0: uniq}
    if labels is not None:
        lab = pd.Series(np.asarray(labels)).groupby(g).agg(lambda s: s.iloc[0] if s.nunique() == 1 else None)
        if lab.notna().all():
            strata = {k: np.array(sorted(v.index), object) for k, v in lab.groupby(lab)}
    rng = np.random.default_rng(seed)
    assign: dict[str, str] = {}
    for key in sorted(strata, key=str):
        pats = strata[key][rng.permutation(len(strata[key]))]
        cuts = np.round(np.cumsum(fr) * len(pats)).astype(int)
        for i, p in enumerate(pats):
            assign[p] = SPLITS[int(np.searchsorted(cuts, i, side="right"))]
    return np.array([assign[v] for v in g], object)
