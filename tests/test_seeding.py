"""Seeded means seeded: every stochastic instrument gives the same numbers twice for one seed,
different numbers for another seed, and leaves numpy's and torch's global random state as found."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from tests.helpers import timm_model


@pytest.fixture(scope="module")
def kit():
    from audit.readers import example_reads

    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 4, 32, 32, generator=g)
    gtv = np.zeros((6, 32, 32), bool)
    gtv[:, 8:20, 10:22] = True
    return dict(model=timm_model("resnet18"), x=x, gtv=gtv, labels=np.array([0, 1] * 3),
                maps=torch.rand(6, 1, 32, 32, generator=g), reads=example_reads())


def _calls(k):
    from audit.readers import cluster_bootstrap, decision_curve
    from probes.attribution import attribute, lime_map
    from probes.internals import activation_patching, fit_linear_probes
    from probes.interventions import contrast_shapley
    from probes.metrics import delta_aupc, max_sensitivity

    m, x, y = k["model"], k["x"], k["labels"]
    feats = {"p": np.random.default_rng(1).normal(size=(40, 3))}

    def method(name, n=2, **kw):
        return lambda seed: attribute(m, x[:n], 1, name, seed=seed, **kw).maps

    return {
        "gradient_shap": method("gradient_shap", n_samples=4),
        "smoothgrad": method("smoothgrad", n_samples=4),
        "kernel_shap": method("kernel_shap", n_samples=20, grid=2),
        "shapley_value_sampling": method("shapley_value_sampling", n_samples=2, grid=2),
        "feature_permutation": method("feature_permutation", n=5, grid=2),  # 2 cases have one derangement
        "lime": lambda seed: lime_map(m, x[:2], 1, n_samples=20, n_segments=4, seed=seed).maps,
        "contrast_shapley_marginal": lambda seed: contrast_shapley(m, x, None, "prob", labels=y, absent="marginal",
                                                                   n_samples=2, seed=seed).to_frame(),
        "fit_linear_probes": lambda seed: fit_linear_probes(feats, np.repeat([0, 1], 20), np.arange(40),
                                                            seed=seed).to_frame(),
        "delta_aupc": lambda seed: delta_aupc(m, x, 1, k["maps"], n_samples=2, steps=4, seed=seed).to_frame(),
        "activation_patching_random_rois": lambda seed: activation_patching(
            m, x[:3], 1, x[3:], "layer2.1.resid", masks={"gtv": k["gtv"][:3]}, n_samples=2, seed=seed).to_frame(),
        "max_sensitivity": lambda seed: max_sensitivity(lambda xx, target: attribute(m, xx, target, "gradient").maps,
                                                        x[:2], target=1, n_samples=3, seed=seed),
        "cluster_bootstrap": lambda seed: cluster_bootstrap(k["reads"], statistic="auc", n_boot=30,
                                                            seed=seed).to_frame(),
        "decision_curve_bootstrap": lambda seed: decision_curve(
            k["reads"]["truth"].to_numpy(), {"ai": k["reads"]["ai_prob"].to_numpy()}, [0.2, 0.5], n_boot=20,
            seed=seed).to_frame(),
    }


NAMES = list(_calls({"model": None, "x": None, "labels": None, "gtv": None, "maps": None, "reads": None}))


def _same(a, b) -> bool:
    if isinstance(a, pd.DataFrame):
        return a.equals(b)
    return torch.equal(torch.as_tensor(a), torch.as_tensor(b))


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_numbers_and_global_state_untouched(kit, name):
    call = _calls(kit)[name]
    torch.manual_seed(1234)
    np.random.seed(1234)
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, again, other = call(0), call(0), call(7)
    assert torch.equal(torch.get_rng_state(), torch_state), f"{name} changed torch's global random state"
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:], \
        f"{name} changed numpy's global random state"
    assert _same(first, again), f"{name}: the same seed gave different numbers"
    assert not _same(first, other), f"{name}: the seed changes nothing (is it used?)"
