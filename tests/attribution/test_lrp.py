"""LRP (probes.attribution.lrp): conservation on timm residual nets, per-contrast maps, closed form, 3D."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from probes.attribution.lrp import LRPConservationError, LRPRuleError, lrp, lrp_conservation
from probes.attribution.lrp_canonizers import MergeBatchNormAct, default_canonizers
from probes.core.model import ModelSnapshot
from tests.helpers import randomize_bn, timm_model


@pytest.fixture(scope="module")
def r18():
    return timm_model("resnet18")


@pytest.fixture(scope="module")
def r51q():
    return timm_model("resnet51q")


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 4, 64, 64, generator=torch.Generator().manual_seed(1))


def _conserves(model, x, R, target):
    with torch.no_grad():
        start = model(x)[torch.arange(x.shape[0]), target]  # independent of lrp's own bookkeeping
    s = R.flatten(1).sum(1)
    return (s - start).abs() <= 0.05 * start.abs(), s, start


@pytest.mark.parametrize("name,composite,n", [("r18", "epsilon_plus", 2), ("r18", "epsilon_gamma_box", 2),
                                              ("r51q", "epsilon_plus", 2), ("r51q", "epsilon_gamma_box", 1)])
def test_conserves_on_timm(name, composite, n, x, request):
    model = request.getfixturevalue(name)
    snap = ModelSnapshot.take(model)
    x = x[:n]  # (the slowest case gets one sample: shared CPU budget)
    target = torch.tensor([1, 0])[:n]
    R = lrp(model, x, target, composite=composite).maps
    assert R.shape == x.shape and torch.isfinite(R).all()
    ok, s, start = _conserves(model, x, R, target)
    assert ok.all(), (s, start)
    assert snap.diff(model) == []


def test_per_contrast_maps_differ(r18, x):
    R = lrp(r18, x, 1).maps
    for n in range(2):
        maps = R[n].flatten(1)
        assert not torch.allclose(maps[0], maps[1])
        corr = torch.corrcoef(maps)
        off = corr[~torch.eye(4, dtype=bool)]
        assert off.max() < 0.99, corr
    # negative control: zennit's stock EpsilonPlusFlat (a user-supplied Composite) puts the Flat rule
    # on the first conv, which makes all contrast maps identical - the check above would fail
    from zennit.composites import EpsilonPlusFlat
    Rf = lrp(r18, x, 1, composite=EpsilonPlusFlat(zero_params=["bias"])).maps
    assert torch.allclose(Rf[:, 0], Rf[:, 1]) and torch.allclose(Rf[:, 0], Rf[:, 3])


def test_stock_resnet_canonizer_fails_on_timm(r18, x):
    from zennit.torchvision import ResNetCanonizer
    df = lrp_conservation(r18, x, 1, canonizers=[ResNetCanonizer()]).table
    assert (df.rel_error > 10).all(), df  # relevance duplicated at every skip (Σ ≈ 255 × logit)
    ours = lrp_conservation(r18, x, 1).table
    assert (ours.rel_error < 1e-3).all(), ours
    assert list(ours.columns) == ["case_id", "target", "start", "sum_relevance", "sum_abs_relevance",
                                  "rel_error", "composite"]
    snap = ModelSnapshot.take(r18)
    with pytest.raises(LRPConservationError, match="Σ input relevance"):
        lrp(r18, x, 1, canonizers=[ResNetCanonizer()])
    assert snap.diff(r18) == []  # restored on error too


def test_se_blocks_conserve(x):
    m = timm_model("seresnet18")
    x = x[..., :32, :32]
    R = lrp(m, x, 0).maps
    ok, s, start = _conserves(m, x, R, torch.tensor([0, 0]))
    assert ok.all(), (s, start)
    # without the SE canonizer relevance also flows into the gate
    cans = [c for c in default_canonizers() if type(c).__name__ != "TimmSECanonizer"]
    assert (lrp_conservation(m, x, 0, canonizers=cans).table.rel_error > 1).all()


def test_epsilon_equals_gradient_times_input():
    """Closed form: LRP-ε with ε → 0 on a bias-free ReLU net equals x ⊙ ∂f/∂x."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 3, bias=False)).double().eval()
    xx = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    R = lrp(net, xx, [2, 1], composite="epsilon", epsilon=1e-12).maps
    xg = xx.clone().requires_grad_(True)
    out = net(xg)
    (g,) = torch.autograd.grad(out[torch.arange(2), torch.tensor([2, 1])].sum(), xg)
    torch.testing.assert_close(R, xx * g, rtol=1e-6, atol=1e-9)
    # the comparison can fail: ZPlus rules give a different map on the same net
    assert not torch.allclose(lrp(net, xx, [2, 1], composite="epsilon_plus").maps, xx * g, rtol=1e-2)


def _small_monai_3d():
    from monai.networks.nets import ResNet
    torch.manual_seed(0)
    return randomize_bn(ResNet("basic", [1, 1, 1, 1], [8, 16, 16, 16], spatial_dims=3,
                               n_input_channels=4, num_classes=2)).eval()


def test_3d_monai_resnet():
    m = _small_monai_3d()
    x3 = torch.randn(1, 4, 24, 24, 24, generator=torch.Generator().manual_seed(2))
    snap = ModelSnapshot.take(m)
    R = lrp(m, x3, 1).maps
    assert R.shape == x3.shape
    ok, s, start = _conserves(m, x3, R, torch.tensor([1]))
    assert ok.all(), (s, start)
    assert (lrp_conservation(m, x3, 1, canonizers=None).table.rel_error > 10).all()  # skips need the canonizer
    assert snap.diff(m) == []


def test_canonizers_restore_exactly(r51q, x):
    snap = ModelSnapshot.take(r51q)
    with torch.no_grad():
        ref = r51q(x)
    applied = []
    for c in default_canonizers():
        applied += c.apply(r51q)
    try:
        merged = [c for c in applied if isinstance(c, MergeBatchNormAct)]
        assert len(merged) >= 55  # timm's fused BatchNormAct2d are merged too
        assert snap.diff(r51q) != []
        with torch.no_grad():
            torch.testing.assert_close(r51q(x), ref, rtol=1e-4, atol=1e-5)
    finally:
        for c in reversed(applied):
            c.remove()
    assert snap.diff(r51q) == []
    assert not any("forward" in m.__dict__ or "canonizer_sum" in m._modules for m in r51q.modules())
    with torch.no_grad():
        assert torch.equal(r51q(x), ref)


def test_training_mode_restored(r18, x):
    r18.train()
    try:
        snap = ModelSnapshot.take(r18)
        with pytest.warns(UserWarning, match="lrp.*training mode"):
            lrp(r18, x, 0)  # runs in eval mode (BN merge needs running statistics) ...
        assert snap.diff(r18) == [] and r18.training  # ... and puts the modes back
    finally:
        r18.eval()


def test_bad_inputs(r18, x):
    snap = ModelSnapshot.take(r18)
    with pytest.raises(ValueError, match="target"):
        lrp(r18, x, 5)
    with pytest.raises(ValueError, match="target"):
        lrp(r18, x, [0, 1, 1])
    with pytest.raises(ValueError, match="x must be"):
        lrp(r18, x[:, :, 0], 0)  # a 1D signal into a 2D net
    with pytest.raises(ValueError, match="composite"):
        lrp(r18, x, 0, composite="nope")
    assert snap.diff(r18) == []


def test_module_without_rule_is_an_error():
    net = nn.Sequential(nn.Conv2d(4, 8, 3), nn.GroupNorm(2, 8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 2)).eval()
    with pytest.raises(LRPRuleError, match="GroupNorm"):
        lrp(net, torch.randn(2, 4, 16, 16), 0)


def test_sign_fixed_gamma_vs_stock_gamma(r51q, x):
    """zennit 0.5.1's Gamma picks its denominator from the biased output: Σ R explodes on resnet51q
    (measured ×58 and ×3144); SignFixedGamma (case from the bias-free output) conserves."""
    from zennit.composites import EpsilonGammaBox
    lo, hi = x.amin((0, 2, 3), keepdim=True), x.amax((0, 2, 3), keepdim=True)
    stock = lrp_conservation(r51q, x, 1, composite=EpsilonGammaBox(low=lo, high=hi, zero_params=["bias"])).table
    assert (stock.rel_error > 1).all(), stock
    ours = lrp_conservation(r51q, x, 1, composite="epsilon_gamma_box", low=lo, high=hi).table
    assert (ours.rel_error < 1e-2).all(), ours


def test_conservation_result_frame(r18, x):
    res = lrp_conservation(r18, x, [1, 0], case_ids=["p1", "p2"])
    df = res.to_frame()
    assert list(df.columns) == ["case_id", "composite", "target", "metric", "value"]
    assert df.case_id.tolist() == ["p1"] * 4 + ["p2"] * 4 and df.target.tolist() == [1] * 4 + [0] * 4
    assert df.metric.tolist()[:4] == ["start", "sum_relevance", "sum_abs_relevance", "rel_error"]
    R = lrp(r18, x, [1, 0])
    assert df.value[1] == pytest.approx(R.maps[0].double().sum().item(), rel=1e-9)
    assert R.method == "lrp" and R.options["composite"] == "epsilon_gamma_box" and R.contrasts == ("0", "1", "2", "3")
    assert "rel_error" in res.summary()
