"""Activation patching between the cases of pairs, per hook point, in both directions.

A *pair* is ``(x[i], x_base[i])``, typically a confidently classified class-1 case and a
confidently classified class-0 case (:func:`select_pairs`). For each hook point P,
:func:`activation_patching` runs the model on one case of a pair (the *recipient*) while the
activation at P is replaced by that of the other case (the *donor*) — "proof of presence": if
grafting the donor's activation moves the recipient's output toward the donor's class, the
information that decides the class is present at P (Meng et al. 2022, *causal tracing*;
Heimersheim & Nanda 2024, *How to use and interpret activation patching*). In pyvene's words the
recipient is the *base* run and the donor the *source*.

Both directions come from one call:

=================  ======================  ======================
``direction``      donor (grafted from)    recipient (run on)
=================  ======================  ======================
``"x->x_base"``    ``x[i]``                ``x_base[i]``
``"x_base->x"``    ``x_base[i]``           ``x[i]``
=================  ======================  ======================

**Sign convention.** ``delta = p_after − p_before``, where ``p`` is always the probability of
the class ``target`` for the *recipient* (never "the donor's class"). With class-1 cases in
``x``, class-0 cases in ``x_base`` and ``target=1``, a transfer of evidence shows as
``delta > 0`` in ``"x->x_base"`` (p(1) rises in a class-0 case) and as ``delta < 0`` in
``"x_base->x"`` (p(1) falls in a class-1 case).

**ROI-masked patching.** With ``masks=`` (one ROI per pair at image resolution, e.g. ``skull``
or ``gtv``), only activations at feature-map positions inside the ROI are grafted:
``a' = where(m, a_donor, a_recipient)``. The ROI is resized to each feature map with
``probes.core.resize_mask(mode="overlap")``: a cell is inside when the fraction of it the ROI
covers (adaptive average pooling) is ``> roi_threshold`` (default 0: *any overlap*, so a thin
skull ring survives downsampling; the ``coverage`` column reports the fraction of positions
patched, since at a 2×2 map the skull may cover everything). Controls, per ROI:

- ``complement``: the feature-map positions *outside* the resized ROI (ROI and complement
  partition the map, so a border cell touching the ROI belongs to the ROI only);
- ``random``: ``n_samples`` seeded draws of a random set of positions of the same size as the
  resized ROI (per pair, point and draw), uniform over the whole map.

so "the skull carries the effect" (ROI ≈ full, complement ≈ 0, random < ROI) can be told from
"any region would" (random ≈ ROI).

Batched: per point and variant (full, ROI, complement, each random draw) one forward over all
pairs and both directions (chunked by ``batch_size``), not one per pair; in eval mode the
result equals the per-pair loop.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence, Union

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from probes.core.errors import (InputTypeError, LabelError, NonFiniteError, OptionError, ShapeError,
                                warn_undefined)
from probes.core.model import Output, model_state, output_probabilities
from probes.core.resize import resize_mask
from probes.core.result import Result, long_frame
from probes.core.stats import bootstrap_indices
from probes.core.validate import (Target, as_input, as_labels, as_mask, as_targets, check_alpha, check_choice,
                                  check_class_range, check_int, shape_of, to_numpy)
from probes.hooks.points import as_points
from probes.hooks.registry import HookRegistry
from probes.internals._common import registry_of

__all__ = ["select_pairs", "activation_patching", "PatchingResult", "DIRECTIONS", "CONTROLS"]

ROI = Union[Tensor, np.ndarray]
Masks = Union[None, Mapping[str, Union[ROI, tuple]]]
DIRECTIONS = ("x->x_base", "x_base->x")
CONTROLS = ("full", "complement", "random")
ROI_FROM = ("donor", "recipient", "union")
ID_COLUMNS = ["pair", "point", "direction", "roi", "control", "draw"]
# why a row's p_after and delta are NaN ("" where defined)
REASON = "reason"
VALUE_COLUMNS = ["coverage", "p_before", "p_after", "delta"]
EFFECT_KEYS = ["point", "direction", "roi", "control"]
EFFECT_VALUES = ["n_pairs", "mean_delta", "ci_low", "ci_high", "mean_coverage", "mean_p_before", "mean_p_after"]


# --------------------------------------------------------------------------------- pairs
def select_pairs(probs: np.ndarray | Tensor, labels: Sequence[int] | np.ndarray, *,
                 x_label: int = 1, x_base_label: int = 0, min_confidence: float = 0.9,
                 n_pairs: int | None = None) -> pd.DataFrame:
    """High-confidence, correctly classified pairs ``(x, x_base)`` for :func:`activation_patching`.

    A case is eligible for ``x`` when ``labels[i] == x_label`` and its predicted probability of
    that class is ``≥ min_confidence`` (and it is the arg-max, i.e. correctly classified);
    likewise for ``x_base`` with ``x_base_label``. Both pools are sorted by that confidence,
    descending (ties by index), and the k-th case of one is paired with the k-th of the other,
    for ``k < min(#x, #x_base, n_pairs)``. Deterministic: no randomness.

    Args:
        probs: ``(N, K)`` class probabilities, or ``(N,)`` probabilities of class 1 (binary).
        labels: ``(N,)`` integer true classes.
        x_label, x_base_label: the classes of the two cases of a pair (must differ).
        min_confidence: minimum probability of the true class, in ``(0, 1]``.
        n_pairs: at most this many pairs (``None``: as many as possible).

    Returns:
        DataFrame (row indices, not a measurement) with columns ``pair`` (0..k−1), ``x``,
        ``x_base`` (row indices into ``probs``), ``p_x`` = p(x_label | x), ``p_x_base`` =
        p(x_base_label | x_base). Empty (with a warning) when no pair qualifies.
    """
    if not isinstance(probs, (Tensor, np.ndarray, list, tuple, pd.Series)):
        raise InputTypeError("probs", type(probs).__name__, "an (N, K) or (N,) array of probabilities")
    p = to_numpy(probs, "probs")
    if p.dtype.kind not in "biuf":
        raise InputTypeError("probs", f"dtype {p.dtype}", "probabilities in [0, 1]")
    p = p.astype(np.float64)
    if p.ndim == 1:
        p = np.stack([1 - p, p], axis=1)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ShapeError("probs", f"shape {np.shape(p)}", "(N, K) or (N,) with N >= 1",
                         message=f"probs must be (N, K) or (N,), got shape {shape_of(probs)}")
    if not np.isfinite(p).all():
        raise NonFiniteError("probs", "NaN/Inf", "finite probabilities in [0, 1]",
                             message="probs must be finite probabilities in [0, 1] (got NaN/Inf)")
    if (p < 0).any() or (p > 1).any():
        raise OptionError("probs", f"min {p.min():.3g}, max {p.max():.3g}", "probabilities in [0, 1]",
                          message="probs must be finite probabilities in [0, 1] (got values outside; "
                                  f"min {p.min():.3g}, max {p.max():.3g})")
    y = as_labels(labels, p.shape[0], binary=False)
    k = p.shape[1]
    outside = np.unique(y[(y < 0) | (y >= k)])
    if outside.size:
        raise LabelError("labels", outside[:5].tolist(), f"classes 0..{k - 1} (the columns of probs)",
                         message=f"labels {outside[:5].tolist()} are not classes of probs with {k} columns")
    for name, c in (("x_label", x_label), ("x_base_label", x_base_label)):
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < k:
            raise OptionError(name, repr(c), f"a class 0..{k - 1}",
                              message=f"{name}={c!r} is not a class of probs with {k} columns")
    if x_label == x_base_label:
        raise OptionError("x_base_label", x_base_label, "a class other than x_label",
                          message=f"x_label and x_base_label must differ, both are {x_label}")
    if isinstance(min_confidence, bool) or not isinstance(min_confidence, (int, float, np.floating)) \
            or not 0 < min_confidence <= 1:
        raise OptionError("min_confidence", repr(min_confidence), "a number in (0, 1]",
                          message=f"min_confidence must be in (0, 1], got {min_confidence!r}")
    if n_pairs is not None:
        check_int(n_pairs, "n_pairs")
    pred = p.argmax(1)

    def pool(c: int) -> np.ndarray:
        idx = np.flatnonzero((y == c) & (pred == c) & (p[:, c] >= min_confidence))
        return idx[np.argsort(-p[idx, c], kind="stable")]

    xs, bs = pool(x_label), pool(x_base_label)
    n = min(len(xs), len(bs), n_pairs if n_pairs is not None else len(xs))
    if n == 0:
        warnings.warn(f"select_pairs: no pair qualifies ({len(xs)} cases of class {x_label}, "
                      f"{len(bs)} of class {x_base_label} at min_confidence={min_confidence})", stacklevel=2)
    xs, bs = xs[:n], bs[:n]
    return pd.DataFrame({"pair": np.arange(n), "x": xs, "x_base": bs,
                         "p_x": p[xs, x_label], "p_x_base": p[bs, x_base_label]})


# -------------------------------------------------------------------------------- result
@dataclass(frozen=True, eq=False)
class PatchingResult(Result):
    """What :func:`activation_patching` measured, one row per pair × point × direction × variant.

    ``table`` (wide, native): ``pair``, ``point``, ``direction``, ``roi`` ("full" or the ROI
    name), ``control`` ("none", "complement", "random"), ``draw``, ``coverage`` (fraction of
    feature-map positions grafted), ``p_before``, ``p_after``, ``delta``, and ``reason`` (why
    ``p_after`` and ``delta`` are NaN — nothing grafted, or a model output that is not finite;
    ``""`` where defined). ``target``: the class
    whose probability ``p`` is (an int, or one class per pair).
    """

    table: pd.DataFrame
    target: int | tuple[int, ...]
    title: ClassVar[str] = "Activation patching: mean Δp of the target class per point"

    def to_frame(self) -> pd.DataFrame:
        """Tidy long copy: pair, point, direction, roi, control, draw, reason, ``metric``
        (coverage, p_before, p_after, delta), ``value``; the reason is kept for NaN values only."""
        t = self.table if REASON in self.table else self.table.assign(reason="")
        df = long_frame(t, ID_COLUMNS + [REASON], VALUE_COLUMNS)
        df.loc[df["value"].notna(), REASON] = ""
        return df

    def effects(self, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
        """Mean Δp per point, direction, ROI and control, with percentile bootstrap CIs over pairs.

        Random-ROI draws are first averaged per pair, so the pair stays the resampling unit. For
        each group with pair values ``d_1..d_n``: ``mean = Σ d_i / n``; ``n_boot`` resamples of
        the pairs with replacement (``probes.core.bootstrap_indices``, one generator seeded with
        ``seed`` drawing for the groups in order) give the means ``m*_b``; the interval is their
        ``alpha/2`` and ``1 − alpha/2`` quantiles (Efron & Tibshirani 1993, percentile interval).

        Returns:
            DataFrame (wide): ``point``, ``direction``, ``roi``, ``control``, ``n_pairs``,
            ``mean_delta``, ``ci_low``, ``ci_high``, ``mean_coverage``, ``mean_p_before``,
            ``mean_p_after``; points keep their order of appearance.
        """
        n_boot = check_int(n_boot, "n_boot")
        alpha = check_alpha(alpha)
        per_pair = self.table.groupby(EFFECT_KEYS + ["pair"], sort=False)[VALUE_COLUMNS].mean()
        rng = np.random.default_rng(seed)
        rows = []
        for key, g in per_pair.groupby(level=EFFECT_KEYS, sort=False):
            v = g["delta"].to_numpy()
            boots = v[bootstrap_indices(len(v), n_boot, rng)].mean(1)
            lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
            rows.append(dict(zip(EFFECT_KEYS, key), n_pairs=len(v), mean_delta=float(v.mean()),
                             ci_low=float(lo), ci_high=float(hi), mean_coverage=float(g["coverage"].mean()),
                             mean_p_before=float(g["p_before"].mean()), mean_p_after=float(g["p_after"].mean())))
        return pd.DataFrame(rows, columns=EFFECT_KEYS + EFFECT_VALUES)

    def tables(self) -> dict[str, pd.DataFrame]:
        """``patching`` (per pair, :meth:`to_frame`) and ``effects`` (:meth:`effects` with its
        defaults, long)."""
        return {"patching": self.to_frame(), "effects": long_frame(self.effects(), EFFECT_KEYS, EFFECT_VALUES)}

    def _summary_tables(self) -> pd.DataFrame:
        return self.effects()

    def _notes(self) -> Sequence[str]:
        target = self.target if isinstance(self.target, int) else "target[i]"
        return ((f"delta = p_after − p_before of class {target} in the run that receives the graft; "
                 "95% percentile bootstrap intervals over pairs (n_boot=2000, seed=0; see effects())"),)


# ----------------------------------------------------------------------------- ROI masks
def _as_roi(value: ROI, name: str, shape: tuple[int, ...]) -> Tensor:
    """One ROI → ``(n, 1, *spatial)`` bool tensor at the inputs' resolution (an empty row grafts
    nothing: its rows are NaN with a reason, see :func:`activation_patching`)."""
    return torch.from_numpy(as_mask(value, shape, name, "x", binary=True))[:, None]


def _roi_masks(masks: Masks, shape: tuple[int, ...], roi_from: str) -> dict[str, Tensor]:
    """{roi name: ROI of each row's graft (2n, 1, *spatial)} from the ``masks`` argument.

    Rows 0..n−1 are direction ``x->x_base`` (donor x, recipient x_base), rows n..2n−1 the reverse.
    """
    if masks is None:
        return {}
    if not isinstance(masks, Mapping) or not masks:
        raise InputTypeError("masks", type(masks).__name__, "a non-empty mapping roi name → ROI",
                             message=f"masks must be a non-empty mapping roi name → ROI or (ROI of x, ROI of "
                                     f"x_base), got {type(masks).__name__}; one ROI is masks={{'roi': mask}}")
    out = {}
    for name, value in masks.items():
        if not isinstance(name, str) or not name or name == "full":
            raise OptionError("masks", repr(name), "ROI names: non-empty strings other than 'full'",
                              message=f"masks names must be non-empty strings other than 'full', got {name!r}")
        if isinstance(value, tuple):
            if len(value) != 2:
                raise ShapeError(f"masks[{name!r}]", f"{len(value)} items", "(ROI of x, ROI of x_base)",
                                 message=f"masks[{name!r}]: a tuple must be (ROI of x, ROI of x_base), "
                                         f"got {len(value)} items")
            rx = _as_roi(value[0], f"masks[{name!r}][0]", shape)
            rb = _as_roi(value[1], f"masks[{name!r}][1]", shape)
        else:
            rx = rb = _as_roi(value, f"masks[{name!r}]", shape)
        donor, recipient = torch.cat([rx, rb]), torch.cat([rb, rx])
        out[name] = {"donor": donor, "recipient": recipient, "union": donor | recipient}[roi_from]
    return out


def _random_like(m: Tensor, rng: np.random.Generator) -> Tensor:
    """Per row, a uniformly random set of positions with as many members as ``m``'s row."""
    rows = m.shape[0]
    flat = m.reshape(rows, -1)
    k = flat.sum(1, keepdim=True)
    order = torch.from_numpy(rng.random(flat.shape)).argsort(1).argsort(1)  # random rank per position
    return (order < k).reshape(m.shape)


# ------------------------------------------------------------------------------ forwards
def _forward_batches(reg: HookRegistry, x: Tensor, batch_size: int,
                     patch: Callable[[int, int], tuple[dict, Tensor | None]] | None = None) -> Tensor:
    """Float64 probabilities ``reg.probabilities(x)`` in chunks; ``patch(lo, hi)`` → (patches, mask)."""
    out = []
    with torch.no_grad():
        for lo in range(0, len(x), batch_size):
            hi = min(lo + batch_size, len(x))
            if patch is None:
                out.append(reg.probabilities(x[lo:hi], dtype=torch.float64))
            else:
                patches, m = patch(lo, hi)
                with reg.patch(patches, mask=m):
                    out.append(reg.probabilities(x[lo:hi], dtype=torch.float64))
    return torch.cat(out)


def _capture(reg: HookRegistry, x: Tensor, points: list[str], batch_size: int) -> tuple[dict[str, Tensor], Tensor]:
    """Activations at ``points`` and the float64 class probabilities for all of ``x``, in chunks.

    When the registry runs the model as is, its output is the logits and the capture forward
    gives the probabilities too; a declared interface (an adapter) costs one more forward.
    """
    parts: dict[str, list[Tensor]] = {p: [] for p in points}
    outs = []
    for lo in range(0, len(x), batch_size):
        out, cache = reg.run_with_cache(x[lo:lo + batch_size], points=points)
        if not isinstance(out, Tensor):
            raise InputTypeError("model", f"output of type {type(out).__name__}", "a tensor of class scores",
                                 message=f"model output must be a tensor, got {type(out).__name__}")
        outs.append(out)
        for p in points:
            parts[p].append(cache[p])
    acts = {p: torch.cat(v) for p, v in parts.items()}
    if reg.net is reg.model:
        return acts, output_probabilities(torch.cat(outs), "logits", dtype=torch.float64)
    return acts, _forward_batches(reg, x, batch_size)


def _check_pair_inputs(x: Any, x_base: Any, model: nn.Module) -> tuple[Tensor, Tensor]:
    """Both inputs checked (finite, channels of the model, cast to its dtype) and of one shape."""
    x, x_base = as_input(x, "x", model=model), as_input(x_base, "x_base", model=model)
    if x.shape != x_base.shape:
        raise ShapeError("x_base", f"shape {tuple(x_base.shape)}", f"the shape of x {tuple(x.shape)}",
                         message=f"x {tuple(x.shape)} and x_base {tuple(x_base.shape)} must have the same shape "
                                 "(pair i = x[i], x_base[i])")
    return x, x_base


def _check_subset(values: Sequence[str], name: str, allowed: Sequence[str], *, empty_ok: bool) -> tuple[str, ...]:
    values = tuple(values)
    if (not values and not empty_ok) or any(v not in allowed for v in values) or len(set(values)) != len(values):
        raise OptionError(name, values, f"a subset of {tuple(allowed)}",
                          message=f"{name} must be a {'' if empty_ok else 'non-empty '}subset of "
                                  f"{tuple(allowed)} without repeats, got {values}")
    return values


# ------------------------------------------------------------------------------ patching
def activation_patching(model: nn.Module | HookRegistry, x: Tensor, target: Target, x_base: Tensor,
                        points: str | Sequence[str] | None = None, *, masks: Masks = None,
                        roi_from: str = "donor", controls: Sequence[str] = CONTROLS, n_samples: int = 5,
                        roi_threshold: float = 0.0, directions: Sequence[str] = DIRECTIONS,
                        batch_size: int = 64, output: Output = None, seed: int = 0) -> PatchingResult:
    """Graft each pair's donor activation at each point into its recipient; Δp(target).

    For pair i, point P and direction ``"x->x_base"`` (donor ``x[i]``, recipient ``x_base[i]``;
    ``"x_base->x"`` the reverse): ``p_before = p(target | recipient)``, ``p_after`` = the same
    with the activation at P replaced by the donor's (inside the ROI only, when masked), and
    ``delta = p_after − p_before`` (module docstring: with class-1 cases in ``x`` and
    ``target=1`` a transfer is ``delta > 0`` in ``"x->x_base"`` and ``< 0`` in ``"x_base->x"``).

    Args:
        model: an ``nn.Module`` or a ``HookRegistry`` on it; it runs in eval mode (a
            training-mode model is switched, with a warning, and restored:
            ``probes.core.model_state``) and is left as found. Its declared interface (input
            layout, output kind) is honoured.
        x: ``(N, C, *spatial)`` inputs, the donors of ``"x->x_base"``.
        target: the class whose probability ``p`` is reported: an int, or one class per pair.
        x_base: ``(N, C, *spatial)`` inputs, the recipients (base runs) of ``"x->x_base"``;
            pair i = ``(x[i], x_base[i])``.
        points: hook point name(s); ``None`` = every block's ``.local`` (the branch output
            f(x)). Any point is allowed; masks need spatial activations.
        masks: ``None`` (full patching only) or ``{roi name: ROI | (ROI of x, ROI of x_base)}``,
            one ROI per pair (``(N, *spatial)`` or ``(N, 1, *spatial)``, bool or 0/1, at the
            inputs' resolution). A ROI that is empty on the feature map for a pair grafts
            nothing: its rows (and their random draws) have ``p_after`` and ``delta`` NaN with
            the reason, and one ``UndefinedValueWarning`` is raised. An empty complement (the
            ROI covers the whole map) is a measured control: delta 0.
        roi_from: which case's ROI restricts a graft when a pair of ROIs is given: ``"donor"``
            (the case the activations come from — a planted marker sits in the donor's skull),
            ``"recipient"`` or ``"union"``. A single ROI is used for both cases of a pair.
        controls: subset of ``("full", "complement", "random")``: ``full`` adds unmasked
            patching (``roi="full"``); the others add per-ROI controls (module docstring).
        n_samples: number of random-ROI draws (``draw`` column 0..n_samples−1).
        roi_threshold: a feature-map cell is in the ROI when the ROI covers more than this
            fraction of it (``resize_mask(mode="overlap")``); 0 = any overlap.
        directions: subset of ``("x->x_base", "x_base->x")``.
        batch_size: rows per forward (a pair contributes one row per direction).
        output: how to read probabilities: ``None`` (the model's declared interface; logits
            get a float64 softmax), ``"logits"``, ``"probabilities"``, ``"log_probabilities"``
            or a callable mapping the model output to ``(N, K)`` probabilities.
        seed: seed of the random-ROI draws (a ``numpy`` generator per ROI, point and draw).

    Returns:
        :class:`PatchingResult`: the per-pair table, ``to_frame()`` (long), ``effects()``
        (mean Δp with bootstrap CIs over pairs) and ``summary()``.
    """
    reg = registry_of(model, output)
    x, x_base = _check_pair_inputs(x, x_base, reg.model)
    n = len(x)
    pts = as_points(reg, points, default_anchor="local")
    directions = _check_subset(directions, "directions", DIRECTIONS, empty_ok=False)
    controls = _check_subset(controls, "controls", CONTROLS, empty_ok=True)
    batch_size = check_int(batch_size, "batch_size")
    check_choice(roi_from, "roi_from", ROI_FROM)
    if isinstance(roi_threshold, bool) or not isinstance(roi_threshold, (int, float, np.floating)) \
            or not 0 <= roi_threshold < 1:
        raise OptionError("roi_threshold", repr(roi_threshold), "a number in [0, 1)",
                          message=f"roi_threshold must be in [0, 1), got {roi_threshold!r}")
    if "random" in controls and masks is not None:
        check_int(n_samples, "n_samples")
    tgt = as_targets(target, n)
    rois = _roi_masks(masks, tuple(x.shape), roi_from)
    if not rois and "full" not in controls:
        raise OptionError("controls", controls, "'full' or masks",
                          message="nothing to patch: no masks given and 'full' not in controls")
    with model_state(reg.model, warn="activation_patching"):
        table = _patch_all(reg, x, x_base, tgt, pts, rois, controls, directions, n_samples, roi_threshold,
                           batch_size, seed)
    warn_undefined("activation_patching", table.loc[table["delta"].isna(), REASON])
    return PatchingResult(table, int(tgt[0]) if np.ndim(target) == 0 else tuple(tgt.tolist()))


def _patch_all(reg: HookRegistry, x: Tensor, x_base: Tensor, tgt: Tensor, pts: list[str], rois: dict[str, Tensor],
               controls: Sequence[str], directions: Sequence[str], n_samples: int, roi_threshold: float,
               batch_size: int, seed: int) -> pd.DataFrame:
    """The per-pair table of :func:`activation_patching` (the model already in eval mode)."""
    n = len(x)
    # rows 0..n-1: recipients = x_base (x->x_base); rows n..2n-1: recipients = x (x_base->x)
    x_all = torch.cat([x_base, x])
    donor_row = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])  # donor of row r is x_all[donor_row[r]]
    use = np.concatenate([np.full(n, DIRECTIONS[0] in directions), np.full(n, DIRECTIONS[1] in directions)])
    rows_idx = torch.from_numpy(np.flatnonzero(use))
    recipients = x_all[rows_idx]
    donors = donor_row[rows_idx]
    row_target = torch.cat([tgt, tgt])[rows_idx]

    # one capture forward over every input (the donors are among them) gives p_before as well
    acts, p_all = _capture(reg, x_all, pts, batch_size)
    check_class_range(tgt, p_all.shape[1])
    p_before = p_all[rows_idx, row_target]
    picked = torch.arange(len(rows_idx))

    pair = np.concatenate([np.arange(n), np.arange(n)])[rows_idx.numpy()]
    direction = np.array([DIRECTIONS[0]] * n + [DIRECTIONS[1]] * n)[rows_idx.numpy()]
    frames = []
    for pi, point in enumerate(pts):
        act = acts[point]
        donor_act = act[donors]
        variants = []  # (roi, control, draw, feature-map mask or None)
        roi_cov: dict[str, np.ndarray] = {}  # per ROI: the fraction of each row's map it covers
        if "full" in controls:
            variants.append(("full", "none", 0, None))
        if rois:
            if act.dim() < 3:
                raise ShapeError("points", f"point {point!r} without spatial dims", "a feature-map point",
                                 message=f"masks given but point {point!r} has no spatial dims (activation shape "
                                         f"{tuple(act.shape)}); ROI patching needs a feature map")
            fm = tuple(act.shape[2:])
            for ri, (name, roi) in enumerate(rois.items()):
                m = resize_mask(roi[rows_idx], fm, mode="overlap", threshold=roi_threshold)
                roi_cov[name] = m.reshape(len(rows_idx), -1).double().mean(1).numpy()
                variants.append((name, "none", 0, m))
                if "complement" in controls:
                    variants.append((name, "complement", 0, ~m))
                if "random" in controls:
                    for d in range(n_samples):
                        variants.append((name, "random", d, _random_like(m, np.random.default_rng([seed, ri, pi, d]))))
        for roi_name, control, draw, m in variants:
            def chunk(lo: int, hi: int, m: Tensor | None = m, point: str = point,
                      donor_act: Tensor = donor_act) -> tuple[dict, Tensor | None]:
                return {point: donor_act[lo:hi]}, (None if m is None else m[lo:hi])
            p_after = _forward_batches(reg, recipients, batch_size, chunk)[picked, row_target].numpy().copy()
            cov = np.ones(len(recipients)) if m is None else m.reshape(len(recipients), -1).double().mean(1).numpy()
            pb = p_before.numpy()
            # an empty ROI grafts nothing and measures nothing: NaN, not the delta 0 it would show
            # (its random draws too); an empty complement (a ROI covering the whole map) is a
            # measured control: grafting nothing outside the ROI changes nothing
            empty = np.zeros(len(cov), bool) if control == "complement" or roi_name not in roi_cov \
                else roi_cov[roi_name] == 0
            reason = np.where(empty, "nothing grafted: the ROI is empty on the feature map for this pair", "")
            reason = np.where((reason == "") & ~np.isfinite(p_after) | ~np.isfinite(pb),
                              "the model output is not finite", reason)
            p_after[reason != ""] = np.nan
            frames.append(pd.DataFrame({
                "pair": pair, "point": point, "direction": direction, "roi": roi_name, "control": control,
                "draw": draw, "coverage": cov, "p_before": pb, "p_after": p_after,
                "delta": p_after - pb, REASON: reason}))
    return pd.concat(frames, ignore_index=True)[ID_COLUMNS + VALUE_COLUMNS + [REASON]]
