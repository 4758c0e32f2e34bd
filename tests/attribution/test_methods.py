"""probes.attribution: every Captum method on 2D/3D, closed-form checks, model left as found."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from probes.attribution.methods import METHODS, attribute, grid_feature_mask
from probes.core.model import ModelSnapshot

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
    "lime": dict(n_samples=30, grid=2),
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
        a = attribute(r18, x32, [0, 1], method, **FAST.get(method, {}))
    assert a.shape == x32.shape and a.dtype == torch.float32
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
        a = attribute(monai3d, x, 1, method, **FAST.get(method, {}))
    assert a.shape == x.shape and torch.isfinite(a).all()
    assert snap.diff(monai3d) == []


def test_gradient_and_input_x_gradient_closed_form(r18, x32):
    g = _logit(r18, x32, 1)
    assert torch.allclose(attribute(r18, x32, 1, "gradient"), g, atol=1e-6)
    assert torch.allclose(attribute(r18, x32, 1, "Gradient", abs=True), g.abs(), atol=1e-6)
    assert torch.allclose(attribute(r18, x32, 1, "input_x_gradient"), x32 * g, atol=1e-6)
    # per-sample targets select per-sample logits
    a = attribute(r18, x32, torch.tensor([0, 1]), "gradient")
    assert torch.allclose(a[0], _logit(r18, x32, 0)[0], atol=1e-6)
    assert torch.allclose(a[1], g[1], atol=1e-6)


def test_integrated_gradients_completeness(r18, x32):
    x32 = x32[:1]
    a = attribute(r18, x32, 1, "integrated_gradients", n_steps=200)
    with torch.no_grad():
        delta = r18(x32)[:, 1] - r18(torch.zeros_like(x32))[:, 1]
    s = a.flatten(1).sum(1)
    assert torch.allclose(s, delta, rtol=0.03, atol=0.03 * delta.abs().max().item())


def test_deeplift_completeness_with_reused_inplace_activation(monai3d):
    # MONAI's ResNetBlock calls one ReLU(inplace=True) twice: DeepLift needs our per-call split
    x = torch.randn(1, 4, 16, 16, 16, generator=torch.Generator().manual_seed(5))
    a = attribute(monai3d, x, 1, "deeplift")
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
    a = attribute(model, x, 1, "occlusion", window=(4, 4))  # stride = window: no overlap
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
    a = attribute(model, x, 1, "shapley_value_sampling", n_samples=3, grid=2)
    exact = _exact_feature_values(model, x, grid_feature_mask(x.shape, 2))
    assert torch.allclose(a, exact, atol=1e-4)


@pytest.mark.parametrize("method", ["kernel_shap", "lime", "feature_ablation"])
def test_surrogates_recover_ranking_on_additive_model(method):
    x = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(10))
    model = _Additive(x.shape[1:]).eval()
    mask = grid_feature_mask(x.shape, 2)  # 8 features
    a = attribute(model, x, 1, method, n_samples=200, grid=2) if method != "feature_ablation" \
        else attribute(model, x, 1, method, grid=2)
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
    a = attribute(r18, x, 0, "feature_ablation", feature_mask="slic", slic_kw={"n_segments": 8})
    assert a.shape == x.shape and torch.isfinite(a).all()
    x3 = torch.randn(1, 4, 12, 12, 12, generator=torch.Generator().manual_seed(12))
    a3 = attribute(monai3d, x3, 0, "lime", feature_mask="slic", n_samples=20,
                   slic_kw={"n_segments": 4})
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
