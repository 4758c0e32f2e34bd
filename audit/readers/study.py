"""The whole reader-study analysis in one call: every instrument the reads table's columns allow.

:func:`analyze_reads` validates the reads (:func:`audit.readers.reads.validate_reads`), runs
each instrument whose columns are present — GEE odds ratios
(:mod:`audit.readers.gee`), the patient bootstrap (:mod:`audit.readers.bootstrap`), OR and DBM
MRMC (:mod:`audit.readers.mrmc`, :mod:`audit.readers.dbm`), ROC curves
(:mod:`audit.readers.roc`), calibration (:mod:`audit.readers.calibration`), decision curves
(:mod:`audit.readers.decision`) and outcome changes (:mod:`audit.readers.outcomes`) — and
writes each native table as CSV as soon as its instrument finishes, so a failure in one
instrument loses nothing computed before it. The result collects every instrument's result.
"""

from __future__ import annotations

import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import pandas as pd

from audit.readers.bootstrap import cluster_bootstrap
from audit.readers.calibration import reads_calibration
from audit.readers.dbm import mrmc_dbm
from audit.readers.decision import reads_decision_curve
from audit.readers.gee import gee_assistance
from audit.readers.mrmc import mrmc_or
from audit.readers.outcomes import (cochran_q_correctness, decision_changes, mcnemar_correctness, outcome_counts,
                                    outcome_transitions)
from audit.readers.reads import ReadColumns, check_columns, validate_reads
from audit.readers.result import ReaderResult, combine_summaries
from audit.readers.roc import reader_roc
from probes.core.errors import UndefinedValueWarning, warn_undefined
from probes.core.result import Result, Summary, tidy
from probes.core.validate import check_alpha, check_int

__all__ = ["analyze_reads", "ReaderStudyResult"]

Instrument = tuple[str, frozenset, Callable[[], ReaderResult]]


def _stem(instrument: str, table: str) -> str:
    """File and table name: the instrument's name, then the table's unless it is a one-table result."""
    return instrument if table == "result" else f"{instrument}_{table}"


@dataclass(frozen=True, eq=False)
class ReaderStudyResult(Result):
    """Every instrument :func:`analyze_reads` ran, with its summary, and what was skipped or failed.

    ``results``: instrument name → its result, in run order; ``summaries``: name → its
    :class:`probes.core.result.Summary`; ``skipped``: name → why it did not apply; ``failed``:
    name → the error; ``warning_messages``: name → warnings it raised; ``files``: the CSVs written.
    ``tables()``: every instrument's tidy tables, named ``<instrument>[_<table>]`` (the CSV names);
    ``to_frame()``: all of them stacked, with the table name in the first column ``table``.
    """

    results: dict[str, ReaderResult]
    summaries: dict[str, Summary]
    skipped: dict[str, str]
    failed: dict[str, str]
    warning_messages: dict[str, str]
    files: list[Path]

    title: ClassVar[str] = "Reader study"

    @property
    def done(self) -> list[str]:
        """The instruments that ran, in order."""
        return list(self.results)

    def tables(self) -> dict[str, pd.DataFrame]:
        """``{<instrument>[_<table>]: tidy table}`` over every instrument that ran."""
        return {_stem(name, key): df for name, res in self.results.items() for key, df in res.tables().items()}

    def to_frame(self) -> pd.DataFrame:
        """Every tidy table stacked: table, the identifier columns of each, metric, value."""
        parts = [df.assign(table=name)[["table", *df.columns]] for name, df in self.tables().items()]
        return tidy(pd.concat(parts, ignore_index=True)) if parts else pd.DataFrame(columns=["table", "metric",
                                                                                               "value"])

    def summary(self) -> Summary:
        """What ran, was skipped or failed, then every instrument's summary and warnings."""
        rows = ([(k, "done", f"{len(r.tables())} table(s)") for k, r in self.results.items()]
                + [(k, "skipped", v) for k, v in self.skipped.items()]
                + [(k, "failed", v) for k, v in self.failed.items()])
        overview = pd.DataFrame(rows, columns=["instrument", "status", "detail"])
        parts = dict(self.summaries)
        parts.update({f"{k} warnings": Summary(v) for k, v in self.warning_messages.items()})
        return combine_summaries(self.title, overview, parts)


def _instruments(reads: pd.DataFrame, *, n_boot: int, seed: int, alpha: float) -> list[Instrument]:
    """(name, needed columns, call) of every instrument, in run order, for validated reads."""
    std = ReadColumns()  # validated reads carry the standard names
    phases = list(reads["phase"].cat.categories)
    have = set(reads.columns)
    dec, sc, ai = frozenset({"decision"}), frozenset({"score"}), frozenset({"ai_prob"})
    stats = [s for s, need in (("accuracy", dec), ("sensitivity", dec), ("specificity", dec), ("auc", sc))
             if need <= have]
    out: list[Instrument] = [
        ("gee", dec, lambda: gee_assistance(reads, std, alpha=alpha, paired=False)),
        ("bootstrap", frozenset(), lambda: cluster_bootstrap(reads, std, statistic=stats, n_boot=n_boot, seed=seed,
                                                             alpha=alpha, paired=False))]
    if len(phases) >= 2:
        out += [("mrmc_or", sc, lambda: mrmc_or(reads, std, alpha=alpha)),
                ("mrmc_dbm", sc, lambda: mrmc_dbm(reads, std, alpha=alpha))]
    out += [
        ("roc", sc, lambda: reader_roc(reads, std, alpha=alpha)),
        ("calibration_ai", ai, lambda: reads_calibration(reads, std)),
        ("decision_curve_ai", ai, lambda: reads_decision_curve(reads, std, n_boot=min(n_boot, 200), seed=seed,
                                                                alpha=alpha)),
        ("decision_curve_readers", dec, lambda: reads_decision_curve(reads, std, prob="decision")),
        ("outcomes", dec, lambda: outcome_counts(reads, std)),
        ("outcome_transitions", dec, lambda: outcome_transitions(reads, std)),
        ("decision_changes", dec | ai, lambda: decision_changes(reads, std))]
    for later in phases[1:]:
        out.append((f"mcnemar_{phases[0]}_vs_{later}".replace(" ", "_").replace("+", "plus"), dec,
                    lambda later=later: mcnemar_correctness(reads, std, phase_a=phases[0], phase_b=later)))
    if len(phases) >= 3:
        out.append(("cochran_q", dec, lambda: cochran_q_correctness(reads, std)))
    return out


def analyze_reads(reads: pd.DataFrame, columns: ReadColumns = ReadColumns(), *, out: str | Path | None = None,
                  n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                  progress: Callable[[str], None] | None = None) -> ReaderStudyResult:
    """Run every reader-study instrument the table's columns allow; write each native table as CSV.

    Needs reader, case, truth, phase. With ``decision``: GEE odds ratios of a correct read,
    outcome counts/transitions, McNemar (first vs each later phase) and Cochran's Q (≥ 3
    phases), bootstrap of accuracy/sensitivity/specificity, decision curves of the calls. With
    ``score``: MRMC (OR with jackknife covariance; DBM) and ROC curves, bootstrap AUC. With
    ``ai_prob``: calibration and the AI's decision curve, and decision changes toward the AI.
    ``n_boot`` patient resamples (at most 200 for the decision-curve bands), ``seed``, CIs at
    level 1 − ``alpha``. The input is validated first (a bad table raises
    :class:`audit.readers.reads.ReadsError`); afterwards an instrument that fails is recorded in
    ``failed`` (with its traceback in ``<name>.error.txt``) and the others still run; values an
    instrument cannot define are NaN with a ``reason`` (e.g. the bootstrap's differences of phases
    read by different reader sets) and one :class:`probes.core.errors.UndefinedValueWarning` says
    which instruments hold them. With
    ``out``: ``reads_validated.csv``, one CSV per native table (``<instrument>[_<table>].csv``)
    and ``summary.txt``.
    """
    check_alpha(alpha)
    check_int(n_boot, "n_boot", 2)
    # every present field is checked at the door: a NaN score must not just fail the score instruments
    present = [f for f in ("reader", "case", "truth", "phase", "decision", "score", "ai_prob")
               if isinstance(reads, pd.DataFrame) and getattr(check_columns(columns), f) in reads.columns]
    r = validate_reads(reads, columns, need=tuple(dict.fromkeys(("reader", "case", "truth", "phase", *present))),
                       paired=False)
    folder = Path(out) if out is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        r.to_csv(folder / "reads_validated.csv", index=False)
    results, summaries, skipped, failed, warned, files = {}, {}, {}, {}, {}, []
    undefined: list[str] = []
    for name, needs, call in _instruments(r, n_boot=n_boot, seed=seed, alpha=alpha):
        lacking = needs - set(r.columns)
        if lacking:
            skipped[name] = f"needs column(s) {sorted(lacking)}"
            continue
        if progress:
            progress(name)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                res = call()
        except Exception as err:  # noqa: BLE001 - one failed instrument must not lose the others
            failed[name] = f"{type(err).__name__}: {err}"
            if folder is not None:
                (folder / f"{name}.error.txt").write_text(traceback.format_exc())
            continue
        if caught:
            warned[name] = "".join(f"{w.category.__name__}: {w.message}\n" for w in caught)
            undefined += [name for w in caught if issubclass(w.category, UndefinedValueWarning)]
        results[name], summaries[name] = res, res.summary()
        for key, df in res.native_tables().items():
            if folder is not None:
                path = folder / f"{_stem(name, key)}.csv"
                df.to_csv(path, index=False)
                files.append(path)
    # the instruments' own warnings were recorded above; the caller gets one for the whole study
    warn_undefined("analyze_reads", [f"NaN values in {name} (see its reason column and warning_messages)"
                                     for name in undefined])
    study = ReaderStudyResult(results, summaries, skipped, failed, warned, files)
    if folder is not None:
        (folder / "summary.txt").write_text(str(study.summary()) + "\n")
    return study
