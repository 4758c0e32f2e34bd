"""Bad input never yields a plausible number: the examples measured on the metrics.

Each test reproduces one measured example (a NaN map read as "no overlap", a mask of 2s
accepted, an all-NaN input giving max-sensitivity 0, a constant map giving ΔAUPC numbers, a
training-mode model changing BatchNorm statistics) and asserts the behaviour now required.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import probes.metrics.faithfulness as faithfulness
from probes.core.errors import ClassIndexError, LabelError, NonFiniteError, ShapeError, UndefinedValueWarning
from probes.core.model import ModelSnapshot, model_state
from probes.metrics import (auc, deletion_curve, delong, delong_cov, delta_aupc, feature_portion, hit_rate,
                            iou_at_percentile, localization_table, max_sensitivity, relevance_mass)


def _bn_model() -> nn.Module:
    """Conv → BatchNorm (non-trivial running statistics) → linear, 2 contrasts → 2 classes, eval."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    m[1].running_mean.uniform_(-0.5, 0.5)
    m[1].running_var.uniform_(0.5, 2.0)
    return m.eval()


def _data(n: int = 3):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 2, 8, 8, generator=g)
    maps = torch.rand(n, 1, 8, 8, generator=g, dtype=torch.float64)
    mask = np.zeros((n, 8, 8), bool)
    mask[:, 2:5, 2:5] = True
    return x, maps, mask


def _undefined(caught) -> list:
    return [w for w in caught if issubclass(w.category, UndefinedValueWarning)]


# ----------------------------------------------------------------------------- localisation
@pytest.mark.parametrize("fn", [iou_at_percentile, hit_rate, relevance_mass])
def test_a_nan_in_a_map_is_refused_not_read_as_no_overlap(fn):
    _, maps, mask = _data()
    maps[0, 0, 0, 0] = float("nan")  # measured: iou/hit returned 0.0 ("no overlap") without a warning
    with pytest.raises(NonFiniteError, match="maps") as e:
        fn(maps, mask)
    assert e.value.name == "maps"


def test_localization_table_refuses_a_mask_of_twos():
    _, maps, mask = _data()
    with pytest.raises(LabelError, match=r"masks\['gtv'\] must be boolean or 0/1") as e:
        localization_table(maps, {"gtv": mask.astype(int) * 2})  # measured: accepted
    assert "masks['gtv']" in e.value.name


@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_a_map_that_ranks_nothing_is_nan_with_a_reason_and_one_warning(fill):
    _, maps, mask = _data()
    maps[1] = fill
    for fn in (iou_at_percentile, hit_rate, relevance_mass, feature_portion):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            v = fn(maps, mask).numpy()
        assert np.isnan(v[1]).all() and np.isfinite(v[[0, 2]]).all(), fn.__name__
        assert len(_undefined(caught)) == 1 and "ranks nothing" in str(_undefined(caught)[0].message)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f = localization_table(maps, {"gtv": mask}).to_frame()
    assert len(_undefined(caught)) == 1
    bad = f[f.case_id == "1"]
    assert bad.value.isna().all() and bad.reason.str.contains("ranks nothing").all()
    assert (f[f.case_id != "1"].reason == "").all()


def test_an_empty_roi_is_nan_with_a_reason_and_one_warning():
    _, maps, mask = _data()
    mask[2] = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f = localization_table(maps, {"gtv": mask}).to_frame()
        v = iou_at_percentile(maps, mask).numpy()
    assert len(_undefined(caught)) == 2  # one per call
    assert np.isnan(v[2]).all() and f[f.case_id == "2"].value.isna().all()
    assert (f[f.case_id == "2"].reason == "empty ROI").all()


def test_shape_errors_say_which_argument_is_which():
    x, maps, mask = _data()
    with pytest.raises(ShapeError, match="maps shape .* has no channel axis") as e:
        iou_at_percentile(maps[:, 0], mask)
    assert e.value.name == "maps"
    with pytest.raises(ShapeError, match=r"maps shape \(3, 1, 8, 7\) does not fit x shape \(3, 2, 8, 8\)") as e:
        localization_table(maps[..., :-1], {"gtv": mask}, x)
    assert e.value.name == "maps"
    with pytest.raises(ShapeError, match=r"mask shape \(3, 8, 7\) does not match maps shape") as e:
        hit_rate(maps, mask[..., :-1])
    assert e.value.name == "mask"


# ----------------------------------------------------------------------------- faithfulness
def test_max_sensitivity_refuses_an_all_nan_input():
    x = torch.full((2, 2, 8, 8), float("nan"))  # measured: returned 0.0
    with pytest.raises(NonFiniteError) as e:
        max_sensitivity(lambda v: v * 2, x, n_samples=2)
    assert e.value.name == "x"


def test_delta_aupc_refuses_an_all_nan_map():
    x, maps, _ = _data()
    with pytest.raises(NonFiniteError) as e:
        delta_aupc(_bn_model(), x, 0, torch.full_like(maps, float("nan")), steps=2, n_samples=2)
    assert e.value.name == "maps"


@pytest.mark.parametrize("fill", [0.0, 3.0])
def test_delta_aupc_and_curve_of_a_map_that_ranks_nothing_are_nan(fill):
    x, maps, _ = _data()
    maps[0] = fill  # measured: numbers (the ordering was just the flat index order)
    for fn in (delta_aupc, deletion_curve):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = fn(_bn_model(), x, 0, maps, steps=2)
        assert len(_undefined(caught)) == 1 and "ranks nothing" in str(_undefined(caught)[0].message)
        f = res.to_frame()
        first = f[f.case_id == "0"]
        undefined = first[first.metric.isin(["aupc", "delta_aupc", "probability"])]
        assert undefined.value.isna().all() and undefined.reason.str.contains("ranks nothing").all()
        assert f[f.case_id != "0"].value.notna().all() and (f[f.case_id != "0"].reason == "").all()


@pytest.mark.parametrize("fn", [deletion_curve, delta_aupc])
def test_a_training_mode_model_gives_eval_numbers_and_is_left_as_found(fn, monkeypatch):
    x, maps, _ = _data()
    ref = fn(_bn_model(), x, 1, maps, steps=3).to_frame()
    model = _bn_model().train()
    running = model[1].running_mean.clone(), model[1].running_var.clone(), int(model[1].num_batches_tracked)
    entered = []
    real_state = model_state

    def spy(m, **kw):  # every forward of the instrument happens inside model_state
        entered.append(kw.get("warn"))
        return real_state(m, **kw)

    monkeypatch.setattr(faithfulness, "model_state", spy)
    forwards = []
    model.register_forward_pre_hook(lambda mod, args: forwards.append(mod.training))
    snap = ModelSnapshot.take(model)
    with pytest.warns(UserWarning, match="training mode"):
        got = fn(model, x, 1, maps, steps=3).to_frame()
    assert got.equals(ref)
    assert fn.__name__ in entered and forwards and not any(forwards)  # always run in eval mode
    assert torch.equal(model[1].running_mean, running[0]) and torch.equal(model[1].running_var, running[1])
    assert int(model[1].num_batches_tracked) == running[2]
    assert snap.diff(model) == []
    assert model.training and model[1].training


@pytest.mark.parametrize("fn", [deletion_curve, delta_aupc])
def test_float64_input_gives_the_float32_numbers(fn):
    x, maps, _ = _data()
    a = fn(_bn_model(), x, 1, maps, steps=2).to_frame()
    b = fn(_bn_model(), x.double(), 1, maps, steps=2).to_frame()
    assert a.equals(b)


def test_channels_targets_and_maps_are_checked_by_name():
    x, maps, _ = _data()
    model = _bn_model()
    with pytest.raises(ShapeError, match="2 channels") as e:
        deletion_curve(model, x[:, :1], 0, maps, steps=2)
    assert e.value.name == "x"
    with pytest.raises(ClassIndexError, match=r"target \[2\] out of range for 2 output classes") as e:
        delta_aupc(model, x, 2, maps, steps=2, n_samples=2)
    assert e.value.name == "target"
    for bad in (maps[:, 0], maps[..., :-1]):
        with pytest.raises(ShapeError, match="maps shape .* does not fit x shape") as e:
            deletion_curve(model, x, 0, bad, steps=2)
        assert e.value.name == "maps"


# ----------------------------------------------------------------------------- ROC
def test_labels_other_than_0_1_are_refused():
    with pytest.raises(LabelError, match=r"labels must be 0/1, got values \[0, 2\]") as e:
        auc([0, 2, 0, 2], [0.1, 0.2, 0.3, 0.4])
    assert e.value.name == "labels"


def test_auc_and_delong_with_one_class_are_nan_with_a_reason():
    y, s = [1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4]
    with pytest.warns(UndefinedValueWarning, match="single class"):
        assert np.isnan(auc(y, s))
    with pytest.warns(UndefinedValueWarning, match="single class"):
        aucs, cov = delong_cov(y, s)
    assert np.isnan(aucs).all() and np.isnan(cov).all()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f = delong(y, s).to_frame()
    assert len(_undefined(caught)) == 1
    nan = f[f.value.isna()]
    assert set(nan.metric) >= {"auc_a", "se", "p"} and nan.reason.str.contains("single class").all()
    assert (f[f.value.notna()].reason == "").all()
