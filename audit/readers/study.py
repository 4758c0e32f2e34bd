"""Reader-study statistics in one place: the public entry point of the reader-study analysis.

Input is a tidy table with one row per read (:mod:`audit.reads`). The instruments live in
small modules and are re-exported here:

- :func:`gee_assistance` — population-averaged odds ratio of a correct read per phase
  (binomial GEE clustered by patient; Liang & Zeger 1986), :mod:`audit.reader_gee`.
- :func:`cluster_bootstrap` — patient (cluster) bootstrap CIs of AUC, accuracy, sensitivity,
  specificity per phase and their differences; readers are treated as *fixed*
  (:mod:`audit.reader_bootstrap`).
- :func:`mrmc_or` — Obuchowski & Rockette (1995) with Hillis (2007) denominator df: random
  readers and cases, fixed readers, fixed cases (:mod:`audit.mrmc`); :func:`mrmc_dbm` —
  Dorfman–Berbaum–Metz pseudovalue ANOVA (:mod:`audit.mrmc_dbm`).
- :func:`delong` — DeLong et al. (1988) paired/unpaired AUC comparison (:mod:`probes.roc`).
- :func:`reader_roc`, :func:`reads_calibration`, :func:`reads_decision_curve` (Vickers &
  Elkin 2006) — :mod:`audit.reader_curves`.
- :func:`outcome_counts`, :func:`outcome_transitions`, :func:`decision_changes`,
  :func:`mcnemar_correctness`, :func:`cochran_q_correctness` — :mod:`audit.reader_outcomes`.
- :func:`simulate_reads`, :func:`write_example_reads` — a simulated 3-phase, 4-reader study
  with a known effect (:mod:`audit.reader_sim`).

:func:`analyze_reads` runs every instrument the columns allow and writes each table as it
finishes (CSV), so a failure in one instrument loses nothing computed before it.
"""

from __future__ import annotations

import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from probes.metrics.roc import delong

from audit.readers.mrmc import MRMCResult, mrmc_or
from audit.readers.dbm import mrmc_dbm
from audit.readers.bootstrap import BootstrapResult, cluster_bootstrap
from audit.readers.curves import (brier_score, calibration_fit, decision_curve, expected_calibration_error,
                            net_benefit, reader_roc, reads_calibration, reads_decision_curve,
                            reliability_curve)
from audit.readers.gee import GEEAssistance, gee_assistance
from audit.readers.outcomes import (cochran_q_correctness, decision_changes, mcnemar_correctness, outcome_counts,
                              outcome_transitions)
from audit.readers.simulate import example_reads, simulate_reads, write_example_reads
from audit.readers.reads import ReadColumns, ReadsError, validate_reads

__all__ = ["analyze_reads", "ReaderStudyResult", "gee_assistance", "cluster_bootstrap", "mrmc_or", "mrmc_dbm",
           "delong", "reader_roc", "reads_calibration", "reads_decision_curve", "reliability_curve",
           "brier_score", "expected_calibration_error", "calibration_fit", "net_benefit", "decision_curve",
           "outcome_counts", "outcome_transitions", "decision_changes", "mcnemar_correctness",
           "cochran_q_correctness", "simulate_reads", "write_example_reads", "example_reads",
           "validate_reads", "ReadColumns", "ReadsError", "GEEAssistance", "BootstrapResult", "MRMCResult"]


@dataclass
class ReaderStudyResult:
    """Every table :func:`analyze_reads` produced, the text summaries, and what was skipped/failed."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    summaries: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)   # instrument → why it did not apply
    failed: dict[str, str] = field(default_factory=dict)    # instrument → error message
    files: list[Path] = field(default_factory=list)
    done: list[str] = field(default_factory=list)            # instruments that ran, in order

    def summary(self) -> str:
        """All instruments' summaries, then what was skipped or failed."""
        parts = [f"== {k}\n{v}" for k, v in self.summaries.items()]
        parts += [f"-- skipped {k}: {v}" for k, v in self.skipped.items()]
        parts += [f"!! failed {k}: {v}" for k, v in self.failed.items()]
        return "\n\n".join(parts)


def _frames(obj) -> dict[str, pd.DataFrame]:
    if isinstance(obj, pd.DataFrame):
        return {"": obj}
    if hasattr(obj, "to_frames"):
        return obj.to_frames()
    out = {k: v for k, v in vars(obj).items() if isinstance(v, pd.DataFrame)}
    return out or {"": obj.to_frame()}


def analyze_reads(reads: pd.DataFrame, columns: ReadColumns = ReadColumns(), *, out: str | Path | None = None,
                  n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                  progress: Callable[[str], None] | None = None) -> ReaderStudyResult:
    """Run every reader-study instrument the table's columns allow; write each table as CSV.

    Needs reader, case, truth, phase. With ``decision``: GEE odds ratios of a correct read,
    outcome counts/transitions, McNemar (first vs each later phase) and Cochran's Q (≥ 3
    phases), bootstrap of accuracy/sensitivity/specificity, decision curves of the calls. With
    ``score``: MRMC (OR with jackknife covariance; DBM) and ROC curves, bootstrap AUC. With
    ``ai_prob``: calibration and the AI's decision curve, and decision changes toward the AI.
    The input is validated first (a bad table raises :class:`ReadsError`); afterwards an
    instrument that fails is recorded in ``failed`` and the others still run.
    """
    r = validate_reads(reads, columns, paired=False)
    cols = set(r.columns)
    res = ReaderStudyResult()
    folder = Path(out) if out is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        r.to_csv(folder / "reads_validated.csv", index=False)
    phases = list(r["phase"].cat.categories)
    std = ReadColumns()  # r has standard names now

    def run(name: str, needs: set[str], fn: Callable[[], object]) -> None:
        lacking = needs - cols
        if lacking:
            res.skipped[name] = f"needs column(s) {sorted(lacking)}"
            return
        if progress:
            progress(name)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                obj = fn()
            for w in caught:
                res.summaries.setdefault(f"{name} warnings", "")
                res.summaries[f"{name} warnings"] += f"{w.category.__name__}: {w.message}\n"
        except Exception as err:  # noqa: BLE001 - one failed instrument must not lose the others
            res.failed[name] = f"{type(err).__name__}: {err}"
            if folder is not None:
                (folder / f"{name}.error.txt").write_text(traceback.format_exc())
            return
        res.done.append(name)
        if hasattr(obj, "summary"):
            res.summaries[name] = obj.summary()
        for key, df in _frames(obj).items():
            tname = f"{name}_{key}" if key else name
            res.tables[tname] = df
            if folder is not None:
                path = folder / f"{tname}.csv"
                df.to_csv(path, index=False)
                res.files.append(path)

    dec, sc, ai = {"decision"}, {"score"}, {"ai_prob"}
    run("gee", dec, lambda: gee_assistance(r, std, alpha=alpha, paired=False))
    stats = [s for s, need in (("accuracy", dec), ("sensitivity", dec), ("specificity", dec), ("auc", sc))
             if need <= cols]
    run("bootstrap", set(), lambda: cluster_bootstrap(r, stats, n=n_boot, seed=seed, alpha=alpha, columns=std,
                                                      paired=False))
    if len(phases) >= 2:
        run("mrmc_or", sc, lambda: mrmc_or(r, std, alpha=alpha))
        run("mrmc_dbm", sc, lambda: mrmc_dbm(r, std, alpha=alpha))
    run("roc", sc, lambda: reader_roc(r, std, alpha=alpha))
    run("calibration_ai", ai, lambda: reads_calibration(r, std))
    run("decision_curve_ai", ai, lambda: reads_decision_curve(r, std, n_boot=min(n_boot, 200), seed=seed,
                                                              alpha=alpha))
    run("decision_curve_readers", dec, lambda: reads_decision_curve(r, std, prob="decision"))
    run("outcomes", dec, lambda: outcome_counts(r, std))
    run("outcome_transitions", dec, lambda: outcome_transitions(r, std))
    run("decision_changes", dec | ai, lambda: decision_changes(r, std))
    for later in phases[1:]:
        run(f"mcnemar_{phases[0]}_vs_{later}".replace(" ", "_").replace("+", "plus"), dec,
            lambda later=later: mcnemar_correctness(r, std, phase_a=phases[0], phase_b=later))
    if len(phases) >= 3:
        run("cochran_q", dec, lambda: cochran_q_correctness(r, std))
    if folder is not None:
        (folder / "summary.txt").write_text(res.summary() + "\n")
    return res
