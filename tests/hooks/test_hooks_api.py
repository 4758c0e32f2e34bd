"""run_with_cache, gradients, patching, masks, and the registry's guarantees."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from torch import nn

from probes import HookRegistry, ModelSnapshot

from tests.helpers import randomize_bn, timm_model


def test_points_and_anchor_names(resnet18):
    reg = HookRegistry(resnet18)
    for a in ("resid_pre", "local", "shortcut", "resid_sum", "resid"):
        assert f"layer4.1.{a}" in reg.points
    assert "layer1.0.conv1" in reg.points and "fc" in reg.points
    assert reg.point_info("layer1.0.local").module == "layer1.0.bn2"
    assert reg.point_info("layer2.0.shortcut").module == "layer2.0.downsample"
    assert reg.point_info("layer1.0.shortcut").kind == "shortcut_identity"


def test_cache_stores_only_requested_points_and_equals_resid_chain(resnet18, x2d):
    reg = HookRegistry(resnet18)
    out, cache = reg.run_with_cache(x2d, points=["layer4.1.resid", "layer1.0.resid", "layer1.1.resid_pre"])
    assert sorted(cache) == ["layer1.0.resid", "layer1.1.resid_pre", "layer4.1.resid"]
    assert torch.equal(cache["layer1.0.resid"], cache["layer1.1.resid_pre"])
    with torch.no_grad():
        feats = resnet18.forward_features(x2d)
    assert torch.allclose(cache["layer4.1.resid"], feats, atol=1e-6)
    assert torch.allclose(out, resnet18(x2d), atol=1e-6)
    _, pred = reg.run_with_cache(x2d, points=lambda p: p.endswith(".resid"))
    assert sorted(pred) == sorted(f"{b}.resid" for b in reg.blocks)


def test_grads_from_one_backward_match_autograd(resnet18, x2d, monkeypatch):
    reg = HookRegistry(resnet18)
    calls = []
    real_grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or real_grad(*a, **k))
    target = lambda out: out[:, 1].sum()  # noqa: E731
    _, cache = reg.run_with_cache(x2d, points=lambda p: ".resid" in p or p.endswith(".local"),
                                  grad=True, target=target)
    assert len(calls) == 1
    monkeypatch.undo()
    # independent: split the model at layer4's output and differentiate the head by hand
    with torch.no_grad():
        feats = resnet18.forward_features(x2d)
    feats.requires_grad_(True)
    (g,) = torch.autograd.grad(target(resnet18.forward_head(feats)), feats)
    assert torch.allclose(cache.grads["layer4.1.resid"], g, atol=1e-6)
    # d(f+s)/df = I even though timm adds the skip into f in place
    for b in reg.blocks:
        assert torch.allclose(cache.grads[f"{b}.local"], cache.grads[f"{b}.resid_sum"])
    assert all(p.grad is None for p in resnet18.parameters())


def test_grad_requires_scalar_target(resnet18, x2d):
    reg = HookRegistry(resnet18)
    with pytest.raises(ValueError, match="scalar"):
        reg.run_with_cache(x2d, points=["fc"], grad=True)
    assert sum(reg.hook_counts().values()) == 0


def test_unknown_point_raises_keyerror_with_close_matches_before_hooking(resnet18, x2d, monkeypatch):
    reg = HookRegistry(resnet18)
    registered = []
    real = nn.Module.register_forward_hook
    monkeypatch.setattr(nn.Module, "register_forward_hook",
                        lambda self, *a, **k: registered.append(1) or real(self, *a, **k))
    with pytest.raises(KeyError, match=r"layer1\.0\.resid"):
        reg.run_with_cache(x2d, points=["layer1.0.resid", "layer1.0.rsid"])
    with pytest.raises(KeyError, match="layer4.1.local"):
        with reg.patch({"layer4.1.locl": torch.zeros(1)}):
            pass
    assert registered == []


def test_identity_patch_and_real_patch(resnet18, x2d):
    reg = HookRegistry(resnet18)
    out, cache = reg.run_with_cache(x2d)  # every point
    with reg.patch(dict(cache.items())):
        with torch.no_grad():
            same = resnet18(x2d)
    assert (same - out).abs().max() <= 1e-6
    other = torch.randn_like(x2d) * 2
    _, src = reg.run_with_cache(other, points=["layer3.0.local"])
    with reg.patch({"layer3.0.local": src["layer3.0.local"]}):
        with torch.no_grad():
            patched = resnet18(x2d)
    assert (patched - out).abs().max() > 1e-3
    # after the block, the model is back to normal
    with torch.no_grad():
        assert torch.allclose(resnet18(x2d), out, atol=1e-6)


def test_patch_with_callable_and_broadcast_batch(resnet18, x2d):
    reg = HookRegistry(resnet18)
    with reg.patch({"layer2.1.local": lambda a: torch.zeros_like(a)}):
        _, c = reg.run_with_cache(x2d, points=["layer2.1.local", "layer2.1.resid_sum", "layer2.1.resid_pre"])
    assert c["layer2.1.local"].abs().max() == 0
    assert torch.allclose(c["layer2.1.resid_sum"], c["layer2.1.resid_pre"])  # identity skip: f=0 → x
    _, one = reg.run_with_cache(x2d[:1], points=["layer3.0.local"])
    with reg.patch({"layer3.0.local": one["layer3.0.local"]}):  # batch 1 → both cases
        _, c = reg.run_with_cache(x2d, points=["layer3.0.local"])
    assert torch.equal(c["layer3.0.local"][0], c["layer3.0.local"][1])


def test_patch_identity_shortcut_adds_delta(resnet18, x2d):
    reg = HookRegistry(resnet18)
    with reg.patch({"layer1.1.shortcut": lambda s: torch.zeros_like(s)}):
        _, c = reg.run_with_cache(x2d, points=["layer1.1.local", "layer1.1.resid_sum", "layer1.1.resid_pre"])
    assert torch.allclose(c["layer1.1.resid_sum"], c["layer1.1.local"], atol=1e-6)
    assert c["layer1.1.resid_pre"].abs().max() > 0  # the branch still saw the real input


def test_mask_resized_nearest_only_masked_positions_change(resnet18, x2d):
    reg = HookRegistry(resnet18)
    src = torch.randn_like(x2d)
    _, s = reg.run_with_cache(src, points=["layer1.0.local"])
    _, t = reg.run_with_cache(x2d, points=["layer1.0.local"])
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[8:40, 20:60] = True
    with reg.patch({"layer1.0.local": s["layer1.0.local"]}, mask=mask):
        _, p = reg.run_with_cache(x2d, points=["layer1.0.local"])
    # layer1 runs at 1/4 resolution: nearest resize picks input pixel 4*i
    small = mask[::4, ::4]
    expect = torch.where(small, s["layer1.0.local"], t["layer1.0.local"])
    assert torch.equal(p["layer1.0.local"], expect)
    with torch.no_grad():
        base = resnet18(x2d)
    with reg.patch({"layer1.0.local": s["layer1.0.local"]}, mask=torch.zeros(64, 64, dtype=torch.bool)):
        with torch.no_grad():
            assert torch.equal(resnet18(x2d), base)  # all-false mask = identity
    with reg.patch({"layer1.0.local": s["layer1.0.local"]}, mask=torch.ones(2, 1, 64, 64)):
        with torch.no_grad():
            full = resnet18(x2d)
    with reg.patch({"layer1.0.local": s["layer1.0.local"]}):
        with torch.no_grad():
            assert torch.equal(resnet18(x2d), full)  # all-true mask = unmasked patch


def test_mask_errors_name_point_and_shapes(resnet18, x2d):
    reg = HookRegistry(resnet18)
    with pytest.raises(ValueError, match=r"fc.*\(2, 2\)"):
        with reg.patch({"fc": torch.zeros(2, 2)}, mask=torch.ones(64, 64, dtype=torch.bool)):
            resnet18(x2d)
    with pytest.raises(ValueError, match="boolean"):
        with reg.patch({"layer1.0.local": torch.zeros(1)}, mask=torch.full((64, 64), 0.5)):
            pass
    with pytest.raises(ValueError, match=r"layer1\.0\.local.*\(3, 64, 16, 16\).*\(2, 64, 16, 16\)"):
        with reg.patch({"layer1.0.local": torch.zeros(3, 64, 16, 16)}):
            resnet18(x2d)
    assert sum(reg.hook_counts().values()) == 0


def test_hooks_removed_after_exception_and_foreign_hooks_kept(x2d):
    model = timm_model("resnet18")
    fired = []
    foreign = model.layer2[0].conv1.register_forward_hook(lambda m, a, o: fired.append(1))
    reg = HookRegistry(model)
    before = reg.hook_counts()
    with pytest.raises(RuntimeError, match="boom"):
        with reg.patch({"layer3.0.local": lambda a: a * 0}):
            assert sum(reg.hook_counts().values()) > sum(before.values())
            model(x2d)
            raise RuntimeError("boom")

    def exploding(a):
        raise RuntimeError("boom inside the forward")
    with pytest.raises(RuntimeError, match="inside the forward"):
        with reg.patch({"layer3.0.local": exploding}):
            model(x2d)
    with pytest.raises(RuntimeError, match="inside the forward"):
        reg.run_with_cache(x2d, points=["layer1.0.resid"], grad=True, target=lambda o: exploding(o))
    assert reg.hook_counts() == before
    fired.clear()
    model(x2d)
    assert fired == [1]
    foreign.remove()


def test_model_left_exactly_as_found():
    model = timm_model("resnet18")
    for p in model.layer1.parameters():
        p.requires_grad_(False)
    model.layer3.train()  # a deliberately mixed state
    snap = ModelSnapshot.take(model)
    reg = HookRegistry(model)
    x = torch.randn(2, 4, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg.run_with_cache(x, grad=True, target=lambda o: o.sum())
        with reg.patch({"layer2.0.local": lambda a: a * 2}):
            model.eval()
            model(x)
            model.layer3.train()
    # layer3 in train mode updates its BN statistics during forwards; compare what we control
    diff = [d for d in snap.diff(model) if "layer3" not in d]
    assert diff == []
    assert model.layer3.training and not model.layer1.training
    assert not any(p.requires_grad for p in model.layer1.parameters())


def test_training_mode_warns():
    model = timm_model("resnet18").train()
    with pytest.warns(UserWarning, match="training mode"):
        HookRegistry(model).run_with_cache(torch.randn(2, 4, 32, 32), points=["fc"])


def test_module_running_twice_is_indexed_or_raises():
    model = randomize_bn(torchvision.models.resnet18(num_classes=2)).eval()
    reg = HookRegistry(model)
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(RuntimeError, match=r"layer1\.0\.relu#1"):
        reg.run_with_cache(x, points=["layer1.0.relu"])
    _, c = reg.run_with_cache(x, points=["layer1.0.relu#0", "layer1.0.relu#1", "layer1.0.resid"])
    assert torch.equal(c["layer1.0.relu#1"], c["layer1.0.resid"])
    assert not torch.equal(c["layer1.0.relu#0"], c["layer1.0.relu#1"])
    _, auto = reg.run_with_cache(x, points=lambda p: p.startswith("layer1.0.relu"))
    assert sorted(auto) == ["layer1.0.relu#0", "layer1.0.relu#1"]
    with pytest.raises(RuntimeError, match="more than once"):
        with reg.patch({"layer1.0.relu": lambda a: a}):
            model(x)
    with reg.patch({"layer1.0.relu#1": lambda a: a * 0}):
        _, c = reg.run_with_cache(x, points=["layer1.0.resid"])
    assert c["layer1.0.resid"].abs().max() == 0
    with pytest.raises(RuntimeError, match=r"relu#5 did not run"):
        with reg.patch({"layer1.0.relu#5": lambda a: a}):
            model(x)
    assert sum(reg.hook_counts().values()) == 0


def test_3d_patch_with_mask():
    from monai.networks.nets import resnet10

    torch.manual_seed(0)
    model = randomize_bn(resnet10(spatial_dims=3, n_input_channels=4, num_classes=2)).eval()
    reg = HookRegistry(model)
    x, src = torch.randn(2, 4, 32, 32, 32), torch.randn(2, 4, 32, 32, 32)
    pt = f"{reg.blocks[1]}.local"
    _, s = reg.run_with_cache(src, points=[pt])
    _, t = reg.run_with_cache(x, points=[pt])
    mask = torch.zeros(2, 32, 32, 32, dtype=torch.bool)
    mask[:, :16] = True
    with reg.patch({pt: s[pt]}, mask=mask):
        _, p = reg.run_with_cache(x, points=[pt])
    d = p[pt].shape[2]
    assert torch.equal(p[pt][:, :, : d // 2], s[pt][:, :, : d // 2])
    assert torch.equal(p[pt][:, :, d // 2:], t[pt][:, :, d // 2:])


class _TupleOut(nn.Module):
    def forward(self, x):
        return x, x * 2


class _TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.split = _TupleOut()

    def forward(self, x):
        a, b = self.split(self.conv(x))
        return {"a": a.mean((2, 3)), "b": b.mean((2, 3))}


def test_non_tensor_outputs_skipped_when_not_asked_and_refused_when_asked():
    model = _TwoHeads().eval()
    reg = HookRegistry(model)
    x = torch.randn(1, 4, 8, 8)
    out, cache = reg.run_with_cache(x, grad=True, target=lambda o: o["b"].sum())
    assert "conv" in cache and "split" not in cache and cache.skipped == {"split"}
    assert not out["a"].requires_grad
    assert torch.allclose(cache.grads["conv"], torch.full_like(cache["conv"], 2 / 64))  # d mean(2c)/dc
    with pytest.raises(TypeError, match="split.*tuple"):
        reg.run_with_cache(x, points=["split"])
