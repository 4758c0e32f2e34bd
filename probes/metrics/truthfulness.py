"""Clinical-XAI truthfulness suite (Jin et al., Medical Image Analysis 84, 2023: G3, G4, G5).

Jin, Li, Fatehi & Hamarneh, "Guidelines and evaluation of clinical explainable AI in medical
image analysis" ask of every heat-map method:

* **G3 truthfulness** — (a) *contrast importance*: per case, the map's importance of contrast m
  is Σ of its positive attribution over that contrast; Kendall τ-b of that vector with the
  contrast Shapley values (the model's own reliance on each contrast); (b) *ΔAUPC*: deletion of
  the map's top features hurts the prediction faster than random deletion
  (``probes.metrics.faithfulness.delta_aupc``).
* **G4 informative plausibility** — a map's plausibility (MSFI against ground-truth feature
  masks, ``probes.metrics.localization.msfi``) should tell right from wrong predictions:
  one-sided Mann–Whitney U of MSFI for correct > wrong predictions (overall and per predicted
  class), and Spearman ρ of MSFI with the predicted class's probability.
* **G5 computational efficiency** — wall-clock seconds per map.

:func:`evaluate_methods` runs all of them for several attribution methods and returns a
:class:`TruthfulnessReport`: one verdict per method × criterion, with the thresholds as
parameters (:class:`Thresholds`). Undefined values are NaN with the reason in a ``reason``
column (and a warning), never a crash: a map identical across contrasts (Grad-CAM broadcast to
contrasts) has no contrast ranking; fewer than 2 wrong predictions leave G4 undecided.
Maps are ``(N, 1 or C, *spatial)``: 2D and 3D share one code path. The model runs in eval mode
(``probes.core.model_state``) and, for its own predictions and ΔAUPC, under ``torch.no_grad()``.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import Tensor, nn

from probes.core.errors import (AuditInputError, ClassIndexError, InputTypeError, LabelError, ShapeError,
                                UndefinedValueWarning)
from probes.core.model import Output, model_state
from probes.core.result import Result, long_frame, tidy
from probes.core.validate import (Target, as_case_ids, as_input, as_labels, as_maps, as_targets, check_alpha,
                                  check_class_range, check_finite, check_int)
from probes.metrics.faithfulness import Baseline, class_probability_fn, delta_aupc
from probes.metrics.localization import msfi
from probes.metrics.values import Column, WideTableResult, numeric, warn_reasons

__all__ = ["IDENTICAL_MAP", "map_contrast_importance", "ContrastCorrelation", "contrast_importance_correlation",
           "mean_with_ci", "PlausibilityTests", "plausibility_tests", "time_per_map", "Thresholds",
           "TruthfulnessReport", "evaluate_methods"]

IDENTICAL_MAP = "map identical across contrasts"
ExplainFn = Callable[[Tensor, Tensor], Tensor]


# ----------------------------------------------------------------------------- helpers
def _floats(a: Any, name: str, allow_nan: bool = False) -> np.ndarray:
    """Numbers as float64: strings refused, Inf refused, NaN refused unless ``allow_nan``."""
    return numeric(a, name, allow_nan=allow_nan)


def _shapley(shapley: Any, n: int, c: int, maps_shape: Sequence[int] | None = None) -> np.ndarray:
    """Shapley values → (N, C): a cohort vector (C,) is repeated for every case."""
    s = _floats(shapley, "shapley")
    if s.shape == (c,):
        s = np.broadcast_to(s, (n, c))
    if s.shape != (n, c):
        # (N, H, W) maps read as H channels of 1-D maps: most likely the channel axis is missing
        if maps_shape is not None and len(maps_shape) == 3 and s.shape[-1:] != (c,) and s.ndim in (1, 2):
            raise ShapeError("maps", f"shape {tuple(maps_shape)}", f"one channel per contrast ({s.shape[-1]})",
                             message=f"maps shape {tuple(maps_shape)} has {c} channels but shapley shape {s.shape} "
                                     f"has {s.shape[-1]} contrasts: expected maps (N, C, *spatial) with one "
                                     "channel per contrast")
        raise ShapeError("shapley", f"shape {s.shape}", f"({c},) or ({n}, {c})",
                         message=f"shapley shape {s.shape} does not fit {n} cases × {c} contrasts: "
                                 f"expected ({c},) (cohort) or ({n}, {c}) (per case)")
    return s


def _maps_ok(maps: Any, x_shape: Sequence[int] | None = None, name: str = "maps") -> np.ndarray:
    m = as_maps(maps, x_shape, name=name)
    check_finite(m, name)
    return m.numpy()


def _quiet(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, list[str]]:
    """``fn(*args, **kwargs)`` with its ``UndefinedValueWarning``s caught; their messages are returned."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UndefinedValueWarning)
        out = fn(*args, **kwargs)
    for w in caught:  # anything else goes on to the caller
        if not issubclass(w.category, UndefinedValueWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return out, [str(w.message) for w in caught if issubclass(w.category, UndefinedValueWarning)]


def _identical(a: np.ndarray) -> np.ndarray:
    """(N,) True where every channel of the case's map is the same (or there is one channel)."""
    if a.shape[1] == 1:
        return np.ones(a.shape[0], dtype=bool)
    return np.all(a == a[:, :1], axis=tuple(range(1, a.ndim)))


# ----------------------------------------------------------------------------- G3: contrast importance
def map_contrast_importance(maps: Any) -> np.ndarray:
    """A map's importance of each contrast (Jin et al. 2023, §4.3.1): MI_m = Σ_voxels max(a_m, 0).

    ``maps`` (N, C, *spatial) → (N, C) float64; NaN/Inf refused. Defined for any finite map
    (an all-zero map has importance 0 for every contrast; ``contrast_importance_correlation``
    makes a constant importance NaN).
    """
    a = _maps_ok(maps)
    return np.maximum(a, 0.0).reshape(a.shape[0], a.shape[1], -1).sum(-1)


@dataclass(frozen=True, eq=False)
class ContrastCorrelation(WideTableResult):
    """Kendall τ-b per case (:func:`contrast_importance_correlation`).

    ``table`` (wide): case_id, method, reason ("" when defined), tau_b, p_value; ``to_frame()``:
    case_id, method, reason, metric ∈ {tau_b, p_value}, value.
    """

    tau_b = Column("Kendall τ-b per case (NaN where undefined).")
    p_value = Column("Two-sided p-value of τ-b per case (``scipy.stats.kendalltau``).")

    @property
    def reason(self) -> tuple[str, ...]:
        """Why τ-b is undefined, per case ("" when defined)."""
        return tuple(self.table["reason"])


def contrast_importance_correlation(maps: Any, shapley: Any, *, method: str = "",
                                    case_ids: Sequence[Any] | None = None) -> ContrastCorrelation:
    """Kendall τ-b per case between the map's contrast importance and the contrast Shapley values.

    τ_b = (P − Q) / √((P + Q + T_x)(P + Q + T_y)) over the C contrasts (P concordant, Q discordant
    pairs, T_x / T_y ties in one vector only; ``scipy.stats.kendalltau(variant="b")``, whose
    p-value is also returned). MI = ``map_contrast_importance(maps)``; ``shapley`` is a cohort
    vector (C,) or per-case (N, C). Undefined → NaN with a ``reason`` (and one warning):
    ``IDENTICAL_MAP`` when all channels of the case's map are equal (or the map has one
    channel, e.g. Grad-CAM); "constant contrast importance" when either vector is constant.
    NaN/Inf in ``maps`` or ``shapley`` is refused.
    """
    a = _maps_ok(maps)
    n, c = a.shape[:2]
    ids = as_case_ids(case_ids, n)
    if c == 1:
        s = _floats(shapley, "shapley")
        c_sh = s.shape[-1] if s.ndim in (1, 2) else 0
        if c_sh < 2:
            raise ShapeError("shapley", f"shape {s.shape}", "one value per contrast (>= 2 contrasts)",
                             message=f"shapley shape {s.shape}: need one value per contrast (>= 2 contrasts)")
        s = _shapley(s, n, c_sh)
    else:
        s = _shapley(shapley, n, c, a.shape)
    ident = _identical(a)
    mi = map_contrast_importance(a)
    tau = np.full(n, np.nan)
    p = np.full(n, np.nan)
    reason = [""] * n
    for i in range(n):
        if ident[i]:
            reason[i] = IDENTICAL_MAP
            continue
        if np.ptp(mi[i]) == 0 or np.ptp(s[i]) == 0:
            reason[i] = "constant contrast importance (map or Shapley)"
            continue
        r = stats.kendalltau(mi[i], s[i], variant="b")
        tau[i], p[i] = r.statistic, r.pvalue
    bad = [r for r in reason if r]
    if bad:
        kinds = sorted(set(bad))
        warnings.warn(f"contrast-importance τ undefined (NaN) for {len(bad)} of {n} cases"
                      f"{' of ' + repr(method) if method else ''}: {'; '.join(kinds)}",
                      UndefinedValueWarning, stacklevel=2)
    table = pd.DataFrame({"case_id": ids, "method": method, "reason": reason, "tau_b": tau, "p_value": p})
    return ContrastCorrelation(table=table, id_vars=("case_id", "method", "reason"),
                               title="Contrast importance of the map vs contrast Shapley values (Kendall τ-b)")


def mean_with_ci(values: Any, *, null: float = 0.0, alpha: float = 0.05) -> dict[str, Any]:
    """Mean over cases with a two-sided (1 − α) t-interval and a one-sided p for mean > ``null``.

    Student t on the non-NaN values (``scipy.stats.ttest_1samp``): CI = x̄ ± t_{1−α/2, n−1}·s/√n;
    p = P(T_{n−1} ≥ (x̄ − null)/(s/√n)). Fewer than 2 values, or zero spread, → NaN CI/p with a
    reason (and one ``UndefinedValueWarning``). NaN values (undefined cases) are left out; Inf
    is refused. Returns dict(value, ci_low, ci_high, p_value, n, reason).
    """
    check_alpha(alpha)
    v = _floats(values, "values", allow_nan=True).reshape(-1)
    v = v[~np.isnan(v)]
    out = {"value": float(v.mean()) if v.size else np.nan, "ci_low": np.nan, "ci_high": np.nan,
           "p_value": np.nan, "n": int(v.size), "reason": ""}
    if v.size < 2 or np.ptp(v) == 0:
        out["reason"] = f"{v.size} defined case(s); need >= 2" if v.size < 2 else "no spread over cases"
        warn_reasons("mean_with_ci", [out["reason"]])
        return out
    two = stats.ttest_1samp(v, null)
    ci = two.confidence_interval(1 - alpha)
    out.update(ci_low=float(ci.low), ci_high=float(ci.high),
               p_value=float(stats.ttest_1samp(v, null, alternative="greater").pvalue))
    return out


# ----------------------------------------------------------------------------- G4: plausibility
@dataclass(frozen=True, eq=False)
class PlausibilityTests(WideTableResult):
    """The G4 tests (:func:`plausibility_tests`).

    ``table`` (wide): method, group, test, reason, statistic, effect, p_value, n, n_correct,
    n_wrong; ``to_frame()``: method, group, test, reason, metric (one of the six numbers), value.
    """

    def row(self, group: str, test: str) -> pd.Series:
        """The wide row of one group ("all", "predicted=k") and test."""
        t = self.table
        return t[(t.group == group) & (t.test == test)].iloc[0]


def _spearman(msfi_values: np.ndarray, probability: np.ndarray) -> tuple[float, float, str]:
    """(ρ, p, reason) of MSFI with the probability; NaN with a reason for < 3 cases or constant data."""
    if msfi_values.size < 3:
        return np.nan, np.nan, f"{msfi_values.size} case(s); need >= 3"
    if np.ptp(msfi_values) == 0 or np.ptp(probability) == 0:
        return np.nan, np.nan, "constant MSFI or probability"
    r = stats.spearmanr(msfi_values, probability)
    return float(r.statistic), float(r.pvalue), ""


def _mann_whitney(msfi_values: np.ndarray, correct: np.ndarray) -> tuple[float, float, float, str]:
    """(U, U/(n_c·n_w), p, reason), one-sided correct > wrong; NaN with a reason for < 2 of either."""
    n_c, n_w = int(correct.sum()), int((~correct).sum())
    if n_w < 2 or n_c < 2:
        return np.nan, np.nan, np.nan, f"{n_c} correct and {n_w} wrong prediction(s); need >= 2 of each"
    r = stats.mannwhitneyu(msfi_values[correct], msfi_values[~correct], alternative="greater")
    return float(r.statistic), float(r.statistic) / (n_c * n_w), float(r.pvalue), ""


def plausibility_tests(msfi_values: Any, probability: Any, correct: Any, predicted: Any, *,
                       method: str = "") -> PlausibilityTests:
    """Does plausibility (MSFI) tell right from wrong predictions? (Jin et al. 2023, G4).

    Per group (``"all"`` and ``"predicted=k"`` for every predicted class k):
    ``spearman_msfi_prob`` — Spearman ρ of MSFI with the predicted class's ``probability``
    (``scipy.stats.spearmanr``, two-sided p); ``mannwhitney_correct_gt_wrong`` — U of MSFI of
    correct vs wrong predictions, one-sided H1: correct > wrong (``scipy.stats.mannwhitneyu``,
    ``alternative="greater"``, its default method), with effect = U / (n_correct·n_wrong), the
    probability that a correct case has the higher MSFI (ties 1/2). Cases with NaN MSFI are
    dropped. Fewer than 2 correct or 2 wrong (or constant values) → NaN with a ``reason`` (and
    one ``UndefinedValueWarning``). Inf, probabilities outside [0, 1], non-integer classes and
    ``correct`` other than 0/1 are refused.
    """
    m = _floats(msfi_values, "msfi_values", allow_nan=True).reshape(-1)
    pr = _floats(probability, "probability").reshape(-1)
    ok = np.asarray(correct).reshape(-1)
    pred = _floats(predicted, "predicted").reshape(-1)
    for name, arr in (("probability", pr), ("correct", ok), ("predicted", pred)):
        if arr.shape != m.shape:
            raise ShapeError(name, f"shape {arr.shape}", f"{m.shape} like msfi_values",
                             message=f"{name} has shape {arr.shape}; expected {m.shape} like msfi_values")
    if ((pr < 0) | (pr > 1)).any():
        raise AuditInputError("probability", f"values in [{pr.min():.3g}, {pr.max():.3g}]", "probabilities in [0, 1]",
                         message=f"probability must lie in [0, 1], got values in [{pr.min():.3g}, {pr.max():.3g}]")
    if (pred != np.round(pred)).any():
        raise ClassIndexError("predicted", "non-integer values", "integer class indices",
                              message="predicted must hold integer class indices")
    pred = pred.astype(int)
    if ok.dtype != bool:
        if ok.dtype.kind not in "biuf" or not np.isin(ok, [0, 1]).all():
            vals = np.unique(ok)[:5].tolist()
            raise LabelError("correct", vals, "boolean or 0/1",
                             message=f"correct must be boolean (or 0/1), got values {vals}")
        ok = ok.astype(bool)
    keep = ~np.isnan(m)
    dropped = int((~keep).sum())
    rows = []
    groups = [("all", keep)] + [(f"predicted={k}", keep & (pred == k)) for k in np.unique(pred)]
    for group, sel in groups:
        mm, pp, cc = m[sel], pr[sel], ok[sel]
        counts = {"n": int(sel.sum()), "n_correct": int(cc.sum()), "n_wrong": int((~cc).sum())}
        note = f"{dropped} case(s) with NaN MSFI dropped" if dropped and group == "all" else ""
        rho, p_rho, why = _spearman(mm, pp)
        rows.append({"group": group, "test": "spearman_msfi_prob",
                     "reason": "; ".join(x for x in (why, note) if x),
                     "statistic": rho, "effect": rho, "p_value": p_rho, **counts})
        u, eff, p_u, why = _mann_whitney(mm, cc)
        rows.append({"group": group, "test": "mannwhitney_correct_gt_wrong",
                     "reason": "; ".join(x for x in (why, note) if x),
                     "statistic": u, "effect": eff, "p_value": p_u, **counts})
    table = pd.DataFrame(rows).assign(method=method)[
        ["method", "group", "test", "reason", "statistic", "effect", "p_value", "n", "n_correct", "n_wrong"]]
    warn_reasons("plausibility_tests", table["reason"][table["statistic"].isna()])
    return PlausibilityTests(table=table, id_vars=("method", "group", "test", "reason"),
                             title="Informative plausibility (Jin et al. 2023, G4)")


# ----------------------------------------------------------------------------- G5: time
def time_per_map(explain_fn: ExplainFn, x: Tensor, target: Target, *, warmup: bool = True,
                 model: nn.Module | None = None) -> tuple[Tensor, float]:
    """Maps for the batch and wall-clock seconds per map (``time.perf_counter``).

    One warm-up call on the first case (lazy initialisation, allocator, caches) is not timed;
    then ``explain_fn(x, target)`` is timed once and divided by N. ``x`` is checked (NaN/Inf
    refused) and ``target`` made one class index per case; with ``model`` (the model
    ``explain_fn`` explains) ``x`` is also checked against its channels and cast to its dtype,
    and ``target`` against its classes. Returns (maps, seconds).
    """
    if model is not None and not isinstance(model, nn.Module):
        raise InputTypeError("model", type(model).__name__, "a torch.nn.Module",
                             message=f"model must be a torch.nn.Module, got {type(model).__name__}")
    x = as_input(x, "x", model=model)
    target = as_targets(target, x.shape[0])
    with model_state(model, warn="time_per_map") if model is not None else contextlib.nullcontext():
        if model is not None:
            with torch.no_grad():
                check_class_range(target, class_probability_fn(model)(x[:1]).shape[1])
        if warmup:
            explain_fn(x[:1], target[:1])
        t0 = time.perf_counter()
        maps = explain_fn(x, target)
        secs = (time.perf_counter() - t0) / x.shape[0]
    shape = getattr(getattr(maps, "maps", maps), "shape", None)  # an Attribution carries .maps
    if shape is None or tuple(shape)[:1] != (x.shape[0],):
        raise ShapeError("explain_fn", f"maps of shape {shape if shape is not None else type(maps).__name__}",
                         f"one map per case of x ({x.shape[0]})")
    return maps, secs


# ----------------------------------------------------------------------------- report
@dataclass(frozen=True)
class Thresholds:
    """Pass/fail thresholds; Jin et al. (2023) state the criteria, these numbers are defaults.

    G3 passes if both one-sided t-tests reject at ``alpha``: mean Kendall τ-b > ``tau_min``
    (Jin: a truthful map ranks contrasts like the Shapley values, i.e. positive correlation) and
    mean ΔAUPC > ``delta_aupc_min`` (Jin: better than random deletion). A map that cannot rank
    contrasts (identical across them) fails G3's contrast part. G4 passes if the one-sided
    Mann–Whitney p (MSFI of correct > wrong, all cases) < ``alpha``; undecided (NA) with fewer
    than 2 wrong predictions. G5 passes if seconds per map ≤ ``max_seconds_per_map`` (Jin give
    no number; 10 s keeps a map interactive in a reading session).
    """

    tau_min: float = 0.0
    delta_aupc_min: float = 0.0
    alpha: float = 0.05
    max_seconds_per_map: float = 10.0

    def __post_init__(self) -> None:
        check_alpha(self.alpha)
        if not self.max_seconds_per_map > 0:
            raise ValueError(f"max_seconds_per_map must be > 0, got {self.max_seconds_per_map}")


_STATS = ("value", "ci_low", "ci_high", "p_value", "n", "threshold", "passes")


def _passes_as_float(s: pd.Series) -> np.ndarray:
    return s.astype("boolean").astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)


@dataclass(frozen=True, eq=False)
class TruthfulnessReport(Result):
    """Results of :func:`evaluate_methods`.

    Native (wide) tables, kept for reading: ``criteria``: one row per method × criterion
    (method, criterion, passes (boolean, NA when undecided), reason); ``metrics``: the numbers
    behind each verdict (method, criterion, metric, value, ci_low, ci_high, p_value, n, threshold,
    passes, reason); ``per_case``: per-case values, already long (case_id, method, metric, value,
    reason); ``plausibility``: every G4 test (:func:`plausibility_tests`) per method and group;
    ``thresholds`` used.

    ``to_frame()`` is ``metrics`` in the long format: method, criterion, stat (one of value,
    ci_low, ci_high, p_value, n, threshold, passes (1/0, NaN when undecided)), reason (why the
    value is NaN; "" where defined), metric, value. A statistic that does not apply to a metric
    (the CI of a time, the threshold of a correlation without verdict) is left out. ``tables()`` adds ``criteria`` (metric ``passes``), ``per_case`` and ``plausibility``.
    """

    criteria: pd.DataFrame
    metrics: pd.DataFrame
    per_case: pd.DataFrame
    plausibility: pd.DataFrame
    thresholds: Thresholds = field(default_factory=Thresholds)
    title: str = "Clinical XAI guidelines (Jin et al. 2023): G3, G4, G5"  # type: ignore[misc]

    def to_frame(self) -> pd.DataFrame:
        """The per-method numbers, long: method, criterion, reason, stat, metric, value."""
        wide = self.metrics.assign(passes=_passes_as_float(self.metrics["passes"]))
        long = long_frame(wide.rename(columns={"metric": "quantity"}),
                          ["method", "criterion", "reason", "quantity"], list(_STATS))
        out = tidy(long.rename(columns={"metric": "stat"}).rename(columns={"quantity": "metric"})[
            ["method", "criterion", "reason", "stat", "metric", "value"]])
        out.loc[out["value"].notna(), "reason"] = ""
        # NaN without a reason is a statistic that does not apply; undefined ones carry a reason
        return out[out["value"].notna() | (out["reason"] != "")].reset_index(drop=True)

    def tables(self) -> dict[str, pd.DataFrame]:
        """``metrics`` (= ``to_frame()``), ``criteria``, ``per_case`` and ``plausibility``, each long."""
        crit = self.criteria.assign(metric="passes", value=_passes_as_float(self.criteria["passes"]))
        return {"metrics": self.to_frame(),
                "criteria": tidy(crit[["method", "criterion", "reason", "metric", "value"]]),
                "per_case": tidy(self.per_case),
                "plausibility": long_frame(self.plausibility, ["method", "group", "test", "reason"])}

    def _summary_tables(self) -> dict[str, pd.DataFrame]:
        grid = self.criteria.pivot(index="method", columns="criterion", values="passes")
        words = grid.apply(lambda col: col.map(lambda v: "n.a." if pd.isna(v) else ("PASS" if v else "fail")))
        methods = list(dict.fromkeys(self.criteria["method"]))
        verdicts = words.reindex(methods).reset_index()
        numbers = self.metrics[["method", "criterion", "metric", "value", "ci_low", "ci_high", "p_value",
                                "reason"]]
        return {"verdicts": verdicts, "numbers": numbers}

    def _notes(self) -> Sequence[str]:
        th = self.thresholds
        return ("G3 truthfulness (mean τ-b and mean ΔAUPC above their thresholds, one-sided t-tests), "
                "G4 informative plausibility (MSFI of correct > wrong predictions, Mann–Whitney), "
                "G5 computational efficiency (seconds per map).",
                f"thresholds: tau_min={th.tau_min}, delta_aupc_min={th.delta_aupc_min}, alpha={th.alpha}, "
                f"max_seconds_per_map={th.max_seconds_per_map}")


def _verdict(flags: list[Any]) -> Any:
    if any(f is False for f in flags):
        return False
    if any(f is pd.NA for f in flags):
        return pd.NA
    return True


@dataclass
class _Collector:
    """Rows of the report's tables, filled method by method."""

    case_ids: list[str]
    thresholds: Thresholds
    criteria: list[tuple[str, str, Any, str]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    per_case: list[pd.DataFrame] = field(default_factory=list)
    plausibility: list[pd.DataFrame] = field(default_factory=list)

    def metric(self, method: str, criterion: str, name: str, stat: Mapping[str, Any], threshold: float,
               passes: Any) -> None:
        self.metrics.append({"method": method, "criterion": criterion, "metric": name, "value": stat["value"],
                             "ci_low": stat.get("ci_low", np.nan), "ci_high": stat.get("ci_high", np.nan),
                             "p_value": stat.get("p_value", np.nan), "n": stat.get("n", len(self.case_ids)),
                             "threshold": threshold, "passes": passes, "reason": stat.get("reason", "")})

    def values(self, method: str, name: str, values: Any, reasons: Sequence[str] | str = "") -> None:
        """Per-case values of one metric; ``reasons`` (per case, or one for all) kept where NaN."""
        v = np.asarray(values, dtype=np.float64)
        why = np.broadcast_to(np.asarray(reasons, dtype=object), v.shape)
        self.per_case.append(pd.DataFrame({"case_id": self.case_ids, "method": method, "metric": name,
                                           "value": v, "reason": np.where(np.isnan(v), why, "")}))

    def mean_test(self, method: str, name: str, label: str, values: np.ndarray, null: float,
                  reasons: Sequence[str] = ()) -> tuple[bool, str]:
        """One-sided t-test of mean > null as the G3 metric row ``{name}_mean``; (passes, why not).

        With no defined value, the per-case ``reasons`` explain why.
        """
        st, _ = _quiet(mean_with_ci, values, null=null, alpha=self.thresholds.alpha)
        if st["n"] == 0 and any(reasons):
            st["reason"] = "; ".join(sorted({r for r in reasons if r}))
        ok = bool(st["p_value"] < self.thresholds.alpha) if pd.notna(st["p_value"]) else False
        self.metric(method, "G3", f"{name}_mean", st, null, ok)
        return ok, "" if ok else f"mean {label} not > {null}" + (f" ({st['reason']})" if st["reason"] else "")


def evaluate_methods(model: nn.Module, x: Tensor, target: Target | None = None, *, labels: Any,
                     methods: Mapping[str, ExplainFn], mask: Any, shapley: Any, importance: Any = None,
                     thresholds: Thresholds = Thresholds(), case_ids: Sequence[Any] | None = None,
                     n_samples: int = 10, steps: int = 20, baseline: Baseline = 0.0, batch_size: int = 32,
                     seed: int = 0, output: Output = None, warmup: bool = True) -> TruthfulnessReport:
    """Jin et al.'s G3/G4/G5 for every attribution method: one verdict per method × criterion.

    Args:
        model: a classifier; its output is read as ``output`` says (``None``: its declared
            interface, ``probes.core.as_audit_model``; ``"logits"``, ``"probabilities"``, ...).
        x: input (N, C, *spatial).
        target: the class each map explains (an int, or one per case); ``None`` (default): the
            model's predicted class, as Jin et al. do. G4 always uses the prediction: correct =
            (predicted == label), p̂ = the predicted class's probability.
        labels: true classes (N,).
        methods: ``{method name: explain_fn}``, ``explain_fn(x, target) -> (N, 1 or C, *spatial)``.
        mask: MSFI feature ROI — one shared (N, *spatial) or one per contrast (N, C, *spatial)
            (e.g. the lesion on T1c, the oedema on FLAIR, empty where a contrast shows none).
        shapley: contrast Shapley values, cohort (C,) or per case (N, C), for τ-b.
        importance: contrast importance weighting MSFI (``localization.normalise_importance``),
            (C,) or (N, C); default the cohort vector: ``shapley``, or its mean over cases when
            given per case (Jin et al. weight by the dataset-level Shapley values; per-case
            values of a class probability are often all ≤ 0, which leaves MSFI undefined).
        thresholds: see :class:`Thresholds`.
        n_samples, steps, baseline, batch_size, seed, output: passed to
            ``faithfulness.delta_aupc`` (deletion; ΔAUPC = mean AUPC(random) − AUPC(map));
            ``batch_size`` also chunks the predictions.
        warmup: an untimed call on one case before timing (``time_per_map``).

    Per method: G3 from ``contrast_importance_correlation`` and ``delta_aupc`` (means with
    t-intervals, ``mean_with_ci``), G4 from ``plausibility_tests`` on MSFI (a one-channel map is
    repeated for every contrast, as Jin et al. do for Grad-CAM), G5 from ``time_per_map``.
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError("model", type(model).__name__, "a torch.nn.Module",
                             message=f"model must be a torch.nn.Module, got {type(model).__name__}")
    x = as_input(x, "x", model=model)
    if not isinstance(methods, Mapping) or not methods:
        raise InputTypeError("methods", type(methods).__name__, "a non-empty mapping {method name: explain_fn}",
                             message="methods is empty or not a mapping: pass {method name: explain_fn}")
    n, c = x.shape[:2]
    ids = as_case_ids(case_ids, n)
    y = as_labels(labels, n, binary=False)
    sh = _shapley(shapley, n, c)
    w_msfi = _floats(shapley, "shapley") if importance is None else _floats(importance, "importance")
    if importance is None and w_msfi.ndim == 2:
        w_msfi = w_msfi.mean(0)
    if w_msfi.shape not in ((c,), (n, c)):
        raise ShapeError("importance", f"shape {w_msfi.shape}", f"({c},) or ({n}, {c})",
                         message=f"importance shape {w_msfi.shape}; expected ({c},) or ({n}, {c})")
    th = thresholds
    out = _Collector(ids, th)
    with model_state(model, warn="evaluate_methods"):
        with torch.no_grad():
            prob, batch_size = class_probability_fn(model, output, dtype=torch.float64), check_int(batch_size,
                                                                                                  "batch_size")
            probs = torch.cat([prob(x[a:a + batch_size]).double() for a in range(0, n, batch_size)])
        check_class_range(torch.as_tensor(y), probs.shape[1], "labels")
        pred = probs.argmax(1)
        explained = pred if target is None else as_targets(target, n, device=pred.device)
        check_class_range(explained, probs.shape[1], "target")
        p_hat = probs.gather(1, pred[:, None])[:, 0].cpu().numpy()
        pred_np = pred.cpu().numpy()
        correct = pred_np == y
        for meth, fn in methods.items():
            maps, secs = time_per_map(fn, x, explained, warmup=warmup)
            a = _maps_ok(maps, x.shape, name=f"maps of method {meth!r}")
            # G3 (a): contrast importance vs Shapley (its warning goes into the call's one warning)
            tau, _ = _quiet(contrast_importance_correlation, a, sh, method=meth, case_ids=ids)
            out.values(meth, "tau_b", tau.tau_b, tau.reason)
            ok_tau, why_tau = out.mean_test(meth, "tau_b", "τ-b", tau.tau_b, th.tau_min, tau.reason)
            # G3 (b): ΔAUPC
            d, _ = _quiet(delta_aupc, model, x, explained, a, n_samples=n_samples, seed=seed, steps=steps,
                          baseline=baseline, batch_size=batch_size, output=output, method=meth, case_ids=ids)
            for name in ("aupc", "aupc_random_mean", "aupc_random_std", "delta_aupc"):
                out.values(meth, name, d.column(name), d.table["reason"].to_numpy())
            ok_d, why_d = out.mean_test(meth, "delta_aupc", "ΔAUPC", d.delta_aupc, th.delta_aupc_min,
                                        tuple(d.table["reason"]))
            why = "; ".join(w for w in (why_tau, why_d) if w)
            out.criteria.append((meth, "G3", _verdict([ok_tau, ok_d]), why))
            # G4: MSFI vs correctness
            a_c = np.array(np.broadcast_to(a, (n, c, *a.shape[2:])))  # writable: torch refuses read-only arrays
            ms, why_ms = _quiet(msfi, a_c, mask, w_msfi)
            ms = ms.numpy()
            out.values(meth, "msfi", ms, "; ".join(w.split(" — ", 1)[-1] for w in why_ms))
            t4, _ = _quiet(plausibility_tests, ms, p_hat, correct, pred_np, method=meth)
            out.plausibility.append(t4.table)
            mw = t4.row("all", "mannwhitney_correct_gt_wrong")
            ok4 = pd.NA if pd.isna(mw.p_value) else bool(mw.p_value < th.alpha)
            out.metric(meth, "G4", "mannwhitney_effect",
                       {"value": mw.effect, "p_value": mw.p_value, "n": mw.n, "reason": mw.reason}, th.alpha, ok4)
            sp = t4.row("all", "spearman_msfi_prob")
            out.metric(meth, "G4", "spearman_msfi_prob",
                       {"value": sp.statistic, "p_value": sp.p_value, "n": sp.n, "reason": sp.reason}, np.nan, pd.NA)
            out.criteria.append((meth, "G4", ok4, mw.reason if ok4 is pd.NA else
                                 ("" if ok4 else f"MSFI of correct not > wrong at alpha={th.alpha}")))
            # G5: time
            ok5 = bool(secs <= th.max_seconds_per_map)
            out.metric(meth, "G5", "seconds_per_map", {"value": secs, "n": n}, th.max_seconds_per_map, ok5)
            out.criteria.append((meth, "G5", ok5,
                                 "" if ok5 else f"{secs:.3g} s > {th.max_seconds_per_map} s per map"))

    extra = [pd.DataFrame({"case_id": ids, "method": "", "metric": name, "value": v.astype(np.float64),
                           "reason": ""}) for name, v in (("predicted", pred_np), ("prob", p_hat),
                                                           ("correct", correct))]
    crit = pd.DataFrame(out.criteria, columns=["method", "criterion", "passes", "reason"])
    crit["passes"] = crit["passes"].astype("boolean")
    mets = pd.DataFrame(out.metrics)
    mets["passes"] = mets["passes"].astype("boolean")
    rep = TruthfulnessReport(criteria=crit, metrics=mets,
                             per_case=pd.concat([*out.per_case, *extra], ignore_index=True),
                             plausibility=pd.concat(out.plausibility, ignore_index=True), thresholds=th)
    frame = rep.to_frame()
    warn_reasons("evaluate_methods", [*frame["reason"][frame["value"].isna()],
                                      *rep.per_case["reason"][rep.per_case["value"].isna()]])
    return rep
