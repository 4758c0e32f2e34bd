"""One entry point for every attribution method: ``attribute(model, x, target, method, **options)``.

``METHODS`` is the table that drives it. Each :class:`MethodInfo` carries the Captum class it
calls (``captum.attr``; ``None`` for the package's own Grad-CAM, LIME and LRP), its defaults
(``METHODS[name].defaults``, stated only there), an option builder (user options with the
defaults filled in → the Captum ``attribute()`` keyword arguments) and, where a method needs
more than one Captum call, its runner. ``attribute`` returns an :class:`Attribution`: maps
``(N, C_map, *spatial)`` (``.maps``), one per input contrast for the Captum methods and LRP,
one per case for Grad-CAM and LIME (or one per contrast with ``per_contrast=True``); 2D
(4-D ``x``) and 3D (5-D ``x``) alike. The methods are those Jin et al. evaluate for multi-modal
medical images ("Guidelines and evaluation of clinical explainable AI in medical image
analysis", Medical Image Analysis 84, 2023), plus Grad-CAM, LIME and LRP.

Defaults, where they differ from Captum 0.7-0.9, follow the method's paper:

* ``gradient`` (Saliency): signed gradient (``abs=False``); Captum's default is ``abs=True``,
  Simonyan et al. 2014 take |g| only for display.
* ``smoothgrad`` (NoiseTunnel over Saliency, signed): noise std = ``noise`` (0.15) × each
  case's intensity range, 50 samples, as Smilkov et al. 2017 (10-20 % of the range, n = 50);
  Captum's ``stdevs`` is one absolute number for the whole batch, so each case is a call.
* ``integrated_gradients``: 50 Gauss-Legendre steps from a zero baseline (Sundararajan et
  al. 2017 use 20-300 steps).
* ``gradient_shap``: a zero baseline distribution, 50 samples, no input noise (Lundberg & Lee
  2017 / Erion et al. draw baselines from training data: pass them as ``baselines``).
* ``occlusion``: a window of 1/8 of every spatial axis, one contrast at a time, stride = window
  (Zeiler & Fergus 2014); Captum requires a window and strides by 1.
* ``feature_ablation``, ``shapley_value_sampling``, ``kernel_shap``, ``feature_permutation``:
  features are a per-contrast grid of 4 patches per axis (2D) / 3 (3D), or SLIC supervoxels
  (``feature_mask="slic"``); Captum's default makes every scalar a feature (one forward per
  voxel). ``kernel_shap``: 500 samples (Captum 25; shap's "auto" is 2M + 2048).
* ``lime``: :func:`probes.attribution.lime.lime_map`, lime_image's algorithm and defaults
  (1000 samples, Ridge(α = 1), cosine kernel width 0.25) on SLIC supervoxels; Captum's
  ``Lime`` is not used (its defaults and sampling differ from lime_image's).
* ``gradcam``: :func:`probes.attribution.gradcam.layer_gradcam` at one ``point`` (default the
  last residual block's output, else the last convolution); ``guided_gradcam`` uses the same
  default point.

Perturbation baselines are 0 (Captum's default): with z-scored MRI this is the mean
intensity, with [0, 1] images it is black. ``batch_size`` is the batching knob of every
method (Captum's ``internal_batch_size``, ``nt_samples_batch_size`` or
``perturbations_per_eval``: perturbations of every case per forward).

The model is left exactly as found. It runs in eval mode (with a warning when it was in
training mode: BatchNorm in training mode would update its running statistics and make every
perturbed batch explain a different function), restored after. The model's declared interface
is honoured (``probes.core.as_audit_model``): ``x`` is channels first whatever the model's
layout, and a probability output is explained at log p (at the softmax input with
``ModelInterface(score="logit")``). DeepLift, GuidedBackprop, Deconvolution and GuidedGradCam
run on a private copy (``probes.attribution.working_copy``).
"""

from __future__ import annotations

import difflib
import inspect
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from probes.attribution.features import grid_feature_mask, slic_feature_mask
from probes.attribution.gradcam import default_point, layer_gradcam
from probes.attribution.lime import lime_map
from probes.attribution.lrp import lrp
from probes.attribution.result import Attribution
from probes.attribution.scores import as_module, checked_targets
from probes.attribution.working_copy import warn_unhooked, working_copy
from probes.core.model import AuditAdapter, Output, as_audit_model, model_state
from probes.core.errors import OptionError
from probes.core.validate import Target, as_input, check_int
from probes.hooks.registry import HookRegistry, as_registry

__all__ = ["METHODS", "Call", "FromCall", "MethodInfo", "attribute", "row_options"]


@dataclass(frozen=True)
class Call:
    """One ``attribute`` call as a method sees it.

    ``model``: what the caller passed (module or ``HookRegistry``); ``module``: the caller's
    ``nn.Module``; ``net``: what runs (``module``, or an ``AuditAdapter`` applying its declared
    interface); ``x`` channels first, detached; ``target`` (N,) long.
    """

    method: str
    model: nn.Module | HookRegistry
    module: nn.Module
    net: nn.Module
    x: Tensor
    target: Tensor
    output: Output
    seed: int

    @property
    def targets(self) -> list[int]:
        """One class index per case, as Captum takes them."""
        return self.target.tolist()


@dataclass(frozen=True)
class FromCall:
    """A default computed from the call and the other options; shows as its ``description``."""

    description: str
    compute: Callable[[Call, dict], Any]

    def __repr__(self) -> str:
        return self.description


Builder = Callable[[Call, nn.Module, dict], dict]


def _no_options(call: Call, net: nn.Module, o: dict) -> dict:
    return {}


@dataclass(frozen=True)
class MethodInfo:
    """One attribution method: its Captum class, kind, defaults, option builder and reference.

    ``kind``: ``"gradient"``, ``"hooked-gradient"`` (runs on a private copy), ``"perturbation"``,
    ``"layer"`` or ``"relevance"``. ``build(call, net, options)`` → Captum ``attribute()``
    kwargs; ``init(call, net, options)`` → extra Captum constructor arguments; ``prepare(call)``
    → the network Captum wraps (default ``call.net``); ``run(info, call, options)`` replaces
    the generic Captum call where a method needs more (smoothgrad, gradcam, lime, lrp).
    ``batch``: what the ``batch_size`` option counts: ``"rows"`` (model inputs per forward),
    ``"per_case"`` (perturbations of every case per forward: N × batch_size rows) or ``""``
    (no such option: one forward over the N cases, or N × samples for gradient SHAP).
    """

    name: str
    captum: str | None
    kind: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    build: Builder = _no_options
    init: Callable[[Call, nn.Module, dict], tuple] | None = None
    prepare: Callable[[Call], nn.Module] | None = None
    run: Callable[[MethodInfo, Call, dict], Tensor | Attribution] | None = None
    reference: str = ""
    batch: str = ""


# ---------------------------------------------------------------- option builders -----------
def _baselines(o: dict, x: Tensor) -> Tensor | float:
    b = o["baselines"]
    return b.to(x) if isinstance(b, Tensor) else float(b)


def _window(w, spatial: Sequence[int], what: str) -> tuple[int, ...]:
    """Window/stride in voxels from a fraction of each axis (float) or voxel counts (ints)."""
    vals = (w,) * len(spatial) if isinstance(w, (int, float)) else tuple(w)
    if len(vals) != len(spatial):
        raise ValueError(f"{what}={w!r} needs one value per spatial axis of {tuple(spatial)}")
    out = []
    for v, s in zip(vals, spatial):
        px = max(1, round(v * s)) if isinstance(v, float) else int(v)
        if not 1 <= px <= s:
            raise ValueError(f"{what}={w!r} gives {px} voxels on an axis of size {s}")
        out.append(px)
    return tuple(out)


def _feature_mask(call: Call, o: dict) -> Tensor:
    x, fm = call.x, o["feature_mask"]
    if isinstance(fm, str) and fm == "grid":
        return grid_feature_mask(x.shape, o["grid"], o["per_contrast"]).to(x.device)
    if isinstance(fm, str) and fm == "slic":
        return slic_feature_mask(x, o["n_segments"], o["compactness"], o["per_contrast"]).to(x.device)
    if not isinstance(fm, Tensor):
        raise ValueError(f"feature_mask must be 'grid', 'slic' or an integer tensor, got {fm!r}")
    m = fm.long()
    ok = m.dim() == x.dim() and m.shape[0] in (1, x.shape[0]) and m.shape[1] in (1, x.shape[1]) \
        and all(a in (1, b) for a, b in zip(m.shape[2:], x.shape[2:]))
    if not ok:
        raise ValueError(f"feature_mask shape {tuple(m.shape)} does not broadcast to x shape "
                         f"{tuple(x.shape)} as (1|N, 1|C, *spatial)")
    return m.contiguous().to(x.device)


def _features(call: Call, net: nn.Module, o: dict) -> dict:
    """Feature-mask methods: mask, baselines, perturbations per forward (and n_samples if any)."""
    kw = dict(feature_mask=_feature_mask(call, o), baselines=_baselines(o, call.x),
              perturbations_per_eval=o["batch_size"])
    if "n_samples" in o:
        kw["n_samples"] = o["n_samples"]
    return kw


def _permutation(call: Call, net: nn.Module, o: dict) -> dict:
    x = call.x
    if x.shape[0] < 2:
        raise ValueError(f"feature_permutation permutes features across the batch and needs "
                         f"N > 1 cases; x has shape {tuple(x.shape)}")
    fm = _feature_mask(call, o)
    if fm.shape[0] != 1:
        raise ValueError("feature_permutation needs one feature mask shared by the batch "
                         "(grid or a (1, C|1, *spatial) tensor), not per-case SLIC masks")
    return dict(feature_mask=fm, perturbations_per_eval=o["batch_size"])


def _occlusion(call: Call, net: nn.Module, o: dict) -> dict:
    spatial = call.x.shape[2:]
    win, stride = _window(o["window"], spatial, "window"), _window(o["stride"], spatial, "stride")
    return dict(sliding_window_shapes=(1, *win), strides=(1, *stride), baselines=_baselines(o, call.x),
                perturbations_per_eval=o["batch_size"])


def _integrated(call: Call, net: nn.Module, o: dict) -> dict:
    return dict(n_steps=o["n_steps"], method=o["integration"], internal_batch_size=o["batch_size"],
                baselines=_baselines(o, call.x))


def _point_module(call: Call, net: nn.Module, point: str | nn.Module) -> nn.Module:
    """The module of ``net`` (a working copy) whose output is hook point ``point`` of the model."""
    inner = net.model if isinstance(net, AuditAdapter) else net
    if isinstance(point, nn.Module):
        names = [n for n, m in call.module.named_modules() if m is point]
        if not names:
            raise ValueError("point= is not a submodule of the model")
        name = names[0]
    else:
        spec = as_registry(call.model).point_info(point)
        if spec.phase != "fwd" or spec.kind not in ("module", "resid"):
            raise ValueError(f"guided_gradcam: point {point!r} is not a module output; use a module name or a "
                             "block's '.resid'")
        name = spec.module
    return dict(inner.named_modules())[name]


def _guided_layer(call: Call, net: nn.Module, o: dict) -> tuple:
    return (_point_module(call, net, o["point"]),)


def _hooked(rule: str, modules: Callable[[], tuple[type, ...]], split_reused: bool = False
            ) -> Callable[[Call], nn.Module]:
    """``prepare`` of a method whose Captum rule hooks ``modules``: a working copy, and a warning
    when other activations would pass plain gradients."""
    def prepare(call: Call) -> nn.Module:
        work = working_copy(call.net, call.x, split_reused)
        warn_unhooked(work, call.method, rule, modules())
        return work
    return prepare


def _deeplift_modules() -> tuple[type, ...]:
    from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR
    return tuple(SUPPORTED_NON_LINEAR)


# ---------------------------------------------------------------- runners -------------------
def _run_captum(info: MethodInfo, call: Call, o: dict) -> Tensor:
    """The generic path: ``captum.attr.<class>(net, *init).attribute(x, target=..., **build)``."""
    import captum.attr as ca

    net = call.net if info.prepare is None else info.prepare(call)
    init = () if info.init is None else info.init(call, net, o)
    explainer = getattr(ca, info.captum)(net, *init)
    return explainer.attribute(call.x, target=call.targets, **info.build(call, net, o))


def _run_smoothgrad(info: MethodInfo, call: Call, o: dict) -> Tensor:
    """NoiseTunnel(Saliency) per case: noise std = noise × (max − min) of that case."""
    import captum.attr as ca

    nt = ca.NoiseTunnel(ca.Saliency(call.net))
    maps = []
    for i, k in enumerate(call.targets):
        xi = call.x[i:i + 1]
        sd = float(o["noise"]) * float(xi.max() - xi.min())
        maps.append(nt.attribute(xi, nt_type="smoothgrad", nt_samples=o["n_samples"],
                                 nt_samples_batch_size=o["batch_size"], stdevs=sd, target=k, abs=o["abs"]))
    return torch.cat(maps)


def _run_gradcam(info: MethodInfo, call: Call, o: dict) -> Attribution:
    point = o["point"]
    return layer_gradcam(call.model, call.x, call.target, [point], normalize=o["normalize"],
                         output=call.output).attribution(point)


def _run_lime(info: MethodInfo, call: Call, o: dict) -> Attribution:
    return lime_map(call.net, call.x, call.target, seed=call.seed, **o)


def _run_lrp(info: MethodInfo, call: Call, o: dict) -> Attribution:
    return lrp(call.net, call.x, call.target, **o)


def _signature_defaults(fn: Callable, *, without: Sequence[str] = ()) -> dict:
    """Keyword defaults of ``fn`` (its options), minus the call's own arguments."""
    call_args = {"model", "x", "target", "points", "output", "case_ids", "contrasts", "seed", *without}
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty and k not in call_args}


_DEFAULT_POINT = FromCall("the last residual block's .resid, else the last convolution",
                          lambda call, o: default_point(as_registry(call.model)))
_FEATURES = {"feature_mask": "grid", "grid": None, "per_contrast": True, "n_segments": 50, "compactness": 0.1,
             "baselines": 0.0, "batch_size": 16}

METHODS: dict[str, MethodInfo] = {m.name: m for m in [
    MethodInfo("gradient", "Saliency", "gradient", {"abs": False}, lambda c, n, o: {"abs": o["abs"]},
               reference="Simonyan et al. 2014; signed gradient (Captum abs=True)"),
    MethodInfo("input_x_gradient", "InputXGradient", "gradient",
               reference="Shrikumar et al. 2016: x * df/dx"),
    MethodInfo("integrated_gradients", "IntegratedGradients", "gradient",
               {"n_steps": 50, "baselines": 0.0, "integration": "gausslegendre",
                "batch_size": FromCall("max(N, 32)", lambda c, o: max(c.x.shape[0], 32))}, _integrated,
               reference="Sundararajan et al. 2017", batch="rows"),
    MethodInfo("gradient_shap", "GradientShap", "gradient",
               {"n_samples": 50, "stdevs": 0.0,
                "baselines": FromCall("zeros (1, C, *spatial)", lambda c, o: torch.zeros_like(c.x[:1]))},
               lambda c, n, o: dict(baselines=o["baselines"].to(c.x), n_samples=o["n_samples"],
                                    stdevs=o["stdevs"]),
               reference="Lundberg & Lee 2017 (expected gradients)"),
    MethodInfo("smoothgrad", "NoiseTunnel", "gradient",
               {"noise": 0.15, "n_samples": 50, "abs": False, "batch_size": 25}, run=_run_smoothgrad,
               reference="Smilkov et al. 2017; noise std = noise * (max - min) of each case", batch="rows"),
    MethodInfo("deeplift", "DeepLift", "hooked-gradient", {"baselines": 0.0},
               lambda c, n, o: {"baselines": _baselines(o, c.x)},
               prepare=_hooked("the DeepLift rescale rule (completeness no longer holds)", _deeplift_modules,
                               split_reused=True),
               reference="Shrikumar et al. 2017 (rescale rule)"),
    MethodInfo("guided_backprop", "GuidedBackprop", "hooked-gradient",
               prepare=_hooked("guided backpropagation", lambda: (nn.ReLU,)),
               reference="Springenberg et al. 2015; nn.ReLU modules only"),
    MethodInfo("deconvolution", "Deconvolution", "hooked-gradient",
               prepare=_hooked("the deconvnet rule", lambda: (nn.ReLU,)),
               reference="Zeiler & Fergus 2014; nn.ReLU modules only"),
    MethodInfo("guided_gradcam", "GuidedGradCam", "hooked-gradient",
               {"point": _DEFAULT_POINT, "interpolate_mode": "nearest"},
               lambda c, n, o: {"interpolate_mode": o["interpolate_mode"]}, init=_guided_layer,
               prepare=_hooked("guided backpropagation", lambda: (nn.ReLU,)),
               reference="Selvaraju et al. 2017"),
    MethodInfo("occlusion", "Occlusion", "perturbation",
               {"window": 0.125, "stride": FromCall("= window", lambda c, o: o["window"]), "baselines": 0.0,
                "batch_size": 16}, _occlusion, reference="Zeiler & Fergus 2014", batch="per_case"),
    MethodInfo("feature_ablation", "FeatureAblation", "perturbation", _FEATURES, _features,
               reference="Captum FeatureAblation", batch="per_case"),
    MethodInfo("shapley_value_sampling", "ShapleyValueSampling", "perturbation", {**_FEATURES, "n_samples": 25},
               _features, reference="Strumbelj & Kononenko 2010", batch="per_case"),
    MethodInfo("kernel_shap", "KernelShap", "perturbation", {**_FEATURES, "n_samples": 500}, _features,
               reference="Lundberg & Lee 2017", batch="per_case"),
    MethodInfo("feature_permutation", "FeaturePermutation", "perturbation",
               {k: v for k, v in _FEATURES.items() if k != "baselines"}, _permutation,
               reference="Breiman 2001 / Fisher et al. 2019; permutes across the batch (N > 1)", batch="per_case"),
    MethodInfo("lime", None, "perturbation", _signature_defaults(lime_map), run=_run_lime,
               reference="Ribeiro et al. 2016; lime_image's algorithm and defaults (probes.attribution.lime)",
               batch="rows"),
    MethodInfo("gradcam", None, "layer", {"point": _DEFAULT_POINT, **_signature_defaults(layer_gradcam)},
               run=_run_gradcam, reference="Selvaraju et al. 2017 (probes.attribution.gradcam)"),
    MethodInfo("lrp", None, "relevance", _signature_defaults(lrp), run=_run_lrp,
               reference="Bach et al. 2015; zennit with conservation checks (probes.attribution.lrp)"),
]}


def row_options(method: str, rows: int, n_cases: int) -> dict[str, int]:
    """The options of ``method`` that keep every forward at most ``rows`` model inputs for a
    call on ``n_cases`` cases: ``{"batch_size": rows}`` where the option counts rows,
    ``{"batch_size": max(1, rows // n_cases)}`` where it counts perturbations per case (at least
    one perturbation of every case: ``n_cases`` rows), ``{}`` where the method has no such option.
    """
    info = _resolve_method(method)
    rows, n_cases = check_int(rows, "rows"), check_int(n_cases, "n_cases")
    if info.batch == "rows":
        return {"batch_size": rows}
    if info.batch == "per_case":
        return {"batch_size": max(1, rows // n_cases)}
    return {}


# ---------------------------------------------------------------- the entry point -----------
def _resolve_method(method: str) -> MethodInfo:
    key = str(method).lower().replace("-", "_").replace(" ", "_")
    if key not in METHODS:
        close = difflib.get_close_matches(key, list(METHODS), n=3, cutoff=0.5)
        hint = f" Did you mean {close}?" if close else ""
        raise OptionError("method", repr(method), f"one of {sorted(METHODS)}",
                          message=f"unknown method={method!r}.{hint} Valid methods: {sorted(METHODS)}")
    return METHODS[key]


def _options(info: MethodInfo, call: Call, given: dict) -> dict:
    """The method's defaults overridden by ``given``; defaults computed from the call filled in."""
    unknown = sorted(set(given) - set(info.defaults))
    if unknown:
        raise TypeError(f"attribute(method={info.name!r}) got unexpected options {unknown}; "
                        f"its options and defaults are {dict(info.defaults)}")
    o = {**info.defaults, **given}
    for k, v in o.items():
        if isinstance(v, FromCall):
            o[k] = v.compute(call, o)
    return o


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Captum samples with torch's and numpy's global RNGs (GradientShap draws its path
    positions with ``np.random``): seed both for the call and restore their states after."""
    torch_state, numpy_state = torch.random.get_rng_state(), np.random.get_state()
    torch.manual_seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(torch_state)
        np.random.set_state(numpy_state)


def attribute(model: nn.Module | HookRegistry, x: Tensor, target: Target, method: str, *,
              output: Output = None, case_ids: Sequence[Any] | None = None,
              contrasts: Sequence[str] | None = None, seed: int = 0, **options: Any) -> Attribution:
    """Attribution maps of ``model``'s target score w.r.t. ``x`` by ``method``.

    Args:
        model: a classifier (``nn.Module``, or a ``HookRegistry`` on it); left exactly as found.
        x: input ``(N, C, *spatial)``, channels first, 1-3 spatial axes, floating point.
        target: class index, or one index per case.
        method: a name of ``METHODS`` (case-insensitive; ``-``/space read as ``_``).
        output: ``None`` (the model's declared interface) or an override (``"logits"``,
            ``"probabilities"``, ``"log_probabilities"``, a callable giving probabilities).
        case_ids, contrasts: ids of the cases, names of the input contrasts.
        seed: seed of every random draw (same seed, same map).
        **options: the method's options, ``METHODS[method].defaults`` (module docstring).

    Returns:
        :class:`Attribution` (``.maps``: ``(N, C_map, *spatial)``).
    """
    info = _resolve_method(method)
    module = model.model if isinstance(model, HookRegistry) else as_module(model)
    # float64 is cast to the model's dtype, channels checked against its first convolution, NaN refused
    x = as_input(x, "x", model=module).contiguous()  # one memory layout: the same numbers
    net = model.net if isinstance(model, HookRegistry) and output is None else as_audit_model(module, output)
    with model_state(module, warn="attribute"), _seeded(seed), warnings.catch_warnings():
        call = Call(info.name, model, module, net, x.detach(), checked_targets(net, x.detach(), target),
                    output, seed)
        # Captum's notices about expected behaviour: x is detached on purpose; KernelShap fits one
        # surrogate per case (what a per-case map means); the hooked methods warn about the
        # in-place and reused modules that the working copy has taken care of.
        warnings.filterwarnings("ignore", message=".*did not already require gradients.*")
        warnings.filterwarnings("ignore", message=".*multiple inputs for Lime.*")
        warnings.filterwarnings("ignore", message=".*(non-linear|reused|inplace|in-place|backward hooks).*")
        o = _options(info, call, options)
        out = (info.run or _run_captum)(info, call, o)
    own = isinstance(out, Attribution)  # Grad-CAM, LIME and LRP return results; Captum, tensors
    return Attribution.from_maps(out.maps if own else out.detach().float(), info.name, call.target,
                                 case_ids=case_ids, contrasts=contrasts, point=out.point if own else None,
                                 options={**o, "seed": seed})
