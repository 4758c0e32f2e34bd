"""Contrast Shapley values of the MONAI U-Net segmenter with Dice as the value (probes.interventions.shapley)."""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from probes.core.model import ModelSnapshot
from probes.interventions.shapley import contrast_shapley
from probes.interventions.shapley_rank import contrast_ranking, ranking_variance


def _dice(out: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Independent per-case Dice of the arg-max foreground (1 when both masks are empty)."""
    p, t = (out.argmax(1) > 0).flatten(1), truth.flatten(1)
    inter, tot = (p & t).sum(1).double(), (p.sum(1) + t.sum(1)).double()
    return torch.where(tot == 0, torch.ones_like(tot), 2 * inter / tot.clamp_min(1))


def test_dice_shapley_equals_captum(segmenter_model):
    from captum.attr import ShapleyValues

    cohort = segmenter_model.splits["test"][:3]
    model = segmenter_model.model
    snap = ModelSnapshot.take(model)
    res = contrast_shapley(model, cohort, None, "dice", per_case=True, absent="zero")
    assert snap.diff(model) == []
    x = torch.from_numpy(np.stack([c.image for c in cohort]))
    truth = torch.from_numpy(np.stack([c.masks["gtv"] for c in cohort]))
    with torch.no_grad():
        ref = ShapleyValues(lambda z: _dice(model(z), truth)).attribute(
            x, baselines=0.0, feature_mask=torch.arange(4).view(1, 4, 1, 1))
    np.testing.assert_allclose(res.phi, ref[:, :, 0, 0].numpy(), atol=1e-6)
    # efficiency: Σφ = Dice(all contrasts) − Dice(nothing), with Dice(all) independent
    with torch.no_grad():
        full = _dice(model(x), truth).numpy()
    np.testing.assert_allclose(res.values[-1], full, atol=1e-12)
    np.testing.assert_allclose(res.phi.sum(1), full - res.values[0], atol=1e-12)


def test_ranking_variance_over_draws_and_dice_correlation(segmenter_model):
    """Per-case ranking variance over marginal draws (stand-in for folds) vs the case's Dice."""
    cohort = segmenter_model.splits["test"][:40]
    res = contrast_shapley(segmenter_model.model, cohort, None, "dice", per_case=True,
                           absent="marginal", n_samples=4)
    ranks = contrast_ranking(res.phi_samples)                       # (D, N, M)
    rv = ranking_variance(ranks, res.contrasts)
    np.testing.assert_allclose(rv.per_contrast, ranks.astype(float).var(0, ddof=1))
    dice = res.values[-1]                                         # Dice with every contrast
    r, p = stats.pearsonr(rv.per_case, dice)
    print(f"U-Net: Pearson r(ranking variance, Dice) = {r:.3f} (p = {p:.3g}, n = {len(dice)}); "
          f"mean Dice {dice.mean():.3f}; cohort phi {res.phi.mean(0).round(4)}")
    assert -1 <= r <= 1
    # a case whose draws all agree has zero ranking variance, and only such cases do
    same = (ranks == ranks[:1]).all(axis=(0, 2))
    np.testing.assert_array_equal(rv.per_case == 0, same)
