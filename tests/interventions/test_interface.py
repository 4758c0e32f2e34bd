"""Ablations and contrast Shapley values honour a model's declared interface (probes.core.ModelInterface)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from probes.core.model import ModelInterface, ModelSnapshot
from probes.interventions.ablation import ablation_study
from probes.interventions.shapley import contrast_shapley
from tests.helpers import randomize_bn


class ChannelsLastSoftmax(nn.Module):
    """The same network fed (N, *spatial, C) and returning softmax probabilities."""

    def __init__(self, net: nn.Module, declare: bool = True):
        super().__init__()
        self.net = net
        if declare:
            self.medaudit_interface = ModelInterface(input_layout="channels_last", output="probabilities")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.shape[-1] == 4, f"expected channels-last input, got {tuple(z.shape)}"
        return torch.softmax(self.net(z.movedim(-1, 1)), 1)


class Softmax(nn.Module):
    """The same network returning softmax probabilities, channels first, nothing declared."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(z), 1)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(4, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.Tanh(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    return randomize_bn(m).double().eval()


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 4, 16, 16, generator=g, dtype=torch.float64)
    skull = torch.rand(6, 16, 16, generator=g) < 0.3
    return x, np.array([0, 1, 0, 1, 1, 0]), {"skull": skull}


def test_contrast_shapley_reads_the_declared_interface(net, data):
    x, y, _ = data
    wrapped = ChannelsLastSoftmax(net).eval()
    snap = ModelSnapshot.take(wrapped)
    for metric in ("prob", "logit", "accuracy"):
        ref = contrast_shapley(net, x, None, metric, labels=y, per_case=True)
        got = contrast_shapley(wrapped, x, None, metric, labels=y, per_case=True)
        if metric == "logit":   # a probability model explains log p = z − logsumexp z: per-case shift
            ref_logp = contrast_shapley(nn.Sequential(net, nn.LogSoftmax(1)).eval(), x, None, metric, labels=y,
                                        per_case=True)
            np.testing.assert_allclose(got.phi, ref_logp.phi, atol=1e-10)
        else:
            np.testing.assert_allclose(got.phi, ref.phi, atol=1e-12)
        assert metric == "accuracy" or np.abs(got.phi).max() > 1e-3
    assert snap.diff(wrapped) == []
    # an undeclared probability model: output="probabilities" reads it as such
    plain = Softmax(net).eval()
    ref = contrast_shapley(net, x, None, "auc", labels=y)
    np.testing.assert_allclose(contrast_shapley(plain, x, None, "auc", labels=y, output="probabilities").phi,
                               ref.phi, atol=1e-12)
    # read as logits (the default), the probabilities are squashed again: a different answer
    assert not np.allclose(contrast_shapley(plain, x, None, "prob", labels=y).phi,
                           contrast_shapley(net, x, None, "prob", labels=y).phi, atol=1e-6)


def test_ablation_study_reads_the_declared_interface(net, data):
    x, y, masks = data
    net32 = copy.deepcopy(net).float()                   # ablation feeds float32
    ref = ablation_study(net32, x, 1, ["no skull"], labels=y, masks=masks)
    got = ablation_study(ChannelsLastSoftmax(net32).eval(), x, 1, ["no skull"], labels=y, masks=masks)
    np.testing.assert_allclose(got.per_case["prob"], ref.per_case["prob"], atol=1e-6)
    plain = ablation_study(Softmax(net32).eval(), x, 1, ["no skull"], labels=y, masks=masks, output="probabilities")
    np.testing.assert_allclose(plain.per_case["prob"], ref.per_case["prob"], atol=1e-6)
    assert ref.per_case["prob"].std() > 1e-3


def test_ablation_study_one_output_model_scores_both_classes(data):
    x, y, masks = data
    torch.manual_seed(1)
    one = nn.Sequential(nn.Conv2d(4, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1)).eval()
    p1 = ablation_study(one, x, 1, ["no skull"], labels=y, masks=masks)
    p0 = ablation_study(one, x, 0, ["no skull"], labels=y, masks=masks)
    with torch.no_grad():
        want = torch.sigmoid(one(x.float())[:, 0]).double().numpy()
    base = p1.per_case[p1.per_case.condition == "none"]["prob"].to_numpy()
    np.testing.assert_allclose(base, want, atol=1e-7)
    np.testing.assert_allclose(p0.per_case["prob"], 1 - p1.per_case["prob"], atol=1e-7)
    np.testing.assert_allclose(p0.per_condition["auc"], 1 - p1.per_condition["auc"], atol=1e-12)
    with pytest.raises(ValueError, match="one output"):
        ablation_study(one, x, 2, ["no skull"], labels=y, masks=masks)
