"""Clinical-XAI truthfulness suite (Jin et al., Medical Image Analysis 84, 2023: G3, G4, G5).

Jin, Li, Fatehi & Hamarneh, "Guidelines and evaluation of clinical explainable AI in medical
image analysis" ask of every heat-map method:

* **G3 truthfulness** — (a) *modality importance*: per case, the map's importance of contrast m is
  Σ of its positive attribution over that channel; Kendall τ-b of that vector with the modality
  Shapley values (the model's own reliance on each contrast); (b) *ΔAUPC*: deletion of the map's
  top features hurts the prediction faster than random deletion (``probes.faithfulness``).
* **G4 informative plausibility** — a map's plausibility (MSFI against ground-truth feature
  masks, ``probes.localization.msfi``) should tell right from wrong predictions: one-sided
  Mann–Whitney U of MSFI for correct > wrong predictions (overall and per predicted class), and
  Spearman ρ of MSFI with the predicted class's probability.
* **G5 computational efficiency** — wall-clock seconds per map.

``evaluate_methods`` runs all of them for several methods and returns a
:class:`TruthfulnessReport`: one verdict per method × criterion, with the thresholds as
parameters (:class:`Thresholds`). Undefined values are NaN with the reason in a ``reason``
column (and a warning), never a crash: a map identical across contrasts (Grad-CAM broadcast to
channels) has no modality ranking; fewer than 2 wrong predictions leave G4 undecided.
Maps are ``(N, 1 or C, *spatial)``: 2D and 3D share one code path. The model is only run under
``torch.no_grad()`` here (the explain functions are the caller's).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn

from probes.metrics.faithfulness import delta_aupc
from probes.metrics.localization import msfi

__all__ = ["IDENTICAL_MAP", "map_modality_importance", "modality_importance_correlation",
           "mean_with_ci", "plausibility_tests", "time_per_map", "Thresholds", "TruthfulnessReport",
           "evaluate_methods"]

IDENTICAL_MAP = "map identical across contrasts"
ExplainFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- helpers
def _np(a, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().double().numpy()
    a = np.asarray(a)
    if a.dtype == object or a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric array or tensor, got dtype {a.dtype}")
    return a.astype(np.float64, copy=False)


def _maps(maps, name: str = "maps") -> np.ndarray:
    a = _np(maps, name)
    if a.ndim < 3:
        raise ValueError(f"{name} must be (N, C_map, *spatial) with >= 1 spatial dim, got shape {a.shape}")
    return a


def _ids(case_ids, n: int) -> list:
    ids = list(range(n)) if case_ids is None else list(case_ids)
    if len(ids) != n:
        raise ValueError(f"case_ids has {len(ids)} entries for {n} cases")
    return ids


def _shapley(shapley, n: int, c: int) -> np.ndarray:
    """Shapley values → (N, C): a cohort vector (C,) is repeated for every case."""
    s = _np(shapley, "shapley")
    if s.shape == (c,):
        s = np.broadcast_to(s, (n, c))
    if s.shape != (n, c):
        raise ValueError(f"shapley shape {s.shape} does not fit {n} cases × {c} contrasts: "
                         f"expected ({c},) (cohort) or ({n}, {c}) (per case)")
    if not np.isfinite(s).all():
        raise ValueError("shapley contains NaN or Inf")
    return s


def _identical(a: np.ndarray) -> np.ndarray:
    """(N,) True where every channel of the case's map is the same (or there is one channel)."""
    if a.shape[1] == 1:
        return np.ones(a.shape[0], dtype=bool)
    return np.all(a == a[:, :1], axis=tuple(range(1, a.ndim)))


# ----------------------------------------------------------------------------- G3: modality importance
def map_modality_importance(maps) -> np.ndarray:
    """A map's importance of each contrast (Jin et al. 2023, §4.3.1): MI_m = Σ_voxels max(a_m, 0).

    ``maps`` (N, C, *spatial) → (N, C) float64.
    """
    a = _maps(maps)
    return np.maximum(a, 0.0).reshape(a.shape[0], a.shape[1], -1).sum(-1)


def modality_importance_correlation(maps, shapley, *, method: str = "",
                                    case_ids: Sequence | None = None) -> pd.DataFrame:
    """Kendall τ-b per case between the map's modality importance and the modality Shapley values.

    τ_b = (P − Q) / √((P + Q + T_x)(P + Q + T_y)) over the C contrasts (P concordant, Q discordant
    pairs, T_x / T_y ties in one vector only; ``scipy.stats.kendalltau(variant="b")``, whose
    p-value is also returned). MI = ``map_modality_importance(maps)``; ``shapley`` is a cohort
    vector (C,) or per-case (N, C). Undefined → NaN with a ``reason`` (and one warning):
    ``IDENTICAL_MAP`` when all channels of the case's map are equal (or the map has one
    channel, e.g. Grad-CAM); "constant modality importance" when either vector is constant.
    Returns columns case_id, method, tau_b, p_value, reason ("" when defined).
    """
    a = _maps(maps)
    n, c = a.shape[:2]
    ids = _ids(case_ids, n)
    if c == 1:
        s = _np(shapley, "shapley")
        c_sh = s.shape[-1] if s.ndim in (1, 2) else 0
        if c_sh < 2:
            raise ValueError(f"shapley shape {s.shape}: need one value per contrast (>= 2 contrasts)")
        s = _shapley(s, n, c_sh)
    else:
        s = _shapley(shapley, n, c)
    ident = _identical(a)
    mi = map_modality_importance(a)
    tau = np.full(n, np.nan)
    p = np.full(n, np.nan)
    reason = [""] * n
    for i in range(n):
        if ident[i]:
            reason[i] = IDENTICAL_MAP
            continue
        if np.ptp(mi[i]) == 0 or np.ptp(s[i]) == 0:
            reason[i] = "constant modality importance (map or Shapley)"
            continue
        r = stats.kendalltau(mi[i], s[i], variant="b")
        tau[i], p[i] = r.statistic, r.pvalue
    bad = [r for r in reason if r]
    if bad:
        kinds = sorted(set(bad))
        warnings.warn(f"modality-importance τ undefined (NaN) for {len(bad)} of {n} cases"
                      f"{' of ' + repr(method) if method else ''}: {'; '.join(kinds)}",
                      UserWarning, stacklevel=2)
    return pd.DataFrame({"case_id": ids, "method": method, "tau_b": tau, "p_value": p, "reason": reason})


def mean_with_ci(values, *, null: float = 0.0, alpha: float = 0.05) -> dict:
    """Mean over cases with a two-sided (1 − α) t-interval and a one-sided p for mean > ``null``.

    Student t on the non-NaN values (``scipy.stats.ttest_1samp``): CI = x̄ ± t_{1−α/2, n−1}·s/√n;
    p = P(T_{n−1} ≥ (x̄ − null)/(s/√n)). Fewer than 2 values, or zero spread, → NaN CI/p with a
    reason. Returns dict(value, ci_low, ci_high, p_value, n, reason).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    v = _np(values, "values").reshape(-1)
    v = v[~np.isnan(v)]
    out = {"value": float(v.mean()) if v.size else np.nan, "ci_low": np.nan, "ci_high": np.nan,
           "p_value": np.nan, "n": int(v.size), "reason": ""}
    if v.size < 2:
        out["reason"] = f"{v.size} defined case(s); need >= 2"
        return out
    if np.ptp(v) == 0:
        out["reason"] = "no spread over cases"
        return out
    two = stats.ttest_1samp(v, null)
    ci = two.confidence_interval(1 - alpha)
    out.update(ci_low=float(ci.low), ci_high=float(ci.high),
               p_value=float(stats.ttest_1samp(v, null, alternative="greater").pvalue))
    return out


# ----------------------------------------------------------------------------- G4: plausibility
def plausibility_tests(msfi_values, prob, correct, predicted, *, method: str = "") -> pd.DataFrame:
    """Does plausibility (MSFI) tell right from wrong predictions? (Jin et al. 2023, G4).

    Per group (``"all"`` and ``"predicted=k"`` for every predicted class k):
    ``spearman_msfi_prob`` — Spearman ρ of MSFI with the predicted class's probability
    (``scipy.stats.spearmanr``, two-sided p); ``mannwhitney_correct_gt_wrong`` — U of MSFI of
    correct vs wrong predictions, one-sided H1: correct > wrong (``scipy.stats.mannwhitneyu``,
    ``alternative="greater"``, its default method), with effect = U / (n_correct·n_wrong), the
    probability that a correct case has the higher MSFI (ties 1/2). Cases with NaN MSFI are
    dropped. Fewer than 2 correct or 2 wrong (or constant values) → NaN with a ``reason``.
    Returns columns method, group, test, statistic, effect, p_value, n, n_correct, n_wrong, reason.
    """
    m = _np(msfi_values, "msfi_values").reshape(-1)
    pr = _np(prob, "prob").reshape(-1)
    ok = np.asarray(correct).reshape(-1)
    pred = np.asarray(predicted).reshape(-1)
    for name, arr in (("prob", pr), ("correct", ok), ("predicted", pred)):
        if arr.shape != m.shape:
            raise ValueError(f"{name} has shape {arr.shape}; expected {m.shape} like msfi_values")
    if ok.dtype != bool:
        if not np.isin(ok, [0, 1]).all():
            raise ValueError(f"correct must be boolean (or 0/1), got values {np.unique(ok)[:5].tolist()}")
        ok = ok.astype(bool)
    keep = ~np.isnan(m)
    dropped = int((~keep).sum())
    rows = []
    groups = [("all", keep)] + [(f"predicted={k}", keep & (pred == k)) for k in np.unique(pred)]
    for group, sel in groups:
        mm, pp, cc = m[sel], pr[sel], ok[sel]
        n, n_c, n_w = int(sel.sum()), int(cc.sum()), int((~cc).sum())
        note = f"{dropped} case(s) with NaN MSFI dropped" if dropped and group == "all" else ""
        # Spearman
        rho = p_rho = np.nan
        why = ""
        if n < 3:
            why = f"{n} case(s); need >= 3"
        elif np.ptp(mm) == 0 or np.ptp(pp) == 0:
            why = "constant MSFI or probability"
        else:
            r = stats.spearmanr(mm, pp)
            rho, p_rho = float(r.statistic), float(r.pvalue)
        rows.append((group, "spearman_msfi_prob", rho, rho, p_rho, n, n_c, n_w, "; ".join(x for x in (why, note) if x)))
        # Mann–Whitney
        u = eff = p_u = np.nan
        why = ""
        if n_w < 2 or n_c < 2:
            why = f"{n_c} correct and {n_w} wrong prediction(s); need >= 2 of each"
        else:
            r = stats.mannwhitneyu(mm[cc], mm[~cc], alternative="greater")
            u, p_u = float(r.statistic), float(r.pvalue)
            eff = u / (n_c * n_w)
        rows.append((group, "mannwhitney_correct_gt_wrong", u, eff, p_u, n, n_c, n_w,
                     "; ".join(x for x in (why, note) if x)))
    return pd.DataFrame(rows, columns=["group", "test", "statistic", "effect", "p_value", "n", "n_correct",
                                       "n_wrong", "reason"]).assign(method=method)[
        ["method", "group", "test", "statistic", "effect", "p_value", "n", "n_correct", "n_wrong", "reason"]]


# ----------------------------------------------------------------------------- G5: time
def time_per_map(explain_fn: ExplainFn, x: torch.Tensor, target: torch.Tensor, *,
                 warmup: bool = True) -> tuple[torch.Tensor, float]:
    """Maps for the batch and wall-clock seconds per map (``time.perf_counter``).

    One warm-up call on the first case (lazy initialisation, allocator, caches) is not timed;
    then ``explain_fn(x, target)`` is timed once and divided by N. Returns (maps, seconds).
    """
    if warmup:
        explain_fn(x[:1], target[:1])
    t0 = time.perf_counter()
    maps = explain_fn(x, target)
    return maps, (time.perf_counter() - t0) / x.shape[0]


# ----------------------------------------------------------------------------- orchestrator
@dataclass(frozen=True)
class Thresholds:
    """Pass/fail thresholds; Jin et al. (2023) state the criteria, these numbers are our defaults.

    G3 passes if both one-sided t-tests reject at ``alpha``: mean Kendall τ-b > ``tau_min``
    (Jin: a truthful map ranks contrasts like the Shapley values, i.e. positive correlation) and
    mean ΔAUPC > ``delta_aupc_min`` (Jin: better than random deletion). A map that cannot rank
    contrasts (identical across them) fails G3's modality part. G4 passes if the one-sided
    Mann–Whitney p (MSFI of correct > wrong, all cases) < ``alpha``; undecided (NA) with fewer
    than 2 wrong predictions. G5 passes if seconds per map ≤ ``max_seconds_per_map`` (Jin give
    no number; 10 s keeps a map interactive in a reading session).
    """

    tau_min: float = 0.0
    delta_aupc_min: float = 0.0
    alpha: float = 0.05
    max_seconds_per_map: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not self.max_seconds_per_map > 0:
            raise ValueError(f"max_seconds_per_map must be > 0, got {self.max_seconds_per_map}")


@dataclass(frozen=True)
class TruthfulnessReport:
    """Results of :func:`evaluate_methods`.

    ``criteria``: one row per method × criterion (method, criterion, passes, reason);
    ``metrics``: the numbers behind each verdict (method, criterion, metric, value, ci_low,
    ci_high, p_value, n, threshold, passes, reason); ``per_case``: tidy per-case values
    (case_id, method, metric, value, reason); ``plausibility``: every G4 test
    (:func:`plausibility_tests`) per method and group; ``thresholds`` used.
    """

    criteria: pd.DataFrame
    metrics: pd.DataFrame
    per_case: pd.DataFrame
    plausibility: pd.DataFrame
    thresholds: Thresholds = field(default_factory=Thresholds)

    def to_frame(self) -> pd.DataFrame:
        """The per-method metrics table (long format)."""
        return self.metrics.copy()

    def summary(self) -> str:
        """Verdict grid: methods × G3/G4/G5 (PASS / fail / n.a.) and the key numbers."""
        lines = ["Clinical XAI guidelines (Jin et al. 2023): G3 truthfulness, G4 informative "
                 "plausibility, G5 computational efficiency", ""]
        grid = self.criteria.pivot(index="method", columns="criterion", values="passes")
        word = lambda v: "n.a." if pd.isna(v) else ("PASS" if v else "fail")
        lines.append(f"{'method':<24}" + "".join(f"{c:>8}" for c in grid.columns))
        for m, row in grid.iterrows():
            lines.append(f"{str(m):<24}" + "".join(f"{word(v):>8}" for v in row))
        lines.append("")
        for _, r in self.metrics.iterrows():
            ci = f" [{r.ci_low:.3g}, {r.ci_high:.3g}]" if pd.notna(r.ci_low) else ""
            p = f" p={r.p_value:.3g}" if pd.notna(r.p_value) else ""
            why = f"  ({r.reason})" if r.reason else ""
            lines.append(f"{r.method:<24}{r.criterion:<4}{r.metric:<30}{r.value:.4g}{ci}{p}{why}")
        return "\n".join(lines)


def _verdict(flags: list) -> object:
    if any(f is False for f in flags):
        return False
    if any(f is pd.NA for f in flags):
        return pd.NA
    return True


def evaluate_methods(model: nn.Module, x: torch.Tensor, labels, masks, shapley,
                     methods: Mapping[str, ExplainFn], *, thresholds: Thresholds = Thresholds(),
                     case_ids: Sequence | None = None, n_random: int = 10, steps: int = 20,
                     baseline: float | str | torch.Tensor = 0.0, batch_size: int = 32, seed: int = 0,
                     output: str = "softmax", warmup: bool = True,
                     msfi_weights=None) -> TruthfulnessReport:
    """Jin et al.'s G3/G4/G5 for every method: one verdict table per method × criterion.

    Args:
        model: a classifier returning logits (N, K) (``output="softmax"``); every map explains
            the *predicted* class, p̂ = its probability.
        x: input (N, C, *spatial).
        labels: true classes (N,); correct = (predicted == label).
        masks: MSFI feature ROIs — one shared (N, *spatial) or one per contrast (N, C, *spatial)
            (e.g. the lesion on T1c, the oedema on FLAIR, empty where a contrast shows none).
        shapley: modality Shapley values, cohort (C,) or per case (N, C), for τ-b.
        msfi_weights: modality importance weighting MSFI (``localization.normalise_importance``),
            (C,) or (N, C); default the cohort vector: ``shapley``, or its mean over cases when
            given per case (Jin et al. weight by the dataset-level Shapley values; per-case
            values of a class probability are often all ≤ 0, which leaves MSFI undefined).
        methods: ``{name: explain_fn}``, ``explain_fn(x, target) -> (N, 1 or C, *spatial)``.
        thresholds: see :class:`Thresholds`.
        n_random, steps, baseline, batch_size, seed, output: passed to
            ``faithfulness.delta_aupc`` (deletion; ΔAUPC = mean AUPC(random) − AUPC(map)).
        warmup: an untimed call on one case before timing (``time_per_map``).

    Per method: G3 from ``modality_importance_correlation`` and ``delta_aupc`` (means with
    t-intervals, ``mean_with_ci``), G4 from ``plausibility_tests`` on MSFI (a one-channel map is
    repeated for every contrast, as Jin et al. do for Grad-CAM), G5 from ``time_per_map``.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 3:
        raise ValueError(f"x must be a tensor (N, C, *spatial), got {getattr(x, 'shape', type(x))}")
    if not methods:
        raise ValueError("methods is empty: pass {name: explain_fn}")
    n, c = x.shape[:2]
    ids = _ids(case_ids, n)
    y = _np(labels, "labels").reshape(-1)
    if y.shape != (n,):
        raise ValueError(f"labels has shape {y.shape}; expected ({n},) for x of shape {tuple(x.shape)}")
    sh = _shapley(shapley, n, c)
    w_msfi = _np(shapley, "shapley") if msfi_weights is None else _np(msfi_weights, "msfi_weights")
    if msfi_weights is None and w_msfi.ndim == 2:
        w_msfi = w_msfi.mean(0)
    if w_msfi.shape not in ((c,), (n, c)):
        raise ValueError(f"msfi_weights shape {w_msfi.shape}; expected ({c},) or ({n}, {c})")
    if model.training:
        warnings.warn("evaluate_methods: model is in training mode (BatchNorm/Dropout make the "
                      "deletion curves noisy); call model.eval() first", UserWarning, stacklevel=2)
    with torch.no_grad():
        logits = model(x)
    if logits.dim() != 2 or logits.shape[0] != n:
        raise ValueError(f"model output must be logits (N={n}, K), got shape {tuple(logits.shape)}")
    probs = torch.softmax(logits.double(), 1) if output == "softmax" else logits.double()
    pred = probs.argmax(1)
    p_hat = probs.gather(1, pred[:, None])[:, 0].cpu().numpy()
    pred_np = pred.cpu().numpy()
    correct = pred_np == y
    th = thresholds

    crit_rows, metric_rows, case_rows, tests = [], [], [], []

    def metric(meth, crit, name, stat, threshold, passes):
        metric_rows.append({"method": meth, "criterion": crit, "metric": name, "value": stat["value"],
                            "ci_low": stat.get("ci_low", np.nan), "ci_high": stat.get("ci_high", np.nan),
                            "p_value": stat.get("p_value", np.nan), "n": stat.get("n", n),
                            "threshold": threshold, "passes": passes, "reason": stat.get("reason", "")})

    def per_case(meth, name, values, reasons=None):
        case_rows.append(pd.DataFrame({"case_id": ids, "method": meth, "metric": name,
                                       "value": np.asarray(values, dtype=np.float64),
                                       "reason": "" if reasons is None else list(reasons)}))

    for meth, fn in methods.items():
        maps, secs = time_per_map(fn, x, pred, warmup=warmup)
        maps = torch.as_tensor(maps).detach()
        if maps.dim() != x.dim() or maps.shape[0] != n or maps.shape[2:] != x.shape[2:] \
                or maps.shape[1] not in (1, c):
            raise ValueError(f"method {meth!r} returned maps of shape {tuple(maps.shape)}; expected "
                             f"(N, 1 or C, *spatial) for x of shape {tuple(x.shape)}")
        a = maps.double().cpu().numpy()
        # G3 (a): modality importance vs Shapley
        tau = modality_importance_correlation(a, sh, method=meth, case_ids=ids)
        per_case(meth, "tau_b", tau.tau_b, tau.reason)
        st = mean_with_ci(tau.tau_b.to_numpy(), null=th.tau_min, alpha=th.alpha)
        if st["n"] == 0:
            st["reason"] = "; ".join(sorted(set(tau.reason)))
        ok_tau = bool(st["p_value"] < th.alpha) if pd.notna(st["p_value"]) else False
        metric(meth, "G3", "tau_b_mean", st, th.tau_min, ok_tau)
        why = [] if ok_tau else [f"mean τ-b not > {th.tau_min}" + (f" ({st['reason']})" if st["reason"] else "")]
        # G3 (b): ΔAUPC
        d = delta_aupc(model, x, a, pred, n_random=n_random, seed=seed, steps=steps, baseline=baseline,
                       batch_size=batch_size, output=output, method=meth, case_ids=ids)
        for name in ("aupc", "aupc_random_mean", "aupc_random_std", "delta_aupc"):
            per_case(meth, name, d[d.metric == name].value.to_numpy())
        st = mean_with_ci(d[d.metric == "delta_aupc"].value.to_numpy(), null=th.delta_aupc_min, alpha=th.alpha)
        ok_d = bool(st["p_value"] < th.alpha) if pd.notna(st["p_value"]) else False
        metric(meth, "G3", "delta_aupc_mean", st, th.delta_aupc_min, ok_d)
        if not ok_d:
            why.append(f"mean ΔAUPC not > {th.delta_aupc_min}" + (f" ({st['reason']})" if st["reason"] else ""))
        crit_rows.append((meth, "G3", _verdict([ok_tau, ok_d]), "; ".join(why)))
        # G4: MSFI vs correctness
        a_c = np.broadcast_to(a, (n, c, *a.shape[2:]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NaN MSFI cases are counted in the tests' reason
            ms = msfi(a_c, masks, w_msfi).numpy()
        per_case(meth, "msfi", ms)
        t4 = plausibility_tests(ms, p_hat, correct, pred_np, method=meth)
        tests.append(t4)
        mw = t4[(t4.group == "all") & (t4.test == "mannwhitney_correct_gt_wrong")].iloc[0]
        ok4 = pd.NA if pd.isna(mw.p_value) else bool(mw.p_value < th.alpha)
        metric(meth, "G4", "mannwhitney_effect", {"value": mw.effect, "p_value": mw.p_value, "n": mw.n,
                                                   "reason": mw.reason}, th.alpha, ok4)
        sp = t4[(t4.group == "all") & (t4.test == "spearman_msfi_prob")].iloc[0]
        metric(meth, "G4", "spearman_msfi_prob", {"value": sp.statistic, "p_value": sp.p_value, "n": sp.n,
                                                  "reason": sp.reason}, np.nan, pd.NA)
        crit_rows.append((meth, "G4", ok4, mw.reason if ok4 is pd.NA else
                          ("" if ok4 else f"MSFI of correct not > wrong at alpha={th.alpha}")))
        # G5: time
        ok5 = bool(secs <= th.max_seconds_per_map)
        metric(meth, "G5", "seconds_per_map", {"value": secs, "n": n}, th.max_seconds_per_map, ok5)
        crit_rows.append((meth, "G5", ok5, "" if ok5 else f"{secs:.3g} s > {th.max_seconds_per_map} s per map"))

    per = pd.concat(case_rows, ignore_index=True)
    extra = [pd.DataFrame({"case_id": ids, "method": "", "metric": name, "value": v.astype(np.float64),
                           "reason": ""}) for name, v in (("predicted", pred_np), ("prob", p_hat),
                                                           ("correct", correct))]
    crit = pd.DataFrame(crit_rows, columns=["method", "criterion", "passes", "reason"])
    crit["passes"] = crit["passes"].astype("boolean")
    mets = pd.DataFrame(metric_rows)
    mets["passes"] = mets["passes"].astype("boolean")
    return TruthfulnessReport(criteria=crit, metrics=mets, per_case=pd.concat([per, *extra], ignore_index=True),
                              plausibility=pd.concat(tests, ignore_index=True), thresholds=th)
