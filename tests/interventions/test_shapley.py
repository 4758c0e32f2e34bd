"""Exact contrast Shapley values, rankings and footrule agreement (probes.shapley)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from probes.interventions.shapley import (EfficiencyWarning, contrast_ranking, exact_shapley, footrule_max,
                            modality_shapley, normalized_spearman_footrule, ranking_variance,
                            shapley_from_values)
from probes.core.model import ModelSnapshot

from tests.helpers import randomize_bn

NAMES = ("T1", "T1c", "T2", "FLAIR")


def brute_force_shapley(v, m: int) -> np.ndarray:
    """Shapley as the average marginal contribution over all m! orderings (the definition)."""
    phi = np.zeros(m)
    for order in itertools.permutations(range(m)):
        present = np.zeros(m, bool)
        for j in order:
            before = v(present.copy())
            present[j] = True
            phi[j] += v(present.copy()) - before
    return phi / math.factorial(m)


def issue_game(mask) -> float:
    t1, t1c, t2, flair = (bool(b) for b in mask)
    return 0.5 + 0.3 * t1c + 0.15 * flair + 0.05 * t2 + 0.02 * t1 - 0.05 * (t1c and flair)


# ------------------------------------------------------------------------ exact_shapley
def test_issue_game_and_each_coalition_once():
    seen = []

    def v(mask):
        seen.append(tuple(mask.tolist()))
        return issue_game(mask)

    phi = exact_shapley(v, 4)
    # interaction −0.05 is split equally between T1c and FLAIR: 0.3 − 0.025, 0.15 − 0.025
    np.testing.assert_allclose(phi, [0.02, 0.275, 0.05, 0.125], atol=1e-12)
    assert len(seen) == 16 and len(set(seen)) == 16
    assert phi.sum() == pytest.approx(issue_game([1, 1, 1, 1]) - issue_game([0, 0, 0, 0]), abs=1e-12)


def test_random_games_match_permutation_definition():
    rng = np.random.default_rng(3)
    for m in (1, 2, 5):
        table = {tuple(c): rng.normal(size=3) for c in itertools.product([False, True], repeat=m)}
        v = lambda mask: table[tuple(bool(b) for b in mask)]
        phi = exact_shapley(v, m)                       # vector-valued game: (3, m)
        assert phi.shape == (3, m)
        for k in range(3):
            np.testing.assert_allclose(phi[k], brute_force_shapley(lambda s: v(s)[k], m), atol=1e-12)


def test_efficiency_violation_warns_and_bad_input_raises():
    vals = np.arange(8.0)
    assert shapley_from_values(vals).sum() == pytest.approx(7.0)
    with pytest.raises(ValueError, match="2\\^M rows"):
        shapley_from_values(np.zeros(6))
    with pytest.raises(ValueError, match="non-finite"):
        shapley_from_values(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="n_players"):
        exact_shapley(issue_game, 0)
    with pytest.raises(ValueError, match="shape"):
        exact_shapley(lambda s: np.zeros(int(s.sum()) + 1), 2)
    # a numerically broken table (huge cancelling values) is flagged with the numbers
    with pytest.warns(EfficiencyWarning, match="efficiency violated"):
        shapley_from_values(np.array([0.0, 1e17, 1.0, 3.0]), tol=1e-30)


# ------------------------------------------------------------------------ rankings
def test_contrast_ranking_ties_share_min_rank():
    np.testing.assert_array_equal(contrast_ranking([0.02, 0.275, 0.05, 0.125]), [4, 1, 3, 2])
    np.testing.assert_array_equal(contrast_ranking([1.0, 1.0, 0.0, 0.5]), [1, 1, 4, 3])
    # within tol → tied, and groups chain (0.3 ~ 0.3+δ ~ 0.3+2δ)
    np.testing.assert_array_equal(contrast_ranking([0.3, 0.3 + 1e-4, 0.3 + 2e-4, 0.0], tol=1.5e-4),
                                  [1, 1, 1, 4])
    np.testing.assert_array_equal(contrast_ranking([[3, 2, 1], [1, 2, 3]]), [[1, 2, 3], [3, 2, 1]])
    with pytest.raises(ValueError, match="NaN"):
        contrast_ranking([1.0, np.nan])


def _all_competition_rankings(m: int):
    """Every ranking contrast_ranking can output for m items, built from ordered partitions."""
    out = set()
    for levels in itertools.product(range(m), repeat=m):
        out.add(tuple(1 + sum(lv < levels[i] for lv in levels) for i in range(m)))
    return out


def test_footrule_direction_and_extreme_for_tied_clinical_reference():
    ref = (3, 1, 3, 2)                        # T1, T1c, T2, FLAIR (BraTS clinical reference)
    assert normalized_spearman_footrule(ref, ref) == 1.0
    assert normalized_spearman_footrule(ref, ref, kind="distance") == 0.0
    # independent max over every (tied or strict) ranking
    rankings = _all_competition_rankings(4)
    assert len(rankings) == 75                # the ordered Bell (Fubini) number for 4 items
    worst = max(sum(abs(a - b) for a, b in zip(r, ref)) for r in rankings)
    assert footrule_max(ref) == worst == 8
    # T1/T2 first (tied), FLAIR third, T1c last: F = 2 + 3 + 2 + 1 = 8 → agreement exactly 0
    most = contrast_ranking([1.0, -1.0, 1.0, 0.0])
    np.testing.assert_array_equal(most, [1, 4, 1, 3])
    assert normalized_spearman_footrule(most, ref) == 0.0
    assert normalized_spearman_footrule(most, ref, kind="distance") == 1.0
    # every attainable ranking lies in [0, 1]
    agg = normalized_spearman_footrule(np.array(sorted(rankings)), ref)
    assert agg.min() == 0.0 and agg.max() == 1.0
    # a strict reference: ties in the ranking reach beyond the permutation bound ⌊M²/2⌋ = 8
    assert footrule_max((1, 2, 3, 4)) == 9 == max(sum(abs(a - b) for a, b in zip(r, (1, 2, 3, 4)))
                                                   for r in rankings)
    with pytest.raises(ValueError, match="same 4 contrasts"):
        normalized_spearman_footrule([1, 2, 3], ref)
    with pytest.raises(ValueError, match="integer ranks"):
        normalized_spearman_footrule([0, 1, 2, 3], ref)


def test_ranking_variance_closed_form():
    a, b = np.array([1, 2, 3, 4]), np.array([2, 1, 4, 3])
    rv = ranking_variance(np.stack([a, b]), NAMES)
    np.testing.assert_allclose(rv.per_contrast, (a - b) ** 2 / 2)   # ddof=1 with two folds
    assert rv.per_case == pytest.approx(0.5)
    folds = np.stack([np.stack([a, a]), np.stack([a, b]), np.stack([a, a])])   # (F=3, N=2, M)
    rv = ranking_variance(folds)
    np.testing.assert_allclose(rv.per_case, [0.0, np.var([0, 1, 0], ddof=1)])
    assert set(rv.to_frame().columns) == {"case", "contrast", "mean_rank", "rank_variance"}
    with pytest.raises(ValueError, match="F ≥ 2"):
        ranking_variance(a[None])


# ------------------------------------------------------------------------ modality_shapley
@pytest.fixture(scope="module")
def net64():
    """A small float64 CNN whose output mixes contrasts non-linearly (interactions exist)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 8, 3, stride=2), torch.nn.Tanh(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 2))
    return randomize_bn(net).double().eval()


@pytest.fixture(scope="module")
def xs():
    return torch.randn(3, 4, 32, 32, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def test_equals_captum_shapley_per_case(net64, xs):
    from captum.attr import ShapleyValues

    labels = torch.tensor([0, 1, 1])
    net64.train()                                      # left in train mode: must come back so
    snap = ModelSnapshot.take(net64)
    try:
        res = modality_shapley(net64, xs, "prob", labels=labels, per_case=True,
                               channel_names=NAMES, batch_size=10)
        assert snap.diff(net64) == []
    finally:
        net64.eval()
    ref = ShapleyValues(lambda z: torch.softmax(net64(z), 1)).attribute(
        xs, baselines=0.0, target=labels, feature_mask=torch.arange(4).view(1, 4, 1, 1))
    np.testing.assert_allclose(res.phi, ref[:, :, 0, 0].numpy(), atol=1e-6)
    assert np.abs(res.phi).max() > 1e-3                # not trivially zero
    logit = modality_shapley(net64, xs, "logit", target=1, per_case=True)
    ref = ShapleyValues(net64).attribute(xs, baselines=0.0, target=1,
                                         feature_mask=torch.arange(4).view(1, 4, 1, 1))
    np.testing.assert_allclose(logit.phi, ref[:, :, 0, 0].numpy(), atol=1e-6)
    df = res.to_frame()
    assert len(df) == 12 and set(df.contrast) == set(NAMES) and (df.absent == "zero").all()
    assert res.efficiency_error < 1e-12


def test_cohort_auc_and_accuracy_match_brute_force(net64, xs):
    from sklearn.metrics import roc_auc_score

    x = torch.cat([xs, xs.flip(-1), xs.flip(-2)])      # 9 cases
    y = np.array([0, 1, 1, 0, 1, 0, 1, 0, 0])
    brain = np.zeros((9, 32, 32), bool)
    brain[:, 4:28, 6:30] = True
    for metric in ("auc", "accuracy"):
        for absent in ("zero", "mean"):
            res = modality_shapley(net64, x, metric, labels=y, absent=absent, brain=brain)

            def v(mask):
                mean = (x * torch.from_numpy(brain)[:, None]).sum((2, 3), keepdim=True) / brain[0].sum()
                fill = torch.zeros_like(x) if absent == "zero" else mean.expand_as(x)
                xin = torch.where(torch.from_numpy(np.asarray(mask)).view(1, 4, 1, 1), x, fill)
                with torch.no_grad():
                    p = torch.softmax(net64(xin), 1).numpy()
                return roc_auc_score(y, p[:, 1]) if metric == "auc" else (p.argmax(1) == y).mean()

            np.testing.assert_allclose(res.phi, brute_force_shapley(v, 4), atol=1e-10)


def test_marginal_uses_other_cases_and_averages_draws(net64, xs):
    res = modality_shapley(net64, xs, "prob", labels=[0, 1, 1], absent="marginal", per_case=True,
                           n_draws=3, seed=1)
    perms = res.extra["derangements"]
    assert perms.shape == (3, 3) and not (perms == np.arange(3)).any()
    # draw 0, case 0 by hand: absent contrasts come from case perms[0, 0]
    donor = xs[perms[0, 0]]

    def v(mask):
        xin = torch.where(torch.from_numpy(np.asarray(mask)).view(4, 1, 1), xs[0], donor)
        with torch.no_grad():
            return torch.softmax(net64(xin[None]), 1)[0, 0].item()

    np.testing.assert_allclose(res.phi_draws[0, 0], brute_force_shapley(v, 4), atol=1e-10)
    np.testing.assert_allclose(res.phi, res.phi_draws.mean(0), atol=1e-14)
    again = modality_shapley(net64, xs, "prob", labels=[0, 1, 1], absent="marginal", per_case=True,
                             n_draws=3, seed=1)
    np.testing.assert_array_equal(res.phi, again.phi)


def test_bad_inputs_name_the_argument(net64, xs):
    with pytest.raises(ValueError, match="absent"):
        modality_shapley(net64, xs, "prob", labels=[0, 1, 1], absent="blur")
    with pytest.raises(ValueError, match="metric"):
        modality_shapley(net64, xs, "f1", labels=[0, 1, 1])
    with pytest.raises(ValueError, match="labels has 2"):
        modality_shapley(net64, xs, "prob", labels=[0, 1])
    with pytest.raises(ValueError, match="channel_names"):
        modality_shapley(net64, xs, "prob", labels=[0, 1, 1], channel_names=NAMES[:3])
    with pytest.raises(ValueError, match="per_case"):
        modality_shapley(net64, xs, "auc", labels=[0, 1, 1], per_case=True)
    with pytest.raises(ValueError, match="both classes"):
        modality_shapley(net64, xs, "auc", labels=[1, 1, 1])
    with pytest.raises(ValueError, match="N ≥ 2"):
        modality_shapley(net64, xs[:1], "prob", labels=[0], absent="marginal")
    with pytest.raises(ValueError, match="brain mask has shape"):
        modality_shapley(net64, xs, "prob", labels=[0, 1, 1], absent="mean", brain=np.ones((3, 8, 8)))
    with pytest.raises(ValueError, match=r"\(N, C, \*spatial\)"):
        modality_shapley(net64, xs[0, 0], "prob", labels=[0, 1, 1])


# ------------------------------------------------------------------ trained lesion model
def test_lesion_model_ranks_t1c_first_and_t1_t2_last(lesion_model):
    """Defaults p_t1c=1, p_flair=0.7: T1c carries the label, FLAIR partly, T1/T2 not at all."""
    cohort = lesion_model.splits["test"][:80]
    res = modality_shapley(lesion_model.model, cohort, "auc", absent="zero")
    rank = dict(zip(res.contrasts, res.ranking()))
    assert rank["T1c"] == 1 and {rank["T1"], rank["T2"]} == {3, 4}, res.summary()
    assert res.values[-1] > 0.8                     # the model works on the full input


def test_marginal_gives_non_carrier_flair_about_zero(lesion_model):
    """On test_t1c_only FLAIR is a coin flip: its interventional φ must vanish (within 3
    bootstrap SEs over cases, 4 derangement draws), while the zero baseline credits it."""
    m, cohort = lesion_model.model, lesion_model.splits["test_t1c_only"][:80]
    zero = modality_shapley(m, cohort, "prob", absent="zero", per_case=True)
    marg = modality_shapley(m, cohort, "prob", absent="marginal", per_case=True, n_draws=4)
    j = {c: i for i, c in enumerate(marg.contrasts)}
    boot = np.random.default_rng(0).integers(0, len(cohort), (2000, len(cohort)))
    se = marg.phi[boot].mean(1).std(0)
    mean = marg.phi.mean(0)
    assert abs(mean[j["FLAIR"]]) <= 3 * se[j["FLAIR"]], (mean, se)
    assert mean[j["T1c"]] > 3 * se[j["T1c"]] and mean.argmax() == j["T1c"]
    assert zero.phi.mean(0)[j["FLAIR"]] > mean[j["FLAIR"]] + 3 * se[j["FLAIR"]]
