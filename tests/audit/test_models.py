"""Tests for audit.io: checkpoint formats, safety, ONNX, model interfaces, error messages.

Reference values come from the original torch model (and onnxruntime for ONNX), never from
audit.io itself. BN running statistics are randomised so that a loader which skipped
buffers, or returned a fresh model, would fail the comparisons.
"""

from __future__ import annotations

import os
import pickle
import shlex

import numpy as np
import pytest
import safetensors.torch
import timm
import torch
from torch import nn

from audit.models import (
    AuditAdapter,
    CheckpointMismatchError,
    ModelInterface,
    UnsafeCheckpointError,
    as_audit_model,
    load_model,
    model_interface,
    save_state_dict,
)


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
    return model


def _resnet(**kw) -> nn.Module:
    torch.manual_seed(0)
    kw = {"in_chans": 4, "num_classes": 2, "zero_init_last": False, **kw}
    return _randomise_bn(timm.create_model("resnet18", pretrained=False, **kw)).eval()


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return _resnet()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 4, 64, 64, generator=torch.Generator().manual_seed(1))


def _assert_same(loaded: nn.Module, original: nn.Module, x: torch.Tensor, atol=1e-6) -> None:
    a, b = loaded.state_dict(), original.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), original(x), atol=atol, rtol=0)


# ------------------------------------------------------------------- round trips
def _write(kind: str, state: dict, d) -> str:
    if kind == "pt":
        torch.save(state, d / "m.pt")
        return d / "m.pt"
    if kind == "lightning":  # Lightning-style: weights under "state_dict", keys "model.*"
        torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()},
                    "epoch": 3, "global_step": 120}, d / "m.ckpt")
        return d / "m.ckpt"
    if kind == "module":  # DataParallel prefix
        torch.save({f"module.{k}": v for k, v in state.items()}, d / "m.pth")
        return d / "m.pth"
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, d / "m.safetensors")
    return d / "m.safetensors"


@pytest.mark.parametrize("kind", ["pt", "lightning", "module", "safetensors"])
def test_round_trip_infers_sizes(kind, resnet, x, tmp_path):
    path = _write(kind, resnet.state_dict(), tmp_path)
    loaded = load_model(path, "resnet18")  # in_chans=4, num_classes=2 inferred (timm: 3, 1000)
    assert loaded.conv1.in_channels == 4 and loaded.fc.out_features == 2
    assert not loaded.training and next(loaded.parameters()).device.type == "cpu"
    assert loaded.medaudit_interface == ModelInterface()
    _assert_same(loaded, resnet, x)


def test_fresh_arch_differs_and_checkpoint_fixes_it(resnet, x, tmp_path):
    fresh = load_model(arch="resnet18", in_chans=4, num_classes=2)
    with torch.no_grad():
        assert not torch.allclose(fresh(x), resnet(x), atol=1e-3)  # the comparison can fail
    torch.save(resnet.state_dict(), tmp_path / "m.pt")
    _assert_same(load_model(tmp_path / "m.pt", fresh), resnet, x)  # into an instance

    def build():
        return timm.create_model("resnet18", pretrained=False, in_chans=4, num_classes=2)

    _assert_same(load_model(tmp_path / "m.pt", build), resnet, x)  # a callable


def test_inference_uses_checkpoint_sizes(tmp_path):
    net = _resnet(in_chans=1, num_classes=5)
    torch.save(net.state_dict(), tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt", "resnet18")
    assert (loaded.conv1.in_channels, loaded.fc.out_features) == (1, 5)
    headless = _resnet(num_classes=0)
    torch.save(headless.state_dict(), tmp_path / "h.pt")
    assert isinstance(load_model(tmp_path / "h.pt", "resnet18").fc, nn.Identity)


@pytest.mark.parametrize("ext", [".safetensors", ".pt"])
def test_save_state_dict(ext, resnet, x, tmp_path):
    path = save_state_dict(resnet, tmp_path / "sub" / f"w{ext}")
    _assert_same(load_model(path, "resnet18"), resnet, x)
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_state_dict(resnet, tmp_path / "w.h5")


def test_monai_resnet3d(tmp_path):
    torch.manual_seed(0)
    net = load_model(arch="monai:resnet10", spatial_dims=3, n_input_channels=4, num_classes=2)
    _randomise_bn(net)
    torch.save(net.state_dict(), tmp_path / "r.pt")
    x3 = torch.randn(2, 4, 16, 16, 16)
    # in_chans is routed to MONAI's n_input_channels
    _assert_same(load_model(tmp_path / "r.pt", "monai:resnet10", spatial_dims=3, in_chans=4,
                            num_classes=2), net, x3)
    inferred = load_model(tmp_path / "r.pt", "monai:resnet10")  # dims, channels, classes
    assert isinstance(inferred.conv1, nn.Conv3d) and inferred.conv1.in_channels == 4
    _assert_same(inferred, net, x3)


def test_monai_unet_aliases(tmp_path):
    torch.manual_seed(0)
    unet = load_model(arch="monai:UNet", spatial_dims=2, in_chans=4, num_classes=3,
                      channels=(8, 16), strides=(2,))
    save_state_dict(unet, tmp_path / "u.safetensors")
    loaded = load_model(tmp_path / "u.safetensors", "monai:UNet", in_channels=4,
                        out_channels=3, channels=(8, 16), strides=(2,))
    _assert_same(loaded, unet, torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match="out_channels"):  # not inferable for a segmenter
        load_model(tmp_path / "u.safetensors", "monai:UNet", channels=(8, 16), strides=(2,))


# ------------------------------------------------------------------- security
class _Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def test_malicious_pickle_is_refused(resnet, tmp_path):
    # Control: the payload really does run when unpickled (else the test below proves nothing).
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists()

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": resnet.state_dict(), "callback": _Payload(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="trust_checkpoint=True") as info:
        load_model(path, "resnet18")
    assert "--trust-checkpoint" in str(info.value) and isinstance(info.value, ValueError)
    assert not marker.exists()


def test_whole_module_pickle_needs_trust(resnet, x, tmp_path):
    torch.save(resnet, tmp_path / "whole.pt")
    with pytest.raises(UnsafeCheckpointError):
        load_model(tmp_path / "whole.pt")
    loaded = load_model(tmp_path / "whole.pt", trust_checkpoint=True)
    assert type(loaded) is type(resnet) and not loaded.training
    _assert_same(loaded, resnet, x)


# ------------------------------------------------------------------- ONNX
def _export(model: nn.Module, x: torch.Tensor, path, dynamo: bool = False) -> str:
    """Export with the legacy exporter (opset 17), else the dynamo one; returns which."""
    if not dynamo:
        try:
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17)
            return "legacy"
        except Exception:  # legacy TorchScript exporter unavailable in this torch
            pass
    torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=18)
    return "dynamo"


def _ort(path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


# "fresh" is timm's own init: its BN-folded conv biases are all equal, so the legacy exporter
# deduplicates them behind Identity nodes that onnx2torch cannot read without audit.io's fix.
@pytest.mark.parametrize("variant", ["fresh", "random_bn"])
def test_onnx_matches_torch_and_onnxruntime(variant, x, tmp_path):
    torch.manual_seed(0)
    net = (timm.create_model("resnet18", pretrained=False, in_chans=4, num_classes=2).eval()
           if variant == "fresh" else _resnet())
    _export(net, x, tmp_path / "m.onnx")
    loaded = load_model(tmp_path / "m.onnx")
    assert isinstance(loaded, torch.fx.GraphModule) and not loaded.training
    with torch.no_grad():
        ours, ref = loaded(x), net(x)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours.numpy(), _ort(tmp_path / "m.onnx", x), atol=1e-4, rtol=0)


def test_onnx_opset18_dynamo_export(resnet, x, tmp_path):
    """torch's default exporter writes opset 18 (ReduceMean with axes as input)."""
    import onnx
    import onnxscript  # noqa: F401  (the dynamo exporter needs it)

    _export(resnet, x, tmp_path / "d.onnx", dynamo=True)
    assert max(o.version for o in onnx.load(str(tmp_path / "d.onnx")).opset_import) >= 18
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "d.onnx")(x), resnet(x),
                                   atol=1e-4, rtol=0)


def test_onnx_conv_layers_are_hook_points(resnet, x, tmp_path):
    from probes.hooks import registry as hooks
    _export(resnet, x, tmp_path / "m.onnx")
    model = load_model(tmp_path / "m.onnx")
    modules = dict(model.named_modules())
    reg = hooks.HookRegistry(model)
    convs = [p for p in reg.points if isinstance(modules.get(p), nn.Conv2d)]
    assert len(convs) == 20  # resnet18: stem + 16 block convs + 3 downsample projections
    name = convs[0]
    out, cache = reg.run_with_cache(x, points=[name])
    with torch.no_grad():
        torch.testing.assert_close(cache[name], modules[name](x))  # first conv sees the input
        torch.testing.assert_close(out, resnet(x), atol=1e-4, rtol=0)


class _NHWCSoftmax(nn.Module):
    """Takes (N, H, W, C) input and returns class probabilities, like many TF exports."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        h = torch.relu(self.conv(x.permute(0, 3, 1, 2))).mean(dim=(2, 3))
        return torch.softmax(self.fc(h), dim=1)


def test_channels_last_probability_onnx(tmp_path):
    torch.manual_seed(0)
    net = _NHWCSoftmax().eval()
    x_nhwc = torch.randn(2, 16, 16, 3)
    _export(net, x_nhwc, tmp_path / "p.onnx")
    loaded = load_model(tmp_path / "p.onnx", input_layout="channels_last", output="probabilities")
    assert model_interface(loaded) == ModelInterface("channels_last", "probabilities")

    audit = as_audit_model(loaded)
    assert isinstance(audit, AuditAdapter) and model_interface(audit) == ModelInterface()
    assert not audit.training
    names = [n for n, _ in audit.named_modules() if n]
    assert names[0] == "model" and all(n.startswith("model") for n in names)
    x_nchw = x_nhwc.permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        logits, probs = audit(x_nchw), net(x_nhwc)
    torch.testing.assert_close(torch.softmax(logits, dim=1), probs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(logits, torch.log(probs), atol=1e-4, rtol=1e-4)


def test_interface_defaults_and_validation():
    plain = nn.Linear(3, 2)
    assert model_interface(plain) == ModelInterface("channels_first", "logits")
    assert as_audit_model(plain) is plain  # nothing to adapt: names stay unprefixed
    with pytest.raises(ValueError, match="channels_last"):
        ModelInterface(input_layout="NHWC")
    with pytest.raises(ValueError, match="probabilities"):
        load_model(arch="resnet18", output="softmax")
    with pytest.raises(AttributeError):  # frozen
        ModelInterface().output = "probabilities"

    class OneHot(nn.Module):  # exact 0/1 probabilities must still give finite logits
        def forward(self, x):
            return torch.nn.functional.one_hot(x.argmax(1), 2).float()

    x = torch.randn(5, 2)
    out = AuditAdapter(OneHot(), ModelInterface(output="probabilities"))(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(torch.softmax(out, 1), OneHot()(x))


# ------------------------------------------------------------------- error messages
def test_mismatch_names_keys_and_shapes(resnet, tmp_path):
    torch.save(resnet.state_dict(), tmp_path / "m.pt")
    with pytest.raises(CheckpointMismatchError) as info:
        load_model(tmp_path / "m.pt", "resnet18", num_classes=3)
    msg = str(info.value)
    assert "'fc.weight': checkpoint (2, 512) vs model (3, 512)" in msg
    assert info.value.mismatched[0] == ("fc.weight", (2, 512), (3, 512))

    state = dict(resnet.state_dict())
    state.pop("layer4.1.bn2.running_var")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatchError) as info:
        load_model(tmp_path / "bad.pt", "resnet18")
    msg = str(info.value)
    assert "missing keys (1): 'layer4.1.bn2.running_var'" in msg
    assert "unexpected keys (1): 'extra.weight'" in msg


def test_other_errors(resnet, tmp_path):
    with pytest.raises(ValueError, match="'resnet18'"):
        load_model(arch="resnet181")
    with pytest.raises(ValueError, match="monai:UNet"):
        load_model(arch="UNet")
    with pytest.raises(ValueError, match="'UNet'"):
        load_model(arch="monai:UNte")
    (tmp_path / "model.h5").write_bytes(b"\x89HDF")
    with pytest.raises(ValueError, match=r"model\.h5.*\.safetensors"):
        load_model(tmp_path / "model.h5", "resnet18")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nope.pt", "resnet18")
    torch.save(resnet.state_dict(), tmp_path / "m.pt")
    with pytest.raises(ValueError, match="arch="):
        load_model(tmp_path / "m.pt")
    torch.save({"weights": [1, 2]}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match="state dict"):
        load_model(tmp_path / "odd.pt", "resnet18")
