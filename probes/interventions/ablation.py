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

from probes.core.errors import (AuditInputError, ClassIndexError, InputTypeError, LabelError, NonFiniteError,
                                OptionError, ShapeError, warn_undefined)
from probes.core.model import Output, as_audit_model, class_probabilities, model_device, model_state
from probes.core.result import Result, long_frame
from probes.core.validate import (as_case_ids, as_input, as_labels, as_mask, as_masks, check_alpha, check_int,
                                  to_numpy)
from probes.interventions.inputs import declares_probabilities, is_case_collection, stack_cases
from probes.metrics.roc import auc, delong

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
            raise OptionError("rois", self.rois, "ROIs or top_percent, not both",
                              message=f"a spec removes either ROIs or the brightest voxels, got both: "
                                      f"rois={self.rois}, top_percent={self.top_percent}")
        if self.top_percent is not None and not 0 < self.top_percent <= 100:
            raise OptionError("top_percent", self.top_percent, "a percentage in (0, 100]",
                              message=f"top_percent must lie in (0, 100], got {self.top_percent}")
        if self.fill not in FILLS:
            raise OptionError("fill", repr(self.fill), f"one of {FILLS}",
                              message=f"fill must be one of {FILLS}, got {self.fill!r}")
        if not self.sigma > 0:
            raise OptionError("sigma", self.sigma, "> 0 voxels", message=f"sigma must be > 0 voxels, got {self.sigma}")

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

    Errors (:class:`~probes.core.errors.OptionError`, naming ``spec``) name the offending token
    and list the valid ROI names.
    """
    try:
        return _parse_spec(spec, fill, valid_rois)
    except AuditInputError as e:
        if e.name == "spec":
            raise
        raise OptionError("spec", repr(spec), "a valid spec", message=f"spec {spec!r}: {e}") from None


def _parse_spec(spec: str | AblationSpec, fill: str | None, valid_rois: Iterable[str]) -> AblationSpec:
    valid = tuple(dict.fromkeys([*KNOWN_ROIS, *valid_rois]))
    if isinstance(spec, AblationSpec):
        bad = [r for r in spec.rois if r not in valid]
        if bad:
            raise OptionError("spec", bad, f"ROIs among {valid}",
                              message=f"unknown ROI(s) {bad} in spec {spec.name!r}; valid ROIs: {valid}")
        return spec  # a dataclass spec carries its own fill
    if not isinstance(spec, str):
        raise InputTypeError("spec", type(spec).__name__, "a str or AblationSpec",
                             message=f"spec must be a str or AblationSpec, got {type(spec).__name__}")
    toks = spec.strip().split()
    kw: dict[str, Any] = {"fill": fill or "zero"}
    rest = []
    for t in toks:
        if t.lower().startswith("fill="):
            kw["fill"] = t.split("=", 1)[1].lower()
            if kw["fill"] not in FILLS:
                raise OptionError("spec", repr(t), f"fill= one of {FILLS}",
                                  message=f"bad fill token {t!r} in spec {spec!r}; fills are {FILLS}")
        else:
            rest.append(t)
    if [t.lower() for t in rest] == ["none"]:
        return AblationSpec(**kw)
    if len(rest) < 2 or rest[0].lower() != "no":
        raise OptionError("spec", repr(spec), "'none', 'no <roi>[+<roi>]' or 'no top<k>% [per-contrast|joint]'",
                          message=f"cannot parse spec {spec!r}: expected 'none', 'no <roi>[+<roi>]' or "
                                  f"'no top<k>% [per-contrast|joint]'; valid ROIs: {valid}")
    m = _TOP.match(rest[1].lower())
    if m:
        if len(rest) > 3 or (len(rest) == 3 and rest[2].lower() not in ("per-contrast", "joint")):
            raise OptionError("spec", repr(rest[-1]), "'per-contrast' or 'joint' after 'top<k>%'",
                              message=f"bad token {rest[-1]!r} in spec {spec!r}: after 'top<k>%' only "
                                      "'per-contrast' or 'joint' may follow")
        pc = len(rest) == 3 and rest[2].lower() == "per-contrast"
        return AblationSpec(top_percent=float(m.group(1)), per_contrast=pc, **kw)
    if len(rest) != 2:
        raise OptionError("spec", repr(rest[2]), "ROIs joined with '+'",
                          message=f"bad token {rest[2]!r} in spec {spec!r}: join ROIs with '+' "
                                  f"(e.g. 'no gtv+skull'); valid ROIs: {valid}")
    rois = tuple(r.lower() for r in rest[1].split("+"))
    bad = [r for r in rois if r not in valid]
    if bad or "" in rois:
        raise OptionError("spec", repr(bad[0] if bad else rest[1]), f"ROIs among {valid}",
                          message=f"unknown ROI token {bad[0] if bad else rest[1]!r} in spec {spec!r}; "
                                  f"valid ROIs: {valid} (or top<k>% for brightest voxels)")
    return AblationSpec(rois=tuple(dict.fromkeys(rois)), **kw)


# ------------------------------------------------------------------------------------ ablate
def _mask(name: str, masks: Mapping[str, Any], ref_shape: tuple[int, ...]) -> np.ndarray:
    """ROI ``name`` as (N, *spatial) bool: from ``masks``, derived (extracranial) or empty."""
    if name == "extracranial" and name not in masks:  # derived: what skull stripping removes
        if "brain" not in masks:
            raise OptionError("masks", sorted(masks), "a 'brain' mask for 'extracranial'",
                              message="ROI 'extracranial' is the complement of the 'brain' mask, but masks "
                                      f"has no 'brain' (masks: {sorted(masks)})")
        return ~_mask("brain", masks, ref_shape)
    if name not in masks:
        return np.zeros((ref_shape[0], *ref_shape[2:]), bool)
    return as_mask(masks[name], ref_shape, f"masks[{name!r}]", "x", binary=True)


def _check_x(x: Any) -> np.ndarray:
    """``x`` as a numpy array (its dtype kept): a real, finite (N, C, *spatial) array or tensor."""
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise InputTypeError("x", type(x).__name__, "a tensor or array (N, C, *spatial)",
                             message=f"x must be a tensor or array (N, C, *spatial), got {type(x).__name__}")
    a = to_numpy(x, "x")
    if a.ndim < 3 or 0 in a.shape or a.dtype.kind not in "biuf":
        raise ShapeError("x", f"shape {a.shape}, {a.dtype}", "a real (N, C, *spatial) array/tensor",
                         message=f"x must be a real (N, C, *spatial) array/tensor, got shape {a.shape}, "
                                 f"{a.dtype}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise NonFiniteError("x", f"{int((~np.isfinite(a)).sum())} NaN/Inf values", "finite values",
                             message=f"x has {int((~np.isfinite(a)).sum())} non-finite value(s) (NaN/inf)")
    as_input(torch.from_numpy(np.ascontiguousarray(a[:1])), "x", finite=False)  # rank and dtype rules
    return a


def _check_masks(masks: Any) -> Mapping[str, Any]:
    if not isinstance(masks, Mapping):
        raise InputTypeError("masks", type(masks).__name__, "a mapping roi name → (N, *spatial) mask",
                             message=f"masks must be a mapping roi name → (N, *spatial) mask, got "
                                     f"{type(masks).__name__}")
    return masks


def ablation_mask(x: Any, masks: Mapping[str, Any], spec: str | AblationSpec) -> np.ndarray:
    """Boolean removal mask, (N, 1, *spatial) (broadcast over contrasts) or (N, C, *spatial)
    for ``per-contrast`` intensity ablation.

    ROI union: ∪ masks[r]. Top-k%: the q = ⌈k·V/100⌉ voxels of largest intensity (joint: the
    mean over contrasts), V the number of spatial voxels; ties broken by flat index.
    """
    a = _check_x(x)
    sp = parse_spec(spec, valid_rois=_check_masks(masks).keys())
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
            raise OptionError("masks", sorted(masks), "a 'brain' mask for fill='brain_mean'",
                              message="fill='brain_mean' needs a 'brain' mask in masks; got masks "
                                      f"{sorted(masks)}")
        b = _mask("brain", masks, a.shape)[:, None]
        cnt = b.sum(axis=ax, keepdims=True)
        if (cnt == 0).any():
            raise OptionError("masks['brain']", "empty in some cases", "a non-empty brain mask for fill='brain_mean'",
                              message=f"fill='brain_mean': the brain mask (masks['brain']) is empty in case(s) "
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
    sp = parse_spec(spec, fill, valid_rois=_check_masks(masks).keys())
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

    A number that cannot be computed is NaN and ``per_condition["reason"]`` says why (labels of
    one class only: no AUC or DeLong test; fewer than 2 cases of a class: no DeLong variance; a
    condition that removes no voxel in any case: no test against ``"none"``; a model output that
    is not finite; no case of true class k: no class-k shift).

    ``to_frame()`` is the per-condition table in the long format (condition, reason, metric,
    value; the reason is kept for NaN values only);
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
        """Per-condition measurements, long: condition, reason, metric, value."""
        pc = self.per_condition if "reason" in self.per_condition else self.per_condition.assign(reason="")
        df = long_frame(pc, ["condition", "reason"], [c for c in pc.columns if c not in ("condition", "reason")])
        df.loc[df["value"].notna(), "reason"] = ""
        return df

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
            raise ClassIndexError("target", target, "0 or 1 (a model with one output)",
                                  message=f"target={target}: a model with one output scores classes 0 and 1 only")
        return p[:, 0] if target == 1 else 1 - p[:, 0]
    if not 0 <= target < p.shape[1]:
        raise ClassIndexError("target", target, f"classes 0..{p.shape[1] - 1}",
                              message=f"target={target} is not a class of the model's {p.shape[1]} outputs")
    return p[:, target]


def _probs(net: nn.Module, x: np.ndarray, target: int, batch_size: int,
           masks: Mapping[str, np.ndarray], sp: AblationSpec, device: torch.device) -> np.ndarray:
    out = []
    for i in range(0, x.shape[0], batch_size):
        sl = slice(i, i + batch_size)
        xb = ablate(x[sl], {k: v[sl] for k, v in masks.items()}, sp)
        p = _target_probability(net, torch.as_tensor(xb, device=device), target)
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
        raise InputTypeError("target", repr(target), "an int class index",
                             message=f"target (the third argument) is the class whose probability is scored, an "
                                     f"int; got {target!r}. The specs come fourth: "
                                     "ablation_study(model, x, 1, ['no skull'])")
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or target < 0:
        raise ClassIndexError("target", repr(target), "an int class index >= 0",
                              message=f"target must be an int class index >= 0, got {target!r}")
    return int(target)


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

    Inputs are checked at the door (``x`` finite with the model's channels, cast to its dtype;
    ``labels`` 0/1; ``target`` a class of the model). A number that cannot be computed (labels
    of one class, an ablation that removes nothing, a non-finite model output) is NaN with its
    reason in ``per_condition["reason"]`` and one ``UndefinedValueWarning``.
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError("model", type(model).__name__, "a torch.nn.Module",
                             message=f"model must be a torch.nn.Module, got {type(model).__name__}")
    target = _check_target(target)
    if isinstance(specs, (str, AblationSpec)):
        raise InputTypeError("specs", repr(specs), "a sequence of specs",
                             message=f"specs must be a sequence of specs, got the single spec {specs!r}; "
                                     f"pass [{specs!r}]")
    if not isinstance(specs, Sequence):
        raise InputTypeError("specs", type(specs).__name__, "a sequence of specs",
                             message=f"specs must be a sequence of specs, got {type(specs).__name__}")
    if is_case_collection(x):
        cases = stack_cases(x)
        xs: Any = cases.x
        if labels is None:
            if not cases.all_labelled:
                missing = [c for c, lab in zip(cases.case_ids, cases.labels) if lab is None]
                raise LabelError("labels", f"no label for case(s) {missing[:5]}", "a label per case",
                                 message=f"labels: case(s) {missing[:5]} of x have no label; pass labels=")
            labels = list(cases.labels)
        masks = {**cases.masks, **dict(_check_masks(masks or {}))}
        case_ids = cases.case_ids if case_ids is None else case_ids
    else:
        xs = x
        if labels is None:
            raise LabelError("labels", None, "0/1 per case",
                             message="labels are required when x is a tensor/array")
        masks = dict(_check_masks(masks or {}))
    _check_x(xs)
    # the model's dtype and channels: float64 input is converted, a wrong channel count refused
    a = as_input(xs, "x", model=model).detach().cpu().numpy()
    n = a.shape[0]
    y = as_labels(labels, n)
    ids = as_case_ids(case_ids, n)
    masks = as_masks(masks, a.shape, binary=True) if masks else {}
    batch_size = check_int(batch_size, "batch_size")
    alpha = check_alpha(alpha)
    parsed = []
    for i, sp in enumerate(specs):
        try:
            parsed.append(parse_spec(sp, fill, valid_rois=masks.keys()))
        except AuditInputError as e:
            raise type(e)("specs", repr(sp), "a valid spec", message=f"specs[{i}]: {e}") from None
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
    removes = {nm: nm == "none" or by_name[nm].top_percent is not None
               or bool(ablation_mask(a[:, :1], masks, by_name[nm]).any()) for nm in names}
    rows, per_case, rocs = [], [], []
    for nm in names:
        row, roc = _condition_row(nm, probs[nm], probs["none"], y, alpha, removes[nm])
        rows.append(row)
        per_case.append(pd.DataFrame({"condition": nm, "case_id": ids, "label": y, "prob": probs[nm]}))
        rocs.append(roc)
    per_condition = pd.DataFrame(rows)
    undefined = per_condition.drop(columns=["condition", "reason"]).isna().any(axis=1)
    warn_undefined("ablation_study", per_condition.loc[undefined, "reason"])
    return AblationStudy(pd.concat(per_case, ignore_index=True), per_condition,
                         pd.concat(rocs, ignore_index=True), alpha, target)


def _condition_row(nm: str, p: np.ndarray, base: np.ndarray, y: np.ndarray, alpha: float,
                   removes: bool) -> tuple[dict[str, Any], pd.DataFrame]:
    """One row of ``per_condition`` (NaN where undefined, with the reasons) and its ROC points."""
    from sklearn.metrics import roc_curve

    nan = float("nan")
    row: dict[str, Any] = {"condition": nm, "n": int(y.size), "auc": nan, "se": nan, "ci_low": nan, "ci_high": nan,
                           "delta_auc": nan, "delta_ci_low": nan, "delta_ci_high": nan, "z": nan, "p": nan}
    reasons = []
    counts = [int((y == k).sum()) for k in (0, 1)]
    finite = bool(np.isfinite(p).all() and np.isfinite(base).all())
    roc = pd.DataFrame({"condition": pd.Series(dtype=object), "fpr": pd.Series(dtype=float),
                        "tpr": pd.Series(dtype=float), "threshold": pd.Series(dtype=float)})
    if not finite:
        reasons.append(f"the model output is not finite for {int((~np.isfinite(p)).sum())} case(s)")
    elif min(counts) == 0:
        reasons.append(f"labels hold one class only ({counts[0]} × 0, {counts[1]} × 1): no AUC or DeLong test")
    else:
        row["auc"] = auc(y, p)
        row["delta_auc"] = row["auc"] - auc(y, base)
        fpr, tpr, thr = roc_curve(y, p)
        roc = pd.DataFrame({"condition": nm, "fpr": fpr, "tpr": tpr, "threshold": thr})
        if min(counts) < 2:
            reasons.append(f"DeLong variances need >= 2 cases of each class ({counts[0]} × 0, {counts[1]} × 1)")
        else:
            one = delong(y, p, alpha=alpha)
            row.update(se=one.se, ci_low=one.ci_low, ci_high=one.ci_high)
            if nm == "none":
                row.update(delta_auc=0.0, delta_ci_low=0.0, delta_ci_high=0.0, z=0.0, p=1.0)
            elif not removes:
                reasons.append("the condition removes no voxel in any case (an empty ROI): no test against 'none'")
            else:
                two = delong(y, p, base, alpha=alpha)
                row.update(delta_auc=two.diff, delta_ci_low=two.ci_low, delta_ci_high=two.ci_high, z=two.z, p=two.p)
        if nm == "none":
            row["delta_auc"] = 0.0
    for k in (0, 1):
        sel = y == k
        if not sel.any():
            reasons.append(f"no case of true class {k}: no class-{k} probability shift")
            row.update({f"mean_prob_{k}": nan, f"shift_{k}": nan, f"shift_p_{k}": nan})
            continue
        row[f"mean_prob_{k}"] = float(p[sel].mean())
        row[f"shift_{k}"] = float((p[sel] - base[sel]).mean())
        row[f"shift_p_{k}"] = _shift_p(base[sel], p[sel]) if finite else nan
    row["reason"] = "; ".join(reasons)
    return row, roc
