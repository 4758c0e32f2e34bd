"""Clustered (patient) bootstrap of reader-study statistics per phase and their differences.

Resampling unit: the patient (case). A resample draws P patients with replacement (an
(n_boot, P) index matrix from :func:`probes.core.stats.bootstrap_indices`,
``numpy.random.default_rng(seed).integers(0, P, (n_boot, P))`` — the same draws as
``scipy.stats.bootstrap`` with that generator) and keeps *all* reads of each drawn patient, so
the correlation between the reads of one patient (readers, phases) is preserved. Readers are
not resampled: **a patient bootstrap treats readers as fixed** — its CIs generalise to new
patients read by these readers, not to new readers (for that use an MRMC analysis,
:func:`audit.readers.mrmc.mrmc_or`).

Vectorised: a resample is a vector w of patient multiplicities, so every statistic is a ratio
of w-weighted sums (exact in float64: the sums are of integers):
- accuracy_p    = Σ_c w_c·correct_cp / Σ_c w_c·reads_cp (reads pooled over readers),
- sensitivity_p = Σ_c w_c·TP_cp / Σ_c w_c·positive reads_cp, specificity_p likewise on negatives,
- AUC_p = mean over readers of the empirical AUC (Mann–Whitney, ties ½) of the reader's scores
  in phase p (``auc="reader_mean"``) or the AUC of all reads of the phase pooled
  (``auc="pooled"``); with weights, AUC = Σ_i Σ_j w_i w_j ψ(x_i, y_j) / (Σ_i w_i · Σ_j w_j) over
  positive reads i and negative reads j, computed for all resamples at once from cumulative
  weighted counts over the score-sorted reads: O(n · reads) in total.
Differences (phase b − phase a, for every pair a before b) are taken within each resample.

A resample with a single truth class (for a reader or a phase) leaves sensitivity,
specificity or AUC undefined: it is counted, excluded (NaN) and reported (``n_excluded``, and a
:class:`OneClassResampleWarning`). CIs (``interval=``): ``"percentile"`` (α/2 and 1 − α/2 quantiles of the valid
replicates, linear interpolation as ``numpy.percentile``) or ``"bca"`` (bias-corrected and
accelerated, Efron & Tibshirani 1993 §14.3 / eq. 14.15 with the acceleration from a
leave-one-patient-out jackknife — the formulas of ``scipy.stats.bootstrap(method="BCa")``).
SE: standard deviation (ddof = 1) of the valid replicates.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from itertools import combinations
from typing import ClassVar, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import special

from audit.readers.reads import ReadColumns, ReadsError, check_columns, check_frame, validate_reads
from audit.readers.result import Layout, ReaderResult
from probes.core.errors import OptionError, ShapeError, warn_undefined
from probes.core.result import Summary, render_summary
from probes.core.stats import bootstrap_indices
from probes.core.validate import check_alpha, check_choice, check_int

__all__ = ["STATISTICS", "INTERVALS", "NOTE", "OneClassResampleWarning", "BootstrapResult", "PatientData",
           "prepare_patients", "patient_weights", "weighted_statistics", "bca_interval", "percentile_interval",
           "cluster_bootstrap"]

STATISTICS = ("accuracy", "sensitivity", "specificity", "auc")
INTERVALS = ("percentile", "bca")
NOTE = ("patient bootstrap: readers treated as fixed (only patients are resampled); "
        "for conclusions about new readers use an MRMC analysis (Obuchowski–Rockette)")
_NEEDS = {"accuracy": "decision", "sensitivity": "decision", "specificity": "decision", "auc": "score"}
# ratio statistic → (numerator, denominator) per-patient counts of PatientData.counts
_RATIOS = {"accuracy": ("correct", "reads"), "sensitivity": ("tp", "pos"), "specificity": ("tn", "neg")}


class OneClassResampleWarning(UserWarning):
    """Some bootstrap resamples held a single truth class and were excluded for a statistic."""


@dataclass(frozen=True)
class PatientData:
    """Reads reduced to what the weighted statistics need, patients indexed 0..P−1.

    ``counts``: name → (P, T) read counts per patient and phase (reads, correct, pos, tp, neg,
    tn); ``units``: per AUC unit (reader × phase, or phase) the phase index and the score-sorted
    reads' patient codes, truth and tie-group starts.
    """

    patients: tuple
    phases: tuple
    readers: tuple
    counts: dict = field(repr=False)
    units: tuple = field(repr=False)
    auc_mode: str = "reader_mean"


def prepare_patients(reads: pd.DataFrame, *, auc: Literal["reader_mean", "pooled"] = "reader_mean",
                     use_decision: bool = True, use_score: bool = True) -> PatientData:
    """Reduce validated reads (standard column names) to per-patient counts and AUC units.

    Patients are numbered in order of first appearance (``pd.factorize``).
    """
    codes, patients = pd.factorize(reads["case"])
    phases = tuple(reads["phase"].cat.categories)
    ph = reads["phase"].cat.codes.to_numpy()
    p, t = len(patients), len(phases)
    truth = reads["truth"].to_numpy().astype(bool)
    readers = tuple(pd.unique(reads["reader"]))

    def count(mask: np.ndarray) -> np.ndarray:
        out = np.zeros((p, t))
        np.add.at(out, (codes[mask], ph[mask]), 1.0)
        return out

    counts = {"reads": count(np.ones(len(reads), bool)), "pos": count(truth), "neg": count(~truth)}
    if use_decision:
        dec = reads["decision"].to_numpy().astype(bool)
        counts.update(correct=count(dec == truth), tp=count(dec & truth), tn=count(~dec & ~truth))
    units = []
    if use_score:
        s = reads["score"].to_numpy(dtype=float)
        keys = [(k,) for k in range(t)] if auc == "pooled" else [(k, rd) for k in range(t) for rd in readers]
        rd_arr = reads["reader"].to_numpy()
        for key in keys:
            sel = ph == key[0] if len(key) == 1 else (ph == key[0]) & (rd_arr == key[1])
            if not sel.any():
                continue
            order = np.argsort(s[sel], kind="stable")
            ss = s[sel][order]
            starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
            units.append((key[0], codes[sel][order], truth[sel][order], starts))
    return PatientData(tuple(patients), phases, readers, counts, tuple(units), auc)


def patient_weights(indices: np.ndarray, n_patients: int, name: str = "indices") -> np.ndarray:
    """Multiplicity matrix (n_boot, P): w[b, c] = number of times patient c is drawn in resample b.

    ``indices`` (n_boot, P) integer patient indices in [0, P) (e.g. :func:`probes.core.stats.bootstrap_indices`).
    """
    idx = np.asarray(indices)
    if idx.ndim != 2 or idx.shape[1] != n_patients or not np.issubdtype(idx.dtype, np.integer):
        raise ShapeError(name, message=f"{name} must be an integer array (n_boot, {n_patients}) of case indices, got "
                         f"shape {idx.shape} dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= n_patients):
        raise ShapeError(name,
            message=f"{name} must lie in [0, {n_patients - 1}], got range [{idx.min()}, {idx.max()}]")
    b = idx.shape[0]
    flat = (np.arange(b)[:, None] * n_patients + idx).ravel()
    return np.bincount(flat, minlength=b * n_patients).reshape(b, n_patients).astype(float)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _weighted_auc(w: np.ndarray, unit: tuple) -> np.ndarray:
    """Weighted empirical AUC (ties ½) of one unit for weight rows w (m, P) → (m,)."""
    _, case, truth, starts = unit
    wr = w[:, case]  # (m, L), reads sorted by score
    npos = np.add.reduceat(np.where(truth, wr, 0.0), starts, axis=1)  # per tie group
    nneg = np.add.reduceat(np.where(truth, 0.0, wr), starts, axis=1)
    below = np.cumsum(nneg, axis=1) - nneg
    u = (npos * (below + 0.5 * nneg)).sum(axis=1)
    return _ratio(u, npos.sum(axis=1) * nneg.sum(axis=1))


def weighted_statistics(data: PatientData, weights: np.ndarray, statistics: Sequence[str]) -> dict[str, np.ndarray]:
    """Each statistic per phase, (m, T), for patient-weight rows ``weights`` (m, P).

    Weights of all ones give the estimate on the data; multiplicities give a bootstrap
    replicate; 1 − e_i gives the jackknife value without patient i. NaN where undefined
    (no positive or no negative reads for a reader/phase under those weights).
    """
    w = np.asarray(weights, dtype=float)
    out = {}
    for s in statistics:
        if s in _RATIOS:
            num, den = _RATIOS[s]
            out[s] = _ratio(w @ data.counts[num], w @ data.counts[den])
        elif s == "auc":
            out[s] = _mean_auc(data, w)
        else:
            raise OptionError("statistic", message=f"unknown statistic {s!r}; choose from {list(STATISTICS)}")
    return out


def _mean_auc(data: PatientData, w: np.ndarray) -> np.ndarray:
    """(m, T) mean over the AUC units of each phase (NaN propagates: a strict reader mean)."""
    t = len(data.phases)
    tot, n_units = np.zeros((w.shape[0], t)), np.zeros(t)
    for unit in data.units:
        tot[:, unit[0]] += _weighted_auc(w, unit)
        n_units[unit[0]] += 1
    return _ratio(tot, np.broadcast_to(n_units, tot.shape))


def _columns(data: PatientData, per_phase: dict[str, np.ndarray], statistics: Sequence[str],
             differences: bool) -> np.ndarray:
    """Stack per-phase values and pairwise differences into (m, K) in label order."""
    cols = []
    t = len(data.phases)
    for s in statistics:
        v = per_phase[s]
        cols.append(v)
        if differences:
            cols.extend(v[:, [b]] - v[:, [a]] for a, b in combinations(range(t), 2))
    return np.concatenate(cols, axis=1)


def _labels(data: PatientData, statistics: Sequence[str], differences: bool) -> pd.DataFrame:
    rows = []
    for s in statistics:
        rows += [{"statistic": s, "phase": str(p), "kind": "phase", "baseline": None} for p in data.phases]
        if differences:
            rows += [{"statistic": s, "phase": f"{data.phases[b]} − {data.phases[a]}", "kind": "difference",
                      "baseline": str(data.phases[a])} for a, b in combinations(range(len(data.phases)), 2)]
    return pd.DataFrame(rows)


def _evaluate(data: PatientData, w: np.ndarray, statistics: Sequence[str], differences: bool,
              max_elements: int = 4_000_000) -> np.ndarray:
    """(m, K) statistics for weight rows w, in chunks bounding the (rows × reads) work arrays."""
    n_reads = max(int(sum(len(u[1]) for u in data.units)), w.shape[1], 1)
    step = max(1, max_elements // n_reads)
    parts = [_columns(data, weighted_statistics(data, w[i:i + step], statistics), statistics, differences)
             for i in range(0, w.shape[0], step)]
    return np.concatenate(parts, axis=0)


def _unpaired_differences(reads: pd.DataFrame, data: PatientData, labels: pd.DataFrame) -> dict[int, str]:
    """Rows of ``labels`` that difference two phases read by different reader sets → the reason.

    With readers fixed, a phase difference is an effect of the phase only when the same readers
    read both phases; otherwise it mixes in who read (an unpaired design, ``paired=False``).
    """
    sets = {str(p): frozenset(reads.loc[reads["phase"] == p, "reader"]) for p in data.phases}
    out = {}
    for k, lab in labels.iterrows():
        if lab["kind"] != "difference":
            continue
        a = lab["baseline"]
        b = lab["phase"][:-len(f" − {a}")]
        only = sorted(map(str, sets[a] ^ sets[b]))
        if only:
            out[int(k)] = (f"phases read by different reader sets ({b!r} vs {a!r}: reader(s) {only[:5]} read only "
                           "one of them)")
    return out


def percentile_interval(replicates: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile CI: the α/2 and 1 − α/2 quantiles (``numpy.percentile``, linear) of the finite replicates."""
    r = np.asarray(replicates, dtype=float)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return np.nan, np.nan
    return float(np.percentile(r, 100 * alpha / 2)), float(np.percentile(r, 100 * (1 - alpha / 2)))


def bca_interval(replicates: np.ndarray, estimate: float, jackknife: np.ndarray,
                 alpha: float = 0.05) -> tuple[float, float, float, float]:
    """BCa CI (Efron & Tibshirani 1993, §14.3): returns (ci_low, ci_high, z0, a).

    z0 = Φ⁻¹([#{θ* < θ̂} + #{θ* ≤ θ̂}] / 2B) over the B finite replicates;
    a = Σ(θ̄ − θ_(i))³ / (6·[Σ(θ̄ − θ_(i))²]^{3/2}) from the jackknife values θ_(i) (a = 0 when
    they are all equal); α_k = Φ(z0 + (z0 + z_k)/(1 − a(z0 + z_k))) for z_k = z_{α/2}, z_{1−α/2};
    CI = the α_1 and α_2 percentiles of the replicates. NaN when z0 or a is undefined (e.g. θ̂
    outside all replicates, or an undefined jackknife value).
    """
    r = np.asarray(replicates, dtype=float)
    r = r[np.isfinite(r)]
    jk = np.asarray(jackknife, dtype=float)
    if r.size == 0 or not np.isfinite(estimate) or not np.isfinite(jk).all():
        return np.nan, np.nan, np.nan, np.nan
    z0 = special.ndtri(((r < estimate).sum() + (r <= estimate).sum()) / (2 * r.size))
    d = jk.mean() - jk
    ss = (d ** 2).sum()
    a = float((d ** 3).sum() / (6 * ss ** 1.5)) if ss > 0 else 0.0
    if not np.isfinite(z0):
        return np.nan, np.nan, float(z0), a
    out = []
    for zk in (special.ndtri(alpha / 2), special.ndtri(1 - alpha / 2)):
        num = z0 + zk
        out.append(float(np.percentile(r, 100 * special.ndtr(z0 + num / (1 - a * num)))))
    return out[0], out[1], float(z0), a


@dataclass(frozen=True, eq=False)
class BootstrapResult(ReaderResult):
    """Patient-bootstrap estimates, SEs and CIs per statistic × phase and phase difference.

    ``table`` (native): statistic, phase (a phase, or "b − a" for a difference), kind ("phase" /
    "difference"), baseline, reason (why the row's NaN values are undefined, "" when none is),
    estimate, se, ci_low, ci_high, n_valid, n_excluded (one-class resamples), interval, note.
    ``to_frame()``: statistic, phase, kind, baseline, reason, metric (estimate, se, ci_low,
    ci_high, n_valid, n_excluded), value. ``replicates`` (n_boot, K) in
    the row order of ``table``; ``indices`` (n_boot, P) the patient draws (columns = ``patients``).
    ``note``: readers are fixed.
    """

    table: pd.DataFrame
    replicates: np.ndarray = field(repr=False)
    indices: np.ndarray = field(repr=False)
    patients: tuple = field(repr=False)
    n_boot: int = 0
    interval: str = "percentile"
    alpha: float = 0.05
    seed: int | None = 0
    auc_mode: str = "reader_mean"
    note: str = NOTE

    title: ClassVar[str] = "Clustered (patient) bootstrap"
    layouts: ClassVar[Mapping[str, Layout]] = {
        "table": Layout(("statistic", "phase", "kind", "baseline"), drop=("interval", "note"))}

    def summary(self) -> Summary:
        """The estimates with SE and CI, the CI method, the resample count and the fixed-reader note."""
        lvl = f"{100 * (1 - self.alpha):g}"
        notes = [f"{self.n_boot} resamples of {len(self.patients)} patients, {self.interval} {lvl}% CIs, seed "
                 f"{self.seed}; AUC = " + ("mean of per-reader empirical AUCs" if self.auc_mode == "reader_mean"
                                           else "empirical AUC of pooled reads"),
                 f"NOTE: {self.note}."]
        n_ex = int(self.table["n_excluded"].max()) if len(self.table) else 0
        if n_ex:
            notes.append(f"n_excluded: one-class resamples excluded (up to {n_ex} of {self.n_boot}); "
                         "the CI uses the n_valid others")
        cols = ["statistic", "phase", "estimate", "se", "ci_low", "ci_high", "n_excluded"]
        if (self.table["reason"] != "").any():
            cols.append("reason")
        return render_summary(self.title, self.table[cols], notes)


def cluster_bootstrap(reads: pd.DataFrame, columns: ReadColumns = ReadColumns(), *,
                      statistic: str | Sequence[str] | None = None, n_boot: int = 1000, seed: int | None = 0,
                      interval: Literal["percentile", "bca"] = "percentile", alpha: float = 0.05,
                      auc: Literal["reader_mean", "pooled"] = "reader_mean", differences: bool = True,
                      paired: bool = True) -> BootstrapResult:
    """Bootstrap CIs of accuracy, sensitivity, specificity and/or AUC per phase, resampling patients.

    ``statistic``: one or several of :data:`STATISTICS` (default: every one the columns allow —
    accuracy/sensitivity/specificity need ``decision``, AUC needs ``score``). ``n_boot``
    resamples drawn by :func:`probes.core.stats.bootstrap_indices` with ``seed``; ``interval``
    "percentile" or "bca" at level 1 − ``alpha``; ``auc`` "reader_mean" (mean of per-reader
    AUCs, the MRMC convention) or "pooled". See the module docstring for the formulas. Readers
    are treated as fixed (``BootstrapResult.note``). A value the reads cannot define is NaN with
    its reason in ``table["reason"]`` and one :class:`probes.core.errors.UndefinedValueWarning`:
    notably every difference of two phases read by different reader sets (``paired=False``).
    """
    check_frame(reads)
    check_columns(columns)
    check_choice(interval, "interval", INTERVALS)
    check_choice(auc, "auc", ("reader_mean", "pooled"))
    check_alpha(alpha)
    check_int(n_boot, "n_boot", 2)
    user = {"decision": columns.decision, "score": columns.score}
    if statistic is None:
        stats_ = [s for s in STATISTICS if user[_NEEDS[s]] in reads.columns]
        if not stats_:
            raise ReadsError(f"reads has neither a decision column {columns.decision!r} nor a score column "
                             f"{columns.score!r}; available columns: {list(reads.columns)}")
    else:
        stats_ = [statistic] if isinstance(statistic, str) else list(statistic)
        bad = [s for s in stats_ if s not in STATISTICS]
        if bad or not stats_:
            raise OptionError("statistic", message=f"statistic must be among {list(STATISTICS)}, got {bad or stats_}")
        stats_ = list(dict.fromkeys(stats_))
    need = ("reader", "case", "truth", "phase") + tuple(sorted({_NEEDS[s] for s in stats_}))
    r = validate_reads(reads, columns, need=need, paired=paired)
    for f in {_NEEDS[s] for s in stats_}:
        if r[f].isna().any():
            raise ReadsError(f"column {user[f]!r} ({f}) has missing values")
    r["phase"] = r["phase"].cat.remove_unused_categories()  # a declared phase without reads
    if len(r["phase"].cat.categories) < 2 and differences:
        differences = False  # a single phase: nothing to difference
    data = prepare_patients(r, auc=auc, use_decision="decision" in need, use_score="score" in need)
    labels = _labels(data, stats_, differences)
    p = len(data.patients)

    estimate = _evaluate(data, np.ones((1, p)), stats_, differences)[0]
    idx = bootstrap_indices(p, n_boot, seed)
    reps = _evaluate(data, patient_weights(idx, p), stats_, differences)
    jack = _evaluate(data, 1.0 - np.eye(p), stats_, differences) if interval == "bca" else None

    unpaired = _unpaired_differences(r, data, labels)
    reps[:, list(unpaired)] = np.nan  # a difference between other readers' reads is not an effect
    rows = []
    for k in range(reps.shape[1]):
        col = reps[:, k]
        ok = np.isfinite(col)
        se = float(np.std(col[ok], ddof=1)) if ok.sum() > 1 else np.nan
        if interval == "percentile":
            lo, hi = percentile_interval(col, alpha)
        else:
            lo, hi, _, _ = bca_interval(col, estimate[k], jack[:, k], alpha)
        row = {"reason": "", "estimate": float(estimate[k]), "se": se, "ci_low": lo, "ci_high": hi,
               "n_valid": int(ok.sum()), "n_excluded": int((~ok).sum())}
        if k in unpaired:
            row.update(reason=unpaired[k], estimate=np.nan, n_excluded=0)
        elif not np.isfinite(row["estimate"]):
            row["reason"] = ("undefined on these reads: a phase, or a reader in it, without both truth classes"
                             if labels.loc[k, "kind"] == "phase" else "undefined in one of the two phases")
        elif np.isnan(se):
            row["reason"] = "fewer than 2 resamples define the statistic"
        elif np.isnan(lo) or np.isnan(hi):
            row["reason"] = ("BCa interval undefined (estimate outside every replicate or an undefined "
                             "jackknife value); use interval='percentile'")
        rows.append(row)
    table = pd.concat([labels, pd.DataFrame(rows)], axis=1)
    table["interval"] = interval
    table["note"] = NOTE
    excl = table[(table["n_excluded"] > 0) & (table["reason"] == "")]
    if len(excl):
        worst = excl.loc[excl["n_excluded"].idxmax()]
        warnings.warn(f"{int(worst['n_excluded'])} of {n_boot} resamples had a single truth class for "
                      f"{worst['statistic']} ({worst['phase']}) and were excluded; n_valid is reported per row",
                      OneClassResampleWarning, stacklevel=2)
    warn_undefined("cluster_bootstrap", table["reason"])
    return BootstrapResult(table, reps, idx, data.patients, int(n_boot), interval, float(alpha), seed, auc, NOTE)
