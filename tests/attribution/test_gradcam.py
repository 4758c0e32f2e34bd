"""layer_gradcam: per-layer Grad-CAM from one forward+backward, checked against pytorch-grad-cam."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from probes import HookRegistry, ModelSnapshot
from probes.attribution.gradcam import layer_gradcam
from tests.helpers import randomize_bn, timm_model

from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

TARGET = [0, 1]


def _x(shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _peer_maps(model, blocks, x, target):
    """pytorch-grad-cam, one GradCAM object (one forward+backward) per layer, on a copy
    (GradCAM calls model.eval() and leaves parameter .grad behind)."""
    model = copy.deepcopy(model)
    mods = dict(model.named_modules())
    out = {}
    for b in blocks:
        with GradCAM(model, target_layers=[mods[b]]) as cam:
            out[b] = cam(x, targets=[ClassifierOutputTarget(k) for k in target])
    return out


def _hand_raw(model, blocks, x, target):
    """Independent raw Grad-CAM: plain forward hooks keep the block outputs, one autograd.grad."""
    mods = dict(model.named_modules())
    acts = {}
    handles = [mods[b].register_forward_hook(lambda m, a, o, b=b: acts.__setitem__(b, o)) for b in blocks]
    try:
        out = model(x)
        y = sum(out[i, k] for i, k in enumerate(target))
        grads = torch.autograd.grad(y, [acts[b] for b in blocks])
    finally:
        for h in handles:
            h.remove()
    res = {}
    for b, g in zip(blocks, grads):
        a = acts[b].detach()
        dims = tuple(range(2, a.dim()))
        cam = torch.relu((g.mean(dims, keepdim=True) * a).sum(1, keepdim=True))
        mode = "bilinear" if a.dim() == 4 else "trilinear"
        res[b] = F.interpolate(cam, size=x.shape[2:], mode=mode, align_corners=False)
    return res


@pytest.mark.parametrize("arch", ["resnet18", "resnet51q"])
def test_minmax_equals_pytorch_grad_cam_every_block(arch):
    model = timm_model(arch)
    reg = HookRegistry(model)
    x = _x((2, 4, 64, 64))
    snap = ModelSnapshot.take(model)
    maps = layer_gradcam(reg, x, TARGET, normalize="minmax")
    assert snap.diff(model) == []
    assert list(maps) == [f"{b}.resid" for b in reg.blocks] and len(maps) == len(reg.blocks) >= 8
    peer = _peer_maps(model, reg.blocks, x, TARGET)
    for b in reg.blocks:
        m = maps[f"{b}.resid"]
        assert m.shape == (2, 1, 64, 64) and m.dtype == torch.float32
        np.testing.assert_allclose(m[:, 0].numpy(), peer[b], atol=1e-4, err_msg=f"{arch} {b}")
        # min-max per image: min 0 and max 1, or an all-zero map (ReLU removed everything)
        top = m.flatten(1).amax(1)
        assert bool(((top - 1).abs() < 1e-5).logical_or(top == 0).all()), (b, top)
        assert torch.allclose(m.flatten(1).amin(1), torch.zeros(2), atol=1e-6)


def test_raw_maps_nonnegative_and_scale_with_the_logit(resnet18):
    x = _x((2, 4, 64, 64))
    raw = layer_gradcam(HookRegistry(resnet18), x, TARGET)
    hand = _hand_raw(resnet18, [p[:-6] for p in raw], x, TARGET)
    doubled = copy.deepcopy(resnet18)
    with torch.no_grad():
        doubled.fc.weight.mul_(2)
        doubled.fc.bias.mul_(2)
    raw2 = layer_gradcam(HookRegistry(doubled), x, TARGET)
    mm = layer_gradcam(HookRegistry(resnet18), x, TARGET, normalize="minmax")
    mm2 = layer_gradcam(HookRegistry(doubled), x, TARGET, normalize="minmax")
    for p, m in raw.items():
        assert (m >= 0).all() and m.abs().max() > 0, p
        torch.testing.assert_close(m, hand[p[:-6]], rtol=1e-4, atol=1e-7)
        # logit linear in the fc weights → gradients, weights and maps double exactly
        torch.testing.assert_close(raw2[p], 2 * m, rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(mm2[p], mm[p], rtol=1e-4, atol=1e-5)  # scale-free


def test_sample_maps_do_not_depend_on_the_batch(resnet18):
    x = _x((2, 4, 64, 64))
    both = layer_gradcam(HookRegistry(resnet18), x, TARGET)
    one = layer_gradcam(HookRegistry(resnet18), x[1:], 1)
    for p in both:
        torch.testing.assert_close(both[p][1:], one[p], rtol=1e-4, atol=1e-6)


def test_one_forward_and_one_backward(resnet18, monkeypatch):
    calls = {"fwd": 0, "grad": 0}
    real_grad = torch.autograd.grad

    def counting_grad(*a, **k):
        calls["grad"] += 1
        return real_grad(*a, **k)

    def no_backward(*a, **k):
        raise AssertionError("Tensor.backward must not be used (it would fill parameter .grad)")

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    monkeypatch.setattr(torch.Tensor, "backward", no_backward)
    h = resnet18.register_forward_pre_hook(lambda m, a: calls.__setitem__("fwd", calls["fwd"] + 1))
    try:
        reg = HookRegistry(resnet18)
        maps = layer_gradcam(reg, _x((2, 4, 64, 64)), TARGET, normalize="minmax")
    finally:
        h.remove()
    assert len(maps) == 8
    assert calls == {"fwd": 1, "grad": 1}


def test_3d_monai_resnet_equals_pytorch_grad_cam_and_hand_reference():
    import monai.networks.nets as monai_nets
    torch.manual_seed(0)
    model = randomize_bn(monai_nets.resnet10(spatial_dims=3, n_input_channels=4, num_classes=2)).eval()
    reg = HookRegistry(model)
    assert len(reg.blocks) == 4
    x = _x((1, 4, 24, 24, 24), seed=2)
    snap = ModelSnapshot.take(model)
    raw = layer_gradcam(reg, x, 1)
    mm = layer_gradcam(reg, x, [1], normalize="minmax")
    gc = layer_gradcam(reg, x, torch.tensor([1]), normalize="gradcam")
    assert snap.diff(model) == []
    peer = _peer_maps(model, reg.blocks, x, [1])
    hand = _hand_raw(model, reg.blocks, x, [1])
    for b in reg.blocks:
        p = f"{b}.resid"
        assert raw[p].shape == mm[p].shape == gc[p].shape == (1, 1, 24, 24, 24)
        # grad-cam resizes 3D maps with scipy's cubic-spline zoom: normalize="gradcam" follows it
        np.testing.assert_allclose(gc[p][:, 0].numpy(), peer[b], atol=1e-4, err_msg=b)
        torch.testing.assert_close(raw[p], hand[b], rtol=1e-4, atol=1e-8)
        # minmax = min-max of the trilinear upsampling (grad-cam's order of operations)
        ref = hand[b] - hand[b].amin()
        ref = ref / ref.amax()  # grad-cam's 1e-7 acts on the first, [0, 1]-scaled pass
        torch.testing.assert_close(mm[p], ref, rtol=1e-4, atol=1e-4)


def test_any_spatial_point_and_errors(resnet18):
    reg = HookRegistry(resnet18)
    x = _x((2, 4, 64, 64))
    snap = ModelSnapshot.take(resnet18)
    maps = layer_gradcam(reg, x, 0, points=["layer3.0.local", "layer2.1.conv1"])
    assert set(maps) == {"layer3.0.local", "layer2.1.conv1"}
    assert all(m.shape == (2, 1, 64, 64) for m in maps.values())
    with pytest.raises(KeyError, match="layer9"):
        layer_gradcam(reg, x, 0, points=["layer9.0.resid"])
    with pytest.raises(ValueError, match=r"target.*shape \(3,\)"):
        layer_gradcam(reg, x, [0, 1, 1])
    with pytest.raises(ValueError, match=r"target.*shape \(2, 1\)"):
        layer_gradcam(reg, x, torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        layer_gradcam(reg, x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="out of range"):
        layer_gradcam(reg, x, [0, 2])
    with pytest.raises(ValueError, match="spatial"):
        layer_gradcam(reg, x, 0, points=["fc"])
    with pytest.raises(ValueError, match="normalize"):
        layer_gradcam(reg, x, 0, normalize="max")
    assert snap.diff(resnet18) == []


def test_module_or_registry_and_the_result(resnet18):
    x = _x((2, 4, 64, 64))
    points = ["layer3.1.resid", "layer4.1.resid"]
    res = layer_gradcam(HookRegistry(resnet18), x, [0, 1], points, case_ids=["a", "b"])
    direct = layer_gradcam(resnet18, x, [0, 1], points)  # a module gets a registry built on the fly
    assert list(res) == points and all(torch.equal(res[p], direct[p]) for p in points)
    df = res.to_frame()
    assert list(df.columns) == ["case_id", "method", "point", "contrast", "metric", "value"]
    assert len(df) == 2 * 2 * 4 and set(df.case_id) == {"a", "b"} and set(df.contrast) == {"all"}
    got = df[(df.point == "layer3.1.resid") & (df.case_id == "b") & (df.metric == "sum")].value.item()
    assert got == pytest.approx(res["layer3.1.resid"][1].double().sum().item(), rel=1e-9)
    one = res.attribution("layer4.1.resid")
    assert one.point == "layer4.1.resid" and one.maps is res["layer4.1.resid"] and one.case_ids == ("a", "b")
    assert torch.equal(layer_gradcam(resnet18, x, [0, 1], "layer4.1.resid").maps, res["layer4.1.resid"])
    with pytest.raises(ValueError, match="pick one"):
        res.maps
    with pytest.raises(KeyError, match="layer4.1.resid"):
        res["layer4.1.resd"]
    s = res.summary()
    assert "layer3.1.resid" in s and "layer4.1.resid" in s and "<table" in s._repr_html_()


def test_training_mode_runs_in_eval_and_is_restored(resnet18):
    x = _x((2, 4, 64, 64))
    model = copy.deepcopy(resnet18).train()
    snap = ModelSnapshot.take(model)
    with pytest.warns(UserWarning, match="layer_gradcam.*training mode"):
        maps = layer_gradcam(model, x, 1, "layer3.1.resid")
    assert snap.diff(model) == [] and model.training
    torch.testing.assert_close(maps.maps, layer_gradcam(resnet18, x, 1, "layer3.1.resid").maps)
