"""Faithfulness metrics: hand-computed curves, Captum's sensitivity_max, Quantus Sparseness;
the declared model interface, the output keyword and the tidy results."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from probes import ModelSnapshot
from probes.core.model import ModelInterface
from probes.core.result import Summary
from probes.metrics import case_values
from probes.core.errors import OptionError, ShapeError
from probes.metrics.faithfulness import (DeletionCurve, DeltaAUPC, aupc, delta_aupc, deletion_curve, max_sensitivity,
                                         random_aupc, sparsity, uniform_linf_perturbation)


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
    d = deletion_curve(model, x, 0, maps, steps=4, output="probabilities")
    assert isinstance(d, DeletionCurve)
    np.testing.assert_allclose(d.probabilities[1], [1, 0.5, 0, 0, 0], atol=1e-6)
    ins = deletion_curve(model, x, 0, maps, steps=4, mode="insertion", output="probabilities", batch_size=3)
    np.testing.assert_allclose(ins.probabilities[0], [0, 0.5, 1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(aupc(d).numpy(), [0.25, 0.25], atol=1e-6)
    assert snap.diff(model) == []
    # tidy rows: case_id (str), method, mode, fraction, reason, metric, value
    f = d.to_frame()
    assert list(f.columns) == ["case_id", "method", "mode", "fraction", "reason", "metric", "value"]
    assert f.case_id.tolist()[:6] == ["0"] * 5 + ["1"] and set(f.metric) == {"probability"}
    np.testing.assert_allclose(f[f.case_id == "1"].value, [1, 0.5, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(f.fraction[:5], [0, 0.25, 0.5, 0.75, 1])
    f.loc[0, "value"] = 99.0  # to_frame is a copy
    assert d.probabilities[0, 0] == pytest.approx(1.0)
    assert isinstance(d.summary(), Summary) and "Deletion curve" in d.summary()


def test_delta_aupc_true_map_positive_random_map_near_zero():
    model, region = _toy((16, 16))
    x = torch.rand(2, 2, 16, 16, generator=torch.Generator().manual_seed(0)) + 0.5
    true = delta_aupc(model, x, 0, region.expand(2, 1, 16, 16), steps=8, n_samples=10, output="probabilities",
                      method="true", case_ids=["a", "b"])
    assert isinstance(true, DeltaAUPC)
    assert (true.delta_aupc > 0.2).all()
    np.testing.assert_allclose(true.delta_aupc, true.aupc_random_mean - true.aupc)
    rand = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    r = delta_aupc(model, x, 0, rand, steps=8, n_samples=10, output="probabilities", seed=1)
    assert (np.abs(r.delta_aupc) < 0.1).all() and (r.aupc_random_std > 0).all()
    # tidy rows, one per case and metric
    f = true.to_frame()
    assert list(f.columns) == ["case_id", "method", "mode", "reason", "metric", "value"] and len(f) == 8
    row = f[(f.case_id == "b") & (f.metric == "delta_aupc")]
    assert row.value.item() == pytest.approx(true.delta_aupc[1]) and row.method.item() == "true"
    # the same curves as deletion_curve: AUPC of the map's ordering
    cur = deletion_curve(model, x, 0, region.expand(2, 1, 16, 16), steps=8, output="probabilities")
    np.testing.assert_allclose(true.aupc, aupc(cur).numpy())
    # per-contrast map (C_map = C) on a 3-D input works too
    m3, reg3 = _toy((6, 6, 6))
    x3 = torch.ones(1, 2, 6, 6, 6)
    cur = deletion_curve(m3, x3, [0], reg3.expand(1, 2, 6, 6, 6), steps=4, baseline="mean",
                         output="probabilities")
    assert cur.probabilities[0, 0] == pytest.approx(1.0) and len(cur.to_frame()) == 5


def test_random_aupc_closed_form_and_shared_by_delta_aupc():
    model, region = _toy((16, 16))
    x = torch.ones(2, 1, 16, 16)
    # a random deletion order removes, in expectation, a fraction f of the region at fraction f:
    # p(f) = 1 − f, so the expected AUPC is 1/2 (the trapezoid rule is exact for a line)
    ra = random_aupc(model, x, 0, n_samples=40, steps=8, output="probabilities", seed=3)
    assert ra.shape == (2, 40) and ra.dtype == torch.float64
    assert abs(float(ra.mean()) - 0.5) < 0.02 and float(ra.std()) > 0
    # delta_aupc draws exactly these orderings: passing them gives the same table
    maps = region.expand(2, 1, 16, 16)
    own = delta_aupc(model, x, 0, maps, n_samples=40, steps=8, output="probabilities", seed=3)
    shared = delta_aupc(model, x, 0, maps, n_samples=40, steps=8, output="probabilities", seed=3, random_areas=ra)
    assert own.table.equals(shared.table)
    # per-contrast maps draw (N, C, *spatial) orderings: another random reference
    x2 = torch.ones(2, 2, 16, 16)
    ra2 = random_aupc(model, x2, 0, map_channels=2, n_samples=4, steps=8, output="probabilities", seed=3)
    own2 = delta_aupc(model, x2, 0, torch.rand(2, 2, 16, 16), n_samples=4, steps=8, output="probabilities", seed=3)
    np.testing.assert_allclose(own2.aupc_random_mean, ra2.mean(1).numpy())
    with pytest.raises(ShapeError, match="random_areas"):
        delta_aupc(model, x, 0, maps, n_samples=4, steps=8, output="probabilities", random_areas=ra)
    with pytest.raises(OptionError, match="map_channels"):
        random_aupc(model, x2, 0, map_channels=3, output="probabilities")


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
    np.testing.assert_allclose(sparsity(hot, per_contrast=True).numpy(), [[1 - 1 / 64] * 2])


class ChannelsLast(nn.Module):
    """The toy model fed (N, *spatial, C): it moves the channels back itself."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.movedim(-1, 1))


def test_output_keyword_and_declared_interface():
    model, _ = _toy()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    maps = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))

    def curve(m, target=0, **kw):
        return deletion_curve(m, x, target, maps, steps=4, **kw).probabilities

    mean = curve(model, output="probabilities")  # the raw output's class 0: the region mean
    # the output is (mean, 0): softmax of it is sigmoid(mean) for class 0 (default output: logits)
    np.testing.assert_allclose(curve(model), 1 / (1 + np.exp(-mean)), rtol=1e-6)
    np.testing.assert_allclose(curve(model, output="logits"), curve(model), rtol=0)
    np.testing.assert_allclose(curve(model, output="log_probabilities"), np.exp(mean), rtol=1e-6)
    np.testing.assert_allclose(curve(model, 1, output=torch.sigmoid), 0.5)  # sigmoid of the constant 0
    # a model that declares probability output is read as declared when output=None
    model.medaudit_interface = ModelInterface(output="probabilities")
    np.testing.assert_allclose(curve(model), mean, rtol=0)
    del model.medaudit_interface
    # channels-last input: the instrument feeds the model in its own layout, x stays channels first
    cl = ChannelsLast(model).eval()
    cl.medaudit_interface = ModelInterface(input_layout="channels_last", output="probabilities")
    np.testing.assert_allclose(curve(cl), mean, rtol=0)
    d_cl = delta_aupc(cl, x, 0, maps, steps=4, n_samples=3)
    d = delta_aupc(model, x, 0, maps, steps=4, n_samples=3, output="probabilities")
    np.testing.assert_allclose(d_cl.to_frame().value, d.to_frame().value, rtol=0)


def test_training_mode_model_is_evaluated_in_eval_mode_and_restored():
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(2 * 6 * 6, 3))
    x = torch.rand(2, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    maps = torch.rand(2, 2, 6, 6, generator=torch.Generator().manual_seed(1))
    ref = deletion_curve(model.eval(), x, [0, 2], maps, steps=3).probabilities
    model.train()
    with pytest.warns(UserWarning, match="deletion_curve: the model is in training mode"):
        got = deletion_curve(model, x, [0, 2], maps, steps=3).probabilities
    np.testing.assert_array_equal(got, ref)  # dropout off: deterministic, equal to the eval run
    assert model.training and model[1].training


def test_bad_input_is_refused_by_name():
    model, region = _toy()
    x = torch.ones(2, 1, 8, 8)
    maps = region.expand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="target must hold integer class indices"):
        deletion_curve(model, x, maps, 0)  # maps and target swapped
    with pytest.raises(ValueError, match=r"maps shape \(2, 1, 4, 4\) does not fit x shape"):
        deletion_curve(model, x, 0, torch.ones(2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"target \[5\] out of range for 2 output classes"):
        deletion_curve(model, x, 5, maps)
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        deletion_curve(model, x, 0, maps, steps=0)
    with pytest.raises(ValueError, match="mode='erase' is not one of"):
        deletion_curve(model, x, 0, maps, mode="erase")
    with pytest.raises(ValueError, match="n_samples must be an int >= 1"):
        delta_aupc(model, x, 0, maps, n_samples=0)
    with pytest.raises(ValueError, match="output='softmax' is not valid"):
        deletion_curve(model, x, 0, maps, output="softmax")
    with pytest.raises(ValueError, match="case_ids has 1 entries for 2 cases"):
        deletion_curve(model, x, 0, maps, case_ids=["a"])


def test_case_values_give_tidy_rows_of_element_wise_metrics():
    a = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = sparsity(a, per_contrast=True)
    rows = case_values(g, "sparsity", case_ids=[10, 11, 12], method="ig", contrasts=["t1", "flair"])
    f = rows.to_frame()
    assert list(f.columns) == ["case_id", "method", "contrast", "metric", "value"]
    assert f.case_id.tolist() == ["10", "10", "11", "11", "12", "12"] and f.contrast.tolist()[:2] == ["t1", "flair"]
    np.testing.assert_array_equal(f.value, g.numpy().reshape(-1))
    np.testing.assert_array_equal(rows.values, g.numpy())
    one = case_values(sparsity(a), "sparsity")
    assert list(one.to_frame().columns) == ["case_id", "method", "metric", "value"]
    np.testing.assert_array_equal(one.values, sparsity(a).numpy())
    # the summary is the mean over cases
    s = one.summary()
    assert isinstance(s, Summary) and f"{sparsity(a).mean().item():.4g}" in s
    with pytest.raises(ValueError, match="contrasts has 1 names for 2 contrasts"):
        case_values(g, "sparsity", contrasts=["t1"])
