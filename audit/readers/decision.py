"""Decision curves (Vickers & Elkin 2006): net benefit of a risk score against treat-all and treat-none.

Net benefit at threshold probability p_t: NB = TP/n − FP/n · p_t/(1 − p_t) − harm; treat-all
NB = π − (1 − π)·p_t/(1 − p_t); treat-none NB = 0. A case is test-positive when p ≥ p_t and
p > 0 (R ``dcurves`` convention: a probability of exactly 0 is never treated, 1 always). Net
interventions avoided (per patient) = (NB − NB_all) / (p_t/(1 − p_t)). Bands: percentile
intervals over a seeded bootstrap that resamples patients (cases;
:func:`probes.core.stats.bootstrap_indices`), or over resample indices you pass.

The array-level functions take ``labels`` (0/1 per case) and probabilities;
:func:`reads_decision_curve` takes a reads table (:func:`audit.readers.reads.validate_reads`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from audit.readers.bootstrap import patient_weights
from audit.readers.reads import ReadColumns, case_groups, check_scores, check_truth
from audit.readers.result import ReaderTable
from probes.core.errors import InputTypeError, NonFiniteError, OptionError, ShapeError
from probes.core.stats import bootstrap_indices
from probes.core.validate import check_alpha, check_choice

__all__ = ["DecisionCurve", "net_benefit", "decision_curve", "reads_decision_curve"]

THRESHOLDS = np.arange(0.0, 1.0, 0.01)
NOTES = ("net benefit NB = TP/n − FP/n · p_t/(1 − p_t) − harm at threshold probability p_t "
         "(Vickers & Elkin 2006); 'all' treats everyone, 'none' no one.",)


@dataclass(frozen=True, eq=False)
class DecisionCurve(ReaderTable):
    """Decision curves: one row per (group…, model, threshold) in ``table`` (see :func:`decision_curve`).

    ``to_frame()``: group columns, model, threshold, metric, value. The summary shows the net
    benefit of each model at up to 11 thresholds (5 per group).
    """

    title: str = "Decision curves"  # type: ignore[misc]
    notes: tuple[str, ...] = NOTES
    undefined: tuple[tuple[str, str], ...] = (
        ("net_intervention_avoided", "undefined at threshold 0 (divides by p_t/(1 − p_t) = 0)"),)

    def _summary_tables(self) -> pd.DataFrame:
        t = self.table
        groups = [c for c in ("phase", "reader") if c in t.columns]
        th = np.unique(t["threshold"])
        k = min(th.size, 5 if groups else 11)
        shown = th[np.unique(np.linspace(0, th.size - 1, k).round().astype(int))]
        sel = t[t["threshold"].isin(shown)]
        wide = sel.pivot_table(index=[*groups, "threshold"], columns="model", values="net_benefit", observed=True,
                               sort=False)
        return wide.reset_index().rename_axis(columns=None)


def _thresholds(thresholds: Any) -> np.ndarray:
    th = np.atleast_1d(np.asarray(thresholds, dtype=float))
    if th.ndim != 1 or th.size == 0:
        raise ShapeError("thresholds", message=f"thresholds must be a non-empty 1-D sequence, got shape {th.shape}")
    if not np.isfinite(th).all() or ((th < 0) | (th >= 1)).any():
        raise OptionError("thresholds",
            message=f"thresholds must lie in [0, 1) (net benefit divides by 1 − p_t), got range "
                         f"[{np.nanmin(th):g}, {np.nanmax(th):g}]")
    return th


def _consequences(t: np.ndarray, p: np.ndarray, th: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """Weighted rates for weight rows w (k, n): pos_rate (k,), test_pos, tp, fp rates (k, T)."""
    pos = (p[None, :] >= th[:, None]) & (p[None, :] > 0)  # (T, n)
    tot = w.sum(axis=1)
    tp = w @ (pos & (t == 1)[None, :]).T.astype(float) / tot[:, None]
    fp = w @ (pos & (t == 0)[None, :]).T.astype(float) / tot[:, None]
    prev = (w @ t.astype(float)) / tot
    return prev, tp + fp, tp, fp


def net_benefit(labels: Any, prob: Any, thresholds: Any, *, harm: float = 0.0) -> pd.DataFrame:
    """Net benefit of treating when prob ≥ p_t (Vickers & Elkin 2006).

    NB(p_t) = TP/n − FP/n · p_t/(1 − p_t) − harm, a case positive when p ≥ p_t and p > 0.
    Columns: threshold, n, pos_rate, test_pos_rate, tp_rate, fp_rate, harm, net_benefit.
    """
    return decision_curve(labels, {"model": prob}, thresholds, harm=harm, strategies=False).table.drop(
        columns=["model", "net_intervention_avoided"])


def decision_curve(labels: Any, probs: Any, thresholds: Any = THRESHOLDS, *,
                   harm: float | Mapping[str, float] = 0.0, strategies: bool = True,
                   n_boot: int = 0, seed: int | None = 0, resample: Any = None,
                   alpha: float = 0.05) -> DecisionCurve:
    """Decision curves of one or more risk scores with treat-all / treat-none references.

    ``probs``: an array (named "model") or a mapping name → array, each on the cases of
    ``labels``. ``harm``: a number for every model or a mapping name → harm (treat all/none get
    no harm, as in R ``dcurves``). ``table`` rows per model ("all", "none" too when
    ``strategies``) × threshold with columns model, threshold, n, pos_rate, test_pos_rate,
    tp_rate, fp_rate, harm, net_benefit, net_intervention_avoided = (NB − NB_all)/(p_t/(1 − p_t))
    (NaN at p_t = 0).
    With ``n_boot`` > 0 (seeded patient bootstrap) or ``resample`` (B, n) case indices, adds
    nb_se (bootstrap SD) and nb_low/nb_high (percentile interval at level 1 − alpha).
    """
    t = check_truth(labels, "labels")
    th = _thresholds(thresholds)
    if not isinstance(probs, Mapping):
        probs = {"model": probs}
    if len(probs) == 0:
        raise InputTypeError("probs", message="probs is empty")
    reserved = {"all", "none"} & set(map(str, probs))
    if reserved and strategies:
        raise OptionError("probs",
            message=f"model names {sorted(reserved)} are reserved for the treat-all/none strategies")
    ps = {str(k): check_scores(v, t.size, f"probs[{k!r}]") for k, v in probs.items()}
    if isinstance(harm, Mapping):
        unknown = sorted(set(map(str, harm)) - set(ps))
        if unknown:
            raise OptionError("harm", message=f"harm names unknown model(s) {unknown}; models are {list(ps)}")
        harms = {k: float(harm.get(k, 0.0)) for k in ps}
    else:
        harms = dict.fromkeys(ps, float(harm))
    if not np.isfinite(list(harms.values())).all():
        raise NonFiniteError("harm", message=f"harm must be finite, got {harms}")
    if resample is not None and n_boot:
        raise OptionError("resample", message="give either n_boot or resample, not both")
    if n_boot:
        resample = bootstrap_indices(t.size, n_boot, seed)
    w = None if resample is None else patient_weights(resample, t.size, "resample")
    return DecisionCurve(_curve(t, ps, harms, th, w, alpha, strategies), ("model", "threshold"))


def _curve(t: np.ndarray, ps: dict[str, np.ndarray], harms: dict[str, float], th: np.ndarray,
           w: np.ndarray | None, alpha: float, strategies: bool) -> pd.DataFrame:
    """Decision-curve rows for checked inputs; ``w`` (B, n) bootstrap case weights or None."""
    check_alpha(alpha)
    if strategies:
        ps = {**ps, "all": np.ones(t.size), "none": np.zeros(t.size)}
        harms = {**harms, "all": 0.0, "none": 0.0}
    if w is not None:
        w = w[w.sum(axis=1) > 0]
        if w.shape[0] < 2:
            raise OptionError("resample", message=f"the bootstrap needs ≥ 2 non-empty replicates, got {w.shape[0]}")
    odds = th / (1 - th)
    one = np.ones((1, t.size))
    _, _, tpa, fpa = _consequences(t, np.ones(t.size), th, one)
    nb_all = tpa[0] - fpa[0] * odds
    rows = []
    for name, p in ps.items():
        prev, tpos, tp, fp = _consequences(t, p, th, one)
        nb = tp[0] - fp[0] * odds - harms[name]
        with np.errstate(divide="ignore", invalid="ignore"):
            nia = np.where(odds > 0, (nb - nb_all) / np.where(odds > 0, odds, 1.0), np.nan)
        df = pd.DataFrame({"model": name, "threshold": th, "n": t.size, "pos_rate": prev[0],
                           "test_pos_rate": tpos[0], "tp_rate": tp[0], "fp_rate": fp[0],
                           "harm": harms[name], "net_benefit": nb, "net_intervention_avoided": nia})
        if w is not None:
            _, _, btp, bfp = _consequences(t, p, th, w)
            bnb = btp - bfp * odds - harms[name]
            df["nb_se"] = bnb.std(axis=0, ddof=1)
            df["nb_low"] = np.quantile(bnb, alpha / 2, axis=0)
            df["nb_high"] = np.quantile(bnb, 1 - alpha / 2, axis=0)
        rows.append(df)
    return pd.concat(rows, ignore_index=True)


def reads_decision_curve(reads: pd.DataFrame, columns: ReadColumns = ReadColumns(), *,
                         prob: str = "ai_prob", by: Sequence[str] | None = None, thresholds: Any = THRESHOLDS,
                         harm: float = 0.0, n_boot: int = 0, seed: int | None = 0,
                         alpha: float = 0.05) -> DecisionCurve:
    """Decision curves from a reads table, with bands from one shared patient bootstrap.

    ``prob``: "ai_prob" (the AI, one value per case; default ``by=()``), "decision" (each
    reader's binary call as a test; default ``by=("phase", "reader")``) or "score" (if readers
    give probabilities). Each bootstrap replicate resamples *cases* once (seeded) and applies
    the same draw to every group, so the bands of different phases/readers come from the same
    patients. ``table``: group columns + the :func:`decision_curve` columns (model = ``prob``,
    "all", "none").
    """
    check_choice(prob, "prob", ("ai_prob", "decision", "score"))
    th = _thresholds(thresholds)
    if not np.isfinite(harm):
        raise NonFiniteError("harm", message=f"harm must be finite, got {harm!r}")
    by, groups = case_groups(reads, columns, prob, by)
    cases = pd.Index(pd.unique(pd.concat([g for _, g in groups]).sort_index()["case"]))  # reads order
    wall = patient_weights(bootstrap_indices(len(cases), n_boot, seed), len(cases)) if n_boot else None
    out = []
    for lab, g in groups:
        w = None if wall is None else wall[:, cases.get_indexer(g["case"])]
        d = _curve(g["truth"].to_numpy(), {prob: g[prob].to_numpy(float)}, {prob: float(harm)}, th, w,
                   alpha, True)
        for k, v in reversed(lab.items()):
            d.insert(0, k, v)
        out.append(d)
    return DecisionCurve(pd.concat(out, ignore_index=True), (*by, "model", "threshold"))
