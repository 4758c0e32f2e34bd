"""Faithfulness metrics: hand-computed curves, Captum's sensitivity_max, Quantus Sparseness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from probes import ModelSnapshot
from probes.metrics.faithfulness import (aupc, delta_aupc, deletion_curve, max_sensitivity, sparsity,
                                 uniform_linf_perturbation)


class RegionMean(nn.Module):
    """Output (N, 2) = [mean of x over a fixed region, 0]: the 'probability' is that mean."""

    def __init__(self, region: torch.Tensor):
        super().__init__()
        self.register_buffer("region", region.float())
        self.lin = nn.Linear(1, 1)  # a parameter, so ModelSnapshot has something to compare

    def forward(self, x):
        r = self.region.expand_as(x)
        m = (x * r).flatten(1).sum(1) / r.flatten(1).sum(1)
        return torch.stack([m, torch.zeros_like(m)], 1)


def _toy(spatial=(8, 8)):
    region = torch.zeros(1, 1, *spatial)
    region.view(-1)[: region.numel() // 2] = 1.0  # first half of the voxels (flat order)
    return RegionMean(region).eval(), region


def test_deletion_and_insertion_curves_by_hand():
    model, region = _toy()
    x = torch.ones(2, 1, 8, 8)
    maps = region.expand(2, 1, 8, 8)
    snap = ModelSnapshot.take(model)
    # F = 64, |R| = 32, steps = 4 → k = 0, 16, 32, 48, 64 voxels, the ROI ones first
    d = deletion_curve(model, x, maps, 0, steps=4, output="identity")
    np.testing.assert_allclose(d[d.case_id == 1].prob, [1, 0.5, 0, 0, 0], atol=1e-6)
    ins = deletion_curve(model, x, maps, 0, steps=4, mode="insertion", output="identity", batch_size=3)
    np.testing.assert_allclose(ins[ins.case_id == 0].prob, [0, 0.5, 1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(aupc(d).to_numpy(), [0.25, 0.25], atol=1e-6)
    assert snap.diff(model) == []


def test_delta_aupc_true_map_positive_random_map_near_zero():
    model, region = _toy((16, 16))
    x = torch.rand(2, 2, 16, 16, generator=torch.Generator().manual_seed(0)) + 0.5
    true = delta_aupc(model, x, region.expand(2, 1, 16, 16), 0, steps=8, n_random=10, output="identity")
    d = true[true.metric == "delta_aupc"].value.to_numpy()
    assert (d > 0.2).all()
    rand = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    r = delta_aupc(model, x, rand, 0, steps=8, n_random=10, output="identity", seed=1)
    std = r[r.metric == "aupc_random_std"].value.to_numpy()
    assert (np.abs(r[r.metric == "delta_aupc"].value.to_numpy()) < 0.1).all() and (std > 0).all()
    # per-contrast map (C_map = C) on a 3-D input works too
    m3, reg3 = _toy((6, 6, 6))
    x3 = torch.ones(1, 2, 6, 6, 6)
    cur = deletion_curve(m3, x3, reg3.expand(1, 2, 6, 6, 6), [0], steps=4, baseline="mean", output="identity")
    assert cur.prob.iloc[0] == pytest.approx(1.0) and len(cur) == 5


def test_max_sensitivity_equals_captum():
    from captum.attr import Saliency
    from captum.metrics import sensitivity_max

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 2)).eval()
    x = torch.randn(2, 4, 12, 12)
    sal = Saliency(model)

    def explain(inp, target):
        # Captum calls it with a 1-tuple for the unperturbed input and expects a tuple back
        if isinstance(inp, tuple):
            return (sal.attribute(inp[0], target=target, abs=False),)
        return sal.attribute(inp, target=target, abs=False)

    ref = sensitivity_max(explain, x, perturb_func=uniform_linf_perturbation(3), n_perturb_samples=5,
                          target=1)
    ours = max_sensitivity(lambda v, target: explain(v, target), x, n_samples=5, seed=3, target=1)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert (ours > 0).all()
    # 3-D explanation function, custom norm
    x3 = torch.randn(1, 2, 5, 5, 5)
    e3 = max_sensitivity(lambda v: v ** 2, x3, n_samples=3, norm=1)
    assert e3.shape == (1,) and torch.isfinite(e3).all()


def test_sparsity_equals_quantus():
    import quantus

    a = torch.randn(3, 4, 10, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(400, 2)).double()
    q = quantus.Sparseness(abs=True, normalise=False, disable_warnings=True)(
        model=model, x_batch=np.random.rand(3, 4, 10, 10), y_batch=np.zeros(3, dtype=int),
        a_batch=a.numpy().copy(), channel_first=True)
    np.testing.assert_allclose(sparsity(a, eps=1e-7).numpy(), np.asarray(q, dtype=float), atol=1e-6)
    # closed forms: uniform map → 0, one-hot map of n voxels → 1 − 1/n; 3-D per channel
    assert sparsity(torch.ones(1, 1, 4, 4, 4)).item() == pytest.approx(0.0)
    hot = torch.zeros(1, 2, 4, 4, 4)
    hot[0, :, 0, 0, 0] = 1.0
    np.testing.assert_allclose(sparsity(hot, per_channel=True).numpy(), [[1 - 1 / 64] * 2])
