"""The declared model interface: channels-last input and a softmax output, through ONNX.

A small CNN takes NHWC input and ends in a softmax; exported to ONNX and loaded with
``input_layout="channels_last", output="probabilities"``, every attribution method gets
channels-first ``x``. Grad-CAM (and the plain gradient) must equal the same network in torch
without the permute, fed NCHW: ending in log-softmax by default (a probability output is
explained at log p), without its softmax with ``score="logit"``. Every other method returns
maps shaped like ``x`` or refuses by name.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from audit.models import load_model
from probes.attribution import METHODS, attribute, layer_gradcam, lrp
from probes.core.model import ModelInterface, ModelSnapshot, UnsupportedModelError
from tests.helpers import NHWCNet, export_nhwc_softmax

TARGET = [1, 3]
# small budgets: the sampling methods are checked for shape, not for their estimates
FAST = {"integrated_gradients": dict(n_steps=8), "gradient_shap": dict(n_samples=8),
        "smoothgrad": dict(n_samples=8), "shapley_value_sampling": dict(n_samples=2, grid=2),
        "kernel_shap": dict(n_samples=30, grid=2), "lime": dict(n_samples=30, n_segments=8)}


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    path, net = export_nhwc_softmax(tmp_path_factory.mktemp("onnx") / "nhwc_softmax.onnx")
    refs = {}
    for head in ("log_softmax", "none"):
        refs[head] = NHWCNet(channels_last=False, head=head).eval()
        refs[head].load_state_dict(net.state_dict())
    return path, refs


def _convs(model):
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("score,head", [("log_probability", "log_softmax"), ("logit", "none")])
def test_gradcam_and_gradient_equal_the_channels_first_network(nets, x, score, head):
    path, refs = nets
    onnx = load_model(path, input_layout="channels_last", output="probabilities", score=score)
    ref = refs[head]
    points = _convs(onnx)
    assert len(points) == 2
    snap = ModelSnapshot.take(onnx)
    cams = layer_gradcam(onnx, x, TARGET, points)
    want = layer_gradcam(ref, x, TARGET, ["conv1", "conv2"])
    for p, q in zip(points, ["conv1", "conv2"]):
        assert cams[p].shape == (2, 1, 16, 16)  # x's spatial shape (conv2's 8x8 map resized)
        assert cams[p].abs().max() > 0
        torch.testing.assert_close(cams[p], want[q], rtol=0, atol=1e-4)
    cam = attribute(onnx, x, TARGET, "gradcam", point=points[1])
    torch.testing.assert_close(cam.maps, want["conv2"], rtol=0, atol=1e-4)
    grad = attribute(onnx, x, TARGET, "gradient").maps
    torch.testing.assert_close(grad, attribute(ref, x, TARGET, "gradient").maps, rtol=0, atol=1e-4)
    assert snap.diff(onnx) == []


def test_a_point_in_the_channels_last_layout_is_refused(nets, x):
    onnx = load_model(nets[0], input_layout="channels_last", output="probabilities")
    names = [n for n, _ in onnx.named_modules() if n]
    nhwc = names[: names.index(_convs(onnx)[0])]  # the modules before the first conv
    layouts = {}
    for p in nhwc:
        try:
            layouts[p] = layer_gradcam(onnx, x, 0, p).maps.shape
        except UnsupportedModelError as e:
            assert "layer_gradcam" in str(e) and "channels-last" in str(e)
            layouts[p] = "refused"
        except ValueError:  # not a spatial activation
            layouts[p] = "not spatial"
    assert "refused" in layouts.values(), layouts  # the element-wise op before the transpose
    assert (2, 1, 16, 16) in layouts.values(), layouts  # the transpose's output is channels first


@pytest.mark.parametrize("score", ["log_probability", "logit"])
def test_every_method_returns_maps_like_x_or_refuses_by_name(nets, x, score):
    onnx = load_model(nets[0], input_layout="channels_last", output="probabilities", score=score)
    snap = ModelSnapshot.take(onnx)
    outcome = {}
    for method in METHODS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                maps = attribute(onnx, x, TARGET, method, **FAST.get(method, {})).maps
        except UnsupportedModelError as e:
            assert method in str(e), (method, str(e))
            outcome[method] = "refused"
            continue
        assert maps.shape[0] == 2 and maps.shape[1] in (1, 3) and maps.shape[2:] == x.shape[2:], method
        assert torch.isfinite(maps).all(), method
        outcome[method] = "maps"
    assert snap.diff(onnx) == []
    # the onnx2torch graph has modules (Transpose, ReduceMean) no LRP rule covers
    assert outcome["lrp"] == "refused"
    assert sum(v == "maps" for v in outcome.values()) == len(METHODS) - 1, outcome


class _TorchNHWC(nn.Module):
    """A channels-last probability model whose softmax is a module (LRP can bypass it)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(8, 4)
        self.softmax = nn.Softmax(dim=1)

    def logits(self, x_nchw):
        return self.fc(self.flat(self.pool(self.relu(self.conv(x_nchw)))))

    def forward(self, x):
        return self.softmax(self.logits(x.permute(0, 3, 1, 2)))


def test_lrp_explains_the_softmax_input_or_refuses(x):
    torch.manual_seed(2)
    model = _TorchNHWC().eval()
    model.medaudit_interface = ModelInterface("channels_last", "probabilities", "logit")
    plain = nn.Sequential(model.conv, model.relu, model.pool, model.flat, model.fc).eval()
    R = lrp(model, x, TARGET).maps
    torch.testing.assert_close(R, lrp(plain, x, TARGET).maps, rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        start = model.logits(x)[torch.arange(2), torch.tensor(TARGET)]
    torch.testing.assert_close(R.flatten(1).sum(1), start, rtol=1e-4, atol=1e-6)  # conserved
    model.medaudit_interface = ModelInterface("channels_last", "probabilities")  # explains log p
    with pytest.raises(UnsupportedModelError, match="lrp.*score='logit'"):
        lrp(model, x, TARGET)
    model.medaudit_interface = ModelInterface("channels_last", "probabilities", "logit")
    # output= overrides the declared interface: the same network read as log-probabilities
    with pytest.raises(UnsupportedModelError, match="lrp"):
        lrp(model, x, TARGET, output="log_probabilities")


def test_output_override_equals_the_declared_interface(x):
    torch.manual_seed(3)
    model = _TorchNHWC().eval()
    declared = _TorchNHWC().eval()
    declared.load_state_dict(model.state_dict())
    declared.medaudit_interface = ModelInterface("channels_last", "probabilities")
    model.medaudit_interface = ModelInterface("channels_last", "logits")  # wrongly declared ...
    a = attribute(model, x, TARGET, "gradient", output="probabilities").maps  # ... and overridden
    torch.testing.assert_close(a, attribute(declared, x, TARGET, "gradient").maps, rtol=0, atol=1e-7)
    cams = layer_gradcam(model, x, TARGET, "conv", output="probabilities").maps
    torch.testing.assert_close(cams, layer_gradcam(declared, x, TARGET, "conv").maps, rtol=0, atol=1e-7)
