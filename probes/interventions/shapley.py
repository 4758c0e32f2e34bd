"""Exact Shapley values over MRI contrasts (players = input channels), classification and
segmentation, with the absent-contrast fill chosen explicitly.

Shapley value of player j in a game v over players N = {1..M} (Shapley 1953):

    φ_j = Σ_{S ⊆ N∖{j}} |S|! (M − |S| − 1)! / M! · [v(S ∪ {j}) − v(S)],

and Σ_j φ_j = v(N) − v(∅) (efficiency). :func:`exact_shapley` evaluates each of the 2^M
coalitions once and reuses it for every player (φ = W·v with a fixed ±weight matrix W), where
Captum's ``ShapleyValues`` walks all M! permutations (M!·M + 1 = 97 evaluations for 4
contrasts against 16 here).

:func:`modality_shapley` builds all 2^M coalition inputs of a cohort in batches (one forward per
chunk) and supports three fills for an absent contrast (the choice decides the answer):

* ``"zero"`` — the contrast is set to 0 (Jin et al.; BraTS 2024 Shapley study). Zero is out of
  distribution for a normalised MRI contrast and can hand importance to a contrast that carries
  no label information.
* ``"mean"`` — the contrast is set to the case's mean of that contrast over the brain (the
  ``brain`` mask when given, else the whole image), everywhere.
* ``"marginal"`` — interventional Shapley: for draw d the absent contrasts of case i are taken
  from case π_d(i), π_d a seeded derangement of the cohort (no case is its own donor); v(S) is
  averaged over ``n_draws`` draws (default 8). Inputs stay in distribution contrast by contrast;
  the Monte-Carlo error shrinks like 1/√(n_draws·N) for cohort means (per-draw φ are kept in
  ``phi_draws`` so that their spread can be reported).

Rankings: :func:`contrast_ranking` (rank 1 = largest φ; ties within ``tol`` share the *minimum*
rank, "competition" ranking 1-2-3-3, which is how the BraTS study writes its clinical reference
T1c=1, FLAIR=2, T1/T2=3). Agreement: :func:`normalized_spearman_footrule` returns
``1 − F/F_max`` (1 = identical, 0 = most discordant), F = Σ|r_i − s_i| (Spearman 1906; Diaconis &
Graham 1977) and F_max the largest F any competition ranking of M items reaches against the
reference's tie structure (brute force). :func:`ranking_variance` gives the spread of rankings
across folds (or draws).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from probes.interventions.shapley_rank import (RankingVariance, contrast_ranking, footrule_max,
                           normalized_spearman_footrule, ranking_variance)

__all__ = ["EfficiencyWarning", "exact_shapley", "shapley_from_values", "coalition_masks",
           "ModalityShapley", "modality_shapley", "contrast_ranking",
           "normalized_spearman_footrule", "footrule_max", "RankingVariance", "ranking_variance",
           "baseline_disagreement"]

ABSENT = ("zero", "mean", "marginal")
METRICS = ("accuracy", "auc", "prob", "logit", "dice")
_PER_CASE = ("accuracy", "prob", "logit", "dice")
MAX_PLAYERS = 12


class EfficiencyWarning(UserWarning):
    """Σφ differs from v(all) − v(∅) beyond tolerance (numerical trouble in the value table)."""


# ------------------------------------------------------------------------ exact Shapley
def coalition_masks(n_players: int) -> np.ndarray:
    """Boolean (2^M, M) table: row s holds coalition s, player j present iff bit j of s is set."""
    _check_players(n_players)
    s = np.arange(2 ** n_players)[:, None]
    return ((s >> np.arange(n_players)[None]) & 1).astype(bool)


def _check_players(n_players: Any) -> int:
    if isinstance(n_players, bool) or not isinstance(n_players, (int, np.integer)) \
            or not 1 <= n_players <= MAX_PLAYERS:
        raise ValueError(f"n_players must be an integer in 1..{MAX_PLAYERS} (2^M coalitions are "
                         f"evaluated), got {n_players!r}")
    return int(n_players)


@lru_cache(maxsize=None)
def _weights(m: int) -> np.ndarray:
    """(M, 2^M) matrix W with φ = W v: +w(|S|−1) if j ∈ S, −w(|S|) if j ∉ S (S ≠ N for the latter),
    w(k) = k!(M−k−1)!/M!."""
    masks = coalition_masks(m)
    size = masks.sum(1)
    w = np.array([math.factorial(k) * math.factorial(m - k - 1) / math.factorial(m)
                  for k in range(m)] + [0.0])
    out = np.where(masks.T, w[np.maximum(size - 1, 0)][None], -w[size][None])
    out.flags.writeable = False
    return out


def shapley_from_values(values: np.ndarray, *, tol: float = 1e-8) -> np.ndarray:
    """Exact Shapley values from a table of coalition values.

    ``values`` has shape (2^M, *rest), row s = v(coalition s) with the bit convention of
    :func:`coalition_masks`. Returns φ of shape (*rest, M). Efficiency Σφ = v(N) − v(∅) is
    checked; a violation beyond ``tol`` (relative to the value scale) raises an
    :class:`EfficiencyWarning` with the numbers.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 0 or v.shape[0] < 2 or v.shape[0] & (v.shape[0] - 1):
        raise ValueError(f"values must have 2^M rows (one per coalition), got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"values contain {int((~np.isfinite(v)).sum())} non-finite entries")
    m = int(v.shape[0]).bit_length() - 1
    _check_players(m)
    phi = np.tensordot(_weights(m), v, axes=(1, 0))          # (M, *rest)
    phi = np.moveaxis(phi, 0, -1)
    err = np.abs(phi.sum(-1) - (v[-1] - v[0]))
    scale = max(1.0, float(np.abs(v).max()))
    if err.size and err.max() > tol * scale:
        warnings.warn(f"efficiency violated: max |Σφ − (v(all) − v(∅))| = {err.max():.3g} > "
                      f"{tol * scale:.3g}", EfficiencyWarning, stacklevel=2)
    return phi


def exact_shapley(value_fn: Callable[[np.ndarray], Any], n_players: int, *,
                  tol: float = 1e-8) -> np.ndarray:
    """Exact Shapley values of the game ``value_fn`` over ``n_players`` players.

    ``value_fn(mask)`` gets a boolean array (M,) (True = player present) and returns a number or
    an array (e.g. one value per case); it is called exactly once per coalition (2^M calls).
    Returns φ with shape (*value_shape, M), φ_j = Σ_{S∌j} |S|!(M−|S|−1)!/M! [v(S∪{j}) − v(S)];
    efficiency Σφ = v(N) − v(∅) is checked (see :func:`shapley_from_values`).
    """
    m = _check_players(n_players)
    if not callable(value_fn):
        raise TypeError(f"value_fn must be callable, got {type(value_fn).__name__}")
    vals = []
    for mask in coalition_masks(m):
        out = np.asarray(value_fn(mask.copy()), dtype=np.float64)
        if vals and out.shape != vals[0].shape:
            raise ValueError(f"value_fn returned shape {out.shape} for coalition {mask.tolist()} "
                             f"but {vals[0].shape} for the empty coalition")
        vals.append(out)
    return shapley_from_values(np.stack(vals), tol=tol)


# ----------------------------------------------------------------- modality Shapley
@dataclass(frozen=True)
class ModalityShapley:
    """Contrast Shapley values of a model on a cohort.

    ``phi``: (M,) cohort-level or (N, M) per case; ``values``: coalition values (2^M,) or
    (2^M, N), averaged over draws; ``phi_draws``: (D, [N,] M) per marginal draw (D = 1 for
    zero/mean); ``efficiency_error``: max |Σφ − (v(all) − v(∅))|.
    """

    phi: np.ndarray
    values: np.ndarray
    contrasts: tuple[str, ...]
    case_ids: tuple[str, ...]
    metric: str
    absent: str
    per_case: bool
    n_draws: int
    phi_draws: np.ndarray
    efficiency_error: float
    tol: float = 1e-9
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def ranking(self) -> np.ndarray:
        """Contrast ranks (1 = most important; ties share the min rank), shape like ``phi``."""
        return contrast_ranking(self.phi, tol=self.tol)

    def to_frame(self) -> pd.DataFrame:
        """Long table: case_id (or "cohort"), contrast, phi, rank, absent, metric."""
        phi, rank = np.atleast_2d(self.phi), np.atleast_2d(self.ranking())
        cases = self.case_ids if self.per_case else ("cohort",)
        rows = [{"case_id": c, "contrast": ch, "phi": float(phi[i, j]), "rank": int(rank[i, j]),
                 "absent": self.absent, "metric": self.metric}
                for i, c in enumerate(cases) for j, ch in enumerate(self.contrasts)]
        return pd.DataFrame(rows)

    def summary(self) -> str:
        """Text table of φ and rank per contrast (cohort level, or the mean over cases)."""
        phi = self.phi if not self.per_case else self.phi.mean(0)
        lines = [f"Contrast Shapley ({self.metric}, absent={self.absent!r}, "
                 f"{'per case, mean shown' if self.per_case else 'cohort'}; draws={self.n_draws}; "
                 f"efficiency error {self.efficiency_error:.2e})"]
        for ch, p, r in zip(self.contrasts, phi, contrast_ranking(phi, tol=self.tol)):
            lines.append(f"  {ch:>10s}  phi={p:+.5f}  rank={r}")
        return "\n".join(lines)


def _unpack(data: Any, labels: Any, target_masks: Any, brain: Any, channel_names: Any,
            seg_target: str) -> tuple:
    """Tensor input, or a Cohort-like object (duck typing: .channels, .case_ids, iterable cases
    with .image, .label and .masks)."""
    case_ids = None
    if not isinstance(data, torch.Tensor) and hasattr(data, "channels") and hasattr(data, "case_ids"):
        cases = list(data)
        if not cases:
            raise ValueError("data is an empty cohort")
        x = torch.from_numpy(np.stack([np.asarray(c.image, np.float32) for c in cases]))
        channel_names = tuple(data.channels) if channel_names is None else channel_names
        case_ids = tuple(data.case_ids)
        if labels is None and all(c.label is not None for c in cases):
            labels = [c.label for c in cases]
        if target_masks is None and all(seg_target in c.masks for c in cases):
            target_masks = np.stack([c.masks[seg_target] for c in cases])
        if brain is None and all("brain" in c.masks for c in cases):
            brain = np.stack([c.masks["brain"] for c in cases])
    elif isinstance(data, torch.Tensor):
        x = data.detach()
    else:
        raise TypeError(f"data must be a tensor (N, C, *spatial) or a Cohort, got "
                        f"{type(data).__name__}")
    if x.dim() < 3 or 0 in x.shape or not x.is_floating_point():
        raise ValueError(f"data must be a floating tensor (N, C, *spatial), got shape "
                         f"{tuple(x.shape)} ({x.dtype})")
    n, c = x.shape[:2]
    names = tuple(channel_names) if channel_names is not None else tuple(f"c{j}" for j in range(c))
    if len(names) != c or len(set(names)) != c:
        raise ValueError(f"channel_names {names} must name the {c} channels of data (shape "
                         f"{tuple(x.shape)}) once each")
    _check_players(c)
    if case_ids is None:
        case_ids = tuple(str(i) for i in range(n))
    return x, labels, target_masks, brain, names, case_ids


def _fill(x: torch.Tensor, absent: str, brain: Any) -> torch.Tensor:
    """Replacement image for absent contrasts (zero / mean) — (N, C, *spatial)."""
    if absent == "zero":
        return torch.zeros_like(x)
    if brain is None:
        w = torch.ones((x.shape[0], 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
    else:
        b = torch.as_tensor(np.asarray(brain) if not isinstance(brain, torch.Tensor) else brain)
        if b.shape != (x.shape[0], *x.shape[2:]):
            raise ValueError(f"brain mask has shape {tuple(b.shape)}, expected (N, *spatial) = "
                             f"{(x.shape[0], *x.shape[2:])}")
        w = b.to(device=x.device, dtype=x.dtype)[:, None]
        empty = (w.flatten(1).sum(1) == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"brain mask is empty for case position(s) {empty[:5]}")
    dims = tuple(range(2, x.dim()))
    mean = (x * w).sum(dims, keepdim=True) / w.sum(dims, keepdim=True)
    return mean.expand_as(x).contiguous()


def _derangements(n: int, n_draws: int, seed: int) -> np.ndarray:
    """(D, N) permutations without fixed points (rejection sampling, seeded)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_draws, n), dtype=np.int64)
    for d in range(n_draws):
        while True:
            p = rng.permutation(n)
            if not (p == np.arange(n)).any():
                break
        out[d] = p
    return out


def _restore_modes(model: nn.Module, modes: dict[str, bool]) -> None:
    for name, mod in model.named_modules():
        mod.training = modes[name]


def modality_shapley(model: nn.Module, data: Any, metric: str | Callable = "prob", *,
                     absent: str = "zero", per_case: bool = False, labels: Any = None,
                     target: int | Sequence[int] | None = None, target_masks: Any = None,
                     seg_target: str = "gtv", brain: Any = None,
                     channel_names: Sequence[str] | None = None, n_draws: int = 8, seed: int = 0,
                     batch_size: int = 64, output: str = "softmax", tol: float = 1e-9
                     ) -> ModalityShapley:
    """Exact Shapley values of the M input contrasts for ``model`` on ``data`` (all 2^M
    coalitions of every case evaluated in batches of ``batch_size`` inputs).

    ``data``: tensor (N, C, *spatial) (with ``labels`` (N,) and/or ``target_masks``
    (N, *spatial)) or a Cohort (labels, ``masks[seg_target]`` and ``masks["brain"]`` are read
    from it). ``metric`` (per-case value v_i(S), cohort value = its mean unless noted):

    * ``"prob"`` — p(target | x_S) (softmax over classes, ``output="identity"`` if the model
      already returns probabilities); target = ``target`` or the case label;
    * ``"logit"`` — the raw output for the target class;
    * ``"accuracy"`` — 1[argmax = label]; cohort: accuracy;
    * ``"auc"`` — cohort only: empirical AUC of p(class 1) (Mann–Whitney, ties ½);
    * ``"dice"`` — segmentation: Dice 2|P∩T|/(|P|+|T|) of the arg-max foreground (channel
      argmax > 0) against ``target_masks`` (1 when both are empty); cohort: mean Dice;
    * a callable ``f(outputs, index) -> (n,) tensor``: per-case value of the outputs of cases
      ``index`` (cohort value = mean).

    ``absent``: "zero", "mean" or "marginal" (module docstring); ``n_draws`` and ``seed`` only
    matter for "marginal" (N ≥ 2). The model runs under ``torch.no_grad()`` in eval mode, and
    every module's training flag is restored afterwards.
    """
    if absent not in ABSENT:
        raise ValueError(f"absent must be one of {ABSENT}, got {absent!r}")
    if not callable(metric) and metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS} or a callable, got {metric!r}")
    mname = getattr(metric, "__name__", "custom") if callable(metric) else metric
    if per_case and mname == "auc":
        raise ValueError("metric='auc' is a cohort-level value; use per_case=False or a per-case "
                         "metric ('prob', 'logit', 'accuracy', 'dice')")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer)) or n_draws < 1:
        raise ValueError(f"n_draws must be a positive integer, got {n_draws!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if output not in ("softmax", "identity"):
        raise ValueError(f"output must be 'softmax' or 'identity', got {output!r}")
    x, labels, tmasks, brain, names, case_ids = _unpack(data, labels, target_masks, brain,
                                                        channel_names, seg_target)
    n, m = x.shape[0], x.shape[1]
    if absent == "marginal" and n < 2:
        raise ValueError(f"absent='marginal' takes donors from other cases: needs N ≥ 2, got {n}")
    y = None
    if mname in ("accuracy", "auc") or (mname in ("prob", "logit") and target is None):
        if labels is None:
            raise ValueError(f"metric={mname!r} needs labels (N,) (or target= for prob/logit)")
        y = torch.as_tensor(np.asarray(labels)).long().reshape(-1)
        if y.numel() != n:
            raise ValueError(f"labels has {y.numel()} entries but data has {n} cases")
    if mname in ("prob", "logit") and target is not None:
        y = torch.as_tensor(target).long().reshape(-1)
        y = y.expand(n) if y.numel() == 1 else y
        if y.numel() != n:
            raise ValueError(f"target has {y.numel()} entries but data has {n} cases")
    if mname == "auc":
        vals = set(y.tolist())
        if vals != {0, 1}:
            raise ValueError(f"metric='auc' needs binary labels with both classes, got {sorted(vals)}")
    tm = None
    if mname == "dice":
        if tmasks is None:
            raise ValueError(f"metric='dice' needs target_masks (N, *spatial) or a Cohort with "
                             f"mask {seg_target!r}")
        tm = torch.as_tensor(np.asarray(tmasks) if not isinstance(tmasks, torch.Tensor) else tmasks)
        if tuple(tm.shape) != (n, *x.shape[2:]):
            raise ValueError(f"target_masks has shape {tuple(tm.shape)}, expected "
                             f"{(n, *x.shape[2:])}")
        tm = tm.bool().flatten(1)

    def case_value(out: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Per-case quantity kept per coalition: (n, K) scores for auc, else (n,) values."""
        if callable(metric):
            return torch.as_tensor(metric(out, idx)).double().reshape(len(idx))
        if mname == "dice":
            p = (out.argmax(1) > 0).flatten(1)
            t = tm[idx]
            inter, tot = (p & t).sum(1).double(), (p.sum(1) + t.sum(1)).double()
            return torch.where(tot == 0, torch.ones_like(tot), 2 * inter / tot.clamp_min(1))
        if out.dim() != 2:
            raise ValueError(f"metric={mname!r} needs model outputs (n, K), got shape "
                             f"{tuple(out.shape)}")
        prob = torch.softmax(out.double(), 1) if output == "softmax" else out.double()
        if mname == "auc":
            return prob[:, 1]
        if mname == "accuracy":
            return (out.argmax(1) == y[idx]).double()
        src = prob if mname == "prob" else out.double()
        return src.gather(1, y[idx][:, None])[:, 0]

    masks = torch.from_numpy(coalition_masks(m)).to(x.device)          # (2^M, M)
    spatial_ones = (1,) * (x.dim() - 2)
    k = masks.shape[0]
    draws = 1 if absent != "marginal" else int(n_draws)
    perms = _derangements(n, draws, seed) if absent == "marginal" else None
    fill0 = _fill(x, absent, brain) if absent != "marginal" else None
    table = torch.empty((draws, k, n), dtype=torch.float64)
    pairs = torch.stack(torch.meshgrid(torch.arange(k), torch.arange(n), indexing="ij"), -1)
    pairs = pairs.reshape(-1, 2)                                       # (coalition, case)
    modes = {nm: md.training for nm, md in model.named_modules()}
    try:
        model.eval()
        with torch.no_grad():
            for d in range(draws):
                fill = fill0 if perms is None else x[torch.from_numpy(perms[d])]
                for start in range(0, len(pairs), int(batch_size)):
                    s_idx, c_idx = pairs[start:start + batch_size].unbind(1)
                    keep = masks[s_idx].view(-1, m, *spatial_ones)
                    xin = torch.where(keep, x[c_idx], fill[c_idx])
                    table[d, s_idx, c_idx] = case_value(model(xin), c_idx).cpu()
    finally:
        _restore_modes(model, modes)
    tab = table.numpy()                                                # (D, 2^M, N)
    if not np.isfinite(tab).all():
        raise ValueError(f"metric {mname!r} gave non-finite values for "
                         f"{int((~np.isfinite(tab)).sum())} (draw, coalition, case) entries")
    if not per_case:
        if mname == "auc":
            from probes.metrics.roc import auc as _auc
            truth = y.numpy()
            tab = np.array([[_auc(truth, tab[d, s]) for s in range(k)] for d in range(draws)])
        else:
            tab = tab.mean(-1)                                         # (D, 2^M)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EfficiencyWarning)
        try:
            phi_d = np.stack([shapley_from_values(tab[d], tol=1e-8) for d in range(draws)])
        except EfficiencyWarning as w:  # re-raise as a warning with the numbers
            warnings.warn(str(w), EfficiencyWarning, stacklevel=2)
            phi_d = np.stack([np.moveaxis(np.tensordot(_weights(m), tab[d], (1, 0)), 0, -1)
                              for d in range(draws)])
    values = tab.mean(0)
    phi = phi_d.mean(0)
    eff = float(np.abs(phi.sum(-1) - (values[-1] - values[0])).max())
    return ModalityShapley(phi=phi, values=values, contrasts=names, case_ids=case_ids,
                           metric=mname, absent=absent, per_case=bool(per_case), n_draws=draws,
                           phi_draws=phi_d, efficiency_error=eff, tol=tol,
                           extra={"derangements": perms})


def baseline_disagreement(a: ModalityShapley, b: ModalityShapley,
                          reference: Sequence[int] | None = None) -> pd.DataFrame:
    """Side-by-side rankings of two Shapley results (e.g. absent="zero" vs "marginal").

    One row per case (or one "cohort" row): rank vectors of both, ``agree`` (identical
    rankings), their footrule agreement 1 − F/F_max (b as reference), and with ``reference``
    (e.g. the clinical (3, 1, 3, 2) for T1, T1c, T2, FLAIR) each one's agreement with it.
    """
    if a.contrasts != b.contrasts or a.per_case != b.per_case or \
            (a.per_case and a.case_ids != b.case_ids):
        raise ValueError(f"results are not comparable: contrasts {a.contrasts} vs {b.contrasts}, "
                         f"per_case {a.per_case} vs {b.per_case} (and per-case ids must match)")
    ra, rb = np.atleast_2d(a.ranking()), np.atleast_2d(b.ranking())
    cases = a.case_ids if a.per_case else ("cohort",)
    na, nb = (f"rank_{a.absent}", f"rank_{b.absent}") if a.absent != b.absent else ("rank_a", "rank_b")
    df = pd.DataFrame({"case_id": list(cases),
                       na: [tuple(r) for r in ra.tolist()], nb: [tuple(r) for r in rb.tolist()],
                       "agree": (ra == rb).all(1),
                       "footrule_agreement": [normalized_spearman_footrule(p, q)
                                              for p, q in zip(ra, rb)]})
    if reference is not None:
        df[f"{na}_vs_reference"] = normalized_spearman_footrule(ra, reference)
        df[f"{nb}_vs_reference"] = normalized_spearman_footrule(rb, reference)
    return df
