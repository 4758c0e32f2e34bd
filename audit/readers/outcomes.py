"""Reader-study outcomes and how they evolve between phases.

- :func:`outcome_counts` — TP/TN/FP/FN with sensitivity, specificity, accuracy, PPV, NPV per
  phase × reader (or pooled over readers).
- :func:`outcome_transitions` — how each (reader, case) outcome moves between consecutive
  phases (e.g. FN → TP), counted per reader and phase pair (Sankey-ready).
- :func:`decision_changes` — decision changes between consecutive phases (0→1, 1→0), whether
  the change went toward the AI's suggestion (AI positive when ai_prob ≥ ``ai_threshold``),
  split by whether the AI was right or wrong, and whether the change made the reader right.
- :func:`mcnemar_correctness` — McNemar test of reader correctness between two phases per
  reader and pooled over readers (statsmodels ``mcnemar``; exact binomial when the
  discordant count b + c < 25, else χ² with continuity correction):
  χ² = (|b − c| − 1)² / (b + c); exact p = 2·P(Bin(b + c, ½) ≤ min(b, c)) capped at 1.
- :func:`cochran_q_correctness` — Cochran's Q of correctness across ≥ 3 phases (statsmodels
  ``cochrans_q``): Q = (k − 1)[k Σ_j C_j² − N²] / (k N − Σ_i R_i²), df = k − 1, with C_j
  the column (phase) totals, R_i the row (case) totals and N the grand total.

The pooled McNemar / Cochran's Q treat every (reader, case) pair as independent, which ignores
the correlation of reads of the same case; the GEE / MRMC analyses handle that properly.

Each function returns a :class:`audit.readers.result.ReaderTable`: the native table in
``table`` (columns as listed in each docstring), the tidy long format through ``to_frame()``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from statsmodels.stats.contingency_tables import cochrans_q, mcnemar

from audit.readers.reads import ReadColumns, ReadsError, validate_reads
from audit.readers.result import ReaderTable
from probes.core.errors import OptionError, warn_undefined

__all__ = ["outcome_counts", "outcome_transitions", "decision_changes", "mcnemar_correctness",
           "cochran_q_correctness"]

_NEED = ("reader", "case", "truth", "phase", "decision")
POOLED_NOTE = ("scope 'pooled' treats every (reader, case) pair as independent (it ignores the correlation of "
               "reads of one case; the GEE and MRMC analyses account for it)")


def _outcome(truth: np.ndarray, decision: np.ndarray) -> np.ndarray:
    return np.select([(truth == 1) & (decision == 1), (truth == 0) & (decision == 0),
                      (truth == 0) & (decision == 1)], ["TP", "TN", "FP"], "FN")


def _ratio(a: pd.Series, b: pd.Series) -> pd.Series:
    return (a / b.where(b > 0)).astype(float)


def outcome_counts(reads: pd.DataFrame, columns: ReadColumns = ReadColumns(), *,
                   by: Sequence[str] = ("phase", "reader")) -> ReaderTable:
    """TP, TN, FP, FN and rates per group (default phase × reader; ``by=("phase",)`` pools readers).

    sensitivity = TP/(TP+FN), specificity = TN/(TN+FP), accuracy = (TP+TN)/n,
    ppv = TP/(TP+FP), npv = TN/(TN+FN): NaN when the denominator is 0 (a group with one truth
    class or one kind of call), with the reason in the ``reason`` column and one
    :class:`probes.core.errors.UndefinedValueWarning`.
    """
    by = list(by)
    bad = [b for b in by if b not in ("phase", "reader")]
    if bad or not by:
        raise OptionError("by", message=f"by must be a non-empty subset of ('phase', 'reader'), got {by}")
    r = validate_reads(reads, columns, need=_NEED, paired=False)
    r["outcome"] = _outcome(r["truth"].to_numpy(), r["decision"].to_numpy())
    c = (r.groupby([*by, "outcome"], observed=True).size().unstack("outcome", fill_value=0)
         .reindex(columns=["TP", "TN", "FP", "FN"], fill_value=0))
    c.columns = ["tp", "tn", "fp", "fn"]
    c = c.reset_index()
    c.insert(len(by), "n", c[["tp", "tn", "fp", "fn"]].sum(axis=1))
    c["sensitivity"] = _ratio(c["tp"], c["tp"] + c["fn"])
    c["specificity"] = _ratio(c["tn"], c["tn"] + c["fp"])
    c["accuracy"] = _ratio(c["tp"] + c["tn"], c["n"])
    c["ppv"] = _ratio(c["tp"], c["tp"] + c["fp"])
    c["npv"] = _ratio(c["tn"], c["tn"] + c["fn"])
    c.insert(len(by), "reason", _reasons(c, {"sensitivity": "no diseased reads", "specificity": "no non-diseased reads",
                                             "ppv": "no positive calls", "npv": "no negative calls"}))
    warn_undefined("outcome_counts", c["reason"])
    return ReaderTable(c, tuple(by), "Outcomes per " + " and ".join(by),
                       ("sensitivity = TP/(TP+FN), specificity = TN/(TN+FP), accuracy = (TP+TN)/n, "
                        "ppv = TP/(TP+FP), npv = TN/(TN+FN)",))


def _reasons(table: pd.DataFrame, why: dict[str, str]) -> pd.Series:
    """Per row, why its NaN rates are undefined ("" when none is): "metric: reason; ..."."""
    parts = pd.DataFrame({m: np.where(table[m].isna(), f"{m}: {w}", "") for m, w in why.items()}, index=table.index)
    return parts.apply(lambda row: "; ".join(v for v in row if v), axis=1).astype(str)


def _wide(r: pd.DataFrame, value: str) -> pd.DataFrame:
    """(reader, case) × phase table of ``value`` (paired reads only)."""
    return r.pivot(index=["reader", "case"], columns="phase", values=value)


def _pairs(phases: list, phase_from, phase_to) -> list[tuple]:
    if phase_from is None and phase_to is None:
        return list(zip(phases[:-1], phases[1:]))
    for name, v in (("phase_from", phase_from), ("phase_to", phase_to)):
        if v not in phases:
            raise OptionError(name, message=f"{name}={v!r} is not a phase; phases are {phases}")
    if phase_from == phase_to:
        raise OptionError("phase_to", message=f"phase_from and phase_to are both {phase_from!r}")
    return [(phase_from, phase_to)]


def _check_two_phases(phases: list) -> None:
    if len(phases) < 2:
        raise ReadsError(f"comparing phases needs ≥ 2 phases, the reads have {phases}")


def outcome_transitions(reads: pd.DataFrame, columns: ReadColumns = ReadColumns(), *,
                        pooled: bool = False) -> ReaderTable:
    """Counts of outcome moves (e.g. FN → TP) per reader between consecutive phases.

    Columns: reader (dropped when ``pooled``), phase_from, phase_to, outcome_from, outcome_to, n;
    every one of the 16 (from, to) combinations is listed, zeros included.
    """
    r = validate_reads(reads, columns, need=_NEED, paired=True)
    phases = list(r["phase"].cat.categories)
    _check_two_phases(phases)
    r["outcome"] = _outcome(r["truth"].to_numpy(), r["decision"].to_numpy())
    w = _wide(r, "outcome")
    labels = ["TP", "TN", "FP", "FN"]
    rows = []
    for a, b in _pairs(phases, None, None):
        d = pd.DataFrame({"reader": w.index.get_level_values("reader"), "outcome_from": w[a].to_numpy(),
                          "outcome_to": w[b].to_numpy()})
        keys = ["outcome_from", "outcome_to"] if pooled else ["reader", "outcome_from", "outcome_to"]
        full = pd.MultiIndex.from_product(
            ([labels, labels] if pooled else [sorted(d["reader"].unique()), labels, labels]), names=keys)
        cnt = d.groupby(keys).size().reindex(full, fill_value=0).rename("n").reset_index()
        cnt.insert(1 if not pooled else 0, "phase_to", b)
        cnt.insert(1 if not pooled else 0, "phase_from", a)
        rows.append(cnt)
    table = pd.concat(rows, ignore_index=True)
    return ReaderTable(table, ("reader", "phase_from", "phase_to", "outcome_from", "outcome_to"),
                       "Outcome transitions between consecutive phases",
                       ("n: reads whose outcome moved from outcome_from (in phase_from) to outcome_to (in phase_to)",))


def decision_changes(reads: pd.DataFrame, columns: ReadColumns = ReadColumns(), *,
                     ai_threshold: float = 0.5, phase_from=None, phase_to=None,
                     pooled: bool = False) -> ReaderTable:
    """Decision changes between consecutive phases (or one given pair), toward or away from the AI.

    The AI suggestion for a (reader, case) and phase pair is ai_prob ≥ ``ai_threshold`` taken
    from ``phase_to`` (from ``phase_from`` when missing there); a pair with no ai_prob in either
    phase is an error. The AI is *right* when its suggestion equals the truth. Rows per reader
    (dropped when ``pooled``) × phase pair × ai_correct (True/False), columns: n (reads),
    n_changed, n_0to1, n_1to0, n_toward_ai (changed to agree with the AI), n_away_from_ai
    (changed to disagree), n_to_correct, n_to_wrong, and frac_toward_ai = n_toward_ai / n_changed
    (NaN where no decision changed: the ``reason`` column says so, and one
    :class:`probes.core.errors.UndefinedValueWarning` is raised).
    """
    if not 0 < ai_threshold < 1:
        raise OptionError("ai_threshold", message=f"ai_threshold must lie in (0, 1), got {ai_threshold!r}")
    r = validate_reads(reads, columns, need=_NEED, paired=True)
    if "ai_prob" not in r:
        raise ReadsError(f"reads lacks the column {columns.ai_prob!r} (ai_prob) needed to judge changes "
                         f"toward the AI; available columns: {list(reads.columns)}")
    phases = list(r["phase"].cat.categories)
    _check_two_phases(phases)
    dec, ai = _wide(r, "decision"), _wide(r, "ai_prob")
    truth = r.drop_duplicates(["reader", "case"]).set_index(["reader", "case"])["truth"].reindex(dec.index)
    parts = []
    for a, b in _pairs(phases, phase_from, phase_to):
        p = ai[b].fillna(ai[a])
        if p.isna().any():
            rd, cs = p.index[p.isna()][0]
            raise ReadsError(f"{int(p.isna().sum())} (reader, case) pair(s) have no ai_prob in phase {b!r} nor "
                             f"{a!r}, e.g. reader {rd!r}, case {cs!r}")
        s = (p >= ai_threshold).astype(int)
        d0, d1, y = dec[a].astype(int), dec[b].astype(int), truth.astype(int)
        ch = d0 != d1
        d = pd.DataFrame({"reader": dec.index.get_level_values("reader"), "ai_correct": (s == y).to_numpy(),
                          "n": 1, "n_changed": ch.to_numpy(), "n_0to1": ((d0 == 0) & (d1 == 1)).to_numpy(),
                          "n_1to0": ((d0 == 1) & (d1 == 0)).to_numpy(),
                          "n_toward_ai": (ch & (d1 == s)).to_numpy(), "n_away_from_ai": (ch & (d0 == s)).to_numpy(),
                          "n_to_correct": (ch & (d1 == y)).to_numpy(), "n_to_wrong": (ch & (d0 == y)).to_numpy()})
        keys = ["ai_correct"] if pooled else ["reader", "ai_correct"]
        full = (pd.Index([True, False], name="ai_correct") if pooled else
                pd.MultiIndex.from_product([sorted(d["reader"].unique()), [True, False]], names=keys))
        if pooled:
            d = d.drop(columns="reader")
        g = d.groupby(keys).sum().reindex(full, fill_value=0).astype(int).reset_index()
        g.insert(0 if pooled else 1, "phase_to", b)
        g.insert(0 if pooled else 1, "phase_from", a)
        parts.append(g)
    out = pd.concat(parts, ignore_index=True)
    out["frac_toward_ai"] = _ratio(out["n_toward_ai"], out["n_changed"])
    out.insert(out.columns.get_loc("n"), "reason", _reasons(out, {"frac_toward_ai": "no decision changed"}))
    warn_undefined("decision_changes", out["reason"])
    return ReaderTable(out, ("reader", "phase_from", "phase_to", "ai_correct"),
                       "Decision changes toward or away from the AI",
                       (f"the AI suggests positive when ai_prob >= {ai_threshold:g}; ai_correct: its suggestion "
                        "equals the truth",))


def _correct(reads: pd.DataFrame, columns: ReadColumns) -> tuple[pd.DataFrame, list]:
    r = validate_reads(reads, columns, need=_NEED, paired=True)
    r["correct"] = (r["decision"] == r["truth"]).astype(int)
    return _wide(r, "correct").astype(int), list(r["phase"].cat.categories)


def _mc_row(x: np.ndarray, exact: bool | None, correction: bool) -> dict:
    """x: (n, 2) correctness in phases a, b."""
    a, b = x[:, 0], x[:, 1]
    tab = np.array([[np.sum((a == 1) & (b == 1)), np.sum((a == 1) & (b == 0))],
                    [np.sum((a == 0) & (b == 1)), np.sum((a == 0) & (b == 0))]])
    disc = int(tab[0, 1] + tab[1, 0])
    ex = disc < 25 if exact is None else bool(exact)
    if disc == 0:
        stat, p = (0.0, 1.0)
    else:
        res = mcnemar(tab, exact=ex, correction=correction)
        stat, p = float(res.statistic), float(res.pvalue)
    return {"n": len(x), "both_correct": int(tab[0, 0]), "a_only_correct": int(tab[0, 1]),
            "b_only_correct": int(tab[1, 0]), "both_wrong": int(tab[1, 1]), "acc_a": float(a.mean()),
            "acc_b": float(b.mean()), "diff": float(b.mean() - a.mean()), "statistic": stat, "p": p,
            "exact": ex}


def mcnemar_correctness(reads: pd.DataFrame, columns: ReadColumns = ReadColumns(), *, phase_a=None,
                        phase_b=None, exact: bool | None = None, correction: bool = True) -> ReaderTable:
    """McNemar test of reader correctness (decision == truth) between two phases.

    Default phases: the first two. ``exact=None`` uses the exact binomial test when the
    discordant count b + c < 25, else the χ² statistic (with continuity correction unless
    ``correction=False``); statistic for the exact test is min(b, c) as in statsmodels.
    Rows: one per reader (scope "reader") and one pooled over all (reader, case) pairs
    (scope "pooled", reader None). diff = acc_b − acc_a.
    """
    w, phases = _correct(reads, columns)
    _check_two_phases(phases)
    if phase_a is None and phase_b is None:
        phase_a, phase_b = phases[0], phases[1]
    (a, b), = _pairs(phases, phase_a, phase_b)
    rows = []
    for rd, g in w.groupby(level="reader", sort=True):
        rows.append({"phase_a": a, "phase_b": b, "scope": "reader", "reader": rd,
                     **_mc_row(g[[a, b]].to_numpy(), exact, correction)})
    rows.append({"phase_a": a, "phase_b": b, "scope": "pooled", "reader": None,
                 **_mc_row(w[[a, b]].to_numpy(), exact, correction)})
    return ReaderTable(pd.DataFrame(rows), ("phase_a", "phase_b", "scope", "reader"),
                       f"McNemar test of correctness, {a} vs {b}", (POOLED_NOTE,))


def cochran_q_correctness(reads: pd.DataFrame, columns: ReadColumns = ReadColumns(), *,
                          phases: Sequence | None = None) -> ReaderTable:
    """Cochran's Q test that reader correctness is the same in all of ≥ 3 phases.

    Rows per reader (scope "reader") and pooled over (reader, case) pairs (scope "pooled");
    columns: n, k (phases), acc_<phase> per phase, statistic Q, df = k − 1, p (χ²_{k−1}).
    Q is 0 / p 1 when every case is concordant across phases (statsmodels would give NaN).
    """
    w, allph = _correct(reads, columns)
    ph = allph if phases is None else list(phases)
    unknown = [p for p in ph if p not in allph]
    if unknown:
        raise OptionError("phases", message=f"phases {unknown} not in the reads; phases are {allph}")
    if len(ph) < 3:
        raise OptionError("phases", message=f"Cochran's Q is for ≥ 3 phases (use mcnemar_correctness for 2), got {ph}")

    def row(x: np.ndarray) -> dict:
        rs = x.sum(axis=1)
        if np.all((rs == 0) | (rs == x.shape[1])):
            stat, df, p = 0.0, x.shape[1] - 1, 1.0
        else:
            res = cochrans_q(x)
            stat, df, p = float(res.statistic), int(res.df), float(res.pvalue)
        return {"n": len(x), "k": x.shape[1], **{f"acc_{q}": float(m) for q, m in zip(ph, x.mean(axis=0))},
                "statistic": stat, "df": df, "p": p}

    rows = [{"scope": "reader", "reader": rd, **row(g[ph].to_numpy())}
            for rd, g in w.groupby(level="reader", sort=True)]
    rows.append({"scope": "pooled", "reader": None, **row(w[ph].to_numpy())})
    return ReaderTable(pd.DataFrame(rows), ("scope", "reader"), f"Cochran's Q of correctness across {ph}",
                       (POOLED_NOTE,))
