"""`audit demo`: synthetic cohort with a planted shortcut → CPU-trained CNN → the audit.

Steps (each timed, each with a progress bar when it takes more than a second):
1. build the synthetic cohort splits (``audit.synthetic.make_splits``) — shortcut planted;
2. train the demo classifier, or reuse the cached checkpoint with the same config hash
   (cache: ``$MEDAUDIT_CACHE`` or ``~/.cache/medaudit``), and copy it with its card to ``out``;
3. check the hook registry on the model, predict every split, and analyse the package's
   simulated reader study.
Written to ``out``: ``metrics.csv`` (per split, incl. counterfactual sets),
``predictions.csv``, ``hooks_verify.csv``, ``cohort_manifest.csv``, ``synthetic_panel.png``,
``model.safetensors`` with ``model_card.json``, ``readers/`` (reader-study tables and
``summary.txt``) and ``timings.csv``. Tables are written as each step finishes, so an
interrupted demo keeps what it computed.

``out`` is a model folder: ``audit.training.load_trained(out)`` loads the demo model (its
architecture and arguments come from the card), and ``audit verify out`` checks its hooks.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from audit.training import CARD, TrainConfig, cache_key, train_or_load

__all__ = ["DemoConfig", "cache_root", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    """The demo's cohort and model settings (see ``audit.synthetic.SyntheticConfig``).

    The shortcut is planted but imperfect (marker in 90% of class 1, 10% of class 0), while
    the lesion shape on T1c determines the label: a model may use either, and the audit
    instruments are there to find out which.
    """

    n_cases: int = 1500
    size: int = 128
    q1: float = 0.9
    q0: float = 0.1
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    audit_cases: int = 32  # the default audit of the demo model runs on this many test cases (0: none)


def cache_root() -> Path:
    """Where trained demo models are cached: ``$MEDAUDIT_CACHE``, else ``~/.cache/medaudit``."""
    return Path(os.environ.get("MEDAUDIT_CACHE", Path.home() / ".cache" / "medaudit"))


@contextmanager
def _step(progress: Progress, label: str, timings: list[dict], total: float | None = None) -> Iterator:
    task = progress.add_task(label, total=total)
    t0 = time.perf_counter()

    def advance(_name: str = "", amount: float = 1.0) -> None:
        progress.advance(task, amount)
    try:
        yield advance
    finally:
        progress.update(task, completed=total if total is not None else 1, total=total or 1)
        timings.append({"step": label, "seconds": round(time.perf_counter() - t0, 2)})


def run_demo(out: str | Path = "reports/demo", cfg: DemoConfig = DemoConfig(),
             console: Console | None = None) -> dict[str, Path]:
    """Run the demo end to end; returns the written files by name (``out`` becomes a model folder:
    ``audit.training.load_trained(out)`` loads the demo model)."""
    from audit.figures import cohort_panel
    from audit.synthetic import SyntheticConfig, make_splits
    from audit.training import predict_proba
    from probes import HookRegistry

    console = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    timings: list[dict] = []
    t_start = time.perf_counter()
    scfg = SyntheticConfig(n_cases=cfg.n_cases, dim=2, size=cfg.size, q1=cfg.q1, q0=cfg.q0, seed=cfg.seed)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        with _step(progress, "synthetic cohort (MNI152 anatomy, 4 contrasts)", timings):
            splits = make_splits(scfg)
        manifest = pd.concat([c.manifest.assign(split=name) for name, c in splits.items()], ignore_index=True)
        files["cohort_manifest"] = _write_csv(manifest, out / "cohort_manifest.csv")
        files["synthetic_panel"] = out / "synthetic_panel.png"
        cohort_panel(splits["test"], n=4, path=files["synthetic_panel"])

        key = cache_key(dict(splits["train"].meta), cfg.train)
        folder = cache_root() / "models" / key
        with _step(progress, f"train {cfg.train.arch} ({cfg.train.epochs} epochs, CPU)", timings, 1.0) as adv:
            result = train_or_load(splits, cfg.train, folder, progress=adv)
        for name, filename in (("model_card", CARD), ("checkpoint", result.card["checkpoint"])):
            files[name] = Path(shutil.copy(folder / filename, out / filename))
        metrics = pd.DataFrame([{"split": k, **v} for k, v in result.card["metrics"].items()])
        files["metrics"] = _write_csv(metrics, out / "metrics.csv")

        with _step(progress, "hook registry self-check (verify)", timings):
            # copies: Case arrays are read-only
            x = torch.stack([torch.tensor(c.image) for c in list(splits["test"])[:4]])
            verify = HookRegistry(result.model).verify(x).table
        files["hooks_verify"] = _write_csv(verify, out / "hooks_verify.csv")

        with _step(progress, "predictions on every split", timings):
            rows = []
            for name, cohort in splits.items():
                p = predict_proba(result.model, cohort)
                for case, prob in zip(cohort, p):
                    rows.append({"split": name, "case_id": case.case_id, "label": case.label,
                                 "p1": float(prob[1]), "marker": bool("marker" in case.masks)})
        files["predictions"] = _write_csv(pd.DataFrame(rows), out / "predictions.csv")

        # the reader-study half of the audit, on the package's simulated 3-phase, 4-reader study
        with _step(progress, "reader study (simulated 444 reads: GEE, bootstrap, MRMC, curves)", timings):
            from audit.readers import analyze_reads, write_example_reads

            reads = write_example_reads(out / "readers" / "example_reads.csv")
            study = analyze_reads(reads, out=out / "readers", n_boot=1000, seed=cfg.seed)
        files["reader_summary"] = out / "readers" / "summary.txt"
        if study.failed:
            raise RuntimeError(f"reader-study instruments failed: {study.failed}")
    if cfg.audit_cases:
        console.print(f"[bold]default audit of the demo model[/bold] ({cfg.audit_cases} test cases)")
        t = time.perf_counter()
        run = demo_audit(out, scfg, result.card, splits, cfg, console)
        timings.append({"step": "default audit (audit run)", "seconds": round(time.perf_counter() - t, 2)})
        files["audit_manifest"] = run.out / "manifest.json"
        files["report"] = run.out / "report.html"
        if not run.ok:
            raise RuntimeError(f"the default audit failed: {run.failed[0]['instrument']}: {run.failed[0]['error']}")
    timings.append({"step": "total", "seconds": round(time.perf_counter() - t_start, 2)})
    files["timings"] = _write_csv(pd.DataFrame(timings), out / "timings.csv")
    _summary(console, result, metrics, verify, timings, out)
    return files


def demo_config(out: Path, scfg: Any, card: dict, cfg: DemoConfig) -> Any:
    """The audit-run config of the demo model (``audit init --template demo`` with its checkpoint)."""
    from audit.run import parse_config

    return parse_config({
        "model": {"path": str(out / card["checkpoint"]), "arch": card["arch"], "arch_kwargs": card["arch_kwargs"],
                  "num_classes": card["num_classes"], "in_chans": card["in_chans"], "class_names": card["classes"]},
        "cohort": {"source": "synthetic", "synthetic": scfg.to_dict(), "counterfactuals": ["t1c_only", "no_marker"],
                   "max_cases": cfg.audit_cases},
        "out": str(out / "audit"), "seed": cfg.seed,
    }, "demo")


def demo_audit(out: Path, scfg: Any, card: dict, splits: dict, cfg: DemoConfig, console: Console | None = None) -> Any:
    """Run the default audit on the demo model into ``out/audit`` (the splits are reused)."""
    from audit.run import run_audit
    from audit.run.context import build_context

    from audit.report import evaluate_findings

    from audit.report.html import render_report

    rc = demo_config(out, scfg, card, cfg)
    summary = run_audit(rc, ctx=build_context(rc, splits), console=console)
    readers = out / "readers"
    render_report(summary.out, findings=evaluate_findings(summary.out), readers=readers if readers.is_dir() else None)
    return summary


def _write_csv(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def _summary(console: Console, result, metrics: pd.DataFrame, verify: pd.DataFrame, timings: list[dict],
             out: Path) -> None:
    from rich.table import Table

    t = Table(title=f"demo model: {result.card['arch']} ({'cached' if result.reused else 'trained'})")
    for col in ("split", "n", "accuracy", "auc"):
        t.add_column(col)
    for _, r in metrics.iterrows():
        t.add_row(r.split, str(int(r.n)), f"{r.accuracy:.3f}", f"{r.auc:.3f}")
    console.print(t)
    ok = bool(verify.passed.all())
    console.print(f"hook self-check: {'all passed' if ok else 'FAILED'} "
                  f"({len(verify)} checks, max |err| {verify.max_abs_err.max():.1e})")
    console.print(f"total {timings[-1]['seconds']:.0f} s — tables in {out}/")
    report = out / "audit" / "report.html"
    if report.is_file():
        console.print(f"audit report: {report.resolve()}", highlight=False, soft_wrap=True)
