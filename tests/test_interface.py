"""Every model instrument honours a declared interface: an ONNX model with NHWC input and a softmax.

The model of ``tests.helpers.NHWCNet`` is exported to ONNX and loaded with
``input_layout="channels_last", output="probabilities"``. Each instrument gets channels-first
``x`` and must give the same numbers as on the same network in torch fed NCHW and ending in
log-softmax (read as logits, softmax(log p) = p), or refuse by name. The attribution methods
are checked one by one in ``tests/attribution/test_interface.py``; this file covers the
instruments of ``probes.metrics``, ``probes.internals`` and ``probes.interventions``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from audit.models import load_model
from probes.attribution import attribute, layer_gradcam
from probes.core.model import ModelSnapshot, UnsupportedModelError
from probes.internals import activation_patching, extract_features, roi_cosine_distances
from probes.interventions import ablation_study, contrast_shapley
from probes.metrics import deletion_curve, delta_aupc, evaluate_methods, localization_table, max_sensitivity
from tests.helpers import NHWCNet, export_nhwc_softmax

N = 8


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    path, net = export_nhwc_softmax(tmp_path_factory.mktemp("onnx") / "nhwc_softmax.onnx")
    onnx = load_model(path, input_layout="channels_last", output="probabilities")
    ref = NHWCNet(channels_last=False, head="log_softmax").eval()
    ref.load_state_dict(net.state_dict())
    convs = [n for n, m in onnx.named_modules() if isinstance(m, nn.Conv2d)]
    return onnx, ref, convs[-1]  # the second convolution of each


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(N, 3, 16, 16, generator=g)
    gtv = np.zeros((N, 16, 16), bool)
    gtv[:, 2:9, 3:10] = True
    labels = np.array([0, 1] * (N // 2))
    maps = torch.rand(N, 1, 16, 16, generator=g)
    return x, {"gtv": gtv}, labels, maps


INSTRUMENTS = ["deletion_curve", "delta_aupc", "localization_table", "activation_patching", "roi_cosine_distances",
               "extract_features", "ablation_study", "contrast_shapley", "contrast_shapley_marginal",
               "evaluate_methods"]


def _calls(x, masks, labels, maps):
    """instrument name → function(model, point) → Result; one per model instrument."""
    loader = [{"image": x[i:i + 4], "label": torch.as_tensor(labels[i:i + 4]), "case_id": [str(j) for j in range(i, i + 4)],
               "patient_id": [str(j) for j in range(i, i + 4)]} for i in (0, 4)]
    gtv = masks["gtv"]
    return {
        "deletion_curve": lambda m, p: deletion_curve(m, x, 1, maps, steps=5),
        "delta_aupc": lambda m, p: delta_aupc(m, x, 1, maps, n_samples=2, steps=5),
        "localization_table": lambda m, p: localization_table(attribute(m, x, 1, "gradient"), masks, x),
        "activation_patching": lambda m, p: activation_patching(m, x[:4], 1, x[4:], [p], masks={"gtv": gtv[:4]},
                                                                n_samples=2),
        "roi_cosine_distances": lambda m, p: roi_cosine_distances(m, x, masks, [p]),
        "extract_features": lambda m, p: extract_features(m, loader, [p]),
        "ablation_study": lambda m, p: ablation_study(m, x, 1, ["none", "no gtv", "no top5%"], labels=labels,
                                                      masks=masks),
        "contrast_shapley": lambda m, p: contrast_shapley(m, x, None, "prob", labels=labels, per_case=True),
        "contrast_shapley_marginal": lambda m, p: contrast_shapley(m, x, None, "prob", labels=labels,
                                                                   absent="marginal", n_samples=2),
        "evaluate_methods": lambda m, p: evaluate_methods(
            m, x, labels=labels, mask=gtv, shapley=np.array([0.3, 0.2, 0.1]), n_samples=2, steps=5, warmup=False,
            methods={"gradient": lambda xx, t: attribute(m, xx, t, "gradient").maps}).tables()["metrics"],
    }


def _values(result) -> pd.DataFrame:
    frame = result if isinstance(result, pd.DataFrame) else result.to_frame()
    # point names differ between the ONNX graph and the torch module; compare everything else
    return frame.drop(columns=[c for c in ("point",) if c in frame.columns]).reset_index(drop=True)


@pytest.mark.parametrize("name", INSTRUMENTS)
def test_instrument_equals_the_channels_first_network(models, data, name):
    onnx, ref, point = models
    calls = _calls(*data)
    assert list(calls) == INSTRUMENTS
    call = calls[name]
    snap = ModelSnapshot.take(onnx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            got = call(onnx, point)
        except UnsupportedModelError as e:
            assert name.split("_marginal")[0] in str(e), str(e)
            return
        want = call(ref, "conv2")
    assert snap.diff(onnx) == []
    a, b = _values(got), _values(want)
    assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
    num = [c for c in a.columns if c in ("value",) or a[c].dtype.kind == "f"]
    ids = [c for c in a.columns if c not in num]
    pd.testing.assert_frame_equal(a[ids], b[ids])
    if name == "evaluate_methods":  # seconds per map differ from run to run
        keep = a["metric"] != "seconds_per_map" if "metric" in a else slice(None)
        a, b = a[keep], b[keep]
    np.testing.assert_allclose(a[num].to_numpy(float), b[num].to_numpy(float), rtol=1e-4, atol=1e-5,
                               err_msg=name)


def test_gradcam_maps_have_the_models_spatial_shape(models, data):
    onnx, ref, point = models
    x = data[0]
    cams = layer_gradcam(onnx, x, 1, point)
    assert cams[point].shape == (N, 1, 16, 16)
    torch.testing.assert_close(cams[point], layer_gradcam(ref, x, 1, "conv2")["conv2"], rtol=0, atol=1e-4)


def test_max_sensitivity_through_the_interface(models, data):
    onnx, ref, _ = models
    x = data[0]
    got = max_sensitivity(lambda xx, target: attribute(onnx, xx, target, "gradient").maps, x, target=1, n_samples=3)
    want = max_sensitivity(lambda xx, target: attribute(ref, xx, target, "gradient").maps, x, target=1, n_samples=3)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
