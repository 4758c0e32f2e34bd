"""Results of the attribution instruments: maps with the cases, method and target they explain.

* :class:`Attribution` — maps ``(N, C_map, *spatial)`` of one method (at one hook point for a
  layer map such as Grad-CAM). ``C_map`` is 1 for a map that covers every contrast (class
  activation maps, LIME over shared supervoxels) or C, one map per input contrast.
* :class:`LayerAttribution` — one layer-wise method at several hook points: a mapping
  ``point → maps`` (``result[point]`` is the ``(N, 1, *spatial)`` tensor), and a result.

Both follow the result protocol of :mod:`probes.core.result`. ``to_frame()`` has one row per
case, map channel and statistic: ``case_id``, ``method``, ``point`` (``""`` for input
attributions), ``contrast`` (the contrast name, or ``"all"`` for a map covering every contrast),
``metric`` ∈ :data:`MAP_STATISTICS` (``sum`` Σ a, ``sum_abs`` Σ |a|, ``max``, ``min`` over the
voxels of one case and channel, in float64) and ``value``. ``probes.core.validate.to_numpy``
and ``as_maps`` read ``.maps``, so every map metric takes an :class:`Attribution` directly.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from probes.core.result import Result, tidy
from probes.core.validate import as_case_ids

__all__ = ["ALL_CONTRASTS", "MAP_STATISTICS", "Attribution", "LayerAttribution"]

ALL_CONTRASTS = "all"  # the contrast label of a map channel that covers every input contrast

# statistic name → function of (N, C_map, V) float64 values → (N, C_map)
MAP_STATISTICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sum": lambda v: v.sum(-1),
    "sum_abs": lambda v: np.abs(v).sum(-1),
    "max": lambda v: v.max(-1),
    "min": lambda v: v.min(-1),
}


def _describe(value: Any) -> str:
    """Short text of an option value for summaries (tensors by shape)."""
    if isinstance(value, (Tensor, np.ndarray)):
        return f"{type(value).__name__}{tuple(value.shape)}"
    return repr(value)


def _contrast_labels(contrasts: Sequence[Any] | None, c_map: int) -> tuple[str, ...] | None:
    """Names per map channel: None for one channel covering all contrasts, else C_map names."""
    if c_map == 1 and (contrasts is None or len(contrasts) != 1):
        return None
    if contrasts is None:
        return tuple(str(i) for i in range(c_map))
    names = tuple(str(c) for c in contrasts)
    if len(names) != c_map:
        raise ValueError(f"contrasts has {len(names)} names for maps with {c_map} channels (one per contrast)")
    return names


@dataclass(frozen=True, eq=False, repr=False)
class Attribution(Result):
    """Attribution maps of one method for N cases.

    Fields: ``maps`` (N, C_map, *spatial) float tensor (detached); ``method`` (a name of
    ``probes.attribution.METHODS``); ``target`` (N,) the class explained per case; ``case_ids``
    (str); ``contrasts``: a name per map channel, or ``None`` when the single channel covers
    every contrast; ``point``: the hook point of a layer map (``None`` for input
    attributions); ``options``: the method's options as run (defaults filled in).
    """

    maps: Tensor
    method: str
    target: Tensor
    case_ids: tuple[str, ...]
    contrasts: tuple[str, ...] | None = None
    point: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    title: ClassVar[str] = "Attribution maps"

    @classmethod
    def from_maps(cls, maps: Tensor, method: str, target: Tensor, *, case_ids: Sequence[Any] | None = None,
                  contrasts: Sequence[Any] | None = None, point: str | None = None,
                  options: Mapping[str, Any] | None = None) -> Attribution:
        """Build a result, checking shapes: ``case_ids`` default ``"0"``, ``"1"``, ...; ``contrasts``
        (the input's contrast names) name the map channels when there is one map per contrast."""
        if not isinstance(maps, Tensor) or maps.dim() < 3:
            raise ValueError(f"maps must be a tensor (N, C_map, *spatial), got {getattr(maps, 'shape', type(maps))}")
        n = maps.shape[0]
        t = torch.as_tensor(target).reshape(-1).long().cpu()
        if t.shape[0] != n:
            raise ValueError(f"target has {t.shape[0]} entries for {n} maps")
        return cls(maps=maps.detach(), method=str(method), target=t, case_ids=tuple(as_case_ids(case_ids, n)),
                   contrasts=_contrast_labels(contrasts, maps.shape[1]), point=point, options=dict(options or {}))

    def __len__(self) -> int:
        return self.maps.shape[0]

    def __repr__(self) -> str:
        at = f", point={self.point!r}" if self.point else ""
        return f"Attribution(method={self.method!r}{at}, maps={tuple(self.maps.shape)}, cases={len(self)})"

    def contrast_labels(self) -> list[str]:
        """The ``contrast`` label of each map channel (``"all"`` for a map covering every contrast)."""
        return list(self.contrasts) if self.contrasts is not None else [ALL_CONTRASTS]

    def statistics(self) -> dict[str, np.ndarray]:
        """``{statistic: (N, C_map) float64}`` for every entry of :data:`MAP_STATISTICS`."""
        v = self.maps.detach().cpu().double().flatten(2).numpy()
        return {name: fn(v) for name, fn in MAP_STATISTICS.items()}

    def to_frame(self) -> pd.DataFrame:
        """Tidy copy: case_id, method, point, contrast, metric (sum/sum_abs/max/min), value."""
        stats = self.statistics()
        n, c = self.maps.shape[:2]
        k = len(stats)
        values = np.stack(list(stats.values()), axis=-1)  # (N, C_map, statistics)
        return tidy(pd.DataFrame({
            "case_id": np.repeat(np.asarray(self.case_ids, dtype=object), c * k),
            "method": self.method, "point": self.point or "",
            "contrast": np.tile(np.repeat(np.asarray(self.contrast_labels(), dtype=object), k), n),
            "metric": np.tile(np.asarray(list(stats), dtype=object), n * c),
            "value": values.reshape(-1)}))

    def _summary_tables(self) -> pd.DataFrame:
        frame = self.to_frame()
        means = frame.pivot_table(index=["point", "contrast"], columns="metric", values="value",
                                  aggfunc="mean", sort=False)
        return means[list(MAP_STATISTICS)].reset_index()

    def _notes(self) -> Sequence[str]:
        classes = ", ".join(f"{k}: {v}" for k, v in zip(*np.unique(self.target.numpy(), return_counts=True)))
        opts = ", ".join(f"{k}={_describe(v)}" for k, v in self.options.items()) or "none"
        return (f"method {self.method!r}; maps {tuple(self.maps.shape)}; mean over {len(self)} case(s) shown",
                f"target class (cases): {classes}", f"options: {opts}")


@dataclass(frozen=True, eq=False, repr=False)
class LayerAttribution(Result, Mapping[str, Tensor]):
    """One layer-wise method (Grad-CAM) at several hook points, from one computation.

    A mapping ``point → maps`` ((N, 1, *spatial) tensors, in the requested order): iterate,
    index (``result[point]``), ``len``. ``attribution(point)`` gives the :class:`Attribution` of
    one point; ``maps`` is the only point's maps (a ``ValueError`` with several points).
    ``to_frame()`` stacks every point's rows (see :class:`Attribution`). ``feature_shapes``: the
    spatial shape of each point's activation, the resolution its map really has before resizing.
    """

    point_maps: Mapping[str, Tensor]
    method: str
    target: Tensor
    case_ids: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    feature_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    title: ClassVar[str] = "Layer attribution maps"

    def __getitem__(self, point: str) -> Tensor:
        if point not in self.point_maps:
            close = difflib.get_close_matches(str(point), list(self.point_maps), n=5, cutoff=0.5)
            raise KeyError(f"no maps at point {point!r}; points: {list(self.point_maps)}"
                           + (f"; close: {close}" if close else ""))
        return self.point_maps[point]

    def __iter__(self) -> Iterator[str]:
        return iter(self.point_maps)

    def __len__(self) -> int:
        return len(self.point_maps)

    def __repr__(self) -> str:
        shape = tuple(next(iter(self.point_maps.values())).shape) if self.point_maps else ()
        return f"LayerAttribution(method={self.method!r}, points={list(self.point_maps)}, maps={shape})"

    @property
    def maps(self) -> Tensor:
        """The maps of the only point (a ``ValueError`` naming the points when there are several)."""
        if len(self.point_maps) != 1:
            raise ValueError(f"this {self.method} result has {len(self.point_maps)} points "
                             f"({list(self.point_maps)[:4]}...): pick one with result[point]")
        return next(iter(self.point_maps.values()))

    def attribution(self, point: str) -> Attribution:
        """The :class:`Attribution` of one point."""
        return Attribution(maps=self[point], method=self.method, target=self.target, case_ids=self.case_ids,
                           point=point, options=self.options)

    def to_frame(self) -> pd.DataFrame:
        """Every point's rows: case_id, method, point, contrast, metric, value."""
        frames = [self.attribution(p).to_frame() for p in self.point_maps]
        return tidy(pd.concat(frames, ignore_index=True))

    def _summary_tables(self) -> pd.DataFrame:
        return pd.concat([self.attribution(p)._summary_tables() for p in self.point_maps], ignore_index=True)

    def _notes(self) -> Sequence[str]:
        if not self.point_maps:
            return ()
        return self.attribution(next(iter(self.point_maps)))._notes()
