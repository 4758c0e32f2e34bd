"""The registry proves itself: verify() on real architectures, and captures vs. recomputation."""

from __future__ import annotations

import pytest
import torch
import torchvision
from monai.networks.nets import UNet, resnet10
from torch import nn

from probes import HookRegistry
from probes.hooks.adapters import BlockAdapter

from tests.helpers import randomize_bn, timm_model

MODELS_2D = {
    # name: (factory, expected number of residual blocks)
    "timm_resnet18": (lambda: timm_model("resnet18"), 8),
    "timm_resnet50": (lambda: timm_model("resnet50"), 16),
    "timm_resnet51q": (lambda: timm_model("resnet51q"), 16),
    "timm_seresnet18_droppath": (lambda: timm_model("seresnet18", drop_path_rate=0.1), 8),
    "tv_resnet18": (lambda: randomize_bn(torchvision.models.resnet18(num_classes=2)).eval(), 8),
}


@pytest.mark.parametrize("name", list(MODELS_2D))
def test_verify_passes_2d(name):
    factory, n_blocks = MODELS_2D[name]
    model = factory()
    reg = HookRegistry(model)
    assert len(reg.blocks) == n_blocks
    c_in = 3 if name.startswith("tv_") else 4
    x = torch.randn(2, c_in, 64, 64, generator=torch.Generator().manual_seed(0))
    df = reg.verify(x).table
    assert set(df.check) >= {"fired", "sum", "act", "identity_patch", "grad_local", "grad_act",
                             "transparent", "model_unchanged"}
    assert df.passed.all(), df[~df.passed]
    assert df.max_abs_err.max() <= 1e-5
    assert (df.check == "sum").sum() == n_blocks
    # the branches really do something (a zero f(x) would make `sum` trivially true)
    _, cache = reg.run_with_cache(x, points=[f"{b}.local" for b in reg.blocks])
    assert all(cache[f"{b}.local"].abs().max() > 1e-3 for b in reg.blocks)


@pytest.mark.parametrize("kind", ["resnet10", "unet"])
def test_verify_passes_monai_3d(kind):
    torch.manual_seed(0)
    if kind == "resnet10":
        model, n_blocks = resnet10(spatial_dims=3, n_input_channels=4, num_classes=2), 4
    else:
        model, n_blocks = UNet(3, 4, 2, channels=(8, 16, 32), strides=(2, 2), num_res_units=2), 5
    model = randomize_bn(model).eval()
    reg = HookRegistry(model)
    assert len(reg.blocks) == n_blocks
    x = torch.randn(1, 4, 24, 24, 24, generator=torch.Generator().manual_seed(0))
    df = reg.verify(x).table
    assert df.passed.all(), df[~df.passed]
    _, cache = reg.run_with_cache(x, points=[f"{reg.blocks[0]}.resid"])
    assert cache[f"{reg.blocks[0]}.resid"].dim() == 5


def _branch_by_hand(block: nn.Module, x: torch.Tensor, arch: str) -> torch.Tensor:
    """f(x) recomputed by calling the branch modules one by one (no hooks involved)."""
    if arch == "timm_basic":
        y = block.aa(block.act1(block.drop_block(block.bn1(block.conv1(x)))))
        y = block.bn2(block.conv2(y))
    elif arch == "timm_bottleneck":
        y = block.act1(block.bn1(block.conv1(x)))
        y = block.aa(block.act2(block.drop_block(block.bn2(block.conv2(y)))))
        y = block.bn3(block.conv3(y))
    elif arch == "byob_bottleneck":
        y = block.conv2b_kxk(block.conv2_kxk(block.conv1_1x1(x)))
        y = block.attn_last(block.conv3_1x1(block.attn(y)))
        return block.drop_path(y)
    elif arch == "tv_basic":
        return block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
    else:
        raise AssertionError(arch)
    if block.se is not None:
        y = block.se(y)
    if block.drop_path is not None:
        y = block.drop_path(y)
    return y


@pytest.mark.parametrize("name,arch", [
    ("timm_resnet18", "timm_basic"), ("timm_resnet50", "timm_bottleneck"),
    ("timm_resnet51q", "byob_bottleneck"), ("timm_seresnet18_droppath", "timm_basic"),
    ("tv_resnet18", "tv_basic"),
])
def test_local_equals_branch_recomputed_by_hand(name, arch):
    model = MODELS_2D[name][0]()
    reg = HookRegistry(model)
    c_in = 3 if name.startswith("tv_") else 4
    x = torch.randn(2, c_in, 64, 64, generator=torch.Generator().manual_seed(3))
    pts = [p for b in reg.blocks for p in (f"{b}.resid_pre", f"{b}.local", f"{b}.shortcut")]
    _, cache = reg.run_with_cache(x, points=pts)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for b in reg.blocks:
            block, pre = modules[b], cache[f"{b}.resid_pre"]
            assert torch.allclose(cache[f"{b}.local"], _branch_by_hand(block, pre.clone(), arch), atol=1e-5), b
            proj = getattr(block, "downsample", None) if not name.endswith("51q") else block.shortcut
            expect_s = pre if proj is None else proj(pre.clone())
            assert torch.allclose(cache[f"{b}.shortcut"], expect_s, atol=1e-5), b


def test_naive_reference_capture_falls_into_the_inplace_trap(resnet18, x2d):
    """Why clones matter: a hook that keeps the bn2 output sees relu(f + s) after the forward."""
    kept = {}
    h = resnet18.layer1[0].bn2.register_forward_hook(lambda m, a, o: kept.setdefault("bn2", o))
    try:
        with torch.no_grad():
            resnet18(x2d)
    finally:
        h.remove()
    reg = HookRegistry(resnet18)
    _, cache = reg.run_with_cache(x2d, points=["layer1.0.local", "layer1.0.resid"])
    assert torch.equal(kept["bn2"], cache["layer1.0.resid"])          # the trap
    assert not torch.allclose(kept["bn2"], cache["layer1.0.local"])   # what we store instead
    assert (cache["layer1.0.local"] < 0).any()                        # pre-activation values


def test_wrong_adapter_is_caught_by_verify(x2d):
    """verify can fail: an adapter naming the wrong branch output breaks `sum` and `grad_local`."""
    model = timm_model("resnet18")
    wrong = BlockAdapter("wrong", ("bn1",), "downsample", "act2")
    reg = HookRegistry(model, adapters={"timm.models.resnet.BasicBlock": wrong})
    df = reg.verify(x2d).table
    bad = df[~df.passed]
    assert set(bad.check) >= {"sum", "grad_local"}
    assert (df[df.check == "sum"].passed == False).all()  # noqa: E712


class _MyBlock(nn.Module):
    """A user's own residual block: out = gelu(branch(x) + proj(x))."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GELU(), nn.Conv2d(c_out, c_out, 3, padding=1))
        self.proj = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None
        self.out_act = nn.GELU()

    def forward(self, x):
        s = x if self.proj is None else self.proj(x)
        return self.out_act(self.body(x) + s)


def test_register_adapter_for_users_block():
    from probes.hooks.adapters import ADAPTERS, register_adapter

    model = nn.Sequential(_MyBlock(4, 8), _MyBlock(8, 8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)).eval()
    assert HookRegistry(model).blocks == []  # unknown block class: modules only
    key = f"{_MyBlock.__module__}.{_MyBlock.__qualname__}"
    try:
        register_adapter(_MyBlock, BlockAdapter("MyBlock", ("body",), "proj", "out_act"))
        reg = HookRegistry(model)
        assert reg.blocks == ["0", "1"]
        assert "1.resid_sum" in reg.points and "0.body.0" in reg.points
        df = reg.verify(torch.randn(2, 4, 16, 16)).table
        assert df.passed.all(), df[~df.passed]
    finally:
        ADAPTERS.pop(key, None)


def test_models_without_blocks_get_every_module():
    model = torchvision.models.vgg11(num_classes=2).eval()
    reg = HookRegistry(model)
    assert reg.blocks == []
    assert set(reg.points) == {n for n, _ in model.named_modules() if n}
    out, cache = reg.run_with_cache(torch.randn(1, 3, 64, 64), points=["features.0", "classifier.6"])
    assert torch.allclose(cache["classifier.6"], out)
