"""Anatomical and intensity ablations with DeLong statistics (Andres et al.-style ROC collapse).

An ablation removes part of every image and asks how the model's ROC changes:

* **ROI removal** — ``"no skull"``, ``"no gtv+skull"`` (a ``+``-joined union of ROI masks).
* **Intensity removal** — ``"no top5%"``: the ⌈k·V/100⌉ brightest voxels of each case, among all
  V voxels of the *whole image* (the paper removes the brightest pixels of the image, and a
  shortcut such as a surgical-site marker lies in the skull, outside the brain). ``joint``
  (default) ranks voxels by their mean over contrasts and removes a voxel in every contrast;
  ``per-contrast`` ranks and removes each contrast's own ⌈k·V/100⌉ brightest voxels. Ties are
  broken by flat voxel order, so exactly ⌈k·V/100⌉ voxels (per case, per contrast) are removed.

Spec strings (case-insensitive, whitespace-separated tokens)::

    none | no <roi>[+<roi>...] | no top<k>% [per-contrast|joint]   [fill=zero|brain_mean|blur]

Fill of removed voxels, per case and contrast:

* ``zero`` — 0 (background intensity of the synthetic and of most skull-stripped MRI).
* ``brain_mean`` — mean of the contrast over the case's ``brain`` mask (original image).
* ``blur`` — normalised convolution (Knutsson & Westin 1993): with K the kept voxels and G a
  Gaussian of ``sigma`` voxels over the spatial axes, fill = (G*(x·K)) / (G*K); voxels whose
  neighbourhood holds no kept voxel (G*K < 1e-3) get the mean of the kept voxels. N-D.

Derived ROI: ``extracranial`` = not ``brain`` (skull, scalp and background: what skull stripping
removes, as in a skull-stripped image). ``"no skull"`` removes only the ``skull`` mask (bone): a
shortcut that extends into the scalp survives it, ``"no extracranial"`` does not.

``masks`` is ``{roi name: (N, *spatial) or (N, 1, *spatial)}``, boolean or 0/1 arrays/tensors.
A known ROI missing from it (``KNOWN_ROIS``, e.g. ``marker`` in a cohort without markers) is an
empty mask; an unknown name is an error listing the valid ones.

:func:`ablation_study` runs the model on every condition and reports per case probabilities,
ROC points (``sklearn.metrics.roc_curve``), AUC with DeLong CI, the paired DeLong test against
the unablated AUC (``probes.metrics.roc.delong``; DeLong et al. 1988), and the per-class shift
of the probabilities with a Wilcoxon signed-rank test (paired: the same cases before and after).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import ndimage, stats
from torch import Tensor, nn

from probes.core.model import Output, as_audit_model, class_probabilities, model_device, model_state
from probes.core.result import Result, long_frame
from probes.core.validate import as_case_ids, as_labels, as_mask, as_masks, check_alpha, check_int, to_numpy
from probes.interventions.inputs import declares_probabilities, is_case_collection, stack_cases
from probes.metrics.roc import delong

__all__ = ["AblationSpec", "AblationStudy", "KNOWN_ROIS", "FILLS", "parse_spec", "ablation_mask",
           "ablate", "ablation_study"]

KNOWN_ROIS = ("brain", "skull", "gtv", "necrosis", "enhancement", "oedema", "marker", "extracranial")
FILLS = ("zero", "brain_mean", "blur")
_TOP = re.compile(r"^top(\d+(?:\.\d+)?)%$")


# ------------------------------------------------------------------------------ spec language
@dataclass(frozen=True)
class AblationSpec:
    """One ablation condition: a union of ROIs, or the top-``top_percent``% brightest voxels.

    ``rois=()`` and ``top_percent=None`` is the unablated condition ``"none"``.
    """

    rois: tuple[str, ...] = ()
    top_percent: float | None = None
    per_contrast: bool = False
    fill: str = "zero"
    sigma: float = 3.0

    def __post_init__(self) -> None:
        if self.rois and self.top_percent is not None:
            raise ValueError(f"a spec removes either ROIs or the brightest voxels, got both: "
                             f"rois={self.rois}, top_percent={self.top_percent}")
        if self.top_percent is not None and not 0 < self.top_percent <= 100:
            raise ValueError(f"top_percent must lie in (0, 100], got {self.top_percent}")
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, got {self.fill!r}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0 voxels, got {self.sigma}")

    @property
    def name(self) -> str:
        """Canonical spec string, e.g. ``"no gtv+skull"``, ``"no top5% per-contrast"``."""
        if self.rois:
            s = "no " + "+".join(self.rois)
        elif self.top_percent is not None:
            s = f"no top{self.top_percent:g}%" + (" per-contrast" if self.per_contrast else "")
        else:
            return "none"
        return s if self.fill == "zero" else f"{s} fill={self.fill}"


def parse_spec(spec: str | AblationSpec, fill: str | None = None, *,
               valid_rois: Iterable[str] = KNOWN_ROIS) -> AblationSpec:
    """Parse a spec string (grammar in the module docstring); ``fill`` is the default fill.

    Errors name the offending token and list the valid ROI names.
    """
    valid = tuple(dict.fromkeys([*KNOWN_ROIS, *valid_rois]))
    if isinstance(spec, AblationSpec):
        bad = [r for r in spec.rois if r not in valid]
        if bad:
            raise ValueError(f"unknown ROI(s) {bad} in spec {spec.name!r}; valid ROIs: {valid}")
        return spec  # a dataclass spec carries its own fill
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a str or AblationSpec, got {type(spec).__name__}")
    toks = spec.strip().split()
    kw: dict[str, Any] = {"fill": fill or "zero"}
    rest = []
    for t in toks:
        if t.lower().startswith("fill="):
            kw["fill"] = t.split("=", 1)[1].lower()
            if kw["fill"] not in FILLS:
                raise ValueError(f"bad fill token {t!r} in spec {spec!r}; fills are {FILLS}")
        else:
            rest.append(t)
    if [t.lower() for t in rest] == ["none"]:
        return AblationSpec(**kw)
    if len(rest) < 2 or rest[0].lower() != "no":
        raise ValueError(f"cannot parse spec {spec!r}: expected 'none', 'no <roi>[+<roi>]' or "
                         f"'no top<k>% [per-contrast|joint]'; valid ROIs: {valid}")
    m = _TOP.match(rest[1].lower())
    if m:
        if len(rest) > 3 or (len(rest) == 3 and rest[2].lower() not in ("per-contrast", "joint")):
            raise ValueError(f"bad token {rest[2]!r} in spec {spec!r}: after 'top<k>%' only "
                             "'per-contrast' or 'joint' may follow")
        pc = len(rest) == 3 and rest[2].lower() == "per-contrast"
        return AblationSpec(top_percent=float(m.group(1)), per_contrast=pc, **kw)
    if len(rest) != 2:
        raise ValueError(f"bad token {rest[2]!r} in spec {spec!r}: join ROIs with '+' "
                         f"(e.g. 'no gtv+skull'); valid ROIs: {valid}")
    rois = tuple(r.lower() for r in rest[1].split("+"))
    bad = [r for r in rois if r not in valid]
    if bad or "" in rois:
        raise ValueError(f"unknown ROI token {bad[0] if bad else rest[1]!r} in spec {spec!r}; "
                         f"valid ROIs: {valid} (or top<k>% for brightest voxels)")
    return AblationSpec(rois=tuple(dict.fromkeys(rois)), **kw)


# ------------------------------------------------------------------------------------ ablate
def _mask(name: str, masks: Mapping[str, Any], ref_shape: tuple[int, ...]) -> np.ndarray:
    """ROI ``name`` as (N, *spatial) bool: from ``masks``, derived (extracranial) or empty."""
    if name == "extracranial" and name not in masks:  # derived: what skull stripping removes
        if "brain" not in masks:
            raise ValueError("ROI 'extracranial' is the complement of the 'brain' mask, but masks "
                             f"has no 'brain' (masks: {sorted(masks)})")
        return ~_mask("brain", masks, ref_shape)
    if name not in masks:
        return np.zeros((ref_shape[0], *ref_shape[2:]), bool)
    return as_mask(masks[name], ref_shape, f"masks[{name!r}]", "x", binary=True)


def _check_x(x: Any) -> np.ndarray:
    a = to_numpy(x, "x")
    if a.ndim < 3 or 0 in a.shape or a.dtype.kind not in "biuf":
        raise ValueError(f"x must be a real (N, C, *spatial) array/tensor, got shape {a.shape}, "
                         f"{a.dtype}")
    if not np.isfinite(a).all():
        raise ValueError(f"x has {int((~np.isfinite(a)).sum())} non-finite value(s) (NaN/inf)")
    return a


def ablation_mask(x: Any, masks: Mapping[str, Any], spec: str | AblationSpec) -> np.ndarray:
    """Boolean removal mask, (N, 1, *spatial) (broadcast over contrasts) or (N, C, *spatial)
    for ``per-contrast`` intensity ablation.

    ROI union: ∪ masks[r]. Top-k%: the q = ⌈k·V/100⌉ voxels of largest intensity (joint: the
    mean over contrasts), V the number of spatial voxels; ties broken by flat index.
    """
    a = _check_x(x)
    sp = parse_spec(spec, valid_rois=masks.keys())
    n, c, spatial = a.shape[0], a.shape[1], tuple(a.shape[2:])
    if sp.top_percent is None:
        out = np.zeros((n, *spatial), bool)
        for r in sp.rois:
            out |= _mask(r, masks, a.shape)
        return out[:, None]
    v = int(np.prod(spatial))
    q = min(v, math.ceil(sp.top_percent * v / 100 - 1e-9))
    vals = a.reshape(n, c, v).astype(np.float64)
    if not sp.per_contrast:
        vals = vals.mean(axis=1, keepdims=True)
    order = np.argsort(-vals, axis=-1, kind="stable")[..., :q]
    out = np.zeros(vals.shape, bool)
    np.put_along_axis(out, order, True, axis=-1)
    return out.reshape(n, out.shape[1], *spatial)


def _fill(a: np.ndarray, remove: np.ndarray, sp: AblationSpec,
          masks: Mapping[str, Any]) -> np.ndarray:
    n, spatial = a.shape[0], tuple(a.shape[2:])
    ax = tuple(range(2, a.ndim))
    if sp.fill == "zero":
        return np.zeros_like(a)
    if sp.fill == "brain_mean":
        if "brain" not in masks:
            raise ValueError("fill='brain_mean' needs a 'brain' mask in masks; got masks "
                             f"{sorted(masks)}")
        b = _mask("brain", masks, a.shape)[:, None]
        cnt = b.sum(axis=ax, keepdims=True)
        if (cnt == 0).any():
            raise ValueError(f"fill='brain_mean': the brain mask is empty in case(s) "
                             f"{np.flatnonzero(cnt.reshape(n) == 0).tolist()}")
        return np.broadcast_to((a * b).sum(axis=ax, keepdims=True) / cnt, a.shape)
    keep = np.broadcast_to(~remove, a.shape).astype(np.float64)
    sig = (0, 0) + (sp.sigma,) * len(spatial)
    num = ndimage.gaussian_filter(a.astype(np.float64) * keep, sig, mode="constant", cval=0.0)
    den = ndimage.gaussian_filter(keep, sig, mode="constant", cval=0.0)
    kept = keep.sum(axis=ax, keepdims=True)
    mean_kept = np.where(kept > 0, (a * keep).sum(axis=ax, keepdims=True) / np.maximum(kept, 1), 0.0)
    return np.where(den > 1e-3, num / np.maximum(den, 1e-3), mean_kept)


def ablate(x: Any, masks: Mapping[str, Any], spec: str | AblationSpec,
           fill: str | None = None) -> Any:
    """A copy of ``x`` (N, C, *spatial) with the voxels of ``spec`` replaced by the fill.

    x' = x·(1 − R) + F·R with R = :func:`ablation_mask` and F the fill (module docstring);
    ``fill`` overrides the default fill of a spec string without ``fill=``. Returns the type of
    ``x`` (tensor on its device and dtype, or ndarray); ``x`` itself is not modified.
    """
    a = _check_x(x)
    sp = parse_spec(spec, fill, valid_rois=masks.keys())
    if sp.rois == () and sp.top_percent is None:
        out = a.copy()
    else:
        r = ablation_mask(a, masks, sp)
        f = _fill(a, r, sp, masks)
        out = np.where(r, f, a).astype(a.dtype, copy=False)
    if isinstance(x, torch.Tensor):
        return torch.as_tensor(out, dtype=x.dtype, device=x.device)
    return out


# ------------------------------------------------------------------------------------ study
_SUMMARY_COLUMNS = ["condition", "auc", "ci_low", "ci_high", "delta_auc", "p", "shift_0", "shift_p_0",
                    "shift_1", "shift_p_1"]


@dataclass(frozen=True, eq=False)
class AblationStudy(Result):
    """Results of :func:`ablation_study`.

    Native (wide) tables, kept for convenience: ``per_case`` (condition, case_id, label, prob);
    ``per_condition`` (condition, n, auc, se, ci_low, ci_high (DeLong Wald CI of the AUC),
    delta_auc (vs ``"none"``), delta_ci_low, delta_ci_high, z, p (paired DeLong), and per true
    class k ∈ {0, 1} ``mean_prob_k``, ``shift_k`` (mean change vs unablated) and ``shift_p_k``
    (Wilcoxon signed-rank)); ``roc`` (condition, fpr, tpr, threshold; sklearn ``roc_curve``).

    ``to_frame()`` is the per-condition table in the long format (condition, metric, value);
    ``tables()`` adds ``per_case`` (case_id, condition, label, metric ``prob``, value) and
    ``roc`` (condition, point, metric ∈ fpr/tpr/threshold, value).
    """

    per_case: pd.DataFrame
    per_condition: pd.DataFrame
    roc: pd.DataFrame
    alpha: float = 0.05
    target: int = 1
    title: ClassVar[str] = "Ablation study"

    def to_frame(self) -> pd.DataFrame:
        """Per-condition measurements, long: condition, metric, value."""
        return long_frame(self.per_condition, ["condition"])

    def tables(self) -> dict[str, pd.DataFrame]:
        """``per_condition`` (= ``to_frame()``), ``per_case`` and ``roc``, each long."""
        roc = self.roc.assign(point=self.roc.groupby("condition", sort=False).cumcount())
        return {"per_condition": self.to_frame(),
                "per_case": long_frame(self.per_case, ["case_id", "condition", "label"], ["prob"]),
                "roc": long_frame(roc, ["condition", "point"], ["fpr", "tpr", "threshold"])}

    def _summary_tables(self) -> pd.DataFrame:
        return self.per_condition[_SUMMARY_COLUMNS]

    def _notes(self) -> Sequence[str]:
        lvl = f"{100 * (1 - self.alpha):g}"
        return (f"AUC of P(class {self.target}) with its DeLong {lvl}% CI (ci_low, ci_high); delta_auc: "
                "AUC(condition) − AUC('none') with the paired DeLong p.",
                f"shift_k: mean change of P(class {self.target}) among cases of true class k, with the "
                "Wilcoxon signed-rank p (shift_p_k).")


def _target_probability(net: nn.Module, xb: Tensor, target: int) -> Tensor:
    """P(class ``target``) per case: softmax over K ≥ 2 outputs; one output is the class-1 logit
    (sigmoid), or P(class 1) for a model declared to return probabilities; P(0) = 1 − P(1)."""
    if declares_probabilities(net):
        p = class_probabilities(net, xb)
    else:
        logits = net(xb)
        if logits.dim() != 2:
            raise ValueError(f"model output must be (N, K) logits, got shape {tuple(logits.shape)}")
        p = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, 1)
    if p.shape[1] == 1:
        if target not in (0, 1):
            raise ValueError(f"target={target}: a model with one output scores classes 0 and 1 only")
        return p[:, 0] if target == 1 else 1 - p[:, 0]
    if not 0 <= target < p.shape[1]:
        raise ValueError(f"target={target} is not a class of the model's {p.shape[1]} outputs")
    return p[:, target]


def _probs(net: nn.Module, x: np.ndarray, target: int, batch_size: int,
           masks: Mapping[str, np.ndarray], sp: AblationSpec, device: torch.device) -> np.ndarray:
    out = []
    for i in range(0, x.shape[0], batch_size):
        sl = slice(i, i + batch_size)
        xb = ablate(x[sl], {k: v[sl] for k, v in masks.items()}, sp)
        p = _target_probability(net, torch.as_tensor(xb, dtype=torch.float32, device=device), target)
        out.append(p.double().cpu().numpy())
    return np.concatenate(out)


def _shift_p(a: np.ndarray, b: np.ndarray) -> float:
    d = b - a
    if d.size == 0:
        return float("nan")
    if np.all(d == 0):
        return 1.0
    return float(stats.wilcoxon(b, a, zero_method="zsplit").pvalue)


def _check_target(target: Any) -> int:
    if isinstance(target, (str, AblationSpec, list, tuple)):
        raise TypeError(f"target (the third argument) is the class whose probability is scored, an int; "
                        f"got {target!r}. The specs come fourth: ablation_study(model, x, 1, ['no skull'])")
    return check_int(target, "target", 0)


def ablation_study(model: nn.Module, x: Any, target: int, specs: Sequence[str | AblationSpec], *,
                   labels: Any = None, masks: Mapping[str, Any] | None = None,
                   case_ids: Sequence[Any] | None = None, fill: str = "zero", batch_size: int = 32,
                   alpha: float = 0.05, output: Output = None) -> AblationStudy:
    """Run ``model`` on every ablation condition and compare each ROC with the unablated one.

    ``x``: tensor/array (N, C, *spatial) with ``labels`` (N,) 0/1 and ``masks``, or a cohort-like
    iterable of cases (``.image``, ``.masks``, ``.label``, ``.case_id``; a mask absent in a case
    is empty there; ``labels``, ``masks`` (per ROI name) and ``case_ids`` given override the
    cohort's). ``target``: the class whose probability P(class ``target``) is the score (1 for
    the positive class of a binary model); the ROC takes label 1 as positive. ``"none"`` is
    always evaluated first. Scores are softmax(logits)[target] (a one-output model: its sigmoid
    is P(class 1)); ``output`` says how to read the model's output (``None``: as the model
    declares, see ``probes.core.as_audit_model``; ``"logits"``, ``"probabilities"``, ...).

    Per condition: AUC with DeLong CI at level 1 − ``alpha``, paired DeLong test of
    AUC_condition − AUC_none on the same cases (DeLong et al. 1988), and per true class the mean
    probability, its shift vs unablated and a Wilcoxon signed-rank p. The model runs under
    ``torch.no_grad()`` in eval mode (``probes.core.model_state``); its modes are restored.
    """
    from sklearn.metrics import roc_curve

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    target = _check_target(target)
    if isinstance(specs, (str, AblationSpec)):
        raise TypeError(f"specs must be a sequence of specs, got the single spec {specs!r}; pass [{specs!r}]")
    if is_case_collection(x):
        cases = stack_cases(x)
        a = _check_x(cases.x)
        if labels is None:
            if not cases.all_labelled:
                missing = [c for c, lab in zip(cases.case_ids, cases.labels) if lab is None]
                raise ValueError(f"labels: case(s) {missing[:5]} of x have no label; pass labels=")
            labels = list(cases.labels)
        masks = {**cases.masks, **dict(masks or {})}
        case_ids = cases.case_ids if case_ids is None else case_ids
    else:
        a = _check_x(x)
        if labels is None:
            raise ValueError("labels are required when x is a tensor/array")
        masks = dict(masks or {})
    n = a.shape[0]
    y = as_labels(labels, n)
    ids = as_case_ids(case_ids, n)
    masks = as_masks(masks, a.shape, binary=True) if masks else {}
    batch_size = check_int(batch_size, "batch_size")
    alpha = check_alpha(alpha)
    parsed = [parse_spec(s, fill, valid_rois=masks.keys()) for s in specs]
    for sp in parsed:  # validate masks/fill on a tiny slice before spending model time
        ablate(a[:1], {k: v[:1] for k, v in masks.items()}, sp)
    conds = [AblationSpec(fill=fill)] + [s for s in parsed if s.rois or s.top_percent is not None]
    names = list(dict.fromkeys(s.name if s.rois or s.top_percent is not None else "none"
                               for s in conds))
    by_name = {("none" if not (s.rois or s.top_percent is not None) else s.name): s for s in conds}
    net, device = as_audit_model(model, output), model_device(model)
    probs: dict[str, np.ndarray] = {}
    with model_state(model, warn="ablation_study"), torch.no_grad():
        for nm in names:
            probs[nm] = _probs(net, a, target, batch_size, masks, by_name[nm], device)
    base = probs["none"]
    rows, per_case, rocs = [], [], []
    for nm in names:
        p = probs[nm]
        one = delong(y, p, alpha=alpha)
        if nm == "none":
            d, dz, dp, dlo, dhi = 0.0, 0.0, 1.0, 0.0, 0.0
        else:
            two = delong(y, p, base, alpha=alpha)
            d, dz, dp, dlo, dhi = two.diff, two.z, two.p, two.ci_low, two.ci_high
        row = {"condition": nm, "n": int(y.size), "auc": one.auc_a, "se": one.se,
               "ci_low": one.ci_low, "ci_high": one.ci_high, "delta_auc": d,
               "delta_ci_low": dlo, "delta_ci_high": dhi, "z": dz, "p": dp}
        for k in (0, 1):
            sel = y == k
            row[f"mean_prob_{k}"] = float(p[sel].mean())
            row[f"shift_{k}"] = float((p[sel] - base[sel]).mean())
            row[f"shift_p_{k}"] = _shift_p(base[sel], p[sel])
        rows.append(row)
        per_case.append(pd.DataFrame({"condition": nm, "case_id": ids, "label": y, "prob": p}))
        fpr, tpr, thr = roc_curve(y, p)
        rocs.append(pd.DataFrame({"condition": nm, "fpr": fpr, "tpr": tpr, "threshold": thr}))
    return AblationStudy(pd.concat(per_case, ignore_index=True), pd.DataFrame(rows),
                         pd.concat(rocs, ignore_index=True), alpha, target)
