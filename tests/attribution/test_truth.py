"""Truth tests of the attribution instruments, on models whose mechanism we planted.

- Lesion shape as the only mechanism → Grad-CAM and LRP put more relevance mass in ``gtv``
  than in ``skull``.
- Skull marker as the only mechanism → the other way round.
Per case, paired, one-sided Wilcoxon signed-rank test (as in the seed paper). Relevance mass
= Σ_ROI a / Σ a (Grad-CAM maps are non-negative; LRP maps are summed over contrasts first).
Marker model: the cases that carry a marker (class 1), where the evidence is; validation and
test cases are pooled for ~70 pairs.

A Grad-CAM map with no positive evidence (all zero after its ReLU) has no mass to place: its
case is left out of the test (``nan_policy="omit"``), not counted as evidence either way.

Grad-CAM layer: ``layer3.1.resid``, the deepest stage whose map is at least 6×6 on 96² input;
layer4 — 3×3, upsampled — is too coarse to tell a 2–4 cm lesion from the skull ring around it.
LRP composite: ``epsilon_gamma_box`` (with the sign-fixed Gamma of probes.attribution.lrp);
``epsilon_plus`` (z⁺ everywhere) is far less class-sensitive on the marker model.

Measured over training seeds 0/1/2 (median mass gtv vs skull, one-sided p): lesion model, 80
test cases: Grad-CAM 0.12–0.15 vs 0.07–0.08 (p ≤ 2e-6; with 40 cases p reached 0.012, too
little power), LRP 0.36–0.53 vs 0.02–0.03 (p ≤ 3e-9); marker model, 75 marker cases: Grad-CAM
0.06 vs 0.08–0.09 (p ≤ 0.004), LRP 0.07–0.09 vs 0.19–0.21 (p ≤ 6e-5). One or two of 80 Grad-CAM
maps were all zero in two runs.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import wilcoxon

from probes.attribution.gradcam import layer_gradcam
from probes.attribution.lrp import lrp
from probes.hooks.registry import HookRegistry


def _batch(cohorts, n: int, only_marker: bool = False):
    cases = [c for cohort in cohorts for c in cohort if (not only_marker or "marker" in c.masks)][:n]
    x = torch.stack([torch.tensor(c.image) for c in cases])
    gtv = np.stack([c.masks["gtv"] for c in cases])
    skull = np.stack([c.masks["skull"] for c in cases])
    return x, gtv, skull, torch.tensor([int(c.label) for c in cases])


def _mass(maps: torch.Tensor, roi: np.ndarray) -> np.ndarray:
    """Σ_ROI a / Σ a per case (contrasts summed); NaN for a map whose total is 0."""
    a = maps.sum(1).detach().double().numpy()
    total = a.reshape(len(a), -1).sum(1)
    return (a * roi).reshape(len(a), -1).sum(1) / np.where(total == 0, np.nan, total)


def _maps(model, x, target):
    reg = HookRegistry(model)
    cam = layer_gradcam(reg, x, target, points=["layer3.1.resid"])["layer3.1.resid"]
    return {"gradcam": cam, "lrp": lrp(model, x, target, composite="epsilon_gamma_box").maps}


def test_lesion_model_attends_to_the_tumour_not_the_skull(lesion_model):
    x, gtv, skull, y = _batch([lesion_model.splits["test"]], 80)
    for method, maps in _maps(lesion_model.model, x, y).items():
        m_gtv, m_skull = _mass(maps, gtv), _mass(maps, skull)
        assert np.isnan(m_gtv).sum() <= 8, method  # at most 10% of the maps empty
        p = wilcoxon(m_gtv, m_skull, alternative="greater", nan_policy="omit").pvalue
        assert p < 0.01, (method, np.median(m_gtv), np.median(m_skull), p)


def test_marker_model_attends_to_the_skull_not_the_tumour(marker_model):
    x, gtv, skull, y = _batch([marker_model.splits["val"], marker_model.splits["test"]], 80, only_marker=True)
    assert len(x) >= 60
    for method, maps in _maps(marker_model.model, x, y).items():
        m_gtv, m_skull = _mass(maps, gtv), _mass(maps, skull)
        assert np.isnan(m_gtv).sum() <= 8, method  # at most 10% of the maps empty
        p = wilcoxon(m_skull, m_gtv, alternative="greater", nan_policy="omit").pvalue
        assert p < 0.01, (method, np.median(m_gtv), np.median(m_skull), p)
