"""The bad-input matrix every public instrument is run through, and what each call must do.

A *row* is one public function with a valid call built from a small kit (model, inputs, maps,
masks, labels, reads). A *bad input* replaces one argument of that call. Each (row, bad input)
pair must end in its expected outcome:

* ``"error"`` — raises a ``probes.core.errors.AuditInputError`` whose message names the
  argument;
* ``"nan"`` — returns a result in which the affected values are NaN, each with a non-empty
  ``reason``, and raises one ``UndefinedValueWarning``;
* ``"same"`` — returns the same numbers as the valid call (a harmless variation: a batch of
  one, a non-contiguous or channels-last tensor, float64 converted to the model's dtype, a
  training-mode model run in eval mode — with a warning — and restored);
* ``"ok"`` — returns a result (no crash, numbers not compared).

Whatever the outcome, the model is left exactly as found (``ModelSnapshot``) and no hook
remains. The table of what is covered is ``docs/robustness.md`` (``render_table``).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from probes.core.errors import AuditInputError, UndefinedValueWarning
from probes.core.model import ModelSnapshot
from probes.core.result import Result

Outcome = str  # "error" | "nan" | "same" | "ok"


@dataclass(frozen=True)
class Bad:
    """One bad (or harmless) variation of one argument kind."""

    label: str
    mutate: Callable[[Any], Any]
    expect: Outcome


def _nan_at(t: Any) -> Any:
    a = torch.as_tensor(np.array(t, dtype=np.float64) if not isinstance(t, torch.Tensor) else t.clone())
    a = a.double() if not a.is_floating_point() else a
    a.view(-1)[0] = float("nan")
    return a if isinstance(t, torch.Tensor) else a.numpy()


def _inf_at(t: torch.Tensor) -> torch.Tensor:
    a = t.clone()
    a.view(-1)[0] = float("inf")
    return a


def _train_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).train()


# the variations per argument kind, with the default outcome (rows may override per label)
KINDS: dict[str, list[Bad]] = {
    "x": [
        Bad("float64", lambda x: x.double(), "same"),
        Bad("no batch axis", lambda x: x[0], "error"),
        Bad("a NaN voxel", _nan_at, "error"),
        Bad("an Inf voxel", _inf_at, "error"),
        Bad("one channel too few", lambda x: x[:, :-1], "error"),
        Bad("empty batch", lambda x: x[:0], "error"),
        Bad("a list, not a tensor", lambda x: x.tolist(), "error"),
        Bad("non-contiguous", lambda x: x.transpose(-1, -2).contiguous().transpose(-1, -2), "same"),
        Bad("channels-last memory", lambda x: x.contiguous(memory_format=torch.channels_last)
            if x.dim() == 4 else x, "same"),
    ],
    "target": [
        Bad("-1", lambda t: -1, "error"),
        Bad("a class the model lacks", lambda t: 99, "error"),
        Bad("a float", lambda t: 1.5, "error"),
        Bad("a bool", lambda t: True, "error"),
        Bad("wrong length", lambda t: [1, 0, 1], "error"),
    ],
    "maps": [
        Bad("a NaN", _nan_at, "error"),
        Bad("all zero", lambda m: torch.zeros_like(torch.as_tensor(m)), "nan"),
        Bad("constant", lambda m: torch.ones_like(torch.as_tensor(m)), "nan"),
        Bad("no channel axis", lambda m: torch.as_tensor(m)[:, 0], "error"),
        Bad("wrong spatial shape", lambda m: torch.as_tensor(m)[..., :-1], "error"),
    ],
    "mask": [
        Bad("empty", lambda m: np.zeros_like(np.asarray(m)), "nan"),
        Bad("wrong shape", lambda m: np.asarray(m)[..., :-1], "error"),
        Bad("values other than 0/1", lambda m: np.asarray(m).astype(int) * 2, "error"),
        Bad("a NaN", _nan_at, "error"),
    ],
    "masks": [
        Bad("an empty ROI", lambda ms: {k: np.zeros_like(np.asarray(v)) for k, v in ms.items()}, "nan"),
        Bad("wrong shape", lambda ms: {k: np.asarray(v)[..., :-1] for k, v in ms.items()}, "error"),
        Bad("values other than 0/1", lambda ms: {k: np.asarray(v).astype(int) * 2 for k, v in ms.items()}, "error"),
        Bad("a list, not a mapping", lambda ms: list(ms.values()), "error"),
    ],
    "labels": [
        Bad("values 0/2", lambda y: np.where(np.asarray(y) == 1, 2, 0), "error"),
        Bad("wrong length", lambda y: np.asarray(y)[:-1], "error"),
        Bad("a NaN", _nan_at, "error"),
        Bad("one class only", lambda y: np.ones_like(np.asarray(y)), "nan"),
    ],
    "case_ids": [
        Bad("wrong length", lambda ids: list(ids)[:-1], "error"),
        Bad("integers", lambda ids: list(range(len(ids))), "ok"),
    ],
    "model": [
        Bad("in training mode", _train_copy, "same"),
        Bad("not a module", lambda m: "resnet18", "error"),
    ],
}


@dataclass(frozen=True)
class Row:
    """One public function: a valid call on the kit, and which of its arguments are fuzzed.

    ``name`` is the function's qualified public name (``"probes.metrics.hit_rate"``,
    ``"probes.hooks.HookRegistry.run_with_cache"``); ``call(kw)`` runs it with keyword dict
    ``kw`` (built by ``build(kit)``); ``args`` maps each fuzzed argument's name in ``kw`` to its
    kind in :data:`KINDS` or to a list of :class:`Bad` of its own; ``expect`` overrides outcomes
    by ``(argument, label)`` (with the reason in ``why``); ``skip`` drops a ``(argument,
    label)`` that does not apply (with the reason in ``why``).
    """

    name: str
    build: Callable[[Mapping[str, Any]], dict[str, Any]]
    call: Callable[[dict[str, Any]], Any]
    args: Mapping[str, str | Sequence[Bad]]
    expect: Mapping[tuple[str, str], Outcome] = field(default_factory=dict)
    why: Mapping[tuple[str, str], str] = field(default_factory=dict)
    skip: frozenset[tuple[str, str]] = frozenset()

    def cases(self) -> list[tuple[str, Bad, Outcome]]:
        """Every (argument, bad input, expected outcome) of this row."""
        return [(arg, bad, self.expect.get((arg, bad.label), bad.expect))
                for arg, kind in self.args.items() for bad in (KINDS[kind] if isinstance(kind, str) else kind)
                if (arg, bad.label) not in self.skip]


def params(rows: Sequence[Row]) -> list[Any]:
    """``pytest.param(row, arg, bad, expect)`` for every case of ``rows``, with readable ids."""
    import pytest

    return [pytest.param(row, arg, bad, expect, id=f"{row.name.rsplit('.', 1)[-1]}-{arg}-{bad.label}")
            for row in rows for arg, bad, expect in row.cases()]


def _frame(res: Any) -> pd.DataFrame | torch.Tensor:
    if isinstance(res, Result):
        return res.to_frame()
    if isinstance(res, pd.DataFrame):
        return res
    if isinstance(res, (float, int, np.floating, np.integer)):
        return torch.tensor([float(res)], dtype=torch.float64)
    if isinstance(res, tuple):
        return torch.cat([_frame(r).reshape(-1) for r in res])
    return torch.as_tensor(getattr(res, "maps", res)).detach().double()


def _equal(a: Any, b: Any) -> bool:
    fa, fb = _frame(a), _frame(b)
    if isinstance(fa, pd.DataFrame):
        if list(fa.columns) != list(fb.columns) or len(fa) != len(fb):
            return False
        num = [c for c in fa.columns if fa[c].dtype.kind == "f"]
        other = [c for c in fa.columns if c not in num]
        return fa[other].reset_index(drop=True).equals(fb[other].reset_index(drop=True)) and np.allclose(
            fa[num].to_numpy(float), fb[num].to_numpy(float), rtol=1e-4, atol=1e-6, equal_nan=True)
    return fa.shape == fb.shape and torch.allclose(fa, fb, rtol=1e-4, atol=1e-6, equal_nan=True)


def _nan_with_reason(res: Any) -> bool:
    f = _frame(res)
    if not isinstance(f, pd.DataFrame):  # a bare number or array: the warning carries the reason
        return bool(torch.isnan(f).any())
    if "reason" not in f.columns:
        return False
    nan = f["value"].isna()
    return bool(nan.any()) and bool((f.loc[nan, "reason"].str.len() > 0).all())


def undefined_warnings(caught: list) -> list:
    """The ``UndefinedValueWarning``s among recorded warnings."""
    return [w for w in caught if issubclass(w.category, UndefinedValueWarning)]


def run_case(row: Row, arg: str, bad: Bad, expect: Outcome, kit: Mapping[str, Any]) -> None:
    """Run ``row`` with ``bad`` applied to ``arg`` and assert ``expect`` and an untouched model."""
    kw = row.build(kit)
    model = kw.get("model")
    model = getattr(model, "model", model)  # a HookRegistry's model
    snap = ModelSnapshot.take(model) if isinstance(model, nn.Module) else None
    bad_kw = dict(kw)
    bad_kw[arg] = bad.mutate(kw[arg])
    trained = bad_kw[arg] if arg == "model" and isinstance(bad_kw[arg], nn.Module) else None
    trained_snap = ModelSnapshot.take(trained) if trained is not None else None
    where = f"{row.name}({arg}: {bad.label})"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if expect == "error":
            try:
                row.call(bad_kw)
            except AuditInputError as e:
                assert arg in str(e) or e.name == arg, f"{where}: the error does not name {arg!r}: {e}"
            else:
                raise AssertionError(f"{where}: no error was raised")
        else:
            res = row.call(bad_kw)
            if expect == "same":
                assert _equal(res, row.call(kw)), f"{where}: numbers differ from the valid call"
            elif expect == "nan":
                assert _nan_with_reason(res), f"{where}: no NaN with a reason in the result"
                assert any(issubclass(w.category, UndefinedValueWarning) for w in caught), \
                    f"{where}: no UndefinedValueWarning"
    if trained is not None:
        assert any("training mode" in str(w.message) for w in caught), f"{where}: no warning about training mode"
        assert trained_snap.diff(trained) == [], f"{where}: the model changed: {trained_snap.diff(trained)[:3]}"
    if snap is not None:
        assert snap.diff(model) == [], f"{where}: the model changed: {snap.diff(model)[:3]}"


def render_table(rows: list[Row], exempt: Mapping[str, str]) -> str:
    """Markdown: per function, the bad inputs covered and their expected outcome."""
    out = ["# Bad inputs, per instrument", "",
           "Generated from the fuzz matrix (`tests/fuzz/`; regenerate with "
           "`python -m tests.fuzz.table > docs/robustness.md`). Outcomes: **error** — a "
           "`probes.core.errors.AuditInputError` naming the argument; **NaN** — NaN with a `reason` "
           "and one `UndefinedValueWarning`; **same** — the numbers of the valid call; **ok** — a "
           "result. In every case the model is left as found.", ""]
    total = sum(len(r.cases()) for r in rows)
    out += [f"{len(rows)} functions, {total} bad inputs; {len(exempt)} functions not fuzzed (listed at the end, "
            "with the reason).", "", "| function | bad inputs | error | NaN | same | ok |", "|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: r.name):
        got = [e for _, _, e in row.cases()]
        out.append(f"| [`{row.name}`](#{row.name.replace('.', '').lower()}) | {len(got)} | "
                   + " | ".join(str(got.count(k)) for k in ("error", "nan", "same", "ok")) + " |")
    out.append("")
    for row in sorted(rows, key=lambda r: r.name):
        out.append(f"## `{row.name}`")
        out.append("")
        out.append("| argument | bad input | outcome |")
        out.append("|---|---|---|")
        for arg, bad, expect in row.cases():
            note = row.why.get((arg, bad.label), "")
            out.append(f"| `{arg}` | {bad.label} | {expect}{' — ' + note if note else ''} |")
        out.append("")
    if exempt:
        out += ["## Not fuzzed", "", "| function | why |", "|---|---|"]
        out += [f"| `{k}` | {v} |" for k, v in sorted(exempt.items())]
        out.append("")
    return "\n".join(out)
