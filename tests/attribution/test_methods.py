"""probes.attribution.attribute: every method of METHODS on 2D/3D, closed-form checks, model left as found."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from probes.attribution.features import grid_feature_mask
from probes.attribution.methods import METHODS, attribute
from probes.core.model import ModelSnapshot
from probes.hooks.registry import HookRegistry
from tests.helpers import randomize_bn, timm_model

# Small budgets so the whole file stays fast on 2 shared cores; defaults are tested for names only.
FAST = {
    "integrated_gradients": dict(n_steps=8),
    "gradient_shap": dict(n_samples=8),
    "smoothgrad": dict(n_samples=8),
    "occlusion": dict(window=0.5),
    "feature_ablation": dict(grid=2),
    "shapley_value_sampling": dict(n_samples=2, grid=2),
    "kernel_shap": dict(n_samples=30, grid=2),
    "lime": dict(n_samples=30, n_segments=8, per_contrast=True),
    "feature_permutation": dict(grid=2),
}


@pytest.fixture(scope="module")
def r18():
    return timm_model("resnet18")


@pytest.fixture(scope="module")
def x32():
    return torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def monai3d():
    from monai.networks.nets import resnet10

    torch.manual_seed(0)
    return randomize_bn(resnet10(spatial_dims=3, n_input_channels=4, num_classes=2)).eval()


def _shape(method, x):
    """Grad-CAM gives one map per case, every other method one per contrast (LIME: per_contrast)."""
    return (x.shape[0], 1, *x.shape[2:]) if method == "gradcam" else x.shape


def _logit(model, x, k):
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xg)[:, k].sum(), xg)
    return g


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_2d_shape_finite_model_unchanged(r18, x32, method):
    before = r18(x32).detach()
    snap = ModelSnapshot.take(r18)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = attribute(r18, x32, [0, 1], method, **FAST.get(method, {})).maps
    assert a.shape == _shape(method, x32) and a.dtype == torch.float32
    assert torch.isfinite(a).all() and a.abs().sum() > 0
    assert snap.diff(r18) == []
    # timm's ReLU(inplace=True) model still computes exactly what it did
    assert torch.equal(r18(x32).detach(), before)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_3d(monai3d, method):
    x = torch.randn(1, 4, 16, 16, 16, generator=torch.Generator().manual_seed(4))
    snap = ModelSnapshot.take(monai3d)
    if method == "feature_permutation":  # permutes across the batch: N = 1 cannot work
        with pytest.raises(ValueError, match="N > 1"):
            attribute(monai3d, x, 1, method)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = attribute(monai3d, x, 1, method, **FAST.get(method, {})).maps
    assert a.shape == _shape(method, x) and torch.isfinite(a).all()
    assert snap.diff(monai3d) == []


def test_gradient_and_input_x_gradient_closed_form(r18, x32):
    g = _logit(r18, x32, 1)
    assert torch.allclose(attribute(r18, x32, 1, "gradient").maps, g, atol=1e-6)
    assert torch.allclose(attribute(r18, x32, 1, "Gradient", abs=True).maps, g.abs(), atol=1e-6)
    assert torch.allclose(attribute(r18, x32, 1, "input_x_gradient").maps, x32 * g, atol=1e-6)
    # per-sample targets select per-sample logits
    a = attribute(r18, x32, torch.tensor([0, 1]), "gradient").maps
    assert torch.allclose(a[0], _logit(r18, x32, 0)[0], atol=1e-6)
    assert torch.allclose(a[1], g[1], atol=1e-6)


def test_integrated_gradients_completeness(r18, x32):
    x32 = x32[:1]
    a = attribute(r18, x32, 1, "integrated_gradients", n_steps=200).maps
    with torch.no_grad():
        delta = r18(x32)[:, 1] - r18(torch.zeros_like(x32))[:, 1]
    s = a.flatten(1).sum(1)
    assert torch.allclose(s, delta, rtol=0.03, atol=0.03 * delta.abs().max().item())


def test_deeplift_completeness_with_reused_inplace_activation(monai3d):
    # MONAI's ResNetBlock calls one ReLU(inplace=True) twice: DeepLift needs our per-call split
    x = torch.randn(1, 4, 16, 16, 16, generator=torch.Generator().manual_seed(5))
    a = attribute(monai3d, x, 1, "deeplift").maps
    with torch.no_grad():
        delta = monai3d(x)[0, 1] - monai3d(torch.zeros_like(x))[0, 1]
    assert a.sum().item() == pytest.approx(delta.item(), rel=1e-3, abs=1e-6)


class _Linear(nn.Module):
    """f_k(x) = sum(W_k * x): occlusion of a window changes f by exactly sum_window(W_k * x)."""

    def __init__(self, shape):
        super().__init__()
        self.w = nn.Parameter(torch.randn(2, *shape, generator=torch.Generator().manual_seed(6)))

    def forward(self, x):
        return torch.einsum("n...,k...->nk", x, self.w)


def test_occlusion_equals_window_zeroing_on_linear_model():
    x = torch.randn(2, 3, 8, 12, generator=torch.Generator().manual_seed(7))
    model = _Linear(x.shape[1:]).eval()
    a = attribute(model, x, 1, "occlusion", window=(4, 4)).maps  # stride = window: no overlap
    w = model.w.detach()[1]
    expect = torch.zeros_like(x)
    for c in range(3):
        for i in range(0, 8, 4):
            for j in range(0, 12, 4):
                effect = (w[c, i:i + 4, j:j + 4] * x[:, c, i:i + 4, j:j + 4]).sum((1, 2))
                expect[:, c, i:i + 4, j:j + 4] = effect[:, None, None]
    assert torch.allclose(a, expect, atol=1e-5)


class _Additive(nn.Module):
    """f(x) = sum over voxels of (a * x^2 + b * x): a sum of independent per-feature terms."""

    def __init__(self, shape):
        super().__init__()
        g = torch.Generator().manual_seed(8)
        self.a = nn.Parameter(torch.rand(*shape, generator=g))
        self.b = nn.Parameter(torch.randn(*shape, generator=g))

    def forward(self, x):
        f = (self.a * x ** 2 + self.b * x).flatten(1).sum(1)
        return torch.stack([-f, f], 1)


def _exact_feature_values(model, x, mask):
    """Shapley value of feature k for an additive model with baseline 0: its own term."""
    with torch.no_grad():
        term = model.a * x ** 2 + model.b * x
    m = mask.expand_as(x)
    out = torch.zeros_like(x)
    for k in m.unique():
        sel = m == k
        out[sel] = (term * sel).flatten(1).sum(1).repeat_interleave(sel.flatten(1).sum(1))
    return out


def test_shapley_sampling_exact_on_additive_model():
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(9))
    model = _Additive(x.shape[1:]).eval()
    a = attribute(model, x, 1, "shapley_value_sampling", n_samples=3, grid=2).maps
    exact = _exact_feature_values(model, x, grid_feature_mask(x.shape, 2))
    assert torch.allclose(a, exact, atol=1e-4)


@pytest.mark.parametrize("method", ["kernel_shap", "lime", "feature_ablation"])
def test_surrogates_recover_ranking_on_additive_model(method):
    x = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(10))
    model = _Additive(x.shape[1:]).eval()
    mask = grid_feature_mask(x.shape, 2)  # 8 features
    options = {"kernel_shap": dict(n_samples=200, grid=2), "feature_ablation": dict(grid=2),
               # LIME's features: the same 4 patches, each contrast on its own
               "lime": dict(n_samples=200, segments=grid_feature_mask(x.shape, 2, per_contrast=False),
                            per_contrast=True)}[method]
    a = attribute(model, x, 1, method, **options).maps
    exact = _exact_feature_values(model, x, mask)
    per_a = torch.stack([a[mask.expand_as(a) == k].mean() for k in range(8)])
    per_e = torch.stack([exact[mask.expand_as(a) == k].mean() for k in range(8)])
    # the model is linear in the on/off indicators, so the surrogate recovers the values up to
    # the ridge shrinkage of lime; near-ties (13.06 vs 13.31 here) may swap, so rank-correlate
    ra, re = per_a.argsort().argsort().float(), per_e.argsort().argsort().float()
    spearman = 1 - 6 * ((ra - re) ** 2).sum() / (8 * (64 - 1))
    assert spearman >= 0.95 and per_a.argmax() == per_e.argmax() and per_a.argmin() == per_e.argmin()
    assert torch.allclose(per_a, per_e, rtol=0.1, atol=0.1 * per_e.abs().max().item())


def test_slic_mask_runs_2d_and_3d(r18, monai3d):
    x = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(11))
    a = attribute(r18, x, 0, "feature_ablation", feature_mask="slic", n_segments=8).maps
    assert a.shape == x.shape and torch.isfinite(a).all()
    x3 = torch.randn(1, 4, 12, 12, 12, generator=torch.Generator().manual_seed(12))
    a3 = attribute(monai3d, x3, 0, "lime", n_samples=20, n_segments=4, per_contrast=True).maps
    assert a3.shape == x3.shape and torch.isfinite(a3).all()


def test_guided_backprop_warns_on_silu_model():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.SiLU(inplace=True),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)).eval()
    x = torch.randn(1, 4, 8, 8)
    snap = ModelSnapshot.take(model)
    with pytest.warns(UserWarning, match="SiLU"):
        attribute(model, x, 0, "guided_backprop")
    assert snap.diff(model) == [] and model[1].inplace is True


def test_training_mode_model_is_left_as_found(x32):
    model = timm_model("resnet18").train()
    snap = ModelSnapshot.take(model)
    with pytest.warns(UserWarning, match="training mode"):
        attribute(model, x32, 0, "gradient")
    assert snap.diff(model) == []


def test_bad_arguments(r18, x32):
    with pytest.raises(ValueError, match="integrated_gradients") as e:
        attribute(r18, x32, 0, "integrated_gradient")
    assert "Valid methods" in str(e.value) and "lime" in str(e.value)
    with pytest.raises(ValueError, match="target"):
        attribute(r18, x32, [0, 1, 1], "gradient")
    with pytest.raises(ValueError, match=r"\(32, 32\)"):
        attribute(r18, x32[0, 0], 0, "gradient")
    with pytest.raises(ValueError, match="feature_mask shape"):
        attribute(r18, x32, 0, "feature_ablation", feature_mask=torch.zeros(1, 4, 16, 16))
    with pytest.raises(TypeError, match="n_step"):
        attribute(r18, x32, 0, "integrated_gradients", n_step=3)


# ---------------------------------------------------------------- the table and the result ---
def test_table_entries_name_a_captum_class_or_a_runner():
    import captum.attr as ca

    for name, info in METHODS.items():
        assert info.name == name
        assert (info.captum is not None and hasattr(ca, info.captum)) or info.run is not None, name
    # the package's own implementations take their defaults from their signatures
    assert METHODS["lime"].defaults["n_samples"] == 1000 and METHODS["lime"].defaults["kernel_width"] == 0.25
    assert METHODS["lrp"].defaults["composite"] == "epsilon_gamma_box"
    assert set(METHODS["gradcam"].defaults) == {"point", "normalize"}


def test_attribution_result_frame_and_summary(r18, x32):
    from probes.core.result import Summary
    from probes.core.validate import as_maps, to_numpy

    res = attribute(r18, x32, [0, 1], "input_x_gradient", case_ids=[101, 102],
                    contrasts=["t1", "t1c", "t2", "flair"])
    assert res.case_ids == ("101", "102") and res.contrasts == ("t1", "t1c", "t2", "flair")
    assert res.target.tolist() == [0, 1] and res.point is None and res.method == "input_x_gradient"
    df = res.to_frame()
    assert list(df.columns) == ["case_id", "method", "point", "contrast", "metric", "value"]
    assert df.case_id.map(type).eq(str).all() and len(df) == 2 * 4 * 4
    a = res.maps.double()
    row = df[(df.case_id == "102") & (df.contrast == "t2")].set_index("metric").value
    assert row["sum"] == pytest.approx(a[1, 2].sum().item(), rel=1e-9)
    assert row["sum_abs"] == pytest.approx(a[1, 2].abs().sum().item(), rel=1e-9)
    assert row["max"] == a[1, 2].max().item() and row["min"] == a[1, 2].min().item()
    df.loc[0, "value"] = 1e9  # a copy: the result is not changed
    assert res.to_frame().value[0] != 1e9
    s = res.summary()
    assert isinstance(s, Summary) and "input_x_gradient" in s and "flair" in s and "<table" in s._repr_html_()
    # metrics read the maps of a result directly
    assert np.array_equal(to_numpy(res, "maps"), res.maps.numpy())
    assert torch.equal(as_maps(res, x32.shape), res.maps.double())
    with pytest.raises(ValueError, match="contrasts"):
        attribute(r18, x32, 0, "gradient", contrasts=["t1", "t2"])


def test_one_gradcam_one_lime_one_lrp(r18, x32):
    """attribute() serves Grad-CAM, LIME and LRP through the package's own implementations."""
    from probes.attribution import layer_gradcam, lime_map, lrp

    cam = attribute(r18, x32, [0, 1], "gradcam")
    assert cam.point == "layer4.1.resid"  # the default point: the last block's output
    assert torch.equal(cam.maps, layer_gradcam(r18, x32, [0, 1], "layer4.1.resid")["layer4.1.resid"])
    mm = attribute(HookRegistry(r18), x32, 1, "gradcam", point="layer2.0.local", normalize="minmax")
    assert torch.equal(mm.maps, layer_gradcam(r18, x32, 1, ["layer2.0.local"], normalize="minmax").maps)
    seg = grid_feature_mask(x32.shape, 4, per_contrast=False)
    li = attribute(r18, x32, 1, "lime", n_samples=40, segments=seg, seed=3)
    assert torch.equal(li.maps, lime_map(r18, x32, 1, n_samples=40, segments=seg, seed=3).maps)
    assert torch.equal(attribute(r18, x32, 1, "lrp").maps, lrp(r18, x32, 1).maps)


def test_guided_gradcam_point_equals_captum_layer(r18, x32):
    """The point option names the layer Captum's GuidedGradCam explains (on a copy without in-place ReLUs)."""
    import copy

    from captum.attr import GuidedGradCam

    ours = attribute(r18, x32, [0, 1], "guided_gradcam", point="layer3.1.resid").maps
    ref_model = copy.deepcopy(r18)
    for m in ref_model.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = GuidedGradCam(ref_model, ref_model.layer3[1]).attribute(x32, target=[0, 1])
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)
    default = attribute(r18, x32, [0, 1], "guided_gradcam").maps
    assert torch.equal(default, attribute(r18, x32, [0, 1], "guided_gradcam", point="layer4.1.resid").maps)
    with pytest.raises(ValueError, match="module output"):
        attribute(r18, x32, 0, "guided_gradcam", point="layer3.1.resid_pre")


@pytest.mark.parametrize("method", ["gradient_shap", "smoothgrad", "kernel_shap"])
def test_same_seed_same_map_and_global_streams_restored(r18, x32, method):
    """GradientShap also draws from numpy's global stream: both streams are seeded per call."""
    opts = {"n_samples": 4} if method != "kernel_shap" else {"n_samples": 20, "grid": 2}
    a = attribute(r18, x32, 0, method, **opts).maps
    np.random.rand(3), torch.rand(3)  # move both global streams
    np_state, torch_state = np.random.get_state()[1].copy(), torch.random.get_rng_state()
    assert torch.equal(a, attribute(r18, x32, 0, method, **opts).maps)
    assert np.array_equal(np.random.get_state()[1], np_state) and torch.equal(torch.random.get_rng_state(), torch_state)
    assert not torch.equal(a, attribute(r18, x32, 0, method, seed=1, **opts).maps)
