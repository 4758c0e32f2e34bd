"""Exact Shapley values over MRI contrasts (players = input channels), classification and
segmentation, with the absent-contrast fill chosen explicitly.

Shapley value of player j in a game v over players N = {1..M} (Shapley 1953):

    φ_j = Σ_{S ⊆ N∖{j}} |S|! (M − |S| − 1)! / M! · [v(S ∪ {j}) − v(S)],

and Σ_j φ_j = v(N) − v(∅) (efficiency). :func:`exact_shapley` evaluates each of the 2^M
coalitions once and reuses it for every player (φ = W·v with a fixed ±weight matrix W), where
Captum's ``ShapleyValues`` walks all M! permutations (M!·M + 1 = 97 evaluations for 4
contrasts against 16 here).

:func:`contrast_shapley` builds all 2^M coalition inputs of a cohort in batches (one forward per
chunk) and supports three fills for an absent contrast (the choice decides the answer):

* ``"zero"`` — the contrast is set to 0 (Jin et al.; BraTS 2024 Shapley study). Zero is out of
  distribution for a normalised MRI contrast and can hand importance to a contrast that carries
  no label information.
* ``"mean"`` — the contrast is set to the case's mean of that contrast over the brain (the
  ``masks["brain"]`` ROI when given, else the whole image), everywhere.
* ``"marginal"`` — interventional Shapley: for draw d the absent contrasts of case i are taken
  from case π_d(i), π_d a seeded derangement of the cohort (no case is its own donor); v(S) is
  averaged over ``n_samples`` draws (default 8). Inputs stay in distribution contrast by
  contrast; the Monte-Carlo error shrinks like 1/√(n_samples·N) for cohort means (per-draw φ
  are kept in ``phi_samples`` so that their spread can be reported). Donors in another pose
  than their recipients make the filled input out of distribution: the result reports the
  median donor–recipient head Dice and a ``MisalignedDonorsWarning`` flags it below 0.95
  (:mod:`probes.interventions.alignment`).

Rankings, footrule agreement and ranking variance live in :mod:`probes.interventions.shapley_rank`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from probes.core.errors import (InputTypeError, LabelError, NonFiniteError, OptionError, ShapeError,
                                warn_undefined)
from probes.core.model import Output, as_audit_model, model_state
from probes.core.result import Result, tidy
from probes.core.stats import dice
from probes.core.validate import (Target, as_case_ids, as_input, as_labels, as_mask, as_targets, check_choice,
                                  check_class_range, check_int)
from probes.core.model import class_probabilities, model_device
from probes.interventions.alignment import ALIGNMENT_MIN_DICE, donor_alignment, warn_if_misaligned
from probes.interventions.inputs import is_case_collection, stack_cases
from probes.interventions.shapley_rank import contrast_frame, ranking_or_nan
from probes.metrics.roc import auc

__all__ = ["EfficiencyWarning", "exact_shapley", "shapley_from_values", "coalition_masks", "ContrastShapley",
           "contrast_shapley", "ABSENT", "METRICS", "MAX_PLAYERS"]

ABSENT = ("zero", "mean", "marginal")
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
        raise OptionError("n_players", repr(n_players), f"an integer in 1..{MAX_PLAYERS}",
                          message=f"n_players must be an integer in 1..{MAX_PLAYERS} (2^M coalitions are "
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
    try:
        v = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputTypeError("values", type(values).__name__, "a numeric (2^M, ...) array") from None
    if v.ndim == 0 or v.shape[0] < 2 or v.shape[0] & (v.shape[0] - 1):
        raise ShapeError("values", f"shape {v.shape}", "2^M rows (one per coalition)",
                         message=f"values must have 2^M rows (one per coalition), got shape {v.shape}")
    if not np.isfinite(v).all():
        raise NonFiniteError("values", f"{int((~np.isfinite(v)).sum())} NaN/Inf", "finite values",
                             message=f"values contain {int((~np.isfinite(v)).sum())} non-finite entries")
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
        raise InputTypeError("value_fn", type(value_fn).__name__, "a callable mask -> value",
                             message=f"value_fn must be callable, got {type(value_fn).__name__}")
    vals = []
    for mask in coalition_masks(m):
        try:
            out = np.asarray(value_fn(mask.copy()), dtype=np.float64)
        except (TypeError, ValueError) as e:
            if isinstance(e, (InputTypeError, ShapeError, NonFiniteError, OptionError, LabelError)):
                raise
            raise InputTypeError("value_fn", f"a non-numeric value for coalition {mask.tolist()}",
                                 "a number or a numeric array") from e
        if vals and out.shape != vals[0].shape:
            raise ShapeError("value_fn", f"shape {out.shape}", f"shape {vals[0].shape} for every coalition",
                             message=f"value_fn returned shape {out.shape} for coalition {mask.tolist()} "
                                     f"but {vals[0].shape} for the empty coalition")
        if not np.isfinite(out).all():
            raise NonFiniteError("value_fn", f"a non-finite value for coalition {mask.tolist()}", "finite values",
                                 message=f"value_fn returned non-finite value(s) for coalition {mask.tolist()}")
        vals.append(out)
    return shapley_from_values(np.stack(vals), tol=tol)


# ------------------------------------------------------------------ contrast Shapley
@dataclass(frozen=True, eq=False)
class ContrastShapley(Result):
    """Contrast Shapley values of a model on a cohort (:func:`contrast_shapley`).

    ``phi``: (M,) cohort-level or (N, M) per case; ``values``: coalition values (2^M,) or
    (2^M, N), averaged over samples (row s = coalition s of :func:`coalition_masks`);
    ``phi_samples``: (D, [N,] M) per marginal draw (D = 1 for zero/mean); ``derangements``:
    (D, N) donor cases of the marginal draws (``None`` otherwise); ``efficiency_error``:
    max |Σφ − (v(all) − v(∅))| over the defined values; ``metric``: the value function's name;
    ``reason``: why some φ are NaN (``""`` when every φ is defined); ``alignment``: for the
    marginal fill, the median Dice of donor vs recipient head (``alignment_source``: ``"brain
    mask"`` or ``"image foreground"``; ``probes.interventions.alignment``), NaN otherwise.

    ``to_frame()``: case_id (``"cohort"`` for a cohort-level result), contrast, absent,
    value_function, reason (for NaN values), metric ∈ {``phi``, ``rank``}, value. ``tables()`` adds ``coalitions``:
    case_id, coalition (present contrasts joined by ``+``, ``"none"`` for ∅), metric (the value
    function), value; and, for the marginal fill, ``alignment``: metric ``donor_alignment_dice``,
    source, threshold, value.
    """

    phi: np.ndarray
    values: np.ndarray
    contrasts: tuple[str, ...]
    case_ids: tuple[str, ...]
    metric: str
    absent: str
    per_case: bool
    n_samples: int
    phi_samples: np.ndarray
    efficiency_error: float
    tol: float = 1e-9
    derangements: np.ndarray | None = None
    reason: str = ""
    alignment: float = float("nan")
    alignment_source: str = ""
    title: ClassVar[str] = "Contrast Shapley values"

    def ranking(self) -> np.ndarray:
        """Contrast ranks (1 = most important; ties share the min rank), shape like ``phi``;
        NaN (a float array) for the rows whose φ are undefined."""
        return ranking_or_nan(self.phi, tol=self.tol)

    def _case_labels(self) -> list[str]:
        return list(self.case_ids) if self.per_case else ["cohort"]

    def to_frame(self) -> pd.DataFrame:
        """Long table of φ and rank: case_id, contrast, absent, value_function, reason, metric, value."""
        df = contrast_frame(self._case_labels(), self.contrasts,
                            {"phi": np.atleast_2d(self.phi), "rank": np.atleast_2d(self.ranking())},
                            absent=self.absent, value_function=self.metric)
        reason = np.where(df["value"].isna(), self.reason or "undefined", "")
        return tidy(df.assign(reason=reason))

    def tables(self) -> dict[str, pd.DataFrame]:
        """``phi`` (= ``to_frame()``) and ``coalitions`` (the value of every coalition)."""
        masks = coalition_masks(len(self.contrasts))
        names = ["+".join(c for c, on in zip(self.contrasts, row) if on) or "none" for row in masks]
        vals = np.asarray(self.values).reshape(len(names), -1)            # (2^M, cases)
        cases = self._case_labels()
        coal = pd.DataFrame({"case_id": np.tile(cases, len(names)), "coalition": np.repeat(names, len(cases)),
                             "metric": self.metric, "value": vals.reshape(-1)})
        out = {"phi": self.to_frame(), "coalitions": tidy(coal)}
        if self.absent == "marginal":
            out["alignment"] = tidy(pd.DataFrame({"source": [self.alignment_source],
                                                  "threshold": [ALIGNMENT_MIN_DICE],
                                                  "metric": ["donor_alignment_dice"], "value": [self.alignment]}))
        return out

    def _summary_tables(self) -> pd.DataFrame:
        phi = self.phi.mean(0) if self.per_case else self.phi
        return pd.DataFrame({"contrast": self.contrasts, "phi": phi,
                             "rank": ranking_or_nan(phi, tol=self.tol)})

    def _notes(self) -> Sequence[str]:
        scope = f"per case, mean over {len(self.case_ids)} cases shown" if self.per_case else "cohort"
        return (f"value function {self.metric!r}; absent contrasts {self.absent!r}; {scope}; "
                f"{self.n_samples} sample(s); efficiency error {self.efficiency_error:.2e}",
                *((f"donor alignment: median {self.alignment_source} Dice {self.alignment:.3f} "
                   f"(flagged below {ALIGNMENT_MIN_DICE})",) if self.absent == "marginal" else ()),
                *((f"NaN: {self.reason}",) if self.reason else ()))


@dataclass(frozen=True)
class _Game:
    """What one value function reads and computes.

    ``reads``: ``"probabilities"`` ((N, K) float64, ``class_probabilities``) or ``"scores"`` (the
    model's logit-like output, ``as_audit_model``); ``classes(target, labels, n)``: the class
    index per case it needs (or ``None``); ``value(out, idx, classes, truth)``: per-case values
    (``auc`` keeps the score of each case and is turned into a cohort AUC afterwards);
    ``class_scores``: the output must be (n, K); ``needs_truth``: it reads ``masks[truth_roi]``.
    """

    reads: str
    classes: Callable[[Any, Any, int], Tensor | None]
    value: Callable[[Tensor, Tensor, Tensor | None, np.ndarray | None], Tensor]
    needs_labels: bool = False
    per_case: bool = True
    class_scores: bool = True
    needs_truth: bool = False


def _need_labels(metric: str, labels: Any, n: int) -> Tensor:
    if labels is None:
        raise LabelError("labels", None, "one class per case",
                         message=f"metric={metric!r} needs labels (N,) (or target= for prob/logit)")
    return torch.from_numpy(as_labels(labels, n, binary=False)).long()


def _target_or_labels(metric: str) -> Callable[[Any, Any, int], Tensor]:
    return lambda target, labels, n: (as_targets(target, n) if target is not None
                                      else _need_labels(metric, labels, n))


def _no_target(metric: str, labelled: bool = False) -> Callable[[Any, Any, int], Tensor | None]:
    """Refuses a target; with ``labelled`` the case labels are the classes."""
    def classes(target: Any, labels: Any, n: int) -> Tensor | None:
        if target is not None:
            raise OptionError("target", repr(target), "None",
                              message=f"metric={metric!r} does not use target; leave target=None")
        return _need_labels(metric, labels, n) if labelled else None
    return classes


def _auc_class(target: Any, labels: Any, n: int) -> Tensor:
    cls = 1 if target is None else check_int(target, "target (one class for metric='auc')", 0)
    return torch.full((n,), cls, dtype=torch.long)


def _segment_class(target: Any, labels: Any, n: int) -> Tensor | None:
    return None if target is None else as_targets(target, n)


def _gather(out: Tensor, idx: Tensor, cls: Tensor | None, truth: np.ndarray | None) -> Tensor:
    c = cls[idx].to(out.device)
    check_class_range(c, out.shape[1])
    return out.double().gather(1, c[:, None])[:, 0]


def _accuracy(out: Tensor, idx: Tensor, cls: Tensor | None, truth: np.ndarray | None) -> Tensor:
    return (out.argmax(1) == cls[idx].to(out.device)).double()


def _dice(out: Tensor, idx: Tensor, cls: Tensor | None, truth: np.ndarray | None) -> Tensor:
    label = out.argmax(1)
    if cls is None:
        pred = label > 0
    else:
        c = cls[idx].to(out.device)
        check_class_range(c, out.shape[1])
        pred = label == c.view(-1, *(1,) * (label.dim() - 1))
    return torch.from_numpy(dice(pred.cpu().numpy(), truth[idx.numpy()]))


METRICS: dict[str, _Game] = {
    "prob": _Game("probabilities", _target_or_labels("prob"), _gather),
    "logit": _Game("scores", _target_or_labels("logit"), _gather),
    "accuracy": _Game("scores", _no_target("accuracy", labelled=True), _accuracy, needs_labels=True),
    "auc": _Game("probabilities", _auc_class, _gather, needs_labels=True, per_case=False),
    "dice": _Game("scores", _segment_class, _dice, class_scores=False, needs_truth=True),
}


def _callable_game(metric: Callable) -> _Game:
    def value(out: Tensor, idx: Tensor, cls: Tensor | None, truth: np.ndarray | None) -> Tensor:
        return torch.as_tensor(metric(out, idx)).double().reshape(len(idx))
    return _Game("scores", _no_target(getattr(metric, "__name__", "custom")), value, class_scores=False)


def _unpack(x: Any, labels: Any, masks: Mapping[str, Any] | None, contrasts: Sequence[str] | None,
            case_ids: Sequence[Any] | None = None, model: nn.Module | None = None
            ) -> tuple[Tensor, Any, dict[str, Any], tuple[str, ...], tuple[str, ...]]:
    """Tensor/array input, or a cohort of cases (labels when every case has one, the ROIs every
    case carries, case ids and channel names are read from it; arguments given override)."""
    masks = dict(masks or {})
    if is_case_collection(x):
        cases = stack_cases(x)
        xt = torch.from_numpy(cases.x)
        contrasts = cases.contrasts if contrasts is None else contrasts
        case_ids = cases.case_ids if case_ids is None else case_ids
        if labels is None and cases.all_labelled:
            labels = list(cases.labels)
        masks = {**{k: cases.masks[k] for k in cases.complete}, **masks}
    else:
        xt = x
    xt = as_input(xt, "x", model=model)
    n, c = xt.shape[:2]
    names = tuple(contrasts) if contrasts is not None else tuple(f"c{j}" for j in range(c))
    if len(names) != c or len(set(names)) != c:
        raise OptionError("contrasts", names, f"{c} distinct names, one per channel of x",
                          message=f"contrasts {names} must name the {c} channels of x (shape "
                                  f"{tuple(xt.shape)}) once each")
    _check_players(c)
    return xt, labels, masks, names, tuple(as_case_ids(case_ids, n))


def _absent_fill(x: Tensor, absent: str, brain: np.ndarray | None) -> Tensor:
    """Replacement image for absent contrasts (zero / mean) — (N, C, *spatial)."""
    if absent == "zero":
        return torch.zeros_like(x)
    if brain is None:
        w = torch.ones((x.shape[0], 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
    else:
        w = torch.from_numpy(brain).to(device=x.device, dtype=x.dtype)[:, None]
        empty = (w.flatten(1).sum(1) == 0).nonzero().flatten().tolist()
        if empty:
            raise OptionError("masks['brain']", f"empty for case position(s) {empty[:5]}",
                              "a non-empty brain mask for absent='mean'",
                              message=f"masks['brain'] is empty for case position(s) {empty[:5]}")
    dims = tuple(range(2, x.dim()))
    mean = (x * w).sum(dims, keepdim=True) / w.sum(dims, keepdim=True)
    return mean.expand_as(x).contiguous()


def _derangements(n: int, n_samples: int, seed: int) -> np.ndarray:
    """(D, N) permutations without fixed points (rejection sampling, seeded)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_samples, n), dtype=np.int64)
    for d in range(n_samples):
        while True:
            p = rng.permutation(n)
            if not (p == np.arange(n)).any():
                break
        out[d] = p
    return out


def contrast_shapley(model: nn.Module, x: Any, target: Target | None = None, metric: str | Callable = "prob", *,
                     absent: str = "zero", per_case: bool = False, labels: Any = None,
                     masks: Mapping[str, Any] | None = None, truth_roi: str = "gtv",
                     contrasts: Sequence[str] | None = None, case_ids: Sequence[Any] | None = None,
                     n_samples: int = 8, seed: int = 0, batch_size: int = 64, output: Output = None,
                     tol: float = 1e-9) -> ContrastShapley:
    """Exact Shapley values of the M input contrasts for ``model`` on ``x`` (all 2^M coalitions
    of every case evaluated in batches of ``batch_size`` inputs).

    ``x``: tensor (N, C, *spatial) (with ``labels`` (N,) and ``masks`` {roi: (N, *spatial)}), or
    a cohort of cases (``audit.data.Cohort``: labels, contrast names, case ids and the ROIs that
    every case carries are read from it; arguments given override them). ``masks["brain"]``
    is the region of the ``"mean"`` fill; ``masks[truth_roi]`` the truth of ``"dice"``;
    ``contrasts`` names the channels and ``case_ids`` the cases (str).

    ``target`` and ``metric`` (per-case value v_i(S); cohort value = its mean unless noted):

    * ``"prob"`` — p(target | x_S), the model's class probabilities (``output``); ``target``
      an int or one class per case; ``target=None`` scores each case's label;
    * ``"logit"`` — the model's logit-like score of that class (``probes.core.as_audit_model``:
      the raw output for a logit model, log p or the final softmax's input for a probability
      model);
    * ``"accuracy"`` — 1[argmax = label]; cohort: accuracy (``target`` unused);
    * ``"auc"`` — cohort only: empirical AUC (Mann–Whitney, ties ½) of p(class ``target``)
      against binary labels (``target=None``: class 1);
    * ``"dice"`` — segmentation: Dice 2|P∩T|/(|P|+|T|) (``probes.core.dice``; 1 when both are
      empty) of the predicted region P against ``masks[truth_roi]``; ``target=None``: P is every
      foreground voxel (channel arg-max > 0), an int or per-case ``target`` k: arg-max = k;
    * a callable ``f(outputs, index) -> (n,) tensor``: per-case value of the model's logit-like
      outputs of cases ``index`` (cohort value = mean; ``target`` unused).

    ``output``: how to read the model's output (``None``: as the model declares; ``"logits"``,
    ``"probabilities"``, ``"log_probabilities"`` or a callable; see ``probes.core``).
    ``absent``: "zero", "mean" or "marginal" (module docstring); ``n_samples`` (marginal draws)
    and ``seed`` only matter for "marginal" (N ≥ 2). The model runs under ``torch.no_grad()`` in
    eval mode (``probes.core.model_state``); its modes are restored afterwards.
    """
    if isinstance(target, str) or callable(target):
        raise InputTypeError("target", repr(target), "a class index, one per case or None",
                             message=f"target (the third argument) is a class index, one per case or None; got "
                                     f"{target!r}. The metric comes fourth: contrast_shapley(model, x, None, 'auc')")
    check_choice(absent, "absent", ABSENT)
    if not callable(metric) and metric not in METRICS:
        raise OptionError("metric", repr(metric), f"one of {tuple(METRICS)} or a callable",
                          message=f"metric must be one of {tuple(METRICS)} or a callable, got {metric!r}")
    game = _callable_game(metric) if callable(metric) else METRICS[metric]
    mname = getattr(metric, "__name__", "custom") if callable(metric) else metric
    if per_case and not game.per_case:
        raise OptionError("per_case", per_case, "False for a cohort-level metric",
                          message=f"metric={mname!r} is a cohort-level value; use per_case=False or a per-case "
                                  "metric ('prob', 'logit', 'accuracy', 'dice')")
    if not isinstance(model, nn.Module):
        raise InputTypeError("model", type(model).__name__, "a torch.nn.Module",
                             message=f"model must be a torch.nn.Module, got {type(model).__name__}")
    n_samples, batch_size = check_int(n_samples, "n_samples"), check_int(batch_size, "batch_size")
    x, labels, masks, names, case_ids = _unpack(x, labels, masks, contrasts, case_ids, model)
    x = x.to(model_device(model))
    n, m = x.shape[0], x.shape[1]
    if absent == "marginal" and n < 2:
        raise ShapeError("x", f"{n} case", "N ≥ 2 for absent='marginal'",
                         message=f"absent='marginal' takes donors from other cases: needs N ≥ 2, got {n} (x)")
    cls = game.classes(target, labels, n)
    y = _need_labels(mname, labels, n) if game.needs_labels else None
    reasons: list[str] = []
    if not game.per_case:
        found = sorted(set(y.tolist()))
        if not set(found) <= {0, 1}:
            raise LabelError("labels", found, "0/1", message=f"labels: metric={mname!r} needs binary 0/1 labels, "
                                                          f"got values {found}")
        if len(found) < 2:  # an AUC needs both classes: NaN with the reason, not an error
            reasons.append(f"labels hold one class only ({found}): the AUC is undefined (it needs both classes)")
    truth = None
    if game.needs_truth:
        if truth_roi not in masks:
            raise OptionError("masks", sorted(masks), f"masks[{truth_roi!r}]",
                              message=f"metric={mname!r} needs masks[{truth_roi!r}] (N, *spatial) or a cohort "
                                      f"whose cases all carry mask {truth_roi!r}; masks has {sorted(masks)}")
        truth = as_mask(masks[truth_roi], x.shape, f"masks[{truth_roi!r}]", "x", binary=True)
    brain = as_mask(masks["brain"], x.shape, "masks['brain']", "x", binary=True) \
        if absent == "mean" and "brain" in masks else None
    net = as_audit_model(model, output)

    def forward(xin: Tensor) -> Tensor:
        if game.reads == "probabilities":
            return class_probabilities(net, xin, torch.float64)
        out = net(xin)
        if game.class_scores and out.dim() != 2:
            raise ShapeError("model", f"output shape {tuple(out.shape)}", "(n, K) class scores",
                             message=f"metric={mname!r} needs model outputs (n, K), got shape {tuple(out.shape)}")
        return out

    coalitions = torch.from_numpy(coalition_masks(m)).to(x.device)     # (2^M, M)
    spatial_ones = (1,) * (x.dim() - 2)
    k = coalitions.shape[0]
    draws = 1 if absent != "marginal" else n_samples
    perms = _derangements(n, draws, seed) if absent == "marginal" else None
    align, align_source = float("nan"), ""
    if perms is not None:  # borrowing a contrast from a head in another pose is out of distribution
        head = as_mask(masks["brain"], x.shape, "masks['brain']", "x", binary=True) if "brain" in masks else None
        align, align_source = donor_alignment(x, perms, head)
        warn_if_misaligned(align, align_source)
    fill0 = _absent_fill(x, absent, brain) if absent != "marginal" else None
    table = torch.empty((draws, k, n), dtype=torch.float64)
    pairs = torch.stack(torch.meshgrid(torch.arange(k), torch.arange(n), indexing="ij"), -1)
    pairs = pairs.reshape(-1, 2)                                       # (coalition, case)
    with model_state(model, warn="contrast_shapley"), torch.no_grad():
        for d in range(draws):
            fill = fill0 if perms is None else x[torch.from_numpy(perms[d])]
            for start in range(0, len(pairs), batch_size):
                s_idx, c_idx = pairs[start:start + batch_size].unbind(1)
                keep = coalitions[s_idx].view(-1, m, *spatial_ones)
                xin = torch.where(keep, x[c_idx], fill[c_idx])
                out = forward(xin)
                val = game.value(out, c_idx, cls, truth).double().cpu()
                # a non-finite model output gives no value (an arg-max of NaN would still give one)
                val[~torch.isfinite(out.detach().double().reshape(len(out), -1)).all(1).cpu()] = float("nan")
                table[d, s_idx, c_idx] = val
    tab = table.numpy()                                                # (D, 2^M, N)
    bad = int((~np.isfinite(tab)).sum())
    if bad:
        reasons.append(f"the model output (metric {mname!r}) is not finite for {bad} (draw, coalition, case) "
                       "evaluation(s)")
    if not per_case:
        if not game.per_case:
            truth_labels = y.numpy()
            tab = np.array([[auc(truth_labels, tab[d, s]) if not reasons else np.nan for s in range(k)]
                            for d in range(draws)])
        else:
            tab = tab.mean(-1)                                         # (D, 2^M)
    phi_d = np.stack([_phi(tab[d], m) for d in range(draws)])
    values = tab.mean(0)
    phi = phi_d.mean(0)
    err = np.abs(phi.sum(-1) - (values[-1] - values[0]))
    eff = float(err[np.isfinite(err)].max()) if np.isfinite(err).any() else float("nan")
    reason = "; ".join(reasons) if np.isnan(phi).any() else ""
    warn_undefined("contrast_shapley", [reason])
    return ContrastShapley(phi=phi, values=values, contrasts=names, case_ids=case_ids, metric=mname,
                           absent=absent, per_case=bool(per_case), n_samples=draws, phi_samples=phi_d,
                           efficiency_error=eff, tol=tol, derangements=perms, reason=reason, alignment=align,
                           alignment_source=align_source)


def _phi(tab: np.ndarray, m: int) -> np.ndarray:
    """φ of one draw's value table (2^M, *rest); NaN values give NaN φ (efficiency checked on
    the finite ones, an :class:`EfficiencyWarning` with the numbers when violated)."""
    if np.isfinite(tab).all():
        violated = None
        with warnings.catch_warnings():
            warnings.simplefilter("error", EfficiencyWarning)
            try:
                return shapley_from_values(tab, tol=1e-8)
            except EfficiencyWarning as w:
                violated = str(w)
        warnings.warn(violated, EfficiencyWarning, stacklevel=3)  # the numbers, once, as a warning
    return np.moveaxis(np.tensordot(_weights(m), tab, (1, 0)), 0, -1)
