"""Activation patching between source and target inputs, per hook point, in both directions.

A *pair* is (source i, target i), typically a confidently classified class-1 case and a
confidently classified class-0 case (:func:`select_pairs`).  For each hook point P,
:func:`activation_patching` runs the model on one input (the *recipient*) while the activation
at P is replaced by that of the other input of its pair (the *donor*) — "proof of presence":
if grafting the donor's activation moves the recipient's output toward the donor's class, the
information that decides the class is present at P (Meng et al. 2022, *causal tracing*;
Heimersheim & Nanda 2024, *How to use and interpret activation patching*).

Both directions come from one call:

==============  ======================  ======================
``direction``   donor (grafted from)    recipient (run on)
==============  ======================  ======================
``"s->t"``      source i                target i
``"t->s"``      target i                source i
==============  ======================  ======================

**Sign convention.** ``delta = p_after − p_before``, where ``p`` is always the probability of
the one class ``target_class`` for the *recipient* (never "the donor's class").  With class-1
sources, class-0 targets and ``target_class=1`` — the seed's protocol — a transfer of evidence
shows as ``delta > 0`` in ``"s->t"`` (p(1) rises in a class-0 case, seed: +0.62) and as
``delta < 0`` in ``"t->s"`` (p(1) falls in a class-1 case, seed: −0.24).

**ROI-masked patching.** With ``mask=`` (a spatial ROI per pair at image resolution, e.g.
``skull`` or ``gtv``), only activations at feature-map positions inside the ROI are grafted:
``a' = where(m, a_donor, a_recipient)``.  The ROI is resized to each feature map by area
(adaptive average pooling: the fraction of each feature-map cell the ROI covers) and a cell
counts as inside when that fraction is ``> roi_threshold`` (default 0: *any overlap*, so a thin
skull ring survives downsampling; the ``coverage`` column reports the fraction of positions
patched, since at a 2×2 map the skull may cover everything).  Controls, per ROI:

- ``complement``: the feature-map positions *outside* the resized ROI (ROI and complement
  partition the map, so a border cell touching the ROI belongs to the ROI only);
- ``random``: ``n_random`` seeded draws of a random set of positions of the same size as the
  resized ROI (per pair, point and draw), uniform over the whole map.

so "the skull carries the effect" (ROI ≈ full, complement ≈ 0, random < ROI) can be told from
"any region would" (random ≈ ROI).

Batched: per point and variant (full, ROI, complement, each random draw) one forward over all
pairs and both directions (chunked by ``batch_size``), not one per pair; in eval mode the
result equals the per-pair loop.
"""

from __future__ import annotations

import warnings
from typing import Callable, Mapping, Sequence, Union

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from probes.hooks.registry import HookRegistry

__all__ = ["select_pairs", "activation_patching", "summarize_patching", "resize_roi"]

ROI = Union[Tensor, np.ndarray]
MaskArg = Union[None, ROI, tuple, Mapping[str, Union[ROI, tuple]]]
DIRECTIONS = ("s->t", "t->s")
_COLUMNS = ["pair", "point", "direction", "roi", "control", "draw", "coverage",
            "p_before", "p_after", "delta"]


# --------------------------------------------------------------------------------- pairs
def select_pairs(probs: np.ndarray | Tensor, labels: Sequence[int] | np.ndarray, *,
                 source_label: int = 1, target_label: int = 0, min_confidence: float = 0.9,
                 n_pairs: int | None = None) -> pd.DataFrame:
    """High-confidence, correctly classified (source, target) pairs — the seed's protocol.

    A case is eligible as a source when ``labels[i] == source_label`` and its predicted
    probability of that class is ``≥ min_confidence`` (and it is the arg-max, i.e. correctly
    classified); likewise targets with ``target_label``.  Sources and targets are each sorted by
    that confidence, descending (ties by index), and the k-th source is paired with the k-th
    target, for ``k < min(#sources, #targets, n_pairs)``.  Deterministic: no randomness.

    Args:
        probs: ``(N, K)`` class probabilities, or ``(N,)`` probabilities of class 1 (binary).
        labels: ``(N,)`` integer true classes.
        source_label, target_label: the classes of sources and targets (must differ).
        min_confidence: minimum probability of the true class, in ``(0, 1]``.
        n_pairs: at most this many pairs (``None``: as many as possible).

    Returns:
        DataFrame with columns ``pair`` (0..k−1), ``source``, ``target`` (row indices into
        ``probs``), ``p_source`` = p(source_label | source), ``p_target`` = p(target_label |
        target).  Empty (with a warning) when no pair qualifies.
    """
    p = probs.detach().cpu().double().numpy() if isinstance(probs, Tensor) else np.asarray(probs, float)
    if p.ndim == 1:
        p = np.stack([1 - p, p], axis=1)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"probs must be (N, K) or (N,), got shape {np.shape(probs)}")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("probs must be finite probabilities in [0, 1] (got NaN/Inf or values "
                         f"outside; min {np.nanmin(p):.3g}, max {np.nanmax(p):.3g})")
    y = np.asarray(labels)
    if y.shape != (p.shape[0],):
        raise ValueError(f"labels must have shape ({p.shape[0]},) to match probs {p.shape}, got {y.shape}")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))):
        raise ValueError("labels must be integer classes (found NaN or non-integer values)")
    y = y.astype(int)
    k = p.shape[1]
    for name, c in (("source_label", source_label), ("target_label", target_label)):
        if not 0 <= c < k:
            raise ValueError(f"{name}={c} is not a class of probs with {k} columns")
    if source_label == target_label:
        raise ValueError(f"source_label and target_label must differ, both are {source_label}")
    if not 0 < min_confidence <= 1:
        raise ValueError(f"min_confidence must be in (0, 1], got {min_confidence}")
    if n_pairs is not None and n_pairs < 1:
        raise ValueError(f"n_pairs must be a positive int or None, got {n_pairs}")
    pred = p.argmax(1)

    def pool(c: int) -> np.ndarray:
        idx = np.flatnonzero((y == c) & (pred == c) & (p[:, c] >= min_confidence))
        return idx[np.argsort(-p[idx, c], kind="stable")]

    src, tgt = pool(source_label), pool(target_label)
    n = min(len(src), len(tgt), n_pairs if n_pairs is not None else len(src))
    if n == 0:
        warnings.warn(f"select_pairs: no pair qualifies ({len(src)} sources of class {source_label}, "
                      f"{len(tgt)} targets of class {target_label} at min_confidence={min_confidence})",
                      stacklevel=2)
    src, tgt = src[:n], tgt[:n]
    return pd.DataFrame({"pair": np.arange(n), "source": src, "target": tgt,
                         "p_source": p[src, source_label], "p_target": p[tgt, target_label]})


# ----------------------------------------------------------------------------- ROI masks
def resize_roi(roi: Tensor, spatial: Sequence[int], threshold: float = 0.0) -> Tensor:
    """Boolean ROI at a feature map's resolution: ``area_fraction(cell) > threshold``.

    ``area_fraction`` is adaptive average pooling of the 0/1 ROI (``F.interpolate(mode="area")``),
    i.e. the fraction of each feature-map cell's receptive footprint in the image that the ROI
    covers.  ``threshold=0`` keeps every cell the ROI touches ("any overlap").

    Args:
        roi: ``(N, 1, *image_spatial)`` boolean/0-1 tensor.
        spatial: the feature map's spatial shape.
        threshold: in ``[0, 1)``.

    Returns:
        ``(N, 1, *spatial)`` boolean tensor.
    """
    if roi.dim() != len(spatial) + 2 or roi.shape[1] != 1:
        raise ValueError(f"roi must be (N, 1, *spatial) with {len(spatial)} spatial dims, got {tuple(roi.shape)}")
    if not 0 <= threshold < 1:
        raise ValueError(f"roi_threshold must be in [0, 1), got {threshold}")
    frac = F.interpolate(roi.float(), size=tuple(spatial), mode="area")
    return frac > threshold + 1e-7  # float rounding: an untouched cell can be ~1e-9 off 0


def _as_roi(value: ROI, name: str, n: int, spatial: tuple[int, ...]) -> Tensor:
    """One ROI array → (n, 1, *spatial) bool tensor, with errors naming ``name``."""
    m = value.detach().cpu() if isinstance(value, Tensor) else torch.from_numpy(np.array(value))  # a copy
    k = len(spatial)
    if m.dim() == k + 2 and m.shape[1] == 1:
        m = m[:, 0]
    if m.dim() != k + 1 or tuple(m.shape) != (n, *spatial):
        raise ValueError(f"mask {name!r} has shape {tuple(m.shape)}; expected ({n}, {', '.join(map(str, spatial))}) "
                         f"or ({n}, 1, {', '.join(map(str, spatial))}): one ROI per pair at the inputs' "
                         "spatial resolution")
    if m.dtype != torch.bool:
        if m.is_floating_point() and not bool(torch.isfinite(m).all()):
            raise ValueError(f"mask {name!r} contains NaN/Inf")
        bad = (m != 0) & (m != 1)
        if bool(bad.any()):
            raise ValueError(f"mask {name!r} must be boolean or 0/1; found values such as "
                             f"{torch.unique(m[bad])[:5].tolist()}")
        m = m != 0
    empty = np.flatnonzero(~m.reshape(n, -1).any(1).numpy())
    if len(empty):
        warnings.warn(f"mask {name!r} is empty for pair(s) {empty[:10].tolist()}: ROI patching leaves "
                      "those pairs unchanged (delta 0)", stacklevel=4)
    return m[:, None]


def _roi_masks(mask: MaskArg, n: int, spatial: tuple[int, ...], roi_from: str) -> dict[str, tuple[Tensor, Tensor]]:
    """{roi name: (ROI per direction-ordered recipient row (2n,1,*sp))} from the ``mask`` argument."""
    if mask is None:
        return {}
    if roi_from not in ("donor", "recipient", "union"):
        raise ValueError(f"roi_from must be 'donor', 'recipient' or 'union', got {roi_from!r}")
    items = mask.items() if isinstance(mask, Mapping) else [("roi", mask)]
    out = {}
    for name, value in items:
        if not isinstance(name, str) or not name or name == "full":
            raise ValueError(f"mask names must be non-empty strings other than 'full', got {name!r}")
        if isinstance(value, tuple):
            if len(value) != 2:
                raise ValueError(f"mask {name!r}: a tuple must be (source_roi, target_roi), got {len(value)} items")
            s, t = _as_roi(value[0], f"{name}[source]", n, spatial), _as_roi(value[1], f"{name}[target]", n, spatial)
        else:
            s = t = _as_roi(value, name, n, spatial)
        # rows 0..n-1: direction s->t (donor source, recipient target); rows n..2n-1: t->s
        donor, recipient = torch.cat([s, t]), torch.cat([t, s])
        out[name] = {"donor": donor, "recipient": recipient, "union": donor | recipient}[roi_from]
    return out


# ------------------------------------------------------------------------------ patching
def _default_prob(out: Tensor) -> Tensor:
    if not isinstance(out, Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"model output must be (N, K) logits for the default softmax, got {shape}; "
                         "pass prob_fn= mapping the output to (N, K) probabilities")
    return torch.softmax(out.double(), dim=1)


def _forward_batches(reg: HookRegistry, x: Tensor, batch_size: int, prob_fn, patch=None) -> Tensor:
    """p = prob_fn(model(x)) in chunks; ``patch(lo, hi)`` → (patches, mask) for the chunk."""
    out = []
    with torch.no_grad():
        for lo in range(0, len(x), batch_size):
            hi = min(lo + batch_size, len(x))
            if patch is None:
                out.append(prob_fn(reg.model(x[lo:hi])))
            else:
                patches, m = patch(lo, hi)
                with reg.patch(patches, mask=m):
                    out.append(prob_fn(reg.model(x[lo:hi])))
    return torch.cat(out)


def activation_patching(reg: HookRegistry, sources: Tensor, targets: Tensor,
                        points: str | Sequence[str] | None = None, *, target_class: int,
                        mask: MaskArg = None, roi_from: str = "donor",
                        controls: Sequence[str] = ("full", "complement", "random"), n_random: int = 5,
                        roi_threshold: float = 0.0, directions: Sequence[str] = DIRECTIONS,
                        batch_size: int = 64, prob_fn: Callable[[Tensor], Tensor] | None = None,
                        seed: int = 0) -> pd.DataFrame:
    """Graft each pair's donor activation at each point into its recipient; Δp(target_class).

    For pair i, point P and direction ``"s->t"`` (donor = source i, recipient = target i; ``"t->s"``
    the reverse): ``p_before = p(target_class | recipient)``, ``p_after`` = the same with the
    activation at P replaced by the donor's (inside the ROI only, when masked), and
    ``delta = p_after − p_before`` (see the module docstring for the sign convention: with class-1
    sources and ``target_class=1`` a transfer is ``delta > 0`` in ``"s->t"`` and ``< 0`` in ``"t->s"``).

    Args:
        reg: a ``HookRegistry`` on the model (eval mode recommended; left as found).
        sources, targets: ``(N, C, *spatial)`` inputs, pair i = (sources[i], targets[i]).
        points: hook point name(s); ``None`` = every block's ``.local`` (the branch output
            f(x), the seed's protocol).  Any point is allowed; masks need spatial activations.
        target_class: the class whose probability ``p`` is reported.
        mask: ``None`` (full patching only), one ROI per pair (``(N, *spatial)`` or
            ``(N, 1, *spatial)``, bool or 0/1, at the inputs' resolution), a tuple
            ``(source_roi, target_roi)``, or a ``{name: ROI | (source_roi, target_roi)}`` dict.
        roi_from: which case's ROI restricts a graft when a tuple is given: ``"donor"`` (the case
            the activations come from — a planted marker sits in the donor's skull), ``"recipient"``
            or ``"union"``.  A single ROI is used for both cases of a pair.
        controls: subset of ``("full", "complement", "random")``: ``full`` adds unmasked
            patching (``roi="full"``); the others add per-ROI controls (module docstring).
        n_random: number of random-ROI draws (``draw`` column 0..n_random−1).
        roi_threshold: a feature-map cell is in the ROI when the ROI covers more than this
            fraction of it (``resize_roi``); 0 = any overlap.
        directions: subset of ``("s->t", "t->s")``.
        batch_size: rows per forward (a pair contributes one row per direction).
        prob_fn: maps the model output to ``(N, K)`` probabilities; default softmax over dim 1.
        seed: seed of the random-ROI draws (``numpy`` generator per ROI, point and draw).

    Returns:
        Long DataFrame, one row per pair × point × direction × variant: ``pair``, ``point``,
        ``direction``, ``roi`` ("full" or the ROI name), ``control`` ("none", "complement",
        "random"), ``draw``, ``coverage`` (fraction of feature-map positions grafted),
        ``p_before``, ``p_after``, ``delta``.
    """
    sources, targets = _check_inputs(sources, targets)
    n, spatial = len(sources), tuple(sources.shape[2:])
    pts = _check_points(reg, points)
    directions = tuple(directions)
    if not directions or any(d not in DIRECTIONS for d in directions) or len(set(directions)) != len(directions):
        raise ValueError(f"directions must be a non-empty subset of {DIRECTIONS}, got {directions}")
    controls = tuple(controls)
    if any(c not in ("full", "complement", "random") for c in controls):
        raise ValueError(f"controls must be a subset of ('full', 'complement', 'random'), got {controls}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if "random" in controls and mask is not None and (not isinstance(n_random, int) or n_random < 1):
        raise ValueError(f"n_random must be a positive int, got {n_random!r}")
    rois = _roi_masks(mask, n, spatial, roi_from)
    if not rois and "full" not in controls:
        raise ValueError("nothing to patch: no mask given and 'full' not in controls")
    if isinstance(target_class, bool) or not isinstance(target_class, (int, np.integer)):
        raise TypeError(f"target_class must be an int class index, got {target_class!r}")
    prob_fn = prob_fn or _default_prob

    # rows 0..n-1: recipients = targets (s->t); rows n..2n-1: recipients = sources (t->s)
    x = torch.cat([targets, sources])
    donor_row = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])  # donor of row r is x[donor_row[r]]
    use = np.concatenate([np.full(n, "s->t" in directions), np.full(n, "t->s" in directions)])
    rows_idx = torch.from_numpy(np.flatnonzero(use))
    x = x[rows_idx]
    donors = donor_row[rows_idx]  # index into cat([targets, sources]), whose activations are cached

    # one capture forward over every input (the donors are among them) gives p_before as well
    acts, out = _capture(reg, torch.cat([targets, sources]), pts, batch_size)
    p_all = prob_fn(out)
    if not isinstance(p_all, Tensor) or p_all.dim() != 2 or len(p_all) != 2 * n:
        raise ValueError(f"prob_fn must return (N, K) probabilities, got "
                         f"{tuple(p_all.shape) if isinstance(p_all, Tensor) else type(p_all).__name__}")
    if not 0 <= target_class < p_all.shape[1]:
        raise ValueError(f"target_class={target_class} is not a class of the model output "
                         f"with {p_all.shape[1]} classes")
    p_before = p_all[rows_idx, target_class]

    pair = np.concatenate([np.arange(n), np.arange(n)])[rows_idx.numpy()]
    direction = np.array(["s->t"] * n + ["t->s"] * n)[rows_idx.numpy()]
    frames = []
    for pi, point in enumerate(pts):
        act = acts[point]
        donor_act = act[donors]
        variants = []  # (roi, control, draw, feature-map mask or None)
        if "full" in controls:
            variants.append(("full", "none", 0, None))
        if rois:
            if act.dim() < 3:
                raise ValueError(f"mask given but point {point!r} has no spatial dims (activation shape "
                                 f"{tuple(act.shape)}); ROI patching needs a feature map")
            fm = tuple(act.shape[2:])
            for ri, (name, roi) in enumerate(rois.items()):
                m = resize_roi(roi[rows_idx], fm, roi_threshold)
                variants.append((name, "none", 0, m))
                if "complement" in controls:
                    variants.append((name, "complement", 0, ~m))
                if "random" in controls:
                    for d in range(n_random):
                        variants.append((name, "random", d, _random_like(m, np.random.default_rng([seed, ri, pi, d]))))
        for roi_name, control, draw, m in variants:
            def chunk(lo, hi, m=m, point=point):
                return {point: donor_act[lo:hi]}, (None if m is None else m[lo:hi])
            p_after = _forward_batches(reg, x, batch_size, prob_fn, chunk)[:, target_class]
            cov = np.ones(len(x)) if m is None else m.reshape(len(x), -1).double().mean(1).numpy()
            frames.append(pd.DataFrame({
                "pair": pair, "point": point, "direction": direction, "roi": roi_name, "control": control,
                "draw": draw, "coverage": cov, "p_before": p_before.numpy(), "p_after": p_after.numpy(),
                "delta": (p_after - p_before).numpy()}))
    return pd.concat(frames, ignore_index=True)[_COLUMNS]


def _random_like(m: Tensor, rng: np.random.Generator) -> Tensor:
    """Per row, a uniformly random set of positions with as many members as ``m``'s row."""
    rows = m.shape[0]
    flat = m.reshape(rows, -1)
    k = flat.sum(1, keepdim=True)
    order = torch.from_numpy(rng.random(flat.shape)).argsort(1).argsort(1)  # random rank per position
    return (order < k).reshape(m.shape)


def _capture(reg: HookRegistry, x: Tensor, points: list[str], batch_size: int) -> tuple[dict[str, Tensor], Tensor]:
    """Activations at ``points`` and the model output for all of ``x``, in chunks."""
    parts: dict[str, list[Tensor]] = {p: [] for p in points}
    outs = []
    for lo in range(0, len(x), batch_size):
        out, cache = reg.run_with_cache(x[lo:lo + batch_size], points=points)
        if not isinstance(out, Tensor):
            raise ValueError(f"model output must be a tensor, got {type(out).__name__}")
        outs.append(out)
        for p in points:
            parts[p].append(cache[p])
    return {p: torch.cat(v) for p, v in parts.items()}, torch.cat(outs)


def _check_inputs(sources, targets) -> tuple[Tensor, Tensor]:
    for name, t in (("sources", sources), ("targets", targets)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor (N, C, *spatial), got {type(t).__name__}")
        if t.dim() < 3 or t.shape[0] == 0:
            raise ValueError(f"{name} must be (N, C, *spatial) with N >= 1, got shape {tuple(t.shape)}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN/Inf")
    if sources.shape != targets.shape:
        raise ValueError(f"sources {tuple(sources.shape)} and targets {tuple(targets.shape)} must have the "
                         "same shape (pair i = sources[i], targets[i])")
    return sources, targets


def _check_points(reg: HookRegistry, points) -> list[str]:
    if points is None:
        if not reg.blocks:
            raise ValueError("points=None means every block's '.local', but the registry found no "
                             "residual blocks; pass point names")
        return [f"{b}.local" for b in reg.blocks]
    pts = [points] if isinstance(points, str) else list(points)
    if not pts:
        raise ValueError("points is empty")
    if len(set(pts)) != len(pts):
        raise ValueError(f"points has duplicates: {sorted({p for p in pts if pts.count(p) > 1})}")
    for p in pts:
        reg.point_info(p)  # KeyError with close matches for an unknown name
    return pts


# ------------------------------------------------------------------------------- summary
def summarize_patching(df: pd.DataFrame, *, n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Mean Δp per point, direction, ROI and control, with percentile bootstrap CIs over pairs.

    Random-ROI draws are first averaged per pair, so the pair stays the resampling unit.  For
    each group with pair values ``d_1..d_n``: ``mean = Σ d_i / n``; ``n_boot`` resamples of the
    pairs with replacement (one seeded generator, all groups vectorised) give the means
    ``m*_b``; the CI is their ``(1−ci)/2`` and ``(1+ci)/2`` quantiles (Efron & Tibshirani 1993,
    percentile interval).

    Returns:
        DataFrame: ``point``, ``direction``, ``roi``, ``control``, ``n_pairs``, ``mean_delta``,
        ``ci_low``, ``ci_high``, ``mean_coverage``, ``mean_p_before``, ``mean_p_after``; points
        keep their order of appearance.
    """
    need = {"pair", "point", "direction", "delta"}
    if not isinstance(df, pd.DataFrame) or not need <= set(df.columns):
        cols = list(df.columns) if isinstance(df, pd.DataFrame) else type(df).__name__
        raise ValueError(f"df must be activation_patching's output with columns {sorted(need)}; got {cols}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    if df["delta"].isna().any():
        raise ValueError(f"df has {int(df['delta'].isna().sum())} NaN delta(s)")
    d = df.copy()
    for col, val in (("roi", "full"), ("control", "none"), ("coverage", 1.0)):
        if col not in d:
            d[col] = val
    for col in ("p_before", "p_after"):
        if col not in d:
            d[col] = np.nan
    keys = ["point", "direction", "roi", "control"]
    per_pair = d.groupby(keys + ["pair"], sort=False)[["delta", "coverage", "p_before", "p_after"]].mean()
    rng = np.random.default_rng(seed)
    rows = []
    for key, g in per_pair.groupby(level=keys, sort=False):
        v = g["delta"].to_numpy()
        idx = rng.integers(0, len(v), size=(n_boot, len(v)))
        boots = v[idx].mean(1)
        lo, hi = np.quantile(boots, [(1 - ci) / 2, (1 + ci) / 2])
        rows.append(dict(zip(keys, key), n_pairs=len(v), mean_delta=float(v.mean()), ci_low=float(lo),
                         ci_high=float(hi), mean_coverage=float(g["coverage"].mean()),
                         mean_p_before=float(g["p_before"].mean()), mean_p_after=float(g["p_after"].mean())))
    return pd.DataFrame(rows)
