"""Instrument plug-ins: one small object per instrument, registered in one table.

An :class:`Instrument` declares its name, its parameter model (pydantic), what it needs from
the run (``needs``: ``"labels"``, ``"masks"``, ``"classifier"``, ``"segmenter"``, ``"hooks"``),
how it splits its work into :class:`Unit` s (``plan``) and how one unit is computed (``run``:
a mapping of table name → tidy DataFrame). The runner knows nothing else about instruments:
adding one means adding one module that calls :func:`register`, not editing the runner.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from audit.run.context import Context

__all__ = ["INSTRUMENTS", "Instrument", "Params", "Unit", "batches", "close_names", "register", "registry"]


class Params(BaseModel):
    """Base of every instrument's parameters: unknown keys are errors, values are frozen.

    ``batch_size``: the most model inputs in one forward (or forward+backward) of this
    instrument — perturbed copies, deletion steps, coalitions and patched pairs included —
    so that its memory stays that of the model at that batch; None: the run's ``batch_size``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: int | None = Field(None, ge=1, description="model inputs per forward (None: the run's batch_size)")

    def rows(self, ctx: Context) -> int:
        """Model inputs per forward: ``batch_size``, else the run's ``batch_size``."""
        return int(self.batch_size if self.batch_size is not None else ctx.cfg.batch_size)


@dataclass(frozen=True)
class Unit:
    """One piece of an instrument's work: ``key`` names it (stable across runs), ``spec`` says
    what it covers (JSON-serialisable: a split, case positions, a method, a layer ...)."""

    key: str
    spec: Mapping[str, Any] = field(default_factory=dict)


Plan = Callable[["Context", Any], list[Unit]]
Run = Callable[["Context", Any, Unit], Mapping[str, pd.DataFrame]]


@dataclass(frozen=True)
class Instrument:
    """A registered instrument (see the module docstring)."""

    name: str
    params: type[Params]
    plan: Plan
    run: Run
    tables: tuple[str, ...]
    needs: frozenset[str] = frozenset()
    doc: str = ""
    default_on: bool = True
    after: tuple[str, ...] = ()  # instruments whose tables ``run`` reads (``ctx.results(name)``)

    def skip_reason(self, ctx: Context) -> str | None:
        """Why this instrument does not apply to the run's model and cohort, or None."""
        for need in sorted(self.needs):
            reason = NEEDS[need](ctx)
            if reason:
                return reason
        return None


def _labels(ctx: Context) -> str | None:
    return None if ctx.has_labels else "the cohort has no labels"


def _masks(ctx: Context) -> str | None:
    return None if ctx.rois else "the cohort has no ROI masks (cohort.rois)"


def _classifier(ctx: Context) -> str | None:
    return None if ctx.task == "classification" else f"applies to classifiers; the model is a {ctx.task} model"


def _segmenter(ctx: Context) -> str | None:
    return None if ctx.task == "segmentation" else f"applies to segmenters; the model is a {ctx.task} model"


def _hooks(ctx: Context) -> str | None:
    return None if ctx.points else "no hook points found in the model"


def _two_classes(ctx: Context) -> str | None:
    n = ctx.n_classes_present
    return None if n >= 2 else f"needs both classes among the audited cases, found {n}"


def _lrp_rules(ctx: Context) -> str | None:
    """LRP refuses, by name, models it has no rules for (an ONNX graph's Transpose, a softmax output)."""
    from probes.attribution.lrp import LRPConservationError, lrp
    from probes.core.model import UnsupportedModelError

    try:
        lrp(ctx.model, ctx.x(0, 1), ctx.target)
    except UnsupportedModelError as err:  # LRPRuleError is one
        return f"LRP cannot run on this model: {' '.join(str(err).split())[:300]}"
    except LRPConservationError:
        return None  # a finding, not a reason to skip: the instrument runs and records it per unit
    return None


NEEDS: dict[str, Callable[[Context], str | None]] = {
    "labels": _labels, "masks": _masks, "classifier": _classifier, "segmenter": _segmenter,
    "hooks": _hooks, "two_classes": _two_classes, "lrp_rules": _lrp_rules,
}

INSTRUMENTS: dict[str, Instrument] = {}


def registry() -> dict[str, Instrument]:
    """The instrument table, with the built-in instruments registered (imported on first use)."""
    import audit.run.instruments  # noqa: F401  import = registration

    return INSTRUMENTS


def register(inst: Instrument) -> Instrument:
    """Add an instrument to the table (its name must be new and its needs known)."""
    if inst.name in INSTRUMENTS:
        raise ValueError(f"instrument {inst.name!r} is already registered")
    missing = [a for a in inst.after if a not in INSTRUMENTS]
    if missing:
        raise ValueError(f"instrument {inst.name!r} reads {missing}, which must be registered before it")
    unknown = set(inst.needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"instrument {inst.name!r}: unknown needs {sorted(unknown)}; known: {sorted(NEEDS)}")
    INSTRUMENTS[inst.name] = inst
    return inst


def close_names(name: str, pool: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest name in ``pool``, else ``""``."""
    near = difflib.get_close_matches(name, list(pool), n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


def batches(n: int, size: int, prefix: str = "cases", **spec: Any) -> list[Unit]:
    """Units over case positions ``[start, stop)`` in steps of ``size``; key ``prefix[start:stop]``."""
    return [Unit(f"{prefix}[{a}:{min(a + size, n)}]", {**spec, "start": a, "stop": min(a + size, n)})
            for a in range(0, n, size)]


def frame(rows: Sequence[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """A DataFrame with ``case_id`` (when present) as str, index dropped."""
    df = pd.DataFrame(rows).reset_index(drop=True)
    if "case_id" in df:
        df["case_id"] = df["case_id"].astype(str)
    return df
