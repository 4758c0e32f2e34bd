"""Input-attribution maps from the Captum gradient and perturbation family, one call shape.

``attribute(model, x, target, method, **kw)`` returns a detached float tensor shaped like ``x``,
``(N, C, *spatial)``: one map per input contrast, for 2D (4-D ``x``) and 3D (5-D ``x``) alike.
The methods are those Jin et al. evaluate for multi-modal medical images ("Guidelines and
evaluation of clinical explainable AI in medical image analysis", Medical Image Analysis 84,
2023); ``METHODS`` lists them with their defaults (``list(METHODS)``, ``METHODS[name].defaults``).

Defaults, where they differ from Captum's, follow the method's paper (see NOTES.md):

============================  =================================  ==============================
method (Captum class)         default here                       Captum default / paper
============================  =================================  ==============================
gradient (Saliency)           ``abs=False`` (signed gradient)    Captum ``abs=True``;
                                                                 Simonyan et al. 2014 take |g|
                                                                 only for display
smoothgrad (NoiseTunnel over  ``noise=0.15`` of each sample's    Captum ``stdevs=1.0`` absolute;
Saliency, signed)             intensity range, ``n_samples=50``  Smilkov et al. 2017: 10-20 %
                                                                 of the range, n = 50
integrated_gradients          ``n_steps=50``, zero baseline,     same (Sundararajan et al. 2017
                              ``internal_batch_size=max(N,32)``  use 20-300 steps)
gradient_shap                 zero baseline distribution,        same; Lundberg & Lee 2017 /
                              ``n_samples=50``, ``stdevs=0``     Erion et al. use training data
deeplift                      zero baseline, rescale rule        same (Shrikumar et al. 2017)
occlusion                     window = 1/8 of every spatial      Captum: window required,
                              axis, one channel, stride=window   stride 1; Zeiler & Fergus 2014
feature_ablation,             features = per-channel grid of     Captum: every scalar is a
shapley_value_sampling,       4 patches per axis (2D) / 3 (3D)   feature (one forward per voxel)
kernel_shap, lime,
feature_permutation
shapley_value_sampling        ``n_samples=25`` permutations      same (Strumbelj & Kononenko)
kernel_shap                   ``n_samples=500``                  Captum 25; shap "auto" = 2M+2048
lime                          ``n_samples=1000``, Ridge(alpha=1),Captum 50, Lasso(0.01), kernel
                              cosine kernel width 0.25           width 1.0; lime_image 1000,
                                                                 Ridge(1), width 0.25
============================  =================================  ==============================

Perturbation baselines are 0 (Captum's default): with z-scored MRI this is the mean
intensity, with [0, 1] images it is black. Pass ``baselines=`` to change it.

The model is left exactly as found. Plain-autograd methods run on the caller's model (the
gradient is taken w.r.t. the input only, so no ``.grad`` appears on parameters). Captum's
DeepLift, GuidedBackprop, Deconvolution and GuidedGradCam put hooks on activation modules;
in-place activations (timm's ``ReLU(inplace=True)``) make the hooked input and output the
same tensor, and a module called twice in one forward (MONAI's ``ResNetBlock.act``) makes
DeepLift keep only the last call's input. These methods therefore run on a
``copy.deepcopy(model)`` whose ``inplace`` flags are off and whose reused activation modules
are split into one copy per call. A model in training mode is audited as an ``eval()`` copy
(with a warning): BatchNorm in training mode would update its running statistics and make
every perturbed batch explain a different function.
"""

from __future__ import annotations

import copy
import difflib
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["attribute", "METHODS", "MethodInfo", "grid_feature_mask", "slic_feature_mask"]

Target = int | Sequence[int] | Tensor


@dataclass(frozen=True)
class MethodInfo:
    """One attribution method: its Captum class, kind, defaults and reference."""

    name: str
    captum: str
    kind: str  # "gradient", "hooked-gradient" (needs the de-in-placed copy) or "perturbation"
    defaults: dict = field(default_factory=dict)
    reference: str = ""


METHODS: dict[str, MethodInfo] = {m.name: m for m in [
    MethodInfo("gradient", "Saliency", "gradient", {"abs": False},
               "Simonyan et al. 2014; signed gradient (Captum abs=True)"),
    MethodInfo("input_x_gradient", "InputXGradient", "gradient", {},
               "Shrikumar et al. 2016: x * df/dx"),
    MethodInfo("integrated_gradients", "IntegratedGradients", "gradient",
               {"n_steps": 50, "baselines": 0.0, "method": "gausslegendre",
                "internal_batch_size": "max(N, 32)"}, "Sundararajan et al. 2017"),
    MethodInfo("gradient_shap", "GradientShap", "gradient",
               {"n_samples": 50, "stdevs": 0.0, "baselines": "zeros (1, C, *spatial)"},
               "Lundberg & Lee 2017 (expected gradients)"),
    MethodInfo("smoothgrad", "NoiseTunnel(Saliency)", "gradient",
               {"noise": 0.15, "n_samples": 50, "abs": False, "nt_samples_batch_size": 25},
               "Smilkov et al. 2017; noise std = noise * (max - min) of each sample"),
    MethodInfo("deeplift", "DeepLift", "hooked-gradient", {"baselines": 0.0},
               "Shrikumar et al. 2017 (rescale rule)"),
    MethodInfo("guided_backprop", "GuidedBackprop", "hooked-gradient", {},
               "Springenberg et al. 2015; nn.ReLU modules only"),
    MethodInfo("deconvolution", "Deconvolution", "hooked-gradient", {},
               "Zeiler & Fergus 2014; nn.ReLU modules only"),
    MethodInfo("guided_gradcam", "GuidedGradCam", "hooked-gradient",
               {"layer": "HookRegistry(model).blocks[-1], else the last conv"},
               "Selvaraju et al. 2017"),
    MethodInfo("occlusion", "Occlusion", "perturbation",
               {"window": 0.125, "stride": "= window", "baselines": 0.0,
                "perturbations_per_eval": 16}, "Zeiler & Fergus 2014"),
    MethodInfo("feature_ablation", "FeatureAblation", "perturbation",
               {"feature_mask": "grid", "grid": "4 (2D) / 3 (3D)", "per_channel": True,
                "baselines": 0.0, "perturbations_per_eval": 16}, "Captum FeatureAblation"),
    MethodInfo("shapley_value_sampling", "ShapleyValueSampling", "perturbation",
               {"feature_mask": "grid", "n_samples": 25, "baselines": 0.0,
                "perturbations_per_eval": 16}, "Strumbelj & Kononenko 2010"),
    MethodInfo("kernel_shap", "KernelShap", "perturbation",
               {"feature_mask": "grid", "n_samples": 500, "baselines": 0.0,
                "perturbations_per_eval": 16}, "Lundberg & Lee 2017"),
    MethodInfo("feature_permutation", "FeaturePermutation", "perturbation",
               {"feature_mask": "grid", "perturbations_per_eval": 16},
               "Breiman 2001 / Fisher et al. 2019; permutes across the batch (N > 1)"),
    MethodInfo("lime", "Lime", "perturbation",
               {"feature_mask": "grid", "n_samples": 1000, "kernel_width": 0.25,
                "alpha": 1.0, "baselines": 0.0, "perturbations_per_eval": 16},
               "Ribeiro et al. 2016 (lime_image defaults)"),
]}


# ---------------------------------------------------------------- feature masks -------------
def grid_feature_mask(shape: Sequence[int], grid: int | Sequence[int] | None = None,
                      per_channel: bool = True) -> Tensor:
    """Regular grid of patches as a Captum feature mask shaped ``(1, C or 1, *spatial)``.

    ``shape`` is the input's ``(N, C, *spatial)``; ``grid`` the number of patches per spatial
    axis (default 4 in 2D, 3 in 3D). With ``per_channel`` every (channel, patch) pair is its
    own feature (label = channel * n_patches + patch), so maps stay per contrast.
    """
    spatial = tuple(shape[2:])
    if grid is None:
        grid = 4 if len(spatial) <= 2 else 3
    g = (grid,) * len(spatial) if isinstance(grid, int) else tuple(grid)
    if len(g) != len(spatial) or min(g) < 1:
        raise ValueError(f"grid={grid!r} must be a positive int or one int per spatial axis "
                         f"of input shape {tuple(shape)}")
    idx = [torch.clamp(torch.arange(s) * gi // s, max=gi - 1) for s, gi in zip(spatial, g)]
    patch = torch.zeros(spatial, dtype=torch.long)
    for ax, (i, gi) in enumerate(zip(idx, g)):
        view = [1] * len(spatial)
        view[ax] = -1
        patch = patch * gi + i.view(view)
    n_patch = int(np.prod(g))
    if not per_channel:
        return patch[None, None].contiguous()
    c = shape[1]
    return (torch.arange(c).view(1, c, *[1] * len(spatial)) * n_patch + patch[None, None]).contiguous()


def slic_feature_mask(x: Tensor, n_segments: int = 50, compactness: float = 0.1,
                      per_channel: bool = True, **slic_kw) -> Tensor:
    """SLIC super-pixels/voxels per sample (skimage, ``channel_axis``) as a ``(N, C, *sp)`` mask.

    Each channel is rescaled to [0, 1] per sample first (so ``compactness`` means the same for
    every contrast); labels are made consecutive from 0 per sample, and with ``per_channel``
    each (channel, segment) pair is a feature (Achanta et al. 2012, skimage.segmentation.slic).
    """
    from skimage.segmentation import slic

    masks = []
    c = x.shape[1]
    for xi in x.detach().cpu().double():
        lo = xi.flatten(1).min(1).values.view(c, *[1] * (xi.dim() - 1))
        hi = xi.flatten(1).max(1).values.view(c, *[1] * (xi.dim() - 1))
        img = ((xi - lo) / (hi - lo).clamp_min(1e-12)).movedim(0, -1).numpy()
        seg = slic(img, n_segments=n_segments, compactness=compactness, channel_axis=-1,
                   start_label=0, **slic_kw)
        seg = np.unique(seg, return_inverse=True)[1].reshape(seg.shape)
        seg = torch.as_tensor(seg, dtype=torch.long)
        k = int(seg.max()) + 1
        masks.append(torch.stack([seg + ch * k for ch in range(c)]) if per_channel else seg[None])
    return torch.stack(masks).contiguous()


# ---------------------------------------------------------------- model preparation ---------
class _PerCall(nn.Module):
    """Routes the k-th call within one forward to its own copy of a reused module.

    Captum's DeepLift stores one input/output per module, so a module called twice (MONAI's
    ``ResNetBlock.act``) would get the wrong reference for its first call.
    """

    def __init__(self, module: nn.Module, n: int):
        super().__init__()
        self.copies = nn.ModuleList(copy.deepcopy(module) for _ in range(n))
        self.calls = 0

    def forward(self, *args, **kwargs):
        m = self.copies[self.calls % len(self.copies)]
        self.calls += 1
        return m(*args, **kwargs)


def _activation_types() -> tuple[type, ...]:
    from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR
    return tuple(SUPPORTED_NON_LINEAR) + (nn.SiLU, nn.GELU, nn.Mish, nn.Hardswish, nn.ReLU6)


def _split_reused(model: nn.Module, x: Tensor) -> None:
    """Count calls per activation module in one forward; wrap the reused ones in ``_PerCall``."""
    acts = [m for m in model.modules() if isinstance(m, _activation_types())]
    counts: dict[int, int] = {}
    handles = [m.register_forward_pre_hook(
        lambda mod, a: counts.__setitem__(id(mod), counts.get(id(mod), 0) + 1)) for m in acts]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    wrappers: dict[int, _PerCall] = {}
    for m in acts:
        if counts.get(id(m), 0) > 1:
            wrappers[id(m)] = _PerCall(m, counts[id(m)])
    if not wrappers:
        return
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if child is not None and id(child) in wrappers:
                parent._modules[name] = wrappers[id(child)]

    def reset(mod, args):
        for w in wrappers.values():
            w.calls = 0
    model.register_forward_pre_hook(reset)


def _working_copy(model: nn.Module, x: Tensor, split_reused: bool) -> nn.Module:
    """A private eval-mode copy with every ``inplace`` flag off (see module docstring)."""
    work = copy.deepcopy(model).eval()
    for m in work.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False
    if split_reused:
        _split_reused(work, x)
    return work


def _warn_unhooked(model: nn.Module, method: str, hooked: tuple[type, ...]) -> None:
    """Warn when activations the method's rule ignores are present (they pass plain gradients)."""
    others: dict[str, int] = {}
    for m in model.modules():
        if isinstance(m, _activation_types()) and not isinstance(m, hooked) and not isinstance(
                m, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.Softmax)):
            others[type(m).__name__] = others.get(type(m).__name__, 0) + 1
    if others:
        names = ", ".join(f"{k} x{v}" for k, v in sorted(others.items()))
        rule = {"deeplift": "the DeepLift rescale rule (completeness no longer holds)",
                "guided_backprop": "guided backpropagation", "deconvolution": "the deconvnet rule",
                "guided_gradcam": "guided backpropagation"}[method]
        warnings.warn(f"{method}: Captum applies {rule} only at {', '.join(t.__name__ for t in hooked)} "
                      f"modules; this model's {names} pass plain gradients, so the map degrades "
                      "toward a plain gradient map", UserWarning, stacklevel=3)


def _default_layer(work: nn.Module) -> nn.Module:
    from probes.hooks.registry import HookRegistry

    modules = dict(work.named_modules())
    try:
        blocks = HookRegistry(work).blocks
    except Exception:  # models the registry cannot parse still have convolutions
        blocks = []
    if blocks and blocks[-1] in modules:
        return modules[blocks[-1]]
    convs = [m for m in work.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    if not convs:
        raise ValueError("guided_gradcam: no residual block or convolution found; pass layer=")
    return convs[-1]


def _layer_in(work: nn.Module, model: nn.Module, layer: str | nn.Module) -> nn.Module:
    """The copy's module matching ``layer`` (a module name, or a module of the caller's model)."""
    if isinstance(layer, nn.Module):
        names = [n for n, m in model.named_modules() if m is layer]
        if not names:
            raise ValueError("layer= is not a submodule of the model")
        layer = names[0]
    modules = dict(work.named_modules())
    if layer not in modules:
        close = difflib.get_close_matches(layer, list(modules), n=5)
        raise ValueError(f"layer={layer!r} is not a module of the model; close: {close}")
    return modules[layer]


# ---------------------------------------------------------------- argument checks -----------
def _resolve_method(method: str) -> MethodInfo:
    key = str(method).lower().replace("-", "_").replace(" ", "_")
    if key not in METHODS:
        close = difflib.get_close_matches(key, list(METHODS), n=3, cutoff=0.5)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(f"unknown method={method!r}.{hint} Valid methods: {sorted(METHODS)}")
    return METHODS[key]


def _check_target(target: Target, n: int) -> Tensor:
    t = torch.as_tensor(target if isinstance(target, Tensor) else target).long().flatten()
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"target has {t.numel()} entries but x has batch size N={n}; pass an int "
                         "or one class index per sample")
    return t.clone()


def _mask(x: Tensor, feature_mask, grid, per_channel: bool, slic_kw: dict | None) -> Tensor:
    if feature_mask is None or (isinstance(feature_mask, str) and feature_mask == "grid"):
        return grid_feature_mask(x.shape, grid, per_channel).to(x.device)
    if isinstance(feature_mask, str) and feature_mask == "slic":
        return slic_feature_mask(x, per_channel=per_channel, **(slic_kw or {})).to(x.device)
    if not isinstance(feature_mask, Tensor):
        raise ValueError(f"feature_mask must be 'grid', 'slic' or an integer tensor, got {feature_mask!r}")
    m = feature_mask.long()
    ok = m.dim() == x.dim() and m.shape[0] in (1, x.shape[0]) and m.shape[1] in (1, x.shape[1]) \
        and all(a in (1, b) for a, b in zip(m.shape[2:], x.shape[2:]))
    if not ok:
        raise ValueError(f"feature_mask shape {tuple(m.shape)} does not broadcast to x shape "
                         f"{tuple(x.shape)} as (1|N, 1|C, *spatial)")
    return m.contiguous().to(x.device)


def _baseline(b, x: Tensor):
    return b.to(x) if isinstance(b, Tensor) else float(b)


# ---------------------------------------------------------------- the entry point -----------
def attribute(model: nn.Module, x: Tensor, target: Target, method: str, **kw) -> Tensor:
    """Attribution map of ``model``'s ``target`` logit w.r.t. ``x`` by ``method`` (Captum).

    Args:
        model: a classifier returning logits ``(N, K)``; left exactly as found.
        x: input ``(N, C, *spatial)`` with 1-3 spatial axes.
        target: class index, or one index per sample.
        method: one of ``METHODS`` (case-insensitive; ``-``/space read as ``_``).
        **kw: method options, see ``METHODS[method].defaults`` and the module docstring:
            ``baselines``, ``n_steps``, ``internal_batch_size``, ``n_samples``, ``stdevs``
            (gradient_shap), ``noise`` (smoothgrad, fraction of each sample's range),
            ``abs``, ``layer`` (guided_gradcam: module name or module), ``window``/``stride``
            (occlusion: fractions of each spatial axis, or voxel tuples), ``feature_mask``
            (``"grid"``, ``"slic"`` or an integer tensor), ``grid``, ``per_channel``,
            ``slic_kw``, ``perturbations_per_eval``, ``kernel_width``, ``alpha`` (lime),
            ``seed`` (sampling methods; default 0 so maps are reproducible).

    Returns:
        detached float tensor ``(N, C, *spatial)``: one map per input channel.
    """
    import captum.attr as ca

    info = _resolve_method(method)
    if not isinstance(x, Tensor) or not 3 <= x.dim() <= 5:
        raise ValueError(f"x must be a tensor (N, C, *spatial) with 1-3 spatial axes, got "
                         f"{type(x).__name__} of shape {tuple(getattr(x, 'shape', ()))}")
    if not x.is_floating_point():
        raise ValueError(f"x must be floating point, got dtype {x.dtype}")
    n = x.shape[0]
    tgt = _check_target(target, n).to(x.device)
    name = info.name
    x = x.detach()
    seed = kw.pop("seed", 0)
    ppe = int(kw.pop("perturbations_per_eval", 16))

    training = any(m.training for m in model.modules())
    if training:
        warnings.warn("attribute: model is in training mode; explaining an eval() copy instead "
                      "(training-mode BatchNorm would update running statistics and make each "
                      "perturbed batch a different function)", UserWarning, stacklevel=2)
    if info.kind == "hooked-gradient":
        net = _working_copy(model, x, split_reused=(name == "deeplift"))
    elif training:
        net = copy.deepcopy(model).eval()
    else:
        net = model

    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # Captum samples with the global RNG; restore it afterwards
    try:
        with warnings.catch_warnings():
            # Captum's notices about expected behaviour (we pass a detached x on purpose; Lime /
            # KernelShap fit one surrogate per sample, which is what a per-case map means).
            warnings.filterwarnings("ignore", message=".*did not already require gradients.*")
            warnings.filterwarnings("ignore", message=".*multiple inputs for Lime.*")
            out = _dispatch(ca, name, net, model, x, tgt, ppe, kw)
    finally:
        torch.random.set_rng_state(gen_state)
    return out.detach().float()


def _pop_unknown(name: str, kw: dict) -> None:
    if kw:
        raise TypeError(f"attribute(method={name!r}) got unexpected options {sorted(kw)}; "
                        f"its defaults are {METHODS[name].defaults}")


def _dispatch(ca, name: str, net: nn.Module, model: nn.Module, x: Tensor, tgt: Tensor,
              ppe: int, kw: dict) -> Tensor:
    n, c, spatial = x.shape[0], x.shape[1], x.shape[2:]
    target = tgt.tolist()
    if name == "gradient":
        ab = kw.pop("abs", False)
        _pop_unknown(name, kw)
        return ca.Saliency(net).attribute(x, target=target, abs=ab)
    if name == "input_x_gradient":
        _pop_unknown(name, kw)
        return ca.InputXGradient(net).attribute(x, target=target)
    if name == "integrated_gradients":
        opts = dict(n_steps=kw.pop("n_steps", 50), method=kw.pop("method", "gausslegendre"),
                    internal_batch_size=kw.pop("internal_batch_size", max(n, 32)),
                    baselines=_baseline(kw.pop("baselines", 0.0), x))
        _pop_unknown(name, kw)
        return ca.IntegratedGradients(net).attribute(x, target=target, **opts)
    if name == "gradient_shap":
        b = kw.pop("baselines", None)
        b = torch.zeros(1, *x.shape[1:], dtype=x.dtype, device=x.device) if b is None else b.to(x)
        opts = dict(n_samples=kw.pop("n_samples", 50), stdevs=kw.pop("stdevs", 0.0))
        _pop_unknown(name, kw)
        return ca.GradientShap(net).attribute(x, baselines=b, target=target, **opts)
    if name == "smoothgrad":
        noise = float(kw.pop("noise", 0.15))
        ns, nb = kw.pop("n_samples", 50), kw.pop("nt_samples_batch_size", 25)
        ab = kw.pop("abs", False)
        _pop_unknown(name, kw)
        # Captum's stdevs is one absolute number per input tensor, not per sample: convert
        # the per-sample fraction of the intensity range and call NoiseTunnel per sample.
        nt = ca.NoiseTunnel(ca.Saliency(net))
        maps = []
        for i in range(n):
            xi = x[i:i + 1]
            sd = noise * float(xi.max() - xi.min())
            maps.append(nt.attribute(xi, nt_type="smoothgrad", nt_samples=ns,
                                     nt_samples_batch_size=nb, stdevs=sd,
                                     target=target[i], abs=ab))
        return torch.cat(maps)
    if name == "deeplift":
        b = _baseline(kw.pop("baselines", 0.0), x)
        _pop_unknown(name, kw)
        from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR
        _warn_unhooked(net, name, tuple(SUPPORTED_NON_LINEAR))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(non-linear|reused|inplace|in-place).*")
            return ca.DeepLift(net).attribute(x, baselines=b, target=target)
    if name in ("guided_backprop", "deconvolution"):
        _pop_unknown(name, kw)
        _warn_unhooked(net, name, (nn.ReLU,))
        cls = ca.GuidedBackprop if name == "guided_backprop" else ca.Deconvolution
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*backward hooks.*")
            return cls(net).attribute(x, target=target)
    if name == "guided_gradcam":
        layer = kw.pop("layer", None)
        mode = kw.pop("interpolate_mode", "nearest")
        _pop_unknown(name, kw)
        _warn_unhooked(net, name, (nn.ReLU,))
        lay = _default_layer(net) if layer is None else _layer_in(net, model, layer)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*backward hooks.*")
            return ca.GuidedGradCam(net, lay).attribute(x, target=target, interpolate_mode=mode)
    if name == "occlusion":
        win = _window(kw.pop("window", 0.125), spatial, "window")
        stride = win if kw.get("stride") is None else _window(kw["stride"], spatial, "stride")
        kw.pop("stride", None)
        b = _baseline(kw.pop("baselines", 0.0), x)
        _pop_unknown(name, kw)
        return ca.Occlusion(net).attribute(x, sliding_window_shapes=(1, *win), strides=(1, *stride),
                                           baselines=b, target=target, perturbations_per_eval=ppe)
    # feature-mask methods
    fm = _mask(x, kw.pop("feature_mask", "grid"), kw.pop("grid", None),
               kw.pop("per_channel", True), kw.pop("slic_kw", None))
    if name == "feature_permutation":
        _pop_unknown(name, kw)
        if n < 2:
            raise ValueError(f"feature_permutation permutes features across the batch and needs "
                             f"N > 1 samples; x has shape {tuple(x.shape)}")
        if fm.shape[0] != 1:
            raise ValueError("feature_permutation needs one feature mask shared by the batch "
                             "(grid or a (1, C|1, *spatial) tensor), not per-sample SLIC masks")
        return ca.FeaturePermutation(net).attribute(x, target=target, feature_mask=fm,
                                                    perturbations_per_eval=ppe)
    b = _baseline(kw.pop("baselines", 0.0), x)
    if name == "feature_ablation":
        _pop_unknown(name, kw)
        return ca.FeatureAblation(net).attribute(x, target=target, baselines=b, feature_mask=fm,
                                                 perturbations_per_eval=ppe)
    if name == "shapley_value_sampling":
        ns = kw.pop("n_samples", 25)
        _pop_unknown(name, kw)
        return ca.ShapleyValueSampling(net).attribute(x, target=target, baselines=b, feature_mask=fm,
                                                      n_samples=ns, perturbations_per_eval=ppe)
    if name == "kernel_shap":
        ns = kw.pop("n_samples", 500)
        _pop_unknown(name, kw)
        return ca.KernelShap(net).attribute(x, target=target, baselines=b, feature_mask=fm,
                                            n_samples=ns, perturbations_per_eval=ppe)
    if name == "lime":
        from captum._utils.models.linear_model import SkLearnRidge
        from captum.attr._core.lime import get_exp_kernel_similarity_function

        ns = kw.pop("n_samples", 1000)
        width, alpha = kw.pop("kernel_width", 0.25), kw.pop("alpha", 1.0)
        _pop_unknown(name, kw)
        lime = ca.Lime(net, interpretable_model=SkLearnRidge(alpha=alpha),
                       similarity_func=get_exp_kernel_similarity_function("cosine", width))
        return lime.attribute(x, target=target, baselines=b, feature_mask=fm, n_samples=ns,
                              perturbations_per_eval=ppe)
    raise AssertionError(name)  # every METHODS entry is dispatched above


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
