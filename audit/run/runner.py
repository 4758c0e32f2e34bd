"""Plan and run an audit: every enabled instrument's units, resumable, isolated, deterministic.

:func:`run_audit` builds the :class:`~audit.run.context.Context`, asks each enabled instrument
for its units, and runs the units whose digest is not in the store yet (``resume``), showing a
rich progress bar per instrument (cases done/total, ETA). Each unit is seeded from the run's
seed and its own identity (not its position), so a resumed run equals an uninterrupted one.

- An instrument that does not apply (its ``needs``) is skipped with its reason in the manifest;
  so is a single unit an instrument plans with ``spec["skip"]`` (e.g. one method of several).
- A unit that raises is recorded with its traceback; the other units and instruments still
  run, and :class:`RunSummary` ``.failed`` is non-empty (the CLI exits with 1).
- After each instrument the model is compared with a snapshot taken before the run (weights,
  buffers, modes, ``requires_grad``, hooks); a difference is a failure of that instrument, and
  the snapshot's weights and flags are put back.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from audit.run.config import RunConfig
from audit.run.context import Context, build_context
from audit.run.plugin import INSTRUMENTS, Instrument, Unit
from audit.run.store import Store
from probes.core.model import ModelSnapshot

__all__ = ["RunSummary", "plan_units", "run_audit", "unit_digest"]

PACKAGES = ("medaudit", "torch", "numpy", "pandas", "scipy", "scikit-learn", "statsmodels", "timm", "monai",
            "captum", "zennit", "lime", "pydantic", "pyarrow")


@dataclass
class RunSummary:
    """What a run did: units computed / reused / failed, instruments skipped, the output folder."""

    out: Path
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    tables: dict[str, Path] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failed


def unit_digest(ctx: Context, inst: Instrument, params: Any, unit: Unit) -> str:
    """sha256 (16 hex) of everything a unit's numbers depend on (the tables it reads included)."""
    m = ctx.cfg.model
    upstream = {a: ctx.finished.get(a, {}).get("__digests__") for a in inst.after}
    payload = {"upstream": upstream, "instrument": inst.name, "params": params.model_dump(mode="json"), "unit": unit.key,
               "spec": dict(unit.spec), "weights": ctx.weights_sha256, "data": ctx.data_hash, "seed": ctx.seed,
               "interface": [m.input_layout, m.output, m.task], "target": ctx.target, "rois": list(ctx.rois)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan_units(ctx: Context, enabled: dict[str, Any], only: Sequence[str] | None = None
               ) -> tuple[list[tuple[Instrument, Any, list[Unit]]], dict[str, str]]:
    """(instrument, params, units) for each instrument that applies; skipped ones with their reason.

    ``only`` brings the instruments whose tables its instruments read (``after``) along: their
    finished units are reused, missing ones computed.
    """
    wanted = set(only or ())
    for name in reversed(list(INSTRUMENTS)):  # registration order: an instrument's `after` comes earlier
        if name in wanted:
            wanted |= set(INSTRUMENTS[name].after)
    plan, skipped = [], {}
    for name, params in enabled.items():
        if only and name not in wanted:
            continue
        inst = INSTRUMENTS[name]
        reason = inst.skip_reason(ctx)
        off = [a for a in inst.after if a not in enabled or a in skipped]
        if not reason and off:
            reason = f"needs the results of {off[0]!r}, which is " + (
                f"skipped ({skipped[off[0]]})" if off[0] in skipped else "switched off")
        if reason:
            skipped[name] = reason
            continue
        plan.append((inst, params, inst.plan(ctx, params)))
    return plan, skipped


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    out["torch"] = torch.__version__  # with its build tag (+cpu, +cu130): numbers can differ between builds
    out["cuda"] = str(torch.version.cuda)
    return out


def _size(ctx: Context, unit: Unit) -> int:
    s = unit.spec
    return int(s["stop"] - s["start"]) if "start" in s and "stop" in s else ctx.n


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_audit(cfg: RunConfig, *, only: Sequence[str] | None = None, fresh: bool = False,
              console: Console | None = None, ctx: Context | None = None) -> RunSummary:
    """Run the configured audit into ``cfg.out`` (module docstring); returns a :class:`RunSummary`.

    ``only``: run just these instruments (names as in the config). ``fresh``: forget finished
    units first (default: resume, reusing every unit whose digest is in the store).
    """
    from audit.run import instruments as _  # noqa: F401  registers the built-in instruments

    console = console or Console(stderr=True)
    enabled = cfg.instrument_params()
    if only:
        unknown = [n for n in only if n not in INSTRUMENTS]
        if unknown:
            from audit.run.config import ConfigError
            raise ConfigError([f"--only: unknown instrument {unknown[0]!r}; known: {', '.join(INSTRUMENTS)}"])
        off = [n for n in only if n not in enabled]
        if off:
            from audit.run.config import ConfigError
            raise ConfigError([f"--only: {off[0]!r} is switched off in the config (instruments.{off[0]}: false)"])
    store = Store(cfg.out)
    if fresh:
        import shutil
        for sub in ("units", "tables", "maps"):
            shutil.rmtree(store.out / sub, ignore_errors=True)
    store.out.mkdir(parents=True, exist_ok=True)
    store.clean_temporaries()
    t0 = time.perf_counter()
    started = _now()
    ctx = ctx or build_context(cfg)
    ctx.memo.clear()  # shared values are recomputed by the units that need them: a run times its own work
    torch_threads = torch.get_num_threads()
    snapshot = ModelSnapshot.take(ctx.model)
    plan, skipped = plan_units(ctx, enabled, only)
    summary = RunSummary(store.out, skipped=skipped)
    show = max((int(getattr(params, "show_cases", 0)) for _, params, _ in plan), default=0)
    if show:
        _write_shown_cases(ctx, store, show)
    manifest: dict[str, Any] = {
        "config": cfg.model_dump(mode="json"), "config_hash": cfg.config_hash(),
        "weights_sha256": ctx.weights_sha256, "data_hash": ctx.data_hash, "versions": _versions(),
        "seed": cfg.seed, "device": str(ctx.device), "torch_threads": torch_threads, "started": started,
        "ended": None, "n_cases": ctx.n, "channels": list(ctx.channels), "rois": list(ctx.rois),
        "target": ctx.target, "class_names": list(ctx.class_names), "task": ctx.task,
        "skipped": skipped, "units": [], "failures": [], "model_unchanged": {},
    }
    store.write_manifest(manifest)
    columns = (TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(), TextColumn("cases"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bars = {inst.name: progress.add_task(inst.name, total=sum(_size(ctx, u) for u in units))
                for inst, _, units in plan}
        for inst, params, units in plan:
            bad = [a for a in inst.after if ctx.finished.get(a, {}).get("__failed__")]
            if bad:
                failure = {"instrument": inst.name, "unit": "*", "error": f"not run: {bad[0]!r}, whose tables it "
                           "reads, failed", "traceback": ""}
                manifest["failures"].append(failure)
                summary.failed.append(failure)
                continue
            _run_instrument(ctx, store, inst, params, units, manifest, summary, progress, bars[inst.name])
            ctx.finished[inst.name] = _collect(ctx, store, inst, params, units)
            diff = snapshot.diff(ctx.model)
            manifest["model_unchanged"][inst.name] = not diff
            if diff:
                _restore(ctx.model, snapshot)
                failure = {"instrument": inst.name, "unit": "*", "error": "the instrument changed the model: "
                           + "; ".join(diff[:5]), "traceback": ""}
                manifest["failures"].append(failure)
                summary.failed.append(failure)
            store.write_manifest(manifest)
    for inst, params, units in plan:
        summary.tables.update(_assemble(ctx, store, inst, params, units))
    manifest["ended"] = _now()
    manifest["seconds"] = round(time.perf_counter() - t0, 3)
    manifest["tables"] = {k: str(v.relative_to(store.out)) for k, v in summary.tables.items()}
    store.write_manifest(manifest)
    return summary


def _run_instrument(ctx: Context, store: Store, inst: Instrument, params: Any, units: list[Unit],
                    manifest: dict, summary: RunSummary, progress: Progress, bar: Any) -> None:
    for unit in units:
        digest = unit_digest(ctx, inst, params, unit)
        entry = {"instrument": inst.name, "unit": unit.key, "digest": digest}
        if unit.spec.get("skip"):  # the instrument planned it but it cannot run here: say why
            entry.update(status="skipped", reason=str(unit.spec["skip"]), seconds=0.0)
            summary.skipped[f"{inst.name}/{unit.key}"] = str(unit.spec["skip"])
            manifest["skipped"][f"{inst.name}/{unit.key}"] = str(unit.spec["skip"])
        elif store.has(inst.name, digest):
            entry.update(status="reused", seconds=0.0)
            summary.reused.append(f"{inst.name}/{unit.key}")
        else:
            t = time.perf_counter()
            seed = ctx.unit_seed(inst.name, unit.key)
            torch.manual_seed(seed)
            try:
                with warnings.catch_warnings(record=True) as caught:
                    # a unit's warnings go to the manifest, once each, not to the terminal
                    warnings.simplefilter("always")
                    tables = dict(inst.run(ctx, params, unit))
                notes = sorted({f"{w.category.__name__}: {' '.join(str(w.message).split())[:300]}" for w in caught})
                if notes:
                    entry["warnings"] = notes[:10]
                seconds = round(time.perf_counter() - t, 3)
                store.write_unit(inst.name, digest, tables, {"instrument": inst.name, "unit": unit.key,
                                                             "spec": dict(unit.spec), "seconds": seconds})
                entry.update(status="computed", seconds=seconds)
                summary.computed.append(f"{inst.name}/{unit.key}")
            except Exception as err:  # isolation: one failing unit must not stop the audit
                failure = {"instrument": inst.name, "unit": unit.key, "error": f"{type(err).__name__}: {err}",
                           "traceback": traceback.format_exc()}
                entry.update(status="failed", seconds=round(time.perf_counter() - t, 3), error=failure["error"])
                manifest["failures"].append(failure)
                summary.failed.append(failure)
        manifest["units"].append(entry)
        store.write_manifest(manifest)
        progress.advance(bar, _size(ctx, unit))


def _parts(ctx: Context, store: Store, inst: Instrument, params: Any, units: list[Unit]
           ) -> tuple[dict[str, list], list[str], bool]:
    parts: dict[str, list] = {}
    digests, failed = [], False
    for unit in units:
        if unit.spec.get("skip"):
            continue
        digest = unit_digest(ctx, inst, params, unit)
        digests.append(digest)
        if store.has(inst.name, digest):
            for name, obj in store.read_unit(inst.name, digest).items():
                parts.setdefault(name, []).append(obj)
        else:
            failed = True
    return parts, digests, failed


def _collect(ctx: Context, store: Store, inst: Instrument, params: Any, units: list[Unit]) -> dict[str, Any]:
    """An instrument's tables for the instruments that read them, with its digests and failure flag."""
    parts, digests, failed = _parts(ctx, store, inst, params, units)
    out: dict[str, Any] = {k: (np.concatenate(v) if isinstance(v[0], np.ndarray) else pd.concat(v, ignore_index=True))
                           for k, v in parts.items()}
    out["__digests__"], out["__failed__"] = digests, failed
    return out


def _assemble(ctx: Context, store: Store, inst: Instrument, params: Any, units: list[Unit]) -> dict[str, Path]:
    """Concatenate the finished units' tables (in plan order) into ``tables/``; arrays into ``maps/``."""
    parts, _, _ = _parts(ctx, store, inst, params, units)
    out = {}
    for name, objs in parts.items():
        if isinstance(objs[0], np.ndarray):
            store.write_maps(inst.name, name, {"maps": np.concatenate(objs)})
        else:
            out[f"{inst.name}.{name}"] = store.write_table(inst.name, name, pd.concat(objs, ignore_index=True))
    return out


def _write_shown_cases(ctx: Context, store: Store, k: int) -> Path:
    """``maps/cases/inputs.npz``: the inputs and ROI masks of the cases whose maps are kept, so the
    report draws them without reading the cohort (images float16, masks as ``mask_<roi>``)."""
    idx = ctx.show_index(k)
    cases = ctx.cases()
    x = torch.stack([torch.tensor(np.array(cases[i].image)) for i in idx]).numpy().astype(np.float16)
    shape = x.shape[2:]
    masks = {f"mask_{r}": np.stack([cases[i].masks.get(r, np.zeros(shape, bool)) for i in idx]).astype(bool)
             for r in ctx.rois}
    return store.write_maps("cases", "inputs", {
        "images": x, "index": np.asarray(idx, np.int64), "case_ids": np.array([cases[i].case_id for i in idx]),
        "labels": ctx.labels()[idx], "channels": np.array(ctx.channels), "rois": np.array(list(ctx.rois)), **masks})


def _restore(model: torch.nn.Module, snap: ModelSnapshot) -> None:
    with torch.no_grad():
        model.load_state_dict(snap.tensors)
    for name, m in model.named_modules():
        m.training = snap.training.get(name, m.training)
    for name, p in model.named_parameters():
        p.requires_grad_(snap.requires_grad.get(name, p.requires_grad))
